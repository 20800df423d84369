#include "backends/onednn/onednn_elementwise.hpp"

#include <algorithm>
#include <cmath>
#include <cstring>

namespace flowrt::onednn {
namespace {

constexpr double kHalfLog2Pi = 0.91893853320467274178;
constexpr int64_t kMinParallelRows = 128;

// Splits n images x `rows` rows into tasks (several per image when there are fewer images than
// threads) and runs f(image, r0, r1) on each. When `sums` is not null, the tasks' results are
// added to sums[image] in a fixed order.
template <typename F>
void for_rows(const Par &par, size_t n, int64_t rows, double *sums, F &&f) {
  const int64_t images = static_cast<int64_t>(n);
  // A few hundred rows cost less than waking the other threads.
  const bool parallel = par.threads > 1 && images * rows >= kMinParallelRows;
  const int64_t chunks = !parallel || images >= par.threads
                             ? 1
                             : std::min<int64_t>((par.threads + images - 1) / images, rows);
  const int64_t tasks = images * std::max<int64_t>(chunks, 1);
  double *partial = par.partial;
#pragma omp parallel for schedule(static) num_threads(par.threads) if (parallel)
  for (int64_t t = 0; t < tasks; ++t) {
    const int64_t i = t / chunks, k = t % chunks;
    const int64_t r0 = rows * k / chunks, r1 = rows * (k + 1) / chunks;
    partial[t] = f(i, r0, r1);
  }
  if (sums)
    for (int64_t t = 0; t < tasks; ++t) sums[t / chunks] += partial[t];
}

// Flat element loops: split into equal slices, one per thread.
template <typename F>
void for_range(const Par &par, size_t count, F &&f) {
  const int64_t total = static_cast<int64_t>(count);
  const int64_t parts = std::max<int64_t>(1, std::min<int64_t>(par.threads, total / 4096 + 1));
#pragma omp parallel for schedule(static) num_threads(par.threads) if (parts > 1)
  for (int64_t t = 0; t < parts; ++t) f(total * t / parts, total * (t + 1) / parts);
}

inline int64_t squeeze_channel(SqueezeOrder order, int64_t c, int64_t sub, int64_t channels) {
  return order == SqueezeOrder::ChannelMajor ? c * 4 + sub : sub * channels + c;
}

// log sigmoid(a) = -softplus(-a), without overflow.
inline float log_sigmoid(float a) {
  return a > 0.f ? -std::log1p(std::exp(-a)) : a - std::log1p(std::exp(a));
}

// One row of x_b (cb values, net output row hr) through the affine coupling; returns the row's
// sum of log s when want_ld. The scale function is a template argument: the choice is made once
// per call, not per element.
template <ScaleFunction Fn>
inline float affine_row(const CouplingSpec &c, const float *hr, float *xb, bool inverse,
                        bool want_ld) {
  float acc = 0.f;
  for (int64_t j = 0; j < c.cb; ++j) {
    const float t = hr[c.t_index[j]];
    const float a = hr[c.raw_index[j]] + c.scale_bias;
    float s;
    if constexpr (Fn == ScaleFunction::Exp) {
      s = std::exp(a);
      if (want_ld) acc += a;
    } else if constexpr (Fn == ScaleFunction::Tanh) {
      const float ls = c.scale_weight[j] * std::tanh(a);
      s = std::exp(ls);
      if (want_ld) acc += ls;
    } else {
      s = 1.f / (1.f + std::exp(-a));
      if (want_ld) acc += log_sigmoid(a);
    }
    if (c.shift_then_scale)
      xb[j] = inverse ? xb[j] / s - t : (xb[j] + t) * s;
    else
      xb[j] = inverse ? (xb[j] - t) / s : xb[j] * s + t;
  }
  return acc;
}

template <ScaleFunction Fn>
void coupling_with(const Par &par, const CouplingSpec &c, size_t n, int64_t plane, const float *h,
                   float *state, bool inverse, double *log_det) {
  auto row = [&](int64_t r) -> float {
    float *xb = state + r * c.channels + c.xb_offset;
    const float *hr = h + r * c.h_channels;
    if (c.affine) return affine_row<Fn>(c, hr, xb, inverse, log_det != nullptr);
    if (!inverse)
      for (int64_t j = 0; j < c.cb; ++j) xb[j] += hr[j];
    else
      for (int64_t j = 0; j < c.cb; ++j) xb[j] -= hr[j];
    return 0.f;
  };
  if (!c.checkerboard) {
    for_rows(par, n, plane, log_det, [&](int64_t i, int64_t r0, int64_t r1) {
      double acc = 0;
      for (int64_t r = i * plane + r0; r < i * plane + r1; ++r) acc += row(r);
      return acc;
    });
    return;
  }
  // Only x_b's positions are visited: every other one of each grid line, no mask test.
  const int64_t gh = c.height, gw = c.width;
  for_rows(par, n, gh, log_det, [&](int64_t i, int64_t y0, int64_t y1) {
    double acc = 0;
    for (int64_t y = y0; y < y1; ++y)
      for (int64_t x = (c.parity + y) & 1; x < gw; x += 2) acc += row((i * gh + y) * gw + x);
    return acc;
  });
}

}  // namespace

void squeeze(const Par &par, SqueezeOrder order, const Shape3 &in, size_t n, bool src_nchw,
             const float *src, float *dst) {
  const int64_t c4 = 4 * in.c, h2 = in.h / 2, w2 = in.w / 2;
  // Element (c, y, x) of an input image: NCHW or NHWC strides.
  const int64_t sc = src_nchw ? in.plane() : 1, sy = src_nchw ? in.w : in.w * in.c,
                sx = src_nchw ? 1 : in.c;
  for_rows(par, n, h2, nullptr, [&](int64_t i, int64_t y0, int64_t y1) {
    const float *img = src + i * in.numel();
    for (int64_t y = y0; y < y1; ++y)
      for (int64_t x = 0; x < w2; ++x) {
        float *row = dst + ((i * h2 + y) * w2 + x) * c4;
        for (int64_t sub = 0; sub < 4; ++sub) {
          const float *p = img + (2 * y + sub / 2) * sy + (2 * x + sub % 2) * sx;
          for (int64_t c = 0; c < in.c; ++c) row[squeeze_channel(order, c, sub, in.c)] = p[c * sc];
        }
      }
    return 0.0;
  });
}

void unsqueeze(const Par &par, SqueezeOrder order, const Shape3 &in, size_t n, bool dst_nchw,
               const float *src, float *dst) {
  const int64_t c4 = 4 * in.c, h2 = in.h / 2, w2 = in.w / 2;
  const int64_t sc = dst_nchw ? in.plane() : 1, sy = dst_nchw ? in.w : in.w * in.c,
                sx = dst_nchw ? 1 : in.c;
  for_rows(par, n, h2, nullptr, [&](int64_t i, int64_t y0, int64_t y1) {
    float *img = dst + i * in.numel();
    for (int64_t y = y0; y < y1; ++y)
      for (int64_t x = 0; x < w2; ++x) {
        const float *row = src + ((i * h2 + y) * w2 + x) * c4;
        for (int64_t sub = 0; sub < 4; ++sub) {
          float *p = img + (2 * y + sub / 2) * sy + (2 * x + sub % 2) * sx;
          for (int64_t c = 0; c < in.c; ++c) p[c * sc] = row[squeeze_channel(order, c, sub, in.c)];
        }
      }
    return 0.0;
  });
}

void nchw_to_nhwc(const Par &par, const Shape3 &s, size_t n, const float *src, float *dst) {
  const int64_t plane = s.plane();
  for_rows(par, n, plane, nullptr, [&](int64_t i, int64_t r0, int64_t r1) {
    const float *img = src + i * s.numel();
    float *out = dst + i * s.numel();
    for (int64_t c = 0; c < s.c; ++c)
      for (int64_t p = r0; p < r1; ++p) out[p * s.c + c] = img[c * plane + p];
    return 0.0;
  });
}

void nhwc_to_nchw(const Par &par, const Shape3 &s, size_t n, const float *src, float *dst) {
  const int64_t plane = s.plane();
  for_rows(par, n, plane, nullptr, [&](int64_t i, int64_t r0, int64_t r1) {
    const float *img = src + i * s.numel();
    float *out = dst + i * s.numel();
    for (int64_t c = 0; c < s.c; ++c)
      for (int64_t p = r0; p < r1; ++p) out[c * plane + p] = img[p * s.c + c];
    return 0.0;
  });
}

void permute(const Par &par, const int32_t *source, int64_t channels, int64_t rows,
             const float *src, float *dst, bool inverse) {
  for_rows(par, 1, rows, nullptr, [&](int64_t, int64_t r0, int64_t r1) {
    for (int64_t r = r0; r < r1; ++r) {
      const float *s = src + r * channels;
      float *d = dst + r * channels;
      if (!inverse)
        for (int64_t k = 0; k < channels; ++k) d[k] = s[source[k]];
      else
        for (int64_t k = 0; k < channels; ++k) d[source[k]] = s[k];
    }
    return 0.0;
  });
}

void gather_channels(const Par &par, int64_t channels, int64_t first, int64_t count, int64_t rows,
                     const float *src, float *dst) {
  for_rows(par, 1, rows, nullptr, [&](int64_t, int64_t r0, int64_t r1) {
    for (int64_t r = r0; r < r1; ++r)
      std::memcpy(dst + r * count, src + r * channels + first, sizeof(float) * count);
    return 0.0;
  });
}

void copy(const Par &par, size_t floats, const float *src, float *dst) {
  for_range(par, floats,
            [&](int64_t a, int64_t b) { std::memcpy(dst + a, src + a, sizeof(float) * (b - a)); });
}

void to_bf16(const Par &par, size_t count, const float *src, uint16_t *dst) {
  for_range(par, count, [&](int64_t a, int64_t b) {
    for (int64_t k = a; k < b; ++k) {
      uint32_t u;
      std::memcpy(&u, src + k, sizeof u);
      const bool nan = (u & 0x7fffffffu) > 0x7f800000u;
      const uint32_t rounded = (u + 0x7fffu + ((u >> 16) & 1u)) >> 16;
      dst[k] = static_cast<uint16_t>(nan ? (u >> 16) | 0x40u : rounded);
    }
  });
}

void channel_affine(const Par &par, const float *scale, const float *shift, const float *inv_scale,
                    int64_t channels, int64_t rows, float *x, bool inverse) {
  for_rows(par, 1, rows, nullptr, [&](int64_t, int64_t r0, int64_t r1) {
    for (int64_t r = r0; r < r1; ++r) {
      float *p = x + r * channels;
      if (!inverse)
        for (int64_t c = 0; c < channels; ++c) p[c] = scale[c] * p[c] + shift[c];
      else
        for (int64_t c = 0; c < channels; ++c) p[c] = (p[c] - shift[c]) * inv_scale[c];
    }
    return 0.0;
  });
}

void relu(const Par &par, size_t floats, float *x) {
  for_range(par, floats, [&](int64_t a, int64_t b) {
    for (int64_t k = a; k < b; ++k) x[k] = x[k] > 0.f ? x[k] : 0.f;
  });
}

void add_into(const Par &par, size_t floats, const float *src, bool relu_after, float *x) {
  for_range(par, floats, [&](int64_t a, int64_t b) {
    if (relu_after) {
      for (int64_t k = a; k < b; ++k) {
        const float v = x[k] + src[k];
        x[k] = v > 0.f ? v : 0.f;
      }
    } else {
      for (int64_t k = a; k < b; ++k) x[k] += src[k];
    }
  });
}

void add_map(const Par &par, const float *corr, int64_t per_image, size_t n, bool relu_after,
             float *x) {
  for_rows(par, n, per_image, nullptr, [&](int64_t i, int64_t a, int64_t b) {
    float *img = x + i * per_image;
    if (relu_after) {
      for (int64_t k = a; k < b; ++k) {
        const float v = img[k] + corr[k];
        img[k] = v > 0.f ? v : 0.f;
      }
    } else {
      for (int64_t k = a; k < b; ++k) img[k] += corr[k];
    }
    return 0.0;
  });
}

namespace {

// d[x, 0..out) += s[x * stride, 0..out) for x < count; Out > 0 fixes out at compile time (an
// unrolled inner loop: the few output channels of a tap conv would otherwise leave it mostly loop
// overhead).
template <int Out>
inline void add_taps(float *d, const float *s, int64_t count, int64_t stride, int64_t out) {
  const int64_t o = Out > 0 ? Out : out;
  for (int64_t x = 0; x < count; ++x, d += o, s += stride)
    for (int64_t c = 0; c < o; ++c) d[c] += s[c];
}

template <int Out>
void tap_sum_with(const Par &par, const float *taps, size_t n, int64_t h, int64_t w, int64_t kh,
                  int64_t kw, int64_t out, const float *bias, const float *corr, bool relu_after,
                  float *dst) {
  const int64_t ph = kh / 2, pw = kw / 2, row = kh * kw * out, line = w * out;
  for_rows(par, n, h, nullptr, [&](int64_t i, int64_t y0, int64_t y1) {
    for (int64_t y = y0; y < y1; ++y) {
      float *o = dst + (i * h + y) * line;
      for (int64_t x = 0; x < w; ++x)
        for (int64_t c = 0; c < out; ++c) o[x * out + c] = bias[c];
      if (corr)
        for (int64_t k = 0; k < line; ++k) o[k] += corr[y * line + k];
      // Tap by tap over the line's in-image span: no bounds test per pixel.
      for (int64_t ky = 0; ky < kh; ++ky) {
        const int64_t iy = y + ky - ph;
        if (iy < 0 || iy >= h) continue;
        const float *src = taps + (i * h + iy) * w * row;
        for (int64_t kx = 0; kx < kw; ++kx) {
          const int64_t dx = kx - pw, x0 = std::max<int64_t>(0, -dx),
                        x1 = std::min<int64_t>(w, w - dx);
          if (x1 > x0)
            add_taps<Out>(o + x0 * out, src + (x0 + dx) * row + (ky * kw + kx) * out, x1 - x0, row,
                          out);
        }
      }
      if (relu_after)
        for (int64_t k = 0; k < line; ++k) o[k] = o[k] > 0.f ? o[k] : 0.f;
    }
    return 0.0;
  });
}

}  // namespace

void tap_sum(const Par &par, const float *taps, size_t n, int64_t h, int64_t w, int64_t kh,
             int64_t kw, int64_t out, const float *bias, const float *corr, bool relu_after,
             float *dst) {
  // Tap convs have fewer than 16 outputs (onednn_net.cpp): each count gets an unrolled kernel.
  switch (out) {
#define FLOWRT_TAP_CASE(k) \
  case k:                  \
    return tap_sum_with<k>(par, taps, n, h, w, kh, kw, out, bias, corr, relu_after, dst);
    FLOWRT_TAP_CASE(1)
    FLOWRT_TAP_CASE(2)
    FLOWRT_TAP_CASE(3)
    FLOWRT_TAP_CASE(4)
    FLOWRT_TAP_CASE(5)
    FLOWRT_TAP_CASE(6)
    FLOWRT_TAP_CASE(7)
    FLOWRT_TAP_CASE(8)
    FLOWRT_TAP_CASE(9)
    FLOWRT_TAP_CASE(10)
    FLOWRT_TAP_CASE(11)
    FLOWRT_TAP_CASE(12)
    FLOWRT_TAP_CASE(13)
    FLOWRT_TAP_CASE(14)
    FLOWRT_TAP_CASE(15)
#undef FLOWRT_TAP_CASE
    default:
      tap_sum_with<0>(par, taps, n, h, w, kh, kw, out, bias, corr, relu_after, dst);
  }
}

void coupling(const Par &par, const CouplingSpec &c, size_t n, int64_t plane, const float *h,
              float *state, bool inverse, double *log_det) {
  switch (c.scale_fn) {
    case ScaleFunction::Exp:
      return coupling_with<ScaleFunction::Exp>(par, c, n, plane, h, state, inverse, log_det);
    case ScaleFunction::Tanh:
      return coupling_with<ScaleFunction::Tanh>(par, c, n, plane, h, state, inverse, log_det);
    case ScaleFunction::Sigmoid:
      break;
  }
  coupling_with<ScaleFunction::Sigmoid>(par, c, n, plane, h, state, inverse, log_det);
}

void checker_input(const Par &par, const CouplingSpec &c, bool mask_channel, size_t n,
                   const float *state, float *dst) {
  const int64_t ch = c.channels, out = ch + (mask_channel ? 1 : 0), gh = c.height, gw = c.width;
  for_rows(par, n, gh, nullptr, [&](int64_t i, int64_t y0, int64_t y1) {
    for (int64_t y = y0; y < y1; ++y) {
      const float *src = state + (i * gh + y) * gw * ch;
      float *d = dst + (i * gh + y) * gw * out;
      // x parity of the transformed positions on this line; m = 1 elsewhere. Rows are scaled
      // by m (branch-free) rather than tested position by position.
      const int64_t tx = (c.parity + y) & 1;
      auto mask = [tx](int64_t x) { return static_cast<float>((x ^ tx) & 1); };
      if (!mask_channel && ch == 1) {
        for (int64_t x = 0; x < gw; ++x) d[x] = src[x] * mask(x);
      } else if (!mask_channel) {
        for (int64_t x = 0; x < gw; ++x) {
          const float m = mask(x);
          for (int64_t k = 0; k < ch; ++k) d[x * ch + k] = src[x * ch + k] * m;
        }
      } else {
        for (int64_t x = 0; x < gw; ++x) {
          const float m = mask(x);
          for (int64_t k = 0; k < ch; ++k) d[x * out + k] = src[x * ch + k] * m;
          d[x * out + ch] = m;
        }
      }
    }
    return 0.0;
  });
}

void logit_encode(const Par &par, float alpha, const Shape3 &s, size_t n, bool src_nchw,
                  const float *src, float *dst, double *log_det) {
  // u = 1/2 + k x and 1 - u = 1/2 - k x with k = 1 - 2 alpha: both sides equally accurate in
  // float (no 1 - u cancellation); log k per element is added in double.
  const double k_d = 1.0 - 2.0 * static_cast<double>(alpha);
  const float k = static_cast<float>(k_d);
  const double log_k = std::log(k_d);
  const int64_t plane = s.plane(), ch = s.c;
  const bool transpose = src_nchw && !nhwc_is_nchw(s);
  auto one = [k](float x, float *y) {
    const float t = k * x, lu = std::log(0.5f + t), lv = std::log(0.5f - t);
    *y = lu - lv;
    return static_cast<double>(lu + lv);
  };
  for_rows(par, n, plane, log_det, [&](int64_t i, int64_t p0, int64_t p1) {
    const float *img = src + i * s.numel();
    float *o = dst + i * s.numel();
    double acc = 0;
    if (transpose) {
      for (int64_t c = 0; c < ch; ++c)
        for (int64_t p = p0; p < p1; ++p) acc -= one(img[c * plane + p], o + p * ch + c);
    } else {
      for (int64_t e = p0 * ch; e < p1 * ch; ++e) acc -= one(img[e], o + e);
    }
    return acc + log_k * static_cast<double>((p1 - p0) * ch);
  });
}

void logit_decode(const Par &par, float alpha, const Shape3 &s, size_t n, bool dst_nchw,
                  const float *src, float *dst) {
  // x = (sigmoid(y) - 1/2) / k = tanh(y / 2) / (2 k): no cancellation near x = 0.
  const float half_inv_k = static_cast<float>(0.5 / (1.0 - 2.0 * static_cast<double>(alpha)));
  const int64_t plane = s.plane(), ch = s.c;
  const bool transpose = dst_nchw && !nhwc_is_nchw(s);
  for_rows(par, n, plane, nullptr, [&](int64_t i, int64_t p0, int64_t p1) {
    const float *img = src + i * s.numel();
    float *o = dst + i * s.numel();
    if (transpose) {
      for (int64_t c = 0; c < ch; ++c)
        for (int64_t p = p0; p < p1; ++p)
          o[c * plane + p] = std::tanh(0.5f * img[p * ch + c]) * half_inv_k;
    } else {
      for (int64_t e = p0 * ch; e < p1 * ch; ++e) o[e] = std::tanh(0.5f * img[e]) * half_inv_k;
    }
    return 0.0;
  });
}

void reshape(const Par &par, const Shape3 &from, const Shape3 &to, size_t n, const float *src,
             float *dst) {
  if (nhwc_is_nchw(from)) return nchw_to_nhwc(par, to, n, src, dst);
  if (nhwc_is_nchw(to)) return nhwc_to_nchw(par, from, n, src, dst);
  // Both grids have several positions and channels: element e = c * plane + p of the vector.
  const int64_t pf = from.plane(), pt = to.plane();
  for_rows(par, n, pt, nullptr, [&](int64_t i, int64_t p0, int64_t p1) {
    const float *img = src + i * from.numel();
    float *o = dst + i * to.numel();
    for (int64_t p = p0; p < p1; ++p)
      for (int64_t c = 0; c < to.c; ++c) {
        const int64_t e = c * pt + p;
        o[p * to.c + c] = img[(e % pf) * from.c + e / pf];
      }
    return 0.0;
  });
}

void split_encode(const Par &par, const SplitSpec &s, size_t n, int64_t plane, const float *state,
                  float *keep_dst, float *keep_copy, float *z, double *log_p) {
  const int64_t cz = s.cz;
  for_rows(par, n, plane, s.has_prior ? nullptr : log_p, [&](int64_t i, int64_t r0, int64_t r1) {
    float *zi = z + i * s.image_dims + s.latent_offset;
    double acc = 0;
    for (int64_t p = r0; p < r1; ++p) {
      const int64_t r = i * plane + p;
      const float *row = state + r * s.channels;
      std::memcpy(keep_dst + r * cz, row + s.keep_offset, sizeof(float) * cz);
      if (keep_copy) std::memcpy(keep_copy + r * cz, row + s.keep_offset, sizeof(float) * cz);
      const float *leave = row + s.leave_offset;
      for (int64_t j = 0; j < cz; ++j) zi[j * plane + p] = leave[j];
      if (!s.has_prior) {
        float sq = 0.f;
        for (int64_t j = 0; j < cz; ++j) sq += leave[j] * leave[j];
        acc += -kHalfLog2Pi * cz - 0.5 * sq;
      }
    }
    return acc;
  });
}

void split_prior_log_p(const Par &par, const SplitSpec &s, size_t n, int64_t plane,
                       const float *state, const float *o, double *log_p) {
  const int64_t cz = s.cz;
  for_rows(par, n, plane, log_p, [&](int64_t i, int64_t r0, int64_t r1) {
    double acc = 0;
    for (int64_t r = i * plane + r0; r < i * plane + r1; ++r) {
      const float *leave = state + r * s.channels + s.leave_offset;
      const float *orow = o + r * 2 * cz;
      float row_acc = 0.f;
      for (int64_t j = 0; j < cz; ++j) {
        const float ls = orow[s.log_std_index[j]];
        const float d = (leave[j] - orow[s.mean_index[j]]) * std::exp(-ls);
        row_acc += -ls - 0.5f * d * d;
      }
      acc += row_acc - kHalfLog2Pi * cz;
    }
    return acc;
  });
}

void split_unkeep(const Par &par, const SplitSpec &s, size_t n, int64_t plane, const float *keep,
                  float *state, float *keep_copy) {
  const int64_t cz = s.cz;
  for_rows(par, n, plane, nullptr, [&](int64_t i, int64_t r0, int64_t r1) {
    for (int64_t r = i * plane + r0; r < i * plane + r1; ++r) {
      std::memcpy(state + r * s.channels + s.keep_offset, keep + r * cz, sizeof(float) * cz);
      if (keep_copy) std::memcpy(keep_copy + r * cz, keep + r * cz, sizeof(float) * cz);
    }
    return 0.0;
  });
}

void split_fill(const Par &par, const SplitSpec &s, size_t n, int64_t plane, const float *src,
                bool noise, float temperature, const float *o, float *state) {
  const int64_t cz = s.cz;
  for_rows(par, n, plane, nullptr, [&](int64_t i, int64_t r0, int64_t r1) {
    const float *si = src + i * s.image_dims + s.latent_offset;
    for (int64_t p = r0; p < r1; ++p) {
      const int64_t r = i * plane + p;
      float *leave = state + r * s.channels + s.leave_offset;
      if (!noise) {
        for (int64_t j = 0; j < cz; ++j) leave[j] = si[j * plane + p];
      } else if (!o) {
        for (int64_t j = 0; j < cz; ++j) leave[j] = temperature * si[j * plane + p];
      } else {
        const float *orow = o + r * 2 * cz;
        for (int64_t j = 0; j < cz; ++j)
          leave[j] = orow[s.mean_index[j]] +
                     temperature * std::exp(orow[s.log_std_index[j]]) * si[j * plane + p];
      }
    }
    return 0.0;
  });
}

void top_encode(const Par &par, const TopSpec &t, size_t n, const float *state,
                const int32_t *labels, float *z, double *log_p) {
  const int64_t c = t.channels, plane = t.plane;
  for_rows(par, n, plane, log_p, [&](int64_t i, int64_t r0, int64_t r1) {
    const int32_t label = labels && t.n_classes > 0 ? labels[i] : -1;
    float *zi = z + i * t.image_dims + t.latent_offset;
    double acc = 0;
    for (int64_t p = r0; p < r1; ++p) {
      const float *row = state + (i * plane + p) * c;
      const float *mean = t.mean.data() + p * c, *inv = t.inv_std.data() + p * c,
                  *ls = t.log_std.data() + p * c;
      float row_acc = 0.f;
      for (int64_t k = 0; k < c; ++k) {
        zi[k * plane + p] = row[k];
        float m = mean[k], is = inv[k], l = ls[k];
        if (label >= 0) {
          m += t.cls_mean[label * c + k];
          is *= t.cls_inv_std[label * c + k];
          l += t.cls_log_std[label * c + k];
        }
        const float d = (row[k] - m) * is;
        row_acc += -l - 0.5f * d * d;
      }
      acc += row_acc - kHalfLog2Pi * c;
    }
    return acc;
  });
}

void top_decode(const Par &par, const TopSpec &t, size_t n, const float *src, bool noise,
                float temperature, const int32_t *labels, float *state) {
  const int64_t c = t.channels, plane = t.plane;
  for_rows(par, n, plane, nullptr, [&](int64_t i, int64_t r0, int64_t r1) {
    const int32_t label = labels && t.n_classes > 0 ? labels[i] : -1;
    const float *si = src + i * t.image_dims + t.latent_offset;
    for (int64_t p = r0; p < r1; ++p) {
      float *row = state + (i * plane + p) * c;
      if (!noise) {
        for (int64_t k = 0; k < c; ++k) row[k] = si[k * plane + p];
        continue;
      }
      const float *mean = t.mean.data() + p * c, *sd = t.std.data() + p * c;
      for (int64_t k = 0; k < c; ++k) {
        float m = mean[k], s = sd[k];
        if (label >= 0) {
          m += t.cls_mean[label * c + k];
          s *= t.cls_std[label * c + k];
        }
        row[k] = m + temperature * s * si[k * plane + p];
      }
    }
    return 0.0;
  });
}

}  // namespace flowrt::onednn
