// The CUDA backend against the reference backend on tiny random models covering every option of
// the format (Glow variants; RealNVP's checkerboard couplings, tanh scale and logit layer; NICE's
// flattened 1x1 vectors), plus the device sampler's noise, batch-size independence and replays of
// the captured decoder with new seeds and temperatures. Without a usable GPU the suite is skipped
// (tests/test_main.cpp exits with ctest's skip code and says why).
#include <doctest/doctest.h>

#ifdef FLOWRT_HAVE_CUDA

#include "backends/cuda/cuda_backend.hpp"
#include "backends/parity_check.hpp"
#include "core/error.hpp"
#include "core/philox.hpp"
#include "model/nice_builder.hpp"
#include "model/realnvp_builder.hpp"
#include "test_support.hpp"

namespace flowrt {
namespace {

std::vector<test::Variant> conventions() {
  std::vector<test::Variant> vs;
  auto add = [&](auto edit) {
    test::Variant v;
    edit(v);
    v.seed = 100 + vs.size();
    vs.push_back(v);
  };
  add([](test::Variant &) {});
  add([](test::Variant &v) {
    v.coupling = CouplingType::Additive, v.permutation = Permutation::Dense;
  });
  add([](test::Variant &v) {
    v.permutation = Permutation::Reverse, v.squeeze = SqueezeOrder::SubpixelMajor;
  });
  add([](test::Variant &v) {
    v.permutation = Permutation::Shuffle, v.split = ShiftScaleSplit::ShiftScaleInterleaved;
  });
  add([](test::Variant &v) {
    v.split = ShiftScaleSplit::ShiftScaleHalves, v.scale_fn = ScaleFunction::Exp,
    v.form = AffineForm::ScaleThenShift;
  });
  add([](test::Variant &v) {
    v.split = ShiftScaleSplit::ScaleShiftInterleaved, v.conditioning = Half::Second;
  });
  add([](test::Variant &v) { v.padding = PaddingMode::Constant, v.net_actnorm = true; });
  add([](test::Variant &v) {
    v.padding = PaddingMode::EdgeChannel, v.prior_padding = PaddingMode::EdgeChannel;
  });
  add([](test::Variant &v) {
    v.leaving = Half::First, v.layout = PriorLayout::MeanLogstdInterleaved;
  });
  add([](test::Variant &v) { v.empty_split_prior = true, v.top = TopPriorKind::StandardNormal; });
  add([](test::Variant &v) { v.classes = 3, v.n_bits = 5, v.channels = 3; });
  add([](test::Variant &v) { v.residual = true, v.hidden = 16; });
  return vs;
}

// RealNVP at test size: the logit layer, 2 checkerboard couplings (EVEN, ODD), a squeeze, 2
// channel couplings and a split, then 2 checkerboard couplings; every coupling affine with the
// tanh scale and followed by a batch norm (run as an actnorm); random everything.
RealNvpConfig realnvp_config(int64_t channels, int64_t height, int64_t width, uint64_t seed) {
  RealNvpConfig c;
  c.channels = channels, c.height = height, c.width = width;
  c.scales = 2, c.hidden = 8, c.checkerboard = 2, c.channelwise = 2, c.final_checkerboard = 2;
  c.seed = seed;
  c.random_nets = true;
  return c;
}

// NICE at test size: flatten to C*H*W channels at 1x1, 4 additive couplings with fully connected
// nets (1x1 convs), an actnorm; random everything.
NiceConfig nice_config(int64_t channels, int64_t height, int64_t width, int hidden, uint64_t seed) {
  NiceConfig c;
  c.channels = channels, c.height = height, c.width = width;
  c.couplings = 4, c.hidden = hidden, c.hidden_layers = 2;
  c.seed = seed;
  c.random_nets = true;
  return c;
}

// The conventions a rewritten RealNVP gives every coupling (checkerboard and channel ones).
struct CouplingConvention {
  CouplingType type = CouplingType::Affine;
  ScaleFunction scale_fn = ScaleFunction::Tanh;
  float scale_bias = 0.f;
  ShiftScaleSplit split = ShiftScaleSplit::ShiftScaleHalves;
  AffineForm form = AffineForm::ScaleThenShift;
  PaddingMode padding = PaddingMode::Zeros;
  bool net_actnorm = false;
  bool mask_channel = true;  // checkerboard couplings only
};

// `g` with every coupling rewritten to `cv`, with fresh random nets (Glow's net shape, on the
// checkerboard's masked input) and tanh weights; finalized.
Graph with_couplings(Graph g, const CouplingConvention &cv, uint64_t seed) {
  test::Rng rng(seed);
  for (Layer &layer : g.layers) {
    auto *cp = std::get_if<CouplingLayer>(&layer.op);
    if (!cp) continue;
    const bool affine = cv.type == CouplingType::Affine;
    cp->type = cv.type;
    cp->scale_fn = cv.scale_fn;
    cp->scale_bias = cv.scale_bias;
    cp->split = cv.split;
    cp->form = cv.form;
    cp->mask_channel = is_checkerboard(cp->conditioning) && cv.mask_channel;
    const int64_t cb = cp->transformed_channels(layer.in.c);
    cp->net = test::rand_coupling_net(rng, cp->net_input_channels(layer.in.c), 8,
                                      affine ? 2 * cb : cb, cv.padding, cv.net_actnorm);
    cp->scale_weight = affine && cv.scale_fn == ScaleFunction::Tanh
                           ? test::rand_tensor(rng, {cb}, 0.5, 1.5)
                           : Tensor();
  }
  finalize_graph(g);
  return g;
}

struct PrecisionError {
  double bits_per_dim = 0;  // max over images of |bits/dim - fp32's|
  double z = 0;             // max |z - fp32's|
  double z_scale = 1;       // max(1, max |z|)
};

// A standard Glow for the precision tests.
Graph precision_glow() {
  GlowConfig c;
  c.channels = 3, c.height = c.width = 16, c.levels = 2, c.depth = 3, c.hidden = 64;
  c.random_nets = true;
  c.seed = 6;
  return build_glow(c);
}

// `g` encoded on the reference backend (fp32) and on CUDA at `precision`.
PrecisionError error_against_fp32(const Graph &g, flowrt_precision precision) {
  BackendOptions o;
  o.max_batch = 8;
  auto ref = create_ref_backend(g, o);
  o.precision = precision;
  auto cuda = create_cuda_backend(g, o);
  const int64_t d = g.dims();
  std::vector<float> x(8 * d), scratch(8 * d), zr(8 * d), zc(8 * d);
  ref->sample(8, 3, 0, 0.7f, nullptr, scratch.data(), x.data());
  // A logit layer takes pixel values only: keep the samples' float rounding off its poles.
  if (std::holds_alternative<LogitLayer>(g.layers.front().op))
    for (float &v : x) v = std::min(std::max(v, -0.5f), 0.49f);
  std::vector<double> lr(8), lc(8);
  ref->encode(8, x.data(), nullptr, zr.data(), lr.data(), nullptr);
  cuda->encode(8, x.data(), nullptr, zc.data(), lc.data(), nullptr);
  PrecisionError e;
  double relative = 0;
  for (int i = 0; i < 8; ++i) {
    const double diff = std::fabs(lr[i] - lc[i]);
    e.bits_per_dim = std::max(e.bits_per_dim, diff / (static_cast<double>(d) * std::log(2.0)));
    relative = std::max(relative, diff / std::max(std::fabs(lr[i]), 1e-300));
  }
  e.z = parity::max_diff(zr, zc);
  e.z_scale = std::max(1.0, parity::max_abs(zr));
  MESSAGE(precision_name(precision)
          << " against fp32: bits/dim max diff " << e.bits_per_dim << " (relative " << relative
          << "), z max diff " << e.z << " (max |z| " << parity::max_abs(zr) << ")");
  return e;
}

}  // namespace

TEST_SUITE_BEGIN("cuda");

TEST_CASE("cuda: every convention matches the reference backend, folded and unfolded") {
  for (const test::Variant &v : conventions()) {
    const Graph g = test::variant_graph(v);
    parity::check(g, 3, create_cuda_backend, true, static_cast<uint32_t>(v.seed));
    parity::check(g, 2, create_cuda_backend, false, static_cast<uint32_t>(v.seed) + 1);
  }
}

TEST_CASE("cuda: a standard Glow at batch 1 and 32 matches the reference backend") {
  GlowConfig c;
  c.channels = 3, c.height = c.width = 16, c.levels = 2, c.depth = 3, c.hidden = 32;
  c.random_nets = true;
  c.seed = 5;
  const Graph g = build_glow(c);
  parity::check(g, 1, create_cuda_backend);
  parity::check(g, 32, create_cuda_backend);
}

TEST_CASE("cuda: the device sampler draws the host's Philox normals") {
  const Graph g = test::variant_graph(test::Variant{});
  BackendOptions o;
  o.max_batch = 4;
  auto cuda = create_cuda_backend(g, o);
  auto ref = create_ref_backend(g, o);
  const size_t total = 4 * static_cast<size_t>(g.dims());
  std::vector<float> eps(total), xr(total), xc(total), scratch(total);
  philox_fill(9, 17, 4, g.dims(), eps.data());
  ref->decode_noise(4, eps.data(), 0.5f, nullptr, xr.data());
  cuda->sample(4, 9, 17, 0.5f, nullptr, scratch.data(), xc.data());
  CHECK(parity::max_diff(xr, xc) <= 1e-4 * std::max(1.0, parity::max_abs(xr)));
}

TEST_CASE("cuda: captured decoders replay with new seeds and temperatures, any batch size") {
  const Graph g = test::variant_graph(test::Variant{});
  BackendOptions o;
  o.max_batch = 8;
  auto cuda = create_cuda_backend(g, o);
  auto ref = create_ref_backend(g, o);
  const int64_t d = g.dims();
  std::vector<float> scratch(8 * d), xr(8 * d), xc(8 * d);
  for (const auto &[n, seed, t] : std::vector<std::tuple<size_t, uint64_t, float>>{
           {8, 1, 0.7f}, {8, 2, 1.0f}, {3, 1, 0.7f}, {8, 1, 0.0f}, {1, 5, 0.3f}}) {
    ref->sample(n, seed, 0, t, nullptr, scratch.data(), xr.data());
    cuda->sample(n, seed, 0, t, nullptr, scratch.data(), xc.data());
    xr.resize(n * d), xc.resize(n * d);
    CHECK(parity::max_diff(xr, xc) <= 1e-4 * std::max(1.0, parity::max_abs(xr)));
    xr.resize(8 * d), xc.resize(8 * d);
  }
}

TEST_CASE("cuda: TF32 products stay close to fp32 and its error is measured") {
  const PrecisionError e = error_against_fp32(precision_glow(), FLOWRT_PRECISION_TF32);
  // TF32 keeps 10 mantissa bits (relative rounding 2^-11): a few 1e-3 in bits/dim at most here.
  CHECK(e.bits_per_dim <= 1e-2);
  CHECK(e.z <= 0.05 * e.z_scale);
}

// On this model, rounding the products' inputs to nearest on the CPU gives 4.0e-4 bits/dim and
// 7.5e-3 in z for bf16 (7 mantissa bits), 7.8e-5 and 9.9e-4 for fp16 (10 bits, as TF32). The
// bounds leave room for cuBLAS's other choices (it may run the 16-bit types as TF32; truncating
// rather than rounding TF32 inputs gives 2.5e-3 bits/dim) and still catch wrong operands.
TEST_CASE("cuda: BF16 products stay close to fp32 and its error is measured") {
  const PrecisionError e = error_against_fp32(precision_glow(), FLOWRT_PRECISION_BF16);
  CHECK(e.bits_per_dim <= 5e-3);
  CHECK(e.z <= 0.05 * e.z_scale);
}

TEST_CASE("cuda: FP16 products stay close to fp32 and its error is measured") {
  const PrecisionError e = error_against_fp32(precision_glow(), FLOWRT_PRECISION_FP16);
  CHECK(e.bits_per_dim <= 5e-3);
  CHECK(e.z <= 0.01 * e.z_scale);
}

TEST_CASE("cuda: random RealNVP models match the reference backend at several batch sizes") {
  SUBCASE("3x8x8") {
    const Graph g = build_realnvp(realnvp_config(3, 8, 8, 21));
    for (const size_t n : std::vector<size_t>{1, 3, 8})
      parity::check(g, n, create_cuda_backend, true, static_cast<uint32_t>(30 + n));
    parity::check(g, 2, create_cuda_backend, false, 31);
  }
  SUBCASE("1x6x10: one channel, and a 3x5 grid after the squeeze; a small logit alpha") {
    RealNvpConfig c = realnvp_config(1, 6, 10, 22);
    c.logit_alpha = 0.01f;
    const Graph g = build_realnvp(c);
    for (const size_t n : std::vector<size_t>{1, 5})
      parity::check(g, n, create_cuda_backend, true, static_cast<uint32_t>(40 + n));
    parity::check(g, 2, create_cuda_backend, false, 41);
  }
  SUBCASE("2x6x6: no mask channel, no logit layer, no batch norms") {
    RealNvpConfig c = realnvp_config(2, 6, 6, 23);
    c.mask_channel = false, c.logit_alpha = 0.f, c.batchnorm = false;
    const Graph g = build_realnvp(c);
    parity::check(g, 3, create_cuda_backend, true, 50);
    parity::check(g, 2, create_cuda_backend, false, 51);
  }
}

TEST_CASE("cuda: checkerboard and channel couplings in every convention match the reference") {
  std::vector<CouplingConvention> conventions(4);
  // Additive; Glow's edge-channel padding and a net actnorm (an op of its own when unfolded).
  conventions[0].type = CouplingType::Additive;
  conventions[0].padding = PaddingMode::EdgeChannel;
  conventions[0].net_actnorm = true;
  // The sigmoid scale, Glow's form and interleaving; no mask channel; constant padding.
  conventions[1].scale_fn = ScaleFunction::Sigmoid;
  conventions[1].scale_bias = 2.f;
  conventions[1].split = ShiftScaleSplit::ScaleShiftInterleaved;
  conventions[1].form = AffineForm::ShiftThenScale;
  conventions[1].padding = PaddingMode::Constant;
  conventions[1].mask_channel = false;
  // The exp scale.
  conventions[2].scale_fn = ScaleFunction::Exp;
  conventions[2].split = ShiftScaleSplit::ShiftScaleInterleaved;
  conventions[2].net_actnorm = true;
  // The tanh scale with a bias inside the tanh, the other form and halves.
  conventions[3].scale_bias = 0.5f;
  conventions[3].split = ShiftScaleSplit::ScaleShiftHalves;
  conventions[3].form = AffineForm::ShiftThenScale;
  conventions[3].padding = PaddingMode::EdgeChannel;
  for (size_t k = 0; k < conventions.size(); ++k) {
    CAPTURE(k);
    const Graph g =
        with_couplings(build_realnvp(realnvp_config(3, 6, 10, 60 + k)), conventions[k], 70 + k);
    parity::check(g, 3, create_cuda_backend, true, static_cast<uint32_t>(80 + k));
    parity::check(g, 2, create_cuda_backend, false, static_cast<uint32_t>(90 + k));
  }
}

TEST_CASE("cuda: random NICE models match the reference backend at several batch sizes") {
  SUBCASE("1x4x4: 16 channels at 1x1") {
    const Graph g = build_nice(nice_config(1, 4, 4, 16, 24));
    for (const size_t n : std::vector<size_t>{1, 3, 8})
      parity::check(g, n, create_cuda_backend, true, static_cast<uint32_t>(100 + n));
    parity::check(g, 2, create_cuda_backend, false, 101);
  }
  SUBCASE("3x4x4: 48 channels at 1x1") {
    const Graph g = build_nice(nice_config(3, 4, 4, 16, 25));
    parity::check(g, 4, create_cuda_backend, true, 110);
  }
  SUBCASE("1x28x28: 784 channels at 1x1, the couplings' nets 392 -> 128 -> 128 -> 392") {
    const Graph g = build_nice(nice_config(1, 28, 28, 128, 26));
    for (const size_t n : std::vector<size_t>{1, 7})
      parity::check(g, n, create_cuda_backend, true, static_cast<uint32_t>(120 + n));
    parity::check(g, 2, create_cuda_backend, false, 121);
  }
}

TEST_CASE("cuda: RealNVP and NICE sessions encode and replay decoders at any batch size") {
  const std::vector<Graph> graphs = {build_realnvp(realnvp_config(3, 8, 8, 27)),
                                     build_nice(nice_config(1, 28, 28, 64, 28))};
  for (const Graph &g : graphs) {
    BackendOptions o;
    o.max_batch = 8;
    auto cuda = create_cuda_backend(g, o);
    auto ref = create_ref_backend(g, o);
    const int64_t d = g.dims();
    const double bits_per_nat = 1.0 / (static_cast<double>(d) * std::log(2.0));
    for (const auto &[n, seed, t] : std::vector<std::tuple<size_t, uint64_t, float>>{
             {8, 1, 0.7f}, {3, 2, 1.0f}, {1, 1, 0.7f}, {8, 3, 0.0f}, {3, 5, 0.3f}}) {
      CAPTURE(n);
      const size_t total = n * static_cast<size_t>(d);
      std::vector<float> scratch(total), xr(total), xc(total), zr(total), zc(total);
      ref->sample(n, seed, 0, t, nullptr, scratch.data(), xr.data());
      cuda->sample(n, seed, 0, t, nullptr, scratch.data(), xc.data());
      CHECK(parity::max_diff(xr, xc) <= 1e-4 * std::max(1.0, parity::max_abs(xr)));
      // Encode the reference's samples, kept in the pixel range a logit layer takes.
      for (float &v : xr) v = std::min(std::max(v, -0.5f), 0.49f);
      std::vector<double> lr(n), lc(n);
      ref->encode(n, xr.data(), nullptr, zr.data(), lr.data(), nullptr);
      cuda->encode(n, xr.data(), nullptr, zc.data(), lc.data(), nullptr);
      CHECK(parity::max_diff(zr, zc) <= 1e-4 * std::max(1.0, parity::max_abs(zr)));
      for (size_t i = 0; i < n; ++i) CHECK(std::fabs(lr[i] - lc[i]) * bits_per_nat <= 1e-5);
    }
  }
}

// The reduced precisions on the new layers' models: bounds as loose as TF32's on Glow, which a
// wrong operand or layout (errors of order 1) still far exceeds.
TEST_CASE("cuda: TF32 BF16 and FP16 products on RealNVP and NICE stay close to fp32") {
  RealNvpConfig r = realnvp_config(3, 16, 16, 29);
  r.hidden = 32;
  const std::vector<Graph> graphs = {build_realnvp(r), build_nice(nice_config(1, 28, 28, 256, 30))};
  for (const Graph &g : graphs)
    for (flowrt_precision p :
         {FLOWRT_PRECISION_TF32, FLOWRT_PRECISION_BF16, FLOWRT_PRECISION_FP16}) {
      CAPTURE(precision_name(p));
      const PrecisionError e = error_against_fp32(g, p);
      CHECK(e.bits_per_dim <= 1e-2);
      CHECK(e.z <= 0.05 * e.z_scale);
    }
}

TEST_CASE("cuda: a program the kernels cannot run is refused at session creation") {
  // A split leaving a checkerboard (the graph check rejects it; here it bypasses that check).
  Graph g = build_realnvp(realnvp_config(1, 8, 8, 31));
  for (Layer &layer : g.layers)
    if (auto *sp = std::get_if<SplitLayer>(&layer.op)) sp->leaving = Half::CheckerboardEven;
  BackendOptions o;
  o.max_batch = 2;
  try {
    create_cuda_backend(g, o);
    FAIL("the session was created");
  } catch (const Error &e) {
    CHECK(e.status() == FLOWRT_UNSUPPORTED);
    CHECK(std::string(e.what()).find("channel half") != std::string::npos);
  }
}

TEST_SUITE_END();

}  // namespace flowrt

#endif  // FLOWRT_HAVE_CUDA
