// `flowrt score` and `flowrt reconstruct`: run the encoder on images (PNG files or an IDX file).
#include <algorithm>
#include <cmath>
#include <cstdio>

#include "cli_args.hpp"
#include "commands.hpp"
#include "core/error.hpp"
#include "flowrt.hpp"
#include "image_io.hpp"

namespace flowrt {
namespace {

struct Inputs {
  ImageBatch images;
  std::vector<std::string> names;
};

bool is_png(const std::string &path) {
  return path.size() > 4 && (path.compare(path.size() - 4, 4, ".png") == 0 ||
                             path.compare(path.size() - 4, 4, ".PNG") == 0);
}

Inputs load_inputs(const std::vector<std::string> &paths, const Model &model, int64_t limit) {
  Inputs in;
  const int64_t c = model.channels(), h = model.height(), w = model.width();
  in.images = ImageBatch{0, c, h, w, {}};
  for (const std::string &p : paths) {
    // A PNG larger than the model's image cannot fit it: refused from its header.
    ImageBatch b = is_png(p) ? read_png(p, h, w) : read_idx_images(p, limit);
    try {
      b = fit_to_model(b, c, h, w);
    } catch (const Error &e) {
      throw Error(e.status(), "'" + p + "': " + e.what());
    }
    in.images.pixels.insert(in.images.pixels.end(), b.pixels.begin(), b.pixels.end());
    for (int64_t i = 0; i < b.n; ++i)
      in.names.push_back(b.n == 1 ? p : p + "[" + std::to_string(i) + "]");
    in.images.n += b.n;
  }
  if (in.images.n == 0) invalid_argument("no images to score");
  return in;
}

struct Common {
  Model model;
  Session session;
  Inputs inputs;
};

const std::set<std::string> kOptions = {"--backend", "--threads", "--batch", "--limit"};

Common open_common(const CliArgs &args, const char *usage) {
  if (args.positional().size() < 2) invalid_argument(usage);
  Model model(args.positional()[0]);
  SessionOptions opts;
  opts.backend(parse_backend(args.get("--backend", "auto")))
      .threads(static_cast<int>(args.get_int("--threads", 0, 0, 4096)))
      .max_batch(static_cast<size_t>(args.get_int("--batch", 64, 1, 65536)));
  Session session(model, opts);
  std::vector<std::string> paths(args.positional().begin() + 1, args.positional().end());
  Inputs inputs = load_inputs(paths, model, args.get_int("--limit", 0, 0, int64_t{1} << 40));
  return Common{std::move(model), std::move(session), std::move(inputs)};
}

}  // namespace

int cmd_score(int argc, char **argv) {
  CliArgs args(argc, argv, 2, kOptions, {"--per-image"});
  Common c = open_common(args, "usage: flowrt score M.flow INPUT... (PNG files or an IDX file)");
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
  return 0;
}

int cmd_reconstruct(int argc, char **argv) {
  CliArgs args(argc, argv, 2, kOptions, {});
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
