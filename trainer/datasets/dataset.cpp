#include "trainer/datasets/dataset.hpp"

#include <sys/stat.h>

#include <algorithm>

#include "core/error.hpp"

namespace flowrt::train {
namespace {

bool is_directory(const std::string &path) {
  struct stat st {};
  return ::stat(path.c_str(), &st) == 0 && S_ISDIR(st.st_mode);
}

// The documented default location of a named data set ("" when it has none).
std::string default_dir(const std::string &data) {
  if (data == "fashion-mnist") return "/usr/share/datasets/fashion-mnist";
  return "";
}

std::string resolve_dir(const DataRequest &r) {
  if (!r.data_dir.empty()) return r.data_dir;
  const std::string d = default_dir(r.data);
  if (d.empty()) invalid_argument("--data " + r.data + " needs --data-dir (no default location)");
  return d;
}

}  // namespace

DataSplit load_data(const DataRequest &r) {
  if (r.data == "fashion-mnist" || r.data == "mnist") return load_idx(resolve_dir(r), r);
  if (r.data == "cifar10") return load_cifar10(resolve_dir(r), r);
  if (is_directory(r.data)) return load_png_folder(r.data, r);
  invalid_argument("--data '" + r.data +
                   "': not a known data set (fashion-mnist, mnist, cifar10) nor a directory");
}

ImageSpec default_image(const std::string &data, int levels) {
  if (data == "cifar10") return {3, 32, 32, 8};
  if (data == "fashion-mnist" || data == "mnist" || !is_directory(data)) {
    // 28 rounded up to a multiple of 2^levels: 28 for up to 2 levels, 32 for 3 to 5.
    const int64_t step = int64_t{1} << std::clamp(levels, 0, 20);
    const int64_t side = (28 + step - 1) / step * step;
    return {1, side, side, 8};
  }
  return {png_folder_channels(data), 32, 32, 8};
}

}  // namespace flowrt::train
