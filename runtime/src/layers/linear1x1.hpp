// The invertible 1x1 convolution as a per-pixel matrix product: out[:, p] = A in[:, p] + c, and
// the inverse out = A_inv (in - c) with the A_inv precomputed at load time (never inverted here).
#pragma once

#include <cstdint>

namespace flowrt::layers {

template <typename T>
void linear1x1(const T *a, const T *shift, int64_t channels, int64_t plane, const T *in, T *out) {
  for (int64_t o = 0; o < channels; ++o) {
    T *dst = out + o * plane;
    const T b = shift ? shift[o] : T(0);
    for (int64_t p = 0; p < plane; ++p) dst[p] = b;
    for (int64_t i = 0; i < channels; ++i) {
      const T w = a[o * channels + i];
      const T *src = in + i * plane;
      for (int64_t p = 0; p < plane; ++p) dst[p] += w * src[p];
    }
  }
}

template <typename T>
void linear1x1_inverse(const T *a_inv, const T *shift, int64_t channels, int64_t plane, T *in,
                       T *out) {
  if (shift)  // in place on the input: it is scratch in every caller
    for (int64_t i = 0; i < channels; ++i)
      for (int64_t p = 0; p < plane; ++p) in[i * plane + p] -= shift[i];
  linear1x1<T>(a_inv, nullptr, channels, plane, in, out);
}

}  // namespace flowrt::layers
