#include "session/session.hpp"

#include <cmath>
#include <cstring>

#include "backends/backend_registry.hpp"
#include "backends/ref/ref_executor.hpp"
#include "core/checked_math.hpp"
#include "core/error.hpp"

namespace flowrt {

float pixel_to_x(uint8_t pixel, int n_bits) {
  const int p = pixel >> (8 - n_bits);
  const float bins = static_cast<float>(1 << n_bits);
  return (static_cast<float>(p) + 0.5f) / bins - 0.5f;
}

uint8_t x_to_pixel(float x, int n_bits) {
  const float bins = static_cast<float>(1 << n_bits);
  float q = std::floor((x + 0.5f) * bins);
  if (!(q >= 0.f)) q = 0.f;  // also NaN
  if (q > bins - 1.f) q = bins - 1.f;
  return static_cast<uint8_t>(static_cast<int>(q) << (8 - n_bits));
}

namespace {

std::unique_ptr<Backend> make_backend(const Graph &g, const InferenceOptions &o) {
  BackendOptions bo;
  bo.max_batch = o.max_batch;
  bo.threads = o.threads;
  bo.device = o.device;
  bo.fold = o.fold;
  bo.precision = o.precision;
  // create_backend refuses a precision the chosen backend does not implement.
  if (o.backend == FLOWRT_BACKEND_AUTO) {
    const flowrt_backend kind = resolve_auto_backend(o.device);
    if (kind == FLOWRT_BACKEND_ONEDNN && o.precision == FLOWRT_PRECISION_BF16) {
      try {
        return create_backend(kind, g, bo);
      } catch (const Error &e) {  // a CPU without bf16 units: AUTO runs fp32 there
        if (e.status() != FLOWRT_UNSUPPORTED) throw;
      }
    }
    if (kind != FLOWRT_BACKEND_CUDA) bo.precision = FLOWRT_PRECISION_FP32;
    return create_backend(kind, g, bo);
  }
  return create_backend(o.backend, g, bo);
}

}  // namespace

InferenceSession::Use::Use(InferenceSession &s) : s_(s) {
  bool expected = false;
  if (!s_.busy_.compare_exchange_strong(expected, true))
    fail(FLOWRT_BUSY, "the session is in use by another thread");
}

InferenceSession::InferenceSession(std::shared_ptr<const Graph> graph, const InferenceOptions &o)
    : graph_(std::move(graph)),
      threads_(o.threads),
      fold_(o.fold),
      max_batch_(o.max_batch),
      dims_(graph_->dims()) {
  if (o.max_batch < 1 || o.max_batch > 65536)
    invalid_argument("max_batch " + std::to_string(o.max_batch) + " is out of range [1, 65536]");
  if (o.threads < 0 || o.threads > 4096)
    invalid_argument("threads " + std::to_string(o.threads) + " is out of range [0, 4096]");
  const uint64_t floats = checked_mul(o.max_batch, static_cast<uint64_t>(dims_), "scratch");
  checked_mul(floats, 3 * sizeof(float), "scratch");
  backend_ = make_backend(*graph_, o);
  x_stage_.resize(floats);
  z_stage_.resize(floats);
  eps_stage_.resize(floats);
  log_p_stage_.resize(o.max_batch);
}

InferenceSession::~InferenceSession() = default;

void InferenceSession::check_batch(size_t n, const void *input, const char *name) const {
  if (n > 0 && !input) invalid_argument(std::string(name) + " is NULL");
  // n*D floats must be addressable.
  checked_mul(checked_mul(n, static_cast<uint64_t>(dims_), "batch"), sizeof(double), "batch");
}

void InferenceSession::check_labels(size_t n, const int32_t *labels) const {
  if (!labels) return;
  const int64_t classes = graph_->top_prior().n_classes();
  if (classes == 0) invalid_argument("labels given, but the model is not class-conditional");
  for (size_t i = 0; i < n; ++i)
    if (labels[i] < 0 || labels[i] >= classes)
      invalid_argument("labels[" + std::to_string(i) + "] = " + std::to_string(labels[i]) +
                       " is out of range [0, " + std::to_string(classes) + ")");
}

void InferenceSession::check_finite(size_t n, const float *v, const char *name) const {
  const size_t total = n * static_cast<size_t>(dims_);
  for (size_t k = 0; k < total; ++k)
    if (!std::isfinite(v[k]))
      invalid_argument(std::string(name) + " has a non-finite value (image " +
                       std::to_string(k / dims_) + ", element " + std::to_string(k % dims_) + ")");
}

void InferenceSession::to_pixels(size_t n, const float *x, uint8_t *pixels) const {
  const int nb = graph_->image.n_bits;
  const size_t total = n * static_cast<size_t>(dims_);
  for (size_t k = 0; k < total; ++k) pixels[k] = x_to_pixel(x[k], nb);
}

void InferenceSession::finish_scores(size_t n, const double *log_p, double *bits_per_dim) const {
  if (!bits_per_dim) return;
  const double d = static_cast<double>(dims_);
  const double nb = graph_->image.n_bits;
  for (size_t i = 0; i < n; ++i) bits_per_dim[i] = nb - log_p[i] / (d * std::log(2.0));
}

void InferenceSession::encode(size_t n, const float *x, const int32_t *labels, float *z,
                              double *log_p, double *log_det, double *bits_per_dim) {
  check_batch(n, x, "x");
  check_labels(n, labels);
  check_finite(n, x, "x");
  for (size_t done = 0; done < n;) {
    const size_t m = std::min(max_batch_, n - done);
    const size_t off = done * dims_;
    float *zo = z ? z + off : z_stage_.data();
    double *lp = log_p ? log_p + done : log_p_stage_.data();
    backend_->encode(m, x + off, labels ? labels + done : nullptr, zo, lp,
                     log_det ? log_det + done : nullptr);
    finish_scores(m, lp, bits_per_dim ? bits_per_dim + done : nullptr);
    done += m;
  }
}

void InferenceSession::encode_pixels(size_t n, const uint8_t *pixels, const int32_t *labels,
                                     float *z, double *log_p, double *bits_per_dim) {
  check_batch(n, pixels, "pixels");
  check_labels(n, labels);
  const int nb = graph_->image.n_bits;
  for (size_t done = 0; done < n;) {
    const size_t m = std::min(max_batch_, n - done);
    const size_t off = done * dims_;
    for (size_t k = 0; k < m * dims_; ++k) x_stage_[k] = pixel_to_x(pixels[off + k], nb);
    float *zo = z ? z + off : z_stage_.data();
    double *lp = log_p ? log_p + done : log_p_stage_.data();
    backend_->encode(m, x_stage_.data(), labels ? labels + done : nullptr, zo, lp, nullptr);
    finish_scores(m, lp, bits_per_dim ? bits_per_dim + done : nullptr);
    done += m;
  }
}

void InferenceSession::decode(size_t n, const float *z, float *x, uint8_t *pixels) {
  check_batch(n, z, "z");
  check_finite(n, z, "z");
  for (size_t done = 0; done < n;) {
    const size_t m = std::min(max_batch_, n - done);
    const size_t off = done * dims_;
    float *xo = x ? x + off : x_stage_.data();
    backend_->decode(m, z + off, xo);
    if (pixels) to_pixels(m, xo, pixels + off);
    done += m;
  }
}

void InferenceSession::decode_noise(size_t n, const float *eps, float temperature,
                                    const int32_t *labels, float *x, uint8_t *pixels) {
  check_batch(n, eps, "eps");
  check_labels(n, labels);
  if (!std::isfinite(temperature) || temperature < 0)
    invalid_argument("temperature must be finite and >= 0");
  check_finite(n, eps, "eps");
  for (size_t done = 0; done < n;) {
    const size_t m = std::min(max_batch_, n - done);
    const size_t off = done * dims_;
    float *xo = x ? x + off : x_stage_.data();
    backend_->decode_noise(m, eps + off, temperature, labels ? labels + done : nullptr, xo);
    if (pixels) to_pixels(m, xo, pixels + off);
    done += m;
  }
}

void InferenceSession::sample(size_t n, float temperature, uint64_t seed, const int32_t *labels,
                              float *x, uint8_t *pixels) {
  check_batch(n, reinterpret_cast<const void *>(1), "output");
  check_labels(n, labels);
  if (!std::isfinite(temperature) || temperature < 0)
    invalid_argument("temperature must be finite and >= 0");
  for (size_t done = 0; done < n;) {
    const size_t m = std::min(max_batch_, n - done);
    const size_t off = done * dims_;
    float *xo = x ? x + off : x_stage_.data();
    backend_->sample(m, seed, done, temperature, labels ? labels + done : nullptr,
                     eps_stage_.data(), xo);
    if (pixels) to_pixels(m, xo, pixels + off);
    done += m;
  }
}

}  // namespace flowrt

namespace flowrt {

void InferenceSession::analyze(size_t n, const float *x, const int32_t *labels, float *eps,
                               double *level_log_prior, double *level_log_det, double *nll_map) {
  check_batch(n, x, "x");
  check_labels(n, labels);
  check_finite(n, x, "x");
  if (n == 0) return;
  if (!analysis_)
    analysis_ = std::make_unique<RefExecutor<float>>(*graph_, max_batch_, threads_,
                                                     ProgramOptions{fold_, NetWeights::View});
  const size_t levels = static_cast<size_t>(analysis_->levels());
  const size_t px = static_cast<size_t>(graph_->image.height * graph_->image.width);
  for (size_t done = 0; done < n;) {
    const size_t m = std::min(max_batch_, n - done);
    RefExecutor<float>::Detail d;
    if (eps) d.eps = eps + done * dims_;
    if (level_log_prior) d.level_log_prior = level_log_prior + done * levels;
    if (level_log_det) d.level_log_det = level_log_det + done * levels;
    if (nll_map) d.nll_map = nll_map + done * px;
    analysis_->encode_detail(m, x + done * dims_, labels ? labels + done : nullptr, d);
    done += m;
  }
}

}  // namespace flowrt
