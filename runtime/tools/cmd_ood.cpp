// `flowrt ood`: how well a model's scores separate in-distribution images from
// out-of-distribution ones. Scores (higher = more anomalous), each with AUROC, AUPR (OOD positive)
// and FPR at 95 % TPR (ood_metrics.hpp):
//   bits/dim          the model's negative log-likelihood per dimension;
//   typicality        Nalisnick et al. 2019: |mean bits/dim of a batch of K images - H|, H the
//                     mean bits/dim of held-out training images (--train); AUROC over batches;
//                     also per image (K = 1);
//   likelihood ratio  Ren et al. 2019: log p_bg(x) - log p_M(x) in bits per dimension of M
//                     (--background), = bpd_M - bpd_bg when both models see the same image size;
//   complexity        Serra et al. 2020: bits/dim - L(x), L the PNG-compressed length of the image
//                     the model sees (libpng, compression level 9), in bits per dimension.
#include <dirent.h>
#include <png.h>
#include <sys/stat.h>

#include <algorithm>
#include <cctype>
#include <cmath>
#include <csetjmp>
#include <cstdio>
#include <cstring>
#include <memory>
#include <stdexcept>
#include <string>
#include <vector>

#include "cli_args.hpp"
#include "commands.hpp"
#include "core/atomic_file.hpp"
#include "core/error.hpp"
#include "flowrt.hpp"
#include "image_io.hpp"
#include "ood_metrics.hpp"

namespace flowrt {
namespace {

const char *kUsage =
    "usage: flowrt ood M.flow --in A --out B [--train T [--batch-size K]] [--background M2.flow]\n"
    "       [--complexity png] [--json F.json] [--plot F.svg] [--seed S]\n"
    "       [--backend B] [--threads N] [--batch N] [--limit N]\n"
    "  A, B, T: an IDX image file (raw or .gz), a PNG file or a directory of PNGs";

bool ends_with(const std::string &s, const std::string &suffix) {
  return s.size() >= suffix.size() &&
         std::equal(suffix.rbegin(), suffix.rend(), s.rbegin(),
                    [](char a, char b) { return std::tolower(a) == std::tolower(b); });
}

bool is_directory(const std::string &path) {
  struct stat st {};
  return ::stat(path.c_str(), &st) == 0 && S_ISDIR(st.st_mode);
}

// An IDX file, a PNG, or every *.png of a directory (in name order, all of one shape).
ImageBatch load_images(const std::string &path, int64_t limit) {
  if (!is_directory(path)) {
    if (ends_with(path, ".png")) return read_png(path);
    return read_idx_images(path, limit);
  }
  std::vector<std::string> names;
  DIR *d = ::opendir(path.c_str());
  if (!d) fail(FLOWRT_IO_ERROR, "'" + path + "': cannot open the directory");
  while (const dirent *e = ::readdir(d))
    if (ends_with(e->d_name, ".png")) names.push_back(e->d_name);
  ::closedir(d);
  std::sort(names.begin(), names.end());
  if (limit > 0 && static_cast<int64_t>(names.size()) > limit) names.resize(limit);
  if (names.empty()) invalid_argument("'" + path + "': no .png files in the directory");
  ImageBatch all;
  for (const std::string &n : names) {
    const std::string p = path + "/" + n;
    ImageBatch b = read_png(p);
    if (all.n == 0) {
      all = ImageBatch{0, b.c, b.h, b.w, {}};
      all.pixels.reserve(names.size() * b.pixels.size());
    } else if (b.c != all.c || b.h != all.h || b.w != all.w) {
      invalid_argument("'" + p + "' is " + std::to_string(b.c) + "x" + std::to_string(b.h) + "x" +
                       std::to_string(b.w) + ", the directory's first image " +
                       std::to_string(all.c) + "x" + std::to_string(all.h) + "x" +
                       std::to_string(all.w));
    }
    all.pixels.insert(all.pixels.end(), b.pixels.begin(), b.pixels.end());
    ++all.n;
  }
  return all;
}

struct ImageSet {
  std::string role, path;
  ImageBatch images;  // as read
};

// A model with its session; scores image sets fitted to its shape.
struct Scorer {
  std::string path;
  Model model;
  Session session;
  int64_t c, h, w, dims;
  int n_bits;

  Scorer(const std::string &p, const SessionOptions &opts)
      : path(p),
        model(p),
        session(model, opts),
        c(model.channels()),
        h(model.height()),
        w(model.width()),
        dims(c * h * w),
        n_bits(model.n_bits()) {}

  ImageBatch fit(const ImageSet &s) const {
    try {
      return fit_to_model(s.images, c, h, w);
    } catch (const Error &e) {
      throw Error(e.status(),
                  "--" + s.role + " '" + s.path + "' and model '" + path + "': " + e.what());
    }
  }

  // Bits/dim per image; NaN (a model that overflows on an input) becomes +inf, "anomalous".
  std::vector<double> bpd(const ImageBatch &fitted, size_t *non_finite) {
    std::vector<double> v = session.encode(static_cast<size_t>(fitted.n), fitted.pixels.data());
    for (double &x : v)
      if (!std::isfinite(x)) {
        ++*non_finite;
        if (std::isnan(x)) x = INFINITY;
      }
    return v;
  }
};

// The length in bytes of an image as a PNG written by libpng at compression level 9 (the
// adaptive filters libpng chooses by default), the full file with its chunks.
struct PngSink {
  std::vector<uint8_t> bytes;
};
void png_sink_write(png_structp png, png_bytep data, png_size_t n) {
  auto *s = static_cast<PngSink *>(png_get_io_ptr(png));
  s->bytes.insert(s->bytes.end(), data, data + n);
}
void png_sink_flush(png_structp) {}

// Returns false when libpng fails (its error handler longjmps here); no C++ object lives in
// this frame across setjmp.
bool png_encode(const uint8_t *hwc, int c, int h, int w, PngSink *sink,
                std::vector<png_bytep> *rows) {
  png_structp png = png_create_write_struct(PNG_LIBPNG_VER_STRING, nullptr, nullptr, nullptr);
  if (!png) return false;
  png_infop info = png_create_info_struct(png);
  if (!info) {
    png_destroy_write_struct(&png, nullptr);
    return false;
  }
  if (setjmp(png_jmpbuf(png))) {
    png_destroy_write_struct(&png, &info);
    return false;
  }
  png_set_write_fn(png, sink, png_sink_write, png_sink_flush);
  png_set_compression_level(png, 9);
  png_set_IHDR(png, info, static_cast<png_uint_32>(w), static_cast<png_uint_32>(h), 8,
               c == 3 ? PNG_COLOR_TYPE_RGB : PNG_COLOR_TYPE_GRAY, PNG_INTERLACE_NONE,
               PNG_COMPRESSION_TYPE_DEFAULT, PNG_FILTER_TYPE_DEFAULT);
  for (int y = 0; y < h; ++y) (*rows)[y] = const_cast<png_bytep>(hwc + size_t(y) * w * c);
  png_set_rows(png, info, rows->data());
  png_write_png(png, info, PNG_TRANSFORM_IDENTITY, nullptr);
  png_destroy_write_struct(&png, &info);
  return true;
}

// L(x) in bits per dimension for each image, of the pixels the model sees (its n_bits kept).
std::vector<double> png_complexity(const ImageBatch &b, int n_bits) {
  if (b.c != 1 && b.c != 3)
    invalid_argument("--complexity png needs 1 or 3 channels, the model has " +
                     std::to_string(b.c));
  std::vector<double> out(static_cast<size_t>(b.n));
  const int64_t size = b.image_size();
  std::vector<uint8_t> hwc(static_cast<size_t>(size));
  std::vector<png_bytep> rows(static_cast<size_t>(b.h));
  const int drop = 8 - n_bits;
  for (int64_t i = 0; i < b.n; ++i) {
    const uint8_t *src = b.pixels.data() + i * size;
    for (int64_t y = 0; y < b.h; ++y)
      for (int64_t x = 0; x < b.w; ++x)
        for (int64_t k = 0; k < b.c; ++k)
          hwc[(y * b.w + x) * b.c + k] =
              static_cast<uint8_t>((src[(k * b.h + y) * b.w + x] >> drop) << drop);
    PngSink sink;
    if (!png_encode(hwc.data(), static_cast<int>(b.c), static_cast<int>(b.h), static_cast<int>(b.w),
                    &sink, &rows))
      fail(FLOWRT_INTERNAL_ERROR, "PNG encoding failed");
    out[i] = 8.0 * static_cast<double>(sink.bytes.size()) / static_cast<double>(size);
  }
  return out;
}

struct Stats {
  size_t n = 0;
  double mean = 0, sd = 0, min = 0, max = 0;
};
Stats stats(const std::vector<double> &v) {
  Stats s;
  s.n = v.size();
  if (v.empty()) return s;
  s.min = *std::min_element(v.begin(), v.end());
  s.max = *std::max_element(v.begin(), v.end());
  double sum = 0;
  for (double x : v) sum += x;
  s.mean = sum / v.size();
  double ss = 0;
  for (double x : v) ss += (x - s.mean) * (x - s.mean);
  s.sd = v.size() > 1 ? std::sqrt(ss / (v.size() - 1)) : 0;
  return s;
}

struct Score {
  std::string key, name, unit;
  std::vector<double> in, out;  // per image, or per batch for the typicality test
  ood::Metrics m;
  std::vector<ood::RocPoint> roc;
};

// ---- JSON ----
std::string num(double v) {
  if (!std::isfinite(v)) return "null";
  char buf[40];
  std::snprintf(buf, sizeof buf, "%.9g", v);
  return buf;
}
std::string str(const std::string &s) {
  std::string o = "\"";
  for (char ch : s) {
    const unsigned char u = static_cast<unsigned char>(ch);
    if (ch == '"' || ch == '\\') {
      o += '\\';
      o += ch;
    } else if (u < 0x20) {
      char buf[8];
      std::snprintf(buf, sizeof buf, "\\u%04x", u);
      o += buf;
    } else {
      o += ch;
    }
  }
  return o + "\"";
}
std::string array(const std::vector<double> &v) {
  std::string o = "[";
  for (size_t i = 0; i < v.size(); ++i) o += (i ? "," : "") + num(v[i]);
  return o + "]";
}
std::string stats_json(const Stats &s) {
  return "{\"n\": " + std::to_string(s.n) + ", \"mean\": " + num(s.mean) +
         ", \"sd\": " + num(s.sd) + ", \"min\": " + num(s.min) + ", \"max\": " + num(s.max) + "}";
}

// ---- SVG: histograms of bits/dim (left) and ROC curves (right) ----
std::string xml(const std::string &t) {
  std::string o;
  for (char ch : t) {
    if (ch == '<')
      o += "&lt;";
    else if (ch == '>')
      o += "&gt;";
    else if (ch == '&')
      o += "&amp;";
    else if (ch == '"')
      o += "&quot;";
    else if (static_cast<unsigned char>(ch) >= 0x20)
      o += ch;
  }
  return o;
}
std::string fmt(const char *f, double v) {
  char buf[64];
  std::snprintf(buf, sizeof buf, f, v);
  return buf;
}

std::string svg_plot(const std::vector<std::pair<std::string, const std::vector<double> *>> &hists,
                     const std::vector<Score> &scores, const std::string &title) {
  const char *colours[] = {"#1f77b4", "#d62728", "#2ca02c", "#9467bd", "#ff7f0e", "#8c564b"};
  // Legends go below the panels, one line per curve.
  const double legend_lines = static_cast<double>(std::max(hists.size(), scores.size()));
  const double W = 1040, pw = 420, ph = 320, top = 60, legend_y = top + ph + 60;
  const double H = legend_y + 16 * legend_lines + 8;
  const double lx = 70, rx = 590;  // panel origins (left edge)
  std::string s = "<svg xmlns=\"http://www.w3.org/2000/svg\" width=\"" + num(W) + "\" height=\"" +
                  num(H) + "\" font-family=\"sans-serif\" font-size=\"12\">\n" +
                  "<rect width=\"100%\" height=\"100%\" fill=\"white\"/>\n";
  s += "<text x=\"" + num(W / 2) + "\" y=\"24\" text-anchor=\"middle\" font-size=\"14\">" +
       xml(title) + "</text>\n";
  // Histogram range: the 0.5 % and 99.5 % quantiles of all finite values (outliers are clamped
  // into the edge bins).
  std::vector<double> all;
  for (const auto &h : hists)
    for (double v : *h.second)
      if (std::isfinite(v)) all.push_back(v);
  double lo = 0, hi = 1;
  if (!all.empty()) {
    lo = ood::quantile(all, 0.005);
    hi = ood::quantile(all, 0.995);
    if (!(hi > lo)) hi = lo + 1, lo -= 1;
    const double pad = 0.03 * (hi - lo);
    lo -= pad, hi += pad;
  }
  const int bins = 60;
  std::vector<std::vector<double>> dens;
  double ymax = 0;
  for (const auto &h : hists) {
    std::vector<double> c(bins, 0);
    size_t n = 0;
    for (double v : *h.second) {
      if (std::isnan(v)) continue;
      int b = static_cast<int>(std::floor((v - lo) / (hi - lo) * bins));
      c[std::clamp(b, 0, bins - 1)] += 1;
      ++n;
    }
    for (double &x : c) x = n ? x / n : 0;  // fraction per bin
    for (double x : c) ymax = std::max(ymax, x);
    dens.push_back(c);
  }
  if (ymax <= 0) ymax = 1;
  const auto frame = [&](double x0, const std::string &xl, const std::string &yl) {
    s += "<rect x=\"" + num(x0) + "\" y=\"" + num(top) + "\" width=\"" + num(pw) + "\" height=\"" +
         num(ph) + "\" fill=\"none\" stroke=\"black\"/>\n";
    s += "<text x=\"" + num(x0 + pw / 2) + "\" y=\"" + num(top + ph + 36) +
         "\" text-anchor=\"middle\">" + xl + "</text>\n";
    s += "<text transform=\"translate(" + num(x0 - 48) + "," + num(top + ph / 2) +
         ") rotate(-90)\" text-anchor=\"middle\">" + yl + "</text>\n";
  };
  frame(lx, "bits/dim", "fraction of images per bin");
  for (int t = 0; t <= 5; ++t) {
    const double v = lo + (hi - lo) * t / 5, x = lx + pw * t / 5;
    s += "<text x=\"" + num(x) + "\" y=\"" + num(top + ph + 16) + "\" text-anchor=\"middle\">" +
         fmt("%.3g", v) + "</text>\n";
    const double yv = ymax * t / 5, y = top + ph - ph * t / 5;
    s += "<text x=\"" + num(lx - 6) + "\" y=\"" + num(y + 4) + "\" text-anchor=\"end\">" +
         fmt("%.2g", yv) + "</text>\n";
  }
  for (size_t k = 0; k < dens.size(); ++k) {
    std::string pts;
    for (int b = 0; b < bins; ++b) {
      const double x0 = lx + pw * b / bins, x1 = lx + pw * (b + 1) / bins;
      const double y = top + ph - ph * dens[k][b] / ymax;
      pts += num(x0) + "," + num(y) + " " + num(x1) + "," + num(y) + " ";
    }
    const std::string col = colours[k % 6];
    s += "<polyline fill=\"none\" stroke=\"" + col + "\" stroke-width=\"1.5\" points=\"" + pts +
         "\"/>\n";
    s += "<text x=\"" + num(lx) + "\" y=\"" + num(legend_y + 16 * k) + "\" fill=\"" + col + "\">" +
         xml(hists[k].first) + " (n=" + std::to_string(hists[k].second->size()) + ")</text>\n";
  }
  frame(rx, "false positive rate (in-distribution flagged)", "true positive rate (OOD flagged)");
  for (int t = 0; t <= 5; ++t) {
    const double v = t / 5.0;
    s += "<text x=\"" + num(rx + pw * v) + "\" y=\"" + num(top + ph + 16) +
         "\" text-anchor=\"middle\">" + fmt("%.1f", v) + "</text>\n";
    s += "<text x=\"" + num(rx - 6) + "\" y=\"" + num(top + ph - ph * v + 4) +
         "\" text-anchor=\"end\">" + fmt("%.1f", v) + "</text>\n";
  }
  s += "<line x1=\"" + num(rx) + "\" y1=\"" + num(top + ph) + "\" x2=\"" + num(rx + pw) +
       "\" y2=\"" + num(top) + "\" stroke=\"#bbbbbb\" stroke-dasharray=\"4,4\"/>\n";
  for (size_t k = 0; k < scores.size(); ++k) {
    std::string pts;
    // At most ~2000 points per curve: every point when fewer, else a regular subsample (the
    // curve is monotone, so this only drops detail).
    const auto &r = scores[k].roc;
    const size_t step = std::max<size_t>(1, r.size() / 2000);
    for (size_t i = 0; i < r.size(); i += step)
      pts += num(rx + pw * r[i].fpr) + "," + num(top + ph - ph * r[i].tpr) + " ";
    pts += num(rx + pw * r.back().fpr) + "," + num(top + ph - ph * r.back().tpr);
    const std::string col = colours[k % 6];
    s += "<polyline fill=\"none\" stroke=\"" + col + "\" stroke-width=\"1.5\" points=\"" + pts +
         "\"/>\n";
    s += "<text x=\"" + num(rx) + "\" y=\"" + num(legend_y + 16 * k) + "\" fill=\"" + col + "\">" +
         xml(scores[k].name) + ": AUROC " + fmt("%.3f", scores[k].m.auroc) + "</text>\n";
  }
  return s + "</svg>\n";
}

}  // namespace

int cmd_ood(int argc, char **argv) {
  CliArgs args(argc, argv, 2,
               {"--in", "--out", "--background", "--complexity", "--train", "--batch-size",
                "--json", "--plot", "--seed", "--backend", "--threads", "--batch", "--limit"},
               {});
  // Every argument is checked before anything is read or scored.
  if (args.positional().empty()) invalid_argument(std::string("missing the model\n") + kUsage);
  if (args.positional().size() > 1)
    invalid_argument("unexpected argument '" + args.positional()[1] + "'\n" + kUsage);
  if (!args.has("--in") || !args.has("--out"))
    invalid_argument(std::string("--in and --out are required\n") + kUsage);
  const bool complexity = args.has("--complexity");
  if (complexity && args.get("--complexity") != "png")
    invalid_argument("--complexity: '" + args.get("--complexity") +
                     "' is not a known compressor (png)");
  if (args.has("--batch-size") && !args.has("--train"))
    invalid_argument("--batch-size is the typicality test's batch, which needs --train");
  const size_t k = static_cast<size_t>(args.get_int("--batch-size", 5, 1, 1 << 20));
  const std::string plot = args.get("--plot"), json_path = args.get("--json");
  if (args.has("--plot") && !ends_with(plot, ".svg"))
    invalid_argument("--plot: '" + plot + "' must end in .svg (the plot is an SVG file)");
  if (args.has("--json") && json_path.empty()) invalid_argument("--json needs a file name");
  const uint64_t seed = args.get_u64("--seed", 1);
  const int64_t limit = args.get_int("--limit", 0, 0, int64_t{1} << 40);
  SessionOptions opts;
  opts.backend(parse_backend(args.get("--backend", "auto")))
      .threads(static_cast<int>(args.get_int("--threads", 0, 0, 4096)))
      .max_batch(static_cast<size_t>(args.get_int("--batch", 64, 1, 65536)));

  const std::string model_path = args.positional()[0];
  Scorer m(model_path, opts);
  std::unique_ptr<Scorer> bg;
  if (args.has("--background")) bg = std::make_unique<Scorer>(args.get("--background"), opts);

  std::vector<ImageSet> sets;
  for (const char *role : {"in", "out", "train"}) {
    const std::string opt = std::string("--") + role;
    if (!args.has(opt)) continue;
    ImageSet s{role, args.get(opt), {}};
    try {
      s.images = load_images(s.path, limit);
    } catch (const Error &e) {
      throw Error(e.status(), opt + ": " + e.what());
    }
    if (s.images.n == 0) invalid_argument(opt + " '" + s.path + "' holds no images");
    sets.push_back(std::move(s));
  }
  const ImageSet &in_set = sets[0], &out_set = sets[1];
  const ImageSet *train_set = sets.size() > 2 ? &sets[2] : nullptr;
  if (train_set) {
    for (const ImageSet *s : {&in_set, &out_set})
      if (static_cast<size_t>(s->images.n) < k)
        invalid_argument("--" + s->role + " holds " + std::to_string(s->images.n) +
                         " images, fewer than one batch of --batch-size " + std::to_string(k));
    if (static_cast<size_t>(train_set->images.n) < 2)
      invalid_argument("--train needs at least 2 images");
  }

  // Per set: bits/dim under M (and the background), the PNG complexity.
  struct PerSet {
    std::vector<double> bpd, bpd_bg, complexity;
  };
  std::vector<PerSet> per(sets.size());
  size_t non_finite = 0;
  // Every set fitted to both models first, so that a shape mismatch stops before any scoring.
  std::vector<ImageBatch> fitted, fitted_bg;
  for (const ImageSet &s : sets) {
    fitted.push_back(m.fit(s));
    if (bg && s.role != "train") fitted_bg.push_back(bg->fit(s));
  }
  for (size_t i = 0; i < sets.size(); ++i) {
    std::fprintf(stderr, "flowrt ood: scoring %lld %s images (%s)\n",
                 static_cast<long long>(sets[i].images.n), sets[i].role.c_str(),
                 sets[i].path.c_str());
    per[i].bpd = m.bpd(fitted[i], &non_finite);
    if (sets[i].role == "train") continue;  // only the typicality test uses it
    if (complexity) per[i].complexity = png_complexity(fitted[i], m.n_bits);
    if (bg) per[i].bpd_bg = bg->bpd(fitted_bg[i], &non_finite);
  }
  if (non_finite)
    std::fprintf(stderr, "flowrt ood: warning: %zu scores were not finite (NaN counted as +inf)\n",
                 non_finite);

  std::vector<Score> scores;
  const auto add = [&](std::string key, std::string name, std::string unit, std::vector<double> a,
                       std::vector<double> b) {
    Score s{std::move(key), std::move(name), std::move(unit), std::move(a), std::move(b), {}, {}};
    s.m = ood::evaluate(s.in, s.out);
    s.roc = ood::roc_curve(s.in, s.out);
    scores.push_back(std::move(s));
  };
  add("bpd", "bits/dim", "bits/dim", per[0].bpd, per[1].bpd);

  // The typicality test: H from the held-out training images, the threshold by bootstrap.
  double entropy = 0, epsilon = 0, flagged_in = 0, flagged_out = 0;
  const double alpha = 0.99;
  const size_t draws = 10000;
  if (train_set) {
    entropy = stats(per[2].bpd).mean;
    epsilon = ood::bootstrap_threshold(per[2].bpd, entropy, k, draws, alpha, seed);
    std::vector<double> dev[2];
    for (int s = 0; s < 2; ++s) {
      // Batches of consecutive images of a seeded shuffle (the order within a file is not used).
      const std::vector<size_t> order = ood::shuffled_indices(per[s].bpd.size(), seed + 1 + s);
      for (double mean : ood::batch_means(per[s].bpd, order, k))
        dev[s].push_back(std::fabs(mean - entropy));
    }
    const auto frac_over = [&](const std::vector<double> &v) {
      return static_cast<double>(
                 std::count_if(v.begin(), v.end(), [&](double x) { return x > epsilon; })) /
             static_cast<double>(v.size());
    };
    flagged_in = frac_over(dev[0]);
    flagged_out = frac_over(dev[1]);
    add("typicality", "typicality (K=" + std::to_string(k) + ", batches)", "bits/dim", dev[0],
        dev[1]);
    if (k != 1) {
      std::vector<double> d1[2];
      for (int s = 0; s < 2; ++s)
        for (double v : per[s].bpd) d1[s].push_back(std::fabs(v - entropy));
      add("typicality_k1", "typicality (K=1, per image)", "bits/dim", d1[0], d1[1]);
    }
  }
  const bool same_dims = bg && bg->dims == m.dims;
  if (bg) {
    // log p_bg - log p_M in bits per dimension of M.
    std::vector<double> r[2];
    for (int s = 0; s < 2; ++s)
      for (size_t i = 0; i < per[s].bpd.size(); ++i)
        r[s].push_back(per[s].bpd[i] - per[s].bpd_bg[i] * static_cast<double>(bg->dims) /
                                           static_cast<double>(m.dims));
    add("likelihood_ratio", "likelihood ratio (background)", "bits/dim", r[0], r[1]);
  }
  if (complexity) {
    std::vector<double> r[2];
    for (int s = 0; s < 2; ++s)
      for (size_t i = 0; i < per[s].bpd.size(); ++i)
        r[s].push_back(per[s].bpd[i] - per[s].complexity[i]);
    add("complexity", "complexity-corrected (PNG)", "bits/dim", r[0], r[1]);
  }

  // ---- the table ----
  const Stats s_in = stats(per[0].bpd), s_out = stats(per[1].bpd);
  std::printf("model: %s (%lldx%lldx%lld, %d bits, %s backend)\n", model_path.c_str(),
              static_cast<long long>(m.c), static_cast<long long>(m.h), static_cast<long long>(m.w),
              m.n_bits, flowrt_backend_name(m.session.backend()));
  std::printf("in:    %s: %zu images, bits/dim mean %.4f sd %.4f\n", in_set.path.c_str(), s_in.n,
              s_in.mean, s_in.sd);
  std::printf("out:   %s: %zu images, bits/dim mean %.4f sd %.4f\n", out_set.path.c_str(), s_out.n,
              s_out.mean, s_out.sd);
  if (train_set) {
    const Stats st = stats(per[2].bpd);
    std::printf("train: %s: %zu images, bits/dim mean %.4f sd %.4f (= H, the typicality centre)\n",
                train_set->path.c_str(), st.n, st.mean, st.sd);
    std::printf(
        "typicality test, K=%zu: threshold eps=%.4f bits/dim (%.0f %% quantile of "
        "|batch mean - H| over %zu bootstrap batches of --train); flags %.1f %% of in, "
        "%.1f %% of out batches\n",
        k, epsilon, alpha * 100, draws, 100 * flagged_in, 100 * flagged_out);
  }
  if (bg)
    std::printf("background: %s%s\n", bg->path.c_str(),
                same_dims ? "" : " (another image size: log-likelihoods compared per image)");
  if (complexity) {
    const Stats c_in = stats(per[0].complexity), c_out = stats(per[1].complexity);
    std::printf("PNG complexity: in %.4f, out %.4f bits/dim (mean)\n", c_in.mean, c_out.mean);
  }
  std::printf("\n%-34s %8s %8s %11s %7s %7s\n", "score (higher = more anomalous)", "AUROC", "AUPR",
              "FPR@95%TPR", "n_in", "n_out");
  for (const Score &sc : scores)
    std::printf("%-34s %8.4f %8.4f %11.4f %7zu %7zu\n", sc.name.c_str(), sc.m.auroc, sc.m.aupr,
                sc.m.fpr_at_95_tpr, sc.m.n_in, sc.m.n_out);

  // ---- outputs ----
  if (args.has("--json")) {
    std::string j = "{\n  \"model\": " + str(model_path) + ",\n";
    j += "  \"image\": [" + std::to_string(m.c) + ", " + std::to_string(m.h) + ", " +
         std::to_string(m.w) + "],\n  \"n_bits\": " + std::to_string(m.n_bits) + ",\n";
    j += "  \"backend\": " + str(flowrt_backend_name(m.session.backend())) + ",\n";
    j += "  \"in\": " + str(in_set.path) + ",\n  \"out\": " + str(out_set.path) + ",\n";
    j += "  \"train\": " + (train_set ? str(train_set->path) : std::string("null")) + ",\n";
    j += "  \"background\": " + (bg ? str(bg->path) : std::string("null")) + ",\n";
    j += "  \"seed\": " + std::to_string(seed) + ",\n";
    j += "  \"non_finite_scores\": " + std::to_string(non_finite) + ",\n";
    j += "  \"bpd\": {\"in\": " + stats_json(s_in) + ", \"out\": " + stats_json(s_out);
    if (train_set) j += ", \"train\": " + stats_json(stats(per[2].bpd));
    j += "},\n";
    if (bg)
      j += "  \"bpd_background\": {\"in\": " + stats_json(stats(per[0].bpd_bg)) +
           ", \"out\": " + stats_json(stats(per[1].bpd_bg)) + "},\n";
    if (complexity)
      j += "  \"complexity_png_bpd\": {\"in\": " + stats_json(stats(per[0].complexity)) +
           ", \"out\": " + stats_json(stats(per[1].complexity)) + "},\n";
    if (train_set)
      j += "  \"typicality\": {\"batch_size\": " + std::to_string(k) + ", \"H\": " + num(entropy) +
           ", \"epsilon\": " + num(epsilon) + ", \"alpha\": " + num(alpha) +
           ", \"bootstrap_draws\": " + std::to_string(draws) +
           ", \"flagged_in\": " + num(flagged_in) + ", \"flagged_out\": " + num(flagged_out) +
           "},\n";
    j += "  \"scores\": {\n";
    for (size_t i = 0; i < scores.size(); ++i) {
      const Score &sc = scores[i];
      j += "    " + str(sc.key) + ": {\"name\": " + str(sc.name) +
           ", \"auroc\": " + num(sc.m.auroc) + ", \"aupr\": " + num(sc.m.aupr) +
           ", \"fpr_at_95_tpr\": " + num(sc.m.fpr_at_95_tpr) +
           ", \"threshold_at_95_tpr\": " + num(sc.m.threshold_at_95_tpr) +
           ", \"n_in\": " + std::to_string(sc.m.n_in) +
           ", \"n_out\": " + std::to_string(sc.m.n_out) + "}" + (i + 1 < scores.size() ? "," : "") +
           "\n";
    }
    j += "  },\n  \"per_image\": {\n";
    for (int s = 0; s < 2; ++s) {
      j += "    \"" + std::string(s ? "out" : "in") + "\": {\"bpd\": " + array(per[s].bpd);
      if (bg) j += ", \"bpd_background\": " + array(per[s].bpd_bg);
      if (complexity) j += ", \"complexity_png_bpd\": " + array(per[s].complexity);
      j += std::string("}") + (s == 0 || train_set ? "," : "") + "\n";
    }
    if (train_set) j += "    \"train\": {\"bpd\": " + array(per[2].bpd) + "}\n";
    j += "  }\n}\n";
    atomic_write_file(json_path, j.data(), j.size());
  }
  if (args.has("--plot")) {
    // Legends name the files without their directories (the JSON has the full paths).
    const auto base = [](const std::string &p) {
      const size_t slash = p.find_last_of('/');
      return slash == std::string::npos || slash + 1 == p.size() ? p : p.substr(slash + 1);
    };
    std::vector<std::pair<std::string, const std::vector<double> *>> hists = {
        {"in: " + base(in_set.path), &per[0].bpd}, {"out: " + base(out_set.path), &per[1].bpd}};
    if (train_set) hists.push_back({"train: " + base(train_set->path), &per[2].bpd});
    const std::string svg = svg_plot(hists, scores, "flowrt ood: " + model_path);
    atomic_write_file(plot, svg.data(), svg.size());
  }
  return 0;
}

}  // namespace flowrt
