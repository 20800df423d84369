// The CUDA implementation of TrainCompute (cuda_train_model.cu): every layer's forward and
// backward pass and the whole optimiser step on the device. Built when the CUDA toolkit is found
// (FLOWRT_TRAIN_CUDA); without a usable device at run time it throws Error(FLOWRT_DEVICE_ERROR).
#pragma once

#include <memory>

#include "model/graph.hpp"
#include "trainer/model/train_compute.hpp"

namespace flowrt::train {

// Throws Error(FLOWRT_UNSUPPORTED), naming the layer, for a model with a layer the GPU trainer
// does not implement (logit, batch norm, checkerboard couplings, the tanh scale); called first
// by make_cuda_train_compute, so the refusal does not depend on a device being present.
void check_cuda_trainable(const Graph &graph);
std::unique_ptr<TrainCompute<float>> make_cuda_train_compute(const Graph &graph, int device = 0);

}  // namespace flowrt::train
