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
  const float *a;          // the packed weights at the block's first K row
  int64_t a_stride;        // floats between A panels (K * mr)
  int64_t a_panels, rows;  // A panels, and C rows (O)
  const float *b;          // B: a packed block, or the shifted planes of a block of images
  const int64_t *off;      // B row k of a panel: its base + off[k]
  int64_t kc;              // K rows of the block
  int64_t b_panels;
  // Packed: `cols` pixels in panels of nr floats per row. Per image (k x k): b_panels / images
  // panels per image of `plane` pixels, images `image_pitch` floats apart.
  bool per_image;
  int64_t cols, plane, image_pitch;
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

// Tiles in A-panel-major order: an A micro-panel (mr x kc) stays in L1 while the block's B
// panels stream past it.
template <int W, int MR, int NV>
FLOWRT_INLINE void tiles_impl(const TileArgs &t, int64_t first, int64_t last) {
  constexpr int NR = W * NV;
  const int64_t per_image = t.per_image ? t.b_panels / (t.cols / t.plane) : 0;
  for (int64_t idx = first; idx < last; ++idx) {
    const int64_t p = idx / t.b_panels, q = idx % t.b_panels;
    int64_t width, cols, col;
    const float *b;
    if (t.per_image) {
      const int64_t j = q / per_image, r = q % per_image;
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

// The kernels of one ISA: `attr` is its target attribute (empty for the baseline).
#define FLOWRT_PORTABLE_KERNELS(id, attr, W, MR, NV)              \
  attr void id##_tiles(const TileArgs &a, int64_t f, int64_t l) { \
    tiles_impl<W, MR, NV>(a, f, l);                               \
  }                                                               \
  attr void id##_pack(const PackArgs &a, int64_t f, int64_t l) {  \
    pack_impl(a, f, l);                                           \
  }                                                               \
  constexpr int id##_mr = MR, id##_nr = W * NV;

// The baseline: 4-wide vectors (SSE2 on x86-64, NEON, WebAssembly SIMD128, or scalars), a 6x8
// tile in 12 vector registers.
FLOWRT_PORTABLE_KERNELS(baseline, , 4, 6, 2)
#if FLOWRT_PORTABLE_X86
// AVX2 (16 ymm registers): a 6x16 tile in 12. AVX-512 (32 zmm): 12x32 in 24, plus two B vectors
// and a broadcast.
FLOWRT_PORTABLE_KERNELS(avx2, FLOWRT_TARGET("avx2,fma"), 8, 6, 2)
FLOWRT_PORTABLE_KERNELS(avx512, FLOWRT_TARGET("avx512f"), 16, 12, 2)
#endif

const Kernels kBaseline{"baseline", baseline_mr, baseline_nr, baseline_tiles, baseline_pack};
#if FLOWRT_PORTABLE_X86
const Kernels kAvx2{"avx2", avx2_mr, avx2_nr, avx2_tiles, avx2_pack};
const Kernels kAvx512{"avx512f", avx512_mr, avx512_nr, avx512_tiles, avx512_pack};
#endif

// Splits `total` items evenly over the threads of the enclosing parallel region (all of them to
// the caller outside one), runs f on this thread's share, then waits for the others.
template <typename F>
void share(int64_t total, F &&f) {
#ifdef _OPENMP
  const int64_t nt = omp_get_num_threads(), id = omp_get_thread_num();
#else
  const int64_t nt = 1, id = 0;
#endif
  const int64_t first = total * id / nt, last = total * (id + 1) / nt;
  if (first < last) f(first, last);
#pragma omp barrier
}

}  // namespace

std::vector<const Kernels *> available_kernels() {
  std::vector<const Kernels *> out;
#if FLOWRT_PORTABLE_X86
  __builtin_cpu_init();
  if (__builtin_cpu_supports("avx512f")) out.push_back(&kAvx512);
  if (__builtin_cpu_supports("avx2") && __builtin_cpu_supports("fma")) out.push_back(&kAvx2);
#endif
  out.push_back(&kBaseline);
  return out;
}

const Kernels *kernels_named(const std::string &name) {
  for (const Kernels *k : available_kernels())
    if (name == k->name) return k;
  return nullptr;
}

PackedConv pack_conv(const PConv<float> &c, const Kernels &kernels) {
  PackedConv p;
  p.out_ch = c.out_ch, p.in_ch = c.in_ch, p.in_total = c.in_total, p.kh = c.kh, p.kw = c.kw;
  p.padding = c.padding, p.pad_value = c.pad_value, p.relu = c.relu;
  p.mr = kernels.mr;
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

void GemmWorkspace::reserve(const Kernels &kr, const PackedConv &c, int64_t m, int64_t h,
                            int64_t w) {
  if (c.pointwise()) {
    buf_.reserve(static_cast<size_t>(kKc * ((kNc + kr.nr - 1) / kr.nr) * kr.nr));
    if (packed_offsets_.size() < static_cast<size_t>(kKc)) {
      packed_offsets_.resize(kKc);
      for (int64_t k = 0; k < kKc; ++k) packed_offsets_[k] = k * kr.nr;
    }
  } else {
    const Planes pl(c, block_images(m, h * w), h, w);
    buf_.reserve(static_cast<size_t>(pl.floats));
    offsets_.resize(std::max<size_t>(offsets_.size(), pl.channels * c.kh * c.kw));
  }
}

void conv_gemm(const Kernels &kr, const PackedConv &cv, const ConvInput &in, int64_t m, int64_t h,
               int64_t w, float *out, int64_t ldc, GemmWorkspace &ws, int threads) {
  const int64_t plane = h * w, n_total = m * plane, k_total = cv.k, nr = kr.nr;
  float *buf = ws.buf_.data();
  int64_t *offsets = ws.offsets_.data();
  const int64_t *packed_offsets = ws.packed_offsets_.data();
  (void)threads;
  if (cv.pointwise()) {
#pragma omp parallel num_threads(threads) if (threads > 1)
    for (int64_t jc = 0; jc < n_total; jc += kNc) {
      const int64_t cols = std::min(kNc, n_total - jc);
      const int64_t b_panels = (cols + nr - 1) / nr;
      for (int64_t pc = 0; pc < k_total; pc += kKc) {
        const int64_t kc = std::min(kKc, k_total - pc);
        const PackArgs pa{&in, plane, jc, cols, pc, kc, kr.nr, buf};
        share(b_panels, [&](int64_t f, int64_t l) { kr.pack(pa, f, l); });
        const TileArgs ta{cv.a.data() + pc * cv.mr,
                          k_total * cv.mr,
                          cv.panels,
                          cv.out_ch,
                          buf,
                          packed_offsets,
                          kc,
                          b_panels,
                          false,
                          cols,
                          plane,
                          0,
                          out + jc,
                          ldc,
                          pc == 0 ? cv.bias.data() : nullptr,
                          cv.relu && pc + kc == k_total};
        share(cv.panels * b_panels, [&](int64_t f, int64_t l) { kr.tiles(ta, f, l); });
      }
    }
    return;
  }
  const int64_t per_block = block_images(m, plane);
  const int64_t per_image = (plane + nr - 1) / nr;  // B panels of an image
  const int64_t taps = cv.kh * cv.kw;
#pragma omp parallel num_threads(threads) if (threads > 1)
  for (int64_t j0 = 0; j0 < m; j0 += per_block) {
    const int64_t images = std::min(per_block, m - j0);
    const Planes pl(cv, images, h, w);
#pragma omp single
    for (int64_t c = 0, k = 0; c < pl.channels; ++c)  // B row (c, ky, kx) of a block
      for (int64_t ky = 0; ky < cv.kh; ++ky)
        for (int64_t kx = 0; kx < cv.kw; ++kx, ++k)
          offsets[k] = kx * pl.shift_pitch + c * pl.channel_pitch + ky * w;
    for (int64_t ci0 = 0; ci0 < cv.k_channels; ci0 += pl.channels) {
      const int64_t channels = std::min(pl.channels, cv.k_channels - ci0);
      const int64_t pc = ci0 * taps, kc = channels * taps;
      share(cv.kw * channels * images, [&](int64_t f, int64_t l) {
        make_planes(cv, in, j0, images, ci0, channels, h, w, pl, buf, f, l);
      });
      const TileArgs ta{cv.a.data() + pc * cv.mr,
                        k_total * cv.mr,
                        cv.panels,
                        cv.out_ch,
                        buf,
                        offsets,
                        kc,
                        images * per_image,
                        true,
                        images * plane,
                        plane,
                        pl.image_pitch,
                        out + j0 * plane,
                        ldc,
                        pc == 0 ? cv.bias.data() : nullptr,
                        cv.relu && pc + kc == k_total};
      share(cv.panels * images * per_image, [&](int64_t f, int64_t l) { kr.tiles(ta, f, l); });
    }
  }
}

}  // namespace flowrt::portable
