// Size arithmetic on untrusted numbers: 64-bit, overflow-checked, never wrapping.
#pragma once

#include <cstdint>
#include <string>

#include "core/error.hpp"

namespace flowrt {

inline uint64_t checked_mul(uint64_t a, uint64_t b, const std::string &what) {
  uint64_t r = 0;
  if (__builtin_mul_overflow(a, b, &r)) invalid_argument(what + ": size overflows 64 bits");
  return r;
}
inline uint64_t checked_add(uint64_t a, uint64_t b, const std::string &what) {
  uint64_t r = 0;
  if (__builtin_add_overflow(a, b, &r)) invalid_argument(what + ": size overflows 64 bits");
  return r;
}

}  // namespace flowrt
