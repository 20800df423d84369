#include "plugins/plugin_loader.hpp"

#include <dlfcn.h>
#include <limits.h>
#include <stdlib.h>
#include <sys/stat.h>
#include <unistd.h>

#include <cstring>
#include <mutex>

#include "core/error.hpp"
#include "plugins/layout_fingerprint.hpp"

#ifndef FLOWRT_PLUGIN_INSTALL_DIR
#define FLOWRT_PLUGIN_INSTALL_DIR ""
#endif

namespace flowrt {
namespace {

bool is_file(const std::string &path) {
  struct stat st;
  return ::stat(path.c_str(), &st) == 0 && S_ISREG(st.st_mode);
}

std::string parent_dir(const std::string &path) {
  const size_t slash = path.find_last_of('/');
  if (slash == std::string::npos) return ".";
  return slash == 0 ? "/" : path.substr(0, slash);
}

// The directory of the module (shared library or program) this function was linked into.
// For a shared library dladdr names its file; for the main program (a static libflowrt) it
// gives argv[0], which may be a bare name found on PATH: then the kernel's link is the truth.
std::string own_dir() {
  Dl_info info;
  char resolved[PATH_MAX];
  if (dladdr(reinterpret_cast<void *>(&own_dir), &info) && info.dli_fname &&
      std::strchr(info.dli_fname, '/') && realpath(info.dli_fname, resolved))
    return parent_dir(resolved);
  const ssize_t n = readlink("/proc/self/exe", resolved, sizeof resolved - 1);
  if (n <= 0) return "";
  resolved[n] = '\0';
  return parent_dir(resolved);
}

std::string dlerror_text() {
  const char *e = dlerror();
  return e ? e : "unknown dlopen error";
}

// A backend that lives in a plugin: every call goes through the plugin's table, and a failed
// call becomes an Error here, on the core's side of the boundary.
class PluginBackend final : public Backend {
 public:
  PluginBackend(int64_t dims, flowrt_backend kind, const flowrt_plugin_backend &b)
      : Backend(dims), kind_(kind), b_(b) {}
  ~PluginBackend() override { b_.destroy(b_.self); }
  PluginBackend(const PluginBackend &) = delete;
  PluginBackend &operator=(const PluginBackend &) = delete;

  flowrt_backend kind() const override { return kind_; }
  void encode(size_t n, const float *x, const int32_t *labels, float *z, double *log_p,
              double *log_det) override {
    check(b_.encode(b_.self, n, x, labels, z, log_p, log_det, &error_));
  }
  void decode(size_t n, const float *z, float *x) override {
    check(b_.decode(b_.self, n, z, x, &error_));
  }
  void decode_noise(size_t n, const float *eps, float temperature, const int32_t *labels,
                    float *x) override {
    check(b_.decode_noise(b_.self, n, eps, temperature, labels, x, &error_));
  }
  void sample(size_t n, uint64_t seed, uint64_t first_image, float temperature,
              const int32_t *labels, float *eps_scratch, float *x) override {
    check(b_.sample(b_.self, n, seed, first_image, temperature, labels, eps_scratch, x, &error_));
  }
  std::vector<std::string> kernels(size_t n) override {
    std::vector<char> text(64 * 1024);
    check(b_.kernels(b_.self, n, text.data(), text.size(), &error_));
    std::vector<std::string> lines;
    std::string line;
    for (const char *c = text.data(); *c; ++c) {
      if (*c != '\n') {
        line += *c;
      } else if (!line.empty()) {
        lines.push_back(line);
        line.clear();
      }
    }
    return lines;
  }

 private:
  void check(flowrt_status st) {
    if (st != FLOWRT_OK) fail(st, error_.message);
  }
  flowrt_backend kind_;
  flowrt_plugin_backend b_;
  flowrt_plugin_error error_{};
};

}  // namespace

std::string plugin_file_name(flowrt_backend kind) {
  return "libflowrt-" + std::string(flowrt_backend_name(kind)) + ".so";
}

PluginLoad load_plugin_file(const std::string &path, flowrt_backend kind) {
  PluginLoad r;
  r.path = path;
  // RTLD_LOCAL: the plugin's own dependencies (oneDNN, cuBLAS) stay out of the global scope.
  void *handle = dlopen(path.c_str(), RTLD_NOW | RTLD_LOCAL);
  if (!handle) {
    r.error = "cannot load " + path + ": " + dlerror_text();
    return r;
  }
  void *entry = dlsym(handle, FLOWRT_PLUGIN_ENTRY);
  if (!entry) {
    r.error = path + " is not a flowrt backend plugin (no " FLOWRT_PLUGIN_ENTRY ")";
    dlclose(handle);
    return r;
  }
  flowrt_plugin_entry_fn fn;
  std::memcpy(&fn, &entry, sizeof fn);
  const flowrt_plugin *api = fn();
  const char *here = FLOWRT_RELEASE;
  std::string why;
  if (!api) {
    why = "its entry point returned nothing";
  } else if (api->abi != FLOWRT_PLUGIN_ABI) {
    why = "plugin ABI " + std::to_string(api->abi) + ", this library speaks ABI " +
          std::to_string(FLOWRT_PLUGIN_ABI);
  } else if (api->struct_size != sizeof(flowrt_plugin)) {
    why = "its plugin table has another size";
  } else if (!api->release || std::strcmp(api->release, here) != 0) {
    why = std::string("it is from flowrt ") + (api->release ? api->release : "(unknown)") +
          ", this library is flowrt " + here;
  } else if (!api->layout || layout_fingerprint() != api->layout) {
    why = std::string("it was built with other type layouts (plugin: ") +
          (api->layout ? api->layout : "none") + "; library: " + layout_fingerprint() + ")";
  } else if (api->kind != kind) {
    why = std::string("it provides the ") + flowrt_backend_name(api->kind) + " backend, not " +
          flowrt_backend_name(kind);
  } else if (!api->available || !api->create) {
    why = "its plugin table is incomplete";
  }
  if (!why.empty()) {
    r.error = "refused " + path + ": " + why;
    // Not unloaded: a plugin's static destructors may already be registered.
    return r;
  }
  r.api = api;
  return r;
}

std::vector<std::string> plugin_search_dirs() {
  std::vector<std::string> dirs;
  auto add = [&](const std::string &d) {
    if (d.empty()) return;
    for (const std::string &e : dirs)
      if (e == d) return;
    dirs.push_back(d);
  };
  const std::string own = own_dir();
  add(own);
  if (const char *env = std::getenv("FLOWRT_BACKEND_PATH")) {
    std::string list = env;
    size_t start = 0;
    while (start <= list.size()) {
      const size_t colon = list.find(':', start);
      const size_t end = colon == std::string::npos ? list.size() : colon;
      add(list.substr(start, end - start));
      if (colon == std::string::npos) break;
      start = colon + 1;
    }
  }
  if (!own.empty()) {
    char resolved[PATH_MAX];
    if (realpath((own + "/../lib").c_str(), resolved)) add(resolved);
  }
  add(FLOWRT_PLUGIN_INSTALL_DIR);
  return dirs;
}

PluginLoad find_plugin(flowrt_backend kind, const std::vector<std::string> &dirs) {
  const std::string name = plugin_file_name(kind);
  PluginLoad first_failure;
  for (const std::string &d : dirs) {
    const std::string path = d + "/" + name;
    if (!is_file(path)) continue;
    PluginLoad r = load_plugin_file(path, kind);
    if (r.api) return r;
    if (first_failure.error.empty()) first_failure = r;
  }
  if (!first_failure.error.empty()) return first_failure;
  PluginLoad r;
  std::string searched;
  for (const std::string &d : dirs) searched += (searched.empty() ? "" : ", ") + d;
  r.error = name + " was not found (searched " + (searched.empty() ? "nothing" : searched) +
            "; FLOWRT_BACKEND_PATH adds directories)";
  return r;
}

const PluginLoad &backend_plugin(flowrt_backend kind) {
  static std::mutex mutex;
  static PluginLoad loads[4];
  static bool searched[4] = {};
  const int k = static_cast<int>(kind);
  if (k < 0 || k >= 4) {
    static const PluginLoad none{nullptr, "", "no such backend"};
    return none;
  }
  std::lock_guard<std::mutex> lock(mutex);
  if (!searched[k]) {
    loads[k] = find_plugin(kind, plugin_search_dirs());
    searched[k] = true;
  }
  return loads[k];
}

std::unique_ptr<Backend> create_plugin_backend(const flowrt_plugin &api, const Graph &graph,
                                               const BackendOptions &options) {
  flowrt_plugin_backend b{};
  flowrt_plugin_error error{};
  const flowrt_status st = api.create(&graph, &options, &b, &error);
  if (st != FLOWRT_OK) fail(st, error.message);
  if (!b.self || !b.destroy || !b.encode || !b.decode || !b.decode_noise || !b.sample ||
      !b.kernels) {
    if (b.self && b.destroy) b.destroy(b.self);
    fail(FLOWRT_INTERNAL_ERROR, "the " + std::string(flowrt_backend_name(api.kind)) +
                                    " plugin returned an incomplete backend");
  }
  try {
    return std::make_unique<PluginBackend>(graph.dims(), api.kind, b);
  } catch (...) {  // the wrapper could not be made: the plugin's backend must not leak
    b.destroy(b.self);
    throw;
  }
}

}  // namespace flowrt
