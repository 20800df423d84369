// Test bits/dim with the trainer's forward pass in batches: by default the mean over images of
// the bits/dim at the bin centres (no noise, what libflowrt scores); with `dequantize_samples`
// > 0 the mean over that many uniform-dequantisation draws per image instead, the estimate
// papers report (in expectation an upper bound on the discrete model's bits/dim).
// The model runs in Mode::Eval (and is back in its own mode afterwards).
#pragma once

#include <cstdint>

#include "trainer/datasets/dataset.hpp"
#include "trainer/dist/communicator.hpp"
#include "trainer/model/train_compute.hpp"

namespace flowrt::train {

// With `comm`, the ranks share the work: the test images form the same batches whatever the
// number of ranks, each rank evaluates a contiguous run of them, and the per-image values are
// gathered and summed in image order, so the result is the same bytes for any N.
double evaluate_bits_per_dim(TrainCompute<float> &model, const Dataset &test, int n_bits,
                             int64_t batch, int64_t max_images = 0, int dequantize_samples = 0,
                             uint64_t seed = 0, Communicator *comm = nullptr);

}  // namespace flowrt::train
