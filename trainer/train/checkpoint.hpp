// Training checkpoints: everything a run needs to continue bit-exactly (the run's settings, the
// step, the model's structure as .flow bytes, the exact parameter values, Adam's moments, the
// EMA weights, the best test score). The data position and the random streams are functions of
// (seed, step), which the checkpoint holds. Files are written atomically (temporary file, fsync,
// rename) and carry a CRC-32, so a crash leaves either no file or a complete one, and a damaged
// file is rejected with a message naming it.
#pragma once

#include <cstdint>
#include <string>
#include <utility>
#include <vector>

namespace flowrt::train {

struct Checkpoint {
  std::vector<std::pair<std::string, std::string>> config;  // the run's settings
  int64_t step = 0;                                         // steps completed
  int64_t epoch = 0, batch_in_epoch = 0;                    // data position of the next step
  double best_test_bpd = 0;                                 // 0: none yet
  int64_t best_step = 0;
  int64_t skipped_steps = 0;
  double elapsed_s = 0;             // training time so far (for --time budgets)
  std::vector<uint8_t> model_flow;  // structure (and fixed tensors) of the model
  std::vector<float> params, adam_m, adam_v, ema;
  int64_t adam_t = 0;
};

void write_checkpoint(const std::string &path, const Checkpoint &ckpt);
// Throws Error(FLOWRT_FORMAT_ERROR / FLOWRT_IO_ERROR) naming the file and what is wrong.
Checkpoint read_checkpoint(const std::string &path);
// The same from a file's bytes in memory; `path` is what error messages call them.
Checkpoint parse_checkpoint(const uint8_t *data, size_t size, const std::string &path);

// "checkpoint-00001234.ckpt" for step 1234, in `dir`.
std::string checkpoint_path(const std::string &dir, int64_t step);
// Checkpoint files in `dir`, oldest first.
std::vector<std::string> list_checkpoints(const std::string &dir);
// Deletes all but the newest `keep` checkpoints.
void prune_checkpoints(const std::string &dir, size_t keep);

}  // namespace flowrt::train
