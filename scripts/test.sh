#!/usr/bin/env bash
# Installs what is missing, builds flowrt (Release), runs every test, proves the installed
# package with the C example (CMake and pkg-config, shared and static), then rebuilds with
# AddressSanitizer + UndefinedBehaviorSanitizer and runs the tests again, and runs the
# concurrency test in a ThreadSanitizer build (scripts/tsan.sh).
#   scripts/test.sh            everything
#   FLOWRT_SKIP_ASAN=1 scripts/test.sh   skip the AddressSanitizer pass
#   FLOWRT_SKIP_TSAN=1 scripts/test.sh   skip the ThreadSanitizer pass
set -euo pipefail
cd "$(dirname "$0")/.."
root=$(pwd)
jobs=${FLOWRT_JOBS:-2}

scripts/deps.sh
bash tests/converters/install_onnxruntime.sh

echo "== Release build"
cmake -S . -B build -DCMAKE_BUILD_TYPE=Release
cmake --build build -j"$jobs"
echo "== tests"
ctest --test-dir build --output-on-failure

echo "== installed package: CMake and pkg-config, shared and static"
rm -rf build/install build/examples build/install-static build/examples-static
cmake --install build --prefix build/install > /dev/null
cmake -S examples -B build/examples -DCMAKE_PREFIX_PATH="$root/build/install" > /dev/null
cmake --build build/examples -j"$jobs" > /dev/null
build/bin/flowrt init --image 3x16x16 --levels 2 --depth 2 --width 16 --random-nets -o build/example.flow > /dev/null
LD_LIBRARY_PATH="$root/build/install/lib" build/examples/sample_png build/example.flow build/example_ 2
echo "== the installed core library links no backend toolkit; the app runs without the CUDA plugin"
scripts/check_core_deps.sh build/install/lib/libflowrt.so
rm -rf build/install-cpu && cp -a build/install build/install-cpu && rm -f build/install-cpu/lib/libflowrt-cuda.so
LD_LIBRARY_PATH="$root/build/install-cpu/lib" build/examples/sample_png build/example.flow build/example_cpu_ 1 \
  | tee build/example_cpu.log
grep -q "^backend: onednn" build/example_cpu.log || { echo "FAIL: without the CUDA plugin the app did not run on oneDNN"; exit 1; }
rm -f build/install-cpu/lib/libflowrt-onednn.so
LD_LIBRARY_PATH="$root/build/install-cpu/lib" build/examples/sample_png build/example.flow build/example_ref_ 1 \
  | tee build/example_ref.log
grep -q "^backend: portable" build/example_ref.log || { echo "FAIL: without any plugin the app did not fall back to the portable backend"; exit 1; }
cc -std=c99 -Wall -Wextra -Werror examples/sample_png.c -o build/sample_png_pc \
  $(PKG_CONFIG_PATH="$root/build/install/lib/pkgconfig" pkg-config --cflags --libs flowrt) -lpng
LD_LIBRARY_PATH="$root/build/install/lib" build/sample_png_pc build/example.flow build/example_pc_ 1
cmake -S . -B build/static -DCMAKE_BUILD_TYPE=Release -DBUILD_SHARED_LIBS=OFF -DFLOWRT_BUILD_TOOLS=OFF \
  -DFLOWRT_BUILD_TESTS=OFF -DFLOWRT_BUILD_BENCHMARKS=OFF -DFLOWRT_WITH_CUDA=OFF > /dev/null
cmake --build build/static -j"$jobs" > /dev/null
cmake --install build/static --prefix build/install-static > /dev/null
cmake -S examples -B build/examples-static -DCMAKE_PREFIX_PATH="$root/build/install-static" > /dev/null
cmake --build build/examples-static -j"$jobs" > /dev/null
build/examples-static/sample_png build/example.flow build/example_static_ 1
cc -std=c99 -Wall -Wextra -Werror examples/sample_png.c -o build/sample_png_static \
  $(PKG_CONFIG_PATH="$root/build/install-static/lib/pkgconfig" pkg-config --static --cflags --libs flowrt) -lpng
build/sample_png_static build/example.flow build/example_static_pc_ 1

if [ "${FLOWRT_SKIP_ASAN:-0}" != "1" ]; then
  echo "== AddressSanitizer + UBSan build"
  cmake -S . -B build-asan -DCMAKE_BUILD_TYPE=RelWithDebInfo -DFLOWRT_SANITIZE=ON \
    -DFLOWRT_WITH_CUDA=OFF -DFLOWRT_BUILD_BENCHMARKS=OFF > /dev/null
  cmake --build build-asan -j"$jobs"
  # The Python tests load libflowrt into an unsanitized interpreter: they ran above.
  ASAN_OPTIONS=detect_leaks=1 ctest --test-dir build-asan --output-on-failure -E converters
fi
if [ "${FLOWRT_SKIP_TSAN:-0}" != "1" ]; then
  echo "== ThreadSanitizer build: concurrency"
  scripts/tsan.sh
fi
echo "== all tests passed"
