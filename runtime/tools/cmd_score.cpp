// `flowrt score` and `flowrt reconstruct`: run the encoder on images (PNG files, IDX files or
// directories of PNGs). score --per-level and --heatmap break the likelihood down by level and
// by pixel (flowrt_level_terms, flowrt_nll_map).
#include <algorithm>
#include <cmath>
#include <cstdio>
#include <filesystem>
#include <set>
#include <system_error>

#include "cli_args.hpp"
#include "commands.hpp"
#include "core/error.hpp"
#include "flowrt.hpp"
#include "heatmap.hpp"
#include "image_io.hpp"
#include "tool_common.hpp"

namespace flowrt {
namespace {

struct Common {
  Model model;
  Session session;
  Inputs inputs;
};

std::set<std::string> options(std::initializer_list<std::string> extra) {
  std::set<std::string> o = kSessionOptions;
  o.insert("--limit");
  o.insert(extra);
  return o;
}

Common open_common(const CliArgs &args, const char *usage) {
  if (args.positional().size() < 2) invalid_argument(usage);
  Model model(args.positional()[0]);
  Session session(model, session_options(args, 64));
  std::vector<std::string> paths(args.positional().begin() + 1, args.positional().end());
  Inputs inputs = load_inputs(paths, model, args.get_int("--limit", 0, 0, int64_t{1} << 40));
  return Common{std::move(model), std::move(session), std::move(inputs)};
}

constexpr const char *kScoreUsage =
    "usage: flowrt score M.flow INPUT... [--per-level] [--heatmap DIR] (PNG files, IDX files or "
    "directories of PNGs)";

// Up to this many images, --per-level prints a table per image; beyond, mean +- std over them
// (--per-image: always per image).
constexpr size_t kPerImageTables = 8;
// Images whose network inputs x are held at once by the term computations.
constexpr size_t kTermChunk = 256;

// The inputs' x in chunks: fn(first image, count, x of those images).
template <typename Fn>
void for_each_x(const Common &c, Fn &&fn) {
  const size_t n = static_cast<size_t>(c.inputs.images.n), px = c.model.image_size();
  for (size_t first = 0; first < n; first += kTermChunk) {
    const size_t count = std::min(kTermChunk, n - first);
    const std::vector<float> x =
        pixels_to_x(c.model, count, c.inputs.images.pixels.data() + first * px);
    fn(first, count, x.data());
  }
}

// Mean and sample standard deviation (Welford's update, stable for a small spread about a large
// mean: log-dets vary little between images).
struct Stat {
  double mean_ = 0, m2 = 0;
  size_t n = 0;
  void add(double v) {
    ++n;
    const double delta = v - mean_;
    mean_ += delta / static_cast<double>(n);
    m2 += delta * (v - mean_);
  }
  double mean() const { return mean_; }
  double std() const { return n < 2 ? 0 : std::sqrt(m2 / static_cast<double>(n - 1)); }
};

// One table row: a label, a latent shape, then one cell per Stat ("-" when empty). `wide`: the
// columns of the mean +- std table, where a Stat of several values shows its std too.
void print_row(const std::string &level, const std::string &shape, const Stat *cols, size_t ncols,
               bool wide) {
  std::printf("%-6s %-10s", level.c_str(), shape.c_str());
  for (size_t k = 0; k < ncols; ++k) {
    char cell[64];
    if (cols[k].n == 0)
      std::snprintf(cell, sizeof cell, "-");
    else if (wide && cols[k].n > 1)
      std::snprintf(cell, sizeof cell, "%.6f +- %.3g", cols[k].mean(), cols[k].std());
    else
      std::snprintf(cell, sizeof cell, "%.6f", cols[k].mean());
    std::printf(wide ? " %24s" : " %15s", cell);
  }
  std::printf("\n");
}

// --per-level: each level's log p(z_l | prior) and log|det| (flowrt_level_terms), in nats and
// as their share of bits/dim (-nats / (D ln 2)), the quantisation bins' share (n_bits), and a
// check that they add up to the bits/dim encode gave. Returns 1 when they do not (to 1e-5).
int print_level_terms(Common &c, const std::vector<double> &bpd, bool per_image) {
  const std::vector<LatentLevel> levels = latent_levels(c.model);
  const size_t L = levels.size(), n = bpd.size();
  const double D = static_cast<double>(c.model.image_size()), to_bits = -1.0 / (D * std::log(2.0));
  const int nb = c.model.n_bits();
  const double bins_nats = -D * nb * std::log(2.0);  // log of the bins' volume, 2^-n_bits per dim
  std::vector<double> lp, ld;
  lp.reserve(n * L);
  ld.reserve(n * L);
  for_each_x(c, [&](size_t, size_t count, const float *x) {
    const Session::LevelTerms t = c.session.level_terms(count, x);
    lp.insert(lp.end(), t.log_prior.begin(), t.log_prior.end());
    ld.insert(ld.end(), t.log_det.begin(), t.log_det.end());
  });

  std::printf(
      "\nper-level terms, in nats: log P(x) = sum over levels of (log p(z_l) + log-det) + D log "
      "2^-n_bits (the bins); bits/dim = -nats / (D ln 2), D = %.0f, n_bits = %d\n",
      D, nb);
  double worst = 0;
  const size_t groups = per_image ? n : 1;
  for (size_t g = 0; g < groups; ++g) {
    const size_t i0 = per_image ? g : 0, i1 = per_image ? g + 1 : n;
    if (per_image)
      std::printf("%s\n", c.inputs.names[g].c_str());
    else
      std::printf("mean +- std over %zu images\n", n);
    std::printf("%-6s %-10s", "level", "latent");
    const char *heads[] = {"log p(z_l) nats", "bits/dim", "log-det nats", "bits/dim",
                           "level bits/dim"};
    for (const char *h : heads) std::printf(per_image ? " %15s" : " %24s", h);
    std::printf("\n");
    Stat total[5];
    for (size_t l = 0; l < L; ++l) {
      Stat cols[5];
      for (size_t i = i0; i < i1; ++i) {
        const double p = lp[i * L + l], d = ld[i * L + l];
        cols[0].add(p);
        cols[1].add(p * to_bits);
        cols[2].add(d);
        cols[3].add(d * to_bits);
        cols[4].add((p + d) * to_bits);
      }
      const LatentLevel &v = levels[l];
      print_row(std::to_string(l),
                std::to_string(v.c) + "x" + std::to_string(v.h) + "x" + std::to_string(v.w), cols,
                5, !per_image);
    }
    Stat bins[5];
    bins[0].add(bins_nats);
    bins[4].add(nb);
    print_row("bins", std::to_string(nb) + " bits", bins, 5, !per_image);
    for (size_t i = i0; i < i1; ++i) {
      double p = 0, d = 0;
      for (size_t l = 0; l < L; ++l) {
        p += lp[i * L + l];
        d += ld[i * L + l];
      }
      const double sum_bits = (p + d + bins_nats) * to_bits;
      total[0].add(p);
      total[1].add(p * to_bits);
      total[3].add(d * to_bits);
      total[4].add(sum_bits);
      total[2].add(d);
      worst = std::max(worst, std::fabs(sum_bits - bpd[i]));
      if (per_image) {
        print_row("total", "", total, 5, false);
        std::printf("check: the terms add up to %.6f bits/dim, score gave %.6f (difference %.1e)\n",
                    sum_bits, bpd[i], std::fabs(sum_bits - bpd[i]));
      }
    }
    if (!per_image) {
      print_row("total", "", total, 5, true);
      std::printf(
          "check: the terms add up to every image's bits/dim within %.1e (the largest "
          "difference over %zu images)\n",
          worst, n);
    }
  }
  if (worst > 1e-5) {
    std::fprintf(stderr,
                 "flowrt score: the per-level terms differ from the bits/dim by up to %.3e\n",
                 worst);
    return 1;
  }
  return 0;
}

// --heatmap DIR: DIR/<stem>_nll.png per image (render_heatmap) of its NLL per pixel in bits,
// -log2 P(x) spread over the pixel grid by flowrt_nll_map plus the C * n_bits bits of its bins,
// so that the map's mean divided by C is the image's bits/dim.
void write_heatmaps(Common &c, const std::vector<double> &bpd, const std::string &dir) {
  const size_t hw = static_cast<size_t>(c.model.height()) * c.model.width();
  const double bins_bits = static_cast<double>(c.model.channels()) * c.model.n_bits();
  std::set<std::string> used;
  for_each_x(c, [&](size_t first, size_t count, const float *x) {
    const std::vector<double> nll = c.session.nll_map(count, x);
    std::vector<double> bits(hw);
    for (size_t i = 0; i < count; ++i) {
      const size_t img = first + i;
      double lo = 0, hi = 0, mean = 0;
      for (size_t p = 0; p < hw; ++p) {
        bits[p] = nll[i * hw + p] / std::log(2.0) + bins_bits;
        lo = p ? std::min(lo, bits[p]) : bits[p];
        hi = p ? std::max(hi, bits[p]) : bits[p];
        mean += bits[p];
      }
      mean /= static_cast<double>(hw);
      std::string stem = c.inputs.stems[img];
      if (!used.insert(stem).second) {
        stem += "_" + std::to_string(img);
        used.insert(stem);
      }
      const std::string path = (std::filesystem::path(dir) / (stem + "_nll.png")).string();
      write_png(path, render_heatmap(c.inputs.images, static_cast<int64_t>(img), bits.data()));
      std::printf("wrote %s: bits per pixel %.3f .. %.3f, mean / C = %.6f bits/dim (score %.6f)\n",
                  path.c_str(), lo, hi, mean / c.model.channels(), bpd[img]);
    }
  });
}

}  // namespace

int cmd_score(int argc, char **argv) {
  CliArgs args(argc, argv, 2, options({"--heatmap"}), {"--per-image", "--per-level"});
  if (args.has("--heatmap")) {  // before any work, so that a bad directory fails at once
    std::error_code ec;
    std::filesystem::create_directories(args.get("--heatmap"), ec);
    if (ec)
      fail(FLOWRT_IO_ERROR,
           "--heatmap: cannot create directory '" + args.get("--heatmap") + "': " + ec.message());
  }
  Common c = open_common(args, kScoreUsage);
  const size_t n = static_cast<size_t>(c.inputs.images.n);
  std::vector<double> bpd = c.session.encode(n, c.inputs.images.pixels.data());
  const bool per_image = args.has("--per-image") || n <= 64;
  double sum = 0;
  for (size_t i = 0; i < n; ++i) {
    sum += bpd[i];
    if (per_image) std::printf("%s\t%.6f\n", c.inputs.names[i].c_str(), bpd[i]);
  }
  std::printf("mean bits/dim over %zu images: %.6f (%s backend)\n", n, sum / n,
              flowrt_backend_name(c.session.backend()));
  int rc = 0;
  if (args.has("--per-level"))
    rc = print_level_terms(c, bpd, args.has("--per-image") || n <= kPerImageTables);
  if (args.has("--heatmap")) write_heatmaps(c, bpd, args.get("--heatmap"));
  return rc;
}

int cmd_reconstruct(int argc, char **argv) {
  CliArgs args(argc, argv, 2, options({}), {});
  Common c = open_common(args, "usage: flowrt reconstruct M.flow INPUT...");
  const size_t n = static_cast<size_t>(c.inputs.images.n);
  const int nb = c.model.n_bits();
  std::vector<float> z, x;
  std::vector<uint8_t> px;
  c.session.encode(n, c.inputs.images.pixels.data(), &z);
  c.session.decode(n, z.data(), &x, &px);
  double max_abs = 0, max_in = 0;
  size_t mismatched = 0;
  for (size_t k = 0; k < x.size(); ++k) {
    const uint8_t p = c.inputs.images.pixels[k];
    const double orig = (static_cast<double>(p >> (8 - nb)) + 0.5) / (1 << nb) - 0.5;
    max_abs = std::max(max_abs, std::fabs(x[k] - orig));
    max_in = std::max(max_in, std::fabs(orig));
    const uint8_t expect = static_cast<uint8_t>((p >> (8 - nb)) << (8 - nb));
    if (px[k] != expect) ++mismatched;
  }
  std::printf("images: %zu\n", n);
  std::printf("max_abs_error: %.3e\n", max_abs);
  std::printf("max_rel_error: %.3e\n", max_in > 0 ? max_abs / max_in : 0.0);
  std::printf("pixels_changed: %zu of %zu\n", mismatched, x.size());
  return mismatched == 0 ? 0 : 1;
}

}  // namespace flowrt
