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
    libcuda.so* | libcublas* | libcudart* | libnccl*) ;;  # the toolkit the GPU host has
    *) cp -L "$lib" "$bundle/lib/" ;;
  esac
done
# A slice of Fashion-MNIST (2,560 training and 256 test images, IDX as Debian ships it) for the
# data-parallel check, so the GPU host needs no data set.
mkdir -p "$bundle/data"
/usr/bin/python3 - "$bundle/data" <<'PY'
import gzip, struct, sys
src, dst = "/usr/share/datasets/fashion-mnist", sys.argv[1]
for name, n in (("train-images-idx3-ubyte", 2560), ("train-labels-idx1-ubyte", 2560),
                ("t10k-images-idx3-ubyte", 256), ("t10k-labels-idx1-ubyte", 256)):
    raw = gzip.open(f"{src}/{name}.gz").read()
    dims = raw[3]
    shape = list(struct.unpack(">" + "I" * dims, raw[4:4 + 4 * dims]))
    item = 1
    for d in shape[1:]:
        item *= d
    shape[0] = n
    head = raw[:4] + struct.pack(">" + "I" * dims, *shape)
    body = raw[4 + 4 * dims: 4 + 4 * dims + n * item]
    with gzip.open(f"{dst}/{name}.gz", "wb") as f:
        f.write(head + body)
PY
# The FlatBuffers Python runtime (pure Python) for reading .flow files from the PyTorch side.
py_fb=$(/usr/bin/python3 -c 'import flatbuffers, os; print(os.path.dirname(flatbuffers.__file__))')
cp -r "$py_fb" "$bundle/python/"
du -sh "$bundle"
