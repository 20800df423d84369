// The training loop end to end: export to libflowrt, bit-exact resume, checkpoint integrity,
// the NaN/Inf guard, and the data loaders' error messages.
#include <doctest/doctest.h>
#include <sys/mount.h>

#include <sys/stat.h>
#include <sys/wait.h>
#include <unistd.h>

#include <algorithm>
#include <cmath>
#include <cstdio>
#include <cstring>
#include <filesystem>
#include <fstream>
#include <limits>
#include <memory>
#include <random>
#include <string>
#include <utility>
#include <vector>

#include "core/error.hpp"
#include "flowrt.h"
#include "format/flow_file.hpp"
#include "image_io.hpp"
#include "trainer/datasets/dataset.hpp"
#include "trainer/layers/gemm.hpp"
#include "trainer/train/checkpoint.hpp"
#include "trainer/train/evaluate.hpp"
#include "trainer/train/run.hpp"

TEST_SUITE_BEGIN("trainer");

namespace flowrt {
namespace {

namespace fs = std::filesystem;
using train::RunConfig;
using train::TrainRun;

const char *kFashionDir = "/usr/share/datasets/fashion-mnist";

// Fresh, empty directories under the system's temporary directory, removed at exit.
struct TempDirs {
  std::vector<std::string> dirs;
  ~TempDirs() {
    std::error_code ec;
    for (const std::string &d : dirs) fs::remove_all(d, ec);
  }
};

std::string temp_dir(const std::string &tag) {
  static TempDirs made;
  std::string pattern = (fs::temp_directory_path() / ("flowtrain-" + tag + "-XXXXXX")).string();
  REQUIRE(::mkdtemp(pattern.data()) != nullptr);
  made.dirs.push_back(pattern);
  return pattern;
}

// A folder of small random grey PNGs (blobs on a dark background), so the training tests need
// no downloaded data.
std::string png_folder(int n) {
  const std::string dir = temp_dir("png");
  std::mt19937 rng(42);
  for (int i = 0; i < n; ++i) {
    ImageBatch img{1, 1, 12, 12, std::vector<uint8_t>(144, 0)};
    const int cy = static_cast<int>(rng() % 12), cx = static_cast<int>(rng() % 12);
    for (int y = 0; y < 12; ++y)
      for (int x = 0; x < 12; ++x) {
        const double d2 = (y - cy) * (y - cy) + (x - cx) * (x - cx);
        img.pixels[y * 12 + x] = static_cast<uint8_t>(255.0 * std::exp(-d2 / 8.0));
      }
    char name[32];
    std::snprintf(name, sizeof name, "/img%03d.png", i);
    write_png(dir + name, img);
  }
  return dir;
}

RunConfig tiny_run(const std::string &data, const std::string &out) {
  RunConfig c;
  c.data = data;
  c.levels = 2, c.depth = 2, c.width = 8;
  c.batch = 4;
  c.steps = 12;
  c.warmup = 3;
  c.lr = 2e-3;
  c.eval_every = 6;
  c.eval_images = 8;
  c.log_every = 3;
  c.checkpoint_every = 3;
  c.seed = 5;
  c.threads = 2;
  c.quiet = true;
  c.out = out;
  return c;
}

void quiet(RunConfig &c, void *) {
  c.quiet = true;
}

// Runs `straight` again, killed after step 7 (into a directory named by `tag`) and resumed: the
// resumed run has `straight`'s settings and ends with the parameters of `done` (the straight
// run, finished), bit for bit.
std::unique_ptr<TrainRun> kill_and_resume(const RunConfig &straight, const std::string &tag,
                                          const TrainRun &done) {
  RunConfig killed = straight;
  killed.out = temp_dir(tag);
  killed.stop_at = 7;
  {
    TrainRun b(killed);
    b.run();
  }
  std::unique_ptr<TrainRun> resumed = TrainRun::resume(killed.out, quiet);
  CHECK(resumed->config().arch == straight.arch);
  CHECK(resumed->config().res_blocks == straight.res_blocks);
  CHECK(resumed->config().precision == straight.precision);
  resumed->run();
  REQUIRE(resumed->step() == done.step());
  REQUIRE(resumed->params().size() == done.params().size());
  CHECK(std::memcmp(resumed->params().data(), done.params().data(),
                    done.params().size() * sizeof(float)) == 0);
  return resumed;
}

// Mean bits/dim of `images` by libflowrt (C API, reference backend) on the model file at `path`.
double libflowrt_mean_bpd(const std::string &path, const ImageBatch &images) {
  flowrt_model *model = nullptr;
  REQUIRE(flowrt_model_open(path.c_str(), &model) == FLOWRT_OK);
  flowrt_session_options *opt = nullptr;
  REQUIRE(flowrt_session_options_create(&opt) == FLOWRT_OK);
  REQUIRE(flowrt_session_options_set_backend(opt, FLOWRT_BACKEND_REF) == FLOWRT_OK);
  flowrt_session *session = nullptr;
  REQUIRE(flowrt_session_create(model, opt, &session) == FLOWRT_OK);
  std::vector<double> bpd(static_cast<size_t>(images.n));
  REQUIRE(flowrt_encode(session, static_cast<size_t>(images.n), images.pixels.data(), nullptr,
                        bpd.data()) == FLOWRT_OK);
  flowrt_session_free(session);
  flowrt_session_options_free(opt);
  flowrt_model_free(model);
  double mean = 0;
  for (double v : bpd) mean += v / static_cast<double>(images.n);
  return mean;
}

std::vector<uint8_t> file_bytes(const std::string &path) {
  std::ifstream f(path, std::ios::binary);
  return std::vector<uint8_t>(std::istreambuf_iterator<char>(f), {});
}

}  // namespace

TEST_CASE("trainer end to end: Fashion-MNIST slice -> export -> libflowrt scores it the same") {
  if (!fs::exists(std::string(kFashionDir) + "/t10k-images-idx3-ubyte.gz")) {
    MESSAGE("skipped: Fashion-MNIST is not installed at " << kFashionDir);
    return;
  }
  RunConfig c = tiny_run("fashion-mnist", temp_dir("e2e"));
  c.limit_train = 128, c.limit_test = 32;
  c.batch = 16, c.steps = 8, c.eval_every = 4, c.eval_images = 0;
  TrainRun run(c);
  const double initial_bpd = run.evaluate(0);
  run.run();
  CHECK(run.step() == 8);
  const double trainer_bpd = run.evaluate(0);
  CHECK(std::isfinite(trainer_bpd));
  CHECK(trainer_bpd < initial_bpd - 0.5);  // trained, not the initial model
  // The run wrote its outputs.
  for (const char *f : {"/model.flow", "/metrics.csv", "/curve.svg"}) CHECK(fs::exists(c.out + f));
  // libflowrt (C API, reference backend) on the exported weights and the same test images.
  const std::string path = c.out + "/final.flow";
  save_flow(run.export_graph(), path);
  flowrt_model *model = nullptr;
  REQUIRE(flowrt_model_open(path.c_str(), &model) == FLOWRT_OK);
  flowrt_session_options *opt = nullptr;
  REQUIRE(flowrt_session_options_create(&opt) == FLOWRT_OK);
  REQUIRE(flowrt_session_options_set_backend(opt, FLOWRT_BACKEND_REF) == FLOWRT_OK);
  flowrt_session *session = nullptr;
  REQUIRE(flowrt_session_create(model, opt, &session) == FLOWRT_OK);
  const ImageBatch &test = run.data().test.images;
  std::vector<double> bpd(static_cast<size_t>(test.n));
  REQUIRE(flowrt_encode(session, static_cast<size_t>(test.n), test.pixels.data(), nullptr,
                        bpd.data()) == FLOWRT_OK);
  double mean = 0;
  for (double v : bpd) mean += v / static_cast<double>(test.n);
  CHECK(std::fabs(mean - trainer_bpd) <= 1e-4);
  // The dequantised estimate: reproducible for a seed, different noise for another seed, and not
  // the bin-centre number; without noise the evaluation is the trainer's own.
  {
    auto compute = train::make_train_compute(run.export_graph(), train::Device::Cpu);
    const train::Dataset &ts = run.data().test;
    const int nb = run.export_graph().image.n_bits;
    const double centre = train::evaluate_bits_per_dim(*compute, ts, nb, 16);
    const double deq_a = train::evaluate_bits_per_dim(*compute, ts, nb, 16, 0, 2, 5);
    const double deq_b = train::evaluate_bits_per_dim(*compute, ts, nb, 16, 0, 2, 5);
    const double deq_c = train::evaluate_bits_per_dim(*compute, ts, nb, 16, 0, 2, 6);
    CHECK(std::fabs(centre - trainer_bpd) <= 1e-4);
    CHECK(deq_a == deq_b);
    CHECK(deq_a != deq_c);
    CHECK(deq_a != centre);
    MESSAGE("bin centres " << centre << ", dequantised " << deq_a << " bits/dim");
  }
  // model.flow carries its provenance.
  flowrt_model *best = nullptr;
  REQUIRE(flowrt_model_open((c.out + "/model.flow").c_str(), &best) == FLOWRT_OK);
  char value[64];
  size_t length = 0;
  REQUIRE(flowrt_model_metadata(best, "dataset", value, sizeof value, &length) == FLOWRT_OK);
  CHECK(std::string(value) == "fashion-mnist");
  REQUIRE(flowrt_model_metadata(best, "test_bits_per_dim", value, sizeof value, &length) ==
          FLOWRT_OK);
  CHECK(std::stod(value) > 0);
  flowrt_model_free(best);
  flowrt_session_free(session);
  flowrt_session_options_free(opt);
  flowrt_model_free(model);
}

TEST_CASE("trainer resume: N steps straight == N/2, kill, resume N/2 (bitwise), EMA included") {
  const std::string data = png_folder(40);
  RunConfig straight = tiny_run(data, temp_dir("straight"));
  straight.ema = 0.9;
  TrainRun a(straight);
  a.run();
  REQUIRE(a.step() == 12);

  RunConfig killed = straight;
  killed.out = temp_dir("killed");
  killed.stop_at = 7;  // between checkpoints: the run writes one when it stops
  {
    TrainRun b(killed);
    b.run();
    REQUIRE(b.step() == 7);
  }
  std::unique_ptr<TrainRun> resumed = TrainRun::resume(killed.out, quiet);
  CHECK(resumed->step() == 7);
  resumed->run();
  REQUIRE(resumed->step() == 12);
  REQUIRE(resumed->params().size() == a.params().size());
  CHECK(std::memcmp(resumed->params().data(), a.params().data(),
                    a.params().size() * sizeof(float)) == 0);
  // The exported (EMA) models are identical too.
  CHECK(write_flow(resumed->export_graph()) == write_flow(a.export_graph()));
  // metrics.csv has no duplicated rows after the resume.
  std::ifstream csv(killed.out + "/metrics.csv");
  std::string line;
  std::vector<std::string> steps;
  std::getline(csv, line);
  while (std::getline(csv, line)) steps.push_back(line.substr(0, line.find(',')));
  CHECK(steps == std::vector<std::string>{"3", "6", "7", "9", "12"});
}

TEST_CASE("trainer --arch realnvp|nice: trains, resumes bitwise (batch norm statistics too)") {
  const std::string data = png_folder(40);
  // RealNVP with its residual nets and with the plain ones.
  for (const auto &[arch, blocks] :
       {std::pair<const char *, int>{"realnvp", 1}, {"realnvp", 0}, {"nice", 0}}) {
    CAPTURE(arch);
    CAPTURE(blocks);
    RunConfig straight =
        tiny_run(data, temp_dir(std::string("family-") + arch + std::to_string(blocks)));
    straight.arch = arch;
    straight.levels = straight.arch == "nice" ? 1 : 2;
    straight.depth = 1;
    straight.width = 8;
    straight.res_blocks = blocks;
    TrainRun a(straight);
    const double initial = a.evaluate(0);
    a.run();
    REQUIRE(a.step() == 12);
    const double trained = a.evaluate(0);
    CHECK(trained < initial);
    // The model file holds only format layers (a batch norm is written as its actnorm), and
    // libflowrt scores it as the trainer evaluates.
    const std::string path = straight.out + "/final.flow";
    save_flow(a.export_graph(), path);
    const Graph written = read_flow(map_model_file(path));
    for (const Layer &l : written.layers) CHECK_FALSE(std::holds_alternative<BatchNormLayer>(l.op));
    CHECK(std::fabs(libflowrt_mean_bpd(path, a.data().test.images) - trained) <= 1e-5);
    if (blocks > 0) CHECK(written.format_minor == 2);

    const std::unique_ptr<TrainRun> resumed =
        kill_and_resume(straight, std::string("family-killed-") + arch + std::to_string(blocks), a);
    CHECK(write_flow(resumed->export_graph()) == write_flow(a.export_graph()));
  }
}

TEST_CASE("trainer --precision bf16 on the CPU: trains, resumes bitwise, exports fp32 weights") {
  std::string why;
  if (!train::gemm_bf16_available(&why)) {
    MESSAGE("skipped: bf16 products " << why);
    return;
  }
  const std::string data = png_folder(40);
  RunConfig straight = tiny_run(data, temp_dir("bf16"));
  straight.width = 32;
  straight.precision = "bf16";
  TrainRun a(straight);
  const double initial = a.evaluate(0);
  a.run();
  REQUIRE(a.step() == 12);
  const double trained = a.evaluate(0);
  CHECK(trained < initial);
  // The exported weights are the fp32 masters: libflowrt (fp32) scores them within bf16's
  // product error of the trainer's bf16 evaluation.
  const std::string path = straight.out + "/final.flow";
  save_flow(a.export_graph(), path);
  const double runtime = libflowrt_mean_bpd(path, a.data().test.images);
  CHECK(runtime != trained);
  CHECK(std::fabs(runtime - trained) <= 5e-3 * trained);
  kill_and_resume(straight, "bf16-killed", a);
}

TEST_CASE("trainer NaN guard with batch norm: a non-finite batch leaves the running averages") {
  const std::string data = png_folder(12);
  RunConfig c = tiny_run(data, temp_dir("nan-bn"));
  c.arch = "realnvp", c.levels = 2, c.depth = 1, c.width = 8;
  TrainRun run(c);
  const std::vector<float> before = run.params();
  const int64_t d = run.data().train.images.image_size();
  std::vector<float> x(static_cast<size_t>(c.batch * d), 0.1f);
  for (size_t k = 0; k < x.size(); ++k) x[k] = static_cast<float>(k % 7) / 7.f - 0.5f;
  x[5] = std::numeric_limits<float>::quiet_NaN();
  CHECK_FALSE(run.train_step(x.data(), nullptr, c.batch).applied);
  CHECK(std::memcmp(before.data(), run.params().data(), before.size() * sizeof(float)) == 0);
  x[5] = 0.2f;
  CHECK(run.train_step(x.data(), nullptr, c.batch).applied);
  CHECK(std::memcmp(before.data(), run.params().data(), before.size() * sizeof(float)) != 0);
}

// Runs `flowtrain ARGS` and returns its exit status and what it printed (stdout and stderr).
std::pair<int, std::string> flowtrain(const std::string &args) {
  const std::string cmd = std::string("'") + FLOWRT_FLOWTRAIN_CLI + "' " + args + " 2>&1";
  FILE *p = ::popen(cmd.c_str(), "r");
  REQUIRE(p != nullptr);
  std::string out;
  char buf[4096];
  for (size_t n; (n = std::fread(buf, 1, sizeof buf, p)) > 0;) out.append(buf, n);
  const int status = ::pclose(p);
  return {WIFEXITED(status) ? WEXITSTATUS(status) : -1, out};
}

TEST_CASE("flowtrain train --arch: Glow's options and --dist are refused for other families") {
  const std::string data = png_folder(20);  // 2 of them test images
  const std::string base =
      "train --data " + data + " --batch 4 --steps 1 --out " + temp_dir("cli") + " ";
  struct Case {
    std::string args, message;
  };
  for (const Case &c :
       {Case{"--arch nice --coupling additive", "--coupling is Glow's option: --arch nice"},
        Case{"--arch realnvp --permutation reverse", "--permutation is Glow's option"},
        Case{"--arch nice --levels 2", "NICE has a single level (got --levels 2)"},
        Case{"--arch maf", "unknown architecture family 'maf'"},
        Case{"--arch realnvp --dist mpi", "RealNVP's batch norms keep running averages"}}) {
    CAPTURE(c.args);
    const auto [status, out] = flowtrain(base + c.args);
    CHECK(status == 2);
    CHECK(out.find(c.message) != std::string::npos);
  }
  // The family's own size defaults; the banner names it.
  const auto [status, out] = flowtrain(base + "--arch nice --width 8 --depth 2 --quiet");
  CHECK(status == 0);
  CHECK(out.find("flowtrain: nice, ") != std::string::npos);
  // flowtrain bench builds the families' defaults at Fashion-MNIST's size.
  for (const char *arch : {"realnvp", "nice"}) {
    CAPTURE(arch);
    const auto [bench_status, bench_out] = flowtrain(std::string("bench --arch ") + arch +
                                                     " --batch 2 --warmup 0 --reps 1 --min-time 0");
    CHECK(bench_status == 0);
    CHECK(bench_out.find(std::string("flowtrain bench: ") + arch + " on cpu") != std::string::npos);
  }
}

TEST_CASE("trainer settings: the family is saved; a checkpoint without it is a Glow run") {
  RunConfig c;
  c.arch = "nice";
  CHECK(RunConfig::from_kv(c.to_kv()).arch == "nice");
  std::vector<std::pair<std::string, std::string>> kv;
  for (const auto &e : c.to_kv())
    if (e.first != "arch") kv.push_back(e);
  CHECK(RunConfig::from_kv(kv).arch == "glow");
  kv.emplace_back("arch", "pixelcnn");
  CHECK_THROWS_WITH_AS(RunConfig::from_kv(kv), doctest::Contains("unknown arch 'pixelcnn'"), Error);
}

TEST_CASE("trainer checkpoints: the last 3 are kept, complete, and damage is detected") {
  const std::string data = png_folder(24);
  RunConfig c = tiny_run(data, temp_dir("ckpt"));
  c.steps = 15;
  TrainRun run(c);
  run.run();
  const std::vector<std::string> files = train::list_checkpoints(c.out);
  REQUIRE(files.size() == 3);
  CHECK(files.back() == train::checkpoint_path(c.out, 15));
  for (const std::string &f : files) {
    const train::Checkpoint ck = train::read_checkpoint(f);  // a complete file loads
    CHECK(ck.params.size() == run.params().size());
  }
  // Nothing else is left in the directory (no temporary files from the atomic writes).
  for (const auto &e : fs::directory_iterator(c.out)) {
    const std::string n = e.path().filename().string();
    INFO(n);
    CHECK((n.rfind("checkpoint-", 0) == 0 || n == "model.flow" || n == "metrics.csv" ||
           n == "curve.svg"));
  }
  // A crash mid-write can only leave a temporary file; a damaged checkpoint is rejected by name.
  const std::vector<uint8_t> good = file_bytes(files.back());
  const std::string cut = c.out + "/checkpoint-99999998.ckpt";
  std::ofstream(cut, std::ios::binary)
      .write(reinterpret_cast<const char *>(good.data()),
             static_cast<std::streamsize>(good.size() / 2));
  CHECK_THROWS_WITH_AS(train::read_checkpoint(cut), doctest::Contains("checkpoint-99999998"),
                       Error);
  std::vector<uint8_t> flipped = good;
  flipped[flipped.size() / 2] ^= 0x40;
  const std::string bad = c.out + "/checkpoint-99999999.ckpt";
  std::ofstream(bad, std::ios::binary)
      .write(reinterpret_cast<const char *>(flipped.data()),
             static_cast<std::streamsize>(flipped.size()));
  CHECK_THROWS_WITH_AS(train::read_checkpoint(bad), doctest::Contains("checksum"), Error);
  // Resume skips the damaged newest files and continues from step 15.
  std::unique_ptr<TrainRun> r = TrainRun::resume(c.out, quiet);
  CHECK(r->step() == 15);
}

TEST_CASE("trainer intervals: checkpoints, sample grids and log lines each keep their own") {
  // Intervals that do not divide each other: every checkpoint and grid comes at its own step.
  const std::string data = png_folder(24);
  RunConfig c = tiny_run(data, temp_dir("intervals"));
  c.steps = 13;
  c.log_every = 5, c.eval_every = 10, c.checkpoint_every = 4, c.sample_every = 3;
  c.sample_count = 4, c.keep_checkpoints = 100;
  TrainRun run(c);
  run.run();
  std::vector<std::string> ckpts;
  for (const std::string &f : train::list_checkpoints(c.out)) ckpts.push_back(f);
  CHECK(ckpts == std::vector<std::string>{
                     train::checkpoint_path(c.out, 4), train::checkpoint_path(c.out, 8),
                     train::checkpoint_path(c.out, 12), train::checkpoint_path(c.out, 13)});
  for (int step : {3, 6, 9, 12, 13}) {
    CAPTURE(step);
    CHECK(fs::exists(c.out + "/samples_step" + std::to_string(step) + "_t0.7.png"));
  }
  CHECK(!fs::exists(c.out + "/samples_step5_t0.7.png"));
  std::ifstream csv(c.out + "/metrics.csv");
  std::string line;
  std::vector<std::string> steps;
  std::getline(csv, line);
  while (std::getline(csv, line)) steps.push_back(line.substr(0, line.find(',')));
  CHECK(steps == std::vector<std::string>{"5", "10", "13"});
}

namespace {

// A filesystem of its own that can be filled: a small tmpfs on `dir` (needs root; the test is
// skipped otherwise), unmounted at the end.
struct SmallDisk {
  SmallDisk(const std::string &d, const std::string &size) : dir(d) {
    mounted = ::mount("tmpfs", dir.c_str(), "tmpfs", 0, ("size=" + size).c_str()) == 0;
    if (!mounted) MESSAGE("skipped: cannot mount a tmpfs here (" << std::strerror(errno) << ")");
  }
  ~SmallDisk() {
    if (mounted) ::umount2(dir.c_str(), MNT_DETACH);
  }
  SmallDisk(const SmallDisk &) = delete;
  SmallDisk &operator=(const SmallDisk &) = delete;
  std::string dir;
  bool mounted = false;
};

// Writes `path` in blocks of `block` bytes until the filesystem is full.
void fill_disk(const std::string &path, size_t block) {
  std::FILE *f = std::fopen(path.c_str(), "wb");
  REQUIRE(f != nullptr);
  const std::vector<char> bytes(block, 'x');
  while (std::fwrite(bytes.data(), 1, bytes.size(), f) == bytes.size() && std::fflush(f) == 0) {
  }
  std::fclose(f);
}

}  // namespace

TEST_CASE("trainer disk full: the write fails by name, earlier files stay, the run resumes") {
  const std::string mnt = temp_dir("full");
  const SmallDisk disk(mnt, "8m");
  if (!disk.mounted) return;
  const std::string data = png_folder(24);
  RunConfig c = tiny_run(data, mnt + "/run");
  c.steps = 12, c.log_every = 3, c.eval_every = 6, c.checkpoint_every = 3, c.keep_checkpoints = 10;
  c.stop_at = 6;
  TrainRun(c).run();
  const std::string ckpt6 = train::checkpoint_path(c.out, 6);
  const std::vector<uint8_t> ckpt6_bytes = file_bytes(ckpt6),
                             model_bytes = file_bytes(c.out + "/model.flow");
  REQUIRE(!ckpt6_bytes.empty());
  // Fill the disk, then give back less than a checkpoint needs (the metrics still fit).
  const std::string filler = mnt + "/filler";
  fill_disk(filler, 1 << 16);
  REQUIRE(::truncate(filler.c_str(),
                     fs::file_size(filler) - static_cast<off_t>(ckpt6_bytes.size() / 2)) == 0);
  bool failed = false;
  try {
    TrainRun::resume(c.out, quiet)->run();
  } catch (const Error &e) {
    failed = true;
    INFO(e.what());
    CHECK(e.status() == FLOWRT_IO_ERROR);
    CHECK(std::string(e.what()).find(train::checkpoint_path(c.out, 9)) != std::string::npos);
    CHECK(std::string(e.what()).find(std::strerror(ENOSPC)) != std::string::npos);
  }
  CHECK(failed);
  // What was written before is intact and loads; no temporary file is left behind.
  CHECK(file_bytes(ckpt6) == ckpt6_bytes);
  CHECK(file_bytes(c.out + "/model.flow") == model_bytes);
  CHECK(train::read_checkpoint(ckpt6).step == 6);
  CHECK(read_flow(map_model_file(c.out + "/model.flow")).layers.size() > 0);
  for (const auto &e : fs::directory_iterator(c.out))
    CHECK(e.path().filename().string().find(".tmp.") == std::string::npos);
  // Space back: the run resumes and ends where an uninterrupted run ends.
  fs::remove(filler);
  auto resumed = TrainRun::resume(c.out, quiet);
  resumed->run();
  RunConfig straight = tiny_run(data, temp_dir("full-ref"));
  straight.steps = 12, straight.log_every = 3, straight.eval_every = 6;
  straight.checkpoint_every = 3, straight.keep_checkpoints = 10;
  TrainRun ref(straight);
  ref.run();
  CHECK(resumed->params() == ref.params());
}

TEST_CASE("disk full: a model export and a PNG fail by name and leave the old files intact") {
  const std::string mnt = temp_dir("full-export");
  const SmallDisk disk(mnt, "4m");
  if (!disk.mounted) return;
  const std::string data = png_folder(12);
  RunConfig c = tiny_run(data, temp_dir("export-src"));
  TrainRun run(c);
  const Graph g = run.export_graph();
  const std::string model = mnt + "/model.flow", png = mnt + "/sample.png";
  save_flow(g, model);
  ImageBatch image{1, 3, 16, 16, std::vector<uint8_t>(768)};
  for (size_t k = 0; k < image.pixels.size(); ++k) image.pixels[k] = static_cast<uint8_t>(k * 7);
  write_png(png, image);
  const std::vector<uint8_t> model_before = file_bytes(model), png_before = file_bytes(png);
  fill_disk(mnt + "/filler", 1 << 12);  // to the last block
  for (const std::string &path : {model, png}) {
    INFO(path);
    bool failed = false;
    try {
      if (path == model)
        save_flow(g, path);
      else
        write_png(path, make_grid(ImageBatch{4, 3, 16, 16, std::vector<uint8_t>(4 * 768, 9)}, 2));
    } catch (const Error &e) {
      failed = true;
      CHECK(e.status() == FLOWRT_IO_ERROR);
      CHECK(std::string(e.what()).find(path) != std::string::npos);
      CHECK(std::string(e.what()).find(std::strerror(ENOSPC)) != std::string::npos);
    }
    CHECK(failed);
  }
  CHECK(file_bytes(model) == model_before);
  CHECK(file_bytes(png) == png_before);
  CHECK(read_flow(map_model_file(model)).layers.size() == g.layers.size());
  CHECK(read_png(png).pixels == image.pixels);
  for (const auto &e : fs::directory_iterator(mnt))
    CHECK(e.path().filename().string().find(".tmp.") == std::string::npos);
}

TEST_CASE("trainer NaN guard: a non-finite batch skips the step and leaves the weights alone") {
  const std::string data = png_folder(12);
  RunConfig c = tiny_run(data, temp_dir("nan"));
  TrainRun run(c);
  const std::vector<float> before = run.params();
  const int64_t d = run.data().train.images.image_size();
  std::vector<float> x(static_cast<size_t>(c.batch * d), 0.1f);
  x[5] = std::numeric_limits<float>::quiet_NaN();
  const TrainRun::StepResult r = run.train_step(x.data(), nullptr, c.batch);
  CHECK_FALSE(r.applied);
  CHECK(run.skipped_steps() == 1);
  CHECK(std::memcmp(before.data(), run.params().data(), before.size() * sizeof(float)) == 0);
  // A finite batch is applied and changes the weights.
  x[5] = 0.2f;
  CHECK(run.train_step(x.data(), nullptr, c.batch).applied);
  CHECK(std::memcmp(before.data(), run.params().data(), before.size() * sizeof(float)) != 0);
}

TEST_CASE("trainer data: missing and malformed files are named, CIFAR-10 records parse") {
  train::DataRequest r;
  r.data = "fashion-mnist";
  r.data_dir = temp_dir("empty");
  CHECK_THROWS_WITH_AS(train::load_data(r), doctest::Contains("train-images-idx3-ubyte"), Error);
  r.data = "mnist";
  r.data_dir.clear();
  CHECK_THROWS_WITH_AS(train::load_data(r), doctest::Contains("--data-dir"), Error);

  const std::string dir = temp_dir("cifar");
  r.data = "cifar10";
  r.data_dir = dir;
  r.channels = 3;
  auto write_batch = [&](const std::string &name, int records, uint8_t label0) {
    std::vector<uint8_t> bytes;
    for (int i = 0; i < records; ++i) {
      bytes.push_back(static_cast<uint8_t>((label0 + i) % 10));
      for (int k = 0; k < 3072; ++k) bytes.push_back(static_cast<uint8_t>(k * 7 + i));
    }
    std::ofstream(dir + "/" + name, std::ios::binary)
        .write(reinterpret_cast<const char *>(bytes.data()),
               static_cast<std::streamsize>(bytes.size()));
  };
  for (int b = 1; b <= 5; ++b) write_batch("data_batch_" + std::to_string(b) + ".bin", 2, b);
  write_batch("test_batch.bin", 3, 0);
  const train::DataSplit s = train::load_data(r);
  CHECK(s.train.size() == 10);
  CHECK(s.test.size() == 3);
  CHECK(s.train.labels[0] == 1);
  CHECK(s.test.images.c == 3);
  CHECK(s.test.images.pixels[1] == 7);  // second byte of the first image's red plane
  std::ofstream(dir + "/test_batch.bin", std::ios::binary).write("short", 5);
  CHECK_THROWS_WITH_AS(train::load_data(r), doctest::Contains("test_batch.bin"), Error);
}

TEST_CASE("trainer data: PNG folders are centre-cropped and box-filtered to the model size") {
  ImageBatch wide{1, 3, 4, 8, std::vector<uint8_t>(96, 0)};
  for (int64_t y = 0; y < 4; ++y)
    for (int64_t x = 2; x < 6; ++x) wide.pixels[y * 8 + x] = 200;  // red plane, centre square
  const ImageBatch out = train::resize_image(wide, 1, 2, 2);
  REQUIRE(out.pixels.size() == 4);
  // The crop keeps the centre 4x4 (all 200 in red): grey = 0.299 * 200.
  for (uint8_t p : out.pixels) CHECK(p == 60);
}

#ifdef FLOWRT_TRAIN_CUDA
// `flowtrain train --device cuda` end to end: the run trains like the CPU run (same data, seed
// and schedule), its evaluation and export agree, and a killed GPU run resumes to the same
// weights. Suite "cuda": skipped without a GPU.
TEST_CASE("cuda trainer end to end: run, evaluate, checkpoint, resume, like the CPU run" *
          doctest::test_suite("cuda")) {
  const std::string data = png_folder(40);
  RunConfig cpu_cfg = tiny_run(data, temp_dir("cpu"));
  cpu_cfg.ema = 0.9;
  RunConfig gpu_cfg = cpu_cfg;
  gpu_cfg.out = temp_dir("gpu");
  gpu_cfg.device = "cuda";
  TrainRun cpu(cpu_cfg), gpu(gpu_cfg);
  const std::vector<float> p0 = cpu.params();
  cpu.run();
  gpu.run();
  REQUIRE(gpu.step() == 12);
  CHECK(gpu.skipped_steps() == 0);
  double diff = 0, moved = 0;
  for (size_t k = 0; k < p0.size(); ++k) {
    diff += std::pow(double(gpu.params()[k]) - cpu.params()[k], 2);
    moved += std::pow(double(cpu.params()[k]) - p0[k], 2);
  }
  MESSAGE("GPU vs CPU weights after 12 steps: " << std::sqrt(diff / moved)
                                                << " of the distance trained");
  CHECK(std::sqrt(diff / moved) <= 2e-2);
  const double bc = cpu.evaluate(0), bg = gpu.evaluate(0);
  CHECK(std::fabs(bg - bc) <= 2e-3 * std::fabs(bc));
  CHECK(fs::exists(gpu_cfg.out + "/model.flow"));

  RunConfig killed = gpu_cfg;
  killed.out = temp_dir("gpu-killed");
  killed.stop_at = 7;
  {
    TrainRun b(killed);
    b.run();
    REQUIRE(b.step() == 7);
  }
  std::unique_ptr<TrainRun> resumed = TrainRun::resume(killed.out, quiet);
  resumed->run();
  REQUIRE(resumed->step() == 12);
  double worst = 0;
  for (size_t k = 0; k < p0.size(); ++k)
    worst = std::max(worst, std::fabs(double(resumed->params()[k]) - gpu.params()[k]));
  CHECK(worst <= 1e-6);
}
#endif

}  // namespace flowrt

TEST_SUITE_END();
