#!/usr/bin/env bash
# Fails if a core libflowrt (the shared library apps link) needs a backend's toolkit: oneDNN,
# OpenCL, CUDA or cuBLAS belong in the plugins (libflowrt-onednn.so, libflowrt-cuda.so).
#   scripts/check_core_deps.sh path/to/libflowrt.so
set -euo pipefail
lib=$1
needed=$(readelf -d "$lib" | sed -n 's/.*(NEEDED).*\[\(.*\)\]/\1/p')
echo "$lib needs: $(echo $needed)"
if echo "$needed" | grep -Eiq 'dnnl|opencl|cuda|cublas|nccl'; then
  echo "FAIL: $lib links a backend toolkit: $(echo "$needed" | grep -Ei 'dnnl|opencl|cuda|cublas|nccl' | tr '\n' ' ')"
  exit 1
fi
