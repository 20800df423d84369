// The fingerprint of the C++ types a plugin receives from the core (a Graph and BackendOptions
// behind opaque pointers). Both sides compute it from their own copy of the headers; a plugin
// whose fingerprint differs from the core's was built from other sources or with another C++
// ABI and is refused before any of those objects crosses over.
#pragma once

#include <string>

#include "backends/backend.hpp"
#include "model/graph.hpp"

namespace flowrt {

inline std::string layout_fingerprint() {
  auto field = [](const char *name, size_t size) {
    return std::string(name) + "=" + std::to_string(size) + " ";
  };
  std::string f = field("graph", sizeof(Graph)) + field("layer", sizeof(Layer)) +
                  field("layerop", sizeof(LayerOp)) + field("coupling", sizeof(CouplingLayer)) +
                  field("invconv", sizeof(InvConvLayer)) + field("netop", sizeof(NetOp)) +
                  field("tensor", sizeof(Tensor)) + field("options", sizeof(BackendOptions)) +
                  field("string", sizeof(std::string));
#if defined(_GLIBCXX_USE_CXX11_ABI)
  f += "cxx11abi=" + std::to_string(_GLIBCXX_USE_CXX11_ABI) + " ";
#endif
#if defined(__GXX_ABI_VERSION)
  f += "gxxabi=" + std::to_string(__GXX_ABI_VERSION);
#endif
  return f;
}

}  // namespace flowrt
