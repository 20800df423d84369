// The `flowrt` command's interpolate, attributes build, manipulate and score --per-level /
// --heatmap, run as a user runs them (a child process) on small `flowrt init --random-nets`
// models, their outputs checked against what the test computes itself through the C API on the
// reference backend; and the .npy reader on hostile files, directly and through the command.
#define DOCTEST_CONFIG_IMPLEMENT_WITH_MAIN
#include <doctest/doctest.h>
#include <sys/wait.h>

#include <cmath>
#include <cstdio>
#include <cstdlib>
#include <cstring>
#include <filesystem>
#include <fstream>
#include <sstream>
#include <string>
#include <vector>

#include "core/error.hpp"
#include "flowrt.hpp"
#include "image_io.hpp"
#include "npy_io.hpp"

namespace fs = std::filesystem;
using flowrt::ImageBatch;

namespace {

const fs::path kWork = FLOWRT_TOOLS_WORK_DIR;
constexpr int64_t kSide = 16, kIdxImages = 24, kLabels = 3, kPad = 2;

std::string q(const std::string &s) {
  std::string out = "'";
  for (char c : s) out += c == '\'' ? std::string("'\\''") : std::string(1, c);
  return out + "'";
}
std::string q(const fs::path &p) {
  return q(p.string());
}

std::string slurp(const fs::path &p) {
  std::ifstream f(p, std::ios::binary);
  std::stringstream ss;
  ss << f.rdbuf();
  return ss.str();
}

struct Run {
  int rc = -1;
  std::string out, err;
};

// Runs `flowrt ARGS` (ARGS already quoted), capturing its exit code, stdout and stderr.
Run run(const std::string &args) {
  static int counter = 0;
  const fs::path o = kWork / ("run" + std::to_string(counter) + ".out");
  const fs::path e = kWork / ("run" + std::to_string(counter++) + ".err");
  const std::string cmd = q(std::string(FLOWRT_CLI)) + " " + args + " >" + q(o) + " 2>" + q(e);
  const int st = std::system(cmd.c_str());
  Run r;
  r.rc = WIFEXITED(st) ? WEXITSTATUS(st) : 128 + WTERMSIG(st);
  r.out = slurp(o);
  r.err = slurp(e);
  return r;
}

// Runs a command that must succeed.
Run ok(const std::string &args) {
  Run r = run(args);
  INFO("flowrt " << args << "\nstdout:\n" << r.out << "stderr:\n" << r.err);
  REQUIRE(r.rc == 0);
  return r;
}

std::vector<std::string> lines(const std::string &text) {
  std::vector<std::string> out;
  std::stringstream ss(text);
  for (std::string l; std::getline(ss, l);) out.push_back(l);
  return out;
}

void write_bytes(const fs::path &p, const std::vector<uint8_t> &bytes) {
  std::ofstream f(p, std::ios::binary);
  f.write(reinterpret_cast<const char *>(bytes.data()), static_cast<std::streamsize>(bytes.size()));
}

void put_be32(std::vector<uint8_t> &v, uint32_t x) {
  for (int s = 24; s >= 0; s -= 8) v.push_back(static_cast<uint8_t>(x >> s));
}

flowrt::SessionOptions ref_options() {
  flowrt::SessionOptions o;
  o.backend(FLOWRT_BACKEND_REF).max_batch(64);
  return o;
}

// Frame i (h x w, c channels) of a one-row strip written by make_grid with kPad.
std::vector<uint8_t> frame(const ImageBatch &strip, int64_t i, int64_t c, int64_t h, int64_t w) {
  std::vector<uint8_t> out(static_cast<size_t>(c * h * w));
  const int64_t x0 = kPad + i * (w + kPad);
  for (int64_t k = 0; k < c; ++k)
    for (int64_t y = 0; y < h; ++y)
      for (int64_t x = 0; x < w; ++x)
        out[static_cast<size_t>((k * h + y) * w + x)] =
            strip.pixels[static_cast<size_t>((k * strip.h + kPad + y) * strip.w + x0 + x)];
  return out;
}

// The models, input PNGs and a small labelled IDX set every test case uses, made once.
struct Fixture {
  fs::path model, rgb_model, a_png, b_png, rgb_a_png, idx, labels;
  ImageBatch a, b, rgb_a;           // the PNGs' pixels
  std::vector<uint8_t> idx_pixels;  // kIdxImages images of kSide x kSide
  std::vector<uint8_t> label_of;
};

const Fixture &fixture() {
  static Fixture f = [] {
    Fixture x;
    fs::remove_all(kWork);
    fs::create_directories(kWork);
    x.model = kWork / "grey.flow";
    x.rgb_model = kWork / "rgb.flow";
    ok("init --image 1x16x16 --levels 2 --depth 2 --width 8 --random-nets --seed 5 -o " +
       q(x.model));
    ok("init --image 3x8x8 --levels 2 --depth 2 --width 8 --random-nets --seed 6 -o " +
       q(x.rgb_model));
    // Images from the models themselves (samples at temperature 0.8).
    flowrt::Model m(x.model.string());
    flowrt::Session s(m, ref_options());
    const size_t px = m.image_size();
    std::vector<uint8_t> all = s.sample(2 + kIdxImages, 0.8f, 42);
    x.a = ImageBatch{1, 1, kSide, kSide, std::vector<uint8_t>(all.begin(), all.begin() + px)};
    x.b = ImageBatch{1, 1, kSide, kSide,
                     std::vector<uint8_t>(all.begin() + px, all.begin() + 2 * px)};
    x.a_png = kWork / "a.png";
    x.b_png = kWork / "b.png";
    flowrt::write_png(x.a_png.string(), x.a);
    flowrt::write_png(x.b_png.string(), x.b);
    x.idx_pixels.assign(all.begin() + 2 * px, all.end());
    std::vector<uint8_t> idx;
    put_be32(idx, 0x803);
    put_be32(idx, kIdxImages);
    put_be32(idx, kSide);
    put_be32(idx, kSide);
    idx.insert(idx.end(), x.idx_pixels.begin(), x.idx_pixels.end());
    x.idx = kWork / "images-idx3-ubyte";
    write_bytes(x.idx, idx);
    std::vector<uint8_t> lab;
    put_be32(lab, 0x801);
    put_be32(lab, kIdxImages);
    for (int64_t i = 0; i < kIdxImages; ++i) x.label_of.push_back(static_cast<uint8_t>(i % 3));
    lab.insert(lab.end(), x.label_of.begin(), x.label_of.end());
    x.labels = kWork / "labels-idx1-ubyte";
    write_bytes(x.labels, lab);

    flowrt::Model rm(x.rgb_model.string());
    flowrt::Session rs(rm, ref_options());
    x.rgb_a = ImageBatch{1, 3, 8, 8, rs.sample(1, 0.8f, 7)};
    x.rgb_a_png = kWork / "rgb_a.png";
    flowrt::write_png(x.rgb_a_png.string(), x.rgb_a);
    return x;
  }();
  return f;
}

std::vector<float> encode(const fs::path &model, const uint8_t *pixels, size_t n) {
  flowrt::Model m(model.string());
  flowrt::Session s(m, ref_options());
  std::vector<float> z;
  s.encode(n, pixels, &z);
  return z;
}

std::vector<uint8_t> decode(const fs::path &model, const std::vector<float> &z, size_t n) {
  flowrt::Model m(model.string());
  flowrt::Session s(m, ref_options());
  std::vector<uint8_t> px;
  s.decode(n, z.data(), nullptr, &px);
  return px;
}

// The per-label directions computed here, in double: mean z of label k - mean z of the rest.
std::vector<double> expected_directions(const Fixture &f) {
  const std::vector<float> z = encode(f.model, f.idx_pixels.data(), kIdxImages);
  const size_t d = z.size() / kIdxImages;
  std::vector<double> dirs(kLabels * d);
  for (size_t k = 0; k < kLabels; ++k) {
    std::vector<double> in(d, 0), out(d, 0);
    size_t n_in = 0;
    for (size_t i = 0; i < kIdxImages; ++i) {
      std::vector<double> &acc = f.label_of[i] == k ? in : out;
      n_in += f.label_of[i] == k;
      for (size_t j = 0; j < d; ++j) acc[j] += z[i * d + j];
    }
    for (size_t j = 0; j < d; ++j) dirs[k * d + j] = in[j] / n_in - out[j] / (kIdxImages - n_in);
  }
  return dirs;
}

// The numbers on a line, in order ("1 2.5 -3e-2 x" -> {1, 2.5, -0.03}).
std::vector<double> numbers(const std::string &line) {
  std::vector<double> out;
  const char *p = line.c_str();
  while (*p) {
    char *end = nullptr;
    const double v = std::strtod(p, &end);
    if (end != p && (p == line.c_str() || !std::isalnum(static_cast<unsigned char>(p[-1])))) {
      out.push_back(v);
      p = end;
    } else {
      ++p;
    }
  }
  return out;
}

}  // namespace

TEST_SUITE("tools") {
  TEST_CASE("interpolate: end frames are the inputs, interior frames as computed from z") {
    const Fixture &f = fixture();
    const int64_t steps = 5;
    const fs::path strip_path = kWork / "lerp.png";
    const Run r = ok("interpolate " + q(f.model) + " " + q(f.a_png) + " " + q(f.b_png) +
                     " --steps 5 --backend ref -o " + q(strip_path));
    CHECK(r.out.find("end frames equal the inputs' pixels") != std::string::npos);
    const ImageBatch strip = flowrt::read_png(strip_path.string());
    CHECK(strip.c == 1);
    CHECK(strip.h == kSide + 2 * kPad);
    CHECK(strip.w == steps * (kSide + kPad) + kPad);
    CHECK(frame(strip, 0, 1, kSide, kSide) == f.a.pixels);
    CHECK(frame(strip, steps - 1, 1, kSide, kSide) == f.b.pixels);
    // Frame 2 of 5 decodes z_a + 0.5 (z_b - z_a), computed here.
    std::vector<uint8_t> ab(f.a.pixels);
    ab.insert(ab.end(), f.b.pixels.begin(), f.b.pixels.end());
    const std::vector<float> z = encode(f.model, ab.data(), 2);
    const size_t d = z.size() / 2;
    std::vector<float> mid(d);
    for (size_t j = 0; j < d; ++j) mid[j] = static_cast<float>(0.5 * z[j] + 0.5 * z[d + j]);
    CHECK(frame(strip, 2, 1, kSide, kSide) == decode(f.model, mid, 1));
    CHECK(frame(strip, 2, 1, kSide, kSide) != f.a.pixels);

    for (const char *mode : {"--slerp", "-t 0.6", "--slerp -t 0.8"}) {
      CAPTURE(mode);
      const fs::path p = kWork / "eps.png";
      const Run e = ok("interpolate " + q(f.model) + " " + q(f.a_png) + " " + q(f.b_png) +
                       " --steps 4 " + mode + " -o " + q(p));
      CHECK(e.out.find(" in eps") != std::string::npos);
      const ImageBatch s = flowrt::read_png(p.string());
      CHECK(s.w == 4 * (kSide + kPad) + kPad);
      CHECK(frame(s, 0, 1, kSide, kSide) == f.a.pixels);
      CHECK(frame(s, 3, 1, kSide, kSide) == f.b.pixels);
    }
    // An RGB model: three channels in, three out.
    const fs::path rgb = kWork / "rgb_strip.png";
    ok("interpolate " + q(f.rgb_model) + " " + q(f.rgb_a_png) + " " + q(f.rgb_a_png) +
       " --steps 3 --slerp -o " + q(rgb));
    const ImageBatch rs = flowrt::read_png(rgb.string());
    CHECK(rs.c == 3);
    for (int64_t i = 0; i < 3; ++i) CHECK(frame(rs, i, 3, 8, 8) == f.rgb_a.pixels);
  }

  TEST_CASE("interpolate: bad arguments exit 2 with one line") {
    const Fixture &f = fixture();
    const std::string base = "interpolate " + q(f.model) + " " + q(f.a_png) + " ";
    for (const std::string &args :
         {base + q(f.b_png) + " --steps 1 -o " + q(kWork / "x.png"),
          base + q(f.b_png) + " --steps 4",  // no -o
          base + q(f.b_png) + " -t -1 -o " + q(kWork / "x.png"),
          base + q(f.idx) + " -o " + q(kWork / "x.png"),  // B holds 24 images
          base + " -o " + q(kWork / "x.png")}) {
      const Run r = run(args);
      CAPTURE(args);
      CAPTURE(r.err);
      CHECK(r.rc == 2);
      CHECK(lines(r.err).size() <= 2);  // the usage message of a missing argument has two
      CHECK(r.err.rfind("flowrt interpolate: ", 0) == 0);
    }
  }

  TEST_CASE("attributes build: the .npy rows are the label means' differences") {
    const Fixture &f = fixture();
    const fs::path npy = kWork / "dirs.npy";
    const Run r = ok("attributes build " + q(f.model) + " --images " + q(f.idx) + " --labels " +
                     q(f.labels) + " --backend ref -o " + q(npy));
    CHECK(r.out.find("3 directions of 256 floats") != std::string::npos);
    const std::vector<double> want = expected_directions(f);
    const flowrt::NpyArray got = flowrt::read_npy_f32(npy.string());
    REQUIRE(got.shape == std::vector<int64_t>{kLabels, 256});
    double worst = 0;
    for (size_t i = 0; i < want.size(); ++i)
      worst = std::max(worst, std::fabs(got.data[i] - want[i]));
    CHECK(worst < 1e-5);

    // numpy reads it: shape, dtype, C order and the same values.
    const std::string python = FLOWRT_TEST_PYTHON;
    if (python.empty()) {
      MESSAGE("numpy check skipped: no Python 3 with numpy was found at configure time");
    } else {
      const fs::path raw = kWork / "dirs_from_numpy.f32", out = kWork / "numpy.out";
      const std::string script =
          "import sys, numpy as np; a = np.load(sys.argv[1]); "
          "assert a.dtype == np.float32 and a.flags.c_contiguous and not a.flags.f_contiguous; "
          "print(a.shape); a.astype('<f4').tofile(sys.argv[2])";
      const std::string cmd =
          q(python) + " -c " + q(script) + " " + q(npy) + " " + q(raw) + " >" + q(out) + " 2>&1";
      const int st = std::system(cmd.c_str());
      INFO(slurp(out));
      REQUIRE(st == 0);
      CHECK(slurp(out) == "(3, 256)\n");
      const std::string bytes = slurp(raw);
      REQUIRE(bytes.size() == got.data.size() * 4);
      CHECK(std::memcmp(bytes.data(), got.data.data(), bytes.size()) == 0);
    }

    // --limit: the first 6 images and labels only.
    const fs::path npy6 = kWork / "dirs6.npy";
    ok("attributes build " + q(f.model) + " --images " + q(f.idx) + " --labels " + q(f.labels) +
       " --limit 6 -o " + q(npy6));
    CHECK(flowrt::read_npy_f32(npy6.string()).shape == std::vector<int64_t>{kLabels, 256});

    // A directory of PNGs in name order, with the labels file's first labels.
    const fs::path dir = kWork / "pngs";
    fs::create_directories(dir);
    for (int64_t i = 0; i < kIdxImages; ++i) {
      ImageBatch one{1, 1, kSide, kSide,
                     std::vector<uint8_t>(f.idx_pixels.begin() + i * kSide * kSide,
                                          f.idx_pixels.begin() + (i + 1) * kSide * kSide)};
      char name[32];
      std::snprintf(name, sizeof name, "img%03d.png", static_cast<int>(i));
      flowrt::write_png((dir / name).string(), one);
    }
    const fs::path npy_dir = kWork / "dirs_from_pngs.npy";
    ok("attributes build " + q(f.model) + " --images " + q(dir) + " --labels " + q(f.labels) +
       " --backend ref -o " + q(npy_dir));
    CHECK(flowrt::read_npy_f32(npy_dir.string()).data == got.data);

    // Fewer labels than images: refused.
    std::vector<uint8_t> few;
    put_be32(few, 0x801);
    put_be32(few, 5);
    few.insert(few.end(), 5, 1);
    write_bytes(kWork / "few-labels", few);
    const Run bad = run("attributes build " + q(f.model) + " --images " + q(f.idx) + " --labels " +
                        q(kWork / "few-labels") + " -o " + q(kWork / "x.npy"));
    CHECK(bad.rc == 2);
    CHECK(bad.err.find("holds 5 labels for the 24 images") != std::string::npos);
  }

  TEST_CASE("manipulate: alpha 0 is the input, alpha 1 decodes z + d_k; --project") {
    const Fixture &f = fixture();
    const fs::path npy = kWork / "dirs.npy";
    ok("attributes build " + q(f.model) + " --images " + q(f.idx) + " --labels " + q(f.labels) +
       " --backend ref -o " + q(npy));
    const flowrt::NpyArray dirs = flowrt::read_npy_f32(npy.string());
    const size_t d = 256;
    const fs::path strip_path = kWork / "manip.png";
    const Run r = ok("manipulate " + q(f.model) + " " + q(f.a_png) + " --dirs " + q(npy) +
                     " --label 1 --alpha -1,0,1.5 --backend ref -o " + q(strip_path));
    CHECK(r.out.find("alpha 0 reproduces the image's pixels") != std::string::npos);
    const ImageBatch strip = flowrt::read_png(strip_path.string());
    CHECK(strip.w == 3 * (kSide + kPad) + kPad);
    CHECK(strip.h == kSide + 2 * kPad);
    CHECK(frame(strip, 1, 1, kSide, kSide) == f.a.pixels);
    const std::vector<float> z = encode(f.model, f.a.pixels.data(), 1);
    std::vector<float> moved(d);
    for (size_t j = 0; j < d; ++j) moved[j] = z[j] + 1.5f * dirs.data[d + j];
    CHECK(frame(strip, 2, 1, kSide, kSide) == decode(f.model, moved, 1));
    CHECK(frame(strip, 2, 1, kSide, kSide) != f.a.pixels);

    // --project: <z, d_k> / |d_k| per image and direction.
    const Run p = ok("manipulate " + q(f.model) + " " + q(f.a_png) + " " + q(f.b_png) + " --dirs " +
                     q(npy) + " --project --backend ref");
    const std::vector<std::string> out = lines(p.out);
    REQUIRE(out.size() == 5);  // comment, header, |d_k|, a, b
    CHECK(out[1] == "image\td0\td1\td2");
    std::vector<uint8_t> ab(f.a.pixels);
    ab.insert(ab.end(), f.b.pixels.begin(), f.b.pixels.end());
    const std::vector<float> zab = encode(f.model, ab.data(), 2);
    for (size_t i = 0; i < 2; ++i) {
      const std::string &row = out[3 + i];
      REQUIRE(row.find('\t') != std::string::npos);
      CHECK(row.substr(0, row.find('\t')) == (i == 0 ? f.a_png : f.b_png).string());
      const std::vector<double> got = numbers(row.substr(row.find('\t')));
      REQUIRE(got.size() == kLabels);
      for (size_t k = 0; k < kLabels; ++k) {
        double dot = 0, nn = 0;
        for (size_t j = 0; j < d; ++j) {
          dot += static_cast<double>(zab[i * d + j]) * dirs.data[k * d + j];
          nn += static_cast<double>(dirs.data[k * d + j]) * dirs.data[k * d + j];
        }
        CHECK(got[k] == doctest::Approx(dot / std::sqrt(nn)).epsilon(1e-5));
      }
    }
    const Run mix = run("manipulate " + q(f.model) + " " + q(f.a_png) + " --dirs " + q(npy) +
                        " --project --label 1");
    CHECK(mix.rc == 2);
    const Run no_label = run("manipulate " + q(f.model) + " " + q(f.a_png) + " --dirs " + q(npy) +
                             " -o " + q(kWork / "x.png"));
    CHECK(no_label.rc == 2);
    const Run big_label = run("manipulate " + q(f.model) + " " + q(f.a_png) + " --dirs " + q(npy) +
                              " --label 3 -o " + q(kWork / "x.png"));
    CHECK(big_label.rc == 2);
    CHECK(big_label.err.find("out of range [0, 2]") != std::string::npos);
  }

  TEST_CASE("npy: round trip and layout") {
    std::vector<float> v(6);
    for (size_t i = 0; i < v.size(); ++i) v[i] = static_cast<float>(i) - 2.5f;
    const std::vector<uint8_t> bytes = flowrt::encode_npy_f32(v.data(), {2, 3});
    const size_t header_len = bytes[8] | (bytes[9] << 8);
    CHECK(std::memcmp(bytes.data(), "\x93NUMPY\x01\x00", 8) == 0);
    CHECK((10 + header_len) % 64 == 0);
    CHECK(bytes[10 + header_len - 1] == '\n');
    CHECK(std::string(bytes.begin() + 10, bytes.begin() + 10 + header_len)
              .rfind("{'descr': '<f4', 'fortran_order': False, 'shape': (2, 3), }", 0) == 0);
    CHECK(bytes.size() == 10 + header_len + 24);
    const flowrt::NpyArray a = flowrt::decode_npy_f32(bytes.data(), bytes.size(), "x");
    CHECK(a.shape == std::vector<int64_t>{2, 3});
    CHECK(a.data == v);
    const std::vector<uint8_t> one = flowrt::encode_npy_f32(v.data(), {6});
    CHECK(flowrt::decode_npy_f32(one.data(), one.size(), "x").shape == std::vector<int64_t>{6});
  }

  TEST_CASE("npy: hostile files are refused with a clear error") {
    // A header of our choosing: version 1.0 unless `major` says otherwise; `data` bytes after.
    const auto npy = [](const std::string &header, size_t data, int major = 1) {
      std::vector<uint8_t> b = {0x93, 'N', 'U', 'M', 'P', 'Y', static_cast<uint8_t>(major), 0};
      const size_t len = header.size();
      b.push_back(static_cast<uint8_t>(len & 0xff));
      b.push_back(static_cast<uint8_t>(len >> 8));
      if (major >= 2) {
        b.push_back(0);
        b.push_back(0);
      }
      b.insert(b.end(), header.begin(), header.end());
      b.insert(b.end(), data, 0);
      return b;
    };
    const std::string good = "{'descr': '<f4', 'fortran_order': False, 'shape': (2, 3), }\n";
    REQUIRE_NOTHROW(flowrt::decode_npy_f32(npy(good, 24).data(), npy(good, 24).size(), "g"));
    REQUIRE_NOTHROW(flowrt::decode_npy_f32(npy(good, 24, 2).data(), npy(good, 24, 2).size(), "g"));

    struct Case {
      const char *what;
      std::vector<uint8_t> bytes;
      const char *message;
    };
    std::vector<uint8_t> huge_header = npy(good, 24);
    huge_header[8] = 0xff;
    huge_header[9] = 0xff;
    std::vector<uint8_t> huge_v2 = npy(good, 24, 2);
    huge_v2[11] = 0x7f;  // 2^31-ish header length
    const std::vector<uint8_t> whole = npy(good, 0);
    const std::vector<uint8_t> cut(whole.begin(), whole.begin() + 30);
    std::vector<uint8_t> version = npy(good, 24);
    version[6] = 9;
    const std::vector<Case> cases = {
        {"empty", {}, "not a .npy file"},
        {"magic", {'P', 'K', 3, 4, 0, 0, 0, 0, 0, 0}, "not a .npy file"},
        {"version", version, "format version 9.0 is not supported"},
        {"header length", huge_header, "absurdly large"},
        {"v2 header length", huge_v2, "absurdly large"},
        {"truncated header", cut, "truncated: the header announces"},
        {"big-endian", npy("{'descr': '>f4', 'fortran_order': False, 'shape': (2, 3), }", 24),
         "'>f4' is not supported"},
        {"float64", npy("{'descr': '<f8', 'fortran_order': False, 'shape': (2, 3), }", 48),
         "'<f8' is not supported"},
        {"uint8", npy("{'descr': '|u1', 'fortran_order': False, 'shape': (2, 3), }", 6),
         "'|u1' is not supported"},
        {"fortran", npy("{'descr': '<f4', 'fortran_order': True, 'shape': (2, 3), }", 24),
         "Fortran-order"},
        {"truncated data", npy(good, 23), "truncated: shape (2, 3) needs 24 bytes"},
        {"trailing data", npy(good, 28), "trailing bytes"},
        {"huge shape",
         npy("{'descr': '<f4', 'fortran_order': False, 'shape': (1099511627776, "
             "1099511627776), }",
             0),
         "over 2^40"},
        {"huge dimension",
         npy("{'descr': '<f4', 'fortran_order': False, 'shape': (99999999999999999999,), }", 0),
         "absurdly large"},
        {"negative dimension",
         npy("{'descr': '<f4', 'fortran_order': False, 'shape': (-2, 3), }", 24),
         "non-negative integer"},
        {"missing key", npy("{'descr': '<f4', 'shape': (2, 3), }", 24), "lacks 'fortran_order'"},
        {"extra key", npy("{'descr': '<f4', 'fortran_order': False, 'shape': (2, 3), 'x': 1}", 24),
         "unexpected key 'x'"},
        {"repeated key",
         npy("{'descr': '<f4', 'descr': '<f4', 'fortran_order': False, 'shape': (2, 3)}", 24),
         "repeats 'descr'"},
        {"not a dict", npy("[1, 2, 3]", 24), "malformed .npy header"},
        {"unterminated", npy("{'descr': '<f4", 24), "unterminated string"},
        {"text after", npy(good + "junk", 24), "unexpected text after"},
        {"binary header", npy(std::string("{'descr': '<f4\xff', }"), 24), "not ASCII"},
    };
    for (const Case &c : cases) {
      const std::string name = c.what;
      CAPTURE(name);
      bool threw = false;
      try {
        flowrt::decode_npy_f32(c.bytes.data(), c.bytes.size(), "hostile.npy");
      } catch (const flowrt::Error &e) {
        threw = true;
        const std::string message = e.what();
        CAPTURE(message);
        CHECK(e.status() == FLOWRT_INVALID_ARGUMENT);
        CHECK(std::string(e.what()).find(c.message) != std::string::npos);
        CHECK(std::string(e.what()).rfind("'hostile.npy': ", 0) == 0);
      }
      CHECK(threw);
    }

    // Through the command: exit 2 and one line naming the file; a missing file exits 1.
    const Fixture &f = fixture();
    const auto refused = [&](const std::string &name, const std::vector<uint8_t> &bytes,
                             int want_rc, const char *message) {
      CAPTURE(name);
      const fs::path p = kWork / name;
      write_bytes(p, bytes);
      const Run r = run("manipulate " + q(f.model) + " " + q(f.a_png) + " --dirs " + q(p) +
                        " --label 0 -o " + q(kWork / "x.png"));
      CAPTURE(r.err);
      CHECK(r.rc == want_rc);
      CHECK(lines(r.err).size() == 1);
      CHECK(r.err.rfind("flowrt manipulate: '" + p.string() + "': ", 0) == 0);
      CHECK(r.err.find(message) != std::string::npos);
    };
    refused("bad_magic.npy", {'P', 'K', 3, 4}, 2, "not a .npy file");
    refused("big_endian.npy",
            npy("{'descr': '>f4', 'fortran_order': False, 'shape': (3, 256), }", 3 * 256 * 4), 2,
            "'>f4'");
    refused("fortran.npy",
            npy("{'descr': '<f4', 'fortran_order': True, 'shape': (3, 256), }", 3 * 256 * 4), 2,
            "Fortran-order");
    refused("truncated.npy",
            npy("{'descr': '<f4', 'fortran_order': False, 'shape': (3, 256), }", 3 * 256 * 4 - 1),
            2, "truncated");
    refused("huge_header.npy", huge_header, 2, "absurdly large");
    std::vector<float> wrong(3 * 100, 0.5f);
    refused("wrong_shape.npy", flowrt::encode_npy_f32(wrong.data(), {3, 100}), 2,
            "shape (3, 100) does not fit the model, whose latent has 256 floats");
    refused("one_dim.npy", flowrt::encode_npy_f32(wrong.data(), {256}), 2,
            "does not fit the model");
    std::vector<float> nan(2 * 256, 0.0f);
    nan[256 + 7] = std::nanf("");
    refused("nan.npy", flowrt::encode_npy_f32(nan.data(), {2, 256}), 2,
            "direction 1 holds a non-finite value at element 7");
    const Run missing = run("manipulate " + q(f.model) + " " + q(f.a_png) + " --dirs " +
                            q(kWork / "no-such.npy") + " --label 0 -o " + q(kWork / "x.png"));
    CHECK(missing.rc == 1);
    CHECK(lines(missing.err).size() == 1);
    CHECK(missing.err.find("cannot open") != std::string::npos);
  }

  TEST_CASE("npy: every truncation and thousands of byte changes read or are refused") {
    std::vector<float> v(2 * 5, 1.25f);
    const std::vector<uint8_t> good = flowrt::encode_npy_f32(v.data(), {2, 5});
    // 0: read, 1: refused with FLOWRT_INVALID_ARGUMENT, 2: anything else (a failure).
    const auto outcome = [](const std::vector<uint8_t> &b) {
      try {
        flowrt::decode_npy_f32(b.data(), b.size(), "mutant.npy");
      } catch (const flowrt::Error &e) {
        return e.status() == FLOWRT_INVALID_ARGUMENT ? 1 : 2;
      }
      return 0;
    };
    for (size_t len = 0; len < good.size(); ++len) {
      CAPTURE(len);
      const std::vector<uint8_t> cut(good.begin(), good.begin() + static_cast<int64_t>(len));
      CHECK_THROWS_AS(flowrt::decode_npy_f32(cut.data(), cut.size(), "cut.npy"), flowrt::Error);
    }
    uint64_t state = 0x9e3779b97f4a7c15ull;  // xorshift: the same mutants every run
    const auto next = [&] {
      state ^= state << 13;
      state ^= state >> 7;
      state ^= state << 17;
      return state;
    };
    // Changes within the header, where the parser is.
    const size_t header_end = good.size() - v.size() * 4;
    int counts[3] = {0, 0, 0};
    for (int i = 0; i < 5000; ++i) {
      std::vector<uint8_t> m = good;
      for (uint64_t k = 1 + next() % 3; k > 0; --k)
        m[next() % header_end] = static_cast<uint8_t>(next());
      ++counts[outcome(m)];
    }
    CHECK(counts[2] == 0);
    CHECK(counts[1] > 2500);  // most changes break the header
  }

  TEST_CASE("score --per-level: the terms add up to the bits/dim plain score prints") {
    const Fixture &f = fixture();
    // A few PNGs: one table per image, whose total matches `flowrt score`'s line for it.
    const std::string inputs = q(f.model) + " " + q(f.a_png) + " " + q(f.b_png) + " --backend ref";
    const Run plain = ok("score " + inputs);
    const Run per = ok("score " + inputs + " --per-level");
    const std::vector<std::string> pl = lines(plain.out), lv = lines(per.out);
    REQUIRE(pl.size() == 3);
    std::vector<double> bpd;
    for (int i = 0; i < 2; ++i) bpd.push_back(numbers(pl[i].substr(pl[i].find('\t'))).at(0));
    std::vector<double> totals;
    size_t level_rows = 0, checks = 0;
    for (const std::string &l : lv) {
      if (l.rfind("total ", 0) == 0) totals.push_back(numbers(l).back());
      if (l.rfind("0 ", 0) == 0 || l.rfind("1 ", 0) == 0) ++level_rows;
      if (l.rfind("check: ", 0) == 0) ++checks;
    }
    INFO(per.out);
    REQUIRE(totals.size() == 2);
    CHECK(level_rows == 4);  // 2 levels x 2 images
    CHECK(checks == 2);
    for (int i = 0; i < 2; ++i) CHECK(std::fabs(totals[i] - bpd[i]) < 1e-5);
    // The table's level rows: prior nats + log-det nats over the levels are log p(x), as
    // flowrt_encode_ex computes it.
    {
      flowrt::Model m(f.model.string());
      flowrt::Session s(m, ref_options());
      std::vector<float> x(m.image_size());
      REQUIRE(flowrt_pixels_to_x(m.get(), 1, f.a.pixels.data(), x.data()) == FLOWRT_OK);
      double log_p = 0;
      REQUIRE(flowrt_encode_ex(s.get(), 1, x.data(), nullptr, nullptr, &log_p, nullptr, nullptr) ==
              FLOWRT_OK);
      double sum = 0;
      int rows = 0;
      for (const std::string &l : lv) {
        if (l.rfind("0 ", 0) != 0 && l.rfind("1 ", 0) != 0) continue;
        if (rows++ >= 2) break;  // image a's two levels
        // After "level latent " (%-6s %-10s): the five cells, prior and log-det nats first.
        const std::vector<double> v = numbers(l.substr(18));
        REQUIRE(v.size() == 5);
        sum += v[0] + v[2];
      }
      CHECK(sum == doctest::Approx(log_p).epsilon(1e-5));
    }

    // Many images (an IDX of 24): mean +- std; the total's mean is plain score's mean.
    const Run idx_plain = ok("score " + q(f.model) + " " + q(f.idx) + " --backend ref");
    const Run idx_per = ok("score " + q(f.model) + " " + q(f.idx) + " --backend ref --per-level");
    INFO(idx_per.out);
    CHECK(idx_per.out.find("mean +- std over 24 images") != std::string::npos);
    const double mean = numbers(lines(idx_plain.out).at(24)).at(1);  // "over 24 images: X"
    bool seen = false;
    for (const std::string &l : lines(idx_per.out))
      if (l.rfind("total ", 0) == 0) {
        seen = true;
        const std::string last = l.substr(l.rfind("  "));
        CHECK(std::fabs(numbers(last).at(0) - mean) < 1e-5);
      }
    CHECK(seen);
    CHECK(idx_per.out.find("check: the terms add up to every image's bits/dim") !=
          std::string::npos);
  }

  TEST_CASE("score --heatmap: image beside its NLL map, of the documented size") {
    const Fixture &f = fixture();
    const fs::path dir = kWork / "heat";
    const Run r = ok("score " + q(f.model) + " " + q(f.a_png) + " " + q(f.b_png) +
                     " --backend ref --heatmap " + q(dir));
    CHECK(r.out.find("wrote " + (dir / "a_nll.png").string()) != std::string::npos);
    CHECK(r.out.find("wrote " + (dir / "b_nll.png").string()) != std::string::npos);
    // 16 px images scaled 8x to 128: margins 4, gaps 4, a 12 px bar and 64 px of labels.
    const int64_t s = 8, width = 2 * 4 + 2 * s * kSide + 3 * 4 + 12 + 64,
                  height = 2 * 4 + s * kSide;
    const ImageBatch h = flowrt::read_png((dir / "a_nll.png").string());
    CHECK(h.c == 3);
    CHECK(h.w == width);
    CHECK(h.h == height);
    const auto at = [&](int64_t y, int64_t x, int k) {
      return h.pixels[static_cast<size_t>((k * h.h + y) * h.w + x)];
    };
    // The left panel is the image, scaled by nearest neighbour.
    bool image_ok = true;
    for (int64_t y = 0; y < s * kSide; ++y)
      for (int64_t x = 0; x < s * kSide; ++x)
        for (int k = 0; k < 3; ++k)
          image_ok &= at(4 + y, 4 + x, k) == f.a.pixels[static_cast<size_t>(y / s * kSide + x / s)];
    CHECK(image_ok);
    // The right panel: the pixel of the largest NLL (flowrt_nll_map, computed here) is viridis'
    // top colour #fde725, that of the smallest its bottom one #440154.
    flowrt::Model m(f.model.string());
    flowrt::Session ss(m, ref_options());
    std::vector<float> x(m.image_size());
    REQUIRE(flowrt_pixels_to_x(m.get(), 1, f.a.pixels.data(), x.data()) == FLOWRT_OK);
    std::vector<double> nll(kSide * kSide);
    REQUIRE(flowrt_nll_map(ss.get(), 1, x.data(), nullptr, nll.data()) == FLOWRT_OK);
    const size_t hi = std::max_element(nll.begin(), nll.end()) - nll.begin();
    const size_t lo = std::min_element(nll.begin(), nll.end()) - nll.begin();
    const int64_t map_x = 4 + s * kSide + 4;
    const auto colour = [&](size_t p) {
      const int64_t y = 4 + static_cast<int64_t>(p / kSide) * s + s / 2;
      const int64_t xx = map_x + static_cast<int64_t>(p % kSide) * s + s / 2;
      return std::vector<int>{at(y, xx, 0), at(y, xx, 1), at(y, xx, 2)};
    };
    CHECK(colour(hi) == std::vector<int>{253, 231, 37});
    CHECK(colour(lo) == std::vector<int>{68, 1, 84});
    // The printed mean of the map (bits per pixel / C) is the image's bits/dim.
    for (const std::string &l : lines(r.out))
      if (l.find("a_nll.png") != std::string::npos) {
        const std::vector<double> v = numbers(l.substr(l.find("mean")));
        REQUIRE(v.size() == 2);
        CHECK(std::fabs(v[0] - v[1]) < 1e-5);
      }

    // An RGB model: 8 px images scaled 16x; an IDX input names its files by index.
    const fs::path rgb_dir = kWork / "heat_rgb";
    ok("score " + q(f.rgb_model) + " " + q(f.rgb_a_png) + " --heatmap " + q(rgb_dir));
    const ImageBatch rh = flowrt::read_png((rgb_dir / "rgb_a_nll.png").string());
    CHECK(rh.w == 2 * 4 + 2 * 128 + 3 * 4 + 12 + 64);
    CHECK(rh.h == 2 * 4 + 128);
    const fs::path idx_dir = kWork / "heat_idx";
    const Run ri =
        ok("score " + q(f.model) + " " + q(f.idx) + " --limit 3 --heatmap " + q(idx_dir));
    for (int i = 0; i < 3; ++i)
      CHECK(fs::exists(idx_dir / ("images-idx3-ubyte_" + std::to_string(i) + "_nll.png")));
    CHECK(!fs::exists(idx_dir / "images-idx3-ubyte_3_nll.png"));
  }
}
