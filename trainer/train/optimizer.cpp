#include "trainer/train/optimizer.hpp"

#include <cmath>

#include "core/error.hpp"

namespace flowrt::train {

Decay parse_decay(const std::string &name) {
  if (name == "none") return Decay::None;
  if (name == "cosine") return Decay::Cosine;
  if (name == "step") return Decay::Step;
  invalid_argument("unknown --decay '" + name + "' (none, cosine, step)");
}

const char *decay_name(Decay d) {
  switch (d) {
    case Decay::None:
      return "none";
    case Decay::Cosine:
      return "cosine";
    case Decay::Step:
      return "step";
  }
  return "none";
}

double Schedule::at(int64_t step) const {
  if (warmup > 0 && step < warmup) return lr * static_cast<double>(step + 1) / warmup;
  switch (decay) {
    case Decay::None:
      return lr;
    case Decay::Cosine: {
      if (total_steps <= warmup) return lr;
      const double p =
          static_cast<double>(step - warmup) / static_cast<double>(total_steps - warmup);
      return 0.5 * lr * (1.0 + std::cos(3.14159265358979323846 * std::min(1.0, p)));
    }
    case Decay::Step:
      return step_every > 0
                 ? lr * std::pow(step_gamma, static_cast<double>((step - warmup) / step_every))
                 : lr;
  }
  return lr;
}

void Adam::step(std::vector<float> &params, const std::vector<float> &grads, double lr) {
  ++t;
  const double c1 = 1.0 - std::pow(beta1, static_cast<double>(t));
  const double c2 = 1.0 - std::pow(beta2, static_cast<double>(t));
  const float step_size = static_cast<float>(lr / c1),
              inv_sqrt_c2 = static_cast<float>(1.0 / std::sqrt(c2));
  const float b1 = static_cast<float>(beta1), b2 = static_cast<float>(beta2),
              e = static_cast<float>(eps);
  const int64_t n = static_cast<int64_t>(params.size());
#pragma omp parallel for schedule(static) if (n >= (int64_t{1} << 16))
  for (int64_t k = 0; k < n; ++k) {
    const float g = grads[k];
    m[k] = b1 * m[k] + (1.f - b1) * g;
    v[k] = b2 * v[k] + (1.f - b2) * g * g;
    params[k] -= step_size * m[k] / (std::sqrt(v[k]) * inv_sqrt_c2 + e);
  }
}

double global_norm(const std::vector<float> &g) {
  double s = 0;
  for (float v : g) s += static_cast<double>(v) * v;
  return std::sqrt(s);
}

double clip_global_norm(std::vector<float> &g, double norm, double max_norm) {
  if (max_norm <= 0 || norm <= max_norm) return 1.0;
  const float f = static_cast<float>(max_norm / norm);
  for (float &v : g) v *= f;
  return f;
}

void ema_update(std::vector<float> &ema, const std::vector<float> &params, double decay) {
  const float d = static_cast<float>(decay), r = static_cast<float>(1.0 - decay);
  for (size_t k = 0; k < ema.size(); ++k) ema[k] = d * ema[k] + r * params[k];
}

UpdateResult apply_update(std::vector<float> &params, std::vector<float> &grads, Adam &adam,
                          double loss, double lr, double clip) {
  UpdateResult r;
  r.grad_norm = global_norm(grads);
  if (!std::isfinite(loss) || !std::isfinite(r.grad_norm)) return r;
  clip_global_norm(grads, r.grad_norm, clip);
  adam.step(params, grads, lr);
  r.applied = true;
  return r;
}

}  // namespace flowrt::train
