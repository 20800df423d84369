// Turning CUDA runtime and cuBLAS failures into flowrt::Error(FLOWRT_DEVICE_ERROR) with the call
// and the error name, and RAII for device memory.
#pragma once

#include <cublas_v2.h>
#include <cuda_runtime.h>

#include <string>
#include <vector>

#include "core/error.hpp"

namespace flowrt::cuda {

inline void check(cudaError_t e, const char *what) {
  if (e != cudaSuccess)
    fail(FLOWRT_DEVICE_ERROR, std::string("CUDA: ") + what + ": " + cudaGetErrorName(e) + " (" +
                                  cudaGetErrorString(e) + ")");
}
inline void check(cublasStatus_t s, const char *what) {
  if (s != CUBLAS_STATUS_SUCCESS)
    fail(FLOWRT_DEVICE_ERROR,
         std::string("cuBLAS: ") + what + ": status " + std::to_string(int(s)));
}

// A device allocation of `n` elements of T, freed on destruction.
template <typename T>
class DeviceBuffer {
 public:
  DeviceBuffer() = default;
  explicit DeviceBuffer(size_t n) : n_(n) {
    if (n > 0) {
      const cudaError_t e = cudaMalloc(reinterpret_cast<void **>(&p_), n * sizeof(T));
      if (e == cudaErrorMemoryAllocation)
        fail(FLOWRT_OUT_OF_MEMORY,
             "CUDA: cannot allocate " + std::to_string(n * sizeof(T)) + " bytes of device memory");
      check(e, "cudaMalloc");
    }
  }
  DeviceBuffer(DeviceBuffer &&o) noexcept : p_(o.p_), n_(o.n_) { o.p_ = nullptr, o.n_ = 0; }
  DeviceBuffer &operator=(DeviceBuffer &&o) noexcept {
    if (this != &o) {
      if (p_) cudaFree(p_);
      p_ = o.p_, n_ = o.n_;
      o.p_ = nullptr, o.n_ = 0;
    }
    return *this;
  }
  DeviceBuffer(const DeviceBuffer &) = delete;
  DeviceBuffer &operator=(const DeviceBuffer &) = delete;
  ~DeviceBuffer() {
    if (p_) cudaFree(p_);
  }
  T *get() const { return p_; }
  size_t size() const { return n_; }

 private:
  T *p_ = nullptr;
  size_t n_ = 0;
};

// A device copy of `v` (synchronous, on the legacy default stream: callers that then work on a
// non-blocking stream synchronise the device first).
template <typename T>
DeviceBuffer<T> upload(const std::vector<T> &v) {
  DeviceBuffer<T> d(v.size());
  if (!v.empty())
    check(cudaMemcpy(d.get(), v.data(), v.size() * sizeof(T), cudaMemcpyHostToDevice), "upload");
  return d;
}

}  // namespace flowrt::cuda
