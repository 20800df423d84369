// What flowbench records about the machine and the build, so every number can be traced to
// where and how it was measured.
#pragma once

#include <string>

namespace flowrt::bench {

struct Machine {
  std::string cpu;  // model name from /proc/cpuinfo
  int cores = 0;    // logical processors available to this process
  std::string isa;  // "avx2 avx512f amx" (the ones present)
  std::string gpu;  // empty when no CUDA device is usable
  std::string compiler, commit, onednn, date;
};

Machine describe_machine();

}  // namespace flowrt::bench
