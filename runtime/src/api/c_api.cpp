// The C API: every entry point converts exceptions into a status and a thread-local message.
#include <cstring>
#include <new>
#include <string>
#include <type_traits>

#include "api/handles.hpp"
#include "backends/backend.hpp"
#include "backends/backend_registry.hpp"
#include "core/checked_math.hpp"
#include "core/error.hpp"
#include "flowrt.h"
#include "format/flow_file.hpp"

namespace {

thread_local std::string g_last_error;

template <typename F>
flowrt_status guarded(F &&body) {
  try {
    g_last_error.clear();
    body();
    return FLOWRT_OK;
  } catch (const flowrt::Error &e) {
    g_last_error = e.what();
    return e.status();
  } catch (const std::bad_alloc &) {
    g_last_error = "out of memory";
    return FLOWRT_OUT_OF_MEMORY;
  } catch (const std::exception &e) {
    g_last_error = std::string("internal error: ") + e.what();
    return FLOWRT_INTERNAL_ERROR;
  } catch (...) {
    g_last_error = "internal error: unknown exception";
    return FLOWRT_INTERNAL_ERROR;
  }
}

// An enum argument as its underlying integer, read without loading the C++ enum type: a C caller
// may pass any int, and loading an out-of-range value as the enum is undefined behaviour (UBSan's
// -fsanitize=enum aborts on it).
template <typename E>
long long enum_int(const E &e) {
  std::underlying_type_t<E> v;
  std::memcpy(&v, &e, sizeof v);
  return static_cast<long long>(v);
}

void require(const void *p, const char *name) {
  if (!p) flowrt::invalid_argument(std::string(name) + " is NULL");
}

flowrt::InferenceSession &use(flowrt_session *s) {
  require(s, "session");
  return *s->session;
}

std::shared_ptr<const flowrt::Graph> load(std::shared_ptr<flowrt::ModelBytes> bytes) {
  return std::make_shared<const flowrt::Graph>(flowrt::read_flow(std::move(bytes)));
}

}  // namespace

extern "C" {

const char *flowrt_version(void) {
  return FLOWRT_RELEASE;
}
int flowrt_format_major_supported(void) {
  return 1;
}

const char *flowrt_status_string(flowrt_status status) {
  switch (enum_int(status)) {
    case FLOWRT_OK:
      return "FLOWRT_OK";
    case FLOWRT_INVALID_ARGUMENT:
      return "FLOWRT_INVALID_ARGUMENT";
    case FLOWRT_IO_ERROR:
      return "FLOWRT_IO_ERROR";
    case FLOWRT_FORMAT_ERROR:
      return "FLOWRT_FORMAT_ERROR";
    case FLOWRT_UNSUPPORTED:
      return "FLOWRT_UNSUPPORTED";
    case FLOWRT_OUT_OF_MEMORY:
      return "FLOWRT_OUT_OF_MEMORY";
    case FLOWRT_DEVICE_ERROR:
      return "FLOWRT_DEVICE_ERROR";
    case FLOWRT_BUSY:
      return "FLOWRT_BUSY";
    case FLOWRT_INTERNAL_ERROR:
      return "FLOWRT_INTERNAL_ERROR";
  }
  return "FLOWRT_UNKNOWN_STATUS";
}

const char *flowrt_last_error(void) {
  return g_last_error.c_str();
}

int flowrt_backend_available(flowrt_backend backend) {
  const int kind = enum_int(backend);
  if (kind == FLOWRT_BACKEND_AUTO || kind == FLOWRT_BACKEND_REF || kind == FLOWRT_BACKEND_PORTABLE)
    return 1;
  if (kind != FLOWRT_BACKEND_ONEDNN && kind != FLOWRT_BACKEND_CUDA) {
    g_last_error = "unknown backend " + std::to_string(kind);
    return 0;
  }
  try {
    const flowrt::BackendProbe p = flowrt::probe_backend(backend, 0);
    if (!p.available) g_last_error = p.why;
    return p.available ? 1 : 0;
  } catch (const std::exception &e) {
    g_last_error = e.what();
    return 0;
  }
}

const char *flowrt_backend_name(flowrt_backend backend) {
  switch (enum_int(backend)) {
    case FLOWRT_BACKEND_AUTO:
      return "auto";
    case FLOWRT_BACKEND_REF:
      return "ref";
    case FLOWRT_BACKEND_ONEDNN:
      return "onednn";
    case FLOWRT_BACKEND_CUDA:
      return "cuda";
    case FLOWRT_BACKEND_PORTABLE:
      return "portable";
  }
  return "unknown";
}

flowrt_status flowrt_model_open(const char *path, flowrt_model **out) {
  return guarded([&] {
    require(out, "out");
    *out = nullptr;
    require(path, "path");
    auto m = std::make_unique<flowrt_model>();
    try {
      m->graph = load(flowrt::map_model_file(path));
    } catch (const flowrt::Error &e) {
      if (e.status() == FLOWRT_IO_ERROR) throw;
      throw flowrt::Error(e.status(), std::string(path) + ": " + e.what());
    }
    *out = m.release();
  });
}

flowrt_status flowrt_model_from_memory(const void *data, size_t size, flowrt_model **out) {
  return guarded([&] {
    require(out, "out");
    *out = nullptr;
    auto m = std::make_unique<flowrt_model>();
    m->graph = load(flowrt::copy_model_bytes(data, size));
    *out = m.release();
  });
}

void flowrt_model_free(flowrt_model *model) {
  delete model;
}

flowrt_status flowrt_model_image_shape(const flowrt_model *model, int *c, int *h, int *w) {
  return guarded([&] {
    require(model, "model");
    const auto &im = model->graph->image;
    if (c) *c = static_cast<int>(im.channels);
    if (h) *h = static_cast<int>(im.height);
    if (w) *w = static_cast<int>(im.width);
  });
}

flowrt_status flowrt_model_n_bits(const flowrt_model *model, int *n_bits) {
  return guarded([&] {
    require(model, "model");
    require(n_bits, "n_bits");
    *n_bits = model->graph->image.n_bits;
  });
}

flowrt_status flowrt_model_latent_dim(const flowrt_model *model, size_t *floats_per_image) {
  return guarded([&] {
    require(model, "model");
    require(floats_per_image, "floats_per_image");
    *floats_per_image = static_cast<size_t>(model->graph->dims());
  });
}

flowrt_status flowrt_model_levels(const flowrt_model *model, int *levels) {
  return guarded([&] {
    require(model, "model");
    require(levels, "levels");
    *levels = model->graph->levels();
  });
}

flowrt_status flowrt_model_latent_shape(const flowrt_model *model, int level, int *c, int *h,
                                        int *w, size_t *offset) {
  return guarded([&] {
    require(model, "model");
    int i = 0;
    for (const flowrt::Layer &l : model->graph->layers) {
      const bool latent = std::holds_alternative<flowrt::SplitLayer>(l.op) ||
                          std::holds_alternative<flowrt::TopPriorLayer>(l.op);
      if (!latent || i++ != level) continue;
      if (c) *c = static_cast<int>(l.latent.c);
      if (h) *h = static_cast<int>(l.latent.h);
      if (w) *w = static_cast<int>(l.latent.w);
      if (offset) *offset = static_cast<size_t>(l.latent_offset);
      return;
    }
    flowrt::invalid_argument("level " + std::to_string(level) + " is out of range [0, " +
                             std::to_string(model->graph->levels()) + ")");
  });
}

flowrt_status flowrt_model_num_classes(const flowrt_model *model, int *n_classes) {
  return guarded([&] {
    require(model, "model");
    require(n_classes, "n_classes");
    *n_classes = static_cast<int>(model->graph->top_prior().n_classes());
  });
}

flowrt_status flowrt_model_metadata(const flowrt_model *model, const char *key, char *buf,
                                    size_t buf_size, size_t *length) {
  return guarded([&] {
    require(model, "model");
    require(key, "key");
    const std::string *v = model->graph->find_metadata(key);
    if (!v) flowrt::invalid_argument(std::string("no metadata key '") + key + "'");
    if (length) *length = v->size();
    if (buf && buf_size > 0) {
      const size_t k = std::min(buf_size - 1, v->size());
      std::memcpy(buf, v->data(), k);
      buf[k] = '\0';
    }
  });
}

flowrt_status flowrt_session_options_create(flowrt_session_options **out) {
  return guarded([&] {
    require(out, "out");
    *out = new flowrt_session_options();
  });
}

void flowrt_session_options_free(flowrt_session_options *options) {
  delete options;
}

flowrt_status flowrt_session_options_set_backend(flowrt_session_options *options,
                                                 flowrt_backend backend) {
  return guarded([&] {
    require(options, "options");
    if (enum_int(backend) < FLOWRT_BACKEND_AUTO || enum_int(backend) > FLOWRT_BACKEND_PORTABLE)
      flowrt::invalid_argument("unknown backend " + std::to_string(enum_int(backend)));
    options->options.backend = backend;
  });
}

flowrt_status flowrt_session_options_set_threads(flowrt_session_options *options, int threads) {
  return guarded([&] {
    require(options, "options");
    if (threads < 0 || threads > 4096)
      flowrt::invalid_argument("threads " + std::to_string(threads) + " is out of range [0, 4096]");
    options->options.threads = threads;
  });
}

flowrt_status flowrt_session_options_set_device(flowrt_session_options *options, int device_index) {
  return guarded([&] {
    require(options, "options");
    if (device_index < 0) flowrt::invalid_argument("device index must be >= 0");
    options->options.device = device_index;
  });
}

flowrt_status flowrt_session_options_set_precision(flowrt_session_options *options,
                                                   flowrt_precision precision) {
  return guarded([&] {
    require(options, "options");
    bool known = false;
    std::string names;
    for (flowrt_precision p : flowrt::kPrecisions) {
      known = known || enum_int(precision) == p;
      names += (names.empty() ? "" : ", ") + std::to_string(static_cast<int>(p)) + " " +
               flowrt::precision_name(p);
    }
    if (!known)
      flowrt::invalid_argument("unknown precision " + std::to_string(enum_int(precision)) + " (" +
                               names + ")");
    options->options.precision = precision;
  });
}

flowrt_status flowrt_session_options_set_max_batch(flowrt_session_options *options,
                                                   size_t max_batch) {
  return guarded([&] {
    require(options, "options");
    if (max_batch < 1 || max_batch > 65536)
      flowrt::invalid_argument("max_batch " + std::to_string(max_batch) +
                               " is out of range [1, 65536]");
    options->options.max_batch = max_batch;
  });
}

flowrt_status flowrt_session_create(const flowrt_model *model,
                                    const flowrt_session_options *options, flowrt_session **out) {
  return guarded([&] {
    require(out, "out");
    *out = nullptr;
    require(model, "model");
    flowrt::InferenceOptions o = options ? options->options : flowrt::InferenceOptions{};
    auto s = std::make_unique<flowrt_session>();
    // Say what did not fit: the usual cure is a smaller max batch.
    const auto no_room = [&](const std::string &cause) {
      return flowrt::Error(FLOWRT_OUT_OF_MEMORY,
                           "cannot create a session at max batch " + std::to_string(o.max_batch) +
                               " (images of " + std::to_string(model->graph->dims()) +
                               " values; a smaller max batch needs less): " + cause);
    };
    try {
      s->session = std::make_unique<flowrt::InferenceSession>(model->graph, o);
    } catch (const std::bad_alloc &) {
      throw no_room("out of memory");
    } catch (const flowrt::Error &e) {
      if (e.status() == FLOWRT_OUT_OF_MEMORY) throw no_room(e.what());
      throw;
    }
    *out = s.release();
  });
}

void flowrt_session_free(flowrt_session *session) {
  delete session;
}

flowrt_backend flowrt_session_backend(const flowrt_session *session) {
  return session ? session->session->backend() : FLOWRT_BACKEND_AUTO;
}

flowrt_status flowrt_sample(flowrt_session *session, size_t n, float temperature, uint64_t seed,
                            uint8_t *pixels) {
  return flowrt_sample_class(session, n, temperature, seed, nullptr, pixels);
}

flowrt_status flowrt_sample_class(flowrt_session *session, size_t n, float temperature,
                                  uint64_t seed, const int32_t *labels, uint8_t *pixels) {
  return guarded([&] {
    flowrt::InferenceSession &s = use(session);
    if (n > 0) require(pixels, "pixels");
    flowrt::InferenceSession::Use busy(s);
    s.sample(n, temperature, seed, labels, nullptr, pixels);
  });
}

flowrt_status flowrt_encode(flowrt_session *session, size_t n, const uint8_t *pixels, float *z,
                            double *bits_per_dim) {
  return guarded([&] {
    flowrt::InferenceSession &s = use(session);
    flowrt::InferenceSession::Use busy(s);
    s.encode_pixels(n, pixels, nullptr, z, nullptr, bits_per_dim);
  });
}

flowrt_status flowrt_encode_float(flowrt_session *session, size_t n, const float *x, float *z,
                                  double *bits_per_dim) {
  return flowrt_encode_ex(session, n, x, nullptr, z, nullptr, nullptr, bits_per_dim);
}

flowrt_status flowrt_encode_ex(flowrt_session *session, size_t n, const float *x,
                               const int32_t *labels, float *z, double *log_p, double *log_det,
                               double *bits_per_dim) {
  return guarded([&] {
    flowrt::InferenceSession &s = use(session);
    flowrt::InferenceSession::Use busy(s);
    s.encode(n, x, labels, z, log_p, log_det, bits_per_dim);
  });
}

flowrt_status flowrt_decode(flowrt_session *session, size_t n, const float *z, float *x,
                            uint8_t *pixels) {
  return guarded([&] {
    flowrt::InferenceSession &s = use(session);
    flowrt::InferenceSession::Use busy(s);
    s.decode(n, z, x, pixels);
  });
}

flowrt_status flowrt_decode_noise(flowrt_session *session, size_t n, const float *eps,
                                  float temperature, const int32_t *labels, float *x,
                                  uint8_t *pixels) {
  return guarded([&] {
    flowrt::InferenceSession &s = use(session);
    flowrt::InferenceSession::Use busy(s);
    s.decode_noise(n, eps, temperature, labels, x, pixels);
  });
}

flowrt_status flowrt_pixels_to_x(const flowrt_model *model, size_t n, const uint8_t *pixels,
                                 float *x) {
  return guarded([&] {
    require(model, "model");
    if (n == 0) return;
    require(pixels, "pixels");
    require(x, "x");
    const uint64_t total =
        flowrt::checked_mul(n, static_cast<uint64_t>(model->graph->dims()), "pixels");
    flowrt::checked_mul(total, sizeof(float), "x");
    const int nb = model->graph->image.n_bits;
    for (uint64_t k = 0; k < total; ++k) x[k] = flowrt::pixel_to_x(pixels[k], nb);
  });
}

flowrt_status flowrt_encode_noise(flowrt_session *session, size_t n, const float *x,
                                  const int32_t *labels, float *eps) {
  return guarded([&] {
    flowrt::InferenceSession &s = use(session);
    flowrt::InferenceSession::Use busy(s);
    if (n > 0) require(eps, "eps");
    s.analyze(n, x, labels, eps, nullptr, nullptr, nullptr);
  });
}

flowrt_status flowrt_level_terms(flowrt_session *session, size_t n, const float *x,
                                 const int32_t *labels, double *log_prior, double *log_det) {
  return guarded([&] {
    flowrt::InferenceSession &s = use(session);
    flowrt::InferenceSession::Use busy(s);
    flowrt::checked_mul(n, static_cast<uint64_t>(s.levels()) * sizeof(double), "level terms");
    s.analyze(n, x, labels, nullptr, log_prior, log_det, nullptr);
  });
}

flowrt_status flowrt_nll_map(flowrt_session *session, size_t n, const float *x,
                             const int32_t *labels, double *nll) {
  return guarded([&] {
    flowrt::InferenceSession &s = use(session);
    flowrt::InferenceSession::Use busy(s);
    if (n > 0) require(nll, "nll");
    const flowrt::ImageSpec &im = s.graph().image;
    flowrt::checked_mul(n, static_cast<uint64_t>(im.height * im.width) * sizeof(double), "nll");
    s.analyze(n, x, labels, nullptr, nullptr, nullptr, nll);
  });
}

flowrt_status flowrt_model_noise(const flowrt_model *model, size_t n, uint64_t seed,
                                 uint64_t first_image, float *eps) {
  return guarded([&] {
    require(model, "model");
    if (n > 0) require(eps, "eps");
    const int64_t d = model->graph->dims();
    flowrt::checked_mul(n, static_cast<uint64_t>(d) * sizeof(float), "eps");
    flowrt::philox_fill(seed, first_image, n, d, eps);
  });
}

}  // extern "C"
