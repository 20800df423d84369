#include "model/finalize.hpp"

#include <cmath>
#include <string>
#include <vector>

#include "core/error.hpp"
#include "core/linalg.hpp"
#include "model/limits.hpp"

namespace flowrt {
namespace {

struct Context {
  std::string where;  // "layer 12 'level1/step3/coupling' (coupling)"
  [[noreturn]] void error(const std::string &what) const { format_error(where + ": " + what); }
};

void check_tensor(const Context &ctx, const char *name, const Tensor &t,
                  const std::vector<int64_t> &shape) {
  if (t.empty()) ctx.error(std::string("tensor '") + name + "' is missing");
  if (t.shape() != shape)
    ctx.error(std::string("tensor '") + name + "' has shape " + shape_string(t.shape()) +
              ", expected " + shape_string(shape));
  for (size_t i = 0; i < t.size(); ++i)
    if (!std::isfinite(t[i]))
      ctx.error(std::string("tensor '") + name + "' has a non-finite value at index " +
                std::to_string(i));
}

void check_bounded(const Context &ctx, const char *name, const Tensor &t, double factor = 1.0) {
  for (size_t i = 0; i < t.size(); ++i)
    if (std::fabs(factor * t[i]) > limits::kMaxAbsLogScale)
      ctx.error(std::string("tensor '") + name + "' value " + std::to_string(t[i]) + " at index " +
                std::to_string(i) + " is out of range (|log scale| > " +
                std::to_string(limits::kMaxAbsLogScale) + ")");
}

void check_permutation(const Context &ctx, const char *name, const std::vector<int32_t> &p,
                       int64_t c) {
  if (static_cast<int64_t>(p.size()) != c)
    ctx.error(std::string(name) + " has " + std::to_string(p.size()) + " entries, expected " +
              std::to_string(c));
  std::vector<char> seen(static_cast<size_t>(c), 0);
  for (size_t i = 0; i < p.size(); ++i) {
    if (p[i] < 0 || p[i] >= c)
      ctx.error(std::string(name) + "[" + std::to_string(i) + "] = " + std::to_string(p[i]) +
                " is out of range [0, " + std::to_string(c) + ")");
    if (seen[p[i]]++) ctx.error(std::string(name) + " repeats index " + std::to_string(p[i]));
  }
}

void check_net(const Context &ctx, Net &net, int64_t in_channels, int64_t out_channels,
               const Shape3 &spatial) {
  if (static_cast<int64_t>(net.ops.size()) > limits::kMaxNetOps)
    ctx.error("net has " + std::to_string(net.ops.size()) + " ops (limit " +
              std::to_string(limits::kMaxNetOps) + ")");
  int64_t ch = in_channels;
  net.in_channels = in_channels;
  net.max_channels = in_channels;
  std::vector<int64_t> in_ch(net.ops.size());  // channels of each op's input
  int64_t last_add = -1;
  for (size_t i = 0; i < net.ops.size(); ++i) {
    Context op_ctx{ctx.where + ", net op " + std::to_string(i)};
    NetOp &op = net.ops[i];
    in_ch[i] = ch;
    if (auto *add = std::get_if<ResidualAddOp>(&op)) {
      const int64_t from = add->from;
      if (from < 0 || from >= static_cast<int64_t>(i))
        op_ctx.error("residual connection from op " + std::to_string(from) +
                     " must come from an earlier op of the net [0, " + std::to_string(i) + ")");
      if (from <= last_add)
        op_ctx.error("residual connection from op " + std::to_string(from) +
                     " overlaps the one that ends at op " + std::to_string(last_add));
      if (in_ch[from] != ch)
        op_ctx.error("residual connection adds " + std::to_string(in_ch[from]) +
                     " channels (the input of op " + std::to_string(from) + ") to " +
                     std::to_string(ch));
      last_add = static_cast<int64_t>(i);
    } else if (auto *conv = std::get_if<Conv2dOp>(&op)) {
      const Tensor &w = conv->weight;
      if (w.rank() != 4)
        op_ctx.error("conv weight must be [O, I, kh, kw], got " + shape_string(w.shape()));
      int64_t extra = conv->padding == PaddingMode::EdgeChannel ? 1 : 0;
      if (w.dim(1) != ch + extra)
        op_ctx.error("conv weight has " + std::to_string(w.dim(1)) +
                     " input channels, the net has " + std::to_string(ch) +
                     (extra ? " (+1 edge channel)" : ""));
      if (w.dim(2) % 2 == 0 || w.dim(3) % 2 == 0 || w.dim(2) > limits::kMaxKernel ||
          w.dim(3) > limits::kMaxKernel)
        op_ctx.error("conv kernel " + std::to_string(w.dim(2)) + "x" + std::to_string(w.dim(3)) +
                     " must be odd and at most " + std::to_string(limits::kMaxKernel));
      check_tensor(op_ctx, "weight", w, w.shape());
      if (!conv->bias.empty()) check_tensor(op_ctx, "bias", conv->bias, {w.dim(0)});
      if (!std::isfinite(conv->pad_value)) op_ctx.error("pad_value is not finite");
      ch = w.dim(0);
    } else if (auto *an = std::get_if<NetActNormOp>(&op)) {
      check_tensor(op_ctx, "bias", an->bias, {ch});
      check_tensor(op_ctx, "scale", an->scale, {ch});
    } else if (auto *os = std::get_if<OutputScaleOp>(&op)) {
      check_tensor(op_ctx, "log_scale", os->log_scale, {ch});
      if (!std::isfinite(os->factor)) op_ctx.error("factor is not finite");
      check_bounded(op_ctx, "log_scale", os->log_scale, os->factor);
    }
    if (ch > limits::kMaxChannels) op_ctx.error("too many channels: " + std::to_string(ch));
    if (ch * spatial.plane() > limits::kMaxActivationElements)
      op_ctx.error("activation of " + std::to_string(ch) + "x" + std::to_string(spatial.h) + "x" +
                   std::to_string(spatial.w) + " is too large");
    net.max_channels = std::max(net.max_channels, ch);
  }
  if (ch != out_channels)
    ctx.error("net outputs " + std::to_string(ch) + " channels, expected " +
              std::to_string(out_channels));
  net.out_channels = ch;
}

Shape3 finalize_layer(const Context &ctx, Layer &layer, const Shape3 &in) {
  Shape3 out = in;
  LayerOp &op = layer.op;
  if (std::holds_alternative<SqueezeLayer>(op)) {
    if (in.h % 2 || in.w % 2)
      ctx.error("squeeze needs an even height and width, got " + to_string(in));
    out = {in.c * 4, in.h / 2, in.w / 2};
    if (out.c > limits::kMaxChannels) ctx.error("too many channels after squeeze");
  } else if (auto *an = std::get_if<ActNormLayer>(&op)) {
    check_tensor(ctx, "bias", an->bias, {in.c});
    check_tensor(ctx, "scale", an->scale, {in.c});
    for (size_t i = 0; i < an->scale.size(); ++i)
      if (an->scale[i] == 0.f ||
          std::fabs(std::log(std::fabs(an->scale[i]))) > limits::kMaxAbsLogScale)
        ctx.error("scale[" + std::to_string(i) + "] = " + std::to_string(an->scale[i]) +
                  " is zero or out of range");
  } else if (auto *ic = std::get_if<InvConvLayer>(&op)) {
    const int64_t c = in.c;
    if (c > 4096) ctx.error("1x1 conv over " + std::to_string(c) + " channels (limit 4096)");
    if (ic->form == InvConvForm::Dense) {
      check_tensor(ctx, "weight", ic->weight, {c, c});
      ic->w = ic->weight.to_double();
    } else {
      check_permutation(ctx, "perm", ic->perm, c);
      check_tensor(ctx, "lower", ic->lower, {c, c});
      check_tensor(ctx, "upper", ic->upper, {c, c});
      check_tensor(ctx, "sign", ic->sign, {c});
      check_tensor(ctx, "log_s", ic->log_s, {c});
      check_bounded(ctx, "log_s", ic->log_s);
      for (size_t i = 0; i < ic->sign.size(); ++i)
        if (ic->sign[i] != 1.f && ic->sign[i] != -1.f)
          ctx.error("sign[" + std::to_string(i) + "] = " + std::to_string(ic->sign[i]) +
                    ", expected +1 or -1");
      ic->w = lu_weight(*ic, c);
    }
    ic->w_inv = inverse(ic->w, c);
    if (ic->w_inv.empty()) ctx.error("W is singular");
    double cond = condition_number(ic->w, ic->w_inv, c);
    if (!(cond <= limits::kMaxConditionNumber))
      ctx.error("W is ill-conditioned (condition number " + std::to_string(cond) + " > " +
                std::to_string(limits::kMaxConditionNumber) + ")");
    ic->log_abs_det = log_abs_det(ic->w, c);
  } else if (auto *pm = std::get_if<PermuteLayer>(&op)) {
    pm->source.resize(static_cast<size_t>(in.c));
    if (pm->kind == PermuteKind::Reverse) {
      for (int64_t i = 0; i < in.c; ++i) pm->source[i] = static_cast<int32_t>(in.c - 1 - i);
    } else {
      check_permutation(ctx, "indices", pm->indices, in.c);
      pm->source = pm->indices;
    }
  } else if (auto *cp = std::get_if<CouplingLayer>(&op)) {
    const bool checker = is_checkerboard(cp->conditioning);
    if (checker && in.plane() < 2)
      ctx.error("a checkerboard coupling needs at least 2 positions, got " + to_string(in));
    if (!checker && in.c % 2)
      ctx.error("coupling needs an even channel count, got " + to_string(in));
    if (cp->mask_channel && !checker) ctx.error("mask_channel is set on a channel coupling");
    if (cp->net.empty()) ctx.error("coupling net is empty");
    const int64_t cb = cp->transformed_channels(in.c);
    check_net(ctx, cp->net, cp->net_input_channels(in.c),
              cp->type == CouplingType::Affine ? 2 * cb : cb, in);
    if (!std::isfinite(cp->scale_bias)) ctx.error("scale_bias is not finite");
    if (cp->type == CouplingType::Affine && cp->scale_fn == ScaleFunction::Tanh) {
      check_tensor(ctx, "scale_weight", cp->scale_weight, {cb});
      check_bounded(ctx, "scale_weight", cp->scale_weight);
    } else if (!cp->scale_weight.empty()) {
      ctx.error("scale_weight is set, but the scale function is not TANH");
    }
  } else if (auto *lg = std::get_if<LogitLayer>(&op)) {
    if (!(lg->alpha > 0.f && lg->alpha < 0.5f))
      ctx.error("alpha = " + std::to_string(lg->alpha) + " is out of range (0, 0.5)");
  } else if (std::holds_alternative<FlattenLayer>(op)) {
    out = {in.numel(), 1, 1};
    if (out.c > limits::kMaxChannels) ctx.error("too many channels after flatten");
  } else if (auto *bn = std::get_if<BatchNormLayer>(&op)) {
    for (auto [name, t] : {std::pair<const char *, const Tensor *>{"gamma", &bn->gamma},
                           {"beta", &bn->beta},
                           {"running_mean", &bn->running_mean},
                           {"running_var", &bn->running_var}})
      check_tensor(ctx, name, *t, {in.c});
    for (size_t i = 0; i < bn->running_var.size(); ++i)
      if (!(bn->running_var[i] >= 0.f) || bn->gamma[i] == 0.f)
        ctx.error("channel " + std::to_string(i) + ": running_var < 0 or gamma = 0");
    if (!(bn->eps > 0.f)) ctx.error("eps must be positive");
  } else if (auto *sp = std::get_if<SplitLayer>(&op)) {
    if (is_checkerboard(sp->leaving))
      ctx.error("a split leaves a channel half, not a checkerboard");
    if (in.c % 2) ctx.error("split needs an even channel count, got " + to_string(in));
    out = {in.c / 2, in.h, in.w};
    layer.latent = out;
    if (!sp->prior.empty()) check_net(ctx, sp->prior, out.c, 2 * out.c, in);
  } else if (auto *tp = std::get_if<TopPriorLayer>(&op)) {
    layer.latent = in;
    if (tp->kind == TopPriorKind::Learned) {
      check_tensor(ctx, "mean", tp->mean, {in.c, in.h, in.w});
      check_tensor(ctx, "log_std", tp->log_std, {in.c, in.h, in.w});
      check_bounded(ctx, "log_std", tp->log_std);
    }
    if (!tp->class_offsets.empty()) {
      const Tensor &co = tp->class_offsets;
      if (co.rank() != 2 || co.dim(1) != 2 * in.c)
        ctx.error("class_offsets must be [n_classes, " + std::to_string(2 * in.c) + "], got " +
                  shape_string(co.shape()));
      if (co.dim(0) > limits::kMaxClasses) ctx.error("too many classes");
      check_tensor(ctx, "class_offsets", co, co.shape());
      check_bounded(ctx, "class_offsets", co);
    }
  }
  return out;
}

}  // namespace

std::vector<double> lu_weight(const InvConvLayer &ic, int64_t c) {
  // L (unit lower) * (U + diag(sign * exp(log_s))), then rows permuted by P.
  std::vector<double> l(static_cast<size_t>(c * c), 0.0), u(static_cast<size_t>(c * c), 0.0);
  for (int64_t i = 0; i < c; ++i)
    for (int64_t j = 0; j < c; ++j) {
      if (j < i) l[i * c + j] = ic.lower[i * c + j];
      if (j == i) {
        l[i * c + j] = 1.0;
        u[i * c + j] = static_cast<double>(ic.sign[i]) * std::exp(static_cast<double>(ic.log_s[i]));
      }
      if (j > i) u[i * c + j] = ic.upper[i * c + j];
    }
  std::vector<double> lu = matmul(l, u, c);
  std::vector<double> w(static_cast<size_t>(c * c));
  for (int64_t i = 0; i < c; ++i)
    for (int64_t j = 0; j < c; ++j) w[i * c + j] = lu[ic.perm[i] * c + j];
  return w;
}

void finalize_graph(Graph &g) {
  const ImageSpec &im = g.image;
  if (im.channels < 1 || im.channels > limits::kMaxImageChannels)
    format_error("image: channels = " + std::to_string(im.channels) + " is out of range [1, " +
                 std::to_string(limits::kMaxImageChannels) + "]");
  if (im.height < 1 || im.height > limits::kMaxImageSide || im.width < 1 ||
      im.width > limits::kMaxImageSide)
    format_error("image: " + std::to_string(im.height) + "x" + std::to_string(im.width) +
                 " is out of range [1, " + std::to_string(limits::kMaxImageSide) + "]");
  if (im.shape().numel() > limits::kMaxImageDims) format_error("image: too many pixels");
  if (im.n_bits < 1 || im.n_bits > 8)
    format_error("image: n_bits = " + std::to_string(im.n_bits) + " is out of range [1, 8]");
  if (g.layers.empty()) format_error("the model has no layers");
  if (static_cast<int64_t>(g.layers.size()) > limits::kMaxLayers)
    format_error("the model has " + std::to_string(g.layers.size()) + " layers (limit " +
                 std::to_string(limits::kMaxLayers) + ")");

  Shape3 cur = im.shape();
  int64_t latent_offset = 0;
  for (size_t i = 0; i < g.layers.size(); ++i) {
    Layer &layer = g.layers[i];
    Context ctx{"layer " + std::to_string(i) + " '" + layer.name + "' (" +
                layer_kind_name(layer.op) + ")"};
    bool is_top = std::holds_alternative<TopPriorLayer>(layer.op);
    if (is_top != (i + 1 == g.layers.size()))
      ctx.error(is_top ? "the top prior must be the last layer"
                       : "the last layer must be the top prior");
    if (std::holds_alternative<LogitLayer>(layer.op) && i != 0)
      ctx.error("logit must be the first layer");
    layer.in = cur;
    cur = finalize_layer(ctx, layer, cur);
    layer.out = cur;
    if (std::holds_alternative<SplitLayer>(layer.op) || is_top) {
      layer.latent_offset = latent_offset;
      latent_offset += layer.latent.numel();
    }
  }
  if (latent_offset != g.dims())
    format_error("latents hold " + std::to_string(latent_offset) + " floats per image, the image " +
                 std::to_string(g.dims()));
}

}  // namespace flowrt
