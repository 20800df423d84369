// The .flow loader on hostile input: every truncation, random bit flips and byte rewrites of a
// small valid model give a clean status with a message (or a model that loads and runs), and
// hand-crafted models built with the FlatBuffers builder, each breaking exactly one rule of the
// format, are rejected with FLOWRT_FORMAT_ERROR / FLOWRT_UNSUPPORTED and a message that names the
// layer and the tensor or field. Also: every tensor of a written file is 32-byte aligned, and
// write_flow(read_flow(bytes)) reproduces the bytes.
#include <doctest/doctest.h>

#include <cmath>
#include <cstring>
#include <functional>
#include <limits>
#include <optional>
#include <string>
#include <utility>
#include <vector>

#include "flow_generated.h"
#include "flowrt.h"
#include "format/flow_file.hpp"
#include "fuzz/fuzz_entry.hpp"
#include "test_support.hpp"

namespace flowrt {
namespace {

using flatbuffers::FlatBufferBuilder;
using flatbuffers::Offset;

// The model every corruption starts from: 1x8x8, levels 2, depth 1, hidden 4 (a few KB).
std::vector<uint8_t> small_model_bytes() {
  GlowConfig cfg;
  cfg.channels = 1;
  cfg.height = cfg.width = 8;
  cfg.levels = 2;
  cfg.depth = 1;
  cfg.hidden = 4;
  cfg.random_nets = true;
  cfg.seed = 3;
  Graph g = build_glow(cfg);
  g.metadata = {{"dataset", "corruption"}};
  return write_flow(g);
}

// Loads through the C API; returns the status and leaves the message in flowrt_last_error().
flowrt_status load(const std::vector<uint8_t> &bytes) {
  flowrt_model *m = nullptr;
  const flowrt_status st = flowrt_model_from_memory(bytes.data(), bytes.size(), &m);
  flowrt_model_free(m);
  return st;
}

// ---- A hand-built model, one field at a time -----------------------------------------------

struct TensorSpec {
  std::vector<int64_t> shape;
  std::vector<uint8_t> bytes;
  fb::DType dtype = fb::DType::F32;
};

TensorSpec floats(std::vector<int64_t> shape, std::vector<float> values) {
  TensorSpec t;
  t.shape = std::move(shape);
  t.bytes.resize(values.size() * sizeof(float));
  std::memcpy(t.bytes.data(), values.data(), t.bytes.size());
  return t;
}
TensorSpec filled(std::vector<int64_t> shape, float value) {
  return floats(shape, std::vector<float>(test::numel(shape), value));
}
TensorSpec identity(int64_t c) {
  std::vector<float> v(static_cast<size_t>(c * c), 0.f);
  for (int64_t i = 0; i < c; ++i) v[i * c + i] = 1.f;
  return floats({c, c}, v);
}

Offset<fb::Tensor> put(FlatBufferBuilder &b, const TensorSpec &t) {
  auto shape = b.CreateVector(t.shape);
  b.ForceVectorAlignment(t.bytes.size(), 1, 32);
  auto data = b.CreateVector(t.bytes.data(), t.bytes.size());
  return fb::CreateTensor(b, shape, t.dtype, data);
}
Offset<fb::Tensor> put(FlatBufferBuilder &b, const std::optional<TensorSpec> &t) {
  return t ? put(b, *t) : Offset<fb::Tensor>(0);
}

using NetOpFn = std::function<Offset<fb::NetLayer>(FlatBufferBuilder &)>;

struct ConvSpec {
  TensorSpec weight, bias;
  fb::PaddingMode padding = fb::PaddingMode::ZEROS;
  float pad_value = 0.f;
};
NetOpFn conv(ConvSpec c) {
  return [c](FlatBufferBuilder &b) {
    auto w = put(b, c.weight);
    auto bias = put(b, c.bias);
    return fb::CreateNetLayer(b, fb::NetOp::Conv2d,
                              fb::CreateConv2d(b, w, bias, c.padding, c.pad_value).Union());
  };
}
ConvSpec conv3x3(int64_t out, int64_t in) {
  return {filled({out, in, 3, 3}, 0.01f), filled({out}, 0.f)};
}
NetOpFn relu() {
  return [](FlatBufferBuilder &b) {
    return fb::CreateNetLayer(b, fb::NetOp::ReLU, fb::CreateReLU(b).Union());
  };
}
NetOpFn output_scale(TensorSpec log_scale, float factor = 3.f) {
  return [log_scale, factor](FlatBufferBuilder &b) {
    auto t = put(b, log_scale);
    return fb::CreateNetLayer(b, fb::NetOp::OutputScale,
                              fb::CreateOutputScale(b, t, factor).Union());
  };
}
NetOpFn residual_add(int32_t from) {
  return [from](FlatBufferBuilder &b) {
    return fb::CreateNetLayer(b, fb::NetOp::ResidualAdd, fb::CreateResidualAdd(b, from).Union());
  };
}
NetOpFn unknown_net_op(uint8_t type) {
  return [type](FlatBufferBuilder &b) {
    return fb::CreateNetLayer(b, static_cast<fb::NetOp>(type), fb::CreateReLU(b).Union());
  };
}

Offset<flatbuffers::Vector<Offset<fb::NetLayer>>> put_net(FlatBufferBuilder &b,
                                                          const std::vector<NetOpFn> &ops) {
  std::vector<Offset<fb::NetLayer>> v;
  for (const NetOpFn &op : ops) v.push_back(op(b));
  return b.CreateVector(v);
}

// Image 1x4x4 -> squeeze (4x2x2) -> actnorm -> invconv (LU) -> affine coupling -> split
// (2x2x2 leaves) -> learned top prior (2x2x2). Each field can be broken on its own.
struct Spec {
  uint32_t channels = 1, height = 4, width = 4;
  uint8_t n_bits = 8;
  uint16_t format_major = 1;

  fb::SqueezeOrder squeeze_order = fb::SqueezeOrder::CHANNEL_MAJOR;

  TensorSpec an_bias = filled({4}, 0.1f), an_scale = filled({4}, 1.5f);

  bool use_permute = false;  // a Permute layer instead of the invconv
  fb::PermuteKind permute_kind = fb::PermuteKind::INDICES;
  std::optional<std::vector<int32_t>> permute_indices = std::vector<int32_t>{3, 1, 0, 2};
  fb::InvConvForm ic_form = fb::InvConvForm::LU;
  std::optional<std::vector<int32_t>> perm = std::vector<int32_t>{1, 0, 3, 2};
  std::optional<TensorSpec> lower = filled({4, 4}, 0.2f), upper = filled({4, 4}, -0.1f);
  std::optional<TensorSpec> sign = floats({4}, {1, -1, 1, 1}), log_s = filled({4}, 0.1f);
  std::optional<TensorSpec> weight;  // DENSE

  fb::CouplingType cp_type = fb::CouplingType::AFFINE;
  fb::Half cp_cond = fb::Half::FIRST;
  std::vector<NetOpFn> cp_net = {conv(conv3x3(4, 2)), relu(), output_scale(filled({4}, 0.f))};
  fb::ShiftScaleSplit cp_split = fb::ShiftScaleSplit::SCALE_SHIFT_HALVES;
  fb::ScaleFunction cp_fn = fb::ScaleFunction::SIGMOID;
  fb::AffineForm cp_form = fb::AffineForm::SHIFT_THEN_SCALE;
  float cp_scale_bias = 2.f;
  bool cp_mask_channel = false;
  std::optional<TensorSpec> cp_scale_weight;  // TANH: [C_b]

  fb::Half sp_leaving = fb::Half::SECOND;
  std::vector<NetOpFn> sp_prior = {conv(conv3x3(4, 2)), output_scale(filled({4}, 0.f))};
  fb::PriorLayout sp_layout = fb::PriorLayout::MEAN_LOGSTD_HALVES;

  fb::TopPriorKind top_kind = fb::TopPriorKind::LEARNED;
  std::optional<TensorSpec> top_mean = filled({2, 2, 2}, 0.f), top_log_std = filled({2, 2, 2}, 0.f);
  std::optional<TensorSpec> class_offsets;

  float logit_alpha = 0.05f;

  // Which layers, in which order: 0 squeeze, 1 actnorm, 2 invconv/permute, 3 coupling,
  // 4 split, 5 top prior, 6 a layer of an unknown union type, 7 logit, 8 flatten.
  std::vector<int> order = {0, 1, 2, 3, 4, 5};
  uint8_t unknown_layer_type = 42;
  uint16_t format_minor = 0;  // 1 for the layers and fields of format 1.1
};

const char *kLayerNames[] = {"squeeze", "actnorm", "mixer", "coupling", "split",
                             "top",     "alien",   "logit", "flatten"};

Offset<fb::Layer> put_layer(FlatBufferBuilder &b, const Spec &s, int which) {
  auto name = b.CreateString(kLayerNames[which]);
  switch (which) {
    case 0:
      return fb::CreateLayer(b, name, fb::LayerOp::Squeeze,
                             fb::CreateSqueeze(b, s.squeeze_order).Union());
    case 1: {
      auto bias = put(b, s.an_bias);
      auto scale = put(b, s.an_scale);
      return fb::CreateLayer(b, name, fb::LayerOp::ActNorm,
                             fb::CreateActNorm(b, bias, scale).Union());
    }
    case 2: {
      if (s.use_permute) {
        auto idx = s.permute_indices ? b.CreateVector(*s.permute_indices) : 0;
        return fb::CreateLayer(b, name, fb::LayerOp::Permute,
                               fb::CreatePermute(b, s.permute_kind, idx).Union());
      }
      auto w = put(b, s.weight);
      auto perm = s.perm ? b.CreateVector(*s.perm) : 0;
      auto lower = put(b, s.lower);
      auto upper = put(b, s.upper);
      auto sign = put(b, s.sign);
      auto log_s = put(b, s.log_s);
      return fb::CreateLayer(
          b, name, fb::LayerOp::InvConv1x1,
          fb::CreateInvConv1x1(b, s.ic_form, w, perm, lower, upper, sign, log_s).Union());
    }
    case 3: {
      auto net = put_net(b, s.cp_net);
      auto scale_weight = put(b, s.cp_scale_weight);
      return fb::CreateLayer(
          b, name, fb::LayerOp::Coupling,
          fb::CreateCoupling(b, s.cp_type, s.cp_cond, net, s.cp_split, s.cp_fn, s.cp_scale_bias,
                             s.cp_form, s.cp_mask_channel, scale_weight)
              .Union());
    }
    case 4: {
      auto prior = put_net(b, s.sp_prior);
      return fb::CreateLayer(b, name, fb::LayerOp::Split,
                             fb::CreateSplit(b, s.sp_leaving, prior, s.sp_layout).Union());
    }
    case 5: {
      auto mean = put(b, s.top_mean);
      auto log_std = put(b, s.top_log_std);
      auto offsets = put(b, s.class_offsets);
      return fb::CreateLayer(b, name, fb::LayerOp::TopPrior,
                             fb::CreateTopPrior(b, s.top_kind, mean, log_std, offsets).Union());
    }
    case 7:
      return fb::CreateLayer(b, name, fb::LayerOp::Logit,
                             fb::CreateLogit(b, s.logit_alpha).Union());
    case 8:
      return fb::CreateLayer(b, name, fb::LayerOp::Flatten, fb::CreateFlatten(b).Union());
    default:
      return fb::CreateLayer(b, name, static_cast<fb::LayerOp>(s.unknown_layer_type),
                             fb::CreateSqueeze(b, fb::SqueezeOrder::CHANNEL_MAJOR).Union());
  }
}

std::vector<uint8_t> build(const Spec &s) {
  FlatBufferBuilder b(4096);
  std::vector<Offset<fb::Layer>> layers;
  for (int which : s.order) layers.push_back(put_layer(b, s, which));
  auto layers_vec = b.CreateVector(layers);
  auto image = fb::CreateImageSpec(b, s.channels, s.height, s.width, s.n_bits);
  auto model = fb::CreateModel(b, s.format_major, s.format_minor, image, layers_vec);
  fb::FinishModelBuffer(b, model);
  return std::vector<uint8_t>(b.GetBufferPointer(), b.GetBufferPointer() + b.GetSize());
}

// A hostile case: one edit of the valid spec, the status it must give, and the parts its
// message must contain.
struct Case {
  const char *what;
  std::function<void(Spec &)> edit;
  flowrt_status status;
  std::vector<std::string> parts;
};

// The base spec at format 1.minor, edited: a valid model that loads and that the fuzz entry runs
// without a problem. Returns its bytes.
std::vector<uint8_t> check_loads_and_runs(const char *what, int minor,
                                          const std::function<void(Spec &)> &edit) {
  Spec s;
  s.format_minor = minor;
  edit(s);
  const std::vector<uint8_t> bytes = build(s);
  INFO(what << ": " << flowrt_last_error());
  CHECK(load(bytes) == FLOWRT_OK);
  const fuzz::EntryResult r = fuzz::run_entry(bytes.data(), bytes.size());
  CHECK(r.problem.empty());
  CHECK(r.ran);
  return bytes;
}

void check_case(const Case &c) {
  Spec s;
  c.edit(s);
  const std::vector<uint8_t> bytes = build(s);
  const flowrt_status st = load(bytes);
  const std::string msg = flowrt_last_error();
  INFO(std::string(c.what) << ": " << std::string(flowrt_status_string(st)) << ": " << msg);
  CHECK(st == c.status);
  for (const std::string &p : c.parts) {
    INFO("expected in the message: '" << p << "'");
    CHECK(msg.find(p) != std::string::npos);
  }
  // The same bytes through the fuzz entry: no broken invariant.
  CHECK(fuzz::run_entry(bytes.data(), bytes.size()).problem.empty());
}

const flowrt_status FE = FLOWRT_FORMAT_ERROR;

// ---- Walking every tensor of a .flow buffer --------------------------------------------------

void collect_net(const flatbuffers::Vector<Offset<fb::NetLayer>> *net,
                 std::vector<const fb::Tensor *> &out) {
  if (!net) return;
  for (const fb::NetLayer *op : *net) {
    if (const auto *c = op->op_as_Conv2d()) {
      out.push_back(c->weight());
      out.push_back(c->bias());
    } else if (const auto *a = op->op_as_ActNorm()) {
      out.push_back(a->bias());
      out.push_back(a->scale());
    } else if (const auto *o = op->op_as_OutputScale()) {
      out.push_back(o->log_scale());
    }
  }
}

std::vector<const fb::Tensor *> all_tensors(const fb::Model *m) {
  std::vector<const fb::Tensor *> out;
  for (const fb::Layer *l : *m->layers()) {
    if (const auto *a = l->op_as_ActNorm()) {
      out.insert(out.end(), {a->bias(), a->scale()});
    } else if (const auto *c = l->op_as_InvConv1x1()) {
      out.insert(out.end(), {c->weight(), c->lower(), c->upper(), c->sign(), c->log_s()});
    } else if (const auto *cp = l->op_as_Coupling()) {
      collect_net(cp->net(), out);
    } else if (const auto *sp = l->op_as_Split()) {
      collect_net(sp->prior(), out);
    } else if (const auto *t = l->op_as_TopPrior()) {
      out.insert(out.end(), {t->mean(), t->log_std(), t->class_offsets()});
    }
  }
  std::vector<const fb::Tensor *> present;
  for (const fb::Tensor *t : out)
    if (t) present.push_back(t);
  return present;
}

TEST_SUITE("loader") {
  TEST_CASE("the small model for corruption loads, runs and is a few KB") {
    const std::vector<uint8_t> bytes = small_model_bytes();
    MESSAGE("corruption base model: " << bytes.size() << " bytes");
    CHECK(bytes.size() < 8192);
    CHECK(load(bytes) == FLOWRT_OK);
    const fuzz::EntryResult r = fuzz::run_entry(bytes.data(), bytes.size());
    CHECK(r.problem.empty());
    CHECK(r.ran);
    // And the hand-built base spec is valid, so each hostile case breaks exactly one thing.
    const std::vector<uint8_t> spec = build(Spec{});
    INFO(flowrt_last_error());
    CHECK(load(spec) == FLOWRT_OK);
    CHECK(fuzz::run_entry(spec.data(), spec.size()).ran);
  }

  TEST_CASE("every truncation is a format error unless it only drops unreferenced end padding") {
    // FlatBuffers builds back to front: the buffer's last bytes belong to the first object
    // written (the first layer's name), whose alignment padding nothing references. Dropping
    // only that padding leaves a complete model, which must then be the very same model.
    const std::vector<uint8_t> bytes = small_model_bytes();
    const std::vector<uint8_t> canonical =
        write_flow(read_flow(copy_model_bytes(bytes.data(), bytes.size())));
    size_t bad = 0, padding_only = 0;
    for (size_t n = 0; n <= bytes.size(); ++n) {
      flowrt_model *m = nullptr;
      // A zero-size copy still needs a valid pointer: point at the real bytes.
      const flowrt_status st = flowrt_model_from_memory(bytes.data(), n, &m);
      const std::string msg = flowrt_last_error();
      flowrt_model_free(m);
      bool good = n == bytes.size() ? st == FLOWRT_OK : st == FLOWRT_FORMAT_ERROR && !msg.empty();
      if (!good && st == FLOWRT_OK && bytes.size() - n < 8) {
        good = write_flow(read_flow(copy_model_bytes(bytes.data(), n))) == canonical;
        padding_only += good;
      }
      if (!good) {
        ++bad;
        INFO("length " << n << " of " << bytes.size() << ": "
                       << std::string(flowrt_status_string(st)) << ": " << msg);
        CHECK(good);
      }
    }
    MESSAGE((bytes.size() + 1) << " truncations: " << padding_only
                               << " dropped only end padding and loaded the same model");
    CHECK(bad == 0);
  }

  TEST_CASE("random bit flips and byte rewrites load cleanly or fail with a message") {
    const std::vector<uint8_t> base = small_model_bytes();
    test::Rng rng(20240601);
    int loaded = 0, ran = 0, rejected = 0;
    std::vector<int> by_status(9, 0);
    for (int k = 0; k < 2400; ++k) {
      std::vector<uint8_t> bytes = base;
      const size_t pos = rng.next() % bytes.size();
      if (k < 1200)
        bytes[pos] ^= static_cast<uint8_t>(1u << (rng.next() % 8));
      else
        bytes[pos] = static_cast<uint8_t>(rng.next());
      const fuzz::EntryResult r = fuzz::run_entry(bytes.data(), bytes.size());
      if (!r.problem.empty()) {
        INFO(std::string(k < 1200 ? "bit flip" : "byte rewrite")
             << " at " << pos << ": " << r.problem);
        CHECK(r.problem.empty());
      }
      if (r.load == FLOWRT_OK) {
        ++loaded;
        ran += r.ran;
      } else {
        ++rejected;
      }
      if (r.load >= 0 && r.load < 9) ++by_status[r.load];
    }
    MESSAGE("2400 corruptions: " << loaded << " loaded (" << ran << " ran), " << rejected
                                 << " rejected (format " << by_status[FLOWRT_FORMAT_ERROR]
                                 << ", unsupported " << by_status[FLOWRT_UNSUPPORTED] << ")");
    CHECK(rejected > 0);
    CHECK(loaded > 0);  // most flips land in weights: those models load and run
    CHECK(by_status[FLOWRT_INTERNAL_ERROR] == 0);
  }

  TEST_CASE("a wrong identifier is rejected with a message naming 'FLOW'") {
    std::vector<uint8_t> bytes = small_model_bytes();
    std::memcpy(bytes.data() + 4, "GLOW", 4);
    CHECK(load(bytes) == FLOWRT_FORMAT_ERROR);
    const std::string msg = flowrt_last_error();
    CHECK(msg.find("FLOW") != std::string::npos);
    CHECK(msg.find("GLOW") != std::string::npos);
    // From a file too, with the path in the message.
    test::TempDir dir;
    const std::string path = dir.file("glow.flow");
    {
      std::FILE *f = std::fopen(path.c_str(), "wb");
      REQUIRE(f);
      std::fwrite(bytes.data(), 1, bytes.size(), f);
      std::fclose(f);
    }
    flowrt_model *m = nullptr;
    CHECK(flowrt_model_open(path.c_str(), &m) == FLOWRT_FORMAT_ERROR);
    CHECK(std::string(flowrt_last_error()).find("glow.flow") != std::string::npos);
    CHECK(m == nullptr);
  }

  TEST_CASE("hostile tensors: absurd, negative and zero dims, rank 5, byte size not the shape's") {
    const std::vector<Case> cases = {
        {"dim 2^40",
         [](Spec &s) { s.an_bias.shape = {int64_t{1} << 40}; },
         FE,
         {"layer 1 'actnorm'", "tensor 'bias'", "dimension 1099511627776"}},
        {"negative dim",
         [](Spec &s) { s.an_scale.shape = {-4}; },
         FE,
         {"layer 1 'actnorm'", "tensor 'scale'", "dimension -4"}},
        {"zero dim",
         [](Spec &s) { s.an_scale.shape = {0}; },
         FE,
         {"tensor 'scale'", "dimension 0"}},
        {"rank 5",
         [](Spec &s) {
           s.an_bias.shape = {1, 1, 1, 1, 4};
         },
         FE,
         {"layer 1 'actnorm'", "tensor 'bias'", "rank 5"}},
        {"rank 0", [](Spec &s) { s.an_bias.shape = {}; }, FE, {"tensor 'bias'", "rank 0"}},
        {"product of dims overflows",
         [](Spec &s) {
           s.an_bias.shape = {1 << 24, 1 << 24, 1 << 24, 1 << 24};
         },
         FE,
         {"tensor 'bias'", "too many elements"}},
        {"bytes not the shape's",
         [](Spec &s) {
           s.an_bias = floats({4}, {1, 2, 3});
           s.an_bias.shape = {4};
         },
         FE,
         {"layer 1 'actnorm'", "tensor 'bias'", "holds 12 bytes", "needs 16"}},
        {"net weight bytes not the shape's",
         [](Spec &s) {
           ConvSpec c = conv3x3(4, 2);
           c.weight.bytes.resize(c.weight.bytes.size() - 4);
           s.cp_net[0] = conv(c);
         },
         FE,
         {"layer 3 'coupling'", "net op 0", "tensor 'weight'"}},
        {"shape not the layer's",
         [](Spec &s) { s.an_scale = filled({5}, 1.f); },
         FE,
         {"layer 1 'actnorm'", "tensor 'scale' has shape [5], expected [4]"}},
        {"f16 weights",
         [](Spec &s) { s.an_bias.dtype = fb::DType::F16; },
         FLOWRT_UNSUPPORTED,
         {"layer 1 'actnorm'", "tensor 'bias'", "f16"}},
        {"unspecified dtype",
         [](Spec &s) { s.an_bias.dtype = fb::DType::UNSPECIFIED; },
         FE,
         {"tensor 'bias'", "unknown dtype 0"}},
        {"missing required tensor",
         [](Spec &s) { s.lower.reset(); },
         FE,
         {"layer 2 'mixer'", "tensor 'lower' is missing"}},
        {"top prior mean of the wrong shape",
         [](Spec &s) { s.top_mean = filled({8}, 0.f); },
         FE,
         {"layer 5 'top'", "tensor 'mean'"}},
        {"class offsets of the wrong shape",
         [](Spec &s) {
           s.class_offsets = filled({3, 5}, 0.f);
         },
         FE,
         {"layer 5 'top'", "class_offsets must be [n_classes, 4]"}},
    };
    for (const Case &c : cases) check_case(c);
  }

  TEST_CASE("unspecified and unknown enums and union types are rejected, naming the field") {
    const std::vector<Case> cases = {
        {"squeeze order",
         [](Spec &s) { s.squeeze_order = fb::SqueezeOrder::UNSPECIFIED; },
         FE,
         {"layer 0 'squeeze'", "squeeze order"}},
        {"squeeze order 7",
         [](Spec &s) { s.squeeze_order = static_cast<fb::SqueezeOrder>(7); },
         FE,
         {"layer 0 'squeeze'", "squeeze order is UNSPECIFIED or unknown"}},
        {"invconv form",
         [](Spec &s) { s.ic_form = fb::InvConvForm::UNSPECIFIED; },
         FE,
         {"layer 2 'mixer'", "1x1 conv form"}},
        {"permute kind",
         [](Spec &s) {
           s.use_permute = true;
           s.permute_kind = fb::PermuteKind::UNSPECIFIED;
         },
         FE,
         {"layer 2 'mixer'", "permute kind"}},
        {"coupling type",
         [](Spec &s) { s.cp_type = fb::CouplingType::UNSPECIFIED; },
         FE,
         {"layer 3 'coupling'", "coupling type"}},
        {"coupling conditioning",
         [](Spec &s) { s.cp_cond = fb::Half::UNSPECIFIED; },
         FE,
         {"layer 3 'coupling'", "coupling conditioning"}},
        {"shift/scale split",
         [](Spec &s) { s.cp_split = fb::ShiftScaleSplit::UNSPECIFIED; },
         FE,
         {"layer 3 'coupling'", "affine coupling split"}},
        {"scale function",
         [](Spec &s) { s.cp_fn = static_cast<fb::ScaleFunction>(9); },
         FE,
         {"layer 3 'coupling'", "scale_fn"}},
        {"affine form",
         [](Spec &s) { s.cp_form = fb::AffineForm::UNSPECIFIED; },
         FE,
         {"layer 3 'coupling'", "affine coupling form"}},
        {"conv padding",
         [](Spec &s) {
           ConvSpec c = conv3x3(4, 2);
           c.padding = fb::PaddingMode::UNSPECIFIED;
           s.cp_net[0] = conv(c);
         },
         FE,
         {"layer 3 'coupling'", "net op 0", "padding"}},
        {"split leaving",
         [](Spec &s) { s.sp_leaving = fb::Half::UNSPECIFIED; },
         FE,
         {"layer 4 'split'", "split leaving"}},
        {"prior layout",
         [](Spec &s) { s.sp_layout = fb::PriorLayout::UNSPECIFIED; },
         FE,
         {"layer 4 'split'", "prior_layout"}},
        {"top prior kind",
         [](Spec &s) { s.top_kind = fb::TopPriorKind::UNSPECIFIED; },
         FE,
         {"layer 5 'top'", "top prior kind"}},
        {"unknown layer union type",
         [](Spec &s) { s.order = {6, 0, 1, 2, 3, 4, 5}; },
         FE,
         {"layer 0 'alien'", "unknown layer type 42"}},
        {"unknown net op union type",
         [](Spec &s) { s.cp_net.insert(s.cp_net.begin() + 1, unknown_net_op(17)); },
         FE,
         {"layer 3 'coupling'", "net op 1", "unknown net op type 17"}},
    };
    for (const Case &c : cases) check_case(c);
  }

  TEST_CASE("non-finite weights are rejected, naming the tensor") {
    const float nan = std::numeric_limits<float>::quiet_NaN();
    const float inf = std::numeric_limits<float>::infinity();
    const std::vector<Case> cases = {
        {"NaN actnorm scale",
         [=](Spec &s) {
           s.an_scale = floats({4}, {1, nan, 1, 1});
         },
         FE,
         {"layer 1 'actnorm'", "tensor 'scale' has a non-finite value at index 1"}},
        {"Inf LU lower",
         [=](Spec &s) {
           std::vector<float> v(16, 0.f);
           v[9] = inf;
           s.lower = floats({4, 4}, v);
         },
         FE,
         {"layer 2 'mixer'", "tensor 'lower' has a non-finite value at index 9"}},
        {"NaN dense weight",
         [=](Spec &s) {
           s.ic_form = fb::InvConvForm::DENSE;
           TensorSpec w = identity(4);
           const float n = nan;
           std::memcpy(w.bytes.data() + 4 * 5, &n, 4);
           s.weight = w;
         },
         FE,
         {"layer 2 'mixer'", "tensor 'weight' has a non-finite value"}},
        {"Inf net conv weight",
         [=](Spec &s) {
           ConvSpec c = conv3x3(4, 2);
           std::memcpy(c.weight.bytes.data() + 4 * 7, &inf, 4);
           s.cp_net[0] = conv(c);
         },
         FE,
         {"layer 3 'coupling'", "net op 0", "tensor 'weight' has a non-finite value at index 7"}},
        {"NaN prior bias",
         [=](Spec &s) {
           ConvSpec c = conv3x3(4, 2);
           c.bias = floats({4}, {0, 0, nan, 0});
           s.sp_prior[0] = conv(c);
         },
         FE,
         {"layer 4 'split'", "net op 0", "tensor 'bias'"}},
        {"NaN top log-std",
         [=](Spec &s) {
           std::vector<float> v(8, 0.f);
           v[3] = nan;
           s.top_log_std = floats({2, 2, 2}, v);
         },
         FE,
         {"layer 5 'top'", "tensor 'log_std' has a non-finite value at index 3"}},
        {"NaN pad value",
         [=](Spec &s) {
           ConvSpec c = conv3x3(4, 2);
           c.padding = fb::PaddingMode::CONSTANT;
           c.pad_value = nan;
           s.cp_net[0] = conv(c);
         },
         FE,
         {"layer 3 'coupling'", "pad_value"}},
        {"Inf scale bias",
         [=](Spec &s) { s.cp_scale_bias = inf; },
         FE,
         {"layer 3 'coupling'", "scale_bias"}},
        {"NaN output-scale factor",
         [=](Spec &s) { s.cp_net[2] = output_scale(filled({4}, 0.f), nan); },
         FE,
         {"layer 3 'coupling'", "net op 2", "factor"}},
        {"huge output scale",
         [=](Spec &s) { s.cp_net[2] = output_scale(filled({4}, 30.f)); },
         FE,
         {"layer 3 'coupling'", "net op 2", "log_scale", "out of range"}},
        {"zero actnorm scale",
         [=](Spec &s) {
           s.an_scale = floats({4}, {1, 1, 0, 1});
         },
         FE,
         {"layer 1 'actnorm'", "scale[2]"}},
        {"huge log_s",
         [=](Spec &s) {
           s.log_s = floats({4}, {0, 0, 100, 0});
         },
         FE,
         {"layer 2 'mixer'", "log_s", "out of range"}},
        {"sign not +-1",
         [=](Spec &s) {
           s.sign = floats({4}, {1, 0.5f, 1, 1});
         },
         FE,
         {"layer 2 'mixer'", "sign[1]"}},
    };
    for (const Case &c : cases) check_case(c);
  }

  TEST_CASE("singular and ill-conditioned W, bad permutations are rejected") {
    const std::vector<Case> cases = {
        {"singular dense W",
         [](Spec &s) {
           s.ic_form = fb::InvConvForm::DENSE;
           s.weight = floats({4, 4}, {1, 2, 3, 4, 2, 4, 6, 8, 0, 1, 0, 0, 0, 0, 1, 0});
         },
         FE,
         {"layer 2 'mixer'", "W is singular"}},
        {"ill-conditioned dense W",
         [](Spec &s) {
           s.ic_form = fb::InvConvForm::DENSE;
           TensorSpec w = identity(4);
           const float tiny = 1e-9f;
           std::memcpy(w.bytes.data() + 4 * 15, &tiny, 4);
           s.weight = w;
         },
         FE,
         {"layer 2 'mixer'", "ill-conditioned"}},
        {"ill-conditioned LU W",
         [](Spec &s) {
           s.log_s = floats({4}, {0, 0, 0, -25});
         },
         FE,
         {"layer 2 'mixer'", "ill-conditioned"}},
        {"dense W of the wrong shape",
         [](Spec &s) {
           s.ic_form = fb::InvConvForm::DENSE;
           s.weight = identity(3);
         },
         FE,
         {"layer 2 'mixer'", "tensor 'weight' has shape [3, 3], expected [4, 4]"}},
        {"perm repeats",
         [](Spec &s) {
           s.perm = std::vector<int32_t>{0, 1, 1, 3};
         },
         FE,
         {"layer 2 'mixer'", "perm repeats index 1"}},
        {"perm out of range",
         [](Spec &s) {
           s.perm = std::vector<int32_t>{0, 1, 2, 4};
         },
         FE,
         {"layer 2 'mixer'", "perm[3] = 4 is out of range"}},
        {"perm negative",
         [](Spec &s) {
           s.perm = std::vector<int32_t>{0, -1, 2, 3};
         },
         FE,
         {"perm[1] = -1"}},
        {"perm too short",
         [](Spec &s) {
           s.perm = std::vector<int32_t>{0, 1, 2};
         },
         FE,
         {"perm has 3 entries, expected 4"}},
        {"perm missing", [](Spec &s) { s.perm.reset(); }, FE, {"layer 2 'mixer'", "needs 'perm'"}},
        {"permute indices repeat",
         [](Spec &s) {
           s.use_permute = true;
           s.permute_indices = std::vector<int32_t>{3, 3, 0, 2};
         },
         FE,
         {"layer 2 'mixer'", "indices repeats index 3"}},
        {"permute indices out of range",
         [](Spec &s) {
           s.use_permute = true;
           s.permute_indices = std::vector<int32_t>{3, 1, 0, 9};
         },
         FE,
         {"indices[3] = 9"}},
        {"permute indices missing",
         [](Spec &s) {
           s.use_permute = true;
           s.permute_indices.reset();
         },
         FE,
         {"layer 2 'mixer'", "needs 'indices'"}},
    };
    for (const Case &c : cases) check_case(c);
    // The base spec with a valid permute layer instead of the invconv loads.
    Spec ok;
    ok.use_permute = true;
    CHECK(load(build(ok)) == FLOWRT_OK);
  }

  TEST_CASE("shapes that do not flow through the layers are rejected") {
    const std::vector<Case> cases = {
        {"odd height for squeeze",
         [](Spec &s) { s.height = 5; },
         FE,
         {"layer 0 'squeeze'", "even height and width", "1x5x4"}},
        {"odd channels for split",
         [](Spec &s) {
           s.channels = 3;
           s.order = {4, 5};
         },
         FE,
         {"layer 0 'split'", "even channel count", "3x4x4"}},
        {"odd channels for coupling",
         [](Spec &s) {
           s.channels = 3;
           s.order = {3, 5};
         },
         FE,
         {"layer 0 'coupling'", "even channel count"}},
        {"top prior not last",
         [](Spec &s) { s.order = {0, 1, 2, 5, 3, 4}; },
         FE,
         {"layer 3 'top'", "the top prior must be the last layer"}},
        {"top prior missing",
         [](Spec &s) {
           s.order = {0, 1, 2, 3, 4};
         },
         FE,
         {"layer 4 'split'", "the last layer must be the top prior"}},
        {"two top priors",
         [](Spec &s) { s.order = {0, 1, 2, 3, 4, 5, 5}; },
         FE,
         {"layer 5 'top'", "the top prior must be the last layer"}},
        {"no layers", [](Spec &s) { s.order = {}; }, FE, {"no layers"}},
        {"net input channels mismatch",
         [](Spec &s) { s.cp_net[0] = conv(conv3x3(4, 3)); },
         FE,
         {"layer 3 'coupling'", "net op 0", "3 input channels, the net has 2"}},
        {"net output channels mismatch",
         [](Spec &s) {
           s.sp_prior = {conv(conv3x3(3, 2)), output_scale(filled({3}, 0.f))};
         },
         FE,
         {"layer 4 'split'", "net outputs 3 channels, expected 4"}},
        {"additive net with the affine width",
         [](Spec &s) { s.cp_type = fb::CouplingType::ADDITIVE; },
         FE,
         {"layer 3 'coupling'", "net outputs 4 channels, expected 2"}},
        {"even kernel",
         [](Spec &s) {
           s.cp_net[0] = conv({filled({4, 2, 2, 2}, 0.f), filled({4}, 0.f)});
         },
         FE,
         {"layer 3 'coupling'", "net op 0", "kernel 2x2 must be odd"}},
        {"kernel 17",
         [](Spec &s) {
           s.cp_net[0] = conv({filled({4, 2, 17, 17}, 0.f), filled({4}, 0.f)});
         },
         FE,
         {"net op 0", "kernel 17x17", "at most 15"}},
        {"conv weight of rank 2",
         [](Spec &s) {
           s.cp_net[0] = conv({filled({4, 2}, 0.f), filled({4}, 0.f)});
         },
         FE,
         {"net op 0", "conv weight must be [O, I, kh, kw]"}},
        {"empty coupling net",
         [](Spec &s) { s.cp_net.clear(); },
         FE,
         {"layer 3 'coupling'", "net is empty"}},
        {"65 net ops",
         [](Spec &s) { s.cp_net.insert(s.cp_net.begin() + 1, 62, relu()); },
         FE,
         {"layer 3 'coupling'", "65 ops"}},
        {"edge-channel conv without the extra channel",
         [](Spec &s) {
           ConvSpec c = conv3x3(4, 2);
           c.padding = fb::PaddingMode::EDGE_CHANNEL;
           s.cp_net[0] = conv(c);
         },
         FE,
         {"net op 0", "(+1 edge channel)"}},
        {"n_bits 0", [](Spec &s) { s.n_bits = 0; }, FE, {"image", "n_bits = 0"}},
        {"n_bits 9", [](Spec &s) { s.n_bits = 9; }, FE, {"image", "n_bits = 9"}},
        {"no channels", [](Spec &s) { s.channels = 0; }, FE, {"image", "channels = 0"}},
        {"huge image", [](Spec &s) { s.width = 1u << 20; }, FE, {"image", "out of range"}},
        {"format major 2",
         [](Spec &s) { s.format_major = 2; },
         FLOWRT_UNSUPPORTED,
         {"format version 2.0", "major 1"}},
    };
    for (const Case &c : cases) check_case(c);
  }

  TEST_CASE("format 1.1: checkerboard, tanh, logit and flatten models load and run") {
    // The base spec with each new part in turn: a valid model that loads and runs.
    std::vector<std::pair<const char *, std::function<void(Spec &)>>> valid = {
        {"checkerboard with mask channel",
         [](Spec &s) {
           s.cp_cond = fb::Half::CHECKERBOARD_ODD;
           s.cp_mask_channel = true;
           s.cp_net = {conv(conv3x3(8, 5)), relu(), output_scale(filled({8}, 0.f))};
         }},
        {"checkerboard additive",
         [](Spec &s) {
           s.cp_cond = fb::Half::CHECKERBOARD_EVEN;
           s.cp_type = fb::CouplingType::ADDITIVE;
           s.cp_net = {conv(conv3x3(4, 4))};
         }},
        {"tanh channel coupling",
         [](Spec &s) {
           s.cp_fn = fb::ScaleFunction::TANH;
           s.cp_scale_weight = floats({2}, {0.7f, -1.2f});
         }},
        {"logit first", [](Spec &s) { s.order = {7, 0, 1, 2, 3, 4, 5}; }},
        {"flatten, then a channel coupling on the vector",
         [](Spec &s) {
           s.order = {7, 8, 3, 5};
           s.cp_net = {conv({filled({16, 8, 1, 1}, 0.01f), filled({16}, 0.f)})};
           s.top_mean = filled({16, 1, 1}, 0.f);
           s.top_log_std = filled({16, 1, 1}, 0.f);
         }},
    };
    for (auto &[what, edit] : valid) check_loads_and_runs(what, 1, edit);
  }

  TEST_CASE("format 1.1: broken checkerboard, tanh, logit and flatten fields are named") {
    auto v11 = [](std::function<void(Spec &)> edit) {
      return [edit](Spec &s) {
        s.format_minor = 1;
        edit(s);
      };
    };
    const float nan = std::numeric_limits<float>::quiet_NaN();
    const std::vector<Case> cases = {
        {"tanh without scale_weight",
         v11([](Spec &s) { s.cp_fn = fb::ScaleFunction::TANH; }),
         FE,
         {"layer 3 'coupling'", "scale_weight"}},
        {"tanh scale_weight of the wrong shape",
         v11([](Spec &s) {
           s.cp_fn = fb::ScaleFunction::TANH;
           s.cp_scale_weight = filled({3}, 1.f);
         }),
         FE,
         {"layer 3 'coupling'", "tensor 'scale_weight' has shape [3], expected [2]"}},
        {"tanh scale_weight not finite",
         v11([=](Spec &s) {
           s.cp_fn = fb::ScaleFunction::TANH;
           s.cp_scale_weight = floats({2}, {1.f, nan});
         }),
         FE,
         {"layer 3 'coupling'", "tensor 'scale_weight' has a non-finite value at index 1"}},
        {"mask_channel on a channel coupling",
         v11([](Spec &s) { s.cp_mask_channel = true; }),
         FE,
         {"layer 3 'coupling'", "mask_channel is set on a channel coupling"}},
        {"logit not first",
         v11([](Spec &s) { s.order = {0, 7, 1, 2, 3, 4, 5}; }),
         FE,
         {"layer 1 'logit'", "logit must be the first layer"}},
        {"logit alpha 0.5",
         v11([](Spec &s) {
           s.order = {7, 0, 1, 2, 3, 4, 5};
           s.logit_alpha = 0.5f;
         }),
         FE,
         {"layer 0 'logit'", "alpha = 0.500000 is out of range (0, 0.5)"}},
        {"logit alpha 0",
         v11([](Spec &s) {
           s.order = {7, 0, 1, 2, 3, 4, 5};
           s.logit_alpha = 0.f;
         }),
         FE,
         {"layer 0 'logit'", "out of range (0, 0.5)"}},
        {"logit alpha negative",
         v11([](Spec &s) {
           s.order = {7, 0, 1, 2, 3, 4, 5};
           s.logit_alpha = -0.1f;
         }),
         FE,
         {"layer 0 'logit'", "alpha = -0.100000"}},
        {"logit alpha NaN",
         v11([=](Spec &s) {
           s.order = {7, 0, 1, 2, 3, 4, 5};
           s.logit_alpha = nan;
         }),
         FE,
         {"layer 0 'logit'", "out of range (0, 0.5)"}},
        {"split leaving a checkerboard",
         v11([](Spec &s) { s.sp_leaving = fb::Half::CHECKERBOARD_EVEN; }),
         FE,
         {"layer 4 'split'", "a split leaves a channel half, not a checkerboard"}},
        {"checkerboard net reading the channel half",
         v11([](Spec &s) { s.cp_cond = fb::Half::CHECKERBOARD_EVEN; }),
         FE,
         {"layer 3 'coupling'", "net op 0", "conv weight has 2 input channels, the net has 4"}},
        {"checkerboard net without the mask channel's input",
         v11([](Spec &s) {
           s.cp_cond = fb::Half::CHECKERBOARD_ODD;
           s.cp_mask_channel = true;
           s.cp_net = {conv(conv3x3(8, 4)), relu(), output_scale(filled({8}, 0.f))};
         }),
         FE,
         {"layer 3 'coupling'", "net op 0", "conv weight has 4 input channels, the net has 5"}},
        {"checkerboard net with the channel half's outputs",
         v11([](Spec &s) {
           s.cp_cond = fb::Half::CHECKERBOARD_ODD;
           s.cp_net = {conv(conv3x3(4, 4)), relu(), output_scale(filled({4}, 0.f))};
         }),
         FE,
         {"layer 3 'coupling'", "net outputs 4 channels, expected 8"}},
        {"checkerboard on a single position",
         v11([](Spec &s) {
           s.order = {8, 3, 5};
           s.cp_cond = fb::Half::CHECKERBOARD_EVEN;
           s.cp_net = {conv({filled({32, 16, 1, 1}, 0.01f), filled({32}, 0.f)})};
           s.top_mean = filled({16, 1, 1}, 0.f);
           s.top_log_std = filled({16, 1, 1}, 0.f);
         }),
         FE,
         {"layer 1 'coupling'", "a checkerboard coupling needs at least 2 positions", "16x1x1"}},
        {"unknown conditioning 5",
         v11([](Spec &s) { s.cp_cond = static_cast<fb::Half>(5); }),
         FE,
         {"layer 3 'coupling'", "coupling conditioning is UNSPECIFIED or unknown"}},
        {"top prior of the unflattened shape after a flatten",
         v11([](Spec &s) {
           s.order = {8, 5};
           s.top_mean = filled({1, 4, 4}, 0.f);
           s.top_log_std = filled({1, 4, 4}, 0.f);
         }),
         FE,
         {"layer 1 'top'", "tensor 'mean' has shape [1, 4, 4], expected [16, 1, 1]"}},
    };
    for (const Case &c : cases) check_case(c);
  }

  // Coupling net 2 -> 4 channels: conv 2->4, ReLU, conv 4->4, add, ..., output scale.
  std::vector<NetOpFn> residual_net(std::vector<NetOpFn> middle) {
    std::vector<NetOpFn> net = {conv(conv3x3(4, 2)), relu()};
    net.insert(net.end(), middle.begin(), middle.end());
    net.push_back(output_scale(filled({4}, 0.f)));
    return net;
  }

  TEST_CASE("format 1.2: residual connections load, run and round-trip") {
    std::vector<std::pair<const char *, std::function<void(Spec &)>>> valid = {
        {"one block (from a ReLU's input)",
         [](Spec &s) {
           s.cp_net = residual_net({conv(conv3x3(4, 4)), residual_add(1), relu()});
         }},
        {"two blocks back to back",
         [](Spec &s) {
           s.cp_net = residual_net({conv(conv3x3(4, 4)), residual_add(2), conv(conv3x3(4, 4)),
                                    relu(), residual_add(4)});
         }},
        {"a prior adding its own input",
         [](Spec &s) {
           s.sp_prior = {conv(conv3x3(2, 2)), residual_add(0), conv(conv3x3(4, 2)),
                         output_scale(filled({4}, 0.f))};
         }},
    };
    for (auto &[what, edit] : valid) {
      const std::vector<uint8_t> bytes = check_loads_and_runs(what, 2, edit);
      // The writer keeps the connections and marks the file 1.2.
      const Graph g = read_flow(copy_model_bytes(bytes.data(), bytes.size()));
      CHECK(g.required_format_minor() == 2);
      const std::vector<uint8_t> again = write_flow(g);
      CHECK(read_flow(copy_model_bytes(again.data(), again.size())).format_minor == 2);
    }
  }

  TEST_CASE("format 1.2: broken residual connections are named") {
    const std::vector<Case> cases = {
        {"from a later op",
         [](Spec &s) {
           s.cp_net = residual_net({conv(conv3x3(4, 4)), residual_add(5)});
         },
         FE,
         {"layer 3 'coupling'", "net op 3", "residual connection from op 5",
          "must come from an earlier op of the net [0, 3)"}},
        {"from itself",
         [](Spec &s) {
           s.cp_net = residual_net({conv(conv3x3(4, 4)), residual_add(3)});
         },
         FE,
         {"net op 3", "residual connection from op 3", "earlier op"}},
        {"from a negative op",
         [](Spec &s) {
           s.cp_net = residual_net({conv(conv3x3(4, 4)), residual_add(-1)});
         },
         FE,
         {"net op 3", "residual connection from op -1"}},
        {"from an op of another width",
         [](Spec &s) {
           s.cp_net = residual_net({conv(conv3x3(4, 4)), residual_add(0)});
         },
         FE,
         {"net op 3", "adds 2 channels (the input of op 0) to 4"}},
        {"overlapping connections",
         [](Spec &s) {
           s.cp_net = residual_net(
               {conv(conv3x3(4, 4)), residual_add(2), conv(conv3x3(4, 4)), residual_add(2)});
         },
         FE,
         {"net op 5", "residual connection from op 2 overlaps the one that ends at op 3"}},
        {"a connection ending a prior on the wrong width",
         [](Spec &s) {
           s.sp_prior = {conv(conv3x3(4, 2)), residual_add(0), output_scale(filled({4}, 0.f))};
         },
         FE,
         {"layer 4 'split'", "net op 1", "adds 2 channels (the input of op 0) to 4"}},
    };
    for (const Case &c : cases) check_case(c);
  }

  TEST_CASE("every tensor of a written .flow starts on a 32-byte boundary") {
    std::vector<std::vector<uint8_t>> files = {small_model_bytes(), build(Spec{})};
    for (Permutation p : {Permutation::Dense, Permutation::Reverse, Permutation::Shuffle}) {
      test::Variant v;
      v.permutation = p;
      v.classes = 3;
      v.net_actnorm = true;
      v.padding = PaddingMode::EdgeChannel;
      files.push_back(write_flow(test::variant_graph(v)));
    }
    size_t tensors = 0;
    for (const std::vector<uint8_t> &bytes : files) {
      flatbuffers::Verifier verifier(bytes.data(), bytes.size());
      REQUIRE(fb::VerifyModelBuffer(verifier));
      for (const fb::Tensor *t : all_tensors(fb::GetModel(bytes.data()))) {
        const size_t offset = static_cast<size_t>(t->data()->data() - bytes.data());
        CHECK(offset % 32 == 0);
        ++tensors;
      }
    }
    MESSAGE(tensors << " tensors in " << files.size() << " files, all 32-byte aligned");
    CHECK(tensors > 40);
  }

  TEST_CASE("write_flow(read_flow(bytes)) reproduces the bytes") {
    std::vector<std::vector<uint8_t>> files = {small_model_bytes()};
    for (Permutation p :
         {Permutation::LU, Permutation::Dense, Permutation::Reverse, Permutation::Shuffle}) {
      test::Variant v;
      v.permutation = p;
      v.classes = p == Permutation::Dense ? 2 : 0;
      v.coupling = p == Permutation::Reverse ? CouplingType::Additive : CouplingType::Affine;
      v.empty_split_prior = p == Permutation::Shuffle;
      v.top = p == Permutation::Shuffle ? TopPriorKind::StandardNormal : TopPriorKind::Learned;
      v.padding = PaddingMode::Constant;
      v.net_actnorm = true;
      files.push_back(write_flow(test::variant_graph(v)));
    }
    for (size_t i = 0; i < files.size(); ++i) {
      INFO("file " << i);
      const Graph g = read_flow(copy_model_bytes(files[i].data(), files[i].size()));
      CHECK(write_flow(g) == files[i]);
    }
  }
}

}  // namespace
}  // namespace flowrt
