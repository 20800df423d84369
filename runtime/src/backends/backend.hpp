// The interface every backend implements. A backend is created for one model and one maximum
// batch, prepares its weights and allocates all its scratch memory then, and afterwards only
// computes: no call below allocates. Inputs are checked by the session before they get here
// (sizes, NaNs, labels), and n <= max_batch always.
#pragma once

#include <cstddef>
#include <cstdint>
#include <memory>
#include <string>
#include <vector>

#include "flowrt.h"
#include "model/graph.hpp"

namespace flowrt {

struct BackendOptions {
  size_t max_batch = 16;
  int threads = 0;  // 0: all cores
  int device = 0;
  flowrt_precision precision = FLOWRT_PRECISION_FP32;  // TF32, FP16: CUDA; BF16: CUDA, oneDNN
  bool fold = true;  // apply the load-time foldings (off only to test them)
};

// The precisions by name ("fp32", "tf32", "bf16", "fp16"): the one list error messages, flowbench's
// options and labels use. Callers pass only values of the enum (the C API checks them first).
inline constexpr flowrt_precision kPrecisions[] = {FLOWRT_PRECISION_FP32, FLOWRT_PRECISION_TF32,
                                                   FLOWRT_PRECISION_BF16, FLOWRT_PRECISION_FP16};
inline const char *precision_name(flowrt_precision p) {
  switch (p) {
    case FLOWRT_PRECISION_FP32:
      return "fp32";
    case FLOWRT_PRECISION_TF32:
      return "tf32";
    case FLOWRT_PRECISION_BF16:
      return "bf16";
    case FLOWRT_PRECISION_FP16:
      return "fp16";
  }
  return "unknown";
}
// The precision called `name` ("fp32", ...): false if there is none.
inline bool precision_from_name(const std::string &name, flowrt_precision *out) {
  for (flowrt_precision p : kPrecisions)
    if (name == precision_name(p)) return *out = p, true;
  return false;
}
// "fp32, tf32, bf16, fp16", for error messages.
inline std::string precision_names() {
  std::string names;
  for (flowrt_precision p : kPrecisions)
    names += (names.empty() ? "" : ", ") + std::string(precision_name(p));
  return names;
}

class Backend {
 public:
  explicit Backend(int64_t dims) : dims_(dims) {}
  virtual ~Backend() = default;
  int64_t dims() const { return dims_; }
  virtual flowrt_backend kind() const = 0;

  // x: n*D floats -> z: n*D floats; log_p: per-image log p(x) in nats (prior + log|det|);
  // log_det: per-image log|det dz/dx|. labels may be null (unconditional).
  virtual void encode(size_t n, const float *x, const int32_t *labels, float *z, double *log_p,
                      double *log_det) = 0;
  // z: n*D latents -> x: n*D.
  virtual void decode(size_t n, const float *z, float *x) = 0;
  // eps: n*D standard normals; each level's latent is mean + temperature * std * eps.
  virtual void decode_noise(size_t n, const float *eps, float temperature, const int32_t *labels,
                            float *x) = 0;
  // Samples images first_image .. first_image+n-1 of the seed's stream. The CPU backends draw
  // the Philox normals into `eps_scratch` (n*D floats) with philox_fill on the session's
  // threads and decode them.
  virtual void sample(size_t n, uint64_t seed, uint64_t first_image, float temperature,
                      const int32_t *labels, float *eps_scratch, float *x) = 0;
  // The kernels (primitive implementations) this backend runs at batch n, for flowbench and
  // the tests ("conv brgconv:avx512_core", ...); empty where a backend does not say.
  virtual std::vector<std::string> kernels(size_t) { return {}; }

 protected:
  int64_t dims_;  // D = C*H*W floats per image, for x, z and eps alike
};

// Fills eps with the Philox normals of images first_image.. (n*dims floats) on `threads` OpenMP
// threads; 0 (for callers without a session) takes OpenMP's default team.
void philox_fill(uint64_t seed, uint64_t first_image, size_t n, int64_t dims, float *eps,
                 int threads = 0);

// The reference backend, part of the core. The others: backends/onednn/onednn_backend.hpp and
// backends/cuda/cuda_backend.hpp (linked into plugins); obtain them through backend_registry.hpp.
std::unique_ptr<Backend> create_ref_backend(const Graph &graph, const BackendOptions &options);

}  // namespace flowrt
