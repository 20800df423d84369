#include "tool_common.hpp"

#include <algorithm>
#include <cctype>
#include <filesystem>
#include <system_error>

#include "commands.hpp"
#include "core/error.hpp"

namespace flowrt {

const std::set<std::string> kSessionOptions = {"--backend", "--threads", "--batch"};

bool is_png(const std::string &path) {
  return path.size() > 4 && (path.compare(path.size() - 4, 4, ".png") == 0 ||
                             path.compare(path.size() - 4, 4, ".PNG") == 0);
}

std::string file_stem(const std::string &path) {
  std::string name = std::filesystem::path(path).filename().string();
  if (name.size() > 3 && name.compare(name.size() - 3, 3, ".gz") == 0) name.resize(name.size() - 3);
  if (is_png(name)) name.resize(name.size() - 4);
  // Only characters that are safe in a file name everywhere.
  for (char &ch : name)
    if (!(std::isalnum(static_cast<unsigned char>(ch)) || ch == '-' || ch == '_' || ch == '.'))
      ch = '_';
  return name.empty() ? std::string("image") : name;
}

namespace {

std::vector<std::string> directory_pngs(const std::string &dir) {
  std::vector<std::string> files;
  std::error_code ec;
  for (std::filesystem::directory_iterator it(dir, ec), end; !ec && it != end; it.increment(ec))
    if (is_png(it->path().filename().string()) && it->is_regular_file())
      files.push_back(it->path().string());
  if (ec) fail(FLOWRT_IO_ERROR, "'" + dir + "': cannot list the directory: " + ec.message());
  std::sort(files.begin(), files.end());
  if (files.empty()) invalid_argument("'" + dir + "': the directory holds no .png files");
  return files;
}

void append(Inputs &in, ImageBatch b, const std::string &path, const Model &model, bool indexed) {
  try {
    b = fit_to_model(b, model.channels(), model.height(), model.width());
  } catch (const Error &e) {
    throw Error(e.status(), "'" + path + "': " + e.what());
  }
  in.images.pixels.insert(in.images.pixels.end(), b.pixels.begin(), b.pixels.end());
  for (int64_t i = 0; i < b.n; ++i) {
    in.names.push_back(indexed ? path + "[" + std::to_string(i) + "]" : path);
    in.stems.push_back(indexed ? file_stem(path) + "_" + std::to_string(i) : file_stem(path));
  }
  in.images.n += b.n;
}

}  // namespace

Inputs load_inputs(const std::vector<std::string> &paths, const Model &model, int64_t limit) {
  Inputs in;
  const int64_t c = model.channels(), h = model.height(), w = model.width();
  in.images = ImageBatch{0, c, h, w, {}};
  for (const std::string &p : paths) {
    std::error_code ec;
    if (std::filesystem::is_directory(p, ec)) {
      std::vector<std::string> files = directory_pngs(p);
      if (limit > 0 && files.size() > static_cast<size_t>(limit))
        files.resize(static_cast<size_t>(limit));
      for (const std::string &f : files) append(in, read_png(f, h, w), f, model, false);
    } else if (is_png(p)) {
      // A PNG larger than the model's image cannot fit it: refused from its header.
      append(in, read_png(p, h, w), p, model, false);
    } else {
      ImageBatch b = read_idx_images(p, limit);
      const bool indexed = b.n != 1;
      append(in, std::move(b), p, model, indexed);
    }
  }
  if (in.images.n == 0) invalid_argument("no input images");
  return in;
}

ImageBatch load_one_image(const std::string &path, const Model &model, const std::string &what) {
  Inputs in = load_inputs({path}, model, 2);
  if (in.images.n != 1)
    invalid_argument(what + " '" + path + "' holds several images; one image is needed here");
  return in.images;
}

SessionOptions session_options(const CliArgs &args, int64_t default_batch) {
  SessionOptions opts;
  opts.backend(parse_backend(args.get("--backend", "auto")))
      .threads(static_cast<int>(args.get_int("--threads", 0, 0, 4096)))
      .max_batch(static_cast<size_t>(args.get_int(
          "--batch", std::max<int64_t>(1, std::min<int64_t>(default_batch, 64)), 1, 65536)));
  return opts;
}

std::vector<uint8_t> quantised(const Model &model, const uint8_t *pixels, size_t count) {
  const int drop = 8 - model.n_bits();
  std::vector<uint8_t> out(pixels, pixels + count);
  for (uint8_t &p : out) p = static_cast<uint8_t>((p >> drop) << drop);
  return out;
}

size_t count_differences(const uint8_t *a, const uint8_t *b, size_t count) {
  size_t d = 0;
  for (size_t i = 0; i < count; ++i) d += a[i] != b[i];
  return d;
}

std::vector<float> pixels_to_x(const Model &model, size_t n, const uint8_t *pixels) {
  std::vector<float> x(n * model.image_size());
  check(flowrt_pixels_to_x(model.get(), n, pixels, x.data()));
  return x;
}

std::vector<LatentLevel> latent_levels(const Model &model) {
  int levels = 0;
  check(flowrt_model_levels(model.get(), &levels));
  std::vector<LatentLevel> out(static_cast<size_t>(levels));
  for (int l = 0; l < levels; ++l) {
    LatentLevel &v = out[static_cast<size_t>(l)];
    check(flowrt_model_latent_shape(model.get(), l, &v.c, &v.h, &v.w, &v.offset));
  }
  return out;
}

void write_strip(const std::string &path, const ImageBatch &frames) {
  write_png(path, make_grid(frames, frames.n));
}

}  // namespace flowrt
