// Backward passes of a net's element-wise ops on a CNHW activation of `channels` rows of `ld`.
#pragma once

#include <cmath>
#include <cstdint>

#include "trainer/layers/parallel.hpp"

namespace flowrt::train {

// ReLU: the gradient passes where the output is positive (y > 0 exactly when x > 0).
template <typename T>
void relu_backward(int64_t n, const T *y, T *dy) {
#pragma omp parallel for schedule(static) if (parallel_worth(n))
  for (int64_t k = 0; k < n; ++k) dy[k] = y[k] > T(0) ? dy[k] : T(0);  // branch-free: vectorises
}

// y = x * exp(factor * log_scale[c]): dlog_scale[c] += factor * sum(dy * y), dx = dy * exp(...).
template <typename T>
void output_scale_backward(int64_t channels, int64_t ld, const T *log_scale, T factor, const T *y,
                           T *dy, T *dlog_scale) {
#pragma omp parallel for schedule(static) if (parallel_worth(channels * ld))
  for (int64_t c = 0; c < channels; ++c) {
    const T e = std::exp(factor * log_scale[c]);
    T acc = 0;
    for (int64_t q = 0; q < ld; ++q) {
      acc += dy[c * ld + q] * y[c * ld + q];
      dy[c * ld + q] *= e;
    }
    dlog_scale[c] += factor * acc;
  }
}

}  // namespace flowrt::train
