// Turning CUDA runtime and cuBLAS failures into flowrt::Error(FLOWRT_DEVICE_ERROR) with the call
// and the error name, and RAII for device memory, streams and events.
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

// A non-blocking stream (it never waits for the legacy default stream), drained before it goes,
// so that no work outlives the buffers it uses.
class Stream {
 public:
  Stream() { check(cudaStreamCreateWithFlags(&s_, cudaStreamNonBlocking), "cudaStreamCreate"); }
  Stream(const Stream &) = delete;
  Stream &operator=(const Stream &) = delete;
  ~Stream() {
    cudaStreamSynchronize(s_);
    cudaStreamDestroy(s_);
  }
  cudaStream_t get() const { return s_; }

 private:
  cudaStream_t s_ = nullptr;
};

// An event for ordering streams (no timing).
class Event {
 public:
  Event() { check(cudaEventCreateWithFlags(&e_, cudaEventDisableTiming), "cudaEventCreate"); }
  Event(const Event &) = delete;
  Event &operator=(const Event &) = delete;
  ~Event() { cudaEventDestroy(e_); }
  // What `waiter` enqueues from now on runs after what `signaller` has enqueued so far. The
  // wait takes the event as recorded now, so recording it again later is safe.
  void order(cudaStream_t signaller, cudaStream_t waiter) {
    check(cudaEventRecord(e_, signaller), "cudaEventRecord");
    check(cudaStreamWaitEvent(waiter, e_, 0), "cudaStreamWaitEvent");
  }

 private:
  cudaEvent_t e_ = nullptr;
};

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
