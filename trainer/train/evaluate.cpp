#include "trainer/train/evaluate.hpp"

#include <algorithm>
#include <vector>

#include "core/error.hpp"
#include "trainer/train/batches.hpp"

namespace flowrt::train {

double evaluate_bits_per_dim(TrainCompute<float> &model, const Dataset &test, int n_bits,
                             int64_t batch, int64_t max_images, int dequantize_samples,
                             uint64_t seed) {
  int64_t n = test.size();
  if (max_images > 0) n = std::min(n, max_images);
  if (n == 0) invalid_argument("the test set is empty");
  const int64_t d = test.images.image_size();
  std::vector<float> x;
  // Noise streams of their own, far from the training steps' (which count up from 0).
  constexpr int64_t kEvalStream = int64_t{1} << 50;
  const int draws = std::max(1, dequantize_samples);
  double sum = 0;
  for (int s = 0; s < draws; ++s)
    for (int64_t i = 0; i < n; i += batch) {
      const int64_t m = std::min(batch, n - i);
      x.resize(static_cast<size_t>(m * d));
      const uint8_t *px = test.images.pixels.data() + i * d;
      if (dequantize_samples > 0)
        dequantize(px, m * d, n_bits, seed, kEvalStream + s * n + i, x.data());
      else
        bin_centres(px, m * d, n_bits, x.data());
      model.forward(x.data(), nullptr, m, false);
      for (double v : model.bits_per_dim()) sum += v;
    }
  return sum / (static_cast<double>(n) * draws);
}

}  // namespace flowrt::train
