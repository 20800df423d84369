// Squeeze and fixed channel permutations are orthogonal index maps with log|det| = 0: their
// backward pass is their inverse applied to the gradient (reusing the runtime's kernels).
#pragma once

#include <cstdint>

#include "layers/permute.hpp"
#include "layers/squeeze.hpp"

namespace flowrt::train {

// `s` is the shape of the squeeze's input; dy has the squeezed shape.
template <typename T>
void squeeze_backward(SqueezeOrder order, const Shape3 &s, const T *dy, T *dx) {
  layers::squeeze(order, s, dy, dx, true);
}

template <typename T>
void permute_backward(const int32_t *source, int64_t channels, int64_t plane, const T *dy, T *dx) {
  layers::permute_channels(source, channels, plane, dy, dx, true);
}

}  // namespace flowrt::train
