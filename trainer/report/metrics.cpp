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
    "step,epoch,train_bpd,test_bpd,lr,images_per_s,grad_norm,peak_rss_mib,spikes,spike_step,"
    "spike_loss,spike_median,spike_image,spike_image_bpd,spike_layer,spike_layer_bpd,"
    "spike_typical_bpd";

// Layer names come from the model file: nothing in them may break the CSV.
std::string csv_safe(const std::string &s) {
  std::string o = s;
  for (char &c : o)
    if (c == ',' || c == '"' || c == '\n' || c == '\r') c = '_';
  return o;
}

std::string format_row(const MetricsRow &r) {
  char buf[512];
  char test[32] = "";
  if (r.test_bpd > 0) std::snprintf(test, sizeof test, "%.6f", r.test_bpd);
  std::snprintf(buf, sizeof buf, "%lld,%.4f,%.6f,%s,%.6g,%.2f,%.4g,%.1f,%lld", (long long)r.step,
                r.epoch, r.train_bpd, test, r.lr, r.images_per_s, r.grad_norm, r.peak_rss_mib,
                (long long)r.spikes);
  std::string line = buf;
  if (r.spikes == 0) return line + ",,,,,,,,";
  std::snprintf(buf, sizeof buf, ",%lld,%.6g,%.6f,", (long long)r.spike_step, r.spike_loss,
                r.spike_median);
  line += buf;
  if (r.spike_image >= 0) {
    std::snprintf(buf, sizeof buf, "%lld,%.6g", (long long)r.spike_image, r.spike_image_bpd);
    line += buf;
  } else {
    line += ",";
  }
  line += "," + csv_safe(r.spike_layer) + ",";
  if (!r.spike_layer.empty()) {
    std::snprintf(buf, sizeof buf, "%.6g,%.6f", r.spike_layer_bpd, r.spike_typical_bpd);
    line += buf;
  } else {
    line += ",";
  }
  return line;
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
  if (f.size() < 9) return r;  // written before the spike columns
  r.spikes = std::stoll(f[8]);
  if (r.spikes == 0) return r;
  f.resize(17);
  r.spike_step = std::stoll(f[9]);
  r.spike_loss = num(f[10]), r.spike_median = num(f[11]);
  r.spike_image = f[12].empty() ? -1 : std::stoll(f[12]);
  r.spike_image_bpd = num(f[13]);
  r.spike_layer = f[14];
  r.spike_layer_bpd = num(f[15]), r.spike_typical_bpd = num(f[16]);
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
