// The machine's measured fp32 peak: a large oneDNN matmul and a Glow-sized 3x3 convolution with
// all the benchmark's threads. Measuring takes a few seconds, so the result is cached in a small
// JSON file keyed by CPU model and thread count.
#pragma once

#include <string>

namespace flowrt::bench {

struct Peak {
  double matmul_gflops = 0, conv_gflops = 0;
  double best() const { return matmul_gflops > conv_gflops ? matmul_gflops : conv_gflops; }
};

// Returns false when oneDNN is not built in.
bool measure_peak(int threads, Peak *peak);
// The cache: $XDG_CACHE_HOME/flowrt/peak.json or ~/.cache/flowrt/peak.json.
std::string peak_cache_path();
bool load_peak(const std::string &path, const std::string &cpu, int threads, Peak *peak);
void save_peak(const std::string &path, const std::string &cpu, int threads, const Peak &peak);

}  // namespace flowrt::bench
