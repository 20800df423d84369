// The compute interface of training: a model's parameters, a forward pass that keeps what the
// backward pass needs (the tape), the backward pass, and export back to a Graph. The CPU
// implementation is TrainModel (train_model.hpp); a GPU implementation plugs in behind the same
// interface (parameters stay host-visible through params() between steps).
#pragma once

#include <cstdint>
#include <memory>
#include <string>
#include <vector>

#include "model/graph.hpp"
#include "trainer/model/param_store.hpp"

namespace flowrt::train {

enum class Device { Cpu, Cuda };
Device parse_device(const std::string &name);

template <typename T>
class TrainCompute {
 public:
  virtual ~TrainCompute() = default;
  virtual ParamStore<T> &params() = 0;
  virtual const ParamStore<T> &params() const = 0;
  // x: n images in the network's range (NCHW, already dequantised); labels may be null. With
  // data_init, every actnorm first initialises itself from this batch. Returns the mean bits/dim.
  virtual double forward(const T *x, const int32_t *labels, int64_t n, bool data_init) = 0;
  // Fills params().grads() with d(mean bits/dim)/d(parameter) of the last forward.
  virtual void backward() = 0;
  // With recompute, the forward pass keeps only each layer's input (B*C*H*W floats); the coupling
  // nets' and priors' hidden activations (width/C times larger) are recomputed from it in the
  // backward pass, so memory hardly grows with depth. Gradients are the same either way.
  virtual void set_recompute(bool on) = 0;
  // Bits/dim of each image of the last forward.
  virtual const std::vector<double> &bits_per_dim() const = 0;
  // The model with the given parameter values (layout of params().values()), finalized.
  virtual Graph export_graph(const std::vector<T> &values) const = 0;
};

// Throws Error(FLOWRT_UNSUPPORTED) for a device this build cannot use.
std::unique_ptr<TrainCompute<float>> make_train_compute(const Graph &graph, Device device);

}  // namespace flowrt::train
