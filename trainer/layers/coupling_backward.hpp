// The element-wise half of a coupling layer for training: its forward map (as the runtime's
// layers/coupling.hpp, extended with checkerboard masks and RealNVP's tanh scale) and its
// backward pass. Given the net output h (computed from the conditioning part x_a), the layer's
// input x_b and dL/dy_b, the backward pass gives dL/dx_b and dL/dh (which then flows back through
// the net to x_a). logdet_weight = dL/d(log|det|) of this image.
//
// `active` (plane entries, or null for all): the positions the coupling transforms. A channel
// coupling transforms every position of its x_b channels; a checkerboard coupling transforms
// every channel at the positions where the mask m is 0, and passes the others through.
#pragma once

#include <cmath>
#include <cstdint>

#include "layers/coupling.hpp"

namespace flowrt::train {

// The scale s of one element, log s, d(log s)/d(raw) and, for the tanh scale, tanh(a)
// (= d(log s)/d(scale_weight)). w: the tanh scale's weight of this channel.
template <typename T>
struct ScaleTerms {
  T s, log_s, dlog_draw, tanh_a;
};

template <typename T>
inline ScaleTerms<T> scale_terms(ScaleFunction fn, T a, T w) {
  switch (fn) {
    case ScaleFunction::Exp:
      return {std::exp(a), a, T(1), T(0)};
    case ScaleFunction::Tanh: {
      const T th = std::tanh(a);
      return {std::exp(w * th), w * th, w * (T(1) - th * th), th};
    }
    case ScaleFunction::Sigmoid:
      break;
  }
  const T s = layers::scale_of(ScaleFunction::Sigmoid, a);
  return {s, layers::log_scale_of(ScaleFunction::Sigmoid, a), T(1) - s, T(0)};
}

// x_b <- the coupling of x_b (cb channels of `plane`, in place) with the net output h of this
// image (NCHW); returns sum(log s) over the transformed elements (0 for additive).
// scale_weight: [cb], the tanh scale's weights (unused by the other scale functions).
template <typename T>
double coupling_forward(const PCoupling<T> &c, const T *scale_weight, const T *h, int64_t cb,
                        int64_t plane, const uint8_t *active, T *xb) {
  if (c.type == CouplingType::Additive) {
    for (int64_t j = 0; j < cb; ++j) {
      const T *hj = h + j * plane;
      T *x = xb + j * plane;
      for (int64_t p = 0; p < plane; ++p)
        if (!active || active[p]) x[p] += hj[p];
    }
    return 0.0;
  }
  double logdet = 0;
  for (int64_t j = 0; j < cb; ++j) {
    int64_t tc = 0, rc = 0;
    layers::shift_scale_channels(c.split, j, cb, &tc, &rc);
    const T *t = h + tc * plane, *raw = h + rc * plane;
    const T w = c.scale_fn == ScaleFunction::Tanh ? scale_weight[j] : T(0);
    T *x = xb + j * plane;
    double acc = 0;
    for (int64_t p = 0; p < plane; ++p) {
      if (active && !active[p]) continue;
      const ScaleTerms<T> st = scale_terms(c.scale_fn, raw[p] + c.scale_bias, w);
      acc += static_cast<double>(st.log_s);
      x[p] = c.form == AffineForm::ShiftThenScale ? (x[p] + t[p]) * st.s : x[p] * st.s + t[p];
    }
    logdet += acc;
  }
  return logdet;
}

// dxb and dh are written in full (dh is 0 at positions the coupling passes through, where
// dxb = dyb); dscale_weight ([cb], tanh only) is added to.
template <typename T>
void coupling_backward(const PCoupling<T> &c, const T *scale_weight, const T *h, const T *xb,
                       const T *dyb, int64_t cb, int64_t plane, const uint8_t *active,
                       T logdet_weight, T *dxb, T *dh, T *dscale_weight) {
  if (c.type == CouplingType::Additive) {
    for (int64_t k = 0; k < cb * plane; ++k) {
      dxb[k] = dyb[k];
      dh[k] = !active || active[k % plane] ? dyb[k] : T(0);
    }
    return;
  }
  const bool tanh = c.scale_fn == ScaleFunction::Tanh;
  for (int64_t j = 0; j < cb; ++j) {
    int64_t tc = 0, rc = 0;
    layers::shift_scale_channels(c.split, j, cb, &tc, &rc);
    const T *t = h + tc * plane, *raw = h + rc * plane;
    const T *x = xb + j * plane, *dy = dyb + j * plane;
    T *dx = dxb + j * plane, *dt = dh + tc * plane, *draw = dh + rc * plane;
    const T w = tanh ? scale_weight[j] : T(0);
    T dw = 0;
    for (int64_t p = 0; p < plane; ++p) {
      if (active && !active[p]) {
        dx[p] = dy[p];
        dt[p] = draw[p] = T(0);
        continue;
      }
      const ScaleTerms<T> st = scale_terms(c.scale_fn, raw[p] + c.scale_bias, w);
      // dL/d(log s): through y (dy/ds = the scaled quantity) and through log|det|.
      T dlog;
      if (c.form == AffineForm::ShiftThenScale) {
        dt[p] = dy[p] * st.s;
        dlog = dy[p] * (x[p] + t[p]) * st.s + logdet_weight;
      } else {
        dt[p] = dy[p];
        dlog = dy[p] * x[p] * st.s + logdet_weight;
      }
      dx[p] = dy[p] * st.s;
      draw[p] = dlog * st.dlog_draw;
      dw += dlog * st.tanh_a;
    }
    if (tanh) dscale_weight[j] += dw;
  }
}

}  // namespace flowrt::train
