#include "trainer/report/metrics.hpp"

#include <cstdio>
#include <fstream>
#include <sstream>

#include <cerrno>
#include <cstring>

#include "core/atomic_file.hpp"
#include "core/error.hpp"

namespace flowrt::train {
namespace {

constexpr const char *kHeader =
    "step,epoch,train_bpd,test_bpd,lr,images_per_s,grad_norm,peak_rss_mib";

std::string format_row(const MetricsRow &r) {
  char buf[256];
  char test[32] = "";
  if (r.test_bpd > 0) std::snprintf(test, sizeof test, "%.6f", r.test_bpd);
  std::snprintf(buf, sizeof buf, "%lld,%.4f,%.6f,%s,%.6g,%.2f,%.4g,%.1f", (long long)r.step,
                r.epoch, r.train_bpd, test, r.lr, r.images_per_s, r.grad_norm, r.peak_rss_mib);
  return buf;
}

MetricsRow parse_row(const std::string &line) {
  MetricsRow r;
  std::vector<std::string> f;
  std::stringstream ss(line);
  std::string item;
  while (std::getline(ss, item, ',')) f.push_back(item);
  if (f.size() < 8) return r;
  auto num = [](const std::string &s) { return s.empty() ? 0.0 : std::stod(s); };
  r.step = std::stoll(f[0]);
  r.epoch = num(f[1]), r.train_bpd = num(f[2]), r.test_bpd = num(f[3]), r.lr = num(f[4]);
  r.images_per_s = num(f[5]), r.grad_norm = num(f[6]), r.peak_rss_mib = num(f[7]);
  return r;
}

}  // namespace

MetricsLog::MetricsLog(std::string path, bool resume, int64_t keep_until) : path_(std::move(path)) {
  if (resume) {
    std::ifstream in(path_);
    std::string line;
    std::getline(in, line);  // header
    while (std::getline(in, line)) {
      if (line.empty()) continue;
      try {
        MetricsRow r = parse_row(line);
        if (r.step <= keep_until) rows_.push_back(r);
      } catch (const std::exception &) {
        // A line cut by a crash: dropped.
      }
    }
  }
  write_all();
}

void MetricsLog::write_all() {
  std::string text = std::string(kHeader) + "\n";
  for (const MetricsRow &r : rows_) text += format_row(r) + "\n";
  atomic_write_file(path_, text.data(), text.size());
}

void MetricsLog::append(const MetricsRow &row) {
  rows_.push_back(row);
  std::FILE *f = std::fopen(path_.c_str(), "a");
  if (!f) fail(FLOWRT_IO_ERROR, "cannot append to '" + path_ + "': " + std::strerror(errno));
  // A full disk shows at the write or at the close (the buffer's flush): both are errors.
  const bool wrote = std::fprintf(f, "%s\n", format_row(row).c_str()) >= 0;
  const int err = errno;
  if (std::fclose(f) != 0 || !wrote)
    fail(FLOWRT_IO_ERROR,
         "cannot append to '" + path_ + "': " + std::strerror(wrote ? errno : err));
}

}  // namespace flowrt::train
