// What a training step sees: which images (a per-epoch shuffle) and their dequantised values.
// All randomness is counter-based (Philox keyed by the run's seed), so a step's batch and noise
// are a function of (seed, step) alone: the same on every run and after a resume.
#pragma once

#include <cstdint>
#include <vector>

namespace flowrt::train {

// Uniform in [0, 1) with 24 random bits, for (seed, stream, index); `domain` separates uses.
float philox_uniform(uint64_t seed, uint32_t domain, uint64_t stream, uint64_t index);

// The order of the n training images in `epoch` (Fisher-Yates driven by Philox).
std::vector<int64_t> epoch_order(int64_t n, uint64_t seed, int64_t epoch);

// x = (p + u) / 2^n_bits - 0.5 with p = pixel >> (8 - n_bits) and u ~ U[0, 1) keyed by
// (seed, step, element index within the global batch); `first` is the index of pixels[0] in it,
// so a rank's slice of a batch gets the noise the whole batch would give those images.
void dequantize(const uint8_t *pixels, int64_t count, int n_bits, uint64_t seed, int64_t step,
                float *x, int64_t first = 0);

// The deterministic evaluation input: the bin centre (p + 0.5) / 2^n_bits - 0.5.
void bin_centres(const uint8_t *pixels, int64_t count, int n_bits, float *x);

}  // namespace flowrt::train
