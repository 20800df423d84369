// Loss spikes: the detector (running median, worst image, layer attribution), their record in
// metrics.csv, and the bounded split priors that keep an atypical image from scoring millions
// of bits/dim (the same function as Glow's prior above the log-std floor, exactly what the
// runtime computes, with their fixed tensors held through training).
#include <doctest/doctest.h>
#include <stdlib.h>
#include <sys/stat.h>

#include <algorithm>
#include <cmath>
#include <cstdio>
#include <filesystem>
#include <limits>
#include <random>
#include <string>
#include <vector>

#include "backends/ref/ref_executor.hpp"
#include "format/flow_file.hpp"
#include "image_io.hpp"
#include "model/glow_builder.hpp"
#include "trainer/model/train_model.hpp"
#include "trainer/report/metrics.hpp"
#include "trainer/train/bounded_prior.hpp"
#include "trainer/train/run.hpp"
#include "trainer/train/spike_detector.hpp"

TEST_SUITE_BEGIN("trainer");

namespace flowrt {
namespace {

namespace fs = std::filesystem;
using train::Spike;
using train::SpikeDetector;

struct TempDir {
  std::string path;
  explicit TempDir(const std::string &tag) {
    std::string pattern = (fs::temp_directory_path() / ("flowtrain-" + tag + "-XXXXXX")).string();
    REQUIRE(::mkdtemp(pattern.data()) != nullptr);
    path = pattern;
  }
  ~TempDir() {
    std::error_code ec;
    fs::remove_all(path, ec);
  }
};

constexpr double kLn2 = 0.69314718055994530942;

// One batch for the detector: n images at about `bpd` bits/dim whose three layers' terms add up
// to it (dims 100, 8 bits); image `odd` (if >= 0) gets `extra` nats taken from layer 1.
struct Batch {
  std::vector<double> bpd, terms;
  std::vector<int64_t> images;
};
Batch make_batch(int64_t n, double bpd, int64_t first_image, int64_t odd = -1, double extra = 0) {
  Batch b;
  const double dims = 100, nats = (8 - bpd) * dims * kLn2;  // log p of an image
  b.terms.resize(static_cast<size_t>(3 * n));
  for (int64_t i = 0; i < n; ++i) {
    // The layers' shares of log p: 50%, 30%, 20%, a little different per image.
    const double lp = nats * (1 + 0.01 * static_cast<double>(i % 3));
    b.terms[0 * n + i] = 0.5 * lp;
    b.terms[1 * n + i] = 0.3 * lp - (i == odd ? extra : 0);
    b.terms[2 * n + i] = 0.2 * lp;
    double sum = 0;
    for (int l = 0; l < 3; ++l) sum += b.terms[l * n + i];
    b.bpd.push_back(8 - sum / (dims * kLn2));
    b.images.push_back(first_image + i);
  }
  return b;
}

double mean(const std::vector<double> &v) {
  double s = 0;
  for (double x : v) s += x;
  return s / static_cast<double>(v.size());
}

// The median of the last `window` values of v before position `end`.
double running_median(const std::vector<double> &v, size_t end, size_t window) {
  std::vector<double> w(v.begin() + static_cast<long>(end - std::min(end, window)),
                        v.begin() + static_cast<long>(end));
  std::sort(w.begin(), w.end());
  return w.size() % 2 ? w[w.size() / 2] : 0.5 * (w[w.size() / 2 - 1] + w[w.size() / 2]);
}

}  // namespace

TEST_CASE("spike detector: a loss far above the running median names its worst image and layer") {
  SpikeDetector d(10, 50, {"level0/coupling", "level0/split", "top_prior"}, 100);
  std::mt19937 rng(3);
  std::vector<double> losses;
  // Ordinary steps, 3 to 4 bits/dim: no spike, even a batch at 1.9x the median, and none before
  // the median has history (a first step at 100x is not compared with anything).
  for (int step = 0; step < 40; ++step) {
    const double level = step == 0 ? 350 : step == 30 ? 6.5 : 3 + (rng() % 1000) / 1000.0;
    const Batch b = make_batch(8, level, 100 * step);
    d.observe(b.bpd.data(), b.images.data(), 8, b.terms.data());
    losses.push_back(mean(b.bpd));
    CHECK_FALSE(d.finish_step(step + 1, losses.back()));
  }
  const double median = d.median();
  CHECK(median == doctest::Approx(running_median(losses, losses.size(), 50)));
  CHECK(median > 3);
  CHECK(median < 4);
  // Image 5 of the batch (training-set index 4005) loses 1e6 nats in layer 1.
  const Batch b = make_batch(8, 3.5, 4000, 5, 1e6);
  d.observe(b.bpd.data(), b.images.data(), 8, b.terms.data());
  const std::optional<Spike> s = d.finish_step(41, mean(b.bpd));
  REQUIRE(s);
  CHECK(s->step == 41);
  CHECK(s->loss == doctest::Approx(mean(b.bpd)));
  CHECK(s->median == median);
  CHECK(s->image == 4005);
  CHECK(s->image_bpd == doctest::Approx(b.bpd[5]));
  CHECK(s->layer == 1);
  CHECK(s->layer_name == "level0/split");
  CHECK(s->layer_bpd == doctest::Approx(-b.terms[1 * 8 + 5] / (100 * kLn2)));
  // The typical value is that layer's usual share (30% of 4.5 to 5 bits below 8).
  CHECK(s->typical_bpd < -1.2);
  CHECK(s->typical_bpd > -1.6);
  CHECK(d.spikes() == 1);
  const std::string text = describe(*s);
  CHECK(text.find("step 41: loss spike") == 0);
  CHECK(text.find("worst image 4005") != std::string::npos);
  CHECK(text.find("level0/split") != std::string::npos);
  // The spike did not move the median: the next ordinary step is not one.
  CHECK(d.median() == median);
  const Batch next = make_batch(8, 3.6, 4100);
  d.observe(next.bpd.data(), next.images.data(), 8, next.terms.data());
  CHECK_FALSE(d.finish_step(42, mean(next.bpd)));
  // A NaN: the first layer whose term is not finite is named (the later ones inherit it).
  Batch nan = make_batch(8, 3.5, 4200);
  nan.terms[0 * 8 + 2] = std::numeric_limits<double>::quiet_NaN();
  nan.terms[1 * 8 + 2] = std::numeric_limits<double>::quiet_NaN();
  nan.bpd[2] = std::numeric_limits<double>::quiet_NaN();
  d.observe(nan.bpd.data(), nan.images.data(), 8, nan.terms.data());
  const std::optional<Spike> n = d.finish_step(43, mean(nan.bpd));
  REQUIRE(n);
  CHECK(n->image == 4202);
  CHECK(n->layer == 0);
  // Without per-layer terms (the CUDA trainer) the image is still named.
  const Batch big = make_batch(8, 3.5, 4300, 1, 1e6);
  d.observe(big.bpd.data(), big.images.data(), 8, nullptr);
  const std::optional<Spike> g = d.finish_step(44, mean(big.bpd));
  REQUIRE(g);
  CHECK(g->image == 4301);
  CHECK(g->layer == -1);
  CHECK(describe(*g).find("no per-layer terms") != std::string::npos);
  // Factor 0: off.
  SpikeDetector off(0, 50, {"a"}, 100);
  for (int step = 0; step < 20; ++step) CHECK_FALSE(off.finish_step(step, step == 19 ? 1e9 : 3));
}

TEST_CASE("metrics.csv: the spike columns survive a resume; files without them are read") {
  TempDir dir("metrics");
  const std::string path = dir.path + "/metrics.csv";
  {
    train::MetricsLog log(path, false, 0);
    train::MetricsRow a;
    a.step = 50, a.train_bpd = 3.5, a.lr = 1e-3;
    log.append(a);
    train::MetricsRow b = a;
    b.step = 100, b.train_bpd = 5e5;
    b.spikes = 2, b.spike_step = 77, b.spike_loss = 2.695e7, b.spike_median = 3.41;
    b.spike_image = 19930, b.spike_image_bpd = 4.3e8;
    b.spike_layer = "level1/split", b.spike_layer_bpd = 4.29e8, b.spike_typical_bpd = 0.031;
    log.append(b);
    train::MetricsRow c = a;
    c.step = 150, c.spikes = 1, c.spike_step = 120, c.spike_loss = 40, c.spike_median = 3.5;
    log.append(c);  // a spike seen on a device without per-layer terms or image indices
  }
  train::MetricsLog again(path, true, 150);
  REQUIRE(again.rows().size() == 3);
  const train::MetricsRow &a = again.rows()[0], &b = again.rows()[1], &c = again.rows()[2];
  CHECK(a.spikes == 0);
  CHECK(a.spike_layer.empty());
  CHECK(b.spikes == 2);
  CHECK(b.spike_step == 77);
  CHECK(b.spike_loss == doctest::Approx(2.695e7));
  CHECK(b.spike_median == doctest::Approx(3.41));
  CHECK(b.spike_image == 19930);
  CHECK(b.spike_image_bpd == doctest::Approx(4.3e8));
  CHECK(b.spike_layer == "level1/split");
  CHECK(b.spike_layer_bpd == doctest::Approx(4.29e8));
  CHECK(b.spike_typical_bpd == doctest::Approx(0.031));
  CHECK(c.spikes == 1);
  CHECK(c.spike_image == -1);
  CHECK(c.spike_layer.empty());
  // A file of an earlier version: eight columns.
  {
    std::FILE *f = std::fopen(path.c_str(), "w");
    REQUIRE(f);
    std::fputs("step,epoch,train_bpd,test_bpd,lr,images_per_s,grad_norm,peak_rss_mib\n", f);
    std::fputs("50,0.1,3.5,,0.001,100,2,300\n100,0.2,3.4,3.3,0.001,100,2,300\n", f);
    std::fclose(f);
  }
  train::MetricsLog old(path, true, 100);
  REQUIRE(old.rows().size() == 2);
  CHECK(old.rows()[1].test_bpd == doctest::Approx(3.3));
  CHECK(old.rows()[1].spikes == 0);
}

TEST_CASE("bounded split priors: Glow's function above the floor, computed alike by the runtime") {
  GlowConfig gc;
  gc.channels = 1, gc.height = 8, gc.width = 8, gc.levels = 3, gc.depth = 1, gc.hidden = 6;
  gc.random_nets = true;  // priors with weights, log-stds near -1
  gc.seed = 4;
  const Graph glow = build_glow(gc);
  Graph bounded = glow;
  CHECK(train::bound_split_priors(bounded) == 2);
  CHECK(train::bound_split_priors(bounded) == 0);  // already bounded: left alone
  // Through the format and back: the structure is the format's own.
  const std::vector<uint8_t> bytes = write_flow(bounded);
  const Graph loaded = read_flow(copy_model_bytes(bytes.data(), bytes.size()));
  const int64_t n = 3, d = glow.dims();
  std::mt19937 rng(9);
  std::vector<double> x(static_cast<size_t>(n * d));
  for (double &v : x) v = static_cast<double>(rng() % 256) / 256.0 - 0.5 + 1.0 / 512;
  train::TrainModel<double> before(glow), after(loaded);
  before.forward(x.data(), nullptr, n, false);
  after.forward(x.data(), nullptr, n, false);
  RefExecutor<double> ref(loaded, n, 1, false);
  std::vector<double> z(x.size()), log_p(n);
  ref.encode(n, x.data(), nullptr, z.data(), log_p.data(), nullptr);
  for (int64_t i = 0; i < n; ++i) {
    CHECK(after.bits_per_dim()[i] == doctest::Approx(before.bits_per_dim()[i]).epsilon(1e-6));
    const double runtime_bpd = 8 - log_p[i] / (static_cast<double>(d) * kLn2);
    CHECK(runtime_bpd == doctest::Approx(after.bits_per_dim()[i]).epsilon(1e-12));
  }
  // The fixed 1x1 convolutions: a weight and a bias range per split.
  CHECK(train::bounded_prior_constants(loaded, after.params().info()).size() == 4);
  CHECK(train::bounded_prior_constants(glow, before.params().info()).empty());
}

namespace {

// A folder of n black 8x8 PNGs (the run needs a training set; the test feeds its own batches).
std::string black_pngs(const std::string &dir, int n) {
  for (int i = 0; i < n; ++i) {
    char name[32];
    std::snprintf(name, sizeof name, "/img%03d.png", i);
    write_png(dir + name, ImageBatch{1, 1, 8, 8, std::vector<uint8_t>(64, 0)});
  }
  return dir;
}

// A Glow (1x8x8, 2 levels, 1 step, channel reversal) whose level-0 split prior has learned what
// trained priors learn: the darker the kept half (the odd rows here), the smaller the leaving
// half's std. Its log-std is -3 where the kept half is black, falling by `slope` per unit of
// brightness, and its mean is where a black leaving half lands.
Graph dark_prior_glow(double slope) {
  GlowConfig gc;
  gc.channels = 1, gc.height = 8, gc.width = 8, gc.levels = 2, gc.depth = 1, gc.hidden = 4;
  gc.permutation = Permutation::Reverse;
  Graph g = build_glow(gc);
  for (Layer &l : g.layers)
    if (auto *sp = std::get_if<SplitLayer>(&l.op)) {
      auto &conv = std::get<Conv2dOp>(sp->prior.ops[0]);
      std::vector<float> w = conv.weight.to_vector(), b = conv.bias.to_vector();
      const double squash = 1.0 / (1.0 + std::exp(-2.0));  // the couplings' sigmoid(0 + 2)
      for (int j = 0; j < 2; ++j) {
        b[j] = static_cast<float>((-0.5 + 1.0 / 512) * squash);  // mean
        for (int i = 0; i < 2; ++i) w[((2 + j) * 2 + i) * 9 + 4] = static_cast<float>(-slope / 2);
        b[2 + j] = static_cast<float>(-3 - slope / 2);  // log-std at a black kept half
      }
      conv.weight = Tensor::from_vector(conv.weight.shape(), std::move(w));
      conv.bias = Tensor::from_vector(conv.bias.shape(), std::move(b));
    }
  return g;
}

struct SpikeRun {
  std::vector<double> losses;
  std::vector<Spike> spikes;
  bool constants_held = true;
};

// 20 steps of black images, a step whose batch holds one striped image (training-set index 99:
// odd rows white, even rows black), 5 more black steps.
SpikeRun run_dark_prior(bool bounded) {
  TempDir dir("spike"), out("spike-run");
  const std::string model = dir.path + "/model.flow";
  save_flow(dark_prior_glow(10), model);
  const std::string data = dir.path + "/data";
  fs::create_directory(data);
  train::RunConfig c;
  c.data = black_pngs(data, 16);
  c.init_model = model;
  c.batch = 8, c.lr = 1e-5, c.warmup = 0, c.decay = "none", c.steps = 100;
  c.threads = 2, c.quiet = true, c.bounded_priors = bounded, c.out = out.path;
  train::TrainRun run(c);
  const Graph g = run.export_graph();
  const std::vector<train::GradRange> fixed =
      train::bounded_prior_constants(g, train::TrainModel<float>(g).params().info());
  CHECK(fixed.empty() != bounded);
  const std::vector<float> start = run.params();
  std::mt19937 rng(17);
  std::uniform_real_distribution<float> u(0.f, 1.f);
  SpikeRun r;
  for (int step = 0; step < 26; ++step) {
    std::vector<float> x(8 * 64);
    std::vector<int64_t> images(8);
    for (int b = 0; b < 8; ++b) {
      images[b] = step * 8 + b;
      const bool striped = step == 20 && b == 3;
      if (striped) images[b] = 99;
      for (int p = 0; p < 64; ++p) {
        const bool white = striped && (p / 8) % 2 == 1;
        x[b * 64 + p] = ((white ? 255.f : 0.f) + u(rng)) / 256.f - 0.5f;
      }
    }
    const train::TrainRun::StepResult s = run.train_step(x.data(), nullptr, 8, images.data());
    REQUIRE(s.applied);
    r.losses.push_back(s.loss);
    if (s.spike) r.spikes.push_back(*s.spike);
  }
  for (const train::GradRange &f : fixed)
    for (size_t k = f.offset; k < f.end(); ++k)
      r.constants_held = r.constants_held && run.params()[k] == start[k];
  return r;
}

}  // namespace

TEST_CASE("loss spike: an image whose kept half is out of range; the log-std floor stops it") {
  // Glow's affine prior extrapolates the striped image's log-std to -13: a spike, reported
  // with the image and the split.
  const SpikeRun plain = run_dark_prior(false);
  REQUIRE(plain.spikes.size() == 1);
  const Spike &s = plain.spikes[0];
  CHECK(s.step == 21);
  CHECK(s.image == 99);
  CHECK(s.layer_name == "level0/split");
  CHECK(s.loss > 100 * s.median);
  MESSAGE("without the floor: step 21 at " << s.loss << " bits/dim, " << s.loss / s.median
                                           << "x the median " << s.median);
  // Bounded: the same model above the floor, and every step within 2x its running median.
  const SpikeRun floor = run_dark_prior(true);
  CHECK(floor.spikes.empty());
  CHECK(floor.constants_held);
  double worst = 0;
  for (size_t i = 10; i < floor.losses.size(); ++i)
    worst = std::max(worst, floor.losses[i] / running_median(floor.losses, i, 100));
  CHECK(worst < 2);
  // Before any update the two are the same function (the floor is below every black image's
  // log-std).
  CHECK(floor.losses[0] == doctest::Approx(plain.losses[0]).epsilon(1e-6));
  MESSAGE("with the floor: step 21 at " << floor.losses[20] << " bits/dim, the largest step "
                                        << worst << "x its running median");
}

}  // namespace flowrt
