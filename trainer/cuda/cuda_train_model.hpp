// The CUDA implementation of TrainCompute (cuda_train_model.cu): every layer's forward and
// backward pass and the whole optimiser step on the device. Built when the CUDA toolkit is found
// (FLOWRT_TRAIN_CUDA); without a usable device at run time it throws Error(FLOWRT_DEVICE_ERROR).
#pragma once

#include <memory>

#include "model/graph.hpp"
#include "trainer/model/train_compute.hpp"

namespace flowrt::train {

std::unique_ptr<TrainCompute<float>> make_cuda_train_compute(const Graph &graph, int device = 0);

}  // namespace flowrt::train
