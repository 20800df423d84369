// Counter-based standard normals: Philox4x32-10 (Salmon et al., SC'11) keyed by the seed, with
// the counter made of the image index and the element index, so that the noise of element e of
// image i is the same whatever the batch size, the thread split or the backend. The same
// function compiles for CUDA (host and device).
#pragma once

#include <cmath>
#include <cstdint>

#if defined(__CUDACC__)
#define FLOWRT_HD __host__ __device__
#else
#define FLOWRT_HD
#endif

namespace flowrt {

struct Philox4 {
  uint32_t v[4];
};

FLOWRT_HD inline Philox4 philox4x32_10(uint32_t c0, uint32_t c1, uint32_t c2, uint32_t c3,
                                       uint32_t k0, uint32_t k1) {
  const uint32_t M0 = 0xD2511F53u, M1 = 0xCD9E8D57u, W0 = 0x9E3779B9u, W1 = 0xBB67AE85u;
  for (int r = 0; r < 10; ++r) {
    const uint64_t p0 = static_cast<uint64_t>(M0) * c0;
    const uint64_t p1 = static_cast<uint64_t>(M1) * c2;
    const uint32_t hi0 = static_cast<uint32_t>(p0 >> 32), lo0 = static_cast<uint32_t>(p0);
    const uint32_t hi1 = static_cast<uint32_t>(p1 >> 32), lo1 = static_cast<uint32_t>(p1);
    const uint32_t n0 = hi1 ^ c1 ^ k0, n2 = hi0 ^ c3 ^ k1;
    c0 = n0;
    c1 = lo1;
    c2 = n2;
    c3 = lo0;
    k0 += W0;
    k1 += W1;
  }
  return {{c0, c1, c2, c3}};
}

// Two standard normals per counter (Box-Muller in double, rounded to float): element e of image
// `image` uses counter (e / 2, 0, image_lo, image_hi) and takes the first or second normal.
FLOWRT_HD inline float philox_normal(uint64_t seed, uint64_t image, uint64_t element) {
  const uint64_t pair = element >> 1;
  Philox4 r = philox4x32_10(static_cast<uint32_t>(pair), static_cast<uint32_t>(pair >> 32),
                            static_cast<uint32_t>(image), static_cast<uint32_t>(image >> 32),
                            static_cast<uint32_t>(seed), static_cast<uint32_t>(seed >> 32));
  // 53-bit uniforms in (0, 1].
  const double u1 =
      (static_cast<double>((static_cast<uint64_t>(r.v[0]) << 21) ^ (r.v[1] >> 11)) + 1.0) *
      (1.0 / 9007199254740992.0);
  const double u2 = static_cast<double>((static_cast<uint64_t>(r.v[2]) << 21) ^ (r.v[3] >> 11)) *
                    (1.0 / 9007199254740992.0);
  const double radius = sqrt(-2.0 * log(u1));
  const double angle = 6.283185307179586476925286766559 * u2;
  return static_cast<float>((element & 1) ? radius * sin(angle) : radius * cos(angle));
}

}  // namespace flowrt
