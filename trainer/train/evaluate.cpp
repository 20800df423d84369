#include "trainer/train/evaluate.hpp"

#include <algorithm>
#include <vector>

#include "core/error.hpp"
#include "trainer/train/batches.hpp"

namespace flowrt::train {

double evaluate_bits_per_dim(TrainCompute<float> &model, const Dataset &test, int n_bits,
                             int64_t batch, int64_t max_images, int dequantize_samples,
                             uint64_t seed, Communicator *comm) {
  int64_t n = test.size();
  if (max_images > 0) n = std::min(n, max_images);
  if (n == 0) invalid_argument("the test set is empty");
  const int64_t d = test.images.image_size();
  std::vector<float> x;
  // Noise streams of their own, far from the training steps' (which count up from 0).
  constexpr int64_t kEvalStream = int64_t{1} << 50;
  const int draws = std::max(1, dequantize_samples);
  const int64_t batches = (n + batch - 1) / batch;
  const int ranks = comm ? comm->size() : 1, rank = comm ? comm->rank() : 0;
  const int64_t b0 = batches * rank / ranks, b1 = batches * (rank + 1) / ranks;
  std::vector<double> mine;  // this rank's per-image values, draw by draw
  // Batch norms use their running averages, as the exported model does.
  const ModeScope<float> eval(model, Mode::Eval);
  for (int s = 0; s < draws; ++s)
    for (int64_t b = b0; b < b1; ++b) {
      const int64_t i = b * batch, m = std::min(batch, n - i);
      x.resize(static_cast<size_t>(m * d));
      const uint8_t *px = test.images.pixels.data() + i * d;
      if (dequantize_samples > 0)
        dequantize(px, m * d, n_bits, seed, kEvalStream + s * n + i, x.data());
      else
        bin_centres(px, m * d, n_bits, x.data());
      model.forward(x.data(), nullptr, m, false);
      mine.insert(mine.end(), model.bits_per_dim().begin(), model.bits_per_dim().end());
    }
  // Summed in (draw, image) order on every rank: rank r's values are images of its batches,
  // draw by draw, so gather them and add them up draw by draw across the ranks in order.
  std::vector<double> all = comm && ranks > 1 ? comm->allgatherv(mine) : mine;
  double sum = 0;
  if (ranks == 1) {
    for (double v : all) sum += v;
  } else {
    std::vector<int64_t> offset(static_cast<size_t>(ranks) + 1, 0);
    for (int r = 0; r < ranks; ++r) {
      const int64_t r0 = batches * r / ranks, r1 = batches * (r + 1) / ranks;
      const int64_t images = std::min(n, r1 * batch) - std::min(n, r0 * batch);
      offset[r + 1] = offset[r] + images * draws;
    }
    for (int s = 0; s < draws; ++s)
      for (int r = 0; r < ranks; ++r) {
        const int64_t images = (offset[r + 1] - offset[r]) / draws;
        for (int64_t k = 0; k < images; ++k) sum += all[offset[r] + s * images + k];
      }
  }
  return sum / (static_cast<double>(n) * draws);
}

}  // namespace flowrt::train
