// Row-major C = alpha * op(A) * op(B) + beta * C for the trainer's convolutions and 1x1 maps.
// float goes through sgemm() (gemm.cpp: oneDNN's matmul when the trainer is built with it, the
// plain kernel otherwise), in fp32 or, inside a GemmBf16Scope, with bf16 inputs and fp32
// accumulation; double (the gradient tests) uses the plain cache-blocked kernel below.
// The plain kernel sums every C element in a fixed k order, so its results do not depend on the
// thread count.
#pragma once

#include <algorithm>
#include <cstdint>
#include <cstring>
#include <string>
#include <type_traits>
#include <vector>

#include "trainer/layers/parallel.hpp"

namespace flowrt::train {

namespace detail {

// C[M,N] = beta*C + alpha * A[M,K] * B[K,N], all non-transposed with leading dimensions.
template <typename T>
void gemm_nn(int64_t m, int64_t n, int64_t k, T alpha, const T *a, int64_t lda, const T *b,
             int64_t ldb, T beta, T *c, int64_t ldc) {
  constexpr int64_t kBlockN = 512, kBlockK = 128, kBlockM = 16;
  const int64_t row_blocks = (m + kBlockM - 1) / kBlockM;
  const int64_t col_blocks = (n + kBlockN - 1) / kBlockN;
#pragma omp parallel for collapse(2) schedule(static) if (parallel_worth(m * n * k))
  for (int64_t rb = 0; rb < row_blocks; ++rb)
    for (int64_t cbk = 0; cbk < col_blocks; ++cbk) {
      const int64_t i0 = rb * kBlockM, i1 = std::min(m, i0 + kBlockM);
      const int64_t j0 = cbk * kBlockN, j1 = std::min(n, j0 + kBlockN);
      for (int64_t i = i0; i < i1; ++i) {
        T *crow = c + i * ldc;
        if (beta == T(0)) {
          for (int64_t j = j0; j < j1; ++j) crow[j] = T(0);
        } else if (beta != T(1)) {
          for (int64_t j = j0; j < j1; ++j) crow[j] *= beta;
        }
      }
      for (int64_t k0 = 0; k0 < k; k0 += kBlockK) {
        const int64_t k1 = std::min(k, k0 + kBlockK);
        for (int64_t i = i0; i < i1; ++i) {
          T *crow = c + i * ldc;
          for (int64_t kk = k0; kk < k1; ++kk) {
            const T av = alpha * a[i * lda + kk];
            const T *brow = b + kk * ldb;
            for (int64_t j = j0; j < j1; ++j) crow[j] += av * brow[j];
          }
        }
      }
    }
}

// Copies the transpose of a rows x cols matrix (leading dimension ld) into a dense buffer.
template <typename T>
std::vector<T> transposed(const T *a, int64_t rows, int64_t cols, int64_t ld) {
  std::vector<T> t(static_cast<size_t>(rows * cols));
#pragma omp parallel for schedule(static) if (parallel_worth(rows * cols))
  for (int64_t j = 0; j < cols; ++j)
    for (int64_t i = 0; i < rows; ++i) t[j * rows + i] = a[i * ld + j];
  return t;
}

}  // namespace detail

// a16 / b16 (optional, bf16 only): a bf16 copy of a / b made by to_bf16(), element for element
// in the same layout (the same leading dimension addresses it), for an operand that several
// products read: the product uses it instead of converting the operand again (when the operand
// is dense; a strided one is still packed here). Ignored in fp32. A dense operand that exists
// only in bf16 comes as a null float pointer with its copy.
void sgemm(bool trans_a, bool trans_b, int64_t m, int64_t n, int64_t k, float alpha, const float *a,
           int64_t lda, const float *b, int64_t ldb, float beta, float *c, int64_t ldc,
           const uint16_t *a16 = nullptr, const uint16_t *b16 = nullptr);

// Whether a GemmBf16Scope is alive: sgemm() runs its products in bf16.
bool gemm_bf16_active();

// dst[i] = src[i] rounded to bf16 (nearest even), exactly as sgemm() rounds its operands.
void to_bf16(const float *src, int64_t n, uint16_t *dst);

// The bf16 bits of v as the CPUs' conversion instructions (and so oneDNN's reorders, to_bf16)
// give them: round to nearest even, denormals to a zero of the same sign, NaN to a quiet NaN.
// Branch-free, for loops that produce an operand in bf16 themselves.
inline uint16_t bf16_bits(float v) {
  uint32_t u;
  std::memcpy(&u, &v, 4);
  const uint32_t exponent = u & 0x7F800000u;
  const uint32_t rounded = (u + 0x7FFFu + ((u >> 16) & 1u)) >> 16;
  uint32_t r = exponent == 0 ? (u >> 16) & 0x8000u : rounded;
  r = exponent == 0x7F800000u && (u & 0x007FFFFFu) ? (u >> 16) | 0x40u : r;
  return static_cast<uint16_t>(r);
}

// Whether this build and CPU can run float products in bf16 with bf16 units (oneDNN ISA
// avx512_core_bf16 or avx512_core_amx); otherwise `why` says what is missing.
bool gemm_bf16_available(std::string *why = nullptr);

// While one lives, sgemm() (from any thread) rounds both operands to bf16 (round to nearest
// even) and accumulates in fp32 into the fp32 C; C's old value (beta) stays fp32. Scopes nest.
// Requires gemm_bf16_available().
class GemmBf16Scope {
 public:
  explicit GemmBf16Scope(bool on = true);
  ~GemmBf16Scope();
  GemmBf16Scope(const GemmBf16Scope &) = delete;
  GemmBf16Scope &operator=(const GemmBf16Scope &) = delete;

 private:
  bool on_;
};

// The oneDNN implementation sgemm() runs for this case in the current arithmetic
// ("brg:avx512_core_amx_bf16", ...), "dnnl_sgemm" where no matmul exists for it, "plain"
// without oneDNN. For tests and benchmarks.
std::string sgemm_impl(bool trans_a, bool trans_b, int64_t m, int64_t n, int64_t k, int64_t lda,
                       int64_t ldb, int64_t ldc, float beta, bool a16 = false, bool b16 = false);
template <typename T>
void gemm_plain(bool trans_a, bool trans_b, int64_t m, int64_t n, int64_t k, T alpha, const T *a,
                int64_t lda, const T *b, int64_t ldb, T beta, T *c, int64_t ldc);

// op(A) is M x K, op(B) is K x N; lda/ldb/ldc are the row strides of A, B and C as stored.
// a16 / b16: bf16 copies of the float operands (see sgemm); ignored for double.
template <typename T>
void gemm(bool trans_a, bool trans_b, int64_t m, int64_t n, int64_t k, T alpha, const T *a,
          int64_t lda, const T *b, int64_t ldb, T beta, T *c, int64_t ldc,
          const uint16_t *a16 = nullptr, const uint16_t *b16 = nullptr) {
  if (m == 0 || n == 0) return;
  if constexpr (std::is_same_v<T, float>) {
    sgemm(trans_a, trans_b, m, n, k, alpha, a, lda, b, ldb, beta, c, ldc, a16, b16);
    return;
  }
  (void)a16, (void)b16;
  gemm_plain(trans_a, trans_b, m, n, k, alpha, a, lda, b, ldb, beta, c, ldc);
}

// The bf16 copy of a float buffer that several products read, made on first use after each
// rewrite of the buffer (fresh = false marks it stale).
struct Bf16Copy {
  std::vector<uint16_t> data;
  bool fresh = false;
  // The copy of src (n elements), converted unless it is fresh.
  const uint16_t *of(const float *src, int64_t n) {
    if (!fresh) to_bf16(src, n, write(n));
    return data.data();
  }
  // Room for n elements that the caller fills now; the copy is fresh from then on.
  uint16_t *write(int64_t n) {
    data.resize(static_cast<size_t>(n));
    fresh = true;
    return data.data();
  }
};

// The portable kernel (also what sgemm falls back to).
template <typename T>
void gemm_plain(bool trans_a, bool trans_b, int64_t m, int64_t n, int64_t k, T alpha, const T *a,
                int64_t lda, const T *b, int64_t ldb, T beta, T *c, int64_t ldc) {
  std::vector<T> at, bt;
  if (trans_a) {  // stored K x M
    at = detail::transposed(a, k, m, lda);
    a = at.data();
    lda = k;
  }
  if (trans_b) {  // stored N x K
    bt = detail::transposed(b, n, k, ldb);
    b = bt.data();
    ldb = n;
  }
  detail::gemm_nn(m, n, k, alpha, a, lda, b, ldb, beta, c, ldc);
}

}  // namespace flowrt::train
