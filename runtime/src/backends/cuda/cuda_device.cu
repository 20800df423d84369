// Whether a usable CUDA device is present: false (not an error) without a driver or a device.
#include <cuda_runtime.h>

#include "backends/cuda/cuda_backend.hpp"

namespace flowrt {

std::string cuda_unavailable_reason(int device) {
  int count = 0;
  const cudaError_t e = cudaGetDeviceCount(&count);
  if (e != cudaSuccess) {
    cudaGetLastError();  // clear the sticky "no driver" error
    return std::string("no usable CUDA device: no GPU or no driver (") + cudaGetErrorString(e) +
           ")";
  }
  if (device < 0 || device >= count)
    return "no CUDA device " + std::to_string(device) + " (" + std::to_string(count) + " present)";
  return "";
}

bool cuda_device_available(int device) {
  return cuda_unavailable_reason(device).empty();
}

}  // namespace flowrt
