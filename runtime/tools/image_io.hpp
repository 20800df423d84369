// Reading and writing images for the command-line tools and the trainer: PNG (libpng), IDX
// (MNIST / Fashion-MNIST, optionally gzip-compressed, through zlib) and sample grids. Images are
// uint8 NCHW. Every failure throws flowrt::Error naming the file and what is wrong.
#pragma once

#include <cstdint>
#include <string>
#include <vector>

namespace flowrt {

struct ImageBatch {
  int64_t n = 0, c = 0, h = 0, w = 0;
  std::vector<uint8_t> pixels;  // n*c*h*w, NCHW
  int64_t image_size() const { return c * h * w; }
};

// The largest image a PNG may declare (per side) unless the caller asks for less.
constexpr int64_t kMaxPngSide = 16384;

// A PNG as 1 (grey) or 3 (RGB) channels; alpha is dropped, 16-bit is reduced to 8, palettes are
// expanded. An image taller than `max_h` or wider than `max_w` is refused from its header, before
// any pixel memory is allocated (a few hundred bytes of PNG can declare gigabytes).
ImageBatch read_png(const std::string &path, int64_t max_h = kMaxPngSide,
                    int64_t max_w = kMaxPngSide);
// The same from bytes in memory; `name` is what error messages call them.
ImageBatch decode_png(const uint8_t *data, size_t size, const std::string &name,
                      int64_t max_h = kMaxPngSide, int64_t max_w = kMaxPngSide);
// Writes one image (c = 1 or 3) atomically.
void write_png(const std::string &path, const ImageBatch &batch, int64_t index = 0);

// IDX3 image files (magic 0x00000803), raw or .gz. `limit` > 0 reads at most that many images.
ImageBatch read_idx_images(const std::string &path, int64_t limit = 0);
// IDX1 label files (magic 0x00000801), raw or .gz.
std::vector<uint8_t> read_idx_labels(const std::string &path, int64_t limit = 0);
// The same from a file's bytes in memory (raw or gzip); `name` is what error messages call them.
// Gzip data is inflated only as far as the header's announced contents (and `limit`) need, so a
// small compressed file cannot make the reader allocate more than the images it holds.
ImageBatch decode_idx_images(const uint8_t *data, size_t size, const std::string &name,
                             int64_t limit = 0);
std::vector<uint8_t> decode_idx_labels(const uint8_t *data, size_t size, const std::string &name,
                                       int64_t limit = 0);

// Reads a whole file, gunzipping it when it starts with the gzip magic.
std::vector<uint8_t> read_maybe_gzip(const std::string &path);
// The first `max_out` bytes (fewer when the data ends first) of bytes that are gzip-compressed
// when they start with the gzip magic and raw otherwise. Corrupt compressed data before that
// point is an error naming `name`.
std::vector<uint8_t> gunzip_prefix(const uint8_t *data, size_t size, const std::string &name,
                                   size_t max_out);

// Fits a batch to a model's (c, h, w): identical shapes pass; smaller images are centred and
// zero-padded (28x28 Fashion-MNIST -> 32x32, as Glow does); grey -> RGB repeats the channel.
// Anything else is an error naming both shapes.
ImageBatch fit_to_model(const ImageBatch &in, int64_t c, int64_t h, int64_t w);

// Tiles n images into one with `cols` columns and `pad` pixels of border.
ImageBatch make_grid(const ImageBatch &in, int64_t cols, int64_t pad = 2);

}  // namespace flowrt
