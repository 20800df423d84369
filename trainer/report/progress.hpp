// The one-line progress display: rewritten in place (carriage return) when stdout is a terminal,
// printed as plain lines otherwise (logs, pipes). Messages (evaluations, skipped steps) go on
// lines of their own without garbling the progress line.
#pragma once

#include <cstdint>
#include <string>

namespace flowrt::train {

struct ProgressState {
  int64_t step = 0, total_steps = 0;                     // total 0: unknown
  double images_per_s = 0, train_bpd = 0, test_bpd = 0;  // test 0: none yet
  double eta_s = -1;                                     // < 0: unknown
  int64_t spikes = 0, last_spike_step = 0;               // loss spikes so far, the last one's step
};

class Progress {
 public:
  explicit Progress(bool tty);
  static bool stdout_is_tty();
  bool tty() const { return tty_; }
  void update(const ProgressState &s);
  void message(const std::string &line);
  void finish();

 private:
  bool tty_;
  bool open_ = false;  // a progress line is on screen without a newline
};

// "1h02m", "3m20s", "45s".
std::string format_duration(double seconds);
// Peak resident set size of this process in MiB (getrusage).
double peak_rss_mib();

}  // namespace flowrt::train
