// libFuzzer target for the .flow loader: arbitrary bytes through flowrt_model_from_memory and, for
// small models that load, one encode/decode/sample on the reference backend (fuzz_entry.hpp).
// Built with FLOWRT_FUZZ=ON and clang; run with the seed corpus:
//   build-fuzz/bin/fuzz_load_flow -max_total_time=300 tests/fuzz/corpus
#include <cstdio>
#include <cstdlib>

#include "fuzz/fuzz_entry.hpp"

extern "C" int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size) {
  const flowrt::fuzz::EntryResult r = flowrt::fuzz::run_entry(data, size);
  if (!r.problem.empty()) {
    std::fprintf(stderr, "flowrt fuzz: %s (load: %s: %s)\n", r.problem.c_str(),
                 flowrt_status_string(r.load), r.load_message.c_str());
    std::abort();
  }
  return 0;
}
