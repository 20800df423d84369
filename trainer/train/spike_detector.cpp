#include "trainer/train/spike_detector.hpp"

#include <algorithm>
#include <cmath>
#include <cstdio>

namespace flowrt::train {
namespace {

// Losses the median needs before a step can be called a spike.
constexpr size_t kMinHistory = 10;

// a is worse than b: larger, or not finite (a NaN image is the worst there is).
bool worse(double a, double b) {
  return !std::isfinite(a) ? std::isfinite(b) : std::isfinite(b) && a > b;
}

}  // namespace

std::string describe(const Spike &s) {
  char buf[512];
  int n = 0;
  if (s.median > 0 && std::isfinite(s.loss))
    n = std::snprintf(buf, sizeof buf,
                      "step %lld: loss spike %.4f bits/dim (%.3gx the median %.4f)",
                      (long long)s.step, s.loss, s.loss / s.median, s.median);
  else
    n = std::snprintf(buf, sizeof buf, "step %lld: loss spike %g bits/dim (median %.4f)",
                      (long long)s.step, s.loss, s.median);
  std::string out(buf, static_cast<size_t>(std::max(0, n)));
  if (s.image >= 0) {
    std::snprintf(buf, sizeof buf, ": worst image %lld (%.6g bits/dim)", (long long)s.image,
                  s.image_bpd);
    out += buf;
  }
  if (s.layer >= 0) {
    std::snprintf(buf, sizeof buf, ", layer %d %s: %+.6g bits/dim (typical %+.4f)", s.layer,
                  s.layer_name.c_str(), s.layer_bpd, s.typical_bpd);
    out += buf;
  } else if (s.image >= 0) {
    out += ", no per-layer terms on this device";
  }
  return out;
}

SpikeDetector::SpikeDetector(double factor, int64_t window, std::vector<std::string> layer_names,
                             int64_t dims)
    : factor_(factor),
      window_(static_cast<size_t>(std::max<int64_t>(1, window))),
      layer_names_(std::move(layer_names)),
      nats_to_bpd_(1.0 / (static_cast<double>(dims) * std::log(2.0))),
      typical_(layer_names_.size()),
      step_medians_(layer_names_.size()) {}

double SpikeDetector::median_of(std::vector<double> v) {
  if (v.empty()) return 0;
  const size_t mid = v.size() / 2;
  std::nth_element(v.begin(), v.begin() + mid, v.end());
  if (v.size() % 2) return v[mid];
  return 0.5 * (v[mid] + *std::max_element(v.begin(), v.begin() + mid));
}

double SpikeDetector::median() const {
  return median_of(losses_);
}

void SpikeDetector::observe(const double *bpd, const int64_t *images, int64_t n,
                            const double *layer_terms) {
  if (!enabled() || n < 1) return;
  int64_t w = 0;
  for (int64_t b = 1; b < n; ++b)
    if (worse(bpd[b], bpd[w])) w = b;
  if (!worst_ || worse(bpd[w], worst_->bpd)) {
    Candidate c;
    c.bpd = bpd[w];
    c.image = images ? images[w] : -1;
    if (layer_terms)
      for (size_t i = 0; i < layer_names_.size(); ++i) c.terms.push_back(layer_terms[i * n + w]);
    worst_ = std::move(c);
  }
  if (!layer_terms) return;
  std::vector<double> v(static_cast<size_t>(n));
  for (size_t i = 0; i < layer_names_.size(); ++i) {
    std::copy_n(layer_terms + i * n, n, v.begin());
    step_medians_[i].push_back(median_of(v));
  }
}

void SpikeDetector::attribute(Spike &s) const {
  if (!worst_) return;
  s.image = worst_->image;
  s.image_bpd = worst_->bpd;
  if (worst_->terms.empty()) return;
  // The first layer whose term is not finite made the NaN / Inf; otherwise the largest growth.
  double best = 0;
  for (size_t i = 0; i < worst_->terms.size(); ++i) {
    const double c = -worst_->terms[i] * nats_to_bpd_;
    const double typ = -median_of(typical_[i]) * nats_to_bpd_;
    if (!std::isfinite(c)) {
      s.layer = static_cast<int>(i), s.layer_bpd = c, s.typical_bpd = typ;
      break;
    }
    if (s.layer < 0 || c - typ > best) {
      best = c - typ;
      s.layer = static_cast<int>(i), s.layer_bpd = c, s.typical_bpd = typ;
    }
  }
  s.layer_name = layer_names_[static_cast<size_t>(s.layer)];
}

std::optional<Spike> SpikeDetector::finish_step(int64_t step, double loss) {
  std::optional<Spike> out;
  if (!enabled()) return out;
  const double med = median();
  const bool finite = std::isfinite(loss);
  const bool high =
      losses_.size() >= std::min(window_, kMinHistory) && med > 0 && loss > factor_ * med;
  if (!finite || high) {
    Spike s;
    s.step = step, s.loss = loss, s.median = med;
    attribute(s);
    out = std::move(s);
    ++spikes_;
  } else {
    // Only ordinary steps make the typical values, so a run of spikes cannot hide itself.
    if (losses_.size() < window_)
      losses_.push_back(loss);
    else
      losses_[next_loss_] = loss;
    next_loss_ = (next_loss_ + 1) % window_;
    const size_t count = step_medians_.empty() ? 0 : step_medians_[0].size();
    for (size_t k = 0; k < count; ++k, ++next_typical_)
      for (size_t i = 0; i < typical_.size(); ++i) {
        if (typical_[i].size() < window_)
          typical_[i].push_back(step_medians_[i][k]);
        else
          typical_[i][next_typical_ % window_] = step_medians_[i][k];
      }
  }
  worst_.reset();
  for (std::vector<double> &m : step_medians_) m.clear();
  return out;
}

}  // namespace flowrt::train
