#!/usr/bin/env bash
# The oneDNN backend's bf16 precision against its fp32 on a generated Fashion-MNIST-shaped model
# (1x32x32, 3 levels, depth 8, width 256, random nets) and on `flowrt init`'s RealNVP and NICE
# models (random nets): `flowbench --check` holds |delta bits/dim| (mean <= 0.005, max <= 0.02),
# the x->z->x round trip (mean |dx| <= 2e-4, >= 99.5 % of 8-bit pixels unchanged) and T=0.7
# samples (<= 1 % of pixels off by more than one level) over 64 images, and exits 1 when one is
# exceeded. Exits 77 (skipped) on a CPU without bf16 units.
#
#   bf16_accuracy.sh FLOWBENCH [FLOWRT_CLI]     FLOWRT_CLI: default, flowrt beside flowbench
set -euo pipefail
bench=$1
cli=${2:-$(dirname "$bench")/flowrt}
dir=$(mktemp -d)
trap 'rm -rf "$dir"' EXIT
for arch in realnvp nice; do
  "$cli" init --arch $arch --random-nets -o "$dir/$arch.flow" >/dev/null
done

status=0
for model in "--arch fmnist" "--model $dir/realnvp.flow" "--model $dir/nice.flow"; do
  rc=0
  # shellcheck disable=SC2086  # $model is an option and its value
  out=$("$bench" $model --backend onednn --precision bf16 --check --check-images 64 \
    --op encode --batch 1 --warmup 0 --warmup-time 0 --reps 1 --min-time 0 2>&1) || rc=$?
  if ((rc != 0)) && grep -q 'needs a CPU with bf16 units' <<<"$out"; then
    echo "SKIPPED: $(grep -o 'precision bf16 needs.*' <<<"$out")"
    exit 77
  fi
  echo "${model##*/}:"
  grep '^check' <<<"$out" || echo "$out"
  # Every bound is reported, and none failed.
  lines=$(grep -c '^check  .*: ok$' <<<"$out" || true)
  if ((rc != 0 || lines != 3)); then
    echo "FAIL: flowbench exited $rc with $lines of 3 bounds met"
    status=1
  fi
done
exit $status
