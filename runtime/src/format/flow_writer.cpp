// Graph -> .flow bytes with the FlatBuffers C++ builder (which honours force_align: every
// tensor's bytes start on a 32-byte boundary).
#include <algorithm>
#include <cstring>

#include "core/atomic_file.hpp"
#include "flow_generated.h"
#include "format/flow_file.hpp"

namespace flowrt {
namespace {

using flatbuffers::FlatBufferBuilder;
using flatbuffers::Offset;

Offset<fb::Tensor> write_tensor(FlatBufferBuilder &b, const Tensor &t) {
  if (t.empty()) return 0;
  auto shape = b.CreateVector<int64_t>(t.shape());
  const size_t nbytes = t.size() * sizeof(float);
  b.ForceVectorAlignment(nbytes, 1, 32);
  uint8_t *dst = nullptr;
  auto data = b.CreateUninitializedVector<uint8_t>(nbytes, &dst);
  std::memcpy(dst, t.data(), nbytes);
  return fb::CreateTensor(b, shape, fb::DType::F32, data);
}

Offset<flatbuffers::Vector<Offset<fb::NetLayer>>> write_net(FlatBufferBuilder &b, const Net &net) {
  std::vector<Offset<fb::NetLayer>> ops;
  for (const NetOp &op : net.ops) {
    if (auto *c = std::get_if<Conv2dOp>(&op)) {
      auto w = write_tensor(b, c->weight);
      auto bias = write_tensor(b, c->bias);
      auto o = fb::CreateConv2d(b, w, bias, static_cast<fb::PaddingMode>(c->padding), c->pad_value);
      ops.push_back(fb::CreateNetLayer(b, fb::NetOp::Conv2d, o.Union()));
    } else if (auto *a = std::get_if<NetActNormOp>(&op)) {
      auto bias = write_tensor(b, a->bias);
      auto scale = write_tensor(b, a->scale);
      ops.push_back(
          fb::CreateNetLayer(b, fb::NetOp::ActNorm, fb::CreateActNorm(b, bias, scale).Union()));
    } else if (std::holds_alternative<ReluOp>(op)) {
      ops.push_back(fb::CreateNetLayer(b, fb::NetOp::ReLU, fb::CreateReLU(b).Union()));
    } else if (auto *s = std::get_if<OutputScaleOp>(&op)) {
      auto ls = write_tensor(b, s->log_scale);
      ops.push_back(fb::CreateNetLayer(b, fb::NetOp::OutputScale,
                                       fb::CreateOutputScale(b, ls, s->factor).Union()));
    } else if (auto *r = std::get_if<ResidualAddOp>(&op)) {
      ops.push_back(
          fb::CreateNetLayer(b, fb::NetOp::ResidualAdd, fb::CreateResidualAdd(b, r->from).Union()));
    }
  }
  return b.CreateVector(ops);
}

Offset<fb::Layer> write_layer(FlatBufferBuilder &b, const Layer &layer) {
  auto name = b.CreateString(layer.name);
  const LayerOp &op = layer.op;
  if (auto *s = std::get_if<SqueezeLayer>(&op)) {
    auto o = fb::CreateSqueeze(b, static_cast<fb::SqueezeOrder>(s->order));
    return fb::CreateLayer(b, name, fb::LayerOp::Squeeze, o.Union());
  }
  if (auto *a = std::get_if<ActNormLayer>(&op)) {
    auto bias = write_tensor(b, a->bias);
    auto scale = write_tensor(b, a->scale);
    return fb::CreateLayer(b, name, fb::LayerOp::ActNorm,
                           fb::CreateActNorm(b, bias, scale).Union());
  }
  if (auto *c = std::get_if<InvConvLayer>(&op)) {
    Offset<fb::InvConv1x1> o;
    if (c->form == InvConvForm::Dense) {
      auto w = write_tensor(b, c->weight);
      o = fb::CreateInvConv1x1(b, fb::InvConvForm::DENSE, w);
    } else {
      auto perm = b.CreateVector(c->perm);
      auto lower = write_tensor(b, c->lower);
      auto upper = write_tensor(b, c->upper);
      auto sign = write_tensor(b, c->sign);
      auto log_s = write_tensor(b, c->log_s);
      o = fb::CreateInvConv1x1(b, fb::InvConvForm::LU, 0, perm, lower, upper, sign, log_s);
    }
    return fb::CreateLayer(b, name, fb::LayerOp::InvConv1x1, o.Union());
  }
  if (auto *p = std::get_if<PermuteLayer>(&op)) {
    auto idx = p->kind == PermuteKind::Indices ? b.CreateVector(p->indices) : 0;
    auto o = fb::CreatePermute(b, static_cast<fb::PermuteKind>(p->kind), idx);
    return fb::CreateLayer(b, name, fb::LayerOp::Permute, o.Union());
  }
  if (auto *c = std::get_if<CouplingLayer>(&op)) {
    auto net = write_net(b, c->net);
    const bool affine = c->type == CouplingType::Affine;
    auto scale_weight =
        affine && c->scale_fn == ScaleFunction::Tanh ? write_tensor(b, c->scale_weight) : 0;
    auto o = fb::CreateCoupling(
        b, static_cast<fb::CouplingType>(c->type), static_cast<fb::Half>(c->conditioning), net,
        affine ? static_cast<fb::ShiftScaleSplit>(c->split) : fb::ShiftScaleSplit::UNSPECIFIED,
        affine ? static_cast<fb::ScaleFunction>(c->scale_fn) : fb::ScaleFunction::UNSPECIFIED,
        c->scale_bias, affine ? static_cast<fb::AffineForm>(c->form) : fb::AffineForm::UNSPECIFIED,
        c->mask_channel, scale_weight);
    return fb::CreateLayer(b, name, fb::LayerOp::Coupling, o.Union());
  }
  if (auto *lg = std::get_if<LogitLayer>(&op))
    return fb::CreateLayer(b, name, fb::LayerOp::Logit, fb::CreateLogit(b, lg->alpha).Union());
  if (std::holds_alternative<FlattenLayer>(op))
    return fb::CreateLayer(b, name, fb::LayerOp::Flatten, fb::CreateFlatten(b).Union());
  if (auto *bn = std::get_if<BatchNormLayer>(&op)) {
    // Files hold a batch norm as the fixed affine of its running statistics.
    const ActNormLayer a = bn->as_actnorm();
    auto bias = write_tensor(b, a.bias);
    auto scale = write_tensor(b, a.scale);
    return fb::CreateLayer(b, name, fb::LayerOp::ActNorm,
                           fb::CreateActNorm(b, bias, scale).Union());
  }
  if (auto *s = std::get_if<SplitLayer>(&op)) {
    auto prior = write_net(b, s->prior);
    auto o = fb::CreateSplit(
        b, static_cast<fb::Half>(s->leaving), prior,
        s->prior.empty() ? fb::PriorLayout::UNSPECIFIED : static_cast<fb::PriorLayout>(s->layout));
    return fb::CreateLayer(b, name, fb::LayerOp::Split, o.Union());
  }
  const auto &t = std::get<TopPriorLayer>(op);
  auto mean = write_tensor(b, t.mean);
  auto log_std = write_tensor(b, t.log_std);
  auto offsets = write_tensor(b, t.class_offsets);
  auto o = fb::CreateTopPrior(b, static_cast<fb::TopPriorKind>(t.kind), mean, log_std, offsets);
  return fb::CreateLayer(b, name, fb::LayerOp::TopPrior, o.Union());
}

}  // namespace

std::vector<uint8_t> write_flow(const Graph &g) {
  FlatBufferBuilder b(1 << 20);
  std::vector<Offset<fb::Layer>> layers;
  layers.reserve(g.layers.size());
  for (const Layer &l : g.layers) layers.push_back(write_layer(b, l));
  auto layers_vec = b.CreateVector(layers);
  std::vector<Offset<fb::KeyValue>> md;
  for (const auto &kv : g.metadata) {
    // One statement each: the order a call's arguments are evaluated in is the compiler's (GCC
    // built the value first on x86-64, the key first on aarch64) and it decides the bytes.
    // Value first, as in the files GCC on x86-64 has written.
    auto value = b.CreateString(kv.second);
    auto key = b.CreateString(kv.first);
    md.push_back(fb::CreateKeyValue(b, key, value));
  }
  auto md_vec = b.CreateVector(md);
  auto image = fb::CreateImageSpec(
      b, static_cast<uint32_t>(g.image.channels), static_cast<uint32_t>(g.image.height),
      static_cast<uint32_t>(g.image.width), static_cast<uint8_t>(g.image.n_bits));
  const int minor = std::max(g.format_minor, g.required_format_minor());
  auto model = fb::CreateModel(b, static_cast<uint16_t>(g.format_major),
                               static_cast<uint16_t>(minor), image, layers_vec, md_vec);
  fb::FinishModelBuffer(b, model);
  return std::vector<uint8_t>(b.GetBufferPointer(), b.GetBufferPointer() + b.GetSize());
}

void save_flow(const Graph &graph, const std::string &path) {
  std::vector<uint8_t> bytes = write_flow(graph);
  atomic_write_file(path, bytes.data(), bytes.size());
}

}  // namespace flowrt
