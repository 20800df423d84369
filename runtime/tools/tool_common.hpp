// What the `flowrt` subcommands share: reading input images fitted to a model, session options
// from the common command-line options, and small helpers around the C API.
#pragma once

#include <cstdint>
#include <set>
#include <string>
#include <vector>

#include "cli_args.hpp"
#include "flowrt.hpp"
#include "image_io.hpp"

namespace flowrt {

struct Inputs {
  ImageBatch images;               // fitted to the model's (C, H, W)
  std::vector<std::string> names;  // per image: "a.png", "t10k.gz[17]"
  std::vector<std::string> stems;  // per image, for output file names: "a", "t10k_17"
};

bool is_png(const std::string &path);

// Images from PNG files, IDX image files (raw or gzip; `limit` > 0: the first `limit` of each)
// and directories (their *.png files in name order; `limit` > 0: the first `limit`), fitted to
// the model (fit_to_model). Errors name the file.
Inputs load_inputs(const std::vector<std::string> &paths, const Model &model, int64_t limit);
// Exactly one image from `path`; `what` names it in errors ("A").
ImageBatch load_one_image(const std::string &path, const Model &model, const std::string &what);

// --backend, --threads, --batch: the options every compute command takes.
extern const std::set<std::string> kSessionOptions;
SessionOptions session_options(const CliArgs &args, int64_t default_batch);

// The pixels a model reads and writes back: the top n_bits bits of each (flowrt.h).
std::vector<uint8_t> quantised(const Model &model, const uint8_t *pixels, size_t count);
// How many of `count` pixels differ.
size_t count_differences(const uint8_t *a, const uint8_t *b, size_t count);

// x at the pixels' bin centres (flowrt_pixels_to_x): what the latent and likelihood-term
// functions of flowrt.h take.
std::vector<float> pixels_to_x(const Model &model, size_t n, const uint8_t *pixels);

struct LatentLevel {
  int c = 0, h = 0, w = 0;
  size_t offset = 0;  // where the level starts in an image's z, in floats
  size_t size() const { return static_cast<size_t>(c) * h * w; }
};
std::vector<LatentLevel> latent_levels(const Model &model);

// Writes n frames side by side (make_grid, one row) as a PNG.
void write_strip(const std::string &path, const ImageBatch &frames);

// "/a/b/t10k-images.idx3.gz" -> "t10k-images.idx3"; "x/a.png" -> "a".
std::string file_stem(const std::string &path);

}  // namespace flowrt
