// Builds a freshly initialised Glow-family Graph from an architecture description: what
// `flowrt init`, flowbench's --arch and the trainer start from. Layer order per level: squeeze,
// then `depth` steps of (actnorm, 1x1 conv or permutation, coupling), then a split with a learned
// conditional prior (all levels but the last); a learned top prior ends the flow.
//
// Initialisation follows Glow: actnorm is the identity (the trainer initialises it from data),
// 1x1 convs are random rotations, coupling nets' first convs are N(0, 0.05) and their last conv
// and output scale are zero (every step starts as the identity), priors start as N(0, 1).
// `random_nets` gives those zero-initialised tensors (and actnorms and priors) small random
// values instead, so the model is not the identity: for tests and benchmarks.
#pragma once

#include <cstdint>
#include <string>

#include "model/graph.hpp"

namespace flowrt {

enum class Permutation { LU, Dense, Reverse, Shuffle };

struct GlowConfig {
  int64_t channels = 3, height = 32, width = 32;
  int n_bits = 8;
  int levels = 3;
  int depth = 8;
  int hidden = 512;  // coupling net width
  CouplingType coupling = CouplingType::Affine;
  Permutation permutation = Permutation::LU;
  SqueezeOrder squeeze = SqueezeOrder::ChannelMajor;
  uint64_t seed = 0;
  bool random_nets = false;
  int n_classes = 0;  // > 0: class-conditional top prior
};

// Throws Error(FLOWRT_INVALID_ARGUMENT) for an impossible configuration (odd sizes, ...).
Graph build_glow(const GlowConfig &config);

// Parses "tiny", "fmnist", "cifar", "celeba64" (the standard benchmark architectures).
GlowConfig standard_architecture(const std::string &name);

Permutation parse_permutation(const std::string &name);
CouplingType parse_coupling(const std::string &name);

}  // namespace flowrt
