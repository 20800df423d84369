// An InferenceSession binds a verified model to one backend with scratch for a maximum batch. It
// checks every argument (sizes with overflow checks, NaNs, labels, temperature), converts between
// pixels and the network's continuous range, computes bits/dim, and splits large batches into
// chunks of the maximum batch. Nothing here allocates after construction.
#pragma once

#include <atomic>
#include <memory>
#include <vector>

#include "backends/backend.hpp"
#include "model/graph.hpp"

namespace flowrt {

template <typename T>
class RefExecutor;

struct InferenceOptions {
  flowrt_backend backend = FLOWRT_BACKEND_AUTO;
  int threads = 0;
  int device = 0;
  size_t max_batch = 16;
  flowrt_precision precision = FLOWRT_PRECISION_FP32;
  bool fold = true;
};

class InferenceSession {
 public:
  InferenceSession(std::shared_ptr<const Graph> graph, const InferenceOptions &options);
  ~InferenceSession();
  flowrt_backend backend() const { return backend_->kind(); }
  const Graph &graph() const { return *graph_; }
  size_t max_batch() const { return max_batch_; }

  // Every output pointer may be null.
  void encode(size_t n, const float *x, const int32_t *labels, float *z, double *log_p,
              double *log_det, double *bits_per_dim);
  void encode_pixels(size_t n, const uint8_t *pixels, const int32_t *labels, float *z,
                     double *log_p, double *bits_per_dim);
  void decode(size_t n, const float *z, float *x, uint8_t *pixels);
  void decode_noise(size_t n, const float *eps, float temperature, const int32_t *labels, float *x,
                    uint8_t *pixels);
  void sample(size_t n, float temperature, uint64_t seed, const int32_t *labels, float *x,
              uint8_t *pixels);
  // The terms of encode one by one (flowrt.h: encode_noise, level_terms, nll_map), on the
  // reference path whatever the backend; every output may be null. The first call creates that
  // path (its scratch for the maximum batch; the nets' weights are read in place).
  void analyze(size_t n, const float *x, const int32_t *labels, float *eps, double *level_log_prior,
               double *level_log_det, double *nll_map);
  int levels() const { return graph_->levels(); }

  // Marks the session busy for the duration of a call (one thread at a time).
  class Use {
   public:
    explicit Use(InferenceSession &s);
    ~Use() { s_.busy_.store(false); }
    Use(const Use &) = delete;
    Use &operator=(const Use &) = delete;

   private:
    InferenceSession &s_;
  };

 private:
  void check_batch(size_t n, const void *input, const char *name) const;
  void check_labels(size_t n, const int32_t *labels) const;
  void check_finite(size_t n, const float *v, const char *name) const;
  void to_pixels(size_t n, const float *x, uint8_t *pixels) const;
  void finish_scores(size_t n, const double *log_p, double *bits_per_dim) const;

  std::shared_ptr<const Graph> graph_;
  std::unique_ptr<Backend> backend_;
  std::unique_ptr<RefExecutor<float>> analysis_;  // created by the first analyze()
  int threads_;
  bool fold_;
  size_t max_batch_;
  int64_t dims_;
  std::vector<float> x_stage_, z_stage_, eps_stage_;
  std::vector<double> log_p_stage_;
  std::atomic<bool> busy_{false};
};

// Pixel (uint8) -> network input at the bin centre for n_bits, and back (see flowrt.h).
float pixel_to_x(uint8_t pixel, int n_bits);
uint8_t x_to_pixel(float x, int n_bits);

}  // namespace flowrt
