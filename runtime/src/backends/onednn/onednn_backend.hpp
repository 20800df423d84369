// Introspection of the oneDNN backend for tests and flowbench: which implementation oneDNN chose
// for every primitive of a batch size (a silent fallback to a "ref:" kernel is a bug).
#pragma once

#include <cstddef>
#include <string>
#include <vector>

#include "backends/backend.hpp"

namespace flowrt {

// One entry per primitive ("conv brgconv:avx512_core", "matmul gemm:jit", ...) of `backend`
// (created by create_onednn_backend) at batch size n; creates that batch size's primitives when
// needed. Empty for any other backend.
std::vector<std::string> onednn_primitive_impls(Backend &backend, size_t n);

// The oneDNN library version, "major.minor.patch".
std::string onednn_version();

}  // namespace flowrt
