#include "model/graph.hpp"

#include "core/error.hpp"

namespace flowrt {

std::string to_string(const Shape3 &s) {
  return std::to_string(s.c) + "x" + std::to_string(s.h) + "x" + std::to_string(s.w);
}

std::string shape_string(const std::vector<int64_t> &shape) {
  std::string s = "[";
  for (size_t i = 0; i < shape.size(); ++i) s += (i ? ", " : "") + std::to_string(shape[i]);
  return s + "]";
}

const Layer &Graph::top_layer() const {
  if (layers.empty() || !std::holds_alternative<TopPriorLayer>(layers.back().op))
    fail(FLOWRT_INTERNAL_ERROR, "graph has no top prior");
  return layers.back();
}

const TopPriorLayer &Graph::top_prior() const {
  return std::get<TopPriorLayer>(top_layer().op);
}

int Graph::levels() const {
  int n = 1;
  for (const Layer &l : layers)
    if (std::holds_alternative<SplitLayer>(l.op)) ++n;
  return n;
}

const std::string *Graph::find_metadata(const std::string &key) const {
  for (const auto &kv : metadata)
    if (kv.first == key) return &kv.second;
  return nullptr;
}

const char *layer_kind_name(const LayerOp &op) {
  struct Visitor {
    const char *operator()(const SqueezeLayer &) { return "squeeze"; }
    const char *operator()(const ActNormLayer &) { return "actnorm"; }
    const char *operator()(const InvConvLayer &) { return "invconv1x1"; }
    const char *operator()(const PermuteLayer &) { return "permute"; }
    const char *operator()(const CouplingLayer &) { return "coupling"; }
    const char *operator()(const SplitLayer &) { return "split"; }
    const char *operator()(const TopPriorLayer &) { return "top_prior"; }
  };
  return std::visit(Visitor{}, op);
}

}  // namespace flowrt
