#!/usr/bin/env bash
# The architecture comparisons of the Glow family on Fashion-MNIST at 28x28, at equal wall-clock
# budgets: the same Glow (2 levels x 8 steps, width 256) with each permutation between couplings
# (channel reversal, a fixed random shuffle, an invertible 1x1 convolution with LU), each with
# additive and with affine coupling; then RealNVP and NICE at their defaults (and RealNVP with
# plain conv nets instead of its residual ones, realnvp-plain). Each model trains
# for BUDGET from the same seed, is scored on the full test set with uniform dequantisation, and
# samples a grid at T = 0.7; summarise.py draws the test bits/dim curves against steps and time.
#   benchmarks/ablation/run.sh [BUDGET]       default 20m per model (flowtrain's --time)
#   FLOWRT_ABLATION_ONLY="glow-lu-affine nice"   a subset
#   FLOWRT_ABLATION_OUT=DIR                       default runs/ablation
#   FLOWRT_ABLATION_EVAL_EVERY=N                  test points every N steps (default 250)
# Run it on an otherwise idle machine: the budgets are wall-clock.
set -euo pipefail
cd "$(dirname "$0")/../.."
budget=${1:-20m}
out=${FLOWRT_ABLATION_OUT:-runs/ablation}
seed=${FLOWRT_ABLATION_SEED:-1}
eval_every=${FLOWRT_ABLATION_EVAL_EVERY:-250}
[ -x build/bin/flowtrain ] || { echo "build first: cmake --build build" >&2; exit 1; }
mkdir -p "$out"

glow="--arch glow --levels 2 --depth 8 --width 256"
declare -A args=(
  [glow-reverse-additive]="$glow --permutation reverse --coupling additive"
  [glow-shuffle-additive]="$glow --permutation shuffle --coupling additive"
  [glow-lu-additive]="$glow --permutation lu --coupling additive"
  [glow-reverse-affine]="$glow --permutation reverse --coupling affine"
  [glow-shuffle-affine]="$glow --permutation shuffle --coupling affine"
  [glow-lu-affine]="$glow --permutation lu --coupling affine"
  [realnvp]="--arch realnvp"
  [realnvp-plain]="--arch realnvp --res-blocks 0"
  [nice]="--arch nice"
)
order="glow-reverse-additive glow-shuffle-additive glow-lu-additive glow-reverse-affine
       glow-shuffle-affine glow-lu-affine realnvp realnvp-plain nice"
only=${FLOWRT_ABLATION_ONLY:-$order}

lscpu | grep -E '^Model name' > "$out/cpu.txt" || true
echo "budget $budget per model, seed $seed" > "$out/budget.txt"
for name in $only; do
  [ -n "${args[$name]:-}" ] || { echo "unknown model '$name' (one of: $order)" >&2; exit 1; }
  run="$out/$name"
  rm -rf "$run"
  echo "== $name: ${args[$name]}"
  # shellcheck disable=SC2086
  build/bin/flowtrain train --data fashion-mnist ${args[$name]} --time "$budget" --seed "$seed" \
    --eval-every "$eval_every" --eval-images 1000 --log-every 50 --out "$run" --quiet
  build/bin/flowtrain eval "$run/model.flow" --data fashion-mnist --dequantize 1 --seed "$seed" \
    | tee "$run/eval.txt"
  build/bin/flowrt sample "$run/model.flow" -n 64 -t 0.7 --seed "$seed" -o "$run/samples.png"
done
/usr/bin/python3 benchmarks/ablation/summarise.py "$out"
