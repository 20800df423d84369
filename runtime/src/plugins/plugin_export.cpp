#include "plugins/plugin_export.hpp"

#include <cstring>
#include <new>

#include "core/error.hpp"
#include "plugins/layout_fingerprint.hpp"

namespace flowrt::plugin {
namespace {

void set_message(flowrt_plugin_error *error, const std::string &message) {
  if (!error) return;
  const size_t n = std::min(message.size(), sizeof(error->message) - 1);
  std::memcpy(error->message, message.data(), n);
  error->message[n] = '\0';
}

// Runs f, turning every exception into a status and a message.
template <typename F>
flowrt_status guarded(flowrt_plugin_error *error, F &&f) {
  try {
    f();
    return FLOWRT_OK;
  } catch (const Error &e) {
    set_message(error, e.what());
    return e.status();
  } catch (const std::bad_alloc &) {
    set_message(error, "out of memory");
    return FLOWRT_OUT_OF_MEMORY;
  } catch (const std::exception &e) {
    set_message(error, e.what());
    return FLOWRT_INTERNAL_ERROR;
  } catch (...) {
    set_message(error, "unknown exception in a backend plugin");
    return FLOWRT_INTERNAL_ERROR;
  }
}

// The one definition this plugin exports, and the strings its flowrt_plugin points to.
Definition g_definition;
std::string g_layout;
flowrt_plugin g_plugin;

Backend &self_of(void *self) {
  return *static_cast<Backend *>(self);
}

void destroy(void *self) {
  delete static_cast<Backend *>(self);
}

flowrt_status encode(void *self, size_t n, const float *x, const int32_t *labels, float *z,
                     double *log_p, double *log_det, flowrt_plugin_error *error) {
  return guarded(error, [&] { self_of(self).encode(n, x, labels, z, log_p, log_det); });
}
flowrt_status decode(void *self, size_t n, const float *z, float *x, flowrt_plugin_error *error) {
  return guarded(error, [&] { self_of(self).decode(n, z, x); });
}
flowrt_status decode_noise(void *self, size_t n, const float *eps, float temperature,
                           const int32_t *labels, float *x, flowrt_plugin_error *error) {
  return guarded(error, [&] { self_of(self).decode_noise(n, eps, temperature, labels, x); });
}
flowrt_status sample(void *self, size_t n, uint64_t seed, uint64_t first_image, float temperature,
                     const int32_t *labels, float *eps_scratch, float *x,
                     flowrt_plugin_error *error) {
  return guarded(error, [&] {
    self_of(self).sample(n, seed, first_image, temperature, labels, eps_scratch, x);
  });
}
flowrt_status kernels(void *self, size_t n, char *out, size_t out_size,
                      flowrt_plugin_error *error) {
  return guarded(error, [&] {
    if (out_size == 0) return;
    std::string text;
    if (g_definition.kernels)
      for (const std::string &k : g_definition.kernels(self_of(self), n)) {
        if (text.size() + k.size() + 1 >= out_size) break;
        text += k + "\n";
      }
    std::memcpy(out, text.c_str(), text.size() + 1);
  });
}

flowrt_status available(int device, flowrt_plugin_error *error) {
  std::string why;
  const flowrt_status st = guarded(error, [&] { why = g_definition.unavailable(device); });
  if (st != FLOWRT_OK) return st;
  if (why.empty()) return FLOWRT_OK;
  set_message(error, why);
  return FLOWRT_DEVICE_ERROR;
}

flowrt_status create(const void *graph, const void *options, flowrt_plugin_backend *out,
                     flowrt_plugin_error *error) {
  return guarded(error, [&] {
    if (!graph || !options || !out) invalid_argument("a backend plugin was called with NULL");
    std::unique_ptr<Backend> b = g_definition.create(*static_cast<const Graph *>(graph),
                                                     *static_cast<const BackendOptions *>(options));
    *out = flowrt_plugin_backend{};
    out->destroy = destroy;
    out->encode = encode;
    out->decode = decode;
    out->decode_noise = decode_noise;
    out->sample = sample;
    out->kernels = kernels;
    out->self = b.release();
  });
}

}  // namespace

const flowrt_plugin *export_plugin(const Definition &definition) {
  static const flowrt_plugin *plugin = [&] {
    g_definition = definition;
    g_layout = layout_fingerprint();
    g_plugin = flowrt_plugin{};
    g_plugin.abi = FLOWRT_PLUGIN_ABI;
    g_plugin.struct_size = sizeof(flowrt_plugin);
    g_plugin.release = FLOWRT_RELEASE;
    g_plugin.layout = g_layout.c_str();
    g_plugin.kind = g_definition.kind;
    g_plugin.description = g_definition.description.c_str();
    g_plugin.available = available;
    g_plugin.create = create;
    return &g_plugin;
  }();
  return plugin;
}

}  // namespace flowrt::plugin
