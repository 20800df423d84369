// Detection metrics for `flowrt ood`: scores where higher means "more anomalous", with the
// out-of-distribution samples as the positive class. Depends on nothing but the standard library.
//
// - AUROC: the Mann-Whitney statistic, P(s_out > s_in) + 0.5 P(s_out == s_in) — tied scores count
//   one half (the area under the ROC curve drawn through every distinct threshold).
// - AUPR: average precision, sum over the distinct thresholds t (descending) of
//   (recall(t) - recall(previous t)) * precision(t), where a threshold classifies "score >= t" as
//   positive (scikit-learn's average_precision_score: no interpolation; a group of tied scores is
//   one threshold).
// - FPR at 95 % TPR: the false-positive rate at the largest threshold t whose TPR(t) >= 0.95
//   (the smallest FPR any threshold reaches with at least 95 % of the positives detected).
//
// Scores may be +-infinity (ordered as usual) but not NaN; both sets must be non-empty. Violations
// throw std::invalid_argument.
#pragma once

#include <cstddef>
#include <cstdint>
#include <vector>

namespace flowrt::ood {

struct RocPoint {
  double fpr, tpr;
};

struct Metrics {
  double auroc = 0, aupr = 0, fpr_at_95_tpr = 0;
  double threshold_at_95_tpr = 0;  // the threshold t of fpr_at_95_tpr (score >= t: anomalous)
  size_t n_in = 0, n_out = 0;
};

double auroc(const std::vector<double> &in, const std::vector<double> &out);
double average_precision(const std::vector<double> &in, const std::vector<double> &out);
// Also returns the threshold through `threshold` when given.
double fpr_at_tpr(const std::vector<double> &in, const std::vector<double> &out,
                  double min_tpr = 0.95, double *threshold = nullptr);
Metrics evaluate(const std::vector<double> &in, const std::vector<double> &out);

// The ROC curve through every distinct threshold, from (0, 0) to (1, 1).
std::vector<RocPoint> roc_curve(const std::vector<double> &in, const std::vector<double> &out);

// The q-quantile (0 <= q <= 1) of `v` with linear interpolation between order statistics
// (numpy's default); v must be non-empty.
double quantile(std::vector<double> v, double q);

// A small deterministic generator (splitmix64) so that batches and bootstrap draws are the same
// on every platform and standard library.
class SplitMix64 {
 public:
  explicit SplitMix64(uint64_t seed) : state_(seed) {}
  uint64_t next();
  // Uniform in [0, n), n > 0 (rejection sampling: no modulo bias).
  uint64_t below(uint64_t n);

 private:
  uint64_t state_;
};

// Fisher-Yates with SplitMix64: a permutation of 0..n-1.
std::vector<size_t> shuffled_indices(size_t n, uint64_t seed);

// Typicality test (Nalisnick et al. 2019): the mean of each batch of `k` scores, the batches
// being consecutive groups of `order` (the remainder that does not fill a batch is dropped).
std::vector<double> batch_means(const std::vector<double> &values, const std::vector<size_t> &order,
                                size_t k);
// The bootstrap threshold: `draws` batches of k values drawn with replacement from `reference`,
// the alpha-quantile of |batch mean - centre|.
double bootstrap_threshold(const std::vector<double> &reference, double centre, size_t k,
                           size_t draws, double alpha, uint64_t seed);

}  // namespace flowrt::ood
