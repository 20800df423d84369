// Where each backend comes from and whether it can run here. The reference and portable backends
// are always part of the core. oneDNN and CUDA are either linked into this binary (a static
// libflowrt: no dlopen, the archive carries them) or loaded as plugins (a shared libflowrt:
// libflowrt-onednn.so and libflowrt-cuda.so, see plugins/plugin_loader.hpp). Sessions, the C API,
// the flowrt command and flowbench all obtain their backends here.
#pragma once

#include <memory>
#include <string>

#include "backends/backend.hpp"

namespace flowrt {

struct BackendProbe {
  bool available = false;
  std::string why;     // when not available: what is missing, naming the file or library
  std::string source;  // "built in", "linked", or the plugin's path
  std::string description;
};

// Can `kind` (not AUTO) run on `device`? Loads its plugin on first use.
BackendProbe probe_backend(flowrt_backend kind, int device = 0);

// The backend AUTO resolves to: CUDA when its plugin loads and a device is present, else oneDNN
// when its plugin loads, else the portable backend.
flowrt_backend resolve_auto_backend(int device = 0);

// Creates `kind` (not AUTO); throws Error(FLOWRT_UNSUPPORTED) naming why it is unavailable or
// why it does not implement options.precision (ref, portable: fp32 only; onednn: fp32, and bf16 on
// CPUs with bf16 units), or the backend's own error (FLOWRT_DEVICE_ERROR without a device). Every
// caller (sessions, flowbench) is refused the same way.
std::unique_ptr<Backend> create_backend(flowrt_backend kind, const Graph &graph,
                                        const BackendOptions &options);

}  // namespace flowrt
