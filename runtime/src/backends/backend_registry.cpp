#include "backends/backend_registry.hpp"

#include "backends/portable/portable_backend.hpp"
#include "core/error.hpp"
#include "plugins/linked_backends.hpp"
#include "plugins/plugin_loader.hpp"

namespace flowrt {
namespace {

const LinkedBackend *find_linked(flowrt_backend kind) {
  const LinkedBackends linked = linked_backends();
  for (size_t i = 0; i < linked.count; ++i)
    if (linked.list[i].kind == kind) return &linked.list[i];
  return nullptr;
}

// "oneDNN", "CUDA": how messages name a backend.
std::string display_name(flowrt_backend kind) {
  switch (kind) {
    case FLOWRT_BACKEND_ONEDNN:
      return "oneDNN";
    case FLOWRT_BACKEND_CUDA:
      return "CUDA";
    default:
      return flowrt_backend_name(kind);
  }
}

std::string plugin_unavailable(const flowrt_plugin &api, int device) {
  flowrt_plugin_error error{};
  return api.available(device, &error) == FLOWRT_OK ? "" : error.message;
}

}  // namespace

BackendProbe probe_backend(flowrt_backend kind, int device) {
  BackendProbe p;
  if (kind == FLOWRT_BACKEND_REF) {
    p.available = true;
    p.source = "built in";
    p.description = "portable C++ (the reference)";
    return p;
  }
  if (kind == FLOWRT_BACKEND_PORTABLE) {
    p.available = true;
    p.source = "built in";
    p.description = "portable C++ GEMMs (" + portable_default_kernels() + " kernels)";
    return p;
  }
  if (kind != FLOWRT_BACKEND_ONEDNN && kind != FLOWRT_BACKEND_CUDA) {
    p.why = "no such backend";
    return p;
  }
  if (const LinkedBackend *l = find_linked(kind)) {
    p.source = "linked";
    p.description = l->description();
    p.why = l->unavailable(device);
    p.available = p.why.empty();
    return p;
  }
  if (!linked_backends().load_plugins) {
    p.why = "this static libflowrt was built without the " + display_name(kind) + " backend";
    return p;
  }
  const PluginLoad &load = backend_plugin(kind);
  p.source = load.path;
  if (!load.api) {
    p.why = load.error;
    return p;
  }
  p.description = load.api->description ? load.api->description : "";
  p.why = plugin_unavailable(*load.api, device);
  p.available = p.why.empty();
  return p;
}

flowrt_backend resolve_auto_backend(int device) {
  if (probe_backend(FLOWRT_BACKEND_CUDA, device).available) return FLOWRT_BACKEND_CUDA;
  if (probe_backend(FLOWRT_BACKEND_ONEDNN, device).available) return FLOWRT_BACKEND_ONEDNN;
  return FLOWRT_BACKEND_PORTABLE;
}

std::unique_ptr<Backend> create_backend(flowrt_backend kind, const Graph &graph,
                                        const BackendOptions &options) {
  if (kind == FLOWRT_BACKEND_REF) {
    if (options.precision != FLOWRT_PRECISION_FP32)
      fail(FLOWRT_UNSUPPORTED, std::string("precision ") + precision_name(options.precision) +
                                   " is not implemented by the ref backend, which computes in "
                                   "fp32 (bf16 runs on onednn and cuda; tf32 and fp16 are CUDA "
                                   "only)");
    return create_ref_backend(graph, options);
  }
  if (kind == FLOWRT_BACKEND_PORTABLE) {
    if (options.precision != FLOWRT_PRECISION_FP32)
      fail(FLOWRT_UNSUPPORTED, std::string("precision ") + precision_name(options.precision) +
                                   " is not implemented by the portable backend, which computes "
                                   "in fp32 (bf16 runs on onednn and cuda; tf32 and fp16 are "
                                   "CUDA only)");
    return create_portable_backend(graph, options);
  }
  if (kind != FLOWRT_BACKEND_ONEDNN && kind != FLOWRT_BACKEND_CUDA)
    invalid_argument("unknown backend " + std::to_string(static_cast<int>(kind)));
  // Whether bf16 runs on this CPU only the oneDNN backend itself can tell.
  if (kind == FLOWRT_BACKEND_ONEDNN && options.precision != FLOWRT_PRECISION_FP32 &&
      options.precision != FLOWRT_PRECISION_BF16)
    fail(FLOWRT_UNSUPPORTED, std::string("precision ") + precision_name(options.precision) +
                                 " is CUDA only (the onednn backend computes in fp32 or bf16)");
  if (const LinkedBackend *l = find_linked(kind)) return l->create(graph, options);
  const std::string name = display_name(kind);
  if (!linked_backends().load_plugins)
    fail(FLOWRT_UNSUPPORTED, "this static libflowrt was built without the " + name + " backend");
  const PluginLoad &load = backend_plugin(kind);
  if (!load.api) fail(FLOWRT_UNSUPPORTED, "the " + name + " backend is unavailable: " + load.error);
  return create_plugin_backend(*load.api, graph, options);
}

}  // namespace flowrt
