// thread_count: a session's thread count is the number of threads that compute for it. Run with
// OMP_NUM_THREADS=2, so that any oneDNN primitive or OpenMP loop that escapes the session's
// setting starts a team of two. A threads=1 session (created, then sample, encode, decode and
// decode of noise, repeated) must leave the process with the threads it had and give the other
// threads no CPU time (getrusage counts threads that have exited, too); a threads=2 session must
// then start its second thread and keep it busy, which shows that both measures see a team. After
// every call the caller's omp_get_max_threads() is what it was. The two sessions' results must be
// bit-identical on the reference backend and on oneDNN agree to float rounding (see check_same).
//
//   thread_count MODEL BACKEND      BACKEND: onednn | ref
//
// Uses only the public C API (and OpenMP's omp_get_max_threads). Exits 0 when every check
// passes, 77 when the backend is not available, else 1.
#include <dirent.h>
#include <omp.h>
#include <sys/resource.h>

#include <algorithm>
#include <cmath>
#include <cstdint>
#include <cstdio>
#include <cstring>
#include <string>
#include <vector>

#include "flowrt.h"

namespace {

constexpr size_t kBatch = 4;
constexpr int kRounds = 8;
// A threads=1 session may leave the other threads at most this share of the main thread's CPU
// time (scheduler accounting noise); a threads=2 session must give them at least the second.
constexpr double kMaxIdleShare = 0.02;
constexpr double kMinBusyShare = 0.2;

int g_failures = 0;

void check(bool ok, const std::string &what) {
  std::printf("%s: %s\n", ok ? "ok  " : "FAIL", what.c_str());
  if (!ok) ++g_failures;
}

int os_threads() {
  int n = 0;
  if (DIR *d = opendir("/proc/self/task")) {
    while (const dirent *e = readdir(d))
      if (e->d_name[0] != '.') ++n;
    closedir(d);
  }
  return n;
}

double seconds(const rusage &r) {
  return static_cast<double>(r.ru_utime.tv_sec + r.ru_stime.tv_sec) +
         1e-6 * static_cast<double>(r.ru_utime.tv_usec + r.ru_stime.tv_usec);
}

// CPU seconds of this thread and of the whole process (threads that exited included).
struct Cpu {
  double main = 0, all = 0;
  static Cpu now() {
    rusage self{}, thread{};
    getrusage(RUSAGE_SELF, &self);
    getrusage(RUSAGE_THREAD, &thread);
    return Cpu{seconds(thread), seconds(self)};
  }
};

uint64_t splitmix64(uint64_t &s) {
  uint64_t z = (s += 0x9E3779B97F4A7C15ull);
  z = (z ^ (z >> 30)) * 0xBF58476D1CE4E5B9ull;
  z = (z ^ (z >> 27)) * 0x94D049BB133111EBull;
  return z ^ (z >> 31);
}
double normal(uint64_t &s) {  // Box-Muller
  const double u1 = (static_cast<double>(splitmix64(s) >> 11) + 0.5) / 9007199254740992.0;
  const double u2 = (static_cast<double>(splitmix64(s) >> 11) + 0.5) / 9007199254740992.0;
  return std::sqrt(-2.0 * std::log(u1)) * std::cos(6.283185307179586 * u2);
}

struct Outputs {
  std::vector<uint8_t> sample;
  std::vector<float> z, x, noise_x;
  std::vector<double> bpd;
};

bool ok(flowrt_status st, const char *what) {
  if (st == FLOWRT_OK) return true;
  check(false, std::string(what) + ": " + flowrt_status_string(st) + ": " + flowrt_last_error());
  return false;
}

// Runs one session of `threads` threads on every compute call; the caller's OpenMP setting must
// survive creation and each call.
bool run_session(const flowrt_model *model, flowrt_backend backend, int threads, size_t dims,
                 const std::vector<float> &eps, Outputs &out) {
  const int caller = omp_get_max_threads();
  const std::string tag = "threads=" + std::to_string(threads) + ": ";
  flowrt_session_options *opt = nullptr;
  flowrt_session *s = nullptr;
  if (!ok(flowrt_session_options_create(&opt), "options")) return false;
  flowrt_session_options_set_backend(opt, backend);
  flowrt_session_options_set_threads(opt, threads);
  flowrt_session_options_set_max_batch(opt, kBatch);
  const bool created = ok(flowrt_session_create(model, opt, &s), "flowrt_session_create");
  flowrt_session_options_free(opt);
  if (!created) return false;
  check(omp_get_max_threads() == caller, tag + "caller's omp_get_max_threads() " +
                                             std::to_string(caller) + " after session creation");

  out.sample.assign(kBatch * dims, 0);
  out.z.assign(kBatch * dims, 0.f);
  out.x.assign(kBatch * dims, 0.f);
  out.noise_x.assign(kBatch * dims, 0.f);
  out.bpd.assign(kBatch, 0.0);
  bool good = true;
  bool kept = true;
  for (int r = 0; r < kRounds && good; ++r) {
    good = ok(flowrt_sample(s, kBatch, 0.7f, 1234, out.sample.data()), "flowrt_sample");
    kept = kept && omp_get_max_threads() == caller;
    good = good && ok(flowrt_encode(s, kBatch, out.sample.data(), out.z.data(), out.bpd.data()),
                      "flowrt_encode");
    kept = kept && omp_get_max_threads() == caller;
    good =
        good && ok(flowrt_decode(s, kBatch, out.z.data(), out.x.data(), nullptr), "flowrt_decode");
    kept = kept && omp_get_max_threads() == caller;
    good = good && ok(flowrt_decode_noise(s, kBatch, eps.data(), 0.7f, nullptr, out.noise_x.data(),
                                          nullptr),
                      "flowrt_decode_noise");
    kept = kept && omp_get_max_threads() == caller;
  }
  flowrt_session_free(s);
  check(kept,
        tag + "caller's omp_get_max_threads() " + std::to_string(caller) + " after every call");
  return good;
}

template <typename T>
bool same(const std::vector<T> &a, const std::vector<T> &b) {
  return a.size() == b.size() && std::memcmp(a.data(), b.data(), a.size() * sizeof(T)) == 0;
}

// Largest |a - b| relative to max(1, |a|).
template <typename T>
double max_rel_diff(const std::vector<T> &a, const std::vector<T> &b) {
  if (a.size() != b.size()) return INFINITY;
  double m = 0;
  for (size_t i = 0; i < a.size(); ++i)
    m = std::max(m,
                 std::fabs(double(a[i]) - double(b[i])) / std::max(1.0, std::fabs(double(a[i]))));
  return m;
}

// The reference backend's reductions never depend on the thread count: its results must be
// bit-identical. oneDNN's are on AVX-512 CPUs, but its AVX2 kernels split some reductions by
// thread count (seen: 3e-7 on AMD Zen 3), so there the results must agree to float rounding.
template <typename T>
void check_same(bool strict, const std::vector<T> &a, const std::vector<T> &b,
                const std::string &what) {
  if (same(a, b)) {
    check(true, what + ": threads=1 and threads=2 bit-identical");
    return;
  }
  const double d = max_rel_diff(a, b);
  std::printf("%s: threads=1 and threads=2 differ by %.3g (relative)\n", what.c_str(), d);
  check(!strict && d <= 1e-5,
        what + ": threads=1 and threads=2 " + (strict ? "bit-identical" : "agree to 1e-5"));
}

}  // namespace

int main(int argc, char **argv) {
  if (argc != 3) {
    std::fprintf(stderr, "usage: %s MODEL onednn|ref\n", argv[0]);
    return 2;
  }
  const std::string name = argv[2];
  if (name != "onednn" && name != "ref") {
    std::fprintf(stderr, "thread_count: unknown backend '%s'\n", argv[2]);
    return 2;
  }
  const flowrt_backend backend = name == "onednn" ? FLOWRT_BACKEND_ONEDNN : FLOWRT_BACKEND_REF;
  if (!flowrt_backend_available(backend)) {
    std::printf("SKIP: the %s backend is not available: %s\n", argv[2], flowrt_last_error());
    return 77;
  }
  // The measure needs a caller whose own setting is a team of two.
  if (omp_get_max_threads() < 2) {
    std::fprintf(stderr, "thread_count: run with OMP_NUM_THREADS=2 (omp_get_max_threads() = %d)\n",
                 omp_get_max_threads());
    return 2;
  }
  flowrt_model *model = nullptr;
  if (flowrt_model_open(argv[1], &model) != FLOWRT_OK) {
    std::fprintf(stderr, "thread_count: %s\n", flowrt_last_error());
    return 1;
  }
  size_t dims = 0;
  flowrt_model_latent_dim(model, &dims);

  // The noise of decode_noise, made here: flowrt_model_noise belongs to no session and may use
  // the caller's team of two, which would start its thread before the measure.
  std::vector<float> eps(kBatch * dims);
  uint64_t seed = 99;
  for (float &e : eps) e = static_cast<float>(normal(seed));

  Outputs one, two;
  const int before = os_threads();
  Cpu c0 = Cpu::now();
  const bool ran1 = run_session(model, backend, 1, dims, eps, one);
  Cpu c1 = Cpu::now();
  const int after1 = os_threads();
  const double main1 = c1.main - c0.main, other1 = (c1.all - c1.main) - (c0.all - c0.main);
  std::printf("threads=1: %d OS threads before, %d after; CPU s: main %.3f, others %.3f\n", before,
              after1, main1, other1);
  check(ran1, "threads=1: every call succeeded");
  check(after1 == before, "threads=1: no thread started");
  check(other1 <= kMaxIdleShare * main1, "threads=1: the other threads took no CPU time");

  c0 = Cpu::now();
  const bool ran2 = run_session(model, backend, 2, dims, eps, two);
  c1 = Cpu::now();
  const int after2 = os_threads();
  const double main2 = c1.main - c0.main, other2 = (c1.all - c1.main) - (c0.all - c0.main);
  std::printf("threads=2: %d OS threads after; CPU s: main %.3f, others %.3f\n", after2, main2,
              other2);
  check(ran2, "threads=2: every call succeeded");
  check(after2 >= after1 + 1, "threads=2: a second thread started");
  check(other2 >= kMinBusyShare * main2, "threads=2: the second thread computed");

  if (ran1 && ran2) {
    const bool strict = backend == FLOWRT_BACKEND_REF;
    check(same(one.sample, two.sample),
          "sample (8-bit pixels): threads=1 and threads=2 bit-identical");
    check_same(strict, one.z, two.z, "encode z");
    check_same(strict, one.bpd, two.bpd, "encode bits/dim");
    check_same(strict, one.x, two.x, "decode");
    check_same(strict, one.noise_x, two.noise_x, "decode_noise");
  }
  flowrt_model_free(model);
  std::printf("%s\n", g_failures ? "thread_count: FAILED" : "thread_count: all checks passed");
  return g_failures ? 1 : 0;
}
