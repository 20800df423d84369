// ood_metrics: AUROC, average precision, FPR at 95 % TPR, the ROC curve, quantiles and the
// typicality test's helpers, against hand-computed values and brute force on random scores
// with many ties.
#define DOCTEST_CONFIG_IMPLEMENT_WITH_MAIN
#include <doctest/doctest.h>

#include <algorithm>
#include <cmath>
#include <random>
#include <set>
#include <stdexcept>
#include <vector>

#include "ood_metrics.hpp"

using namespace flowrt::ood;
using V = std::vector<double>;

TEST_CASE("hand-computed: a tie between the sets") {
  // in (negatives) 1 2 3 4, out (positives) 3 5.
  // AUROC: 5 beats all four, 3 beats 1 and 2 and ties 3: (4 + 2 + 0.5) / 8.
  const V in = {4, 1, 3, 2}, out = {3, 5};
  CHECK(auroc(in, out) == doctest::Approx(6.5 / 8));
  // Thresholds 5 (tp 1, fp 0: recall 1/2, precision 1), 4 (recall unchanged), 3 (tp 2, fp 2:
  // recall 1, precision 1/2): AP = 1/2 * 1 + 1/2 * 1/2.
  CHECK(average_precision(in, out) == doctest::Approx(0.75));
  // TPR >= 0.95 first at threshold 3, where 2 of the 4 negatives are >= 3.
  double t = 0;
  CHECK(fpr_at_tpr(in, out, 0.95, &t) == doctest::Approx(0.5));
  CHECK(t == 3);
  const std::vector<RocPoint> roc = roc_curve(in, out);
  const std::vector<RocPoint> expect = {{0, 0}, {0, 0.5}, {0.25, 0.5}, {0.5, 1}, {0.75, 1}, {1, 1}};
  REQUIRE(roc.size() == expect.size());
  for (size_t i = 0; i < roc.size(); ++i) {
    CHECK(roc[i].fpr == doctest::Approx(expect[i].fpr));
    CHECK(roc[i].tpr == doctest::Approx(expect[i].tpr));
  }
  const Metrics m = evaluate(in, out);
  CHECK(m.auroc == doctest::Approx(0.8125));
  CHECK(m.aupr == doctest::Approx(0.75));
  CHECK(m.fpr_at_95_tpr == doctest::Approx(0.5));
  CHECK(m.n_in == 4);
  CHECK(m.n_out == 2);
}

TEST_CASE("hand-computed: separated, reversed, all tied") {
  CHECK(auroc({0, 1}, {2, 3}) == 1.0);
  CHECK(average_precision({0, 1}, {2, 3}) == 1.0);
  CHECK(fpr_at_tpr({0, 1}, {2, 3}) == 0.0);
  // Reversed: the positives come last. AP = 1/2 * 1/3 (threshold 1) + 1/2 * 1/2 (threshold 0).
  CHECK(auroc({2, 3}, {0, 1}) == 0.0);
  CHECK(average_precision({2, 3}, {0, 1}) == doctest::Approx(5.0 / 12));
  CHECK(fpr_at_tpr({2, 3}, {0, 1}) == 1.0);
  // One threshold for everything: AUROC 1/2, AP = the prevalence, every negative flagged.
  CHECK(auroc({1, 1}, {1}) == 0.5);
  CHECK(average_precision({1, 1}, {1}) == doctest::Approx(1.0 / 3));
  CHECK(fpr_at_tpr({1, 1}, {1}) == 1.0);
}

TEST_CASE("95 % of 20 positives is 19: the threshold stops there") {
  V out;
  for (int i = 1; i <= 20; ++i) out.push_back(i);
  const V in = {19.5, 0};
  double t = 0;
  // Threshold 2 keeps 19 of 20 positives; one negative (19.5) is above it.
  CHECK(fpr_at_tpr(in, out, 0.95, &t) == 0.5);
  CHECK(t == 2);
  CHECK(fpr_at_tpr(in, out, 1.0, &t) == 0.5);
  CHECK(t == 1);
}

TEST_CASE("infinite scores order and tie; NaN and empty sets are refused") {
  CHECK(auroc({1, INFINITY}, {INFINITY}) == 0.75);
  CHECK(auroc({-INFINITY}, {0}) == 1.0);
  CHECK_THROWS_AS(auroc({NAN}, {1}), std::invalid_argument);
  CHECK_THROWS_AS(average_precision({1}, {NAN}), std::invalid_argument);
  CHECK_THROWS_AS(auroc({}, {1}), std::invalid_argument);
  CHECK_THROWS_AS(fpr_at_tpr({1}, {}), std::invalid_argument);
  CHECK_THROWS_AS(fpr_at_tpr({1}, {2}, 0.0), std::invalid_argument);
}

// ---- brute force ----
double brute_auroc(const V &in, const V &out) {
  double wins = 0;
  for (double p : out)
    for (double n : in) wins += p > n ? 1 : p == n ? 0.5 : 0;
  return wins / (in.size() * out.size());
}

double brute_ap(const V &in, const V &out) {
  std::set<double, std::greater<double>> thresholds(in.begin(), in.end());
  thresholds.insert(out.begin(), out.end());
  double ap = 0, prev = 0;
  for (double t : thresholds) {
    double tp = 0, fp = 0;
    for (double p : out) tp += p >= t;
    for (double n : in) fp += n >= t;
    const double recall = tp / out.size();
    if (tp + fp > 0) ap += (recall - prev) * tp / (tp + fp);
    prev = recall;
  }
  return ap;
}

double brute_fpr95(const V &in, const V &out) {
  std::set<double> thresholds(in.begin(), in.end());
  thresholds.insert(out.begin(), out.end());
  double best = 1;
  for (double t : thresholds) {
    size_t tp = 0, fp = 0;
    for (double p : out) tp += p >= t;
    for (double n : in) fp += n >= t;
    if (20 * tp >= 19 * out.size()) best = std::min(best, double(fp) / in.size());
  }
  return best;
}

TEST_CASE("brute force on random scores with ties") {
  std::mt19937 rng(12345);
  for (int trial = 0; trial < 500; ++trial) {
    const int n_in = 1 + rng() % 40, n_out = 1 + rng() % 40, levels = 1 + rng() % 12;
    V in, out;
    // Integer scores from a small range: many ties; the positives shifted up a little.
    for (int i = 0; i < n_in; ++i) in.push_back(double(rng() % levels));
    for (int i = 0; i < n_out; ++i) out.push_back(double(rng() % levels + rng() % 3));
    CAPTURE(trial);
    CHECK(auroc(in, out) == doctest::Approx(brute_auroc(in, out)).epsilon(1e-12));
    CHECK(average_precision(in, out) == doctest::Approx(brute_ap(in, out)).epsilon(1e-12));
    CHECK(fpr_at_tpr(in, out) == doctest::Approx(brute_fpr95(in, out)).epsilon(1e-12));
    // The AUROC is the trapezoidal area under the ROC curve (ties are diagonal segments).
    const std::vector<RocPoint> roc = roc_curve(in, out);
    double area = 0;
    for (size_t i = 1; i < roc.size(); ++i)
      area += (roc[i].fpr - roc[i - 1].fpr) * (roc[i].tpr + roc[i - 1].tpr) / 2;
    CHECK(area == doctest::Approx(auroc(in, out)).epsilon(1e-12));
    CHECK(roc.back().fpr == 1.0);
    CHECK(roc.back().tpr == 1.0);
    // Swapping the roles mirrors the AUROC.
    CHECK(auroc(out, in) == doctest::Approx(1 - auroc(in, out)).epsilon(1e-12));
  }
}

TEST_CASE("quantile, shuffles, batch means, bootstrap threshold") {
  CHECK(quantile({4, 1, 3, 2}, 0.5) == 2.5);
  CHECK(quantile({4, 1, 3, 2}, 0.0) == 1);
  CHECK(quantile({4, 1, 3, 2}, 1.0) == 4);
  CHECK(quantile({4, 1, 3, 2}, 0.25) == doctest::Approx(1.75));
  CHECK(quantile({7}, 0.9) == 7);
  CHECK_THROWS_AS(quantile({}, 0.5), std::invalid_argument);

  const std::vector<size_t> p = shuffled_indices(100, 7);
  std::vector<size_t> sorted = p;
  std::sort(sorted.begin(), sorted.end());
  for (size_t i = 0; i < 100; ++i) CHECK(sorted[i] == i);
  CHECK(p == shuffled_indices(100, 7));
  CHECK(p != shuffled_indices(100, 8));

  CHECK(batch_means({1, 2, 3, 4, 5}, {0, 1, 2, 3, 4}, 2) == V{1.5, 3.5});  // 5 is left over
  CHECK(batch_means({1, 2, 3, 4}, {3, 0, 2, 1}, 2) == V{2.5, 2.5});
  CHECK(batch_means({1, 2}, {0, 1}, 3).empty());

  // A constant reference: every bootstrap batch mean is the centre.
  CHECK(bootstrap_threshold({2, 2, 2}, 2, 5, 100, 0.99, 1) == 0);
  // Values +-1 around 0 with k = 1: |mean| is always 1.
  CHECK(bootstrap_threshold({-1, 1}, 0, 1, 100, 0.5, 1) == 1);
  // k = 4 from {-1, 1}: |mean| in {0, 0.5, 1}; P(|mean| = 1) = 1/8, so the 99 % quantile is 1
  // and the 50 % quantile is 0.5 (P(0) = 3/8).
  CHECK(bootstrap_threshold({-1, 1}, 0, 4, 20000, 0.99, 3) == 1);
  CHECK(bootstrap_threshold({-1, 1}, 0, 4, 20000, 0.5, 3) == 0.5);

  SplitMix64 g(1);
  for (int i = 0; i < 1000; ++i) CHECK(g.below(3) < 3);
}
