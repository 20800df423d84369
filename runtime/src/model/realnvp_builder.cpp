#include "model/realnvp_builder.hpp"

#include <cmath>

#include "core/error.hpp"
#include "model/builder_support.hpp"
#include "model/finalize.hpp"

namespace flowrt {
namespace {
using build::add_layer;
using build::Init;

CouplingLayer realnvp_coupling(Init &init, const RealNvpConfig &cfg, const Shape3 &s, Half cond) {
  CouplingLayer cp;
  cp.type = CouplingType::Affine;
  cp.conditioning = cond;
  cp.mask_channel = is_checkerboard(cond) && cfg.mask_channel;
  const int64_t cb = cp.transformed_channels(s.c);
  cp.net = cfg.res_blocks > 0 ? build::residual_net(init, cp.net_input_channels(s.c), cfg.hidden,
                                                    2 * cb, cfg.res_blocks, cfg.random_nets)
                              : build::conv_net(init, cp.net_input_channels(s.c), cfg.hidden,
                                                2 * cb, cfg.random_nets);
  cp.split = ShiftScaleSplit::ShiftScaleHalves;
  cp.scale_fn = ScaleFunction::Tanh;
  cp.scale_bias = 0.f;
  cp.form = AffineForm::ScaleThenShift;
  // w = 1: with w = 0 and a zero last conv, neither w nor the net's scale outputs get a gradient.
  cp.scale_weight = cfg.random_nets ? init.tensor({cb}, 0.1, 1.0) : init.constant({cb}, 1.f);
  return cp;
}

BatchNormLayer batchnorm(Init &init, int64_t c, bool random) {
  BatchNormLayer bn;
  if (random) {
    auto positive = [&](double stddev) {
      std::vector<float> v = init.normal(static_cast<size_t>(c), stddev);
      for (float &x : v) x = std::exp(x);
      return Tensor::from_vector({c}, std::move(v));
    };
    bn.gamma = positive(0.05);
    bn.beta = init.tensor({c}, 0.1);
    bn.running_mean = init.tensor({c}, 0.1);
    bn.running_var = positive(0.1);
  } else {
    bn.gamma = init.constant({c}, 1.f);
    bn.beta = init.constant({c}, 0.f);
    bn.running_mean = init.constant({c}, 0.f);
    bn.running_var = init.constant({c}, 1.f);
  }
  return bn;
}

}  // namespace

Graph build_realnvp(const RealNvpConfig &cfg) {
  if (cfg.scales < 1 || cfg.scales > 8) invalid_argument("scales must be in [1, 8]");
  if (cfg.hidden < 1 || cfg.hidden > 8192) invalid_argument("width must be in [1, 8192]");
  if (cfg.n_bits < 1 || cfg.n_bits > 8) invalid_argument("n_bits must be in [1, 8]");
  if (cfg.res_blocks < 0 || cfg.res_blocks > 16)
    invalid_argument("residual blocks must be in [0, 16]");
  if (cfg.checkerboard < 0 || cfg.channelwise < 0 || cfg.final_checkerboard < 1 ||
      cfg.checkerboard + cfg.channelwise > 64 || cfg.final_checkerboard > 64)
    invalid_argument("coupling counts must be in [0, 64] (at least 1 in the last scale)");
  if (!(cfg.logit_alpha >= 0.f && cfg.logit_alpha < 0.5f))
    invalid_argument("logit alpha must be in [0, 0.5)");
  const int64_t side_div = int64_t{1} << (cfg.scales - 1);
  if (cfg.height % side_div || cfg.width % side_div)
    invalid_argument("image " + std::to_string(cfg.height) + "x" + std::to_string(cfg.width) +
                     " is not divisible by 2^(scales - 1) = " + std::to_string(side_div));
  Graph g;
  g.image = {cfg.channels, cfg.height, cfg.width, cfg.n_bits};
  Init init(cfg.seed);
  Shape3 s = g.image.shape();
  if (cfg.logit_alpha > 0.f) add_layer(g, "logit", LogitLayer{cfg.logit_alpha});
  auto coupling = [&](const std::string &name, Half cond) {
    add_layer(g, name + "/coupling", realnvp_coupling(init, cfg, s, cond));
    if (cfg.batchnorm) add_layer(g, name + "/batchnorm", batchnorm(init, s.c, cfg.random_nets));
  };
  for (int l = 0; l < cfg.scales; ++l) {
    const std::string scale = "scale" + std::to_string(l);
    const bool last = l + 1 == cfg.scales;
    const int checker = last ? cfg.final_checkerboard : cfg.checkerboard;
    for (int k = 0; k < checker; ++k)
      coupling(scale + "/checker" + std::to_string(k),
               k % 2 ? Half::CheckerboardOdd : Half::CheckerboardEven);
    if (last) break;
    add_layer(g, scale + "/squeeze", SqueezeLayer{SqueezeOrder::ChannelMajor});
    s = {s.c * 4, s.h / 2, s.w / 2};
    for (int k = 0; k < cfg.channelwise; ++k)
      coupling(scale + "/channel" + std::to_string(k), k % 2 ? Half::Second : Half::First);
    add_layer(g, scale + "/split", SplitLayer{Half::Second, {}, PriorLayout::MeanLogstdHalves});
    s.c /= 2;
  }
  TopPriorLayer top;
  top.kind = TopPriorKind::StandardNormal;
  add_layer(g, "top_prior", std::move(top));
  g.format_minor = g.required_format_minor();
  g.metadata.emplace_back("architecture", "realnvp");
  finalize_graph(g);
  return g;
}

}  // namespace flowrt
