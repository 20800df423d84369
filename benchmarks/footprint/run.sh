#!/usr/bin/env bash
# What embedding libflowrt costs: the size of the library (a static archive with the portable
# backends only, the stripped shared core, its plugins, the WebAssembly module) and the heap and
# resident memory a session holds at batch 1 and 16, measured by tests/memory/rss_probe.
#   benchmarks/footprint/run.sh [MODEL.flow]     default: runs/quickstart/model.flow
# Needs build/ (scripts/test.sh or cmake --build build) and, for the WebAssembly line,
# build-wasm/ (scripts/web.sh build). Prints a Markdown table.
set -euo pipefail
cd "$(dirname "$0")/../.."
model=${1:-runs/quickstart/model.flow}
jobs=${FLOWRT_JOBS:-2}
[ -f "$model" ] || { echo "footprint: no model $model (run scripts/quickstart.sh first)" >&2; exit 2; }
kib() { echo "$(( ($1 + 512) / 1024 )) KiB"; }

# A static libflowrt with no backend toolkit: the core and its built-in backends.
cmake -S . -B build-footprint -DCMAKE_BUILD_TYPE=Release -DBUILD_SHARED_LIBS=OFF \
  -DFLOWRT_BUILD_TOOLS=OFF -DFLOWRT_BUILD_TESTS=OFF -DFLOWRT_BUILD_BENCHMARKS=OFF \
  -DFLOWRT_WITH_ONEDNN=OFF -DFLOWRT_WITH_CUDA=OFF -DFLOWRT_WITH_MPI=OFF -DFLOWRT_WITH_NCCL=OFF > /dev/null
cmake --build build-footprint -j"$jobs" --target flowrt > /dev/null
strip_size() { local t; t=$(mktemp); strip --strip-unneeded -o "$t" "$1"; stat -c %s "$t"; rm -f "$t"; }

echo "| what | size |"
echo "|---|---|"
echo "| static libflowrt.a, built-in backends only (no oneDNN, no CUDA) | $(kib "$(stat -c %s build-footprint/lib/libflowrt.a)") |"
echo "| the same, stripped of debug symbols | $(kib "$(strip_size build-footprint/lib/libflowrt.a)") |"
for lib in build/lib/libflowrt.so build/lib/libflowrt-onednn.so build/lib/libflowrt-cuda.so; do
  [ -f "$lib" ] || continue
  real=$(readlink -f "$lib")
  echo "| $(basename "$lib") stripped | $(kib "$(strip_size "$real")") |"
done
if [ -f build-wasm/web/flowrt_web.wasm ]; then
  wasm=build-wasm/web/flowrt_web.wasm
  echo "| WebAssembly module (flowrt_web.wasm, -O3, SIMD) | $(kib "$(stat -c %s $wasm)") ($(kib "$(gzip -9c $wasm | wc -c)") gzipped) |"
fi
echo
echo "Model: $model ($(kib "$(stat -c %s "$model")"), memory-mapped, not on the heap)."
echo
echo "| backend | max batch | session heap | heap after sample + encode | resident after encode (process) |"
echo "|---|---|---|---|---|"
for backend in $(build/bin/flowrt backends | awk '$2 == "available" {print $1}'); do
  for batch in 1 16; do
    out=$(build/bin/rss_probe "$model" "$backend" "$batch")
    heap=$(sed -n 's/^heap_kb //p' <<<"$out")
    rss=$(sed -n 's/^rss_kb //p' <<<"$out")
    declare -A h=() r=()
    for kv in $heap; do h[${kv%%=*}]=${kv#*=}; done
    for kv in $rss; do r[${kv%%=*}]=${kv#*=}; done
    echo "| $backend | $batch | $(( h[session] - h[open] )) KiB | $(( h[encode] - h[open] )) KiB | $(( r[encode] )) KiB |"
  done
done
