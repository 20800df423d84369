// The portable backend's convolutions: cache-blocked GEMMs C[O x N] = A[O x K] * B[K x N] in
// plain C++ (no intrinsics, no external library), N = the pixels of a group of images.
// - A: a convolution's weights, packed once at session creation into panels of `mr` output
//   channels (k-major inside a panel: a[k * mr + r]), the foldings of the Program applied while
//   packing (PConv::weight_at). K runs over (input channel, tap row, tap column), PConv's own
//   order, Glow's edge channel included; a 1x1 convolution drops the edge channel (it never sees
//   the outside of the image).
// - B, 1x1 convolutions: the input channels themselves, packed per cache block (kKc x kNc) into
//   panels of `nr` pixels, k-major (b[k * nr + c]); a panel may span images.
// - B, k x k convolutions: no im2col and no packing. The inputs of a block of whole images are
//   copied once into kw column-shifted planes per channel (shift kx: the image moved by kx - kw/2
//   columns, with kh/2 padding rows above and below each image, the padding value, or the edge
//   channel's ones, wherever the tap falls outside), all with the image's own row pitch W. Then
//   tap (ky, kx) of any run of consecutive pixels of one image is a run of consecutive floats:
//   the micro-kernel reads its B rows there directly, through a per-K-row offset table. The
//   copies are kw times the input where an im2col is kh * kw times, and are made once however
//   many output panels read them (the last convs of Glow's nets have a single panel of 12-48
//   outputs: packing B would cost as much as the products).
// - C: row-major [O][ldc]; bias added at the first K block, ReLU fused at the last.
// The micro-kernel keeps an mr x nr tile of C in registers: GCC/clang vector extensions (which
// GCC, clang and emscripten lower to the target's vectors, or to scalars) with plain C++ loops as
// the fallback for other compilers; GCC 12 keeps a plain-loop tile in memory across the k loop
// (a load and a store per FMA), which is why the vector types are used where they exist. On x86
// (GCC or clang, not emscripten) the kernels are compiled three times, with
// __attribute__((target)) for AVX-512F and AVX2+FMA beside the build's baseline ISA, and the
// widest one the CPU runs is chosen once per session: each has its own register tile, so the
// weights are packed for the chosen one (target_clones would give every clone the same tile).
#pragma once

#include <cstddef>
#include <cstdint>
#include <memory>
#include <string>
#include <vector>

#include "model/program.hpp"

namespace flowrt::portable {

// Cache blocking: K in blocks of kKc rows (an A micro-panel of mr x kKc floats, 12 KiB on
// AVX-512, stays in L1 while the B panels of a block stream past it from L2), N in blocks of
// about kNc pixels (a packed B block is kKc x kNc floats, 512 KiB).
constexpr int64_t kKc = 256;
constexpr int64_t kNc = 512;

// Floats aligned to 64 bytes, zeroed when (re)allocated.
class FloatBuffer {
 public:
  void reserve(size_t floats);  // grows (discarding the contents) when too small
  float *data() { return ptr_; }
  const float *data() const { return ptr_; }
  size_t size() const { return size_; }
  size_t bytes() const { return size_ * sizeof(float); }

 private:
  std::unique_ptr<float[]> raw_;
  float *ptr_ = nullptr;
  size_t size_ = 0;
};

struct TileArgs;
struct PackArgs;

// The kernels of one instruction set and their register tiles: A panels of mr[0], mr[1] or mr[2]
// rows (the tallest first; a convolution is packed for one, panel_height), B panels of `nr`
// pixels (the last panel of a block, or of an image, may be a narrow one of nr / 2).
struct Kernels {
  const char *name;  // "avx512f", "avx2", "baseline"
  int mr[3];
  int nr;
  // C tiles first..last-1 of a block (A-panel-major over TileArgs' A and B panels).
  void (*tiles)(const TileArgs &args, int64_t first, int64_t last);
  // Packed B panels first..last-1 of a 1x1 convolution's block.
  void (*pack)(const PackArgs &args, int64_t first, int64_t last);
};

// The kernels this build has that the CPU runs, widest first (the baseline ones always).
std::vector<const Kernels *> available_kernels();
// By name, or nullptr when this build or CPU lacks them.
const Kernels *kernels_named(const std::string &name);

// The panel height `kernels` computes a convolution with out_ch outputs with.
int panel_height(const Kernels &kernels, int64_t out_ch);

// One convolution of a net, packed for `Kernels`.
struct PackedConv {
  int64_t out_ch = 0, k = 0;  // O, K
  int64_t in_ch = 0, in_total = 0, kh = 1, kw = 1;
  int64_t k_channels = 0;  // input channels in K: in_total, or in_ch for a 1x1 convolution
  PaddingMode padding = PaddingMode::Zeros;
  float pad_value = 0;
  bool relu = false;
  int mr = 1;
  int64_t panels = 0;       // ceil(O / mr)
  FloatBuffer a;            // panels * K * mr
  std::vector<float> bias;  // panels * mr (zeros past O)
  bool pointwise() const { return kh == 1 && kw == 1; }
  size_t bytes() const { return a.bytes() + bias.capacity() * sizeof(float); }
};
PackedConv pack_conv(const PConv<float> &conv, const Kernels &kernels);

// A convolution's input: channel c of image j at image[j] + c * channel_stride, H x W floats.
struct ConvInput {
  const float *const *image = nullptr;
  int64_t channel_stride = 0;
};

// What conv_gemm needs besides its input and output, for each of its threads (a packed B block,
// or the shifted planes of a K block, and B's row offsets), sized at session creation.
class GemmWorkspace {
 public:
  // Room for `conv` on m images of h x w, on up to `threads` threads.
  void reserve(const Kernels &kernels, const PackedConv &conv, int64_t m, int64_t h, int64_t w,
               int threads);
  size_t bytes() const;

  struct PerThread {
    FloatBuffer buf;
    std::vector<int64_t> offsets;
  };

 private:
  friend void conv_gemm(const Kernels &, const PackedConv &, const ConvInput &, int64_t, int64_t,
                        int64_t, float *, int64_t, GemmWorkspace &, int);
  std::vector<PerThread> threads_;
};

// out[o * ldc + j * h * w + p] = conv(input)[j][o][p] for the m images of h x w: bias, padding,
// edge channel and ReLU as PConv says. threads > 1: OpenMP threads (at most the workspace's)
// compute disjoint parts of C.
void conv_gemm(const Kernels &kernels, const PackedConv &conv, const ConvInput &in, int64_t m,
               int64_t h, int64_t w, float *out, int64_t ldc, GemmWorkspace &ws, int threads);

}  // namespace flowrt::portable
