// The CUDA trainer against the CPU trainer on tiny models covering every layer and option of
// the format: the same data-dependent initialisation, per-image bits/dim, every parameter's
// gradient (also with recompute), a few Adam steps with EMA, and the NaN/Inf guard on the
// device. Suite "cuda": skipped (exit 77) without a usable GPU. Without one, the trainer suite
// checks that --device cuda is refused by name.
#include <doctest/doctest.h>

#include <cmath>
#include <string>
#include <vector>

#include "backends/backend.hpp"
#ifdef FLOWRT_TRAIN_CUDA
#include "backends/cuda/cuda_backend.hpp"
#endif
#include "core/error.hpp"
#include "tiny_models.hpp"
#include "trainer/model/train_model.hpp"

namespace flowrt {
namespace {

using train::Adam;
using train::StepArgs;
using train::TrainCompute;
using train::TrainModel;

// The variants the CUDA suite runs: every layer kind and convention of the format.
test::TinyVariant variant(int k) {
  test::TinyVariant v;
  v.seed = 300 + k;
  switch (k) {
    case 1:
      v.coupling = CouplingType::Additive, v.permutation = Permutation::Dense;
      break;
    case 2:
      v.scale_fn = ScaleFunction::Exp, v.form = AffineForm::ScaleThenShift;
      v.split = ShiftScaleSplit::ShiftScaleHalves, v.permutation = Permutation::Reverse;
      v.conditioning = Half::Second;
      break;
    case 3:
      v.padding = PaddingMode::EdgeChannel, v.net_actnorm = true;
      v.permutation = Permutation::Shuffle, v.top = TopPriorKind::StandardNormal;
      v.empty_split_prior = true;
      break;
    case 4:
      v.split = ShiftScaleSplit::ScaleShiftInterleaved, v.classes = 3;
      v.leaving = Half::First, v.layout = PriorLayout::MeanLogstdInterleaved;
      v.squeeze = SqueezeOrder::SubpixelMajor;
      break;
    case 5:
      v.padding = PaddingMode::Constant, v.channels = 3, v.levels = 3, v.depth = 1;
      v.split = ShiftScaleSplit::ShiftScaleInterleaved;
      break;
    default:
      break;
  }
  return v;
}

TEST_CASE("trainer --device cuda: refused by name without a usable device" *
          doctest::test_suite("trainer")) {
  // The suite's variants are valid models (the CPU trainer runs them).
  for (int k = 0; k < 6; ++k) {
    const Graph v = test::tiny_graph(variant(k));
    TrainModel<float> m(v);
    const std::vector<double> x = test::random_images(v, 2, 1);
    const std::vector<float> xf(x.begin(), x.end());
    CHECK(std::isfinite(m.forward(xf.data(), nullptr, 2, true)));
  }
  const Graph g = test::tiny_graph(test::TinyVariant{});
#ifdef FLOWRT_TRAIN_CUDA
  if (cuda_device_available(0)) {
    MESSAGE("a CUDA device is present: checked by the cuda suite instead");
    return;
  }
#endif
  try {
    train::make_train_compute(g, train::Device::Cuda);
    FAIL("--device cuda was accepted without a device");
  } catch (const Error &e) {
    const std::string what = e.what();
#ifdef FLOWRT_TRAIN_CUDA
    CHECK(e.status() == FLOWRT_DEVICE_ERROR);
    CHECK(what.find("no usable CUDA device") != std::string::npos);
#else
    CHECK(e.status() == FLOWRT_UNSUPPORTED);
    CHECK(what.find("without CUDA") != std::string::npos);
#endif
  }
}

TEST_CASE(
    "trainer --precision: the CPU trainer refuses tf32 and fp16 (and bf16 without bf16 "
    "units) by name" *
    doctest::test_suite("trainer")) {
  TrainModel<float> m(test::tiny_graph(test::TinyVariant{}));
  m.set_precision(FLOWRT_PRECISION_FP32);
  std::vector<flowrt_precision> refused = {FLOWRT_PRECISION_TF32, FLOWRT_PRECISION_FP16};
  if (!train::gemm_bf16_available()) refused.push_back(FLOWRT_PRECISION_BF16);
  for (flowrt_precision p : refused) {
    try {
      m.set_precision(p);
      FAIL("the CPU trainer accepted " << precision_name(p));
    } catch (const Error &e) {
      CHECK(e.status() == FLOWRT_UNSUPPORTED);
      CHECK(std::string(e.what()).find(precision_name(p)) != std::string::npos);
    }
  }
  CHECK(train::parse_precision("bf16") == FLOWRT_PRECISION_BF16);
  try {
    train::parse_precision("fp8");
    FAIL("fp8 was accepted");
  } catch (const Error &e) {
    CHECK(e.status() == FLOWRT_INVALID_ARGUMENT);
    CHECK(std::string(e.what()).find("fp8") != std::string::npos);
  }
}

#ifdef FLOWRT_TRAIN_CUDA

constexpr int64_t kBatch = 4;

std::vector<float> images(const Graph &g, int64_t n, uint32_t seed) {
  const std::vector<double> x = test::random_images(g, n, seed);
  return std::vector<float>(x.begin(), x.end());
}

std::vector<int32_t> labels_for(const test::TinyVariant &v) {
  std::vector<int32_t> y;
  for (int64_t i = 0; i < kBatch; ++i)
    y.push_back(v.classes ? static_cast<int32_t>(i % v.classes) : -1);
  return y;
}

// ||a - b|| / max(||b||, floor) over one parameter tensor.
double rel_error(const float *a, const float *b, size_t n, double floor) {
  double d = 0, r = 0;
  for (size_t k = 0; k < n; ++k) {
    d += (double(a[k]) - b[k]) * (double(a[k]) - b[k]);
    r += double(b[k]) * b[k];
  }
  return std::sqrt(d) / std::max(std::sqrt(r), floor);
}

void check_variant(const test::TinyVariant &v, bool recompute) {
  const Graph g = test::tiny_graph(v);
  TrainModel<float> cpu(g);
  auto gpu = train::make_train_compute(g, train::Device::Cuda);
  gpu->set_recompute(recompute);
  const std::vector<int32_t> labels = labels_for(v);
  const int32_t *y = v.classes ? labels.data() : nullptr;

  // The same data-dependent initialisation (the CUDA trainer runs it on its host model).
  const std::vector<float> init = images(g, 8, 11);
  cpu.forward(init.data(), nullptr, 8, true);
  gpu->forward(init.data(), nullptr, 8, true);
  gpu->sync_to_host(nullptr, nullptr);
  CHECK(gpu->params().values() == cpu.params().values());

  // Bits/dim per image and every gradient.
  const std::vector<float> x = images(g, kBatch, 12);
  const double lc = cpu.forward(x.data(), y, kBatch, false);
  const double lg = gpu->forward(x.data(), y, kBatch, false);
  CHECK(std::fabs(lg - lc) <= 1e-5 * std::max(1.0, std::fabs(lc)));
  for (int64_t b = 0; b < kBatch; ++b)
    CHECK(std::fabs(gpu->bits_per_dim()[b] - cpu.bits_per_dim()[b]) <=
          1e-5 * std::max(1.0, std::fabs(cpu.bits_per_dim()[b])));
  cpu.backward();
  gpu->backward();
  gpu->sync_to_host(nullptr, nullptr);
  double largest = 0;
  for (const train::ParamInfo &p : cpu.params().info()) {
    double r = 0;
    for (size_t k = p.offset; k < p.offset + p.size; ++k)
      r += double(cpu.params().grads()[k]) * cpu.params().grads()[k];
    largest = std::max(largest, std::sqrt(r));
  }
  for (const train::ParamInfo &p : cpu.params().info()) {
    const double e = rel_error(gpu->params().grads().data() + p.offset,
                               cpu.params().grads().data() + p.offset, p.size, 1e-3 * largest);
    INFO(p.name << ": relative gradient error " << e);
    CHECK(e <= 1e-4);
  }

  // Three Adam steps with clipping and EMA. eps = 1e-3 keeps Adam's update smooth in tiny
  // gradients, so float differences stay float-sized instead of flipping an update's sign.
  const std::vector<float> p0 = cpu.params().values();
  Adam ac(p0.size()), ag(p0.size());
  ac.eps = ag.eps = 1e-3;
  std::vector<float> ema_c = p0, ema_g = p0;
  const StepArgs args{2e-3, 5.0, 0.9};
  for (int s = 0; s < 3; ++s) {
    const std::vector<float> xs = images(g, kBatch, 20 + s);
    const train::StepOutcome oc = cpu.train_step(xs.data(), y, kBatch, ac, ema_c, args);
    const train::StepOutcome og = gpu->train_step(xs.data(), y, kBatch, ag, ema_g, args);
    CHECK(og.update.applied);
    CHECK(std::fabs(og.loss - oc.loss) <= 1e-4 * std::max(1.0, std::fabs(oc.loss)));
    CHECK(std::fabs(og.update.grad_norm - oc.update.grad_norm) <= 1e-4 * oc.update.grad_norm);
  }
  gpu->sync_to_host(&ag, &ema_g);
  CHECK(ag.t == 3);
  std::vector<float> dc(p0.size()), dg(p0.size()), ec(p0.size()), eg(p0.size());
  for (size_t k = 0; k < p0.size(); ++k) {
    dc[k] = cpu.params().values()[k] - p0[k], dg[k] = gpu->params().values()[k] - p0[k];
    ec[k] = ema_c[k] - p0[k], eg[k] = ema_g[k] - p0[k];
  }
  CHECK(rel_error(dg.data(), dc.data(), dc.size(), 0) <= 1e-3);
  CHECK(rel_error(eg.data(), ec.data(), ec.size(), 0) <= 1e-3);
  CHECK(rel_error(ag.m.data(), ac.m.data(), ac.m.size(), 0) <= 1e-3);

  // The guard: a NaN image skips the step on the device and changes nothing.
  std::vector<float> bad = images(g, kBatch, 30);
  bad[5] = std::nanf("");
  const std::vector<float> before = gpu->params().values();
  const train::StepOutcome ob = gpu->train_step(bad.data(), y, kBatch, ag, ema_g, args);
  CHECK_FALSE(ob.update.applied);
  gpu->sync_to_host(&ag, &ema_g);
  CHECK(gpu->params().values() == before);
  CHECK(ag.t == 3);
}

TEST_CASE("cuda trainer: matches the CPU trainer (init, bits/dim, gradients, Adam, EMA, guard)" *
          doctest::test_suite("cuda")) {
  for (int k = 0; k < 6; ++k) {
    CAPTURE(k);
    check_variant(variant(k), false);
  }
}

TEST_CASE("cuda trainer: recompute gives the same gradients" * doctest::test_suite("cuda")) {
  for (int k : {0, 3, 4}) {
    CAPTURE(k);
    check_variant(variant(k), true);
  }
}

// TF32, BF16 and FP16 products (FP16 with dynamic loss scaling) against fp32 on the GPU: the
// bits/dim error and the gradients' relative error are reported and bounded, and training
// steps apply.
TEST_CASE("cuda trainer: reduced precisions against fp32" * doctest::test_suite("cuda")) {
  const test::TinyVariant v = variant(0);
  const Graph g = test::tiny_graph(v);
  const std::vector<float> init = images(g, 8, 11), x = images(g, kBatch, 12);
  auto run = [&](flowrt_precision p, std::vector<double> &grads) {
    auto m = train::make_train_compute(g, train::Device::Cuda);
    m->set_precision(p);
    m->forward(init.data(), nullptr, 8, true);
    const double bpd = m->forward(x.data(), nullptr, kBatch, false);
    m->backward();
    m->sync_to_host(nullptr, nullptr);
    grads.assign(m->params().grads().begin(), m->params().grads().end());
    Adam adam(grads.size());
    std::vector<float> no_ema;
    // fp16 may skip its first steps while the loss scale comes down from 2^16.
    int applied = 0, overflows = 0;
    for (int s = 0; s < 20 && applied < 3; ++s) {
      const std::vector<float> xs = images(g, kBatch, 40 + s);
      const train::StepOutcome o =
          m->train_step(xs.data(), nullptr, kBatch, adam, no_ema, StepArgs{1e-3, 50, 0});
      CHECK((o.update.applied || o.update.loss_scale_overflow));
      applied += o.update.applied, overflows += o.update.loss_scale_overflow;
    }
    CHECK(applied == 3);
    if (p != FLOWRT_PRECISION_FP16) CHECK(overflows == 0);
    return bpd;
  };
  std::vector<double> g32, gp;
  const double b32 = run(FLOWRT_PRECISION_FP32, g32);
  for (flowrt_precision p : {FLOWRT_PRECISION_TF32, FLOWRT_PRECISION_BF16, FLOWRT_PRECISION_FP16}) {
    const double bp = run(p, gp);
    double d = 0, r = 0;
    for (size_t k = 0; k < g32.size(); ++k)
      d += (gp[k] - g32[k]) * (gp[k] - g32[k]), r += g32[k] * g32[k];
    const double grad_err = std::sqrt(d / r);
    MESSAGE(precision_name(p) << ": bits/dim " << bp << " vs fp32 " << b32 << " (diff "
                              << std::fabs(bp - b32) << "), gradient relative error " << grad_err);
    CHECK(std::fabs(bp - b32) <= 2e-2);
    CHECK(grad_err <= 5e-2);
  }
}

#endif

}  // namespace
}  // namespace flowrt
