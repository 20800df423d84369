#include "core/linalg.hpp"

#include <algorithm>
#include <cmath>
#include <limits>
#include <utility>

namespace flowrt {

LuFactors lu_factor(const std::vector<double> &a, int64_t n) {
  LuFactors f;
  f.lu = a;
  f.pivot.resize(static_cast<size_t>(n));
  for (int64_t i = 0; i < n; ++i) f.pivot[i] = i;
  auto at = [&](int64_t r, int64_t c) -> double & { return f.lu[r * n + c]; };
  for (int64_t k = 0; k < n; ++k) {
    int64_t p = k;
    for (int64_t r = k + 1; r < n; ++r)
      if (std::fabs(at(r, k)) > std::fabs(at(p, k))) p = r;
    if (at(p, k) == 0.0 || !std::isfinite(at(p, k))) {
      f.singular = true;
      return f;
    }
    if (p != k) {
      for (int64_t c = 0; c < n; ++c) std::swap(at(p, c), at(k, c));
      std::swap(f.pivot[p], f.pivot[k]);
    }
    for (int64_t r = k + 1; r < n; ++r) {
      double m = at(r, k) / at(k, k);
      at(r, k) = m;
      for (int64_t c = k + 1; c < n; ++c) at(r, c) -= m * at(k, c);
    }
  }
  return f;
}

double log_abs_det(const std::vector<double> &a, int64_t n, int *sign) {
  LuFactors f = lu_factor(a, n);
  if (f.singular) {
    if (sign) *sign = 0;
    return -std::numeric_limits<double>::infinity();
  }
  double s = 0;
  int sg = 1;
  for (int64_t i = 0; i < n; ++i) {
    double d = f.lu[i * n + i];
    s += std::log(std::fabs(d));
    if (d < 0) sg = -sg;
  }
  // Parity of the row permutation.
  std::vector<int64_t> perm = f.pivot;
  for (int64_t i = 0; i < n; ++i)
    while (perm[i] != i) {
      std::swap(perm[i], perm[perm[i]]);
      sg = -sg;
    }
  if (sign) *sign = sg;
  return s;
}

std::vector<double> inverse(const std::vector<double> &a, int64_t n) {
  LuFactors f = lu_factor(a, n);
  if (f.singular) return {};
  std::vector<double> inv(static_cast<size_t>(n * n));
  std::vector<double> col(static_cast<size_t>(n));
  for (int64_t j = 0; j < n; ++j) {
    // Solve A x = e_j: P A = L U, so L U x = P e_j.
    for (int64_t i = 0; i < n; ++i) col[i] = (f.pivot[i] == j) ? 1.0 : 0.0;
    for (int64_t i = 0; i < n; ++i)
      for (int64_t k = 0; k < i; ++k) col[i] -= f.lu[i * n + k] * col[k];
    for (int64_t i = n - 1; i >= 0; --i) {
      for (int64_t k = i + 1; k < n; ++k) col[i] -= f.lu[i * n + k] * col[k];
      col[i] /= f.lu[i * n + i];
    }
    for (int64_t i = 0; i < n; ++i) inv[i * n + j] = col[i];
  }
  return inv;
}

std::vector<double> matmul(const std::vector<double> &a, const std::vector<double> &b, int64_t n) {
  std::vector<double> c(static_cast<size_t>(n * n), 0.0);
  for (int64_t i = 0; i < n; ++i)
    for (int64_t k = 0; k < n; ++k) {
      double v = a[i * n + k];
      for (int64_t j = 0; j < n; ++j) c[i * n + j] += v * b[k * n + j];
    }
  return c;
}

static double inf_norm(const std::vector<double> &a, int64_t n) {
  double m = 0;
  for (int64_t i = 0; i < n; ++i) {
    double s = 0;
    for (int64_t j = 0; j < n; ++j) s += std::fabs(a[i * n + j]);
    m = std::max(m, s);
  }
  return m;
}

double condition_number(const std::vector<double> &a, const std::vector<double> &a_inv, int64_t n) {
  return inf_norm(a, n) * inf_norm(a_inv, n);
}

}  // namespace flowrt
