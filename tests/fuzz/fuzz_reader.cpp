// libFuzzer targets for the readers of users' files (reader_entries.hpp), one executable per
// reader: FLOWRT_FUZZ_ENTRY names the entry it is built with (idx_entry, png_entry,
// checkpoint_entry). Built with FLOWRT_FUZZ=ON and clang; run with the reader's seed corpus:
//   build-fuzz/bin/fuzz_idx -max_total_time=300 tests/fuzz/corpus_idx
#include <cstdio>
#include <cstdlib>

#include "fuzz/reader_entries.hpp"

extern "C" int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size) {
  const flowrt::fuzz::ReaderResult r = flowrt::fuzz::FLOWRT_FUZZ_ENTRY(data, size);
  if (!r.problem.empty()) {
    std::fprintf(stderr, "flowrt fuzz: %s\n", r.problem.c_str());
    std::abort();
  }
  return 0;
}
