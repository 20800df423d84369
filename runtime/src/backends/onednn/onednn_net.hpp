// A coupling net or split prior (a PNet) as a chain of oneDNN convolutions. Convolutions are
// created with format_tag::any so oneDNN picks its fastest layouts; activations stay in those
// layouts through the chain (a reorder is inserted only where two convolutions disagree), and
// only the net's input and output are plain NHWC for the element-wise passes around it.
// ReLU is a post-op of its convolution. Padding other than zeros (a constant, Glow's edge
// channel) runs as a zero-padded convolution plus a precomputed per-position,
// per-output-channel correction map.
//
// Weights: one prepared copy per tensor, made when the first primitive that uses it is bound, in
// the layout that primitive chose, from the Program's values (normally views of the model's
// mapped bytes; the foldings are applied while copying). Primitives of other batch sizes are
// created for that same layout (pd_for_cache). Nothing plain is kept.
// oneDNN's 1x1 convolution (brgconv_1x1, oneDNN 2.6, AVX-512) picks the block size of its
// weights' output channels from the batch (cifar's 512 channels: 64 at batch 1 and 48 from
// batch 2 at 16x16, the reverse at 8x8) and has only a reference kernel for any other block. So
// a 1x1 conv runs as that convolution only where it keeps one weights layout for every batch
// size the session can plan (choose_forms probes them), and otherwise as a matmul over the NHWC
// pixel rows, whose weights layout never depends on the batch. (The matmul alone would do, but
// it runs ~7% slower than the convolution inside small nets at batch 1: fmnist.) Where that
// matmul takes only plain weights, packing them anew on every call (gemm:jit: AVX2), the 1x1
// conv runs instead as a convolution of all the pixel rows as one 1 x rows image, whose weights
// are packed once (Form::Rows; measured on Zen 3, one thread: NICE's nets 1.6-2x faster, cifar
// 10-25 %).
//
// A bf16 net (FLOWRT_PRECISION_BF16) runs its convolutions on bf16 activations and bf16 weights
// with fp32 accumulation: the prepared copy of each weight tensor is bf16 (made from the fp32
// values once), hidden layers write bf16 with the ReLU fused, and whatever the element-wise
// passes read (the net's output, a conv before an unfolded actnorm or a padding correction)
// stays fp32. The net's fp32 input is rounded to bf16 by an element-wise pass, not a reorder.
#pragma once

#include <cstdint>
#include <functional>
#include <memory>
#include <optional>
#include <string>
#include <variant>
#include <vector>

#include "backends/onednn/onednn_context.hpp"
#include "backends/onednn/onednn_elementwise.hpp"
#include "model/program.hpp"

namespace flowrt::onednn {

// One weight tensor of the primitives, prepared once. `fill` writes its values in the `plain`
// layout; `direct`, when not null, already holds exactly those values (the model's mapped bytes,
// kept alive by `owner`), and a primitive that wants `plain` then reads them in place, with no
// copy at all.
class WeightCache {
 public:
  using Fill = std::function<void(float *)>;
  WeightCache() = default;
  WeightCache(const dnnl::memory::desc &plain, Fill fill, const float *direct = nullptr,
              std::shared_ptr<const void> owner = nullptr)
      : plain_(plain), fill_(std::move(fill)), direct_(direct), owner_(std::move(owner)) {}
  // The layout of the prepared copy, null until the first get().
  const dnnl::memory::desc *layout() const { return copies_.empty() ? nullptr : &copies_[0].first; }
  // The weights in layout `want`. The first call makes the prepared copy (from `fill` through a
  // temporary plain buffer, freed at once) and drops `fill` (and what it holds). A later call
  // with another layout reorders the prepared copy into a second one: only when oneDNN has no
  // optimised kernel for the first layout at some batch size (see pd_for_cache).
  const dnnl::memory &get(const dnnl::memory::desc &want, Context &ctx);

  // Bytes of the prepared copy (0 when it reads the mapping), of the model's bytes read in
  // place, and of the copies in further layouts.
  size_t prepared_bytes() const {
    return copies_.empty() || mapped_ ? 0 : copies_[0].first.get_size();
  }
  size_t mapped_bytes() const { return mapped_ ? copies_[0].first.get_size() : 0; }
  size_t extra_bytes() const {
    size_t n = 0;
    for (size_t k = 1; k < copies_.size(); ++k) n += copies_[k].first.get_size();
    return n;
  }

 private:
  dnnl::memory::desc plain_;
  Fill fill_;
  const float *direct_ = nullptr;
  std::shared_ptr<const void> owner_;  // of direct_, kept while the copy reads it
  bool mapped_ = false;
  std::vector<std::pair<dnnl::memory::desc, dnnl::memory>> copies_;  // [0]: the prepared copy
};

// Weight bytes of a net or a backend (see WeightCache).
struct WeightBytes {
  size_t prepared = 0, mapped = 0, extra = 0;
  void add(const WeightCache &w) {
    prepared += w.prepared_bytes();
    mapped += w.mapped_bytes();
    extra += w.extra_bytes();
  }
};

// The primitive make(weights) (a Primitives entry) for weights of format_tag::any (`any`), except
// when `cache` already holds its prepared copy in another layout: then make(that layout) when
// oneDNN has an optimised (not "ref") kernel for it, so that one copy serves every batch size.
// oneDNN's reference kernels are named "ref:...".
inline bool is_ref_impl(const char *name) {
  return std::string(name).compare(0, 3, "ref") == 0;
}

template <typename Make>
auto pd_for_cache(const WeightCache &cache, const dnnl::memory::desc &any, Make &&make)
    -> decltype(make(any)) {
  auto e = make(any);
  const dnnl::memory::desc *have = cache.layout();
  if (!have || e.pd.weights_desc() == *have) return e;
  try {
    auto pinned = make(*have);
    if (!is_ref_impl(impl_name(pinned.pd))) return pinned;
  } catch (const dnnl::error &) {  // no implementation at all for that layout
  }
  return e;
}

// Executes one primitive with prepared arguments through the C API: the C++ overload builds a
// vector of arguments on every call.
struct Exec {
  dnnl::primitive prim;
  std::vector<dnnl::memory> keep;  // owns the memories the arguments point to
  std::vector<dnnl_exec_arg_t> args;
  void add(int arg, const dnnl::memory &m) {
    keep.push_back(m);
    args.push_back({arg, m.get()});
  }
  void run(const dnnl::stream &s) const;
};

class OnednnNet {
 public:
  // dt: the data type of the convolutions' inputs and weights (f32 or bf16).
  OnednnNet(const PNet<float> &net, int64_t h, int64_t w, dnnl::memory::data_type dt);
  int64_t in_ch() const { return in_ch_; }
  int64_t out_ch() const { return out_ch_; }

  // Decides how each 1x1 conv runs, before the first create(): as oneDNN's convolution where
  // that picks one weights layout for every batch size 1..max_batch (the plans the session can
  // make), else as a matmul over the pixel rows (whose layout never depends on the batch).
  void choose_forms(size_t max_batch, Context &ctx);
  // The primitives of one batch size. create() makes the primitive descriptors and reports the
  // scratch they need; bind() makes the memories on the context's buffers (again after the
  // buffers grew).
  struct Plan;
  std::unique_ptr<Plan> create(size_t n, Context &ctx, Needs &needs);
  void bind(Plan &plan, Context &ctx, MemoryCache &mems);
  // Runs the net: input in Role::In, output in Role::Out (both NHWC).
  void run(const Plan &plan, Context &ctx, const Par &par) const;
  static void impl_names(const Plan &plan, std::vector<std::string> &out);
  void add_weight_bytes(WeightBytes &bytes) const;

 private:
  struct Conv {
    // Direct: a oneDNN convolution, weights [out, in, kh, kw].
    // Taps: few output channels waste most of a convolution kernel's output-channel block (4 of
    // 16 lanes); such a kxk conv runs as one matmul to all k*k taps' partial outputs
    // [pixels, in] x [in, k*k*out], then a pass that sums each pixel's neighbours' taps.
    // Pointwise: a 1x1 conv as the matmul [pixels, in] x [in, out] (+ bias, ReLU post-op).
    // Rows: a 1x1 conv as oneDNN's convolution of one 1 x pixels NHWC image (the pixel rows of
    // the whole batch): where the matmul takes only plain weights, and so packs them again on
    // every call (oneDNN 2.6's gemm:jit, AVX2), this convolution reads weights packed once, in
    // one layout for every batch size. NICE's nets (1000 x 1000 at 1x1) run 2-3x faster.
    enum class Form { Direct, Taps, Pointwise, Rows };
    Form form = Form::Direct;
    int64_t out = 0, in = 0, kh = 1, kw = 1;
    bool relu = false;
    WeightCache weights;
    Weights<float> bias;      // the Program's (a view of the model's bytes when unfolded)
    std::vector<float> corr;  // [H*W, out] added before the ReLU; empty when not needed
    std::shared_ptr<const PConv<float>> src;  // the Program's conv, until the form is final
  };
  static void make_weights(Conv &c);
  // Whether op k (a conv) writes plain NHWC (for the element-wise passes or a matmul next).
  bool plain_dst(size_t k) const;
  // The data type op k (a conv) writes: dt_ where only another conv reads it, else f32.
  dnnl::memory::data_type dst_type(size_t k) const;
  // The arguments of op k's oneDNN convolution (form Direct) at batch size n, but its weights.
  struct ConvDescs {
    dnnl::memory::desc src, bias, dst;
    dnnl::memory::dims pad;
    bool relu = false;
  };
  ConvDescs direct_descs(const Conv &c, size_t k, size_t n) const;
  // The same for form Rows: the n images' pixels as one 1 x (n*H*W) NHWC image.
  ConvDescs rows_descs(const Conv &c, size_t k, size_t n) const;
  // Whether form Rows suits 1x1 conv k at every batch size up to max_batch (see Form).
  bool rows_pay(const Conv &c, size_t k, size_t max_batch, Context &ctx) const;
  struct Affine {
    std::vector<float> scale, shift;
  };
  struct Relu {};
  struct Add {  // x += the kept input of op `from` (a residual connection)
    bool relu = false;
  };
  using Op = std::variant<Conv, Affine, Relu, Add>;
  std::vector<char> source_;  // source_[k]: op k's input is kept for a residual add

  std::vector<Op> ops_;
  size_t last_conv_ = 0;  // the op whose output is the net's (always fp32, plain)
  int64_t in_ch_ = 0, out_ch_ = 0, h_ = 0, w_ = 0;
  dnnl::memory::data_type dt_ = dnnl::memory::data_type::f32;
};

// The items of one batch size: primitives, reorders and element-wise passes, in order.
struct OnednnNet::Plan {
  enum class Kind {
    Conv,
    RowsConv,
    Reorder,
    ToBf16,
    Correct,
    TapMatmul,
    TapSum,
    Matmul,
    Affine,
    Relu,
    Keep,  // a residual source: copied to Role::Skip
    Add,   // a residual add: x += Role::Skip
    Copy
  };
  struct Item {
    Kind kind = Kind::Copy;
    size_t op = 0;
    Role src = Role::In, dst = Role::In;
    dnnl::memory::desc src_md, dst_md;
    std::optional<dnnl::convolution_forward::primitive_desc> pd;
    std::optional<dnnl::matmul::primitive_desc> mm_pd;
    dnnl::primitive prim;  // Conv, TapMatmul, Matmul: shared with the items of the same problem
    int64_t channels = 0;
    Exec exec;
    std::string reorder_impl;  // Reorder: oneDNN's implementation, once bound
  };
  size_t n = 0;
  std::vector<Item> items;
};

}  // namespace flowrt::onednn
