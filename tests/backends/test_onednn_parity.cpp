// The oneDNN backend against the reference backend on random models covering every option of
// the format (Glow, RealNVP and NICE layers): latents, log-densities, decoded images, samples, and
// independence from the batch size. Tiny shapes keep the whole file fast. Where the CPU has bf16
// units, every parity model runs in bf16 too, held to bf16's error bounds against the reference.
#include <doctest/doctest.h>

#ifdef FLOWRT_HAVE_ONEDNN

#include <algorithm>
#include <cmath>
#include <cstdlib>
#include <functional>
#include <memory>
#include <random>
#include <string>
#include <vector>

#include "backends/backend.hpp"
#include "backends/onednn/onednn_backend.hpp"
#include "backends/onednn/onednn_compat.hpp"
#include "backends/onednn/onednn_elementwise.hpp"
#include "backends/parity_check.hpp"
#include "core/error.hpp"
#include "model/finalize.hpp"
#include "model/glow_builder.hpp"
#include "model/nice_builder.hpp"
#include "model/realnvp_builder.hpp"
#include "session/session.hpp"
#include "test_support.hpp"

namespace flowrt {
namespace {

GlowConfig small_config(uint64_t seed, bool grey = false) {
  GlowConfig c;
  if (grey) {
    c.channels = 1, c.height = 16, c.width = 16, c.levels = 3, c.hidden = 32;
  } else {
    c.channels = 3, c.height = 8, c.width = 8, c.levels = 2, c.hidden = 16;
  }
  c.depth = 2;
  c.seed = seed;
  c.random_nets = true;
  return c;
}

// RealNVP's layers at a tiny size: logit, checkerboard and channel couplings with tanh scales,
// batch norms (actnorms in files), two scales.
RealNvpConfig small_realnvp(uint64_t seed, int64_t channels = 1, int64_t h = 8, int64_t w = 8) {
  RealNvpConfig c;
  c.channels = channels, c.height = h, c.width = w;
  c.scales = 2, c.hidden = 8, c.checkerboard = 2, c.channelwise = 2, c.final_checkerboard = 2;
  c.seed = seed;
  c.random_nets = true;
  return c;
}

// NICE at a tiny size: flatten, permutes, additive couplings with deep 1x1 nets at 1x1.
NiceConfig small_nice(uint64_t seed, int64_t channels = 1) {
  NiceConfig c;
  c.channels = channels, c.height = 4, c.width = 4;
  c.couplings = 4, c.hidden = 16, c.hidden_layers = 2;
  c.seed = seed;
  c.random_nets = true;
  return c;
}

using parity::check_pixels;
using parity::max_abs;
using parity::max_diff;

std::vector<float> random_floats(size_t n, uint32_t seed, float lo, float hi) {
  return parity::uniform(n, seed, lo, hi);
}

Tensor random_tensor(std::vector<int64_t> shape, uint32_t seed, float scale) {
  size_t n = 1;
  for (int64_t d : shape) n *= static_cast<size_t>(d);
  return Tensor::from_vector(std::move(shape), random_floats(n, seed, -scale, scale));
}

// Applies `edit` to every coupling layer and every split layer of a graph, then re-finalizes.
Graph edited(const GlowConfig &cfg, const std::function<void(Layer &, size_t)> &edit) {
  Graph g = build_glow(cfg);
  for (size_t i = 0; i < g.layers.size(); ++i) edit(g.layers[i], i);
  finalize_graph(g);
  return g;
}

// bf16 against the reference (fp32): bits/dim per image within 0.02, the bf16 x->z->x round
// trip within 2e-4 on average with 99.5 % of the pixels unchanged, and samples at T=0.7 (the
// same noise) with at most 1 % of pixels off by more than one level.
void check_bf16(const Graph &g, size_t n, bool fold, uint32_t seed) {
  const int64_t d = g.dims();
  const size_t total = n * static_cast<size_t>(d);
  const int bits = g.image.n_bits;
  BackendOptions o;
  o.max_batch = n;
  o.threads = 2;
  o.fold = fold;
  auto ref = create_ref_backend(g, o);
  o.precision = FLOWRT_PRECISION_BF16;
  auto dnn = create_onednn_backend(g, o);
  std::vector<float> x = random_floats(total, seed, -0.5f, 0.5f);
  for (float &v : x) v = pixel_to_x(x_to_pixel(v, bits), bits);  // bin centres
  std::vector<int32_t> labels(n);
  const int64_t classes = g.top_prior().n_classes();
  for (size_t i = 0; i < n; ++i) labels[i] = classes ? static_cast<int32_t>(i % classes) : 0;
  const int32_t *lab = classes ? labels.data() : nullptr;
  std::vector<float> zr(total), zb(total), back(total);
  std::vector<double> lpr(n), lpb(n);
  ref->encode(n, x.data(), lab, zr.data(), lpr.data(), nullptr);
  dnn->encode(n, x.data(), lab, zb.data(), lpb.data(), nullptr);
  for (size_t i = 0; i < n; ++i)
    CHECK(std::fabs(lpr[i] - lpb[i]) / (static_cast<double>(d) * std::log(2.0)) <= 0.02);
  dnn->decode(n, zb.data(), back.data());
  double err = 0;
  size_t same = 0;
  for (size_t k = 0; k < total; ++k) {
    err += std::fabs(static_cast<double>(back[k]) - x[k]);
    same += x_to_pixel(back[k], bits) == x_to_pixel(x[k], bits);
  }
  CHECK(err / total <= 2e-4);
  CHECK(static_cast<double>(same) / total >= 0.995);
  const std::vector<float> eps = random_floats(total, seed + 1, -2.f, 2.f);
  std::vector<float> sr(total), sb(total);
  ref->decode_noise(n, eps.data(), 0.7f, lab, sr.data());
  dnn->decode_noise(n, eps.data(), 0.7f, lab, sb.data());
  size_t off = 0;
  for (size_t k = 0; k < total; ++k)
    off +=
        (std::abs(int{x_to_pixel(sr[k], bits)} - int{x_to_pixel(sb[k], bits)}) >> (8 - bits)) > 1;
  CHECK(static_cast<double>(off) / total <= 0.01);
}

// Encode, decode, decode_noise and sample against the reference backend; in bf16 too where the
// CPU has bf16 units.
void check_parity(const Graph &g, size_t n, bool fold = true, uint32_t seed = 7) {
  parity::check(g, n, create_onednn_backend, fold, seed);
  if (onednn::cpu_has_bf16()) check_bf16(g, n, fold, seed);
}

}  // namespace

TEST_CASE("onednn: residual connections in coupling nets and split priors") {
  // Sources at a ReLU's input, after an add, at a prior's own input; adds with a fused ReLU;
  // width 64 sends the last convs through the tap-matmul path. Folded and unfolded.
  for (const test::Variant &v : test::residual_variants()) {
    const Graph g = test::variant_graph(v);
    CAPTURE(v.channels);
    CAPTURE(v.hidden);
    check_parity(g, 1, true);
    check_parity(g, 3, false);
  }
}

TEST_CASE("onednn: standard Glow models match the reference") {
  for (uint64_t seed : {1u, 2u, 3u}) {
    CAPTURE(seed);
    GlowConfig c = small_config(seed);
    c.hidden = seed == 3 ? 64 : 16;  // 64: the last convs run as tap matmuls
    check_parity(build_glow(c), 3);
  }
  check_parity(build_glow(small_config(4, true)), 2);
}

TEST_CASE("onednn: permutations, couplings and squeeze orders") {
  for (Permutation perm :
       {Permutation::LU, Permutation::Dense, Permutation::Reverse, Permutation::Shuffle})
    for (CouplingType type : {CouplingType::Affine, CouplingType::Additive}) {
      GlowConfig c = small_config(11);
      c.permutation = perm;
      c.coupling = type;
      c.squeeze = perm == Permutation::Reverse || perm == Permutation::Dense
                      ? SqueezeOrder::SubpixelMajor
                      : SqueezeOrder::ChannelMajor;
      CAPTURE(static_cast<int>(perm));
      CAPTURE(static_cast<int>(type));
      check_parity(build_glow(c), 2);
    }
}

TEST_CASE("onednn: affine coupling conventions") {
  const ShiftScaleSplit splits[] = {
      ShiftScaleSplit::ShiftScaleHalves, ShiftScaleSplit::ScaleShiftHalves,
      ShiftScaleSplit::ShiftScaleInterleaved, ShiftScaleSplit::ScaleShiftInterleaved};
  int variant = 0;
  for (ShiftScaleSplit split : splits)
    for (ScaleFunction fn : {ScaleFunction::Sigmoid, ScaleFunction::Exp}) {
      const int v = variant++;
      Graph g = edited(small_config(20 + v), [&](Layer &l, size_t i) {
        auto *cp = std::get_if<CouplingLayer>(&l.op);
        if (!cp) return;
        cp->split = split;
        cp->scale_fn = fn;
        cp->scale_bias = fn == ScaleFunction::Exp ? 0.f : 2.f;
        cp->form = (v + i) % 2 ? AffineForm::ShiftThenScale : AffineForm::ScaleThenShift;
        cp->conditioning = (v + i / 3) % 2 ? Half::First : Half::Second;
      });
      CAPTURE(v);
      check_parity(g, 2);
    }
}

TEST_CASE("onednn: split conventions and priors") {
  for (int v = 0; v < 4; ++v) {
    Graph g = edited(small_config(30 + v, true), [&](Layer &l, size_t) {
      if (auto *sp = std::get_if<SplitLayer>(&l.op)) {
        sp->leaving = v % 2 ? Half::First : Half::Second;
        sp->layout = v / 2 ? PriorLayout::MeanLogstdInterleaved : PriorLayout::MeanLogstdHalves;
        if (v == 3) sp->prior = Net{};  // standard normal
      }
      if (auto *tp = std::get_if<TopPriorLayer>(&l.op); tp && v >= 2) {
        tp->kind = TopPriorKind::StandardNormal;
        tp->mean = Tensor();
        tp->log_std = Tensor();
      }
    });
    CAPTURE(v);
    check_parity(g, 2);
  }
}

TEST_CASE("onednn: padding modes, net actnorms and unfolded programs") {
  // Width 64 sends the last convs (few outputs, 64 inputs) through the tap-matmul path.
  for (int hidden : {16, 64}) {
    CAPTURE(hidden);
    GlowConfig cfg = small_config(40);
    cfg.hidden = hidden;
    uint32_t tseed = 100;
    Graph g = edited(cfg, [&](Layer &l, size_t i) {
      auto *cp = std::get_if<CouplingLayer>(&l.op);
      auto *sp = std::get_if<SplitLayer>(&l.op);
      Net *net = cp ? &cp->net : sp ? &sp->prior : nullptr;
      if (!net) return;
      std::vector<NetOp> ops;
      bool first = true;
      for (NetOp &op : net->ops) {
        auto *conv = std::get_if<Conv2dOp>(&op);
        if (!conv) {
          ops.push_back(op);
          continue;
        }
        const int64_t o = conv->out_channels(), in = conv->in_channels(), k = conv->kernel_h();
        Conv2dOp c = *conv;
        if (k == 3 && first) {  // Glow's edge channel on the first conv
          c.padding = PaddingMode::EdgeChannel;
          c.weight = random_tensor({o, in + 1, 3, 3}, tseed++, 0.2f);
        } else if (k == 3) {  // glow-pytorch's ZeroConv2d pads with ones
          c.padding = PaddingMode::Constant;
          c.pad_value = i % 2 ? 1.f : -0.5f;
          c.weight = random_tensor({o, in, 3, 3}, tseed++, 0.05f);
        }
        first = false;
        ops.push_back(c);
        if (cp && k == 3 && c.padding == PaddingMode::EdgeChannel) {
          // conv -> actnorm -> ReLU folds; ReLU -> actnorm -> ReLU stays element-wise.
          ops.push_back(
              NetActNormOp{random_tensor({o}, tseed++, 0.1f),
                           Tensor::from_vector({o}, random_floats(o, tseed++, 0.5f, 1.5f))});
        }
      }
      if (cp) {  // after the first ReLU: an actnorm and a second ReLU that cannot fold
        for (size_t k = 0; k < ops.size(); ++k)
          if (std::holds_alternative<ReluOp>(ops[k])) {
            const int64_t ch = std::get<Conv2dOp>(ops[0]).out_channels();
            ops.insert(
                ops.begin() + k + 1,
                {NetActNormOp{random_tensor({ch}, tseed++, 0.1f),
                              Tensor::from_vector({ch}, random_floats(ch, tseed++, 0.5f, 1.5f))},
                 ReluOp{}});
            break;
          }
      }
      net->ops = std::move(ops);
    });
    check_parity(g, 2, true);
    check_parity(g, 2, false);
  }
  check_parity(build_glow(small_config(41)), 2, false);
}

TEST_CASE("onednn: class-conditional top prior and fewer bits") {
  GlowConfig c = small_config(50);
  c.n_classes = 3;
  c.n_bits = 5;
  const Graph g = build_glow(c);
  check_parity(g, 3);

  // Through sessions: pixels in, bits/dim out, batches larger than max_batch.
  auto graph = std::make_shared<const Graph>(g);
  InferenceOptions ro, dno;
  ro.backend = FLOWRT_BACKEND_REF;
  dno.backend = FLOWRT_BACKEND_ONEDNN;
  ro.max_batch = dno.max_batch = 2;
  InferenceSession ref(graph, ro), dnn(graph, dno);
  const size_t n = 5, total = n * static_cast<size_t>(g.dims());
  std::vector<uint8_t> pixels(total);
  std::mt19937 rng(5);
  for (uint8_t &px : pixels) px = static_cast<uint8_t>(rng() & 0xff);
  const std::vector<int32_t> labels = {0, 1, 2, 1, 0};
  std::vector<double> br(n), bd(n);
  ref.encode_pixels(n, pixels.data(), labels.data(), nullptr, nullptr, br.data());
  dnn.encode_pixels(n, pixels.data(), labels.data(), nullptr, nullptr, bd.data());
  for (size_t i = 0; i < n; ++i) CHECK(std::fabs(br[i] - bd[i]) <= 1e-5);
  std::vector<uint8_t> sr(total), sd(total);
  std::vector<float> xr(total), xd(total);
  ref.sample(n, 0.8f, 9, labels.data(), xr.data(), sr.data());
  dnn.sample(n, 0.8f, 9, labels.data(), xd.data(), sd.data());
  check_pixels(xr, xd, c.n_bits);
}

TEST_CASE("onednn: RealNVP models match the reference") {
  // 6x10: the second scale's checkerboard runs on an odd 3x5 grid.
  int v = 0;
  for (int64_t channels : {1, 3})
    for (auto [h, w] : {std::pair<int64_t, int64_t>{8, 8}, {6, 10}})
      for (bool mask : {true, false}) {
        RealNvpConfig c = small_realnvp(80 + v, channels, h, w);
        c.mask_channel = mask;
        const Graph g = build_realnvp(c);
        CAPTURE(channels);
        CAPTURE(h);
        CAPTURE(w);
        CAPTURE(mask);
        check_parity(g, 1, v % 2 == 0);
        check_parity(g, 3, v % 2 != 0);
        ++v;
      }
  // Width 64: the nets' last convs (2C outputs) run as tap matmuls.
  RealNvpConfig c = small_realnvp(89, 3);
  c.hidden = 64;
  check_parity(build_realnvp(c), 2);
}

TEST_CASE("onednn: checkerboard and tanh coupling conventions") {
  // Every split, scale function and form on checkerboard couplings (both phases, with and
  // without the mask channel) and on the channel couplings between them, then additive ones.
  const ShiftScaleSplit splits[] = {
      ShiftScaleSplit::ShiftScaleHalves, ShiftScaleSplit::ScaleShiftHalves,
      ShiftScaleSplit::ShiftScaleInterleaved, ShiftScaleSplit::ScaleShiftInterleaved};
  std::vector<std::pair<ShiftScaleSplit, ScaleFunction>> variants;
  for (ShiftScaleSplit split : splits)
    for (ScaleFunction fn : {ScaleFunction::Sigmoid, ScaleFunction::Exp, ScaleFunction::Tanh})
      variants.emplace_back(split, fn);
  for (size_t v = 0; v <= variants.size(); ++v) {
    const bool additive = v == variants.size();
    RealNvpConfig c = small_realnvp(90 + v, v % 2 ? 3 : 1, 6, 10);
    c.final_checkerboard = 3;
    c.mask_channel = v % 3 != 0;
    Graph g = build_realnvp(c);
    uint32_t tseed = 200 + static_cast<uint32_t>(v) * 16;
    size_t i = 0;
    for (Layer &l : g.layers) {
      auto *cp = std::get_if<CouplingLayer>(&l.op);
      if (!cp) continue;
      const int64_t cb = cp->transformed_channels(l.in.c);
      if (additive) {
        cp->type = CouplingType::Additive;
        cp->scale_weight = Tensor();
        auto &last = std::get<Conv2dOp>(cp->net.ops.back());
        last.weight = random_tensor({cb, last.in_channels(), 3, 3}, tseed++, 0.05f);
        last.bias = random_tensor({cb}, tseed++, 0.05f);
        continue;
      }
      const auto [split, fn] = variants[v];
      cp->split = split;
      cp->scale_fn = fn;
      cp->form = (v + i++) % 2 ? AffineForm::ShiftThenScale : AffineForm::ScaleThenShift;
      cp->scale_bias = fn == ScaleFunction::Sigmoid ? 2.f : 0.3f;
      cp->scale_weight = fn == ScaleFunction::Tanh ? random_tensor({cb}, tseed++, 1.5f) : Tensor();
    }
    finalize_graph(g);
    CAPTURE(v);
    check_parity(g, 2, v % 2 == 0);
  }
}

TEST_CASE("onednn: logit and batch-norm options") {
  for (float alpha : {0.f, 0.01f, 0.2f})
    for (bool batchnorm : {true, false}) {
      RealNvpConfig c = small_realnvp(110, 3);
      c.logit_alpha = alpha;  // 0: no logit step
      c.batchnorm = batchnorm;
      CAPTURE(alpha);
      CAPTURE(batchnorm);
      check_parity(build_realnvp(c), 2);
    }
}

TEST_CASE("onednn: NICE models match the reference") {
  for (bool fold : {true, false})
    for (size_t n : {size_t{1}, size_t{4}}) {
      CAPTURE(fold);
      CAPTURE(n);
      check_parity(build_nice(small_nice(120)), n, fold);
    }
  NiceConfig c = small_nice(121, 3);
  c.hidden_layers = 1;
  check_parity(build_nice(c), 3);
}

TEST_CASE("onednn: a flatten inside the flow") {
  // RealNVP's last (6, 4, 4) tensor flattened to 96 channels, reversed, and coupled by a
  // fully-connected affine coupling before the top prior.
  Graph g = build_realnvp(small_realnvp(130, 3));
  Layer top = g.layers.back();
  g.layers.pop_back();
  const Shape3 last = g.layers.back().out;
  const int64_t d = last.numel(), cb = d / 2;
  REQUIRE(last.plane() > 1);
  REQUIRE(last.c > 1);
  auto add = [&](const std::string &name, LayerOp op) {
    Layer l;
    l.name = name;
    l.op = std::move(op);
    g.layers.push_back(std::move(l));
  };
  add("flatten", FlattenLayer{});
  add("reverse", PermuteLayer{PermuteKind::Reverse, {}, {}});
  CouplingLayer cp;
  cp.type = CouplingType::Affine;
  cp.conditioning = Half::Second;
  cp.scale_fn = ScaleFunction::Sigmoid;
  cp.net.ops.emplace_back(Conv2dOp{random_tensor({16, cb, 1, 1}, 131, 0.2f),
                                   random_tensor({16}, 132, 0.1f), PaddingMode::Zeros, 0.f});
  cp.net.ops.emplace_back(ReluOp{});
  cp.net.ops.emplace_back(Conv2dOp{random_tensor({d, 16, 1, 1}, 133, 0.2f),
                                   random_tensor({d}, 134, 0.1f), PaddingMode::Zeros, 0.f});
  add("dense", std::move(cp));
  g.layers.push_back(std::move(top));
  finalize_graph(g);
  check_parity(g, 1);
  check_parity(g, 3, false);
}

TEST_CASE("onednn: reshapes between NHWC layouts") {
  // Every NHWC view of one NCHW vector, against the definition.
  const std::vector<Shape3> shapes = {{4, 2, 3}, {2, 4, 3}, {3, 2, 4}, {24, 1, 1}, {1, 4, 6}};
  const size_t n = 3;
  std::vector<double> partial(n + 8);
  const onednn::Par par{2, partial.data()};
  const std::vector<float> v = random_floats(n * 24, 140, -1.f, 1.f);
  auto nhwc = [&](const Shape3 &s) {
    std::vector<float> out(v.size());
    for (size_t i = 0; i < n; ++i)
      for (int64_t c = 0; c < s.c; ++c)
        for (int64_t p = 0; p < s.plane(); ++p)
          out[i * 24 + p * s.c + c] = v[i * 24 + c * s.plane() + p];
    return out;
  };
  for (const Shape3 &from : shapes)
    for (const Shape3 &to : shapes) {
      CAPTURE(to_string(from));
      CAPTURE(to_string(to));
      const std::vector<float> src = nhwc(from);
      std::vector<float> dst(v.size());
      onednn::reshape(par, from, to, n, src.data(), dst.data());
      CHECK(dst == nhwc(to));
    }
}

TEST_CASE("onednn: results do not depend on the batch size") {
  const Graph graphs[] = {build_glow(small_config(60)), build_realnvp(small_realnvp(62, 3)),
                          build_nice(small_nice(63))};
  for (const Graph &g : graphs) {
    const int64_t d = g.dims();
    const size_t max_batch = 4;
    BackendOptions o;
    o.max_batch = max_batch;
    o.threads = 2;
    auto dnn = create_onednn_backend(g, o);
    const std::vector<float> x = random_floats(max_batch * d, 61, -0.5f, 0.5f);
    std::vector<float> z_all(max_batch * d), z_one(d);
    std::vector<double> lp_all(max_batch), lp_one(1);
    dnn->encode(max_batch, x.data(), nullptr, z_all.data(), lp_all.data(), nullptr);
    // Every batch size from 1 to max_batch (new sizes create their primitives at first use), twice.
    for (int round = 0; round < 2; ++round)
      for (size_t n = 1; n <= max_batch; ++n) {
        std::vector<float> z(n * d);
        std::vector<double> lp(n);
        dnn->encode(n, x.data(), nullptr, z.data(), lp.data(), nullptr);
        for (size_t i = 0; i < n; ++i) {
          CHECK(std::fabs(lp[i] - lp_all[i]) <= 1e-6 * std::fabs(lp_all[i]));
          for (int64_t k = 0; k < d; ++k)
            CHECK(std::fabs(z[i * d + k] - z_all[i * d + k]) <= 1e-5f);
        }
      }
    std::vector<float> scratch(max_batch * d), s_all(max_batch * d), s_one(d);
    dnn->sample(max_batch, 5, 0, 1.f, nullptr, scratch.data(), s_all.data());
    dnn->sample(1, 5, 2, 1.f, nullptr, scratch.data(), s_one.data());
    for (int64_t k = 0; k < d; ++k) CHECK(std::fabs(s_one[k] - s_all[2 * d + k]) <= 1e-5f);
  }
}

TEST_CASE("onednn: batches split into level-wise chunks match the reference") {
  // A budget of a few images' activations per chunk: level 1 runs in chunks of one or two
  // images, later levels take larger chunks.
  const Graph g = build_glow(small_config(65, true));
  const int64_t first_level = 32 * 8 * 8 * 4;  // hidden x plane x float
  for (int64_t images : {1, 2}) {
    const std::string budget = std::to_string(images * first_level);
    ::setenv("FLOWRT_ONEDNN_CHUNK_BYTES", budget.c_str(), 1);
    CAPTURE(images);
    check_parity(g, 5);
  }
  // RealNVP: checkerboard couplings on chunks of one or two 8x8 images.
  const Graph rnvp = build_realnvp(small_realnvp(66, 3));
  for (int64_t images : {1, 2}) {
    const std::string budget = std::to_string(images * 8 * 8 * 8 * 4);
    ::setenv("FLOWRT_ONEDNN_CHUNK_BYTES", budget.c_str(), 1);
    CAPTURE(images);
    check_parity(rnvp, 5);
  }
  ::unsetenv("FLOWRT_ONEDNN_CHUNK_BYTES");
}

TEST_CASE("onednn: every form of the 1x1 convs matches the reference") {
  // The probe picks per CPU (AVX2: convolutions over the pixel rows where the matmul repacks its
  // weights per call; AVX-512: matmuls or direct convolutions): each form forced, on every CPU.
  const Graph graphs[] = {build_glow(small_config(67)), build_realnvp(small_realnvp(68, 3)),
                          build_nice(small_nice(69))};
  const char *outer = std::getenv("FLOWRT_ONEDNN_1X1");  // the whole suite's, restored after
  const std::string saved = outer ? outer : "";
  for (const char *form : {"rows", "matmul", "conv"}) {
    ::setenv("FLOWRT_ONEDNN_1X1", form, 1);
    CAPTURE(form);
    for (const Graph &g : graphs) check_parity(g, 3);
  }
  if (outer)
    ::setenv("FLOWRT_ONEDNN_1X1", saved.c_str(), 1);
  else
    ::unsetenv("FLOWRT_ONEDNN_1X1");
}

// The family models at their real shapes: RealNVP on 1x28x28 (width 64; its nets' first convs
// read 2 to 5 channels, the mask included) and NICE's 392 -> 1000 -> 1000 -> 392 nets at 1x1.
Graph realnvp_mnist() {
  RealNvpConfig c;
  c.random_nets = true;
  return build_realnvp(c);
}
Graph nice_mnist() {
  NiceConfig c;
  c.hidden_layers = 2;
  c.random_nets = true;
  return build_nice(c);
}

TEST_CASE("onednn: hot primitives use optimised kernels") {
  GlowConfig c = small_config(70);
  c.height = c.width = 16;
  c.hidden = 64;
  BackendOptions o;
  o.max_batch = 16;
  struct Case {
    std::string name;
    Graph graph;
  };
  // FLOWRT_ONEDNN_1X1=conv (a test knob) forces oneDNN's blocked 1x1 convolutions, reorders and
  // all.
  const char *force = std::getenv("FLOWRT_ONEDNN_1X1");
  const bool forced_conv = force && std::string(force) == "conv";
  const Case cases[] = {
      {"glow", build_glow(c)}, {"realnvp", realnvp_mnist()}, {"nice", nice_mnist()}};
  for (const Case &m : cases) {
    auto dnn = create_onednn_backend(m.graph, o);
    for (size_t n : {size_t{1}, size_t{4}, size_t{16}}) {
      CAPTURE(m.name);
      CAPTURE(n);
      const std::vector<std::string> impls = onednn_primitive_impls(*dnn, n);
      CHECK(!impls.empty());
      for (const std::string &s : impls) {
        CAPTURE(s);
        CHECK(s.find("ref") == std::string::npos);
        // NICE's nets at 1x1 are matmuls over plain rows, batch by batch: nothing to reorder.
        if (m.name == "nice" && !forced_conv) CHECK(s.compare(0, 7, "reorder") != 0);
      }
    }
  }
}

TEST_CASE("onednn bf16: bf16 kernels, no reorders, one bf16 copy per weight") {
  // cifar's shapes (depth only repeats the same primitives), RealNVP's and NICE's.
  GlowConfig c = standard_architecture("cifar");
  c.depth = 2;
  c.random_nets = true;
  const Graph graphs[] = {build_glow(c), realnvp_mnist(), nice_mnist()};
  for (const Graph &g : graphs) {
    const std::string *arch = g.find_metadata("architecture");
    const std::string name = arch ? *arch : "glow";
    CAPTURE(name);
    BackendOptions o;
    o.max_batch = 4;
    o.precision = FLOWRT_PRECISION_BF16;
    if (!onednn::cpu_has_bf16()) {
      MESSAGE("skipped: no bf16 units (oneDNN ISA " << onednn::cpu_isa_name() << ")");
      try {
        create_onednn_backend(g, o);
        FAIL("bf16 was accepted without bf16 units");
      } catch (const Error &e) {
        CHECK(e.status() == FLOWRT_UNSUPPORTED);
        CHECK(std::string(e.what()).find(onednn::cpu_isa_name()) != std::string::npos);
      }
      continue;
    }
    auto dnn = create_onednn_backend(g, o);
    const bool amx = onednn::cpu_isa_name() == "avx512_core_amx";
    MESSAGE("oneDNN ISA " << onednn::cpu_isa_name());
    for (size_t n = 1; n <= o.max_batch; ++n) {
      const std::vector<std::string> impls = onednn_primitive_impls(*dnn, n);
      size_t net_prims = 0;
      for (const std::string &s : impls) {
        CAPTURE(s);
        CHECK(s.find("ref") == std::string::npos);
        CHECK(s.compare(0, 7, "reorder") != 0);      // a reorder would run on every call
        if (s.compare(0, 4, "conv") != 0) continue;  // the invertible 1x1 convs stay fp32
        ++net_prims;
        CHECK(s.find(amx ? "amx" : "bf16") != std::string::npos);
      }
      CHECK(net_prims > 0);
    }
    // The bf16 copies replace the fp32 ones: half the nets' bytes, nothing in a second layout.
    o.precision = FLOWRT_PRECISION_FP32;
    auto f32 = create_onednn_backend(g, o);
    for (size_t n = 1; n <= o.max_batch; ++n) onednn_primitive_impls(*f32, n);
    const OnednnWeightBytes wb = onednn_weight_bytes(*dnn), wf = onednn_weight_bytes(*f32);
    MESSAGE("weights: bf16 " << wb.prepared << " bytes, fp32 " << wf.prepared << " prepared + "
                             << wf.mapped << " read in place");
    CHECK(wb.extra == 0);
    CHECK(wb.mapped == 0);
    CHECK(wb.prepared <= 0.55 * static_cast<double>(wf.prepared + wf.mapped));
    CHECK(wb.prepared >= 0.45 * static_cast<double>(wf.prepared + wf.mapped));
  }
}

}  // namespace flowrt

#else

TEST_CASE("onednn: parity with the reference backend") {
  MESSAGE("skipped: the oneDNN backend is not built");
}

#endif
