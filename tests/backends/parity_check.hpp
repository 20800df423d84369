// One parity check for every backend: encode, decode, decode_noise and sample on the candidate
// backend against the reference backend on the same graph and inputs. Latents within 1e-4
// relative, log-densities within 1e-5 bits/dim, decoded images within 1e-4, and quantised pixels
// identical except where the reference lies on a rounding boundary.
#pragma once

#include <doctest/doctest.h>

#include <algorithm>
#include <cmath>
#include <functional>
#include <memory>
#include <random>
#include <vector>

#include "backends/backend.hpp"
#include "model/graph.hpp"
#include "session/session.hpp"

namespace flowrt::parity {

using BackendFactory =
    std::function<std::unique_ptr<Backend>(const Graph &, const BackendOptions &)>;

inline std::vector<float> uniform(size_t n, uint32_t seed, float lo, float hi) {
  std::mt19937 rng(seed);
  std::uniform_real_distribution<float> u(lo, hi);
  std::vector<float> v(n);
  for (float &x : v) x = u(rng);
  return v;
}

inline double max_abs(const std::vector<float> &v) {
  double m = 0;
  for (float x : v) m = std::max(m, std::fabs(static_cast<double>(x)));
  return m;
}

inline double max_diff(const std::vector<float> &a, const std::vector<float> &b) {
  double m = 0;
  for (size_t i = 0; i < a.size(); ++i)
    m = std::max(m, std::fabs(static_cast<double>(a[i]) - b[i]));
  return m;
}

// Pixels differ only where the reference sits within 1e-3 of a bin edge.
inline void check_pixels(const std::vector<float> &ref, const std::vector<float> &got, int n_bits) {
  const double bins = std::ldexp(1.0, n_bits);
  size_t mismatched = 0;
  for (size_t k = 0; k < ref.size(); ++k) {
    if (x_to_pixel(ref[k], n_bits) == x_to_pixel(got[k], n_bits)) continue;
    const double pos = (static_cast<double>(ref[k]) + 0.5) * bins;
    if (std::fabs(pos - std::round(pos)) > 1e-3) ++mismatched;
  }
  CHECK(mismatched == 0);
}

inline void check(const Graph &g, size_t n, const BackendFactory &candidate, bool fold = true,
                  uint32_t seed = 7) {
  const int64_t d = g.dims();
  const size_t total = n * static_cast<size_t>(d);
  const double bits_per_nat = 1.0 / (static_cast<double>(d) * std::log(2.0));
  BackendOptions o;
  o.max_batch = n;
  o.threads = 2;
  o.fold = fold;
  std::unique_ptr<Backend> ref = create_ref_backend(g, o), other = candidate(g, o);
  const std::vector<float> x = uniform(total, seed, -0.5f, 0.5f);
  std::vector<int32_t> labels(n);
  const int64_t classes = g.top_prior().n_classes();
  for (size_t i = 0; i < n; ++i) labels[i] = classes ? static_cast<int32_t>(i % classes) : 0;
  const int32_t *lab = classes ? labels.data() : nullptr;

  std::vector<float> zr(total), zo(total);
  std::vector<double> lpr(n), lpo(n), ldr(n), ldo(n);
  ref->encode(n, x.data(), lab, zr.data(), lpr.data(), ldr.data());
  other->encode(n, x.data(), lab, zo.data(), lpo.data(), ldo.data());
  CHECK(max_diff(zr, zo) <= 1e-4 * std::max(1.0, max_abs(zr)));
  for (size_t i = 0; i < n; ++i) {
    CHECK(std::fabs(lpr[i] - lpo[i]) * bits_per_nat <= 1e-5);
    CHECK(std::fabs(ldr[i] - ldo[i]) * bits_per_nat <= 1e-5);
  }

  std::vector<float> xr(total), xo(total);
  ref->decode(n, zr.data(), xr.data());
  other->decode(n, zr.data(), xo.data());
  CHECK(max_diff(xr, x) <= 1e-3);  // the flow is invertible
  CHECK(max_diff(xr, xo) <= 1e-4);
  check_pixels(xr, xo, g.image.n_bits);

  const std::vector<float> eps = uniform(total, seed + 1, -2.f, 2.f);
  ref->decode_noise(n, eps.data(), 0.7f, lab, xr.data());
  other->decode_noise(n, eps.data(), 0.7f, lab, xo.data());
  CHECK(max_diff(xr, xo) <= 1e-4 * std::max(1.0, max_abs(xr)));
  check_pixels(xr, xo, g.image.n_bits);

  std::vector<float> scratch(total);
  ref->sample(n, 42, 3, 1.f, lab, scratch.data(), xr.data());
  other->sample(n, 42, 3, 1.f, lab, scratch.data(), xo.data());
  CHECK(max_diff(xr, xo) <= 1e-4 * std::max(1.0, max_abs(xr)));
  check_pixels(xr, xo, g.image.n_bits);
}

}  // namespace flowrt::parity
