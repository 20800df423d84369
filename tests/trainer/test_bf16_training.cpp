// bf16 training on the CPU: the trainer's products with bf16 operands against an independent
// double-precision product of the same bf16-rounded operands (so only the accumulation may
// differ), the kernels oneDNN picks for them, and a model's loss and gradients in bf16 against
// fp32. Skipped, visibly, on CPUs without bf16 units (there the trainer refuses bf16: see
// test_cuda_training.cpp).
#include <doctest/doctest.h>

#include <cmath>
#include <cstdint>
#include <cstring>
#include <random>
#include <string>
#include <vector>

#include "model/glow_builder.hpp"
#include "tiny_models.hpp"
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

}  // namespace
}  // namespace flowrt

TEST_SUITE_END();
