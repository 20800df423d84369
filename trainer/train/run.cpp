#include "trainer/train/run.hpp"

#include <sys/stat.h>

#include <cerrno>
#include <cmath>
#include <cstdio>
#include <cstdlib>
#include <cstring>
#include <ctime>
#include <future>
#include <thread>

#ifdef _OPENMP
#include <omp.h>
#endif

#include "core/error.hpp"
#include "format/flow_file.hpp"
#include "model/architecture.hpp"
#include "model/glow_builder.hpp"
#include "model/program.hpp"
#include "trainer/dist/nccl_reducer.hpp"
#include "trainer/report/samples.hpp"
#include "trainer/train/batches.hpp"
#include "trainer/train/evaluate.hpp"

namespace flowrt::train {
namespace {

using Clock = std::chrono::steady_clock;

double seconds_since(Clock::time_point t) {
  return std::chrono::duration<double>(Clock::now() - t).count();
}

void make_dir(const std::string &dir) {
  if (dir.empty()) invalid_argument("--out: a run directory is required");
  if (::mkdir(dir.c_str(), 0777) != 0 && errno != EEXIST)
    fail(FLOWRT_IO_ERROR, "'" + dir + "': cannot create directory");
}

std::string today() {
  char date[32];
  const std::time_t now = std::time(nullptr);
  std::strftime(date, sizeof date, "%Y-%m-%d", std::gmtime(&now));
  return date;
}

// The squeezes of a fresh model, which the image's sides must be divisible by (default_image):
// Glow squeezes once per level, RealNVP once per scale but the last, NICE never.
int model_squeezes(const RunConfig &c) {
  const Family f = parse_family(c.arch);
  return f == Family::Glow ? c.levels : f == Family::RealNvp ? c.levels - 1 : 0;
}

Graph initial_graph(const RunConfig &c, const ImageSpec &image) {
  if (!c.init_model.empty()) return read_flow(map_model_file(c.init_model));
  const Family f = parse_family(c.arch);
  if (f != Family::Glow) {
    ImageSpec im = image;
    im.n_bits = c.n_bits;
    return build_family(f, im, FamilySize{c.levels, c.depth, c.width, c.res_blocks}, c.seed, false);
  }
  GlowConfig g;
  g.channels = image.channels, g.height = image.height, g.width = image.width;
  g.n_bits = c.n_bits;
  g.levels = c.levels, g.depth = c.depth, g.hidden = c.width;
  g.coupling = parse_coupling(c.coupling);
  g.permutation = parse_permutation(c.permutation);
  g.seed = c.seed;
  return build_glow(g);
}

// The model a checkpoint continues. Its model file holds a batch norm as the actnorm of its
// running averages (files never contain batch norms), so a family built with batch norms is
// built again: the same structure and parameter layout, whose values the checkpoint's replace.
Graph resumed_graph(const RunConfig &c, const Checkpoint &from) {
  Graph g = read_flow(copy_model_bytes(from.model_flow.data(), from.model_flow.size()));
  if (c.init_model.empty() && parse_family(c.arch) == Family::RealNvp)
    return initial_graph(c, g.image);
  return g;
}

}  // namespace

TrainRun::TrainRun(RunConfig cfg) : TrainRun(std::move(cfg), nullptr) {}

TrainRun::TrainRun(RunConfig cfg, const Checkpoint *from) : cfg_(std::move(cfg)) {
  if (cfg_.batch < 1) invalid_argument("--batch must be >= 1");
  if (cfg_.threads < 0) invalid_argument("--threads must be >= 0");
  if (cfg_.dist.empty()) {
    local_comm_ = make_local_communicator();
    comm_ = local_comm_.get();
  } else if (cfg_.dist == "mpi" || cfg_.dist == "nccl") {
    comm_ = &mpi_world(cfg_.dist_timeout_s);
  } else {
    invalid_argument("unknown --dist '" + cfg_.dist + "' (mpi, nccl)");
  }
  const bool nccl = cfg_.dist == "nccl";
  if (cfg_.dist_reduce.empty()) cfg_.dist_reduce = nccl ? "fast" : "ordered";
  reduce_ = parse_reduce_mode(cfg_.dist_reduce);
  if (nccl && reduce_ == ReduceMode::Ordered)
    invalid_argument(
        "--dist nccl reduces with ncclAllReduce (--dist-reduce fast); the ordered "
        "reduction is --dist mpi's");
  if (nccl && parse_device(cfg_.device) != Device::Cuda)
    invalid_argument("--dist nccl trains on GPUs: add --device cuda (or use --dist mpi)");
  const int ranks = comm_->size();
  if (cfg_.grad_shards == 0) cfg_.grad_shards = ranks;  // a new run: one shard per rank
  shards_ = cfg_.grad_shards;
  if (shards_ < 1) invalid_argument("--grad-shards must be >= 1");
  if (shards_ % ranks != 0)
    invalid_argument("the run has " + std::to_string(shards_) + " gradient shards, which " +
                     std::to_string(ranks) + " ranks do not divide (use a rank count dividing " +
                     std::to_string(shards_) + ")");
  if (cfg_.batch % shards_ != 0)
    invalid_argument("--batch " + std::to_string(cfg_.batch) + " is the global batch: it must " +
                     "divide into " + std::to_string(shards_) + " equal gradient shards");
  if (nccl && shards_ != ranks)
    invalid_argument("--dist nccl trains one gradient shard per rank: the run has " +
                     std::to_string(shards_) + " shards for " + std::to_string(ranks) + " ranks");
  if (shards_ > 1 && !nccl && parse_device(cfg_.device) == Device::Cuda)
    fail(FLOWRT_UNSUPPORTED,
         "--device cuda reduces gradients on the GPUs: use --dist nccl (one "
         "shard per rank); --grad-shards and --dist mpi need --device cpu");
  if (!writer()) cfg_.quiet = true;
#ifdef _OPENMP
  if (cfg_.threads > 0) omp_set_num_threads(cfg_.threads);
#endif
  const Device device = parse_device(cfg_.device);
  Graph graph;
  if (from) {
    graph = resumed_graph(cfg_, *from);
  } else {
    ImageSpec image = default_image(cfg_.data, model_squeezes(cfg_));
    if (!cfg_.init_model.empty()) image = read_flow(map_model_file(cfg_.init_model)).image;
    graph = initial_graph(cfg_, image);
    // The log-std floor needs the CPU trainer, which holds the floor's tensors fixed. A given
    // model keeps its function wherever its priors' log-stds are above the floor.
    if (cfg_.bounded_priors && device == Device::Cpu) {
      const int n = bound_split_priors(graph);
      if (n > 0 && !cfg_.init_model.empty() && writer() && !cfg_.quiet)
        std::printf("%s: %d split priors given a log-std floor of %g\n", cfg_.init_model.c_str(), n,
                    kSplitLogStdFloor);
    }
  }
  n_bits_ = graph.image.n_bits;
  // One GPU per rank: the launcher's local rank picks it.
  compute_ = make_train_compute(graph, device, nccl ? local_rank() : 0);
  if (nccl)
    compute_->set_device_reducer(make_nccl_reducer(*comm_, local_rank(), nccl_options_from_env()));
  compute_->set_recompute(cfg_.recompute);
  compute_->set_precision(parse_precision(cfg_.precision));
  if (writer()) make_dir(cfg_.out);
  load_data();
  std::vector<float> &p = compute_->params().values();
  adam_ = Adam(p.size());
  if (from) {
    if (from->params.size() != p.size())
      format_error("checkpoint holds " + std::to_string(from->params.size()) +
                   " parameters, its model has " + std::to_string(p.size()));
    p = from->params;
    adam_.m = from->adam_m;
    adam_.v = from->adam_v;
    adam_.t = from->adam_t;
    ema_ = from->ema;
    step_ = from->step;
    skipped_ = from->skipped_steps;
    best_test_ = from->best_test_bpd;
    best_step_ = from->best_step;
    elapsed_ = from->elapsed_s;
  } else if (cfg_.ema > 0) {
    ema_ = p;
  }
  if (device == Device::Cpu) {
    prior_constants_ = bounded_prior_constants(graph, compute_->params().info());
  } else if (!bounded_prior_constants(graph, compute_->params().info()).empty() && writer() &&
             !cfg_.quiet) {
    // The device runs the whole update and cannot hold tensors fixed.
    std::printf(
        "--device cuda: the bounded split priors' fixed convolutions train like the "
        "rest, so their log-std floor does not hold\n");
  }
  compute_->sync_to_device(&adam_, &ema_);
  make_schedule();
  if (ranks > 1) check_ranks_agree();
  if (writer())
    metrics_ = std::make_unique<MetricsLog>(cfg_.out + "/metrics.csv", from != nullptr, step_);
  progress_ = std::make_unique<Progress>(writer() && Progress::stdout_is_tty());
  std::vector<std::string> names;
  for (size_t i = 0; i < graph.layers.size(); ++i)
    names.push_back(graph.layers[i].name.empty() ? "layer" + std::to_string(i)
                                                 : graph.layers[i].name);
  spikes_ = std::make_unique<SpikeDetector>(cfg_.spike_factor, cfg_.spike_window, std::move(names),
                                            graph.dims());
}

namespace {

// FNV-1a over bytes: enough to tell ranks apart, not a cryptographic digest.
uint64_t fnv1a(const void *data, size_t bytes, uint64_t h = 1469598103934665603ull) {
  const auto *p = static_cast<const unsigned char *>(data);
  for (size_t i = 0; i < bytes; ++i) h = (h ^ p[i]) * 1099511628211ull;
  return h;
}

}  // namespace

void TrainRun::inject_fault() {
  // FLOWRT_TEST_FAULT=KIND:RANK:STEP, for the fault tests: at that step, that rank throws an
  // error (error), stops answering (stall) or dies without a word (exit).
  static const char *spec = std::getenv("FLOWRT_TEST_FAULT");
  if (!spec || !*spec) return;
  char kind[16] = "";
  int rank = -1;
  long long step = -1;
  if (std::sscanf(spec, "%15[a-z]:%d:%lld", kind, &rank, &step) != 3) return;
  if (rank != comm_->rank() || step != step_) return;
  if (!std::strcmp(kind, "error"))
    fail(FLOWRT_IO_ERROR, "injected fault at step " + std::to_string(step_));
  if (!std::strcmp(kind, "stall")) std::this_thread::sleep_for(std::chrono::hours(1));
  if (!std::strcmp(kind, "exit")) std::_Exit(9);
}

void TrainRun::check_ranks_agree() {
  // What must be the same on every rank, field by field, so the message can name the field.
  std::vector<std::pair<std::string, std::string>> fields;
  for (const auto &kv : cfg_.to_kv())
    if (kv.first != "threads") fields.push_back(kv);
  auto hash_of = [](const std::vector<uint8_t> &v) {
    return std::to_string(fnv1a(v.data(), v.size()));
  };
  fields.push_back({"training data", std::to_string(data_.train.size()) + " images, hash " +
                                         hash_of(data_.train.images.pixels)});
  fields.push_back({"test data", std::to_string(data_.test.size()) + " images, hash " +
                                     hash_of(data_.test.images.pixels)});
  const std::vector<float> &p = compute_->params().values();
  fields.push_back({"initial parameters", std::to_string(p.size()) + " values, hash " +
                                              std::to_string(fnv1a(p.data(), p.size() * 4))});
  fields.push_back({"step", std::to_string(step_)});
  std::string mine;
  for (const auto &f : fields) mine += f.first + "=" + f.second + "\n";
  const std::vector<std::string> all = comm_->allgather_strings(mine);
  for (int r = 1; r < static_cast<int>(all.size()); ++r) {
    if (all[r] == all[0]) continue;
    // The first line that differs names the field.
    size_t a = 0, b = 0;
    std::string what = "its settings";
    while (a < all[0].size() && b < all[r].size()) {
      const size_t ea = all[0].find('\n', a), eb = all[r].find('\n', b);
      const std::string la = all[0].substr(a, ea - a), lb = all[r].substr(b, eb - b);
      if (la != lb) {
        what = la.substr(0, la.find('=')) + " (rank 0: " + la.substr(la.find('=') + 1) + "; rank " +
               std::to_string(r) + ": " + lb.substr(lb.find('=') + 1) + ")";
        break;
      }
      a = ea + 1, b = eb + 1;
    }
    invalid_argument("rank " + std::to_string(r) + " differs from rank 0 in " + what +
                     ": every rank must start the same run");
  }
}

std::unique_ptr<TrainRun> TrainRun::resume(const std::string &dir,
                                           void (*adjust)(RunConfig &, void *), void *user) {
  const std::vector<std::string> files = list_checkpoints(dir);
  if (files.empty()) fail(FLOWRT_IO_ERROR, "'" + dir + "': no checkpoint-*.ckpt to resume from");
  // The newest readable checkpoint; a damaged newer one is reported and skipped.
  for (size_t i = files.size(); i-- > 0;) {
    try {
      Checkpoint c = read_checkpoint(files[i]);
      RunConfig cfg = RunConfig::from_kv(c.config);
      cfg.out = dir;
      if (adjust) adjust(cfg, user);
      if (launcher_rank() == 0)
        std::printf("resuming from %s (step %lld)\n", files[i].c_str(), (long long)c.step);
      return std::unique_ptr<TrainRun>(new TrainRun(std::move(cfg), &c));
    } catch (const Error &e) {
      if (e.status() != FLOWRT_FORMAT_ERROR || i == 0) throw;
      std::printf("skipping %s: %s\n", files[i].c_str(), e.what());
    }
  }
  fail(FLOWRT_IO_ERROR, "'" + dir + "': no readable checkpoint");
}

void TrainRun::load_data() {
  const Graph g = compute_->export_graph(compute_->params().values());
  DataRequest r;
  r.data = cfg_.data;
  r.data_dir = cfg_.data_dir;
  r.channels = g.image.channels, r.height = g.image.height, r.width = g.image.width;
  r.limit_train = cfg_.limit_train;
  r.limit_test = cfg_.limit_test;
  data_ = train::load_data(r);
  if (data_.train.size() < cfg_.batch)
    invalid_argument("the training set has " + std::to_string(data_.train.size()) +
                     " images, fewer than --batch " + std::to_string(cfg_.batch));
  steps_per_epoch_ = data_.train.size() / cfg_.batch;
}

void TrainRun::make_schedule() {
  total_steps_ = cfg_.steps > 0 ? cfg_.steps : cfg_.epochs * steps_per_epoch_;
  schedule_.lr = cfg_.lr;
  schedule_.warmup = cfg_.warmup;
  schedule_.decay = total_steps_ > 0 ? parse_decay(cfg_.decay) : Decay::None;
  if (schedule_.decay == Decay::Cosine) schedule_.total_steps = total_steps_;
  if (schedule_.decay == Decay::Step) schedule_.step_every = std::max<int64_t>(1, total_steps_ / 3);
}

bool TrainRun::finished(double elapsed) const {
  if (total_steps_ > 0 && step_ >= total_steps_) return true;
  if (cfg_.time_s > 0 && elapsed >= cfg_.time_s) return true;
  return total_steps_ == 0 && cfg_.time_s <= 0;
}

void TrainRun::log_message(const std::string &line) {
  if (!cfg_.quiet && writer()) progress_->message(line);
}

std::vector<float> TrainRun::batch_x(int64_t step, int64_t first, int64_t n, uint64_t noise_step) {
  const int64_t epoch = step / steps_per_epoch_;
  if (epoch != order_epoch_) {
    order_ = epoch_order(data_.train.size(), cfg_.seed, epoch);
    order_epoch_ = epoch;
  }
  const int64_t d = data_.train.images.image_size();
  std::vector<uint8_t> pixels(static_cast<size_t>(n * d));
  for (int64_t i = 0; i < n; ++i)
    std::copy_n(data_.train.images.pixels.begin() + order_[first + i] * d, d,
                pixels.begin() + i * d);
  std::vector<float> x(pixels.size());
  // Noise keyed by the image's place in its global batch, not in this slice of it.
  const int64_t in_batch = first % cfg_.batch;
  dequantize(pixels.data(), static_cast<int64_t>(pixels.size()), n_bits_, cfg_.seed,
             static_cast<int64_t>(noise_step), x.data(), in_batch * d);
  return x;
}

std::vector<int64_t> TrainRun::batch_images(int64_t step, int64_t first, int64_t n) {
  const int64_t epoch = step / steps_per_epoch_;
  if (epoch != order_epoch_) {
    order_ = epoch_order(data_.train.size(), cfg_.seed, epoch);
    order_epoch_ = epoch;
  }
  return std::vector<int64_t>(order_.begin() + first, order_.begin() + first + n);
}

void TrainRun::observe_forward(const int64_t *images) {
  if (!spikes_->enabled()) return;
  const std::vector<double> &bpd = compute_->bits_per_dim();
  const std::vector<double> &terms = compute_->layer_log_p();
  const int64_t n = static_cast<int64_t>(bpd.size());
  spikes_->observe(bpd.data(), images, n,
                   terms.size() == bpd.size() * spikes_->layers() ? terms.data() : nullptr);
}

std::optional<Spike> TrainRun::check_spike(double loss) {
  // Every rank sees the same losses, so all of them find the same spikes.
  std::optional<Spike> s = spikes_->finish_step(step_, loss);
  if (!s) return s;
  if (comm_->size() > 1) {
    // The worst image over all ranks: each offers its own.
    const std::vector<double> all =
        comm_->allgather({s->image_bpd, static_cast<double>(s->image),
                          static_cast<double>(s->layer), s->layer_bpd, s->typical_bpd});
    size_t best = 0;
    for (size_t r = 5; r < all.size(); r += 5)
      if (!std::isfinite(all[r]) ? std::isfinite(all[best]) : all[r] > all[best]) best = r;
    s->image_bpd = all[best], s->image = static_cast<int64_t>(all[best + 1]);
    s->layer = static_cast<int>(all[best + 2]);
    s->layer_bpd = all[best + 3], s->typical_bpd = all[best + 4];
    s->layer_name = s->layer >= 0 ? spikes_->layer_name(s->layer) : "";
  }
  log_message(describe(*s));
  return s;
}

TrainRun::StepResult TrainRun::sharded_step(int64_t first) {
  StepResult r;
  r.lr = schedule_.at(step_);
  ParamStore<float> &ps = compute_->params();
  const size_t n_params = ps.values().size();
  const int per_rank = shards_ / comm_->size();
  const int64_t b = cfg_.batch / shards_;
  shard_grads_.resize(per_rank > 1 ? static_cast<size_t>(per_rank) : 0);
  std::vector<double> losses;
  std::vector<const float *> shards;
  for (int j = 0; j < per_rank; ++j) {
    const int64_t s = static_cast<int64_t>(comm_->rank()) * per_rank + j;
    const std::vector<float> x = batch_x(step_, first + s * b, b, static_cast<uint64_t>(step_));
    losses.push_back(compute_->forward(x.data(), nullptr, b, false));
    observe_forward(batch_images(step_, first + s * b, b).data());
    compute_->backward();
    if (per_rank == 1) {  // the only shard: reduced where it lies
      shards.push_back(ps.grads().data());
    } else {  // the next backward overwrites the gradients: keep this shard's
      shard_grads_[j] = ps.grads();
      shards.push_back(shard_grads_[j].data());
    }
  }
  // The batch's loss: the shards' mean bits/dim, added in shard order.
  const std::vector<double> all = comm_->allgather(losses);
  double loss = 0;
  for (double l : all) loss += l;
  loss /= shards_;
  std::vector<float> &g = ps.grads();
  comm_->reduce_shards(shards, g.data(), n_params, reduce_);
  zero_ranges(g, prior_constants_);
  // Each shard's gradient is of its own mean: the batch's is their mean.
  const float inv = static_cast<float>(1.0 / shards_);
#pragma omp parallel for schedule(static) if (n_params >= (size_t{1} << 16))
  for (int64_t k = 0; k < static_cast<int64_t>(n_params); ++k) g[k] *= inv;
  const UpdateResult u = apply_update(ps.values(), g, adam_, loss, r.lr, cfg_.clip);
  if (u.applied && cfg_.ema > 0 && !ema_.empty()) ema_update(ema_, ps.values(), cfg_.ema);
  r.loss = loss;
  r.grad_norm = u.grad_norm;
  return finish_step(r, u.applied);
}

TrainRun::StepResult TrainRun::train_step(const float *x, const int32_t *labels, int64_t n,
                                          const int64_t *images) {
  StepResult r;
  r.lr = schedule_.at(step_);
  if (!prior_constants_.empty()) {
    // TrainCompute::train_step with the fixed tensors' gradients zeroed before the update:
    // Adam's moments for them stay zero, and they stay as they are.
    ParamStore<float> &ps = compute_->params();
    r.loss = compute_->forward(x, labels, n, false);
    compute_->backward();
    zero_ranges(ps.grads(), prior_constants_);
    const UpdateResult u = apply_update(ps.values(), ps.grads(), adam_, r.loss, r.lr, cfg_.clip);
    if (u.applied && cfg_.ema > 0 && !ema_.empty()) ema_update(ema_, ps.values(), cfg_.ema);
    r.grad_norm = u.grad_norm;
    observe_forward(images);
    return finish_step(r, u.applied);
  }
  const StepOutcome o =
      compute_->train_step(x, labels, n, adam_, ema_, StepArgs{r.lr, cfg_.clip, cfg_.ema});
  r.loss = o.loss;
  r.grad_norm = o.update.grad_norm;
  if (!o.update.applied && o.update.loss_scale_overflow) {
    // fp16 loss scaling found its scale too high (it lowered it): routine, not a NaN/Inf batch.
    r.rescaled = true;
    ++step_;
    return r;
  }
  observe_forward(images);
  return finish_step(r, o.update.applied);
}

TrainRun::StepResult TrainRun::finish_step(StepResult r, bool applied) {
  if (!applied) {
    ++skipped_;
    char buf[160];
    std::snprintf(
        buf, sizeof buf,
        "step %lld: non-finite loss (%g) or gradient norm (%g): step skipped (%lld so far)",
        (long long)step_, r.loss, r.grad_norm, (long long)skipped_);
    log_message(buf);
  }
  r.applied = applied;
  ++step_;
  r.spike = check_spike(r.loss);
  return r;
}

void TrainRun::sync_state(bool with_adam) {
  compute_->sync_to_host(with_adam ? &adam_ : nullptr, &ema_);
}

double TrainRun::evaluate(int64_t max_images) {
  std::vector<float> &p = compute_->params().values();
  std::vector<float> saved;
  if (!ema_.empty()) {  // evaluate the EMA weights, then put the live ones back
    sync_state(false);
    saved = p;
    p = ema_;
    compute_->sync_to_device(nullptr, nullptr);
  }
  const double bpd =
      evaluate_bits_per_dim(*compute_, data_.test, n_bits_, std::max<int64_t>(cfg_.batch, 16),
                            max_images, 0, 0, comm_->size() > 1 ? comm_ : nullptr);
  if (!saved.empty()) {
    p = saved;
    compute_->sync_to_device(nullptr, nullptr);
  }
  return bpd;
}

Graph TrainRun::export_graph() {
  sync_state(false);
  return compute_->export_graph(ema_.empty() ? compute_->params().values() : ema_);
}

void TrainRun::save_best(double test_bpd) {
  if (!writer()) return;
  Graph g = export_graph();
  char bpd[32];
  std::snprintf(bpd, sizeof bpd, "%.6f", test_bpd);
  g.metadata = {{"producer", std::string("flowtrain ") + flowrt_version()},
                {"date", today()},
                {"dataset", data_.name},
                {"test_bits_per_dim", bpd},
                {"steps", std::to_string(step_)},
                {"seed", std::to_string(cfg_.seed)},
                {"ema", cfg_.ema > 0 ? std::to_string(cfg_.ema) : "off"}};
  save_flow(g, cfg_.out + "/model.flow");
}

void TrainRun::write_checkpoint_now() {
  sync_state();
  if (!writer()) return;
  Checkpoint c;
  c.config = cfg_.to_kv();
  c.step = step_;
  c.epoch = step_ / steps_per_epoch_;
  c.batch_in_epoch = step_ % steps_per_epoch_;
  c.best_test_bpd = best_test_;
  c.best_step = best_step_;
  c.skipped_steps = skipped_;
  c.elapsed_s = elapsed_;
  c.model_flow = write_flow(compute_->export_graph(compute_->params().values()));
  c.params = compute_->params().values();
  c.adam_m = adam_.m;
  c.adam_v = adam_.v;
  c.adam_t = adam_.t;
  c.ema = ema_;
  write_checkpoint(checkpoint_path(cfg_.out, step_), c);
  prune_checkpoints(cfg_.out, static_cast<size_t>(std::max(1, cfg_.keep_checkpoints)));
}

void TrainRun::run() {
  const int64_t ckpt_every = cfg_.checkpoint_every > 0 ? cfg_.checkpoint_every : cfg_.eval_every;
  const auto session_start = Clock::now();
  const double elapsed_before = elapsed_;
  double interval_loss = 0, interval_time = 0, last_norm = 0;
  int64_t interval_steps = 0;
  // The interval's loss spikes and the largest of them (relative to its median).
  int64_t interval_spikes = 0, last_spike_step = 0;
  std::optional<Spike> interval_spike;
  auto severity = [](const Spike &s) {
    return std::isfinite(s.loss) && s.median > 0 ? s.loss / s.median : HUGE_VAL;
  };
  double last_test = best_test_;
  // One shard per process (alone, or one rank of --dist nccl): this rank's slice of the batch.
  const int64_t local = cfg_.batch / comm_->size();
  auto load = [this, local](int64_t step) {
    return batch_x(step, (step % steps_per_epoch_) * cfg_.batch + comm_->rank() * local, local,
                   step);
  };
  // On a GPU the next batch is read and dequantised on a host thread while the device runs the
  // step (on the CPU that thread would only take a core from the step).
  const bool prefetch = parse_device(cfg_.device) == Device::Cuda;
  std::future<std::vector<float>> next;
  while (!finished(elapsed_)) {
    const auto t0 = Clock::now();
    if (step_ == 0) {
      // Data-dependent actnorm init on the first images of the first epoch (at least 64, for
      // stable statistics), with noise of its own stream. With several ranks, rank 0 runs it
      // on that same global init batch and the others receive its result.
      if (writer()) {
        const int64_t n = std::min<int64_t>(data_.train.size(), std::max<int64_t>(cfg_.batch, 64));
        const std::vector<float> init = batch_x(0, 0, n, ~uint64_t{0});
        compute_->forward(init.data(), nullptr, n, true);
      }
      if (comm_->size() > 1) {
        if (writer()) sync_state(false);
        std::vector<float> &p = compute_->params().values();
        comm_->broadcast(p.data(), p.size() * sizeof(float), 0);
        compute_->sync_to_device(nullptr, nullptr);
      }
      if (!ema_.empty()) {  // the average starts from the initialised weights
        sync_state(false);
        ema_ = compute_->params().values();
        compute_->sync_to_device(nullptr, &ema_);
      }
    }
    comm_->step = step_;
    inject_fault();
    StepResult r;
    if (shards_ == comm_->size() && (shards_ == 1 || cfg_.dist == "nccl")) {
      const std::vector<float> x = next.valid() ? next.get() : load(step_);
      // Before the prefetch, which may move the epoch order on.
      const std::vector<int64_t> images =
          spikes_->enabled()
              ? batch_images(step_, (step_ % steps_per_epoch_) * cfg_.batch + comm_->rank() * local,
                             local)
              : std::vector<int64_t>();
      if (prefetch) next = std::async(std::launch::async, load, step_ + 1);
      r = train_step(x.data(), nullptr, local, images.empty() ? nullptr : images.data());
    } else {
      r = sharded_step((step_ % steps_per_epoch_) * cfg_.batch);
    }
    if (r.spike) {
      ++interval_spikes;
      last_spike_step = r.spike->step;
      if (!interval_spike || severity(*r.spike) > severity(*interval_spike))
        interval_spike = r.spike;
    }
    const double dt = seconds_since(t0);
    elapsed_ = elapsed_before + seconds_since(session_start);
    // Stop decisions are the job's: every rank follows rank 0's clock.
    if (comm_->size() > 1) comm_->broadcast(&elapsed_, sizeof elapsed_, 0);
    if (r.applied) interval_loss += r.loss, ++interval_steps, last_norm = r.grad_norm;
    interval_time += dt;
    const bool done = finished(elapsed_) || (cfg_.stop_at > 0 && step_ >= cfg_.stop_at);
    const bool eval = (cfg_.eval_every > 0 && step_ % cfg_.eval_every == 0) || done;
    const bool log = (cfg_.log_every > 0 && step_ % cfg_.log_every == 0) || eval;
    // A terminal gets the line rewritten every step; a log gets a line per logging interval.
    if (!cfg_.quiet && (progress_->tty() || log)) {
      ProgressState ps;
      ps.step = step_;
      ps.total_steps = total_steps_;
      ps.images_per_s = interval_time > 0
                            ? cfg_.batch * (interval_steps ? interval_steps : 1) / interval_time
                            : 0;
      ps.train_bpd = interval_steps ? interval_loss / interval_steps : r.loss;
      ps.test_bpd = last_test;
      const double per_step = interval_time / std::max<int64_t>(1, interval_steps);
      if (total_steps_ > 0)
        ps.eta_s = per_step * (total_steps_ - step_);
      else if (cfg_.time_s > 0)
        ps.eta_s = cfg_.time_s - elapsed_;
      ps.spikes = spikes_->spikes();
      ps.last_spike_step = last_spike_step;
      progress_->update(ps);
    }
    // Logging, sample grids and checkpoints each keep their own interval.
    const bool samples = cfg_.sample_every > 0 && (step_ % cfg_.sample_every == 0 || done);
    const bool checkpoint = (ckpt_every > 0 && step_ % ckpt_every == 0) || done;
    if (log) {
      MetricsRow row;
      row.step = step_;
      row.epoch = static_cast<double>(step_) / steps_per_epoch_;
      row.train_bpd = interval_steps ? interval_loss / interval_steps : 0;
      row.lr = r.lr;
      row.images_per_s = interval_time > 0 ? cfg_.batch * interval_steps / interval_time : 0;
      row.grad_norm = last_norm;
      row.spikes = interval_spikes;
      if (interval_spike) {
        const Spike &s = *interval_spike;
        row.spike_step = s.step, row.spike_loss = s.loss, row.spike_median = s.median;
        row.spike_image = s.image, row.spike_image_bpd = s.image_bpd;
        row.spike_layer = s.layer_name;
        row.spike_layer_bpd = s.layer_bpd, row.spike_typical_bpd = s.typical_bpd;
      }
      if (eval) {
        row.test_bpd = evaluate(cfg_.eval_images);
        last_test = row.test_bpd;
        if (best_test_ == 0 || row.test_bpd < best_test_) {
          best_test_ = row.test_bpd;
          best_step_ = step_;
          save_best(row.test_bpd);
        }
        char buf[160];
        std::snprintf(buf, sizeof buf, "step %lld: test %.4f bits/dim (best %.4f at step %lld)",
                      (long long)step_, row.test_bpd, best_test_, (long long)best_step_);
        log_message(buf);
      }
      row.peak_rss_mib = peak_rss_mib();
      if (writer()) metrics_->append(row);
      if (eval && writer())
        write_curve_svg(cfg_.out + "/curve.svg", metrics_->rows(), "flowtrain: " + data_.name);
      interval_loss = interval_time = 0;
      interval_steps = interval_spikes = 0;
      interval_spike.reset();
    }
    if (samples && writer())
      write_sample_grids(export_graph(), cfg_.out, step_, {0.f, 0.5f, 0.7f, 1.0f},
                         cfg_.sample_count, cfg_.seed);
    if (checkpoint) write_checkpoint_now();
    if (done) break;
  }
  sync_state();
  if (!cfg_.quiet) progress_->finish();
}

}  // namespace flowrt::train
