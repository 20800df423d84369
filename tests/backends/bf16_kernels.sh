#!/usr/bin/env bash
# The oneDNN backend's bf16 precision in steady state, read from oneDNN's own verbose log
# (ONEDNN_VERBOSE=1 prints every primitive execution with its implementation and data types) on
# a cifar-shaped model (3x32x32, 3 levels, width 512; depth 4, since depth only repeats the same
# primitives), and on `flowrt init`'s RealNVP (checkerboard nets reading 2 to 5 channels) and
# NICE (392 -> 1000 nets at 1x1) models. After precision_probe's warm-up marker, at batch 1 and 4:
#   - no reorder executes (weights are converted once at session creation, activations stay in
#     the layouts the convolutions chose), and no reference ("ref:") kernel;
#   - every primitive with bf16 inputs runs an AMX kernel where oneDNN dispatches to AMX, and (cifar)
#     an avx512_core_bf16 kernel with ONEDNN_MAX_CPU_ISA=AVX512_CORE_BF16;
# and below avx512_core_bf16 (ONEDNN_MAX_CPU_ISA=AVX512_CORE_VNNI) session creation is refused
# with FLOWRT_UNSUPPORTED naming the ISA. Exits 77 (skipped) on a CPU without bf16 units.
#
#   bf16_kernels.sh FLOWRT_CLI PRECISION_PROBE WORK_DIR
set -euo pipefail
cli=$1 probe=$2 dir=$3
mkdir -p "$dir"
model=$dir/cifar-depth4.flow
"$cli" init --arch cifar --depth 4 --random-nets -o "$model" >/dev/null
for arch in realnvp nice; do
  "$cli" init --arch $arch --random-nets -o "$dir/$arch.flow" >/dev/null
done

# run_probe LOG ISA BATCH [MODEL]: the probe at bf16 under ONEDNN_MAX_CPU_ISA=ISA (empty: unset)
# on MODEL (default: the cifar model).
run_probe() {
  local log=$1 isa=$2 batch=$3 m=${4:-$model} rc=0
  env ${isa:+ONEDNN_MAX_CPU_ISA=$isa} ONEDNN_VERBOSE=1 "$probe" "$m" bf16 "$batch" \
    >"$log" 2>&1 || rc=$?
  return $rc
}

rc=0
run_probe "$dir/default-1.log" "" 1 || rc=$?
if ((rc == 3)) && grep -q 'needs a CPU with bf16 units' "$dir/default-1.log"; then
  echo "SKIPPED: $(grep -o 'precision bf16 needs.*' "$dir/default-1.log")"
  exit 77
fi
if ((rc != 0)); then
  cat "$dir/default-1.log"
  exit 1
fi
amx=$(grep -m1 '^onednn_verbose,info,cpu,isa:' "$dir/default-1.log" | grep -c 'AMX' || true)
echo "oneDNN: $(grep -m1 '^onednn_verbose,info,cpu,isa:' "$dir/default-1.log" | cut -d, -f4-)"

status=0
# steady LOG WANT: the executions after the marker, by primitive and implementation; fails on
# a reorder, a reference kernel, or a bf16 primitive whose implementation does not match WANT.
steady() {
  local log=$1 want=$2 summary
  summary=$(awk -F, -v want="$want" '
    /^precision_probe: steady state/ { on = 1; next }
    on && $1 == "onednn_verbose" && $2 == "exec" {
      n++; count[$4 " " $5]++
      if ($4 == "reorder") reorders++
      if ($5 ~ /^ref/) refs++
      if ($7 ~ /src_bf16/) { bf16++; if ($5 !~ want) bad++ }
    }
    END {
      for (k in count) printf "    %5d x %s\n", count[k], k
      printf "RESULT %d %d %d %d %d\n", n, bf16, reorders, refs, bad
    }' "$log")
  echo "$summary" | grep -v '^RESULT' | sort -k3
  read -r _ n bf16 reorders refs bad <<<"$(echo "$summary" | grep '^RESULT')"
  local verdict=ok
  if ((n == 0 || bf16 == 0 || reorders > 0 || refs > 0 || bad > 0)); then verdict=FAIL; status=1; fi
  echo "  $n executions per sample+encode, $bf16 with bf16 inputs (all $want: $((bf16 - bad))),"\
    "$reorders reorders, $refs reference kernels: $verdict"
}

want=bf16
((amx > 0)) && want=amx
for batch in 1 4; do
  log=$dir/default-$batch.log
  ((batch == 1)) || run_probe "$log" "" "$batch" || { cat "$log"; exit 1; }
  echo "bf16, batch $batch, oneDNN's default ISA (bf16 kernels must be $want):"
  steady "$log" "$want"
done

for arch in realnvp nice; do
  for batch in 1 4; do
    log=$dir/$arch-$batch.log
    run_probe "$log" "" "$batch" "$dir/$arch.flow" || { cat "$log"; exit 1; }
    echo "bf16, $arch, batch $batch, oneDNN's default ISA (bf16 kernels must be $want):"
    steady "$log" "$want"
  done
done

log=$dir/avx512_core_bf16.log
run_probe "$log" AVX512_CORE_BF16 1 || { cat "$log"; exit 1; }
echo "bf16, batch 1, ONEDNN_MAX_CPU_ISA=AVX512_CORE_BF16 (no AMX):"
steady "$log" 'avx512_core_bf16'
if grep -q '^onednn_verbose,exec.*amx' "$log"; then
  echo "  FAIL: an AMX kernel ran above the ISA limit"
  status=1
fi

log=$dir/avx512_core_vnni.log
rc=0
run_probe "$log" AVX512_CORE_VNNI 1 || rc=$?
if ((rc == 3)) && grep -q 'FLOWRT_UNSUPPORTED.*avx512_core_vnni' "$log"; then
  echo "bf16 under ONEDNN_MAX_CPU_ISA=AVX512_CORE_VNNI is refused: ok"
else
  echo "bf16 under ONEDNN_MAX_CPU_ISA=AVX512_CORE_VNNI: expected FLOWRT_UNSUPPORTED naming the"\
    "ISA, got status $rc: FAIL"
  cat "$log"
  status=1
fi
exit $status
