// Purpose-built broken backend plugins for the loader's tests (test_plugin_loader.cpp). One
// source, built several times; each build gets one defect from its compile definitions:
//   FAKE_ABI, FAKE_RELEASE, FAKE_LAYOUT_BOGUS, FAKE_KIND: a field the loader must refuse;
//   FAKE_NO_ENTRY: the entry point is missing; FAKE_NEEDS_DEP: the module needs a shared
//   library that the loader's process cannot find.
#include <string>

#include "plugins/layout_fingerprint.hpp"
#include "plugins/plugin_abi.h"

#ifndef FAKE_ABI
#define FAKE_ABI FLOWRT_PLUGIN_ABI
#endif
#ifndef FAKE_RELEASE
#define FAKE_RELEASE FLOWRT_RELEASE
#endif
#ifndef FAKE_KIND
#define FAKE_KIND FLOWRT_BACKEND_ONEDNN
#endif

#ifdef FAKE_NEEDS_DEP
extern "C" int flowrt_test_dependency(void);
#endif

namespace {

[[maybe_unused]] flowrt_status fake_available(int, flowrt_plugin_error *) {
  return FLOWRT_OK;
}
[[maybe_unused]] flowrt_status fake_create(const void *, const void *, flowrt_plugin_backend *,
                                           flowrt_plugin_error *) {
  return FLOWRT_INTERNAL_ERROR;
}

}  // namespace

#ifndef FAKE_NO_ENTRY
extern "C" __attribute__((visibility("default"))) const flowrt_plugin *flowrt_backend_plugin_entry(
    void) {
  static const std::string layout =
#ifdef FAKE_LAYOUT_BOGUS
      "graph=1";
#else
      flowrt::layout_fingerprint();
#endif
  static flowrt_plugin p{};
  p.abi = FAKE_ABI;
  p.struct_size = sizeof(flowrt_plugin);
  p.release = FAKE_RELEASE;
  p.layout = layout.c_str();
  p.kind = FAKE_KIND;
  p.description = "a test plugin";
  p.available = fake_available;
  p.create = fake_create;
#ifdef FAKE_NEEDS_DEP
  if (flowrt_test_dependency() != 1) return nullptr;
#endif
  return &p;
}
#else
extern "C" __attribute__((visibility("default"))) int flowrt_some_other_symbol(void) {
  return 0;
}
#endif
