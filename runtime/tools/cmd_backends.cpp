// `flowrt backends`: which backends can run here, where each comes from (built in, or the
// plugin file that was loaded) and, for each that cannot, why not. Exit 0 whatever it finds.
#include <cstdio>

#include "backends/backend_registry.hpp"
#include "commands.hpp"

namespace flowrt {

int cmd_backends(int, char **) {
  const flowrt_backend kinds[] = {FLOWRT_BACKEND_REF, FLOWRT_BACKEND_PORTABLE,
                                  FLOWRT_BACKEND_ONEDNN, FLOWRT_BACKEND_CUDA};
  for (flowrt_backend k : kinds) {
    const BackendProbe p = probe_backend(k);
    std::printf("%-8s %-11s %s\n", flowrt_backend_name(k),
                p.available ? "available" : "unavailable",
                p.available ? (p.description + " [" + p.source + "]").c_str() : p.why.c_str());
  }
  std::printf("auto -> %s\n", flowrt_backend_name(resolve_auto_backend()));
  return 0;
}

}  // namespace flowrt
