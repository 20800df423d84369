// Whether a usable CUDA device is present: false (not an error) without a driver or a device.
#include <cuda_runtime.h>

#include "backends/backend.hpp"

namespace flowrt {

bool cuda_device_available(int device) {
  int count = 0;
  if (cudaGetDeviceCount(&count) != cudaSuccess) {
    cudaGetLastError();  // clear the sticky "no driver" error
    return false;
  }
  return device >= 0 && device < count;
}

}  // namespace flowrt
