// libflowrt-onednn.so: the oneDNN CPU backend as a plugin.
#include "backends/onednn/onednn_backend.hpp"
#include "plugins/plugin_export.hpp"

FLOWRT_PLUGIN_EXPORT const flowrt_plugin *flowrt_backend_plugin_entry(void) {
  flowrt::plugin::Definition d;
  d.kind = FLOWRT_BACKEND_ONEDNN;
  d.description = "oneDNN " + flowrt::onednn_version() + " (CPU)";
  d.create = flowrt::create_onednn_backend;
  d.unavailable = [](int) { return std::string(); };  // every x86-64 CPU runs it
  d.kernels = flowrt::onednn_primitive_impls;
  return flowrt::plugin::export_plugin(d);
}
