// The weight copies a session holds, counted rather than measured (the `memory_layouts` test; the
// `memory` test measures the resident memory they add up to):
// - the reference backend's Program owns only the small per-pixel preparations (actnorms folded
//   into the 1x1 convs, their inverses, the priors): the nets' weights are views of the graph's
//   tensors (NetWeights::View), and so are they in the oneDNN backend's Program (ViewScaled);
// - a Program that owns its weights (NetWeights::Copy, what the CUDA backend uploads from) shows
//   all of them through its std::vector base too;
// - the oneDNN backend holds one prepared copy of each weight tensor whatever the batch sizes its
//   primitives are made for (every batch size 1..64 here: no tensor in a second layout), at most
//   1.15 x the model's floats (the blocked layouts' padding), with no reference kernel anywhere.
//   (It fails with FLOWRT_ONEDNN_1X1=conv: cifar's 1x1 convs then need a second layout.)
// - at precision bf16 (where the CPU has bf16 units) the same holds with the nets' copies in
//   bf16: at most 0.6 x the model's floats, and no reorder between its primitives.
//
//   weight_layouts [ARCH]     ARCH: a standard architecture, cifar by default
#include <algorithm>
#include <cstdio>
#include <memory>
#include <string>
#include <variant>
#include <vector>

#include "backends/backend.hpp"
#include "model/glow_builder.hpp"
#include "model/program.hpp"
#ifdef FLOWRT_HAVE_ONEDNN
#include "backends/onednn/onednn_backend.hpp"
#include "backends/onednn/onednn_compat.hpp"
#include "backends/onednn/onednn_net.hpp"
#endif

namespace {

using namespace flowrt;

int failures = 0;

void check(bool ok, const std::string &what) {
  std::printf("  %s: %s\n", ok ? "ok  " : "FAIL", what.c_str());
  if (!ok) ++failures;
}

std::string mib(double bytes) {
  char buf[32];
  std::snprintf(buf, sizeof buf, "%.1f MiB", bytes / (1024.0 * 1024.0));
  return buf;
}

// Every net conv of a Program whose weights it owns: the std::vector base holds all of them.
bool vector_base_holds_everything(const Program<float> &prog) {
  for (const PStep<float> &step : prog.steps) {
    const PNet<float> *net = nullptr;
    if (auto *c = std::get_if<PCoupling<float>>(&step.op)) net = &c->net;
    if (auto *s = std::get_if<PSplit<float>>(&step.op)) net = &s->prior;
    if (!net) continue;
    for (const PNetOp<float> &op : net->ops)
      if (auto *c = std::get_if<PConv<float>>(&op)) {
        const std::vector<float> &w = c->weight, &b = c->bias;
        if (c->weight.is_view() || w.size() != c->weight.size() || w.data() != c->weight.data() ||
            w.size() != static_cast<size_t>(c->out_ch * c->in_total * c->kh * c->kw) ||
            b.size() != static_cast<size_t>(c->out_ch))
          return false;
      }
  }
  return true;
}

#ifdef FLOWRT_HAVE_ONEDNN
// WeightCache's paths that cifar does not take on AVX-512: a primitive that wants the plain
// layout reads the model's bytes in place; a second layout is reordered from the prepared copy.
void check_weight_cache() {
  using dnnl::memory;
  using tag = memory::format_tag;
  const memory::data_type f32 = memory::data_type::f32;
  std::printf("WeightCache:\n");
  onednn::Context ctx;
  const int64_t k = 40, n = 24;  // a [k, n] matmul weights tensor, plain: n outer (the format's)
  auto bytes = std::make_shared<std::vector<float>>(k * n);
  for (size_t i = 0; i < bytes->size(); ++i) (*bytes)[i] = static_cast<float>(i) * 0.25f;
  const memory::desc plain({k, n}, f32, tag::ba);
  auto fill = [bytes](float *dst) { std::copy(bytes->begin(), bytes->end(), dst); };

  onednn::WeightCache direct(plain, fill, bytes->data(), bytes);
  const memory &m = direct.get(plain, ctx);
  check(m.get_data_handle() == bytes->data() && direct.mapped_bytes() == k * n * sizeof(float) &&
            direct.prepared_bytes() == 0,
        "the plain layout reads the source bytes in place");

  onednn::WeightCache twice(plain, fill, bytes->data(), bytes);
  const memory::desc a({k, n}, f32, tag::BA16a64b), b({k, n}, f32, tag::ab);
  twice.get(a, ctx);
  const memory &second = twice.get(b, ctx);  // row-major [k][n], from the blocked copy
  const float *v = static_cast<const float *>(second.get_data_handle());
  bool same = true;
  for (int64_t i = 0; i < k; ++i)
    for (int64_t j = 0; j < n; ++j) same = same && v[i * n + j] == (*bytes)[j * k + i];
  check(same && twice.prepared_bytes() == a.get_size() && twice.extra_bytes() == b.get_size() &&
            twice.mapped_bytes() == 0,
        "a second layout is reordered from the prepared copy, values intact");
}
#endif

}  // namespace

int main(int argc, char **argv) {
  const std::string arch = argc > 1 ? argv[1] : "cifar";
  GlowConfig cfg = standard_architecture(arch);
  cfg.random_nets = true;
  cfg.seed = 1;
  const Graph g = build_glow(cfg);
  const double model_bytes = static_cast<double>(count_parameters(g)) * sizeof(float);
  std::printf("%s: %lld parameters, %s of floats\n", arch.c_str(),
              static_cast<long long>(count_parameters(g)), mib(model_bytes).c_str());

  std::printf("Programs (float):\n");
  const Program<float> copy = build_program<float>(g, ProgramOptions{true, NetWeights::Copy});
  const Program<float> view = build_program<float>(g, ProgramOptions{true, NetWeights::View});
  const Program<float> scaled =
      build_program<float>(g, ProgramOptions{true, NetWeights::ViewScaled});
  const double owned_copy = static_cast<double>(owned_weight_bytes(copy));
  const double owned_view = static_cast<double>(owned_weight_bytes(view));
  const double owned_scaled = static_cast<double>(owned_weight_bytes(scaled));
  check(owned_copy >= model_bytes * 0.95,
        "NetWeights::Copy owns " + mib(owned_copy) + " (the nets' weights, copied)");
  check(vector_base_holds_everything(copy),
        "NetWeights::Copy: every net conv's std::vector base holds all its weights");
  check(owned_view <= model_bytes * 0.02,
        "NetWeights::View (reference backend) owns " + mib(owned_view) + " <= 2% of the model");
  check(owned_scaled <= model_bytes * 0.02, "NetWeights::ViewScaled (oneDNN backend) owns " +
                                                mib(owned_scaled) + " <= 2% of the model");

#ifdef FLOWRT_HAVE_ONEDNN
  check_weight_cache();
  const size_t max_batch = 64;
  for (flowrt_precision precision : {FLOWRT_PRECISION_FP32, FLOWRT_PRECISION_BF16}) {
    const bool bf16 = precision == FLOWRT_PRECISION_BF16;
    if (bf16 && !onednn::cpu_has_bf16()) {
      std::printf("oneDNN backend at bf16: skipped, no bf16 units (oneDNN ISA %s)\n",
                  onednn::cpu_isa_name().c_str());
      continue;
    }
    std::printf("oneDNN backend at %s, max batch %zu, primitives for every batch size 1..%zu:\n",
                precision_name(precision), max_batch, max_batch);
    BackendOptions o;
    o.max_batch = max_batch;
    o.precision = precision;
    auto dnn = create_onednn_backend(g, o);
    const OnednnWeightBytes first = onednn_weight_bytes(*dnn);
    size_t ref_kernels = 0, reorders = 0;
    std::string a_ref_kernel;
    for (size_t n = 1; n <= max_batch; ++n)
      for (const std::string &impl : onednn_primitive_impls(*dnn, n)) {
        if (impl.find("ref") != std::string::npos) ++ref_kernels, a_ref_kernel = impl;
        reorders += impl.compare(0, 7, "reorder") == 0;
      }
    const OnednnWeightBytes all = onednn_weight_bytes(*dnn);
    const double held = static_cast<double>(all.prepared + all.extra);
    std::printf("  prepared %s (%.3f x the model), read in place %s, extra layouts %s\n",
                mib(static_cast<double>(all.prepared)).c_str(), all.prepared / model_bytes,
                mib(static_cast<double>(all.mapped)).c_str(),
                mib(static_cast<double>(all.extra)).c_str());
    check(all.extra == 0, "no weight tensor in a second layout");
    check(all.prepared == first.prepared && all.mapped == first.mapped,
          "the batch sizes made after the first reuse its copies");
    const double bound = bf16 ? 0.6 : 1.15;
    char rule[64];
    std::snprintf(rule, sizeof rule, " <= %.2f x the model", bound);
    check(held <= bound * model_bytes, "weights held " + mib(held) + rule);
    check(ref_kernels == 0,
          "no reference kernel" +
              (ref_kernels ? " (" + std::to_string(ref_kernels) + ", e.g. " + a_ref_kernel + ")"
                           : std::string()));
    if (bf16)
      check(reorders == 0, "no reorder between primitives (" + std::to_string(reorders) + ")");
  }
#else
  std::printf("oneDNN backend: not built\n");
#endif
  std::printf("%s\n", failures ? "FAILED" : "passed");
  return failures ? 1 : 0;
}
