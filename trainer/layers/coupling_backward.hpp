// Backward pass of a coupling layer's element-wise half (runtime/src/layers/coupling.hpp): given
// the net output h, the layer's input x_b and dL/dy_b, it gives dL/dx_b and dL/dh (which then
// flows back through the net to x_a). logdet_weight = dL/d(log|det|) of this image.
#pragma once

#include <cmath>
#include <cstdint>

#include "layers/coupling.hpp"

namespace flowrt::train {

template <typename T>
void coupling_backward(const PCoupling<T> &c, const T *h, const T *xb, const T *dyb, int64_t cb,
                       int64_t plane, T logdet_weight, T *dxb, T *dh) {
  if (c.type == CouplingType::Additive) {
    for (int64_t k = 0; k < cb * plane; ++k) dxb[k] = dh[k] = dyb[k];
    return;
  }
  const bool sigmoid = c.scale_fn == ScaleFunction::Sigmoid;
  for (int64_t j = 0; j < cb; ++j) {
    int64_t tc = 0, rc = 0;
    layers::shift_scale_channels(c.split, j, cb, &tc, &rc);
    const T *t = h + tc * plane, *raw = h + rc * plane;
    const T *x = xb + j * plane, *dy = dyb + j * plane;
    T *dx = dxb + j * plane, *dt = dh + tc * plane, *draw = dh + rc * plane;
    for (int64_t p = 0; p < plane; ++p) {
      const T a = raw[p] + c.scale_bias;
      const T s = layers::scale_of(c.scale_fn, a);
      // d log s / da and ds / da.
      const T dlog = sigmoid ? T(1) - s : T(1);
      const T ds = s * dlog;
      dx[p] = dy[p] * s;
      if (c.form == AffineForm::ShiftThenScale) {
        dt[p] = dy[p] * s;
        draw[p] = dy[p] * (x[p] + t[p]) * ds + logdet_weight * dlog;
      } else {
        dt[p] = dy[p];
        draw[p] = dy[p] * x[p] * ds + logdet_weight * dlog;
      }
    }
  }
}

}  // namespace flowrt::train
