// The CUDA backend's element-wise kernels, one launcher per layer operation. Activations are
// NCHW with a per-image stride (in floats); per-image log-densities accumulate in double with
// one atomic add per block. Values that change between replays of a captured CUDA Graph (the
// temperature, the seed, the first image index) are read from device memory.
#pragma once

#include <cuda_runtime.h>

#include <cstdint>

#include "model/graph.hpp"

namespace flowrt::cuda {

struct SampleParams {
  unsigned long long seed;
  unsigned long long first_image;
  float temperature;
};

void squeeze(SqueezeOrder order, const Shape3 &in, int n, int64_t stride, const float *src,
             float *dst, bool inverse, cudaStream_t s);
void channel_affine(const float *scale, const float *shift, const Shape3 &sh, int n, int64_t stride,
                    float *x, bool inverse, cudaStream_t s);
// x[c] += sign * bias[c], then ReLU when `relu`.
void add_bias(const float *bias, float sign, bool relu, const Shape3 &sh, int n, int64_t stride,
              float *x, cudaStream_t s);
// x += src (a residual connection; both `stride` apart per image), then ReLU when `relu`.
void add_into(const float *src, bool relu, const Shape3 &sh, int n, int64_t stride, float *x,
              cudaStream_t s);
void permute(const int32_t *source, const Shape3 &sh, int n, int64_t stride, const float *src,
             float *dst, bool inverse, cudaStream_t s);
// col: per image [in_total*kh*kw, h*w] row-major, images `col_stride` apart.
void im2col(const float *in, int64_t in_stride, int in_ch, int in_total, int h, int w, int kh,
            int kw, PaddingMode padding, float pad_value, int n, float *col, int64_t col_stride,
            cudaStream_t s);

struct CouplingArgs {
  CouplingType type;
  ShiftScaleSplit split;
  ScaleFunction scale_fn;
  AffineForm form;
  float scale_bias;
};
// A channel coupling (conditioning First/Second) without the tanh scale: xb is the transformed
// half (cb channels), changed in place; logdet (n doubles, or null) accumulates sum(log s).
void coupling(const CouplingArgs &a, const float *h, int64_t h_stride, float *xb, int64_t x_stride,
              int cb, int plane, int n, double *logdet, bool inverse, cudaStream_t s);
// Any coupling. scale_weight: ScaleFunction::Tanh's [cb] weights on the device (else unused).
// checker < 0: a channel coupling, as above. checker = 0 or 1: a checkerboard coupling whose x_a
// is the positions (i, j) with (i + j) % 2 == checker; xb is then the whole tensor (cb = C
// channels of `width` columns), and only the other positions change and count in log|det|.
void coupling(const CouplingArgs &a, const float *scale_weight, int checker, int width,
              const float *h, int64_t h_stride, float *xb, int64_t x_stride, int cb, int plane,
              int n, double *logdet, bool inverse, cudaStream_t s);
// A checkerboard coupling's net input: channels [0, C) of `out` are x * m, channel C (with
// mask_channel) is m itself, where m(i, j) = 1 if (i + j) % 2 == checker, else 0.
void checker_input(int checker, bool mask_channel, const Shape3 &sh, int n, int64_t x_stride,
                   const float *x, float *out, int64_t out_stride, cudaStream_t s);
// The logit layer in place on every element of `sh`: encode y = log(u) - log(1 - u) with
// u = alpha + (1 - 2 alpha)(x + 1/2), adding log(1 - 2 alpha) - log(u) - log(1 - u) to logdet[i]
// (n doubles); inverse: x = (sigmoid(y) - alpha) / (1 - 2 alpha) - 1/2 (logdet unused).
void logit(float alpha, const Shape3 &sh, int n, int64_t stride, float *x, double *logdet,
           bool inverse, cudaStream_t s);

// log N(z; mean, std) summed per image into logp. prior: the split prior net's output (2*cz
// channels, `layout`), or null for a standard normal.
void split_log_prob(const float *z, int64_t z_stride, const float *prior, int64_t prior_stride,
                    PriorLayout layout, int cz, int plane, int n, double *logp, cudaStream_t s);
// z = mean + T * std * eps into `out` (stride out_stride).
void split_sample(const float *eps, int64_t eps_stride, const float *prior, int64_t prior_stride,
                  PriorLayout layout, int cz, int plane, int n, const SampleParams *params,
                  float *out, int64_t out_stride, cudaStream_t s);
// Top prior: mean/log_std [C*plane] shared by all images, offsets [classes, 2C] by label.
void top_log_prob(const float *z, int64_t z_stride, const float *mean, const float *log_std,
                  const float *offsets, const int32_t *labels, int c, int plane, int n,
                  double *logp, cudaStream_t s);
void top_sample(const float *eps, int64_t eps_stride, const float *mean, const float *log_std,
                const float *offsets, const int32_t *labels, int c, int plane, int n,
                const SampleParams *params, float *out, int64_t out_stride, cudaStream_t s);
// eps[i*dims + e] = philox_normal(seed, first_image + i, e).
void philox_normals(const SampleParams *params, int n, int64_t dims, float *eps, cudaStream_t s);

}  // namespace flowrt::cuda
