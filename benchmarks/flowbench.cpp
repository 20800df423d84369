// flowbench: latency and throughput of flowrt's backends on a model file or a standard
// architecture with random weights. Every (backend, op, batch) case is created fresh, warmed up
// (a count and a minimum time), then timed (a count and a minimum time, capped by a maximum);
// every repetition is kept for the JSON output. --precision takes a list: the cases of each
// precision run next to each other, so that their ratio is measured under the same conditions,
// and a precision a backend does not implement is refused as the C API refuses it. --check
// compares each backend with the reference on the same inputs before timing (a reduced precision
// on onednn: with the same backend in fp32, against bounds); --peak measures the machine's fp32
// and bf16 peaks for the % column.
#include <algorithm>
#include <chrono>
#include <cmath>
#include <cstdio>
#include <cstdlib>
#include <fstream>
#include <map>
#include <memory>
#include <random>
#include <sstream>
#include <string>
#include <vector>

#include "backends/backend.hpp"
#include "backends/backend_registry.hpp"
#include "bench_machine.hpp"
#include "bench_peak.hpp"
#include "core/error.hpp"
#ifdef FLOWRT_HAVE_IMAGEIO
#include "image_io.hpp"
#endif
#include "format/flow_file.hpp"
#include "model/glow_builder.hpp"
#include "model/program.hpp"
#include "session/session.hpp"

namespace flowrt::bench {
namespace {

using Clock = std::chrono::steady_clock;

const char *kUsage =
    "usage: flowbench [--model M.flow | --arch tiny|fmnist|cifar|celeba64]\n"
    "                 [--backend ref,portable,onednn,cuda] [--op sample,encode,decode]\n"
    "                 [--batch 1,4,16,64]\n"
    "                 [--threads N] [--warmup W] [--warmup-time S] [--reps R] [--min-time S]\n"
    "                 [--max-time S] [--seed N] [--json out.json] [--peak] [--check]\n"
    "                 [--precision fp32,bf16,...] [--images FILE] [--check-images N]\n"
    "--precision: a list of fp32, tf32, bf16, fp16; every backend runs every precision, and one\n"
    "    it does not implement is an error (cuda: all four; onednn: fp32, and bf16 on CPUs with\n"
    "    bf16 units; ref, portable: fp32). --check: fp32 against ref with fp32 bounds;\n"
    "    onednn bf16 against onednn fp32 on --check-images images (default 64; from --images, an\n"
    "    IDX or PNG file, or random), with bounds on bits/dim, the x->z->x round trip and T=0.7\n"
    "    samples; cuda's reduced precisions against ref, reported.\n"
    "--backend: the cases of each (op, batch) run one backend after the other, so that their\n"
    "    ratios are measured under the same load; the table lists them backend by backend.\n"
    "Defaults: --arch cifar --backend ref,portable,onednn,cuda --op sample,encode\n"
    "--batch 1,4,16,64\n"
    "--threads 0 (all cores) --warmup 3 --warmup-time 0.2 --reps 10 --min-time 1 --max-time 60.\n";

struct UsageError {
  std::string message;
};

struct Options {
  std::string model, arch = "cifar";
  std::vector<std::string> backends = {"ref", "portable", "onednn", "cuda"};
  std::vector<std::string> ops = {"sample", "encode"};
  std::vector<size_t> batches = {1, 4, 16, 64};
  int threads = 0, warmup = 3, reps = 10;
  double warmup_time = 0.2, min_time = 1.0, max_time = 60.0;
  uint64_t seed = 1;
  std::string json;
  bool peak = false, check = false;
  std::vector<flowrt_precision> precisions = {FLOWRT_PRECISION_FP32};
  std::string images;
  size_t check_images = 64;
};

// A backend's label: "onednn/bf16" at a reduced precision, else its name.
std::string label_of(const std::string &backend, flowrt_precision p) {
  return p == FLOWRT_PRECISION_FP32 ? backend : backend + "/" + precision_name(p);
}

std::vector<std::string> split(const std::string &s) {
  std::vector<std::string> out;
  std::stringstream ss(s);
  for (std::string item; std::getline(ss, item, ',');)
    if (!item.empty()) out.push_back(item);
  if (out.empty()) throw UsageError{"empty list '" + s + "'"};
  return out;
}

double to_number(const std::string &name, const std::string &v, double lo, double hi) {
  char *end = nullptr;
  const double d = std::strtod(v.c_str(), &end);
  if (v.empty() || *end != '\0' || !(d >= lo && d <= hi))
    throw UsageError{name + " expects a number in [" + std::to_string(lo) + ", " +
                     std::to_string(hi) + "], got '" + v + "'"};
  return d;
}

Options parse(int argc, char **argv) {
  Options o;
  bool have_model = false, have_arch = false;
  for (int i = 1; i < argc; ++i) {
    const std::string a = argv[i];
    if (a == "--help" || a == "-h") {
      std::fputs(kUsage, stdout);
      std::exit(0);
    }
    if (a == "--peak") {
      o.peak = true;
      continue;
    }
    if (a == "--check") {
      o.check = true;
      continue;
    }
    if (i + 1 >= argc) throw UsageError{"unknown option or missing value: '" + a + "'"};
    const std::string v = argv[++i];
    if (a == "--model") {
      o.model = v, have_model = true;
    } else if (a == "--arch") {
      o.arch = v, have_arch = true;
    } else if (a == "--backend") {
      o.backends = split(v);
      for (const std::string &b : o.backends)
        if (b != "ref" && b != "portable" && b != "onednn" && b != "cuda")
          throw UsageError{"unknown backend '" + b + "' (ref, portable, onednn, cuda)"};
    } else if (a == "--op") {
      o.ops = split(v);
      for (const std::string &op : o.ops)
        if (op != "sample" && op != "encode" && op != "decode")
          throw UsageError{"unknown op '" + op + "' (sample, encode, decode)"};
    } else if (a == "--batch") {
      o.batches.clear();
      for (const std::string &b : split(v))
        o.batches.push_back(static_cast<size_t>(to_number("--batch", b, 1, 4096)));
    } else if (a == "--threads") {
      o.threads = static_cast<int>(to_number(a, v, 0, 4096));
    } else if (a == "--warmup") {
      o.warmup = static_cast<int>(to_number(a, v, 0, 1e6));
    } else if (a == "--warmup-time") {
      o.warmup_time = to_number(a, v, 0, 3600);
    } else if (a == "--reps") {
      o.reps = static_cast<int>(to_number(a, v, 1, 1e6));
    } else if (a == "--min-time") {
      o.min_time = to_number(a, v, 0, 3600);
    } else if (a == "--max-time") {
      o.max_time = to_number(a, v, 0, 36000);
    } else if (a == "--seed") {
      o.seed = static_cast<uint64_t>(to_number(a, v, 0, 1e15));
    } else if (a == "--json") {
      o.json = v;
    } else if (a == "--precision") {
      o.precisions.clear();
      for (const std::string &name : split(v)) {
        flowrt_precision p = FLOWRT_PRECISION_FP32;
        if (!precision_from_name(name, &p))
          throw UsageError{"--precision: one of " + precision_names() + ", got '" + name + "'"};
        if (std::find(o.precisions.begin(), o.precisions.end(), p) == o.precisions.end())
          o.precisions.push_back(p);
      }
    } else if (a == "--images") {
      o.images = v;
    } else if (a == "--check-images") {
      o.check_images = static_cast<size_t>(to_number(a, v, 1, 1e6));
    } else {
      throw UsageError{"unknown option '" + a + "'"};
    }
  }
  if (have_model && have_arch) throw UsageError{"give either --model or --arch, not both"};
  if (have_model) o.arch.clear();
  return o;
}

// Backends by name, as the C API and every program obtain them: the reference and portable
// backends built in, oneDNN and CUDA from their plugins.
flowrt_backend backend_kind(const std::string &name) {
  if (name == "portable") return FLOWRT_BACKEND_PORTABLE;
  if (name == "onednn") return FLOWRT_BACKEND_ONEDNN;
  if (name == "cuda") return FLOWRT_BACKEND_CUDA;
  return FLOWRT_BACKEND_REF;
}

bool backend_available(const std::string &name, std::string *why) {
  const BackendProbe p = probe_backend(backend_kind(name));
  if (!p.available) *why = p.why;
  return p.available;
}

std::unique_ptr<Backend> make_backend(const std::string &name, const Graph &g, size_t batch,
                                      int threads,
                                      flowrt_precision precision = FLOWRT_PRECISION_FP32) {
  BackendOptions o;
  o.max_batch = batch;
  o.threads = threads;
  o.precision = precision;
  return create_backend(backend_kind(name), g, o);
}

// Refuses (throws the backend's own error) a precision a backend does not implement, before
// anything is timed: on a tiny model, since the answer never depends on the model.
void require_precision(const std::string &backend, flowrt_precision p, int threads) {
  if (p == FLOWRT_PRECISION_FP32) return;
  GlowConfig c;
  c.channels = 1, c.height = c.width = 4, c.levels = 1, c.depth = 1, c.hidden = 8;
  c.random_nets = true;
  make_backend(backend, build_glow(c), 1, threads, p);
}

// Inputs shared by every backend of a case: images at bin centres, their latents, noise.
struct Inputs {
  std::vector<float> x, z, eps, out;
  std::vector<double> log_p;
};

constexpr float kTemperature = 0.7f;

void run_op(Backend &b, const std::string &op, size_t n, Inputs &in) {
  if (op == "encode")
    b.encode(n, in.x.data(), nullptr, in.z.data(), in.log_p.data(), nullptr);
  else if (op == "decode")
    b.decode(n, in.z.data(), in.out.data());
  else
    b.sample(n, 1234, 0, kTemperature, nullptr, in.eps.data(), in.out.data());
}

struct Stats {
  double median = 0, p90 = 0, min = 0, mean = 0, sd = 0;
};
Stats stats_of(std::vector<double> v) {
  Stats s;
  std::sort(v.begin(), v.end());
  const size_t n = v.size();
  s.min = v.front();
  s.median = n % 2 ? v[n / 2] : 0.5 * (v[n / 2 - 1] + v[n / 2]);
  s.p90 = v[std::min(n - 1, static_cast<size_t>(std::ceil(0.9 * n)) - 1)];  // nearest rank
  for (double x : v) s.mean += x / n;
  for (double x : v) s.sd += (x - s.mean) * (x - s.mean) / std::max<size_t>(1, n - 1);
  s.sd = std::sqrt(s.sd);
  return s;
}

struct Result {
  std::string backend, op;
  flowrt_precision precision = FLOWRT_PRECISION_FP32;
  size_t batch = 0;
  double create_ms = 0, first_ms = 0;
  int warmup_runs = 0;
  std::vector<double> ms;  // every timed repetition
  Stats st;
  double flops = 0;  // per call
  std::vector<std::string> kernels;
};

double ms_since(Clock::time_point t0) {
  return std::chrono::duration<double, std::milli>(Clock::now() - t0).count();
}

Result time_case(const Options &o, const Graph &g, const std::string &backend,
                 flowrt_precision precision, const std::string &op, size_t n, Inputs &in,
                 const FlopCount &fc) {
  Result r;
  r.backend = backend;
  r.precision = precision;
  r.op = op, r.batch = n;
  r.flops = (op == "encode" ? fc.encode : fc.decode) * static_cast<double>(n);
  auto t0 = Clock::now();
  std::unique_ptr<Backend> b = make_backend(backend, g, n, o.threads, precision);
  r.create_ms = ms_since(t0);
  t0 = Clock::now();
  run_op(*b, op, n, in);
  r.first_ms = ms_since(t0);
  const auto w0 = Clock::now();
  while (r.warmup_runs < o.warmup || ms_since(w0) < o.warmup_time * 1e3) {
    run_op(*b, op, n, in);
    ++r.warmup_runs;
  }
  const auto s0 = Clock::now();
  while (static_cast<int>(r.ms.size()) < o.reps || ms_since(s0) < o.min_time * 1e3) {
    t0 = Clock::now();
    run_op(*b, op, n, in);
    r.ms.push_back(ms_since(t0));
    if (ms_since(s0) > o.max_time * 1e3) break;
  }
  r.st = stats_of(r.ms);
  std::map<std::string, int> count;
  for (const std::string &k : b->kernels(n)) ++count[k];
  for (const auto &kv : count) r.kernels.push_back(kv.first + " x" + std::to_string(kv.second));
  return r;
}

// The backend against ref on the same inputs: latents, bits/dim and samples.
bool check_backend(const Graph &g, const std::string &backend, size_t n, int threads,
                   flowrt_precision precision, Inputs &in) {
  auto ref = make_backend("ref", g, n, threads);
  auto other = make_backend(backend, g, n, threads, precision);
  const flowrt_precision used = precision;
  const bool reduced = used != FLOWRT_PRECISION_FP32;
  const size_t total = n * static_cast<size_t>(g.dims());
  std::vector<float> zr(total), zo(total), sr(total), so(total), eps(total);
  std::vector<double> lr(n), lo(n);
  ref->encode(n, in.x.data(), nullptr, zr.data(), lr.data(), nullptr);
  other->encode(n, in.x.data(), nullptr, zo.data(), lo.data(), nullptr);
  ref->sample(n, 99, 0, kTemperature, nullptr, eps.data(), sr.data());
  other->sample(n, 99, 0, kTemperature, nullptr, eps.data(), so.data());
  double zmax = 1, dz = 0, dbpd = 0, ds = 0;
  size_t non_finite = 0, mismatched = 0;  // samples: overflowing elements must agree too
  for (size_t k = 0; k < total; ++k) {
    zmax = std::max(zmax, static_cast<double>(std::fabs(zr[k])));
    dz = std::max(dz, static_cast<double>(std::fabs(zr[k] - zo[k])));
    const bool fr = std::isfinite(sr[k]), fo = std::isfinite(so[k]);
    non_finite += !fr;
    if (fr != fo) ++mismatched;
    if (fr && fo) ds = std::max(ds, static_cast<double>(std::fabs(sr[k] - so[k])));
  }
  if (!std::isfinite(dz)) dz = HUGE_VAL;
  for (size_t i = 0; i < n; ++i)
    dbpd = std::max(dbpd, std::fabs(lr[i] - lo[i]) / (g.dims() * std::log(2.0)));
  // Two float32 backends each within ~2e-5 bits/dim of the exact (float64) value may differ by
  // twice that. On the 96-step cifar model, against the float64 evaluator of
  // converters/numpy_eval.py on 16 random images: ref 6.3e-6 and onednn 9.8e-6 on AVX-512 (they
  // differed by up to 1.5e-5); ref 9.9e-6 and onednn 1.2e-5 on AVX2 (AMD Zen 3: oneDNN's AVX2
  // kernels sum in another order; they differed by up to 2.4e-5 at batch 16).
  // TF32, BF16 and FP16 are not exact by design: their error is reported, not held to fp32's
  // bounds.
  const bool ok = reduced || (dz / zmax <= 1e-4 && dbpd <= 4e-5 && ds <= 1e-3 && mismatched == 0);
  const std::string verdict = reduced ? std::string(precision_name(used)) + " error (reported)"
                              : ok    ? "ok"
                                      : "FAILED";
  std::printf(
      "check %-6s batch %-4zu vs ref: z rel err %.2e, bits/dim diff %.2e, sample max diff "
      "%.2e: %s\n",
      label_of(backend, precision).c_str(), n, dz / zmax, dbpd, ds, verdict.c_str());
  if (non_finite || mismatched)
    std::printf(
        "  note: %zu of %zu sampled values overflow in ref (%zu differ in finiteness): "
        "this model's decoder is numerically unstable at temperature %.1f\n",
        non_finite, total, mismatched, kTemperature);
  return ok;
}

// Images for the accuracy check: the first `count` of `path` (IDX or PNG, fitted to the model),
// or random pixels when no path is given. 8-bit pixels, NCHW.
std::vector<uint8_t> check_pixels(const Graph &g, const std::string &path, size_t count,
                                  uint64_t seed, std::string *source) {
  const size_t d = static_cast<size_t>(g.dims());
  if (path.empty()) {
    *source = "random pixels";
    std::vector<uint8_t> px(count * d);
    std::mt19937 rng(static_cast<uint32_t>(seed) + 17);
    for (uint8_t &p : px) p = static_cast<uint8_t>(rng() & 0xff);
    return px;
  }
#ifdef FLOWRT_HAVE_IMAGEIO
  const bool png = path.size() > 4 && path.compare(path.size() - 4, 4, ".png") == 0;
  ImageBatch b = png ? read_png(path) : read_idx_images(path, static_cast<int64_t>(count));
  b = fit_to_model(b, g.image.channels, g.image.height, g.image.width);
  if (b.n < static_cast<int64_t>(count)) count = static_cast<size_t>(b.n);
  *source = std::to_string(count) + " images of " + path;
  b.pixels.resize(count * d);
  return b.pixels;
#else
  (void)seed;
  throw UsageError{"--images needs the image readers (a build with FLOWRT_BUILD_TOOLS)"};
#endif
}

// The bounds --check holds onednn's bf16 to, against onednn fp32 on the same model.
constexpr double kBf16BpdMean = 0.005, kBf16BpdMax = 0.02;  // |delta bits/dim|
constexpr double kBf16RoundTripMean = 2e-4;                 // mean |x - decode(encode(x))|
constexpr double kBf16PixelsExact = 0.995;                  // 8-bit pixels unchanged by it
constexpr double kBf16SamplesOff = 0.01;  // T=0.7 sample pixels off by more than one level

// A reduced precision against the same backend in fp32: bits/dim, the x->z->x round trip and
// samples at T=0.7 with the same noise, over `pixels` (n images). Bounds are held where `bounded`.
bool check_accuracy(const Graph &g, const std::string &backend, flowrt_precision precision,
                    int threads, const std::vector<uint8_t> &pixels, const std::string &source,
                    bool bounded) {
  const size_t d = static_cast<size_t>(g.dims()), n = pixels.size() / d, chunk = 16;
  const int bits = g.image.n_bits;
  auto fp32 = make_backend(backend, g, chunk, threads);
  auto low = make_backend(backend, g, chunk, threads, precision);
  std::vector<float> x(chunk * d), z32(chunk * d), z16(chunk * d), back32(chunk * d),
      back16(chunk * d), s32(chunk * d), s16(chunk * d), eps(chunk * d);
  std::vector<double> lp32(chunk), lp16(chunk);
  double bpd_sum = 0, bpd_max = 0, rt_sum = 0, rt_max = 0, rt32_sum = 0;
  size_t exact = 0, exact32 = 0, images_changed = 0, off = 0, changed = 0;
  const double nats_to_bits = 1.0 / (static_cast<double>(d) * std::log(2.0));
  auto level = [bits](float v) { return static_cast<int>(x_to_pixel(v, bits) >> (8 - bits)); };
  for (size_t i0 = 0; i0 < n; i0 += chunk) {
    const size_t m = std::min(chunk, n - i0);
    for (size_t k = 0; k < m * d; ++k) x[k] = pixel_to_x(pixels[i0 * d + k], bits);
    fp32->encode(m, x.data(), nullptr, z32.data(), lp32.data(), nullptr);
    low->encode(m, x.data(), nullptr, z16.data(), lp16.data(), nullptr);
    fp32->decode(m, z32.data(), back32.data());
    low->decode(m, z16.data(), back16.data());
    fp32->sample(m, 99, i0, kTemperature, nullptr, eps.data(), s32.data());
    low->sample(m, 99, i0, kTemperature, nullptr, eps.data(), s16.data());
    for (size_t i = 0; i < m; ++i) {
      const double dbpd = std::fabs(lp32[i] - lp16[i]) * nats_to_bits;
      bpd_sum += dbpd;
      bpd_max = std::max(bpd_max, std::isfinite(dbpd) ? dbpd : HUGE_VAL);
      bool image_changed = false;
      for (size_t k = i * d; k < (i + 1) * d; ++k) {
        const double e = std::fabs(static_cast<double>(back16[k]) - x[k]);
        rt_sum += e;
        rt_max = std::max(rt_max, std::isfinite(e) ? e : HUGE_VAL);
        rt32_sum += std::fabs(static_cast<double>(back32[k]) - x[k]);
        const int want = level(x[k]);
        const bool same = level(back16[k]) == want;
        exact += same;
        exact32 += level(back32[k]) == want;
        image_changed = image_changed || !same;
        const int ds = std::abs(level(s32[k]) - level(s16[k]));
        off += ds > 1;
        changed += ds > 0;
      }
      images_changed += image_changed;
    }
  }
  const double px = static_cast<double>(n * d);
  const double bpd_mean = bpd_sum / n, rt_mean = rt_sum / px, exact_frac = exact / px,
               off_frac = off / px;
  const std::string label = label_of(backend, precision);
  auto verdict = [bounded](bool ok) { return !bounded ? "reported" : ok ? "ok" : "FAILED"; };
  const bool ok_bpd = bpd_mean <= kBf16BpdMean && bpd_max <= kBf16BpdMax;
  const bool ok_rt = rt_mean <= kBf16RoundTripMean && exact_frac >= kBf16PixelsExact;
  const bool ok_s = off_frac <= kBf16SamplesOff;
  std::printf("check %s vs %s, %zu images (%s):\n", label.c_str(), backend.c_str(), n,
              source.c_str());
  std::printf("check   |delta bits/dim| mean %.2e, max %.2e (bounds %.3g, %.3g): %s\n", bpd_mean,
              bpd_max, kBf16BpdMean, kBf16BpdMax, verdict(ok_bpd));
  std::printf(
      "check   round trip x->z->x: mean |dx| %.2e (bound %.0e), max %.2e; 8-bit pixels "
      "unchanged %.3f%% (bound %.1f%%), images with a changed pixel %.1f%% (fp32: mean |dx| "
      "%.2e, pixels unchanged %.3f%%): %s\n",
      rt_mean, kBf16RoundTripMean, rt_max, 100 * exact_frac, 100 * kBf16PixelsExact,
      100.0 * images_changed / n, rt32_sum / px, 100 * exact32 / px, verdict(ok_rt));
  std::printf(
      "check   samples T=%.1f, same noise: pixels off by more than one level %.3f%% (bound "
      "%.0f%%), pixels changed %.2f%%: %s\n",
      kTemperature, 100 * off_frac, 100 * kBf16SamplesOff, 100.0 * changed / px, verdict(ok_s));
  return !bounded || (ok_bpd && ok_rt && ok_s);
}

std::string json_escape(const std::string &s) {
  std::string o;
  for (char c : s) {
    if (c == '"' || c == '\\') o += '\\';
    if (static_cast<unsigned char>(c) < 0x20) continue;
    o += c;
  }
  return o;
}

void write_json(const std::string &path, const Options &o, const Machine &m, const Peak *peak,
                const std::string &model, const std::vector<Result> &results) {
  std::ofstream f(path);
  if (!f) fail(FLOWRT_IO_ERROR, "cannot write " + path);
  f << "{\n  \"tool\": \"flowbench\",\n  \"date\": \"" << json_escape(m.date) << "\",\n"
    << "  \"commit\": \"" << json_escape(m.commit) << "\",\n  \"compiler\": \""
    << json_escape(m.compiler) << "\",\n  \"onednn\": \"" << json_escape(m.onednn) << "\",\n"
    << "  \"cpu\": \"" << json_escape(m.cpu) << "\",\n  \"cores\": " << m.cores
    << ",\n  \"isa\": \"" << m.isa << "\",\n  \"gpu\": \"" << json_escape(m.gpu) << "\",\n"
    << "  \"threads\": " << o.threads << ",\n  \"precisions\": [";
  for (size_t k = 0; k < o.precisions.size(); ++k)
    f << (k ? ", " : "") << "\"" << precision_name(o.precisions[k]) << "\"";
  f << "],\n  \"model\": \"" << json_escape(model) << "\",\n";
  if (peak)
    f << "  \"peak_gflops\": {\"fma\": " << peak->fma_gflops
      << ", \"matmul\": " << peak->matmul_gflops << ", \"conv3x3\": " << peak->conv_gflops
      << ", \"bf16_matmul\": " << peak->bf16_matmul_gflops << "},\n";
  f << "  \"results\": [\n";
  for (size_t i = 0; i < results.size(); ++i) {
    const Result &r = results[i];
    f << "    {\"backend\": \"" << label_of(r.backend, r.precision) << "\", \"precision\": \""
      << precision_name(r.precision) << "\", \"op\": \"" << r.op << "\", \"batch\": " << r.batch
      << ", \"create_ms\": " << r.create_ms << ", \"first_call_ms\": " << r.first_ms
      << ", \"warmup_runs\": " << r.warmup_runs << ", \"median_ms\": " << r.st.median
      << ", \"p90_ms\": " << r.st.p90 << ", \"min_ms\": " << r.st.min
      << ", \"mean_ms\": " << r.st.mean << ", \"sd_ms\": " << r.st.sd
      << ", \"images_per_s\": " << r.batch / r.st.median * 1e3
      << ", \"gflops\": " << r.flops / r.st.median * 1e-6 << ", \"flops_per_call\": " << r.flops
      << ",\n     \"kernels\": [";
    for (size_t k = 0; k < r.kernels.size(); ++k)
      f << (k ? ", " : "") << "\"" << json_escape(r.kernels[k]) << "\"";
    f << "],\n     \"samples_ms\": [";
    for (size_t k = 0; k < r.ms.size(); ++k) f << (k ? ", " : "") << r.ms[k];
    f << "]}" << (i + 1 < results.size() ? ",\n" : "\n");
  }
  f << "  ]\n}\n";
}

int run(int argc, char **argv) {
  const Options o = parse(argc, argv);
  const Machine m = describe_machine();
  const int threads = o.threads > 0 ? o.threads : m.cores;
  std::printf("machine: %s, %d cores, ISA: %s%s%s\n", m.cpu.c_str(), m.cores, m.isa.c_str(),
              m.gpu.empty() ? "" : ", GPU: ", m.gpu.c_str());
  std::printf("build: commit %s, %s, %s; threads %d\n", m.commit.c_str(), m.compiler.c_str(),
              m.onednn.empty() ? "oneDNN unavailable" : m.onednn.c_str(), threads);

  Peak peak;
  bool have_peak = false;
  const std::string cache = peak_cache_path();
  if (o.peak) {
    if (measure_peak(threads, &peak)) {
      have_peak = true;
      save_peak(cache, m.cpu, threads, peak);
      std::printf(
          "peak fp32 (%d threads): %s %.1f GFLOP/s, matmul 2048^3 %.1f GFLOP/s, conv3x3 "
          "512->512 16x16 N=16 %.1f GFLOP/s (cached in %s)\n",
          threads, peak.fma_isa, peak.fma_gflops, peak.matmul_gflops, peak.conv_gflops,
          cache.c_str());
      if (peak.bf16_matmul_gflops > 0)
        std::printf("peak bf16 (%d threads): matmul 2048^3 %.1f GFLOP/s (%.1fx fp32), %s\n",
                    threads, peak.bf16_matmul_gflops, peak.bf16_matmul_gflops / peak.matmul_gflops,
                    peak.bf16_impl.c_str());
      else
        std::printf("peak bf16: no bf16 units (oneDNN ISA %s)\n", peak.bf16_impl.c_str());
    } else {
      std::printf("peak: needs the oneDNN backend, skipped\n");
    }
  } else if (load_peak(cache, m.cpu, threads, &peak)) {
    have_peak = true;
    std::printf("peak fp32 (cached, %d threads): FMA %.1f, matmul %.1f, conv3x3 %.1f GFLOP/s; ",
                threads, peak.fma_gflops, peak.matmul_gflops, peak.conv_gflops);
    if (peak.bf16_matmul_gflops > 0)
      std::printf("bf16 matmul %.1f GFLOP/s\n", peak.bf16_matmul_gflops);
    else
      std::printf("no bf16 units\n");
  }

  Graph g;
  std::string model_name;
  if (!o.model.empty()) {
    g = read_flow(map_model_file(o.model));
    model_name = o.model;
  } else {
    GlowConfig c = standard_architecture(o.arch);
    c.random_nets = true;
    c.seed = o.seed;
    g = build_glow(c);
    model_name = "arch " + o.arch + " (random weights, seed " + std::to_string(o.seed) + ")";
  }
  const FlopCount fc = count_flops(g);
  std::printf(
      "model: %s, image %lldx%lldx%lld, %d levels, %.3f GFLOP/image (encode), %.3f "
      "(decode), %lld parameters\n",
      model_name.c_str(), static_cast<long long>(g.image.channels),
      static_cast<long long>(g.image.height), static_cast<long long>(g.image.width), g.levels(),
      fc.encode * 1e-9, fc.decode * 1e-9, static_cast<long long>(count_parameters(g)));

  std::vector<std::string> backends;
  for (const std::string &b : o.backends) {
    std::string why;
    if (backend_available(b, &why))
      backends.push_back(b);
    else
      std::printf("note: backend %s skipped: %s\n", b.c_str(), why.c_str());
  }
  for (const std::string &b : backends)
    for (flowrt_precision p : o.precisions) require_precision(b, p, o.threads);

  const size_t max_n = *std::max_element(o.batches.begin(), o.batches.end());
  const size_t total = max_n * static_cast<size_t>(g.dims());
  Inputs in;
  in.x.resize(total), in.z.resize(total), in.eps.resize(total), in.out.resize(total);
  in.log_p.resize(max_n);
  std::mt19937 rng(static_cast<uint32_t>(o.seed));
  const int bins = 1 << g.image.n_bits;
  for (float &v : in.x)
    v = (static_cast<float>(rng() % bins) + 0.5f) / static_cast<float>(bins) - 0.5f;
  {  // latents for decode: the encoded images
    auto ref = make_backend("ref", g, max_n, o.threads);
    ref->encode(max_n, in.x.data(), nullptr, in.z.data(), in.log_p.data(), nullptr);
  }

  bool checks_ok = true;
  if (o.check) {
    std::vector<uint8_t> pixels;
    std::string source;
    for (const std::string &b : backends) {
      if (b == "ref") continue;
      for (flowrt_precision p : o.precisions) {
        if (p != FLOWRT_PRECISION_FP32 && b == "onednn") {
          if (pixels.empty()) pixels = check_pixels(g, o.images, o.check_images, o.seed, &source);
          checks_ok = check_accuracy(g, b, p, o.threads, pixels, source, true) && checks_ok;
          continue;
        }
        for (size_t n : o.batches)
          checks_ok = check_backend(g, b, n, o.threads, p, in) && checks_ok;
      }
    }
  }

  // The backends and precisions of a case one after the other: their ratios are measured under
  // the same load. Listed backend by backend.
  std::vector<Result> results;
  for (const std::string &op : o.ops)
    for (size_t n : o.batches)
      for (const std::string &b : backends)
        for (flowrt_precision p : o.precisions)
          results.push_back(time_case(o, g, b, p, op, n, in, fc));
  std::stable_sort(results.begin(), results.end(), [&](const Result &a, const Result &b) {
    auto rank = [&](const std::string &name) {
      return std::find(backends.begin(), backends.end(), name) - backends.begin();
    };
    return rank(a.backend) < rank(b.backend);
  });

  std::printf(
      "\n| backend | precision | op | batch | median ms | p90 ms | min ms | images/s | vs fp32 | "
      "GFLOP/s | %% of peak | init ms |\n"
      "|---|---|---|---:|---:|---:|---:|---:|---:|---:|---:|---:|\n");
  for (const Result &r : results) {
    const double gf = r.flops / r.st.median * 1e-6;
    // The peak of the row's precision: bf16 rows against the bf16 matmul.
    const double best = r.precision == FLOWRT_PRECISION_BF16   ? peak.bf16_matmul_gflops
                        : r.precision == FLOWRT_PRECISION_FP32 ? peak.best()
                                                               : 0.0;
    char pct[32] = "-", ratio[32] = "-";
    if (have_peak && best > 0) std::snprintf(pct, sizeof pct, "%.0f%%", 100.0 * gf / best);
    if (r.precision != FLOWRT_PRECISION_FP32)
      for (const Result &f : results)
        if (f.precision == FLOWRT_PRECISION_FP32 && f.backend == r.backend && f.op == r.op &&
            f.batch == r.batch)
          std::snprintf(ratio, sizeof ratio, "%.2fx", f.st.median / r.st.median);
    std::printf("| %s | %s | %s | %zu | %.2f | %.2f | %.2f | %.1f | %s | %.1f | %s | %.0f |\n",
                r.backend.c_str(), precision_name(r.precision), r.op.c_str(), r.batch, r.st.median,
                r.st.p90, r.st.min, r.batch / r.st.median * 1e3, ratio, gf, pct,
                r.create_ms + r.first_ms);
  }
  if (!o.json.empty()) {
    write_json(o.json, o, m, have_peak ? &peak : nullptr, model_name, results);
    std::printf("\nwrote %s\n", o.json.c_str());
  }
  return checks_ok ? 0 : 1;
}

}  // namespace
}  // namespace flowrt::bench

int main(int argc, char **argv) {
  try {
    return flowrt::bench::run(argc, argv);
  } catch (const flowrt::bench::UsageError &e) {
    std::fprintf(stderr, "flowbench: %s\n%s", e.message.c_str(), flowrt::bench::kUsage);
    return 2;
  } catch (const flowrt::Error &e) {
    std::fprintf(stderr, "flowbench: %s\n", e.what());
    return e.status() == FLOWRT_INVALID_ARGUMENT ? 2 : 1;
  } catch (const std::exception &e) {
    std::fprintf(stderr, "flowbench: %s\n", e.what());
    return 1;
  }
}
