#include "backends/cuda/cuda_device_common.cuh"
#include "trainer/cuda/train_kernels.cuh"

namespace flowrt::train::cuda {
namespace {

using namespace flowrt::cuda::dev;

#define GRID_STRIDE(t, total)                                                   \
  for (int64_t t = blockIdx.x * int64_t(blockDim.x) + threadIdx.x; t < (total); \
       t += int64_t(gridDim.x) * blockDim.x)

__global__ void gather_cnhw_k(const float *x, int batch, int channels, int plane, int c0, int n,
                              float *out) {
  const int64_t ld = int64_t(batch) * plane, total = ld * n;
  GRID_STRIDE(t, total) {
    const int64_t c = t / ld, q = t % ld, b = q / plane, p = q % plane;
    out[t] = x[(b * channels + c0 + c) * plane + p];
  }
}

__global__ void scatter_nchw_k(const float *in, int batch, int channels, int plane, int c0, int n,
                               float *x, bool add) {
  const int64_t ld = int64_t(batch) * plane, total = ld * n;
  GRID_STRIDE(t, total) {
    const int64_t c = t / ld, q = t % ld, b = q / plane, p = q % plane;
    float &d = x[(b * channels + c0 + c) * plane + p];
    d = add ? d + in[t] : in[t];
  }
}

__global__ void im2col_k(ConvShape g, int batch, int h, int w, const float *in, float *col) {
  const int64_t plane = int64_t(h) * w, ld = plane * batch;
  const int64_t total = ld * g.in_total * g.kh * g.kw;
  const float outside_data = g.padding == PaddingMode::Constant ? g.pad_value : 0.f;
  GRID_STRIDE(t, total) {
    const int64_t r = t / ld, q = t % ld, p = q % plane;
    const int i = static_cast<int>(r / (g.kh * g.kw)), ky = static_cast<int>((r / g.kw) % g.kh),
              kx = static_cast<int>(r % g.kw);
    const int iy = static_cast<int>(p / w) + ky - g.kh / 2,
              ix = static_cast<int>(p % w) + kx - g.kw / 2;
    const bool inside = iy >= 0 && iy < h && ix >= 0 && ix < w;
    const bool edge = i >= g.in_ch;  // Glow's edge channel: 1 outside the image, 0 inside
    float v;
    if (!inside)
      v = edge ? 1.f : outside_data;
    else
      v = edge ? 0.f : in[int64_t(i) * ld + (q - p) + int64_t(iy) * w + ix];
    col[t] = v;
  }
}

__global__ void col2im_k(ConvShape g, int batch, int h, int w, const float *dcol, float *dx) {
  const int64_t plane = int64_t(h) * w, ld = plane * batch, total = ld * g.in_ch;
  GRID_STRIDE(t, total) {
    const int64_t i = t / ld, q = t % ld, p = q % plane, base = q - p;
    const int iy = static_cast<int>(p / w), ix = static_cast<int>(p % w);
    float acc = 0.f;
    for (int ky = 0; ky < g.kh; ++ky) {
      const int y = iy - (ky - g.kh / 2);  // the output pixel whose tap (ky, kx) reads (iy, ix)
      if (y < 0 || y >= h) continue;
      for (int kx = 0; kx < g.kw; ++kx) {
        const int x = ix - (kx - g.kw / 2);
        if (x < 0 || x >= w) continue;
        acc += dcol[((i * g.kh + ky) * g.kw + kx) * ld + base + int64_t(y) * w + x];
      }
    }
    dx[t] = acc;
  }
}

__global__ void relu_mask_k(int64_t n, const float *y, float *g) {
  GRID_STRIDE(t, n) g[t] = y[t] > 0.f ? g[t] : 0.f;
}

// One block per row: out[r] += sum(g[r][:]).
__global__ void row_sums_k(const float *g, int64_t ld, float *out) {
  const float *row = g + blockIdx.x * ld;
  double acc = 0;
  for (int64_t q = threadIdx.x; q < ld; q += blockDim.x) acc += row[q];
  acc = block_sum(acc);
  if (threadIdx.x == 0) out[blockIdx.x] += static_cast<float>(acc);
}

__global__ void scale_shift_k(const float *sign, const float *log_scale, float factor,
                              const float *bias, int c, float *scale, float *shift) {
  GRID_STRIDE(k, c) {
    const float sc = (sign ? sign[k] : 1.f) * expf(factor * log_scale[k]);
    scale[k] = sc;
    if (shift) shift[k] = bias ? sc * bias[k] : 0.f;
  }
}

// One block per channel.
__global__ void actnorm_backward_k(ChannelView v, const float *x, float *dy, const float *scale,
                                   const float *bias, float logdet_weight, float *dbias,
                                   float *dlog_scale) {
  const int c = blockIdx.x;
  const float s = scale[c], b = bias[c];
  const int64_t per = int64_t(v.batch) * v.plane;
  double sum_dy = 0, sum_dyx = 0;
  for (int64_t e = threadIdx.x; e < per; e += blockDim.x) {
    const int64_t off = c * v.channel_stride + (e / v.plane) * v.image_stride + e % v.plane;
    const float g = dy[off];
    sum_dy += g;
    sum_dyx += double(g) * (x[off] + b);
    dy[off] = s * g;
  }
  sum_dy = block_sum(sum_dy);
  sum_dyx = block_sum(sum_dyx);
  if (threadIdx.x == 0) {
    dbias[c] += static_cast<float>(s * sum_dy);
    dlog_scale[c] += static_cast<float>(s * sum_dyx) + logdet_weight;
  }
}

__global__ void output_scale_backward_k(int64_t ld, const float *scale, float factor,
                                        const float *y, float *dy, float *dlog_scale) {
  const int c = blockIdx.x;
  const float e = scale[c];
  double acc = 0;
  for (int64_t q = threadIdx.x; q < ld; q += blockDim.x) {
    const int64_t off = c * ld + q;
    acc += double(dy[off]) * y[off];
    dy[off] *= e;
  }
  acc = block_sum(acc);
  if (threadIdx.x == 0) dlog_scale[c] += factor * static_cast<float>(acc);
}

// One block: every image gets factor * sum(v).
__global__ void add_scaled_sum_k(const float *v, int count, double factor, double *acc, int n) {
  double sum = 0;
  for (int k = threadIdx.x; k < count; k += blockDim.x) sum += v[k];
  sum = block_sum(sum);
  __shared__ double total;
  if (threadIdx.x == 0) total = sum;
  __syncthreads();
  for (int i = threadIdx.x; i < n; i += blockDim.x) acc[i] += factor * total;
}

__global__ void add_scaled_value_k(const double *v, double factor, double *acc, int n) {
  GRID_STRIDE(i, n) acc[i] += factor * *v;
}

__global__ void lu_compose_k(int c, const int32_t *perm, const float *lower, const float *upper,
                             const float *sign, const float *log_s, float *w) {
  GRID_STRIDE(e, int64_t(c) * c) {
    const int i = static_cast<int>(e / c), j = static_cast<int>(e % c), r = perm[i];
    float acc = 0.f;
    for (int k = 0; k <= min(r, j); ++k) {
      const float l = k == r ? 1.f : lower[r * c + k];
      const float u = k == j ? sign[k] * expf(log_s[k]) : upper[k * c + j];
      acc += l * u;
    }
    w[e] = acc;
  }
}

// One block: da = P^T dW, then dL = dA U~^T (strict lower), dU~ = L^T dA (upper with diagonal).
__global__ void lu_backward_k(int c, const int32_t *perm, const float *lower, const float *upper,
                              const float *sign, const float *log_s, const float *dw,
                              float logdet_weight, float *da, float *dlower, float *dupper,
                              float *dlog_s) {
  const int cc = c * c;
  for (int e = threadIdx.x; e < cc; e += blockDim.x) da[perm[e / c] * c + e % c] = dw[e];
  __syncthreads();
  for (int e = threadIdx.x; e < cc; e += blockDim.x) {
    const int r = e / c, k = e % c;
    if (k < r) {
      float acc = 0.f;
      for (int j = k; j < c; ++j)
        acc += da[r * c + j] * (j == k ? sign[k] * expf(log_s[k]) : upper[k * c + j]);
      dlower[r * c + k] += acc;
    }
    const int kk = e / c, j = e % c;
    if (j >= kk) {
      float acc = 0.f;
      for (int rr = kk; rr < c; ++rr) acc += (rr == kk ? 1.f : lower[rr * c + kk]) * da[rr * c + j];
      if (j > kk)
        dupper[kk * c + j] += acc;
      else
        dlog_s[kk] += acc * sign[kk] * expf(log_s[kk]) + logdet_weight;
    }
  }
}

// One block: Gauss-Jordan on [W | I] (c x 2c, double) with partial pivoting.
__global__ void dense_inverse_k(int c, const float *w, double *a, double *log_abs_det, float *inv) {
  const int cols = 2 * c;
  for (int e = threadIdx.x; e < c * cols; e += blockDim.x) {
    const int r = e / cols, k = e % cols;
    a[e] = k < c ? double(w[r * c + k]) : (k - c == r ? 1.0 : 0.0);
  }
  __shared__ int pivot_row;
  __shared__ double lad;
  if (threadIdx.x == 0) lad = 0;
  __syncthreads();
  for (int k = 0; k < c; ++k) {
    if (threadIdx.x == 0) {
      int best = k;
      for (int r = k + 1; r < c; ++r)
        if (fabs(a[r * cols + k]) > fabs(a[best * cols + k])) best = r;
      pivot_row = best;
      lad += log(fabs(a[best * cols + k]));
    }
    __syncthreads();
    const int pr = pivot_row;
    if (pr != k)
      for (int j = threadIdx.x; j < cols; j += blockDim.x) {
        const double t = a[k * cols + j];
        a[k * cols + j] = a[pr * cols + j];
        a[pr * cols + j] = t;
      }
    __syncthreads();
    const double piv = a[k * cols + k];
    __syncthreads();
    for (int j = threadIdx.x; j < cols; j += blockDim.x) a[k * cols + j] /= piv;
    __syncthreads();
    for (int e = threadIdx.x; e < c * cols; e += blockDim.x) {
      const int r = e / cols, j = e % cols;
      if (r == k || j == k) continue;  // column k is cleared below, after every row used it
      a[e] -= a[r * cols + k] * a[k * cols + j];
    }
    __syncthreads();
    for (int r = threadIdx.x; r < c; r += blockDim.x)
      if (r != k) a[r * cols + k] = 0.0;
    __syncthreads();
  }
  for (int e = threadIdx.x; e < c * c; e += blockDim.x)
    inv[e] = static_cast<float>(a[(e / c) * cols + c + e % c]);
  if (threadIdx.x == 0) *log_abs_det = lad;
}

__global__ void add_dense_grad_k(int c, const float *dw, const float *inv, float weight,
                                 float *grad) {
  GRID_STRIDE(e, int64_t(c) * c) {
    const int64_t i = e / c, j = e % c;
    grad[e] += dw[e] + weight * inv[j * c + i];
  }
}

__global__ void sum_parts_k(const float *parts, int n, int64_t count, float *out) {
  GRID_STRIDE(k, count) {
    float acc = 0.f;
    for (int i = 0; i < n; ++i) acc += parts[i * count + k];
    out[k] = acc;
  }
}

__global__ void coupling_backward_k(CouplingArgs a, const float *h, int64_t h_stride,
                                    const float *xb, const float *dyb, int64_t x_stride, int cb,
                                    int plane, int n, float logdet_weight, float *dxb, float *dh) {
  const int64_t per = int64_t(cb) * plane, total = per * n;
  GRID_STRIDE(t, total) {
    const int64_t i = t / per, e = t % per;
    const float dy = dyb[i * x_stride + e];
    float *dhi = dh + i * h_stride;
    if (a.type == CouplingType::Additive) {
      dxb[i * x_stride + e] = dy;
      dhi[e] = dy;
      continue;
    }
    const int j = static_cast<int>(e / plane), p = static_cast<int>(e % plane);
    int tc = 0, rc = 0;
    shift_scale_channels(int(a.split), j, cb, &tc, &rc);
    const float *hi = h + i * h_stride;
    const float t_ = hi[int64_t(tc) * plane + p];
    const float arg = hi[int64_t(rc) * plane + p] + a.scale_bias;
    const bool sigmoid = a.scale_fn == ScaleFunction::Sigmoid;
    const float s = sigmoid ? 1.f / (1.f + expf(-arg)) : expf(arg);
    const float dlog = sigmoid ? 1.f - s : 1.f;  // d log s / d arg
    const float ds = s * dlog;
    const float x = xb[i * x_stride + e];
    dxb[i * x_stride + e] = dy * s;
    if (a.form == AffineForm::ShiftThenScale) {
      dhi[int64_t(tc) * plane + p] = dy * s;
      dhi[int64_t(rc) * plane + p] = dy * (x + t_) * ds + logdet_weight * dlog;
    } else {
      dhi[int64_t(tc) * plane + p] = dy;
      dhi[int64_t(rc) * plane + p] = dy * x * ds + logdet_weight * dlog;
    }
  }
}

__global__ void split_backward_k(const float *z, int64_t z_stride, const float *prior,
                                 int64_t prior_stride, int layout, int cz, int plane, int n,
                                 float weight, float *dz, float *dprior) {
  const int64_t per = int64_t(cz) * plane, total = per * n;
  GRID_STRIDE(t, total) {
    const int64_t i = t / per, e = t % per;
    const float v = z[i * z_stride + e];
    if (!prior) {
      dz[i * z_stride + e] = -weight * v;
      continue;
    }
    const int j = static_cast<int>(e / plane), p = static_cast<int>(e % plane);
    int mc = 0, lc = 0;
    prior_channels(layout, j, cz, &mc, &lc);
    const float *pi = prior + i * prior_stride;
    const float inv = expf(-pi[int64_t(lc) * plane + p]);
    const float d = (v - pi[int64_t(mc) * plane + p]) * inv;
    const float gm = weight * d * inv;
    dz[i * z_stride + e] = -gm;
    dprior[i * prior_stride + int64_t(mc) * plane + p] = gm;
    dprior[i * prior_stride + int64_t(lc) * plane + p] = weight * (d * d - 1.f);
  }
}

__device__ inline void top_offsets(const float *offsets, const int32_t *labels, int i, int c,
                                   int ch, float *mo, float *lo) {
  *mo = 0.f, *lo = 0.f;
  const int y = labels ? labels[i] : -1;
  if (offsets && y >= 0) {
    *mo = offsets[int64_t(y) * 2 * c + ch];
    *lo = offsets[int64_t(y) * 2 * c + c + ch];
  }
}

__global__ void top_dz_k(const float *z, int64_t z_stride, const float *mean, const float *log_std,
                         const float *offsets, const int32_t *labels, int c, int plane, int n,
                         float weight, float *dz) {
  const int64_t per = int64_t(c) * plane, total = per * n;
  GRID_STRIDE(t, total) {
    const int64_t i = t / per, e = t % per;
    float mo, lo;
    top_offsets(offsets, labels, static_cast<int>(i), c, static_cast<int>(e / plane), &mo, &lo);
    const float inv = expf(-(log_std[e] + lo));
    const float d = (z[i * z_stride + e] - mean[e] - mo) * inv;
    dz[i * z_stride + e] = -weight * d * inv;
  }
}

// Thread per prior element, images in order.
__global__ void top_dparams_k(const float *z, int64_t z_stride, const float *mean,
                              const float *log_std, const float *offsets, const int32_t *labels,
                              int c, int plane, int n, float weight, float *dmean,
                              float *dlog_std) {
  GRID_STRIDE(e, int64_t(c) * plane) {
    float gm_sum = 0.f, gl_sum = 0.f;
    for (int i = 0; i < n; ++i) {
      float mo, lo;
      top_offsets(offsets, labels, i, c, static_cast<int>(e / plane), &mo, &lo);
      const float inv = expf(-(log_std[e] + lo));
      const float d = (z[i * z_stride + e] - mean[e] - mo) * inv;
      gm_sum += weight * d * inv;
      gl_sum += weight * (d * d - 1.f);
    }
    if (dmean) dmean[e] += gm_sum;
    if (dlog_std) dlog_std[e] += gl_sum;
  }
}

// Thread per (class, channel): the images of that class in order, their pixels in order.
__global__ void top_doffsets_k(const float *z, int64_t z_stride, const float *mean,
                               const float *log_std, const float *offsets, const int32_t *labels,
                               int c, int plane, int n, int n_classes, float weight,
                               float *doffsets) {
  GRID_STRIDE(t, int64_t(n_classes) * c) {
    const int y = static_cast<int>(t / c), ch = static_cast<int>(t % c);
    const float mo = offsets[int64_t(y) * 2 * c + ch], lo = offsets[int64_t(y) * 2 * c + c + ch];
    float sm = 0.f, sl = 0.f;
    for (int i = 0; i < n; ++i) {
      if (labels[i] != y) continue;
      for (int p = 0; p < plane; ++p) {
        const int64_t e = int64_t(ch) * plane + p;
        const float inv = expf(-(log_std[e] + lo));
        const float d = (z[i * z_stride + e] - mean[e] - mo) * inv;
        sm += weight * d * inv;
        sl += weight * (d * d - 1.f);
      }
    }
    doffsets[int64_t(y) * 2 * c + ch] += sm;
    doffsets[int64_t(y) * 2 * c + c + ch] += sl;
  }
}

__global__ void bits_per_dim_k(const double *log_det, const double *log_prior, int n, double dims,
                               int n_bits, double *bpd) {
  double sum = 0;
  for (int i = threadIdx.x; i < n; i += blockDim.x) {
    const double v = n_bits - (log_prior[i] + log_det[i]) / (dims * 0.69314718055994530942);
    bpd[i] = v;
    sum += v;
  }
  sum = block_sum(sum);
  if (threadIdx.x == 0) bpd[n] = sum / n;
}

__global__ void sum_squares_k(const float *g, int64_t n, double *partials) {
  double acc = 0;
  GRID_STRIDE(k, n) acc += double(g[k]) * g[k];
  acc = block_sum(acc);
  if (threadIdx.x == 0) partials[blockIdx.x] = acc;
}

__global__ void sum_partials_k(const double *partials, int count, double *out) {
  double acc = 0;
  for (int k = threadIdx.x; k < count; k += blockDim.x) acc += partials[k];
  acc = block_sum(acc);
  if (threadIdx.x == 0) *out = acc;
}

__global__ void plan_update_k(const double *norm_sq, const double *loss, double loss_scale,
                              double clip, double lr, double beta1, double beta2, int64_t *t,
                              UpdatePlan *plan) {
  const double norm = sqrt(*norm_sq) / loss_scale;
  UpdatePlan p{};
  p.grad_norm = norm;
  p.applied = isfinite(*loss) && isfinite(norm);
  const float clip_factor = clip > 0 && norm > clip ? static_cast<float>(clip / norm) : 1.f;
  p.clip_scale = loss_scale == 1 ? clip_factor : static_cast<float>(clip_factor / loss_scale);
  if (p.applied) {
    const int64_t step = ++*t;
    const double c1 = 1.0 - pow(beta1, double(step)), c2 = 1.0 - pow(beta2, double(step));
    p.step_size = static_cast<float>(lr / c1);
    p.inv_sqrt_c2 = static_cast<float>(1.0 / sqrt(c2));
  }
  *plan = p;
}

__global__ void adam_k(const UpdatePlan *plan, int64_t n, const float *grads, float b1, float b2,
                       float e, float *params, float *m, float *v) {
  if (!plan->applied) return;
  const float f = plan->clip_scale, step = plan->step_size, isc2 = plan->inv_sqrt_c2;
  GRID_STRIDE(k, n) {
    const float g = f == 1.f ? grads[k] : grads[k] * f;
    m[k] = b1 * m[k] + (1.f - b1) * g;
    v[k] = b2 * v[k] + (1.f - b2) * g * g;
    params[k] -= step * m[k] / (sqrtf(v[k]) * isc2 + e);
  }
}

__global__ void ema_k(const UpdatePlan *plan, int64_t n, const float *params, float d, float r,
                      float *ema) {
  if (!plan->applied) return;
  GRID_STRIDE(k, n) ema[k] = d * ema[k] + r * params[k];
}

#undef GRID_STRIDE

}  // namespace

void gather_cnhw(const float *x, int batch, int channels, int plane, int c0, int n, float *out,
                 cudaStream_t s) {
  gather_cnhw_k<<<blocks_for(int64_t(batch) * plane * n), kThreads, 0, s>>>(x, batch, channels,
                                                                            plane, c0, n, out);
}

void scatter_nchw(const float *in, int batch, int channels, int plane, int c0, int n, float *x,
                  bool add, cudaStream_t s) {
  scatter_nchw_k<<<blocks_for(int64_t(batch) * plane * n), kThreads, 0, s>>>(in, batch, channels,
                                                                             plane, c0, n, x, add);
}

void im2col(const ConvShape &g, int batch, int h, int w, const float *in, float *col,
            cudaStream_t s) {
  im2col_k<<<blocks_for(int64_t(batch) * h * w * g.k_total()), kThreads, 0, s>>>(g, batch, h, w, in,
                                                                                 col);
}

void col2im(const ConvShape &g, int batch, int h, int w, const float *dcol, float *dx,
            cudaStream_t s) {
  col2im_k<<<blocks_for(int64_t(batch) * h * w * g.in_ch), kThreads, 0, s>>>(g, batch, h, w, dcol,
                                                                             dx);
}

void relu_mask(int64_t n, const float *y, float *g, cudaStream_t s) {
  relu_mask_k<<<blocks_for(n), kThreads, 0, s>>>(n, y, g);
}

void row_sums_add(const float *g, int rows, int64_t ld, float *out, cudaStream_t s) {
  if (rows > 0) row_sums_k<<<rows, kThreads, 0, s>>>(g, ld, out);
}

void scale_shift(const float *sign, const float *log_scale, float factor, const float *bias, int c,
                 float *scale, float *shift, cudaStream_t s) {
  scale_shift_k<<<blocks_for(c), kThreads, 0, s>>>(sign, log_scale, factor, bias, c, scale, shift);
}

void actnorm_backward(const ChannelView &v, const float *x, float *dy, const float *scale,
                      const float *bias, float logdet_weight, float *dbias, float *dlog_scale,
                      cudaStream_t s) {
  if (v.channels > 0)
    actnorm_backward_k<<<v.channels, kThreads, 0, s>>>(v, x, dy, scale, bias, logdet_weight, dbias,
                                                       dlog_scale);
}

void output_scale_backward(int channels, int64_t ld, const float *scale, float factor,
                           const float *y, float *dy, float *dlog_scale, cudaStream_t s) {
  if (channels > 0)
    output_scale_backward_k<<<channels, kThreads, 0, s>>>(ld, scale, factor, y, dy, dlog_scale);
}

void add_scaled_sum(const float *v, int count, double factor, double *acc, int n, cudaStream_t s) {
  add_scaled_sum_k<<<1, kThreads, 0, s>>>(v, count, factor, acc, n);
}

void add_scaled_value(const double *v, double factor, double *acc, int n, cudaStream_t s) {
  add_scaled_value_k<<<blocks_for(n), kThreads, 0, s>>>(v, factor, acc, n);
}

void lu_compose(int c, const int32_t *perm, const float *lower, const float *upper,
                const float *sign, const float *log_s, float *w, cudaStream_t s) {
  lu_compose_k<<<blocks_for(int64_t(c) * c), kThreads, 0, s>>>(c, perm, lower, upper, sign, log_s,
                                                               w);
}

void lu_backward(int c, const int32_t *perm, const float *lower, const float *upper,
                 const float *sign, const float *log_s, const float *dw, float logdet_weight,
                 float *da, float *dlower, float *dupper, float *dlog_s, cudaStream_t s) {
  lu_backward_k<<<1, kThreads, 0, s>>>(c, perm, lower, upper, sign, log_s, dw, logdet_weight, da,
                                       dlower, dupper, dlog_s);
}

void dense_inverse(int c, const float *w, double *scratch, double *log_abs_det, float *inv,
                   cudaStream_t s) {
  dense_inverse_k<<<1, kThreads, 0, s>>>(c, w, scratch, log_abs_det, inv);
}

void add_dense_grad(int c, const float *dw, const float *inv, float weight, float *grad,
                    cudaStream_t s) {
  add_dense_grad_k<<<blocks_for(int64_t(c) * c), kThreads, 0, s>>>(c, dw, inv, weight, grad);
}

void sum_parts(const float *parts, int n, int64_t count, float *out, cudaStream_t s) {
  sum_parts_k<<<blocks_for(count), kThreads, 0, s>>>(parts, n, count, out);
}

void coupling_backward(const CouplingArgs &a, const float *h, int64_t h_stride, const float *xb,
                       const float *dyb, int64_t x_stride, int cb, int plane, int n,
                       float logdet_weight, float *dxb, float *dh, cudaStream_t s) {
  coupling_backward_k<<<blocks_for(int64_t(cb) * plane * n), kThreads, 0, s>>>(
      a, h, h_stride, xb, dyb, x_stride, cb, plane, n, logdet_weight, dxb, dh);
}

void split_backward(const float *z, int64_t z_stride, const float *prior, int64_t prior_stride,
                    PriorLayout layout, int cz, int plane, int n, float weight, float *dz,
                    float *dprior, cudaStream_t s) {
  split_backward_k<<<blocks_for(int64_t(cz) * plane * n), kThreads, 0, s>>>(
      z, z_stride, prior, prior_stride, int(layout), cz, plane, n, weight, dz, dprior);
}

void top_backward(const float *z, int64_t z_stride, const float *mean, const float *log_std,
                  const float *offsets, const int32_t *labels, int c, int plane, int n,
                  int n_classes, float weight, float *dz, float *dmean, float *dlog_std,
                  float *doffsets, cudaStream_t s) {
  const int64_t per = int64_t(c) * plane;
  top_dz_k<<<blocks_for(per * n), kThreads, 0, s>>>(z, z_stride, mean, log_std, offsets, labels, c,
                                                    plane, n, weight, dz);
  if (dmean || dlog_std)
    top_dparams_k<<<blocks_for(per), kThreads, 0, s>>>(z, z_stride, mean, log_std, offsets, labels,
                                                       c, plane, n, weight, dmean, dlog_std);
  if (doffsets && offsets && labels && n_classes > 0)
    top_doffsets_k<<<blocks_for(int64_t(n_classes) * c), kThreads, 0, s>>>(
        z, z_stride, mean, log_std, offsets, labels, c, plane, n, n_classes, weight, doffsets);
}

void bits_per_dim(const double *log_det, const double *log_prior, int n, double dims, int n_bits,
                  double *bpd, cudaStream_t s) {
  bits_per_dim_k<<<1, kThreads, 0, s>>>(log_det, log_prior, n, dims, n_bits, bpd);
}

void sum_squares(const float *g, int64_t n, double *partials, double *out, cudaStream_t s) {
  sum_squares_k<<<kNormPartials, kThreads, 0, s>>>(g, n, partials);
  sum_partials_k<<<1, kThreads, 0, s>>>(partials, kNormPartials, out);
}

void plan_update(const double *norm_sq, const double *loss, double loss_scale, double clip,
                 double lr, double beta1, double beta2, int64_t *t, UpdatePlan *plan,
                 cudaStream_t s) {
  plan_update_k<<<1, 1, 0, s>>>(norm_sq, loss, loss_scale, clip, lr, beta1, beta2, t, plan);
}

void adam_update(const UpdatePlan *plan, int64_t n, const float *grads, float beta1, float beta2,
                 float eps, float *params, float *m, float *v, cudaStream_t s) {
  adam_k<<<blocks_for(n), kThreads, 0, s>>>(plan, n, grads, beta1, beta2, eps, params, m, v);
}

void ema_update(const UpdatePlan *plan, int64_t n, const float *params, float decay,
                float one_minus_decay, float *ema, cudaStream_t s) {
  ema_k<<<blocks_for(n), kThreads, 0, s>>>(plan, n, params, decay, one_minus_decay, ema);
}

}  // namespace flowrt::train::cuda
