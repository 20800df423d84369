// Replays the loader fuzz target's saved corpus (tests/fuzz/corpus: seeds and every crasher ever
// found) through the same entry function, so that a plain build runs it on every test run.
#include <doctest/doctest.h>

#include <algorithm>
#include <filesystem>
#include <fstream>
#include <iterator>
#include <string>
#include <vector>

#include "fuzz/fuzz_entry.hpp"

namespace flowrt {
namespace {

TEST_SUITE("fuzz_replay") {
  TEST_CASE("every saved fuzz input loads cleanly or fails with a status and a message") {
    std::vector<std::filesystem::path> files;
    for (const auto &entry : std::filesystem::directory_iterator(FLOWRT_FUZZ_CORPUS_DIR))
      if (entry.is_regular_file()) files.push_back(entry.path());
    std::sort(files.begin(), files.end());
    REQUIRE(files.size() >= 10);
    int loaded = 0, ran = 0, rejected = 0;
    for (const auto &path : files) {
      INFO(path.filename().string());
      std::ifstream f(path, std::ios::binary);
      const std::vector<uint8_t> bytes((std::istreambuf_iterator<char>(f)),
                                       std::istreambuf_iterator<char>());
      CHECK(bytes.size() < 20 * 1024);
      const fuzz::EntryResult r = fuzz::run_entry(bytes.data(), bytes.size());
      CHECK_MESSAGE(r.problem.empty(), r.problem);
      if (r.load == FLOWRT_OK) {
        ++loaded;
        ran += r.ran;
      } else {
        ++rejected;
        CHECK(!r.load_message.empty());
      }
      // The seeds named valid_* are valid models that run.
      if (path.filename().string().rfind("valid_", 0) == 0) {
        CHECK(r.load == FLOWRT_OK);
        CHECK(r.ran);
      }
    }
    MESSAGE(files.size() << " corpus files: " << loaded << " loaded (" << ran << " ran), "
                         << rejected << " rejected");
    CHECK(loaded >= 8);
    CHECK(rejected >= 2);
  }
}

}  // namespace
}  // namespace flowrt
