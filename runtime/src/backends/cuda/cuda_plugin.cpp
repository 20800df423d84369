// libflowrt-cuda.so: the CUDA backend as a plugin. Loading it needs cuBLAS (its libraries are
// named in the error when missing); running it needs a driver and a device.
#include "backends/cuda/cuda_backend.hpp"
#include "plugins/plugin_export.hpp"

FLOWRT_PLUGIN_EXPORT const flowrt_plugin *flowrt_backend_plugin_entry(void) {
  flowrt::plugin::Definition d;
  d.kind = FLOWRT_BACKEND_CUDA;
  d.description = "CUDA (cuBLAS)";
  d.create = flowrt::create_cuda_backend;
  d.unavailable = flowrt::cuda_unavailable_reason;
  return flowrt::plugin::export_plugin(d);
}
