// The bf16 forms of affine_relu.hpp. On x86-64 their inner loops are also compiled for AVX-512
// (picked at load time on CPUs that have it, as every CPU with bf16 units does): the 16-bit
// packing that the generic build emulates is one instruction there.
#include "trainer/layers/affine_relu.hpp"

#if defined(__x86_64__) && defined(__GNUC__) && !defined(__clang__)
#define FLOWRT_AVX512_CLONES __attribute__((target_clones("avx512f", "default")))
#else
#define FLOWRT_AVX512_CLONES
#endif

namespace flowrt::train {
namespace {

FLOWRT_AVX512_CLONES
void affine_relu_bf16_run(float s, float t, const float *x, uint16_t *y16, int64_t n) {
  for (int64_t q = 0; q < n; ++q) {
    const float v = s * x[q] + t;
    y16[q] = bf16_bits(v > 0.f ? v : 0.f);
  }
}

FLOWRT_AVX512_CLONES
void relu_backward_bf16_run(const uint16_t *y16, float *dy, int64_t n) {
  for (int64_t k = 0; k < n; ++k) dy[k] = y16[k] != 0 ? dy[k] : 0.f;
}

}  // namespace

FLOWRT_AVX512_CLONES
float mask_sum_row_bf16(float *row, const float *y, const uint16_t *y16, uint16_t *d16, int64_t n) {
  return mask_sum_row<true>(row, y, y16, d16, n);
}

void affine_relu_bf16(const float *scale, const float *shift, int64_t ch, int64_t ld,
                      const float *x, uint16_t *y16) {
  const int64_t blocks = (ld + detail::kAffineBlock - 1) / detail::kAffineBlock;
#pragma omp parallel for schedule(static) if (parallel_worth(ch * ld))
  for (int64_t r = 0; r < ch * blocks; ++r) {
    const int64_t c = r / blocks, q0 = (r % blocks) * detail::kAffineBlock;
    const int64_t q1 = std::min(ld, q0 + detail::kAffineBlock);
    affine_relu_bf16_run(scale ? scale[c] : 1.f, shift ? shift[c] : 0.f, x + c * ld + q0,
                         y16 + c * ld + q0, q1 - q0);
  }
}

void relu_backward_bf16(int64_t n, const uint16_t *y16, float *dy) {
  const int64_t blocks = (n + detail::kAffineBlock - 1) / detail::kAffineBlock;
#pragma omp parallel for schedule(static) if (parallel_worth(n))
  for (int64_t b = 0; b < blocks; ++b) {
    const int64_t k0 = b * detail::kAffineBlock, k1 = std::min(n, k0 + detail::kAffineBlock);
    relu_backward_bf16_run(y16 + k0, dy + k0, k1 - k0);
  }
}

}  // namespace flowrt::train
