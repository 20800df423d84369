// RealNVP's logit input layer, per element of x in [-1/2, 1/2):
//   u = alpha + (1 - 2 alpha)(x + 1/2),  y = log u - log(1 - u),
//   log|det| += log(1 - 2 alpha) - log u - log(1 - u)   (input-dependent).
// It has no parameters; the backward pass takes the gradient through y and through log|det| to
// the input. The log terms are computed in double (u comes close to 0 and 1).
#pragma once

#include <cmath>
#include <cstdint>

namespace flowrt::train {

// In place on n elements; returns their log|det|.
template <typename T>
double logit_forward(double alpha, int64_t n, T *x) {
  const double range = 1.0 - 2.0 * alpha, log_range = std::log(range);
  double logdet = 0;
  for (int64_t k = 0; k < n; ++k) {
    const double u = alpha + range * (static_cast<double>(x[k]) + 0.5);
    const double log_u = std::log(u), log_1mu = std::log1p(-u);
    x[k] = static_cast<T>(log_u - log_1mu);
    logdet += log_range - log_u - log_1mu;
  }
  return logdet;
}

// x: the layer's input; dx may alias dy. dy/dx = (1 - 2 alpha) / (u (1 - u)),
// d(log|det|)/dx = (1 - 2 alpha)(2u - 1) / (u (1 - u)).
template <typename T>
void logit_backward(double alpha, int64_t n, const T *x, const T *dy, T logdet_weight, T *dx) {
  const double range = 1.0 - 2.0 * alpha;
  for (int64_t k = 0; k < n; ++k) {
    const double u = alpha + range * (static_cast<double>(x[k]) + 0.5);
    const double d = range / (u * (1.0 - u));
    dx[k] = static_cast<T>(
        d * (static_cast<double>(dy[k]) + static_cast<double>(logdet_weight) * (2.0 * u - 1.0)));
  }
}

}  // namespace flowrt::train
