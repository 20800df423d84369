// The CUDA trainer's kernels: the backward passes of every layer (the forward passes reuse the
// CUDA backend's kernels, runtime/src/backends/cuda/cuda_kernels.cuh), the nets' CNHW
// convolution helpers, per-channel and per-parameter reductions, and the optimiser. Each
// mirrors a CPU function of trainer/layers/*_backward.hpp or trainer/train/optimizer.cpp; the
// comments name it. Parameter gradients accumulate (+=) like the CPU's; reductions over images
// run in a fixed order (no float atomics), so a step's gradients do not vary between runs.
#pragma once

#include <cuda_runtime.h>

#include <cstdint>

#include "backends/cuda/cuda_kernels.cuh"
#include "model/graph.hpp"

namespace flowrt::train::cuda {

using flowrt::cuda::CouplingArgs;

// ---- Layout (model/train_model.cpp's gather_cnhw / scatter_nchw) -------------------------------
// Channels [c0, c0 + n) of an NCHW batch -> CNHW [n][batch * plane].
void gather_cnhw(const float *x, int batch, int channels, int plane, int c0, int n, float *out,
                 cudaStream_t s);
// The inverse, copying or adding into channels [c0, c0 + n) of `x`.
void scatter_nchw(const float *in, int batch, int channels, int plane, int c0, int n, float *x,
                  bool add, cudaStream_t s);

// ---- Nets (CNHW, ld = batch * plane) ---------------------------------------------------------
struct ConvShape {
  int in_ch = 0, in_total = 0, out_ch = 0, kh = 1, kw = 1;
  PaddingMode padding = PaddingMode::Zeros;
  float pad_value = 0.f;
  int k_total() const { return in_total * kh * kw; }
};
// col[(i*kh + ky)*kw + kx][q] for the whole batch (conv_backward.hpp's im2col).
void im2col(const ConvShape &g, int batch, int h, int w, const float *in, float *col,
            cudaStream_t s);
// dx[i][q] = the sum of dcol over the taps that read input pixel q, data channels only (written).
void col2im(const ConvShape &g, int batch, int h, int w, const float *dcol, float *dx,
            cudaStream_t s);
// g = y > 0 ? g : 0 (elementwise_backward.hpp's relu_backward).
void relu_mask(int64_t n, const float *y, float *g, cudaStream_t s);
// out[r] += sum over q of g[r * ld + q].
void row_sums_add(const float *g, int rows, int64_t ld, float *out, cudaStream_t s);
// scale[c] = sign[c] * exp(factor * log_scale[c]) (sign null: +1); shift[c] = scale[c] * bias[c]
// (bias null: 0).
void scale_shift(const float *sign, const float *log_scale, float factor, const float *bias, int c,
                 float *scale, float *shift, cudaStream_t s);

// Element (c, image i, pixel p) at c * channel_stride + i * image_stride + p.
struct ChannelView {
  int batch = 0, channels = 0, plane = 0;
  int64_t channel_stride = 0, image_stride = 0;
  static ChannelView nchw(int b, int c, int p) { return {b, c, p, p, int64_t(c) * p}; }
  static ChannelView cnhw(int b, int c, int p) { return {b, c, p, int64_t(b) * p, p}; }
};
// actnorm_backward.hpp: dy becomes dx = s * dy; dbias += s * sum(dy); dlog_scale += s * sum(dy *
// (x + b)) + logdet_weight.
void actnorm_backward(const ChannelView &v, const float *x, float *dy, const float *scale,
                      const float *bias, float logdet_weight, float *dbias, float *dlog_scale,
                      cudaStream_t s);
// elementwise_backward.hpp's output_scale_backward: dlog_scale += factor * sum(dy * y); dy *=
// scale.
void output_scale_backward(int channels, int64_t ld, const float *scale, float factor,
                           const float *y, float *dy, float *dlog_scale, cudaStream_t s);

// ---- Per-image log-determinant terms ----------------------------------------------------------
// acc[i] += factor * sum(v[0..count)) for every image i < n.
void add_scaled_sum(const float *v, int count, double factor, double *acc, int n, cudaStream_t s);
// acc[i] += factor * *v for every image i < n.
void add_scaled_value(const double *v, double factor, double *acc, int n, cudaStream_t s);

// ---- Invertible 1x1 convolution (invconv_backward.hpp) ----------------------------------------
void lu_compose(int c, const int32_t *perm, const float *lower, const float *upper,
                const float *sign, const float *log_s, float *w, cudaStream_t s);
// da: c*c floats of scratch.
void lu_backward(int c, const int32_t *perm, const float *lower, const float *upper,
                 const float *sign, const float *log_s, const float *dw, float logdet_weight,
                 float *da, float *dlower, float *dupper, float *dlog_s, cudaStream_t s);
// log|det W| and W^-1 of a dense W by Gauss-Jordan elimination in double with partial pivoting
// (one block); scratch: 2*c*c doubles. A singular W gives -inf / non-finite values, which the
// step's NaN/Inf guard then catches.
void dense_inverse(int c, const float *w, double *scratch, double *log_abs_det, float *inv,
                   cudaStream_t s);
// grad += dw + weight * inv^T.
void add_dense_grad(int c, const float *dw, const float *inv, float weight, float *grad,
                    cudaStream_t s);
// out[k] = sum over i < n of parts[i * count + k] (images in order).
void sum_parts(const float *parts, int n, int64_t count, float *out, cudaStream_t s);

// ---- Coupling, split and top prior ------------------------------------------------------------
// coupling_backward.hpp for n images: xb/dyb/dxb with stride x_stride, h/dh with h_stride.
void coupling_backward(const CouplingArgs &a, const float *h, int64_t h_stride, const float *xb,
                       const float *dyb, int64_t x_stride, int cb, int plane, int n,
                       float logdet_weight, float *dxb, float *dh, cudaStream_t s);
// gaussian_backward.hpp for a split: dz (written, stride z_stride) and, with a prior net,
// dprior (written, stride prior_stride); prior null: standard normal.
void split_backward(const float *z, int64_t z_stride, const float *prior, int64_t prior_stride,
                    PriorLayout layout, int cz, int plane, int n, float weight, float *dz,
                    float *dprior, cudaStream_t s);
// The top prior: dz (written), dmean/dlog_std (accumulated, may be null; each element sums the
// images in order) and the class offsets' gradient (accumulated, may be null).
void top_backward(const float *z, int64_t z_stride, const float *mean, const float *log_std,
                  const float *offsets, const int32_t *labels, int c, int plane, int n,
                  int n_classes, float weight, float *dz, float *dmean, float *dlog_std,
                  float *doffsets, cudaStream_t s);

// log p = log prior + log det per image; bits/dim = n_bits - log p / (dims ln 2); out[n] = mean.
void bits_per_dim(const double *log_det, const double *log_prior, int n, double dims, int n_bits,
                  double *bpd, cudaStream_t s);

// ---- Optimiser (optimizer.cpp) ---------------------------------------------------------------
// What one step's update does, decided on the device from its loss and gradient norm.
struct UpdatePlan {
  double grad_norm;
  int applied;        // the loss and the norm were finite
  float clip_scale;   // min(1, clip / norm) / loss scale
  float step_size;    // lr / (1 - beta1^t)
  float inv_sqrt_c2;  // 1 / sqrt(1 - beta2^t)
};
constexpr int kNormPartials = 1024;
// *out = sum of g^2 (double; fixed-order two-pass reduction, `partials` kNormPartials doubles).
void sum_squares(const float *g, int64_t n, double *partials, double *out, cudaStream_t s);
// Fills *plan from *norm_sq (of the gradients times loss_scale) and *loss; increments *t when
// the step applies. clip_scale then also divides the loss scale out.
void plan_update(const double *norm_sq, const double *loss, double loss_scale, double clip,
                 double lr, double beta1, double beta2, int64_t *t, UpdatePlan *plan,
                 cudaStream_t s);
// Adam::step on clip_scale * grads when plan->applied.
void adam_update(const UpdatePlan *plan, int64_t n, const float *grads, float beta1, float beta2,
                 float eps, float *params, float *m, float *v, cudaStream_t s);
// ema = decay * ema + (1 - decay) * params when plan->applied.
// (decay and 1 - decay both rounded from double on the host, as the CPU's ema_update.)
void ema_update(const UpdatePlan *plan, int64_t n, const float *params, float decay,
                float one_minus_decay, float *ema, cudaStream_t s);

}  // namespace flowrt::train::cuda
