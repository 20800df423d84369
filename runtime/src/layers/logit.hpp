// RealNVP's logit input layer, element-wise on the pixel values x in [-1/2, 1/2):
//   u = alpha + (1 - 2 alpha)(x + 1/2),  y = log(u) - log(1 - u),
//   log|dy/dx| = log(1 - 2 alpha) - log(u) - log(1 - u),
// and its inverse x = (sigmoid(y) - alpha) / (1 - 2 alpha) - 1/2. Computed in double whatever T:
// near u = 0 or 1 the log terms lose the digits a float would keep in neither form. An x outside
// the layer's domain (u outside (0, 1)) gives non-finite values: its density is zero.
#pragma once

#include <cmath>
#include <cstdint>

namespace flowrt::layers {

// In place on `channels` planes of `plane` values; returns the log-det. pos (may be null) gets
// each element's log-det at pos[c * pos_stride + p] (pos_stride 0: summed per position).
template <typename T>
double logit_encode(T alpha, int64_t channels, int64_t plane, T *x, double *pos = nullptr,
                    int64_t pos_stride = 0) {
  const double a = static_cast<double>(alpha);
  const double range = 1.0 - 2.0 * a, log_range = std::log(range);
  double logdet = 0;
  for (int64_t c = 0; c < channels; ++c) {
    T *xc = x + c * plane;
    double *pc = pos ? pos + c * pos_stride : nullptr;
    for (int64_t p = 0; p < plane; ++p) {
      const double u = a + range * (static_cast<double>(xc[p]) + 0.5);
      const double log_u = std::log(u), log_1mu = std::log1p(-u);
      const double ld = log_range - log_u - log_1mu;
      xc[p] = static_cast<T>(log_u - log_1mu);
      logdet += ld;
      if (pc) pc[p] += ld;
    }
  }
  return logdet;
}

template <typename T>
void logit_decode(T alpha, int64_t n, T *y) {
  const double a = static_cast<double>(alpha), range = 1.0 - 2.0 * a;
  for (int64_t k = 0; k < n; ++k) {
    const double v = static_cast<double>(y[k]);
    // sigmoid without overflow for either sign
    const double u = v >= 0 ? 1.0 / (1.0 + std::exp(-v)) : std::exp(v) / (1.0 + std::exp(v));
    y[k] = static_cast<T>((u - a) / range - 0.5);
  }
}

}  // namespace flowrt::layers
