#include "bench_machine.hpp"

#include <ctime>
#include <fstream>
#include <set>
#include <sstream>
#include <thread>

#include "backends/backend_registry.hpp"
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
  if (probe_backend(FLOWRT_BACKEND_CUDA).available) m.gpu = "CUDA device 0";
#if defined(__clang__)
  m.compiler = "clang " __clang_version__;
#elif defined(__GNUC__)
  m.compiler = "gcc " __VERSION__;
#else
  m.compiler = "unknown compiler";
#endif
  m.commit = FLOWRT_GIT_COMMIT;
  // The plugin's own line, "oneDNN 2.6.3 (CPU)": the version this run's backend uses.
  const BackendProbe dnn = probe_backend(FLOWRT_BACKEND_ONEDNN);
  if (dnn.available) m.onednn = dnn.description;
  char buf[64];
  const std::time_t now = std::time(nullptr);
  std::strftime(buf, sizeof buf, "%Y-%m-%d %H:%M:%S %Z", std::localtime(&now));
  m.date = buf;
  return m;
}

}  // namespace flowrt::bench
