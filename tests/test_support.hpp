// Shared helpers of the doctest suites and the fuzz-corpus generator: seeded random tensors and
// nets, tiny graphs built from single layers or from build_glow with every option of the format
// rewritten in, a temporary directory, and an independent naive encoder in double precision that
// follows schema/flow.fbs word for word (plain index formulas, no Program, no layer kernels), so
// the runtime's latents and prior densities are checked against the format's definition rather
// than against themselves.
#pragma once

#include <stdlib.h>
#include <unistd.h>

#include <algorithm>
#include <cmath>
#include <cstdint>
#include <cstdio>
#include <filesystem>
#include <random>
#include <stdexcept>
#include <string>
#include <utility>
#include <vector>

#include "model/finalize.hpp"
#include "model/glow_builder.hpp"
#include "model/graph.hpp"

namespace flowrt::test {

// ---- Random values ---------------------------------------------------------------------------

class Rng {
 public:
  explicit Rng(uint64_t seed) : gen_(seed) {}
  double uniform(double lo, double hi) {
    return lo + (hi - lo) * std::uniform_real_distribution<double>(0.0, 1.0)(gen_);
  }
  double normal() { return std::normal_distribution<double>(0.0, 1.0)(gen_); }
  uint64_t next() { return gen_(); }
  std::vector<float> floats(size_t n, double lo, double hi) {
    std::vector<float> v(n);
    for (float &x : v) x = static_cast<float>(uniform(lo, hi));
    return v;
  }
  std::vector<double> doubles(size_t n, double lo, double hi) {
    std::vector<double> v(n);
    for (double &x : v) x = uniform(lo, hi);
    return v;
  }
  std::mt19937_64 &engine() { return gen_; }

 private:
  std::mt19937_64 gen_;
};

inline size_t numel(const std::vector<int64_t> &shape) {
  size_t n = 1;
  for (int64_t d : shape) n *= static_cast<size_t>(d);
  return n;
}

inline Tensor rand_tensor(Rng &rng, std::vector<int64_t> shape, double lo, double hi) {
  const size_t n = numel(shape);
  return Tensor::from_vector(std::move(shape), rng.floats(n, lo, hi));
}

inline Tensor const_tensor(std::vector<int64_t> shape, float value) {
  const size_t n = numel(shape);
  return Tensor::from_vector(std::move(shape), std::vector<float>(n, value));
}

// A conv with weights U(-a, a), a = gain / sqrt(fan_in), and a small random bias.
inline Conv2dOp rand_conv(Rng &rng, int64_t out, int64_t in, int64_t k, PaddingMode padding,
                          double gain = 1.0) {
  const int64_t in_total = in + (padding == PaddingMode::EdgeChannel ? 1 : 0);
  const double a = gain / std::sqrt(static_cast<double>(in_total * k * k));
  Conv2dOp c;
  c.weight = rand_tensor(rng, {out, in_total, k, k}, -a, a);
  c.bias = rand_tensor(rng, {out}, -0.1, 0.1);
  c.padding = padding;
  c.pad_value = padding == PaddingMode::Constant ? 1.0f : 0.0f;
  return c;
}

inline NetActNormOp rand_net_actnorm(Rng &rng, int64_t c) {
  return NetActNormOp{rand_tensor(rng, {c}, -0.2, 0.2), rand_tensor(rng, {c}, 0.7, 1.3)};
}

// Glow's coupling net conv3x3 -> [actnorm] -> ReLU -> conv1x1 -> ReLU -> conv3x3 -> output scale,
// with random (non-identity) weights everywhere.
inline Net rand_coupling_net(Rng &rng, int64_t in, int64_t hidden, int64_t out, PaddingMode padding,
                             bool net_actnorm, double out_gain = 0.5) {
  Net net;
  net.ops.emplace_back(rand_conv(rng, hidden, in, 3, padding));
  if (net_actnorm) net.ops.emplace_back(rand_net_actnorm(rng, hidden));
  net.ops.emplace_back(ReluOp{});
  net.ops.emplace_back(rand_conv(rng, hidden, hidden, 1, PaddingMode::Zeros));
  net.ops.emplace_back(ReluOp{});
  net.ops.emplace_back(rand_conv(rng, out, hidden, 3, padding, out_gain));
  net.ops.emplace_back(OutputScaleOp{rand_tensor(rng, {out}, -0.05, 0.05), 3.f});
  return net;
}

// A coupling net with residual connections in every position the format allows: from a ReLU's
// input (a conv's output, so the ReLU cannot be fused), from an add's output through a ReLU, and
// an add with a ReLU after it (fused) and an actnorm before it (folded into the conv).
inline Net rand_residual_net(Rng &rng, int64_t in, int64_t hidden, int64_t out,
                             PaddingMode padding) {
  Net net;
  net.ops.emplace_back(rand_conv(rng, hidden, in, 3, padding));
  net.ops.emplace_back(ReluOp{});  // 1: a source
  net.ops.emplace_back(rand_conv(rng, hidden, hidden, 1, PaddingMode::Zeros));
  net.ops.emplace_back(rand_net_actnorm(rng, hidden));
  net.ops.emplace_back(ResidualAddOp{1});
  net.ops.emplace_back(ReluOp{});  // 5: a source
  net.ops.emplace_back(rand_conv(rng, hidden, hidden, 3, padding));
  net.ops.emplace_back(ReluOp{});
  net.ops.emplace_back(ResidualAddOp{5});
  net.ops.emplace_back(ReluOp{});
  net.ops.emplace_back(rand_conv(rng, out, hidden, 3, padding, 0.5));
  net.ops.emplace_back(OutputScaleOp{rand_tensor(rng, {out}, -0.05, 0.05), 3.f});
  return net;
}

// A split prior whose residual connection starts at the net's own input: in -> 2*in channels.
inline Net rand_residual_prior(Rng &rng, int64_t in, PaddingMode padding) {
  Net net;
  net.ops.emplace_back(rand_conv(rng, in, in, 3, padding, 0.5));
  net.ops.emplace_back(ResidualAddOp{0});
  net.ops.emplace_back(rand_conv(rng, 2 * in, in, 3, padding, 0.5));
  net.ops.emplace_back(OutputScaleOp{rand_tensor(rng, {2 * in}, -0.05, 0.05), 3.f});
  return net;
}

// A split prior: ZeroConv3x3 (random here) -> output scale: in -> 2*in channels.
inline Net rand_prior_net(Rng &rng, int64_t in, PaddingMode padding) {
  Net net;
  net.ops.emplace_back(rand_conv(rng, 2 * in, in, 3, padding, 0.5));
  net.ops.emplace_back(OutputScaleOp{rand_tensor(rng, {2 * in}, -0.05, 0.05), 3.f});
  return net;
}

inline Layer make_layer(std::string name, LayerOp op) {
  Layer l;
  l.name = std::move(name);
  l.op = std::move(op);
  return l;
}

inline TopPriorLayer standard_top() {
  return TopPriorLayer{TopPriorKind::StandardNormal, {}, {}, {}};
}

// A graph of the given layers followed by a standard-normal top prior, finalized.
inline Graph graph_of(const ImageSpec &image, std::vector<Layer> layers,
                      TopPriorLayer top = standard_top()) {
  Graph g;
  g.image = image;
  g.layers = std::move(layers);
  g.layers.push_back(make_layer("top_prior", std::move(top)));
  finalize_graph(g);
  return g;
}

// An LU-form 1x1 conv with a random permutation and random factors (well conditioned).
inline InvConvLayer rand_lu_invconv(Rng &rng, int64_t c) {
  InvConvLayer l;
  l.form = InvConvForm::LU;
  l.perm.resize(static_cast<size_t>(c));
  for (int64_t i = 0; i < c; ++i) l.perm[i] = static_cast<int32_t>(i);
  std::shuffle(l.perm.begin(), l.perm.end(), rng.engine());
  l.lower = rand_tensor(rng, {c, c}, -0.5, 0.5);
  l.upper = rand_tensor(rng, {c, c}, -0.5, 0.5);
  std::vector<float> sign(static_cast<size_t>(c));
  for (float &s : sign) s = rng.uniform(0, 1) < 0.5 ? -1.f : 1.f;
  l.sign = Tensor::from_vector({c}, std::move(sign));
  l.log_s = rand_tensor(rng, {c}, -0.3, 0.3);
  return l;
}

// A dense 1x1 conv: the identity plus a random perturbation (well conditioned).
inline InvConvLayer rand_dense_invconv(Rng &rng, int64_t c) {
  InvConvLayer l;
  l.form = InvConvForm::Dense;
  std::vector<float> w = rng.floats(static_cast<size_t>(c * c), -0.3, 0.3);
  for (int64_t i = 0; i < c; ++i) w[i * c + i] += (i % 2 ? -1.f : 1.f);
  l.weight = Tensor::from_vector({c, c}, std::move(w));
  return l;
}

// ---- Tiny Glow variants -----------------------------------------------------------------------

struct Variant {
  int64_t channels = 1, size = 8;
  int levels = 2, depth = 1, hidden = 4, n_bits = 8;
  CouplingType coupling = CouplingType::Affine;
  Permutation permutation = Permutation::LU;
  SqueezeOrder squeeze = SqueezeOrder::ChannelMajor;
  ShiftScaleSplit split = ShiftScaleSplit::ScaleShiftHalves;
  ScaleFunction scale_fn = ScaleFunction::Sigmoid;
  AffineForm form = AffineForm::ShiftThenScale;
  Half conditioning = Half::First;
  PaddingMode padding = PaddingMode::Zeros;
  bool net_actnorm = false;
  bool residual = false;  // rand_residual_net / rand_residual_prior
  Half leaving = Half::Second;
  PriorLayout layout = PriorLayout::MeanLogstdHalves;
  bool empty_split_prior = false;
  PaddingMode prior_padding = PaddingMode::Zeros;
  TopPriorKind top = TopPriorKind::Learned;
  int classes = 0;
  uint64_t seed = 11;
};

// The residual-net variants the backend parity suites run (every source position of
// rand_residual_net / rand_residual_prior): 1 and 3 channels, widths 8 and 64 (64 sends the last
// convs through the backends' wide-K paths), zero and constant padding.
inline std::vector<Variant> residual_variants() {
  std::vector<Variant> vs;
  for (int64_t channels : {1, 3})
    for (int hidden : {8, 64}) {
      Variant v;
      v.residual = true, v.channels = channels, v.hidden = hidden;
      v.padding = vs.size() % 2 ? PaddingMode::Constant : PaddingMode::Zeros;
      v.seed = 300 + vs.size();
      vs.push_back(v);
    }
  return vs;
}

// build_glow(random_nets) with every coupling, split and top prior rewritten to the variant's
// conventions and given fresh random nets; finalized.
inline Graph variant_graph(const Variant &v) {
  GlowConfig cfg;
  cfg.channels = v.channels;
  cfg.height = cfg.width = v.size;
  cfg.levels = v.levels;
  cfg.depth = v.depth;
  cfg.hidden = v.hidden;
  cfg.n_bits = v.n_bits;
  cfg.coupling = v.coupling;
  cfg.permutation = v.permutation;
  cfg.squeeze = v.squeeze;
  cfg.seed = v.seed;
  cfg.random_nets = true;
  cfg.n_classes = v.classes;
  Graph g = build_glow(cfg);
  Rng rng(v.seed * 7919 + 1);
  for (Layer &layer : g.layers) {
    if (auto *cp = std::get_if<CouplingLayer>(&layer.op)) {
      const int64_t half = layer.in.c / 2;
      cp->conditioning = v.conditioning;
      cp->split = v.split;
      cp->scale_fn = v.scale_fn;
      cp->scale_bias = v.scale_fn == ScaleFunction::Sigmoid ? 2.f : 0.f;
      cp->form = v.form;
      const int64_t out = v.coupling == CouplingType::Affine ? 2 * half : half;
      cp->net = v.residual ? rand_residual_net(rng, half, v.hidden, out, v.padding)
                           : rand_coupling_net(rng, half, v.hidden, out, v.padding, v.net_actnorm);
    } else if (auto *sp = std::get_if<SplitLayer>(&layer.op)) {
      sp->leaving = v.leaving;
      sp->layout = v.layout;
      sp->prior = v.empty_split_prior ? Net{}
                  : v.residual        ? rand_residual_prior(rng, layer.in.c / 2, v.prior_padding)
                                      : rand_prior_net(rng, layer.in.c / 2, v.prior_padding);
    } else if (auto *tp = std::get_if<TopPriorLayer>(&layer.op)) {
      tp->kind = v.top;
      if (v.top == TopPriorKind::StandardNormal) {
        tp->mean = Tensor();
        tp->log_std = Tensor();
      }
    }
  }
  finalize_graph(g);
  return g;
}

// ---- Temporary directory ----------------------------------------------------------------------

class TempDir {
 public:
  TempDir() {
    std::string tmpl = (std::filesystem::temp_directory_path() / "flowrt-test-XXXXXX").string();
    if (!mkdtemp(tmpl.data())) throw std::runtime_error("mkdtemp failed");
    path_ = tmpl;
  }
  ~TempDir() {
    std::error_code ec;
    std::filesystem::remove_all(path_, ec);
  }
  TempDir(const TempDir &) = delete;
  TempDir &operator=(const TempDir &) = delete;
  std::string file(const std::string &name) const { return (path_ / name).string(); }

 private:
  std::filesystem::path path_;
};

// ---- The naive encoder (the format's definition, in double) -----------------------------------

// One CHW activation in double.
struct Act {
  int64_t c = 0, h = 0, w = 0;
  std::vector<double> v;
  double &at(int64_t ch, int64_t y, int64_t x) { return v[(ch * h + y) * w + x]; }
  double at(int64_t ch, int64_t y, int64_t x) const { return v[(ch * h + y) * w + x]; }
};

inline Act channels_of(const Act &a, int64_t from, int64_t count) {
  Act r{count, a.h, a.w, {}};
  r.v.assign(a.v.begin() + from * a.h * a.w, a.v.begin() + (from + count) * a.h * a.w);
  return r;
}

inline Act naive_net(const Net &net, Act a) {
  std::vector<Act> inputs;  // every op's input (residual connections read them back)
  for (const NetOp &op : net.ops) {
    inputs.push_back(a);
    if (const auto *r = std::get_if<ResidualAddOp>(&op)) {
      const Act &s = inputs.at(static_cast<size_t>(r->from));
      for (size_t k = 0; k < a.v.size(); ++k) a.v[k] += s.v.at(k);
    } else if (const auto *c = std::get_if<Conv2dOp>(&op)) {
      const Tensor &wt = c->weight;
      const int64_t o_n = wt.dim(0), i_n = wt.dim(1), kh = wt.dim(2), kw = wt.dim(3);
      Act r{o_n, a.h, a.w, std::vector<double>(static_cast<size_t>(o_n * a.h * a.w))};
      for (int64_t o = 0; o < o_n; ++o)
        for (int64_t y = 0; y < a.h; ++y)
          for (int64_t x = 0; x < a.w; ++x) {
            double acc = c->bias.empty() ? 0.0 : c->bias[o];
            for (int64_t i = 0; i < i_n; ++i)
              for (int64_t ky = 0; ky < kh; ++ky)
                for (int64_t kx = 0; kx < kw; ++kx) {
                  const int64_t iy = y + ky - kh / 2, ix = x + kx - kw / 2;
                  const bool inside = iy >= 0 && iy < a.h && ix >= 0 && ix < a.w;
                  double value;
                  if (c->padding == PaddingMode::EdgeChannel && i == i_n - 1)
                    value = inside ? 0.0 : 1.0;  // Glow's extra edge channel
                  else if (inside)
                    value = a.at(i, iy, ix);
                  else
                    value = c->padding == PaddingMode::Constant ? c->pad_value : 0.0;
                  acc += static_cast<double>(wt[((o * i_n + i) * kh + ky) * kw + kx]) * value;
                }
            r.at(o, y, x) = acc;
          }
      a = std::move(r);
    } else if (const auto *an = std::get_if<NetActNormOp>(&op)) {
      for (int64_t ch = 0; ch < a.c; ++ch)
        for (int64_t p = 0; p < a.h * a.w; ++p)
          a.v[ch * a.h * a.w + p] = an->scale[ch] * (a.v[ch * a.h * a.w + p] + an->bias[ch]);
    } else if (std::holds_alternative<ReluOp>(op)) {
      for (double &x : a.v) x = std::max(x, 0.0);
    } else if (const auto *os = std::get_if<OutputScaleOp>(&op)) {
      for (int64_t ch = 0; ch < a.c; ++ch)
        for (int64_t p = 0; p < a.h * a.w; ++p)
          a.v[ch * a.h * a.w + p] *= std::exp(static_cast<double>(os->factor) * os->log_scale[ch]);
    }
  }
  return a;
}

// W of a 1x1 conv per schema/flow.fbs: dense as given, or P * L * (U + diag(sign * exp(log_s)))
// with (P v)[i] = v[perm[i]].
inline std::vector<double> naive_invconv_weight(const InvConvLayer &l, int64_t c) {
  std::vector<double> w(static_cast<size_t>(c * c));
  if (l.form == InvConvForm::Dense) {
    for (int64_t k = 0; k < c * c; ++k) w[k] = l.weight[k];
    return w;
  }
  auto lo = [&](int64_t i, int64_t j) { return i == j ? 1.0 : (j < i ? l.lower[i * c + j] : 0.0); };
  auto up = [&](int64_t i, int64_t j) {
    if (i == j) return static_cast<double>(l.sign[i]) * std::exp(static_cast<double>(l.log_s[i]));
    return j > i ? static_cast<double>(l.upper[i * c + j]) : 0.0;
  };
  for (int64_t i = 0; i < c; ++i)
    for (int64_t j = 0; j < c; ++j) {
      double acc = 0;
      const int64_t r = l.perm[i];  // row i of P*M is row perm[i] of M
      for (int64_t k = 0; k < c; ++k) acc += lo(r, k) * up(k, j);
      w[i * c + j] = acc;
    }
  return w;
}

// The coupling map of schema/flow.fbs on `a`, in place: channel halves (First/Second) or the
// checkerboard's masked positions, additive or affine with every split, scale function and form.
inline void naive_coupling(const CouplingLayer &cp, Act &a) {
  const int64_t plane = a.h * a.w;
  const bool checker = is_checkerboard(cp.conditioning);
  // m(i, j) = 1 (x_a) where (i + j) % 2 == 0 for EVEN, == 1 for ODD.
  auto in_xa = [&](int64_t p) {
    const int64_t parity = (p / a.w + p % a.w) % 2;
    return parity == (cp.conditioning == Half::CheckerboardEven ? 0 : 1);
  };
  const int64_t cb = checker ? a.c : a.c / 2;
  Act net_in;
  if (checker) {
    net_in = Act{a.c + (cp.mask_channel ? 1 : 0), a.h, a.w, {}};
    net_in.v.assign(static_cast<size_t>(net_in.c * plane), 0.0);
    for (int64_t ch = 0; ch < a.c; ++ch)
      for (int64_t p = 0; p < plane; ++p)
        net_in.v[ch * plane + p] = in_xa(p) ? a.v[ch * plane + p] : 0.0;
    if (cp.mask_channel)
      for (int64_t p = 0; p < plane; ++p) net_in.v[a.c * plane + p] = in_xa(p) ? 1.0 : 0.0;
  } else {
    net_in = channels_of(a, cp.conditioning == Half::First ? 0 : cb, cb);
  }
  const Act h = naive_net(cp.net, net_in);
  const int64_t b_from = checker || cp.conditioning == Half::Second ? 0 : cb;
  for (int64_t j = 0; j < cb; ++j)
    for (int64_t p = 0; p < plane; ++p) {
      if (checker && in_xa(p)) continue;
      double &xb = a.v[(b_from + j) * plane + p];
      if (cp.type == CouplingType::Additive) {
        xb += h.v[j * plane + p];
        continue;
      }
      int64_t tc = 0, rc = 0;
      switch (cp.split) {
        case ShiftScaleSplit::ShiftScaleHalves:
          tc = j, rc = cb + j;
          break;
        case ShiftScaleSplit::ScaleShiftHalves:
          rc = j, tc = cb + j;
          break;
        case ShiftScaleSplit::ShiftScaleInterleaved:
          tc = 2 * j, rc = 2 * j + 1;
          break;
        case ShiftScaleSplit::ScaleShiftInterleaved:
          rc = 2 * j, tc = 2 * j + 1;
          break;
      }
      const double t = h.v[tc * plane + p];
      const double raw = h.v[rc * plane + p] + cp.scale_bias;
      double s = 0;
      if (cp.scale_fn == ScaleFunction::Sigmoid)
        s = 1.0 / (1.0 + std::exp(-raw));
      else if (cp.scale_fn == ScaleFunction::Exp)
        s = std::exp(raw);
      else
        s = std::exp(static_cast<double>(cp.scale_weight[j]) * std::tanh(raw));
      xb = cp.form == AffineForm::ShiftThenScale ? (xb + t) * s : xb * s + t;
    }
}

struct NaiveResult {
  std::vector<double> z;              // per schema: latents in the order they leave
  std::vector<double> mean, log_std;  // each latent element's prior
  double log_prior = 0;               // sum of log N(z; mean, std^2)
};

inline double log_normal(double z, double mean, double log_std) {
  const double d = (z - mean) * std::exp(-log_std);
  constexpr double kPi = 3.14159265358979323846;
  return -0.5 * std::log(2 * kPi) - log_std - 0.5 * d * d;
}

// Encodes one image x (C*H*W) with the format's definitions. label < 0: unconditional.
inline NaiveResult naive_encode(const Graph &g, const std::vector<double> &x, int label = -1) {
  Act a{g.image.channels, g.image.height, g.image.width, x};
  NaiveResult r;
  const size_t dims = static_cast<size_t>(g.dims());
  r.z.assign(dims, 0.0);
  r.mean.assign(dims, 0.0);
  r.log_std.assign(dims, 0.0);
  size_t offset = 0;
  auto emit = [&](const Act &latent, const std::vector<double> &mean,
                  const std::vector<double> &log_std) {
    for (size_t k = 0; k < latent.v.size(); ++k) {
      r.z[offset + k] = latent.v[k];
      r.mean[offset + k] = mean[k];
      r.log_std[offset + k] = log_std[k];
      r.log_prior += log_normal(latent.v[k], mean[k], log_std[k]);
    }
    offset += latent.v.size();
  };
  for (const Layer &layer : g.layers) {
    const int64_t plane = a.h * a.w;
    if (const auto *sq = std::get_if<SqueezeLayer>(&layer.op)) {
      Act o{a.c * 4, a.h / 2, a.w / 2, std::vector<double>(a.v.size())};
      for (int64_t ch = 0; ch < a.c; ++ch)
        for (int64_t y = 0; y < a.h; ++y)
          for (int64_t xx = 0; xx < a.w; ++xx) {
            const int64_t i = y % 2, j = xx % 2;
            const int64_t oc = sq->order == SqueezeOrder::ChannelMajor ? ch * 4 + 2 * i + j
                                                                       : (2 * i + j) * a.c + ch;
            o.at(oc, y / 2, xx / 2) = a.at(ch, y, xx);
          }
      a = std::move(o);
    } else if (const auto *an = std::get_if<ActNormLayer>(&layer.op)) {
      for (int64_t ch = 0; ch < a.c; ++ch)
        for (int64_t p = 0; p < plane; ++p)
          a.v[ch * plane + p] = an->scale[ch] * (a.v[ch * plane + p] + an->bias[ch]);
    } else if (const auto *ic = std::get_if<InvConvLayer>(&layer.op)) {
      const std::vector<double> w = naive_invconv_weight(*ic, a.c);
      Act o = a;
      for (int64_t oc = 0; oc < a.c; ++oc)
        for (int64_t p = 0; p < plane; ++p) {
          double acc = 0;
          for (int64_t i = 0; i < a.c; ++i) acc += w[oc * a.c + i] * a.v[i * plane + p];
          o.v[oc * plane + p] = acc;
        }
      a = std::move(o);
    } else if (const auto *pm = std::get_if<PermuteLayer>(&layer.op)) {
      Act o = a;
      for (int64_t ch = 0; ch < a.c; ++ch) {
        const int64_t src = pm->kind == PermuteKind::Reverse ? a.c - 1 - ch : pm->indices[ch];
        for (int64_t p = 0; p < plane; ++p) o.v[ch * plane + p] = a.v[src * plane + p];
      }
      a = std::move(o);
    } else if (const auto *cp = std::get_if<CouplingLayer>(&layer.op)) {
      naive_coupling(*cp, a);
    } else if (const auto *lg = std::get_if<LogitLayer>(&layer.op)) {
      const double alpha = lg->alpha;
      for (double &v : a.v) {
        const double u = alpha + (1 - 2 * alpha) * (v + 0.5);
        v = std::log(u / (1 - u));
      }
    } else if (std::holds_alternative<FlattenLayer>(layer.op)) {
      a = Act{a.c * a.h * a.w, 1, 1, std::move(a.v)};
    } else if (const auto *bn = std::get_if<BatchNormLayer>(&layer.op)) {
      // What every file and the runtime hold for it: the actnorm of its running statistics.
      const ActNormLayer an = bn->as_actnorm();
      for (int64_t ch = 0; ch < a.c; ++ch)
        for (int64_t p = 0; p < plane; ++p)
          a.v[ch * plane + p] = an.scale[ch] * (a.v[ch * plane + p] + an.bias[ch]);
    } else if (const auto *sp = std::get_if<SplitLayer>(&layer.op)) {
      const int64_t cz = a.c / 2;
      const Act leave = channels_of(a, sp->leaving == Half::First ? 0 : cz, cz);
      const Act keep = channels_of(a, sp->leaving == Half::First ? cz : 0, cz);
      std::vector<double> mean(leave.v.size(), 0.0), log_std(leave.v.size(), 0.0);
      if (!sp->prior.empty()) {
        const Act o = naive_net(sp->prior, keep);
        for (int64_t j = 0; j < cz; ++j) {
          const int64_t mc = sp->layout == PriorLayout::MeanLogstdHalves ? j : 2 * j;
          const int64_t lc = sp->layout == PriorLayout::MeanLogstdHalves ? cz + j : 2 * j + 1;
          for (int64_t p = 0; p < plane; ++p) {
            mean[j * plane + p] = o.v[mc * plane + p];
            log_std[j * plane + p] = o.v[lc * plane + p];
          }
        }
      }
      emit(leave, mean, log_std);
      a = keep;
    } else if (const auto *tp = std::get_if<TopPriorLayer>(&layer.op)) {
      std::vector<double> mean(a.v.size(), 0.0), log_std(a.v.size(), 0.0);
      for (int64_t ch = 0; ch < a.c; ++ch)
        for (int64_t p = 0; p < plane; ++p) {
          const int64_t k = ch * plane + p;
          if (tp->kind == TopPriorKind::Learned) {
            mean[k] = tp->mean[k];
            log_std[k] = tp->log_std[k];
          }
          if (label >= 0 && tp->n_classes() > 0) {
            mean[k] += tp->class_offsets[label * 2 * a.c + ch];
            log_std[k] += tp->class_offsets[label * 2 * a.c + a.c + ch];
          }
        }
      emit(a, mean, log_std);
    }
  }
  return r;
}

// ---- Comparisons ------------------------------------------------------------------------------

// A measured error for messages: "3.1e-13".
inline std::string sci(double v) {
  char buf[32];
  std::snprintf(buf, sizeof buf, "%.1e", v);
  return buf;
}

template <typename A, typename B>
double max_abs_diff(const A &a, const B &b) {
  double m = 0;
  for (size_t i = 0; i < a.size(); ++i)
    m = std::max(m, std::fabs(static_cast<double>(a[i]) - static_cast<double>(b[i])));
  return m;
}

template <typename A>
double max_abs(const A &a) {
  double m = 0;
  for (const auto &v : a) m = std::max(m, std::fabs(static_cast<double>(v)));
  return m;
}

// |a - b| / max(|b|, floor): a relative error that stays meaningful when b is (near) zero.
inline double rel_err(double a, double b, double floor = 1.0) {
  return std::fabs(a - b) / std::max(std::fabs(b), floor);
}

}  // namespace flowrt::test
