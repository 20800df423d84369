// A coupling net's actnorm in the forward pass, with the ReLU that follows it, as one parallel
// pass over the CNHW tensor: y = max(scale[c] * x + shift[c], 0). The unfused chain was a copy,
// an in-place affine (both on one thread) and a ReLU pass. For bf16 products the result can go
// straight into the bf16 operand of the conv that reads it (affine_relu_bf16): its fp32 values
// are then never stored, which saves the conversion's pass and half the bytes.
#pragma once

#include <algorithm>
#include <cstdint>
#include <type_traits>

#include "trainer/layers/gemm.hpp"
#include "trainer/layers/parallel.hpp"

namespace flowrt::train {

namespace detail {
constexpr int64_t kAffineBlock = 4096;  // elements per parallel work item (rows can be short)
}

// y[c][q] = scale[c] * x[c][q] + shift[c] (then max(0, .) when relu), ch rows of ld elements.
template <typename T>
void affine_relu(const T *scale, const T *shift, int64_t ch, int64_t ld, const T *x, T *y,
                 bool relu) {
  const int64_t blocks = (ld + detail::kAffineBlock - 1) / detail::kAffineBlock;
#pragma omp parallel for schedule(static) if (parallel_worth(ch * ld))
  for (int64_t r = 0; r < ch * blocks; ++r) {
    const int64_t c = r / blocks, q0 = (r % blocks) * detail::kAffineBlock;
    const int64_t q1 = std::min(ld, q0 + detail::kAffineBlock);
    const T s = scale[c], t = shift[c];
    const T *xr = x + c * ld;
    T *yr = y + c * ld;
    if (relu) {
      for (int64_t q = q0; q < q1; ++q) {
        const T v = s * xr[q] + t;
        yr[q] = v > T(0) ? v : T(0);
      }
    } else {
      for (int64_t q = q0; q < q1; ++q) yr[q] = s * xr[q] + t;
    }
  }
}

// y16 = bf16(max(scale[c] * x + shift[c], 0)), as affine_relu then to_bf16 give (bf16_bits).
// A null scale is 1 and a null shift 0 (a conv's bias and ReLU: scale null, shift the bias).
void affine_relu_bf16(const float *scale, const float *shift, int64_t ch, int64_t ld,
                      const float *x, uint16_t *y16);

// One channel of a conv's output-gradient pass (conv_backward): row = dout masked where the
// ReLU's output (fp32 y or bf16 y16; either or both may be null) is zero, in place; returns its
// sum (the bias gradient), taken over kLanes interleaved partial sums combined in a fixed order,
// so that the loop vectorises and the result does not depend on the thread count. With kCopy
// (float) it also writes the masked row's bf16 copy into d16 (the products' operand).
// Always inlined: mask_sum_row_bf16's AVX-512 clone compiles its body only if it is inlined
// there (a called copy would be the generic build's, measured 10 % slower bf16 training).
template <bool kCopy, typename T>
[[gnu::always_inline]] inline T mask_sum_row(T *row, const T *y, const uint16_t *y16, uint16_t *d16,
                                             int64_t n) {
  static_assert(!kCopy || std::is_same_v<T, float>, "bf16 copies are of float rows");
  constexpr int kLanes = 16;
  T lanes[kLanes] = {};
  int64_t q = 0;
  for (; q + kLanes <= n; q += kLanes)
    for (int l = 0; l < kLanes; ++l) {
      const bool keep = (!y || y[q + l] > T(0)) && (!y16 || y16[q + l] != 0);
      const T v = keep ? row[q + l] : T(0);  // branch-free
      row[q + l] = v;
      if constexpr (kCopy) d16[q + l] = bf16_bits(v);
      lanes[l] += v;
    }
  T acc = 0;
  for (; q < n; ++q) {
    const bool keep = (!y || y[q] > T(0)) && (!y16 || y16[q] != 0);
    const T v = keep ? row[q] : T(0);
    row[q] = v;
    if constexpr (kCopy) d16[q] = bf16_bits(v);
    acc += v;
  }
  for (int l = 0; l < kLanes; ++l) acc += lanes[l];
  return acc;
}

// mask_sum_row<true>, compiled for AVX-512 too (affine_relu.cpp).
float mask_sum_row_bf16(float *row, const float *y, const uint16_t *y16, uint16_t *d16, int64_t n);

// The ReLU's backward from its bf16 output: dy = 0 where y16 is zero (every ReLU output is +0 or
// positive).
void relu_backward_bf16(int64_t n, const uint16_t *y16, float *dy);

}  // namespace flowrt::train
