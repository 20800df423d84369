#include "trainer/dist/grad_buckets.hpp"

#include <algorithm>
#include <limits>
#include <numeric>
#include <string>

#include "core/error.hpp"

namespace flowrt::train {
namespace {

constexpr size_t kNone = std::numeric_limits<size_t>::max();

// A run of the gradient that becomes final at one moment of the backward pass: when layer
// `last` finishes (the lowest index among its writers, as the pass goes from the last layer to
// the first), or from the start when `last` is kNone (no layer writes it).
struct Segment {
  GradRange range;
  size_t last = kNone;
};

std::vector<Segment> segments(size_t n, const GradLayout &layers) {
  std::vector<size_t> cuts = {0, n};
  for (size_t i = 0; i < layers.size(); ++i)
    for (const GradRange &r : layers[i]) {
      if (r.offset > n || r.count > n - r.offset)
        invalid_argument("gradient buckets: layer " + std::to_string(i) + " writes [" +
                         std::to_string(r.offset) + ", " + std::to_string(r.offset + r.count) +
                         "), past the gradient's " + std::to_string(n) + " floats");
      cuts.push_back(r.offset);
      cuts.push_back(r.end());
    }
  std::sort(cuts.begin(), cuts.end());
  cuts.erase(std::unique(cuts.begin(), cuts.end()), cuts.end());
  // Elementary intervals [cuts[k], cuts[k + 1]): no range starts or ends inside one.
  std::vector<size_t> last(cuts.size() - 1, kNone);
  for (size_t i = 0; i < layers.size(); ++i)
    for (const GradRange &r : layers[i]) {
      if (r.count == 0) continue;
      for (size_t k = size_t(std::lower_bound(cuts.begin(), cuts.end(), r.offset) - cuts.begin());
           cuts[k] < r.end(); ++k)
        last[k] = last[k] == kNone ? i : std::min(last[k], i);
    }
  std::vector<Segment> out;
  for (size_t k = 0; k + 1 < cuts.size(); ++k) {
    if (!out.empty() && out.back().last == last[k])
      out.back().range.count += cuts[k + 1] - cuts[k];
    else
      out.push_back({{cuts[k], cuts[k + 1] - cuts[k]}, last[k]});
  }
  return out;
}

// Buckets from the top of the gradient down: a segment joins the open bucket while it fits;
// one that does not closes it (at the segment's boundary, so that gradients final early do not
// wait for a layer finishing later just to fill a bucket), and one larger than a bucket leaves
// full buckets from its top and its rest open.
std::vector<GradRange> pack(const std::vector<Segment> &segs, size_t max_bucket) {
  std::vector<GradRange> out;
  GradRange open{};
  for (size_t k = segs.size(); k-- > 0;) {
    const GradRange &s = segs[k].range;
    if (open.count + s.count <= max_bucket) {
      open = {s.offset, open.count + s.count};
      continue;
    }
    if (open.count > 0) out.push_back(open);
    size_t top = s.end();
    for (; top - s.offset > max_bucket; top -= max_bucket)
      out.push_back({top - max_bucket, max_bucket});
    open = {s.offset, top - s.offset};
  }
  if (open.count > 0) out.push_back(open);
  return out;
}

}  // namespace

GradBuckets::GradBuckets(size_t n, const GradLayout &layers, size_t max_bucket) : n_(n) {
  if (max_bucket == 0) invalid_argument("gradient buckets: the bucket size must be >= 1");
  std::vector<GradRange> packed = pack(segments(n, layers), max_bucket);
  // Which layers write each bucket (descending offsets: search the ascending starts).
  const size_t nb = packed.size(), nl = layers.size();
  std::vector<size_t> starts(nb);
  for (size_t p = 0; p < nb; ++p) starts[p] = packed[nb - 1 - p].offset;
  std::vector<std::vector<size_t>> writes(nl);  // indices into packed
  std::vector<size_t> seen(nb, kNone), first_done(nb, kNone);
  for (size_t i = 0; i < nl; ++i)
    for (const GradRange &r : layers[i]) {
      if (r.count == 0) continue;
      size_t p = size_t(std::upper_bound(starts.begin(), starts.end(), r.offset) - starts.begin());
      for (--p; p < nb && starts[p] < r.end(); ++p) {
        const size_t b = nb - 1 - p;
        if (seen[b] == i) continue;
        seen[b] = i;
        writes[i].push_back(b);
        first_done[b] = first_done[b] == kNone ? i : std::min(first_done[b], i);
      }
    }
  // Plan order: the order the buckets complete in when the layers finish from the last to the
  // first (a bucket no layer writes first), ties from the top of the gradient down.
  std::vector<size_t> order(nb);
  std::iota(order.begin(), order.end(), size_t{0});
  auto completes = [&](size_t b) { return first_done[b] == kNone ? nl : first_done[b]; };
  std::stable_sort(order.begin(), order.end(),
                   [&](size_t a, size_t b) { return completes(a) > completes(b); });
  std::vector<size_t> rank(nb);
  buckets_.resize(nb);
  writers_.assign(nb, 0);
  for (size_t k = 0; k < nb; ++k) {
    rank[order[k]] = k;
    buckets_[k] = packed[order[k]];
  }
  touched_.resize(nl);
  for (size_t i = 0; i < nl; ++i) {
    for (size_t b : writes[i]) {
      touched_[i].push_back(rank[b]);
      ++writers_[rank[b]];
    }
    std::sort(touched_[i].begin(), touched_[i].end());
  }
}

void GradBuckets::emit(size_t bucket, const Launch &launch) {
  launched_[bucket] = true;
  ++launches_;
  launch(buckets_[bucket], launches_ == buckets_.size());
}

void GradBuckets::begin(const Launch &launch) {
  pending_ = writers_;
  launched_.assign(buckets_.size(), false);
  done_.assign(touched_.size(), false);
  launches_ = 0;
  running_ = true;
  for (size_t b = 0; b < buckets_.size(); ++b)
    if (pending_[b] == 0) emit(b, launch);
  if (buckets_.empty()) launch(GradRange{}, true);  // the loss, final from the start
}

void GradBuckets::layer_done(size_t layer, const Launch &launch) {
  if (!running_) invalid_argument("gradient buckets: layer_done outside a step");
  if (layer >= done_.size())
    invalid_argument("gradient buckets: no layer " + std::to_string(layer) + " (the layout has " +
                     std::to_string(done_.size()) + ")");
  if (done_[layer])
    invalid_argument("gradient buckets: layer " + std::to_string(layer) + " finished twice");
  done_[layer] = true;
  for (size_t b : touched_[layer])
    if (--pending_[b] == 0) emit(b, launch);
}

void GradBuckets::finish(const Launch &launch) {
  if (!running_) invalid_argument("gradient buckets: finish outside a step");
  running_ = false;
  for (size_t b = 0; b < buckets_.size(); ++b)
    if (!launched_[b]) emit(b, launch);
}

}  // namespace flowrt::train
