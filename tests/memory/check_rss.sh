#!/usr/bin/env bash
# Resident memory (VmRSS). A program linking libflowrt that has opened nothing: at most START_MB
# (20). The resident memory a session adds (VmRSS after flowrt_session_create, flowrt_sample and
# flowrt_encode, minus VmRSS after flowrt_model_open) on a generated cifar model at max batch 1:
#   ref:    at most REF_SCRATCH_MB (its scratch: activation buffers for one image, a few MB); the
#           nets' weights are read from the model's mapping, never copied;
#   onednn: at most 1.15 x the model file + ONEDNN_SCRATCH_MB (one prepared copy of each weight
#           tensor, ~1.1 x the file with its blocked layouts' padding, plus scratch, primitives
#           and the oneDNN runtime);
#   onednn at bf16 (where the CPU has bf16 units): at most 0.6 x the file + ONEDNN_SCRATCH_MB
#           (the nets' prepared copies are bf16, half the size, and replace the fp32 ones);
#   portable: at most 1.03 x the file + PORTABLE_SCRATCH_MB (its one copy of the nets' weights,
#           packed in panels of the register tile, ~1.01 x the file on cifar, plus scratch).
# Model open leaves the mapped file resident (verification reads every tensor): that is the
# baseline. The code before one-copy weights added 177 MB (ref) and 542 MB (onednn) here.
#
#   check_rss.sh FLOWRT_CLI RSS_PROBE WORK_DIR BACKEND...
set -euo pipefail
cli=$1 probe=$2 dir=$3
shift 3
START_MB=${START_MB:-20}
REF_SCRATCH_MB=${REF_SCRATCH_MB:-8}
ONEDNN_SCRATCH_MB=${ONEDNN_SCRATCH_MB:-16}
PORTABLE_SCRATCH_MB=${PORTABLE_SCRATCH_MB:-8}
mkdir -p "$dir"
model=$dir/cifar.flow
"$cli" init --arch cifar --random-nets -o "$model" >/dev/null

mib() { echo "$(($1 / 1024)).$((($1 % 1024) * 10 / 1024))"; }  # kB -> MiB, one decimal

status=0
cases=()
for backend in "$@"; do
  cases+=("$backend")
  if [ "$backend" = onednn ]; then cases+=(onednn:bf16); fi
done
for case in "${cases[@]}"; do
  backend=${case%%:*} precision=fp32
  if [ "$case" != "$backend" ]; then precision=${case#*:}; fi
  rc=0
  out=$("$probe" "$model" "$backend" 1 "$precision" 2>&1) || rc=$?
  if ((rc == 3)) && [ "$precision" = bf16 ]; then
    echo "$case: SKIPPED: ${out#*FLOWRT_UNSUPPORTED: }"
    continue
  fi
  if ((rc != 0)); then echo "$out"; exit 1; fi
  line=$(head -n 1 <<<"$out")
  echo "$case max_batch 1: $line"
  declare -A kb=()
  for kv in ${line#rss_kb }; do kb[${kv%%=*}]=${kv#*=}; done
  # A program that has loaded libflowrt and opened nothing: the core alone (no backend toolkit
  # is linked; plugins load on first use).
  start_bound=$((START_MB * 1024))
  verdict=ok
  if ((kb[start] > start_bound)); then verdict=FAIL; status=1; fi
  printf '  %-7s %7d kB (%s MiB), bound %7d kB (%s MiB): %s\n' "start" "${kb[start]}" \
    "$(mib "${kb[start]}")" "$start_bound" "$(mib "$start_bound")" "$verdict"
  case $case in
    ref) bound=$((REF_SCRATCH_MB * 1024)); rule="${REF_SCRATCH_MB} MiB of scratch" ;;
    onednn:bf16)
      bound=$((kb[file_kb] * 60 / 100 + ONEDNN_SCRATCH_MB * 1024))
      rule="0.6 x the file (${kb[file_kb]} kB) + ${ONEDNN_SCRATCH_MB} MiB of scratch" ;;
    onednn)
      bound=$((kb[file_kb] * 115 / 100 + ONEDNN_SCRATCH_MB * 1024))
      rule="1.15 x the file (${kb[file_kb]} kB) + ${ONEDNN_SCRATCH_MB} MiB of scratch" ;;
    portable)
      bound=$((kb[file_kb] * 103 / 100 + PORTABLE_SCRATCH_MB * 1024))
      rule="1.03 x the file (${kb[file_kb]} kB) + ${PORTABLE_SCRATCH_MB} MiB of scratch" ;;
    *) echo "unknown backend $backend"; exit 2 ;;
  esac
  for stage in session sample encode; do
    added=$((kb[$stage] - kb[open]))
    verdict=ok
    if ((added > bound)); then verdict=FAIL; status=1; fi
    printf '  %-7s adds %7d kB (%s MiB), bound %7d kB (%s MiB: %s): %s\n' "$stage" "$added" \
      "$(mib "$added")" "$bound" "$(mib "$bound")" "$rule" "$verdict"
  done
  unset kb
done
exit $status
