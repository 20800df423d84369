// metrics.csv of a run: one row per logging interval (and per evaluation), appended and flushed
// as training goes, so a killed run keeps its history; on resume, rows past the checkpoint's
// step are dropped (they will be recomputed identically).
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
