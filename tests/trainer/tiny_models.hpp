// Tiny models for the trainer's tests: build_glow's architecture with random (non-identity)
// weights, then rewritten to exercise every option the format has (split conventions, scale
// functions, padding modes, net actnorm, priors, class conditioning).
#pragma once

#include <cmath>
#include <cstdint>
#include <random>
#include <vector>

#include "model/finalize.hpp"
#include "model/glow_builder.hpp"

namespace flowrt::test {

struct TinyVariant {
  int64_t channels = 1, size = 8;
  int levels = 2, depth = 2, hidden = 4;
  CouplingType coupling = CouplingType::Affine;
  Permutation permutation = Permutation::LU;
  SqueezeOrder squeeze = SqueezeOrder::ChannelMajor;
  ShiftScaleSplit split = ShiftScaleSplit::ScaleShiftHalves;
  ScaleFunction scale_fn = ScaleFunction::Sigmoid;
  AffineForm form = AffineForm::ShiftThenScale;
  Half conditioning = Half::First;
  PaddingMode padding = PaddingMode::Zeros;  // of every 3x3 conv
  bool net_actnorm = false;                  // an actnorm after each net's first conv
  bool residual = false;  // nets and priors with residual connections (residual_structure)
  Half leaving = Half::Second;
  PriorLayout layout = PriorLayout::MeanLogstdHalves;
  bool empty_split_prior = false;
  TopPriorKind top = TopPriorKind::Learned;
  int classes = 0;
  uint64_t seed = 7;
};

inline std::vector<float> random_values(std::mt19937 &rng, size_t n, double scale) {
  std::vector<float> v(n);
  for (float &x : v)
    x = static_cast<float>(scale * (static_cast<double>(rng()) / 4294967296.0 - 0.5));
  return v;
}

inline void rewrite_net(Net &net, const TinyVariant &v, std::mt19937 &rng) {
  std::vector<NetOp> ops;
  for (size_t k = 0; k < net.ops.size(); ++k) {
    NetOp op = net.ops[k];
    if (auto *c = std::get_if<Conv2dOp>(&op)) {
      // O(1) activations and nonzero biases: no parameter sits on a ReLU kink, and every
      // gradient is large enough for finite differences.
      const int64_t fan_in = c->weight.dim(1) * c->kernel_h() * c->kernel_w();
      c->weight = Tensor::from_vector(
          c->weight.shape(), random_values(rng, c->weight.size(), 2.0 / std::sqrt(fan_in)));
      c->bias =
          Tensor::from_vector({c->out_channels()}, random_values(rng, c->out_channels(), 0.4));
    }
    if (auto *c = std::get_if<Conv2dOp>(&op); c && c->kernel_h() > 1) {
      c->padding = v.padding;
      c->pad_value = v.padding == PaddingMode::Constant ? 1.f : 0.f;
      if (v.padding == PaddingMode::EdgeChannel) {
        const int64_t o = c->weight.dim(0), i = c->weight.dim(1), kh = c->kernel_h(),
                      kw = c->kernel_w();
        std::vector<float> w = random_values(rng, static_cast<size_t>(o * (i + 1) * kh * kw), 0.2);
        for (int64_t a = 0; a < o; ++a)
          for (int64_t b = 0; b < i * kh * kw; ++b)
            w[(a * (i + 1)) * kh * kw + b] = c->weight[(a * i) * kh * kw + b];
        c->weight = Tensor::from_vector({o, i + 1, kh, kw}, std::move(w));
      }
    }
    // The actnorm inserted after op 0 moves every later op (and connection source) by one.
    if (auto *r = std::get_if<ResidualAddOp>(&op); r && v.net_actnorm && r->from > 0) ++r->from;
    ops.push_back(op);
    if (k == 0 && v.net_actnorm) {
      const int64_t ch = std::get<Conv2dOp>(net.ops[0]).out_channels();
      std::vector<float> s = random_values(rng, static_cast<size_t>(ch), 0.5);
      for (float &x : s) x = std::exp(x);
      ops.emplace_back(NetActNormOp{Tensor::from_vector({ch}, random_values(rng, ch, 0.2)),
                                    Tensor::from_vector({ch}, std::move(s))});
    }
  }
  net.ops = std::move(ops);
}

// A net with residual connections from a ReLU's input (an unfused ReLU), through an actnorm
// (folded at run time), from an add's output, an add with a ReLU after it and (from_input) one
// from the net's own input; the convs are for rewrite_net to fill.
inline Net residual_structure(int64_t in, int64_t hidden, int64_t out, bool from_input) {
  auto conv = [](int64_t o, int64_t i, int64_t k) {
    return Conv2dOp{Tensor::from_vector({o, i, k, k}, std::vector<float>(o * i * k * k, 0.f)),
                    Tensor::from_vector({o}, std::vector<float>(o, 0.f)), PaddingMode::Zeros, 0.f};
  };
  auto actnorm = [](int64_t c) {
    return NetActNormOp{Tensor::from_vector({c}, std::vector<float>(c, 0.1f)),
                        Tensor::from_vector({c}, std::vector<float>(c, 1.3f))};
  };
  Net net;
  if (from_input) {
    net.ops.emplace_back(conv(in, in, 3));
    net.ops.emplace_back(ResidualAddOp{0});
  }
  const auto base = static_cast<int32_t>(net.ops.size());
  net.ops.emplace_back(conv(hidden, in, 3));
  net.ops.emplace_back(ReluOp{});  // base + 1: a source
  net.ops.emplace_back(conv(hidden, hidden, 1));
  net.ops.emplace_back(actnorm(hidden));
  net.ops.emplace_back(ResidualAddOp{base + 1});
  net.ops.emplace_back(ReluOp{});  // base + 5: a source
  net.ops.emplace_back(conv(hidden, hidden, 3));
  net.ops.emplace_back(ResidualAddOp{base + 5});
  net.ops.emplace_back(ReluOp{});
  net.ops.emplace_back(conv(out, hidden, 3));
  net.ops.emplace_back(
      OutputScaleOp{Tensor::from_vector({out}, std::vector<float>(out, 0.05f)), 3.f});
  return net;
}

inline Graph tiny_graph(const TinyVariant &v) {
  GlowConfig cfg;
  cfg.channels = v.channels, cfg.height = v.size, cfg.width = v.size;
  cfg.levels = v.levels, cfg.depth = v.depth, cfg.hidden = v.hidden;
  cfg.coupling = v.coupling;
  cfg.permutation = v.permutation;
  cfg.squeeze = v.squeeze;
  cfg.seed = v.seed;
  cfg.random_nets = true;
  cfg.n_classes = v.classes;
  Graph g = build_glow(cfg);
  std::mt19937 rng(static_cast<uint32_t>(v.seed));
  for (Layer &l : g.layers) {
    if (auto *c = std::get_if<CouplingLayer>(&l.op)) {
      c->split = v.split;
      c->scale_fn = v.scale_fn;
      c->scale_bias = v.scale_fn == ScaleFunction::Exp ? 0.f : 2.f;
      c->form = v.form;
      c->conditioning = v.conditioning;
      if (v.residual)
        c->net = residual_structure(
            l.in.c / 2, v.hidden, v.coupling == CouplingType::Affine ? l.in.c : l.in.c / 2, false);
      rewrite_net(c->net, v, rng);
    } else if (auto *s = std::get_if<SplitLayer>(&l.op)) {
      s->leaving = v.leaving;
      s->layout = v.layout;
      if (v.empty_split_prior)
        s->prior.ops.clear();
      else {
        if (v.residual) s->prior = residual_structure(l.in.c / 2, v.hidden, l.in.c, true);
        rewrite_net(s->prior, v, rng);
      }
    } else if (auto *t = std::get_if<TopPriorLayer>(&l.op)) {
      if (v.top == TopPriorKind::StandardNormal) {
        t->kind = TopPriorKind::StandardNormal;
        t->mean = Tensor();
        t->log_std = Tensor();
      }
    }
  }
  finalize_graph(g);
  return g;
}

// n images in the network's range (-0.5, 0.5).
inline std::vector<double> random_images(const Graph &g, int64_t n, uint32_t seed) {
  std::mt19937 rng(seed);
  std::vector<double> x(static_cast<size_t>(n * g.dims()));
  for (double &v : x) v = static_cast<double>(rng()) / 4294967296.0 - 0.5;
  return x;
}

}  // namespace flowrt::test
