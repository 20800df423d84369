#include "backends/cuda/cuda_device_common.cuh"
#include "backends/cuda/cuda_kernels.cuh"
#include "core/error.hpp"
#include "core/philox.hpp"

namespace flowrt::cuda {
namespace {

using namespace dev;

__global__ void squeeze_k(int order, int c, int h, int w, int n, int64_t stride, const float *src,
                          float *dst, bool inverse) {
  const int64_t per = int64_t(c) * h * w, total = per * n;
  const int h2 = h / 2, w2 = w / 2;
  for (int64_t t = blockIdx.x * int64_t(blockDim.x) + threadIdx.x; t < total;
       t += int64_t(gridDim.x) * blockDim.x) {
    const int64_t i = t / per, e = t % per;
    const int ch = static_cast<int>(e / (h * w)), y = static_cast<int>((e / w) % h),
              x = static_cast<int>(e % w);
    const int sub = (y & 1) * 2 + (x & 1);
    const int oc = order == int(SqueezeOrder::ChannelMajor) ? ch * 4 + sub : sub * c + ch;
    const int64_t sq = (int64_t(oc) * h2 + y / 2) * w2 + x / 2;
    if (!inverse)
      dst[i * stride + sq] = src[i * stride + e];
    else
      dst[i * stride + e] = src[i * stride + sq];
  }
}

__global__ void channel_affine_k(const float *scale, const float *shift, int c, int plane, int n,
                                 int64_t stride, float *x, bool inverse) {
  const int64_t per = int64_t(c) * plane, total = per * n;
  for (int64_t t = blockIdx.x * int64_t(blockDim.x) + threadIdx.x; t < total;
       t += int64_t(gridDim.x) * blockDim.x) {
    const int64_t i = t / per, e = t % per;
    const int ch = static_cast<int>(e / plane);
    float &v = x[i * stride + e];
    v = inverse ? (v - shift[ch]) / scale[ch] : scale[ch] * v + shift[ch];
  }
}

__global__ void add_bias_k(const float *bias, float sign, bool relu, int c, int plane, int n,
                           int64_t stride, float *x) {
  const int64_t per = int64_t(c) * plane, total = per * n;
  for (int64_t t = blockIdx.x * int64_t(blockDim.x) + threadIdx.x; t < total;
       t += int64_t(gridDim.x) * blockDim.x) {
    const int64_t i = t / per, e = t % per;
    float v = x[i * stride + e] + (bias ? sign * bias[e / plane] : 0.f);
    x[i * stride + e] = relu ? fmaxf(v, 0.f) : v;
  }
}

__global__ void permute_k(const int32_t *source, int c, int plane, int n, int64_t stride,
                          const float *src, float *dst, bool inverse) {
  const int64_t per = int64_t(c) * plane, total = per * n;
  for (int64_t t = blockIdx.x * int64_t(blockDim.x) + threadIdx.x; t < total;
       t += int64_t(gridDim.x) * blockDim.x) {
    const int64_t i = t / per, e = t % per;
    const int k = static_cast<int>(e / plane), p = static_cast<int>(e % plane);
    const int64_t from = int64_t(source[k]) * plane + p;
    if (!inverse)
      dst[i * stride + e] = src[i * stride + from];
    else
      dst[i * stride + from] = src[i * stride + e];
  }
}

__global__ void im2col_k(const float *in, int64_t in_stride, int in_ch, int in_total, int h, int w,
                         int kh, int kw, int padding, float pad_value, int n, float *col,
                         int64_t col_stride) {
  const int plane = h * w;
  const int64_t per = int64_t(in_total) * kh * kw * plane, total = per * n;
  for (int64_t t = blockIdx.x * int64_t(blockDim.x) + threadIdx.x; t < total;
       t += int64_t(gridDim.x) * blockDim.x) {
    const int64_t i = t / per, e = t % per;
    const int p = static_cast<int>(e % plane);
    const int k = static_cast<int>(e / plane);
    const int kx = k % kw, ky = (k / kw) % kh, ch = k / (kw * kh);
    const int y = p / w + ky - kh / 2, x = p % w + kx - kw / 2;
    const bool inside = y >= 0 && y < h && x >= 0 && x < w;
    float v;
    if (ch >= in_ch)  // Glow's edge channel: 1 outside the image, 0 inside
      v = inside ? 0.f : 1.f;
    else if (inside)
      v = in[i * in_stride + int64_t(ch) * plane + y * w + x];
    else
      v = padding == int(PaddingMode::Constant) ? pad_value : 0.f;
    col[i * col_stride + e] = v;
  }
}

// One image per blockIdx.y. checker < 0: xb is the transformed half; checker = 0 / 1: xb is the
// whole tensor and the positions of x_a (parity `checker`) are passed through unchanged.
__global__ void coupling_k(CouplingArgs a, const float *scale_weight, int checker, int width,
                           const float *h, int64_t h_stride, float *xb, int64_t x_stride, int cb,
                           int plane, double *logdet, bool inverse) {
  const int i = blockIdx.y;
  const int64_t per = int64_t(cb) * plane;
  const float *hi = h + i * h_stride;
  double acc = 0;
  for (int64_t e = blockIdx.x * int64_t(blockDim.x) + threadIdx.x; e < per;
       e += int64_t(gridDim.x) * blockDim.x) {
    const int j = static_cast<int>(e / plane), p = static_cast<int>(e % plane);
    if (checker >= 0 && ((p / width + p % width) & 1) == checker) continue;
    float &x = xb[i * x_stride + e];
    if (a.type == CouplingType::Additive) {
      x = inverse ? x - hi[e] : x + hi[e];
      continue;
    }
    int tc = 0, rc = 0;
    shift_scale_channels(int(a.split), j, cb, &tc, &rc);
    const float t = hi[int64_t(tc) * plane + p];
    const float arg = hi[int64_t(rc) * plane + p] + a.scale_bias;
    float s, ls;
    if (a.scale_fn == ScaleFunction::Exp) {
      s = expf(arg), ls = arg;
    } else if (a.scale_fn == ScaleFunction::Tanh) {
      ls = scale_weight[j] * tanhf(arg), s = expf(ls);
    } else {
      s = 1.f / (1.f + expf(-arg)), ls = log_sigmoid(arg);
    }
    acc += ls;
    if (a.form == AffineForm::ShiftThenScale)
      x = inverse ? x / s - t : (x + t) * s;
    else
      x = inverse ? (x - t) / s : x * s + t;
  }
  if (logdet && a.type == CouplingType::Affine) block_add(inverse ? -acc : acc, logdet + i);
}

__global__ void checker_input_k(int checker, int c, int w, int plane, bool mask_channel, int n,
                                int64_t x_stride, const float *x, float *out, int64_t out_stride) {
  const int64_t per = int64_t(c + (mask_channel ? 1 : 0)) * plane, total = per * n;
  for (int64_t t = blockIdx.x * int64_t(blockDim.x) + threadIdx.x; t < total;
       t += int64_t(gridDim.x) * blockDim.x) {
    const int64_t i = t / per, e = t % per;
    const int ch = static_cast<int>(e / plane), p = static_cast<int>(e % plane);
    const bool m = ((p / w + p % w) & 1) == checker;
    float v;
    if (ch < c)
      v = m ? x[i * x_stride + e] : 0.f;
    else  // the mask channel
      v = m ? 1.f : 0.f;
    out[i * out_stride + e] = v;
  }
}

// In double: y = log(u) - log(1 - u) cancels near u = 1/2, and for a small alpha the log terms
// are large at the ends of the pixel range, where float would lose their digits.
__global__ void logit_k(float alpha, int64_t per, int64_t stride, float *x, double *logdet,
                        bool inverse) {
  const int i = blockIdx.y;
  const double a = alpha, range = 1.0 - 2.0 * a, log_range = log(range);
  double acc = 0;
  for (int64_t e = blockIdx.x * int64_t(blockDim.x) + threadIdx.x; e < per;
       e += int64_t(gridDim.x) * blockDim.x) {
    float &v = x[i * stride + e];
    if (!inverse) {
      const double u = a + range * (double(v) + 0.5);
      const double log_u = log(u), log_1mu = log1p(-u);
      v = static_cast<float>(log_u - log_1mu);
      acc += log_range - log_u - log_1mu;
    } else {
      const double u = 1.0 / (1.0 + exp(-double(v)));
      v = static_cast<float>((u - a) / range - 0.5);
    }
  }
  if (logdet) block_add(acc, logdet + i);
}

__global__ void split_logp_k(const float *z, int64_t z_stride, const float *prior,
                             int64_t prior_stride, int layout, int cz, int plane, double *logp) {
  const int i = blockIdx.y;
  const int64_t per = int64_t(cz) * plane;
  double acc = 0;
  for (int64_t e = blockIdx.x * int64_t(blockDim.x) + threadIdx.x; e < per;
       e += int64_t(gridDim.x) * blockDim.x) {
    const double v = z[i * z_stride + e];
    double mean = 0, ls = 0;
    if (prior) {
      const int j = static_cast<int>(e / plane), p = static_cast<int>(e % plane);
      int mc = 0, lc = 0;
      prior_channels(layout, j, cz, &mc, &lc);
      mean = prior[i * prior_stride + int64_t(mc) * plane + p];
      ls = prior[i * prior_stride + int64_t(lc) * plane + p];
    }
    const double d = (v - mean) * exp(-ls);
    acc += -kHalfLog2Pi - ls - 0.5 * d * d;
  }
  block_add(acc, logp + i);
}

__global__ void split_sample_k(const float *eps, int64_t eps_stride, const float *prior,
                               int64_t prior_stride, int layout, int cz, int plane, int n,
                               const SampleParams *params, float *out, int64_t out_stride) {
  const int64_t per = int64_t(cz) * plane, total = per * n;
  const float temp = params->temperature;
  for (int64_t t = blockIdx.x * int64_t(blockDim.x) + threadIdx.x; t < total;
       t += int64_t(gridDim.x) * blockDim.x) {
    const int64_t i = t / per, e = t % per;
    float mean = 0.f, ls = 0.f;
    if (prior) {
      const int j = static_cast<int>(e / plane), p = static_cast<int>(e % plane);
      int mc = 0, lc = 0;
      prior_channels(layout, j, cz, &mc, &lc);
      mean = prior[i * prior_stride + int64_t(mc) * plane + p];
      ls = prior[i * prior_stride + int64_t(lc) * plane + p];
    }
    out[i * out_stride + e] = mean + temp * expf(ls) * eps[i * eps_stride + e];
  }
}

__global__ void top_logp_k(const float *z, int64_t z_stride, const float *mean,
                           const float *log_std, const float *offsets, const int32_t *labels, int c,
                           int plane, double *logp) {
  const int i = blockIdx.y;
  const int64_t per = int64_t(c) * plane;
  const int label = labels ? labels[i] : -1;
  double acc = 0;
  for (int64_t e = blockIdx.x * int64_t(blockDim.x) + threadIdx.x; e < per;
       e += int64_t(gridDim.x) * blockDim.x) {
    const int ch = static_cast<int>(e / plane);
    double m = mean[e], ls = log_std[e];
    if (label >= 0 && offsets) {
      m += offsets[int64_t(label) * 2 * c + ch];
      ls += offsets[int64_t(label) * 2 * c + c + ch];
    }
    const double d = (double(z[i * z_stride + e]) - m) * exp(-ls);
    acc += -kHalfLog2Pi - ls - 0.5 * d * d;
  }
  block_add(acc, logp + i);
}

__global__ void top_sample_k(const float *eps, int64_t eps_stride, const float *mean,
                             const float *log_std, const float *offsets, const int32_t *labels,
                             int c, int plane, int n, const SampleParams *params, float *out,
                             int64_t out_stride) {
  const int64_t per = int64_t(c) * plane, total = per * n;
  const float temp = params->temperature;
  for (int64_t t = blockIdx.x * int64_t(blockDim.x) + threadIdx.x; t < total;
       t += int64_t(gridDim.x) * blockDim.x) {
    const int64_t i = t / per, e = t % per;
    const int ch = static_cast<int>(e / plane);
    float m = mean[e], ls = log_std[e];
    if (labels && offsets) {
      m += offsets[int64_t(labels[i]) * 2 * c + ch];
      ls += offsets[int64_t(labels[i]) * 2 * c + c + ch];
    }
    out[i * out_stride + e] = m + temp * expf(ls) * eps[i * eps_stride + e];
  }
}

__global__ void philox_k(const SampleParams *params, int n, int64_t dims, float *eps) {
  const int64_t total = dims * n;
  const unsigned long long seed = params->seed, first = params->first_image;
  for (int64_t t = blockIdx.x * int64_t(blockDim.x) + threadIdx.x; t < total;
       t += int64_t(gridDim.x) * blockDim.x)
    eps[t] = philox_normal(seed, first + static_cast<uint64_t>(t / dims),
                           static_cast<uint64_t>(t % dims));
}

}  // namespace

__global__ void add_into_k(const float *src, bool relu, int64_t per, int n, int64_t stride,
                           float *x) {
  const int64_t total = per * n;
  for (int64_t t = blockIdx.x * int64_t(blockDim.x) + threadIdx.x; t < total;
       t += int64_t(gridDim.x) * blockDim.x) {
    const int64_t i = t / per, e = t % per;
    const float v = x[i * stride + e] + src[i * stride + e];
    x[i * stride + e] = relu ? fmaxf(v, 0.f) : v;
  }
}

void add_into(const float *src, bool relu, const Shape3 &sh, int n, int64_t stride, float *x,
              cudaStream_t s) {
  add_into_k<<<blocks_for(sh.numel() * n), kThreads, 0, s>>>(src, relu, sh.numel(), n, stride, x);
}

void squeeze(SqueezeOrder order, const Shape3 &in, int n, int64_t stride, const float *src,
             float *dst, bool inverse, cudaStream_t s) {
  squeeze_k<<<blocks_for(in.numel() * n), kThreads, 0, s>>>(
      int(order), int(in.c), int(in.h), int(in.w), n, stride, src, dst, inverse);
}

void channel_affine(const float *scale, const float *shift, const Shape3 &sh, int n, int64_t stride,
                    float *x, bool inverse, cudaStream_t s) {
  channel_affine_k<<<blocks_for(sh.numel() * n), kThreads, 0, s>>>(
      scale, shift, int(sh.c), int(sh.plane()), n, stride, x, inverse);
}

void add_bias(const float *bias, float sign, bool relu, const Shape3 &sh, int n, int64_t stride,
              float *x, cudaStream_t s) {
  add_bias_k<<<blocks_for(sh.numel() * n), kThreads, 0, s>>>(bias, sign, relu, int(sh.c),
                                                             int(sh.plane()), n, stride, x);
}

void permute(const int32_t *source, const Shape3 &sh, int n, int64_t stride, const float *src,
             float *dst, bool inverse, cudaStream_t s) {
  permute_k<<<blocks_for(sh.numel() * n), kThreads, 0, s>>>(source, int(sh.c), int(sh.plane()), n,
                                                            stride, src, dst, inverse);
}

void im2col(const float *in, int64_t in_stride, int in_ch, int in_total, int h, int w, int kh,
            int kw, PaddingMode padding, float pad_value, int n, float *col, int64_t col_stride,
            cudaStream_t s) {
  const int64_t total = int64_t(in_total) * kh * kw * h * w * n;
  im2col_k<<<blocks_for(total), kThreads, 0, s>>>(in, in_stride, in_ch, in_total, h, w, kh, kw,
                                                  int(padding), pad_value, n, col, col_stride);
}

void coupling(const CouplingArgs &a, const float *h, int64_t h_stride, float *xb, int64_t x_stride,
              int cb, int plane, int n, double *logdet, bool inverse, cudaStream_t s) {
  if (a.scale_fn == ScaleFunction::Tanh)
    fail(FLOWRT_INTERNAL_ERROR, "a tanh-scale coupling needs its scale weights");
  coupling(a, nullptr, -1, 1, h, h_stride, xb, x_stride, cb, plane, n, logdet, inverse, s);
}

void coupling(const CouplingArgs &a, const float *scale_weight, int checker, int width,
              const float *h, int64_t h_stride, float *xb, int64_t x_stride, int cb, int plane,
              int n, double *logdet, bool inverse, cudaStream_t s) {
  coupling_k<<<reduce_grid(int64_t(cb) * plane, n), kThreads, 0, s>>>(
      a, scale_weight, checker, width, h, h_stride, xb, x_stride, cb, plane, logdet, inverse);
}

void checker_input(int checker, bool mask_channel, const Shape3 &sh, int n, int64_t x_stride,
                   const float *x, float *out, int64_t out_stride, cudaStream_t s) {
  const int64_t total = (sh.c + (mask_channel ? 1 : 0)) * sh.plane() * n;
  checker_input_k<<<blocks_for(total), kThreads, 0, s>>>(checker, int(sh.c), int(sh.w),
                                                         int(sh.plane()), mask_channel, n, x_stride,
                                                         x, out, out_stride);
}

void logit(float alpha, const Shape3 &sh, int n, int64_t stride, float *x, double *logdet,
           bool inverse, cudaStream_t s) {
  logit_k<<<reduce_grid(sh.numel(), n), kThreads, 0, s>>>(alpha, sh.numel(), stride, x, logdet,
                                                          inverse);
}

void split_log_prob(const float *z, int64_t z_stride, const float *prior, int64_t prior_stride,
                    PriorLayout layout, int cz, int plane, int n, double *logp, cudaStream_t s) {
  split_logp_k<<<reduce_grid(int64_t(cz) * plane, n), kThreads, 0, s>>>(
      z, z_stride, prior, prior_stride, int(layout), cz, plane, logp);
}

void split_sample(const float *eps, int64_t eps_stride, const float *prior, int64_t prior_stride,
                  PriorLayout layout, int cz, int plane, int n, const SampleParams *params,
                  float *out, int64_t out_stride, cudaStream_t s) {
  split_sample_k<<<blocks_for(int64_t(cz) * plane * n), kThreads, 0, s>>>(
      eps, eps_stride, prior, prior_stride, int(layout), cz, plane, n, params, out, out_stride);
}

void top_log_prob(const float *z, int64_t z_stride, const float *mean, const float *log_std,
                  const float *offsets, const int32_t *labels, int c, int plane, int n,
                  double *logp, cudaStream_t s) {
  top_logp_k<<<reduce_grid(int64_t(c) * plane, n), kThreads, 0, s>>>(
      z, z_stride, mean, log_std, offsets, labels, c, plane, logp);
}

void top_sample(const float *eps, int64_t eps_stride, const float *mean, const float *log_std,
                const float *offsets, const int32_t *labels, int c, int plane, int n,
                const SampleParams *params, float *out, int64_t out_stride, cudaStream_t s) {
  top_sample_k<<<blocks_for(int64_t(c) * plane * n), kThreads, 0, s>>>(
      eps, eps_stride, mean, log_std, offsets, labels, c, plane, n, params, out, out_stride);
}

void philox_normals(const SampleParams *params, int n, int64_t dims, float *eps, cudaStream_t s) {
  philox_k<<<blocks_for(dims * n), kThreads, 0, s>>>(params, n, dims, eps);
}

}  // namespace flowrt::cuda
