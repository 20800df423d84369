// Builds a freshly initialised RealNVP (Dinh et al. 2017) Graph: the logit input transform, then
// per scale 3 checkerboard couplings (alternating phase, the mask an extra net input), a squeeze,
// 3 channel couplings (alternating halves) and a split that factors out half of the channels; the
// last scale has 4 checkerboard couplings. Each coupling is affine with RealNVP's scale
// s = exp(w * tanh(raw)) and form y = x * s + t, and is followed by a batch normalisation (a
// trainer layer; files hold it as the actnorm of its running statistics). Priors are standard
// normal. The nets are RealNVP's residual nets (build::residual_net: conv 3x3, `res_blocks`
// residual blocks of two 3x3 convs, conv 3x3), or with res_blocks = 0 the plain
// conv 3x3 -> ReLU -> conv 1x1 -> ReLU -> conv 3x3; the last conv is zero (every coupling starts
// as the identity); `random_nets` makes every tensor random, for tests.
#pragma once

#include <cstdint>

#include "model/graph.hpp"

namespace flowrt {

struct RealNvpConfig {
  int64_t channels = 1, height = 28, width = 28;
  int n_bits = 8;
  int scales = 3;  // 28x28 -> 14x14 -> 7x7
  int hidden = 64;
  int res_blocks = 2;          // residual blocks per coupling net; 0: the plain conv net
  int checkerboard = 3;        // checkerboard couplings per scale but the last
  int channelwise = 3;         // channel couplings per scale but the last
  int final_checkerboard = 4;  // checkerboard couplings of the last scale
  bool batchnorm = true;
  bool mask_channel = true;
  float logit_alpha = 0.05f;  // 0: no logit layer
  uint64_t seed = 0;
  bool random_nets = false;
};

// Throws Error(FLOWRT_INVALID_ARGUMENT) for an impossible configuration.
Graph build_realnvp(const RealNvpConfig &config);

}  // namespace flowrt
