// The C API end to end: models opened from a file and from memory, their getters, sessions on
// the reference backend, reproducible and batch-independent sampling, the noise sample uses,
// the temperature-0 mean path, pixel and float scoring and the bits/dim formula, every error path
// (status and message), no allocation in steady-state calls, FLOWRT_BUSY under concurrent use,
// and freeing models and sessions in either order.
//
// This file replaces the global operator new/delete to count allocations; counting is only on
// while a steady-state call is measured, so the rest of the executable is unaffected.
#include <dlfcn.h>
#include <doctest/doctest.h>

#include <algorithm>
#include <atomic>
#include <cmath>
#include <cstdint>
#include <cstdlib>
#include <cstring>
#include <fstream>
#include <memory>
#include <new>
#include <string>
#include <thread>
#include <utility>
#include <vector>

#include "api/handles.hpp"
#include "c_api_handles.hpp"
#include "flowrt.h"
#include "format/flow_file.hpp"
#include "session/session.hpp"
#include "test_support.hpp"

// ---- Allocation counting --------------------------------------------------------------------
// Counting is a process-wide flag rather than a thread-local one so that allocations made by
// the backends' worker threads (OpenMP) during a measured call are counted too; nothing else
// runs while it is on. Allocations whose immediate caller is oneDNN's own library are counted
// apart: oneDNN 2.x builds a small argument map inside every dnnl_primitive_execute(), which no
// caller can avoid; everything flowrt itself does must not allocate.

namespace {
std::atomic<bool> g_counting{false};
std::atomic<size_t> g_allocations{0};
std::atomic<size_t> g_onednn_allocations{0};

bool called_from_onednn(const void *caller) {
  Dl_info info{};
  return dladdr(caller, &info) != 0 && info.dli_fname &&
         std::strstr(info.dli_fname, "libdnnl") != nullptr;
}

// Failure injection: while > 0, the countdown-th allocation made outside libdnnl fails (oneDNN's
// own C code is never handed an exception). Only that one: later allocations succeed again.
std::atomic<long> g_fail_countdown{0};

bool inject_failure(const void *caller) {
  if (g_fail_countdown.load(std::memory_order_relaxed) <= 0) return false;
  if (called_from_onednn(caller)) return false;
  return g_fail_countdown.fetch_sub(1) == 1;
}

void count(const void *caller) {
  if (!g_counting.load(std::memory_order_relaxed)) return;
  if (called_from_onednn(caller))
    g_onednn_allocations.fetch_add(1);
  else
    g_allocations.fetch_add(1);
}

void *plain_alloc(size_t n) {
  return std::malloc(n ? n : 1);
}
void *aligned_alloc_of(size_t n, std::align_val_t al) {
  void *p = nullptr;
  const size_t a = std::max(static_cast<size_t>(al), sizeof(void *));
  if (posix_memalign(&p, a, n ? n : 1) != 0) return nullptr;
  return p;
}
// Out of line, so that the compiler does not inline free() into callers of delete (GCC then
// warns about frees of pointers it cannot see the origin of).
__attribute__((noinline)) void release(void *p) noexcept {
  std::free(p);
}
}  // namespace

#define FLOWRT_TEST_CALLER __builtin_return_address(0)

void *operator new(size_t n) {
  if (inject_failure(FLOWRT_TEST_CALLER)) throw std::bad_alloc();
  count(FLOWRT_TEST_CALLER);
  if (void *p = plain_alloc(n)) return p;
  throw std::bad_alloc();
}
void *operator new[](size_t n) {
  if (inject_failure(FLOWRT_TEST_CALLER)) throw std::bad_alloc();
  count(FLOWRT_TEST_CALLER);
  if (void *p = plain_alloc(n)) return p;
  throw std::bad_alloc();
}
void *operator new(size_t n, const std::nothrow_t &) noexcept {
  if (inject_failure(FLOWRT_TEST_CALLER)) return nullptr;
  count(FLOWRT_TEST_CALLER);
  return plain_alloc(n);
}
void *operator new[](size_t n, const std::nothrow_t &) noexcept {
  if (inject_failure(FLOWRT_TEST_CALLER)) return nullptr;
  count(FLOWRT_TEST_CALLER);
  return plain_alloc(n);
}
void *operator new(size_t n, std::align_val_t al) {
  if (inject_failure(FLOWRT_TEST_CALLER)) throw std::bad_alloc();
  count(FLOWRT_TEST_CALLER);
  if (void *p = aligned_alloc_of(n, al)) return p;
  throw std::bad_alloc();
}
void *operator new[](size_t n, std::align_val_t al) {
  if (inject_failure(FLOWRT_TEST_CALLER)) throw std::bad_alloc();
  count(FLOWRT_TEST_CALLER);
  if (void *p = aligned_alloc_of(n, al)) return p;
  throw std::bad_alloc();
}
void *operator new(size_t n, std::align_val_t al, const std::nothrow_t &) noexcept {
  if (inject_failure(FLOWRT_TEST_CALLER)) return nullptr;
  count(FLOWRT_TEST_CALLER);
  return aligned_alloc_of(n, al);
}
void *operator new[](size_t n, std::align_val_t al, const std::nothrow_t &) noexcept {
  if (inject_failure(FLOWRT_TEST_CALLER)) return nullptr;
  count(FLOWRT_TEST_CALLER);
  return aligned_alloc_of(n, al);
}
void operator delete(void *p) noexcept {
  release(p);
}
void operator delete[](void *p) noexcept {
  release(p);
}
void operator delete(void *p, size_t) noexcept {
  release(p);
}
void operator delete[](void *p, size_t) noexcept {
  release(p);
}
void operator delete(void *p, const std::nothrow_t &) noexcept {
  release(p);
}
void operator delete[](void *p, const std::nothrow_t &) noexcept {
  release(p);
}
void operator delete(void *p, std::align_val_t) noexcept {
  release(p);
}
void operator delete[](void *p, std::align_val_t) noexcept {
  release(p);
}
void operator delete(void *p, size_t, std::align_val_t) noexcept {
  release(p);
}
void operator delete[](void *p, size_t, std::align_val_t) noexcept {
  release(p);
}
void operator delete(void *p, std::align_val_t, const std::nothrow_t &) noexcept {
  release(p);
}
void operator delete[](void *p, std::align_val_t, const std::nothrow_t &) noexcept {
  release(p);
}

namespace flowrt {
namespace {

using test::Rng;

struct Allocations {
  size_t own = 0, onednn = 0;  // made by flowrt (and everything else) / by libdnnl itself
};

// Allocations made while `f` runs.
template <typename F>
Allocations allocations_during(F &&f) {
  g_allocations.store(0);
  g_onednn_allocations.store(0);
  g_counting.store(true);
  f();
  g_counting.store(false);
  return {g_allocations.load(), g_onednn_allocations.load()};
}

using test::ModelPtr;
using test::OptionsPtr;
using test::SessionPtr;

std::string last_error() {
  return flowrt_last_error();
}
bool contains(const std::string &s, const std::string &part) {
  return s.find(part) != std::string::npos;
}

// The test models: 3x8x8 (levels 2, depth 2), random nets, with metadata; variants with classes
// and with n_bits = 5.
Graph test_graph(int classes = 0, int n_bits = 8, int depth = 2, int hidden = 8, int64_t size = 8) {
  GlowConfig cfg;
  cfg.channels = 3;
  cfg.height = cfg.width = size;
  cfg.levels = 2;
  cfg.depth = depth;
  cfg.hidden = hidden;
  cfg.n_bits = n_bits;
  cfg.n_classes = classes;
  cfg.random_nets = true;
  cfg.seed = 5 + classes + n_bits;
  Graph g = build_glow(cfg);
  g.metadata = {{"dataset", "unit-test"}, {"producer", "flowrt tests"}};
  return g;
}

ModelPtr open_model(const std::string &path) {
  flowrt_model *m = nullptr;
  const flowrt_status st = flowrt_model_open(path.c_str(), &m);
  REQUIRE_MESSAGE(st == FLOWRT_OK, last_error());
  return ModelPtr(m);
}

ModelPtr model_from_graph(const Graph &g) {
  const std::vector<uint8_t> bytes = write_flow(g);
  flowrt_model *m = nullptr;
  const flowrt_status st = flowrt_model_from_memory(bytes.data(), bytes.size(), &m);
  REQUIRE_MESSAGE(st == FLOWRT_OK, last_error());
  return ModelPtr(m);
}

SessionPtr make_session(const flowrt_model *m, size_t max_batch,
                        flowrt_backend backend = FLOWRT_BACKEND_REF, int threads = 0) {
  flowrt_session_options *o = nullptr;
  REQUIRE(flowrt_session_options_create(&o) == FLOWRT_OK);
  OptionsPtr opts(o);
  REQUIRE(flowrt_session_options_set_backend(o, backend) == FLOWRT_OK);
  REQUIRE(flowrt_session_options_set_max_batch(o, max_batch) == FLOWRT_OK);
  REQUIRE(flowrt_session_options_set_threads(o, threads) == FLOWRT_OK);
  flowrt_session *s = nullptr;
  const flowrt_status st = flowrt_session_create(m, o, &s);
  REQUIRE_MESSAGE(st == FLOWRT_OK, last_error());
  return SessionPtr(s);
}

size_t dims_of(const flowrt_model *m) {
  size_t d = 0;
  REQUIRE(flowrt_model_latent_dim(m, &d) == FLOWRT_OK);
  return d;
}

std::vector<uint8_t> random_pixels(size_t n, uint64_t seed) {
  Rng rng(seed);
  std::vector<uint8_t> p(n);
  for (uint8_t &v : p) v = static_cast<uint8_t>(rng.next() & 0xff);
  return p;
}

// The network input of a pixel per flowrt.h: p / 2^n_bits - 0.5 + 0.5 / 2^n_bits, p being the
// pixel's top n_bits bits.
float bin_centre(uint8_t pixel, int n_bits) {
  const double p = static_cast<double>(pixel >> (8 - n_bits));
  const double bins = std::ldexp(1.0, n_bits);
  return static_cast<float>(p / bins - 0.5 + 0.5 / bins);
}

TEST_SUITE("c_api") {
  TEST_CASE("library strings: version, format major, status and backend names") {
    const std::string v = std::to_string(FLOWRT_VERSION_MAJOR) + "." +
                          std::to_string(FLOWRT_VERSION_MINOR) + "." +
                          std::to_string(FLOWRT_VERSION_PATCH);
    CHECK(std::string(flowrt_version()) == v);
    CHECK(flowrt_format_major_supported() == 1);
    CHECK(std::string(flowrt_status_string(FLOWRT_OK)) == "FLOWRT_OK");
    CHECK(std::string(flowrt_status_string(FLOWRT_FORMAT_ERROR)) == "FLOWRT_FORMAT_ERROR");
    CHECK(std::string(flowrt_status_string(FLOWRT_BUSY)) == "FLOWRT_BUSY");
    CHECK(std::string(flowrt_status_string(static_cast<flowrt_status>(99))) != "");
    CHECK(std::string(flowrt_backend_name(FLOWRT_BACKEND_REF)) == "ref");
    CHECK(std::string(flowrt_backend_name(FLOWRT_BACKEND_ONEDNN)) == "onednn");
    CHECK(std::string(flowrt_backend_name(FLOWRT_BACKEND_CUDA)) == "cuda");
    CHECK(std::string(flowrt_backend_name(FLOWRT_BACKEND_AUTO)) == "auto");
    CHECK(flowrt_backend_available(FLOWRT_BACKEND_REF) == 1);
    // A C caller may pass any int for an enum.
    CHECK(std::string(flowrt_backend_name(static_cast<flowrt_backend>(7))) == "unknown");
    CHECK(flowrt_backend_available(static_cast<flowrt_backend>(7)) == 0);
  }

  TEST_CASE("a saved model opens from a file and from memory with the same getters and results") {
    test::TempDir dir;
    const Graph g = test_graph();
    save_flow(g, dir.file("m.flow"));
    ModelPtr file = open_model(dir.file("m.flow"));
    ModelPtr mem = model_from_graph(g);
    for (const flowrt_model *m : {file.get(), mem.get()}) {
      int c = 0, h = 0, w = 0, bits = 0, levels = 0, classes = -1;
      REQUIRE(flowrt_model_image_shape(m, &c, &h, &w) == FLOWRT_OK);
      CHECK((c == 3 && h == 8 && w == 8));
      REQUIRE(flowrt_model_n_bits(m, &bits) == FLOWRT_OK);
      CHECK(bits == 8);
      CHECK(dims_of(m) == 3 * 8 * 8);
      REQUIRE(flowrt_model_levels(m, &levels) == FLOWRT_OK);
      CHECK(levels == 2);
      REQUIRE(flowrt_model_num_classes(m, &classes) == FLOWRT_OK);
      CHECK(classes == 0);
      // Level 0 leaves after the first squeeze (12x4x4) as half its channels; the top level is
      // the rest squeezed again: 6x4x4 -> 24x2x2.
      size_t off = 99;
      REQUIRE(flowrt_model_latent_shape(m, 0, &c, &h, &w, &off) == FLOWRT_OK);
      CHECK((c == 6 && h == 4 && w == 4 && off == 0));
      REQUIRE(flowrt_model_latent_shape(m, 1, &c, &h, &w, &off) == FLOWRT_OK);
      CHECK((c == 24 && h == 2 && w == 2 && off == 96));
      REQUIRE(flowrt_model_latent_shape(m, 1, nullptr, nullptr, nullptr, nullptr) == FLOWRT_OK);
      CHECK(flowrt_model_latent_shape(m, 2, &c, &h, &w, &off) == FLOWRT_INVALID_ARGUMENT);
      CHECK(contains(last_error(), "level 2"));
      CHECK(flowrt_model_latent_shape(m, -1, &c, &h, &w, &off) == FLOWRT_INVALID_ARGUMENT);

      char buf[64];
      size_t len = 0;
      REQUIRE(flowrt_model_metadata(m, "dataset", buf, sizeof buf, &len) == FLOWRT_OK);
      CHECK(std::string(buf) == "unit-test");
      CHECK(len == 9);
      REQUIRE(flowrt_model_metadata(m, "producer", buf, 5, &len) == FLOWRT_OK);
      CHECK(std::string(buf) == "flow");  // truncated to buf_size - 1, NUL-terminated
      CHECK(len == 12);
      REQUIRE(flowrt_model_metadata(m, "producer", nullptr, 0, &len) == FLOWRT_OK);
      CHECK(len == 12);
      CHECK(flowrt_model_metadata(m, "missing-key", buf, sizeof buf, &len) ==
            FLOWRT_INVALID_ARGUMENT);
      CHECK(contains(last_error(), "missing-key"));
    }
    // Both models compute the same thing.
    const size_t d = dims_of(file.get());
    SessionPtr s1 = make_session(file.get(), 4), s2 = make_session(mem.get(), 4);
    CHECK(flowrt_session_backend(s1.get()) == FLOWRT_BACKEND_REF);
    const std::vector<uint8_t> px = random_pixels(4 * d, 1);
    std::vector<float> z1(4 * d), z2(4 * d);
    std::vector<double> b1(4), b2(4);
    REQUIRE(flowrt_encode(s1.get(), 4, px.data(), z1.data(), b1.data()) == FLOWRT_OK);
    REQUIRE(flowrt_encode(s2.get(), 4, px.data(), z2.data(), b2.data()) == FLOWRT_OK);
    CHECK(z1 == z2);
    CHECK(b1 == b2);
    CHECK(last_error().empty());
  }

  TEST_CASE("sampling is deterministic per seed and differs between seeds") {
    ModelPtr m = model_from_graph(test_graph());
    SessionPtr s = make_session(m.get(), 8);
    const size_t d = dims_of(m.get());
    std::vector<uint8_t> a(6 * d), b(6 * d), c(6 * d);
    REQUIRE(flowrt_sample(s.get(), 6, 0.7f, 42, a.data()) == FLOWRT_OK);
    REQUIRE(flowrt_sample(s.get(), 6, 0.7f, 42, b.data()) == FLOWRT_OK);
    REQUIRE(flowrt_sample(s.get(), 6, 0.7f, 43, c.data()) == FLOWRT_OK);
    CHECK(a == b);
    size_t differing = 0;
    for (size_t k = 0; k < a.size(); ++k) differing += a[k] != c[k];
    CHECK(differing > a.size() / 2);
    // Images of one batch differ from each other.
    CHECK(!std::equal(a.begin(), a.begin() + d, a.begin() + d));
    // A second session on the same model gives the same images.
    SessionPtr s2 = make_session(m.get(), 2);
    REQUIRE(flowrt_sample(s2.get(), 6, 0.7f, 42, c.data()) == FLOWRT_OK);
    CHECK(a == c);
  }

  TEST_CASE("samples and encodings do not depend on the batch size or the chunking") {
    ModelPtr m = model_from_graph(test_graph());
    const size_t d = dims_of(m.get());
    SessionPtr small = make_session(m.get(), 3), big = make_session(m.get(), 16),
               one = make_session(m.get(), 1, FLOWRT_BACKEND_REF, 1);
    std::vector<uint8_t> s7(7 * d), s16(16 * d), s1(7 * d);
    REQUIRE(flowrt_sample(small.get(), 7, 0.8f, 9, s7.data()) == FLOWRT_OK);
    REQUIRE(flowrt_sample(big.get(), 16, 0.8f, 9, s16.data()) == FLOWRT_OK);
    REQUIRE(flowrt_sample(one.get(), 7, 0.8f, 9, s1.data()) == FLOWRT_OK);
    CHECK(std::equal(s7.begin(), s7.end(), s16.begin()));
    CHECK(s1 == s7);

    const std::vector<uint8_t> px = random_pixels(7 * d, 2);
    std::vector<float> za(7 * d), zb(7 * d), zc(7 * d);
    std::vector<double> ba(7), bb(7), bc(7);
    REQUIRE(flowrt_encode(small.get(), 7, px.data(), za.data(), ba.data()) == FLOWRT_OK);
    REQUIRE(flowrt_encode(big.get(), 7, px.data(), zb.data(), bb.data()) == FLOWRT_OK);
    REQUIRE(flowrt_encode(one.get(), 7, px.data(), zc.data(), bc.data()) == FLOWRT_OK);
    CHECK(za == zb);
    CHECK(za == zc);
    CHECK(ba == bb);
    CHECK(ba == bc);
    // Decoding in chunks too.
    std::vector<float> xa(7 * d), xb(7 * d);
    REQUIRE(flowrt_decode(small.get(), 7, za.data(), xa.data(), nullptr) == FLOWRT_OK);
    REQUIRE(flowrt_decode(big.get(), 7, za.data(), xb.data(), nullptr) == FLOWRT_OK);
    CHECK(xa == xb);
  }

  TEST_CASE("flowrt_model_noise gives the standard normals sample uses") {
    ModelPtr m = model_from_graph(test_graph());
    SessionPtr s = make_session(m.get(), 4);
    const size_t d = dims_of(m.get());
    const size_t n = 6;
    std::vector<float> eps(n * d);
    REQUIRE(flowrt_model_noise(m.get(), n, 77, 0, eps.data()) == FLOWRT_OK);
    std::vector<uint8_t> from_noise(n * d), sampled(n * d);
    REQUIRE(flowrt_decode_noise(s.get(), n, eps.data(), 0.6f, nullptr, nullptr,
                                from_noise.data()) == FLOWRT_OK);
    REQUIRE(flowrt_sample(s.get(), n, 0.6f, 77, sampled.data()) == FLOWRT_OK);
    CHECK(from_noise == sampled);
    // Image i's noise is keyed by its index: a window starting at image 2 is a slice.
    std::vector<float> window(3 * d);
    REQUIRE(flowrt_model_noise(m.get(), 3, 77, 2, window.data()) == FLOWRT_OK);
    CHECK(std::equal(window.begin(), window.end(), eps.begin() + 2 * d));
    // They are standard normals.
    std::vector<float> many(64 * d);
    REQUIRE(flowrt_model_noise(m.get(), 64, 5, 0, many.data()) == FLOWRT_OK);
    double mean = 0, var = 0;
    for (float e : many) mean += e;
    mean /= many.size();
    for (float e : many) var += (e - mean) * (e - mean);
    var /= many.size();
    MESSAGE("Philox normals: mean " << mean << ", variance " << var << " over " << many.size());
    CHECK(std::fabs(mean) < 0.02);
    CHECK(std::fabs(var - 1.0) < 0.03);
  }

  TEST_CASE("temperature 0 gives the prior mean path, whatever the seed or the noise") {
    const Graph g = test_graph(3);
    ModelPtr m = model_from_graph(g);
    SessionPtr s = make_session(m.get(), 4);
    const size_t d = dims_of(m.get());
    const std::vector<int32_t> labels{0, 2};
    std::vector<uint8_t> a(2 * d), b(2 * d);
    REQUIRE(flowrt_sample_class(s.get(), 2, 0.f, 1, labels.data(), a.data()) == FLOWRT_OK);
    REQUIRE(flowrt_sample_class(s.get(), 2, 0.f, 2, labels.data(), b.data()) == FLOWRT_OK);
    CHECK(a == b);
    std::vector<float> eps(2 * d), zeros(2 * d, 0.f), x0(2 * d), x1(2 * d);
    REQUIRE(flowrt_model_noise(m.get(), 2, 3, 0, eps.data()) == FLOWRT_OK);
    REQUIRE(flowrt_decode_noise(s.get(), 2, eps.data(), 0.f, labels.data(), x0.data(), nullptr) ==
            FLOWRT_OK);
    REQUIRE(flowrt_decode_noise(s.get(), 2, zeros.data(), 0.7f, labels.data(), x1.data(),
                                nullptr) == FLOWRT_OK);
    CHECK(x0 == x1);
    // Every latent of x0 is its prior's mean (the naive encoder evaluates the priors).
    double err = 0;
    for (size_t i = 0; i < 2; ++i) {
      const test::NaiveResult nv = test::naive_encode(
          g, std::vector<double>(x0.begin() + i * d, x0.begin() + (i + 1) * d), labels[i]);
      for (size_t k = 0; k < d; ++k) err = std::max(err, std::fabs(nv.z[k] - nv.mean[k]));
    }
    MESSAGE("temperature 0: max |z - prior mean| = " << err);
    CHECK(err < 1e-4);
  }

  TEST_CASE(
      "encode of pixels equals encode_float at the bin centres; bits/dim follows its formula") {
    for (int n_bits : {8, 5}) {
      INFO("n_bits " << n_bits);
      ModelPtr m = model_from_graph(test_graph(0, n_bits));
      SessionPtr s = make_session(m.get(), 4);
      const size_t d = dims_of(m.get()), n = 5;
      const std::vector<uint8_t> px = random_pixels(n * d, 3);
      std::vector<float> x(n * d);
      for (size_t k = 0; k < x.size(); ++k) {
        x[k] = bin_centre(px[k], n_bits);
        CHECK(x[k] == pixel_to_x(px[k], n_bits));
      }
      std::vector<float> z1(n * d), z2(n * d), z3(n * d);
      std::vector<double> b1(n), b2(n), b3(n), log_p(n), log_det(n);
      REQUIRE(flowrt_encode(s.get(), n, px.data(), z1.data(), b1.data()) == FLOWRT_OK);
      REQUIRE(flowrt_encode_float(s.get(), n, x.data(), z2.data(), b2.data()) == FLOWRT_OK);
      REQUIRE(flowrt_encode_ex(s.get(), n, x.data(), nullptr, z3.data(), log_p.data(),
                               log_det.data(), b3.data()) == FLOWRT_OK);
      CHECK(z1 == z2);
      CHECK(z1 == z3);
      CHECK(b1 == b2);
      CHECK(b1 == b3);
      const double dd = static_cast<double>(d);
      for (size_t i = 0; i < n; ++i) {
        const double expect =
            -(log_p[i] - dd * std::log(std::ldexp(1.0, n_bits))) / (dd * std::log(2.0));
        CHECK(b1[i] == doctest::Approx(expect).epsilon(1e-12));
        CHECK(std::isfinite(log_det[i]));
        CHECK(log_det[i] != 0.0);
      }
      // Outputs may be NULL.
      REQUIRE(flowrt_encode(s.get(), n, px.data(), nullptr, b2.data()) == FLOWRT_OK);
      CHECK(b1 == b2);
      REQUIRE(flowrt_encode(s.get(), n, px.data(), nullptr, nullptr) == FLOWRT_OK);
      // Pixels survive encode then decode, and decoded pixels keep only the top n_bits bits.
      std::vector<uint8_t> back(n * d);
      std::vector<float> xb(n * d);
      REQUIRE(flowrt_decode(s.get(), n, z1.data(), xb.data(), back.data()) == FLOWRT_OK);
      size_t same = 0;
      for (size_t k = 0; k < px.size(); ++k) {
        const uint8_t top = static_cast<uint8_t>((px[k] >> (8 - n_bits)) << (8 - n_bits));
        same += back[k] == top;
        CHECK((back[k] & ((1 << (8 - n_bits)) - 1)) == 0);
      }
      CHECK(same == px.size());
    }
  }

  TEST_CASE("decoded pixels quantise x to n_bits with clamping") {
    for (int n_bits : {8, 5}) {
      ModelPtr m = model_from_graph(test_graph(0, n_bits));
      SessionPtr s = make_session(m.get(), 2);
      const size_t d = dims_of(m.get());
      Rng rng(4);
      std::vector<float> z(2 * d), x(2 * d);
      for (float &v : z) v = static_cast<float>(2.0 * rng.normal());
      std::vector<uint8_t> px(2 * d);
      REQUIRE(flowrt_decode(s.get(), 2, z.data(), x.data(), px.data()) == FLOWRT_OK);
      const double bins = std::ldexp(1.0, n_bits);
      for (size_t k = 0; k < x.size(); ++k) {
        const double q = std::min(std::max(std::floor((x[k] + 0.5) * bins), 0.0), bins - 1);
        CHECK(px[k] == static_cast<int>(q) << (8 - n_bits));
      }
    }
  }

  TEST_CASE("every error path returns its status and a message naming the problem") {
    test::TempDir dir;
    const Graph g = test_graph();
    save_flow(g, dir.file("m.flow"));
    ModelPtr m = open_model(dir.file("m.flow"));
    ModelPtr cm = model_from_graph(test_graph(3));
    SessionPtr s = make_session(m.get(), 4);
    SessionPtr cs = make_session(cm.get(), 4);
    const size_t d = dims_of(m.get());
    std::vector<float> x(2 * d, 0.1f), z(2 * d, 0.f), out(2 * d);
    std::vector<uint8_t> px(2 * d, 128);
    std::vector<double> bpd(2);
    flowrt_model *mp = nullptr;
    flowrt_session *sp = nullptr;

    auto expect = [](flowrt_status got, flowrt_status want, const char *part) {
      INFO("want " << std::string(flowrt_status_string(want)) << " naming '" << part << "', got "
                   << std::string(flowrt_status_string(got)) << ": " << last_error());
      CHECK(got == want);
      CHECK(contains(last_error(), part));
    };

    // Models.
    expect(flowrt_model_open(nullptr, &mp), FLOWRT_INVALID_ARGUMENT, "path");
    expect(flowrt_model_open(dir.file("m.flow").c_str(), nullptr), FLOWRT_INVALID_ARGUMENT, "out");
    const std::string missing = dir.file("does-not-exist.flow");
    expect(flowrt_model_open(missing.c_str(), &mp), FLOWRT_IO_ERROR, "does-not-exist.flow");
    CHECK(mp == nullptr);
    expect(flowrt_model_open(dir.file("").c_str(), &mp), FLOWRT_IO_ERROR, "not a regular file");
    {
      std::ofstream(dir.file("short.flow")) << "FLOW";
      expect(flowrt_model_open(dir.file("short.flow").c_str(), &mp), FLOWRT_FORMAT_ERROR,
             "short.flow");
    }
    expect(flowrt_model_from_memory(nullptr, 100, &mp), FLOWRT_INVALID_ARGUMENT, "data");
    expect(flowrt_model_from_memory(px.data(), 3, &mp), FLOWRT_FORMAT_ERROR, "too small");
    expect(flowrt_model_from_memory(px.data(), px.size(), nullptr), FLOWRT_INVALID_ARGUMENT, "out");
    int i0 = 0;
    size_t z0 = 0;
    expect(flowrt_model_image_shape(nullptr, &i0, &i0, &i0), FLOWRT_INVALID_ARGUMENT, "model");
    expect(flowrt_model_n_bits(m.get(), nullptr), FLOWRT_INVALID_ARGUMENT, "n_bits");
    expect(flowrt_model_latent_dim(nullptr, &z0), FLOWRT_INVALID_ARGUMENT, "model");
    expect(flowrt_model_levels(m.get(), nullptr), FLOWRT_INVALID_ARGUMENT, "levels");
    expect(flowrt_model_num_classes(nullptr, &i0), FLOWRT_INVALID_ARGUMENT, "model");
    expect(flowrt_model_metadata(m.get(), nullptr, nullptr, 0, &z0), FLOWRT_INVALID_ARGUMENT,
           "key");

    // Options and sessions.
    flowrt_session_options *o = nullptr;
    expect(flowrt_session_options_create(nullptr), FLOWRT_INVALID_ARGUMENT, "out");
    REQUIRE(flowrt_session_options_create(&o) == FLOWRT_OK);
    OptionsPtr opts(o);
    expect(flowrt_session_options_set_max_batch(o, 0), FLOWRT_INVALID_ARGUMENT, "max_batch");
    expect(flowrt_session_options_set_max_batch(o, 65537), FLOWRT_INVALID_ARGUMENT, "max_batch");
    expect(flowrt_session_options_set_max_batch(nullptr, 4), FLOWRT_INVALID_ARGUMENT, "options");
    expect(flowrt_session_options_set_threads(o, -1), FLOWRT_INVALID_ARGUMENT, "threads");
    expect(flowrt_session_options_set_device(o, -1), FLOWRT_INVALID_ARGUMENT, "device");
    expect(flowrt_session_options_set_backend(o, static_cast<flowrt_backend>(9)),
           FLOWRT_INVALID_ARGUMENT, "backend");
    expect(flowrt_session_create(nullptr, o, &sp), FLOWRT_INVALID_ARGUMENT, "model");
    expect(flowrt_session_create(m.get(), o, nullptr), FLOWRT_INVALID_ARGUMENT, "out");
    if (!flowrt_backend_available(FLOWRT_BACKEND_CUDA)) {
      REQUIRE(flowrt_session_options_set_backend(o, FLOWRT_BACKEND_CUDA) == FLOWRT_OK);
      const flowrt_status st = flowrt_session_create(m.get(), o, &sp);
      INFO(last_error());
      CHECK((st == FLOWRT_UNSUPPORTED || st == FLOWRT_DEVICE_ERROR));
      CHECK((contains(last_error(), "CUDA") || contains(last_error(), "device")));
      CHECK(sp == nullptr);
    }
    if (!flowrt_backend_available(FLOWRT_BACKEND_ONEDNN)) {
      REQUIRE(flowrt_session_options_set_backend(o, FLOWRT_BACKEND_ONEDNN) == FLOWRT_OK);
      expect(flowrt_session_create(m.get(), o, &sp), FLOWRT_UNSUPPORTED, "oneDNN");
    }
    // REF computes in fp32 only; ONEDNN in fp32, and in bf16 where the CPU has bf16 units (else
    // it refuses naming the CPU's ISA); TF32 and FP16 are CUDA only. AUTO on a CPU runs what
    // the backend it picks implements. The values are ABI: new ones are appended.
    CHECK(FLOWRT_PRECISION_FP32 == 0);
    CHECK(FLOWRT_PRECISION_TF32 == 1);
    CHECK(FLOWRT_PRECISION_BF16 == 2);
    CHECK(FLOWRT_PRECISION_FP16 == 3);
    for (int bad : {4, 77, -1}) {
      expect(flowrt_session_options_set_precision(o, static_cast<flowrt_precision>(bad)),
             FLOWRT_INVALID_ARGUMENT, "unknown precision");
      CHECK(contains(last_error(), "2 bf16, 3 fp16"));  // the message lists the known values
    }
    expect(flowrt_session_options_set_precision(nullptr, FLOWRT_PRECISION_TF32),
           FLOWRT_INVALID_ARGUMENT, "options");
    const bool onednn = flowrt_backend_available(FLOWRT_BACKEND_ONEDNN);
    const std::pair<flowrt_precision, const char *> reduced[] = {{FLOWRT_PRECISION_TF32, "tf32"},
                                                                 {FLOWRT_PRECISION_BF16, "bf16"},
                                                                 {FLOWRT_PRECISION_FP16, "fp16"}};
    for (const auto &[precision, name] : reduced) {
      INFO("precision " << name);
      REQUIRE(flowrt_session_options_set_precision(o, precision) == FLOWRT_OK);
      REQUIRE(flowrt_session_options_set_backend(o, FLOWRT_BACKEND_REF) == FLOWRT_OK);
      expect(flowrt_session_create(m.get(), o, &sp), FLOWRT_UNSUPPORTED, name);
      CHECK(contains(last_error(), "ref backend"));
      CHECK(sp == nullptr);
      REQUIRE(flowrt_session_options_set_backend(o, FLOWRT_BACKEND_ONEDNN) == FLOWRT_OK);
      const flowrt_status st = flowrt_session_create(m.get(), o, &sp);
      INFO(last_error());
      if (precision == FLOWRT_PRECISION_BF16 && st == FLOWRT_OK) {
        CHECK(onednn);
        CHECK(flowrt_session_backend(sp) == FLOWRT_BACKEND_ONEDNN);
        flowrt_session_free(sp);
        sp = nullptr;
      } else {
        CHECK(st == FLOWRT_UNSUPPORTED);
        CHECK(sp == nullptr);
        if (precision != FLOWRT_PRECISION_BF16)
          CHECK(contains(last_error(), std::string(name) + " is CUDA only"));
        else if (onednn)  // a CPU without bf16 units
          CHECK(contains(last_error(), "bf16 units"));
        else
          CHECK(contains(last_error(), "oneDNN"));
      }
      if (!flowrt_backend_available(FLOWRT_BACKEND_CUDA)) {
        REQUIRE(flowrt_session_options_set_backend(o, FLOWRT_BACKEND_AUTO) == FLOWRT_OK);
        REQUIRE(flowrt_session_create(m.get(), o, &sp) == FLOWRT_OK);
        CHECK(flowrt_session_backend(sp) != FLOWRT_BACKEND_CUDA);
        flowrt_session_free(sp);
        sp = nullptr;
      }
    }
    REQUIRE(flowrt_session_options_set_precision(o, FLOWRT_PRECISION_FP32) == FLOWRT_OK);
    CHECK(flowrt_session_backend(nullptr) == FLOWRT_BACKEND_AUTO);

    // Compute: NULL arguments.
    expect(flowrt_encode(nullptr, 1, px.data(), z.data(), nullptr), FLOWRT_INVALID_ARGUMENT,
           "session");
    expect(flowrt_encode(s.get(), 1, nullptr, z.data(), nullptr), FLOWRT_INVALID_ARGUMENT,
           "pixels");
    expect(flowrt_encode_float(s.get(), 1, nullptr, z.data(), nullptr), FLOWRT_INVALID_ARGUMENT,
           "x");
    expect(flowrt_decode(s.get(), 1, nullptr, out.data(), nullptr), FLOWRT_INVALID_ARGUMENT, "z");
    expect(flowrt_decode_noise(s.get(), 1, nullptr, 1.f, nullptr, out.data(), nullptr),
           FLOWRT_INVALID_ARGUMENT, "eps");
    expect(flowrt_sample(s.get(), 1, 1.f, 0, nullptr), FLOWRT_INVALID_ARGUMENT, "pixels");
    expect(flowrt_sample(nullptr, 1, 1.f, 0, px.data()), FLOWRT_INVALID_ARGUMENT, "session");
    expect(flowrt_model_noise(m.get(), 1, 0, 0, nullptr), FLOWRT_INVALID_ARGUMENT, "eps");
    expect(flowrt_model_noise(nullptr, 1, 0, 0, out.data()), FLOWRT_INVALID_ARGUMENT, "model");
    // n = 0 with NULL buffers is a valid empty call.
    CHECK(flowrt_encode(s.get(), 0, nullptr, nullptr, nullptr) == FLOWRT_OK);
    CHECK(flowrt_decode(s.get(), 0, nullptr, nullptr, nullptr) == FLOWRT_OK);
    CHECK(flowrt_sample(s.get(), 0, 1.f, 0, nullptr) == FLOWRT_OK);

    // Non-finite inputs name the array, the image and the element.
    x[d + 5] = std::nanf("");
    expect(flowrt_encode_float(s.get(), 2, x.data(), z.data(), bpd.data()), FLOWRT_INVALID_ARGUMENT,
           "x has a non-finite value (image 1, element 5)");
    x[d + 5] = 0.1f;
    z[3] = INFINITY;
    expect(flowrt_decode(s.get(), 2, z.data(), out.data(), nullptr), FLOWRT_INVALID_ARGUMENT,
           "z has a non-finite value (image 0, element 3)");
    z[3] = 0.f;
    std::vector<float> eps(2 * d, 0.5f);
    eps[d] = std::nanf("");
    expect(flowrt_decode_noise(s.get(), 2, eps.data(), 1.f, nullptr, out.data(), nullptr),
           FLOWRT_INVALID_ARGUMENT, "eps has a non-finite value (image 1");
    eps[d] = 0.5f;

    // Temperatures.
    for (float t : {-0.1f, std::nanf(""), INFINITY}) {
      INFO("temperature " << t);
      expect(flowrt_sample(s.get(), 1, t, 0, px.data()), FLOWRT_INVALID_ARGUMENT, "temperature");
      expect(flowrt_decode_noise(s.get(), 1, eps.data(), t, nullptr, out.data(), nullptr),
             FLOWRT_INVALID_ARGUMENT, "temperature");
    }

    // Labels.
    const std::vector<int32_t> ok_labels{0, 2}, bad_labels{1, 3}, negative{-1, 0};
    expect(flowrt_sample_class(s.get(), 2, 1.f, 0, ok_labels.data(), px.data()),
           FLOWRT_INVALID_ARGUMENT, "not class-conditional");
    expect(flowrt_encode_ex(s.get(), 2, x.data(), ok_labels.data(), z.data(), nullptr, nullptr,
                            nullptr),
           FLOWRT_INVALID_ARGUMENT, "not class-conditional");
    expect(flowrt_decode_noise(s.get(), 2, eps.data(), 1.f, ok_labels.data(), out.data(), nullptr),
           FLOWRT_INVALID_ARGUMENT, "not class-conditional");
    expect(flowrt_sample_class(cs.get(), 2, 1.f, 0, bad_labels.data(), px.data()),
           FLOWRT_INVALID_ARGUMENT, "labels[1] = 3 is out of range [0, 3)");
    expect(flowrt_encode_ex(cs.get(), 2, x.data(), negative.data(), z.data(), nullptr, nullptr,
                            nullptr),
           FLOWRT_INVALID_ARGUMENT, "labels[0] = -1");
    CHECK(flowrt_sample_class(cs.get(), 2, 1.f, 0, ok_labels.data(), px.data()) == FLOWRT_OK);
    CHECK(last_error().empty());  // a success clears the message

    // n * D that does not fit.
    const size_t huge = SIZE_MAX / 2;
    expect(flowrt_encode(s.get(), huge, px.data(), z.data(), nullptr), FLOWRT_INVALID_ARGUMENT,
           "overflow");
    expect(flowrt_encode_float(s.get(), huge, x.data(), z.data(), nullptr), FLOWRT_INVALID_ARGUMENT,
           "overflow");
    expect(flowrt_decode(s.get(), huge, z.data(), out.data(), nullptr), FLOWRT_INVALID_ARGUMENT,
           "overflow");
    expect(flowrt_decode_noise(s.get(), huge, eps.data(), 1.f, nullptr, out.data(), nullptr),
           FLOWRT_INVALID_ARGUMENT, "overflow");
    expect(flowrt_sample(s.get(), huge, 1.f, 0, px.data()), FLOWRT_INVALID_ARGUMENT, "overflow");
    expect(flowrt_model_noise(m.get(), huge, 0, 0, out.data()), FLOWRT_INVALID_ARGUMENT,
           "overflow");

    // The session still works after every failure, and was never left busy.
    CHECK(flowrt_encode(s.get(), 2, px.data(), z.data(), bpd.data()) == FLOWRT_OK);
    // Freeing NULL is a no-op.
    flowrt_model_free(nullptr);
    flowrt_session_free(nullptr);
    flowrt_session_options_free(nullptr);
  }

  TEST_CASE("the last error is per thread") {
    flowrt_model *mp = nullptr;
    REQUIRE(flowrt_model_open(nullptr, &mp) == FLOWRT_INVALID_ARGUMENT);
    std::string other = "unset";
    std::thread t([&] { other = flowrt_last_error(); });
    t.join();
    CHECK(other.empty());
    CHECK(contains(last_error(), "path"));
  }

  TEST_CASE("no allocation in steady-state encode, decode, sample and latent-term calls") {
    ModelPtr m = model_from_graph(test_graph(3));
    const size_t d = dims_of(m.get());
    std::vector<flowrt_backend> backends{FLOWRT_BACKEND_REF, FLOWRT_BACKEND_PORTABLE};
    if (flowrt_backend_available(FLOWRT_BACKEND_ONEDNN)) backends.push_back(FLOWRT_BACKEND_ONEDNN);
    for (flowrt_backend backend : backends) {
      for (size_t n : {size_t{1}, size_t{4}, size_t{9}}) {  // one image, a full batch, chunks
        INFO("backend " << std::string(flowrt_backend_name(backend)) << ", n " << n);
        SessionPtr s = make_session(m.get(), 4, backend);
        std::vector<uint8_t> px = random_pixels(n * d, 5), out_px(n * d);
        std::vector<float> x(n * d), z(n * d), eps(n * d);
        std::vector<double> log_p(n), log_det(n), bpd(n);
        std::vector<int32_t> labels(n, 1);
        std::vector<float> eps_out(n * d);
        std::vector<double> terms(n * 2 * 2), map(n * 8 * 8);  // 2 levels; an 8x8 image
        REQUIRE(flowrt_model_noise(m.get(), n, 1, 0, eps.data()) == FLOWRT_OK);
        auto calls = [&] {
          CHECK(flowrt_encode(s.get(), n, px.data(), z.data(), bpd.data()) == FLOWRT_OK);
          CHECK(flowrt_encode(s.get(), n, px.data(), nullptr, nullptr) == FLOWRT_OK);
          CHECK(flowrt_decode(s.get(), n, z.data(), x.data(), out_px.data()) == FLOWRT_OK);
          CHECK(flowrt_decode(s.get(), n, z.data(), nullptr, out_px.data()) == FLOWRT_OK);
          CHECK(flowrt_encode_ex(s.get(), n, x.data(), labels.data(), z.data(), log_p.data(),
                                 log_det.data(), bpd.data()) == FLOWRT_OK);
          CHECK(flowrt_encode_float(s.get(), n, x.data(), nullptr, bpd.data()) == FLOWRT_OK);
          CHECK(flowrt_decode_noise(s.get(), n, eps.data(), 0.7f, labels.data(), x.data(),
                                    out_px.data()) == FLOWRT_OK);
          CHECK(flowrt_sample(s.get(), n, 0.7f, 3, out_px.data()) == FLOWRT_OK);
          CHECK(flowrt_sample_class(s.get(), n, 0.7f, 3, labels.data(), out_px.data()) ==
                FLOWRT_OK);
          CHECK(flowrt_encode_noise(s.get(), n, x.data(), labels.data(), eps_out.data()) ==
                FLOWRT_OK);
          CHECK(flowrt_level_terms(s.get(), n, x.data(), labels.data(), terms.data(),
                                   terms.data() + n * 2) == FLOWRT_OK);
          CHECK(flowrt_nll_map(s.get(), n, x.data(), nullptr, map.data()) == FLOWRT_OK);
        };
        calls();  // the first calls may set up what they need
        Allocations allocs;
        for (int rep = 0; rep < 2; ++rep) {
          const Allocations a = allocations_during([&] {
            flowrt_encode(s.get(), n, px.data(), z.data(), bpd.data());
            flowrt_encode(s.get(), n, px.data(), nullptr, nullptr);
            flowrt_decode(s.get(), n, z.data(), x.data(), out_px.data());
            flowrt_decode(s.get(), n, z.data(), nullptr, out_px.data());
            flowrt_encode_ex(s.get(), n, x.data(), labels.data(), z.data(), log_p.data(),
                             log_det.data(), bpd.data());
            flowrt_encode_float(s.get(), n, x.data(), nullptr, bpd.data());
            flowrt_decode_noise(s.get(), n, eps.data(), 0.7f, labels.data(), x.data(),
                                out_px.data());
            flowrt_sample(s.get(), n, 0.7f, 3, out_px.data());
            flowrt_sample_class(s.get(), n, 0.7f, 3, labels.data(), out_px.data());
            flowrt_encode_noise(s.get(), n, x.data(), labels.data(), eps_out.data());
            flowrt_level_terms(s.get(), n, x.data(), labels.data(), terms.data(),
                               terms.data() + n * 2);
            flowrt_nll_map(s.get(), n, x.data(), nullptr, map.data());
          });
          allocs.own += a.own;
          allocs.onednn += a.onednn;
        }
        CHECK(allocs.own == 0);
        if (backend == FLOWRT_BACKEND_REF) CHECK(allocs.onednn == 0);
        if (allocs.onednn)
          MESSAGE(std::string(flowrt_backend_name(backend))
                  << ", n " << n << ": " << allocs.onednn
                  << " allocations inside libdnnl (dnnl_primitive_execute) in 24 calls");
        calls();  // and they still succeed
      }
    }
    // The counter does count: a vector allocation while counting is seen.
    CHECK(allocations_during([] {
            std::vector<int> v(10);
            (void)v;
          }).own >= 1);
  }

  TEST_CASE("an allocation failing anywhere in session creation or a first call: OUT_OF_MEMORY") {
    // Every allocation of creating a session and its first calls is made to fail in turn; each
    // time the result is FLOWRT_OK or FLOWRT_OUT_OF_MEMORY with a message, never a crash (nor,
    // under LeakSanitizer, a leak), and the model still works afterwards.
    ModelPtr m = model_from_graph(test_graph());
    const size_t d = dims_of(m.get());
    std::vector<flowrt_backend> backends{FLOWRT_BACKEND_REF};
    if (flowrt_backend_available(FLOWRT_BACKEND_ONEDNN)) backends.push_back(FLOWRT_BACKEND_ONEDNN);
    std::vector<uint8_t> want(2 * d), got(2 * d), px = random_pixels(2 * d, 9);
    std::vector<double> bpd(2);
    for (flowrt_backend backend : backends) {
      INFO("backend " << std::string(flowrt_backend_name(backend)));
      {
        SessionPtr s = make_session(m.get(), 2, backend);
        REQUIRE(flowrt_sample(s.get(), 2, 0.7f, 3, want.data()) == FLOWRT_OK);
      }
      flowrt_session_options *o = nullptr;
      REQUIRE(flowrt_session_options_create(&o) == FLOWRT_OK);
      OptionsPtr opts(o);
      REQUIRE(flowrt_session_options_set_backend(o, backend) == FLOWRT_OK);
      REQUIRE(flowrt_session_options_set_max_batch(o, 2) == FLOWRT_OK);
      auto attempt = [&](flowrt_status *create, flowrt_status *call) {
        flowrt_session *s = nullptr;
        *create = flowrt_session_create(m.get(), o, &s);
        *call = FLOWRT_OK;
        if (*create == FLOWRT_OK) {
          *call = flowrt_sample(s, 2, 0.7f, 3, got.data());
          if (*call == FLOWRT_OK) *call = flowrt_encode(s, 2, px.data(), nullptr, bpd.data());
        } else if (s != nullptr) {
          *create = FLOWRT_INTERNAL_ERROR;  // a failed create must not hand out a session
        }
        flowrt_session_free(s);
      };
      flowrt_status st1, st2;
      const size_t total = allocations_during([&] { attempt(&st1, &st2); }).own;
      REQUIRE(total > 0);
      size_t ooms = 0, bad = 0;
      std::string first_bad;
      for (size_t k = 1; k <= total; ++k) {
        g_fail_countdown.store(static_cast<long>(k));
        attempt(&st1, &st2);
        g_fail_countdown.store(0);
        const flowrt_status st = st1 != FLOWRT_OK ? st1 : st2;
        if (st == FLOWRT_OUT_OF_MEMORY && !last_error().empty()) {
          ++ooms;
        } else if (st != FLOWRT_OK) {
          if (bad++ == 0)
            first_bad = "allocation " + std::to_string(k) + ": " + flowrt_status_string(st) + " " +
                        last_error();
        }
      }
      INFO(first_bad);
      CHECK(bad == 0);
      CHECK(ooms > 0);
      MESSAGE(std::string(flowrt_backend_name(backend))
              << ": " << total << " allocations made to fail in turn, " << ooms
              << " gave FLOWRT_OUT_OF_MEMORY");
      SessionPtr again = make_session(m.get(), 2, backend);
      REQUIRE(flowrt_sample(again.get(), 2, 0.7f, 3, got.data()) == FLOWRT_OK);
      CHECK(got == want);
    }
  }

  TEST_CASE("a busy session answers FLOWRT_BUSY") {
    ModelPtr m = model_from_graph(test_graph());
    SessionPtr s = make_session(m.get(), 2);
    const size_t d = dims_of(m.get());
    std::vector<uint8_t> px(d, 7);
    std::vector<float> z(d);
    {
      InferenceSession::Use held(*s->session);  // another caller is inside the session
      CHECK(flowrt_encode(s.get(), 1, px.data(), z.data(), nullptr) == FLOWRT_BUSY);
      CHECK(contains(last_error(), "in use"));
      CHECK(flowrt_sample(s.get(), 1, 1.f, 0, px.data()) == FLOWRT_BUSY);
      CHECK(flowrt_decode(s.get(), 1, z.data(), nullptr, px.data()) == FLOWRT_BUSY);
    }
    CHECK(flowrt_encode(s.get(), 1, px.data(), z.data(), nullptr) == FLOWRT_OK);
  }

  TEST_CASE("two threads hammering one session get OK or FLOWRT_BUSY, never a crash") {
    ModelPtr m = model_from_graph(test_graph(0, 8, 4, 32, 16));
    SessionPtr s = make_session(m.get(), 2, FLOWRT_BACKEND_REF, 1);
    const size_t d = dims_of(m.get());
    std::atomic<int> ok{0}, busy{0}, other{0};
    std::atomic<bool> bad_message{false};
    auto hammer = [&](uint64_t seed) {
      std::vector<uint8_t> px = random_pixels(2 * d, seed);
      std::vector<float> z(2 * d);
      for (int i = 0; i < 25; ++i) {
        const flowrt_status st = (i % 2) ? flowrt_encode(s.get(), 2, px.data(), z.data(), nullptr)
                                         : flowrt_sample(s.get(), 2, 0.7f, seed, px.data());
        if (st == FLOWRT_OK) {
          ++ok;
        } else if (st == FLOWRT_BUSY) {
          ++busy;
          if (std::string(flowrt_last_error()).find("in use") == std::string::npos)
            bad_message = true;
        } else {
          ++other;
        }
      }
    };
    std::thread a(hammer, 1), b(hammer, 2);
    a.join();
    b.join();
    MESSAGE("concurrent calls: " << ok.load() << " OK, " << busy.load() << " BUSY");
    CHECK(other.load() == 0);
    CHECK(ok.load() + busy.load() == 50);
    CHECK(ok.load() > 0);
    CHECK(!bad_message);
  }

  TEST_CASE("sessions on several threads share one model") {
    ModelPtr m = model_from_graph(test_graph());
    const size_t d = dims_of(m.get());
    std::vector<uint8_t> results[3];
    std::vector<std::thread> threads;
    for (int t = 0; t < 3; ++t)
      threads.emplace_back([&, t] {
        flowrt_session *s = nullptr;
        if (flowrt_session_create(m.get(), nullptr, &s) != FLOWRT_OK) return;
        results[t].resize(4 * d);
        if (flowrt_sample(s, 4, 0.7f, 11, results[t].data()) != FLOWRT_OK) results[t].clear();
        flowrt_session_free(s);
      });
    for (std::thread &t : threads) t.join();
    CHECK(results[0].size() == 4 * d);
    CHECK(results[0] == results[1]);
    CHECK(results[0] == results[2]);
  }

  TEST_CASE("models and sessions may be freed in either order") {
    test::TempDir dir;
    save_flow(test_graph(), dir.file("m.flow"));
    ModelPtr m = open_model(dir.file("m.flow"));
    const size_t d = dims_of(m.get());
    SessionPtr s = make_session(m.get(), 2);
    std::vector<uint8_t> before(2 * d), after(2 * d);
    REQUIRE(flowrt_sample(s.get(), 2, 0.7f, 8, before.data()) == FLOWRT_OK);
    m.reset();  // the model (and its mapped file) goes first; the session keeps the graph
    std::filesystem::remove(dir.file("m.flow"));
    REQUIRE(flowrt_sample(s.get(), 2, 0.7f, 8, after.data()) == FLOWRT_OK);
    CHECK(before == after);
    std::vector<float> z(2 * d);
    CHECK(flowrt_encode(s.get(), 2, after.data(), z.data(), nullptr) == FLOWRT_OK);
    s.reset();

    // From memory: the caller's bytes are copied and may be freed at once.
    auto bytes = std::make_unique<std::vector<uint8_t>>(write_flow(test_graph()));
    flowrt_model *mp = nullptr;
    REQUIRE(flowrt_model_from_memory(bytes->data(), bytes->size(), &mp) == FLOWRT_OK);
    std::fill(bytes->begin(), bytes->end(), 0);
    bytes.reset();
    ModelPtr m2(mp);
    SessionPtr s2 = make_session(m2.get(), 2);
    REQUIRE(flowrt_sample(s2.get(), 2, 0.7f, 8, after.data()) == FLOWRT_OK);
    CHECK(before == after);
    s2.reset();  // session first, then the model
    m2.reset();
  }
}

}  // namespace
}  // namespace flowrt
