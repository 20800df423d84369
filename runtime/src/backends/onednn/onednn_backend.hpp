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

// One entry per primitive ("conv brgconv:avx512_core", "matmul gemm:jit", "reorder jit:uni",
// ...) of `backend` (created by create_onednn_backend) at batch size n; creates that batch
// size's primitives when needed. A "reorder" entry runs on every call. Empty for any other
// backend.
std::vector<std::string> onednn_primitive_impls(Backend &backend, size_t n);

// The weights a oneDNN backend holds, in bytes: `prepared`, its one copy of each tensor in the
// layout its primitives use; `mapped`, tensors its primitives read in place from the model's
// bytes (no copy); `extra`, copies of a tensor in a second layout (made only when oneDNN has no
// optimised kernel for the first layout at some batch size: 0 is the design's aim). Covers the
// batch sizes whose primitives exist so far. All zero for any other backend.
struct OnednnWeightBytes {
  size_t prepared = 0, mapped = 0, extra = 0;
};
OnednnWeightBytes onednn_weight_bytes(const Backend &backend);

// The oneDNN library version, "major.minor.patch".
std::string onednn_version();

}  // namespace flowrt
