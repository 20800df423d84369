// The oneDNN backend (linked into libflowrt-onednn.so, or into a static libflowrt), and its
// introspection for tests and flowbench: which implementation oneDNN chose
// for every primitive of a batch size (a silent fallback to a "ref:" kernel is a bug).
#pragma once

#include <cstddef>
#include <string>
#include <vector>

#include "backends/backend.hpp"

namespace flowrt {

std::unique_ptr<Backend> create_onednn_backend(const Graph &graph, const BackendOptions &options);

// One entry per primitive ("conv brgconv:avx512_core", "matmul gemm:jit", ...) of `backend`
// (created by create_onednn_backend) at batch size n; creates that batch size's primitives when
// needed. Empty for any other backend.
std::vector<std::string> onednn_primitive_impls(Backend &backend, size_t n);

// The oneDNN library version, "major.minor.patch".
std::string onednn_version();

}  // namespace flowrt
