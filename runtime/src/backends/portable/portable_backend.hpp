// The portable backend: the reference executor's flow walk (ref_executor.hpp) with its coupling
// nets and split priors run as packed GEMMs (portable_gemm.hpp) on groups of images. Plain C++
// and OpenMP (when present): for CPUs and builds without oneDNN (ARM boards, WebAssembly,
// minimal installs). Part of the core, like the reference backend.
#pragma once

#include <cstddef>
#include <memory>
#include <string>

#include "backends/backend.hpp"

namespace flowrt {

// FLOWRT_PORTABLE_ISA (avx512f, avx2, baseline) picks the kernels instead of the widest the CPU
// runs; one this build or CPU lacks fails with FLOWRT_UNSUPPORTED. FLOWRT_PORTABLE_CHUNK_BYTES
// sets the net activation a group of images may occupy (see PortableNets).
std::unique_ptr<Backend> create_portable_backend(const Graph &graph, const BackendOptions &options);

// What a portable backend holds, in bytes: `packed`, the nets' convolution weights (and biases)
// in the kernels' panel layout, the backend's one copy of them (the Program views the model's
// bytes); `program`, the other weights the Program owns (the 1x1 convolutions and their inverses,
// actnorms, priors, folded biases); `scratch`, activations and GEMM workspace for max_batch.
// All zero for any other backend.
struct PortableBytes {
  size_t packed = 0, program = 0, scratch = 0;
};
PortableBytes portable_bytes(const Backend &backend);

// The kernels a portable backend runs ("avx512f"...); empty for any other backend.
std::string portable_kernels(const Backend &backend);

// The kernels the portable backend picks on this CPU by default, for descriptions.
std::string portable_default_kernels();

}  // namespace flowrt
