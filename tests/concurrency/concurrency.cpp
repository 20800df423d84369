// concurrency: the C API's threading contract, end to end. One flowrt_model is shared by
// kThreads threads, each with its own sessions (one thread each), running every compute call
// (sample, encode of pixels and of floats, decode, decode of noise) in a thread-dependent order;
// every result must be bit-identical to the same call made first on a single thread, and each
// thread reads its own error messages; the model handle is freed while they compute. Before that,
// two threads share one session: some call must answer FLOWRT_BUSY, and every call that answered
// FLOWRT_OK must still be correct. Built with FLOWRT_TSAN, ThreadSanitizer watches all of it.
//
//   concurrency MODEL [BACKEND...]     BACKEND: ref | onednn
//
// Without BACKEND: ref, and onednn where its plugin loads. A named backend that is unavailable
// is a failure. Uses only the public C API. Exits 0 when every check passes, else 1.
#include <atomic>
#include <chrono>
#include <cmath>
#include <cstdarg>
#include <cstdio>
#include <cstring>
#include <mutex>
#include <string>
#include <thread>
#include <vector>

#include "flowrt.h"

namespace {

constexpr int kThreads = 8;
constexpr int kRounds = 3;
// Jobs of up to 6 images run in chunks of this (4 + 2, 4 + 1).
constexpr size_t kMaxBatch = 4;
constexpr size_t kMaxImages = 6;
// The shared-session scenario gives up after this long without a FLOWRT_BUSY.
constexpr double kBusyDeadlineSeconds = 20.0;

enum class Op { Sample, Encode, EncodeFloat, Decode, DecodeNoise };

struct Job {
  Op op;
  size_t n;
  float temperature;
  uint64_t seed;
  const char *name;
};

const Job kJobs[] = {
    {Op::Sample, 3, 0.7f, 101, "sample(n=3, T=0.7)"},
    {Op::Sample, 6, 1.0f, 202, "sample(n=6, T=1)"},
    {Op::Encode, 6, 0.f, 0, "encode(n=6)"},
    {Op::EncodeFloat, 3, 0.f, 0, "encode_float(n=3)"},
    {Op::Decode, 3, 0.f, 0, "decode(n=3)"},
    {Op::DecodeNoise, 5, 0.8f, 0, "decode_noise(n=5, T=0.8)"},
};
constexpr size_t kJobCount = sizeof kJobs / sizeof kJobs[0];
constexpr size_t kEncode6 = 2;      // the longest call: two chunks
constexpr size_t kDecodeNoise = 5;  // the call that takes a temperature and an input

// The inputs every call reads: fixed, made once before any thread starts.
struct Inputs {
  size_t dims = 0;
  std::vector<uint8_t> pixels;
  std::vector<float> x, z, eps;
};

// What a call writes: pixels, floats (z or x) and doubles (bits/dim), as the job has them.
struct Result {
  std::vector<uint8_t> pixels;
  std::vector<float> floats;
  std::vector<double> doubles;
};

uint64_t splitmix64(uint64_t &s) {
  uint64_t z = (s += 0x9E3779B97F4A7C15ull);
  z = (z ^ (z >> 30)) * 0xBF58476D1CE4E5B9ull;
  z = (z ^ (z >> 27)) * 0x94D049BB133111EBull;
  return z ^ (z >> 31);
}
double uniform01(uint64_t &s) {  // in (0, 1)
  return (static_cast<double>(splitmix64(s) >> 11) + 0.5) / 9007199254740992.0;
}
float normal(uint64_t &s) {
  const double u = uniform01(s), v = uniform01(s);
  return static_cast<float>(std::sqrt(-2.0 * std::log(u)) * std::cos(6.283185307179586 * v));
}

Inputs make_inputs(size_t dims) {
  Inputs in;
  in.dims = dims;
  const size_t total = kMaxImages * dims;
  uint64_t s = 12345;
  in.pixels.resize(total);
  in.x.resize(total);
  in.z.resize(total);
  in.eps.resize(total);
  for (size_t k = 0; k < total; ++k) {
    in.pixels[k] = static_cast<uint8_t>(splitmix64(s) & 255);
    // Anywhere inside the pixel's bin, as dequantised data is.
    in.x[k] = static_cast<float>((in.pixels[k] + uniform01(s)) / 256.0 - 0.5);
    in.z[k] = normal(s);
    in.eps[k] = normal(s);
  }
  return in;
}

Result make_result(const Job &j, size_t dims) {
  Result r;
  const size_t total = j.n * dims;
  switch (j.op) {
    case Op::Sample:
      r.pixels.resize(total);
      break;
    case Op::Encode:
    case Op::EncodeFloat:
      r.floats.resize(total);
      r.doubles.resize(j.n);
      break;
    case Op::Decode:
    case Op::DecodeNoise:
      r.floats.resize(total);
      r.pixels.resize(total);
      break;
  }
  return r;
}

flowrt_status run(flowrt_session *s, const Job &j, const Inputs &in, Result &r) {
  switch (j.op) {
    case Op::Sample:
      return flowrt_sample(s, j.n, j.temperature, j.seed, r.pixels.data());
    case Op::Encode:
      return flowrt_encode(s, j.n, in.pixels.data(), r.floats.data(), r.doubles.data());
    case Op::EncodeFloat:
      return flowrt_encode_float(s, j.n, in.x.data(), r.floats.data(), r.doubles.data());
    case Op::Decode:
      return flowrt_decode(s, j.n, in.z.data(), r.floats.data(), r.pixels.data());
    case Op::DecodeNoise:
      return flowrt_decode_noise(s, j.n, in.eps.data(), j.temperature, nullptr, r.floats.data(),
                                 r.pixels.data());
  }
  return FLOWRT_INTERNAL_ERROR;
}

// Failures from any thread; the first few are printed at the end.
std::mutex g_mutex;
std::vector<std::string> g_failures;

void failure(const std::string &what) {
  std::lock_guard<std::mutex> lock(g_mutex);
  g_failures.push_back(what);
}

bool failed() {
  std::lock_guard<std::mutex> lock(g_mutex);
  return !g_failures.empty();
}

std::string format(const char *fmt, ...) __attribute__((format(printf, 1, 2)));
std::string format(const char *fmt, ...) {
  char buf[512];
  va_list ap;
  va_start(ap, fmt);
  std::vsnprintf(buf, sizeof buf, fmt, ap);
  va_end(ap);
  return buf;
}

// The first element where `got` differs from `want` in any bit, or "" if none.
template <typename T>
std::string first_difference(const char *what, const std::vector<T> &want,
                             const std::vector<T> &got, size_t per_image) {
  for (size_t k = 0; k < want.size(); ++k) {
    if (std::memcmp(&want[k], &got[k], sizeof(T)) == 0) continue;
    return format("%s differs at image %zu, element %zu: %.17g, single-threaded %.17g", what,
                  k / per_image, k % per_image, static_cast<double>(got[k]),
                  static_cast<double>(want[k]));
  }
  return "";
}

// Compares a call's result with the single-threaded one; "" when they are identical.
std::string compare(const Result &want, const Result &got, size_t dims) {
  std::string d = first_difference("pixels", want.pixels, got.pixels, dims);
  if (d.empty()) d = first_difference("floats", want.floats, got.floats, dims);
  if (d.empty()) d = first_difference("bits/dim", want.doubles, got.doubles, 1);
  return d;
}

struct Backend {
  flowrt_backend kind;
  std::vector<Result> want;  // by job, from the single-threaded run
};

flowrt_session *open_session(const flowrt_model *model, flowrt_backend kind, std::string *error) {
  flowrt_session_options *o = nullptr;
  flowrt_session *s = nullptr;
  flowrt_status st = flowrt_session_options_create(&o);
  if (st == FLOWRT_OK) st = flowrt_session_options_set_backend(o, kind);
  // One thread per session: the concurrency under test is the caller's threads.
  if (st == FLOWRT_OK) st = flowrt_session_options_set_threads(o, 1);
  if (st == FLOWRT_OK) st = flowrt_session_options_set_max_batch(o, kMaxBatch);
  if (st == FLOWRT_OK) st = flowrt_session_create(model, o, &s);
  if (st != FLOWRT_OK) {
    *error = format("%s session: %s: %s", flowrt_backend_name(kind), flowrt_status_string(st),
                    flowrt_last_error());
    s = nullptr;
  } else if (flowrt_session_backend(s) != kind) {
    *error = format("asked for a %s session, got %s", flowrt_backend_name(kind),
                    flowrt_backend_name(flowrt_session_backend(s)));
    flowrt_session_free(s);
    s = nullptr;
  }
  flowrt_session_options_free(o);
  return s;
}

// The single-threaded run every later result is compared with; also checks that the outputs
// are not trivial (a model that ignored its input would make the comparisons vacuous).
bool reference_run(const flowrt_model *model, const Inputs &in, Backend &b) {
  std::string error;
  flowrt_session *s = open_session(model, b.kind, &error);
  if (!s) {
    failure("reference run: " + error);
    return false;
  }
  const char *name = flowrt_backend_name(b.kind);
  for (const Job &j : kJobs) {
    Result r = make_result(j, in.dims);
    const flowrt_status st = run(s, j, in, r);
    if (st != FLOWRT_OK) {
      failure(format("reference run, %s %s: %s: %s", name, j.name, flowrt_status_string(st),
                     flowrt_last_error()));
      break;
    }
    for (double v : r.doubles)
      if (!std::isfinite(v) || v <= 0)
        failure(format("reference run, %s %s: bits/dim %g", name, j.name, v));
    size_t distinct_pixels = 0;
    for (size_t k = 1; k < r.pixels.size(); ++k) distinct_pixels += r.pixels[k] != r.pixels[0];
    if (!r.pixels.empty() && distinct_pixels == 0)
      failure(format("reference run, %s %s: every pixel is %d", name, j.name, r.pixels[0]));
    b.want.push_back(std::move(r));
  }
  // The same session again: a call must not depend on the calls before it.
  for (size_t i = 0; i < b.want.size() && !failed(); ++i) {
    Result r = make_result(kJobs[i], in.dims);
    const flowrt_status st = run(s, kJobs[i], in, r);
    const std::string d = st == FLOWRT_OK ? compare(b.want[i], r, in.dims) : "";
    if (st != FLOWRT_OK || !d.empty())
      failure(format("reference run, %s %s repeated: %s", name, kJobs[i].name,
                     st != FLOWRT_OK ? flowrt_status_string(st) : d.c_str()));
  }
  flowrt_session_free(s);
  return !failed();
}

// kThreads threads, each with its own session per backend on the one shared model, each running
// kRounds rounds of every job in its own order. The model handle is freed while they compute:
// sessions keep what they need of it. Returns the number of compute calls made.
long many_sessions(flowrt_model *model, const Inputs &in, const std::vector<Backend> &backends) {
  std::atomic<int> ready{0};
  std::atomic<bool> go{false};
  std::atomic<long> calls{0};
  std::vector<std::thread> threads;
  for (int t = 0; t < kThreads; ++t)
    threads.emplace_back([&, t] {
      std::vector<flowrt_session *> sessions;
      for (const Backend &b : backends) {
        std::string error;
        // Probing the backend from many threads at once is part of the contract too.
        if (!flowrt_backend_available(b.kind))
          error =
              format("%s became unavailable: %s", flowrt_backend_name(b.kind), flowrt_last_error());
        flowrt_session *s = error.empty() ? open_session(model, b.kind, &error) : nullptr;
        if (!s) failure(format("thread %d: %s", t, error.c_str()));
        sessions.push_back(s);
      }
      ready.fetch_add(1);
      while (!go.load()) std::this_thread::yield();
      for (int round = 0; round < kRounds && !failed(); ++round)
        for (size_t k = 0; k < kJobCount; ++k) {
          const size_t ji = (k + t + round) % kJobCount;
          const Job &j = kJobs[ji];
          for (size_t bi = 0; bi < backends.size(); ++bi) {
            // Odd threads take the backends in the other order.
            const size_t b = t % 2 ? backends.size() - 1 - bi : bi;
            if (!sessions[b]) continue;
            const char *name = flowrt_backend_name(backends[b].kind);
            Result r = make_result(j, in.dims);
            const flowrt_status st = run(sessions[b], j, in, r);
            calls.fetch_add(1);
            if (st != FLOWRT_OK) {
              failure(format("thread %d round %d, %s %s: %s: %s", t, round, name, j.name,
                             flowrt_status_string(st), flowrt_last_error()));
              continue;
            }
            const std::string d = compare(backends[b].want[ji], r, in.dims);
            if (!d.empty())
              failure(format("thread %d round %d, %s %s: %s", t, round, name, j.name, d.c_str()));
          }
        }
      // A failing call on each thread, of two kinds (even threads: a negative temperature; odd
      // ones: labels for an unconditional model): the message read must be this thread's own,
      // and the session must answer the next call.
      const int32_t labels[kMaxImages] = {};
      const bool even = t % 2 == 0;
      const char *expected = even ? "temperature" : "labels";
      for (size_t b = 0; b < backends.size(); ++b) {
        if (!sessions[b]) continue;
        Result r = make_result(kJobs[kDecodeNoise], in.dims);
        const flowrt_status st = flowrt_decode_noise(
            sessions[b], kJobs[kDecodeNoise].n, in.eps.data(), even ? -1.f : 0.5f,
            even ? nullptr : labels, r.floats.data(), r.pixels.data());
        if (st != FLOWRT_INVALID_ARGUMENT || !std::strstr(flowrt_last_error(), expected))
          failure(
              format("thread %d, %s decode_noise with bad %s: %s: '%s', expected "
                     "FLOWRT_INVALID_ARGUMENT about the %s",
                     t, flowrt_backend_name(backends[b].kind), expected, flowrt_status_string(st),
                     flowrt_last_error(), expected));
        r = make_result(kJobs[0], in.dims);
        const flowrt_status again = run(sessions[b], kJobs[0], in, r);
        calls.fetch_add(1);
        const std::string d = again == FLOWRT_OK ? compare(backends[b].want[0], r, in.dims) : "";
        if (again != FLOWRT_OK || !d.empty())
          failure(format("thread %d, %s %s after a failed call: %s", t,
                         flowrt_backend_name(backends[b].kind), kJobs[0].name,
                         again != FLOWRT_OK ? flowrt_status_string(again) : d.c_str()));
      }
      for (flowrt_session *s : sessions) flowrt_session_free(s);
    });
  while (ready.load() < kThreads) std::this_thread::yield();
  go.store(true);
  flowrt_model_free(model);
  for (std::thread &th : threads) th.join();
  return calls.load();
}

// Two threads call one session at the same time until one of them has been answered
// FLOWRT_BUSY (each call of thread 0 takes long; thread 1 calls in between). Every call that
// answered FLOWRT_OK must have the single-threaded result. Returns the FLOWRT_BUSY count.
long shared_session(const flowrt_model *model, const Inputs &in, const Backend &b, long *ok_calls) {
  const char *name = flowrt_backend_name(b.kind);
  std::string error;
  flowrt_session *s = open_session(model, b.kind, &error);
  if (!s) {
    failure("shared session: " + error);
    return 0;
  }
  std::atomic<int> started{0};
  std::atomic<bool> stop{false};
  std::atomic<long> busy{0}, ok{0};
  const auto deadline =
      std::chrono::steady_clock::now() + std::chrono::duration<double>(kBusyDeadlineSeconds);
  auto body = [&](int t) {
    started.fetch_add(1);
    while (started.load() < 2) std::this_thread::yield();
    for (size_t i = 0; !stop.load(); ++i) {
      const size_t ji = t == 0 ? kEncode6 : i % kJobCount;
      const Job &j = kJobs[ji];
      Result r = make_result(j, in.dims);
      const flowrt_status st = run(s, j, in, r);
      if (st == FLOWRT_BUSY) {
        if (!std::strstr(flowrt_last_error(), "in use"))
          failure(format("shared %s session: FLOWRT_BUSY says '%s'", name, flowrt_last_error()));
        busy.fetch_add(1);
      } else if (st == FLOWRT_OK) {
        ok.fetch_add(1);
        const std::string d = compare(b.want[ji], r, in.dims);
        if (!d.empty()) failure(format("shared %s session, %s: %s", name, j.name, d.c_str()));
      } else {
        failure(format("shared %s session, %s: %s: %s", name, j.name, flowrt_status_string(st),
                       flowrt_last_error()));
      }
      if ((busy.load() > 0 && ok.load() >= 4) || failed() ||
          std::chrono::steady_clock::now() > deadline)
        stop.store(true);
    }
  };
  std::thread other(body, 1);
  body(0);
  other.join();
  if (busy.load() == 0)
    failure(
        format("shared %s session: no call answered FLOWRT_BUSY in %ld calls (%.0f s) of two "
               "threads on one session",
               name, ok.load(), kBusyDeadlineSeconds));
  // Released after the contention: the session answers a call again.
  Result r = make_result(kJobs[0], in.dims);
  const flowrt_status st = run(s, kJobs[0], in, r);
  const std::string d = st == FLOWRT_OK ? compare(b.want[0], r, in.dims) : "";
  if (st != FLOWRT_OK || !d.empty())
    failure(format("shared %s session after the contention, %s: %s", name, kJobs[0].name,
                   st != FLOWRT_OK ? flowrt_status_string(st) : d.c_str()));
  flowrt_session_free(s);
  *ok_calls += ok.load() + 1;
  return busy.load();
}

int report_failures() {
  std::lock_guard<std::mutex> lock(g_mutex);
  const size_t shown = g_failures.size() < 20 ? g_failures.size() : 20;
  for (size_t i = 0; i < shown; ++i)
    std::fprintf(stderr, "concurrency: FAIL: %s\n", g_failures[i].c_str());
  if (g_failures.size() > shown)
    std::fprintf(stderr, "concurrency: ... and %zu more failures\n", g_failures.size() - shown);
  return 1;
}

}  // namespace

int main(int argc, char **argv) {
  if (argc < 2) {
    std::fprintf(stderr, "usage: %s MODEL [ref|onednn]...\n", argv[0]);
    return 2;
  }
  std::vector<Backend> backends;
  if (argc == 2) {
    backends.push_back({FLOWRT_BACKEND_REF, {}});
    if (flowrt_backend_available(FLOWRT_BACKEND_ONEDNN))
      backends.push_back({FLOWRT_BACKEND_ONEDNN, {}});
    else
      std::printf("concurrency: onednn skipped: %s\n", flowrt_last_error());
  }
  for (int i = 2; i < argc; ++i) {
    const std::string a = argv[i];
    const flowrt_backend kind = a == "ref"      ? FLOWRT_BACKEND_REF
                                : a == "onednn" ? FLOWRT_BACKEND_ONEDNN
                                                : FLOWRT_BACKEND_AUTO;
    if (kind == FLOWRT_BACKEND_AUTO) {
      std::fprintf(stderr, "concurrency: unknown backend '%s' (ref, onednn)\n", argv[i]);
      return 2;
    }
    if (!flowrt_backend_available(kind)) {
      std::fprintf(stderr, "concurrency: FAIL: the %s backend is unavailable: %s\n", argv[i],
                   flowrt_last_error());
      return 1;
    }
    backends.push_back({kind, {}});
  }

  flowrt_model *model = nullptr;
  flowrt_status st = flowrt_model_open(argv[1], &model);
  size_t dims = 0;
  if (st == FLOWRT_OK) st = flowrt_model_latent_dim(model, &dims);
  if (st != FLOWRT_OK) {
    std::fprintf(stderr, "concurrency: FAIL: %s: %s: %s\n", argv[1], flowrt_status_string(st),
                 flowrt_last_error());
    return 1;
  }
  const Inputs in = make_inputs(dims);
  const auto t0 = std::chrono::steady_clock::now();

  std::string names;
  for (Backend &b : backends) {
    names += (names.empty() ? "" : ", ") + std::string(flowrt_backend_name(b.kind));
    if (!reference_run(model, in, b)) {
      flowrt_model_free(model);
      return report_failures();
    }
  }

  long shared_ok = 0, shared_busy = 0;
  for (const Backend &b : backends) shared_busy += shared_session(model, in, b, &shared_ok);
  if (failed()) {
    flowrt_model_free(model);
    return report_failures();
  }

  const long calls = many_sessions(model, in, backends);  // frees the model
  if (failed()) return report_failures();

  const double seconds =
      std::chrono::duration<double>(std::chrono::steady_clock::now() - t0).count();
  std::printf(
      "concurrency: ok (%s; %.1f s)\n"
      "  %d threads, own sessions on one model: %ld calls (%d rounds x %zu jobs per backend), "
      "all bit-identical to the single-threaded run\n"
      "  two threads on one session: %ld calls answered FLOWRT_BUSY, %ld answered FLOWRT_OK "
      "with the single-threaded result\n",
      names.c_str(), seconds, kThreads, calls, kRounds, kJobCount, shared_busy, shared_ok);
  return 0;
}
