// Static libflowrt: the backends it was built with are linked in and nothing is loaded at run
// time, so an app that links libflowrt.a ships one archive.
#include "plugins/linked_backends.hpp"

#ifdef FLOWRT_LINK_ONEDNN
#include "backends/onednn/onednn_backend.hpp"
#endif
#ifdef FLOWRT_LINK_CUDA
#include "backends/cuda/cuda_backend.hpp"
#endif

namespace flowrt {
namespace {

[[maybe_unused]] std::string always_usable(int) {
  return "";
}

const LinkedBackend kLinked[] = {
#ifdef FLOWRT_LINK_ONEDNN
    {FLOWRT_BACKEND_ONEDNN, create_onednn_backend, always_usable,
     [] { return "oneDNN " + onednn_version() + " (CPU)"; }},
#endif
#ifdef FLOWRT_LINK_CUDA
    {FLOWRT_BACKEND_CUDA, create_cuda_backend, cuda_unavailable_reason,
     [] { return std::string("CUDA (cuBLAS)"); }},
#endif
    {FLOWRT_BACKEND_REF, nullptr, nullptr, nullptr},  // keeps the array non-empty
};

}  // namespace

LinkedBackends linked_backends() {
  return LinkedBackends{kLinked, sizeof(kLinked) / sizeof(kLinked[0]) - 1, false};
}

}  // namespace flowrt
