#!/usr/bin/env bash
# FLOWRT_WITH_ONEDNN against a oneDNN package that cannot be loaded (tests/cmake/broken_dnnl):
# AUTO configures without the backend and says why in one line; ON fails with the same reason.
#   onednn_auto.sh SOURCE_DIR WORK_DIR
set -uo pipefail
src=$1 work=$2
broken=$src/tests/cmake/broken_dnnl
common=(-DFLOWRT_WITH_CUDA=OFF -DFLOWRT_BUILD_TOOLS=OFF -DFLOWRT_BUILD_TESTS=OFF
  -DFLOWRT_BUILD_BENCHMARKS=OFF -Ddnnl_DIR="$broken")
fail() { echo "FAIL: $*"; exit 1; }
rm -rf "$work" && mkdir -p "$work"

cmake -S "$src" -B "$work/auto" -DFLOWRT_WITH_ONEDNN=AUTO "${common[@]}" > "$work/auto.log" 2>&1 \
  || { cat "$work/auto.log"; fail "AUTO turned an unloadable oneDNN into a configure error"; }
grep -q "building without the oneDNN backend: .*Could NOT find FlowrtMissingOpenCL" "$work/auto.log" \
  || { cat "$work/auto.log"; fail "AUTO did not say why it builds without oneDNN"; }
grep -q "onednn OFF" "$work/auto.log" || fail "AUTO still enabled the oneDNN backend"

if cmake -S "$src" -B "$work/on" -DFLOWRT_WITH_ONEDNN=ON "${common[@]}" > "$work/on.log" 2>&1; then
  fail "ON configured although oneDNN cannot be loaded"
fi
# CMake folds long messages: compare the text with its lines joined.
tr -s ' \n' ' ' < "$work/on.log" | grep -q "FLOWRT_WITH_ONEDNN=ON but oneDNN cannot be used: .*Could NOT find FlowrtMissingOpenCL" \
  || { cat "$work/on.log"; fail "ON failed without naming the reason"; }
echo "AUTO: $(grep -o 'building without the oneDNN backend: .*' "$work/auto.log")"
echo "1 passed, 0 failed"
