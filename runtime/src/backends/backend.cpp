#include "backends/backend.hpp"

#include "core/philox.hpp"

namespace flowrt {

void philox_fill(uint64_t seed, uint64_t first_image, size_t n, int64_t dims, float *eps) {
#pragma omp parallel for schedule(static)
  for (int64_t i = 0; i < static_cast<int64_t>(n); ++i)
    for (int64_t e = 0; e < dims; ++e)
      eps[i * dims + e] =
          philox_normal(seed, first_image + static_cast<uint64_t>(i), static_cast<uint64_t>(e));
}

void Backend::sample(size_t n, uint64_t seed, uint64_t first_image, float temperature,
                     const int32_t *labels, float *eps_scratch, float *x) {
  philox_fill(seed, first_image, n, dims_, eps_scratch);
  decode_noise(n, eps_scratch, temperature, labels, x);
}

}  // namespace flowrt
