#include "trainer/report/progress.hpp"

#include <sys/resource.h>
#include <unistd.h>

#include <cmath>
#include <cstdio>
#include <cstring>

namespace flowrt::train {

Progress::Progress(bool tty) : tty_(tty) {}

bool Progress::stdout_is_tty() {
  return ::isatty(STDOUT_FILENO) == 1;
}

std::string format_duration(double s) {
  if (!(s >= 0) || !std::isfinite(s)) return "?";
  const long t = std::lround(s);
  char buf[32];
  if (t >= 3600)
    std::snprintf(buf, sizeof buf, "%ldh%02ldm", t / 3600, (t / 60) % 60);
  else if (t >= 60)
    std::snprintf(buf, sizeof buf, "%ldm%02lds", t / 60, t % 60);
  else
    std::snprintf(buf, sizeof buf, "%lds", t);
  return buf;
}

double peak_rss_mib() {
  rusage u{};
  ::getrusage(RUSAGE_SELF, &u);
  return static_cast<double>(u.ru_maxrss) / 1024.0;  // ru_maxrss is in KiB on Linux
}

void Progress::update(const ProgressState &s) {
  char line[320];
  char total[32] = "";
  if (s.total_steps > 0) std::snprintf(total, sizeof total, "/%lld", (long long)s.total_steps);
  char test[32] = "-";
  if (s.test_bpd > 0) std::snprintf(test, sizeof test, "%.4f", s.test_bpd);
  std::snprintf(line, sizeof line, "step %lld%s  %.1f img/s  train %.4f bits/dim  test %s  ETA %s",
                (long long)s.step, total, s.images_per_s, s.train_bpd, test,
                format_duration(s.eta_s).c_str());
  if (s.spikes > 0) {
    const size_t used = std::strlen(line);
    std::snprintf(line + used, sizeof line - used, "  spikes %lld (last at step %lld)",
                  (long long)s.spikes, (long long)s.last_spike_step);
  }
  if (tty_) {
    std::printf("\r%-100s", line);
    open_ = true;
  } else {
    std::printf("%s\n", line);
  }
  std::fflush(stdout);
}

void Progress::message(const std::string &text) {
  if (open_) std::printf("\n");
  open_ = false;
  std::printf("%s\n", text.c_str());
  std::fflush(stdout);
}

void Progress::finish() {
  if (open_) std::printf("\n");
  open_ = false;
  std::fflush(stdout);
}

}  // namespace flowrt::train
