// Row-major C = alpha * op(A) * op(B) + beta * C for the trainer's convolutions and 1x1 maps.
// float goes through sgemm() (gemm.cpp: oneDNN's matmul when the trainer is built with it, the
// plain kernel otherwise), in fp32 or, inside a GemmBf16Scope, with bf16 inputs and fp32
// accumulation; double (the gradient tests) uses the plain cache-blocked kernel below.
// The plain kernel sums every C element in a fixed k order, so its results do not depend on the
// thread count.
#pragma once

#include <algorithm>
#include <cstdint>
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

void sgemm(bool trans_a, bool trans_b, int64_t m, int64_t n, int64_t k, float alpha, const float *a,
           int64_t lda, const float *b, int64_t ldb, float beta, float *c, int64_t ldc);

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
                       int64_t ldb, int64_t ldc, float beta);
template <typename T>
void gemm_plain(bool trans_a, bool trans_b, int64_t m, int64_t n, int64_t k, T alpha, const T *a,
                int64_t lda, const T *b, int64_t ldb, T beta, T *c, int64_t ldc);

// op(A) is M x K, op(B) is K x N; lda/ldb/ldc are the row strides of A, B and C as stored.
template <typename T>
void gemm(bool trans_a, bool trans_b, int64_t m, int64_t n, int64_t k, T alpha, const T *a,
          int64_t lda, const T *b, int64_t ldb, T beta, T *c, int64_t ldc) {
  if (m == 0 || n == 0) return;
  if constexpr (std::is_same_v<T, float>) {
    sgemm(trans_a, trans_b, m, n, k, alpha, a, lda, b, ldb, beta, c, ldc);
    return;
  }
  gemm_plain(trans_a, trans_b, m, n, k, alpha, a, lda, b, ldb, beta, c, ldc);
}

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
