// A Program is a Graph prepared for execution in a given precision T: the layer list becomes a
// list of steps whose weights are computed once from the double-precision preparation, with the
// foldings every backend benefits from applied (when `fold` is on):
// - an actnorm followed by a 1x1 conv becomes one affine 1x1 map y = A x + c with A = W diag(s),
//   c = W (s .* b), and its inverse A^-1 = diag(1/s) W^-1 (all computed in double);
// - a net's actnorm or output scale right after a conv is folded into the conv's weights and bias;
// - a ReLU right after a conv or a residual add is fused into it;
// - no folding removes the input of an op that a residual connection adds back later.
// With fold off, every layer stays a step of its own (the unfused oracle the folds are tested
// against). Backends build their own layouts from a Program.
//
// Memory: the convolutions of the nets (coupling nets, split priors) hold nearly all of a model's
// weights. By default a Program owns copies of them. A float Program can instead view the graph's
// tensors, i.e. the model's memory-mapped bytes, with no copy (ProgramOptions::net_weights): the
// reference backend reads them in place, the oneDNN backend reads them once to make its own
// layout. Every other weight (actnorms, 1x1 convs and their inverses, priors) is small.
#pragma once

#include <cstddef>
#include <cstdint>
#include <type_traits>
#include <utility>
#include <variant>
#include <vector>

#include "model/graph.hpp"

namespace flowrt {

// The values of a prepared weight tensor: either owned (the std::vector base holds them) or, for
// T = float, a read-only view of a graph tensor (the model's bytes; the view keeps their owner
// alive). Read them through data(), size(), operator[] and begin()/end(), which see both.
// The std::vector base is the owned storage only: code that takes these weights as a
// `const std::vector<T> &` (the CUDA backend's upload()) sees an empty vector for a view, so it
// must work on a Program whose weights are owned (NetWeights::Copy, the default).
template <typename T>
class Weights : public std::vector<T> {
  using Base = std::vector<T>;

 public:
  Weights() = default;
  Weights(Base values) : Base(std::move(values)) {}  // implicit, like the vector it replaces
  Weights &operator=(Base values) {
    Base::operator=(std::move(values));
    view_ = Tensor();
    return *this;
  }
  // A view of `t` (no copy). T = float only.
  static Weights view(const Tensor &t) {
    static_assert(std::is_same_v<T, float>, "only float weights can view a graph tensor");
    Weights w;
    w.view_ = t;
    return w;
  }

  bool is_view() const { return view_.data() != nullptr; }
  const T *data() const { return is_view() ? view_ptr() : Base::data(); }
  size_t size() const { return is_view() ? view_.size() : Base::size(); }
  bool empty() const { return size() == 0; }
  const T &operator[](size_t i) const { return data()[i]; }
  const T *begin() const { return data(); }
  const T *end() const { return data() + size(); }
  // Bytes this object owns (0 for a view).
  size_t owned_bytes() const { return Base::capacity() * sizeof(T); }

 private:
  const T *view_ptr() const {
    if constexpr (std::is_same_v<T, float>)
      return view_.data();
    else
      return nullptr;  // never: only float weights are views
  }
  Tensor view_;
};

template <typename T>
struct PConv {
  Weights<T> weight;  // [O, I_total, kh, kw]
  Weights<T> bias;    // [O] (zeros when the conv has none)
  // Only in a program built with NetWeights::ViewScaled: the per-output-channel factors of the
  // foldings, not yet applied to `weight` (a view of the unfolded tensor); the conv's weights
  // are weight_at(). Empty otherwise: `weight` holds the final values.
  std::vector<double> weight_scale;
  int64_t out_ch = 0, in_ch = 0, in_total = 0, kh = 1, kw = 1;
  PaddingMode padding = PaddingMode::Zeros;
  T pad_value = 0;
  bool relu = false;  // fused ReLU on the output

  // Weight j of output channel o (j indexes the flattened [I_total, kh, kw]) with every folding
  // applied: the value a program built with NetWeights::Copy stores.
  T weight_at(int64_t o, int64_t j) const {
    const T w = weight[static_cast<size_t>(o * in_total * kh * kw + j)];
    return weight_scale.empty() ? w : static_cast<T>(static_cast<double>(w) * weight_scale[o]);
  }
};
template <typename T>
struct PChannelAffine {  // y[c] = scale[c] * x[c] + shift[c]
  std::vector<T> scale, shift;
};
struct PRelu {};
// y = x + s, s = the input of op `from` of the same PNet (from < this op's index); connections
// do not overlap, so an executor keeps at most one saved activation. `relu`: a ReLU fused after
// the add.
struct PResidualAdd {
  size_t from = 0;
  bool relu = false;
};
template <typename T>
using PNetOp = std::variant<PConv<T>, PChannelAffine<T>, PRelu, PResidualAdd>;

template <typename T>
struct PNet {
  std::vector<PNetOp<T>> ops;
  int64_t in_ch = 0, out_ch = 0, max_ch = 0;
  bool empty() const { return ops.empty(); }
  // residual_source[k]: op k's input must be kept for a later residual add (empty: no add).
  std::vector<char> residual_source;
  bool is_residual_source(size_t k) const {
    return k < residual_source.size() && residual_source[k];
  }
  bool has_residual() const { return !residual_source.empty(); }
};

struct PSqueeze {
  SqueezeOrder order;
};
template <typename T>
struct PAffine {  // per-channel: y = scale * x + shift   (an actnorm)
  std::vector<T> scale, shift;
};
template <typename T>
struct PLinear {  // per pixel: y = A x + c, x = A_inv (y - c)
  std::vector<T> a, c, a_inv;
};
struct PPermute {
  std::vector<int32_t> source;  // y[k] = x[source[k]]
};
template <typename T>
struct PCoupling {
  CouplingType type;
  Half conditioning;
  PNet<T> net;
  ShiftScaleSplit split;
  ScaleFunction scale_fn;
  T scale_bias;
  AffineForm form;
  bool mask_channel = false;    // checkerboard: the mask is the net's last input channel
  std::vector<T> scale_weight;  // Tanh: [C_b]
};
template <typename T>
struct PLogit {  // y = logit(alpha + (1 - 2 alpha)(x + 1/2)); the first step only
  T alpha;
};
template <typename T>
struct PSplit {
  Half leaving;
  PNet<T> prior;
  PriorLayout layout;
};
template <typename T>
struct PTop {
  TopPriorKind kind;
  std::vector<T> mean, log_std;  // [C*H*W]
  std::vector<T> class_offsets;  // [n_classes * 2C]
  int64_t n_classes = 0;
};

template <typename T>
using PStepOp = std::variant<PSqueeze, PAffine<T>, PLinear<T>, PPermute, PCoupling<T>, PSplit<T>,
                             PTop<T>, PLogit<T>>;

template <typename T>
struct PStep {
  PStepOp<T> op;
  Shape3 in, out;
  double logdet = 0;  // input-independent log|det| per image (affine and linear steps)
  Shape3 latent;      // split / top
  int64_t latent_offset = 0;
  size_t layer_index = 0;  // first graph layer this step came from
};

template <typename T>
struct Program {
  ImageSpec image;
  std::vector<PStep<T>> steps;
  int64_t dims = 0;           // C*H*W
  int64_t max_net_elems = 0;  // largest net activation per image (channels * H * W)
  int64_t n_classes = 0;
};

// How a Program holds the weights of the nets' convolutions (T = float; a double Program always
// copies, since the graph's tensors are float).
enum class NetWeights {
  // Owned copies with the net foldings applied (when fold is on). The default.
  Copy,
  // Views of the graph's tensors, no copy: a net's actnorms and output scales stay ops of their
  // own instead of being folded into its convs (ReLUs are still fused, which changes no weight).
  View,
  // Views of the graph's tensors with the net foldings kept aside in PConv::weight_scale (the
  // biases are folded, small owned copies): for a backend that makes its own copy of the weights
  // anyway and applies the scales while doing so (PConv::weight_at). layers::conv2d cannot run
  // such a program.
  ViewScaled
};

struct ProgramOptions {
  bool fold = true;
  NetWeights net_weights = NetWeights::Copy;
};

template <typename T>
Program<T> build_program(const Graph &graph, const ProgramOptions &options);
template <typename T>
Program<T> build_program(const Graph &graph, bool fold = true) {
  ProgramOptions o;
  o.fold = fold;
  return build_program<T>(graph, o);
}
// Bytes of weights a Program owns (its views of the graph's tensors not counted).
template <typename T>
size_t owned_weight_bytes(const Program<T> &program);

// Floating-point operations per image of each direction (multiply-adds count 2).
struct FlopCount {
  double encode = 0, decode = 0;
};
FlopCount count_flops(const Graph &graph);
// Trainable parameters stored in the file (every float of every tensor).
int64_t count_parameters(const Graph &graph);

}  // namespace flowrt
