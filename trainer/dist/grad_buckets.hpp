// The buckets of a bucketed gradient all-reduce and when each may go, apart from any device: the
// reduction overlaps the backward pass by launching a bucket as soon as every gradient in it is
// final. The gradient is one flat array; layer i's backward pass writes the ranges layers[i]
// (any number, anywhere, possibly shared with other layers), and the backward pass finishes the
// layers from the last to the first.
//
// The plan depends on the layout and the bucket size only, so every rank of a job reduces the
// same buckets in the same order (collectives must match across ranks), however long each
// layer takes. Buckets are packed from the end of the array down (where the backward pass
// starts when parameters are laid out in forward order): whole runs of gradients that become
// final together while they fit, closing at a run's boundary rather than wait for a later
// layer to fill the bucket; a run larger than a bucket is split into full buckets from its top,
// so what is left over goes to the bottom, into the last buckets to go.
#pragma once

#include <cstddef>
#include <functional>
#include <vector>

namespace flowrt::train {

// [offset, offset + count) of a flat gradient.
struct GradRange {
  size_t offset = 0, count = 0;
  size_t end() const { return offset + count; }
  bool operator==(const GradRange &o) const { return offset == o.offset && count == o.count; }
};

// layers[i]: the gradient ranges layer i's backward pass writes.
using GradLayout = std::vector<std::vector<GradRange>>;

class GradBuckets {
 public:
  // `last` is true on exactly one launch of each step, the one completing the gradient; with an
  // empty gradient (no buckets) begin() makes that launch with an empty range.
  using Launch = std::function<void(GradRange bucket, bool last)>;

  // n floats of gradient, buckets of at most max_bucket floats. Throws Error(INVALID_ARGUMENT)
  // for a range past n or a zero bucket size.
  GradBuckets(size_t n, const GradLayout &layers, size_t max_bucket);

  // The plan: in the order the buckets go when the layers finish from the last to the first
  // (and in that order at finish()), disjoint, covering [0, n) exactly.
  const std::vector<GradRange> &buckets() const { return buckets_; }
  size_t size() const { return n_; }

  // One step: begin() once the gradient is zeroed (launches the buckets no layer writes), then
  // layer_done(i) once layer i's gradients are final (each layer at most once, in any order),
  // then finish() (launches every bucket not launched yet). Launches within one call go in plan
  // order.
  void begin(const Launch &launch);
  void layer_done(size_t layer, const Launch &launch);
  void finish(const Launch &launch);

 private:
  void emit(size_t bucket, const Launch &launch);

  size_t n_;
  std::vector<GradRange> buckets_;
  std::vector<std::vector<size_t>> touched_;  // per layer: the buckets it writes, in plan order
  std::vector<size_t> writers_;               // per bucket: how many layers write it
  // Step state.
  std::vector<size_t> pending_;
  std::vector<bool> launched_, done_;
  size_t launches_ = 0;
  bool running_ = false;
};

}  // namespace flowrt::train
