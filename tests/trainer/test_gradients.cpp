// The trainer's backward passes against central finite differences in double precision, and its
// forward pass against the runtime's reference executor, on tiny models covering every layer
// and option of the format.
#include <doctest/doctest.h>

#include <algorithm>
#include <cmath>
#include <string>
#include <vector>

#include "backends/ref/ref_executor.hpp"
#include "gradient_check.hpp"
#include "layers/squeeze.hpp"
#include "tiny_models.hpp"
#include "trainer/model/train_model.hpp"

TEST_SUITE_BEGIN("trainer");

namespace flowrt {
namespace {

using train::TrainModel;

constexpr int64_t kBatch = 3;

std::vector<int32_t> labels_for(const test::TinyVariant &v) {
  std::vector<int32_t> y;
  for (int64_t i = 0; i < kBatch; ++i)
    y.push_back(v.classes ? static_cast<int32_t>(i % v.classes) : -1);
  return y;
}

void check_gradients(TrainModel<double> &model, const std::vector<double> &x,
                     const std::vector<int32_t> &labels) {
  test::check_gradients(model, x, labels, test::GradCheckOptions{kBatch});
}

// Bits/dim of the runtime's reference executor in double (unfolded and folded).
std::vector<double> runtime_bpd(const Graph &g, const std::vector<double> &x,
                                const std::vector<int32_t> &labels, bool fold) {
  RefExecutor<double> ex(g, kBatch, 1, fold);
  std::vector<double> z(x.size()), log_p(kBatch), bpd(kBatch);
  ex.encode(kBatch, x.data(), labels[0] >= 0 ? labels.data() : nullptr, z.data(), log_p.data(),
            nullptr);
  for (int64_t i = 0; i < kBatch; ++i)
    bpd[i] = g.image.n_bits - log_p[i] / (static_cast<double>(g.dims()) * std::log(2.0));
  return bpd;
}

// Recompute mode runs the nets again in backward on the stored layer inputs: the same gradients,
// bit for bit (also through data-dependent initialisation).
void check_recompute(const Graph &g, const std::vector<double> &x,
                     const std::vector<int32_t> &labels) {
  TrainModel<double> tape(g), again(g);
  again.set_recompute(true);
  const int32_t *lab = labels[0] >= 0 ? labels.data() : nullptr;
  for (bool init : {true, false})
    for (TrainModel<double> *m : {&tape, &again}) {
      m->forward(x.data(), lab, kBatch, init);
      m->backward();
    }
  CHECK(tape.params().values() == again.params().values());
  CHECK(tape.params().grads() == again.params().grads());
  CHECK(tape.bits_per_dim() == again.bits_per_dim());
}

void check_variant(const test::TinyVariant &v) {
  const Graph g = test::tiny_graph(v);
  const std::vector<double> x = test::random_images(g, kBatch, 11);
  const std::vector<int32_t> labels = labels_for(v);
  TrainModel<double> model(g);
  model.forward(x.data(), labels[0] >= 0 ? labels.data() : nullptr, kBatch, false);
  for (bool fold : {false, true}) {
    const std::vector<double> ref = runtime_bpd(g, x, labels, fold);
    for (int64_t i = 0; i < kBatch; ++i)
      CHECK(std::fabs(model.bits_per_dim()[i] - ref[i]) <= 1e-10);
  }
  check_gradients(model, x, labels);
  check_recompute(g, x, labels);
}

}  // namespace

TEST_CASE("trainer gradients: Glow defaults (affine sigmoid, LU 1x1, learned priors)") {
  check_variant({});
}

TEST_CASE("trainer gradients: additive coupling, dense 1x1 conv") {
  test::TinyVariant v;
  v.coupling = CouplingType::Additive;
  v.permutation = Permutation::Dense;
  v.channels = 2, v.size = 4, v.levels = 1;
  check_variant(v);
  v.levels = 2, v.channels = 1, v.size = 8;
  check_variant(v);
}

TEST_CASE("trainer gradients: RealNVP-style exp scale, scale-then-shift, reverse, second half") {
  test::TinyVariant v;
  v.scale_fn = ScaleFunction::Exp;
  v.form = AffineForm::ScaleThenShift;
  v.split = ShiftScaleSplit::ShiftScaleInterleaved;
  v.conditioning = Half::Second;
  v.permutation = Permutation::Reverse;
  v.padding = PaddingMode::Constant;
  v.leaving = Half::First;
  v.layout = PriorLayout::MeanLogstdInterleaved;
  v.squeeze = SqueezeOrder::SubpixelMajor;
  check_variant(v);
}

TEST_CASE("trainer gradients: edge-channel padding, net actnorm, shuffle, standard normal priors") {
  test::TinyVariant v;
  v.split = ShiftScaleSplit::ShiftScaleHalves;
  v.padding = PaddingMode::EdgeChannel;
  v.net_actnorm = true;
  v.permutation = Permutation::Shuffle;
  v.empty_split_prior = true;
  v.top = TopPriorKind::StandardNormal;
  check_variant(v);
}

TEST_CASE("trainer gradients: residual connections in coupling nets and split priors") {
  // Sources at a ReLU's input, after an add and at a prior's own input; adds before a ReLU; with
  // and without the actnorm after the first conv (which moves every source by one).
  test::TinyVariant v;
  v.residual = true;
  check_variant(v);
  v.net_actnorm = true;
  v.padding = PaddingMode::Constant;
  check_variant(v);
}

TEST_CASE("trainer gradients: scale-shift interleaved, class-conditional top prior") {
  test::TinyVariant v;
  v.split = ShiftScaleSplit::ScaleShiftInterleaved;
  v.classes = 3;
  v.channels = 2, v.size = 4;
  check_variant(v);
}

TEST_CASE("trainer data-dependent init: actnorm outputs are standardised, gradients hold after") {
  test::TinyVariant v;
  v.net_actnorm = true;
  const Graph g = test::tiny_graph(v);
  const std::vector<double> x = test::random_images(g, kBatch, 5);
  TrainModel<double> model(g);
  model.forward(x.data(), nullptr, kBatch, true);
  const Graph after = model.export_graph(model.params().values());
  // The first actnorm sees the squeezed image: its init must standardise every channel.
  const Shape3 in = g.layers[0].in, sq = g.layers[0].out;
  std::vector<double> s(static_cast<size_t>(kBatch * sq.numel()));
  for (int64_t b = 0; b < kBatch; ++b)
    layers::squeeze(SqueezeOrder::ChannelMajor, in, x.data() + b * in.numel(),
                    s.data() + b * sq.numel(), false);
  const auto &an = std::get<ActNormLayer>(after.layers[1].op);
  for (int64_t c = 0; c < sq.c; ++c) {
    double mean = 0, var = 0;
    const double n = static_cast<double>(kBatch * sq.plane());
    for (int64_t b = 0; b < kBatch; ++b)
      for (int64_t p = 0; p < sq.plane(); ++p) mean += s[(b * sq.c + c) * sq.plane() + p] / n;
    for (int64_t b = 0; b < kBatch; ++b)
      for (int64_t p = 0; p < sq.plane(); ++p) {
        const double d = s[(b * sq.c + c) * sq.plane() + p] - mean;
        var += d * d / n;
      }
    CHECK(an.bias[c] == doctest::Approx(-mean).epsilon(1e-6));
    CHECK(an.scale[c] == doctest::Approx(1.0 / (std::sqrt(var) + 1e-6)).epsilon(1e-6));
  }
  // The init changed the model (not the identity any more), and the exported graph scores the
  // same as the trainer on another batch.
  const std::vector<double> x2 = test::random_images(g, kBatch, 6);
  const double loss = model.forward(x2.data(), nullptr, kBatch, false);
  const std::vector<double> ref = runtime_bpd(after, x2, {-1}, false);
  double mean_ref = 0;
  for (double r : ref) mean_ref += r / kBatch;
  CHECK(loss == doctest::Approx(mean_ref).epsilon(1e-6));  // float export of the init values
  // The loss after init as a function of every parameter.
  check_gradients(model, x2, {-1});
}

}  // namespace flowrt

TEST_SUITE_END();
