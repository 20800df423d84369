// flowrt.hpp — a header-only C++ wrapper over the C API (flowrt.h): RAII handles and exceptions.
// It throws only on its own side of the boundary; the library itself never throws.
//
//   flowrt::Model model("fmnist.flow");
//   flowrt::Session session(model, flowrt::SessionOptions().backend(FLOWRT_BACKEND_REF));
//   std::vector<uint8_t> pixels = session.sample(16, 0.7f, /*seed=*/1);
#pragma once

#include <cstdint>
#include <stdexcept>
#include <string>
#include <utility>
#include <vector>

#include "flowrt.h"

namespace flowrt {

class Exception : public std::runtime_error {
 public:
  Exception(flowrt_status status, const std::string &message)
      : std::runtime_error(message), status_(status) {}
  flowrt_status status() const { return status_; }

 private:
  flowrt_status status_;
};

inline void check(flowrt_status status) {
  if (status != FLOWRT_OK)
    throw Exception(status, std::string(flowrt_status_string(status)) + ": " + flowrt_last_error());
}

namespace detail {
template <typename T, void (*Free)(T *)>
class Handle {
 public:
  Handle() = default;
  explicit Handle(T *p) : p_(p) {}
  Handle(Handle &&o) noexcept : p_(std::exchange(o.p_, nullptr)) {}
  Handle &operator=(Handle &&o) noexcept {
    if (this != &o) {
      Free(p_);
      p_ = std::exchange(o.p_, nullptr);
    }
    return *this;
  }
  Handle(const Handle &) = delete;
  Handle &operator=(const Handle &) = delete;
  ~Handle() { Free(p_); }
  T *get() const { return p_; }

 private:
  T *p_ = nullptr;
};
}  // namespace detail

class Model {
 public:
  explicit Model(const std::string &path) {
    flowrt_model *m = nullptr;
    check(flowrt_model_open(path.c_str(), &m));
    h_ = Handle(m);
  }
  static Model from_memory(const void *data, size_t size) {
    flowrt_model *m = nullptr;
    check(flowrt_model_from_memory(data, size, &m));
    return Model(m);
  }
  const flowrt_model *get() const { return h_.get(); }
  int channels() const { return shape()[0]; }
  int height() const { return shape()[1]; }
  int width() const { return shape()[2]; }
  size_t image_size() const { return latent_dim(); }
  size_t latent_dim() const {
    size_t d = 0;
    check(flowrt_model_latent_dim(get(), &d));
    return d;
  }
  int n_bits() const {
    int b = 0;
    check(flowrt_model_n_bits(get(), &b));
    return b;
  }
  int num_classes() const {
    int n = 0;
    check(flowrt_model_num_classes(get(), &n));
    return n;
  }
  // Empty string when the key is missing.
  std::string metadata(const std::string &key) const {
    size_t len = 0;
    if (flowrt_model_metadata(get(), key.c_str(), nullptr, 0, &len) != FLOWRT_OK) return {};
    std::string v(len + 1, '\0');
    check(flowrt_model_metadata(get(), key.c_str(), v.data(), v.size(), &len));
    v.resize(len);
    return v;
  }

 private:
  using Handle = detail::Handle<flowrt_model, flowrt_model_free>;
  explicit Model(flowrt_model *m) : h_(m) {}
  std::vector<int> shape() const {
    std::vector<int> s(3);
    check(flowrt_model_image_shape(get(), &s[0], &s[1], &s[2]));
    return s;
  }
  Handle h_;
};

class SessionOptions {
 public:
  SessionOptions() {
    flowrt_session_options *o = nullptr;
    check(flowrt_session_options_create(&o));
    h_ = Handle(o);
  }
  SessionOptions &backend(flowrt_backend b) {
    check(flowrt_session_options_set_backend(h_.get(), b));
    return *this;
  }
  SessionOptions &threads(int n) {
    check(flowrt_session_options_set_threads(h_.get(), n));
    return *this;
  }
  SessionOptions &device(int d) {
    check(flowrt_session_options_set_device(h_.get(), d));
    return *this;
  }
  SessionOptions &precision(flowrt_precision p) {
    check(flowrt_session_options_set_precision(h_.get(), p));
    return *this;
  }
  SessionOptions &max_batch(size_t n) {
    check(flowrt_session_options_set_max_batch(h_.get(), n));
    return *this;
  }
  const flowrt_session_options *get() const { return h_.get(); }

 private:
  using Handle = detail::Handle<flowrt_session_options, flowrt_session_options_free>;
  Handle h_;
};

class Session {
 public:
  Session(const Model &model, const SessionOptions &options = SessionOptions())
      : dims_(model.latent_dim()) {
    int c = 0, h = 0, w = 0;
    check(flowrt_model_image_shape(model.get(), &c, &h, &w));
    check(flowrt_model_levels(model.get(), &levels_));
    pixels_per_image_ = static_cast<size_t>(h) * static_cast<size_t>(w);
    flowrt_session *s = nullptr;
    check(flowrt_session_create(model.get(), options.get(), &s));
    h_ = Handle(s);
  }
  flowrt_session *get() const { return h_.get(); }
  flowrt_backend backend() const { return flowrt_session_backend(get()); }

  std::vector<uint8_t> sample(size_t n, float temperature, uint64_t seed) {
    std::vector<uint8_t> px(n * dims_);
    check(flowrt_sample(get(), n, temperature, seed, px.data()));
    return px;
  }
  // Per-image bits/dim of n images of pixels; z receives the latents when not null.
  std::vector<double> encode(size_t n, const uint8_t *pixels, std::vector<float> *z = nullptr) {
    std::vector<double> bpd(n);
    if (z) z->resize(n * dims_);
    check(flowrt_encode(get(), n, pixels, z ? z->data() : nullptr, bpd.data()));
    return bpd;
  }
  std::vector<double> encode_float(size_t n, const float *x, std::vector<float> *z = nullptr) {
    std::vector<double> bpd(n);
    if (z) z->resize(n * dims_);
    check(flowrt_encode_float(get(), n, x, z ? z->data() : nullptr, bpd.data()));
    return bpd;
  }
  // Decodes latents; x and/or pixels receive the result when not null.
  void decode(size_t n, const float *z, std::vector<float> *x, std::vector<uint8_t> *pixels) {
    if (x) x->resize(n * dims_);
    if (pixels) pixels->resize(n * dims_);
    check(flowrt_decode(get(), n, z, x ? x->data() : nullptr, pixels ? pixels->data() : nullptr));
  }
  // The standardised latents of n inputs x (flowrt_encode_noise); labels may be null.
  std::vector<float> encode_noise(size_t n, const float *x, const int32_t *labels = nullptr) {
    std::vector<float> eps(n * dims_);
    check(flowrt_encode_noise(get(), n, x, labels, eps.data()));
    return eps;
  }
  // Decodes standard normals at `temperature` into pixels (flowrt_decode_noise).
  std::vector<uint8_t> decode_noise(size_t n, const float *eps, float temperature,
                                    const int32_t *labels = nullptr) {
    std::vector<uint8_t> px(n * dims_);
    check(flowrt_decode_noise(get(), n, eps, temperature, labels, nullptr, px.data()));
    return px;
  }
  // Per image and level: log p(z_l | prior) and the level's log|det| (flowrt_level_terms).
  struct LevelTerms {
    int levels = 0;
    std::vector<double> log_prior, log_det;  // n * levels, image-major
  };
  LevelTerms level_terms(size_t n, const float *x, const int32_t *labels = nullptr) {
    LevelTerms t;
    t.levels = levels_;
    t.log_prior.resize(n * static_cast<size_t>(levels_));
    t.log_det.resize(n * static_cast<size_t>(levels_));
    check(flowrt_level_terms(get(), n, x, labels, t.log_prior.data(), t.log_det.data()));
    return t;
  }
  // Per image, -log p spread over its H*W pixels in nats (flowrt_nll_map).
  std::vector<double> nll_map(size_t n, const float *x, const int32_t *labels = nullptr) {
    std::vector<double> map(n * pixels_per_image_);
    check(flowrt_nll_map(get(), n, x, labels, map.data()));
    return map;
  }

 private:
  using Handle = detail::Handle<flowrt_session, flowrt_session_free>;
  size_t dims_;
  int levels_ = 0;
  size_t pixels_per_image_ = 0;
  Handle h_;
};

}  // namespace flowrt
