// Adam (Kingma & Ba) with a learning-rate schedule (linear warm-up, then cosine or step decay),
// global gradient-norm clipping and an optional exponential moving average (Polyak) of the
// weights. Everything is element-wise or reduced in a fixed order: results do not depend on the
// thread count.
#pragma once

#include <cstdint>
#include <string>
#include <vector>

namespace flowrt::train {

enum class Decay { None, Cosine, Step };
Decay parse_decay(const std::string &name);
const char *decay_name(Decay d);

struct Schedule {
  double lr = 1e-3;
  int64_t warmup = 0;  // steps of linear warm-up from lr / warmup
  Decay decay = Decay::None;
  int64_t total_steps = 0;  // cosine horizon (0: no decay)
  int64_t step_every = 0;   // step decay: multiply by step_gamma every step_every steps
  double step_gamma = 0.5;
  // Learning rate of (0-based) step.
  double at(int64_t step) const;
};

class Adam {
 public:
  double beta1 = 0.9, beta2 = 0.999, eps = 1e-8;
  explicit Adam(size_t n = 0) : m(n, 0.f), v(n, 0.f) {}
  void step(std::vector<float> &params, const std::vector<float> &grads, double lr);
  std::vector<float> m, v;
  int64_t t = 0;  // steps taken
};

// Euclidean norm of all gradients (accumulated in double, in order).
double global_norm(const std::vector<float> &g);
// Scales g so that its norm is at most max_norm (no-op for max_norm <= 0). Returns the factor.
double clip_global_norm(std::vector<float> &g, double norm, double max_norm);
// The update of one training step, shared by `flowtrain train` and `flowtrain bench`: the global
// gradient norm, then, when it and the loss are finite, clipping and an Adam step.
struct UpdateResult {
  double grad_norm = 0;
  bool applied = false;  // false: non-finite loss or gradient, nothing changed
  // Not applied because fp16 loss scaling overflowed (the scale was lowered): routine, not the
  // NaN/Inf guard.
  bool loss_scale_overflow = false;
};
UpdateResult apply_update(std::vector<float> &params, std::vector<float> &grads, Adam &adam,
                          double loss, double lr, double clip);
// ema = decay * ema + (1 - decay) * params.
void ema_update(std::vector<float> &ema, const std::vector<float> &params, double decay);

}  // namespace flowrt::train
