// The machine's measured peaks: fp32, the cores' FMA throughput on registers (the hardware's
// peak, whatever a library reaches), a large oneDNN matmul and a Glow-sized 3x3 convolution;
// bf16, the same matmul with bf16 inputs and fp32 output (where the CPU has bf16 units); all
// with the benchmark's threads. Measuring takes a few seconds, so the result is cached in a small
// JSON file keyed by CPU model and thread count.
#pragma once

#include <string>

namespace flowrt::bench {

struct Peak {
  double fma_gflops = 0;  // 0: not measured (a cache written before it existed)
  const char *fma_isa = "";
  double matmul_gflops = 0, conv_gflops = 0;
  double bf16_matmul_gflops = 0;  // 0: no bf16 units
  std::string bf16_impl;          // oneDNN's kernel for it, or the ISA that has no bf16 units
  double best() const {
    const double lib = matmul_gflops > conv_gflops ? matmul_gflops : conv_gflops;
    return fma_gflops > lib ? fma_gflops : lib;
  }
};

// Returns false when oneDNN is not built in.
bool measure_peak(int threads, Peak *peak);
// The cache: $XDG_CACHE_HOME/flowrt/peak.json or ~/.cache/flowrt/peak.json.
std::string peak_cache_path();
bool load_peak(const std::string &path, const std::string &cpu, int threads, Peak *peak);
void save_peak(const std::string &path, const std::string &cpu, int threads, const Peak &peak);

}  // namespace flowrt::bench
