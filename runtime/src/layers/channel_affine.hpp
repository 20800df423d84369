// Per-channel affine map y = scale[c] * x + shift[c] (actnorm, with shift = scale * bias) and its
// inverse x = (y - shift[c]) / scale[c]. log|det| = H*W*sum(log|scale|), input-independent.
#pragma once

#include <cstdint>

namespace flowrt::layers {

template <typename T>
void channel_affine(const T *scale, const T *shift, int64_t channels, int64_t plane, T *x,
                    bool inverse) {
  for (int64_t c = 0; c < channels; ++c) {
    T *p = x + c * plane;
    const T s = scale[c], t = shift[c];
    if (!inverse) {
      for (int64_t k = 0; k < plane; ++k) p[k] = s * p[k] + t;
    } else {
      const T inv = T(1) / s;
      for (int64_t k = 0; k < plane; ++k) p[k] = (p[k] - t) * inv;
    }
  }
}

}  // namespace flowrt::layers
