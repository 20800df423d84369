#include "trainer/model/train_model.hpp"

#include <algorithm>
#include <cmath>
#include <cstring>

#include "core/error.hpp"
#include "layers/channel_affine.hpp"
#include "layers/gaussian.hpp"
#include "layers/linear1x1.hpp"
#include "layers/permute.hpp"
#include "layers/squeeze.hpp"
#include "model/finalize.hpp"
#include "trainer/layers/actnorm_backward.hpp"
#include "trainer/layers/affine_relu.hpp"
#include "trainer/layers/batchnorm_backward.hpp"
#include "trainer/layers/coupling_backward.hpp"
#include "trainer/layers/elementwise_backward.hpp"
#include "trainer/layers/gaussian_backward.hpp"
#include "trainer/layers/invconv_backward.hpp"
#include "trainer/layers/logit_backward.hpp"
#include "trainer/layers/parallel.hpp"
#include "trainer/layers/shuffle_backward.hpp"

namespace flowrt::train {
namespace {

template <typename T>
std::vector<T> to_t(const Tensor &t) {
  return std::vector<T>(t.data(), t.data() + t.size());
}

// Channels [c0, c0 + n) of an NCHW batch -> a CNHW buffer [n][batch * plane].
template <typename T>
void gather_cnhw(const T *x, int64_t batch, int64_t channels, int64_t plane, int64_t c0, int64_t n,
                 T *out) {
  const int64_t ld = batch * plane;
  if (plane == 1) {  // a vector per image (NICE): a transpose, not a copy per element
#pragma omp parallel for schedule(static) if (parallel_worth(n * ld))
    for (int64_t c = 0; c < n; ++c)
      for (int64_t b = 0; b < batch; ++b) out[c * ld + b] = x[b * channels + c0 + c];
    return;
  }
#pragma omp parallel for collapse(2) schedule(static) if (parallel_worth(n * ld))
  for (int64_t c = 0; c < n; ++c)
    for (int64_t b = 0; b < batch; ++b)
      std::memcpy(out + c * ld + b * plane, x + (b * channels + c0 + c) * plane, sizeof(T) * plane);
}

// The inverse of gather_cnhw, copying or adding.
template <typename T>
void scatter_nchw(const T *in, int64_t batch, int64_t channels, int64_t plane, int64_t c0,
                  int64_t n, T *x, bool add) {
  const int64_t ld = batch * plane;
  if (plane == 1) {
#pragma omp parallel for schedule(static) if (parallel_worth(n * ld))
    for (int64_t b = 0; b < batch; ++b)
      for (int64_t c = 0; c < n; ++c) {
        T &dst = x[b * channels + c0 + c];
        dst = add ? dst + in[c * ld + b] : in[c * ld + b];
      }
    return;
  }
#pragma omp parallel for collapse(2) schedule(static) if (parallel_worth(n * ld))
  for (int64_t c = 0; c < n; ++c)
    for (int64_t b = 0; b < batch; ++b) {
      const T *src = in + c * ld + b * plane;
      T *dst = x + (b * channels + c0 + c) * plane;
      if (add) {
        for (int64_t p = 0; p < plane; ++p) dst[p] += src[p];
      } else {
        std::memcpy(dst, src, sizeof(T) * plane);
      }
    }
}

template <typename T>
Tensor to_tensor(const std::vector<int64_t> &shape, const T *v, size_t n) {
  return Tensor::from_vector(shape, std::vector<float>(v, v + n));
}

}  // namespace

template <typename T>
typename TrainModel<T>::Net TrainModel<T>::build_net(const flowrt::Net &src,
                                                     const std::string &prefix) {
  Net net;
  net.in_ch = src.in_channels;
  net.out_ch = src.out_channels;
  for (size_t k = 0; k < src.ops.size(); ++k) {
    const std::string name = prefix + "/net" + std::to_string(k);
    NetOp op;
    op.source = src.is_residual_source(k);
    if (auto *r = std::get_if<ResidualAddOp>(&src.ops[k])) {
      op.kind = NetOp::Add;
      op.from = r->from;
    } else if (auto *c = std::get_if<Conv2dOp>(&src.ops[k])) {
      op.kind = NetOp::Conv;
      op.geo = {c->in_channels(), c->weight.dim(1), c->out_channels(), c->kernel_h(),
                c->kernel_w(),    c->padding,       c->pad_value};
      op.weight = params_.add(name + ".weight", c->weight.shape(), to_t<T>(c->weight));
      if (!c->bias.empty())
        op.bias = params_.add(name + ".bias", c->bias.shape(), to_t<T>(c->bias));
    } else if (auto *a = std::get_if<NetActNormOp>(&src.ops[k])) {
      op.kind = NetOp::ActNorm;
      op.bias = params_.add(name + ".bias", a->bias.shape(), to_t<T>(a->bias));
      std::vector<T> ls(a->scale.size());
      op.sign.resize(a->scale.size());
      for (size_t i = 0; i < ls.size(); ++i) {
        ls[i] = static_cast<T>(std::log(std::fabs(static_cast<double>(a->scale[i]))));
        op.sign[i] = a->scale[i] < 0 ? T(-1) : T(1);
      }
      op.log_scale = params_.add(name + ".log_scale", a->scale.shape(), ls);
    } else if (std::holds_alternative<ReluOp>(src.ops[k])) {
      op.kind = NetOp::Relu;
    } else {
      const auto &o = std::get<OutputScaleOp>(src.ops[k]);
      op.kind = NetOp::OutputScale;
      op.log_scale = params_.add(name + ".log_scale", o.log_scale.shape(), to_t<T>(o.log_scale));
      op.factor = static_cast<T>(o.factor);
    }
    net.ops.push_back(std::move(op));
  }
  net.bufs.resize(net.ops.size() + 1);
  return net;
}

template <typename T>
TrainModel<T>::TrainModel(const Graph &graph) : template_(graph) {
  n_bits_ = graph.image.n_bits;
  dims_ = graph.dims();
  for (size_t i = 0; i < graph.layers.size(); ++i) {
    const flowrt::Layer &g = graph.layers[i];
    const std::string name = g.name.empty() ? "layer" + std::to_string(i) : g.name;
    Layer l;
    l.name = name;
    l.in = g.in;
    l.out = g.out;
    if (auto *sq = std::get_if<SqueezeLayer>(&g.op)) {
      l.kind = Layer::Squeeze;
      l.order = sq->order;
    } else if (auto *an = std::get_if<ActNormLayer>(&g.op)) {
      l.kind = Layer::ActNorm;
      l.bias = params_.add(name + ".bias", an->bias.shape(), to_t<T>(an->bias));
      std::vector<T> ls(an->scale.size());
      l.sign.resize(ls.size());
      for (size_t k = 0; k < ls.size(); ++k) {
        ls[k] = static_cast<T>(std::log(std::fabs(static_cast<double>(an->scale[k]))));
        l.sign[k] = an->scale[k] < 0 ? T(-1) : T(1);
      }
      l.log_scale = params_.add(name + ".log_scale", an->scale.shape(), ls);
    } else if (auto *ic = std::get_if<InvConvLayer>(&g.op)) {
      l.kind = Layer::InvConv;
      l.form = ic->form;
      if (ic->form == InvConvForm::Dense) {
        l.weight = params_.add(name + ".weight", ic->weight.shape(), to_t<T>(ic->weight));
      } else {
        l.lower = params_.add(name + ".lower", ic->lower.shape(), to_t<T>(ic->lower));
        l.upper = params_.add(name + ".upper", ic->upper.shape(), to_t<T>(ic->upper));
        l.log_s = params_.add(name + ".log_s", ic->log_s.shape(), to_t<T>(ic->log_s));
        l.sign = to_t<T>(ic->sign);
        l.perm = ic->perm;
      }
      l.w.resize(static_cast<size_t>(g.in.c * g.in.c));
    } else if (auto *pm = std::get_if<PermuteLayer>(&g.op)) {
      l.kind = Layer::Permute;
      l.source = pm->source;
    } else if (auto *cp = std::get_if<CouplingLayer>(&g.op)) {
      l.kind = Layer::Coupling;
      l.coupling = PCoupling<T>{cp->type,  cp->conditioning, PNet<T>{},
                                cp->split, cp->scale_fn,     static_cast<T>(cp->scale_bias),
                                cp->form,  cp->mask_channel, {}};
      l.half = cp->conditioning;
      l.net = build_net(cp->net, name);
      if (cp->type == CouplingType::Affine && cp->scale_fn == ScaleFunction::Tanh)
        l.scale_weight = params_.add(name + ".scale_weight", cp->scale_weight.shape(),
                                     to_t<T>(cp->scale_weight));
      if (is_checkerboard(cp->conditioning)) {
        // m(i, j) = 1 where (i + j) % 2 is 0 (EVEN) or 1 (ODD): x_a, passed through.
        const int64_t parity = cp->conditioning == Half::CheckerboardEven ? 0 : 1;
        l.active.resize(static_cast<size_t>(g.in.plane()));
        l.mask.resize(l.active.size());
        for (int64_t y = 0; y < g.in.h; ++y)
          for (int64_t x = 0; x < g.in.w; ++x) {
            const bool m = (y + x) % 2 == parity;
            l.active[y * g.in.w + x] = m ? 0 : 1;
            l.mask[y * g.in.w + x] = m ? T(1) : T(0);
          }
      }
    } else if (auto *sp = std::get_if<SplitLayer>(&g.op)) {
      l.kind = Layer::Split;
      l.half = sp->leaving;
      l.layout = sp->layout;
      l.net = build_net(sp->prior, name);
    } else if (auto *bn = std::get_if<BatchNormLayer>(&g.op)) {
      l.kind = Layer::BatchNorm;
      l.beta = params_.add(name + ".beta", bn->beta.shape(), to_t<T>(bn->beta));
      std::vector<T> lg(bn->gamma.size());
      l.sign.resize(lg.size());
      for (size_t k = 0; k < lg.size(); ++k) {
        lg[k] = static_cast<T>(std::log(std::fabs(static_cast<double>(bn->gamma[k]))));
        l.sign[k] = bn->gamma[k] < 0 ? T(-1) : T(1);
      }
      l.log_gamma = params_.add(name + ".log_gamma", bn->gamma.shape(), lg);
      l.running_mean =
          params_.add(name + ".running_mean", bn->running_mean.shape(), to_t<T>(bn->running_mean));
      l.running_var =
          params_.add(name + ".running_var", bn->running_var.shape(), to_t<T>(bn->running_var));
      l.eps = bn->eps;
      l.momentum = bn->momentum;
    } else if (auto *lg = std::get_if<LogitLayer>(&g.op)) {
      l.kind = Layer::Logit;
      l.alpha = lg->alpha;
    } else if (std::holds_alternative<FlattenLayer>(g.op)) {
      l.kind = Layer::Flatten;
    } else {
      const auto &tp = std::get<TopPriorLayer>(g.op);
      l.kind = Layer::Top;
      l.top_kind = tp.kind;
      if (tp.kind == TopPriorKind::Learned) {
        l.mean = params_.add(name + ".mean", tp.mean.shape(), to_t<T>(tp.mean));
        l.log_std = params_.add(name + ".log_std", tp.log_std.shape(), to_t<T>(tp.log_std));
      }
      if (!tp.class_offsets.empty())
        l.offsets = params_.add(name + ".class_offsets", tp.class_offsets.shape(),
                                to_t<T>(tp.class_offsets));
      l.n_classes = tp.n_classes();
    }
    layers_.push_back(std::move(l));
  }
}

template <typename T>
const uint16_t *TrainModel<T>::weights16(int id) {
  if (!bf16_) return nullptr;
  return weights16_.data.data() + (params_.value(id) - params_.values().data());
}

template <typename T>
const uint16_t *TrainModel<T>::input16(Net &net, int buf, const ConvGeometry &g,
                                       const BatchGeometry &bg) {
  if constexpr (std::is_same_v<T, float>) {
    // An im2col conv's products read its column buffer, not the input.
    if (bf16_ && (g.pointwise() || detail::output_side(g)))
      return net.bufs16[buf].of(net.bufs[buf].data(), g.in_ch * bg.ld());
  }
  (void)net, (void)buf, (void)g, (void)bg;
  return nullptr;
}

template <typename T>
const T *TrainModel<T>::net_forward(Net &net, const BatchGeometry &bg, bool data_init) {
  const int64_t ld = bg.ld();
  net.act.assign(net.ops.size() + 1, 0);
  net.bufs16.resize(net.bufs.size());
  for (Bf16Copy &c : net.bufs16) c.fresh = false;  // every buffer is written again
  int cur = 0, used = 1;
  int64_t ch = net.in_ch;
  for (size_t k = 0; k < net.ops.size(); ++k) {
    NetOp &op = net.ops[k];
    if (op.kind == NetOp::Add) {
      const int out = used++;
      const T *x = net.bufs[cur].data();
      const T *s = net.bufs[net.act[op.from]].data();
      std::vector<T> &y = net.bufs[out];
      y.resize(static_cast<size_t>(ch * ld));
#pragma omp parallel for schedule(static) if (parallel_worth(ch * ld))
      for (int64_t e = 0; e < ch * ld; ++e) y[e] = x[e] + s[e];
      net.act[k + 1] = out;
      cur = out;
      continue;
    }
    if (op.kind == NetOp::Relu && op.source) {  // its input is kept: not in place
      const int out = used++;
      const std::vector<T> &x = net.bufs[cur];
      std::vector<T> &y = net.bufs[out];
      y.resize(static_cast<size_t>(ch * ld));
#pragma omp parallel for schedule(static) if (parallel_worth(ch * ld))
      for (int64_t e = 0; e < ch * ld; ++e) y[e] = x[e] > T(0) ? x[e] : T(0);
      net.act[k + 1] = out;
      cur = out;
      continue;
    }
    if (op.kind == NetOp::Relu) {
      std::vector<T> &x = net.bufs[cur];
#pragma omp parallel for schedule(static) if (parallel_worth(ch * ld))
      for (int64_t e = 0; e < ch * ld; ++e) x[e] = x[e] > T(0) ? x[e] : T(0);
      net.act[k + 1] = cur;
      continue;
    }
    const int out = used++;
    bool fused_relu = false;  // the ReLU after this op runs in its output pass
    const std::vector<T> &x = net.bufs[cur];
    std::vector<T> &y = net.bufs[out];
    if (op.kind == NetOp::Conv) {
      // A ReLU right after the conv runs in the conv's output pass (in place, as unfused).
      const bool relu =
          k + 1 < net.ops.size() && net.ops[k + 1].kind == NetOp::Relu && !net.ops[k + 1].source;
      // After relu_into_bf16 the input exists only in bf16; and this conv's ReLU may write the
      // next conv's bf16 operand only (the fp32 product then goes to shared scratch, not to the
      // tape).
      const bool bf16_only = k >= 2 && relu_into_bf16(net, k - 2);
      uint16_t *out16 = nullptr;
      std::vector<T> *product = &y;
      if (relu && relu_into_bf16(net, k)) {
        out16 = net.bufs16[out].write(op.geo.out_ch * ld);
        product = &product_;
      }
      product->resize(static_cast<size_t>(op.geo.out_ch * ld));
      conv_forward(op.geo, bg, params_.value(op.weight),
                   op.bias >= 0 ? params_.value(op.bias) : nullptr, bf16_only ? nullptr : x.data(),
                   product->data(), col_, relu, input16(net, cur, op.geo, bg), weights16(op.weight),
                   out16);
      ch = op.geo.out_ch;
      fused_relu = relu;
    } else {
      std::vector<T> scale(ch), shift(ch);
      if (op.kind == NetOp::ActNorm) {
        if (data_init)
          actnorm_data_init(ChannelLayout::cnhw(bg.batch, ch, bg.plane()), x.data(),
                            params_.value(op.bias), params_.value(op.log_scale), op.sign.data());
        for (int64_t c = 0; c < ch; ++c) {
          scale[c] = op.sign[c] * std::exp(params_.value(op.log_scale)[c]);
          shift[c] = scale[c] * params_.value(op.bias)[c];
        }
      } else {
        for (int64_t c = 0; c < ch; ++c)
          scale[c] = std::exp(op.factor * params_.value(op.log_scale)[c]);
      }
      // An actnorm and the ReLU after it in one pass (unless the ReLU's input is kept for an add);
      // with bf16 products, straight into the next conv's bf16 operand.
      fused_relu = op.kind == NetOp::ActNorm && k + 1 < net.ops.size() &&
                   net.ops[k + 1].kind == NetOp::Relu && !net.ops[k + 1].source;
      const bool into_bf16 = relu_into_bf16(net, k);
      if constexpr (std::is_same_v<T, float>) {
        if (into_bf16)
          affine_relu_bf16(scale.data(), shift.data(), ch, ld, x.data(),
                           net.bufs16[out].write(ch * ld));
      }
      if (!into_bf16) {
        y.resize(static_cast<size_t>(ch * ld));
        affine_relu(scale.data(), shift.data(), ch, ld, x.data(), y.data(), fused_relu);
      }
    }
    net.act[k + 1] = out;
    cur = out;
    if (fused_relu) {  // in place: the ReLU's input and output are this op's output
      net.act[k + 2] = out;
      ++k;
    }
  }
  return net.bufs[cur].data();
}

template <typename T>
bool TrainModel<T>::relu_into_bf16(const Net &net, size_t k) const {
  if (!std::is_same_v<T, float> || !bf16_ || k + 2 >= net.ops.size()) return false;
  const NetOp &producer = net.ops[k], &relu = net.ops[k + 1], &conv = net.ops[k + 2];
  return (producer.kind == NetOp::ActNorm || producer.kind == NetOp::Conv) &&
         relu.kind == NetOp::Relu && !relu.source && conv.kind == NetOp::Conv && !conv.source &&
         (conv.geo.pointwise() || detail::output_side(conv.geo));
}

template <typename T>
void TrainModel<T>::swap_pool(Net &net) {
  if (!recompute_) return;
  if (pool_.size() < net.bufs.size()) pool_.resize(net.bufs.size());
  for (size_t i = 0; i < net.bufs.size(); ++i) net.bufs[i].swap(pool_[i]);
  net.bufs16.resize(net.bufs.size());
  if (pool16_.size() < net.bufs16.size()) pool16_.resize(net.bufs16.size());
  for (size_t i = 0; i < net.bufs16.size(); ++i) std::swap(net.bufs16[i], pool16_[i]);
}

template <typename T>
void TrainModel<T>::recompute_net(Layer &l, const BatchGeometry &bg, int64_t c0, int64_t cn) {
  net_input(l, bg, l.input.data(), c0, cn);
  net_forward(l.net, bg, false);
}

template <typename T>
void TrainModel<T>::net_input(Layer &l, const BatchGeometry &bg, const T *x, int64_t c0,
                              int64_t cn) {
  const int64_t ld = bg.ld(), plane = bg.plane();
  std::vector<T> &in = l.net.bufs[0];
  in.resize(static_cast<size_t>(l.net.in_ch * ld));
  gather_cnhw(x, bg.batch, l.in.c, plane, c0, cn, in.data());
  if (l.mask.empty()) return;
  // Checkerboard: x_b's positions zeroed, then the mask channel (when the net takes it).
  const T *m = l.mask.data();
#pragma omp parallel for schedule(static) if (parallel_worth(l.net.in_ch * ld))
  for (int64_t r = 0; r < l.net.in_ch * bg.batch; ++r) {
    T *row = in.data() + r * plane;
    if (r < cn * bg.batch) {
      for (int64_t p = 0; p < plane; ++p) row[p] *= m[p];
    } else {
      std::copy(m, m + plane, row);
    }
  }
}

template <typename T>
void TrainModel<T>::net_backward(Net &net, const BatchGeometry &bg, std::vector<T> &g,
                                 std::vector<T> &din) {
  const int64_t ld = bg.ld();
  int64_t ch = net.out_ch;
  std::vector<T> &tmp = net_dg_;
  const T *relu_out = nullptr;           // a ReLU after a conv: masked in the conv's backward pass
  const uint16_t *relu_out16 = nullptr;  // the same, its output held in bf16 only
  std::vector<T> &skip = net_skip_g_;    // a residual add's output gradient, until its source
  for (size_t k = net.ops.size(); k-- > 0;) {
    NetOp &op = net.ops[k];
    const T *x = net.bufs[net.act[k]].data();
    const T *y = net.bufs[net.act[k + 1]].data();
    switch (op.kind) {
      case NetOp::Add:
        skip.assign(g.begin(), g.begin() + ch * ld);
        break;
      case NetOp::Relu:
        if (k > 0 && net.ops[k - 1].kind == NetOp::Conv && !op.source &&
            relu_into_bf16(net, k - 1)) {
          relu_out16 = net.bufs16[net.act[k + 1]].data.data();
        } else if (k > 0 && net.ops[k - 1].kind == NetOp::Conv && !op.source) {
          relu_out = y;
        } else if (k > 0 && relu_into_bf16(net, k - 1)) {
          if constexpr (std::is_same_v<T, float>)
            relu_backward_bf16(ch * ld, net.bufs16[net.act[k + 1]].data.data(), g.data());
        } else {
          relu_backward(ch * ld, y, g.data());
        }
        break;
      case NetOp::OutputScale:
        output_scale_backward(ch, ld, params_.value(op.log_scale), op.factor, y, g.data(),
                              params_.grad(op.log_scale));
        break;
      case NetOp::ActNorm: {
        std::vector<T> scale(ch);
        for (int64_t c = 0; c < ch; ++c)
          scale[c] = op.sign[c] * std::exp(params_.value(op.log_scale)[c]);
        actnorm_backward(ChannelLayout::cnhw(bg.batch, ch, bg.plane()), x, g.data(), scale.data(),
                         params_.value(op.bias), T(0), g.data(), params_.grad(op.bias),
                         params_.grad(op.log_scale));
        break;
      }
      case NetOp::Conv:
        tmp.resize(static_cast<size_t>(op.geo.in_ch * ld));
        conv_backward(op.geo, bg, params_.value(op.weight),
                      k >= 2 && relu_into_bf16(net, k - 2) ? nullptr : x, g.data(),
                      params_.grad(op.weight), op.bias >= 0 ? params_.grad(op.bias) : nullptr,
                      tmp.data(), col_, dcol_, relu_out, false,
                      input16(net, net.act[k], op.geo, bg), weights16(op.weight), &grad16_,
                      relu_out16);
        relu_out = nullptr;
        relu_out16 = nullptr;
        g.swap(tmp);
        ch = op.geo.in_ch;
        break;
    }
    if (op.source) {  // g is now d/d(op k's input): add the connection's share
      T *gp = g.data();
      const T *sp = skip.data();
#pragma omp parallel for schedule(static) if (parallel_worth(ch * ld))
      for (int64_t e = 0; e < ch * ld; ++e) gp[e] += sp[e];
    }
  }
  din.swap(g);
}

template <typename T>
void TrainModel<T>::set_precision(flowrt_precision p) {
  weights16_.fresh = false;
  if (p == FLOWRT_PRECISION_FP32) {
    bf16_ = false;
    return;
  }
  const std::string name = std::string("--precision ") + precision_name(p);
  if (p != FLOWRT_PRECISION_BF16)
    fail(FLOWRT_UNSUPPORTED, name +
                                 ": the CPU trainer computes in fp32 or bf16 (tf32 and fp16 "
                                 "need --device cuda)");
  if (!std::is_same_v<T, float>)
    fail(FLOWRT_UNSUPPORTED, name + ": only the float trainer has bf16 products");
  std::string why;
  if (!gemm_bf16_available(&why)) fail(FLOWRT_UNSUPPORTED, name + " on the CPU " + why);
  bf16_ = true;
}

template <typename T>
double TrainModel<T>::forward(const T *x, const int32_t *labels, int64_t n, bool data_init) {
  if (n < 1) invalid_argument("forward: empty batch");
  const GemmBf16Scope products(bf16_);
  if constexpr (std::is_same_v<T, float>) {
    if (bf16_) {
      weights16_.fresh = false;
      weights16_.of(params_.values().data(), static_cast<int64_t>(params_.size()));
    }
  }
  batch_ = n;
  labels_.assign(static_cast<size_t>(n), -1);
  if (labels)
    for (int64_t b = 0; b < n; ++b) labels_[b] = labels[b];
  cur_.assign(x, x + n * dims_);
  log_det_.assign(static_cast<size_t>(n), 0.0);
  log_prior_.assign(static_cast<size_t>(n), 0.0);
  // Each layer's term is what it added to the image's log-determinant or prior sum.
  layer_log_p_.resize(layers_.size() * static_cast<size_t>(n));
  std::vector<double> det(static_cast<size_t>(n), 0.0), prior(det);
  for (size_t i = 0; i < layers_.size(); ++i) {
    layer_forward(layers_[i], data_init);
    for (int64_t b = 0; b < n; ++b) {
      layer_log_p_[i * n + b] = (log_det_[b] - det[b]) + (log_prior_[b] - prior[b]);
      det[b] = log_det_[b], prior[b] = log_prior_[b];
    }
  }
  log_p_.resize(static_cast<size_t>(n));
  bpd_.resize(static_cast<size_t>(n));
  double sum = 0;
  for (int64_t b = 0; b < n; ++b) {
    log_p_[b] = log_prior_[b] + log_det_[b];
    bpd_[b] = n_bits_ - log_p_[b] / (static_cast<double>(dims_) * std::log(2.0));
    sum += bpd_[b];
  }
  return sum / static_cast<double>(n);
}

template <typename T>
void TrainModel<T>::layer_forward(Layer &l, bool data_init) {
  const int64_t B = batch_, C = l.in.c, plane = l.in.plane(), in_n = l.in.numel();
  const int64_t out_n = l.out.numel();
  const BatchGeometry bg{B, l.in.h, l.in.w};
  if (l.kind != Layer::Squeeze && l.kind != Layer::Permute && l.kind != Layer::Flatten)
    l.input = cur_;
  switch (l.kind) {
    case Layer::Squeeze:
      next_.resize(static_cast<size_t>(B * out_n));
#pragma omp parallel for schedule(static) if (parallel_worth(B * in_n))
      for (int64_t b = 0; b < B; ++b)
        layers::squeeze(l.order, l.in, cur_.data() + b * in_n, next_.data() + b * out_n, false);
      cur_.swap(next_);
      break;
    case Layer::Permute:
      next_.resize(static_cast<size_t>(B * out_n));
#pragma omp parallel for schedule(static) if (parallel_worth(B * in_n))
      for (int64_t b = 0; b < B; ++b)
        layers::permute_channels(l.source.data(), C, plane, cur_.data() + b * in_n,
                                 next_.data() + b * out_n, false);
      cur_.swap(next_);
      break;
    case Layer::ActNorm: {
      T *bias = params_.value(l.bias), *ls = params_.value(l.log_scale);
      // On a 1x1 grid (after a flatten: NICE's diagonal scaling) each channel is one pixel, whose
      // statistics over one batch are a few dozen samples: a pixel constant in the batch would get
      // a scale of ~1e3 (its dequantisation noise), and any other image a huge z there. Such an
      // actnorm keeps its values.
      if (data_init && plane > 1)
        actnorm_data_init(ChannelLayout::nchw(B, C, plane), cur_.data(), bias, ls, l.sign.data());
      std::vector<T> scale(C), shift(C);
      double sum_ls = 0;
      for (int64_t c = 0; c < C; ++c) {
        scale[c] = l.sign[c] * std::exp(ls[c]);
        shift[c] = scale[c] * bias[c];
        sum_ls += ls[c];
      }
#pragma omp parallel for schedule(static) if (parallel_worth(B * in_n))
      for (int64_t b = 0; b < B; ++b)
        layers::channel_affine(scale.data(), shift.data(), C, plane, cur_.data() + b * in_n, false);
      for (int64_t b = 0; b < B; ++b) log_det_[b] += plane * sum_ls;
      break;
    }
    case Layer::InvConv: {
      double lad = 0;
      if (l.form == InvConvForm::LU) {
        lu_compose(C, l.perm.data(), params_.value(l.lower), params_.value(l.upper), l.sign.data(),
                   params_.value(l.log_s), l.w.data());
        for (int64_t c = 0; c < C; ++c) lad += params_.value(l.log_s)[c];
      } else {
        std::memcpy(l.w.data(), params_.value(l.weight), sizeof(T) * C * C);
        lad = dense_log_abs_det<T>(C, l.w.data(), T(0), nullptr);
      }
      next_.resize(static_cast<size_t>(B * out_n));
#pragma omp parallel for schedule(static) if (parallel_worth(B * in_n))
      for (int64_t b = 0; b < B; ++b)
        layers::linear1x1(l.w.data(), static_cast<const T *>(nullptr), C, plane,
                          cur_.data() + b * in_n, next_.data() + b * out_n);
      cur_.swap(next_);
      for (int64_t b = 0; b < B; ++b) log_det_[b] += plane * lad;
      break;
    }
    case Layer::Coupling: {
      // A checkerboard coupling conditions on, and transforms, all C channels (at the two
      // position sets); a channel coupling's halves are channel ranges.
      const bool checker = !l.active.empty();
      const int64_t cb = checker ? C : C / 2, ch = l.net.out_ch;
      const int64_t a0 = l.half == Half::Second ? cb : 0, b0 = l.half == Half::First ? cb : 0;
      swap_pool(l.net);
      net_input(l, bg, cur_.data(), a0, cb);
      const T *hc = net_forward(l.net, bg, data_init);
      l.h.resize(static_cast<size_t>(B * ch * plane));
      scatter_nchw(hc, B, ch, plane, 0, ch, l.h.data(), false);
      swap_pool(l.net);
      const T *sw = l.scale_weight >= 0 ? params_.value(l.scale_weight) : nullptr;
      const uint8_t *active = checker ? l.active.data() : nullptr;
#pragma omp parallel for schedule(static) if (parallel_worth(B * in_n))
      for (int64_t b = 0; b < B; ++b)
        log_det_[b] += coupling_forward(l.coupling, sw, l.h.data() + b * ch * plane, cb, plane,
                                        active, cur_.data() + b * in_n + b0 * plane);
      break;
    }
    case Layer::Logit:
#pragma omp parallel for schedule(static) if (parallel_worth(B * in_n))
      for (int64_t b = 0; b < B; ++b)
        log_det_[b] += logit_forward(l.alpha, in_n, cur_.data() + b * in_n);
      break;
    case Layer::Flatten:
      break;  // (C, H, W) -> (C*H*W, 1, 1): the NCHW memory already is the flattened vector
    case Layer::BatchNorm:
      batchnorm_forward(l, data_init);
      break;
    case Layer::Split: {
      const int64_t cz = C / 2;
      const int64_t lo = l.half == Half::First ? 0 : cz, ko = l.half == Half::First ? cz : 0;
      if (!l.net.empty()) {
        swap_pool(l.net);
        l.net.bufs[0].resize(static_cast<size_t>(cz * bg.ld()));
        gather_cnhw(cur_.data(), B, C, plane, ko, cz, l.net.bufs[0].data());
        const T *o = net_forward(l.net, bg, data_init);
        l.h.resize(static_cast<size_t>(B * 2 * cz * plane));
        scatter_nchw(o, B, 2 * cz, plane, 0, 2 * cz, l.h.data(), false);
        swap_pool(l.net);
      }
      next_.resize(static_cast<size_t>(B * out_n));
#pragma omp parallel for schedule(static) if (parallel_worth(B * in_n))
      for (int64_t b = 0; b < B; ++b) {
        const T *leave = cur_.data() + b * in_n + lo * plane;
        double lp = 0;
        if (l.net.empty()) {
          for (int64_t k = 0; k < cz * plane; ++k)
            lp += -layers::kHalfLog2Pi - 0.5 * static_cast<double>(leave[k]) * leave[k];
        } else {
          const T *o = l.h.data() + b * 2 * cz * plane;
          for (int64_t j = 0; j < cz; ++j) {
            int64_t mc = 0, lc = 0;
            layers::prior_channels(l.layout, j, cz, &mc, &lc);
            lp +=
                layers::gaussian_log_prob(leave + j * plane, o + mc * plane, o + lc * plane, plane);
          }
        }
        log_prior_[b] += lp;
        std::memcpy(next_.data() + b * out_n, cur_.data() + b * in_n + ko * plane,
                    sizeof(T) * out_n);
      }
      cur_.swap(next_);
      break;
    }
    case Layer::Top: {
#pragma omp parallel for schedule(static) if (parallel_worth(B * in_n))
      for (int64_t b = 0; b < B; ++b) {
        const T *z = cur_.data() + b * in_n;
        double lp = 0;
        if (l.top_kind == TopPriorKind::StandardNormal && l.offsets < 0) {
          for (int64_t k = 0; k < in_n; ++k)
            lp += -layers::kHalfLog2Pi - 0.5 * static_cast<double>(z[k]) * z[k];
        } else {
          const std::vector<T> zeros(l.mean < 0 ? in_n : 0, T(0));
          const T *mean = l.mean >= 0 ? params_.value(l.mean) : zeros.data();
          const T *ls = l.log_std >= 0 ? params_.value(l.log_std) : zeros.data();
          for (int64_t c = 0; c < C; ++c) {
            T mo = 0, lo = 0;
            if (l.offsets >= 0 && labels_[b] >= 0) {
              mo = params_.value(l.offsets)[labels_[b] * 2 * C + c];
              lo = params_.value(l.offsets)[labels_[b] * 2 * C + C + c];
            }
            lp += layers::gaussian_log_prob(z + c * plane, mean + c * plane, ls + c * plane, plane,
                                            mo, lo);
          }
        }
        log_prior_[b] += lp;
      }
      break;
    }
  }
}

template <typename T>
void TrainModel<T>::batchnorm_forward(Layer &l, bool data_init) {
  const int64_t B = batch_, C = l.in.c, plane = l.in.plane(), in_n = l.in.numel();
  const T *log_gamma = params_.value(l.log_gamma), *beta = params_.value(l.beta);
  T *rmean = params_.value(l.running_mean), *rvar = params_.value(l.running_var);
  l.batch_stats = data_init || this->mode() == Mode::Train;
  l.stat_mean.resize(static_cast<size_t>(C));
  l.stat_inv_std.resize(static_cast<size_t>(C));
  double logdet = 0;
  if (l.batch_stats) {
    std::vector<double> var(static_cast<size_t>(C));
    batch_moments(ChannelLayout::nchw(B, C, plane), cur_.data(), l.stat_mean.data(), var.data());
    bool finite = true;
    for (int64_t c = 0; c < C; ++c) {
      l.stat_inv_std[c] = 1.0 / std::sqrt(var[c] + l.eps);
      finite = finite && std::isfinite(l.stat_mean[c]) && std::isfinite(var[c]);
      logdet += static_cast<double>(log_gamma[c]) + std::log(l.stat_inv_std[c]);
    }
    std::vector<double> gamma(static_cast<size_t>(C));
    for (int64_t c = 0; c < C; ++c) gamma[c] = l.sign[c] * std::exp(double(log_gamma[c]));
#pragma omp parallel for schedule(static) if (parallel_worth(B * in_n))
    for (int64_t b = 0; b < B; ++b)
      for (int64_t c = 0; c < C; ++c) {
        T *x = cur_.data() + b * in_n + c * plane;
        const double m = l.stat_mean[c], s = gamma[c] * l.stat_inv_std[c], t = beta[c];
        for (int64_t p = 0; p < plane; ++p) x[p] = static_cast<T>((x[p] - m) * s + t);
      }
    // Running averages in training only (not in the initialisation, nor from a batch whose
    // statistics are not finite: that step is skipped). running_var averages the unbiased
    // variance, as PyTorch does.
    if (!data_init && finite) {
      const double n = static_cast<double>(B * plane), unbias = n > 1 ? n / (n - 1) : 1.0;
      const double mo = l.momentum;
      for (int64_t c = 0; c < C; ++c) {
        rmean[c] = static_cast<T>((1 - mo) * rmean[c] + mo * l.stat_mean[c]);
        rvar[c] = static_cast<T>((1 - mo) * rvar[c] + mo * var[c] * unbias);
      }
    }
  } else {
    // The running averages as the actnorm a file holds (BatchNormLayer::as_actnorm), so that
    // evaluation here and the exported model compute the same map.
    std::vector<T> scale(static_cast<size_t>(C)), shift(static_cast<size_t>(C));
    for (int64_t c = 0; c < C; ++c) {
      const T gamma = l.sign[c] * std::exp(log_gamma[c]);
      const double s = static_cast<double>(gamma) / std::sqrt(double(rvar[c]) + l.eps);
      scale[c] = static_cast<T>(s);
      shift[c] = scale[c] * static_cast<T>(double(beta[c]) / s - double(rmean[c]));
      logdet += std::log(std::fabs(static_cast<double>(scale[c])));
      l.stat_mean[c] = rmean[c];
      l.stat_inv_std[c] = 1.0 / std::sqrt(double(rvar[c]) + l.eps);
    }
#pragma omp parallel for schedule(static) if (parallel_worth(B * in_n))
    for (int64_t b = 0; b < B; ++b)
      layers::channel_affine(scale.data(), shift.data(), C, plane, cur_.data() + b * in_n, false);
  }
  for (int64_t b = 0; b < B; ++b) log_det_[b] += static_cast<double>(plane) * logdet;
}

template <typename T>
void TrainModel<T>::backward() {
  if (batch_ < 1) invalid_argument("backward without a forward pass");
  const GemmBf16Scope products(bf16_);
  if constexpr (std::is_same_v<T, float>) {
    if (bf16_ && !weights16_.fresh)  // bf16 chosen after the forward
      weights16_.of(params_.values().data(), static_cast<int64_t>(params_.size()));
  }
  params_.zero_grads();
  grad_.assign(static_cast<size_t>(batch_ * layers_.back().in.numel()), T(0));
  for (size_t i = layers_.size(); i-- > 0;) layer_backward(layers_[i]);
}

template <typename T>
void TrainModel<T>::layer_backward(Layer &l) {
  const int64_t B = batch_, C = l.in.c, plane = l.in.plane(), in_n = l.in.numel();
  const int64_t out_n = l.out.numel();
  const BatchGeometry bg{B, l.in.h, l.in.w};
  // dL/dlog p of every image, and of every per-image log-determinant term.
  const T w = static_cast<T>(-1.0 / (static_cast<double>(B) * dims_ * std::log(2.0)));
  const T logdet_weight = static_cast<T>(B * plane) * w;
  switch (l.kind) {
    case Layer::Squeeze:
      dgrad_.resize(static_cast<size_t>(B * in_n));
#pragma omp parallel for schedule(static) if (parallel_worth(B * in_n))
      for (int64_t b = 0; b < B; ++b)
        squeeze_backward(l.order, l.in, grad_.data() + b * out_n, dgrad_.data() + b * in_n);
      grad_.swap(dgrad_);
      break;
    case Layer::Permute:
      dgrad_.resize(static_cast<size_t>(B * in_n));
#pragma omp parallel for schedule(static) if (parallel_worth(B * in_n))
      for (int64_t b = 0; b < B; ++b)
        permute_backward(l.source.data(), C, plane, grad_.data() + b * out_n,
                         dgrad_.data() + b * in_n);
      grad_.swap(dgrad_);
      break;
    case Layer::ActNorm: {
      std::vector<T> scale(C);
      for (int64_t c = 0; c < C; ++c)
        scale[c] = l.sign[c] * std::exp(params_.value(l.log_scale)[c]);
      actnorm_backward(ChannelLayout::nchw(B, C, plane), l.input.data(), grad_.data(), scale.data(),
                       params_.value(l.bias), logdet_weight, grad_.data(), params_.grad(l.bias),
                       params_.grad(l.log_scale));
      break;
    }
    case Layer::InvConv: {
      std::vector<T> dw(static_cast<size_t>(C * C), T(0));
      dgrad_.resize(static_cast<size_t>(B * in_n));
      linear1x1_backward(B, C, plane, l.w.data(), l.input.data(), grad_.data(), dgrad_.data(),
                         dw.data());
      if (l.form == InvConvForm::LU) {
        lu_backward(C, l.perm.data(), params_.value(l.lower), params_.value(l.upper), l.sign.data(),
                    params_.value(l.log_s), dw.data(), logdet_weight, params_.grad(l.lower),
                    params_.grad(l.upper), params_.grad(l.log_s));
      } else {
        T *g = params_.grad(l.weight);
        for (int64_t k = 0; k < C * C; ++k) g[k] += dw[k];
        dense_log_abs_det(C, l.w.data(), logdet_weight, g);
      }
      grad_.swap(dgrad_);
      break;
    }
    case Layer::Coupling: {
      const bool checker = !l.active.empty();
      const int64_t cb = checker ? C : C / 2, ch = l.net.out_ch;
      const int64_t a0 = l.half == Half::Second ? cb : 0, b0 = l.half == Half::First ? cb : 0;
      dgrad_.resize(static_cast<size_t>(B * in_n));
      std::vector<T> dh(static_cast<size_t>(B * ch * plane));
      const T *sw = l.scale_weight >= 0 ? params_.value(l.scale_weight) : nullptr;
      // The tanh scale's weight gradient per image, summed in image order afterwards.
      std::vector<T> dsw(sw ? static_cast<size_t>(B * cb) : 0, T(0));
      const uint8_t *active = checker ? l.active.data() : nullptr;
#pragma omp parallel for schedule(static) if (parallel_worth(B * in_n))
      for (int64_t b = 0; b < B; ++b) {
        const T *g = grad_.data() + b * in_n;
        T *d = dgrad_.data() + b * in_n;
        if (!checker) std::memcpy(d + a0 * plane, g + a0 * plane, sizeof(T) * cb * plane);
        coupling_backward(l.coupling, sw, l.h.data() + b * ch * plane,
                          l.input.data() + b * in_n + b0 * plane, g + b0 * plane, cb, plane, active,
                          w, d + b0 * plane, dh.data() + b * ch * plane,
                          sw ? dsw.data() + b * cb : nullptr);
      }
      if (sw) {
        T *gsw = params_.grad(l.scale_weight);
        for (int64_t b = 0; b < B; ++b)
          for (int64_t j = 0; j < cb; ++j) gsw[j] += dsw[b * cb + j];
      }
      net_g_.resize(static_cast<size_t>(ch * bg.ld()));
      gather_cnhw(dh.data(), B, ch, plane, 0, ch, net_g_.data());
      swap_pool(l.net);
      if (recompute_) recompute_net(l, bg, a0, cb);
      net_backward(l.net, bg, net_g_, cnhw_);
      swap_pool(l.net);
      if (checker) {
        // The net saw x * m: its gradient reaches x at x_a's positions only (the mask
        // channel, a constant, takes none).
        const int64_t ld = bg.ld();
        const T *m = l.mask.data();
#pragma omp parallel for schedule(static) if (parallel_worth(B * in_n))
        for (int64_t b = 0; b < B; ++b)
          for (int64_t c = 0; c < C; ++c) {
            const T *src = cnhw_.data() + c * ld + b * plane;
            T *dst = dgrad_.data() + b * in_n + c * plane;
            for (int64_t p = 0; p < plane; ++p) dst[p] += src[p] * m[p];
          }
      } else {
        scatter_nchw(cnhw_.data(), B, C, plane, a0, cb, dgrad_.data(), true);
      }
      grad_.swap(dgrad_);
      break;
    }
    case Layer::Logit:
#pragma omp parallel for schedule(static) if (parallel_worth(B * in_n))
      for (int64_t b = 0; b < B; ++b)
        logit_backward(l.alpha, in_n, l.input.data() + b * in_n, grad_.data() + b * in_n, w,
                       grad_.data() + b * in_n);
      break;
    case Layer::Flatten:
      break;
    case Layer::BatchNorm: {
      std::vector<T> gamma(static_cast<size_t>(C));
      for (int64_t c = 0; c < C; ++c)
        gamma[c] = l.sign[c] * std::exp(params_.value(l.log_gamma)[c]);
      batchnorm_backward(ChannelLayout::nchw(B, C, plane), l.input.data(), grad_.data(),
                         l.stat_mean.data(), l.stat_inv_std.data(), gamma.data(), logdet_weight,
                         l.batch_stats, grad_.data(), params_.grad(l.beta),
                         params_.grad(l.log_gamma));
      break;
    }
    case Layer::Split: {
      const int64_t cz = C / 2;
      const int64_t lo = l.half == Half::First ? 0 : cz, ko = l.half == Half::First ? cz : 0;
      dgrad_.resize(static_cast<size_t>(B * in_n));
      std::vector<T> dh(l.net.empty() ? 0 : static_cast<size_t>(B * 2 * cz * plane), T(0));
#pragma omp parallel for schedule(static) if (parallel_worth(B * in_n))
      for (int64_t b = 0; b < B; ++b) {
        const T *leave = l.input.data() + b * in_n + lo * plane;
        T *d = dgrad_.data() + b * in_n;
        std::memcpy(d + ko * plane, grad_.data() + b * out_n, sizeof(T) * out_n);
        if (l.net.empty()) {
          standard_normal_backward(leave, cz * plane, w, d + lo * plane);
        } else {
          const T *o = l.h.data() + b * 2 * cz * plane;
          T *dob = dh.data() + b * 2 * cz * plane;
          for (int64_t j = 0; j < cz; ++j) {
            int64_t mc = 0, lc = 0;
            layers::prior_channels(l.layout, j, cz, &mc, &lc);
            gaussian_backward(leave + j * plane, o + mc * plane, o + lc * plane, plane, w,
                              d + (lo + j) * plane, dob + mc * plane, dob + lc * plane);
          }
        }
      }
      if (!l.net.empty()) {
        net_g_.resize(static_cast<size_t>(2 * cz * bg.ld()));
        gather_cnhw(dh.data(), B, 2 * cz, plane, 0, 2 * cz, net_g_.data());
        swap_pool(l.net);
        if (recompute_) recompute_net(l, bg, ko, cz);
        net_backward(l.net, bg, net_g_, cnhw_);
        swap_pool(l.net);
        scatter_nchw(cnhw_.data(), B, C, plane, ko, cz, dgrad_.data(), true);
      }
      grad_.swap(dgrad_);
      break;
    }
    case Layer::Top: {
      if (l.top_kind == TopPriorKind::StandardNormal && l.offsets < 0) {
#pragma omp parallel for schedule(static) if (parallel_worth(B * in_n))
        for (int64_t b = 0; b < B; ++b)
          standard_normal_backward(l.input.data() + b * in_n, in_n, w, grad_.data() + b * in_n);
        break;
      }
      const std::vector<T> zeros(l.mean < 0 ? in_n : 0, T(0));
      const T *mean = l.mean >= 0 ? params_.value(l.mean) : zeros.data();
      const T *ls = l.log_std >= 0 ? params_.value(l.log_std) : zeros.data();
      // Channels in parallel: each owns its slice of every gradient, images run in order.
#pragma omp parallel for schedule(static) if (parallel_worth(B * in_n))
      for (int64_t c = 0; c < C; ++c)
        for (int64_t b = 0; b < B; ++b) {
          T mo = 0, lo = 0;
          const int32_t y = labels_[b];
          const bool offs = l.offsets >= 0 && y >= 0;
          if (offs) {
            mo = params_.value(l.offsets)[y * 2 * C + c];
            lo = params_.value(l.offsets)[y * 2 * C + C + c];
          }
          const int64_t at = c * plane;
          gaussian_backward(l.input.data() + b * in_n + at, mean + at, ls + at, plane, w,
                            grad_.data() + b * in_n + at,
                            l.mean >= 0 ? params_.grad(l.mean) + at : nullptr,
                            l.log_std >= 0 ? params_.grad(l.log_std) + at : nullptr, mo, lo,
                            offs ? params_.grad(l.offsets) + y * 2 * C + c : nullptr,
                            offs ? params_.grad(l.offsets) + y * 2 * C + C + c : nullptr);
        }
      break;
    }
  }
}

template <typename T>
void TrainModel<T>::release_tape() {
  auto drop = [](std::vector<T> &v) { std::vector<T>().swap(v); };
  for (Layer &l : layers_) {
    drop(l.input), drop(l.h);
    std::vector<double>().swap(l.stat_mean);
    std::vector<double>().swap(l.stat_inv_std);
    for (std::vector<T> &b : l.net.bufs) drop(b);
    std::vector<Bf16Copy>().swap(l.net.bufs16);
  }
  for (std::vector<T> &b : pool_) drop(b);
  std::vector<Bf16Copy>().swap(pool16_);
  weights16_ = Bf16Copy(), grad16_ = Bf16Copy();
  for (std::vector<T> *v :
       {&cur_, &next_, &grad_, &dgrad_, &col_, &dcol_, &net_g_, &net_dg_, &cnhw_, &product_})
    drop(*v);
  batch_ = 0;  // a backward now needs a forward first
}

template <typename T>
GradLayout TrainModel<T>::grad_layout() const {
  const std::vector<ParamInfo> &info = params_.info();
  GradLayout out;
  for (const Layer &l : layers_) {
    // A batch norm's running averages take no gradient, but are its layer's (their zeros
    // keep the layout a tiling of the parameters).
    std::vector<int> ids = {l.bias,  l.log_scale, l.weight,       l.lower,      l.upper,
                            l.log_s, l.mean,      l.log_std,      l.offsets,    l.scale_weight,
                            l.beta,  l.log_gamma, l.running_mean, l.running_var};
    for (const NetOp &op : l.net.ops) ids.insert(ids.end(), {op.weight, op.bias, op.log_scale});
    std::vector<GradRange> ranges;
    for (int id : ids)
      if (id >= 0 && info[id].size > 0) ranges.push_back({info[id].offset, info[id].size});
    std::sort(ranges.begin(), ranges.end(),
              [](const GradRange &a, const GradRange &b) { return a.offset < b.offset; });
    std::vector<GradRange> merged;
    for (const GradRange &r : ranges)
      if (!merged.empty() && merged.back().end() >= r.offset)
        merged.back().count = std::max(merged.back().end(), r.end()) - merged.back().offset;
      else
        merged.push_back(r);
    out.push_back(std::move(merged));
  }
  return out;
}

template <typename T>
Graph TrainModel<T>::export_graph(const std::vector<T> &values) const {
  if (values.size() != params_.size()) invalid_argument("export_graph: wrong parameter count");
  const std::vector<ParamInfo> &info = params_.info();
  auto tensor = [&](int id) {
    const ParamInfo &p = info[id];
    return to_tensor(p.shape, values.data() + p.offset, p.size);
  };
  auto scale_tensor = [&](int log_scale, const std::vector<T> &sign) {
    const ParamInfo &p = info[log_scale];
    std::vector<float> s(p.size);
    for (size_t k = 0; k < p.size; ++k)
      s[k] = static_cast<float>(sign[k] * std::exp(values[p.offset + k]));
    return Tensor::from_vector(p.shape, std::move(s));
  };
  auto export_net = [&](const Net &tn, flowrt::Net &gn) {
    for (size_t k = 0; k < tn.ops.size(); ++k) {
      const NetOp &op = tn.ops[k];
      if (auto *c = std::get_if<Conv2dOp>(&gn.ops[k])) {
        c->weight = tensor(op.weight);
        if (op.bias >= 0) c->bias = tensor(op.bias);
      } else if (auto *a = std::get_if<NetActNormOp>(&gn.ops[k])) {
        a->bias = tensor(op.bias);
        a->scale = scale_tensor(op.log_scale, op.sign);
      } else if (auto *o = std::get_if<OutputScaleOp>(&gn.ops[k])) {
        o->log_scale = tensor(op.log_scale);
      }
    }
  };
  Graph g = template_;
  for (size_t i = 0; i < layers_.size(); ++i) {
    const Layer &l = layers_[i];
    LayerOp &op = g.layers[i].op;
    if (auto *an = std::get_if<ActNormLayer>(&op)) {
      an->bias = tensor(l.bias);
      an->scale = scale_tensor(l.log_scale, l.sign);
    } else if (auto *ic = std::get_if<InvConvLayer>(&op)) {
      if (l.form == InvConvForm::Dense) {
        ic->weight = tensor(l.weight);
      } else {
        ic->lower = tensor(l.lower);
        ic->upper = tensor(l.upper);
        ic->log_s = tensor(l.log_s);
      }
    } else if (auto *cp = std::get_if<CouplingLayer>(&op)) {
      export_net(l.net, cp->net);
      if (l.scale_weight >= 0) cp->scale_weight = tensor(l.scale_weight);
    } else if (auto *bn = std::get_if<BatchNormLayer>(&op)) {
      bn->beta = tensor(l.beta);
      bn->gamma = scale_tensor(l.log_gamma, l.sign);
      bn->running_mean = tensor(l.running_mean);
      bn->running_var = tensor(l.running_var);
    } else if (auto *sp = std::get_if<SplitLayer>(&op)) {
      export_net(l.net, sp->prior);
    } else if (auto *tp = std::get_if<TopPriorLayer>(&op)) {
      if (l.mean >= 0) tp->mean = tensor(l.mean);
      if (l.log_std >= 0) tp->log_std = tensor(l.log_std);
      if (l.offsets >= 0) tp->class_offsets = tensor(l.offsets);
    }
  }
  finalize_graph(g);
  return g;
}

template class TrainModel<float>;
template class TrainModel<double>;

}  // namespace flowrt::train
