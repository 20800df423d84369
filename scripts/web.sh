#!/usr/bin/env bash
# libflowrt in the browser: builds the library for WebAssembly (SIMD) with Debian's emscripten,
# links the demo page of examples/web, and serves or tests it.
#   scripts/web.sh build [MODEL.flow]   -> build-wasm/web/ (the page, its worker, the model)
#   scripts/web.sh serve [MODEL.flow]   build, then serve it on http://127.0.0.1:8000/
#   scripts/web.sh test  [MODEL.flow]   build, then drive the page in headless Chromium: it must
#                                       sample 16 images whose pixels equal the native library's
#                                       for the same seed and temperature (and take a screenshot)
# MODEL.flow defaults to runs/quickstart/model.flow, else a freshly initialised 1x32x32 Glow.
#   FLOWRT_WEB_PORT=8000  the port;  FLOWRT_JOBS=2  build jobs
set -euo pipefail
cd "$(dirname "$0")/.."
root=$(pwd)
mode=${1:-build}
model=${2:-}
jobs=${FLOWRT_JOBS:-2}
out=build-wasm/web
python=/usr/bin/python3

# What the WebAssembly build and the native library beside it need (not the whole toolchain
# of scripts/deps.sh).
need=(build-essential cmake pkg-config emscripten flatbuffers-compiler libflatbuffers-dev
  libpng-dev zlib1g-dev python3)
[ "$mode" = test ] && need+=(chromium python3-websocket python3-numpy)
scripts/deps.sh --only "${need[@]}"

# The native library (and flowrt command) the page is compared with, without the test suite.
native_build() {
  cmake -S . -B build-wasm/native -DCMAKE_BUILD_TYPE=Release -DFLOWRT_BUILD_TESTS=OFF \
    -DFLOWRT_BUILD_BENCHMARKS=OFF -DFLOWRT_BUILD_TRAINER=OFF -DFLOWRT_WITH_CUDA=OFF > /dev/null
  cmake --build build-wasm/native -j"$jobs" --target flowrt flowrt_cli > /dev/null
}

# The FlatBuffers headers alone: the WebAssembly compiler must not see the host's /usr/include.
mkdir -p build-wasm/include
ln -sfn /usr/include/flatbuffers build-wasm/include/flatbuffers
emcmake cmake -S . -B build-wasm -DCMAKE_BUILD_TYPE=Release -DBUILD_SHARED_LIBS=OFF \
  -DFLOWRT_BUILD_TOOLS=OFF -DFLOWRT_BUILD_TESTS=OFF -DFLOWRT_BUILD_BENCHMARKS=OFF \
  -DFLOWRT_WITH_ONEDNN=OFF -DFLOWRT_WITH_CUDA=OFF -DFLOWRT_WITH_MPI=OFF -DFLOWRT_WITH_NCCL=OFF \
  -DCMAKE_C_FLAGS=-msimd128 -DCMAKE_CXX_FLAGS=-msimd128 \
  -DCMAKE_FIND_ROOT_PATH_MODE_PACKAGE=BOTH \
  -DFlatBuffers_DIR="$(dirname "$(dpkg -L "libflatbuffers-dev:$(dpkg --print-architecture)" | grep -m1 '/FlatBuffersConfig.cmake$')")" \
  -DFLOWRT_FLATBUFFERS_INCLUDE_DIR="$root/build-wasm/include" > /dev/null
cmake --build build-wasm -j"$jobs" --target flowrt
mkdir -p "$out"
emcc -O3 -msimd128 -std=c99 -Wall -Wextra -Werror -Iruntime/include -c examples/web/flowrt_web.c \
  -o build-wasm/flowrt_web.o
# Linked as C++: libflowrt is C++ inside. Emscripten's JS tools need Debian's node modules, which
# a node from another source does not search.
NODE_PATH=/usr/share/nodejs:/usr/lib/nodejs em++ -O3 -msimd128 build-wasm/flowrt_web.o build-wasm/lib/libflowrt.a \
  -sMODULARIZE -sEXPORT_NAME=createFlowrt -sENVIRONMENT=worker -sALLOW_MEMORY_GROWTH \
  -sEXPORTED_FUNCTIONS=_malloc,_free,_web_open,_web_close,_web_info,_web_sample,_web_encode,_web_error \
  -sEXPORTED_RUNTIME_METHODS=UTF8ToString -o "$out/flowrt_web.js"
cp examples/web/index.html examples/web/app.js examples/web/worker.js "$out/"

if [ -z "$model" ]; then
  if [ -f runs/quickstart/model.flow ]; then
    model=runs/quickstart/model.flow
  else
    native_build
    model=build-wasm/init.flow
    build-wasm/native/bin/flowrt init --image 1x32x32 --levels 3 --depth 8 --width 256 --seed 1 -o "$model" > /dev/null
  fi
fi
cp "$model" "$out/model.flow"
echo "web: $out (model $model; flowrt_web.wasm $(stat -c %s "$out/flowrt_web.wasm") bytes)"

port=${FLOWRT_WEB_PORT:-8000}
case $mode in
  build) ;;
  serve)
    echo "serving http://127.0.0.1:$port/"
    exec "$python" -m http.server "$port" --bind 127.0.0.1 --directory "$out"
    ;;
  test)
    native_build
    "$python" examples/web/web_test.py --dir "$out" --port "$port" \
      --library build-wasm/native/lib/libflowrt.so \
      --model "$out/model.flow" --screenshot "$out/screenshot.png"
    ;;
  *)
    sed -n '2,11p' "$0"
    exit 2
    ;;
esac
