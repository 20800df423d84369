// The thread count a backend uses: the session's setting, or every core when it is 0 (one
// thread without OpenMP).
#pragma once

#ifdef _OPENMP
#include <omp.h>
#endif

namespace flowrt {

inline int resolve_threads(int threads) {
#ifdef _OPENMP
  return threads > 0 ? threads : omp_get_num_procs();
#else
  (void)threads;
  return 1;
#endif
}

}  // namespace flowrt
