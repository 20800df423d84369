// The body of the .flow loader fuzz target, shared by the libFuzzer harness
// (fuzz_load_flow.cpp) and the corpus replay and corruption tests of flowrt_tests: load bytes
// through the C API and, when the model loads and is small, run it once on the reference backend.
// Whatever the bytes, the library must answer with a known status and a message, never crash;
// a model that loads must be consistent and must run. `problem` names a broken invariant (the
// fuzz target aborts on it; the tests fail on it).
#pragma once

#include <algorithm>
#include <cmath>
#include <cstdint>
#include <string>
#include <variant>
#include <vector>

#include "api/handles.hpp"
#include "flowrt.h"
#include "model/program.hpp"

namespace flowrt::fuzz {

// What a loaded model may be and still run inside the entry (it stays fast).
constexpr int64_t kMaxRunDims = 4096;            // C*H*W
constexpr double kMaxRunFlops = 4e6;             // per image and direction
constexpr int64_t kMaxRunNetElements = 1 << 16;  // largest net activation per image

struct EntryResult {
  flowrt_status load = FLOWRT_OK;
  std::string load_message;
  bool ran = false;     // the model loaded and was small enough to run
  std::string problem;  // empty when every invariant held
};

inline bool known_status(flowrt_status s) {
  return s >= FLOWRT_OK && s <= FLOWRT_INTERNAL_ERROR;
}

inline int64_t largest_net_activation(const Graph &g) {
  int64_t m = 0;
  for (const Layer &l : g.layers) {
    if (const auto *c = std::get_if<CouplingLayer>(&l.op))
      m = std::max(m, c->net.max_channels * l.in.plane());
    if (const auto *s = std::get_if<SplitLayer>(&l.op))
      m = std::max(m, s->prior.max_channels * l.in.plane());
  }
  return m;
}

// Runs a loaded model once: encode (floats and pixels), decode and sample one image.
inline void run_model(const flowrt_model *m, EntryResult &r) {
  flowrt_session_options *opts = nullptr;
  if (flowrt_session_options_create(&opts) != FLOWRT_OK) {
    r.problem = "cannot create session options";
    return;
  }
  flowrt_session_options_set_backend(opts, FLOWRT_BACKEND_REF);
  flowrt_session_options_set_max_batch(opts, 1);
  flowrt_session_options_set_threads(opts, 1);
  flowrt_session *s = nullptr;
  const flowrt_status created = flowrt_session_create(m, opts, &s);
  flowrt_session_options_free(opts);
  if (created == FLOWRT_OUT_OF_MEMORY) return;
  if (created != FLOWRT_OK) {
    r.problem = std::string("a loaded model failed to make a session: ") + flowrt_last_error();
    return;
  }
  r.ran = true;
  size_t d = 0;
  int classes = 0;
  flowrt_model_latent_dim(m, &d);
  flowrt_model_num_classes(m, &classes);
  std::vector<float> x(d), z(d), out(d);
  std::vector<uint8_t> pixels(d);
  for (size_t k = 0; k < d; ++k) {
    x[k] = static_cast<float>((k * 37) % 101) / 101.f - 0.5f;
    z[k] = 0.5f * std::sin(static_cast<float>(k));
    pixels[k] = static_cast<uint8_t>(k * 13);
  }
  const int32_t label = 0;
  const int32_t *labels = classes > 0 ? &label : nullptr;
  double log_p = 0, log_det = 0, bpd = 0;
  auto expect_ok = [&](flowrt_status st, const char *what) {
    if (st != FLOWRT_OK && r.problem.empty())
      r.problem = std::string(what) + " failed on a loaded model: " + flowrt_status_string(st) +
                  ": " + flowrt_last_error();
  };
  expect_ok(flowrt_encode_ex(s, 1, x.data(), labels, z.data(), &log_p, &log_det, &bpd),
            "encode_ex");
  expect_ok(flowrt_encode(s, 1, pixels.data(), nullptr, &bpd), "encode");
  for (size_t k = 0; k < d; ++k) z[k] = 0.5f * std::sin(static_cast<float>(k));
  expect_ok(flowrt_decode(s, 1, z.data(), out.data(), pixels.data()), "decode");
  expect_ok(flowrt_sample_class(s, 1, 0.5f, 1, labels, pixels.data()), "sample");
  flowrt_session_free(s);
}

inline EntryResult run_entry(const uint8_t *data, size_t size) {
  EntryResult r;
  flowrt_model *m = nullptr;
  r.load = flowrt_model_from_memory(data, size, &m);
  r.load_message = flowrt_last_error();
  if (!known_status(r.load)) {
    r.problem = "unknown status " + std::to_string(static_cast<int>(r.load));
    return r;
  }
  if (r.load != FLOWRT_OK) {
    if (m) r.problem = "a failed load returned a model";
    if (r.load_message.empty()) r.problem = "a failed load left no message";
    if (r.load == FLOWRT_INTERNAL_ERROR) r.problem = "internal error: " + r.load_message;
    return r;
  }
  if (!m) {
    r.problem = "a successful load returned no model";
    return r;
  }
  // The getters agree with each other: the levels' latents tile the latent vector.
  int c = 0, h = 0, w = 0, levels = 0;
  size_t d = 0, expected_offset = 0;
  if (flowrt_model_image_shape(m, &c, &h, &w) != FLOWRT_OK ||
      flowrt_model_latent_dim(m, &d) != FLOWRT_OK || flowrt_model_levels(m, &levels) != FLOWRT_OK)
    r.problem = "a getter failed on a loaded model";
  else if (static_cast<size_t>(c) * h * w != d)
    r.problem = "latent dim is not C*H*W";
  for (int i = 0; i < levels && r.problem.empty(); ++i) {
    int lc = 0, lh = 0, lw = 0;
    size_t off = 0;
    if (flowrt_model_latent_shape(m, i, &lc, &lh, &lw, &off) != FLOWRT_OK || off != expected_offset)
      r.problem = "latent level " + std::to_string(i) + " is not where the previous one ends";
    expected_offset += static_cast<size_t>(lc) * lh * lw;
  }
  if (r.problem.empty() && expected_offset != d) r.problem = "latent levels do not add up to C*H*W";
  const Graph &g = *m->graph;
  if (r.problem.empty() && g.dims() <= kMaxRunDims && count_flops(g).encode <= kMaxRunFlops &&
      largest_net_activation(g) <= kMaxRunNetElements)
    run_model(m, r);
  flowrt_model_free(m);
  return r;
}

}  // namespace flowrt::fuzz
