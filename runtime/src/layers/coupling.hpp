// The element-wise half of a coupling layer: given the net output h (computed from the
// conditioning half x_a) and the transformed half x_b, apply the additive or affine map or its
// inverse in place and return sum(log s) (0 for additive). Conventions (which channels of h are
// the shift t and the raw scale, the scale function, the order of shift and scale) are documented
// in schema/flow.fbs.
#pragma once

#include <cmath>
#include <cstdint>

#include "model/program.hpp"

namespace flowrt::layers {

// Index of shift and raw-scale channels for transformed channel j of cb.
inline void shift_scale_channels(ShiftScaleSplit split, int64_t j, int64_t cb, int64_t *t,
                                 int64_t *raw) {
  switch (split) {
    case ShiftScaleSplit::ShiftScaleHalves:
      *t = j, *raw = cb + j;
      break;
    case ShiftScaleSplit::ScaleShiftHalves:
      *raw = j, *t = cb + j;
      break;
    case ShiftScaleSplit::ShiftScaleInterleaved:
      *t = 2 * j, *raw = 2 * j + 1;
      break;
    case ShiftScaleSplit::ScaleShiftInterleaved:
      *raw = 2 * j, *t = 2 * j + 1;
      break;
  }
}

// log s for the scale function, computed without overflow (log sigmoid(a) = -softplus(-a)).
template <typename T>
inline T log_scale_of(ScaleFunction fn, T a) {
  if (fn == ScaleFunction::Exp) return a;
  return a > T(0) ? -std::log1p(std::exp(-a)) : a - std::log1p(std::exp(a));
}
template <typename T>
inline T scale_of(ScaleFunction fn, T a) {
  return fn == ScaleFunction::Exp ? std::exp(a) : T(1) / (T(1) + std::exp(-a));
}

// pos_log_scale (plane doubles, may be null): each position's log s summed over the channels is
// added to it (forward sign), for likelihood maps. h_stride: floats between h's channels (0: plane,
// a CHW image; a batched net output interleaves the images of a group channel by channel).
template <typename T>
double coupling_apply(const PCoupling<T> &c, const T *h, int64_t cb, int64_t plane, T *xb,
                      bool inverse, double *pos_log_scale = nullptr, int64_t h_stride = 0) {
  const int64_t hs = h_stride > 0 ? h_stride : plane;
  if (c.type == CouplingType::Additive) {
    for (int64_t j = 0; j < cb; ++j) {
      const T *hj = h + j * hs;
      T *x = xb + j * plane;
      for (int64_t p = 0; p < plane; ++p) x[p] = inverse ? x[p] - hj[p] : x[p] + hj[p];
    }
    return 0.0;
  }
  double logdet = 0;
  for (int64_t j = 0; j < cb; ++j) {
    int64_t tc = 0, rc = 0;
    shift_scale_channels(c.split, j, cb, &tc, &rc);
    const T *t = h + tc * hs;
    const T *raw = h + rc * hs;
    T *x = xb + j * plane;
    double acc = 0;
    for (int64_t p = 0; p < plane; ++p) {
      const T a = raw[p] + c.scale_bias;
      const T s = scale_of(c.scale_fn, a);
      const double log_s = static_cast<double>(log_scale_of(c.scale_fn, a));
      acc += log_s;
      if (pos_log_scale) pos_log_scale[p] += log_s;
      if (c.form == AffineForm::ShiftThenScale)
        x[p] = inverse ? x[p] / s - t[p] : (x[p] + t[p]) * s;
      else
        x[p] = inverse ? (x[p] - t[p]) / s : x[p] * s + t[p];
    }
    logdet += acc;
  }
  return inverse ? -logdet : logdet;
}

}  // namespace flowrt::layers
