// Split priors whose log-std cannot collapse. A split prior's net computes the mean and log-std
// of the leaving half from the kept half; in Glow its last operation is a convolution (then the
// output scale), so the log-std is an affine function of the kept half. An image whose kept half
// lies far outside the training data's range gets a log-std extrapolated far below any the data
// uses, and its Gaussian term 0.5 ((z - mean) / exp(log_std))^2 scores it millions of bits/dim
// or more: a loss spike. (Fashion-MNIST: log-stds of -11 to -21 against a smallest typical -3.5.)
//
// The bounded form computes the same kind of prior with the format's own operations, so the
// runtime evaluates exactly what was trained:
//   conv 3x3 (C -> 3C: p, q, r) -> output scale -> ReLU -> conv 1x1 (3C -> 2C, fixed)
//   mean = relu(p) - relu(q),  log_std = floor + relu(r)
// The last convolution's weights and bias are constants, which the trainer keeps by zeroing their
// gradients; every other weight trains as before. Above the floor the log-std is as free as the
// affine one; at the floor it stops, whatever the input.
#pragma once

#include <vector>

#include "model/graph.hpp"
#include "trainer/dist/grad_buckets.hpp"
#include "trainer/model/param_store.hpp"

namespace flowrt::train {

// The floor of the bounded split priors' log-std (a std of 0.018 in latent units; trained
// Fashion-MNIST models keep every image's above exp(-3.5)).
constexpr float kSplitLogStdFloor = -4.f;

// Rewrites each split prior of Glow's affine form (conv, output scale) into the bounded form,
// computing the same function wherever its log-std is at or above `floor` (a prior whose mean
// weights are all zero, as a fresh Glow's, gets its p and q channels a small common bias, so
// that both ReLUs pass gradients from the start: the mean is still 0). Returns how many it
// rewrote; other priors are left as they are.
int bound_split_priors(Graph &graph, float floor = kSplitLogStdFloor);

// The parameter ranges (TrainCompute::params()' layout, whose names it reads) of the fixed
// convolutions of the bounded priors in `graph`: their gradients must be zeroed every step.
std::vector<GradRange> bounded_prior_constants(const Graph &graph,
                                               const std::vector<ParamInfo> &params);

// Sets the elements of v in the ranges to zero.
void zero_ranges(std::vector<float> &v, const std::vector<GradRange> &ranges);

}  // namespace flowrt::train
