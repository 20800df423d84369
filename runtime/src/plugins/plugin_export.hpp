// The plugin side of the backend plugin interface (plugin_abi.h): turns a backend's C++ factory
// into the static flowrt_plugin a plugin's entry point returns. Every call into the plugin runs
// inside a catch-all that turns an exception into a status and a message, because exceptions
// must not cross into the core.
#pragma once

#include <memory>
#include <string>
#include <vector>

#include "backends/backend.hpp"
#include "plugins/plugin_abi.h"

#define FLOWRT_PLUGIN_EXPORT extern "C" __attribute__((visibility("default")))

namespace flowrt::plugin {

struct Definition {
  flowrt_backend kind = FLOWRT_BACKEND_REF;
  std::string description;  // "oneDNN 2.6.3 (CPU)"
  std::unique_ptr<Backend> (*create)(const Graph &, const BackendOptions &) = nullptr;
  // Empty string: usable on `device`; else why not.
  std::string (*unavailable)(int device) = nullptr;
  // Optional: the kernels a backend runs at batch n (flowbench prints them).
  std::vector<std::string> (*kernels)(Backend &, size_t n) = nullptr;
};

// The flowrt_plugin for `definition` (made once; the pointer stays valid for the process).
const flowrt_plugin *export_plugin(const Definition &definition);

}  // namespace flowrt::plugin
