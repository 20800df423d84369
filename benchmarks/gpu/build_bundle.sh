#!/usr/bin/env bash
# Builds, on a CPU machine with the CUDA toolkit, everything benchmarks/gpu/run.sh needs on a GPU
# machine that has the CUDA driver, toolkit, Python and PyTorch but no oneDNN, FlatBuffers or
# apt: build-gpu/bundle/{bin,lib,python}, small enough to copy over (~30 MB).
#   benchmarks/gpu/build_bundle.sh [ARCHS]     ARCHS: CUDA architectures, default 90-real (Hopper)
set -euo pipefail
cd "$(dirname "$0")/../.."
archs=${1:-90-real}
build=build-gpu
cmake -S . -B "$build" -DCMAKE_BUILD_TYPE=Release -DFLOWRT_WITH_CUDA=ON -DFLOWRT_WITH_ONEDNN=OFF \
  -DCMAKE_CUDA_ARCHITECTURES="$archs" -DBUILD_SHARED_LIBS=ON > /dev/null
cmake --build "$build" -j"${FLOWRT_JOBS:-2}" --target flowrt flowrt_cli flowbench flowrt_tests flowtrain
bundle=$build/bundle
rm -rf "$bundle"
mkdir -p "$bundle/bin" "$bundle/lib" "$bundle/python"
cp "$build/bin/flowrt" "$build/bin/flowbench" "$build/bin/flowrt_tests" "$build/bin/flowtrain" \
  "$bundle/bin/"
cp -P "$build"/lib/libflowrt.so* "$build"/lib/libflowrt-cuda.so "$bundle/lib/"
# Shared libraries the GPU host may lack: everything but glibc's own and the CUDA toolkit's.
# (The programs in bin/ find the CUDA plugin in ../lib.)
for f in "$bundle"/bin/* "$bundle/lib/libflowrt.so" "$bundle/lib/libflowrt-cuda.so"; do
  ldd "$f" | awk '/=> \// {print $3}'
done | sort -u | while read -r lib; do
  case $(basename "$lib") in
    libc.so* | libm.so* | libdl.so* | librt.so* | libpthread.so* | ld-linux*) ;;
    libcuda.so* | libcublas* | libcudart*) ;;
    *) cp -L "$lib" "$bundle/lib/" ;;
  esac
done
# The FlatBuffers Python runtime (pure Python) for reading .flow files from the PyTorch side.
py_fb=$(/usr/bin/python3 -c 'import flatbuffers, os; print(os.path.dirname(flatbuffers.__file__))')
cp -r "$py_fb" "$bundle/python/"
du -sh "$bundle"
