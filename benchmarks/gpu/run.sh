#!/usr/bin/env bash
# The GPU check, in one run of under 8 minutes on a machine with an NVIDIA GPU, from the bundle
# that benchmarks/gpu/build_bundle.sh made on a CPU machine:
#   1. the CUDA tests (parity with the reference backend on random models covering every option,
#      round trips, the device sampler against the host's Philox normals, graph replays, reduced
#      precisions; the CUDA trainer against the CPU trainer: gradients, Adam steps, a whole run
#      with checkpoint and resume);
#   2. flowbench on the CUDA backend for tiny, fmnist and cifar at batch 1, 16 and 256; the same
#      for RealNVP and NICE at 28x28 (random nets), each also checked against ref in fp32;
#   3. the cifar model at TF32, BF16 and FP16: timings, and their bits/dim error against fp32;
#   4. training throughput and device memory (`flowtrain bench --device cuda`), fmnist and cifar
#      at batch 64;
#   5. data-parallel training: one `--dist nccl` rank, its reduction overlapped with the backward
#      pass (25 MiB and 1 MiB buckets) and not (FLOWRT_NCCL_OVERLAP=0), against the plain GPU run
#      (same bytes), and images/s;
#   6. PyTorch eager on the same GPU, same weights, after a parity check (bits/dim and decoded
#      noise), for fmnist and cifar: sample and encode, and Adam training steps at batch 64;
#   7. one table.
# Usage: benchmarks/gpu/run.sh [BUNDLE_DIR] [OUT_DIR]   (defaults build-gpu/bundle, gpu-results)
set -uo pipefail
cd "$(dirname "$0")/../.."
bundle=$(cd "${1:-build-gpu/bundle}" && pwd)
out=${2:-gpu-results}
mkdir -p "$out"
out=$(cd "$out" && pwd)
export LD_LIBRARY_PATH="$bundle/lib:${LD_LIBRARY_PATH:-}"
export PYTHONPATH="$bundle/python:${PYTHONPATH:-}"
PY=${PYTHON:-python3}
status=0
step() { echo; echo "== $* ($((SECONDS))s)"; }

step "device"
if ! nvidia-smi --query-gpu=name,driver_version,memory.total --format=csv,noheader | tee "$out/gpu.txt"; then
  echo "run.sh: no NVIDIA GPU here" >&2
  exit 3
fi
"$bundle/bin/flowrt" --version | tee -a "$out/gpu.txt"

step "CUDA tests"
timeout 240 "$bundle/bin/flowrt_tests" --test-suite=cuda --force-colors=0 2>&1 | tee "$out/cuda_tests.txt"
[ "${PIPESTATUS[0]}" -eq 0 ] || status=1

step "flowbench (CUDA backend)"
for arch in tiny fmnist cifar; do
  check=()
  [ "$arch" = tiny ] && check=(--check)
  timeout 150 "$bundle/bin/flowbench" --arch "$arch" --backend cuda --op sample,encode \
    --batch 1,16,256 --warmup 3 --warmup-time 0.2 --reps 10 --min-time 0.5 --max-time 10 \
    "${check[@]}" --json "$out/flowbench-$arch.json" > "$out/flowbench-$arch.txt" 2>&1 || status=1
  cat "$out/flowbench-$arch.txt"
done

step "flowbench (CUDA backend): RealNVP and NICE, 1x28x28, random nets"
# RealNVP: checkerboard couplings, the tanh scale, the logit layer; NICE: a 784-vector at 1x1 with
# 392 -> 1000 -> ... -> 392 fully connected nets.
for arch in realnvp nice; do
  "$bundle/bin/flowrt" init --arch "$arch" --random-nets --seed 1 -o "$out/$arch.flow" > /dev/null \
    || status=1
  timeout 90 "$bundle/bin/flowbench" --model "$out/$arch.flow" --backend cuda --op sample,encode \
    --batch 1,16,256 --warmup 3 --warmup-time 0.2 --reps 10 --min-time 0.5 --max-time 5 \
    --json "$out/flowbench-$arch.json" > "$out/flowbench-$arch.txt" 2>&1 || status=1
  cat "$out/flowbench-$arch.txt"
  timeout 90 "$bundle/bin/flowbench" --model "$out/$arch.flow" --backend cuda --op encode \
    --batch 4 --check --warmup 0 --warmup-time 0 --reps 1 --min-time 0 \
    > "$out/$arch-check.txt" 2>&1 || status=1
  grep '^check' "$out/$arch-check.txt"
done

step "TF32, BF16, FP16 (cifar): speed, and the bits/dim error against fp32 on the reference backend"
for p in tf32 bf16 fp16; do
  timeout 90 "$bundle/bin/flowbench" --arch cifar --backend cuda --op sample,encode --batch 1,256 \
    --precision "$p" --warmup 3 --warmup-time 0.2 --reps 10 --min-time 0.5 --max-time 10 \
    --json "$out/flowbench-cifar-$p.json" > "$out/flowbench-cifar-$p.txt" 2>&1 || status=1
  cat "$out/flowbench-cifar-$p.txt"
  timeout 90 "$bundle/bin/flowbench" --arch cifar --backend cuda --op encode --batch 4 \
    --precision "$p" --check --warmup 0 --warmup-time 0 --reps 1 --min-time 0 \
    > "$out/$p-check.txt" 2>&1 || status=1
  grep '^check' "$out/$p-check.txt"
done

step "training throughput (flowtrain bench --device cuda)"
for arch in fmnist cifar; do
  timeout 120 "$bundle/bin/flowtrain" bench --device cuda --arch "$arch" --batch 64 --warmup 3 \
    --reps 10 --min-time 2 --json "$out/train-$arch.json" 2>&1 | tee "$out/train-$arch.txt"
  [ "${PIPESTATUS[0]}" -eq 0 ] || status=1
done

step "data-parallel GPU training: one NCCL rank against the plain GPU run"
# The same 20 steps four times: `--dist nccl` with one rank must give the plain run's model
# bytes, reducing during the backward pass (the default: this model's 9 MiB gradient is one
# bucket), after it (FLOWRT_NCCL_OVERLAP=0), and in 1 MiB buckets launched one by one as the
# backward pass reaches them. images/s is over steps 11-20 of each. One rank's all-reduce moves
# no data between GPUs, so the NCCL lines show what the overlap itself costs (a second stream,
# events), not its gain.
if command -v mpirun > /dev/null; then
  export OMPI_ALLOW_RUN_AS_ROOT=1 OMPI_ALLOW_RUN_AS_ROOT_CONFIRM=1
  dist_args=(train --data fashion-mnist --data-dir "$bundle/data" --levels 3 --depth 8 --width 256
    --batch 64 --steps 20 --eval-every 20 --log-every 10 --device cuda --quiet)
  dist_ok=1
  timeout 180 "$bundle/bin/flowtrain" "${dist_args[@]}" --out "$out/dist-plain" > "$out/dist.txt" 2>&1 \
    || dist_ok=0
  for run in "nccl 1 $((25 << 20))" "nccl-after 0 $((25 << 20))" "nccl-1mib 1 $((1 << 20))"; do
    read -r name overlap bucket <<< "$run"
    [ "$dist_ok" = 1 ] && FLOWRT_NCCL_OVERLAP=$overlap FLOWRT_NCCL_BUCKET_BYTES=$bucket timeout 180 \
      mpirun -np 1 --bind-to none -x FLOWRT_NCCL_OVERLAP -x FLOWRT_NCCL_BUCKET_BYTES \
      "$bundle/bin/flowtrain" "${dist_args[@]}" --dist nccl --out "$out/dist-$name" >> "$out/dist.txt" 2>&1 \
      && cmp "$out/dist-plain/model.flow" "$out/dist-$name/model.flow" >> "$out/dist.txt" 2>&1 \
      || dist_ok=0
  done
  if [ "$dist_ok" = 1 ]; then
    echo "nccl 1 rank: model.flow identical to the plain GPU run, overlapped or not" | tee -a "$out/dist.txt"
  else
    echo "nccl 1 rank: FAILED (see dist.txt)"; tail -5 "$out/dist.txt"; status=1
  fi
  for name in plain nccl nccl-after nccl-1mib; do
    [ -f "$out/dist-$name/metrics.csv" ] || continue
    awk -F, -v run="$name" 'END { printf "dist-%s: %.1f images/s (steps 11-20)\n", run, $6 }' \
      "$out/dist-$name/metrics.csv" | tee -a "$out/dist.txt"
  done
else
  echo "skipped: no mpirun on this host (install openmpi-bin to run the NCCL check)" | tee "$out/dist.txt"
fi

step "PyTorch eager on the same GPU"
if "$PY" -c "import torch, sys; sys.exit(0 if torch.cuda.is_available() else 1)"; then
  for arch in fmnist cifar; do
    "$bundle/bin/flowrt" init --arch "$arch" --random-nets --seed 1 -o "$out/$arch.flow" > /dev/null
    gflop=$("$bundle/bin/flowrt" info "$out/$arch.flow" | awk '/^flops_decode/ {print $2 / 1e9}')
    (cd benchmarks/compare_pytorch && timeout 120 "$PY" bench_torch.py --model "$out/$arch.flow" \
      --lib "$bundle/lib/libflowrt.so" --flowrt-backend cuda --device cuda --name "$arch" \
      --batch 1,16,256 --op sample,encode --warmup 3 --reps 10 --min-time 0.5 --gflop "$gflop" \
      > "$out/torch-$arch.jsonl") || status=1
    (cd benchmarks/compare_pytorch && timeout 120 "$PY" bench_torch.py --model "$out/$arch.flow" \
      --lib "$bundle/lib/libflowrt.so" --flowrt-backend cuda --device cuda --name "$arch" \
      --batch 64 --op train --warmup 3 --reps 10 --min-time 2 --gflop "$gflop" \
      > "$out/torch-train-$arch.jsonl") || status=1
  done
else
  echo "PyTorch with CUDA is not available here" | tee "$out/torch.txt"
  status=1
fi

step "table"
"$PY" benchmarks/gpu/gpu_table.py "$out" | tee "$out/table.md"
echo "finished in ${SECONDS}s, status $status"
exit $status
