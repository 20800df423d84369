// .flow bytes -> Graph. Structure first (size, identifier, FlatBuffers verifier), then every
// table is converted with its enums and tensors checked, then finalize_graph() checks meaning.
#include <cstring>

#include "core/checked_math.hpp"
#include "core/error.hpp"
#include "flow_generated.h"
#include "format/flow_file.hpp"
#include "model/finalize.hpp"
#include "model/limits.hpp"

namespace flowrt {
namespace {

// A .flow file is little-endian (FlatBuffers): tensors are viewed in place as floats and shapes
// copied as int64 (here and in flow_writer.cpp), which is right on x86-64 and aarch64 alike; a
// big-endian target would need byte swaps in both.
static_assert(FLATBUFFERS_LITTLEENDIAN,
              "the .flow reader and writer assume a little-endian target");

constexpr int kFormatMajor = 1;

struct Reader {
  std::shared_ptr<ModelBytes> bytes;
  std::string where;  // context for messages

  [[noreturn]] void error(const std::string &what) const { format_error(where + ": " + what); }

  Tensor tensor(const fb::Tensor *t, const char *name, bool required = true) const {
    if (!t) {
      if (required) error(std::string("tensor '") + name + "' is missing");
      return {};
    }
    const std::string tw = std::string("tensor '") + name + "'";
    switch (t->dtype()) {
      case fb::DType::F32:
        break;
      case fb::DType::F16:
      case fb::DType::BF16:
        throw Error(FLOWRT_UNSUPPORTED, where + ": " + tw +
                                            " is f16/bf16, which this version "
                                            "does not read");
      default:
        error(tw + " has an unknown dtype " + std::to_string(int(t->dtype())));
    }
    const auto *shape = t->shape();
    if (shape->size() < 1 || shape->size() > limits::kMaxTensorRank)
      error(tw + " has rank " + std::to_string(shape->size()) + " (expected 1.." +
            std::to_string(limits::kMaxTensorRank) + ")");
    // memcpy: the verifier only guarantees 4-byte alignment of a vector, and a corrupt file can
    // leave this [long] vector misaligned for int64 loads.
    std::vector<int64_t> dims(shape->size());
    if (!dims.empty()) std::memcpy(dims.data(), shape->Data(), dims.size() * sizeof(int64_t));
    uint64_t numel = 1;
    for (int64_t d : dims) {
      if (d < 1 || d > limits::kMaxTensorDim)
        error(tw + " has dimension " + std::to_string(d) + " in shape " + shape_string(dims) +
              " (expected 1.." + std::to_string(limits::kMaxTensorDim) + ")");
      numel = checked_mul(numel, static_cast<uint64_t>(d), tw);
      if (numel > static_cast<uint64_t>(limits::kMaxTensorElements))
        error(tw + " has too many elements: " + shape_string(dims));
    }
    const auto *data = t->data();
    if (data->size() != numel * sizeof(float))
      error(tw + " holds " + std::to_string(data->size()) + " bytes, its shape " +
            shape_string(dims) + " needs " + std::to_string(numel * sizeof(float)));
    const uint8_t *p = data->data();
    if (reinterpret_cast<uintptr_t>(p) % alignof(float) == 0)
      return Tensor::view(std::move(dims), reinterpret_cast<const float *>(p), numel, bytes);
    std::vector<float> copy(numel);
    std::memcpy(copy.data(), p, numel * sizeof(float));
    return Tensor::from_vector(std::move(dims), std::move(copy));
  }
};

Net read_net(const Reader &r, const flatbuffers::Vector<flatbuffers::Offset<fb::NetLayer>> *ops) {
  Net net;
  if (!ops) return net;
  if (ops->size() > limits::kMaxNetOps)
    r.error("net has " + std::to_string(ops->size()) + " ops (limit " +
            std::to_string(limits::kMaxNetOps) + ")");
  for (uint32_t i = 0; i < ops->size(); ++i) {
    Reader sub{r.bytes, r.where + ", net op " + std::to_string(i)};
    const fb::NetLayer *nl = ops->Get(i);
    switch (nl->op_type()) {
      case fb::NetOp::Conv2d: {
        const fb::Conv2d *c = nl->op_as_Conv2d();
        Conv2dOp op;
        op.weight = sub.tensor(c->weight(), "weight");
        op.bias = sub.tensor(c->bias(), "bias", false);
        switch (c->padding()) {
          case fb::PaddingMode::ZEROS:
            op.padding = PaddingMode::Zeros;
            break;
          case fb::PaddingMode::CONSTANT:
            op.padding = PaddingMode::Constant;
            break;
          case fb::PaddingMode::EDGE_CHANNEL:
            op.padding = PaddingMode::EdgeChannel;
            break;
          default:
            sub.error("conv padding is UNSPECIFIED or unknown");
        }
        op.pad_value = c->pad_value();
        net.ops.emplace_back(std::move(op));
        break;
      }
      case fb::NetOp::ActNorm: {
        const fb::ActNorm *a = nl->op_as_ActNorm();
        net.ops.emplace_back(
            NetActNormOp{sub.tensor(a->bias(), "bias"), sub.tensor(a->scale(), "scale")});
        break;
      }
      case fb::NetOp::ReLU:
        net.ops.emplace_back(ReluOp{});
        break;
      case fb::NetOp::OutputScale: {
        const fb::OutputScale *o = nl->op_as_OutputScale();
        net.ops.emplace_back(OutputScaleOp{sub.tensor(o->log_scale(), "log_scale"), o->factor()});
        break;
      }
      case fb::NetOp::ResidualAdd:
        net.ops.emplace_back(ResidualAddOp{nl->op_as_ResidualAdd()->from()});
        break;
      default:
        sub.error("unknown net op type " + std::to_string(int(nl->op_type())));
    }
  }
  return net;
}

Half read_half(const Reader &r, fb::Half h, const char *field) {
  switch (h) {
    case fb::Half::FIRST:
      return Half::First;
    case fb::Half::SECOND:
      return Half::Second;
    case fb::Half::CHECKERBOARD_EVEN:
      return Half::CheckerboardEven;
    case fb::Half::CHECKERBOARD_ODD:
      return Half::CheckerboardOdd;
    default:
      r.error(std::string(field) + " is UNSPECIFIED or unknown");
  }
}

std::vector<int32_t> read_indices(const flatbuffers::Vector<int32_t> *v) {
  return v ? std::vector<int32_t>(v->begin(), v->end()) : std::vector<int32_t>{};
}

LayerOp read_layer(const Reader &r, const fb::Layer *l) {
  switch (l->op_type()) {
    case fb::LayerOp::Squeeze: {
      switch (l->op_as_Squeeze()->order()) {
        case fb::SqueezeOrder::CHANNEL_MAJOR:
          return SqueezeLayer{SqueezeOrder::ChannelMajor};
        case fb::SqueezeOrder::SUBPIXEL_MAJOR:
          return SqueezeLayer{SqueezeOrder::SubpixelMajor};
        default:
          r.error("squeeze order is UNSPECIFIED or unknown");
      }
    }
    case fb::LayerOp::ActNorm: {
      const fb::ActNorm *a = l->op_as_ActNorm();
      return ActNormLayer{r.tensor(a->bias(), "bias"), r.tensor(a->scale(), "scale")};
    }
    case fb::LayerOp::InvConv1x1: {
      const fb::InvConv1x1 *c = l->op_as_InvConv1x1();
      InvConvLayer op;
      switch (c->form()) {
        case fb::InvConvForm::LU:
          op.form = InvConvForm::LU;
          if (!c->perm()) r.error("LU form needs 'perm'");
          op.perm = read_indices(c->perm());
          op.lower = r.tensor(c->lower(), "lower");
          op.upper = r.tensor(c->upper(), "upper");
          op.sign = r.tensor(c->sign(), "sign");
          op.log_s = r.tensor(c->log_s(), "log_s");
          break;
        case fb::InvConvForm::DENSE:
          op.form = InvConvForm::Dense;
          op.weight = r.tensor(c->weight(), "weight");
          break;
        default:
          r.error("1x1 conv form is UNSPECIFIED or unknown");
      }
      return op;
    }
    case fb::LayerOp::Permute: {
      const fb::Permute *p = l->op_as_Permute();
      PermuteLayer op;
      switch (p->kind()) {
        case fb::PermuteKind::REVERSE:
          op.kind = PermuteKind::Reverse;
          break;
        case fb::PermuteKind::INDICES:
          op.kind = PermuteKind::Indices;
          if (!p->indices()) r.error("INDICES permutation needs 'indices'");
          op.indices = read_indices(p->indices());
          break;
        default:
          r.error("permute kind is UNSPECIFIED or unknown");
      }
      return op;
    }
    case fb::LayerOp::Coupling: {
      const fb::Coupling *c = l->op_as_Coupling();
      CouplingLayer op;
      switch (c->type()) {
        case fb::CouplingType::ADDITIVE:
          op.type = CouplingType::Additive;
          break;
        case fb::CouplingType::AFFINE:
          op.type = CouplingType::Affine;
          break;
        default:
          r.error("coupling type is UNSPECIFIED or unknown");
      }
      op.conditioning = read_half(r, c->conditioning(), "coupling conditioning");
      op.net = read_net(r, c->net());
      if (op.type == CouplingType::Affine) {
        switch (c->split()) {
          case fb::ShiftScaleSplit::SHIFT_SCALE_HALVES:
            op.split = ShiftScaleSplit::ShiftScaleHalves;
            break;
          case fb::ShiftScaleSplit::SCALE_SHIFT_HALVES:
            op.split = ShiftScaleSplit::ScaleShiftHalves;
            break;
          case fb::ShiftScaleSplit::SHIFT_SCALE_INTERLEAVED:
            op.split = ShiftScaleSplit::ShiftScaleInterleaved;
            break;
          case fb::ShiftScaleSplit::SCALE_SHIFT_INTERLEAVED:
            op.split = ShiftScaleSplit::ScaleShiftInterleaved;
            break;
          default:
            r.error("affine coupling split is UNSPECIFIED or unknown");
        }
        switch (c->scale_fn()) {
          case fb::ScaleFunction::SIGMOID:
            op.scale_fn = ScaleFunction::Sigmoid;
            break;
          case fb::ScaleFunction::EXP:
            op.scale_fn = ScaleFunction::Exp;
            break;
          case fb::ScaleFunction::TANH:
            op.scale_fn = ScaleFunction::Tanh;
            op.scale_weight = r.tensor(c->scale_weight(), "scale_weight");
            break;
          default:
            r.error("affine coupling scale_fn is UNSPECIFIED or unknown");
        }
        switch (c->form()) {
          case fb::AffineForm::SHIFT_THEN_SCALE:
            op.form = AffineForm::ShiftThenScale;
            break;
          case fb::AffineForm::SCALE_THEN_SHIFT:
            op.form = AffineForm::ScaleThenShift;
            break;
          default:
            r.error("affine coupling form is UNSPECIFIED or unknown");
        }
        op.scale_bias = c->scale_bias();
      }
      op.mask_channel = c->mask_channel();
      return op;
    }
    case fb::LayerOp::Split: {
      const fb::Split *s = l->op_as_Split();
      SplitLayer op;
      op.leaving = read_half(r, s->leaving(), "split leaving");
      op.prior = read_net(r, s->prior());
      if (!op.prior.empty()) {
        switch (s->prior_layout()) {
          case fb::PriorLayout::MEAN_LOGSTD_HALVES:
            op.layout = PriorLayout::MeanLogstdHalves;
            break;
          case fb::PriorLayout::MEAN_LOGSTD_INTERLEAVED:
            op.layout = PriorLayout::MeanLogstdInterleaved;
            break;
          default:
            r.error("split prior_layout is UNSPECIFIED or unknown");
        }
      }
      return op;
    }
    case fb::LayerOp::TopPrior: {
      const fb::TopPrior *t = l->op_as_TopPrior();
      TopPriorLayer op;
      switch (t->kind()) {
        case fb::TopPriorKind::STANDARD_NORMAL:
          op.kind = TopPriorKind::StandardNormal;
          break;
        case fb::TopPriorKind::LEARNED:
          op.kind = TopPriorKind::Learned;
          op.mean = r.tensor(t->mean(), "mean");
          op.log_std = r.tensor(t->log_std(), "log_std");
          break;
        default:
          r.error("top prior kind is UNSPECIFIED or unknown");
      }
      op.class_offsets = r.tensor(t->class_offsets(), "class_offsets", false);
      return op;
    }
    case fb::LayerOp::Logit:
      return LogitLayer{l->op_as_Logit()->alpha()};
    case fb::LayerOp::Flatten:
      return FlattenLayer{};
    default:
      r.error("unknown layer type " + std::to_string(int(l->op_type())));
  }
}

}  // namespace

Graph read_flow(std::shared_ptr<ModelBytes> bytes) {
  const uint8_t *buf = bytes->data();
  const size_t size = bytes->size();
  if (size < 8) format_error("buffer is too small to be a .flow model");
  if (size > limits::kMaxFileBytes) format_error("buffer is larger than 2 GiB");
  if (!fb::ModelBufferHasIdentifier(buf)) {
    char id[5] = {0};
    for (int i = 0; i < 4; ++i) {
      char ch = static_cast<char>(buf[4 + i]);
      id[i] = (ch >= 32 && ch < 127) ? ch : '?';
    }
    format_error(std::string("not a .flow model: file identifier is '") + id +
                 "', expected 'FLOW'");
  }
  flatbuffers::Verifier::Options opts;
  opts.max_depth = 16;
  opts.max_tables = 4000000;
  flatbuffers::Verifier verifier(buf, size, opts);
  if (!fb::VerifyModelBuffer(verifier))
    format_error("the .flow buffer is corrupt (FlatBuffers structure check failed)");

  const fb::Model *m = fb::GetModel(buf);
  Graph g;
  g.format_major = m->format_major();
  g.format_minor = m->format_minor();
  if (g.format_major != kFormatMajor)
    throw Error(FLOWRT_UNSUPPORTED, "format version " + std::to_string(g.format_major) + "." +
                                        std::to_string(g.format_minor) +
                                        " is not supported (this library reads major " +
                                        std::to_string(kFormatMajor) + ")");
  const fb::ImageSpec *im = m->image();
  g.image.channels = im->channels();
  g.image.height = im->height();
  g.image.width = im->width();
  g.image.n_bits = im->n_bits();
  const auto *layers = m->layers();
  if (layers->size() > limits::kMaxLayers)
    format_error("the model has " + std::to_string(layers->size()) + " layers (limit " +
                 std::to_string(limits::kMaxLayers) + ")");
  g.layers.reserve(layers->size());
  for (uint32_t i = 0; i < layers->size(); ++i) {
    const fb::Layer *l = layers->Get(i);
    Layer layer;
    if (l->name()) layer.name = l->name()->str();
    Reader r{bytes, "layer " + std::to_string(i) + " '" + layer.name + "'"};
    layer.op = read_layer(r, l);
    g.layers.push_back(std::move(layer));
  }
  if (const auto *md = m->metadata()) {
    if (md->size() > limits::kMaxMetadataEntries) format_error("too many metadata entries");
    for (const fb::KeyValue *kv : *md)
      g.metadata.emplace_back(kv->key()->str(), kv->value() ? kv->value()->str() : "");
  }
  finalize_graph(g);
  return g;
}

}  // namespace flowrt
