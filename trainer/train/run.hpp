// A training run: data, model, optimiser and everything written to the run directory
// (model.flow, checkpoints, metrics.csv, curve.svg, sample grids). One step is: a batch in the
// epoch's order, dequantised with noise keyed by (seed, step), forward (bits/dim), backward,
// the NaN/Inf guard, clipping, Adam at the scheduled learning rate, EMA. Data-dependent actnorm
// initialisation runs on the first batch. Same seed and thread count -> bit-identical weights,
// also across a checkpoint and resume.
#pragma once

#include <chrono>
#include <cstdint>
#include <memory>
#include <optional>
#include <string>
#include <vector>

#include "model/graph.hpp"
#include "trainer/datasets/dataset.hpp"
#include "trainer/dist/communicator.hpp"
#include "trainer/model/train_compute.hpp"
#include "trainer/report/metrics.hpp"
#include "trainer/report/progress.hpp"
#include "trainer/train/bounded_prior.hpp"
#include "trainer/train/checkpoint.hpp"
#include "trainer/train/optimizer.hpp"
#include "trainer/train/run_config.hpp"
#include "trainer/train/spike_detector.hpp"

namespace flowrt::train {

class TrainRun {
 public:
  // A fresh run: creates cfg.out and starts from a new Glow (or cfg.init_model).
  explicit TrainRun(RunConfig cfg);
  // Continues from the newest readable checkpoint in run_dir. `adjust` may change the stopping
  // condition or the threads (anything else would break bit-exact continuation).
  static std::unique_ptr<TrainRun> resume(const std::string &run_dir,
                                          void (*adjust)(RunConfig &, void *) = nullptr,
                                          void *user = nullptr);

  // Trains until the configured number of steps / epochs / time (or stop_at) is reached.
  void run();

  struct StepResult {
    bool applied = false;        // false: the NaN/Inf guard skipped the step
    bool rescaled = false;       // fp16 loss scaling lowered its scale instead of a step
    std::optional<Spike> spike;  // the step's loss was a spike (spike_detector.hpp)
    double loss = 0, grad_norm = 0, lr = 0;
  };
  // One optimisation step on n given images in the network's range (used by run()). `images`
  // (n training-set indices, may be null) name them in a loss spike's report.
  StepResult train_step(const float *x, const int32_t *labels, int64_t n,
                        const int64_t *images = nullptr);

  // Mean test bits/dim (bin centres) of the export weights over at most max_images (0: all).
  double evaluate(int64_t max_images);
  // The model with the export weights (EMA when enabled), finalized.
  Graph export_graph();
  void write_checkpoint_now();

  int64_t step() const { return step_; }
  // Loss spikes reported so far in this process (not kept across a resume).
  int64_t spikes() const { return spikes_ ? spikes_->spikes() : 0; }
  // The parameters as of the last sync (every evaluation, checkpoint, export and the end of
  // run()); with --device cpu always current.
  int64_t skipped_steps() const { return skipped_; }
  const RunConfig &config() const { return cfg_; }
  const std::vector<float> &params() const { return compute_->params().values(); }
  const DataSplit &data() const { return data_; }
  // This process's place in the job (a local communicator when training alone).
  Communicator &comm() { return *comm_; }
  // Rank 0 alone writes the run directory and prints progress.
  bool writer() const { return comm_->rank() == 0; }

 private:
  TrainRun(RunConfig cfg, const Checkpoint *from);
  void load_data();
  void make_schedule();
  bool finished(double elapsed) const;
  void save_best(double test_bpd);
  // Brings the parameters, the EMA and (with_adam) Adam's moments to the host (no-op on the CPU).
  void sync_state(bool with_adam = true);
  // Dequantised images at positions [first, first + n) of the step's epoch order.
  std::vector<float> batch_x(int64_t step, int64_t first, int64_t n, uint64_t noise_step);
  // The training-set indices of those images.
  std::vector<int64_t> batch_images(int64_t step, int64_t first, int64_t n);
  // Hands the last forward pass (on `images`, null: unknown) to the spike detector.
  void observe_forward(const int64_t *images);
  // After a step: a loss spike, reported (the worst image over all ranks), or nothing.
  std::optional<Spike> check_spike(double loss);
  void log_message(const std::string &line);
  // The sharded step: this rank's shards forward and backward, the gradients summed over all
  // shards of all ranks, then the update every rank applies alike.
  StepResult sharded_step(int64_t first);
  // Counts the step; a skipped one (the NaN/Inf guard) is counted and reported, and so is a
  // loss spike.
  StepResult finish_step(StepResult r, bool applied);
  // Stops the job unless every rank has the same settings, data and starting parameters.
  void check_ranks_agree();
  // The fault tests' hook (FLOWRT_TEST_FAULT): an error, a stall or a death at a given step.
  void inject_fault();

  RunConfig cfg_;
  std::unique_ptr<Communicator> local_comm_;  // when training alone
  Communicator *comm_ = nullptr;
  ReduceMode reduce_ = ReduceMode::Ordered;
  int shards_ = 1;                               // gradient shards per global batch (S)
  std::vector<std::vector<float>> shard_grads_;  // this rank's S / N shards' gradients
  DataSplit data_;
  std::unique_ptr<TrainCompute<float>> compute_;
  Adam adam_;
  Schedule schedule_;
  std::vector<float> ema_;
  int64_t step_ = 0, skipped_ = 0, steps_per_epoch_ = 0, total_steps_ = 0;
  double best_test_ = 0, elapsed_ = 0;
  int64_t best_step_ = 0;
  int n_bits_ = 8;
  std::unique_ptr<MetricsLog> metrics_;
  std::unique_ptr<Progress> progress_;
  std::unique_ptr<SpikeDetector> spikes_;
  // The bounded split priors' fixed tensors (bounded_prior.hpp), whose gradients are zeroed.
  std::vector<GradRange> prior_constants_;
  // Epoch order cache.
  int64_t order_epoch_ = -1;
  std::vector<int64_t> order_;
};

}  // namespace flowrt::train
