// The element-wise half of a coupling layer: given the net output h (computed from the
// conditioning part x_a) and the transformed part x_b, apply the additive or affine map or its
// inverse in place and return sum(log s) (0 for additive). Conventions (which channels of h are
// the shift t and the raw scale, the scale function, the order of shift and scale, the
// checkerboard masks) are documented in schema/flow.fbs.
//
// A channel coupling (Half::First/Second) transforms every position of the C/2 channels of x_b.
// A checkerboard coupling (Half::CheckerboardEven/Odd) transforms all C channels, but only at the
// positions where the mask m is 0; its net reads x * m (plus m itself with mask_channel), made by
// checkerboard_net_input.
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

// log s for the scale function at a = raw + scale_bias, computed without overflow
// (log sigmoid(a) = -softplus(-a)). `weight`: Tanh's scale_weight of the channel (log s =
// weight * tanh(a)); Sigmoid and Exp ignore it.
template <typename T>
inline T log_scale_of(ScaleFunction fn, T a, T weight) {
  switch (fn) {
    case ScaleFunction::Exp:
      return a;
    case ScaleFunction::Tanh:
      return weight * std::tanh(a);
    case ScaleFunction::Sigmoid:
      break;
  }
  return a > T(0) ? -std::log1p(std::exp(-a)) : a - std::log1p(std::exp(a));
}
template <typename T>
inline T scale_of(ScaleFunction fn, T a, T weight) {
  switch (fn) {
    case ScaleFunction::Exp:
      return std::exp(a);
    case ScaleFunction::Tanh:
      return std::exp(weight * std::tanh(a));
    case ScaleFunction::Sigmoid:
      break;
  }
  return T(1) / (T(1) + std::exp(-a));
}
// The same with Tanh's weight 1.
template <typename T>
inline T log_scale_of(ScaleFunction fn, T a) {
  return log_scale_of(fn, a, T(1));
}
template <typename T>
inline T scale_of(ScaleFunction fn, T a) {
  return scale_of(fn, a, T(1));
}

// Tanh's weight for transformed channel j (1 for the other scale functions).
template <typename T>
inline T scale_weight_of(const PCoupling<T> &c, int64_t j) {
  return c.scale_fn == ScaleFunction::Tanh ? c.scale_weight[static_cast<size_t>(j)] : T(1);
}

// The positions of an H x W plane a coupling transforms: all of them (parity < 0), or those
// with (i + j) % 2 == parity (a checkerboard's m = 0 positions).
struct Positions {
  int64_t h = 1, w = 1;
  int parity = -1;
  int64_t plane() const { return h * w; }
};

// The parity of the positions a checkerboard coupling transforms: m = 1 at (i + j) even for
// EVEN, so x_b sits at the odd positions; the reverse for ODD.
inline int transformed_parity(Half conditioning) {
  return conditioning == Half::CheckerboardEven ? 1 : 0;
}

// f(p) for every transformed position p, row by row.
template <typename F>
inline void for_each_position(const Positions &ps, F &&f) {
  if (ps.parity < 0) {
    for (int64_t p = 0; p < ps.plane(); ++p) f(p);
    return;
  }
  for (int64_t i = 0; i < ps.h; ++i) {
    const int64_t row = i * ps.w;
    for (int64_t j = (ps.parity + i) % 2; j < ps.w; j += 2) f(row + j);
  }
}

// The transform of `cb` channels of x_b (plane floats apart) at the positions `ps`; h's channel j
// goes with x_b's channel j. h_stride: floats between h's channels (0: the plane, a CHW image; a
// batched net output interleaves the images of a group channel by channel). pos_log_scale (may be
// null) gets each transformed element's log s (forward sign) at pos_log_scale[j * pos_stride + p]:
// pos_stride 0 sums the channels per position (a likelihood map's grid), pos_stride = plane keeps
// every element apart.
template <typename T>
double coupling_transform(const PCoupling<T> &c, const T *h, int64_t cb, const Positions &ps, T *xb,
                          bool inverse, double *pos_log_scale = nullptr, int64_t h_stride = 0,
                          int64_t pos_stride = 0) {
  const int64_t plane = ps.plane();
  const int64_t hs = h_stride > 0 ? h_stride : plane;
  if (c.type == CouplingType::Additive) {
    for (int64_t j = 0; j < cb; ++j) {
      const T *hj = h + j * hs;
      T *x = xb + j * plane;
      if (inverse)
        for_each_position(ps, [&](int64_t p) { x[p] -= hj[p]; });
      else
        for_each_position(ps, [&](int64_t p) { x[p] += hj[p]; });
    }
    return 0.0;
  }
  double logdet = 0;
  for (int64_t j = 0; j < cb; ++j) {
    int64_t tc = 0, rc = 0;
    shift_scale_channels(c.split, j, cb, &tc, &rc);
    const T *t = h + tc * hs;
    const T *raw = h + rc * hs;
    const T weight = scale_weight_of(c, j);
    T *x = xb + j * plane;
    double *pos = pos_log_scale ? pos_log_scale + j * pos_stride : nullptr;
    double acc = 0;
    for_each_position(ps, [&](int64_t p) {
      const T a = raw[p] + c.scale_bias;
      const T log_s = log_scale_of(c.scale_fn, a, weight);
      // Tanh's s is exp(log s) by definition; the others keep their own overflow-free form.
      const T s = c.scale_fn == ScaleFunction::Tanh ? std::exp(log_s) : scale_of(c.scale_fn, a);
      acc += static_cast<double>(log_s);
      if (pos) pos[p] += static_cast<double>(log_s);
      if (c.form == AffineForm::ShiftThenScale)
        x[p] = inverse ? x[p] / s - t[p] : (x[p] + t[p]) * s;
      else
        x[p] = inverse ? (x[p] - t[p]) / s : x[p] * s + t[p];
    });
    logdet += acc;
  }
  return inverse ? -logdet : logdet;
}

// A channel coupling: x_b is cb = C/2 whole planes. pos_log_scale: plane doubles, each position's
// log s summed over the channels (see coupling_transform for h_stride).
template <typename T>
double coupling_apply(const PCoupling<T> &c, const T *h, int64_t cb, int64_t plane, T *xb,
                      bool inverse, double *pos_log_scale = nullptr, int64_t h_stride = 0) {
  return coupling_transform(c, h, cb, Positions{1, plane, -1}, xb, inverse, pos_log_scale,
                            h_stride);
}

// A checkerboard coupling on the whole tensor x of shape s: its m = 0 positions change, the
// others pass through. pos_log_scale: s.plane() doubles, as for coupling_apply.
template <typename T>
double checkerboard_apply(const PCoupling<T> &c, const T *h, const Shape3 &s, T *x, bool inverse,
                          double *pos_log_scale = nullptr, int64_t h_stride = 0) {
  return coupling_transform(c, h, s.c, Positions{s.h, s.w, transformed_parity(c.conditioning)}, x,
                            inverse, pos_log_scale, h_stride);
}

// The net input of a checkerboard coupling on x of shape s: channels 0..C-1 are x * m, and with
// mask_channel channel C is m itself. `out` holds (C + mask_channel) planes.
template <typename T>
void checkerboard_net_input(Half conditioning, bool mask_channel, const Shape3 &s, const T *x,
                            T *out) {
  const int keep = 1 - transformed_parity(conditioning);  // the parity of the m = 1 positions
  const int64_t plane = s.plane();
  for (int64_t c = 0; c < s.c; ++c) {
    const T *src = x + c * plane;
    T *dst = out + c * plane;
    for (int64_t i = 0; i < s.h; ++i)
      for (int64_t j = 0; j < s.w; ++j) {
        const int64_t p = i * s.w + j;
        dst[p] = (i + j) % 2 == keep ? src[p] : T(0);
      }
  }
  if (!mask_channel) return;
  T *m = out + s.c * plane;
  for (int64_t i = 0; i < s.h; ++i)
    for (int64_t j = 0; j < s.w; ++j) m[i * s.w + j] = (i + j) % 2 == keep ? T(1) : T(0);
}

}  // namespace flowrt::layers
