// The element-wise and data-movement passes of the oneDNN backend. Activations between steps are
// NHWC ("rows" = pixels, each row holding the channels), the layout oneDNN's direct convolutions
// prefer, so each pass below is one sweep over memory with contiguous rows. Images enter and
// leave in the format's NCHW, and latents are written in NCHW too; those transposes are fused
// into the first/last squeeze and into the split/top passes. Passes that produce a per-image
// sum (log-determinants, log-densities) accumulate in double, like the reference.
#pragma once

#include <cstddef>
#include <cstdint>
#include <vector>

#include "model/graph.hpp"

namespace flowrt::onednn {

// Parallel work over the rows of n images with per-image sums. `partial` must hold
// max_batch + threads doubles.
struct Par {
  int threads = 1;
  double *partial = nullptr;
};

// ---- layout moves -------------------------------------------------------------------------
// Squeeze of n images of shape `in` (C,H,W): src is NCHW (src_nchw) or NHWC, dst NHWC of
// (4C, H/2, W/2). The inverse reads the squeezed NHWC and writes NCHW (dst_nchw) or NHWC.
void squeeze(const Par &par, SqueezeOrder order, const Shape3 &in, size_t n, bool src_nchw,
             const float *src, float *dst);
void unsqueeze(const Par &par, SqueezeOrder order, const Shape3 &in, size_t n, bool dst_nchw,
               const float *src, float *dst);
// NCHW <-> NHWC of n images of `s`.
void nchw_to_nhwc(const Par &par, const Shape3 &s, size_t n, const float *src, float *dst);
void nhwc_to_nchw(const Par &par, const Shape3 &s, size_t n, const float *src, float *dst);
// dst[r, k] = src[r, source[k]] (inverse: dst[r, source[k]] = src[r, k]); rows = n*H*W.
void permute(const Par &par, const int32_t *source, int64_t channels, int64_t rows,
             const float *src, float *dst, bool inverse);
// dst[r, 0..count) = src[r, first..first+count) of rows with `channels` entries.
void gather_channels(const Par &par, int64_t channels, int64_t first, int64_t count, int64_t rows,
                     const float *src, float *dst);
void copy(const Par &par, size_t floats, const float *src, float *dst);
// dst = src rounded to bfloat16 (to nearest, ties to even; NaN stays NaN): the input of a
// coupling net's bf16 convolutions.
void to_bf16(const Par &par, size_t count, const float *src, uint16_t *dst);

// ---- per-channel maps -----------------------------------------------------------------------
// x = scale*x + shift (inverse: (x - shift) * inv_scale), in place; then max(x,0) when relu.
void channel_affine(const Par &par, const float *scale, const float *shift, const float *inv_scale,
                    int64_t channels, int64_t rows, float *x, bool inverse);
void relu(const Par &par, size_t floats, float *x);
// x += src (a residual connection), then max(x,0) when relu.
void add_into(const Par &par, size_t floats, const float *src, bool relu_after, float *x);
// x[image, p, c] += corr[p, c], then max(x,0) when relu (padding corrections of a conv).
void add_map(const Par &par, const float *corr, int64_t per_image, size_t n, bool relu_after,
             float *x);

// A kxk "same" convolution's output from its taps' partial products: taps holds, per pixel,
// k*k*out values (tap-major); out[p, o] = bias[o] + corr[p, o] + sum over in-image neighbours
// q of p of taps[q, tap(q - p), o], then max(x,0) when relu. corr may be null.
void tap_sum(const Par &par, const float *taps, size_t n, int64_t h, int64_t w, int64_t kh,
             int64_t kw, int64_t out, const float *bias, const float *corr, bool relu_after,
             float *dst);

// ---- coupling -------------------------------------------------------------------------------
struct CouplingSpec {
  bool affine = true;
  ScaleFunction scale_fn = ScaleFunction::Sigmoid;
  bool shift_then_scale = true;  // AffineForm::ShiftThenScale
  float scale_bias = 0.f;
  int64_t channels = 0;                     // C of the state
  int64_t xb_offset = 0;                    // first channel of x_b in a state row
  int64_t cb = 0;                           // channels of x_b
  int64_t h_channels = 0;                   // channels of a net output row
  std::vector<int32_t> t_index, raw_index;  // per x_b channel: its shift / raw-scale column
  std::vector<float> scale_weight;          // Tanh: per x_b channel
  // Checkerboard: x_b is every channel (cb == channels) of the positions (y, x) of the h x w
  // grid with (y + x) % 2 == parity; the other positions pass through.
  bool checkerboard = false;
  int parity = 0;
  int64_t height = 0, width = 0;
};
// Applies the coupling to x_b inside `state` (n images of `plane` rows) given the net output h,
// adds sum(log s) per image to log_det (encode only; may be null).
void coupling(const Par &par, const CouplingSpec &c, size_t n, int64_t plane, const float *h,
              float *state, bool inverse, double *log_det);
// The net input of a checkerboard coupling (spec c) for n images: each NHWC state row times the
// mask m (1 at the conditioning positions, 0 at x_b's), then m itself as a last channel when
// mask_channel. Encode and decode alike: x_a never changes.
void checker_input(const Par &par, const CouplingSpec &c, bool mask_channel, size_t n,
                   const float *state, float *dst);

// ---- logit ----------------------------------------------------------------------------------
// Encode of n images of `s`: u = alpha + (1 - 2 alpha)(x + 1/2), y = log u - log(1 - u), and
// per image log_det += sum of log(1 - 2 alpha) - log u - log(1 - u). src is NCHW (src_nchw) or
// NHWC, dst NHWC. Decode: x = (sigmoid(y) - alpha) / (1 - 2 alpha) - 1/2, computed as
// tanh(y / 2) / (2 (1 - 2 alpha)), from NHWC to NCHW (dst_nchw) or NHWC.
void logit_encode(const Par &par, float alpha, const Shape3 &s, size_t n, bool src_nchw,
                  const float *src, float *dst, double *log_det);
void logit_decode(const Par &par, float alpha, const Shape3 &s, size_t n, bool dst_nchw,
                  const float *src, float *dst);

// ---- reshape --------------------------------------------------------------------------------
// n images of NHWC shape `from` to NHWC `to` (equal numel), both views of one NCHW vector.
void reshape(const Par &par, const Shape3 &from, const Shape3 &to, size_t n, const float *src,
             float *dst);
// Whether NHWC and NCHW memory of `s` coincide (one channel or one position).
inline bool nhwc_is_nchw(const Shape3 &s) {
  return s.c == 1 || s.plane() == 1;
}

// ---- priors ---------------------------------------------------------------------------------
struct SplitSpec {
  int64_t channels = 0;      // C before the split
  int64_t cz = 0;            // channels leaving (= C/2)
  int64_t leave_offset = 0;  // first leaving channel in a state row
  int64_t keep_offset = 0;
  int64_t latent_offset = 0;  // of the latent in an image's z
  int64_t image_dims = 0;     // D
  bool has_prior = false;
  std::vector<int32_t> mean_index, log_std_index;  // per latent channel, columns of the prior
};
// Encode: keep -> keep_dst (and keep_copy when not null), leave -> z (NCHW), and, without a
// prior net, adds the standard-normal log-density of the leaving half to log_p.
void split_encode(const Par &par, const SplitSpec &s, size_t n, int64_t plane, const float *state,
                  float *keep_dst, float *keep_copy, float *z, double *log_p);
// Adds log N(leave; mean, std) with (mean, log_std) from the prior output o (2*cz per row).
void split_prior_log_p(const Par &par, const SplitSpec &s, size_t n, int64_t plane,
                       const float *state, const float *o, double *log_p);
// Decode: keep (cz per row) goes to its half of `state` (C per row) and to keep_copy when not
// null; then split_fill writes the leaving half from src (z, or eps with a prior output o / a
// standard normal when o is null).
void split_unkeep(const Par &par, const SplitSpec &s, size_t n, int64_t plane, const float *keep,
                  float *state, float *keep_copy);
void split_fill(const Par &par, const SplitSpec &s, size_t n, int64_t plane, const float *src,
                bool noise, float temperature, const float *o, float *state);

struct TopSpec {
  int64_t channels = 0, plane = 0, latent_offset = 0, image_dims = 0;
  std::vector<float> mean, std, inv_std, log_std;  // NHWC order [plane, C]
  // Per class and channel: mean offset, exp(log_std offset), exp(-offset), log_std offset.
  std::vector<float> cls_mean, cls_std, cls_inv_std, cls_log_std;
  int64_t n_classes = 0;
};
void top_encode(const Par &par, const TopSpec &t, size_t n, const float *state,
                const int32_t *labels, float *z, double *log_p);
void top_decode(const Par &par, const TopSpec &t, size_t n, const float *src, bool noise,
                float temperature, const int32_t *labels, float *state);

}  // namespace flowrt::onednn
