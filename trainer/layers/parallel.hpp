// OpenMP loops only pay off above some amount of work: waking threads for a tiny loop costs more
// than the loop (and on a busy machine a descheduled thread stalls everyone). Every parallel
// loop of the trainer carries `if (parallel_worth(work))`.
#pragma once

#include <cstdint>

namespace flowrt::train {

constexpr int64_t kParallelMinWork = int64_t{1} << 15;
inline bool parallel_worth(int64_t work) {
  return work >= kParallelMinWork;
}

}  // namespace flowrt::train
