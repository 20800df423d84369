#include "backends/portable/portable_gemm.hpp"

#include <algorithm>
#include <cstring>

#ifdef _OPENMP
#include <omp.h>
#endif

// x86 with GCC or clang (not emscripten, whose x86-looking builds are WebAssembly): the kernels
// are also built for AVX-512F and AVX2+FMA and chosen at run time.
#if (defined(__x86_64__) || defined(__i386__)) && defined(__GNUC__) && !defined(__EMSCRIPTEN__)
#define FLOWRT_PORTABLE_X86 1
#define FLOWRT_TARGET(isa) __attribute__((target(isa)))
#else
#define FLOWRT_PORTABLE_X86 0
#endif

// GCC and clang (which defines __GNUC__ too): vector extensions, forced inlining into the
// per-ISA entry points, and unrolled tile loops (GCC's -O2 would keep the tile in memory).
#if defined(__GNUC__)
#define FLOWRT_PORTABLE_VECTORS 1
#define FLOWRT_INLINE inline __attribute__((always_inline))
#define FLOWRT_UNROLL _Pragma("GCC unroll 16")
#else
#define FLOWRT_PORTABLE_VECTORS 0
#define FLOWRT_INLINE inline
#define FLOWRT_UNROLL
#endif

namespace flowrt::portable {

void FloatBuffer::reserve(size_t floats) {
  if (floats <= size_) return;
  raw_.reset();
  ptr_ = nullptr;
  size_ = 0;
  raw_.reset(new float[floats + 16]());
  const uintptr_t p = reinterpret_cast<uintptr_t>(raw_.get());
  ptr_ = raw_.get() + ((64 - p % 64) % 64) / sizeof(float);
  size_ = floats;
}

struct TileArgs {
  int mr;                    // the A panels' height (PackedConv::mr)
  const float *a;            // the packed weights at the block's first K row
  int64_t a_stride;          // floats between A panels (K * mr)
  int64_t a_first;           // the first A panel of these tiles
  int64_t rows;              // C rows (O)
  const float *b;            // B: a packed block, or the shifted planes of a block of images
  const int64_t *off;        // B row k of a panel: its base + off[k]
  int64_t kc;                // K rows of the block
  int64_t b_first, b_count;  // the B panels of these tiles
  // Packed: a block of `cols` pixels in panels of nr, rows nr floats apart. Per image (k x k):
  // `per_image` panels per image of `plane` pixels, images `image_pitch` floats apart.
  int64_t per_image, cols, plane, image_pitch;
  float *c;  // C at the block's first column
  int64_t ldc;
  const float *bias;  // the first K block: C = bias + A B; later ones accumulate onto C
  bool relu;          // the last K block of a convolution with a fused ReLU
};

struct PackArgs {
  const ConvInput *in;
  int64_t plane;
  int64_t n0, cols;  // the block's first pixel (over the group's images) and its pixel count
  int64_t k0, kc;    // its K rows (input channels)
  int nr;
  float *b;
};

namespace {

// Columns of B panel q of a run of `cols` pixels: a full panel of nr, or the narrow last one.
FLOWRT_INLINE int64_t panel_width(int64_t q, int64_t cols, int nr) {
  return cols - q * nr <= nr / 2 ? nr / 2 : nr;
}

#if FLOWRT_PORTABLE_VECTORS
template <int W>
struct VecOf {
  typedef float type __attribute__((vector_size(W * sizeof(float))));
  typedef int32_t mask __attribute__((vector_size(W * sizeof(float))));
};

// C[MR x W*NV] (row stride ldc) = bias + A B, or += A B without bias; A: a[k * MR + r], B row k:
// b + off[k].
template <int W, int MR, int NV>
FLOWRT_INLINE void micro_kernel(int64_t kc, const float *__restrict a, const float *__restrict b,
                                const int64_t *__restrict off, float *__restrict c, int64_t ldc,
                                const float *bias, bool relu) {
  using V = typename VecOf<W>::type;
  using M = typename VecOf<W>::mask;
  V acc[MR][NV];
  if (bias) {
    FLOWRT_UNROLL for (int i = 0; i < MR; ++i) {
      const V bv = V{} + bias[i];
      FLOWRT_UNROLL for (int j = 0; j < NV; ++j) acc[i][j] = bv;
    }
  } else {
    FLOWRT_UNROLL for (int i = 0; i < MR; ++i) {
      FLOWRT_UNROLL for (int j = 0; j < NV; ++j) {
        std::memcpy(&acc[i][j], c + i * ldc + j * W, sizeof(V));
      }
    }
  }
  for (int64_t k = 0; k < kc; ++k) {
    const float *bk = b + off[k];
    V bv[NV];
    FLOWRT_UNROLL for (int j = 0; j < NV; ++j) std::memcpy(&bv[j], bk + j * W, sizeof(V));
    FLOWRT_UNROLL for (int i = 0; i < MR; ++i) {
      const float av = a[k * MR + i];
      FLOWRT_UNROLL for (int j = 0; j < NV; ++j) acc[i][j] += av * bv[j];
    }
  }
  if (relu) {
    FLOWRT_UNROLL for (int i = 0; i < MR; ++i) {
      FLOWRT_UNROLL for (int j = 0; j < NV; ++j) {
        // x > 0 ? x : 0 lane by lane (NaN too gives 0, as in the reference)
        acc[i][j] = (V)((M)acc[i][j] & (M)(acc[i][j] > V{}));
      }
    }
  }
  FLOWRT_UNROLL for (int i = 0; i < MR; ++i) {
    FLOWRT_UNROLL for (int j = 0; j < NV; ++j) {
      std::memcpy(c + i * ldc + j * W, &acc[i][j], sizeof(V));
    }
  }
}
#else
// The same in plain loops, for compilers without GCC's vector extensions.
template <int W, int MR, int NV>
inline void micro_kernel(int64_t kc, const float *a, const float *b, const int64_t *off, float *c,
                         int64_t ldc, const float *bias, bool relu) {
  constexpr int NR = W * NV;
  float acc[MR][NR];
  for (int i = 0; i < MR; ++i)
    for (int j = 0; j < NR; ++j) acc[i][j] = bias ? bias[i] : c[i * ldc + j];
  for (int64_t k = 0; k < kc; ++k) {
    const float *bk = b + off[k];
    for (int i = 0; i < MR; ++i) {
      const float av = a[k * MR + i];
      for (int j = 0; j < NR; ++j) acc[i][j] += av * bk[j];
    }
  }
  for (int i = 0; i < MR; ++i)
    for (int j = 0; j < NR; ++j) c[i * ldc + j] = relu && acc[i][j] < 0.f ? 0.f : acc[i][j];
}
#endif

// One tile of `rows` x `cols` (at most MR x W*NV): straight into C when full, else through a
// local tile.
template <int W, int MR, int NV>
FLOWRT_INLINE void tile(int64_t kc, const float *a, const float *b, const int64_t *off, float *c,
                        int64_t ldc, const float *bias, bool relu, int64_t rows, int64_t cols) {
  constexpr int NR = W * NV;
  if (rows == MR && cols == NR) {
    micro_kernel<W, MR, NV>(kc, a, b, off, c, ldc, bias, relu);
    return;
  }
  alignas(64) float t[MR * NR] = {};
  if (!bias)
    for (int64_t i = 0; i < rows; ++i)
      for (int64_t j = 0; j < cols; ++j) t[i * NR + j] = c[i * ldc + j];
  micro_kernel<W, MR, NV>(kc, a, b, off, t, NR, bias, relu);
  for (int64_t i = 0; i < rows; ++i)
    for (int64_t j = 0; j < cols; ++j) c[i * ldc + j] = t[i * NR + j];
}

// Tiles first..last-1 of (A panel, B panel) in A-panel-major order: an A micro-panel (mr x kc)
// stays in L1 while the B panels stream past it.
template <int W, int MR, int NV>
FLOWRT_INLINE void tiles_mr(const TileArgs &t, int64_t first, int64_t last) {
  constexpr int NR = W * NV;
  for (int64_t idx = first; idx < last; ++idx) {
    const int64_t p = t.a_first + idx / t.b_count, q = t.b_first + idx % t.b_count;
    int64_t width, cols, col;
    const float *b;
    if (t.per_image) {
      const int64_t j = q / t.per_image, r = q % t.per_image;
      width = panel_width(r, t.plane, NR);
      cols = std::min(width, t.plane - r * NR);
      col = j * t.plane + r * NR;
      b = t.b + j * t.image_pitch + r * NR;
    } else {
      width = panel_width(q, t.cols, NR);
      cols = std::min(width, t.cols - q * NR);
      col = q * NR;
      b = t.b + q * t.kc * NR;
    }
    const int64_t rows = std::min<int64_t>(MR, t.rows - p * MR);
    const float *a = t.a + p * t.a_stride;
    float *c = t.c + p * MR * t.ldc + col;
    const float *bias = t.bias ? t.bias + p * MR : nullptr;
    if (width == NR)
      tile<W, MR, NV>(t.kc, a, b, t.off, c, t.ldc, bias, t.relu, rows, cols);
    else
      tile<W, MR, NV / 2>(t.kc, a, b, t.off, c, t.ldc, bias, t.relu, rows, cols);
  }
}

// The tiles for the panel height the convolution was packed with: one of MR1 > MR2 > MR3.
template <int W, int NV, int MR1, int MR2, int MR3>
FLOWRT_INLINE void tiles_impl(const TileArgs &t, int64_t first, int64_t last) {
  if (t.mr == MR1)
    tiles_mr<W, MR1, NV>(t, first, last);
  else if (t.mr == MR2)
    tiles_mr<W, MR2, NV>(t, first, last);
  else
    tiles_mr<W, MR3, NV>(t, first, last);
}

// Packed B panels first..last-1 of a 1x1 convolution's block: each panel's runs of consecutive
// pixels (a panel may span images) are found once, then copied for every K row; rows are nr
// floats apart, narrow panels included.
FLOWRT_INLINE void pack_impl(const PackArgs &p, int64_t first, int64_t last) {
  struct Run {
    const float *src;
    int64_t at, len;
  };
  const ConvInput &in = *p.in;
  for (int64_t q = first; q < last; ++q) {
    const int64_t col0 = q * p.nr, width = panel_width(q, p.cols, p.nr);
    const int64_t cols = std::min(width, p.cols - col0);
    Run runs[64];
    int nruns = 0;
    for (int64_t c = 0; c < cols;) {
      const int64_t n = p.n0 + col0 + c, j = n / p.plane, pix = n % p.plane;
      const int64_t len = std::min(cols - c, p.plane - pix);
      const float *addr = in.image[j] + pix;
      if (nruns > 0 && runs[nruns - 1].src + runs[nruns - 1].len == addr)
        runs[nruns - 1].len += len;
      else
        runs[nruns++] = Run{addr, c, len};
      c += len;
    }
    float *dst = p.b + q * p.kc * p.nr;
    for (int64_t k = 0; k < p.kc; ++k) {
      const int64_t off = (p.k0 + k) * in.channel_stride;
      float *__restrict d = dst + k * p.nr;
      for (int r = 0; r < nruns; ++r) {
        const float *__restrict from = runs[r].src + off;
        float *__restrict to = d + runs[r].at;
        for (int64_t l = 0; l < runs[r].len; ++l) to[l] = from[l];
      }
      for (int64_t c = cols; c < width; ++c) d[c] = 0.f;
    }
  }
}

// The kernels of one ISA (`attr`: its target attribute, empty for the baseline): vectors of W
// floats, B panels of NV vectors, A panels of MR1, MR2 or MR3 rows.
#define FLOWRT_PORTABLE_KERNELS(id, attr, W, NV, MR1, MR2, MR3)   \
  attr void id##_tiles(const TileArgs &a, int64_t f, int64_t l) { \
    tiles_impl<W, NV, MR1, MR2, MR3>(a, f, l);                    \
  }                                                               \
  attr void id##_pack(const PackArgs &a, int64_t f, int64_t l) {  \
    pack_impl(a, f, l);                                           \
  }                                                               \
  const Kernels k_##id{#id, {MR1, MR2, MR3}, W * NV, id##_tiles, id##_pack};

// The baseline: 4-wide vectors (SSE2 on x86-64, NEON, WebAssembly SIMD128, or scalars), tiles
// of 6x8 (12 vector registers) or 4x8.
FLOWRT_PORTABLE_KERNELS(baseline, , 4, 2, 6, 4, 4)
#if FLOWRT_PORTABLE_X86
// AVX2 (16 ymm registers): 6x16 (12 accumulators) or 4x16. AVX-512 (32 zmm): 12x32 (24, plus two
// B vectors and a broadcast), 8x32 or 4x32, for convolutions with few outputs (a grey model's
// nets end in 4, 8 or 16 channels).
FLOWRT_PORTABLE_KERNELS(avx2, FLOWRT_TARGET("avx2,fma"), 8, 2, 6, 4, 4)
FLOWRT_PORTABLE_KERNELS(avx512f, FLOWRT_TARGET("avx512f"), 16, 2, 12, 8, 4)
#endif

}  // namespace

std::vector<const Kernels *> available_kernels() {
  std::vector<const Kernels *> out;
#if FLOWRT_PORTABLE_X86
  __builtin_cpu_init();
  if (__builtin_cpu_supports("avx512f")) out.push_back(&k_avx512f);
  if (__builtin_cpu_supports("avx2") && __builtin_cpu_supports("fma")) out.push_back(&k_avx2);
#endif
  out.push_back(&k_baseline);
  return out;
}

const Kernels *kernels_named(const std::string &name) {
  for (const Kernels *k : available_kernels())
    if (name == k->name) return k;
  return nullptr;
}

int panel_height(const Kernels &kernels, int64_t out_ch) {
  // Rows computed (padded to the panel height) times what a row costs in a lower tile: 12 and 6
  // rows keep the FMA units busy, 8 nearly, 4 (8 accumulators of 4-cycle FMAs on two ports) a
  // quarter less; on ties the taller panel.
  int best = kernels.mr[0];
  double best_cost = 0;
  for (int mr : kernels.mr) {
    const double per_row = mr == 4 ? 1.25 : mr == 8 ? 1.05 : 1.0;
    const double cost = static_cast<double>((out_ch + mr - 1) / mr * mr) * per_row;
    if (best_cost == 0 || cost < best_cost) best = mr, best_cost = cost;
  }
  return best;
}

PackedConv pack_conv(const PConv<float> &c, const Kernels &kernels) {
  PackedConv p;
  p.out_ch = c.out_ch, p.in_ch = c.in_ch, p.in_total = c.in_total, p.kh = c.kh, p.kw = c.kw;
  p.padding = c.padding, p.pad_value = c.pad_value, p.relu = c.relu;
  p.mr = panel_height(kernels, p.out_ch);
  p.k_channels = p.pointwise() ? c.in_ch : c.in_total;
  p.k = p.k_channels * c.kh * c.kw;
  p.panels = (p.out_ch + p.mr - 1) / p.mr;
  const int64_t mr = p.mr, k = p.k;
  p.a.reserve(static_cast<size_t>(p.panels * k * mr));
  float *a = p.a.data();
  for (int64_t panel = 0; panel < p.panels; ++panel)
    for (int64_t r = 0; r < mr; ++r) {
      const int64_t o = panel * mr + r;
      for (int64_t j = 0; j < k; ++j)  // j: (ci * kh + ky) * kw + kx, PConv's own order
        a[(panel * k + j) * mr + r] = o < p.out_ch ? c.weight_at(o, j) : 0.f;
    }
  p.bias.assign(static_cast<size_t>(p.panels * mr), 0.f);
  for (int64_t o = 0; o < p.out_ch; ++o) p.bias[o] = c.bias[o];
  return p;
}

namespace {

// The k x k path. K blocks hold whole input channels (about kKc rows), and each block's channels
// are copied into planes just before its products, so that they are read from L2: plane
// (kx, ci, j) of a block holds image j's channel ci shifted by kx - kw/2 columns, with kh/2 rows
// of padding above and below.
struct Planes {
  int64_t channels;  // input channels per K block
  int64_t rows, image_pitch, channel_pitch, shift_pitch, floats;
  Planes(const PackedConv &c, int64_t images, int64_t h, int64_t w)
      : channels(std::min(c.k_channels, std::max<int64_t>(1, kKc / (c.kh * c.kw)))),
        rows(h + 2 * (c.kh / 2)),
        image_pitch(rows * w),
        channel_pitch(images * image_pitch),
        shift_pitch(channels * channel_pitch),
        floats(c.kw * shift_pitch + 2 * 64) {}  // slack: the last panel of an image reads past it
};

// Images per k x k block: about kNc pixels.
int64_t block_images(int64_t m, int64_t plane) {
  return std::min(m, std::max<int64_t>(1, kNc / plane));
}

// Writes items first..last-1 of (kx, channel ci0 + c of `channels`, image j0 + j of `images`).
void make_planes(const PackedConv &cv, const ConvInput &in, int64_t j0, int64_t images, int64_t ci0,
                 int64_t channels, int64_t h, int64_t w, const Planes &pl, float *dst,
                 int64_t first, int64_t last) {
  const int64_t ph = cv.kh / 2, pw = cv.kw / 2;
  const float outside = cv.padding == PaddingMode::Constant ? cv.pad_value : 0.f;
  for (int64_t item = first; item < last; ++item) {
    const int64_t kx = item / (channels * images), c = item / images % channels, j = item % images,
                  ci = ci0 + c;
    float *d = dst + kx * pl.shift_pitch + c * pl.channel_pitch + j * pl.image_pitch;
    const int64_t dx = kx - pw;  // source column = x + dx
    // Columns [x0, x1) read inside the image (none when the kernel is wider than it).
    const int64_t x0 = std::clamp<int64_t>(-dx, 0, w), x1 = std::clamp<int64_t>(w - dx, x0, w);
    const bool edge = ci >= cv.in_ch;  // Glow's edge channel: 1 outside the image, 0 inside
    const float out = edge ? 1.f : outside;
    std::fill(d, d + ph * w, out);
    std::fill(d + (ph + h) * w, d + pl.rows * w, out);
    float *body = d + ph * w;
    if (edge) {
      std::fill(body, body + h * w, 0.f);
    } else {
      // The shifted image in one copy: body[p] = src[p + dx]; then the columns whose source
      // falls outside the image (the neighbouring rows' pixels, or past the ends) are fixed.
      const float *src = in.image[j0 + j] + ci * in.channel_stride;
      const int64_t from = std::clamp<int64_t>(-dx, 0, h * w);
      const int64_t to = std::clamp<int64_t>(h * w - dx, from, h * w);
      std::memcpy(body + from, src + from + dx, sizeof(float) * (to - from));
    }
    if (x0 > 0 || x1 < w)
      for (int64_t y = 0; y < h; ++y) {
        float *row = body + y * w;
        for (int64_t x = 0; x < x0; ++x) row[x] = out;
        for (int64_t x = x1; x < w; ++x) row[x] = out;
      }
  }
}

}  // namespace

void GemmWorkspace::reserve(const Kernels &kr, const PackedConv &c, int64_t m, int64_t h, int64_t w,
                            int threads) {
  if (threads_.size() < static_cast<size_t>(std::max(threads, 1)))
    threads_.resize(static_cast<size_t>(std::max(threads, 1)));
  for (PerThread &t : threads_) {
    if (c.pointwise()) {
      t.buf.reserve(static_cast<size_t>(kKc * ((kNc + kr.nr - 1) / kr.nr) * kr.nr));
      if (t.offsets.size() < static_cast<size_t>(kKc)) t.offsets.resize(kKc);
    } else {
      const Planes pl(c, block_images(m, h * w), h, w);
      t.buf.reserve(static_cast<size_t>(pl.floats));
      t.offsets.resize(std::max<size_t>(t.offsets.size(), pl.channels * c.kh * c.kw));
    }
  }
}

size_t GemmWorkspace::bytes() const {
  size_t b = 0;
  for (const PerThread &t : threads_) b += t.buf.bytes() + t.offsets.capacity() * sizeof(int64_t);
  return b;
}

namespace {

// A 1x1 convolution's B panels u0..u1-1 (nr pixels each, over all images) and A panels a0..a1-1.
void gemm_pointwise(const Kernels &kr, const PackedConv &cv, const ConvInput &in, int64_t plane,
                    int64_t n_total, float *out, int64_t ldc, GemmWorkspace::PerThread &ws,
                    int64_t u0, int64_t u1, int64_t a0, int64_t a1) {
  const int64_t nr = kr.nr, c0 = u0 * nr, c1 = std::min(u1 * nr, n_total);
  for (int64_t k = 0; k < kKc; ++k) ws.offsets[k] = k * nr;  // packed rows
  for (int64_t jc = c0; jc < c1; jc += kNc) {
    const int64_t cols = std::min(kNc, c1 - jc), b_panels = (cols + nr - 1) / nr;
    for (int64_t pc = 0; pc < cv.k; pc += kKc) {
      const int64_t kc = std::min(kKc, cv.k - pc);
      kr.pack(PackArgs{&in, plane, jc, cols, pc, kc, kr.nr, ws.buf.data()}, 0, b_panels);
      const TileArgs ta{cv.mr,
                        cv.a.data() + pc * cv.mr,
                        cv.k * cv.mr,
                        a0,
                        cv.out_ch,
                        ws.buf.data(),
                        ws.offsets.data(),
                        kc,
                        0,
                        b_panels,
                        0,
                        cols,
                        plane,
                        0,
                        out + jc,
                        ldc,
                        pc == 0 ? cv.bias.data() : nullptr,
                        cv.relu && pc + kc == cv.k};
      kr.tiles(ta, 0, (a1 - a0) * b_panels);
    }
  }
}

// A k x k convolution's B panels u0..u1-1 (per_image panels per image) and A panels a0..a1-1.
void gemm_taps(const Kernels &kr, const PackedConv &cv, const ConvInput &in, int64_t m, int64_t h,
               int64_t w, float *out, int64_t ldc, GemmWorkspace::PerThread &ws, int64_t u0,
               int64_t u1, int64_t a0, int64_t a1) {
  const int64_t plane = h * w, nr = kr.nr, per_image = (plane + nr - 1) / nr;
  const int64_t per_block = block_images(m, plane), taps = cv.kh * cv.kw;
  int64_t offsets_for = -1;  // the images per block the offsets were computed for
  const int64_t j_end = std::min(m, (u1 + per_image - 1) / per_image);  // past this thread's last
  for (int64_t j0 = u0 / per_image; j0 < j_end; j0 += per_block) {
    const int64_t images = std::min(per_block, j_end - j0);
    const Planes pl(cv, images, h, w);
    if (offsets_for != images) {
      for (int64_t c = 0, k = 0; c < pl.channels; ++c)  // B row (c, ky, kx) of a K block
        for (int64_t ky = 0; ky < cv.kh; ++ky)
          for (int64_t kx = 0; kx < cv.kw; ++kx, ++k)
            ws.offsets[k] = kx * pl.shift_pitch + c * pl.channel_pitch + ky * w;
      offsets_for = images;
    }
    // This thread's panels among the block's images.
    const int64_t q0 = std::max(u0, j0 * per_image) - j0 * per_image;
    const int64_t q1 = std::min(u1, (j0 + images) * per_image) - j0 * per_image;
    for (int64_t ci0 = 0; ci0 < cv.k_channels; ci0 += pl.channels) {
      const int64_t channels = std::min(pl.channels, cv.k_channels - ci0);
      const int64_t pc = ci0 * taps, kc = channels * taps;
      make_planes(cv, in, j0, images, ci0, channels, h, w, pl, ws.buf.data(), 0,
                  cv.kw * channels * images);
      const TileArgs ta{cv.mr,
                        cv.a.data() + pc * cv.mr,
                        cv.k * cv.mr,
                        a0,
                        cv.out_ch,
                        ws.buf.data(),
                        ws.offsets.data(),
                        kc,
                        q0,
                        q1 - q0,
                        per_image,
                        images * plane,
                        plane,
                        pl.image_pitch,
                        out + j0 * plane,
                        ldc,
                        pc == 0 ? cv.bias.data() : nullptr,
                        cv.relu && pc + kc == cv.k};
      kr.tiles(ta, 0, (a1 - a0) * (q1 - q0));
    }
  }
}

}  // namespace

void conv_gemm(const Kernels &kr, const PackedConv &cv, const ConvInput &in, int64_t m, int64_t h,
               int64_t w, float *out, int64_t ldc, GemmWorkspace &ws, int threads) {
  const int64_t plane = h * w, n_total = m * plane, nr = kr.nr;
  // B panels: over all pixels (1x1), or per image (k x k).
  const int64_t units = cv.pointwise() ? (n_total + nr - 1) / nr : m * ((plane + nr - 1) / nr);
  const int team = std::max(1, std::min<int>(threads, static_cast<int>(ws.threads_.size())));
  // Threads take disjoint parts of C, each with its own workspace, so that a convolution waits
  // for its threads once, at its end: columns (B panels) when there are enough of them, else
  // rows (A panels; each thread then packs or copies all of B for itself).
  const bool by_columns = units >= 2 * team;
  (void)team;
#pragma omp parallel num_threads(team) if (team > 1)
  {
#ifdef _OPENMP
    const int64_t t = omp_get_thread_num(), nt = omp_get_num_threads();
#else
    const int64_t t = 0, nt = 1;
#endif
    int64_t u0 = 0, u1 = units, a0 = 0, a1 = cv.panels;
    if (by_columns)
      u0 = units * t / nt, u1 = units * (t + 1) / nt;
    else
      a0 = cv.panels * t / nt, a1 = cv.panels * (t + 1) / nt;
    GemmWorkspace::PerThread &mine = ws.threads_[static_cast<size_t>(t)];
    if (u0 < u1 && a0 < a1) {
      if (cv.pointwise())
        gemm_pointwise(kr, cv, in, plane, n_total, out, ldc, mine, u0, u1, a0, a1);
      else
        gemm_taps(kr, cv, in, m, h, w, out, ldc, mine, u0, u1, a0, a1);
    }
  }
}

}  // namespace flowrt::portable
