// bench_reduce: times Communicator::reduce_shards, the gradient reduction of data-parallel
// flowtrain, on its own: the same call, buffers and MPI world that `flowtrain train --dist mpi`
// uses, for a gradient of --params floats (or the parameter count of a standard --arch).
//
//   mpirun -np 2 --bind-to none bench_reduce --arch cifar --mode ordered,fast --reps 20
//
// Each repetition starts at a barrier; its time is the slowest rank's (a collective ends when
// its last rank is done). Reported per mode: median and min ms over the repetitions, the
// algorithm bandwidth bytes / time and the bus bandwidth 2 (N - 1) / N * bytes / time (what each
// rank sends and receives in a ring all-reduce: the number comparable across N and with NCCL's
// busbw). Before timing, the result is checked against the exact sum (the shards hold small
// integers, so every order of summation gives the same floats).
#include <mpi.h>

#include <algorithm>
#include <chrono>
#include <cmath>
#include <cstdint>
#include <cstdio>
#include <cstdlib>
#include <cstring>
#include <string>
#include <vector>

#include "core/error.hpp"
#include "model/glow_builder.hpp"
#include "model/program.hpp"
#include "trainer/dist/communicator.hpp"

#ifdef _OPENMP
#include <omp.h>
#endif

namespace {

using flowrt::train::Communicator;
using flowrt::train::ReduceMode;
using Clock = std::chrono::steady_clock;

struct Options {
  int64_t params = 0;
  std::string arch;
  std::vector<std::string> modes = {"ordered"};
  int reps = 20, warmup = 3, shards = 1, threads = 0;
  std::string json;
};

[[noreturn]] void usage(const std::string &why) {
  std::fprintf(stderr,
               "bench_reduce: %s\n"
               "usage: mpirun -np N bench_reduce (--params N | --arch fmnist|cifar|...)\n"
               "         [--mode ordered|fast|ordered,fast] [--reps R (20)] [--warmup W (3)]\n"
               "         [--shards K per rank (1)] [--threads T] [--json FILE]\n",
               why.c_str());
  std::exit(2);
}

std::vector<std::string> split(const std::string &s) {
  std::vector<std::string> out;
  size_t start = 0;
  while (start <= s.size()) {
    const size_t comma = s.find(',', start);
    const size_t end = comma == std::string::npos ? s.size() : comma;
    if (end > start) out.push_back(s.substr(start, end - start));
    if (comma == std::string::npos) break;
    start = comma + 1;
  }
  return out;
}

int64_t parse_int(const std::string &flag, const std::string &v, int64_t lo, int64_t hi) {
  char *end = nullptr;
  const long long x = std::strtoll(v.c_str(), &end, 10);
  if (v.empty() || *end != '\0' || x < lo || x > hi)
    usage(flag + " needs an integer in [" + std::to_string(lo) + ", " + std::to_string(hi) +
          "], not '" + v + "'");
  return x;
}

Options parse(int argc, char **argv) {
  Options o;
  for (int i = 1; i < argc; ++i) {
    const std::string a = argv[i];
    auto value = [&]() -> std::string {
      if (i + 1 >= argc) usage(a + " needs a value");
      return argv[++i];
    };
    if (a == "--params")
      o.params = parse_int(a, value(), 1, int64_t{1} << 34);
    else if (a == "--arch")
      o.arch = value();
    else if (a == "--mode")
      o.modes = split(value());
    else if (a == "--reps")
      o.reps = static_cast<int>(parse_int(a, value(), 1, 1000000));
    else if (a == "--warmup")
      o.warmup = static_cast<int>(parse_int(a, value(), 0, 1000000));
    else if (a == "--shards")
      o.shards = static_cast<int>(parse_int(a, value(), 1, 1024));
    else if (a == "--threads")
      o.threads = static_cast<int>(parse_int(a, value(), 0, 4096));
    else if (a == "--json")
      o.json = value();
    else if (a == "-h" || a == "--help")
      usage("times Communicator::reduce_shards");
    else
      usage("unknown option '" + a + "'");
  }
  if ((o.params > 0) == !o.arch.empty()) usage("give exactly one of --params and --arch");
  if (o.modes.empty()) usage("--mode needs ordered, fast or both");
  for (const std::string &m : o.modes) flowrt::train::parse_reduce_mode(m);  // throws if unknown
  return o;
}

double median(std::vector<double> v) {
  std::sort(v.begin(), v.end());
  const size_t n = v.size();
  return n % 2 ? v[n / 2] : 0.5 * (v[n / 2 - 1] + v[n / 2]);
}

struct Result {
  std::string mode;
  double median_ms = 0, min_ms = 0, max_ms = 0;
};

// The shards of the run hold (s + 1) * (1 + i % 7): their sum over S shards is
// S (S + 1) / 2 * (1 + i % 7), exact in float for any S this benchmark runs.
void fill(std::vector<std::vector<float>> &shards, int rank) {
  const int k = static_cast<int>(shards.size());
  for (int j = 0; j < k; ++j) {
    const float s1 = static_cast<float>(rank * k + j + 1);
    std::vector<float> &g = shards[static_cast<size_t>(j)];
#pragma omp parallel for schedule(static)
    for (int64_t i = 0; i < static_cast<int64_t>(g.size()); ++i)
      g[static_cast<size_t>(i)] = s1 * static_cast<float>(1 + i % 7);
  }
}

int64_t count_wrong(const std::vector<float> &out, int64_t total_shards) {
  const double tri =
      0.5 * static_cast<double>(total_shards) * static_cast<double>(total_shards + 1);
  int64_t wrong = 0;
#pragma omp parallel for schedule(static) reduction(+ : wrong)
  for (int64_t i = 0; i < static_cast<int64_t>(out.size()); ++i)
    if (static_cast<double>(out[static_cast<size_t>(i)]) != tri * static_cast<double>(1 + i % 7))
      ++wrong;
  return wrong;
}

int run(int argc, char **argv) {
  const Options o = parse(argc, argv);
#ifdef _OPENMP
  if (o.threads > 0) omp_set_num_threads(o.threads);
  const int threads = omp_get_max_threads();
#else
  const int threads = 1;
#endif
  const int64_t n =
      o.params > 0
          ? o.params
          : flowrt::count_parameters(flowrt::build_glow(flowrt::standard_architecture(o.arch)));
  Communicator &comm = flowrt::train::mpi_world(0);  // no watchdog: nothing here can stall
  const int rank = comm.rank(), ranks = comm.size();

  std::vector<std::vector<float>> shards(static_cast<size_t>(o.shards),
                                         std::vector<float>(static_cast<size_t>(n)));
  std::vector<const float *> ptrs;
  for (const std::vector<float> &g : shards) ptrs.push_back(g.data());
  std::vector<float> out(static_cast<size_t>(n));
  const double bytes = 4.0 * static_cast<double>(n);
  const int64_t total_shards = static_cast<int64_t>(ranks) * o.shards;

  if (rank == 0)
    std::printf(
        "bench_reduce: %d ranks x %d shard(s), %d thread(s) per rank, %lld floats (%.1f MB)%s%s, "
        "%d warm-up + %d timed repetitions\n",
        ranks, o.shards, threads, static_cast<long long>(n), bytes * 1e-6,
        o.arch.empty() ? "" : ", --arch ", o.arch.c_str(), o.warmup, o.reps);

  std::vector<Result> results;
  for (const std::string &mode_name : o.modes) {
    const ReduceMode mode = flowrt::train::parse_reduce_mode(mode_name);
    fill(shards, rank);
    comm.reduce_shards(ptrs, out.data(), static_cast<size_t>(n), mode);
    int64_t wrong = count_wrong(out, total_shards), wrong_all = 0;
    MPI_Allreduce(&wrong, &wrong_all, 1, MPI_INT64_T, MPI_SUM, MPI_COMM_WORLD);
    if (wrong_all != 0) {
      if (rank == 0)
        std::fprintf(stderr, "bench_reduce: %s: %lld wrong sums over the ranks\n",
                     mode_name.c_str(), static_cast<long long>(wrong_all));
      comm.abort(1);
    }
    std::vector<double> times;
    for (int r = 0; r < o.warmup + o.reps; ++r) {
      MPI_Barrier(MPI_COMM_WORLD);
      const auto t0 = Clock::now();
      comm.reduce_shards(ptrs, out.data(), static_cast<size_t>(n), mode);
      const double mine = std::chrono::duration<double>(Clock::now() - t0).count();
      double slowest = 0;
      MPI_Allreduce(&mine, &slowest, 1, MPI_DOUBLE, MPI_MAX, MPI_COMM_WORLD);
      if (r >= o.warmup) times.push_back(slowest * 1e3);
    }
    Result res;
    res.mode = mode_name;
    res.median_ms = median(times);
    res.min_ms = *std::min_element(times.begin(), times.end());
    res.max_ms = *std::max_element(times.begin(), times.end());
    results.push_back(res);
  }

  if (rank != 0) return 0;
  const double ring = ranks > 1 ? 2.0 * (ranks - 1) / ranks : 0.0;
  std::printf(
      "| ranks | mode | floats | MB | median ms | min ms | max ms | algbw GB/s | busbw GB/s |\n");
  std::printf("|---:|---|---:|---:|---:|---:|---:|---:|---:|\n");
  for (const Result &r : results)
    std::printf("| %d | %s | %lld | %.1f | %.3f | %.3f | %.3f | %.2f | %.2f |\n", ranks,
                r.mode.c_str(), static_cast<long long>(n), bytes * 1e-6, r.median_ms, r.min_ms,
                r.max_ms, bytes / (r.median_ms * 1e6), ring * bytes / (r.median_ms * 1e6));
  std::printf("(sums checked exact; busbw = 2 (N-1)/N x bytes / median time)\n");
  if (!o.json.empty()) {
    std::FILE *f = std::fopen(o.json.c_str(), "w");
    if (!f) {
      std::fprintf(stderr, "bench_reduce: cannot write %s\n", o.json.c_str());
      return 1;
    }
    std::fprintf(f,
                 "{\"ranks\": %d, \"shards_per_rank\": %d, \"threads_per_rank\": %d, "
                 "\"arch\": \"%s\", \"floats\": %lld, \"bytes\": %.0f, \"warmup\": %d, "
                 "\"reps\": %d, \"results\": [",
                 ranks, o.shards, threads, o.arch.c_str(), static_cast<long long>(n), bytes,
                 o.warmup, o.reps);
    for (size_t i = 0; i < results.size(); ++i) {
      const Result &r = results[i];
      std::fprintf(f,
                   "%s{\"mode\": \"%s\", \"median_ms\": %.4f, \"min_ms\": %.4f, \"max_ms\": "
                   "%.4f, \"algbw_gbps\": %.3f, \"busbw_gbps\": %.3f}",
                   i ? ", " : "", r.mode.c_str(), r.median_ms, r.min_ms, r.max_ms,
                   bytes / (r.median_ms * 1e6), ring * bytes / (r.median_ms * 1e6));
    }
    std::fprintf(f, "]}\n");
    std::fclose(f);
  }
  return 0;
}

}  // namespace

int main(int argc, char **argv) {
  try {
    return run(argc, argv);
  } catch (const std::exception &e) {
    std::fprintf(stderr, "bench_reduce: error: %s\n", e.what());
    if (flowrt::train::Communicator *w = flowrt::train::dist_world()) w->abort(1);
    return 1;
  }
}
