#include "trainer/train/batches.hpp"

#include "core/philox.hpp"

namespace flowrt::train {
namespace {

constexpr uint32_t kDomainOrder = 0x4f524452u;    // "ORDR"
constexpr uint32_t kDomainDequant = 0x44514e54u;  // "DQNT"

}  // namespace

float philox_uniform(uint64_t seed, uint32_t domain, uint64_t stream, uint64_t index) {
  const uint64_t block = index >> 2;
  const Philox4 r =
      philox4x32_10(static_cast<uint32_t>(block), static_cast<uint32_t>(block >> 32),
                    static_cast<uint32_t>(stream), static_cast<uint32_t>(stream >> 32),
                    static_cast<uint32_t>(seed), static_cast<uint32_t>(seed >> 32) ^ domain);
  return static_cast<float>(r.v[index & 3] >> 8) * (1.0f / 16777216.0f);
}

std::vector<int64_t> epoch_order(int64_t n, uint64_t seed, int64_t epoch) {
  std::vector<int64_t> order(static_cast<size_t>(n));
  for (int64_t i = 0; i < n; ++i) order[i] = i;
  for (int64_t i = n - 1; i > 0; --i) {
    const double u = philox_uniform(seed, kDomainOrder, static_cast<uint64_t>(epoch), i);
    const int64_t j = std::min<int64_t>(i, static_cast<int64_t>(u * static_cast<double>(i + 1)));
    std::swap(order[i], order[j]);
  }
  return order;
}

void dequantize(const uint8_t *pixels, int64_t count, int n_bits, uint64_t seed, int64_t step,
                float *x, int64_t first) {
  const float bins = static_cast<float>(1 << n_bits);
  const int shift = 8 - n_bits;
  const int64_t b0 = first / 4, b1 = (first + count + 3) / 4;
#pragma omp parallel for schedule(static) if (count >= (int64_t{1} << 16))
  for (int64_t block = b0; block < b1; ++block) {
    const Philox4 r = philox4x32_10(
        static_cast<uint32_t>(block), static_cast<uint32_t>(static_cast<uint64_t>(block) >> 32),
        static_cast<uint32_t>(step), static_cast<uint32_t>(static_cast<uint64_t>(step) >> 32),
        static_cast<uint32_t>(seed), static_cast<uint32_t>(seed >> 32) ^ kDomainDequant);
    for (int64_t k = 0; k < 4; ++k) {
      const int64_t e = block * 4 + k - first;  // index into this slice
      if (e < 0 || e >= count) continue;
      const float u = static_cast<float>(r.v[k] >> 8) * (1.0f / 16777216.0f);
      x[e] = (static_cast<float>(pixels[e] >> shift) + u) / bins - 0.5f;
    }
  }
}

void bin_centres(const uint8_t *pixels, int64_t count, int n_bits, float *x) {
  const float bins = static_cast<float>(1 << n_bits);
  const int shift = 8 - n_bits;
  for (int64_t e = 0; e < count; ++e)
    x[e] = (static_cast<float>(pixels[e] >> shift) + 0.5f) / bins - 0.5f;
}

}  // namespace flowrt::train
