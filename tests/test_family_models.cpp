// RealNVP and NICE end to end: .flow files written by save_flow from build_realnvp and
// build_nice open through the C API and encode, decode, sample and report their latent terms on
// the reference and portable backends; and the flow walk refuses, with an Error naming the step,
// a program it would not run exactly (a Graph changed after its checks).
#include <doctest/doctest.h>

#include <cmath>
#include <functional>
#include <string>
#include <vector>

#include "backends/ref/ref_executor.hpp"
#include "c_api_handles.hpp"
#include "core/error.hpp"
#include "flowrt.h"
#include "format/flow_file.hpp"
#include "model/nice_builder.hpp"
#include "model/realnvp_builder.hpp"
#include "test_support.hpp"

namespace flowrt {
namespace {

using test::ModelPtr;
using test::SessionPtr;

Graph small_realnvp(int64_t channels, int64_t h, int64_t w, uint64_t seed) {
  RealNvpConfig cfg;
  cfg.channels = channels;
  cfg.height = h;
  cfg.width = w;
  cfg.scales = 2;
  cfg.hidden = 8;
  cfg.checkerboard = cfg.channelwise = cfg.final_checkerboard = 2;
  cfg.random_nets = true;
  cfg.seed = seed;
  return build_realnvp(cfg);
}

Graph small_nice(uint64_t seed) {
  NiceConfig cfg;
  cfg.channels = 1;
  cfg.height = cfg.width = 4;
  cfg.couplings = 4;
  cfg.hidden = 16;
  cfg.hidden_layers = 2;
  cfg.random_nets = true;
  cfg.seed = seed;
  return build_nice(cfg);
}

ModelPtr open_model(const std::string &path) {
  flowrt_model *m = nullptr;
  REQUIRE_MESSAGE(flowrt_model_open(path.c_str(), &m) == FLOWRT_OK, flowrt_last_error());
  return ModelPtr(m);
}

SessionPtr session_of(const flowrt_model *m, flowrt_backend backend, size_t max_batch) {
  flowrt_session_options *o = nullptr;
  REQUIRE(flowrt_session_options_create(&o) == FLOWRT_OK);
  test::OptionsPtr options(o);
  REQUIRE(flowrt_session_options_set_backend(o, backend) == FLOWRT_OK);
  REQUIRE(flowrt_session_options_set_max_batch(o, max_batch) == FLOWRT_OK);
  flowrt_session *s = nullptr;
  REQUIRE_MESSAGE(flowrt_session_create(m, o, &s) == FLOWRT_OK, flowrt_last_error());
  return SessionPtr(s);
}

std::vector<uint8_t> random_pixels(size_t n, uint64_t seed) {
  test::Rng rng(seed);
  std::vector<uint8_t> p(n);
  for (uint8_t &v : p) v = static_cast<uint8_t>(rng.next() & 0xff);
  return p;
}

// What one backend computes for a model, through the C API.
struct Results {
  std::vector<float> z;
  std::vector<double> bits;
  std::vector<uint8_t> samples, decoded, from_noise;
};

Results run_c_api(const flowrt_model *m, flowrt_backend backend, const std::vector<uint8_t> &px,
                  size_t n) {
  Results r;
  size_t d = 0;
  REQUIRE(flowrt_model_latent_dim(m, &d) == FLOWRT_OK);
  SessionPtr s = session_of(m, backend, 2);  // batches of 3 run as chunks of 2
  CHECK(flowrt_session_backend(s.get()) == backend);
  r.z.resize(n * d);
  r.bits.resize(n);
  r.samples.resize(n * d);
  r.decoded.resize(n * d);
  r.from_noise.resize(n * d);
  REQUIRE_MESSAGE(flowrt_encode(s.get(), n, px.data(), r.z.data(), r.bits.data()) == FLOWRT_OK,
                  flowrt_last_error());
  REQUIRE(flowrt_decode(s.get(), n, r.z.data(), nullptr, r.decoded.data()) == FLOWRT_OK);
  REQUIRE(flowrt_sample(s.get(), n, 0.8f, 17, r.samples.data()) == FLOWRT_OK);
  // The same seed gives the same samples; image 1 alone is image 1 of the batch.
  std::vector<uint8_t> again(n * d);
  REQUIRE(flowrt_sample(s.get(), n, 0.8f, 17, again.data()) == FLOWRT_OK);
  CHECK(again == r.samples);
  std::vector<float> x(n * d), eps(n * d);
  REQUIRE(flowrt_pixels_to_x(m, n, px.data(), x.data()) == FLOWRT_OK);
  REQUIRE(flowrt_encode_noise(s.get(), n, x.data(), nullptr, eps.data()) == FLOWRT_OK);
  REQUIRE(flowrt_decode_noise(s.get(), n, eps.data(), 1.f, nullptr, nullptr, r.from_noise.data()) ==
          FLOWRT_OK);
  int levels = 0;
  REQUIRE(flowrt_model_levels(m, &levels) == FLOWRT_OK);
  std::vector<double> lp(n * levels), ld(n * levels), map(n * d), log_p(n);
  REQUIRE(flowrt_level_terms(s.get(), n, x.data(), nullptr, lp.data(), ld.data()) == FLOWRT_OK);
  REQUIRE(flowrt_encode_ex(s.get(), n, x.data(), nullptr, nullptr, log_p.data(), nullptr,
                           nullptr) == FLOWRT_OK);
  int c = 0, h = 0, w = 0;
  REQUIRE(flowrt_model_image_shape(m, &c, &h, &w) == FLOWRT_OK);
  REQUIRE(flowrt_nll_map(s.get(), n, x.data(), nullptr, map.data()) == FLOWRT_OK);
  const size_t px_count = static_cast<size_t>(h * w);
  for (size_t i = 0; i < n; ++i) {
    double terms = 0, nll = 0;
    for (int l = 0; l < levels; ++l) terms += lp[i * levels + l] + ld[i * levels + l];
    for (size_t k = 0; k < px_count; ++k) nll += map[i * px_count + k];
    CHECK(std::isfinite(log_p[i]));
    CHECK(std::abs(terms - log_p[i]) <= 1e-5 * std::abs(log_p[i]));
    CHECK(std::abs(nll + log_p[i]) <= 1e-5 * std::abs(log_p[i]));
  }
  return r;
}

// Throws from the executor's constructor with FLOWRT_UNSUPPORTED and every part in the message.
void check_refused(const Graph &g, const std::vector<std::string> &parts) {
  try {
    RefExecutor<float> ex(g, 1, 1, true);
    FAIL("the executor accepted the program");
  } catch (const Error &e) {
    const std::string msg = e.what();
    INFO(msg);
    CHECK(e.status() == FLOWRT_UNSUPPORTED);
    for (const std::string &p : parts) {
      INFO("expected in the message: '" << p << "'");
      CHECK(msg.find(p) != std::string::npos);
    }
  }
}

CouplingLayer checker_coupling(test::Rng &rng, int64_t c, bool mask) {
  CouplingLayer cp;
  cp.type = CouplingType::Affine;
  cp.conditioning = Half::CheckerboardEven;
  cp.mask_channel = mask;
  cp.net = test::rand_coupling_net(rng, c + (mask ? 1 : 0), 4, 2 * c, PaddingMode::Zeros, false);
  cp.split = ShiftScaleSplit::ShiftScaleHalves;
  cp.scale_fn = ScaleFunction::Tanh;
  cp.scale_bias = 0.f;
  cp.form = AffineForm::ScaleThenShift;
  cp.scale_weight = test::rand_tensor(rng, {c}, 0.5, 1.5);
  return cp;
}

TEST_SUITE("family_models") {
  TEST_CASE(
      "RealNVP and NICE .flow files encode, decode and sample on the ref and portable "
      "backends") {
    test::TempDir dir;
    struct Model {
      const char *name;
      Graph graph;
      int levels;
    };
    std::vector<Model> models;
    models.push_back({"realnvp 3x8x8", small_realnvp(3, 8, 8, 1), 2});
    models.push_back({"realnvp 1x6x10", small_realnvp(1, 6, 10, 2), 2});
    models.push_back({"nice 1x4x4", small_nice(3), 1});
    for (const Model &model : models) {
      INFO(std::string(model.name));
      const std::string path = dir.file(std::string(model.name) + ".flow");
      save_flow(model.graph, path);
      ModelPtr m = open_model(path);
      int c = 0, h = 0, w = 0, levels = 0;
      REQUIRE(flowrt_model_image_shape(m.get(), &c, &h, &w) == FLOWRT_OK);
      CHECK(c == model.graph.image.channels);
      CHECK(h == model.graph.image.height);
      CHECK(w == model.graph.image.width);
      REQUIRE(flowrt_model_levels(m.get(), &levels) == FLOWRT_OK);
      CHECK(levels == model.levels);
      const size_t n = 3, d = static_cast<size_t>(model.graph.dims());
      const std::vector<uint8_t> px = random_pixels(n * d, 5);
      const Results ref = run_c_api(m.get(), FLOWRT_BACKEND_REF, px, n);
      const Results por = run_c_api(m.get(), FLOWRT_BACKEND_PORTABLE, px, n);
      for (size_t i = 0; i < n; ++i) {
        CHECK(std::isfinite(ref.bits[i]));
        CHECK(ref.bits[i] > 0);
        CHECK(std::abs(ref.bits[i] - por.bits[i]) <= 1e-5);
      }
      double dz = 0;
      for (size_t k = 0; k < ref.z.size(); ++k)
        dz = std::max(dz, std::fabs(double(ref.z[k]) - por.z[k]));
      CHECK(dz <= 1e-4);
      // Both decode their latents and their standardised noise back to the pixels.
      CHECK(ref.decoded == px);
      CHECK(por.decoded == px);
      CHECK(ref.from_noise == px);
      CHECK(por.from_noise == px);
      // Samples agree except where a value lies on a bin edge.
      size_t differ = 0;
      for (size_t k = 0; k < ref.samples.size(); ++k) differ += ref.samples[k] != por.samples[k];
      CHECK(differ <= ref.samples.size() / 100);
      MESSAGE(std::string(model.name)
              << ": bits/dim " << ref.bits[0] << ", max |z_ref - z_portable| " << dz << ", "
              << differ << " sample pixels differ");
    }
  }

  TEST_CASE("the flow walk refuses a program it would not run exactly, naming the step") {
    test::Rng rng(9);
    const ImageSpec image{2, 4, 4, 8};
    {  // a mask channel on a channel coupling
      CouplingLayer cp;
      cp.type = CouplingType::Additive;
      cp.conditioning = Half::First;
      cp.net = test::rand_coupling_net(rng, 1, 4, 1, PaddingMode::Zeros, false);
      Graph g = test::graph_of(image, {test::make_layer("half", cp)});
      std::get<CouplingLayer>(g.layers[0].op).mask_channel = true;
      check_refused(g, {"step 0 (layer 0 'half')", "a channel coupling on 2x4x4 with a mask"});
    }
    {  // tanh weights of the wrong count
      Graph g = test::graph_of(image, {test::make_layer("cb", checker_coupling(rng, 2, true))});
      std::get<CouplingLayer>(g.layers[0].op).scale_weight = test::const_tensor({3}, 1.f);
      check_refused(g, {"layer 0 'cb'", "the tanh scale has 3 weights, expected 2"});
    }
    {  // a checkerboard net that does not read the mask channel
      Graph g = test::graph_of(image, {test::make_layer("cb", checker_coupling(rng, 2, true))});
      std::get<CouplingLayer>(g.layers[0].op).mask_channel = false;
      check_refused(g, {"layer 0 'cb'", "the coupling net is not 2 -> 4 channels"});
    }
    {  // a checkerboard on a single position
      Graph g = test::graph_of({2, 1, 1, 8}, {test::make_layer("p", PermuteLayer{})});
      CouplingLayer cp = checker_coupling(rng, 2, false);
      cp.net.in_channels = 2;
      cp.net.out_channels = 4;
      g.layers[0].op = cp;
      check_refused(g, {"layer 0 'p'", "fewer than 2 positions"});
    }
    {  // a split leaving a checkerboard
      SplitLayer sp;
      Graph g = test::graph_of(image, {test::make_layer("split", sp)});
      std::get<SplitLayer>(g.layers[0].op).leaving = Half::CheckerboardOdd;
      check_refused(g, {"layer 0 'split'", "a split leaves a channel half, not a checkerboard"});
    }
    {  // a logit after another layer
      ActNormLayer an{test::const_tensor({2}, 0.f), test::const_tensor({2}, 1.f)};
      Graph g = test::graph_of(
          image, {test::make_layer("logit", LogitLayer{0.05f}), test::make_layer("an", an)});
      std::swap(g.layers[0], g.layers[1]);
      check_refused(g, {"step 1 (layer 1 'logit')", "a logit step is not the first"});
    }
    {  // a shape change no flatten explains
      Graph g = test::graph_of(image, {test::make_layer("sq", SqueezeLayer{})});
      g.layers[1].in = Shape3{4, 2, 4};
      check_refused(g, {"step 1 (layer 1 'top_prior')",
                        "its input 4x2x4 is neither the previous output 8x2x2 nor its flattening"});
    }
    // The same graphs unchanged run.
    const Graph ok = test::graph_of(image, {test::make_layer("logit", LogitLayer{0.05f}),
                                            test::make_layer("cb", checker_coupling(rng, 2, true)),
                                            test::make_layer("flat", FlattenLayer{})});
    CHECK_NOTHROW(RefExecutor<float>(ok, 1, 1, true));
  }
}

}  // namespace
}  // namespace flowrt
