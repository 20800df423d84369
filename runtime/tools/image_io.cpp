#include "image_io.hpp"

#include <png.h>
#include <zlib.h>

#include <algorithm>
#include <cmath>
#include <cstdio>
#include <cstring>
#include <fstream>
#include <limits>
#include <memory>

#include "core/atomic_file.hpp"
#include "core/error.hpp"

namespace flowrt {
namespace {

[[noreturn]] void io_error(const std::string &path, const std::string &what) {
  fail(FLOWRT_IO_ERROR, "'" + path + "': " + what);
}
[[noreturn]] void data_error(const std::string &path, const std::string &what) {
  fail(FLOWRT_INVALID_ARGUMENT, "'" + path + "': " + what);
}

std::vector<uint8_t> read_file(const std::string &path) {
  std::ifstream f(path, std::ios::binary);
  if (!f) io_error(path, "cannot open");
  f.seekg(0, std::ios::end);
  const std::streamoff size = f.tellg();
  if (size < 0) io_error(path, "cannot read");
  if (size > (std::streamoff{1} << 32)) data_error(path, "file is larger than 4 GiB");
  f.seekg(0);
  std::vector<uint8_t> bytes(static_cast<size_t>(size));
  if (size > 0 && !f.read(reinterpret_cast<char *>(bytes.data()), size))
    io_error(path, "cannot read");
  return bytes;
}

uint32_t be32(const uint8_t *p) {
  return (uint32_t(p[0]) << 24) | (uint32_t(p[1]) << 16) | (uint32_t(p[2]) << 8) | p[3];
}

bool is_gzip(const uint8_t *data, size_t size) {
  return size >= 2 && data[0] == 0x1f && data[1] == 0x8b;
}

// png_image_free on every way out, exceptions included (it is a no-op once libpng freed it).
struct PngImageGuard {
  png_image *img;
  ~PngImageGuard() { png_image_free(img); }
};

std::string hxw(uint64_t h, uint64_t w) {
  return std::to_string(h) + "x" + std::to_string(w);
}

}  // namespace

std::vector<uint8_t> gunzip_prefix(const uint8_t *data, size_t size, const std::string &name,
                                   size_t max_out) {
  if (!is_gzip(data, size)) return std::vector<uint8_t>(data, data + std::min(size, max_out));
  if (size > std::numeric_limits<uInt>::max()) data_error(name, "compressed data over 4 GiB");
  z_stream zs{};
  if (inflateInit2(&zs, 16 + MAX_WBITS) != Z_OK) io_error(name, "zlib init failed");
  struct End {
    z_stream *zs;
    ~End() { inflateEnd(zs); }
  } end{&zs};
  std::vector<uint8_t> out;
  // Grows with what really comes out, so the announced sizes never decide an allocation.
  out.resize(std::min(max_out, size * 4 + 1024));
  zs.next_in = const_cast<Bytef *>(data);
  zs.avail_in = static_cast<uInt>(size);
  for (;;) {
    if (zs.total_out == max_out) break;
    if (zs.total_out == out.size()) out.resize(std::min(max_out, out.size() * 2));
    zs.next_out = out.data() + zs.total_out;
    zs.avail_out = static_cast<uInt>(
        std::min<size_t>(out.size() - zs.total_out, std::numeric_limits<uInt>::max()));
    const int rc = inflate(&zs, Z_NO_FLUSH);
    if (rc == Z_STREAM_END) break;
    if (rc == Z_BUF_ERROR || (rc == Z_OK && zs.avail_in == 0 && zs.avail_out != 0))
      data_error(name, "truncated gzip data");
    if (rc != Z_OK)
      data_error(name,
                 std::string("corrupt gzip data (") + (zs.msg ? zs.msg : "inflate failed") + ")");
  }
  out.resize(zs.total_out);
  return out;
}

std::vector<uint8_t> read_maybe_gzip(const std::string &path) {
  const std::vector<uint8_t> raw = read_file(path);
  constexpr size_t kMax = size_t{1} << 32;
  std::vector<uint8_t> out = gunzip_prefix(raw.data(), raw.size(), path, kMax + 1);
  if (out.size() > kMax) data_error(path, "decompresses to more than 4 GiB");
  return out;
}

ImageBatch decode_idx_images(const uint8_t *data, size_t size, const std::string &name,
                             int64_t limit) {
  const std::vector<uint8_t> head = gunzip_prefix(data, size, name, 16);
  if (head.size() < 16 || be32(head.data()) != 0x00000803)
    data_error(name, "not an IDX image file (expected magic 0x00000803 and 3 dimensions)");
  const uint64_t n = be32(head.data() + 4), h = be32(head.data() + 8), w = be32(head.data() + 12);
  if (h == 0 || w == 0 || h > 8192 || w > 8192) data_error(name, "absurd image size");
  const uint64_t take = limit > 0 && static_cast<uint64_t>(limit) < n ? limit : n;
  const auto short_of = [&](uint64_t have) {
    data_error(name, "holds " + std::to_string(have) + " bytes of pixels, the header announces " +
                         std::to_string(n) + " images of " + hxw(h, w));
  };
  ImageBatch out;
  out.n = static_cast<int64_t>(take);
  out.c = 1;
  out.h = static_cast<int64_t>(h);
  out.w = static_cast<int64_t>(w);
  const uint64_t bytes = take * h * w;  // < 2^58: no overflow
  if (!is_gzip(data, size)) {
    if (n > (size - 16) / (h * w)) short_of(size - 16);
    out.pixels.assign(data + 16, data + 16 + bytes);
    return out;
  }
  // Compressed: inflate only what the images asked for need.
  if (bytes > (uint64_t{1} << 32)) data_error(name, "announces more than 4 GiB of pixels");
  const std::vector<uint8_t> b = gunzip_prefix(data, size, name, 16 + bytes);
  if (b.size() < 16 + bytes) short_of(b.size() - 16);
  out.pixels.assign(b.begin() + 16, b.end());
  return out;
}

ImageBatch read_idx_images(const std::string &path, int64_t limit) {
  const std::vector<uint8_t> raw = read_file(path);
  return decode_idx_images(raw.data(), raw.size(), path, limit);
}

std::vector<uint8_t> decode_idx_labels(const uint8_t *data, size_t size, const std::string &name,
                                       int64_t limit) {
  const std::vector<uint8_t> head = gunzip_prefix(data, size, name, 8);
  if (head.size() < 8 || be32(head.data()) != 0x00000801)
    data_error(name, "not an IDX label file (expected magic 0x00000801)");
  const uint64_t n = be32(head.data() + 4);
  const uint64_t take = limit > 0 && static_cast<uint64_t>(limit) < n ? limit : n;
  const std::vector<uint8_t> b = is_gzip(data, size) ? gunzip_prefix(data, size, name, 8 + take)
                                                     : std::vector<uint8_t>(data, data + size);
  if ((is_gzip(data, size) ? take : n) > b.size() - 8)
    data_error(name, "truncated: header announces " + std::to_string(n) + " labels");
  return std::vector<uint8_t>(b.begin() + 8, b.begin() + 8 + static_cast<int64_t>(take));
}

std::vector<uint8_t> read_idx_labels(const std::string &path, int64_t limit) {
  const std::vector<uint8_t> raw = read_file(path);
  return decode_idx_labels(raw.data(), raw.size(), path, limit);
}

ImageBatch decode_png(const uint8_t *data, size_t size, const std::string &name, int64_t max_h,
                      int64_t max_w) {
  png_image img;
  std::memset(&img, 0, sizeof img);
  img.version = PNG_IMAGE_VERSION;
  PngImageGuard guard{&img};
  if (!png_image_begin_read_from_memory(&img, data, size))
    data_error(name, std::string("not a readable PNG: ") + img.message);
  const bool colour = (img.format & PNG_FORMAT_FLAG_COLOR) != 0;
  img.format = colour ? PNG_FORMAT_RGB : PNG_FORMAT_GRAY;
  if (img.width == 0 || img.height == 0) data_error(name, "empty image");
  if (img.height > static_cast<uint64_t>(std::min(max_h, kMaxPngSide)) ||
      img.width > static_cast<uint64_t>(std::min(max_w, kMaxPngSide)))
    data_error(name, "the image is " + hxw(img.height, img.width) + " (height x width); at most " +
                         hxw(std::min(max_h, kMaxPngSide), std::min(max_w, kMaxPngSide)) +
                         " is accepted here");
  const int64_t c = colour ? 3 : 1, h = img.height, w = img.width;
  std::vector<uint8_t> hwc(static_cast<size_t>(c * h * w));
  if (!png_image_finish_read(&img, nullptr, hwc.data(), 0, nullptr))
    data_error(name, std::string("corrupt PNG: ") + img.message);
  ImageBatch out{1, c, h, w, std::vector<uint8_t>(hwc.size())};
  for (int64_t y = 0; y < h; ++y)
    for (int64_t x = 0; x < w; ++x)
      for (int64_t k = 0; k < c; ++k) out.pixels[(k * h + y) * w + x] = hwc[(y * w + x) * c + k];
  return out;
}

ImageBatch read_png(const std::string &path, int64_t max_h, int64_t max_w) {
  const std::vector<uint8_t> bytes = read_file(path);
  return decode_png(bytes.data(), bytes.size(), path, max_h, max_w);
}

void write_png(const std::string &path, const ImageBatch &b, int64_t index) {
  if (b.c != 1 && b.c != 3)
    invalid_argument("PNG needs 1 or 3 channels, got " + std::to_string(b.c));
  std::vector<uint8_t> hwc(static_cast<size_t>(b.image_size()));
  const uint8_t *src = b.pixels.data() + index * b.image_size();
  for (int64_t y = 0; y < b.h; ++y)
    for (int64_t x = 0; x < b.w; ++x)
      for (int64_t k = 0; k < b.c; ++k) hwc[(y * b.w + x) * b.c + k] = src[(k * b.h + y) * b.w + x];
  png_image img;
  std::memset(&img, 0, sizeof img);
  img.version = PNG_IMAGE_VERSION;
  img.width = static_cast<png_uint_32>(b.w);
  img.height = static_cast<png_uint_32>(b.h);
  img.format = b.c == 3 ? PNG_FORMAT_RGB : PNG_FORMAT_GRAY;
  png_alloc_size_t size = 0;
  if (!png_image_write_to_memory(&img, nullptr, &size, 0, hwc.data(), 0, nullptr))
    fail(FLOWRT_INTERNAL_ERROR, std::string("PNG encoding failed: ") + img.message);
  std::vector<uint8_t> png(size);
  if (!png_image_write_to_memory(&img, png.data(), &size, 0, hwc.data(), 0, nullptr))
    fail(FLOWRT_INTERNAL_ERROR, std::string("PNG encoding failed: ") + img.message);
  atomic_write_file(path, png.data(), size);
}

ImageBatch fit_to_model(const ImageBatch &in, int64_t c, int64_t h, int64_t w) {
  const auto shape = [](int64_t cc, int64_t hh, int64_t ww) {
    return std::to_string(cc) + "x" + std::to_string(hh) + "x" + std::to_string(ww);
  };
  const bool channels_ok = in.c == c || (in.c == 1 && c == 3);
  if (!channels_ok || in.h > h || in.w > w || (h - in.h) % 2 || (w - in.w) % 2)
    invalid_argument("images are " + shape(in.c, in.h, in.w) + ", the model expects " +
                     shape(c, h, w));
  if (in.c == c && in.h == h && in.w == w) return in;
  ImageBatch out{in.n, c, h, w, std::vector<uint8_t>(static_cast<size_t>(in.n * c * h * w), 0)};
  const int64_t oy = (h - in.h) / 2, ox = (w - in.w) / 2;
  for (int64_t i = 0; i < in.n; ++i)
    for (int64_t k = 0; k < c; ++k) {
      const int64_t sk = in.c == c ? k : 0;
      for (int64_t y = 0; y < in.h; ++y)
        for (int64_t x = 0; x < in.w; ++x)
          out.pixels[((i * c + k) * h + y + oy) * w + x + ox] =
              in.pixels[((i * in.c + sk) * in.h + y) * in.w + x];
    }
  return out;
}

ImageBatch make_grid(const ImageBatch &in, int64_t cols, int64_t pad) {
  if (cols < 1) cols = static_cast<int64_t>(std::ceil(std::sqrt(static_cast<double>(in.n))));
  cols = std::max<int64_t>(1, std::min(cols, in.n));
  const int64_t rows = (in.n + cols - 1) / cols;
  ImageBatch g{1, in.c, rows * (in.h + pad) + pad, cols * (in.w + pad) + pad, {}};
  g.pixels.assign(static_cast<size_t>(g.image_size()), 255);
  for (int64_t i = 0; i < in.n; ++i) {
    const int64_t y0 = pad + (i / cols) * (in.h + pad), x0 = pad + (i % cols) * (in.w + pad);
    for (int64_t k = 0; k < in.c; ++k)
      for (int64_t y = 0; y < in.h; ++y)
        std::memcpy(&g.pixels[(k * g.h + y0 + y) * g.w + x0],
                    &in.pixels[((i * in.c + k) * in.h + y) * in.w], static_cast<size_t>(in.w));
  }
  return g;
}

}  // namespace flowrt
