// The CPU backends that run the flow walk of ref_executor.hpp (the reference and the portable
// backend): a Backend forwarding each call to a FlowExecutor<float, Nets>, with sample drawing
// its Philox normals on the session's threads. The backends differ only in their Nets policy,
// how the Program holds the nets' weights, and what they report about themselves.
#pragma once

#include "backends/backend.hpp"
#include "backends/ref/ref_executor.hpp"

namespace flowrt {

template <typename Nets, flowrt_backend Kind>
class ExecutorBackend : public Backend {
 public:
  ExecutorBackend(const Graph &g, const BackendOptions &o, NetWeights net_weights)
      : Backend(g.dims()),
        exec_(g, o.max_batch, o.threads, ProgramOptions{o.fold, net_weights}),
        threads_(resolve_threads(o.threads)) {}
  flowrt_backend kind() const override { return Kind; }

  void encode(size_t n, const float *x, const int32_t *labels, float *z, double *log_p,
              double *log_det) override {
    exec_.encode(n, x, labels, z, log_p, log_det);
  }
  void decode(size_t n, const float *z, float *x) override {
    exec_.decode(n, z, false, 0.f, nullptr, x);
  }
  void decode_noise(size_t n, const float *eps, float temperature, const int32_t *labels,
                    float *x) override {
    exec_.decode(n, eps, true, temperature, labels, x);
  }
  // The draws too run on the session's threads only.
  void sample(size_t n, uint64_t seed, uint64_t first_image, float temperature,
              const int32_t *labels, float *eps_scratch, float *x) override {
    philox_fill(seed, first_image, n, dims_, eps_scratch, threads_);
    exec_.decode(n, eps_scratch, true, temperature, labels, x);
  }

 protected:
  FlowExecutor<float, Nets> exec_;
  int threads_;
};

}  // namespace flowrt
