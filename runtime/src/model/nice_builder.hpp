// Builds a freshly initialised NICE (Dinh et al. 2015) Graph: the image is flattened to a vector
// (C*H*W x 1 x 1), its elements are reordered evens first, so that the channel halves are NICE's
// interleaved (even/odd) partition, then `couplings` additive couplings alternate which partition
// conditions, each with a fully-connected ReLU net (`hidden_layers` layers of `hidden` units: 1x1
// convolutions on the vector), the original order is restored, and a diagonal scaling layer (an
// actnorm) ends the flow before a standard normal prior. The nets' last layer is zero, so every
// coupling starts as the identity; `random_nets` makes every tensor random, for tests.
#pragma once

#include <cstdint>

#include "model/graph.hpp"

namespace flowrt {

struct NiceConfig {
  int64_t channels = 1, height = 28, width = 28;
  int n_bits = 8;
  int couplings = 4;
  int hidden = 1000;
  int hidden_layers = 5;
  uint64_t seed = 0;
  bool random_nets = false;
};

// Throws Error(FLOWRT_INVALID_ARGUMENT) for an impossible configuration.
Graph build_nice(const NiceConfig &config);

}  // namespace flowrt
