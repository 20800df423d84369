// The trainer on the RealNVP / NICE layers of format 1.1: checkerboard couplings, the tanh scale,
// the logit and flatten layers and batch norm. Backward passes against central finite
// differences in double (parameters and input), batch norm's train and eval modes, the
// builders' whole models, and the exported models against the runtime's reference executor.
#include <doctest/doctest.h>

#include <cmath>
#include <random>
#include <string>
#include <vector>

#include "backends/ref/ref_executor.hpp"
#include "core/error.hpp"
#include "format/flow_file.hpp"
#include "gradient_check.hpp"
#include "model/builder_support.hpp"
#include "model/finalize.hpp"
#include "model/nice_builder.hpp"
#include "model/realnvp_builder.hpp"
#include "tiny_models.hpp"
#include "trainer/model/train_model.hpp"
#ifdef FLOWRT_TRAIN_CUDA
#include "trainer/cuda/cuda_train_model.hpp"
#endif

TEST_SUITE_BEGIN("trainer");

namespace flowrt {
namespace {

using train::Mode;
using train::TrainModel;

constexpr int64_t kBatch = 3;
const double kHalfLog2Pi = 0.5 * std::log(2 * std::acos(-1.0));

// conv 3x3 -> ReLU -> conv 1x1 -> ReLU -> conv 3x3 with O(1) random weights and biases (no
// parameter sits on a ReLU kink).
Net random_net(std::mt19937 &rng, int64_t in, int64_t hidden, int64_t out) {
  auto conv = [&](int64_t o, int64_t i, int64_t k) {
    const double scale = 2.0 / std::sqrt(static_cast<double>(i * k * k));
    return Conv2dOp{
        Tensor::from_vector({o, i, k, k}, test::random_values(rng, o * i * k * k, scale)),
        Tensor::from_vector({o}, test::random_values(rng, o, 0.4)), PaddingMode::Zeros, 0.f};
  };
  Net net;
  net.ops = {conv(hidden, in, 3), ReluOp{}, conv(hidden, hidden, 1), ReluOp{},
             conv(out, hidden, 3)};
  return net;
}

// Random positive values exp(N(0, s)) as a tensor.
Tensor positive(std::mt19937 &rng, int64_t n, double s) {
  std::vector<float> v = test::random_values(rng, static_cast<size_t>(n), 2 * s);
  for (float &x : v) x = std::exp(x);
  return Tensor::from_vector({n}, std::move(v));
}

struct CouplingSpec {
  Half cond = Half::CheckerboardEven;
  bool mask_channel = true;
  CouplingType type = CouplingType::Affine;
  ScaleFunction scale_fn = ScaleFunction::Tanh;
  ShiftScaleSplit split = ShiftScaleSplit::ShiftScaleHalves;
  AffineForm form = AffineForm::ScaleThenShift;
};

CouplingLayer coupling(std::mt19937 &rng, const CouplingSpec &s, int64_t c) {
  CouplingLayer cp;
  cp.type = s.type;
  cp.conditioning = s.cond;
  cp.mask_channel = is_checkerboard(s.cond) && s.mask_channel;
  cp.split = s.split;
  cp.scale_fn = s.scale_fn;
  cp.form = s.form;
  cp.scale_bias = s.scale_fn == ScaleFunction::Sigmoid ? 2.f : 0.3f;
  const int64_t cb = cp.transformed_channels(c);
  cp.net =
      random_net(rng, cp.net_input_channels(c), 4, s.type == CouplingType::Affine ? 2 * cb : cb);
  if (s.type == CouplingType::Affine && s.scale_fn == ScaleFunction::Tanh) {
    std::vector<float> w = test::random_values(rng, static_cast<size_t>(cb), 1.0);
    for (float &x : w) x += 1.f;  // in (0.5, 1.5)
    cp.scale_weight = Tensor::from_vector({cb}, std::move(w));
  }
  return cp;
}

// Random statistics and affine, channel 0's gamma negative (the sign is kept in training).
BatchNormLayer batchnorm(std::mt19937 &rng, int64_t c) {
  BatchNormLayer bn;
  std::vector<float> g = positive(rng, c, 0.2).to_vector();
  g[0] = -g[0];
  bn.gamma = Tensor::from_vector({c}, std::move(g));
  bn.beta = Tensor::from_vector({c}, test::random_values(rng, c, 0.4));
  bn.running_mean = Tensor::from_vector({c}, test::random_values(rng, c, 0.4));
  bn.running_var = positive(rng, c, 0.3);
  return bn;
}

Graph finish(Graph g) {
  TopPriorLayer top;
  top.kind = TopPriorKind::StandardNormal;
  build::add_layer(g, "top_prior", std::move(top));
  g.format_minor = g.required_format_minor();
  finalize_graph(g);
  return g;
}

Graph empty_graph(int64_t c, int64_t h, int64_t w) {
  Graph g;
  g.image = {c, h, w, 8};
  return g;
}

// The checkerboard phase opposite to `h` (or the other channel half).
Half other(Half h) {
  switch (h) {
    case Half::First:
      return Half::Second;
    case Half::Second:
      return Half::First;
    case Half::CheckerboardEven:
      return Half::CheckerboardOdd;
    case Half::CheckerboardOdd:
      return Half::CheckerboardEven;
  }
  return h;
}

// Two couplings of alternating halves (so that both x_a's and x_b's gradients pass through a
// net), of the given kind, at C x 4 x 4.
Graph coupling_pair(const CouplingSpec &s, int64_t c, uint32_t seed) {
  std::mt19937 rng(seed);
  Graph g = empty_graph(c, 4, 4);
  CouplingSpec second = s;
  second.cond = other(s.cond);
  build::add_layer(g, "c0", coupling(rng, s, c));
  build::add_layer(g, "c1", coupling(rng, second, c));
  return finish(std::move(g));
}

test::GradCheckResult check_model(const Graph &g, uint32_t seed, bool input = true) {
  const std::vector<double> x = test::random_images(g, kBatch, seed);
  TrainModel<double> model(g);
  test::GradCheckOptions o;
  o.batch = kBatch;
  o.input = input;
  return test::check_gradients(model, x, {}, o);
}

// The whole-model builders with O(1) random nets. RealNVP: 2 scales at 8x8, `couplings` of each
// kind per scale.
Graph tiny_realnvp(int64_t channels, uint64_t seed, int hidden = 8, int couplings = 2) {
  RealNvpConfig r;
  r.channels = channels, r.height = r.width = 8;
  r.scales = 2, r.hidden = hidden;
  r.checkerboard = r.channelwise = r.final_checkerboard = couplings;
  r.seed = seed;
  r.random_nets = true;
  Graph g = build_realnvp(r);
  std::mt19937 rng(static_cast<uint32_t>(seed));
  for (Layer &l : g.layers)
    if (auto *c = std::get_if<CouplingLayer>(&l.op)) test::rewrite_net(c->net, {}, rng);
  finalize_graph(g);
  return g;
}

Graph tiny_nice(uint64_t seed) {
  NiceConfig n;
  n.channels = 1, n.height = n.width = 4;
  n.couplings = 4, n.hidden = 16, n.hidden_layers = 2;
  n.seed = seed;
  n.random_nets = true;
  Graph g = build_nice(n);
  std::mt19937 rng(static_cast<uint32_t>(seed));
  for (Layer &l : g.layers)
    if (auto *c = std::get_if<CouplingLayer>(&l.op)) test::rewrite_net(c->net, {}, rng);
  finalize_graph(g);
  return g;
}

// The graph with every batch norm replaced by the actnorm a file holds for it.
Graph folded(const Graph &g) {
  Graph out = g;
  for (Layer &l : out.layers)
    if (auto *bn = std::get_if<BatchNormLayer>(&l.op)) l.op = bn->as_actnorm();
  finalize_graph(out);
  return out;
}

// Bits/dim of each image by the runtime's reference executor (unfolded).
template <typename T>
std::vector<double> runtime_bpd(const Graph &g, const std::vector<T> &x) {
  RefExecutor<T> ex(g, kBatch, 1, false);
  std::vector<T> z(x.size());
  std::vector<double> log_p(kBatch), bpd(kBatch);
  ex.encode(kBatch, x.data(), nullptr, z.data(), log_p.data(), nullptr);
  for (int64_t i = 0; i < kBatch; ++i)
    bpd[i] = g.image.n_bits - log_p[i] / (static_cast<double>(g.dims()) * std::log(2.0));
  return bpd;
}

}  // namespace

TEST_CASE("trainer gradients: checkerboard couplings (phases, mask channel, additive/affine)") {
  double worst_p = 0, worst_x = 0;
  uint32_t seed = 40;
  for (Half phase : {Half::CheckerboardEven, Half::CheckerboardOdd})
    for (bool mask : {true, false})
      for (int kind = 0; kind < 4; ++kind) {
        CouplingSpec s;
        s.cond = phase;
        s.mask_channel = mask;
        if (kind == 0) {
          s.type = CouplingType::Additive;
        } else {
          s.scale_fn = kind == 1   ? ScaleFunction::Sigmoid
                       : kind == 2 ? ScaleFunction::Exp
                                   : ScaleFunction::Tanh;
          s.form = kind == 1 ? AffineForm::ShiftThenScale : AffineForm::ScaleThenShift;
          s.split = kind == 2 ? ShiftScaleSplit::ScaleShiftInterleaved
                              : ShiftScaleSplit::ShiftScaleHalves;
        }
        CAPTURE(static_cast<int>(phase));
        CAPTURE(mask);
        CAPTURE(kind);
        const test::GradCheckResult r = check_model(coupling_pair(s, 2, seed), seed + 1);
        worst_p = std::max(worst_p, r.params);
        worst_x = std::max(worst_x, r.input);
        ++seed;
      }
  MESSAGE("checkerboard: largest relative FD error " << worst_p << " (parameters), " << worst_x
                                                     << " (input)");
}

TEST_CASE("trainer checkerboard: x_a passes unchanged, log|det| counts only x_b's positions") {
  CouplingSpec s;
  std::mt19937 rng(3);
  Graph g = empty_graph(2, 4, 4);
  build::add_layer(g, "c0", coupling(rng, s, 2));
  g = finish(std::move(g));
  const std::vector<double> x = test::random_images(g, kBatch, 9);
  TrainModel<double> model(g);
  model.forward(x.data(), nullptr, kBatch, false);
  const TrainModel<double>::Layer &l = model.layers()[0];
  // EVEN: m = 1 (x_a) where (i + j) is even.
  for (int64_t i = 0; i < 4; ++i)
    for (int64_t j = 0; j < 4; ++j) CHECK(l.active[i * 4 + j] == ((i + j) % 2 == 1 ? 1 : 0));
  // The net's input zeroes x_b's positions and adds the mask channel.
  const std::vector<double> &in = l.net.bufs[0];
  REQUIRE(in.size() == static_cast<size_t>(3 * kBatch * 16));
  for (int64_t b = 0; b < kBatch; ++b)
    for (int64_t p = 0; p < 16; ++p) {
      const double m = l.active[p] ? 0.0 : 1.0;
      for (int64_t c = 0; c < 2; ++c)
        CHECK(in[(c * kBatch + b) * 16 + p] == x[(b * 2 + c) * 16 + p] * m);
      CHECK(in[(2 * kBatch + b) * 16 + p] == m);
    }
  // Bits/dim from the contract's formula: y = x * s + t at m = 0 with log s = w tanh(raw).
  const std::vector<double> &h = l.h;
  const auto &cp = std::get<CouplingLayer>(g.layers[0].op);
  for (int64_t b = 0; b < kBatch; ++b) {
    double lp = 0;
    for (int64_t c = 0; c < 2; ++c)
      for (int64_t p = 0; p < 16; ++p) {
        double y = x[(b * 2 + c) * 16 + p];
        if (l.active[p]) {
          const double t = h[(b * 4 + c) * 16 + p], raw = h[(b * 4 + 2 + c) * 16 + p];
          const double log_s = cp.scale_weight[c] * std::tanh(raw + cp.scale_bias);
          y = y * std::exp(log_s) + t;
          lp += log_s;
        }
        lp += -kHalfLog2Pi - 0.5 * y * y;
      }
    CHECK(model.log_p()[b] == doctest::Approx(lp).epsilon(1e-12));
  }
}

TEST_CASE("trainer gradients: the tanh scale on channel couplings") {
  double worst = 0;
  uint32_t seed = 70;
  for (AffineForm form : {AffineForm::ScaleThenShift, AffineForm::ShiftThenScale})
    for (ShiftScaleSplit split :
         {ShiftScaleSplit::ShiftScaleHalves, ShiftScaleSplit::ScaleShiftInterleaved}) {
      CouplingSpec s;
      s.cond = Half::First;
      s.form = form;
      s.split = split;
      const test::GradCheckResult r = check_model(coupling_pair(s, 4, seed), seed + 1);
      worst = std::max({worst, r.params, r.input});
      ++seed;
    }
  MESSAGE("tanh channel couplings: largest relative FD error " << worst);
}

TEST_CASE("trainer logit layer: the contract's log|det|, gradients to the input") {
  Graph g = empty_graph(1, 4, 4);
  build::add_layer(g, "logit", LogitLayer{0.05f});
  const Graph alone = finish(g);
  const std::vector<double> x = test::random_images(alone, kBatch, 2);
  TrainModel<double> model(alone);
  model.forward(x.data(), nullptr, kBatch, false);
  const double a = static_cast<double>(0.05f);
  for (int64_t b = 0; b < kBatch; ++b) {
    double lp = 0;
    for (int64_t k = 0; k < 16; ++k) {
      const double u = a + (1 - 2 * a) * (x[b * 16 + k] + 0.5);
      const double y = std::log(u) - std::log(1 - u);
      lp += std::log(1 - 2 * a) - std::log(u) - std::log(1 - u);
      lp += -kHalfLog2Pi - 0.5 * y * y;
    }
    CHECK(model.log_p()[b] == doctest::Approx(lp).epsilon(1e-12));
  }
  check_model(alone, 3);
  // Followed by a checkerboard coupling: the input gradient also through its net.
  std::mt19937 rng(5);
  build::add_layer(g, "c0", coupling(rng, CouplingSpec{}, 1));
  const test::GradCheckResult r = check_model(finish(g), 4);
  MESSAGE("logit: largest relative FD error " << std::max(r.params, r.input));
}

TEST_CASE("trainer gradients: batch norm in train mode, through the batch statistics") {
  std::mt19937 rng(8);
  Graph g = empty_graph(2, 4, 4);
  build::add_layer(g, "bn0", batchnorm(rng, 2));
  build::add_layer(g, "c0", coupling(rng, CouplingSpec{}, 2));
  build::add_layer(g, "bn1", batchnorm(rng, 2));
  CouplingSpec ch;
  ch.cond = Half::Second;
  build::add_layer(g, "c1", coupling(rng, ch, 2));
  build::add_layer(g, "bn2", batchnorm(rng, 2));
  g = finish(std::move(g));
  const test::GradCheckResult r = check_model(g, 10);
  MESSAGE("batch norm (train): largest relative FD error " << r.params << " (parameters), "
                                                           << r.input << " (input)");
  // Eval mode: a fixed affine of the running averages (which take no gradient).
  const std::vector<double> x = test::random_images(g, kBatch, 11);
  TrainModel<double> model(g);
  model.set_mode(Mode::Eval);
  test::GradCheckOptions o;
  o.batch = kBatch;
  o.input = true;
  o.skip_running_stats = true;
  const test::GradCheckResult e = test::check_gradients(model, x, {}, o);
  MESSAGE("batch norm (eval): largest relative FD error " << std::max(e.params, e.input));
}

TEST_CASE("trainer batch norm: running averages in train mode only; eval is the file's actnorm") {
  std::mt19937 rng(12);
  Graph g = empty_graph(2, 4, 4);
  BatchNormLayer bn0 = batchnorm(rng, 2);
  const float momentum = bn0.momentum;
  build::add_layer(g, "bn0", bn0);
  build::add_layer(g, "c0", coupling(rng, CouplingSpec{}, 2));
  build::add_layer(g, "bn1", batchnorm(rng, 2));
  g = finish(std::move(g));
  const std::vector<double> x = test::random_images(g, kBatch, 13);
  TrainModel<double> model(g);
  const auto &info = model.params().info();
  auto offset = [&](const std::string &name) {
    for (const train::ParamInfo &p : info)
      if (p.name == name) return p.offset;
    FAIL("no parameter " << name);
    return size_t{0};
  };
  auto param = [&](const std::string &name) { return &model.params().values()[offset(name)]; };
  const std::vector<double> before = model.params().values();
  // Data-dependent initialisation and eval mode leave the running averages alone.
  model.forward(x.data(), nullptr, kBatch, true);
  CHECK(model.params().values() == before);
  model.set_mode(Mode::Eval);
  const double eval_bpd = model.forward(x.data(), nullptr, kBatch, false);
  CHECK(model.params().values() == before);
  // Train mode: running = (1 - momentum) running + momentum batch, the unbiased variance (bn0
  // sees the images themselves).
  model.set_mode(Mode::Train);
  const double train_bpd = model.forward(x.data(), nullptr, kBatch, false);
  CHECK(std::fabs(train_bpd - eval_bpd) > 1e-3);  // batch statistics, not the running ones
  for (int64_t c = 0; c < 2; ++c) {
    double mean = 0, ss = 0;
    const double n = kBatch * 16;
    for (int64_t b = 0; b < kBatch; ++b)
      for (int64_t p = 0; p < 16; ++p) mean += x[(b * 2 + c) * 16 + p] / n;
    for (int64_t b = 0; b < kBatch; ++b)
      for (int64_t p = 0; p < 16; ++p) ss += std::pow(x[(b * 2 + c) * 16 + p] - mean, 2);
    const double m = momentum;
    CHECK(param("bn0.running_mean")[c] ==
          doctest::Approx((1 - m) * bn0.running_mean[c] + m * mean).epsilon(1e-12));
    CHECK(param("bn0.running_var")[c] ==
          doctest::Approx((1 - m) * bn0.running_var[c] + m * ss / (n - 1)).epsilon(1e-12));
  }
  CHECK(param("bn1.running_mean")[0] != before[offset("bn1.running_mean")]);
  // Eval mode equals the graph with each batch norm folded into the actnorm a file holds (its
  // float rounding apart), and the export holds the running averages.
  model.set_mode(Mode::Eval);
  model.forward(x.data(), nullptr, kBatch, false);
  const std::vector<double> eval = model.bits_per_dim();
  const Graph exported = model.export_graph(model.params().values());
  TrainModel<double> act(folded(exported));
  act.forward(x.data(), nullptr, kBatch, false);
  for (int64_t b = 0; b < kBatch; ++b) CHECK(std::fabs(eval[b] - act.bits_per_dim()[b]) <= 1e-6);
  const auto &e0 = std::get<BatchNormLayer>(exported.layers[0].op);
  CHECK(e0.running_mean[0] == static_cast<float>(param("bn0.running_mean")[0]));
  CHECK(e0.gamma[0] < 0);
}

TEST_CASE("trainer gradients: a tiny RealNVP and a tiny NICE from the builders") {
  // 3 channels at a smaller width and one coupling of each kind: the same layers, fewer
  // parameters to difference.
  for (int64_t channels : {1, 3}) {
    CAPTURE(channels);
    const Graph g = channels == 1 ? tiny_realnvp(1, 21) : tiny_realnvp(3, 24, 4, 1);
    const test::GradCheckResult r = check_model(g, 21);
    MESSAGE("RealNVP " << channels << "x8x8: largest relative FD error " << r.params
                       << " (parameters), " << r.input << " (input)");
  }
  const test::GradCheckResult n = check_model(tiny_nice(30), 31);
  MESSAGE("NICE 1x4x4: largest relative FD error " << n.params << " (parameters), " << n.input
                                                   << " (input)");
}

TEST_CASE("trainer recompute: checkerboard, logit, batch norm and NICE give the tape's bits") {
  for (const Graph &g : {tiny_realnvp(1, 40), tiny_nice(41)}) {
    const std::vector<double> x = test::random_images(g, kBatch, 42);
    TrainModel<double> tape(g), again(g);
    again.set_recompute(true);
    for (bool init : {true, false})
      for (TrainModel<double> *m : {&tape, &again}) {
        m->forward(x.data(), nullptr, kBatch, init);
        m->backward();
      }
    CHECK(tape.params().values() == again.params().values());
    CHECK(tape.params().grads() == again.params().grads());
    CHECK(tape.input_grad() == again.input_grad());
  }
}

TEST_CASE("trainer data init: batch norms and NICE's per-pixel scaling are left alone") {
  // NICE's scaling is an actnorm on a 1x1 grid: one pixel per channel, no statistics to take
  // from a batch. A flatten-free actnorm of the same data is still initialised.
  NiceConfig n;
  n.channels = 1, n.height = n.width = 4, n.hidden = 8, n.hidden_layers = 1;
  const Graph nice = build_nice(n);
  const std::vector<double> x = test::random_images(nice, 8, 50);
  TrainModel<double> m(nice);
  const std::vector<double> nice_before = m.params().values();
  CHECK(std::isfinite(m.forward(x.data(), nullptr, 8, true)));
  CHECK(m.params().values() == nice_before);
  Graph spatial = empty_graph(1, 4, 4);
  build::add_layer(spatial, "an",
                   ActNormLayer{Tensor::from_vector({1}, {0.f}), Tensor::from_vector({1}, {1.f})});
  TrainModel<double> s(finish(spatial));
  s.forward(x.data(), nullptr, 8, true);
  double mean = 0;
  for (double v : x) mean += v / static_cast<double>(x.size());
  CHECK(s.params().values()[0] == doctest::Approx(-mean).epsilon(1e-9));
  RealNvpConfig r;
  r.height = r.width = 8, r.scales = 2, r.hidden = 4;
  r.res_blocks = 0;  // plain nets: no actnorm anywhere
  const Graph realnvp = build_realnvp(r);
  TrainModel<double> rm(realnvp);
  const std::vector<double> before = rm.params().values();
  const std::vector<double> y = test::random_images(realnvp, 4, 51);
  CHECK(std::isfinite(rm.forward(y.data(), nullptr, 4, true)));
  CHECK(rm.params().values() == before);  // no actnorm to set, batch norms untouched
}

TEST_CASE("trainer NICE: the exported model scores as the trainer, in double and in float") {
  const Graph g = tiny_nice(60);
  const std::vector<double> x = test::random_images(g, kBatch, 61);
  TrainModel<double> model(g);
  model.forward(x.data(), nullptr, kBatch, false);
  const std::vector<double> ref = runtime_bpd(model.export_graph(model.params().values()), x);
  for (int64_t b = 0; b < kBatch; ++b) CHECK(std::fabs(model.bits_per_dim()[b] - ref[b]) <= 1e-10);
}

TEST_CASE("trainer eval mode: an exported RealNVP scores as the trainer (reference executor)") {
  std::vector<Graph> graphs = {tiny_realnvp(1, 80), tiny_realnvp(3, 81, 4, 1)};
  for (int kind = 0; kind < 4; ++kind) {  // checkerboards without batch norm or logit
    CouplingSpec s;
    s.mask_channel = kind % 2 == 0;
    if (kind == 1) s.type = CouplingType::Additive;
    if (kind == 2) s.scale_fn = ScaleFunction::Sigmoid, s.form = AffineForm::ShiftThenScale;
    if (kind == 3) s.scale_fn = ScaleFunction::Exp, s.cond = Half::CheckerboardOdd;
    graphs.push_back(coupling_pair(s, 2, 82 + kind));
  }
  for (size_t k = 0; k < graphs.size(); ++k) {
    CAPTURE(k);
    const Graph &g = graphs[k];
    const std::vector<double> x = test::random_images(g, kBatch, 90);
    // A few training steps' worth of batch statistics first, so the running averages are the
    // model's own.
    TrainModel<double> model(g);
    for (uint32_t s = 0; s < 3; ++s) {
      const std::vector<double> xs = test::random_images(g, kBatch, 91 + s);
      model.forward(xs.data(), nullptr, kBatch, false);
    }
    model.set_mode(Mode::Eval);
    model.forward(x.data(), nullptr, kBatch, false);
    const Graph exported = model.export_graph(model.params().values());
    // In double: the same map, but for the float rounding of a batch norm's folded actnorm.
    const std::vector<double> ref = runtime_bpd(exported, x);
    const bool has_bn = k < 2;
    for (int64_t b = 0; b < kBatch; ++b)
      CHECK(std::fabs(model.bits_per_dim()[b] - ref[b]) <= (has_bn ? 1e-6 : 1e-10));
    // In float, through a written file, as libflowrt scores it.
    const std::vector<uint8_t> bytes = write_flow(exported);
    const Graph file = read_flow(copy_model_bytes(bytes.data(), bytes.size()));
    for (const Layer &l : file.layers) CHECK_FALSE(std::holds_alternative<BatchNormLayer>(l.op));
    TrainModel<float> trainer(exported);
    trainer.set_mode(Mode::Eval);
    const std::vector<float> xf(x.begin(), x.end());
    trainer.forward(xf.data(), nullptr, kBatch, false);
    const std::vector<double> ref_f = runtime_bpd(file, xf);
    for (int64_t b = 0; b < kBatch; ++b)
      CHECK(std::fabs(trainer.bits_per_dim()[b] - ref_f[b]) <= 1e-5);
  }
}

TEST_CASE("trainer --device cuda: the layers the GPU trainer lacks are refused by name") {
  const Graph realnvp = tiny_realnvp(1, 70);
  try {
    train::make_train_compute(realnvp, train::Device::Cuda);
    FAIL("--device cuda accepted a RealNVP");
  } catch (const Error &e) {
    const std::string what = e.what();
    CHECK(e.status() == FLOWRT_UNSUPPORTED);
#ifdef FLOWRT_TRAIN_CUDA
    // The first such layer: the logit.
    CHECK(what.find("layer 'logit' is a logit layer") != std::string::npos);
    CHECK(what.find("--device cpu") != std::string::npos);
#else
    CHECK(what.find("without CUDA") != std::string::npos);
#endif
  }
#ifdef FLOWRT_TRAIN_CUDA
  auto refusal = [](const Graph &g) -> std::string {
    try {
      train::check_cuda_trainable(g);
    } catch (const Error &e) {
      CHECK(e.status() == FLOWRT_UNSUPPORTED);
      return e.what();
    }
    return "accepted";
  };
  std::mt19937 rng(71);
  Graph checker = empty_graph(2, 4, 4), tanh = checker, bn = checker;
  build::add_layer(checker, "c0", coupling(rng, CouplingSpec{}, 2));
  build::add_layer(tanh, "c0", coupling(rng, CouplingSpec{Half::First}, 2));
  build::add_layer(bn, "norm", batchnorm(rng, 2));
  CHECK(refusal(finish(checker)).find("layer 'c0' is a checkerboard coupling") !=
        std::string::npos);
  CHECK(refusal(finish(tanh)).find("layer 'c0' is a coupling with the tanh scale") !=
        std::string::npos);
  CHECK(refusal(finish(bn)).find("layer 'norm' is a batch norm") != std::string::npos);
  // NICE has nothing the GPU trainer lacks (flatten moves no data).
  CHECK(refusal(tiny_nice(72)) == "accepted");
#endif
}

}  // namespace flowrt

TEST_SUITE_END();
