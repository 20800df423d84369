// bf16 training on the CPU: the trainer's products with bf16 operands against an independent
// double-precision product of the same bf16-rounded operands (so only the accumulation may
// differ), the kernels oneDNN picks for them, and a model's loss and gradients in bf16 against
// fp32. Skipped, visibly, on CPUs without bf16 units (there the trainer refuses bf16: see
// test_cuda_training.cpp).
#include <doctest/doctest.h>

#include <algorithm>
#include <cmath>
#include <cstdint>
#include <cstring>
#include <limits>
#include <random>
#include <string>
#include <vector>

#include "model/glow_builder.hpp"
#include "tiny_models.hpp"
#include "trainer/layers/affine_relu.hpp"
#include "trainer/layers/gemm.hpp"
#include "trainer/model/train_model.hpp"

TEST_SUITE_BEGIN("trainer");

namespace flowrt {
namespace {

// fp32 -> bf16 -> fp32, rounding to nearest even (the finite values the tests use).
float bf16_round(float x) {
  uint32_t u;
  std::memcpy(&u, &x, 4);
  u += 0x7FFFu + ((u >> 16) & 1u);
  u &= 0xFFFF0000u;
  std::memcpy(&x, &u, 4);
  return x;
}

bool skip_without_bf16() {
  std::string why;
  if (train::gemm_bf16_available(&why)) return false;
  MESSAGE("skipped: bf16 products " << why);
  return true;
}

TEST_CASE("bf16 sgemm: the exact product of the bf16-rounded operands, on bf16 kernels") {
  if (skip_without_bf16()) return;
  std::mt19937 rng(3);
  std::uniform_real_distribution<float> u(-1.f, 1.f);
  struct Shape {
    int64_t m, n, k;
  };
  // A net's 3x3 conv (forward), its weight and input gradients, a small last conv, a ragged one.
  for (const Shape s : {Shape{256, 784, 2304}, Shape{24, 784, 2304}, Shape{37, 45, 53}})
    for (int trans = 0; trans < 4; ++trans)
      for (float beta : {0.f, 1.f}) {
        const bool ta = trans & 1, tb = trans & 2;
        CAPTURE(s.m);
        CAPTURE(s.n);
        CAPTURE(s.k);
        CAPTURE(ta);
        CAPTURE(tb);
        CAPTURE(beta);
        // A and B stored with padded rows, so their leading dimensions matter; C dense, as the
        // trainer's are (a padded C gets oneDNN's bf16 gemm instead of a brgemm matmul).
        const int64_t lda = (ta ? s.m : s.k) + 3, ldb = (tb ? s.k : s.n) + 5, ldc = s.n;
        std::vector<float> a((ta ? s.k : s.m) * lda), b((tb ? s.n : s.k) * ldb), c(s.m * ldc);
        for (float &v : a) v = u(rng);
        for (float &v : b) v = u(rng);
        for (float &v : c) v = u(rng);
        const std::vector<float> c0 = c;
        {
          const train::GemmBf16Scope bf16;
          train::sgemm(ta, tb, s.m, s.n, s.k, 1.f, a.data(), lda, b.data(), ldb, beta, c.data(),
                       ldc);
          const std::string impl = train::sgemm_impl(ta, tb, s.m, s.n, s.k, lda, ldb, ldc, beta);
          CAPTURE(impl);
          CHECK(impl.find("ref") == std::string::npos);
          CHECK((impl.find("bf16") != std::string::npos || impl.find("amx") != std::string::npos));
        }
        double worst = 0, worst_fp32 = 0;
        for (int64_t i = 0; i < s.m; ++i)
          for (int64_t j = 0; j < s.n; ++j) {
            double exact = 0, exact32 = 0, mag = 0;
            for (int64_t kk = 0; kk < s.k; ++kk) {
              const float av = ta ? a[kk * lda + i] : a[i * lda + kk];
              const float bv = tb ? b[j * ldb + kk] : b[kk * ldb + j];
              exact += static_cast<double>(bf16_round(av)) * bf16_round(bv);
              exact32 += static_cast<double>(av) * bv;
              mag += std::fabs(static_cast<double>(av) * bv);
            }
            const double old = beta * static_cast<double>(c0[i * ldc + j]);
            const double got = c[i * ldc + j];
            worst = std::max(worst, std::fabs(got - (exact + old)) / (mag + 1));
            worst_fp32 = std::max(worst_fp32, std::fabs(got - (exact32 + old)) / (mag + 1));
          }
        // fp32 accumulation of k products: a few ulps of the magnitude sum.
        CHECK(worst <= 1e-6);
        // Against the fp32 operands the bf16 rounding shows (the test sees real bf16 inputs).
        CHECK(worst_fp32 > 1e-5);
        CHECK(worst_fp32 <= 1e-2);
      }
}

TEST_CASE("to_bf16 rounds to nearest even, as the products round their operands") {
  std::mt19937 rng(5);
  std::uniform_real_distribution<float> u(-3.f, 3.f);
  std::vector<float> x(10007);
  for (float &v : x) v = u(rng);
  // Ties, both ways: 1 + 2^-8 (even below) and 1 + 3 * 2^-8 (even above), and signed zeros.
  x[0] = 1.f + 1.f / 256, x[1] = 1.f + 3.f / 256, x[2] = 0.f, x[3] = -0.f, x[4] = -1.f - 1.f / 256;
  std::vector<uint16_t> got(x.size());
  train::to_bf16(x.data(), static_cast<int64_t>(x.size()), got.data());
  for (size_t i = 0; i < x.size(); ++i) {
    uint32_t u32;
    const float r = bf16_round(x[i]);
    std::memcpy(&u32, &r, 4);
    CAPTURE(i);
    CAPTURE(x[i]);
    REQUIRE(got[i] == static_cast<uint16_t>(u32 >> 16));
  }
  CHECK(got[0] == 0x3F80);  // 1.00390625 -> 1
  CHECK(got[1] == 0x3F82);  // 1.01171875 -> 1.015625
}

TEST_CASE("bf16_bits and to_bf16 agree on every class of float") {
  // Normal values, ties, signed zeros, the largest finite (rounds to infinity), infinities,
  // NaNs and denormals (flushed to a zero of their sign, as the conversion instructions do).
  std::vector<float> x = {1.f + 1.f / 256,
                          1.f + 3.f / 256,
                          0.f,
                          -0.f,
                          3.4028235e38f,
                          std::numeric_limits<float>::infinity(),
                          -std::numeric_limits<float>::infinity(),
                          std::numeric_limits<float>::quiet_NaN(),
                          1e-39f,
                          -1e-39f,
                          1.1754944e-38f};
  const std::vector<uint16_t> want = {0x3F80, 0x3F82, 0x0000, 0x8000, 0x7F80, 0x7F80,
                                      0xFF80, 0x7FC0, 0x0000, 0x8000, 0x0080};
  for (size_t i = 0; i < x.size(); ++i) {
    CAPTURE(i);
    CHECK(train::bf16_bits(x[i]) == want[i]);
  }
  // oneDNN's reorders give the same bits where the CPU converts in hardware.
  if (skip_without_bf16()) return;
  std::vector<uint16_t> got(x.size());
  train::to_bf16(x.data(), static_cast<int64_t>(x.size()), got.data());
  CHECK(got == want);
}

TEST_CASE("actnorm + ReLU in one pass: into fp32 as the unfused chain, into bf16 as to_bf16") {
  std::mt19937 rng(6);
  std::uniform_real_distribution<float> u(-2.f, 2.f);
  const int64_t ch = 5, ld = 3 * 4096 + 77;  // rows of several work items and a ragged end
  std::vector<float> x(ch * ld), scale(ch), shift(ch);
  for (float &v : x) v = u(rng);
  for (int64_t c = 0; c < ch; ++c) scale[c] = u(rng), shift[c] = u(rng);
  // A positive denormal after the affine: the ReLU keeps it in fp32, bf16 flushes it to zero
  // (and the backward then masks it, consistently with the product that saw a zero).
  scale[0] = 0.5f, shift[0] = 0.f, x[3] = 2e-39f;
  std::vector<float> want(x), y(x.size()), no_relu(x.size());
  for (int64_t c = 0; c < ch; ++c)
    for (int64_t q = 0; q < ld; ++q) {
      const float v = scale[c] * want[c * ld + q] + shift[c];
      want[c * ld + q] = v > 0.f ? v : 0.f;
    }
  train::affine_relu(scale.data(), shift.data(), ch, ld, x.data(), y.data(), true);
  CHECK(y == want);
  train::affine_relu(scale.data(), shift.data(), ch, ld, x.data(), no_relu.data(), false);
  CHECK(no_relu[0] == scale[0] * x[0] + shift[0]);
  CHECK(std::count_if(no_relu.begin(), no_relu.end(), [](float v) { return v < 0; }) > 0);
  std::vector<uint16_t> y16(x.size()), want16(x.size());
  train::affine_relu_bf16(scale.data(), shift.data(), ch, ld, x.data(), y16.data());
  for (size_t i = 0; i < want.size(); ++i) want16[i] = train::bf16_bits(want[i]);
  CHECK(y16 == want16);
  CHECK(y[3] > 0.f);
  CHECK(y16[3] == 0);
  // The conv backward's pass: the same masked row and bias-gradient sum with and without the
  // bf16 copy, masked by an fp32 or a bf16 ReLU output.
  for (int by16 = 0; by16 < 2; ++by16) {
    CAPTURE(by16);
    std::vector<float> g(x.size()), g_copy;
    for (float &v : g) v = u(rng);
    g_copy = g;
    std::vector<uint16_t> g16(x.size());
    const float *mask32 = by16 ? nullptr : y.data();
    const uint16_t *mask16 = by16 ? y16.data() : nullptr;
    const float plain = train::mask_sum_row<false>(g.data(), mask32, mask16, nullptr, ch * ld);
    const float with_copy =
        train::mask_sum_row_bf16(g_copy.data(), mask32, mask16, g16.data(), ch * ld);
    CHECK(plain == with_copy);
    CHECK(g == g_copy);
    std::vector<uint16_t> want_g16(g.size());
    for (size_t i = 0; i < g.size(); ++i) want_g16[i] = train::bf16_bits(g[i]);
    CHECK(g16 == want_g16);
    CHECK(g[3] == (by16 ? 0.f : g[3]));  // the flushed denormal masks only in bf16
  }
  // Its backward masks by the bf16 output.
  std::vector<float> dy(x.size(), 1.f);
  train::relu_backward_bf16(static_cast<int64_t>(dy.size()), y16.data(), dy.data());
  for (size_t i = 0; i < dy.size(); ++i) {
    CAPTURE(i);
    REQUIRE(dy[i] == (y16[i] != 0 ? 1.f : 0.f));
  }
}

TEST_CASE("bf16 sgemm with caller-made bf16 copies: bitwise the product that converts itself") {
  if (skip_without_bf16()) return;
  std::mt19937 rng(4);
  std::uniform_real_distribution<float> u(-1.f, 1.f);
  const int64_t m = 64, n = 300, k = 96;
  for (int trans = 0; trans < 4; ++trans)
    for (int given = 1; given < 4; ++given)
      for (float beta : {0.f, 1.f}) {
        const bool ta = trans & 1, tb = trans & 2, a_given = given & 1, b_given = given & 2;
        CAPTURE(ta);
        CAPTURE(tb);
        CAPTURE(a_given);
        CAPTURE(b_given);
        CAPTURE(beta);
        // Dense operands (as the trainer's are); the padded ones' copies must be ignored.
        for (int64_t pad : {0, 3}) {
          CAPTURE(pad);
          const int64_t lda = (ta ? m : k) + pad, ldb = (tb ? k : n) + pad, ldc = n;
          std::vector<float> a((ta ? k : m) * lda), b((tb ? n : k) * ldb), c(m * ldc);
          for (float &v : a) v = u(rng);
          for (float &v : b) v = u(rng);
          for (float &v : c) v = u(rng);
          std::vector<uint16_t> a16(a.size()), b16(b.size());
          train::to_bf16(a.data(), static_cast<int64_t>(a.size()), a16.data());
          train::to_bf16(b.data(), static_cast<int64_t>(b.size()), b16.data());
          std::vector<float> want = c, got = c;
          const train::GemmBf16Scope bf16;
          train::sgemm(ta, tb, m, n, k, 1.f, a.data(), lda, b.data(), ldb, beta, want.data(), ldc);
          train::sgemm(ta, tb, m, n, k, 1.f, a.data(), lda, b.data(), ldb, beta, got.data(), ldc,
                       a_given ? a16.data() : nullptr, b_given ? b16.data() : nullptr);
          const std::string impl =
              train::sgemm_impl(ta, tb, m, n, k, lda, ldb, ldc, beta, a_given, b_given);
          CAPTURE(impl);
          CHECK((impl.find("bf16") != std::string::npos || impl.find("amx") != std::string::npos));
          CHECK(impl == train::sgemm_impl(ta, tb, m, n, k, lda, ldb, ldc, beta));
          CHECK(std::memcmp(want.data(), got.data(), want.size() * sizeof(float)) == 0);
        }
      }
}

TEST_CASE("bf16 training products: a Glow's loss and gradients against fp32") {
  if (skip_without_bf16()) return;
  GlowConfig cfg;
  cfg.channels = 1, cfg.height = 16, cfg.width = 16;
  cfg.levels = 2, cfg.depth = 3, cfg.hidden = 64;
  cfg.random_nets = true;  // non-zero last convolutions: every product carries gradient
  cfg.seed = 11;
  const Graph graph = build_glow(cfg);
  train::TrainModel<float> model(graph);
  const int64_t n = 16;
  const std::vector<double> xd = test::random_images(graph, n, 9);
  const std::vector<float> x(xd.begin(), xd.end());
  model.forward(x.data(), nullptr, n, true);  // data-dependent init once, in fp32
  const double loss32 = model.forward(x.data(), nullptr, n, false);
  model.backward();
  const std::vector<float> g32 = model.params().grads();
  model.set_precision(FLOWRT_PRECISION_BF16);
  const double loss16 = model.forward(x.data(), nullptr, n, false);
  model.backward();
  const std::vector<float> g16 = model.params().grads();
  model.set_precision(FLOWRT_PRECISION_FP32);
  CHECK(model.forward(x.data(), nullptr, n, false) == loss32);  // fp32 again, bitwise
  double dot = 0, n32 = 0, n16 = 0, diff = 0;
  for (size_t k = 0; k < g32.size(); ++k) {
    dot += static_cast<double>(g32[k]) * g16[k];
    n32 += static_cast<double>(g32[k]) * g32[k];
    n16 += static_cast<double>(g16[k]) * g16[k];
    diff += (static_cast<double>(g32[k]) - g16[k]) * (static_cast<double>(g32[k]) - g16[k]);
  }
  const double cosine = dot / std::sqrt(n32 * n16), rel = std::sqrt(diff / n32);
  MESSAGE("bf16 vs fp32: loss " << loss16 << " vs " << loss32 << " bits/dim, gradient cosine "
                                << cosine << ", relative error " << rel);
  CHECK(loss16 != loss32);  // the products really ran in bf16
  CHECK(std::fabs(loss16 - loss32) <= 2e-3 * std::fabs(loss32));
  CHECK(cosine >= 0.999);
  CHECK(rel <= 0.05);
}

TEST_CASE("bf16 training with recomputed nets: the same loss and gradients, bit for bit") {
  if (skip_without_bf16()) return;
  // Recompute mode keeps the nets' activations (and their bf16 copies) in one shared pool; the
  // copies a net's backward reads must be the ones its recomputed forward made.
  GlowConfig cfg;
  cfg.channels = 1, cfg.height = 16, cfg.width = 16;
  cfg.levels = 2, cfg.depth = 2, cfg.hidden = 96;
  cfg.random_nets = true;
  cfg.seed = 12;
  const Graph graph = build_glow(cfg);
  train::TrainModel<float> tape(graph), again(graph);
  again.set_recompute(true);
  const int64_t n = 8;
  const std::vector<double> xd = test::random_images(graph, n, 10);
  const std::vector<float> x(xd.begin(), xd.end());
  for (train::TrainModel<float> *m : {&tape, &again}) {
    m->forward(x.data(), nullptr, n, true);
    m->set_precision(FLOWRT_PRECISION_BF16);
  }
  for (int pass = 0; pass < 2; ++pass)
    for (train::TrainModel<float> *m : {&tape, &again}) {
      m->forward(x.data(), nullptr, n, false);
      m->backward();
    }
  CHECK(tape.bits_per_dim() == again.bits_per_dim());
  CHECK(tape.params().grads() == again.params().grads());
  // The weights' bf16 copies follow an update: after changing the weights, the next loss is
  // that of a fresh model holding the new weights.
  for (float &v : tape.params().values()) v *= 1.01f;
  train::TrainModel<float> fresh(graph);
  fresh.params().values() = tape.params().values();
  fresh.set_precision(FLOWRT_PRECISION_BF16);
  CHECK(tape.forward(x.data(), nullptr, n, false) == fresh.forward(x.data(), nullptr, n, false));
}

TEST_CASE("bf16 training on the nets' shapes: ReLU hand-over from convs and actnorms, residuals") {
  if (skip_without_bf16()) return;
  // Glow's nets (a conv's ReLU hands its output to the next conv in bf16 only), an actnorm after
  // the first conv (the actnorm's pass hands it over), and residual nets (sources keep fp32).
  std::vector<test::TinyVariant> variants(4);
  variants[1].net_actnorm = true;
  variants[2].residual = true;
  variants[3].residual = variants[3].net_actnorm = true;
  for (size_t i = 0; i < variants.size(); ++i) {
    test::TinyVariant &v = variants[i];
    v.hidden = 16;
    CAPTURE(i);
    const Graph graph = test::tiny_graph(v);
    const int64_t n = 4;
    const std::vector<double> xd = test::random_images(graph, n, 21);
    const std::vector<float> x(xd.begin(), xd.end());
    train::TrainModel<float> fp32(graph), bf16(graph), again(graph);
    again.set_recompute(true);
    const double loss32 = fp32.forward(x.data(), nullptr, n, false);
    fp32.backward();
    std::vector<double> losses;
    for (train::TrainModel<float> *m : {&bf16, &again}) {
      m->set_precision(FLOWRT_PRECISION_BF16);
      losses.push_back(m->forward(x.data(), nullptr, n, false));
      m->backward();
    }
    const std::vector<float> &g32 = fp32.params().grads(), &g16 = bf16.params().grads();
    double dot = 0, n32 = 0, n16 = 0;
    for (size_t k = 0; k < g32.size(); ++k) {
      dot += static_cast<double>(g32[k]) * g16[k];
      n32 += static_cast<double>(g32[k]) * g32[k];
      n16 += static_cast<double>(g16[k]) * g16[k];
    }
    const double cosine = dot / std::sqrt(n32 * n16);
    MESSAGE("variant " << i << ": loss " << losses[0] << " vs " << loss32 << ", gradient cosine "
                       << cosine);
    CHECK(losses[0] != loss32);
    CHECK(std::fabs(losses[0] - loss32) <= 2e-3 * std::fabs(loss32));
    CHECK(cosine >= 0.999);
    CHECK(losses[1] == losses[0]);
    CHECK(again.params().grads() == g16);
  }
}

}  // namespace
}  // namespace flowrt

TEST_SUITE_END();
