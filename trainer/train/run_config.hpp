// The settings of a training run: what `flowtrain train` parses, what a checkpoint stores (as
// key/value text) and what `flowtrain resume` restores.
#pragma once

#include <cstdint>
#include <string>
#include <utility>
#include <vector>

namespace flowrt::train {

struct RunConfig {
  // Data.
  std::string data = "fashion-mnist", data_dir;
  int64_t limit_train = 0, limit_test = 0;
  // Model: a fresh model of this family ("glow", "realnvp", "nice") and size (what --levels,
  // --depth and --width mean in each: model/architecture.hpp), or (init_model) an existing .flow
  // to start from. coupling and permutation are Glow's.
  std::string init_model;
  std::string arch = "glow";
  int levels = 3, depth = 8, width = 256;
  int res_blocks = 0;  // RealNVP: residual blocks per coupling net (0: plain conv nets)
  std::string coupling = "affine", permutation = "lu";
  int n_bits = 8;
  // Optimisation.
  int64_t batch = 16;
  double lr = 1e-3;
  int64_t epochs = 0, steps = 0;
  double time_s = 0;  // wall-clock budget of training (0: none)
  int64_t warmup = 200;
  std::string decay = "cosine";  // applies when the number of steps is known
  double clip = 50;              // global gradient-norm clip (0: off)
  double ema = 0;                // EMA decay of the exported weights (0: off)
  bool recompute = false;        // recompute the nets' activations in backward (less memory)
  // A new run's split priors get a log-std floor (trainer/train/bounded_prior.hpp; CPU).
  bool bounded_priors = true;
  std::string precision = "fp32";  // the products' arithmetic (tf32, bf16, fp16: CUDA only)
  // Gradient shards: each global batch is S equal shards whose gradients are summed in shard
  // order (0: as many as ranks). A run of N ranks (N dividing S) and one process with S shards
  // compute the same bytes.
  int grad_shards = 0;
  // Run.
  std::string device = "cpu";
  uint64_t seed = 0;
  int threads = 0;  // 0: OpenMP's default
  int64_t eval_every = 500, eval_images = 1000, sample_every = 0, sample_count = 16;
  int64_t checkpoint_every = 0;  // 0: with every evaluation
  int64_t log_every = 50;
  int keep_checkpoints = 3;
  // Loss spikes: a step above spike_factor x the median loss of the last spike_window steps is
  // reported with its worst image and layer (0: off). Reporting only; training is unchanged.
  double spike_factor = 10;
  int64_t spike_window = 100;
  std::string out;
  // Not stored: stop after this step as if killed (tests), and silence the progress display.
  int64_t stop_at = 0;
  bool quiet = false;
  // Not stored (a checkpoint holds nothing that depends on the number of ranks): how this
  // process takes part, "" alone, "mpi" or "nccl"; the reduction; the watchdog's limit (s).
  std::string dist;
  std::string dist_reduce;  // "": ordered for mpi, fast for nccl
  double dist_timeout_s = 600;

  std::vector<std::pair<std::string, std::string>> to_kv() const;
  static RunConfig from_kv(const std::vector<std::pair<std::string, std::string>> &kv);
};

// "90", "90s", "30m", "2h" -> seconds.
double parse_duration(const std::string &text);

}  // namespace flowrt::train
