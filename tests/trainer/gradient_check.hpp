// The trainer's analytic gradients against central finite differences in double precision:
// every parameter tensor and, optionally, the input images.
#pragma once

#include <doctest/doctest.h>

#include <algorithm>
#include <cmath>
#include <cstdint>
#include <string>
#include <vector>

#include "trainer/model/train_model.hpp"

namespace flowrt::test {

struct GradCheckOptions {
  int64_t batch = 3;
  bool input = false;  // also dL/dx
  // Leave out the batch norms' running averages: statistics, not trained (in Mode::Eval the
  // loss depends on them, but they take no gradient).
  bool skip_running_stats = false;
};

// The largest relative error found, over the parameter tensors and over the input.
struct GradCheckResult {
  double params = 0, input = 0;
};

// Each tensor's relative error ||g - g_fd|| / ||g_fd|| with g_fd = (f(p+e) - f(p-e)) / 2e must be
// <= 1e-5. The loss is rounded at ~1e-16, so a difference quotient carries ~1e-11 of noise:
// tensors whose gradient is tiny next to the model's largest are measured against 1e-3 of that
// largest norm instead (a wrong gradient still fails by orders of magnitude). The step stays
// small because a larger one would cross ReLU kinks; a tensor that still fails is measured
// again with a quarter of the step, which a kink the first step crossed is unlikely to meet
// again (a wrong gradient fails at every step).
inline GradCheckResult check_gradients(train::TrainModel<double> &model,
                                       const std::vector<double> &x,
                                       const std::vector<int32_t> &labels,
                                       const GradCheckOptions &o = {}) {
  const int32_t *y = !labels.empty() && labels[0] >= 0 ? labels.data() : nullptr;
  const int64_t n = o.batch;
  model.forward(x.data(), y, n, false);
  model.backward();
  const std::vector<double> grads = model.params().grads();
  const std::vector<double> dx = model.input_grad();
  std::vector<double> &values = model.params().values();
  struct Result {
    std::string name;
    double diff, norm, analytic;
    size_t offset, size;  // the tensor's elements (of the parameters, or of the input)
    double eps;
  };
  std::vector<Result> results;
  double largest = 0;
  auto measure = [&](double *v, double analytic_grad, std::vector<double> &in, Result &r) {
    const double eps = r.eps;
    const double keep = *v;
    *v = keep + eps;
    const double fp = model.forward(in.data(), y, n, false);
    *v = keep - eps;
    const double fm = model.forward(in.data(), y, n, false);
    *v = keep;
    const double fd = (fp - fm) / (2 * eps);
    r.diff += (analytic_grad - fd) * (analytic_grad - fd);
    r.norm += fd * fd;
    r.analytic += analytic_grad * analytic_grad;
  };
  std::vector<double> xin = x;
  auto measure_tensor = [&](Result &r) {
    r.diff = r.norm = r.analytic = 0;
    const bool input = r.name == "input";
    for (size_t k = r.offset; k < r.offset + r.size; ++k)
      measure(input ? &xin[k] : &values[k], input ? dx[k] : grads[k], xin, r);
  };
  for (const train::ParamInfo &p : model.params().info()) {
    if (o.skip_running_stats && p.name.find(".running_") != std::string::npos) continue;
    Result r{p.name, 0, 0, 0, p.offset, p.size, 1e-5};
    measure_tensor(r);
    largest = std::max(largest, std::sqrt(r.norm));
    results.push_back(r);
  }
  if (o.input) {
    REQUIRE(dx.size() == x.size());
    Result r{"input", 0, 0, 0, 0, xin.size(), 1e-5};
    measure_tensor(r);
    largest = std::max(largest, std::sqrt(r.norm));
    results.push_back(r);
  }
  CHECK(largest > 0);
  auto error = [&](const Result &r) {
    return std::sqrt(r.diff) / std::max(std::sqrt(r.norm), 1e-3 * largest);
  };
  GradCheckResult out;
  for (Result &r : results) {
    double err = error(r);
    if (err > 1e-5) {
      Result again = r;
      again.eps = r.eps / 4;
      measure_tensor(again);
      MESSAGE(r.name << ": relative FD error " << err << " at step " << r.eps << ", "
                     << error(again) << " at step " << again.eps);
      if (error(again) < err) r = again, err = error(again);
    }
    INFO(r.name << ": |g| = " << std::sqrt(r.analytic) << ", |g_fd| = " << std::sqrt(r.norm)
                << ", |g - g_fd| = " << std::sqrt(r.diff) << " (step " << r.eps << ")");
    CHECK(err <= 1e-5);
    double &worst = r.name == "input" ? out.input : out.params;
    worst = std::max(worst, err);
  }
  return out;
}

}  // namespace flowrt::test
