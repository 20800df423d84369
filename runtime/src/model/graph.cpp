#include "model/graph.hpp"

#include <cmath>

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
    const char *operator()(const LogitLayer &) { return "logit"; }
    const char *operator()(const FlattenLayer &) { return "flatten"; }
    const char *operator()(const BatchNormLayer &) { return "batchnorm"; }
  };
  return std::visit(Visitor{}, op);
}

bool Net::is_residual_source(size_t k) const {
  for (const NetOp &op : ops)
    if (auto *r = std::get_if<ResidualAddOp>(&op))
      if (r->from >= 0 && static_cast<size_t>(r->from) == k) return true;
  return false;
}

bool Net::has_residual() const {
  for (const NetOp &op : ops)
    if (std::holds_alternative<ResidualAddOp>(op)) return true;
  return false;
}

int Graph::required_format_minor() const {
  for (const Layer &l : layers) {
    if (auto *c = std::get_if<CouplingLayer>(&l.op))
      if (c->net.has_residual()) return 2;
    if (auto *s = std::get_if<SplitLayer>(&l.op))
      if (s->prior.has_residual()) return 2;
  }
  for (const Layer &l : layers) {
    if (std::holds_alternative<LogitLayer>(l.op) || std::holds_alternative<FlattenLayer>(l.op))
      return 1;
    if (auto *c = std::get_if<CouplingLayer>(&l.op))
      if (is_checkerboard(c->conditioning) ||
          (c->type == CouplingType::Affine && c->scale_fn == ScaleFunction::Tanh))
        return 1;
  }
  return 0;
}

ActNormLayer BatchNormLayer::as_actnorm() const {
  const int64_t c = gamma.size();
  std::vector<float> scale(c), bias(c);
  for (int64_t i = 0; i < c; ++i) {
    const double s = double(gamma.data()[i]) / std::sqrt(double(running_var.data()[i]) + eps);
    scale[i] = static_cast<float>(s);
    bias[i] = static_cast<float>(double(beta.data()[i]) / s - double(running_mean.data()[i]));
  }
  return ActNormLayer{Tensor::from_vector({c}, std::move(bias)),
                      Tensor::from_vector({c}, std::move(scale))};
}

}  // namespace flowrt
