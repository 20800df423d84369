// The CUDA backend (linked into libflowrt-cuda.so, or into a static libflowrt).
#pragma once

#include <memory>
#include <string>

#include "backends/backend.hpp"

namespace flowrt {

// Throws Error(FLOWRT_DEVICE_ERROR, "no device ...") when no usable GPU is present.
std::unique_ptr<Backend> create_cuda_backend(const Graph &graph, const BackendOptions &options);
bool cuda_device_available(int device);
// "" when `device` is usable; else why not ("no CUDA driver", "device 1 of 1 ...").
std::string cuda_unavailable_reason(int device);

}  // namespace flowrt
