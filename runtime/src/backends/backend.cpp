#include "backends/backend.hpp"

#ifdef _OPENMP
#include <omp.h>
#endif

#include "core/philox.hpp"

namespace flowrt {

void philox_fill(uint64_t seed, uint64_t first_image, size_t n, int64_t dims, float *eps,
                 int threads) {
#ifdef _OPENMP
  const int team = threads > 0 ? threads : omp_get_max_threads();
#pragma omp parallel for schedule(static) num_threads(team) if (team > 1 && n > 1)
#else
  (void)threads;
#endif
  for (int64_t i = 0; i < static_cast<int64_t>(n); ++i)
    for (int64_t e = 0; e < dims; ++e)
      eps[i * dims + e] =
          philox_normal(seed, first_image + static_cast<uint64_t>(i), static_cast<uint64_t>(e));
}

}  // namespace flowrt
