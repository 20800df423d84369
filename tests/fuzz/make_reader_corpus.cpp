// Writes the seed corpora of the reader fuzz targets (reader_entries.hpp explains byte 0 of each
// input): IDX images and labels, raw and gzip, with and without a limit; PNGs in grey and RGB at
// and below the models' sizes plus one too large; checkpoints of a small model written by the
// trainer, as a payload and as a whole file. Each also gets a truncated and a bit-flipped copy.
//   flowrt_make_reader_corpus tests/fuzz
#include <sys/stat.h>

#include <cstdio>
#include <fstream>
#include <stdexcept>
#include <string>
#include <vector>

#include "fuzz/corpus_files.hpp"
#include "fuzz/reader_entries.hpp"
#include "test_support.hpp"

namespace {

using Bytes = std::vector<uint8_t>;
using flowrt::fuzz::read_seed_file;
using flowrt::fuzz::write_seed_file;

// `mode` then `body`, and its damaged copies: cut in half, and four bits flipped.
void write_seed(const std::string &dir, const std::string &name, uint8_t mode, const Bytes &body,
                flowrt::test::Rng &rng) {
  Bytes b{mode};
  b.insert(b.end(), body.begin(), body.end());
  write_seed_file(dir + "/" + name, b);
  Bytes cut(b.begin(), b.begin() + static_cast<std::ptrdiff_t>(b.size() / 2 + 1));
  write_seed_file(dir + "/truncated_" + name, cut);
  Bytes flipped = b;
  for (int k = 0; k < 4 && flipped.size() > 1; ++k)
    flipped[1 + rng.next() % (flipped.size() - 1)] ^= static_cast<uint8_t>(1u << (rng.next() % 8));
  write_seed_file(dir + "/bitflips_" + name, flipped);
}

Bytes be32(uint32_t v) {
  return {uint8_t(v >> 24), uint8_t(v >> 16), uint8_t(v >> 8), uint8_t(v)};
}

Bytes idx_images(uint32_t n, uint32_t h, uint32_t w, flowrt::test::Rng &rng) {
  Bytes b = be32(0x803);
  for (uint32_t v : {n, h, w}) {
    const Bytes f = be32(v);
    b.insert(b.end(), f.begin(), f.end());
  }
  for (uint64_t k = 0; k < uint64_t{n} * h * w; ++k) b.push_back(static_cast<uint8_t>(rng.next()));
  return b;
}

}  // namespace

int main(int argc, char **argv) {
  if (argc != 2) {
    std::fprintf(stderr, "usage: %s TESTS_FUZZ_DIR\n", argv[0]);
    return 2;
  }
  using namespace flowrt;
  const std::string root = argv[1];
  test::Rng rng(77);

  const std::string idx = root + "/corpus_idx";
  ::mkdir(idx.c_str(), 0755);
  const Bytes fm = idx_images(3, 28, 28, rng), small = idx_images(2, 5, 7, rng);
  write_seed(idx, "images_28x28", 0, fm, rng);
  write_seed(idx, "images_28x28_gzip_here", 1, fm, rng);
  write_seed(idx, "images_28x28_gzip_file", 0, fuzz::gzip_bytes(fm.data(), fm.size()), rng);
  write_seed(idx, "images_5x7_limit1", 1 << 2, small, rng);
  write_seed(idx, "images_32x32", 0, idx_images(1, 32, 32, rng), rng);
  Bytes labels = be32(0x801);
  const Bytes four = be32(4);
  labels.insert(labels.end(), four.begin(), four.end());
  for (uint8_t l : {3, 1, 4, 1}) labels.push_back(l);
  write_seed(idx, "labels", 2, labels, rng);
  write_seed(idx, "labels_gzip_here_limit2", 3 | (2 << 2), labels, rng);

  const std::string png = root + "/corpus_png";
  ::mkdir(png.c_str(), 0755);
  const std::string tmp = root + "/.seed.png";
  auto png_of = [&](int64_t c, int64_t h, int64_t w) {
    ImageBatch b{1, c, h, w, Bytes(static_cast<size_t>(c * h * w))};
    for (uint8_t &p : b.pixels) p = static_cast<uint8_t>(rng.next());
    write_png(tmp, b);
    Bytes bytes = read_seed_file(tmp);
    std::remove(tmp.c_str());
    return bytes;
  };
  write_seed(png, "grey_28x28_for_grey", 1, png_of(1, 28, 28), rng);
  write_seed(png, "rgb_32x32_for_rgb", 0, png_of(3, 32, 32), rng);
  write_seed(png, "grey_28x28_for_rgb", 0, png_of(1, 28, 28), rng);
  write_seed(png, "rgb_16x16_for_rgb", 0, png_of(3, 16, 16), rng);
  write_seed(png, "rgb_3x5_for_grey", 1, png_of(3, 3, 5), rng);
  write_seed(png, "grey_40x40_too_large", 0, png_of(1, 40, 40), rng);

  const std::string ck = root + "/corpus_ckpt";
  ::mkdir(ck.c_str(), 0755);
  test::Variant v;
  v.size = 4;
  v.levels = 1;
  const Graph g = test::variant_graph(v);
  const auto model = train::make_train_compute(g, train::Device::Cpu);
  train::Checkpoint c;
  c.config = train::RunConfig().to_kv();
  c.step = 40;
  c.epoch = 1;
  c.batch_in_epoch = 3;
  c.best_test_bpd = 4.25;
  c.best_step = 20;
  c.elapsed_s = 12.5;
  c.model_flow = write_flow(model->export_graph(model->params().values()));
  c.params = model->params().values();
  c.adam_m.assign(c.params.size(), 0.01f);
  c.adam_v.assign(c.params.size(), 0.0001f);
  c.ema = c.params;
  c.adam_t = 40;
  const std::string tmp_ckpt = root + "/.seed.ckpt";
  train::write_checkpoint(tmp_ckpt, c);
  const Bytes file = read_seed_file(tmp_ckpt);
  std::remove(tmp_ckpt.c_str());
  write_seed(ck, "small_model_file", 1, file, rng);
  write_seed(ck, "small_model_payload", 0, Bytes(file.begin() + 24, file.end() - 8), rng);
  c.ema.clear();
  train::write_checkpoint(tmp_ckpt, c);
  const Bytes no_ema = read_seed_file(tmp_ckpt);
  std::remove(tmp_ckpt.c_str());
  write_seed(ck, "no_ema_payload", 0, Bytes(no_ema.begin() + 24, no_ema.end() - 8), rng);
  return 0;
}
