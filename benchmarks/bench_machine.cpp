#include "bench_machine.hpp"

#include <ctime>
#include <fstream>
#include <set>
#include <sstream>
#include <thread>

#include "backends/backend.hpp"
#ifdef FLOWRT_HAVE_ONEDNN
#include "backends/onednn/onednn_backend.hpp"
#endif
#ifdef _OPENMP
#include <omp.h>
#endif

#ifndef FLOWRT_GIT_COMMIT
#define FLOWRT_GIT_COMMIT "unknown"
#endif

namespace flowrt::bench {

Machine describe_machine() {
  Machine m;
  std::ifstream in("/proc/cpuinfo");
  std::string line;
  std::set<std::string> flags;
  while (std::getline(in, line)) {
    const auto colon = line.find(':');
    if (colon == std::string::npos) continue;
    const std::string key = line.substr(0, line.find_last_not_of(" \t", colon - 1) + 1);
    const std::string value = colon + 2 <= line.size() ? line.substr(colon + 2) : "";
    if (key == "model name" && m.cpu.empty()) m.cpu = value;
    if (key == "flags" && flags.empty()) {
      std::istringstream fs(value);
      for (std::string f; fs >> f;) flags.insert(f);
    }
  }
  if (m.cpu.empty()) m.cpu = "unknown CPU";
  for (const char *f : {"avx2", "avx512f", "avx512_bf16", "amx_tile"})
    if (flags.count(f)) m.isa += (m.isa.empty() ? "" : " ") + std::string(f);
  if (m.isa.empty()) m.isa = "none of avx2/avx512f/amx";
#ifdef _OPENMP
  m.cores = omp_get_num_procs();
#else
  m.cores = static_cast<int>(std::thread::hardware_concurrency());
#endif
#ifdef FLOWRT_HAVE_CUDA
  if (cuda_device_available(0)) m.gpu = "CUDA device 0";
#endif
#if defined(__clang__)
  m.compiler = "clang " __clang_version__;
#elif defined(__GNUC__)
  m.compiler = "gcc " __VERSION__;
#else
  m.compiler = "unknown compiler";
#endif
  m.commit = FLOWRT_GIT_COMMIT;
#ifdef FLOWRT_HAVE_ONEDNN
  m.onednn = onednn_version();
#endif
  char buf[64];
  const std::time_t now = std::time(nullptr);
  std::strftime(buf, sizeof buf, "%Y-%m-%d %H:%M:%S %Z", std::localtime(&now));
  m.date = buf;
  return m;
}

}  // namespace flowrt::bench
