// Whole-model exactness of the float reference executor: decode(encode(x)) = x and
// encode(decode(z)) = z for every permutation and coupling kind and every convention of the
// format, the folded program agrees with the unfolded one, the float latents agree with the
// naive double encoder, and decode_noise draws each level from its prior (z = mean + T std eps,
// with the priors evaluated on the way down).
#include <doctest/doctest.h>

#include <algorithm>
#include <cmath>
#include <string>
#include <utility>
#include <vector>

#include "backends/ref/ref_executor.hpp"
#include "format/flow_file.hpp"
#include "model/nice_builder.hpp"
#include "model/realnvp_builder.hpp"
#include "test_support.hpp"

namespace flowrt {
namespace {

using test::Rng;

constexpr size_t kBatch = 3;

struct RoundTrip {
  double x_err = 0;     // max|decode(encode(x)) - x| / max|x|
  double z_err = 0;     // max|encode(decode(z)) - z| / max|z|
  double fold_z = 0;    // max|z_fold - z_nofold| / max|z|
  double fold_lp = 0;   // max |log_p_fold - log_p_nofold| / |log_p|
  double fold_x = 0;    // decoded x, folded vs unfolded, / max|x|
  double naive_z = 0;   // float latents vs the naive double encoder, / max(1, max|z|)
  double naive_lp = 0;  // float log_p - log_det vs the naive prior term, relative
  void merge(const RoundTrip &o) {
    x_err = std::max(x_err, o.x_err);
    z_err = std::max(z_err, o.z_err);
    fold_z = std::max(fold_z, o.fold_z);
    fold_lp = std::max(fold_lp, o.fold_lp);
    fold_x = std::max(fold_x, o.fold_x);
    naive_z = std::max(naive_z, o.naive_z);
    naive_lp = std::max(naive_lp, o.naive_lp);
  }
  std::string report() const {
    return "decode(encode(x)) " + test::sci(x_err) + ", encode(decode(z)) " + test::sci(z_err) +
           ", fold vs no fold: z " + test::sci(fold_z) + ", log p " + test::sci(fold_lp) + ", x " +
           test::sci(fold_x) + "; vs naive: z " + test::sci(naive_z) + ", prior " +
           test::sci(naive_lp);
  }
};

RoundTrip round_trip(const Graph &g, uint64_t seed, int label = -1) {
  RoundTrip r;
  const size_t d = static_cast<size_t>(g.dims());
  Rng rng(seed);
  const std::vector<float> x = rng.floats(kBatch * d, -0.5, 0.5);
  std::vector<float> z0(kBatch * d);
  for (float &v : z0) v = static_cast<float>(rng.normal());
  std::vector<int32_t> labels(kBatch, label);
  const int32_t *lab = label >= 0 ? labels.data() : nullptr;

  std::vector<float> z[2], xb[2], zb[2], xd[2];
  std::vector<double> lp[2], ld[2];
  for (int fold = 0; fold < 2; ++fold) {
    RefExecutor<float> ex(g, kBatch, 1, fold == 1);
    z[fold].resize(kBatch * d);
    xb[fold].resize(kBatch * d);
    xd[fold].resize(kBatch * d);
    zb[fold].resize(kBatch * d);
    lp[fold].resize(kBatch);
    ld[fold].resize(kBatch);
    ex.encode(kBatch, x.data(), lab, z[fold].data(), lp[fold].data(), ld[fold].data());
    ex.decode(kBatch, z[fold].data(), false, 0.f, nullptr, xb[fold].data());
    ex.decode(kBatch, z0.data(), false, 0.f, nullptr, xd[fold].data());
    ex.encode(kBatch, xd[fold].data(), lab, zb[fold].data(), nullptr, nullptr);
    r.x_err = std::max(r.x_err, test::max_abs_diff(xb[fold], x) / test::max_abs(x));
    r.z_err = std::max(r.z_err, test::max_abs_diff(zb[fold], z0) / test::max_abs(z0));
    for (size_t i = 0; i < kBatch; ++i) CHECK(std::isfinite(lp[fold][i]));
  }
  r.fold_z = test::max_abs_diff(z[0], z[1]) / test::max_abs(z[0]);
  for (size_t i = 0; i < kBatch; ++i)
    r.fold_lp = std::max(r.fold_lp, test::rel_err(lp[1][i], lp[0][i]));
  r.fold_x = test::max_abs_diff(xd[0], xd[1]) / test::max_abs(xd[0]);
  for (size_t i = 0; i < kBatch; ++i) {
    const std::vector<double> xi(x.begin() + i * d, x.begin() + (i + 1) * d);
    const test::NaiveResult nv = test::naive_encode(g, xi, label);
    const std::vector<float> zi(z[1].begin() + i * d, z[1].begin() + (i + 1) * d);
    r.naive_z =
        std::max(r.naive_z, test::max_abs_diff(zi, nv.z) / std::max(1.0, test::max_abs(nv.z)));
    r.naive_lp = std::max(r.naive_lp, test::rel_err(lp[1][i] - ld[1][i], nv.log_prior));
  }
  CHECK(r.x_err <= 1e-5);
  CHECK(r.z_err <= 1e-5);
  CHECK(r.fold_z <= 1e-5);
  CHECK(r.fold_lp <= 1e-5);
  CHECK(r.fold_x <= 1e-5);
  CHECK(r.naive_z <= 1e-5);
  CHECK(r.naive_lp <= 1e-5);
  return r;
}

std::vector<test::Variant> every_convention() {
  std::vector<test::Variant> vs;
  auto add = [&](auto edit) {
    test::Variant v;
    v.channels = 3;
    v.size = 8;
    v.depth = 2;
    v.hidden = 8;
    v.seed = 40 + vs.size();
    edit(v);
    vs.push_back(v);
  };
  for (ShiftScaleSplit s :
       {ShiftScaleSplit::ShiftScaleHalves, ShiftScaleSplit::ScaleShiftHalves,
        ShiftScaleSplit::ShiftScaleInterleaved, ShiftScaleSplit::ScaleShiftInterleaved})
    for (ScaleFunction f : {ScaleFunction::Sigmoid, ScaleFunction::Exp})
      add([&](test::Variant &v) {
        v.split = s;
        v.scale_fn = f;
      });
  add([](test::Variant &v) { v.form = AffineForm::ScaleThenShift; });
  add([](test::Variant &v) { v.conditioning = Half::Second; });
  add([](test::Variant &v) { v.padding = PaddingMode::Constant; });
  add([](test::Variant &v) {
    v.padding = PaddingMode::EdgeChannel;
    v.prior_padding = PaddingMode::EdgeChannel;
  });
  add([](test::Variant &v) { v.net_actnorm = true; });
  add([](test::Variant &v) { v.leaving = Half::First; });
  add([](test::Variant &v) { v.layout = PriorLayout::MeanLogstdInterleaved; });
  add([](test::Variant &v) { v.empty_split_prior = true; });
  add([](test::Variant &v) { v.top = TopPriorKind::StandardNormal; });
  add([](test::Variant &v) { v.squeeze = SqueezeOrder::SubpixelMajor; });
  add([](test::Variant &v) { v.classes = 4; });
  add([](test::Variant &v) {
    v.n_bits = 5;
    v.levels = 3;
    v.channels = 1;
  });
  return vs;
}

RealNvpConfig small_realnvp(int64_t channels, int64_t h, int64_t w, uint64_t seed) {
  RealNvpConfig cfg;
  cfg.channels = channels;
  cfg.height = h;
  cfg.width = w;
  cfg.scales = 2;
  cfg.hidden = 8;
  cfg.checkerboard = cfg.channelwise = cfg.final_checkerboard = 2;
  cfg.random_nets = true;
  cfg.seed = seed;
  return cfg;
}

NiceConfig small_nice(int64_t channels, int64_t h, int64_t w, uint64_t seed) {
  NiceConfig cfg;
  cfg.channels = channels;
  cfg.height = h;
  cfg.width = w;
  cfg.couplings = 4;
  cfg.hidden = 16;
  cfg.hidden_layers = 2;
  cfg.random_nets = true;
  cfg.seed = seed;
  return cfg;
}

// A graph with every format 1.1 option that the builders do not use: checkerboard couplings
// that are additive, without the mask channel or with a sigmoid or exp scale, and a tanh channel
// coupling, on 2x6x10 (odd 3x5 planes after the squeeze).
Graph format11_graph(uint64_t seed) {
  Rng rng(seed);
  std::vector<Layer> layers;
  layers.push_back(test::make_layer("logit", LogitLayer{0.1f}));
  auto checker = [&](const char *name, Half phase, bool mask, CouplingType type, int64_t c,
                     ScaleFunction fn) {
    CouplingLayer cp;
    cp.type = type;
    cp.conditioning = phase;
    cp.mask_channel = mask;
    const bool affine = type == CouplingType::Affine;
    cp.net = test::rand_coupling_net(rng, c + (mask ? 1 : 0), 6, affine ? 2 * c : c,
                                     PaddingMode::Zeros, false, 1.0);
    cp.split = ShiftScaleSplit::ScaleShiftInterleaved;
    cp.scale_fn = fn;
    // An additive coupling keeps the default: files hold scale_bias for affine ones only.
    if (affine) cp.scale_bias = fn == ScaleFunction::Sigmoid ? 2.f : 0.f;
    cp.form = AffineForm::ShiftThenScale;
    if (affine && fn == ScaleFunction::Tanh)
      cp.scale_weight = test::rand_tensor(rng, {c}, 0.5, 1.5);
    layers.push_back(test::make_layer(name, cp));
  };
  checker("cb0", Half::CheckerboardEven, false, CouplingType::Additive, 2, ScaleFunction::Exp);
  checker("cb1", Half::CheckerboardOdd, true, CouplingType::Affine, 2, ScaleFunction::Sigmoid);
  layers.push_back(test::make_layer("squeeze", SqueezeLayer{SqueezeOrder::ChannelMajor}));
  checker("cb2", Half::CheckerboardOdd, false, CouplingType::Affine, 8, ScaleFunction::Exp);
  CouplingLayer ch;
  ch.type = CouplingType::Affine;
  ch.conditioning = Half::Second;
  ch.net = test::rand_coupling_net(rng, 4, 6, 8, PaddingMode::Zeros, false, 1.0);
  ch.split = ShiftScaleSplit::ShiftScaleHalves;
  ch.scale_fn = ScaleFunction::Tanh;
  ch.scale_bias = 0.f;
  ch.form = AffineForm::ScaleThenShift;
  ch.scale_weight = test::rand_tensor(rng, {4}, -1.0, 1.0);
  layers.push_back(test::make_layer("tanh", ch));
  checker("cb3", Half::CheckerboardEven, true, CouplingType::Affine, 8, ScaleFunction::Tanh);
  return test::graph_of({2, 6, 10, 8}, std::move(layers));
}

// The format 1.1 fields of two graphs' layers are the same (a batch norm reads back as the
// actnorm it is written as).
void check_same_layers(const Graph &a, const Graph &b) {
  REQUIRE(a.layers.size() == b.layers.size());
  for (size_t i = 0; i < a.layers.size(); ++i) {
    const Layer &la = a.layers[i], &lb = b.layers[i];
    INFO("layer " << i << " '" << la.name << "'");
    CHECK(la.name == lb.name);
    CHECK(la.in == lb.in);
    CHECK(la.out == lb.out);
    if (auto *bn = std::get_if<BatchNormLayer>(&la.op)) {
      const auto *an = std::get_if<ActNormLayer>(&lb.op);
      REQUIRE(an);
      const ActNormLayer want = bn->as_actnorm();
      CHECK(an->scale.to_vector() == want.scale.to_vector());
      CHECK(an->bias.to_vector() == want.bias.to_vector());
      continue;
    }
    CHECK(std::string(layer_kind_name(la.op)) == layer_kind_name(lb.op));
    if (auto *ca = std::get_if<CouplingLayer>(&la.op)) {
      const auto &cb = std::get<CouplingLayer>(lb.op);
      CHECK(ca->type == cb.type);
      CHECK(ca->conditioning == cb.conditioning);
      CHECK(ca->mask_channel == cb.mask_channel);
      CHECK(ca->net.in_channels == cb.net.in_channels);
      // The nets' op sequence, residual connections included.
      REQUIRE(ca->net.ops.size() == cb.net.ops.size());
      for (size_t k = 0; k < ca->net.ops.size(); ++k) {
        CHECK(ca->net.ops[k].index() == cb.net.ops[k].index());
        if (auto *r = std::get_if<ResidualAddOp>(&ca->net.ops[k]))
          CHECK(r->from == std::get<ResidualAddOp>(cb.net.ops[k]).from);
      }
      if (ca->type == CouplingType::Affine) {
        CHECK(ca->split == cb.split);
        CHECK(ca->scale_fn == cb.scale_fn);
        CHECK(ca->form == cb.form);
        CHECK(ca->scale_bias == cb.scale_bias);
        CHECK(ca->scale_weight.to_vector() == cb.scale_weight.to_vector());
      }
    }
    if (auto *ga = std::get_if<LogitLayer>(&la.op))
      CHECK(ga->alpha == std::get<LogitLayer>(lb.op).alpha);
  }
}

TEST_SUITE("model_roundtrip") {
  TEST_CASE("round trips in float for every permutation and coupling kind, fold on and off") {
    RoundTrip all;
    int n = 0;
    for (Permutation p :
         {Permutation::LU, Permutation::Dense, Permutation::Reverse, Permutation::Shuffle})
      for (CouplingType c : {CouplingType::Affine, CouplingType::Additive}) {
        INFO("permutation " << static_cast<int>(p) << ", coupling " << static_cast<int>(c));
        GlowConfig cfg;
        cfg.channels = 3;
        cfg.height = cfg.width = 8;
        cfg.levels = 2;
        cfg.depth = 2;
        cfg.hidden = 8;
        cfg.permutation = p;
        cfg.coupling = c;
        cfg.random_nets = true;
        cfg.seed = 90 + n;
        all.merge(round_trip(build_glow(cfg), 100 + n++));
      }
    MESSAGE("build_glow variants (" << n << "): " << all.report());
  }

  TEST_CASE("round trips in float for every convention of the format, fold on and off") {
    RoundTrip all;
    const std::vector<test::Variant> vs = every_convention();
    for (size_t i = 0; i < vs.size(); ++i) {
      INFO("convention variant " << i);
      all.merge(round_trip(test::variant_graph(vs[i]), 200 + i, vs[i].classes ? 3 : -1));
    }
    MESSAGE("convention variants (" << vs.size() << "): " << all.report());
  }

  TEST_CASE("decode_noise draws every level from its prior: z = mean + T std eps") {
    double worst = 0;
    const std::vector<test::Variant> vs = every_convention();
    for (size_t i = 0; i < vs.size(); ++i) {
      INFO("convention variant " << i);
      const Graph g = test::variant_graph(vs[i]);
      const size_t d = static_cast<size_t>(g.dims());
      const int label = vs[i].classes ? 1 : -1;
      RefExecutor<float> ex(g, 1, 1, true);
      Rng rng(300 + i);
      std::vector<float> eps(d), x(d);
      for (float &e : eps) e = static_cast<float>(rng.normal());
      for (float temperature : {0.f, 0.7f, 1.f}) {
        INFO("temperature " << temperature);
        const std::vector<int32_t> labels{label};
        ex.decode(1, eps.data(), true, temperature, label >= 0 ? labels.data() : nullptr, x.data());
        const test::NaiveResult nv =
            test::naive_encode(g, std::vector<double>(x.begin(), x.end()), label);
        double err = 0;
        for (size_t k = 0; k < d; ++k) {
          const double expect = nv.mean[k] + temperature * std::exp(nv.log_std[k]) * eps[k];
          err = std::max(err, std::fabs(nv.z[k] - expect) / std::max(1.0, std::fabs(expect)));
        }
        CHECK(err <= 1e-4);
        worst = std::max(worst, err);
      }
    }
    MESSAGE("decode_noise: max |z - (mean + T std eps)| (relative) = " << worst);
  }

  TEST_CASE("RealNVP, NICE and every format 1.1 option round trip in float, fold on and off") {
    RoundTrip all;
    std::vector<std::pair<std::string, Graph>> graphs;
    graphs.emplace_back("realnvp 1x8x8", build_realnvp(small_realnvp(1, 8, 8, 1)));
    graphs.emplace_back("realnvp 3x8x8", build_realnvp(small_realnvp(3, 8, 8, 2)));
    graphs.emplace_back("realnvp 3x6x10", build_realnvp(small_realnvp(3, 6, 10, 3)));
    RealNvpConfig plain = small_realnvp(1, 6, 10, 4);
    plain.mask_channel = plain.batchnorm = false;
    plain.logit_alpha = 0.f;
    graphs.emplace_back("realnvp 1x6x10, no mask, batch norm or logit", build_realnvp(plain));
    graphs.emplace_back("nice 1x4x4", build_nice(small_nice(1, 4, 4, 5)));
    graphs.emplace_back("nice 3x6x10", build_nice(small_nice(3, 6, 10, 6)));
    graphs.emplace_back("format 1.1 options", format11_graph(7));
    for (size_t i = 0; i < graphs.size(); ++i) {
      INFO(graphs[i].first);
      all.merge(round_trip(graphs[i].second, 500 + i));
    }
    MESSAGE("RealNVP, NICE, format 1.1 (" << graphs.size() << " models): " << all.report());
  }

  TEST_CASE("the new layers and fields survive write -> read, and the model computes the same") {
    RealNvpConfig plain_nets = small_realnvp(3, 8, 8, 14);
    plain_nets.res_blocks = 0;
    // RealNVP's residual nets need format 1.2, the rest of format 1.1's layers 1.1.
    std::vector<std::pair<Graph, int>> graphs = {{build_realnvp(small_realnvp(3, 8, 8, 11)), 2},
                                                 {build_realnvp(plain_nets), 1},
                                                 {build_nice(small_nice(1, 4, 4, 12)), 1},
                                                 {format11_graph(13), 1}};
    for (size_t i = 0; i < graphs.size(); ++i) {
      INFO("graph " << i);
      const Graph &g = graphs[i].first;
      const int minor = graphs[i].second;
      CHECK(g.required_format_minor() == minor);
      const std::vector<uint8_t> bytes = write_flow(g);
      const Graph back = read_flow(copy_model_bytes(bytes.data(), bytes.size()));
      CHECK(back.format_minor == minor);
      check_same_layers(g, back);
      CHECK(write_flow(back) == bytes);
      // The same latents and log-densities, bit for bit.
      const size_t d = static_cast<size_t>(g.dims());
      const std::vector<float> x = Rng(600 + i).floats(2 * d, -0.5, 0.5);
      std::vector<float> za(2 * d), zb(2 * d);
      std::vector<double> la(2), lb(2);
      RefExecutor<float>(g, 2, 1, true).encode(2, x.data(), nullptr, za.data(), la.data(), nullptr);
      RefExecutor<float>(back, 2, 1, true)
          .encode(2, x.data(), nullptr, zb.data(), lb.data(), nullptr);
      CHECK(za == zb);
      CHECK(la == lb);
    }
    // A Glow model needs none of it and stays a 1.0 file.
    GlowConfig cfg;
    cfg.channels = 1;
    cfg.height = cfg.width = 8;
    cfg.levels = 2;
    cfg.depth = 1;
    cfg.hidden = 4;
    const Graph glow = build_glow(cfg);
    CHECK(glow.required_format_minor() == 0);
    const std::vector<uint8_t> bytes = write_flow(glow);
    CHECK(read_flow(copy_model_bytes(bytes.data(), bytes.size())).format_minor == 0);
  }
}

}  // namespace
}  // namespace flowrt
