// Batched "same" 2-D convolution (stride 1, odd kernels) forward and backward for training,
// with the format's three padding modes (zeros, constant, Glow's edge channel). Activations are
// CNHW: channel c of image b at pixel p is x[c * ld + b * plane + p] with ld = batch * plane, so
// one GEMM covers a whole chunk of images. The math equals runtime/src/layers/conv2d.hpp
// (im2col + GEMM instead of direct loops). Images are processed in chunks so that the im2col
// buffer stays cache- and memory-friendly.
#pragma once

#include <algorithm>
#include <cstdint>
#include <vector>

#include "model/graph.hpp"
#include "trainer/layers/affine_relu.hpp"
#include "trainer/layers/gemm.hpp"
#include "trainer/layers/parallel.hpp"

namespace flowrt::train {

struct ConvGeometry {
  int64_t in_ch = 0, in_total = 0, out_ch = 0, kh = 1, kw = 1;
  PaddingMode padding = PaddingMode::Zeros;
  double pad_value = 0;
  int64_t k_total() const { return in_total * kh * kw; }
  // A 1x1 kernel never reads padding, and the edge channel is 0 inside the image.
  bool pointwise() const { return kh == 1 && kw == 1; }
};

struct BatchGeometry {
  int64_t batch = 0, h = 0, w = 0;
  int64_t plane() const { return h * w; }
  int64_t ld() const { return batch * h * w; }
};

namespace detail {

// Images per chunk: keeps the im2col buffer near 4M elements.
inline int64_t conv_chunk(const ConvGeometry &g, const BatchGeometry &b) {
  const int64_t per_image = std::max<int64_t>(1, g.k_total() * b.plane());
  return std::clamp<int64_t>((int64_t{1} << 22) / per_image, 1, b.batch);
}

// col[(i*kh + ky)*kw + kx][q], q over the images [b0, b1) of a CNHW input.
template <typename T>
void im2col(const ConvGeometry &g, const BatchGeometry &bg, const T *in, int64_t b0, int64_t b1,
            T *col) {
  const int64_t plane = bg.plane(), ld = bg.ld(), n = (b1 - b0) * plane;
  const int64_t ph = g.kh / 2, pw = g.kw / 2;
  const T outside_data = g.padding == PaddingMode::Constant ? static_cast<T>(g.pad_value) : T(0);
#pragma omp parallel for schedule(static) if (parallel_worth(g.k_total() * n))
  for (int64_t r = 0; r < g.k_total(); ++r) {
    const int64_t i = r / (g.kh * g.kw), ky = (r / g.kw) % g.kh, kx = r % g.kw;
    const bool edge = i >= g.in_ch;
    const T outside = edge ? T(1) : outside_data;
    const T inside_edge = T(0);
    const int64_t dy = ky - ph, dx = kx - pw;
    T *dst = col + r * n;
    for (int64_t b = b0; b < b1; ++b) {
      const T *src = edge ? nullptr : in + i * ld + b * plane;
      T *d = dst + (b - b0) * plane;
      for (int64_t y = 0; y < bg.h; ++y) {
        const int64_t iy = y + dy;
        T *row = d + y * bg.w;
        if (iy < 0 || iy >= bg.h) {
          for (int64_t x = 0; x < bg.w; ++x) row[x] = outside;
          continue;
        }
        const int64_t x0 = std::max<int64_t>(0, -dx), x1 = std::min<int64_t>(bg.w, bg.w - dx);
        for (int64_t x = 0; x < x0; ++x) row[x] = outside;
        for (int64_t x = x1; x < bg.w; ++x) row[x] = outside;
        if (src) {
          const T *srow = src + iy * bg.w + dx;
          for (int64_t x = x0; x < x1; ++x) row[x] = srow[x];
        } else {
          for (int64_t x = x0; x < x1; ++x) row[x] = inside_edge;
        }
      }
    }
  }
}

// dx += col2im(dcol) over the data channels (padding and the edge channel take no gradient).
template <typename T>
void col2im_add(const ConvGeometry &g, const BatchGeometry &bg, const T *dcol, int64_t b0,
                int64_t b1, T *dx) {
  const int64_t plane = bg.plane(), ld = bg.ld(), n = (b1 - b0) * plane;
  const int64_t ph = g.kh / 2, pw = g.kw / 2;
#pragma omp parallel for schedule(static) if (parallel_worth(g.k_total() * n))
  for (int64_t i = 0; i < g.in_ch; ++i)
    for (int64_t ky = 0; ky < g.kh; ++ky)
      for (int64_t kx = 0; kx < g.kw; ++kx) {
        const T *src = dcol + ((i * g.kh + ky) * g.kw + kx) * n;
        const int64_t dy = ky - ph, dx_ = kx - pw;
        const int64_t x0 = std::max<int64_t>(0, -dx_), x1 = std::min<int64_t>(bg.w, bg.w - dx_);
        for (int64_t b = b0; b < b1; ++b)
          for (int64_t y = 0; y < bg.h; ++y) {
            const int64_t iy = y + dy;
            if (iy < 0 || iy >= bg.h) continue;
            const T *srow = src + (b - b0) * plane + y * bg.w;
            T *drow = dx + i * ld + b * plane + iy * bg.w + dx_;
            for (int64_t x = x0; x < x1; ++x) drow[x] += srow[x];
          }
      }
}

// The output-side form, for convs with fewer outputs than inputs (a coupling net's last conv):
// Z[(o, ky, kx)][q] = sum_i W[o][i][ky][kx] * in[i][q] is one GEMM over the data channels (no
// im2col of the wide input), then every output pixel gathers its taps' Z values; taps that fall
// outside the image contribute W * (pad value) instead, summed over the input channels.
inline bool output_side(const ConvGeometry &g) {
  return !g.pointwise() && g.out_ch < g.in_total;
}

// W reordered to [(o, ky, kx)][i] over the data channels, and pad[(o, ky, kx)] = the
// contribution of an out-of-image tap.
template <typename T>
void output_side_weights(const ConvGeometry &g, const T *weight, std::vector<T> &wt,
                         std::vector<T> &pad) {
  const int64_t taps = g.kh * g.kw;
  wt.resize(static_cast<size_t>(g.out_ch * taps * g.in_ch));
  pad.assign(static_cast<size_t>(g.out_ch * taps), T(0));
  const T data_pad = g.padding == PaddingMode::Constant ? static_cast<T>(g.pad_value) : T(0);
  for (int64_t o = 0; o < g.out_ch; ++o)
    for (int64_t t = 0; t < taps; ++t) {
      T acc = 0;
      for (int64_t i = 0; i < g.in_total; ++i) {
        const T w = weight[(o * g.in_total + i) * taps + t];
        if (i < g.in_ch) wt[(o * taps + t) * g.in_ch + i] = w;
        acc += w * (i < g.in_ch ? data_pad : T(1));
      }
      pad[o * taps + t] = acc;
    }
}

// out[o][q] += sum over taps of Z[(o, tap)][q + shift] (or the tap's pad contribution).
template <typename T>
void gather_taps(const ConvGeometry &g, const BatchGeometry &bg, const T *z, const T *pad, T *out) {
  const int64_t taps = g.kh * g.kw, plane = bg.plane(), ld = bg.ld();
  const int64_t ph = g.kh / 2, pw = g.kw / 2;
#pragma omp parallel for collapse(2) schedule(static) if (parallel_worth(g.out_ch * taps * ld))
  for (int64_t o = 0; o < g.out_ch; ++o)
    for (int64_t b = 0; b < bg.batch; ++b)
      for (int64_t t = 0; t < taps; ++t) {
        const int64_t dy = t / g.kw - ph, dx = t % g.kw - pw;
        const T *zr = z + (o * taps + t) * ld + b * plane;
        const T pv = pad[o * taps + t];
        T *dst = out + o * ld + b * plane;
        const int64_t x0 = std::max<int64_t>(0, -dx), x1 = std::min<int64_t>(bg.w, bg.w - dx);
        for (int64_t y = 0; y < bg.h; ++y) {
          const int64_t iy = y + dy;
          T *row = dst + y * bg.w;
          if (iy < 0 || iy >= bg.h) {
            for (int64_t x = 0; x < bg.w; ++x) row[x] += pv;
            continue;
          }
          for (int64_t x = 0; x < x0; ++x) row[x] += pv;
          for (int64_t x = x1; x < bg.w; ++x) row[x] += pv;
          const T *zrow = zr + iy * bg.w + dx;
          for (int64_t x = x0; x < x1; ++x) row[x] += zrow[x];
        }
      }
}

// The adjoint of gather_taps: dz[(o, tap)][q] = dout[o][q - shift] where that output exists;
// dpad[(o, tap)] = the sum of dout over outputs whose tap falls outside.
template <typename T>
void scatter_taps(const ConvGeometry &g, const BatchGeometry &bg, const T *dout, T *dz, T *dpad) {
  const int64_t taps = g.kh * g.kw, plane = bg.plane(), ld = bg.ld();
  const int64_t ph = g.kh / 2, pw = g.kw / 2;
#pragma omp parallel for schedule(static) if (parallel_worth(g.out_ch * taps * ld))
  for (int64_t r = 0; r < g.out_ch * taps; ++r) {
    const int64_t o = r / taps, t = r % taps;
    const int64_t dy = t / g.kw - ph, dx = t % g.kw - pw;
    const int64_t x0 = std::max<int64_t>(0, -dx), x1 = std::min<int64_t>(bg.w, bg.w - dx);
    T outside = 0;
    for (int64_t b = 0; b < bg.batch; ++b) {
      const T *src = dout + o * ld + b * plane;
      T *zr = dz + r * ld + b * plane;
      for (int64_t q = 0; q < plane; ++q) zr[q] = T(0);
      for (int64_t y = 0; y < bg.h; ++y) {
        const int64_t iy = y + dy;
        const T *row = src + y * bg.w;
        if (iy < 0 || iy >= bg.h) {
          for (int64_t x = 0; x < bg.w; ++x) outside += row[x];
          continue;
        }
        for (int64_t x = 0; x < x0; ++x) outside += row[x];
        for (int64_t x = x1; x < bg.w; ++x) outside += row[x];
        T *zrow = zr + iy * bg.w + dx;
        for (int64_t x = x0; x < x1; ++x) zrow[x] = row[x];
      }
    }
    dpad[r] = outside;
  }
}

}  // namespace detail

namespace detail {

// The bf16 copy of a float gradient buffer that both backward products read (null otherwise).
template <typename T>
const uint16_t *bf16_copy(Bf16Copy *copy, const T *src, int64_t n) {
  if constexpr (std::is_same_v<T, float>) {
    if (copy && gemm_bf16_active()) {
      uint16_t *dst = copy->write(n);
      to_bf16(src, n, dst);
      return dst;
    }
  }
  (void)copy, (void)src, (void)n;
  return nullptr;
}

}  // namespace detail

// out[O, ld] = conv(in[in_ch, ld]) + bias (bias may be null), then max(0, .) when `relu` (a
// net's conv -> ReLU pair costs one pass over the output instead of two). `col` is scratch.
// in16, w16 (bf16 products only, may be null): bf16 copies of `in` and `weight` (see sgemm).
// out16 (bf16 products, with relu): the ReLU's output goes only there, as the next conv's bf16
// operand, written by the output pass; `out` keeps the product before the bias and the ReLU.
// (The product itself cannot write bf16: oneDNN 2.6's brgemm matmul has no per-row bias, and
// with one it falls back to its reference kernel.)
template <typename T>
void conv_forward(const ConvGeometry &g, const BatchGeometry &bg, const T *weight, const T *bias,
                  const T *in, T *out, std::vector<T> &col, bool relu = false,
                  const uint16_t *in16 = nullptr, const uint16_t *w16 = nullptr,
                  uint16_t *out16 = nullptr) {
  const int64_t plane = bg.plane(), ld = bg.ld();
  if (g.pointwise()) {
    gemm<T>(false, false, g.out_ch, ld, g.in_ch, T(1), weight, g.in_total, in, ld, T(0), out, ld,
            w16, in16);
  } else if (detail::output_side(g)) {
    std::vector<T> wt, pad;
    detail::output_side_weights(g, weight, wt, pad);
    const int64_t rows = g.out_ch * g.kh * g.kw;
    col.resize(static_cast<size_t>(rows * ld));
    gemm<T>(false, false, rows, ld, g.in_ch, T(1), wt.data(), g.in_ch, in, ld, T(0), col.data(), ld,
            nullptr, in16);
    std::fill(out, out + g.out_ch * ld, T(0));
    detail::gather_taps(g, bg, col.data(), pad.data(), out);
  } else {
    const int64_t chunk = detail::conv_chunk(g, bg);
    col.resize(static_cast<size_t>(g.k_total() * chunk * plane));
    for (int64_t b0 = 0; b0 < bg.batch; b0 += chunk) {
      const int64_t b1 = std::min(bg.batch, b0 + chunk), n = (b1 - b0) * plane;
      detail::im2col(g, bg, in, b0, b1, col.data());
      gemm<T>(false, false, g.out_ch, n, g.k_total(), T(1), weight, g.k_total(), col.data(), n,
              T(0), out + b0 * plane, ld, w16);
    }
  }
  if constexpr (std::is_same_v<T, float>) {
    if (out16 && relu) {
      affine_relu_bf16(nullptr, bias, g.out_ch, ld, out, out16);
      return;
    }
  }
  if (bias || relu) {
#pragma omp parallel for schedule(static) if (parallel_worth(g.out_ch * ld))
    for (int64_t o = 0; o < g.out_ch; ++o) {
      const T b = bias ? bias[o] : T(0);
      T *row = out + o * ld;
      if (relu) {
        for (int64_t q = 0; q < ld; ++q) row[q] = std::max(row[q] + b, T(0));
      } else {
        for (int64_t q = 0; q < ld; ++q) row[q] += b;
      }
    }
  }
}

// Given dout = dL/dout: dweight += dL/dW, dbias += dL/db (if not null), and dL/din into dx (if
// not null; added to it when dx_accumulate, written over it otherwise). With relu_out (the output
// of a fused forward), dout is the gradient after the ReLU: it is first masked where relu_out is
// 0, in place, in the same pass that sums dbias. `col` and `dcol` are scratch. For bf16
// products: in16, w16 as in conv_forward, g16 scratch for the bf16 copy of the output gradient
// that both products read, and relu_out16 in place of relu_out when the forward wrote out16
// (all may be null).
template <typename T>
void conv_backward(const ConvGeometry &g, const BatchGeometry &bg, const T *weight, const T *in,
                   T *dout, T *dweight, T *dbias, T *dx, std::vector<T> &col, std::vector<T> &dcol,
                   const T *relu_out = nullptr, bool dx_accumulate = true,
                   const uint16_t *in16 = nullptr, const uint16_t *w16 = nullptr,
                   Bf16Copy *g16 = nullptr, const uint16_t *relu_out16 = nullptr) {
  const int64_t plane = bg.plane(), ld = bg.ld();
  // With bf16 products the pass also writes the bf16 copy of the masked gradient that both
  // products of a 1x1 or im2col conv read (an output-side conv's read its scattered taps).
  uint16_t *pass16 = nullptr;
  if constexpr (std::is_same_v<T, float>) {
    if (g16 && gemm_bf16_active() && !detail::output_side(g) && (dbias || relu_out || relu_out16))
      pass16 = g16->write(g.out_ch * ld);
  }
  if (dbias || relu_out || relu_out16) {
#pragma omp parallel for schedule(static) if (parallel_worth(g.out_ch * ld))
    for (int64_t o = 0; o < g.out_ch; ++o) {
      T *row = dout + o * ld;
      const T *y = relu_out ? relu_out + o * ld : nullptr;
      const uint16_t *y16 = relu_out16 ? relu_out16 + o * ld : nullptr;
      T acc;
      if constexpr (std::is_same_v<T, float>) {
        acc = pass16 ? mask_sum_row_bf16(row, y, y16, pass16 + o * ld, ld)
                     : mask_sum_row<false>(row, y, y16, nullptr, ld);
      } else {
        acc = mask_sum_row<false>(row, y, y16, nullptr, ld);
      }
      if (dbias) dbias[o] += acc;
    }
  }
  const T dx_beta = dx_accumulate ? T(1) : T(0);
  if (g.pointwise()) {
    const uint16_t *dout16 = pass16 ? pass16 : detail::bf16_copy(g16, dout, g.out_ch * ld);
    gemm<T>(false, true, g.out_ch, g.in_ch, ld, T(1), dout, ld, in, ld, T(1), dweight, g.in_total,
            dout16, in16);
    if (dx)
      gemm<T>(true, false, g.in_ch, ld, g.out_ch, T(1), weight, g.in_total, dout, ld, dx_beta, dx,
              ld, w16, dout16);
    return;
  }
  if (detail::output_side(g)) {
    const int64_t taps = g.kh * g.kw, rows = g.out_ch * taps;
    std::vector<T> wt, pad, dwt(static_cast<size_t>(rows * g.in_ch)), dpad(rows);
    detail::output_side_weights(g, weight, wt, pad);
    dcol.resize(static_cast<size_t>(rows * ld));
    detail::scatter_taps(g, bg, dout, dcol.data(), dpad.data());
    const uint16_t *dcol16 = detail::bf16_copy(g16, dcol.data(), rows * ld);
    gemm<T>(false, true, rows, g.in_ch, ld, T(1), dcol.data(), ld, in, ld, T(0), dwt.data(),
            g.in_ch, dcol16, in16);
    if (dx)
      gemm<T>(true, false, g.in_ch, ld, rows, T(1), wt.data(), g.in_ch, dcol.data(), ld, dx_beta,
              dx, ld, nullptr, dcol16);
    const T data_pad = g.padding == PaddingMode::Constant ? static_cast<T>(g.pad_value) : T(0);
    for (int64_t o = 0; o < g.out_ch; ++o)
      for (int64_t i = 0; i < g.in_total; ++i)
        for (int64_t t = 0; t < taps; ++t) {
          const T from_data = i < g.in_ch ? dwt[(o * taps + t) * g.in_ch + i] : T(0);
          const T from_pad = dpad[o * taps + t] * (i < g.in_ch ? data_pad : T(1));
          dweight[(o * g.in_total + i) * taps + t] += from_data + from_pad;
        }
    return;
  }
  if (dx && !dx_accumulate) std::fill(dx, dx + g.in_ch * ld, T(0));
  const uint16_t *dout16 = pass16 ? pass16 : detail::bf16_copy(g16, dout, g.out_ch * ld);
  const int64_t chunk = detail::conv_chunk(g, bg), kt = g.k_total();
  col.resize(static_cast<size_t>(kt * chunk * plane));
  if (dx) dcol.resize(col.size());
  for (int64_t b0 = 0; b0 < bg.batch; b0 += chunk) {
    const int64_t b1 = std::min(bg.batch, b0 + chunk), n = (b1 - b0) * plane;
    detail::im2col(g, bg, in, b0, b1, col.data());
    const uint16_t *dout16_b = dout16 ? dout16 + b0 * plane : nullptr;
    gemm<T>(false, true, g.out_ch, kt, n, T(1), dout + b0 * plane, ld, col.data(), n, T(1), dweight,
            kt, dout16_b);
    if (dx) {
      gemm<T>(true, false, kt, n, g.out_ch, T(1), weight, kt, dout + b0 * plane, ld, T(0),
              dcol.data(), n, w16, dout16_b);
      detail::col2im_add(g, bg, dcol.data(), b0, b1, dx);
    }
  }
}

}  // namespace flowrt::train
