// `flowtrain bench`: training throughput of one model at several batch sizes, timed the way
// flowbench times inference: a few warm-up steps, then at least --reps timed steps and at least
// --min-time seconds; median / p90 / min step time, images/s, and training GFLOP/s counted as
// three times the encoder's FLOPs (forward, backward to the data, backward to the weights).
// A step is exactly what `flowtrain train` does per batch (TrainCompute::train_step): forward
// (bits/dim), backward, gradient norm, clipping, Adam, on the CPU or (--device cuda) the GPU,
// where the step's time includes its one synchronisation. The images are uniformly dequantised
// random pixels.
#include <algorithm>
#include <chrono>
#include <cmath>
#include <cstdio>
#include <memory>
#include <string>
#include <vector>

#include "cli_args.hpp"
#include "core/atomic_file.hpp"
#include "core/error.hpp"
#include "format/flow_file.hpp"
#include "model/architecture.hpp"
#include "model/glow_builder.hpp"
#include "model/program.hpp"
#include "trainer/model/train_compute.hpp"
#include "trainer/report/progress.hpp"
#include "trainer/tools/train_commands.hpp"
#include "trainer/train/batches.hpp"
#include "trainer/train/optimizer.hpp"

#ifdef _OPENMP
#include <omp.h>
#endif

namespace flowrt::train {

namespace {

using Clock = std::chrono::steady_clock;

double percentile(std::vector<double> v, double q) {
  std::sort(v.begin(), v.end());
  const size_t i = std::min(v.size() - 1, static_cast<size_t>(q * static_cast<double>(v.size())));
  return v[i];
}

struct BenchCase {
  int64_t batch = 0;
  std::vector<double> step_s;
  double peak_rss_mib = 0, device_mib = 0;
};

BenchCase bench_batch(const Graph &graph, int64_t batch, int warmup, int reps, double min_time,
                      uint64_t seed, bool recompute, Device device, flowrt_precision precision) {
  std::unique_ptr<TrainCompute<float>> model = make_train_compute(graph, device);
  model->set_precision(precision);
  model->set_recompute(recompute);
  Adam adam(model->params().values().size());
  std::vector<float> no_ema;
  const int64_t dims = graph.image.channels * graph.image.height * graph.image.width;
  std::vector<uint8_t> pixels(static_cast<size_t>(batch * dims));
  for (size_t k = 0; k < pixels.size(); ++k)
    pixels[k] = static_cast<uint8_t>(256.0f * philox_uniform(seed, 7, 0, k));
  std::vector<float> x(pixels.size());
  BenchCase c;
  c.batch = batch;
  const auto t_start = Clock::now();
  for (int64_t s = 0;; ++s) {
    dequantize(pixels.data(), static_cast<int64_t>(pixels.size()), graph.image.n_bits, seed, s,
               x.data());
    if (s == 0) model->forward(x.data(), nullptr, batch, true);  // data-dependent init
    const auto t0 = Clock::now();
    const StepOutcome o =
        model->train_step(x.data(), nullptr, batch, adam, no_ema, StepArgs{1e-4, 50.0, 0.0});
    const double dt = std::chrono::duration<double>(Clock::now() - t0).count();
    if (!o.update.applied && !o.update.loss_scale_overflow)
      fail(FLOWRT_INTERNAL_ERROR, "bench: the loss or gradient became non-finite");
    if (s < warmup) continue;
    c.step_s.push_back(dt);
    const double total = std::chrono::duration<double>(Clock::now() - t_start).count();
    if (static_cast<int>(c.step_s.size()) >= reps && total >= min_time) break;
  }
  c.peak_rss_mib = peak_rss_mib();
  c.device_mib = model->device_memory_mib();
  return c;
}

}  // namespace

int cmd_bench(int argc, char **argv) {
  CliArgs a(argc, argv, 2,
            {"--model", "--arch", "--batch", "--threads", "--warmup", "--reps", "--min-time",
             "--seed", "--json", "--device", "--precision"},
            {"--recompute"});
  if (!a.positional().empty()) invalid_argument("bench takes no positional arguments");
  if (a.has("--model") && a.has("--arch")) invalid_argument("give either --model or --arch");
  const int threads = static_cast<int>(a.get_int("--threads", 0, 0, 4096));
#ifdef _OPENMP
  if (threads > 0) omp_set_num_threads(threads);
  const int used_threads = omp_get_max_threads();
#else
  const int used_threads = 1;
#endif
  std::string name;
  Graph graph;
  if (a.has("--model")) {
    name = a.get("--model");
    graph = read_flow(map_model_file(name));
  } else {
    name = a.get("--arch", "fmnist");
    if (name == "realnvp" || name == "nice") {  // the family's defaults at Fashion-MNIST's size
      const Family f = parse_family(name);
      graph = build_family(f, ImageSpec{1, 28, 28, 8}, family_defaults(f), 1, false);
    } else {
      graph = build_glow(standard_architecture(name));
    }
  }
  const int warmup = static_cast<int>(a.get_int("--warmup", 3, 0, 1000000));
  const int reps = static_cast<int>(a.get_int("--reps", 10, 1, 1000000));
  const double min_time = a.get_double("--min-time", 5.0);
  const uint64_t seed = a.get_u64("--seed", 1);
  const bool recompute = a.has("--recompute");
  const std::string device_name = a.get("--device", "cpu");
  const Device device = parse_device(device_name);
  const std::string precision_text = a.get("--precision", "fp32");
  const flowrt_precision precision = parse_precision(precision_text);
  const double gflop_step = 3.0 * static_cast<double>(count_flops(graph).encode) * 1e-9;
  std::string json = "{\"model\": \"" + name + "\", \"device\": \"" + device_name +
                     "\", \"precision\": \"" + precision_text +
                     "\", \"threads\": " + std::to_string(used_threads) +
                     ", \"gflop_per_image\": " + std::to_string(gflop_step) +
                     ", \"recompute\": " + (recompute ? "true" : "false") + ", \"cases\": [";
  bool first = true;
  for (const std::string &b : split_list(a.get("--batch", "16,64"))) {
    const int64_t batch = CliArgs::parse_int("--batch", b, 1, 65536);
    const BenchCase c =
        bench_batch(graph, batch, warmup, reps, min_time, seed, recompute, device, precision);
    if (first) {  // after the first case: an unusable device or precision fails before it
      std::printf(
          "flowtrain bench: %s on %s (%s), %d threads, %.3f training GFLOP per image (3x "
          "encode)%s\n\n",
          name.c_str(), device_name.c_str(), precision_text.c_str(), used_threads, gflop_step,
          recompute ? ", recompute" : "");
      std::printf(
          "| batch | median ms | p90 ms | min ms | images/s | GFLOP/s | peak RSS MiB | device MiB "
          "|\n");
      std::printf("|---:|---:|---:|---:|---:|---:|---:|---:|\n");
    }
    const double med = percentile(c.step_s, 0.5), p90 = percentile(c.step_s, 0.9),
                 mn = percentile(c.step_s, 0.0);
    const double ips = static_cast<double>(batch) / med;
    std::printf("| %lld | %.1f | %.1f | %.1f | %.1f | %.1f | %.0f | %.0f |\n", (long long)batch,
                med * 1e3, p90 * 1e3, mn * 1e3, ips, ips * gflop_step, c.peak_rss_mib,
                c.device_mib);
    std::fflush(stdout);
    json += std::string(first ? "" : ", ") + "{\"batch\": " + std::to_string(batch) +
            ", \"median_ms\": " + std::to_string(med * 1e3) +
            ", \"images_per_s\": " + std::to_string(ips) +
            ", \"peak_rss_mib\": " + std::to_string(c.peak_rss_mib) +
            ", \"device_mib\": " + std::to_string(c.device_mib) + ", \"step_ms\": [";
    for (size_t i = 0; i < c.step_s.size(); ++i)
      json += (i ? ", " : "") + std::to_string(c.step_s[i] * 1e3);
    json += "]}";
    first = false;
  }
  json += "]}\n";
  if (a.has("--json")) atomic_write_file(a.get("--json"), json.data(), json.size());
  return 0;
}

}  // namespace flowrt::train
