// The compute interface of training: a model's parameters, a forward pass that keeps what the
// backward pass needs (the tape), the backward pass, a whole optimisation step, and export back
// to a Graph. The CPU implementation is TrainModel (train_model.hpp), whose parameters live in
// params(); the CUDA one (trainer/cuda/) keeps parameters, gradients, Adam's moments and the EMA
// on the device and mirrors them in params() only on sync_to_host().
#pragma once

#include <cstdint>
#include <memory>
#include <string>
#include <type_traits>
#include <vector>

#include "backends/backend.hpp"
#include "core/error.hpp"
#include "model/graph.hpp"
#include "trainer/dist/grad_buckets.hpp"
#include "trainer/model/param_store.hpp"
#include "trainer/train/optimizer.hpp"

namespace flowrt::train {

enum class Device { Cpu, Cuda };
Device parse_device(const std::string &name);
flowrt_precision parse_precision(const std::string &name);

// One optimisation step's settings; ema_decay 0: no EMA.
struct StepArgs {
  double lr = 0, clip = 0, ema_decay = 0;
};
struct StepOutcome {
  double loss = 0;  // mean bits/dim of the batch
  UpdateResult update;
};

// What a forward pass is for. Only batch norms tell them apart: in Train they normalise with the
// batch's statistics and update their running averages; in Eval they use the running averages,
// as the exported model does (test bits/dim, samples, export). Data-dependent initialisation
// (forward's data_init) normalises with the batch's statistics and updates nothing of them.
enum class Mode { Train, Eval };

template <typename T>
class TrainCompute {
 public:
  virtual ~TrainCompute() = default;
  virtual ParamStore<T> &params() = 0;
  virtual const ParamStore<T> &params() const = 0;
  // x: n images in the network's range (NCHW, already dequantised); labels may be null. With
  // data_init, every actnorm first initialises itself from this batch (but a flow actnorm on a
  // 1x1 grid, a per-pixel scaling; batch norms: see Mode).
  // Returns the mean bits/dim.
  virtual double forward(const T *x, const int32_t *labels, int64_t n, bool data_init) = 0;
  // Fills params().grads() with d(mean bits/dim)/d(parameter) of the last forward.
  virtual void backward() = 0;
  // With recompute, the forward pass keeps only each layer's input (B*C*H*W floats); the coupling
  // nets' and priors' hidden activations (width/C times larger) are recomputed from it in the
  // backward pass, so memory hardly grows with depth. Gradients are the same either way.
  virtual void set_recompute(bool on) = 0;
  // Bits/dim of each image of the last forward.
  virtual const std::vector<double> &bits_per_dim() const = 0;
  // Each layer's term of each image's log-likelihood (nats) in the last forward, layer-major
  // ([layer][image]): a log-determinant, or a split's or the top's prior term. Empty where the
  // implementation does not keep them (the CUDA trainer).
  virtual const std::vector<double> &layer_log_p() const {
    static const std::vector<double> none;
    return none;
  }
  // The model with the given parameter values (layout of params().values()), finalized.
  virtual Graph export_graph(const std::vector<T> &values) const = 0;
  // Train (the default) or Eval, for the forward passes that follow.
  void set_mode(Mode m) { mode_ = m; }
  Mode mode() const { return mode_; }

  // Forward, backward and apply_update (then the EMA, when the step applied and `ema` is not
  // empty) on n images. A device implementation runs all of it on the device with one
  // synchronisation at the end and keeps `adam`'s moments and `ema` there (see sync_*).
  virtual StepOutcome train_step(const T *x, const int32_t *labels, int64_t n, Adam &adam,
                                 std::vector<float> &ema, const StepArgs &a);
  // Makes params() (values and gradients), and when given Adam's moments and the EMA, current on
  // the host; sync_to_device makes the device use the host's (after a resume, or when the caller
  // changed params().values()). No-ops where the parameters live on the host.
  virtual void sync_to_host(Adam * /*adam*/, std::vector<float> * /*ema*/) {}
  virtual void sync_to_device(const Adam * /*adam*/, const std::vector<float> * /*ema*/) {}
  // The arithmetic of the matrix products (the nets' convolutions, the 1x1 convolutions).
  // Refuses what an implementation does not have by name (this default: all but fp32).
  virtual void set_precision(flowrt_precision p) {
    if (p != FLOWRT_PRECISION_FP32)
      fail(FLOWRT_UNSUPPORTED,
           std::string("--precision ") + precision_name(p) + ": this trainer computes in fp32");
  }
  // Device memory the model holds (parameters, optimiser state, tape, scratch), in MiB; 0 on
  // the CPU.
  virtual double device_memory_mib() const { return 0; }
  // Data-parallel training on devices: train_step has the device's gradient (n floats) and the
  // batch's mean loss (one double) replaced, in place, by their means over the ranks before the
  // update; the norm, clipping, the NaN/Inf guard, loss scaling, Adam and the EMA then act on
  // those, alike on every rank. The CPU trainer reduces on the host instead (TrainRun's sharded
  // step). `stream` is the device's compute stream: work a reducer enqueues on it, or makes it
  // wait for, runs in order with the training step.
  class DeviceReducer {
   public:
    virtual ~DeviceReducer() = default;
    // Once, before the first step: the gradient's size and the ranges each layer's backward
    // pass writes (layers[i]: layer i of the forward order).
    virtual void plan(size_t n, const GradLayout &layers) = 0;
    // A step, in train_step: begin once the gradient is zeroed (the loss is final by then),
    // layer_done(i) after layer i's backward pass is enqueued (from the last layer to the
    // first), finish after the whole backward pass; from then on `stream` sees the means.
    virtual void begin(float *grads, double *loss, void *stream) = 0;
    virtual void layer_done(size_t layer, void *stream) = 0;
    virtual void finish(void *stream) = 0;
  };
  virtual void set_device_reducer(std::unique_ptr<DeviceReducer>) {
    fail(FLOWRT_UNSUPPORTED, "a device gradient reduction needs --device cuda");
  }

 private:
  Mode mode_ = Mode::Train;
};

// Sets a model's mode for a scope and restores the previous one when it ends.
template <typename T>
class ModeScope {
 public:
  ModeScope(TrainCompute<T> &model, Mode m) : model_(model), saved_(model.mode()) {
    model_.set_mode(m);
  }
  ~ModeScope() { model_.set_mode(saved_); }
  ModeScope(const ModeScope &) = delete;
  ModeScope &operator=(const ModeScope &) = delete;

 private:
  TrainCompute<T> &model_;
  Mode saved_;
};

template <typename T>
StepOutcome TrainCompute<T>::train_step(const T *x, const int32_t *labels, int64_t n, Adam &adam,
                                        std::vector<float> &ema, const StepArgs &a) {
  if constexpr (std::is_same_v<T, float>) {
    StepOutcome o;
    o.loss = forward(x, labels, n, false);
    backward();
    o.update = apply_update(params().values(), params().grads(), adam, o.loss, a.lr, a.clip);
    if (o.update.applied && a.ema_decay > 0 && !ema.empty())
      ema_update(ema, params().values(), a.ema_decay);
    return o;
  } else {
    invalid_argument("train_step: training runs in float");
  }
}

// Throws Error(FLOWRT_UNSUPPORTED) for a device this build cannot use. `device_index`: which GPU
// (data-parallel ranks take their local rank's).
std::unique_ptr<TrainCompute<float>> make_train_compute(const Graph &graph, Device device,
                                                        int device_index = 0);

}  // namespace flowrt::train
