// Diagonal Gaussian priors: the log-density of latents and the sampling map
// z = mean + temperature * exp(log_std) * eps. `mean` and `log_std` are read per element with
// a stride so that both the halves and the interleaved layouts of a prior net's output work.
#pragma once

#include <cmath>
#include <cstdint>

#include "model/graph.hpp"

namespace flowrt::layers {

constexpr double kHalfLog2Pi = 0.91893853320467274178;

// Channel offsets of mean and log-std of latent channel j in a prior output of 2*cz channels.
inline void prior_channels(PriorLayout layout, int64_t j, int64_t cz, int64_t *mean,
                           int64_t *log_std) {
  if (layout == PriorLayout::MeanLogstdHalves) {
    *mean = j, *log_std = cz + j;
  } else {
    *mean = 2 * j, *log_std = 2 * j + 1;
  }
}

// Sum over n elements of log N(z; mean, exp(log_std)^2), accumulated in double.
template <typename T>
double gaussian_log_prob(const T *z, const T *mean, const T *log_std, int64_t n,
                         T mean_offset = T(0), T log_std_offset = T(0)) {
  double acc = 0;
  for (int64_t k = 0; k < n; ++k) {
    const double ls = static_cast<double>(log_std[k]) + log_std_offset;
    const double d = (static_cast<double>(z[k]) - mean[k] - mean_offset) * std::exp(-ls);
    acc += -kHalfLog2Pi - ls - 0.5 * d * d;
  }
  return acc;
}

template <typename T>
void gaussian_sample(const T *eps, const T *mean, const T *log_std, int64_t n, T temperature, T *z,
                     T mean_offset = T(0), T log_std_offset = T(0)) {
  for (int64_t k = 0; k < n; ++k)
    z[k] = mean[k] + mean_offset + temperature * std::exp(log_std[k] + log_std_offset) * eps[k];
}

}  // namespace flowrt::layers
