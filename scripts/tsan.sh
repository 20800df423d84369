#!/usr/bin/env bash
# ThreadSanitizer pass: builds the library, the oneDNN plugin, the flowrt command and the
# concurrency test with FLOWRT_TSAN=ON (RelWithDebInfo, no CUDA) in build-tsan, then runs the
# test (tests/concurrency) on the ref and oneDNN backends. Any ThreadSanitizer report fails it.
#   scripts/tsan.sh            FLOWRT_JOBS=N sets the build's parallelism (default 2)
set -euo pipefail
cd "$(dirname "$0")/.."
jobs=${FLOWRT_JOBS:-2}
build="build-tsan"

echo "== ThreadSanitizer build"
cmake -S . -B "$build" -DCMAKE_BUILD_TYPE=RelWithDebInfo -DFLOWRT_TSAN=ON \
  -DFLOWRT_WITH_CUDA=OFF -DFLOWRT_BUILD_BENCHMARKS=OFF > /dev/null
# `flowrt` builds the backend plugins too; flowrt_cli makes the test's model.
cmake --build "$build" -j"$jobs" --target flowrt flowrt_cli concurrency
# A pass over uninstrumented binaries would report nothing: check that they are not.
for lib in "$build"/lib/libflowrt.so "$build"/lib/libflowrt-*.so; do
  # (grep reads all of ldd's output: with -q, ldd could die of SIGPIPE and fail the pipeline)
  ldd "$lib" | grep libtsan > /dev/null ||
    { echo "FAIL: $lib is not built with ThreadSanitizer"; exit 1; }
done

echo "== concurrency under ThreadSanitizer"
# The test's registration (tests/concurrency) sets TSAN_OPTIONS: halt_on_error, so that the first
# report fails the test. The log is searched too, for reports printed without stopping.
log=$build/concurrency-tsan.log
status=0
ctest --test-dir "$build" -L concurrency -V --no-tests=error 2>&1 | tee "$log" || status=$?
reports=$(grep -c 'WARNING: ThreadSanitizer' "$log" || true)
if [ "$status" != 0 ] || [ "$reports" != 0 ]; then
  echo "FAIL: concurrency under ThreadSanitizer: ctest status $status, $reports report(s)"
  exit 1
fi
echo "== ThreadSanitizer: 0 reports"
