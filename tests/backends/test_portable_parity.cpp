// The portable backend against the reference backend on random models covering every option of
// the format (as test_onednn_parity.cpp does for oneDNN): latents, log-densities, decoded images,
// samples, independence from the batch size and the thread count, level-wise groups of images,
// each set of kernels this CPU runs, shapes that leave partial register tiles and several cache
// blocks, one packed copy of the weights, and the latent-term C API on a portable session.
#include <doctest/doctest.h>

#include <algorithm>
#include <cmath>
#include <cstdlib>
#include <functional>
#include <memory>
#include <random>
#include <string>
#include <vector>

#include "backends/backend.hpp"
#include "backends/backend_registry.hpp"
#include "backends/parity_check.hpp"
#include "backends/portable/portable_backend.hpp"
#include "backends/portable/portable_gemm.hpp"
#include "core/error.hpp"
#include "format/flow_file.hpp"
#include "layers/conv2d.hpp"
#include "model/finalize.hpp"
#include "model/glow_builder.hpp"
#include "model/nice_builder.hpp"
#include "model/program.hpp"
#include "model/realnvp_builder.hpp"
#include "session/session.hpp"
#include "test_support.hpp"

namespace flowrt {
namespace {

using parity::check_pixels;
using parity::max_abs;
using parity::max_diff;

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

std::vector<float> random_floats(size_t n, uint32_t seed, float lo, float hi) {
  return parity::uniform(n, seed, lo, hi);
}

Tensor random_tensor(std::vector<int64_t> shape, uint32_t seed, float scale) {
  size_t n = 1;
  for (int64_t d : shape) n *= static_cast<size_t>(d);
  return Tensor::from_vector(std::move(shape), random_floats(n, seed, -scale, scale));
}

Graph edited(const GlowConfig &cfg, const std::function<void(Layer &, size_t)> &edit) {
  Graph g = build_glow(cfg);
  for (size_t i = 0; i < g.layers.size(); ++i) edit(g.layers[i], i);
  finalize_graph(g);
  return g;
}

// Sets an environment variable for the lifetime of the object.
class ScopedEnv {
 public:
  ScopedEnv(const char *name, const std::string &value) : name_(name) {
    if (const char *old = std::getenv(name)) had_ = true, old_ = old;
    ::setenv(name, value.c_str(), 1);
  }
  ~ScopedEnv() {
    if (had_)
      ::setenv(name_, old_.c_str(), 1);
    else
      ::unsetenv(name_);
  }

 private:
  const char *name_;
  bool had_ = false;
  std::string old_;
};

// The portable backend with `threads` threads (parity::check asks for 2).
parity::BackendFactory portable_with(int threads) {
  return [threads](const Graph &g, const BackendOptions &o) {
    BackendOptions p = o;
    p.threads = threads;
    return create_portable_backend(g, p);
  };
}

// Encode, decode, decode_noise and sample against the reference, on 1 and 2 threads.
void check_parity(const Graph &g, size_t n, bool fold = true, uint32_t seed = 7) {
  for (int threads : {1, 2}) {
    CAPTURE(threads);
    parity::check(g, n, portable_with(threads), fold, seed);
  }
}

RealNvpConfig realnvp_config(int64_t channels, int64_t h, int64_t w, uint64_t seed) {
  RealNvpConfig c;
  c.channels = channels, c.height = h, c.width = w;
  c.scales = 2;
  c.hidden = 16;
  c.checkerboard = c.channelwise = c.final_checkerboard = 2;
  c.random_nets = true;
  c.seed = seed;
  return c;
}

NiceConfig nice_config(int64_t channels, int64_t h, int64_t w, int hidden, uint64_t seed) {
  NiceConfig c;
  c.channels = channels, c.height = h, c.width = w;
  c.couplings = 4;
  c.hidden = hidden;
  c.hidden_layers = 2;
  c.random_nets = true;
  c.seed = seed;
  return c;
}

}  // namespace

TEST_CASE("portable: the backend is built in, available, and named") {
  CHECK(std::string(flowrt_backend_name(FLOWRT_BACKEND_PORTABLE)) == "portable");
  CHECK(flowrt_backend_available(FLOWRT_BACKEND_PORTABLE) == 1);
  const BackendProbe p = probe_backend(FLOWRT_BACKEND_PORTABLE);
  CHECK(p.available);
  CHECK(p.source == "built in");
  CHECK(p.description.find(portable_default_kernels()) != std::string::npos);
  // AUTO runs it where neither CUDA nor oneDNN can run.
  if (!probe_backend(FLOWRT_BACKEND_CUDA).available &&
      !probe_backend(FLOWRT_BACKEND_ONEDNN).available)
    CHECK(resolve_auto_backend() == FLOWRT_BACKEND_PORTABLE);
  GlowConfig c = small_config(1);
  const Graph g = build_glow(c);
  BackendOptions o;
  o.max_batch = 2;
  auto b = create_backend(FLOWRT_BACKEND_PORTABLE, g, o);
  CHECK(b->kind() == FLOWRT_BACKEND_PORTABLE);
  CHECK(!b->kernels(1).empty());
  for (flowrt_precision p : {FLOWRT_PRECISION_TF32, FLOWRT_PRECISION_BF16, FLOWRT_PRECISION_FP16}) {
    o.precision = p;
    try {
      create_backend(FLOWRT_BACKEND_PORTABLE, g, o);
      FAIL("a reduced precision was accepted");
    } catch (const Error &e) {
      CHECK(e.status() == FLOWRT_UNSUPPORTED);
      CHECK(std::string(e.what()).find("portable backend") != std::string::npos);
    }
  }
}

TEST_CASE("portable: residual connections in coupling nets and split priors") {
  // Sources at a ReLU's input, after an add, at a prior's own input; adds with a fused ReLU;
  // width 64 sends the last convs through the multi-block K path. Folded and unfolded.
  for (const test::Variant &v : test::residual_variants()) {
    const Graph g = test::variant_graph(v);
    CAPTURE(v.channels);
    CAPTURE(v.hidden);
    check_parity(g, 1, true);
    check_parity(g, 3, false);
  }
}

TEST_CASE("portable: standard Glow models match the reference") {
  for (uint64_t seed : {1u, 2u, 3u}) {
    CAPTURE(seed);
    GlowConfig c = small_config(seed);
    c.hidden = seed == 3 ? 64 : 16;  // 64: K = 576 spans three K blocks of the last conv
    check_parity(build_glow(c), 3);
  }
  check_parity(build_glow(small_config(4, true)), 2);
}

TEST_CASE("portable: odd shapes leave partial tiles and span several cache blocks") {
  // 12x12 RGB: planes of 36 and 9 pixels (no panel boundary falls on an image boundary), 20
  // hidden channels (a partial A panel for every tile width), and a batch of 7.
  GlowConfig c = small_config(5);
  c.height = c.width = 12;
  c.hidden = 20;
  check_parity(build_glow(c), 7);
  // 32x32: a level of 16x16 pixels; 3 images are 768 pixels, more than one N block, and 3x3
  // convs over 96 channels have K = 864, four K blocks.
  GlowConfig t = small_config(6);
  t.height = t.width = 32;
  t.hidden = 96;
  t.depth = 1;
  check_parity(build_glow(t), 3);
}

TEST_CASE("portable: permutations, couplings and squeeze orders") {
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

TEST_CASE("portable: affine coupling conventions") {
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

TEST_CASE("portable: split conventions and priors") {
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

TEST_CASE("portable: padding modes, net actnorms and unfolded programs") {
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
        } else if (k == 1 && i % 2) {  // a 1x1 conv with an edge channel: it never sees it
          c.padding = PaddingMode::EdgeChannel;
          c.weight = random_tensor({o, in + 1, 1, 1}, tseed++, 0.1f);
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

TEST_CASE("portable: other kernel shapes, kernels wider than the image, element-wise first ops") {
  // 8x8 RGB, 2 levels: the second level is 2x2, narrower than a 5x5 or 7x1 kernel; a 7x7
  // kernel reaches 3 columns beyond it (the reference's own padding loops once ran past the row).
  const int64_t shapes[][2] = {{5, 5}, {1, 3}, {3, 1}, {7, 1}, {3, 5}, {7, 7}};
  for (const auto &shape : shapes) {
    const int64_t kh = shape[0], kw = shape[1];
    CAPTURE(kh);
    CAPTURE(kw);
    uint32_t tseed = 200;
    Graph g = edited(small_config(45), [&](Layer &l, size_t i) {
      auto *cp = std::get_if<CouplingLayer>(&l.op);
      auto *sp = std::get_if<SplitLayer>(&l.op);
      Net *net = cp ? &cp->net : sp ? &sp->prior : nullptr;
      if (!net) return;
      for (NetOp &op : net->ops) {
        auto *conv = std::get_if<Conv2dOp>(&op);
        if (!conv || conv->kernel_h() != 3) continue;
        const int64_t o = conv->out_channels(), in = conv->weight.dim(1);
        conv->weight = random_tensor({o, in, kh, kw}, tseed++, 0.1f);
      }
      if (cp && i % 2) {  // an actnorm before the first conv: element-wise on the net's input
        const int64_t ch = net->in_channels;
        net->ops.insert(
            net->ops.begin(),
            NetActNormOp{random_tensor({ch}, tseed++, 0.1f),
                         Tensor::from_vector({ch}, random_floats(ch, tseed++, 0.5f, 1.5f))});
      }
    });
    check_parity(g, 3);
    check_parity(g, 2, false);
  }
}

TEST_CASE("portable: class-conditional top prior and fewer bits") {
  GlowConfig c = small_config(50);
  c.n_classes = 3;
  c.n_bits = 5;
  const Graph g = build_glow(c);
  check_parity(g, 3);

  // Through sessions: pixels in, bits/dim out, batches larger than max_batch.
  auto graph = std::make_shared<const Graph>(g);
  InferenceOptions ro, po;
  ro.backend = FLOWRT_BACKEND_REF;
  po.backend = FLOWRT_BACKEND_PORTABLE;
  ro.max_batch = po.max_batch = 2;
  InferenceSession ref(graph, ro), por(graph, po);
  const size_t n = 5, total = n * static_cast<size_t>(g.dims());
  std::vector<uint8_t> pixels(total);
  std::mt19937 rng(5);
  for (uint8_t &px : pixels) px = static_cast<uint8_t>(rng() & 0xff);
  const std::vector<int32_t> labels = {0, 1, 2, 1, 0};
  std::vector<double> br(n), bp(n);
  ref.encode_pixels(n, pixels.data(), labels.data(), nullptr, nullptr, br.data());
  por.encode_pixels(n, pixels.data(), labels.data(), nullptr, nullptr, bp.data());
  for (size_t i = 0; i < n; ++i) CHECK(std::fabs(br[i] - bp[i]) <= 1e-5);
  std::vector<uint8_t> sr(total), sp(total);
  std::vector<float> xr(total), xp(total);
  ref.sample(n, 0.8f, 9, labels.data(), xr.data(), sr.data());
  por.sample(n, 0.8f, 9, labels.data(), xp.data(), sp.data());
  check_pixels(xr, xp, c.n_bits);
}

TEST_CASE("portable: RealNVP models match the reference, fold on and off, several batch sizes") {
  // 6x10 and 10x6: odd 3x5 and 5x3 planes after the squeeze, so the checkerboard's rows start on
  // alternating phases and no row is a whole number of checks.
  struct Shape {
    int64_t c, h, w;
  };
  const Shape shapes[] = {{3, 8, 8}, {1, 6, 10}, {3, 10, 6}};
  uint64_t seed = 90;
  for (const Shape &s : shapes)
    for (bool variant : {false, true}) {
      RealNvpConfig cfg = realnvp_config(s.c, s.h, s.w, seed++);
      if (variant) {  // no mask channel, no batch norm, no logit
        cfg.mask_channel = cfg.batchnorm = false;
        cfg.logit_alpha = 0.f;
      }
      const Graph g = build_realnvp(cfg);
      CAPTURE(s.c);
      CAPTURE(s.h);
      CAPTURE(s.w);
      CAPTURE(variant);
      for (size_t n : {1, 3, 5}) {
        CAPTURE(n);
        check_parity(g, n, true);
        check_parity(g, n, false);
      }
    }
}

TEST_CASE("portable: RealNVP in level-wise groups and on every kernel set") {
  const Graph g = build_realnvp(realnvp_config(3, 6, 10, 95));
  // One image's first-level activation per group: the nets' outputs have the group's channel
  // stride, which the checkerboard arithmetic reads them through.
  const int64_t first_level = 2 * 16 * 6 * 10 * 4;
  for (int64_t images : {1, 2}) {
    ScopedEnv env("FLOWRT_PORTABLE_CHUNK_BYTES", std::to_string(images * first_level));
    CAPTURE(images);
    check_parity(g, 5);
  }
  for (const portable::Kernels *k : portable::available_kernels()) {
    CAPTURE(std::string(k->name));
    ScopedEnv env("FLOWRT_PORTABLE_ISA", k->name);
    check_parity(g, 3);
  }
}

TEST_CASE("portable: NICE models (1x1 convolutions on the flattened image) match the reference") {
  for (bool fold : {true, false}) {
    CAPTURE(fold);
    for (size_t n : {1, 2, 5}) {
      CAPTURE(n);
      check_parity(build_nice(nice_config(1, 4, 4, 16, 100)), n, fold);
      check_parity(build_nice(nice_config(3, 6, 10, 24, 101)), n, fold);
    }
  }
  // NICE's own shape: 784 values at 1x1, nets 392 -> 256 -> 256 -> 392.
  check_parity(build_nice(nice_config(1, 28, 28, 256, 102)), 3);
}

TEST_CASE("portable: results do not depend on the batch size or the thread count") {
  const Graph g = build_glow(small_config(60));
  const int64_t d = g.dims();
  const size_t max_batch = 5;
  const std::vector<float> x = random_floats(max_batch * d, 61, -0.5f, 0.5f);
  std::vector<float> z_all(max_batch * d);
  std::vector<double> lp_all(max_batch);
  BackendOptions o;
  o.max_batch = max_batch;
  o.threads = 1;
  create_portable_backend(g, o)->encode(max_batch, x.data(), nullptr, z_all.data(), lp_all.data(),
                                        nullptr);
  for (int threads : {1, 2}) {
    CAPTURE(threads);
    o.threads = threads;
    auto b = create_portable_backend(g, o);
    for (int round = 0; round < 2; ++round)
      for (size_t n = 1; n <= max_batch; ++n) {
        CAPTURE(n);
        std::vector<float> z(n * d);
        std::vector<double> lp(n);
        b->encode(n, x.data(), nullptr, z.data(), lp.data(), nullptr);
        for (size_t i = 0; i < n; ++i) {
          CHECK(std::fabs(lp[i] - lp_all[i]) <= 1e-6 * std::fabs(lp_all[i]));
          for (int64_t k = 0; k < d; ++k)
            CHECK(std::fabs(z[i * d + k] - z_all[i * d + k]) <= 1e-5f);
        }
      }
    std::vector<float> scratch(max_batch * d), s_all(max_batch * d), s_one(d);
    b->sample(max_batch, 5, 0, 1.f, nullptr, scratch.data(), s_all.data());
    b->sample(1, 5, 2, 1.f, nullptr, scratch.data(), s_one.data());
    for (int64_t k = 0; k < d; ++k) CHECK(std::fabs(s_one[k] - s_all[2 * d + k]) <= 1e-5f);
  }
}

TEST_CASE("portable: batches split into level-wise groups match the reference") {
  // A budget of one or two images' first-level activations per group: level 1 runs in groups
  // of one or two images, later levels in larger ones.
  const Graph g = build_glow(small_config(65, true));
  const int64_t first_level = 2 * 32 * 8 * 8 * 4;  // two buffers x hidden x plane x float
  for (int64_t images : {1, 2}) {
    ScopedEnv env("FLOWRT_PORTABLE_CHUNK_BYTES", std::to_string(images * first_level));
    CAPTURE(images);
    check_parity(g, 5);
  }
}

TEST_CASE("portable: every set of kernels this CPU runs matches the reference") {
  GlowConfig c = small_config(70);
  c.height = c.width = 12;
  c.hidden = 40;
  const Graph g = build_glow(c);
  for (const portable::Kernels *k : portable::available_kernels()) {
    CAPTURE(std::string(k->name));
    ScopedEnv env("FLOWRT_PORTABLE_ISA", k->name);
    BackendOptions o;
    o.max_batch = 3;
    CHECK(portable_kernels(*create_portable_backend(g, o)) == k->name);
    check_parity(g, 3);
  }
  ScopedEnv bad("FLOWRT_PORTABLE_ISA", "avx9000");
  try {
    create_portable_backend(g, BackendOptions{});
    FAIL("an unknown ISA was accepted");
  } catch (const Error &e) {
    CHECK(e.status() == FLOWRT_UNSUPPORTED);
    CHECK(std::string(e.what()).find("avx9000") != std::string::npos);
  }
}

TEST_CASE("portable: conv_gemm matches layers::conv2d on random convolutions, every kernel set") {
  // Output counts 1..40 reach every panel height and partial panels, images of 1..9 pixels a
  // side partial and narrow B panels and kernels wider than the image, 1..5 images B panels
  // that span images (1x1) or not (k x k).
  std::mt19937 rng(3);
  std::uniform_real_distribution<float> u(-1, 1);
  for (const portable::Kernels *kr : portable::available_kernels())
    for (int trial = 0; trial < 60; ++trial) {
      const int64_t in = 1 + rng() % 20, out = 1 + rng() % 40, k = (rng() % 3) * 2 + 1;
      const int64_t kh = k, kw = rng() % 2 ? k : 1 + (rng() % 2) * 2;
      const int64_t h = 1 + rng() % 9, w = 1 + rng() % 9, m = 1 + rng() % 5;
      const int mode = static_cast<int>(rng() % 3);
      PConv<float> c;
      c.out_ch = out, c.in_ch = in, c.kh = kh, c.kw = kw;
      c.padding = mode == 0   ? PaddingMode::Zeros
                  : mode == 1 ? PaddingMode::Constant
                              : PaddingMode::EdgeChannel;
      c.in_total = in + (mode == 2);
      c.pad_value = mode == 1 ? 0.7f : 0.f;
      c.relu = rng() % 2;
      std::vector<float> wt(out * c.in_total * kh * kw), b(out);
      for (float &v : wt) v = u(rng);
      for (float &v : b) v = u(rng);
      c.weight = wt;
      c.bias = b;
      const int64_t plane = h * w;
      std::vector<float> x(m * in * plane);
      for (float &v : x) v = u(rng);
      std::vector<const float *> images(m);
      for (int64_t j = 0; j < m; ++j) images[j] = x.data() + j * in * plane;  // CHW each
      const portable::PackedConv pc = portable::pack_conv(c, *kr);
      CAPTURE(std::string(kr->name));
      CAPTURE(trial);
      for (int threads : {1, 2}) {
        portable::GemmWorkspace ws;
        ws.reserve(*kr, pc, m, h, w, threads);
        std::vector<float> got(out * m * plane), want(out * plane);
        portable::conv_gemm(*kr, pc, portable::ConvInput{images.data(), plane}, m, h, w, got.data(),
                            m * plane, ws, threads);
        double err = 0;
        for (int64_t j = 0; j < m; ++j) {
          layers::conv2d(c, images[j], h, w, want.data(), 1);
          for (int64_t o = 0; o < out; ++o)
            for (int64_t p = 0; p < plane; ++p)
              err = std::max(err, std::fabs(static_cast<double>(want[o * plane + p]) -
                                            got[o * m * plane + j * plane + p]));
        }
        CHECK(err < 1e-4);
      }
    }
}

TEST_CASE("portable: panel heights fit the convolutions' outputs") {
  for (const portable::Kernels *kr : portable::available_kernels()) {
    CAPTURE(std::string(kr->name));
    CHECK(portable::panel_height(*kr, 512) == kr->mr[0]);
    CHECK(12 % portable::panel_height(*kr, 12) == 0);  // cifar's 12 outputs: no padding
    if (std::string(kr->name) == "avx512f") {
      for (int64_t o : {12, 24, 48, 96, 512}) CHECK(portable::panel_height(*kr, o) == 12);
      CHECK(portable::panel_height(*kr, 4) == 4);  // fmnist's first level: 4 outputs
      CHECK(portable::panel_height(*kr, 8) == 8);
      CHECK(portable::panel_height(*kr, 16) == 8);
    }
  }
}

TEST_CASE("portable: the packed weights are the backend's one copy of the nets' weights") {
  GlowConfig c = standard_architecture("cifar");
  c.depth = 2;
  c.random_nets = true;
  const Graph g = build_glow(c);
  BackendOptions o;
  o.max_batch = 4;
  auto b = create_portable_backend(g, o);
  const PortableBytes pb = portable_bytes(*b);
  size_t net_bytes = 0;  // the nets' conv weights and biases in the file
  for (const Layer &l : g.layers) {
    const Net *net = nullptr;
    if (auto *cp = std::get_if<CouplingLayer>(&l.op)) net = &cp->net;
    if (auto *sp = std::get_if<SplitLayer>(&l.op)) net = &sp->prior;
    if (!net) continue;
    for (const NetOp &op : net->ops)
      if (auto *cv = std::get_if<Conv2dOp>(&op))
        net_bytes += (cv->weight.size() + cv->bias.size()) * sizeof(float);
  }
  MESSAGE("portable (" << portable_kernels(*b) << "): packed " << pb.packed << " bytes for "
                       << net_bytes << " bytes of net weights; program " << pb.program
                       << ", scratch " << pb.scratch << " for max batch 4");
  // Panels round output channels up to the register tile (12 of cifar's last convs' 12, 24 and
  // 48 outputs need no padding; 512 -> 516 on AVX-512) and the edge channel of a 1x1 conv is
  // dropped: within a few percent of the file, never a second copy.
  CHECK(pb.packed >= 0.97 * static_cast<double>(net_bytes));
  CHECK(pb.packed <= 1.1 * static_cast<double>(net_bytes));
  // The Program views the nets' weights: what it owns is the small per-pixel preparations.
  CHECK(pb.program < 0.05 * static_cast<double>(net_bytes));
  CHECK(pb.scratch > 0);
}

TEST_CASE("portable: the latent-term C API works on a portable session") {
  GlowConfig c = small_config(80);
  c.n_classes = 2;
  const Graph g = build_glow(c);
  const std::vector<uint8_t> bytes = write_flow(g);
  flowrt_model *m = nullptr;
  REQUIRE(flowrt_model_from_memory(bytes.data(), bytes.size(), &m) == FLOWRT_OK);
  auto session = [&](flowrt_backend backend) {
    flowrt_session_options *o = nullptr;
    REQUIRE(flowrt_session_options_create(&o) == FLOWRT_OK);
    REQUIRE(flowrt_session_options_set_backend(o, backend) == FLOWRT_OK);
    REQUIRE(flowrt_session_options_set_max_batch(o, 2) == FLOWRT_OK);
    flowrt_session *s = nullptr;
    REQUIRE_MESSAGE(flowrt_session_create(m, o, &s) == FLOWRT_OK, flowrt_last_error());
    flowrt_session_options_free(o);
    return s;
  };
  flowrt_session *ref = session(FLOWRT_BACKEND_REF), *por = session(FLOWRT_BACKEND_PORTABLE);
  CHECK(flowrt_session_backend(por) == FLOWRT_BACKEND_PORTABLE);
  const size_t n = 3, d = static_cast<size_t>(g.dims()), levels = g.levels();
  std::vector<uint8_t> px(n * d), back(n * d);
  std::mt19937 rng(3);
  for (uint8_t &p : px) p = static_cast<uint8_t>(rng() & 0xff);
  const std::vector<int32_t> labels = {1, 0, 1};
  std::vector<float> x(n * d), eps_r(n * d), eps_p(n * d);
  REQUIRE(flowrt_pixels_to_x(m, n, px.data(), x.data()) == FLOWRT_OK);
  REQUIRE(flowrt_encode_noise(ref, n, x.data(), labels.data(), eps_r.data()) == FLOWRT_OK);
  REQUIRE(flowrt_encode_noise(por, n, x.data(), labels.data(), eps_p.data()) == FLOWRT_OK);
  CHECK(max_diff(eps_r, eps_p) == 0.0);  // both on the reference path
  // decode_noise on the portable backend inverts it to the pixel.
  REQUIRE(flowrt_decode_noise(por, n, eps_p.data(), 1.f, labels.data(), nullptr, back.data()) ==
          FLOWRT_OK);
  CHECK(back == px);
  // The level terms add up to the portable encode's log p(x).
  std::vector<double> lp_terms(n * levels), ld_terms(n * levels), log_p(n), map(n * 64);
  REQUIRE(flowrt_level_terms(por, n, x.data(), labels.data(), lp_terms.data(), ld_terms.data()) ==
          FLOWRT_OK);
  REQUIRE(flowrt_encode_ex(por, n, x.data(), labels.data(), nullptr, log_p.data(), nullptr,
                           nullptr) == FLOWRT_OK);
  REQUIRE(flowrt_nll_map(por, n, x.data(), labels.data(), map.data()) == FLOWRT_OK);
  for (size_t i = 0; i < n; ++i) {
    double sum = 0, nll = 0;
    for (size_t l = 0; l < levels; ++l) sum += lp_terms[i * levels + l] + ld_terms[i * levels + l];
    for (size_t k = 0; k < 64; ++k) nll += map[i * 64 + k];
    CHECK(sum == doctest::Approx(log_p[i]).epsilon(1e-6));
    CHECK(-nll == doctest::Approx(log_p[i]).epsilon(1e-6));
  }
  flowrt_session_free(ref);
  flowrt_session_free(por);
  flowrt_model_free(m);
}

}  // namespace flowrt
