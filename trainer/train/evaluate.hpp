// Test bits/dim: the mean over images of the bits/dim at the bin centres (no noise), with the
// trainer's forward pass in batches.
#pragma once

#include <cstdint>

#include "trainer/datasets/dataset.hpp"
#include "trainer/model/train_compute.hpp"

namespace flowrt::train {

double evaluate_bits_per_dim(TrainCompute<float> &model, const Dataset &test, int n_bits,
                             int64_t batch, int64_t max_images = 0);

}  // namespace flowrt::train
