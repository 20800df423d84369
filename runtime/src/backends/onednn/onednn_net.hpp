// A coupling net or split prior (a PNet) as a chain of oneDNN convolutions. Convolutions are
// created with format_tag::any so oneDNN picks its fastest layouts; activations stay in those
// layouts through the chain (a reorder is inserted only where two convolutions disagree), and
// only the net's input and output are plain NHWC for the element-wise passes around it.
// Weights are reordered once per chosen layout. ReLU is a post-op of its convolution. Padding
// other than zeros (a constant, Glow's edge channel) runs as a zero-padded convolution plus a
// precomputed per-position, per-output-channel correction map.
#pragma once

#include <cstdint>
#include <memory>
#include <optional>
#include <string>
#include <variant>
#include <vector>

#include "backends/onednn/onednn_context.hpp"
#include "backends/onednn/onednn_elementwise.hpp"
#include "model/program.hpp"

namespace flowrt::onednn {

// Plain weights plus their reorders into the layouts primitives asked for (usually one).
class WeightCache {
 public:
  WeightCache() = default;
  WeightCache(const dnnl::memory::desc &user, std::vector<float> data)
      : user_(user), data_(std::move(data)) {}
  const dnnl::memory &get(const dnnl::memory::desc &want, Context &ctx);

 private:
  dnnl::memory::desc user_;
  std::vector<float> data_;
  std::vector<std::pair<dnnl::memory::desc, dnnl::memory>> copies_;
};

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
  OnednnNet(const PNet<float> &net, int64_t h, int64_t w);
  int64_t in_ch() const { return in_ch_; }
  int64_t out_ch() const { return out_ch_; }

  // The primitives of one batch size. create() makes the primitive descriptors and reports the
  // scratch they need; bind() makes the memories on the context's buffers (again after the
  // buffers grew).
  struct Plan;
  std::unique_ptr<Plan> create(size_t n, Context &ctx, Needs &needs);
  void bind(Plan &plan, Context &ctx);
  // Runs the net: input in Role::In, output in Role::Out (both NHWC).
  void run(const Plan &plan, Context &ctx, const Par &par) const;
  static void impl_names(const Plan &plan, std::vector<std::string> &out);

 private:
  struct Conv {
    int64_t out = 0, in = 0, kh = 1, kw = 1;
    bool relu = false;
    WeightCache weights;
    std::vector<float> bias;
    std::vector<float> corr;  // [H*W, out] added before the ReLU; empty when not needed
    // Few output channels waste most of a convolution kernel's output-channel block (4 of 16
    // lanes); such a kxk conv runs as one matmul to all k*k taps' partial outputs
    // [pixels, in] x [in, k*k*out], then a pass that sums each pixel's neighbours' taps.
    bool taps = false;
    WeightCache tap_weights;  // [in, k*k*out]
  };
  struct Affine {
    std::vector<float> scale, shift;
  };
  struct Relu {};
  using Op = std::variant<Conv, Affine, Relu>;

  std::vector<Op> ops_;
  int64_t in_ch_ = 0, out_ch_ = 0, h_ = 0, w_ = 0;
};

// The items of one batch size: primitives, reorders and element-wise passes, in order.
struct OnednnNet::Plan {
  enum class Kind { Conv, Reorder, Correct, TapMatmul, TapSum, Affine, Relu, Copy };
  struct Item {
    Kind kind = Kind::Copy;
    size_t op = 0;
    Role src = Role::In, dst = Role::In;
    dnnl::memory::desc src_md, dst_md;
    std::optional<dnnl::convolution_forward::primitive_desc> pd;
    std::optional<dnnl::matmul::primitive_desc> mm_pd;
    int64_t channels = 0;
    Exec exec;
  };
  size_t n = 0;
  std::vector<Item> items;
};

}  // namespace flowrt::onednn
