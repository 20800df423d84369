// A folder of PNG images, resized to the model (centre crop to its aspect ratio, box filter).
#include <dirent.h>
#include <sys/stat.h>

#include <algorithm>
#include <cmath>

#include "core/error.hpp"
#include "trainer/datasets/dataset.hpp"

namespace flowrt::train {
namespace {

bool is_directory(const std::string &path) {
  struct stat st {};
  return ::stat(path.c_str(), &st) == 0 && S_ISDIR(st.st_mode);
}

std::vector<std::string> list_pngs(const std::string &dir) {
  DIR *d = ::opendir(dir.c_str());
  if (!d) fail(FLOWRT_IO_ERROR, "'" + dir + "': cannot open directory");
  std::vector<std::string> names;
  while (dirent *e = ::readdir(d)) {
    std::string n = e->d_name;
    std::string lower = n;
    std::transform(lower.begin(), lower.end(), lower.begin(), ::tolower);
    if (lower.size() > 4 && lower.compare(lower.size() - 4, 4, ".png") == 0)
      names.push_back(dir + "/" + n);
  }
  ::closedir(d);
  std::sort(names.begin(), names.end());
  return names;
}

Dataset read_images(const std::vector<std::string> &paths, int64_t limit, const DataRequest &r) {
  Dataset d;
  const int64_t n = limit > 0 ? std::min<int64_t>(limit, paths.size()) : paths.size();
  for (int64_t i = 0; i < n; ++i) {
    ImageBatch img = read_png(paths[i]);
    const int64_t c = r.channels > 0 ? r.channels : img.c;
    img = resize_image(img, c, r.height, r.width);
    if (d.images.n == 0) d.images = {0, img.c, img.h, img.w, {}};
    d.images.pixels.insert(d.images.pixels.end(), img.pixels.begin(), img.pixels.end());
    ++d.images.n;
  }
  return d;
}

}  // namespace

ImageBatch resize_image(const ImageBatch &in, int64_t c, int64_t h, int64_t w) {
  if (in.c != 1 && in.c != 3) invalid_argument("images must have 1 or 3 channels");
  if (c != 1 && c != 3) invalid_argument("the model must have 1 or 3 channels");
  // Centre crop to the target aspect ratio.
  double ch = static_cast<double>(in.h), cw = static_cast<double>(in.w);
  if (cw * h > ch * w)
    cw = ch * w / h;
  else
    ch = cw * h / w;
  const double y_off = (in.h - ch) / 2, x_off = (in.w - cw) / 2;
  const double sy = ch / h, sx = cw / w;
  ImageBatch out{in.n, c, h, w, std::vector<uint8_t>(static_cast<size_t>(in.n * c * h * w))};
  std::vector<double> plane(static_cast<size_t>(in.c * h * w));
  for (int64_t i = 0; i < in.n; ++i) {
    // Box filter: every output pixel averages the source area it covers (fractional edges).
    for (int64_t k = 0; k < in.c; ++k)
      for (int64_t oy = 0; oy < h; ++oy)
        for (int64_t ox = 0; ox < w; ++ox) {
          const double y0 = y_off + oy * sy, y1 = y0 + sy, x0 = x_off + ox * sx, x1 = x0 + sx;
          double acc = 0, area = 0;
          for (int64_t y = static_cast<int64_t>(std::floor(y0)); y < std::ceil(y1); ++y) {
            const double wy = std::min<double>(y + 1, y1) - std::max<double>(y, y0);
            if (wy <= 0) continue;
            for (int64_t x = static_cast<int64_t>(std::floor(x0)); x < std::ceil(x1); ++x) {
              const double wx = std::min<double>(x + 1, x1) - std::max<double>(x, x0);
              if (wx <= 0) continue;
              const int64_t yy = std::clamp<int64_t>(y, 0, in.h - 1),
                            xx = std::clamp<int64_t>(x, 0, in.w - 1);
              acc += wy * wx * in.pixels[((i * in.c + k) * in.h + yy) * in.w + xx];
              area += wy * wx;
            }
          }
          plane[(k * h + oy) * w + ox] = area > 0 ? acc / area : 0;
        }
    for (int64_t k = 0; k < c; ++k)
      for (int64_t p = 0; p < h * w; ++p) {
        double v;
        if (in.c == c)
          v = plane[k * h * w + p];
        else if (in.c == 1)
          v = plane[p];  // grey -> RGB
        else
          v = 0.299 * plane[p] + 0.587 * plane[h * w + p] + 0.114 * plane[2 * h * w + p];
        out.pixels[(i * c + k) * h * w + p] =
            static_cast<uint8_t>(std::clamp(std::lround(v), 0L, 255L));
      }
  }
  return out;
}

int64_t png_folder_channels(const std::string &dir) {
  const std::string train = dir + "/train";
  std::vector<std::string> files = list_pngs(is_directory(train) ? train : dir);
  if (files.empty()) invalid_argument("'" + dir + "': no .png images");
  return read_png(files[0]).c;
}

DataSplit load_png_folder(const std::string &dir, const DataRequest &r) {
  DataSplit s;
  s.name = dir;
  std::vector<std::string> train, test;
  if (is_directory(dir + "/train") && is_directory(dir + "/test")) {
    train = list_pngs(dir + "/train");
    test = list_pngs(dir + "/test");
  } else {
    const std::vector<std::string> all = list_pngs(dir);
    for (size_t i = 0; i < all.size(); ++i) (i % 10 == 9 ? test : train).push_back(all[i]);
  }
  if (train.empty() && r.need_train) invalid_argument("'" + dir + "': no training images (.png)");
  if (test.empty()) invalid_argument("'" + dir + "': no test images (.png)");
  if (r.need_train) s.train = read_images(train, r.limit_train, r);
  s.test = read_images(test, r.limit_test, r);
  return s;
}

}  // namespace flowrt::train
