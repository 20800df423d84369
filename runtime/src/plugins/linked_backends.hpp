// The backends linked into this binary besides the reference one. Two definitions exist, and
// each library links exactly one: linked_backends_none.cpp (shared libflowrt and the project's
// own programs: every optional backend is a plugin) and linked_backends_static.cpp (static
// libflowrt: the backends it was built with, no plugin loading).
#pragma once

#include <cstddef>
#include <memory>
#include <string>

#include "backends/backend.hpp"

namespace flowrt {

struct LinkedBackend {
  flowrt_backend kind;
  std::unique_ptr<Backend> (*create)(const Graph &, const BackendOptions &);
  std::string (*unavailable)(int device);  // "" when usable on the device
  std::string (*description)();
};

struct LinkedBackends {
  const LinkedBackend *list = nullptr;
  size_t count = 0;
  bool load_plugins = true;  // may kinds not in `list` come from plugins?
};

LinkedBackends linked_backends();

}  // namespace flowrt
