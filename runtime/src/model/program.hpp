// A Program is a Graph prepared for execution in a given precision T: the layer list becomes a
// list of steps whose weights are computed once from the double-precision preparation, with the
// foldings every backend benefits from applied (when `fold` is on):
// - an actnorm followed by a 1x1 conv becomes one affine 1x1 map y = A x + c with A = W diag(s),
//   c = W (s .* b), and its inverse A^-1 = diag(1/s) W^-1 (all computed in double);
// - a net's actnorm or output scale right after a conv is folded into the conv's weights and bias;
// - a ReLU right after a conv is fused into it.
// With fold off, every layer stays a step of its own (the unfused oracle the folds are tested
// against). Backends build their own layouts from a Program.
#pragma once

#include <cstdint>
#include <variant>
#include <vector>

#include "model/graph.hpp"

namespace flowrt {

template <typename T>
struct PConv {
  std::vector<T> weight;  // [O, I_total, kh, kw]
  std::vector<T> bias;    // [O] (zeros when the conv has none)
  int64_t out_ch = 0, in_ch = 0, in_total = 0, kh = 1, kw = 1;
  PaddingMode padding = PaddingMode::Zeros;
  T pad_value = 0;
  bool relu = false;  // fused ReLU on the output
};
template <typename T>
struct PChannelAffine {  // y[c] = scale[c] * x[c] + shift[c]
  std::vector<T> scale, shift;
};
struct PRelu {};
template <typename T>
using PNetOp = std::variant<PConv<T>, PChannelAffine<T>, PRelu>;

template <typename T>
struct PNet {
  std::vector<PNetOp<T>> ops;
  int64_t in_ch = 0, out_ch = 0, max_ch = 0;
  bool empty() const { return ops.empty(); }
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
using PStepOp =
    std::variant<PSqueeze, PAffine<T>, PLinear<T>, PPermute, PCoupling<T>, PSplit<T>, PTop<T>>;

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

template <typename T>
Program<T> build_program(const Graph &graph, bool fold = true);

// Floating-point operations per image of each direction (multiply-adds count 2).
struct FlopCount {
  double encode = 0, decode = 0;
};
FlopCount count_flops(const Graph &graph);
// Trainable parameters stored in the file (every float of every tensor).
int64_t count_parameters(const Graph &graph);

}  // namespace flowrt
