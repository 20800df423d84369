// Direct "same" 2-D convolution on one CHW image, stride 1, odd kernels, with the three padding
// conventions of the format: zeros, a constant value, and Glow's extra edge channel (an input
// channel that is 1 outside the image and 0 inside). Out-of-image taps contribute
// weight * pad_value (zeros/constant) or weight * 1 (edge channel); in-image taps of the edge
// channel contribute nothing. The inner loop runs over contiguous x so it vectorises.
#pragma once

#include <algorithm>
#include <cstdint>

#include "model/program.hpp"

namespace flowrt::layers {

template <typename T>
void conv2d_output_channel(const PConv<T> &c, int64_t o, const T *in, int64_t h, int64_t w,
                           T *out) {
  const int64_t plane = h * w;
  const int64_t ph = c.kh / 2, pw = c.kw / 2;
  T *dst = out + o * plane;
  const T b = c.bias[o];
  for (int64_t p = 0; p < plane; ++p) dst[p] = b;
  for (int64_t i = 0; i < c.in_total; ++i) {
    const bool edge = i >= c.in_ch;  // Glow's extra channel
    const T outside = edge ? T(1) : (c.padding == PaddingMode::Constant ? c.pad_value : T(0));
    const T *src = edge ? nullptr : in + i * plane;
    for (int64_t ky = 0; ky < c.kh; ++ky)
      for (int64_t kx = 0; kx < c.kw; ++kx) {
        const T wv = c.weight[((o * c.in_total + i) * c.kh + ky) * c.kw + kx];
        const int64_t dy = ky - ph, dx = kx - pw;
        // Columns [x0, x1) read inside the image; clamped for kernels wider than the image
        // (|dx| >= w: every column is padding).
        const int64_t x0 = std::clamp<int64_t>(-dx, 0, w), x1 = std::clamp<int64_t>(w - dx, x0, w);
        const T pad = wv * outside;
        for (int64_t y = 0; y < h; ++y) {
          T *row = dst + y * w;
          const int64_t iy = y + dy;
          if (iy < 0 || iy >= h) {
            if (pad != T(0))
              for (int64_t x = 0; x < w; ++x) row[x] += pad;
            continue;
          }
          if (pad != T(0)) {
            for (int64_t x = 0; x < x0; ++x) row[x] += pad;
            for (int64_t x = x1; x < w; ++x) row[x] += pad;
          }
          if (src) {
            const T *srow = src + iy * w + dx;
            for (int64_t x = x0; x < x1; ++x) row[x] += wv * srow[x];
          }
        }
      }
  }
  if (c.relu)
    for (int64_t p = 0; p < plane; ++p) dst[p] = dst[p] > T(0) ? dst[p] : T(0);
}

// `threads` > 1 spreads output channels over that many OpenMP threads (used when images are not
// already processed in parallel).
template <typename T>
void conv2d(const PConv<T> &c, const T *in, int64_t h, int64_t w, T *out, int threads) {
  (void)threads;  // read only by OpenMP
#pragma omp parallel for schedule(static) num_threads(threads > 1 ? threads : 1) if (threads > 1)
  for (int64_t o = 0; o < c.out_ch; ++o) conv2d_output_channel(c, o, in, h, w, out);
}

}  // namespace flowrt::layers
