// Replays the saved corpora of the reader fuzz targets (tests/fuzz/corpus_idx, corpus_png,
// corpus_ckpt: seeds and every input a fuzzer ever found failing) through the same entries, so a
// plain build checks them on every test run.
#include <doctest/doctest.h>

#include <algorithm>
#include <filesystem>
#include <fstream>
#include <iterator>
#include <string>
#include <vector>

#include "fuzz/reader_entries.hpp"

namespace flowrt {
namespace {

struct Replay {
  int files = 0, accepted = 0, refused = 0;
};

template <typename Entry>
Replay replay(const std::string &corpus, Entry entry) {
  std::vector<std::filesystem::path> files;
  for (const auto &e :
       std::filesystem::directory_iterator(std::string(FLOWRT_FUZZ_DIR) + "/" + corpus))
    if (e.is_regular_file()) files.push_back(e.path());
  std::sort(files.begin(), files.end());
  Replay r;
  for (const auto &path : files) {
    INFO(corpus << "/" << path.filename().string());
    std::ifstream f(path, std::ios::binary);
    const std::vector<uint8_t> bytes((std::istreambuf_iterator<char>(f)),
                                     std::istreambuf_iterator<char>());
    CHECK(bytes.size() < 64 * 1024);
    const fuzz::ReaderResult res = entry(bytes.data(), bytes.size());
    CHECK_MESSAGE(res.problem.empty(), res.problem);
    ++r.files;
    (res.accepted ? r.accepted : r.refused)++;
    // Seeds that are neither damaged nor deliberately too large must be read.
    const std::string n = path.filename().string();
    if (n.rfind("truncated_", 0) != 0 && n.rfind("bitflips_", 0) != 0 &&
        n.find("too_large") == std::string::npos && n.rfind("crash-", 0) != 0)
      CHECK_MESSAGE(res.accepted, res.error);
  }
  MESSAGE(corpus << ": " << r.files << " files, " << r.accepted << " read, " << r.refused
                 << " refused");
  return r;
}

TEST_SUITE("fuzz_replay") {
  TEST_CASE("the IDX corpus reads or is refused by name") {
    const Replay r = replay("corpus_idx", fuzz::idx_entry);
    CHECK(r.files >= 21);
    CHECK(r.refused >= 7);
  }
  TEST_CASE("the PNG corpus (flowrt score's input path) reads or is refused by name") {
    const Replay r = replay("corpus_png", fuzz::png_entry);
    CHECK(r.files >= 18);
    CHECK(r.refused >= 7);
  }
  TEST_CASE("the checkpoint corpus reads or is refused by name") {
    const Replay r = replay("corpus_ckpt", fuzz::checkpoint_entry);
    CHECK(r.files >= 9);
    CHECK(r.refused >= 4);
  }
  TEST_CASE("a PNG larger than the model is refused from its header, naming both sizes") {
    ImageBatch b{1, 1, 40, 30, std::vector<uint8_t>(1200, 7)};
    const std::string path = std::filesystem::temp_directory_path() / "flowrt_large.png";
    write_png(path, b);
    try {
      (void)read_png(path, 32, 32);
      FAIL("a 40x30 PNG was read for a 32x32 model");
    } catch (const Error &e) {
      CHECK(std::string(e.what()).find("40x30") != std::string::npos);
      CHECK(std::string(e.what()).find("32x32") != std::string::npos);
    }
    CHECK(read_png(path).h == 40);
    std::filesystem::remove(path);
  }
  TEST_CASE("gzip IDX data is inflated only as far as the images asked for") {
    // 1000 images announced and present, compressed to a few KB: a limit of 2 reads 2.
    std::vector<uint8_t> raw = {0, 0, 8, 3, 0, 0, 3, 232, 0, 0, 0, 28, 0, 0, 0, 28};
    raw.resize(16 + 1000 * 784, 0);
    const std::vector<uint8_t> gz = fuzz::gzip_bytes(raw.data(), raw.size());
    CHECK(gz.size() < 4096);
    CHECK(decode_idx_images(gz.data(), gz.size(), "x.gz", 2).n == 2);
    CHECK(decode_idx_images(gz.data(), gz.size(), "x.gz").n == 1000);
    // Announcing more than the stream holds is refused by name, not allocated.
    raw[6] = 0x7f;  // 0x7f0003e8 images
    const std::vector<uint8_t> lie = fuzz::gzip_bytes(raw.data(), raw.size());
    CHECK_THROWS_WITH_AS(decode_idx_images(lie.data(), lie.size(), "lie.gz"),
                         doctest::Contains("lie.gz"), Error);
  }
}

}  // namespace
}  // namespace flowrt
