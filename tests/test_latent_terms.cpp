// The latent and likelihood-term API (flowrt_encode_noise, flowrt_level_terms, flowrt_nll_map,
// flowrt_pixels_to_x) checked against the format's definition: the naive double-precision
// encoder of test_support.hpp gives every latent element's prior mean and log-std, hence the
// standardised latents and each level's log-prior independently of the runtime. The identities
// the header promises (decode_noise inverts encode_noise to the pixel, the level terms add up to
// log p(x), the map adds up to -log p(x)) are checked on every CPU backend.
#include <doctest/doctest.h>

#include <algorithm>
#include <cmath>
#include <memory>
#include <string>
#include <vector>

#include "c_api_handles.hpp"
#include "flowrt.h"
#include "flowrt.hpp"
#include "format/flow_file.hpp"
#include "model/nice_builder.hpp"
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
// The map flowrt_nll_map gives, from the format's definitions in double, for a flow of a logit,
// checkerboard couplings and a standard normal top prior on one grid (no squeeze): every
// element's -log|det| term (the logit's, and log s at the checkerboard's m = 0 positions) and
// -log density lands on its own pixel.
std::vector<double> spatial_map(const Graph &g, const std::vector<double> &x) {
  test::Act a{g.image.channels, g.image.height, g.image.width, x};
  const int64_t plane = a.h * a.w;
  std::vector<double> map(static_cast<size_t>(plane), 0.0);
  for (const Layer &layer : g.layers) {
    if (const auto *lg = std::get_if<LogitLayer>(&layer.op)) {
      for (size_t k = 0; k < a.v.size(); ++k) {
        const double u = lg->alpha + (1 - 2.0 * lg->alpha) * (a.v[k] + 0.5);
        map[k % plane] -= std::log(1 - 2.0 * lg->alpha) - std::log(u) - std::log(1 - u);
        a.v[k] = std::log(u / (1 - u));
      }
    } else if (const auto *cp = std::get_if<CouplingLayer>(&layer.op)) {
      REQUIRE(is_checkerboard(cp->conditioning));
      REQUIRE(cp->type == CouplingType::Affine);
      REQUIRE(cp->split == ShiftScaleSplit::ShiftScaleHalves);
      const int keep = cp->conditioning == Half::CheckerboardEven ? 0 : 1;
      test::Act in{a.c + (cp->mask_channel ? 1 : 0), a.h, a.w, {}};
      in.v.assign(static_cast<size_t>(in.c * plane), 0.0);
      for (int64_t p = 0; p < plane; ++p) {
        const bool xa = (p / a.w + p % a.w) % 2 == keep;
        for (int64_t c = 0; c < a.c; ++c) in.v[c * plane + p] = xa ? a.v[c * plane + p] : 0.0;
        if (cp->mask_channel) in.v[a.c * plane + p] = xa ? 1.0 : 0.0;
      }
      const test::Act h = test::naive_net(cp->net, in);
      for (int64_t p = 0; p < plane; ++p) {
        if ((p / a.w + p % a.w) % 2 == keep) continue;
        for (int64_t c = 0; c < a.c; ++c) {
          const double raw = h.v[(a.c + c) * plane + p] + cp->scale_bias;
          const double log_s = cp->scale_fn == ScaleFunction::Tanh
                                   ? cp->scale_weight[c] * std::tanh(raw)
                                   : -std::log1p(std::exp(-raw));
          map[p] -= log_s;
        }
      }
      test::naive_coupling(*cp, a);
    } else {
      REQUIRE(std::holds_alternative<TopPriorLayer>(layer.op));
      for (size_t k = 0; k < a.v.size(); ++k) map[k % plane] -= test::log_normal(a.v[k], 0, 0);
    }
  }
  return map;
}

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
  TEST_CASE("the logit's and a checkerboard's terms land on their own pixels of the NLL map") {
    test::Rng rng(41);
    std::vector<Layer> layers{test::make_layer("logit", LogitLayer{0.05f})};
    for (int k = 0; k < 2; ++k) {
      CouplingLayer cp;
      cp.type = CouplingType::Affine;
      cp.conditioning = k ? Half::CheckerboardOdd : Half::CheckerboardEven;
      cp.mask_channel = k == 0;
      cp.net = test::rand_coupling_net(rng, 2 + (k == 0), 6, 4, PaddingMode::Zeros, false, 1.0);
      cp.split = ShiftScaleSplit::ShiftScaleHalves;
      cp.scale_fn = k ? ScaleFunction::Sigmoid : ScaleFunction::Tanh;
      cp.scale_bias = k ? 2.f : 0.f;
      cp.form = AffineForm::ScaleThenShift;
      if (!k) cp.scale_weight = test::rand_tensor(rng, {2}, 0.5, 1.5);
      layers.push_back(test::make_layer("checker" + std::to_string(k), cp));
    }
    const Graph g = test::graph_of({2, 4, 5, 8}, std::move(layers));
    ModelPtr m = model_of(g);
    const size_t d = 40, n = 3, px_count = 20;
    std::vector<float> x(n * d);
    REQUIRE(flowrt_pixels_to_x(m.get(), n, random_pixels(n * d, 43).data(), x.data()) == FLOWRT_OK);
    for (flowrt_backend backend : {FLOWRT_BACKEND_REF, FLOWRT_BACKEND_PORTABLE}) {
      INFO("backend " << std::string(flowrt_backend_name(backend)));
      SessionPtr s = session_of(m.get(), backend, 2);
      std::vector<double> map(n * px_count), log_p(n);
      REQUIRE(flowrt_nll_map(s.get(), n, x.data(), nullptr, map.data()) == FLOWRT_OK);
      REQUIRE(flowrt_encode_ex(s.get(), n, x.data(), nullptr, nullptr, log_p.data(), nullptr,
                               nullptr) == FLOWRT_OK);
      double worst = 0;
      for (size_t i = 0; i < n; ++i) {
        const std::vector<double> want =
            spatial_map(g, std::vector<double>(x.begin() + i * d, x.begin() + (i + 1) * d));
        double sum = 0;
        for (size_t k = 0; k < px_count; ++k) {
          sum += map[i * px_count + k];
          worst = std::max(worst, std::abs(map[i * px_count + k] - want[k]));
        }
        CHECK(std::abs(sum + log_p[i]) <= 1e-6 * std::abs(log_p[i]));
      }
      CHECK(worst < 1e-4);
      MESSAGE("logit + checkerboards: max |map - definition| = " << worst);
    }
  }

  TEST_CASE("NICE: each pixel's map value is its own latent's density and scaling") {
    // After the flatten every element keeps its pixel: the permutes move them and back, the
    // additive couplings add no term, the scaling layer and the prior give each element its own.
    NiceConfig cfg;
    cfg.channels = 3;
    cfg.height = cfg.width = 4;
    cfg.couplings = 4;
    cfg.hidden = 16;
    cfg.hidden_layers = 2;
    cfg.random_nets = true;
    cfg.seed = 44;
    const Graph g = build_nice(cfg);
    const ActNormLayer *scaling = nullptr;
    for (const Layer &l : g.layers)
      if (auto *an = std::get_if<ActNormLayer>(&l.op)) scaling = an;
    REQUIRE(scaling);
    ModelPtr m = model_of(g);
    const size_t d = 48, n = 3, px_count = 16;
    std::vector<float> x(n * d);
    REQUIRE(flowrt_pixels_to_x(m.get(), n, random_pixels(n * d, 45).data(), x.data()) == FLOWRT_OK);
    for (flowrt_backend backend : {FLOWRT_BACKEND_REF, FLOWRT_BACKEND_PORTABLE}) {
      INFO("backend " << std::string(flowrt_backend_name(backend)));
      SessionPtr s = session_of(m.get(), backend, 2);
      std::vector<double> map(n * px_count), log_p(n);
      REQUIRE(flowrt_nll_map(s.get(), n, x.data(), nullptr, map.data()) == FLOWRT_OK);
      REQUIRE(flowrt_encode_ex(s.get(), n, x.data(), nullptr, nullptr, log_p.data(), nullptr,
                               nullptr) == FLOWRT_OK);
      double worst = 0, spread = 0;
      for (size_t i = 0; i < n; ++i) {
        const test::NaiveResult r =
            test::naive_encode(g, std::vector<double>(x.begin() + i * d, x.begin() + (i + 1) * d));
        std::vector<double> want(px_count, 0.0);
        for (size_t e = 0; e < d; ++e)
          want[e % px_count] -= test::log_normal(r.z[e], r.mean[e], r.log_std[e]) +
                                std::log(std::fabs(double(scaling->scale[e])));
        double sum = 0, lo = 1e300, hi = -1e300;
        for (size_t k = 0; k < px_count; ++k) {
          const double v = map[i * px_count + k];
          sum += v;
          lo = std::min(lo, v), hi = std::max(hi, v);
          worst = std::max(worst, std::abs(v - want[k]));
        }
        spread = std::max(spread, hi - lo);
        CHECK(std::abs(sum + log_p[i]) <= 1e-6 * std::abs(log_p[i]));
      }
      CHECK(worst < 1e-4);
      CHECK(spread > 0.1);  // not an even share
      MESSAGE("NICE: max |map - definition| = " << worst);
    }
  }
  TEST_CASE("after a flatten each element's terms follow it through permutes and splits") {
    // 2x3x4 flattened to 24 values, shuffled, scaled, half of them leave (their prior terms on
    // their own pixels), the rest are scaled again and meet the top prior.
    test::Rng rng(46);
    const int64_t d = 24, plane = 12;
    std::vector<int32_t> order(d);
    for (int64_t k = 0; k < d; ++k) order[k] = static_cast<int32_t>(k);
    std::shuffle(order.begin(), order.end(), rng.engine());
    ActNormLayer an1{test::rand_tensor(rng, {d}, -0.2, 0.2), test::rand_tensor(rng, {d}, 0.3, 3.0)};
    ActNormLayer an2{test::rand_tensor(rng, {d / 2}, -0.2, 0.2),
                     test::rand_tensor(rng, {d / 2}, 0.3, 3.0)};
    SplitLayer split;
    split.leaving = Half::First;
    const Graph g = test::graph_of(
        {2, 3, 4, 8}, {test::make_layer("flatten", FlattenLayer{}),
                       test::make_layer("shuffle", PermuteLayer{PermuteKind::Indices, order, {}}),
                       test::make_layer("an1", an1), test::make_layer("split", split),
                       test::make_layer("an2", an2)});
    ModelPtr m = model_of(g);
    const size_t n = 2;
    std::vector<float> x(n * d);
    REQUIRE(flowrt_pixels_to_x(m.get(), n, random_pixels(n * d, 47).data(), x.data()) == FLOWRT_OK);
    SessionPtr s = session_of(m.get(), FLOWRT_BACKEND_REF, 2);
    std::vector<double> map(n * plane);
    REQUIRE(flowrt_nll_map(s.get(), n, x.data(), nullptr, map.data()) == FLOWRT_OK);
    double worst = 0;
    for (size_t i = 0; i < n; ++i) {
      const test::NaiveResult r =
          test::naive_encode(g, std::vector<double>(x.begin() + i * d, x.begin() + (i + 1) * d));
      // The pixel each element of the vector came from, carried along.
      std::vector<int64_t> pixel(d), moved(d);
      for (int64_t e = 0; e < d; ++e) pixel[e] = e % plane;
      for (int64_t k = 0; k < d; ++k) moved[k] = pixel[order[k]];
      pixel = moved;
      std::vector<double> want(plane, 0.0);
      for (int64_t e = 0; e < d; ++e) want[pixel[e]] -= std::log(double(an1.scale[e]));
      for (int64_t e = 0; e < d / 2; ++e)  // the split's latents: the first half, leaving
        want[pixel[e]] -= test::log_normal(r.z[e], r.mean[e], r.log_std[e]);
      for (int64_t e = 0; e < d / 2; ++e) {  // the kept second half: an2, then the top prior
        const int64_t p = pixel[d / 2 + e];
        want[p] -= std::log(double(an2.scale[e]));
        want[p] -= test::log_normal(r.z[d / 2 + e], r.mean[d / 2 + e], r.log_std[d / 2 + e]);
      }
      for (int64_t k = 0; k < plane; ++k)
        worst = std::max(worst, std::abs(map[i * plane + k] - want[k]));
    }
    CHECK(worst < 1e-4);
    MESSAGE("flattened, shuffled and split: max |map - definition| = " << worst);
  }
}
