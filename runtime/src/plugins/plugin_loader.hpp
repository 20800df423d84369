// The core side of the backend plugins: finds libflowrt-<name>.so, loads it (dlopen), checks
// its ABI version, release and type layout against this library's, and wraps the backends it
// makes behind the Backend interface. A plugin is loaded at most once per process and never
// unloaded (backends keep thread pools and device contexts alive for the process).
//
// Search order for libflowrt-<name>.so (the first file that exists and loads wins):
//   1. the directory of the module that holds this code (libflowrt.so itself, or the program
//      that links libflowrt statically), so a library finds the plugins of its own release;
//   2. each directory of FLOWRT_BACKEND_PATH (':'-separated);
//   3. <that directory>/../lib, for programs in bin/ beside lib/;
//   4. the library directory flowrt was configured to install into.
#pragma once

#include <memory>
#include <string>
#include <vector>

#include "backends/backend.hpp"
#include "plugins/plugin_abi.h"

namespace flowrt {

// "libflowrt-onednn.so" for FLOWRT_BACKEND_ONEDNN.
std::string plugin_file_name(flowrt_backend kind);

struct PluginLoad {
  const flowrt_plugin *api = nullptr;  // null: not loaded, `error` says why
  std::string path;                    // the file loaded (or the one that failed)
  std::string error;
};

// Loads one file as the plugin of `kind` (no caching; tests use it on purpose-built plugins).
PluginLoad load_plugin_file(const std::string &path, flowrt_backend kind);
// The directories above, in order, without duplicates.
std::vector<std::string> plugin_search_dirs();
// Searches `dirs` for the plugin of `kind` (no caching).
PluginLoad find_plugin(flowrt_backend kind, const std::vector<std::string> &dirs);
// The plugin of `kind` from plugin_search_dirs(), searched once per process (thread-safe).
const PluginLoad &backend_plugin(flowrt_backend kind);

// A backend made by a loaded plugin; throws Error with the plugin's status and message.
std::unique_ptr<Backend> create_plugin_backend(const flowrt_plugin &api, const Graph &graph,
                                               const BackendOptions &options);

}  // namespace flowrt
