#include "ood_metrics.hpp"

#include <algorithm>
#include <cmath>
#include <stdexcept>
#include <string>

namespace flowrt::ood {
namespace {

void check(const std::vector<double> &in, const std::vector<double> &out) {
  if (in.empty() || out.empty())
    throw std::invalid_argument(
        "detection metrics need at least one in- and one out-of-"
        "distribution score (got " +
        std::to_string(in.size()) + " and " + std::to_string(out.size()) + ")");
  for (const std::vector<double> *v : {&in, &out})
    for (double s : *v)
      if (std::isnan(s)) throw std::invalid_argument("a detection score is NaN");
}

struct Labelled {
  double score;
  bool positive;  // out of distribution
};

// Every score with its label, highest score first.
std::vector<Labelled> sorted_desc(const std::vector<double> &in, const std::vector<double> &out) {
  std::vector<Labelled> all;
  all.reserve(in.size() + out.size());
  for (double s : in) all.push_back({s, false});
  for (double s : out) all.push_back({s, true});
  std::sort(all.begin(), all.end(),
            [](const Labelled &a, const Labelled &b) { return a.score > b.score; });
  return all;
}

// Calls f(threshold, tp, fp) after each group of tied scores, walking from the highest score
// down: tp / fp count the positives / negatives whose score is >= threshold.
template <class F>
void for_each_threshold(const std::vector<Labelled> &all, F f) {
  size_t tp = 0, fp = 0;
  for (size_t i = 0; i < all.size();) {
    size_t j = i;
    while (j < all.size() && all[j].score == all[i].score) {
      (all[j].positive ? tp : fp) += 1;
      ++j;
    }
    if (!f(all[i].score, tp, fp)) return;
    i = j;
  }
}

}  // namespace

double auroc(const std::vector<double> &in, const std::vector<double> &out) {
  check(in, out);
  std::vector<Labelled> all = sorted_desc(in, out);
  std::reverse(all.begin(), all.end());  // ascending: rank 1 is the lowest score
  // Mann-Whitney U of the positives with midranks for ties.
  double rank_sum = 0;
  for (size_t i = 0; i < all.size();) {
    size_t j = i, pos = 0;
    while (j < all.size() && all[j].score == all[i].score) pos += all[j++].positive;
    const double midrank = 0.5 * (static_cast<double>(i + 1) + static_cast<double>(j));
    rank_sum += midrank * static_cast<double>(pos);
    i = j;
  }
  const double np = static_cast<double>(out.size()), nn = static_cast<double>(in.size());
  const double u = rank_sum - np * (np + 1) / 2;
  return u / (np * nn);
}

double average_precision(const std::vector<double> &in, const std::vector<double> &out) {
  check(in, out);
  const double np = static_cast<double>(out.size());
  double ap = 0, prev_recall = 0;
  for_each_threshold(sorted_desc(in, out), [&](double, size_t tp, size_t fp) {
    const double recall = static_cast<double>(tp) / np;
    if (tp > 0)
      ap += (recall - prev_recall) * static_cast<double>(tp) / static_cast<double>(tp + fp);
    prev_recall = recall;
    return true;
  });
  return ap;
}

double fpr_at_tpr(const std::vector<double> &in, const std::vector<double> &out, double min_tpr,
                  double *threshold) {
  check(in, out);
  if (!(min_tpr > 0 && min_tpr <= 1)) throw std::invalid_argument("min_tpr must be in (0, 1]");
  const double np = static_cast<double>(out.size()), nn = static_cast<double>(in.size());
  // tp / np >= min_tpr, with a relative tolerance so that 19 of 20 counts as 95 %.
  const double need = min_tpr * np * (1 - 1e-12);
  double fpr = 1, t = -INFINITY;
  for_each_threshold(sorted_desc(in, out), [&](double score, size_t tp, size_t fp) {
    if (static_cast<double>(tp) < need) return true;
    fpr = static_cast<double>(fp) / nn;
    t = score;
    return false;
  });
  if (threshold) *threshold = t;
  return fpr;
}

Metrics evaluate(const std::vector<double> &in, const std::vector<double> &out) {
  Metrics m;
  m.auroc = auroc(in, out);
  m.aupr = average_precision(in, out);
  m.fpr_at_95_tpr = fpr_at_tpr(in, out, 0.95, &m.threshold_at_95_tpr);
  m.n_in = in.size();
  m.n_out = out.size();
  return m;
}

std::vector<RocPoint> roc_curve(const std::vector<double> &in, const std::vector<double> &out) {
  check(in, out);
  const double np = static_cast<double>(out.size()), nn = static_cast<double>(in.size());
  std::vector<RocPoint> curve{{0, 0}};
  for_each_threshold(sorted_desc(in, out), [&](double, size_t tp, size_t fp) {
    curve.push_back({static_cast<double>(fp) / nn, static_cast<double>(tp) / np});
    return true;
  });
  return curve;
}

double quantile(std::vector<double> v, double q) {
  if (v.empty()) throw std::invalid_argument("quantile of an empty set");
  if (!(q >= 0 && q <= 1)) throw std::invalid_argument("quantile outside [0, 1]");
  std::sort(v.begin(), v.end());
  const double pos = q * static_cast<double>(v.size() - 1);
  const size_t lo = static_cast<size_t>(std::floor(pos));
  const size_t hi = std::min(lo + 1, v.size() - 1);
  const double frac = pos - static_cast<double>(lo);
  return frac == 0 ? v[lo] : v[lo] + frac * (v[hi] - v[lo]);
}

uint64_t SplitMix64::next() {
  uint64_t z = (state_ += 0x9E3779B97F4A7C15ull);
  z = (z ^ (z >> 30)) * 0xBF58476D1CE4E5B9ull;
  z = (z ^ (z >> 27)) * 0x94D049BB133111EBull;
  return z ^ (z >> 31);
}

uint64_t SplitMix64::below(uint64_t n) {
  if (n == 0) throw std::invalid_argument("SplitMix64::below(0)");
  const uint64_t limit = UINT64_MAX - UINT64_MAX % n;  // accept [0, limit): a multiple of n
  for (;;) {
    const uint64_t r = next();
    if (r < limit) return r % n;
  }
}

std::vector<size_t> shuffled_indices(size_t n, uint64_t seed) {
  std::vector<size_t> idx(n);
  for (size_t i = 0; i < n; ++i) idx[i] = i;
  SplitMix64 rng(seed);
  for (size_t i = n; i > 1; --i) std::swap(idx[i - 1], idx[rng.below(i)]);
  return idx;
}

std::vector<double> batch_means(const std::vector<double> &values, const std::vector<size_t> &order,
                                size_t k) {
  if (k == 0) throw std::invalid_argument("batch size 0");
  std::vector<double> means;
  for (size_t b = 0; (b + 1) * k <= order.size(); ++b) {
    double sum = 0;
    for (size_t i = b * k; i < (b + 1) * k; ++i) sum += values.at(order[i]);
    means.push_back(sum / static_cast<double>(k));
  }
  return means;
}

double bootstrap_threshold(const std::vector<double> &reference, double centre, size_t k,
                           size_t draws, double alpha, uint64_t seed) {
  if (reference.empty() || k == 0 || draws == 0)
    throw std::invalid_argument("bootstrap needs reference values, k > 0 and draws > 0");
  SplitMix64 rng(seed);
  std::vector<double> dev(draws);
  for (size_t d = 0; d < draws; ++d) {
    double sum = 0;
    for (size_t i = 0; i < k; ++i) sum += reference[rng.below(reference.size())];
    dev[d] = std::fabs(sum / static_cast<double>(k) - centre);
  }
  return quantile(std::move(dev), alpha);
}

}  // namespace flowrt::ood
