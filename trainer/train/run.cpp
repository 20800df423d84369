#include "trainer/train/run.hpp"

#include <sys/stat.h>

#include <cerrno>
#include <cmath>
#include <cstdio>
#include <ctime>
#include <future>

#ifdef _OPENMP
#include <omp.h>
#endif

#include "core/error.hpp"
#include "format/flow_file.hpp"
#include "model/glow_builder.hpp"
#include "model/program.hpp"
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

Graph initial_graph(const RunConfig &c, const ImageSpec &image) {
  if (!c.init_model.empty()) return read_flow(map_model_file(c.init_model));
  GlowConfig g;
  g.channels = image.channels, g.height = image.height, g.width = image.width;
  g.n_bits = c.n_bits;
  g.levels = c.levels, g.depth = c.depth, g.hidden = c.width;
  g.coupling = parse_coupling(c.coupling);
  g.permutation = parse_permutation(c.permutation);
  g.seed = c.seed;
  return build_glow(g);
}

}  // namespace

TrainRun::TrainRun(RunConfig cfg) : TrainRun(std::move(cfg), nullptr) {}

TrainRun::TrainRun(RunConfig cfg, const Checkpoint *from) : cfg_(std::move(cfg)) {
  if (cfg_.batch < 1) invalid_argument("--batch must be >= 1");
  if (cfg_.threads < 0) invalid_argument("--threads must be >= 0");
#ifdef _OPENMP
  if (cfg_.threads > 0) omp_set_num_threads(cfg_.threads);
#endif
  const Device device = parse_device(cfg_.device);
  Graph graph;
  if (from) {
    graph = read_flow(copy_model_bytes(from->model_flow.data(), from->model_flow.size()));
  } else {
    ImageSpec image = default_image(cfg_.data, cfg_.levels);
    if (!cfg_.init_model.empty()) image = read_flow(map_model_file(cfg_.init_model)).image;
    graph = initial_graph(cfg_, image);
  }
  n_bits_ = graph.image.n_bits;
  compute_ = make_train_compute(graph, device);
  compute_->set_recompute(cfg_.recompute);
  compute_->set_precision(parse_precision(cfg_.precision));
  make_dir(cfg_.out);
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
  compute_->sync_to_device(&adam_, &ema_);
  make_schedule();
  metrics_ = std::make_unique<MetricsLog>(cfg_.out + "/metrics.csv", from != nullptr, step_);
  progress_ = std::make_unique<Progress>(Progress::stdout_is_tty());
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
  if (!cfg_.quiet) progress_->message(line);
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
  dequantize(pixels.data(), static_cast<int64_t>(pixels.size()), n_bits_, cfg_.seed,
             static_cast<int64_t>(noise_step), x.data());
  return x;
}

TrainRun::StepResult TrainRun::train_step(const float *x, const int32_t *labels, int64_t n) {
  StepResult r;
  r.lr = schedule_.at(step_);
  const StepOutcome o =
      compute_->train_step(x, labels, n, adam_, ema_, StepArgs{r.lr, cfg_.clip, cfg_.ema});
  r.loss = o.loss;
  r.grad_norm = o.update.grad_norm;
  if (!o.update.applied && o.update.loss_scale_overflow) {
    // fp16 loss scaling found its scale too high (it lowered it): routine, not a NaN/Inf batch.
    ++step_;
    return r;
  }
  if (!o.update.applied) {
    ++skipped_;
    char buf[160];
    std::snprintf(
        buf, sizeof buf,
        "step %lld: non-finite loss (%g) or gradient norm (%g): step skipped (%lld so far)",
        (long long)step_, r.loss, r.grad_norm, (long long)skipped_);
    log_message(buf);
    ++step_;
    return r;
  }
  r.applied = true;
  ++step_;
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
  const double bpd = evaluate_bits_per_dim(*compute_, data_.test, n_bits_,
                                           std::max<int64_t>(cfg_.batch, 16), max_images);
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
  double last_test = best_test_;
  auto load = [this](int64_t step) {
    return batch_x(step, (step % steps_per_epoch_) * cfg_.batch, cfg_.batch, step);
  };
  // On a GPU the next batch is read and dequantised on a host thread while the device runs the
  // step (on the CPU that thread would only take a core from the step).
  const bool prefetch = parse_device(cfg_.device) == Device::Cuda;
  std::future<std::vector<float>> next;
  while (!finished(elapsed_)) {
    const auto t0 = Clock::now();
    if (step_ == 0) {
      // Data-dependent actnorm init on the first images of the first epoch (at least 64, for
      // stable statistics), with noise of its own stream.
      const int64_t n = std::min<int64_t>(data_.train.size(), std::max<int64_t>(cfg_.batch, 64));
      const std::vector<float> init = batch_x(0, 0, n, ~uint64_t{0});
      compute_->forward(init.data(), nullptr, n, true);
      if (!ema_.empty()) {  // the average starts from the initialised weights
        sync_state(false);
        ema_ = compute_->params().values();
        compute_->sync_to_device(nullptr, &ema_);
      }
    }
    const std::vector<float> x = next.valid() ? next.get() : load(step_);
    if (prefetch) next = std::async(std::launch::async, load, step_ + 1);
    const StepResult r = train_step(x.data(), nullptr, cfg_.batch);
    const double dt = seconds_since(t0);
    elapsed_ = elapsed_before + seconds_since(session_start);
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
      progress_->update(ps);
    }
    if (!log) continue;
    MetricsRow row;
    row.step = step_;
    row.epoch = static_cast<double>(step_) / steps_per_epoch_;
    row.train_bpd = interval_steps ? interval_loss / interval_steps : 0;
    row.lr = r.lr;
    row.images_per_s = interval_time > 0 ? cfg_.batch * interval_steps / interval_time : 0;
    row.grad_norm = last_norm;
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
    metrics_->append(row);
    if (eval)
      write_curve_svg(cfg_.out + "/curve.svg", metrics_->rows(), "flowtrain: " + data_.name);
    if ((cfg_.sample_every > 0 && step_ % cfg_.sample_every == 0) ||
        (done && cfg_.sample_every > 0))
      write_sample_grids(export_graph(), cfg_.out, step_, {0.f, 0.5f, 0.7f, 1.0f},
                         cfg_.sample_count, cfg_.seed);
    if ((ckpt_every > 0 && step_ % ckpt_every == 0) || done) write_checkpoint_now();
    interval_loss = interval_time = 0;
    interval_steps = 0;
    if (done) break;
  }
  sync_state();
  if (!cfg_.quiet) progress_->finish();
}

}  // namespace flowrt::train
