// Device helpers shared by the CUDA backend's kernels and the CUDA trainer's: launch geometry,
// the block reduction into a double, and the format's channel conventions (which channels of a
// net's output are shift/scale, mean/log-std).
#pragma once

#include <cuda_runtime.h>

#include <cstdint>

#include "model/graph.hpp"

namespace flowrt::cuda::dev {

constexpr int kThreads = 256;
constexpr double kHalfLog2Pi = 0.91893853320467274178;

// Blocks for a grid-stride loop over `total` elements.
inline int blocks_for(int64_t total) {
  const int64_t b = (total + kThreads - 1) / kThreads;
  return static_cast<int>(b < 65535 * 32 ? (b > 0 ? b : 1) : 65535 * 32);
}

// Grid for per-image reductions: x covers an image's elements, y the images.
inline dim3 reduce_grid(int64_t per_image, int n) {
  int64_t bx = (per_image + kThreads * 4 - 1) / (kThreads * 4);
  if (bx < 1) bx = 1;
  if (bx > 1024) bx = 1024;
  return dim3(static_cast<unsigned>(bx), static_cast<unsigned>(n));
}

// The sum of `v` over a block of kThreads threads, valid in thread 0 (every thread must call).
__device__ inline double block_sum(double v) {
  __shared__ double partial[kThreads / 32];
  for (int o = 16; o > 0; o >>= 1) v += __shfl_down_sync(0xffffffffu, v, o);
  const int lane = threadIdx.x & 31, warp = threadIdx.x >> 5;
  __syncthreads();  // the shared array may still be read from a previous call
  if (lane == 0) partial[warp] = v;
  __syncthreads();
  v = 0.0;
  if (warp == 0) {
    v = lane < kThreads / 32 ? partial[lane] : 0.0;
    for (int o = 16; o > 0; o >>= 1) v += __shfl_down_sync(0xffffffffu, v, o);
  }
  return v;
}

// Sums `v` over the block and adds it to *out with one atomic (double atomics: sm_60+).
__device__ inline void block_add(double v, double *out) {
  v = block_sum(v);
  if (threadIdx.x == 0) atomicAdd(out, v);
}

__device__ inline float log_sigmoid(float a) {
  return a > 0.f ? -log1pf(expf(-a)) : a - log1pf(expf(a));
}

// Net output channels of coupling channel j: the shift t and the scale's raw value.
__device__ inline void shift_scale_channels(int split, int j, int cb, int *t, int *raw) {
  switch (split) {
    case int(ShiftScaleSplit::ShiftScaleHalves):
      *t = j, *raw = cb + j;
      break;
    case int(ShiftScaleSplit::ScaleShiftHalves):
      *raw = j, *t = cb + j;
      break;
    case int(ShiftScaleSplit::ShiftScaleInterleaved):
      *t = 2 * j, *raw = 2 * j + 1;
      break;
    default:
      *raw = 2 * j, *t = 2 * j + 1;
      break;
  }
}

// Prior net output channels of latent channel j: mean and log-std.
__device__ inline void prior_channels(int layout, int j, int cz, int *mc, int *lc) {
  if (layout == int(PriorLayout::MeanLogstdHalves))
    *mc = j, *lc = cz + j;
  else
    *mc = 2 * j, *lc = 2 * j + 1;
}

}  // namespace flowrt::cuda::dev
