// Gradients of sum_k weight * log N(z_k; mean_k + mean_offset, exp(log_std_k + log_std_offset)^2)
// (runtime/src/layers/gaussian.hpp) with respect to z, the mean and the log-std.
#pragma once

#include <cmath>
#include <cstdint>

namespace flowrt::train {

// dz = (not accumulated); dmean, dlog_std accumulate (either may be null). Returns the sums of
// dmean and dlog_std (for class offsets, which shift every position of a channel).
template <typename T>
void gaussian_backward(const T *z, const T *mean, const T *log_std, int64_t n, T weight, T *dz,
                       T *dmean, T *dlog_std, T mean_offset = T(0), T log_std_offset = T(0),
                       T *sum_dmean = nullptr, T *sum_dlog_std = nullptr) {
  T sm = 0, sl = 0;
  for (int64_t k = 0; k < n; ++k) {
    const T inv = std::exp(-(log_std[k] + log_std_offset));
    const T d = (z[k] - mean[k] - mean_offset) * inv;
    const T gm = weight * d * inv;         // d/dmean = (z - mean) / sigma^2
    const T gl = weight * (d * d - T(1));  // d/dlog_std = d^2 - 1
    dz[k] = -gm;
    if (dmean) dmean[k] += gm;
    if (dlog_std) dlog_std[k] += gl;
    sm += gm;
    sl += gl;
  }
  if (sum_dmean) *sum_dmean += sm;
  if (sum_dlog_std) *sum_dlog_std += sl;
}

// Standard normal: d/dz log N(z; 0, 1) = -z.
template <typename T>
void standard_normal_backward(const T *z, int64_t n, T weight, T *dz) {
  for (int64_t k = 0; k < n; ++k) dz[k] = -weight * z[k];
}

}  // namespace flowrt::train
