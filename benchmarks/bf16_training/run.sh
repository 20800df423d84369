#!/usr/bin/env bash
# bf16 training on the CPU against fp32, side by side in one run: training throughput of the
# fmnist architecture (flowtrain bench, batch 16 and 64), then the quick-start model trained
# for the same wall-clock budget from the same seed in each precision and scored by libflowrt
# in fp32 on the full test set with uniform dequantisation.
#   benchmarks/bf16_training/run.sh [BUDGET]   default 10m per precision
#   FLOWRT_BF16_OUT=DIR                          default runs/bf16_training
# Needs a CPU with bf16 units (AVX512_BF16 or AMX); run it on an otherwise idle machine.
set -euo pipefail
cd "$(dirname "$0")/../.."
budget=${1:-10m}
out=${FLOWRT_BF16_OUT:-runs/bf16_training}
[ -x build/bin/flowtrain ] || { echo "build first: cmake --build build" >&2; exit 1; }
mkdir -p "$out"
{
  lscpu | grep -E '^Model name' || true
  echo "bf16 units: $(grep -o -w -E 'avx512_bf16|amx_bf16' /proc/cpuinfo | sort -u | tr '\n' ' ')"
} > "$out/cpu.txt"
for p in fp32 bf16; do
  build/bin/flowtrain bench --arch fmnist --batch 16,64 --precision "$p" --reps 5 \
    --json "$out/bench-$p.json" | tee "$out/bench-$p.txt"
done
for p in fp32 bf16; do
  run="$out/train-$p"
  rm -rf "$run"
  build/bin/flowtrain train --data fashion-mnist --levels 3 --depth 8 --width 256 --batch 64 \
    --precision "$p" --time "$budget" --seed 1 --eval-every 200 --eval-images 1000 --quiet \
    --out "$run"
  build/bin/flowtrain eval "$run/model.flow" --data fashion-mnist --dequantize 1 --seed 1 \
    | tee "$run/eval.txt"
done
{
  echo "| precision | steps in $budget | test bits/dim (dequantised) |"
  echo "|---|---:|---:|"
  for p in fp32 bf16; do
    steps=$(tail -n 1 "$out/train-$p/metrics.csv" | cut -d, -f1)
    bpd=$(grep -o '[0-9.]* bits/dim with uniform' "$out/train-$p/eval.txt" | cut -d' ' -f1)
    echo "| $p | $steps | $bpd |"
  done
} | tee "$out/summary.md"
