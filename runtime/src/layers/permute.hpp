// Fixed channel permutation y[k] = x[source[k]] and its inverse; log|det| = 0.
#pragma once

#include <cstdint>
#include <cstring>

namespace flowrt::layers {

template <typename T>
void permute_channels(const int32_t *source, int64_t channels, int64_t plane, const T *in, T *out,
                      bool inverse) {
  for (int64_t k = 0; k < channels; ++k) {
    const int64_t s = source[k];
    if (!inverse)
      std::memcpy(out + k * plane, in + s * plane, sizeof(T) * plane);
    else
      std::memcpy(out + s * plane, in + k * plane, sizeof(T) * plane);
  }
}

}  // namespace flowrt::layers
