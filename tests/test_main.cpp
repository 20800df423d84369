// The doctest main of flowrt_tests: every suite in tests/*.cpp, tests/backends/*.cpp and
// tests/trainer/*.cpp links into this one executable. Asked for the CUDA suite on a machine
// without a usable GPU, it says so and exits with 77, which ctest reports as skipped.
#define DOCTEST_CONFIG_IMPLEMENT
#include <doctest/doctest.h>

#include <cstdio>
#include <cstring>

#include "flowrt.h"

int main(int argc, char **argv) {
  for (int i = 1; i < argc; ++i)
    if (std::strcmp(argv[i], "--test-suite=cuda") == 0 &&
        !flowrt_backend_available(FLOWRT_BACKEND_CUDA)) {
      std::printf("CUDA tests skipped: %s\n", flowrt_last_error());
      return 77;
    }
  doctest::Context context(argc, argv);
  return context.run();
}
