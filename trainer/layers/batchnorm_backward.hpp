// Batch normalisation as a flow layer (RealNVP), per channel c over the batch's N = B*H*W
// elements: y = gamma (x - mean) / sqrt(var + eps) + beta, log|det| per image =
// H*W * sum_c log|gamma_c / sqrt(var_c + eps)|. Trained as (beta, log|gamma|) with a fixed sign
// of gamma, like the actnorm, so gamma never crosses zero.
// With the batch's statistics (training: mean and biased variance of this batch) the backward
// pass goes through the statistics, log|det| included; with fixed statistics (evaluation: the
// running averages) it is an actnorm's.
#pragma once

#include <cmath>
#include <cstdint>

#include "trainer/layers/actnorm_backward.hpp"
#include "trainer/layers/parallel.hpp"

namespace flowrt::train {

// mean[c] and the biased variance var[c] over the batch.
template <typename T>
void batch_moments(const ChannelLayout &l, const T *x, double *mean, double *var) {
  const double n = static_cast<double>(l.batch * l.plane);
#pragma omp parallel for schedule(static) if (parallel_worth(l.batch * l.channels * l.plane))
  for (int64_t c = 0; c < l.channels; ++c) {
    double sum = 0;
    for (int64_t i = 0; i < l.batch; ++i)
      for (int64_t p = 0; p < l.plane; ++p) sum += x[l.at(c, i) + p];
    const double m = sum / n;
    double ss = 0;
    for (int64_t i = 0; i < l.batch; ++i)
      for (int64_t p = 0; p < l.plane; ++p) {
        const double d = x[l.at(c, i) + p] - m;
        ss += d * d;
      }
    mean[c] = m;
    var[c] = ss / n;
  }
}

// Given dy: dbeta += sum(dy), dlog_gamma += gamma * sum(dy * xhat) + logdet_weight, and dx (may
// alias dy). xhat = (x - mean) * inv_std. With `through_stats`, mean and inv_std are the batch's
// own: dx = inv_std * (dxhat - mean(dxhat) - xhat * (sum(dxhat * xhat) + logdet_weight) / N),
// dxhat = gamma * dy, where logdet_weight = dL/d(log|det|) summed over the batch's images.
template <typename T>
void batchnorm_backward(const ChannelLayout &l, const T *x, const T *dy, const double *mean,
                        const double *inv_std, const T *gamma, T logdet_weight, bool through_stats,
                        T *dx, T *dbeta, T *dlog_gamma) {
  const double n = static_cast<double>(l.batch * l.plane), lw = logdet_weight;
#pragma omp parallel for schedule(static) if (parallel_worth(l.batch * l.channels * l.plane))
  for (int64_t c = 0; c < l.channels; ++c) {
    const double g = gamma[c], m = mean[c], is = inv_std[c];
    double sum_dy = 0, sum_dy_xhat = 0;
    for (int64_t i = 0; i < l.batch; ++i)
      for (int64_t p = 0; p < l.plane; ++p) {
        const int64_t k = l.at(c, i) + p;
        sum_dy += dy[k];
        sum_dy_xhat += dy[k] * ((x[k] - m) * is);
      }
    dbeta[c] += static_cast<T>(sum_dy);
    dlog_gamma[c] += static_cast<T>(g * sum_dy_xhat + lw);
    // dxhat's mean and its sum against xhat (plus the log|det| term), per element.
    const double a = through_stats ? g * sum_dy / n : 0.0;
    const double b = through_stats ? (g * sum_dy_xhat + lw) / n : 0.0;
    for (int64_t i = 0; i < l.batch; ++i)
      for (int64_t p = 0; p < l.plane; ++p) {
        const int64_t k = l.at(c, i) + p;
        const double xhat = (x[k] - m) * is;
        dx[k] = static_cast<T>(is * (g * dy[k] - a - xhat * b));
      }
  }
}

}  // namespace flowrt::train
