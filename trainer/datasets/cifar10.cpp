// CIFAR-10, binary version: records of 1 label byte + 32x32x3 bytes (R, G, B planes).
#include <sys/stat.h>

#include <cstring>

#include "core/error.hpp"
#include "trainer/datasets/dataset.hpp"

namespace flowrt::train {
namespace {

constexpr int64_t kSide = 32, kImage = 3 * kSide * kSide, kRecord = 1 + kImage;

bool exists(const std::string &p) {
  struct stat st {};
  return ::stat(p.c_str(), &st) == 0;
}

void append_batch(const std::string &path, int64_t limit, Dataset &d) {
  if (!exists(path)) fail(FLOWRT_IO_ERROR, "'" + path + "': file not found");
  const std::vector<uint8_t> bytes = read_maybe_gzip(path);
  if (bytes.empty() || bytes.size() % kRecord)
    invalid_argument("'" + path + "': " + std::to_string(bytes.size()) +
                     " bytes is not a whole number of CIFAR-10 records (" +
                     std::to_string(kRecord) + " bytes each)");
  int64_t n = static_cast<int64_t>(bytes.size()) / kRecord;
  if (limit > 0) n = std::min(n, limit - d.images.n);
  for (int64_t i = 0; i < n; ++i) {
    const uint8_t *rec = bytes.data() + i * kRecord;
    if (rec[0] > 9)
      invalid_argument("'" + path + "': record " + std::to_string(i) + " has label " +
                       std::to_string(rec[0]) + " (expected 0..9)");
    d.labels.push_back(rec[0]);
    d.images.pixels.insert(d.images.pixels.end(), rec + 1, rec + kRecord);
  }
  d.images.n += n;
}

Dataset read_batches(const std::string &dir, const std::vector<std::string> &names, int64_t limit,
                     const DataRequest &r) {
  Dataset d;
  d.images = {0, 3, kSide, kSide, {}};
  for (const std::string &name : names) {
    if (limit > 0 && d.images.n >= limit) break;
    append_batch(dir + "/" + name, limit, d);
  }
  if (r.channels > 0 && (r.channels != 3 || r.height != kSide || r.width != kSide))
    d.images = resize_image(d.images, r.channels, r.height, r.width);
  return d;
}

}  // namespace

DataSplit load_cifar10(const std::string &dir, const DataRequest &r) {
  const std::string sub = dir + "/cifar-10-batches-bin";
  const std::string root = exists(dir + "/test_batch.bin") || !exists(sub) ? dir : sub;
  DataSplit s;
  s.name = "cifar10";
  if (r.need_train)
    s.train = read_batches(root,
                           {"data_batch_1.bin", "data_batch_2.bin", "data_batch_3.bin",
                            "data_batch_4.bin", "data_batch_5.bin"},
                           r.limit_train, r);
  s.test = read_batches(root, {"test_batch.bin"}, r.limit_test, r);
  return s;
}

}  // namespace flowrt::train
