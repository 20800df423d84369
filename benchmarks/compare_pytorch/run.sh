#!/usr/bin/env bash
# flowrt (oneDNN backend, flowbench) against a standard PyTorch Glow on the same weights.
# Usage: benchmarks/compare_pytorch/run.sh [BUILD_DIR]   (default: build)
# Environment: THREADS (2), ARCHS ("fmnist cifar"), BATCHES ("1 16 64"), OUT (a temp dir).
# Needs Debian's python3-torch, python3-flatbuffers, flatc, and OpenBLAS as the system BLAS
# (libopenblas0-pthread): with the reference BLAS, PyTorch's convolutions are ~10x slower.
set -euo pipefail
HERE=$(cd "$(dirname "$0")" && pwd)
ROOT=$(cd "$HERE/../.." && pwd)
BUILD=$(cd "${1:-$ROOT/build}" && pwd)
THREADS=${THREADS:-2}
ARCHS=${ARCHS:-"fmnist cifar"}
BATCHES=${BATCHES:-"1 16 64"}
OUT=${OUT:-$(mktemp -d -t flowrt-compare-XXXXXX)}
mkdir -p "$OUT"
. "$HERE/common.sh"  # PY, PyTorch's tuning, wait_quiet


log() { echo "+ $*" | sed "s|$BUILD|build|g; s|$OUT|\$OUT|g; s|$ROOT/||g" >> "$OUT/commands.txt"; }
run() { log "$@"; "$@"; }

: > "$OUT/commands.txt"
for arch in $ARCHS; do
  case $arch in
    fmnist) shape=(--image 1x32x32 --levels 3 --depth 8 --width 256) ;;
    cifar) shape=(--image 3x32x32 --levels 3 --depth 32 --width 512) ;;
    *) echo "run.sh: unknown architecture $arch (fmnist, cifar)" >&2; exit 2 ;;
  esac
  run "$BUILD/bin/flowrt" init "${shape[@]}" --random-nets --seed 1 -o "$OUT/$arch.flow" > /dev/null
  gflop=$("$BUILD/bin/flowrt" info "$OUT/$arch.flow" | awk '/^flops_decode/ {print $2 / 1e9}')
  for b in $BATCHES; do  # a fresh process per batch size
    wait_quiet
    run "$BUILD/bin/flowbench" --model "$OUT/$arch.flow" --backend onednn --op sample,encode \
      --batch "$b" --threads "$THREADS" --warmup 1 --warmup-time 0.5 --reps 5 --min-time 2 \
      --check --json "$OUT/flowbench-$arch-$b.json" > "$OUT/flowbench-$arch-$b.txt"
  done
  : > "$OUT/torch-$arch.jsonl"
  for b in $BATCHES; do  # a fresh process per batch size here too
    wait_quiet
    log "$PY" "$HERE/bench_torch.py" --model "$OUT/$arch.flow" --lib "$BUILD/lib/libflowrt.so" \
      --name "$arch" --batch "$b" --op sample,encode --threads "$THREADS" \
      --warmup 1 --reps 5 --min-time 2 --gflop "$gflop"
    (cd "$HERE" && "$PY" bench_torch.py --model "$OUT/$arch.flow" --lib "$BUILD/lib/libflowrt.so" \
      --name "$arch" --batch "$b" --op sample,encode --threads "$THREADS" \
      --warmup 1 --reps 5 --min-time 2 --gflop "$gflop" >> "$OUT/torch-$arch.jsonl")
  done
done
"$PY" "$HERE/join_results.py" "$OUT"
echo "raw results: $OUT"
