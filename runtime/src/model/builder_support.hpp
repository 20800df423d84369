// What the architecture builders (Glow, RealNVP, NICE) share: deterministic random tensors, an
// LU-parameterised 1x1 conv from a matrix, the coupling nets' conv stack, and appending a named
// layer.
#pragma once

#include <cmath>
#include <cstdint>
#include <string>
#include <vector>

#include "core/error.hpp"
#include "core/linalg.hpp"
#include "core/philox.hpp"
#include "model/graph.hpp"

namespace flowrt::build {

// Deterministic random tensors: each tensor draws from its own Philox stream.
class Init {
 public:
  explicit Init(uint64_t seed) : seed_(seed) {}
  std::vector<float> normal(size_t n, double stddev, double mean = 0.0) {
    const uint64_t stream = next_++;
    std::vector<float> v(n);
    for (size_t i = 0; i < n; ++i)
      v[i] = static_cast<float>(mean + stddev * philox_normal(seed_, stream, i));
    return v;
  }
  Tensor tensor(std::vector<int64_t> shape, double stddev, double mean = 0.0) {
    size_t n = 1;
    for (int64_t d : shape) n *= static_cast<size_t>(d);
    return Tensor::from_vector(std::move(shape), stddev == 0 && mean == 0
                                                     ? std::vector<float>(n, 0.f)
                                                     : normal(n, stddev, mean));
  }
  Tensor constant(std::vector<int64_t> shape, float value) {
    size_t n = 1;
    for (int64_t d : shape) n *= static_cast<size_t>(d);
    return Tensor::from_vector(std::move(shape), std::vector<float>(n, value));
  }
  // A random rotation: Gram-Schmidt on a Gaussian matrix, in double.
  std::vector<double> rotation(int64_t c) {
    std::vector<float> g = normal(static_cast<size_t>(c * c), 1.0);
    std::vector<double> q(g.begin(), g.end());
    for (int64_t i = 0; i < c; ++i) {
      for (int64_t k = 0; k < i; ++k) {
        double dot = 0;
        for (int64_t j = 0; j < c; ++j) dot += q[i * c + j] * q[k * c + j];
        for (int64_t j = 0; j < c; ++j) q[i * c + j] -= dot * q[k * c + j];
      }
      double norm = 0;
      for (int64_t j = 0; j < c; ++j) norm += q[i * c + j] * q[i * c + j];
      norm = std::sqrt(norm);
      for (int64_t j = 0; j < c; ++j) q[i * c + j] /= norm;
    }
    return q;
  }

 private:
  uint64_t seed_;
  uint64_t next_ = 1;
};

inline InvConvLayer lu_layer(const std::vector<double> &w, int64_t c) {
  // P_rows * W = L * U  =>  W = P * L * U with (P v)[i] = v[perm[i]], perm = pivot^-1.
  LuFactors f = lu_factor(w, c);
  if (f.singular) fail(FLOWRT_INTERNAL_ERROR, "random rotation is singular");
  InvConvLayer l;
  l.form = InvConvForm::LU;
  l.perm.resize(c);
  for (int64_t i = 0; i < c; ++i) l.perm[f.pivot[i]] = static_cast<int32_t>(i);
  std::vector<float> lower(c * c, 0.f), upper(c * c, 0.f), sign(c), log_s(c);
  for (int64_t i = 0; i < c; ++i)
    for (int64_t j = 0; j < c; ++j) {
      const double v = f.lu[i * c + j];
      if (j < i) lower[i * c + j] = static_cast<float>(v);
      if (j > i) upper[i * c + j] = static_cast<float>(v);
      if (j == i) {
        sign[i] = v < 0 ? -1.f : 1.f;
        log_s[i] = static_cast<float>(std::log(std::fabs(v)));
      }
    }
  l.lower = Tensor::from_vector({c, c}, std::move(lower));
  l.upper = Tensor::from_vector({c, c}, std::move(upper));
  l.sign = Tensor::from_vector({c}, std::move(sign));
  l.log_s = Tensor::from_vector({c}, std::move(log_s));
  return l;
}

// conv 3x3 (N(0, 0.05)) -> ReLU -> conv 1x1 (N(0, 0.05)) -> ReLU -> conv 3x3, the last one zero
// (random: N(0, 0.01)) so that a coupling starts as the identity.
inline Net conv_net(Init &init, int64_t in, int64_t hidden, int64_t out, bool random) {
  Net net;
  net.ops.emplace_back(Conv2dOp{init.tensor({hidden, in, 3, 3}, 0.05), init.tensor({hidden}, 0.0),
                                PaddingMode::Zeros, 0.f});
  net.ops.emplace_back(ReluOp{});
  net.ops.emplace_back(Conv2dOp{init.tensor({hidden, hidden, 1, 1}, 0.05),
                                init.tensor({hidden}, 0.0), PaddingMode::Zeros, 0.f});
  net.ops.emplace_back(ReluOp{});
  net.ops.emplace_back(Conv2dOp{init.tensor({out, hidden, 3, 3}, random ? 0.01 : 0.0),
                                init.tensor({out}, random ? 0.01 : 0.0), PaddingMode::Zeros, 0.f});
  return net;
}

// RealNVP's residual net (format 1.2): conv 3x3 in -> hidden, ReLU, then `blocks` residual
// blocks x + actnorm(conv 3x3(relu(actnorm(conv 3x3 x)))) each followed by a ReLU, then the
// zero (random: N(0, 0.01)) conv 3x3 hidden -> out. The actnorms play the part of RealNVP's
// batch norms inside the nets (data-initialised by the trainer, folded into the convs at run
// time). blocks = 0 gives conv_net's shape without its 1x1 conv.
inline Net residual_net(Init &init, int64_t in, int64_t hidden, int64_t out, int blocks,
                        bool random) {
  Net net;
  auto conv3 = [&](int64_t o, int64_t i, double stddev) {
    net.ops.emplace_back(Conv2dOp{init.tensor({o, i, 3, 3}, stddev),
                                  init.tensor({o}, random ? 0.01 : 0.0), PaddingMode::Zeros, 0.f});
  };
  auto actnorm = [&]() {
    if (random)
      net.ops.emplace_back(
          NetActNormOp{init.tensor({hidden}, 0.1), init.tensor({hidden}, 0.1, 1.0)});
    else
      net.ops.emplace_back(
          NetActNormOp{init.constant({hidden}, 0.f), init.constant({hidden}, 1.f)});
  };
  conv3(hidden, in, 0.05);
  net.ops.emplace_back(ReluOp{});
  for (int b = 0; b < blocks; ++b) {
    const auto from = static_cast<int32_t>(net.ops.size());
    conv3(hidden, hidden, 0.05);
    actnorm();
    net.ops.emplace_back(ReluOp{});
    conv3(hidden, hidden, 0.05);
    actnorm();
    net.ops.emplace_back(ResidualAddOp{from});
    net.ops.emplace_back(ReluOp{});
  }
  conv3(out, hidden, random ? 0.01 : 0.0);
  return net;
}

inline void add_layer(Graph &g, std::string name, LayerOp op) {
  Layer l;
  l.name = std::move(name);
  l.op = std::move(op);
  g.layers.push_back(std::move(l));
}

}  // namespace flowrt::build
