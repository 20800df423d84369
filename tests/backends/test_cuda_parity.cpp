// The CUDA backend against the reference backend on tiny random models covering every option of
// the format, plus the device sampler's noise, batch-size independence and replays of the
// captured decoder with new seeds and temperatures. Without a usable GPU the suite is skipped
// (tests/test_main.cpp exits with ctest's skip code and says why).
#include <doctest/doctest.h>

#ifdef FLOWRT_HAVE_CUDA

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
  GlowConfig c;
  c.channels = 3, c.height = c.width = 16, c.levels = 2, c.depth = 3, c.hidden = 64;
  c.random_nets = true;
  c.seed = 6;
  const Graph g = build_glow(c);
  BackendOptions o;
  o.max_batch = 8;
  auto ref = create_ref_backend(g, o);
  o.precision = FLOWRT_PRECISION_TF32;
  auto tf32 = create_cuda_backend(g, o);
  const int64_t d = g.dims();
  std::vector<float> x(8 * d), scratch(8 * d), zr(8 * d), zt(8 * d);
  ref->sample(8, 3, 0, 0.7f, nullptr, scratch.data(), x.data());
  std::vector<double> lr(8), lt(8);
  ref->encode(8, x.data(), nullptr, zr.data(), lr.data(), nullptr);
  tf32->encode(8, x.data(), nullptr, zt.data(), lt.data(), nullptr);
  double dbpd = 0;
  for (int i = 0; i < 8; ++i)
    dbpd = std::max(dbpd, std::fabs(lr[i] - lt[i]) / (static_cast<double>(d) * std::log(2.0)));
  MESSAGE("TF32 against fp32: bits/dim max diff " << dbpd << ", z max diff "
                                                  << parity::max_diff(zr, zt));
  // TF32 keeps 10 mantissa bits (relative rounding 2^-11): a few 1e-3 in bits/dim at most here.
  CHECK(dbpd <= 1e-2);
  CHECK(parity::max_diff(zr, zt) <= 0.05 * std::max(1.0, parity::max_abs(zr)));
}

TEST_SUITE_END();

}  // namespace flowrt

#endif  // FLOWRT_HAVE_CUDA
