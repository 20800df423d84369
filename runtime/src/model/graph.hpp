// The Graph: a verified flow as an ordered list of layers with their shapes and weights. It is
// what the loader produces from a .flow file, what the writer serialises, what `flowrt init` and
// the trainer build, and what every backend's plan is made from. The enums mirror schema/flow.fbs
// (the meaning of every value is documented there).
#pragma once

#include <cstdint>
#include <string>
#include <utility>
#include <variant>
#include <vector>

#include "core/tensor.hpp"

namespace flowrt {

struct Shape3 {
  int64_t c = 0, h = 0, w = 0;
  int64_t numel() const { return c * h * w; }
  int64_t plane() const { return h * w; }
  bool operator==(const Shape3 &o) const { return c == o.c && h == o.h && w == o.w; }
  bool operator!=(const Shape3 &o) const { return !(*this == o); }
};
std::string to_string(const Shape3 &s);

struct ImageSpec {
  int64_t channels = 0, height = 0, width = 0;
  int n_bits = 8;
  Shape3 shape() const { return {channels, height, width}; }
};

enum class SqueezeOrder { ChannelMajor = 1, SubpixelMajor = 2 };
enum class InvConvForm { LU = 1, Dense = 2 };
enum class PermuteKind { Reverse = 1, Indices = 2 };
enum class PaddingMode { Zeros = 1, Constant = 2, EdgeChannel = 3 };
enum class CouplingType { Additive = 1, Affine = 2 };
// CheckerboardEven/Odd: couplings only (x_a = the positions with (i + j) even / odd).
enum class Half { First = 1, Second = 2, CheckerboardEven = 3, CheckerboardOdd = 4 };
inline bool is_checkerboard(Half h) {
  return h == Half::CheckerboardEven || h == Half::CheckerboardOdd;
}
enum class ShiftScaleSplit {
  ShiftScaleHalves = 1,
  ScaleShiftHalves = 2,
  ShiftScaleInterleaved = 3,
  ScaleShiftInterleaved = 4
};
enum class ScaleFunction { Sigmoid = 1, Exp = 2, Tanh = 3 };
enum class AffineForm { ShiftThenScale = 1, ScaleThenShift = 2 };
enum class PriorLayout { MeanLogstdHalves = 1, MeanLogstdInterleaved = 2 };
enum class TopPriorKind { StandardNormal = 1, Learned = 2 };

// ---- Ops of a small CNN (coupling nets, split priors) ----------------------------------------
struct Conv2dOp {
  Tensor weight;  // [O, I(+1 edge), kh, kw]
  Tensor bias;    // [O] or empty
  PaddingMode padding = PaddingMode::Zeros;
  float pad_value = 0.f;
  int64_t out_channels() const { return weight.dim(0); }
  int64_t kernel_h() const { return weight.dim(2); }
  int64_t kernel_w() const { return weight.dim(3); }
  // Input channels of the data, without Glow's extra edge channel.
  int64_t in_channels() const {
    return weight.dim(1) - (padding == PaddingMode::EdgeChannel ? 1 : 0);
  }
};
struct NetActNormOp {
  Tensor bias, scale;  // [C]: y = scale * (x + bias)
};
struct ReluOp {};
struct OutputScaleOp {
  Tensor log_scale;  // [C]: y = x * exp(factor * log_scale)
  float factor = 3.f;
};
// y = x + (the input of op `from` of the same net); connections do not overlap (schema).
struct ResidualAddOp {
  int32_t from = 0;
};
using NetOp = std::variant<Conv2dOp, NetActNormOp, ReluOp, OutputScaleOp, ResidualAddOp>;

struct Net {
  std::vector<NetOp> ops;
  int64_t in_channels = 0, out_channels = 0;
  // Largest channel count of any intermediate activation (for scratch sizing).
  int64_t max_channels = 0;
  bool empty() const { return ops.empty(); }
  // Whether op k's input is the source of a residual connection (it must be kept until the add).
  bool is_residual_source(size_t k) const;
  bool has_residual() const;
};

// ---- Layers -----------------------------------------------------------------------------------
struct SqueezeLayer {
  SqueezeOrder order = SqueezeOrder::ChannelMajor;
};
struct ActNormLayer {
  Tensor bias, scale;  // [C]
};
struct InvConvLayer {
  InvConvForm form = InvConvForm::LU;
  Tensor weight;              // Dense: [C, C]
  std::vector<int32_t> perm;  // LU: (P v)[i] = v[perm[i]]
  Tensor lower, upper, sign, log_s;
  // Prepared at load time in double precision: W (row-major [out][in]), W^-1, log|det W|.
  std::vector<double> w, w_inv;
  double log_abs_det = 0;
};
struct PermuteLayer {
  PermuteKind kind = PermuteKind::Reverse;
  std::vector<int32_t> indices;  // Indices only
  // Prepared: y[c] = x[source[c]] for both kinds.
  std::vector<int32_t> source;
};
struct CouplingLayer {
  CouplingType type = CouplingType::Affine;
  Half conditioning = Half::First;
  Net net;
  ShiftScaleSplit split = ShiftScaleSplit::ScaleShiftHalves;
  ScaleFunction scale_fn = ScaleFunction::Sigmoid;
  float scale_bias = 2.f;
  AffineForm form = AffineForm::ShiftThenScale;
  bool mask_channel = false;  // checkerboard: the mask is the net's last input channel
  Tensor scale_weight;        // Tanh: [C_b]
  // Channels the coupling transforms (C_b) and the net's input channels.
  int64_t transformed_channels(int64_t c) const {
    return is_checkerboard(conditioning) ? c : c / 2;
  }
  int64_t net_input_channels(int64_t c) const {
    return is_checkerboard(conditioning) ? c + (mask_channel ? 1 : 0) : c / 2;
  }
};
struct SplitLayer {
  Half leaving = Half::Second;
  Net prior;  // empty: standard normal
  PriorLayout layout = PriorLayout::MeanLogstdHalves;
};
struct TopPriorLayer {
  TopPriorKind kind = TopPriorKind::StandardNormal;
  Tensor mean, log_std;  // Learned: [C, H, W]
  Tensor class_offsets;  // optional [n_classes, 2C]
  int64_t n_classes() const { return class_offsets.empty() ? 0 : class_offsets.dim(0); }
};

struct LogitLayer {
  float alpha = 0.05f;  // y = logit(alpha + (1 - 2 alpha)(x + 1/2))
};
struct FlattenLayer {};  // (C, H, W) -> (C*H*W, 1, 1), no data moves
// Batch normalisation as a flow layer (RealNVP), in the trainer only: it normalises with the
// batch's statistics while training and keeps their running averages; everywhere else (the
// runtime, every written file) it is the fixed per-channel affine of those averages, an actnorm:
// y = gamma (x - mean) / sqrt(var + eps) + beta.
struct BatchNormLayer {
  Tensor gamma, beta;                // [C] learned
  Tensor running_mean, running_var;  // [C]
  float eps = 1e-4f;
  float momentum = 0.05f;  // running = (1 - momentum) running + momentum batch
  // The actnorm it stands for: scale = gamma / sqrt(var + eps), bias = beta / scale - mean.
  ActNormLayer as_actnorm() const;
};

using LayerOp = std::variant<SqueezeLayer, ActNormLayer, InvConvLayer, PermuteLayer, CouplingLayer,
                             SplitLayer, TopPriorLayer, LogitLayer, FlattenLayer, BatchNormLayer>;

struct Layer {
  std::string name;
  LayerOp op;
  Shape3 in, out;  // the current tensor before and after this layer (encoder direction)
  // Split: the leaving latent's shape and its offset in an image's flattened z.
  Shape3 latent;
  int64_t latent_offset = 0;
};

struct Graph {
  ImageSpec image;
  std::vector<Layer> layers;
  std::vector<std::pair<std::string, std::string>> metadata;
  int format_major = 1, format_minor = 0;

  int64_t dims() const { return image.shape().numel(); }  // D = C*H*W = latent floats per image
  const TopPriorLayer &top_prior() const;
  const Layer &top_layer() const;
  int levels() const;  // number of splits + 1
  const std::string *find_metadata(const std::string &key) const;
  // The format minor version the graph needs: 1 when it uses a layer or option of format 1.1,
  // 2 when a net has a residual connection.
  int required_format_minor() const;
};

// Layer-kind name for messages and tools: "squeeze", "actnorm", "invconv1x1", ...
const char *layer_kind_name(const LayerOp &op);

}  // namespace flowrt
