#include "model/nice_builder.hpp"

#include "core/error.hpp"
#include "model/builder_support.hpp"
#include "model/finalize.hpp"

namespace flowrt {
namespace {
using build::add_layer;
using build::Init;

// Fully-connected ReLU layers as 1x1 convolutions on a 1x1 image.
Net nice_net(Init &init, int64_t in, int64_t hidden, int layers, int64_t out, bool random) {
  Net net;
  int64_t ch = in;
  for (int k = 0; k < layers; ++k) {
    net.ops.emplace_back(Conv2dOp{init.tensor({hidden, ch, 1, 1}, 0.05),
                                  init.tensor({hidden}, random ? 0.01 : 0.0), PaddingMode::Zeros,
                                  0.f});
    net.ops.emplace_back(ReluOp{});
    ch = hidden;
  }
  net.ops.emplace_back(Conv2dOp{init.tensor({out, ch, 1, 1}, random ? 0.01 : 0.0),
                                init.tensor({out}, random ? 0.01 : 0.0), PaddingMode::Zeros, 0.f});
  return net;
}

}  // namespace

Graph build_nice(const NiceConfig &cfg) {
  if (cfg.couplings < 1 || cfg.couplings > 64) invalid_argument("couplings must be in [1, 64]");
  if (cfg.hidden < 1 || cfg.hidden > 8192) invalid_argument("width must be in [1, 8192]");
  if (cfg.hidden_layers < 1 || cfg.hidden_layers > 16)
    invalid_argument("hidden layers must be in [1, 16]");
  if (cfg.n_bits < 1 || cfg.n_bits > 8) invalid_argument("n_bits must be in [1, 8]");
  const int64_t d = cfg.channels * cfg.height * cfg.width;
  if (d % 2)
    invalid_argument("NICE needs an even number of pixel values, got " + std::to_string(d));
  Graph g;
  g.image = {cfg.channels, cfg.height, cfg.width, cfg.n_bits};
  Init init(cfg.seed);
  add_layer(g, "flatten", FlattenLayer{});
  std::vector<int32_t> evens_first(d), restore(d);
  for (int64_t i = 0; i < d; ++i) {
    evens_first[i] = static_cast<int32_t>(i < d / 2 ? 2 * i : 2 * (i - d / 2) + 1);
    restore[evens_first[i]] = static_cast<int32_t>(i);
  }
  add_layer(g, "interleave", PermuteLayer{PermuteKind::Indices, evens_first, {}});
  for (int k = 0; k < cfg.couplings; ++k) {
    CouplingLayer cp;
    cp.type = CouplingType::Additive;
    cp.conditioning = k % 2 ? Half::Second : Half::First;  // evens condition first, then odds
    cp.net = nice_net(init, d / 2, cfg.hidden, cfg.hidden_layers, d / 2, cfg.random_nets);
    add_layer(g, "coupling" + std::to_string(k), std::move(cp));
  }
  add_layer(g, "deinterleave", PermuteLayer{PermuteKind::Indices, restore, {}});
  ActNormLayer scaling;
  scaling.bias = init.tensor({d}, cfg.random_nets ? 0.05 : 0.0);
  if (cfg.random_nets) {
    std::vector<float> v = init.normal(static_cast<size_t>(d), 0.1);
    for (float &x : v) x = std::exp(x);
    scaling.scale = Tensor::from_vector({d}, std::move(v));
  } else {
    scaling.scale = init.constant({d}, 1.f);
  }
  add_layer(g, "scaling", std::move(scaling));
  TopPriorLayer top;
  top.kind = TopPriorKind::StandardNormal;
  add_layer(g, "top_prior", std::move(top));
  g.format_minor = g.required_format_minor();
  g.metadata.emplace_back("architecture", "nice");
  finalize_graph(g);
  return g;
}

}  // namespace flowrt
