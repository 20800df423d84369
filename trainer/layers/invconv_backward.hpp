// Invertible 1x1 convolution y = W x at every pixel. Backward: dx = W^T dy, dW = sum dy x^T.
// LU form W = P L (U + diag(sign * exp(log_s))): the gradient reaches the strict lower triangle
// of L, the strict upper triangle of U and log_s (P and sign stay fixed), and log|det W| =
// sum(log_s) gives log_s its log-determinant term directly. Dense form: d log|det W| / dW = W^-T.
#pragma once

#include <cmath>
#include <cstdint>
#include <vector>

#include "core/linalg.hpp"
#include "trainer/layers/parallel.hpp"

namespace flowrt::train {

// W (row-major [out][in]) from LU parameters; (P v)[i] = v[perm[i]], so W[i] = (L U~)[perm[i]].
template <typename T>
void lu_compose(int64_t c, const int32_t *perm, const T *lower, const T *upper, const T *sign,
                const T *log_s, T *w) {
  for (int64_t i = 0; i < c; ++i) {
    const int64_t r = perm[i];
    for (int64_t j = 0; j < c; ++j) {
      // (L U~)[r][j] = sum_k L[r][k] U~[k][j], k <= min(r, j).
      T acc = 0;
      for (int64_t k = 0; k <= std::min(r, j); ++k) {
        const T l = k == r ? T(1) : lower[r * c + k];
        const T u = k == j ? sign[k] * std::exp(log_s[k]) : upper[k * c + j];
        acc += l * u;
      }
      w[i * c + j] = acc;
    }
  }
}

// dx_i = W^T dy_i per image (NCHW, [batch][c][plane]) and dw += sum_i dy_i x_i^T.
template <typename T>
void linear1x1_backward(int64_t batch, int64_t c, int64_t plane, const T *w, const T *x,
                        const T *dy, T *dx, T *dw) {
  const int64_t img = c * plane;
#pragma omp parallel for schedule(static) if (parallel_worth(batch * c * c * plane))
  for (int64_t b = 0; b < batch; ++b) {
    T *d = dx + b * img;
    for (int64_t k = 0; k < img; ++k) d[k] = 0;
    for (int64_t o = 0; o < c; ++o)
      for (int64_t i = 0; i < c; ++i) {
        const T wv = w[o * c + i];
        const T *g = dy + b * img + o * plane;
        T *di = d + i * plane;
        for (int64_t p = 0; p < plane; ++p) di[p] += wv * g[p];
      }
  }
  // Each entry sums images and pixels in a fixed order: the result does not depend on threads.
#pragma omp parallel for schedule(static) if (parallel_worth(batch * c * c * plane))
  for (int64_t e = 0; e < c * c; ++e) {
    const int64_t o = e / c, i = e % c;
    T acc = 0;
    for (int64_t b = 0; b < batch; ++b) {
      const T *g = dy + b * img + o * plane, *xi = x + b * img + i * plane;
      for (int64_t p = 0; p < plane; ++p) acc += g[p] * xi[p];
    }
    dw[e] += acc;
  }
}

// Maps dL/dW onto the LU parameters (accumulating). logdet_weight = dL/d(log|det W|).
template <typename T>
void lu_backward(int64_t c, const int32_t *perm, const T *lower, const T *upper, const T *sign,
                 const T *log_s, const T *dw, T logdet_weight, T *dlower, T *dupper, T *dlog_s) {
  std::vector<T> da(static_cast<size_t>(c * c));  // dL/d(L U~) = P^T dW
  for (int64_t i = 0; i < c; ++i)
    for (int64_t j = 0; j < c; ++j) da[perm[i] * c + j] = dw[i * c + j];
  auto l_at = [&](int64_t r, int64_t k) {
    return r == k ? T(1) : (k < r ? lower[r * c + k] : T(0));
  };
  auto u_at = [&](int64_t k, int64_t j) {
    return k == j ? sign[k] * std::exp(log_s[k]) : (k < j ? upper[k * c + j] : T(0));
  };
  for (int64_t r = 0; r < c; ++r)
    for (int64_t k = 0; k < r; ++k) {  // dL = dA U~^T, strict lower triangle
      T acc = 0;
      for (int64_t j = k; j < c; ++j) acc += da[r * c + j] * u_at(k, j);
      dlower[r * c + k] += acc;
    }
  for (int64_t k = 0; k < c; ++k)
    for (int64_t j = k; j < c; ++j) {  // dU~ = L^T dA, upper triangle with the diagonal
      T acc = 0;
      for (int64_t r = k; r < c; ++r) acc += l_at(r, k) * da[r * c + j];
      if (j > k)
        dupper[k * c + j] += acc;
      else
        dlog_s[k] += acc * sign[k] * std::exp(log_s[k]) + logdet_weight;
    }
}

// log|det W| of a dense W (in double) and, when `grad` is not null, grad += weight * W^-T.
template <typename T>
double dense_log_abs_det(int64_t c, const T *w, T weight, T *grad) {
  std::vector<double> wd(w, w + c * c);
  const double lad = log_abs_det(wd, c);
  if (grad) {
    const std::vector<double> inv = inverse(wd, c);
    for (int64_t i = 0; i < c; ++i)
      for (int64_t j = 0; j < c; ++j) grad[i * c + j] += weight * static_cast<T>(inv[j * c + i]);
  }
  return lad;
}

}  // namespace flowrt::train
