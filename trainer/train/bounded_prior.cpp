#include "trainer/train/bounded_prior.hpp"

#include <cmath>
#include <string>

#include "core/error.hpp"
#include "layers/gaussian.hpp"
#include "model/finalize.hpp"

namespace flowrt::train {
namespace {

// The mean's ReLUs start this far above zero, as p = q, for a zero-initialised prior.
constexpr float kOpenBias = 0.01f;

bool all_zero(const float *v, size_t n) {
  for (size_t k = 0; k < n; ++k)
    if (v[k] != 0.f) return false;
  return true;
}

// The fixed 1x1 convolution of a bounded prior of cz latent channels, given its floors.
Conv2dOp combination(int64_t cz, PriorLayout layout, const std::vector<float> &floors) {
  std::vector<float> w(static_cast<size_t>(2 * cz * 3 * cz), 0.f), b(2 * cz, 0.f);
  for (int64_t j = 0; j < cz; ++j) {
    int64_t mc = 0, lc = 0;
    layers::prior_channels(layout, j, cz, &mc, &lc);
    w[mc * 3 * cz + j] = 1.f;           // + relu(p_j)
    w[mc * 3 * cz + cz + j] = -1.f;     // - relu(q_j)
    w[lc * 3 * cz + 2 * cz + j] = 1.f;  // + relu(r_j)
    b[lc] = floors[static_cast<size_t>(j)];
  }
  return Conv2dOp{Tensor::from_vector({2 * cz, 3 * cz, 1, 1}, std::move(w)),
                  Tensor::from_vector({2 * cz}, std::move(b)), PaddingMode::Zeros, 0.f};
}

// Whether a prior net is the bounded form (its last convolution exactly a combination).
bool is_bounded(const Net &net, int64_t cz, PriorLayout layout) {
  if (net.ops.size() != 4 || !std::holds_alternative<Conv2dOp>(net.ops[0]) ||
      !std::holds_alternative<OutputScaleOp>(net.ops[1]) ||
      !std::holds_alternative<ReluOp>(net.ops[2]) || !std::holds_alternative<Conv2dOp>(net.ops[3]))
    return false;
  const auto &last = std::get<Conv2dOp>(net.ops[3]);
  if (last.weight.shape() != std::vector<int64_t>{2 * cz, 3 * cz, 1, 1} ||
      last.bias.size() != static_cast<size_t>(2 * cz))
    return false;
  std::vector<float> floors(static_cast<size_t>(cz));
  for (int64_t j = 0; j < cz; ++j) {
    int64_t mc = 0, lc = 0;
    layers::prior_channels(layout, j, cz, &mc, &lc);
    floors[static_cast<size_t>(j)] = last.bias.data()[lc];
  }
  const Conv2dOp want = combination(cz, layout, floors);
  return std::equal(want.weight.data(), want.weight.data() + want.weight.size(),
                    last.weight.data()) &&
         std::equal(want.bias.data(), want.bias.data() + want.bias.size(), last.bias.data());
}

}  // namespace

int bound_split_priors(Graph &graph, float floor) {
  int rewritten = 0;
  for (Layer &layer : graph.layers) {
    auto *sp = std::get_if<SplitLayer>(&layer.op);
    if (!sp || sp->prior.ops.size() != 2) continue;
    const auto *conv = std::get_if<Conv2dOp>(&sp->prior.ops[0]);
    const auto *scale = std::get_if<OutputScaleOp>(&sp->prior.ops[1]);
    if (!conv || !scale || conv->bias.empty()) continue;
    const int64_t cz = layer.in.c / 2;
    if (conv->out_channels() != 2 * cz) continue;
    const size_t row = conv->weight.size() / static_cast<size_t>(2 * cz);
    const float *w = conv->weight.data(), *b = conv->bias.data(), *s = scale->log_scale.data();
    // A fresh prior (zero mean weights): p = q = a small bias keeps both ReLUs open.
    bool fresh = true;
    for (int64_t j = 0; j < cz; ++j) {
      int64_t mc = 0, lc = 0;
      layers::prior_channels(sp->layout, j, cz, &mc, &lc);
      fresh = fresh && all_zero(w + mc * row, row) && b[mc] == 0.f;
    }
    std::vector<float> w3(3 * cz * row), b3(3 * cz), s3(3 * cz);
    for (int64_t j = 0; j < cz; ++j) {
      int64_t mc = 0, lc = 0;
      layers::prior_channels(sp->layout, j, cz, &mc, &lc);
      const float g = std::exp(scale->factor * s[lc]);
      for (size_t k = 0; k < row; ++k) {
        w3[j * row + k] = w[mc * row + k];
        w3[(cz + j) * row + k] = -w[mc * row + k];
        w3[(2 * cz + j) * row + k] = w[lc * row + k];
      }
      const float open = fresh ? kOpenBias : 0.f;
      b3[j] = b[mc] + open, b3[cz + j] = -b[mc] + open;
      // relu(r) = relu(log_std - floor): the output scale multiplies the bias too.
      b3[2 * cz + j] = b[lc] - floor / g;
      s3[j] = s3[cz + j] = s[mc], s3[2 * cz + j] = s[lc];
    }
    std::vector<int64_t> shape = conv->weight.shape();
    shape[0] = 3 * cz;
    Net bounded;
    bounded.ops.emplace_back(Conv2dOp{Tensor::from_vector(shape, std::move(w3)),
                                      Tensor::from_vector({3 * cz}, std::move(b3)), conv->padding,
                                      conv->pad_value});
    bounded.ops.emplace_back(
        OutputScaleOp{Tensor::from_vector({3 * cz}, std::move(s3)), scale->factor});
    bounded.ops.emplace_back(ReluOp{});
    bounded.ops.push_back(
        combination(cz, sp->layout, std::vector<float>(static_cast<size_t>(cz), floor)));
    sp->prior = std::move(bounded);
    ++rewritten;
  }
  if (rewritten) finalize_graph(graph);
  return rewritten;
}

std::vector<GradRange> bounded_prior_constants(const Graph &graph,
                                               const std::vector<ParamInfo> &params) {
  std::vector<GradRange> out;
  for (size_t i = 0; i < graph.layers.size(); ++i) {
    const auto *sp = std::get_if<SplitLayer>(&graph.layers[i].op);
    if (!sp || !is_bounded(sp->prior, graph.layers[i].in.c / 2, sp->layout)) continue;
    // TrainModel's names for the last convolution's tensors.
    const std::string layer =
        graph.layers[i].name.empty() ? "layer" + std::to_string(i) : graph.layers[i].name;
    for (const char *t : {".weight", ".bias"}) {
      const std::string name = layer + "/net3" + t;
      const ParamInfo *p = nullptr;
      for (const ParamInfo &q : params)
        if (q.name == name) p = &q;
      if (!p) invalid_argument("bounded split prior '" + layer + "': no parameter '" + name + "'");
      out.push_back({p->offset, p->size});
    }
  }
  return out;
}

void zero_ranges(std::vector<float> &v, const std::vector<GradRange> &ranges) {
  for (const GradRange &r : ranges) std::fill(v.begin() + r.offset, v.begin() + r.end(), 0.f);
}

}  // namespace flowrt::train
