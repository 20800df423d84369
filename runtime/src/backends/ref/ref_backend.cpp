// The reference backend: the RefExecutor in float32 behind the Backend interface. It keeps plain
// IEEE arithmetic (no flushing of denormals): it is the oracle. Its nets run unfolded on the
// graph's own tensors (NetWeights::View: the model's memory-mapped bytes, read in place), so a
// session holds only its activation buffers and the small per-pixel preparations (the actnorms
// folded into the 1x1 convs, their inverses, the priors).
#include "backends/backend.hpp"
#include "backends/ref/ref_executor.hpp"

namespace flowrt {
namespace {

class RefBackend final : public Backend {
 public:
  RefBackend(const Graph &g, const BackendOptions &o)
      : Backend(g.dims()),
        exec_(g, o.max_batch, o.threads, ProgramOptions{o.fold, NetWeights::View}),
        threads_(resolve_threads(o.threads)) {}
  flowrt_backend kind() const override { return FLOWRT_BACKEND_REF; }

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

 private:
  RefExecutor<float> exec_;
  int threads_;
};

}  // namespace

std::unique_ptr<Backend> create_ref_backend(const Graph &graph, const BackendOptions &options) {
  return std::make_unique<RefBackend>(graph, options);
}

}  // namespace flowrt
