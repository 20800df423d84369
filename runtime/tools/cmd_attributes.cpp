// `flowrt attributes build` and `flowrt manipulate`: attribute directions in latent space (the
// Glow paper's manipulation vectors) and edits along them.
//
// - attributes build: for each label k of a labelled image set, d_k = mean z of the images with
//   label k - mean z of the others (z from flowrt_encode: every level's latent, the layout of
//   flowrt.h), written as a float32 .npy of shape (n_labels, latent_dim).
// - manipulate --label k --alpha A,B,...: decodes z + alpha * d_k of one image for each alpha
//   (flowrt_decode) into a strip; alpha 0 is the image's own z, which decodes to its pixels.
// - manipulate --project: the coordinate of each image on each direction,
//   <z, d_k> / |d_k| (the length of z's projection on d_k), so that z + alpha * d_k moves the
//   coordinate of direction k by alpha * |d_k|.
#include <algorithm>
#include <cmath>
#include <cstdio>

#include "cli_args.hpp"
#include "commands.hpp"
#include "core/error.hpp"
#include "flowrt.hpp"
#include "image_io.hpp"
#include "npy_io.hpp"
#include "tool_common.hpp"

namespace flowrt {
namespace {

// Images encoded per call, so that z of a large data set is never held at once.
constexpr size_t kChunk = 256;

// Calls fn(first image, count, z of those images) over the inputs in chunks.
template <typename Fn>
void for_each_z(Session &session, const Inputs &in, size_t image_size, Fn &&fn) {
  const size_t n = static_cast<size_t>(in.images.n);
  std::vector<float> z;
  for (size_t first = 0; first < n; first += kChunk) {
    const size_t count = std::min(kChunk, n - first);
    session.encode(count, in.images.pixels.data() + first * image_size, &z);
    fn(first, count, z.data());
  }
}

std::string shape_text(const std::vector<int64_t> &shape) {
  std::string s = "(";
  for (size_t i = 0; i < shape.size(); ++i) s += (i ? ", " : "") + std::to_string(shape[i]);
  return s + (shape.size() == 1 ? ",)" : ")");
}

// The directions file, checked against the model: (n_labels, latent_dim), finite.
NpyArray read_directions(const std::string &path, size_t latent_dim) {
  NpyArray dirs = read_npy_f32(path);
  if (dirs.shape.size() != 2 || dirs.shape[0] < 1 ||
      dirs.shape[1] != static_cast<int64_t>(latent_dim))
    invalid_argument("'" + path + "': shape " + shape_text(dirs.shape) +
                     " does not fit the model, whose latent has " + std::to_string(latent_dim) +
                     " floats per image: (n_labels, " + std::to_string(latent_dim) + ") is needed");
  for (size_t i = 0; i < dirs.data.size(); ++i)
    if (!std::isfinite(dirs.data[i]))
      invalid_argument("'" + path + "': direction " + std::to_string(i / latent_dim) +
                       " holds a non-finite value at element " + std::to_string(i % latent_dim));
  return dirs;
}

double norm(const float *v, size_t d) {
  double s = 0;
  for (size_t i = 0; i < d; ++i) s += static_cast<double>(v[i]) * v[i];
  return std::sqrt(s);
}

int attributes_build(int argc, char **argv) {
  std::set<std::string> options = kSessionOptions;
  options.insert({"--images", "--labels", "--limit", "-o"});
  CliArgs args(argc, argv, 3, options, {}, {{"--out", "-o"}});
  if (args.positional().size() != 1)
    invalid_argument(
        "usage: flowrt attributes build M.flow --images IDX_OR_DIR --labels LABELS_IDX "
        "[--limit N] -o dirs.npy");
  const std::string images = args.require("--images"), labels_path = args.require("--labels");
  const std::string out = args.require("-o");
  const int64_t limit = args.get_int("--limit", 0, 0, int64_t{1} << 40);

  Model model(args.positional()[0]);
  const Inputs in = load_inputs({images}, model, limit);
  const size_t n = static_cast<size_t>(in.images.n);
  std::vector<uint8_t> labels = read_idx_labels(labels_path);
  if (labels.size() < n || (limit == 0 && labels.size() != n))
    invalid_argument("'" + labels_path + "' holds " + std::to_string(labels.size()) +
                     " labels for the " + std::to_string(n) + " images of '" + images + "'");
  labels.resize(n);
  const size_t n_labels = static_cast<size_t>(*std::max_element(labels.begin(), labels.end())) + 1;
  const size_t d = model.latent_dim(), px = model.image_size();

  Session session(model, session_options(args, static_cast<int64_t>(std::min(n, kChunk))));
  std::vector<double> sum(n_labels * d, 0.0), total(d, 0.0);
  std::vector<size_t> count(n_labels, 0);
  for_each_z(session, in, px, [&](size_t first, size_t k, const float *z) {
    for (size_t i = 0; i < k; ++i) {
      const size_t label = labels[first + i];
      ++count[label];
      double *s = sum.data() + label * d;
      const float *zi = z + i * d;
      for (size_t j = 0; j < d; ++j) {
        s[j] += zi[j];
        total[j] += zi[j];
      }
    }
  });

  std::vector<float> dirs(n_labels * d, 0.0f);
  std::printf("label\timages\t|direction|\n");
  for (size_t k = 0; k < n_labels; ++k) {
    const size_t rest = n - count[k];
    if (count[k] == 0 || rest == 0) {
      std::fprintf(stderr,
                   "flowrt attributes: warning: %s images have label %zu: its direction is zero\n",
                   count[k] == 0 ? "no" : "all", k);
    } else {
      for (size_t j = 0; j < d; ++j) {
        const double s = sum[k * d + j];
        dirs[k * d + j] = static_cast<float>(s / count[k] - (total[j] - s) / rest);
      }
    }
    std::printf("%zu\t%zu\t%.6f\n", k, count[k], norm(dirs.data() + k * d, d));
  }
  write_npy_f32(out, dirs.data(), {static_cast<int64_t>(n_labels), static_cast<int64_t>(d)});
  std::printf(
      "wrote %s: %zu directions of %zu floats (mean z of label k - mean z of the other labels) "
      "from %zu images (%s backend)\n",
      out.c_str(), n_labels, d, n, flowrt_backend_name(session.backend()));
  return 0;
}

std::vector<double> parse_alphas(const std::string &text) {
  std::vector<double> out;
  for (const std::string &s : split_list(text)) {
    char *end = nullptr;
    const double v = std::strtod(s.c_str(), &end);
    if (*end || !std::isfinite(v) || std::fabs(v) > 1e6)
      invalid_argument("--alpha: '" + s + "' is not a number in [-1e6, 1e6]");
    out.push_back(v);
  }
  if (out.empty() || out.size() > 1024)
    invalid_argument("--alpha: give 1 to 1024 comma-separated values, e.g. -1,-0.5,0,0.5,1");
  return out;
}

int manipulate_project(const CliArgs &args, Model &model, const NpyArray &dirs) {
  const std::vector<std::string> paths(args.positional().begin() + 1, args.positional().end());
  const Inputs in = load_inputs(paths, model, args.get_int("--limit", 0, 0, int64_t{1} << 40));
  const size_t d = model.latent_dim(), n_labels = static_cast<size_t>(dirs.shape[0]);
  std::vector<double> norms(n_labels);
  std::printf("# coordinate on direction k: <z, d_k> / |d_k|; z + alpha*d_k adds alpha*|d_k|\n");
  std::printf("image");
  for (size_t k = 0; k < n_labels; ++k) std::printf("\td%zu", k);
  std::printf("\n|d_k|");
  for (size_t k = 0; k < n_labels; ++k) {
    norms[k] = norm(dirs.data.data() + k * d, d);
    std::printf("\t%.6f", norms[k]);
  }
  std::printf("\n");
  Session session(model, session_options(args, std::min<int64_t>(in.images.n, kChunk)));
  for_each_z(session, in, model.image_size(), [&](size_t first, size_t count, const float *z) {
    for (size_t i = 0; i < count; ++i) {
      std::printf("%s", in.names[first + i].c_str());
      for (size_t k = 0; k < n_labels; ++k) {
        if (norms[k] == 0) {
          std::printf("\t-");
          continue;
        }
        double dot = 0;
        const float *dk = dirs.data.data() + k * d;
        for (size_t j = 0; j < d; ++j) dot += static_cast<double>(z[i * d + j]) * dk[j];
        std::printf("\t%.6f", dot / norms[k]);
      }
      std::printf("\n");
    }
  });
  return 0;
}

}  // namespace

int cmd_attributes(int argc, char **argv) {
  const char *usage =
      "usage: flowrt attributes build M.flow --images IDX_OR_DIR --labels LABELS_IDX [--limit N] "
      "-o dirs.npy";
  if (argc < 3) invalid_argument(usage);
  if (std::string(argv[2]) != "build")
    invalid_argument("unknown attributes command '" + std::string(argv[2]) + "' (build); " + usage);
  return attributes_build(argc, argv);
}

int cmd_manipulate(int argc, char **argv) {
  std::set<std::string> options = kSessionOptions;
  options.insert({"--dirs", "--label", "--alpha", "--limit", "-o"});
  CliArgs args(argc, argv, 2, options, {"--project"}, {{"--out", "-o"}});
  const bool project = args.has("--project");
  if (args.positional().size() < 2 || (!project && args.positional().size() != 2))
    invalid_argument(
        "usage: flowrt manipulate M.flow IMAGE --dirs dirs.npy --label K "
        "[--alpha -1,-0.5,0,0.5,1] -o strip.png\n"
        "       flowrt manipulate M.flow INPUT... --dirs dirs.npy --project");
  if (project && (args.has("--label") || args.has("--alpha") || args.has("-o")))
    invalid_argument("--project prints coordinates: it takes no --label, --alpha or -o");
  if (!project && args.has("--limit")) invalid_argument("--limit goes with --project");
  const std::string dirs_path = args.require("--dirs");

  Model model(args.positional()[0]);
  const size_t d = model.latent_dim(), px = model.image_size();
  const NpyArray dirs = read_directions(dirs_path, d);
  if (project) return manipulate_project(args, model, dirs);

  const int64_t n_labels = dirs.shape[0];
  const size_t label =
      static_cast<size_t>(CliArgs::parse_int("--label", args.require("--label"), 0, n_labels - 1));
  const std::vector<double> alphas = parse_alphas(args.get("--alpha", "-1,-0.5,0,0.5,1"));
  const std::string out = args.require("-o");
  const ImageBatch image = load_one_image(args.positional()[1], model, "IMAGE");

  const size_t n = alphas.size();
  Session session(model, session_options(args, static_cast<int64_t>(n)));
  std::vector<float> z;
  session.encode(1, image.pixels.data(), &z);
  const float *dk = dirs.data.data() + label * d;
  const double dk_norm = norm(dk, d);
  if (dk_norm == 0)
    std::fprintf(stderr, "flowrt manipulate: warning: direction %zu is zero\n", label);
  std::vector<float> frames(n * d);
  for (size_t a = 0; a < n; ++a) {
    float *f = frames.data() + a * d;
    const float alpha = static_cast<float>(alphas[a]);
    for (size_t j = 0; j < d; ++j) f[j] = alphas[a] == 0 ? z[j] : z[j] + alpha * dk[j];
  }
  ImageBatch strip{static_cast<int64_t>(n), model.channels(), model.height(), model.width(), {}};
  session.decode(n, frames.data(), nullptr, &strip.pixels);

  const std::vector<uint8_t> want = quantised(model, image.pixels.data(), px);
  size_t zero_frames = 0, zero_diff = 0;
  for (size_t a = 0; a < n; ++a)
    if (alphas[a] == 0) {
      ++zero_frames;
      zero_diff += count_differences(strip.pixels.data() + a * px, want.data(), px);
    }
  write_strip(out, strip);
  std::printf("wrote %s: %zu frames along direction %zu (|d| = %.6f), alpha", out.c_str(), n, label,
              dk_norm);
  for (size_t a = 0; a < n; ++a) std::printf("%s%g", a ? "," : " ", alphas[a]);
  std::printf(" (%s backend)\n", flowrt_backend_name(session.backend()));
  if (zero_diff) {
    std::fprintf(stderr,
                 "flowrt manipulate: warning: the alpha 0 frame differs from the image in %zu "
                 "pixels (this backend or precision does not invert exactly)\n",
                 zero_diff);
    return 1;
  }
  if (zero_frames) std::printf("alpha 0 reproduces the image's pixels\n");
  return 0;
}

}  // namespace flowrt
