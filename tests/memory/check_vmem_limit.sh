#!/usr/bin/env bash
# Memory that runs out, under `ulimit -v` (the address space is capped a little above what a
# process with libflowrt loaded needs):
#   - a model file larger than the memory left: flowrt_model_open fails with
#     FLOWRT_OUT_OF_MEMORY naming the file; `flowrt info` and `flowrt sample` exit 1 with one
#     line naming it (no signal, no abort, no PNG written);
#   - a session whose batch does not fit: flowrt_session_create fails with FLOWRT_OUT_OF_MEMORY
#     and the same model then runs a batch-1 session (ref and, when built, oneDNN).
#   check_vmem_limit.sh FLOWRT_CLI OOM_PROBE WORK_DIR BACKEND...
set -euo pipefail
cli=$1 probe=$2 dir=$3
shift 3
mkdir -p "$dir"
small=$dir/small.flow big=$dir/big.flow
"$cli" init --image 3x16x16 --levels 2 --depth 2 --width 32 --random-nets -o "$small" >/dev/null
# About 100 MB of weights: wide 1x1 convolutions.
"$cli" init --image 3x16x16 --levels 2 --depth 4 --width 1536 --random-nets -o "$big" >/dev/null
big_kb=$(($(stat -c %s "$big") / 1024))
base_kb=$("$probe" vm)
status=0
check() {  # NAME EXPECTED_RC RC OUTPUT [PATTERN]
  local verdict=ok
  if [ "$2" != "$3" ] || { [ -n "${5:-}" ] && ! grep -q -- "$5" <<<"$4"; }; then
    verdict=FAIL
    status=1
  fi
  printf '%-44s exit %s (want %s): %s\n    %s\n' "$1" "$3" "$2" "$verdict" "$(head -n 2 <<<"$4")"
}
run() { set +e; out=$(ulimit -v "$limit_kb"; "$@" 2>&1); rc=$?; set -e; }

# Room for the library, its plugins and small sessions, but not for the big model's mapping.
limit_kb=$((base_kb + big_kb / 2))
echo "VmPeak with libflowrt loaded: $base_kb kB; big model: $big_kb kB; ulimit -v $limit_kb kB"
run "$probe" open "$big"
check "open a model larger than memory" 3 "$rc" "$out" "big.flow"
run "$cli" info "$big"
check "flowrt info on it" 1 "$rc" "$out" "big.flow.*memory"
run "$cli" sample "$big" -n 1 -o "$dir/never.png"
check "flowrt sample on it" 1 "$rc" "$out" "OUT_OF_MEMORY.*big.flow"
[ ! -e "$dir/never.png" ] || { echo "FAIL: a PNG was written"; status=1; }

# 64 MB more than a batch-1 session on the backend needs; max batch 65536 needs over 200 MB
# for each activation buffer.
for backend in "$@"; do
  limit_kb=$(($("$probe" vm "$small" "$backend") + 65536))
  run "$probe" session "$small" "$backend" 65536
  check "$backend: session whose batch does not fit" 0 "$rc" "$out" "FLOWRT_OUT_OF_MEMORY"
done
exit $status
