// `flowrt ood` end to end on small `flowrt init` models: constant images against textured ones,
// the table and the JSON produced and sane, bad arguments and bad inputs refused with the right
// exit code, and no output file left behind by a failed run.
#define DOCTEST_CONFIG_IMPLEMENT_WITH_MAIN
#include <doctest/doctest.h>
#include <sys/stat.h>
#include <sys/wait.h>

#include <cstdio>
#include <cstdlib>
#include <fstream>
#include <random>
#include <sstream>
#include <string>
#include <vector>

#include "image_io.hpp"

namespace {

const std::string kCli = FLOWRT_CLI;
const std::string kDir = OOD_WORK_DIR;

struct Run {
  int rc;
  std::string out, err;
};

std::string slurp(const std::string &path) {
  std::ifstream f(path, std::ios::binary);
  std::stringstream ss;
  ss << f.rdbuf();
  return ss.str();
}

bool exists(const std::string &path) {
  struct stat st {};
  return ::stat(path.c_str(), &st) == 0;
}

Run run(const std::string &args) {
  const std::string o = kDir + "/stdout.txt", e = kDir + "/stderr.txt";
  const std::string cmd = kCli + " " + args + " >" + o + " 2>" + e;
  const int status = std::system(cmd.c_str());
  Run r{WIFEXITED(status) ? WEXITSTATUS(status) : -1, slurp(o), slurp(e)};
  return r;
}

void write_idx(const std::string &path, const std::vector<std::vector<uint8_t>> &images, int h,
               int w) {
  std::ofstream f(path, std::ios::binary);
  const auto be32 = [&](uint32_t v) {
    const char b[4] = {char(v >> 24), char(v >> 16), char(v >> 8), char(v)};
    f.write(b, 4);
  };
  be32(0x803);
  be32(static_cast<uint32_t>(images.size()));
  be32(h);
  be32(w);
  for (const auto &im : images) f.write(reinterpret_cast<const char *>(im.data()), im.size());
}

// "Object" images: a dark background and a textured bright rectangle of random size.
std::vector<std::vector<uint8_t>> textured(int n, int side, uint32_t seed) {
  std::mt19937 rng(seed);
  std::vector<std::vector<uint8_t>> out;
  for (int i = 0; i < n; ++i) {
    std::vector<uint8_t> im(side * side, 0);
    const int y0 = 2 + rng() % 6, x0 = 2 + rng() % 6, y1 = side - 2 - rng() % 6,
              x1 = side - 2 - rng() % 6;
    for (int y = y0; y < y1; ++y)
      for (int x = x0; x < x1; ++x) im[y * side + x] = static_cast<uint8_t>(150 + rng() % 106);
    out.push_back(im);
  }
  return out;
}

// Constant mid-grey images (the values 120..135): under an untrained flow (orthogonal 1x1
// convolutions, identity couplings, standard normal priors) they are the most likely inputs.
std::vector<std::vector<uint8_t>> constant(int n, int side) {
  std::vector<std::vector<uint8_t>> out;
  for (int i = 0; i < n; ++i) out.push_back(std::vector<uint8_t>(side * side, 120 + i % 16));
  return out;
}

// The number after `"key": ` in the first object named `section` of a JSON text (after the
// text `after` when given).
double json_number(const std::string &j, const std::string &section, const std::string &key,
                   const std::string &after = "") {
  size_t at = after.empty() ? 0 : j.find(after);
  REQUIRE(at != std::string::npos);
  at = j.find("\"" + section + "\": {", at);
  REQUIRE_MESSAGE(at != std::string::npos, section);
  at = j.find("\"" + key + "\": ", at);
  REQUIRE_MESSAGE(at != std::string::npos, key);
  return std::strtod(j.c_str() + at + key.size() + 4, nullptr);
}
// A metric of one score: in the "scores" object.
double metric(const std::string &j, const std::string &score, const std::string &key) {
  return json_number(j, score, key, "\"scores\": {");
}

struct Fixture {
  std::string model = kDir + "/m.flow", bg = kDir + "/bg.flow", big = kDir + "/big.flow";
  std::string real = kDir + "/real.idx", train = kDir + "/train.idx", flat = kDir + "/const.idx";
  std::string large = kDir + "/large.idx", garbage = kDir + "/garbage.idx";
  std::string few = kDir + "/few.idx", pngs = kDir + "/pngs", empty = kDir + "/empty";
  Fixture() {
    static bool done = false;
    if (done) return;
    REQUIRE(std::system(
                ("rm -rf " + kDir + " && mkdir -p " + kDir + " " + pngs + " " + empty).c_str()) ==
            0);
    REQUIRE(run("init --image 1x28x28 --levels 2 --depth 2 --width 16 --seed 3 -o " + model).rc ==
            0);
    REQUIRE(
        run("init --image 1x28x28 --levels 1 --depth 1 --width 8 --random-nets --seed 4 -o " + bg)
            .rc == 0);
    REQUIRE(run("init --image 1x32x32 --levels 3 --depth 1 --width 8 --seed 5 -o " + big).rc == 0);
    write_idx(real, textured(60, 28, 1), 28, 28);
    write_idx(train, textured(40, 28, 2), 28, 28);
    write_idx(flat, constant(30, 28), 28, 28);
    write_idx(large, textured(4, 40, 3), 40, 40);
    write_idx(few, constant(2, 28), 28, 28);
    std::ofstream(garbage) << "this is not an IDX file\n";
    const auto c = constant(5, 28);
    for (int i = 0; i < 5; ++i) {
      flowrt::ImageBatch b{1, 1, 28, 28, c[i]};
      flowrt::write_png(pngs + "/c" + std::to_string(i) + ".png", b);
    }
    done = true;
  }
};

}  // namespace

TEST_CASE_FIXTURE(Fixture, "constant images against textured ones: table, JSON and plot") {
  const std::string json = kDir + "/r.json", svg = kDir + "/r.svg";
  const Run r = run("ood " + model + " --in " + real + " --out " + flat + " --train " + train +
                    " --batch-size 5 --background " + bg + " --complexity png --json " + json +
                    " --plot " + svg + " --backend ref --threads 1");
  INFO(r.out, r.err);
  REQUIRE(r.rc == 0);
  for (const char *row : {"bits/dim ", "typicality (K=5, batches)", "typicality (K=1, per image)",
                          "likelihood ratio (background)", "complexity-corrected (PNG)", "AUROC",
                          "AUPR", "FPR@95%TPR"})
    CHECK_MESSAGE(r.out.find(row) != std::string::npos, row);
  const std::string j = slurp(json);
  for (const char *key : {"bpd", "typicality", "typicality_k1", "likelihood_ratio", "complexity"})
    for (const char *m : {"auroc", "aupr", "fpr_at_95_tpr"}) {
      const double v = metric(j, key, m);
      CHECK_MESSAGE((v >= 0 && v <= 1), key, " ", m, " = ", v);
    }
  // Raw likelihood fails here by construction (the constant images are the most likely inputs
  // of an untrained flow), and the typicality test, two-sided, catches them.
  CHECK(metric(j, "bpd", "auroc") < 0.05);
  CHECK(metric(j, "typicality", "auroc") > 0.95);
  CHECK(metric(j, "typicality", "n_in") == 12);  // 60 images in batches of 5
  CHECK(metric(j, "typicality", "n_out") == 6);
  CHECK(metric(j, "bpd", "n_out") == 30);
  // The constant images compress to almost nothing.
  CHECK(json_number(j, "complexity_png_bpd", "mean") > 0);
  CHECK(j.find("\"per_image\"") != std::string::npos);
  const std::string plot = slurp(svg);
  CHECK(plot.rfind("<svg", 0) == 0);
  CHECK(plot.find("</svg>") != std::string::npos);
  CHECK(plot.find("polyline") != std::string::npos);

  // The roles swapped: the bits/dim AUROC mirrors.
  const Run s = run("ood " + model + " --in " + flat + " --out " + real + " --json " + json);
  REQUIRE(s.rc == 0);
  CHECK(metric(slurp(json), "bpd", "auroc") > 0.95);
}

TEST_CASE_FIXTURE(Fixture, "PNG directories; a background model of another size") {
  const std::string json = kDir + "/p.json";
  const Run r = run("ood " + model + " --in " + real + " --out " + pngs + " --background " + big +
                    " --json " + json);
  INFO(r.out, r.err);
  REQUIRE(r.rc == 0);
  CHECK(metric(slurp(json), "bpd", "n_out") == 5);
  CHECK(r.out.find("another image size") != std::string::npos);
  // --limit takes the first images of each set.
  const Run l =
      run("ood " + model + " --in " + real + " --out " + pngs + " --limit 3 --json " + json);
  REQUIRE(l.rc == 0);
  CHECK(metric(slurp(json), "bpd", "n_in") == 3);
  CHECK(metric(slurp(json), "bpd", "n_out") == 3);
}

TEST_CASE_FIXTURE(Fixture, "bad arguments: exit 2, a clear message, no output written") {
  const std::string json = kDir + "/bad.json";
  struct Case {
    std::string args, message;
    int rc;
  };
  const std::string base = "ood " + model + " --in " + real;
  const std::vector<Case> cases = {
      {"ood", "missing the model", 2},
      {base, "--in and --out are required", 2},
      {base + " --out " + flat + " extra", "unexpected argument 'extra'", 2},
      {base + " --out " + flat + " --batch-size 3", "needs --train", 2},
      {base + " --out " + flat + " --train " + train + " --batch-size 0", "out of range", 2},
      {base + " --out " + flat + " --complexity zip", "not a known compressor", 2},
      {base + " --out " + flat + " --plot " + kDir + "/x.png", "must end in .svg", 2},
      {base + " --out " + flat + " --bogus 1", "unknown option '--bogus'", 2},
      {base + " --out " + few + " --train " + train + " --batch-size 5", "fewer than one batch", 2},
      {base + " --out " + large, "images are 1x40x40, the model expects 1x28x28", 2},
      {base + " --out " + garbage, "not an IDX image file", 2},
      {base + " --out " + empty, "no .png files", 2},
      {base + " --out " + kDir + "/missing.idx", "missing.idx", 1},
      {"ood " + kDir + "/missing.flow --in " + real + " --out " + flat, "missing.flow", 1},
      {base + " --out " + flat + " --background " + garbage, "garbage.idx", 1},
  };
  for (const Case &c : cases) {
    std::remove(json.c_str());
    const Run r = run(c.args + " --json " + json);
    INFO(c.args, "\n", r.err);
    CHECK(r.rc == c.rc);
    CHECK(r.err.find(c.message) != std::string::npos);
    CHECK(r.err.find("flowrt ood: ") != std::string::npos);
    CHECK(!exists(json));
  }
  // A JSON path in a directory that does not exist: an I/O error after scoring, exit 1.
  const Run r = run(base + " --out " + flat + " --json " + kDir + "/no/such/dir/r.json");
  CHECK(r.rc == 1);
}
