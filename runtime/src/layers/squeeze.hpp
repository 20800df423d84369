// Squeeze (space-to-depth 2x2) on one CHW image and its inverse. (c, 2y+i, 2x+j) moves to
// channel c*4 + 2i + j (ChannelMajor, PyTorch ports) or (2i + j)*C + c (SubpixelMajor, TF).
#pragma once

#include <cstdint>

#include "model/graph.hpp"

namespace flowrt::layers {

inline int64_t squeeze_channel(SqueezeOrder order, int64_t c, int64_t sub, int64_t channels) {
  return order == SqueezeOrder::ChannelMajor ? c * 4 + sub : sub * channels + c;
}

// `in` has shape `s` (C, H, W); `out` gets (4C, H/2, W/2). inverse=true maps back.
template <typename T>
void squeeze(SqueezeOrder order, const Shape3 &s, const T *in, T *out, bool inverse) {
  const int64_t h2 = s.h / 2, w2 = s.w / 2;
  for (int64_t c = 0; c < s.c; ++c)
    for (int64_t i = 0; i < 2; ++i)
      for (int64_t j = 0; j < 2; ++j) {
        const int64_t oc = squeeze_channel(order, c, 2 * i + j, s.c);
        for (int64_t y = 0; y < h2; ++y) {
          const int64_t orig = (c * s.h + 2 * y + i) * s.w + j;  // (c, 2y+i, j)
          const int64_t sq = (oc * h2 + y) * w2;                 // (oc, y, 0)
          if (!inverse) {
            for (int64_t x = 0; x < w2; ++x) out[sq + x] = in[orig + 2 * x];
          } else {  // `in` is the squeezed tensor, `out` the original layout
            for (int64_t x = 0; x < w2; ++x) out[orig + 2 * x] = in[sq + x];
          }
        }
      }
}

}  // namespace flowrt::layers
