// The doctest main of flowrt_tests: every suite in tests/*.cpp and tests/backends/*.cpp links
// into this one executable.
#define DOCTEST_CONFIG_IMPLEMENT_WITH_MAIN
#include <doctest/doctest.h>
