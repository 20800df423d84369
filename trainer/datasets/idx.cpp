// MNIST and Fashion-MNIST in their IDX files (raw or gzip-compressed).
#include <sys/stat.h>

#include "core/error.hpp"
#include "trainer/datasets/dataset.hpp"

namespace flowrt::train {
namespace {

// `dir/name` or `dir/name.gz`, whichever exists.
std::string find_file(const std::string &dir, const std::string &name) {
  struct stat st {};
  for (const std::string &p : {dir + "/" + name, dir + "/" + name + ".gz"})
    if (::stat(p.c_str(), &st) == 0) return p;
  fail(FLOWRT_IO_ERROR, "'" + dir + "/" + name + "[.gz]': file not found");
}

Dataset read_pair(const std::string &dir, const std::string &prefix, int64_t limit,
                  const DataRequest &r) {
  const std::string images_path = find_file(dir, prefix + "-images-idx3-ubyte");
  const std::string labels_path = find_file(dir, prefix + "-labels-idx1-ubyte");
  Dataset d;
  d.images = read_idx_images(images_path, limit);
  const std::vector<uint8_t> labels = read_idx_labels(labels_path, limit);
  if (static_cast<int64_t>(labels.size()) != d.images.n)
    invalid_argument("'" + labels_path + "' has " + std::to_string(labels.size()) + " labels for " +
                     std::to_string(d.images.n) + " images in '" + images_path + "'");
  d.labels.assign(labels.begin(), labels.end());
  if (r.channels > 0) d.images = fit_to_model(d.images, r.channels, r.height, r.width);
  return d;
}

}  // namespace

DataSplit load_idx(const std::string &dir, const DataRequest &r) {
  DataSplit s;
  s.name = r.data;
  if (r.need_train) s.train = read_pair(dir, "train", r.limit_train, r);
  s.test = read_pair(dir, "t10k", r.limit_test, r);
  return s;
}

}  // namespace flowrt::train
