// `flowtrain train` and `flowtrain resume`.
#include <cstdio>

#include "cli_args.hpp"
#include "core/error.hpp"
#include "model/architecture.hpp"
#include "trainer/dist/communicator.hpp"
#include "trainer/tools/train_commands.hpp"
#include "trainer/train/run.hpp"

namespace flowrt::train {
namespace {

// Stopping conditions and threads may change on resume; nothing else may.
struct StopOverrides {
  int64_t steps = -1, epochs = -1;
  double time_s = -1;
  int threads = -1;
  // How this process takes part: not part of the run, so a resume may change it.
  std::string dist, dist_reduce;
  double dist_timeout_s = 600;
};

void parse_dist(const CliArgs &a, std::string *dist, std::string *reduce, double *timeout) {
  *dist = a.get("--dist");
  if (!dist->empty() && *dist != "mpi" && *dist != "nccl")
    invalid_argument("unknown --dist '" + *dist + "' (mpi, nccl)");
  *reduce = a.get("--dist-reduce");
  if (!reduce->empty()) parse_reduce_mode(*reduce);
  if (a.has("--dist-timeout")) *timeout = parse_duration(a.get("--dist-timeout"));
  // Several tasks without --dist would each train alone into the same run directory.
  const int tasks = launcher_task_count();
  if (dist->empty() && tasks > 1)
    invalid_argument("started as " + std::to_string(tasks) +
                     " tasks by a launcher, but without --dist mpi: every task would train "
                     "alone into the same run directory");
}

// A batch norm's running averages are per process: across ranks they would drift apart.
void check_dist_family(const RunConfig &c) {
  if (!c.dist.empty() && c.init_model.empty() && c.arch == "realnvp")
    invalid_argument("--dist " + c.dist +
                     ": RealNVP's batch norms keep running averages per process, which ranks "
                     "would not share; train --arch realnvp in one process (--grad-shards "
                     "splits its batch there)");
}

void apply_overrides(RunConfig &c, void *user) {
  const auto *o = static_cast<const StopOverrides *>(user);
  if (o->steps >= 0 || o->epochs >= 0 || o->time_s >= 0) {
    c.steps = std::max<int64_t>(0, o->steps);
    c.epochs = std::max<int64_t>(0, o->epochs);
    c.time_s = std::max(0.0, o->time_s);
  }
  if (o->threads >= 0) c.threads = o->threads;
  c.dist = o->dist;
  c.dist_reduce = o->dist_reduce;
  c.dist_timeout_s = o->dist_timeout_s;
  check_dist_family(c);
}

void print_summary(const TrainRun &run) {
  std::printf("done: %lld steps (%lld skipped), run directory %s, peak RSS %.0f MiB\n",
              (long long)run.step(), (long long)run.skipped_steps(), run.config().out.c_str(),
              peak_rss_mib());
}

}  // namespace

int cmd_train(int argc, char **argv) {
  CliArgs a(argc, argv, 2, {"--data",         "--data-dir",
                            "--levels",       "--depth",
                            "--width",        "--coupling",
                            "--permutation",  "--n-bits",
                            "--model",        "--batch",
                            "--lr",           "--warmup",
                            "--decay",        "--epochs",
                            "--steps",        "--time",
                            "--clip",         "--ema",
                            "--device",       "--seed",
                            "--threads",      "--limit-train",
                            "--limit-test",   "--eval-every",
                            "--eval-images",  "--sample-every",
                            "--sample-count", "--checkpoint-every",
                            "--log-every",    "--keep-checkpoints",
                            "--stop-at",      "--out",
                            "--precision",    "--grad-shards",
                            "--dist",         "--dist-reduce",
                            "--dist-timeout", "--arch",
                            "--spike-factor", "--spike-window",
                            "--res-blocks"},
            {"--quiet", "--recompute", "--unbounded-priors"}, {{"-o", "--out"}});
  if (!a.positional().empty()) invalid_argument("unexpected argument '" + a.positional()[0] + "'");
  RunConfig c;
  c.data = a.get("--data", c.data);
  c.data_dir = a.get("--data-dir");
  c.init_model = a.get("--model");
  c.arch = a.get("--arch", c.arch);
  const Family family = parse_family(c.arch);
  if (a.has("--arch") && !c.init_model.empty())
    invalid_argument("--model starts from an existing model: --arch does not apply");
  // The size options mean what they mean in the family, with its defaults.
  const FamilySize size = family_defaults(family);
  c.levels = static_cast<int>(a.get_int("--levels", size.levels, 1, 8));
  c.depth = static_cast<int>(a.get_int("--depth", size.depth, 1, 256));
  c.width = static_cast<int>(a.get_int("--width", size.width, 1, 8192));
  c.res_blocks = static_cast<int>(a.get_int("--res-blocks", size.res_blocks, 0, 16));
  if (a.has("--res-blocks") && family != Family::RealNvp)
    invalid_argument("--res-blocks is RealNVP's option (--arch " + c.arch + ")");
  if (family != Family::Glow)
    for (const char *glow_only : {"--coupling", "--permutation"})
      if (a.has(glow_only))
        invalid_argument(std::string(glow_only) + " is Glow's option: --arch " + c.arch +
                         " has its own couplings and permutations");
  c.coupling = a.get("--coupling", c.coupling);
  c.permutation = a.get("--permutation", c.permutation);
  c.n_bits = static_cast<int>(a.get_int("--n-bits", c.n_bits, 1, 8));
  c.batch = a.get_int("--batch", c.batch, 1, 65536);
  c.lr = a.get_double("--lr", c.lr);
  if (!(c.lr > 0)) invalid_argument("--lr must be positive");
  c.warmup = a.get_int("--warmup", c.warmup, 0, int64_t{1} << 40);
  c.decay = a.get("--decay", c.decay);
  parse_decay(c.decay);
  // --steps or --epochs set the length (and the decay's horizon); --time is a wall-clock limit,
  // alone or on top of either.
  if (a.has("--epochs") && a.has("--steps")) invalid_argument("give --epochs or --steps, not both");
  if (!a.has("--epochs") && !a.has("--steps") && !a.has("--time"))
    invalid_argument("give --epochs, --steps or --time");
  if (!a.has("--epochs") && !a.has("--steps") && a.has("--decay") && a.get("--decay") != "none")
    invalid_argument("--decay " + a.get("--decay") +
                     " needs --steps or --epochs for its horizon (--time may be added as a limit)");
  c.epochs = a.get_int("--epochs", 0, 1, 1 << 20);
  c.steps = a.get_int("--steps", 0, 1, int64_t{1} << 40);
  if (a.has("--time")) c.time_s = parse_duration(a.get("--time"));
  c.clip = a.get_double("--clip", c.clip);
  c.ema = a.get_double("--ema", c.ema);
  c.recompute = a.has("--recompute");
  // Not in the usage: Glow's split priors as built, without the log-std floor (their loss
  // spikes can be reproduced with it).
  c.bounded_priors = !a.has("--unbounded-priors");
  if (c.ema < 0 || c.ema >= 1) invalid_argument("--ema must be in [0, 1)");
  c.device = a.get("--device", c.device);
  parse_device(c.device);
  c.precision = a.get("--precision", c.precision);
  parse_precision(c.precision);
  c.seed = a.get_u64("--seed", c.seed);
  c.threads = static_cast<int>(a.get_int("--threads", 0, 0, 4096));
  c.limit_train = a.get_int("--limit-train", 0, 0, int64_t{1} << 40);
  c.limit_test = a.get_int("--limit-test", 0, 0, int64_t{1} << 40);
  c.eval_every = a.get_int("--eval-every", c.eval_every, 0, int64_t{1} << 40);
  c.eval_images = a.get_int("--eval-images", c.eval_images, 0, int64_t{1} << 40);
  c.sample_every = a.get_int("--sample-every", c.sample_every, 0, int64_t{1} << 40);
  c.sample_count = a.get_int("--sample-count", c.sample_count, 1, 1024);
  c.checkpoint_every = a.get_int("--checkpoint-every", c.checkpoint_every, 0, int64_t{1} << 40);
  c.log_every = a.get_int("--log-every", c.log_every, 1, int64_t{1} << 40);
  c.keep_checkpoints = static_cast<int>(a.get_int("--keep-checkpoints", 3, 1, 1000));
  c.stop_at = a.get_int("--stop-at", 0, 0, int64_t{1} << 40);
  c.spike_factor = a.get_double("--spike-factor", c.spike_factor);
  if (c.spike_factor < 0 || (c.spike_factor > 0 && c.spike_factor <= 1))
    invalid_argument("--spike-factor must be > 1 (or 0: off)");
  c.spike_window = a.get_int("--spike-window", c.spike_window, 1, int64_t{1} << 20);
  c.quiet = a.has("--quiet");
  c.out = a.require("--out");
  c.grad_shards = static_cast<int>(a.get_int("--grad-shards", 0, 1, 4096));
  parse_dist(a, &c.dist, &c.dist_reduce, &c.dist_timeout_s);
  check_dist_family(c);
  TrainRun run(c);
  if (run.writer())
    std::printf("flowtrain: %s, %s, %lld training / %lld test images, %zu parameters, batch %lld\n",
                c.init_model.empty() ? c.arch.c_str() : c.init_model.c_str(),
                run.data().name.c_str(), (long long)run.data().train.size(),
                (long long)run.data().test.size(), run.params().size(), (long long)c.batch);
  run.run();
  if (run.writer()) print_summary(run);
  return 0;
}

int cmd_resume(int argc, char **argv) {
  CliArgs a(
      argc, argv, 2,
      {"--steps", "--epochs", "--time", "--threads", "--dist", "--dist-reduce", "--dist-timeout"},
      {});
  if (a.positional().size() != 1) invalid_argument("usage: flowtrain resume RUN_DIR");
  StopOverrides o;
  if (a.has("--steps")) o.steps = a.get_int("--steps", 0, 1, int64_t{1} << 40);
  if (a.has("--epochs")) o.epochs = a.get_int("--epochs", 0, 1, 1 << 20);
  if (a.has("--time")) o.time_s = parse_duration(a.get("--time"));
  if (a.has("--threads")) o.threads = static_cast<int>(a.get_int("--threads", 0, 0, 4096));
  parse_dist(a, &o.dist, &o.dist_reduce, &o.dist_timeout_s);
  std::unique_ptr<TrainRun> run = TrainRun::resume(a.positional()[0], apply_overrides, &o);
  run->run();
  if (run->writer()) print_summary(*run);
  return 0;
}

}  // namespace flowrt::train
