// Actnorm y = s * (x + b) per channel, trained as (b, log|s|) with a fixed sign, as Glow does, so
// the scale can never cross zero. The same code serves the flow's actnorm (NCHW) and a net's
// actnorm (CNHW): element (c, image i, pixel p) lives at c * channel_stride + i * image_stride + p.
#pragma once

#include <cmath>
#include <cstdint>

#include "trainer/layers/parallel.hpp"

namespace flowrt::train {

struct ChannelLayout {
  int64_t batch = 0, channels = 0, plane = 0;
  int64_t channel_stride = 0, image_stride = 0;
  static ChannelLayout nchw(int64_t batch, int64_t channels, int64_t plane) {
    return {batch, channels, plane, plane, channels * plane};
  }
  static ChannelLayout cnhw(int64_t batch, int64_t channels, int64_t plane) {
    return {batch, channels, plane, batch * plane, plane};
  }
  int64_t at(int64_t c, int64_t i) const { return c * channel_stride + i * image_stride; }
};

// Data-dependent initialisation (Glow): outputs get zero mean and unit variance per channel over
// the batch: b = -mean, s = 1 / (std + 1e-6), sign +1.
template <typename T>
void actnorm_data_init(const ChannelLayout &l, const T *x, T *bias, T *log_scale, T *sign) {
#pragma omp parallel for schedule(static) if (parallel_worth(l.batch * l.channels * l.plane))
  for (int64_t c = 0; c < l.channels; ++c) {
    double sum = 0;
    for (int64_t i = 0; i < l.batch; ++i)
      for (int64_t p = 0; p < l.plane; ++p) sum += x[l.at(c, i) + p];
    const double n = static_cast<double>(l.batch * l.plane), mean = sum / n;
    double var = 0;
    for (int64_t i = 0; i < l.batch; ++i)
      for (int64_t p = 0; p < l.plane; ++p) {
        const double d = x[l.at(c, i) + p] - mean;
        var += d * d;
      }
    bias[c] = static_cast<T>(-mean);
    log_scale[c] = static_cast<T>(-std::log(std::sqrt(var / n) + 1e-6));
    sign[c] = T(1);
  }
}

// dx = s * dy (dx may alias dy); dbias += s * sum(dy); dlog_scale += s * sum(dy * (x + b)) +
// logdet_weight, where logdet_weight = dL/d(log|s|) of the layer's log-determinant term.
template <typename T>
void actnorm_backward(const ChannelLayout &l, const T *x, const T *dy, const T *scale,
                      const T *bias, T logdet_weight, T *dx, T *dbias, T *dlog_scale) {
#pragma omp parallel for schedule(static) if (parallel_worth(l.batch * l.channels * l.plane))
  for (int64_t c = 0; c < l.channels; ++c) {
    T sum_dy = 0, sum_dyx = 0;
    const T s = scale[c], b = bias[c];
    for (int64_t i = 0; i < l.batch; ++i) {
      const int64_t off = l.at(c, i);
      for (int64_t p = 0; p < l.plane; ++p) {
        const T g = dy[off + p];
        sum_dy += g;
        sum_dyx += g * (x[off + p] + b);
        dx[off + p] = s * g;
      }
    }
    dbias[c] += s * sum_dy;
    dlog_scale[c] += s * sum_dyx + logdet_weight;
  }
}

}  // namespace flowrt::train
