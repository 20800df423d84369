// The reference backend: the RefExecutor's walk in float32 behind the Backend interface. It keeps
// plain IEEE arithmetic (no flushing of denormals): it is the oracle. Its nets run unfolded on the
// graph's own tensors (NetWeights::View: the model's memory-mapped bytes, read in place), so a
// session holds only its activation buffers and the small per-pixel preparations (the actnorms
// folded into the 1x1 convs, their inverses, the priors).
#include "backends/backend.hpp"
#include "backends/ref/executor_backend.hpp"

namespace flowrt {

std::unique_ptr<Backend> create_ref_backend(const Graph &graph, const BackendOptions &options) {
  return std::make_unique<ExecutorBackend<RefNets<float>, FLOWRT_BACKEND_REF>>(graph, options,
                                                                               NetWeights::View);
}

}  // namespace flowrt
