// The trainer's batched convolution (im2col, output-side and pointwise forms) against the
// runtime's direct convolution, and its backward pass against finite differences, for every
// padding mode.
#include <doctest/doctest.h>

#include <algorithm>
#include <array>
#include <cmath>
#include <random>
#include <vector>

#include "layers/conv2d.hpp"
#include "trainer/layers/conv_backward.hpp"

TEST_SUITE_BEGIN("trainer");

namespace flowrt {
namespace {

using train::BatchGeometry;
using train::ConvGeometry;

std::vector<double> random_vector(std::mt19937 &rng, size_t n) {
  std::vector<double> v(n);
  for (double &x : v) x = static_cast<double>(rng()) / 4294967296.0 - 0.5;
  return v;
}

// CNHW -> one image's CHW.
std::vector<double> image_of(const std::vector<double> &cnhw, int64_t ch, const BatchGeometry &bg,
                             int64_t b) {
  std::vector<double> out(static_cast<size_t>(ch * bg.plane()));
  for (int64_t c = 0; c < ch; ++c)
    for (int64_t p = 0; p < bg.plane(); ++p)
      out[c * bg.plane() + p] = cnhw[c * bg.ld() + b * bg.plane() + p];
  return out;
}

void check_conv(const ConvGeometry &g) {
  std::mt19937 rng(3);
  const BatchGeometry bg{3, 5, 4};
  const std::vector<double> w = random_vector(rng, static_cast<size_t>(g.out_ch * g.k_total()));
  const std::vector<double> bias = random_vector(rng, static_cast<size_t>(g.out_ch));
  std::vector<double> x = random_vector(rng, static_cast<size_t>(g.in_ch * bg.ld()));
  std::vector<double> out(static_cast<size_t>(g.out_ch * bg.ld())), col, dcol;
  train::conv_forward(g, bg, w.data(), bias.data(), x.data(), out.data(), col);

  PConv<double> ref;
  ref.weight = w, ref.bias = bias;
  ref.out_ch = g.out_ch, ref.in_ch = g.in_ch, ref.in_total = g.in_total;
  ref.kh = g.kh, ref.kw = g.kw, ref.padding = g.padding, ref.pad_value = g.pad_value;
  for (int64_t b = 0; b < bg.batch; ++b) {
    const std::vector<double> xi = image_of(x, g.in_ch, bg, b);
    std::vector<double> yi(static_cast<size_t>(g.out_ch * bg.plane()));
    layers::conv2d(ref, xi.data(), bg.h, bg.w, yi.data(), 1);
    const std::vector<double> mine = image_of(out, g.out_ch, bg, b);
    for (size_t k = 0; k < yi.size(); ++k) CHECK(mine[k] == doctest::Approx(yi[k]).epsilon(1e-12));
  }

  // L = sum(r * conv(x)) is linear in w, bias and x: central differences are exact up to
  // rounding.
  const std::vector<double> r = random_vector(rng, out.size());
  auto loss = [&](const std::vector<double> &ww, const std::vector<double> &bb,
                  const std::vector<double> &xx) {
    std::vector<double> o(out.size());
    train::conv_forward(g, bg, ww.data(), bb.data(), xx.data(), o.data(), col);
    double s = 0;
    for (size_t k = 0; k < o.size(); ++k) s += r[k] * o[k];
    return s;
  };
  std::vector<double> dw(w.size(), 0.0), db(bias.size(), 0.0), dx(x.size(), 0.0);
  std::vector<double> dout = r;  // conv_backward may mask its dout in place
  train::conv_backward(g, bg, w.data(), x.data(), dout.data(), dw.data(), db.data(), dx.data(), col,
                       dcol);
  const double eps = 1e-3;
  auto fd_check = [&](std::vector<double> &v, const std::vector<double> &grad, const char *what) {
    for (size_t k = 0; k < v.size(); ++k) {
      const double keep = v[k];
      v[k] = keep + eps;
      const double fp = loss(w, bias, x);
      v[k] = keep - eps;
      const double fm = loss(w, bias, x);
      v[k] = keep;
      INFO(what << "[" << k << "]");
      CHECK(grad[k] == doctest::Approx((fp - fm) / (2 * eps)).epsilon(1e-8).scale(1.0));
    }
  };
  std::vector<double> &wm = const_cast<std::vector<double> &>(w);
  std::vector<double> &bm = const_cast<std::vector<double> &>(bias);
  fd_check(wm, dw, "dweight");
  fd_check(bm, db, "dbias");
  fd_check(x, dx, "dx");

  // The fused forms: conv -> ReLU in one pass equals the two ops; the backward given the ReLU's
  // output equals masking the gradient first; dx written over equals dx accumulated from zero.
  std::vector<double> fused(out.size());
  train::conv_forward(g, bg, w.data(), bias.data(), x.data(), fused.data(), col, true);
  std::vector<double> masked = r;
  for (size_t k = 0; k < out.size(); ++k) {
    CHECK(fused[k] == std::max(out[k], 0.0));
    if (!(fused[k] > 0)) masked[k] = 0;
  }
  std::vector<double> dw1(w.size(), 0.0), db1(bias.size(), 0.0), dx1(x.size(), 0.0);
  train::conv_backward(g, bg, w.data(), x.data(), masked.data(), dw1.data(), db1.data(), dx1.data(),
                       col, dcol);
  std::vector<double> r2 = r, dw2(w.size(), 0.0), db2(bias.size(), 0.0), dx2(x.size(), 123.0);
  train::conv_backward(g, bg, w.data(), x.data(), r2.data(), dw2.data(), db2.data(), dx2.data(),
                       col, dcol, fused.data(), false);
  for (size_t k = 0; k < r2.size(); ++k) CHECK(r2[k] == masked[k]);
  for (size_t k = 0; k < dw1.size(); ++k) CHECK(dw2[k] == doctest::Approx(dw1[k]).epsilon(1e-14));
  for (size_t k = 0; k < db1.size(); ++k) CHECK(db2[k] == doctest::Approx(db1[k]).epsilon(1e-14));
  for (size_t k = 0; k < dx1.size(); ++k) CHECK(dx2[k] == doctest::Approx(dx1[k]).epsilon(1e-14));
}

}  // namespace

TEST_CASE("trainer conv: every form and padding mode matches the runtime, gradients exact") {
  for (PaddingMode pad : {PaddingMode::Zeros, PaddingMode::Constant, PaddingMode::EdgeChannel}) {
    const int64_t edge = pad == PaddingMode::EdgeChannel ? 1 : 0;
    const double pv = pad == PaddingMode::Constant ? 1.0 : 0.0;
    // im2col (more outputs than inputs), output-side (fewer), pointwise 1x1, 3x1 kernels.
    for (auto [in, out, kh, kw] : {std::array<int64_t, 4>{2, 5, 3, 3},
                                   {6, 2, 3, 3},
                                   {3, 4, 1, 1},
                                   {4, 3, 3, 1},
                                   {2, 3, 5, 3}}) {
      INFO("padding " << static_cast<int>(pad) << ", " << in << " -> " << out << ", " << kh << "x"
                      << kw);
      check_conv(ConvGeometry{in, in + edge, out, kh, kw, pad, pv});
    }
  }
}

}  // namespace flowrt

TEST_SUITE_END();
