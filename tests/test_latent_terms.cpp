// The latent and likelihood-term API (flowrt_encode_noise, flowrt_level_terms, flowrt_nll_map,
// flowrt_pixels_to_x) checked against the format's definition: the naive double-precision
// encoder of test_support.hpp gives every latent element's prior mean and log-std, hence the
// standardised latents and each level's log-prior independently of the runtime. The identities
// the header promises (decode_noise inverts encode_noise to the pixel, the level terms add up to
// log p(x), the map adds up to -log p(x)) are checked on every CPU backend.
#include <doctest/doctest.h>

#include <cmath>
#include <memory>
#include <string>
#include <vector>

#include "c_api_handles.hpp"
#include "flowrt.h"
#include "flowrt.hpp"
#include "format/flow_file.hpp"
#include "test_support.hpp"

using namespace flowrt;
using flowrt::test::Rng;

namespace {

using test::ModelPtr;
using test::SessionPtr;

Graph latent_graph(int classes, CouplingType coupling, int64_t size = 8, int levels = 2) {
  GlowConfig cfg;
  cfg.channels = 3;
  cfg.height = cfg.width = size;
  cfg.levels = levels;
  cfg.depth = 2;
  cfg.hidden = 8;
  cfg.coupling = coupling;
  cfg.n_classes = classes;
  cfg.random_nets = true;
  cfg.seed = 11 + classes;
  return build_glow(cfg);
}

ModelPtr model_of(const Graph &g) {
  const std::vector<uint8_t> bytes = write_flow(g);
  flowrt_model *m = nullptr;
  REQUIRE_MESSAGE(flowrt_model_from_memory(bytes.data(), bytes.size(), &m) == FLOWRT_OK,
                  flowrt_last_error());
  return ModelPtr(m);
}

SessionPtr session_of(const flowrt_model *m, flowrt_backend backend, size_t max_batch) {
  flowrt_session_options *o = nullptr;
  REQUIRE(flowrt_session_options_create(&o) == FLOWRT_OK);
  REQUIRE(flowrt_session_options_set_backend(o, backend) == FLOWRT_OK);
  REQUIRE(flowrt_session_options_set_max_batch(o, max_batch) == FLOWRT_OK);
  flowrt_session *s = nullptr;
  const flowrt_status st = flowrt_session_create(m, o, &s);
  flowrt_session_options_free(o);
  REQUIRE_MESSAGE(st == FLOWRT_OK, flowrt_last_error());
  return SessionPtr(s);
}

std::vector<flowrt_backend> cpu_backends() {
  std::vector<flowrt_backend> b{FLOWRT_BACKEND_REF};
  if (flowrt_backend_available(FLOWRT_BACKEND_ONEDNN)) b.push_back(FLOWRT_BACKEND_ONEDNN);
  return b;
}

std::vector<uint8_t> random_pixels(size_t n, uint64_t seed) {
  Rng rng(seed);
  std::vector<uint8_t> p(n);
  for (uint8_t &v : p) v = static_cast<uint8_t>(rng.next() & 0xff);
  return p;
}

struct Level {
  int64_t c, h, w;
  size_t offset;
};
std::vector<Level> levels_of(const flowrt_model *m) {
  int levels = 0;
  REQUIRE(flowrt_model_levels(m, &levels) == FLOWRT_OK);
  std::vector<Level> out;
  for (int l = 0; l < levels; ++l) {
    int c = 0, h = 0, w = 0;
    size_t off = 0;
    REQUIRE(flowrt_model_latent_shape(m, l, &c, &h, &w, &off) == FLOWRT_OK);
    out.push_back({c, h, w, off});
  }
  return out;
}

}  // namespace

TEST_SUITE("latent_terms") {
  TEST_CASE("pixels_to_x is the bin centre encode uses") {
    const Graph g = latent_graph(0, CouplingType::Affine);
    ModelPtr m = model_of(g);
    const size_t d = static_cast<size_t>(g.dims());
    const std::vector<uint8_t> px = random_pixels(2 * d, 3);
    std::vector<float> x(2 * d);
    REQUIRE(flowrt_pixels_to_x(m.get(), 2, px.data(), x.data()) == FLOWRT_OK);
    for (size_t k = 0; k < x.size(); ++k) CHECK(x[k] == doctest::Approx((px[k] + 0.5) / 256 - 0.5));
    SessionPtr s = session_of(m.get(), FLOWRT_BACKEND_REF, 4);
    std::vector<double> from_px(2), from_x(2);
    REQUIRE(flowrt_encode(s.get(), 2, px.data(), nullptr, from_px.data()) == FLOWRT_OK);
    REQUIRE(flowrt_encode_float(s.get(), 2, x.data(), nullptr, from_x.data()) == FLOWRT_OK);
    CHECK(from_px == from_x);
  }

  TEST_CASE("encode_noise and the level log-priors equal the format's definition") {
    for (int classes : {0, 3}) {
      const Graph g = latent_graph(classes, CouplingType::Affine);
      ModelPtr m = model_of(g);
      const size_t d = static_cast<size_t>(g.dims()), n = 5;
      const std::vector<Level> lv = levels_of(m.get());
      std::vector<float> x(n * d);
      const std::vector<uint8_t> px = random_pixels(n * d, 7 + classes);
      REQUIRE(flowrt_pixels_to_x(m.get(), n, px.data(), x.data()) == FLOWRT_OK);
      std::vector<int32_t> labels(n);
      for (size_t i = 0; i < n; ++i) labels[i] = static_cast<int32_t>(i % 3);
      const int32_t *lab = classes ? labels.data() : nullptr;
      for (flowrt_backend backend : cpu_backends()) {
        INFO("backend " << flowrt_backend_name(backend) << ", classes " << classes);
        SessionPtr s = session_of(m.get(), backend, 2);  // chunks of 2
        std::vector<float> eps(n * d);
        std::vector<double> lp(n * lv.size());
        REQUIRE_MESSAGE(flowrt_encode_noise(s.get(), n, x.data(), lab, eps.data()) == FLOWRT_OK,
                        flowrt_last_error());
        REQUIRE(flowrt_level_terms(s.get(), n, x.data(), lab, lp.data(), nullptr) == FLOWRT_OK);
        double worst_eps = 0, worst_lp = 0;
        for (size_t i = 0; i < n; ++i) {
          const std::vector<double> xi(x.begin() + i * d, x.begin() + (i + 1) * d);
          const test::NaiveResult r = test::naive_encode(g, xi, classes ? labels[i] : -1);
          for (size_t k = 0; k < d; ++k) {
            const double e = (r.z[k] - r.mean[k]) * std::exp(-r.log_std[k]);
            worst_eps = std::max(worst_eps, std::abs(e - eps[i * d + k]) / (1 + std::abs(e)));
          }
          for (size_t l = 0; l < lv.size(); ++l) {
            const size_t count = static_cast<size_t>(lv[l].c * lv[l].h * lv[l].w);
            double want = 0;
            for (size_t k = lv[l].offset; k < lv[l].offset + count; ++k)
              want += test::log_normal(r.z[k], r.mean[k], r.log_std[k]);
            const double got = lp[i * lv.size() + l];
            worst_lp = std::max(worst_lp, std::abs(got - want) / (1 + std::abs(want)));
          }
        }
        CHECK(worst_eps < 1e-4);
        CHECK(worst_lp < 1e-5);
      }
    }
  }

  TEST_CASE("decode_noise at temperature 1 inverts encode_noise to the pixel") {
    for (int classes : {0, 3}) {
      const Graph g = latent_graph(classes, CouplingType::Affine, 16, 3);
      ModelPtr m = model_of(g);
      const size_t d = static_cast<size_t>(g.dims()), n = 6;
      std::vector<int32_t> labels(n, 2);
      const int32_t *lab = classes ? labels.data() : nullptr;
      const std::vector<uint8_t> px = random_pixels(n * d, 21);
      std::vector<float> x(n * d), eps(n * d), back(n * d);
      std::vector<uint8_t> out(n * d);
      REQUIRE(flowrt_pixels_to_x(m.get(), n, px.data(), x.data()) == FLOWRT_OK);
      for (flowrt_backend backend : cpu_backends()) {
        INFO("backend " << flowrt_backend_name(backend) << ", classes " << classes);
        SessionPtr s = session_of(m.get(), backend, 4);
        REQUIRE(flowrt_encode_noise(s.get(), n, x.data(), lab, eps.data()) == FLOWRT_OK);
        REQUIRE(flowrt_decode_noise(s.get(), n, eps.data(), 1.0f, lab, back.data(), out.data()) ==
                FLOWRT_OK);
        CHECK(out == px);
        double worst = 0;
        for (size_t k = 0; k < x.size(); ++k)
          worst = std::max(worst, double(std::abs(back[k] - x[k])));
        CHECK(worst < 1e-4);
      }
    }
  }

  TEST_CASE("the level terms add up to log p(x) and log|det|") {
    for (CouplingType coupling : {CouplingType::Affine, CouplingType::Additive}) {
      const Graph g = latent_graph(3, coupling, 16, 3);
      ModelPtr m = model_of(g);
      const size_t d = static_cast<size_t>(g.dims()), n = 4;
      const size_t levels = levels_of(m.get()).size();
      REQUIRE(levels == 3);
      std::vector<float> x(n * d);
      const std::vector<uint8_t> px = random_pixels(n * d, 5);
      REQUIRE(flowrt_pixels_to_x(m.get(), n, px.data(), x.data()) == FLOWRT_OK);
      std::vector<int32_t> labels{0, 1, 2, 1};
      for (flowrt_backend backend : cpu_backends()) {
        INFO("backend " << flowrt_backend_name(backend));
        SessionPtr s = session_of(m.get(), backend, 3);
        std::vector<double> lp(n * levels), ld(n * levels), log_p(n), log_det(n);
        REQUIRE(flowrt_level_terms(s.get(), n, x.data(), labels.data(), lp.data(), ld.data()) ==
                FLOWRT_OK);
        REQUIRE(flowrt_encode_ex(s.get(), n, x.data(), labels.data(), nullptr, log_p.data(),
                                 log_det.data(), nullptr) == FLOWRT_OK);
        for (size_t i = 0; i < n; ++i) {
          double total = 0, det = 0;
          for (size_t l = 0; l < levels; ++l) {
            total += lp[i * levels + l] + ld[i * levels + l];
            det += ld[i * levels + l];
          }
          // The reference path computes both sides with the same float kernels: tight. oneDNN
          // sums in another order.
          const double tol = backend == FLOWRT_BACKEND_REF ? 1e-9 : 1e-5;
          CHECK(std::abs(total - log_p[i]) <= tol * std::abs(log_p[i]));
          CHECK(std::abs(det - log_det[i]) <= tol * (1 + std::abs(log_det[i])) * 10);
        }
      }
    }
  }

  TEST_CASE("the NLL map sums to -log p(x) and attributes each latent to its pixel block") {
    // Additive couplings: every log-det is input-independent, so the map is exactly each latent
    // element's -log density spread over its block plus a uniform share of -log|det|; both come
    // from the naive encoder here.
    const Graph g = latent_graph(0, CouplingType::Additive, 16, 3);
    ModelPtr m = model_of(g);
    const size_t d = static_cast<size_t>(g.dims()), n = 3, px_count = 16 * 16;
    const std::vector<Level> lv = levels_of(m.get());
    std::vector<float> x(n * d);
    const std::vector<uint8_t> px = random_pixels(n * d, 9);
    REQUIRE(flowrt_pixels_to_x(m.get(), n, px.data(), x.data()) == FLOWRT_OK);
    SessionPtr s = session_of(m.get(), FLOWRT_BACKEND_REF, 2);
    std::vector<double> map(n * px_count), log_p(n), log_det(n);
    REQUIRE(flowrt_nll_map(s.get(), n, x.data(), nullptr, map.data()) == FLOWRT_OK);
    REQUIRE(flowrt_encode_ex(s.get(), n, x.data(), nullptr, nullptr, log_p.data(), log_det.data(),
                             nullptr) == FLOWRT_OK);
    for (size_t i = 0; i < n; ++i) {
      double sum = 0;
      for (size_t k = 0; k < px_count; ++k) sum += map[i * px_count + k];
      CHECK(std::abs(sum + log_p[i]) <= 1e-6 * std::abs(log_p[i]));
      const std::vector<double> xi(x.begin() + i * d, x.begin() + (i + 1) * d);
      const test::NaiveResult r = test::naive_encode(g, xi);
      std::vector<double> want(px_count, -log_det[i] / px_count);
      for (const Level &l : lv) {
        const int64_t b = 16 / l.h;
        for (int64_t c = 0; c < l.c; ++c)
          for (int64_t u = 0; u < l.h; ++u)
            for (int64_t v = 0; v < l.w; ++v) {
              const size_t k = l.offset + static_cast<size_t>((c * l.h + u) * l.w + v);
              const double share = -test::log_normal(r.z[k], r.mean[k], r.log_std[k]) / (b * b);
              for (int64_t rr = u * b; rr < (u + 1) * b; ++rr)
                for (int64_t cc = v * b; cc < (v + 1) * b; ++cc) want[rr * 16 + cc] += share;
            }
      }
      double worst = 0;
      for (size_t k = 0; k < px_count; ++k)
        worst = std::max(worst, std::abs(map[i * px_count + k] - want[k]));
      CHECK(worst < 1e-4);
    }
  }

  TEST_CASE("affine couplings' log-scales land on the map: it still sums to -log p(x)") {
    const Graph g = latent_graph(3, CouplingType::Affine, 16, 3);
    ModelPtr m = model_of(g);
    const size_t d = static_cast<size_t>(g.dims()), n = 2, px_count = 256;
    std::vector<float> x(n * d);
    const std::vector<uint8_t> px = random_pixels(n * d, 13);
    REQUIRE(flowrt_pixels_to_x(m.get(), n, px.data(), x.data()) == FLOWRT_OK);
    std::vector<int32_t> labels{2, 0};
    for (flowrt_backend backend : cpu_backends()) {
      SessionPtr s = session_of(m.get(), backend, 1);
      std::vector<double> map(n * px_count), log_p(n);
      REQUIRE(flowrt_nll_map(s.get(), n, x.data(), labels.data(), map.data()) == FLOWRT_OK);
      REQUIRE(flowrt_encode_ex(s.get(), n, x.data(), labels.data(), nullptr, log_p.data(), nullptr,
                               nullptr) == FLOWRT_OK);
      for (size_t i = 0; i < n; ++i) {
        double sum = 0, lo = 1e300, hi = -1e300;
        for (size_t k = 0; k < px_count; ++k) {
          sum += map[i * px_count + k];
          lo = std::min(lo, map[i * px_count + k]);
          hi = std::max(hi, map[i * px_count + k]);
        }
        const double tol = backend == FLOWRT_BACKEND_REF ? 1e-6 : 1e-5;
        CHECK(std::abs(sum + log_p[i]) <= tol * std::abs(log_p[i]));
        CHECK(hi > lo);  // not a uniform share
      }
    }
  }

  TEST_CASE("the C++ wrapper: encode_noise, decode_noise, level_terms and nll_map") {
    const Graph g = latent_graph(0, CouplingType::Affine, 16, 3);
    const std::vector<uint8_t> bytes = write_flow(g);
    const flowrt::Model m = flowrt::Model::from_memory(bytes.data(), bytes.size());
    flowrt::Session s(m, flowrt::SessionOptions().backend(FLOWRT_BACKEND_REF).max_batch(2));
    const size_t d = static_cast<size_t>(g.dims()), n = 3;
    const std::vector<uint8_t> px = random_pixels(n * d, 31);
    std::vector<float> x(n * d);
    REQUIRE(flowrt_pixels_to_x(m.get(), n, px.data(), x.data()) == FLOWRT_OK);
    const std::vector<float> eps = s.encode_noise(n, x.data());
    CHECK(s.decode_noise(n, eps.data(), 1.0f) == px);
    const flowrt::Session::LevelTerms t = s.level_terms(n, x.data());
    REQUIRE(t.levels == 3);
    const std::vector<double> map = s.nll_map(n, x.data());
    REQUIRE(map.size() == n * 256);
    for (size_t i = 0; i < n; ++i) {
      double terms = 0, nll = 0;
      for (int l = 0; l < 3; ++l) terms += t.log_prior[i * 3 + l] + t.log_det[i * 3 + l];
      for (size_t k = 0; k < 256; ++k) nll += map[i * 256 + k];
      CHECK(std::abs(terms + nll) <= 1e-9 * std::abs(terms));
    }
    CHECK_THROWS_AS(s.nll_map(1, nullptr), flowrt::Exception);
  }

  TEST_CASE("bad arguments: a message naming what is wrong") {
    const Graph g = latent_graph(3, CouplingType::Affine);
    ModelPtr m = model_of(g);
    const size_t d = static_cast<size_t>(g.dims());
    SessionPtr s = session_of(m.get(), FLOWRT_BACKEND_REF, 2);
    std::vector<float> x(d, 0.1f), eps(d);
    std::vector<double> terms(2), map(64);
    CHECK(flowrt_encode_noise(s.get(), 1, x.data(), nullptr, nullptr) == FLOWRT_INVALID_ARGUMENT);
    CHECK(std::string(flowrt_last_error()).find("eps") != std::string::npos);
    CHECK(flowrt_encode_noise(nullptr, 1, x.data(), nullptr, eps.data()) ==
          FLOWRT_INVALID_ARGUMENT);
    CHECK(flowrt_level_terms(s.get(), 1, nullptr, nullptr, terms.data(), nullptr) ==
          FLOWRT_INVALID_ARGUMENT);
    const int32_t bad_label = 7;
    CHECK(flowrt_nll_map(s.get(), 1, x.data(), &bad_label, map.data()) == FLOWRT_INVALID_ARGUMENT);
    CHECK(std::string(flowrt_last_error()).find("labels[0] = 7") != std::string::npos);
    x[5] = std::nanf("");
    CHECK(flowrt_nll_map(s.get(), 1, x.data(), nullptr, map.data()) == FLOWRT_INVALID_ARGUMENT);
    CHECK(std::string(flowrt_last_error()).find("non-finite") != std::string::npos);
    CHECK(flowrt_pixels_to_x(nullptr, 1, nullptr, nullptr) == FLOWRT_INVALID_ARGUMENT);
    CHECK(flowrt_encode_noise(s.get(), 0, nullptr, nullptr, nullptr) == FLOWRT_OK);
  }
}
