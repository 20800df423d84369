#include "model/glow_builder.hpp"

#include <cmath>

#include "core/error.hpp"
#include "core/linalg.hpp"
#include "core/philox.hpp"
#include "model/builder_support.hpp"
#include "model/finalize.hpp"

namespace flowrt {
namespace {
using build::add_layer;
using build::Init;
using build::lu_layer;

// Glow's coupling net: the shared conv stack, then a zero-initialised output scale.
Net coupling_net(Init &init, int64_t in, int64_t hidden, int64_t out, bool random) {
  Net net = build::conv_net(init, in, hidden, out, random);
  net.ops.emplace_back(OutputScaleOp{init.tensor({out}, random ? 0.05 : 0.0), 3.f});
  return net;
}

// Random priors put their std near the data's (pixels in [-0.5, 0.5] have std 0.29), so that a
// random model's samples stay in range like a trained model's.
constexpr double kRandomLogStd = -1.0;

Net prior_net(Init &init, int64_t in, bool random) {
  Net net;
  Tensor bias = init.tensor({2 * in}, random ? 0.02 : 0.0);
  if (random) {  // halves layout: the log-stds are the second half
    std::vector<float> b = bias.to_vector();
    for (int64_t c = in; c < 2 * in; ++c) b[c] += static_cast<float>(kRandomLogStd);
    bias = Tensor::from_vector({2 * in}, std::move(b));
  }
  net.ops.emplace_back(Conv2dOp{init.tensor({2 * in, in, 3, 3}, random ? 0.02 : 0.0),
                                std::move(bias), PaddingMode::Zeros, 0.f});
  net.ops.emplace_back(OutputScaleOp{init.tensor({2 * in}, random ? 0.05 : 0.0), 3.f});
  return net;
}

}  // namespace

Graph build_glow(const GlowConfig &cfg) {
  if (cfg.levels < 1 || cfg.levels > 8) invalid_argument("levels must be in [1, 8]");
  if (cfg.depth < 1 || cfg.depth > 256) invalid_argument("depth must be in [1, 256]");
  if (cfg.hidden < 1 || cfg.hidden > 8192) invalid_argument("width must be in [1, 8192]");
  if (cfg.n_bits < 1 || cfg.n_bits > 8) invalid_argument("n_bits must be in [1, 8]");
  const int64_t side_div = int64_t{1} << cfg.levels;
  if (cfg.height % side_div || cfg.width % side_div)
    invalid_argument("image " + std::to_string(cfg.height) + "x" + std::to_string(cfg.width) +
                     " is not divisible by 2^levels = " + std::to_string(side_div));
  Graph g;
  g.image = {cfg.channels, cfg.height, cfg.width, cfg.n_bits};
  Init init(cfg.seed);
  Shape3 s = g.image.shape();
  for (int l = 0; l < cfg.levels; ++l) {
    const std::string level = "level" + std::to_string(l);
    add_layer(g, level + "/squeeze", SqueezeLayer{cfg.squeeze});
    s = {s.c * 4, s.h / 2, s.w / 2};
    for (int k = 0; k < cfg.depth; ++k) {
      const std::string step = level + "/step" + std::to_string(k);
      ActNormLayer an;
      an.bias = init.tensor({s.c}, cfg.random_nets ? 0.1 : 0.0);
      if (cfg.random_nets) {
        // An affine coupling multiplies half the channels by about sigmoid(2) = 0.88; the
        // actnorm gives it back on average, so that random deep models keep their scale in both
        // directions (else sampling a 96-step model from N(0, 1) overflows).
        const double gain = cfg.coupling == CouplingType::Affine
                                ? 1.0 / std::sqrt(1.0 / (1.0 + std::exp(-2.0)))
                                : 1.0;
        std::vector<float> ls = init.normal(s.c, 0.05);
        for (float &v : ls) v = static_cast<float>(gain * std::exp(v));
        an.scale = Tensor::from_vector({s.c}, std::move(ls));
      } else {
        an.scale = init.constant({s.c}, 1.f);
      }
      add_layer(g, step + "/actnorm", std::move(an));
      switch (cfg.permutation) {
        case Permutation::LU:
          add_layer(g, step + "/invconv", lu_layer(init.rotation(s.c), s.c));
          break;
        case Permutation::Dense: {
          InvConvLayer d;
          d.form = InvConvForm::Dense;
          std::vector<double> r = init.rotation(s.c);
          d.weight = Tensor::from_vector({s.c, s.c}, std::vector<float>(r.begin(), r.end()));
          add_layer(g, step + "/invconv", std::move(d));
          break;
        }
        case Permutation::Reverse:
          add_layer(g, step + "/permute", PermuteLayer{PermuteKind::Reverse, {}, {}});
          break;
        case Permutation::Shuffle: {
          // Fisher-Yates driven by the same deterministic stream.
          std::vector<int32_t> idx(s.c);
          for (int64_t i = 0; i < s.c; ++i) idx[i] = static_cast<int32_t>(i);
          std::vector<float> u = init.normal(s.c, 1.0);
          for (int64_t i = s.c - 1; i > 0; --i) {
            const double uni = 0.5 * std::erfc(-u[i] / std::sqrt(2.0));  // normal -> uniform
            const int64_t j = std::min<int64_t>(i, static_cast<int64_t>(uni * (i + 1)));
            std::swap(idx[i], idx[j]);
          }
          add_layer(g, step + "/permute", PermuteLayer{PermuteKind::Indices, idx, {}});
          break;
        }
      }
      CouplingLayer cp;
      cp.type = cfg.coupling;
      cp.conditioning = Half::First;
      const int64_t half = s.c / 2;
      cp.net =
          coupling_net(init, half, cfg.hidden,
                       cfg.coupling == CouplingType::Affine ? 2 * half : half, cfg.random_nets);
      cp.split = ShiftScaleSplit::ScaleShiftHalves;
      cp.scale_fn = ScaleFunction::Sigmoid;
      cp.scale_bias = 2.f;
      cp.form = AffineForm::ShiftThenScale;
      add_layer(g, step + "/coupling", std::move(cp));
    }
    if (l + 1 < cfg.levels) {
      SplitLayer sp;
      sp.leaving = Half::Second;
      sp.prior = prior_net(init, s.c / 2, cfg.random_nets);
      sp.layout = PriorLayout::MeanLogstdHalves;
      add_layer(g, level + "/split", std::move(sp));
      s.c /= 2;
    }
  }
  TopPriorLayer top;
  top.kind = TopPriorKind::Learned;
  top.mean = init.tensor({s.c, s.h, s.w}, cfg.random_nets ? 0.1 : 0.0);
  top.log_std = init.tensor({s.c, s.h, s.w}, cfg.random_nets ? 0.1 : 0.0,
                            cfg.random_nets ? kRandomLogStd : 0.0);
  if (cfg.n_classes > 0)
    top.class_offsets = init.tensor({cfg.n_classes, 2 * s.c}, cfg.random_nets ? 0.1 : 0.0);
  add_layer(g, "top_prior", std::move(top));
  finalize_graph(g);
  return g;
}

GlowConfig standard_architecture(const std::string &name) {
  GlowConfig c;
  if (name == "tiny") {
    c.channels = 3, c.height = 32, c.width = 32, c.levels = 2, c.depth = 4, c.hidden = 64;
  } else if (name == "fmnist") {
    c.channels = 1, c.height = 32, c.width = 32, c.levels = 3, c.depth = 8, c.hidden = 256;
  } else if (name == "cifar") {
    c.channels = 3, c.height = 32, c.width = 32, c.levels = 3, c.depth = 32, c.hidden = 512;
  } else if (name == "celeba64") {
    c.channels = 3, c.height = 64, c.width = 64, c.levels = 4, c.depth = 16, c.hidden = 256;
  } else {
    invalid_argument("unknown architecture '" + name + "' (tiny, fmnist, cifar, celeba64)");
  }
  return c;
}

Permutation parse_permutation(const std::string &n) {
  if (n == "lu") return Permutation::LU;
  if (n == "dense") return Permutation::Dense;
  if (n == "reverse") return Permutation::Reverse;
  if (n == "shuffle") return Permutation::Shuffle;
  invalid_argument("unknown permutation '" + n + "' (lu, dense, reverse, shuffle)");
}

CouplingType parse_coupling(const std::string &n) {
  if (n == "affine") return CouplingType::Affine;
  if (n == "additive") return CouplingType::Additive;
  invalid_argument("unknown coupling '" + n + "' (affine, additive)");
}

}  // namespace flowrt
