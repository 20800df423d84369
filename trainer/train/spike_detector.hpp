// Loss spikes: a step whose batch loss is more than `factor` times the median loss of the last
// `window` steps (or not finite). The detector also names what caused it: the batch's worst image
// and the layer whose term of that image's log-likelihood (a log-determinant, or a split's or
// the top's prior term) moved furthest from its typical value, the median over recent steps of
// the batches' medians of that term. Detection only reads the losses; it never changes training.
#pragma once

#include <cstdint>
#include <optional>
#include <string>
#include <vector>

namespace flowrt::train {

struct Spike {
  int64_t step = 0;   // steps completed with it, as the progress line and metrics.csv count
  double loss = 0;    // the batch's mean bits/dim
  double median = 0;  // the running median it is compared with
  // The batch's worst image: its index in the training set (-1: unknown) and its bits/dim.
  int64_t image = -1;
  double image_bpd = 0;
  // The layer (index and name; -1 / "" when the model gives no per-layer terms) whose term
  // grew most over its typical value, both as bits/dim of the image (the terms of all layers
  // add up to the image's bits/dim minus the quantisation bits).
  int layer = -1;
  std::string layer_name;
  double layer_bpd = 0, typical_bpd = 0;
};

// "step 1219: loss spike 7202750543392644.0000 bits/dim (1.89e+15x the median 3.8098): worst
// image 40439 (1.15244e+17 bits/dim), layer 13 level0/split: +1.15244e+17 bits/dim (typical
// +0.0021)".
std::string describe(const Spike &s);

class SpikeDetector {
 public:
  // factor <= 0: off. dims: the model's dimensions (nats -> bits/dim).
  SpikeDetector(double factor, int64_t window, std::vector<std::string> layer_names, int64_t dims);
  bool enabled() const { return factor_ > 0; }
  size_t layers() const { return layer_names_.size(); }
  const std::string &layer_name(int layer) const { return layer_names_.at(layer); }

  // One forward pass of the step (several with gradient shards): n images' bits/dim, their
  // indices in the training set, and (null: not available) their per-layer log-likelihood
  // terms in nats, layer-major ([layer][image]).
  void observe(const double *bpd, const int64_t *images, int64_t n, const double *layer_terms);
  // The step's loss, after its forward passes: a spike, with the step's worst image and its
  // layer, or nothing. The losses of steps that are not spikes feed the running median.
  std::optional<Spike> finish_step(int64_t step, double loss);

  // The running median of the last window's losses (0 before any).
  double median() const;
  int64_t spikes() const { return spikes_; }

 private:
  struct Candidate {
    double bpd = 0;
    int64_t image = -1;
    std::vector<double> terms;  // per layer, nats (empty: not available)
  };
  static double median_of(std::vector<double> v);
  void attribute(Spike &s) const;

  double factor_;
  size_t window_;
  std::vector<std::string> layer_names_;
  double nats_to_bpd_;
  std::vector<double> losses_;  // ring buffer of the last window losses
  size_t next_loss_ = 0;
  // Per layer, a ring buffer of the batches' medians of its term (nats).
  std::vector<std::vector<double>> typical_;
  size_t next_typical_ = 0;
  // This step so far: its worst image and its batches' per-layer medians.
  std::optional<Candidate> worst_;
  std::vector<std::vector<double>> step_medians_;
  int64_t spikes_ = 0;
};

}  // namespace flowrt::train
