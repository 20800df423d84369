// Shared libflowrt and the project's own programs: every optional backend is a plugin.
#include "plugins/linked_backends.hpp"

namespace flowrt {

LinkedBackends linked_backends() {
  return LinkedBackends{nullptr, 0, true};
}

}  // namespace flowrt
