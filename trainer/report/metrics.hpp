// metrics.csv of a run: one row per logging interval (and per evaluation), appended and flushed
// as training goes, so a killed run keeps its history; on resume, rows past the checkpoint's
// step are dropped (they will be recomputed identically; loss spike detection needs a few steps
// of history again first). Files of older versions (without the spike columns) are read too.
#pragma once

#include <cstdint>
#include <string>
#include <vector>

namespace flowrt::train {

struct MetricsRow {
  int64_t step = 0;
  double epoch = 0;
  double train_bpd = 0;  // mean over the interval
  double test_bpd = 0;   // 0: no evaluation at this row
  double lr = 0, images_per_s = 0, grad_norm = 0, peak_rss_mib = 0;
  // Loss spikes in the interval (trainer/train/spike_detector.hpp) and the largest of them
  // (relative to its median): empty columns when there was none. spike_step counts steps as
  // `step` does; spike_image is the worst image's index in the training set.
  int64_t spikes = 0;
  int64_t spike_step = 0, spike_image = -1;
  double spike_loss = 0, spike_median = 0, spike_image_bpd = 0;
  std::string spike_layer;  // "" when the device gives no per-layer terms
  double spike_layer_bpd = 0, spike_typical_bpd = 0;
};

class MetricsLog {
 public:
  // Creates `path` with a header, or (resume) keeps the rows with step <= keep_until.
  MetricsLog(std::string path, bool resume, int64_t keep_until);
  void append(const MetricsRow &row);
  const std::vector<MetricsRow> &rows() const { return rows_; }

 private:
  void write_all();
  std::string path_;
  std::vector<MetricsRow> rows_;
};

// curve.svg: train and test bits/dim against step, hand-written SVG.
void write_curve_svg(const std::string &path, const std::vector<MetricsRow> &rows,
                     const std::string &title);

}  // namespace flowrt::train
