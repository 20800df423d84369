// The CUDA backend against the reference backend on tiny random models covering every option of
// the format, plus the device sampler's noise, batch-size independence and replays of the
// captured decoder with new seeds and temperatures. Without a usable GPU the suite is skipped
// (tests/test_main.cpp exits with ctest's skip code and says why).
#include <doctest/doctest.h>

#ifdef FLOWRT_HAVE_CUDA

#include "backends/cuda/cuda_backend.hpp"
#include "backends/parity_check.hpp"
#include "core/philox.hpp"
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
  return vs;
}

struct PrecisionError {
  double bits_per_dim = 0;  // max over images of |bits/dim - fp32's|
  double z = 0;             // max |z - fp32's|
  double z_scale = 1;       // max(1, max |z|)
};

// A standard Glow encoded on the reference backend (fp32) and on CUDA at `precision`.
PrecisionError error_against_fp32(flowrt_precision precision) {
  GlowConfig c;
  c.channels = 3, c.height = c.width = 16, c.levels = 2, c.depth = 3, c.hidden = 64;
  c.random_nets = true;
  c.seed = 6;
  const Graph g = build_glow(c);
  BackendOptions o;
  o.max_batch = 8;
  auto ref = create_ref_backend(g, o);
  o.precision = precision;
  auto cuda = create_cuda_backend(g, o);
  const int64_t d = g.dims();
  std::vector<float> x(8 * d), scratch(8 * d), zr(8 * d), zc(8 * d);
  ref->sample(8, 3, 0, 0.7f, nullptr, scratch.data(), x.data());
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
  const PrecisionError e = error_against_fp32(FLOWRT_PRECISION_TF32);
  // TF32 keeps 10 mantissa bits (relative rounding 2^-11): a few 1e-3 in bits/dim at most here.
  CHECK(e.bits_per_dim <= 1e-2);
  CHECK(e.z <= 0.05 * e.z_scale);
}

// On this model, rounding the products' inputs to nearest on the CPU gives 4.0e-4 bits/dim and
// 7.5e-3 in z for bf16 (7 mantissa bits), 7.8e-5 and 9.9e-4 for fp16 (10 bits, as TF32). The
// bounds leave room for cuBLAS's other choices (it may run the 16-bit types as TF32; truncating
// rather than rounding TF32 inputs gives 2.5e-3 bits/dim) and still catch wrong operands.
TEST_CASE("cuda: BF16 products stay close to fp32 and its error is measured") {
  const PrecisionError e = error_against_fp32(FLOWRT_PRECISION_BF16);
  CHECK(e.bits_per_dim <= 5e-3);
  CHECK(e.z <= 0.05 * e.z_scale);
}

TEST_CASE("cuda: FP16 products stay close to fp32 and its error is measured") {
  const PrecisionError e = error_against_fp32(FLOWRT_PRECISION_FP16);
  CHECK(e.bits_per_dim <= 5e-3);
  CHECK(e.z <= 0.01 * e.z_scale);
}

TEST_SUITE_END();

}  // namespace flowrt

#endif  // FLOWRT_HAVE_CUDA
