#include "model/program.hpp"

#include <cmath>
#include <type_traits>

#include "core/error.hpp"
#include "model/program_check.hpp"

namespace flowrt {
namespace {

template <typename T>
std::vector<T> cast(const std::vector<double> &v) {
  return std::vector<T>(v.begin(), v.end());
}
template <typename T>
std::vector<T> cast(const Tensor &t) {
  return std::vector<T>(t.data(), t.data() + t.size());
}

template <typename T>
PNet<T> build_net(const Net &net, const ProgramOptions &opt) {
  constexpr bool is_float = std::is_same_v<T, float>;
  const bool fold = opt.fold;
  const NetWeights mode = is_float ? opt.net_weights : NetWeights::Copy;
  // View: the net's affines stay ops (folding them would change the viewed weights).
  const bool fold_affines = fold && mode != NetWeights::View;
  PNet<T> p;
  p.in_ch = net.in_channels;
  p.out_ch = net.out_channels;
  p.max_ch = net.max_channels;
  // A conv's foldings in double, applied once at the end: its weights are the graph's times
  // scale[o] (when scaled), its bias b.
  struct ConvD {
    const Conv2dOp *op = nullptr;
    std::vector<double> scale, b;
    bool folded = false;
    PConv<T> meta;
  };
  std::vector<std::variant<ConvD, PChannelAffine<T>, PRelu, PResidualAdd>> ops;
  // index[k]: the program op whose input is graph op k's input (residual sources are never
  // folded into the op before them, so that input exists).
  std::vector<size_t> index(net.ops.size(), 0);
  bool source = false;  // graph op k is a residual source
  auto last_conv = [&]() -> ConvD * {
    return ops.empty() || source ? nullptr : std::get_if<ConvD>(&ops.back());
  };
  for (size_t k = 0; k < net.ops.size(); ++k) {
    const NetOp &op = net.ops[k];
    index[k] = ops.size();
    source = net.is_residual_source(k);
    if (auto *r = std::get_if<ResidualAddOp>(&op)) {
      ops.emplace_back(PResidualAdd{index[static_cast<size_t>(r->from)], false});
      continue;
    }
    if (auto *c = std::get_if<Conv2dOp>(&op)) {
      ConvD d;
      d.op = c;
      d.b = c->bias.empty() ? std::vector<double>(c->out_channels(), 0.0) : c->bias.to_double();
      d.meta.out_ch = c->out_channels();
      d.meta.in_total = c->weight.dim(1);
      d.meta.in_ch = c->in_channels();
      d.meta.kh = c->kernel_h();
      d.meta.kw = c->kernel_w();
      d.meta.padding = c->padding;
      d.meta.pad_value = static_cast<T>(c->pad_value);
      ops.emplace_back(std::move(d));
      continue;
    }
    // Per-channel affine y = s*x + t from an actnorm or an output scale.
    std::vector<double> s, t;
    if (auto *a = std::get_if<NetActNormOp>(&op)) {
      s = a->scale.to_double();
      t.resize(s.size());
      for (size_t i = 0; i < s.size(); ++i) t[i] = s[i] * a->bias[i];
    } else if (auto *o = std::get_if<OutputScaleOp>(&op)) {
      s.resize(o->log_scale.size());
      t.assign(s.size(), 0.0);
      for (size_t i = 0; i < s.size(); ++i)
        s[i] = std::exp(static_cast<double>(o->factor) * o->log_scale[i]);
    } else {  // ReLU
      PResidualAdd *add = ops.empty() || source ? nullptr : std::get_if<PResidualAdd>(&ops.back());
      if (ConvD *d = last_conv(); fold && d && !d->meta.relu) {
        d->meta.relu = true;
      } else if (fold && add && !add->relu) {
        add->relu = true;
      } else {
        ops.emplace_back(PRelu{});
      }
      continue;
    }
    if (ConvD *d = last_conv(); fold_affines && d && !d->meta.relu) {
      if (d->scale.empty()) d->scale.assign(d->meta.out_ch, 1.0);
      for (int64_t oc = 0; oc < d->meta.out_ch; ++oc) {
        d->scale[oc] *= s[oc];
        d->b[oc] = s[oc] * d->b[oc] + t[oc];
      }
      d->folded = true;
    } else {
      ops.emplace_back(PChannelAffine<T>{cast<T>(s), cast<T>(t)});
    }
  }
  for (auto &op : ops) {
    if (auto *d = std::get_if<ConvD>(&op)) {
      PConv<T> c = d->meta;
      const Tensor &w = d->op->weight;
      if constexpr (is_float) {
        if (mode != NetWeights::Copy) {
          c.weight = Weights<T>::view(w);
          c.weight_scale = std::move(d->scale);
          if (!d->folded && !d->op->bias.empty())
            c.bias = Weights<T>::view(d->op->bias);
          else
            c.bias = cast<T>(d->b);
          p.ops.emplace_back(std::move(c));
          continue;
        }
      }
      std::vector<T> wt(w.size());
      const size_t per_out = static_cast<size_t>(c.in_total * c.kh * c.kw);
      for (size_t o = 0, k = 0; o < static_cast<size_t>(c.out_ch); ++o) {
        const double s = d->scale.empty() ? 1.0 : d->scale[o];
        for (size_t j = 0; j < per_out; ++j, ++k)
          wt[k] = static_cast<T>(static_cast<double>(w[k]) * s);
      }
      c.weight = std::move(wt);
      c.bias = cast<T>(d->b);
      p.ops.emplace_back(std::move(c));
    } else if (auto *a = std::get_if<PChannelAffine<T>>(&op)) {
      p.ops.emplace_back(std::move(*a));
    } else if (auto *r = std::get_if<PResidualAdd>(&op)) {
      p.residual_source.resize(ops.size(), 0);
      p.residual_source[r->from] = 1;
      p.ops.emplace_back(*r);
    } else {
      p.ops.emplace_back(PRelu{});
    }
  }
  return p;
}

template <typename T>
size_t net_owned_bytes(const PNet<T> &net) {
  size_t n = 0;
  for (const PNetOp<T> &op : net.ops) {
    if (auto *c = std::get_if<PConv<T>>(&op))
      n += c->weight.owned_bytes() + c->bias.owned_bytes() +
           c->weight_scale.capacity() * sizeof(double);
    if (auto *a = std::get_if<PChannelAffine<T>>(&op))
      n += (a->scale.capacity() + a->shift.capacity()) * sizeof(T);
  }
  return n;
}

// A batch norm runs as the actnorm of its running statistics.
bool has_batchnorm(const Graph &g) {
  for (const Layer &l : g.layers)
    if (std::holds_alternative<BatchNormLayer>(l.op)) return true;
  return false;
}
Graph batchnorms_as_actnorms(const Graph &g) {
  Graph out = g;
  for (Layer &l : out.layers)
    if (auto *bn = std::get_if<BatchNormLayer>(&l.op)) l.op = bn->as_actnorm();
  return out;
}

}  // namespace

template <typename T>
Program<T> build_program(const Graph &graph, const ProgramOptions &options) {
  const bool batchnorm = has_batchnorm(graph);
  Graph converted;
  if (batchnorm) converted = batchnorms_as_actnorms(graph);
  const Graph &g = batchnorm ? converted : graph;
  const bool fold = options.fold;
  Program<T> prog;
  prog.image = g.image;
  prog.dims = g.dims();
  for (size_t i = 0; i < g.layers.size(); ++i) {
    const Layer &layer = g.layers[i];
    PStep<T> step;
    step.in = layer.in;
    step.out = layer.out;
    step.latent = layer.latent;
    step.latent_offset = layer.latent_offset;
    step.layer_index = i;
    const double plane = static_cast<double>(layer.in.plane());
    if (std::holds_alternative<SqueezeLayer>(layer.op)) {
      step.op = PSqueeze{std::get<SqueezeLayer>(layer.op).order};
    } else if (auto *an = std::get_if<ActNormLayer>(&layer.op)) {
      const int64_t c = layer.in.c;
      std::vector<double> s = an->scale.to_double(), sb(c);
      double lds = 0;
      for (int64_t k = 0; k < c; ++k) {
        sb[k] = s[k] * an->bias[k];
        lds += std::log(std::fabs(s[k]));
      }
      const bool fuse = fold && i + 1 < g.layers.size() &&
                        std::holds_alternative<InvConvLayer>(g.layers[i + 1].op);
      if (fuse) {
        const auto &ic = std::get<InvConvLayer>(g.layers[i + 1].op);
        PLinear<T> lin;
        std::vector<double> a(c * c), cv(c, 0.0), ainv(c * c);
        for (int64_t r = 0; r < c; ++r)
          for (int64_t k = 0; k < c; ++k) {
            a[r * c + k] = ic.w[r * c + k] * s[k];
            cv[r] += ic.w[r * c + k] * sb[k];
            ainv[r * c + k] = ic.w_inv[r * c + k] / s[r];
          }
        lin.a = cast<T>(a);
        lin.c = cast<T>(cv);
        lin.a_inv = cast<T>(ainv);
        step.op = std::move(lin);
        step.logdet = plane * (lds + ic.log_abs_det);
        step.out = g.layers[i + 1].out;
        ++i;
      } else {
        step.op = PAffine<T>{cast<T>(s), cast<T>(sb)};
        step.logdet = plane * lds;
      }
    } else if (auto *ic = std::get_if<InvConvLayer>(&layer.op)) {
      PLinear<T> lin;
      lin.a = cast<T>(ic->w);
      lin.c.assign(layer.in.c, T(0));
      lin.a_inv = cast<T>(ic->w_inv);
      step.op = std::move(lin);
      step.logdet = plane * ic->log_abs_det;
    } else if (auto *pm = std::get_if<PermuteLayer>(&layer.op)) {
      step.op = PPermute{pm->source};
    } else if (auto *cp = std::get_if<CouplingLayer>(&layer.op)) {
      PCoupling<T> c{cp->type,  cp->conditioning, build_net<T>(cp->net, options),
                     cp->split, cp->scale_fn,     static_cast<T>(cp->scale_bias),
                     cp->form,  cp->mask_channel, cast<T>(cp->scale_weight)};
      prog.max_net_elems = std::max(prog.max_net_elems, c.net.max_ch * layer.in.plane());
      step.op = std::move(c);
    } else if (auto *lg = std::get_if<LogitLayer>(&layer.op)) {
      step.op = PLogit<T>{static_cast<T>(lg->alpha)};
    } else if (std::holds_alternative<FlattenLayer>(layer.op)) {
      continue;  // NCHW memory is already the flattened vector: the next step reads the new shape
    } else if (auto *sp = std::get_if<SplitLayer>(&layer.op)) {
      PSplit<T> s{sp->leaving, build_net<T>(sp->prior, options), sp->layout};
      prog.max_net_elems = std::max(prog.max_net_elems, s.prior.max_ch * layer.in.plane());
      step.op = std::move(s);
    } else {
      const auto &tp = std::get<TopPriorLayer>(layer.op);
      PTop<T> t;
      t.kind = tp.kind;
      if (tp.kind == TopPriorKind::Learned) {
        t.mean = cast<T>(tp.mean);
        t.log_std = cast<T>(tp.log_std);
      } else {
        t.mean.assign(layer.in.numel(), T(0));
        t.log_std.assign(layer.in.numel(), T(0));
      }
      t.class_offsets = cast<T>(tp.class_offsets);
      t.n_classes = tp.n_classes();
      prog.n_classes = t.n_classes;
      step.op = std::move(t);
    }
    prog.steps.push_back(std::move(step));
  }
  check_program(g, prog);
  return prog;
}

template <typename T>
size_t owned_weight_bytes(const Program<T> &prog) {
  size_t n = 0;
  for (const PStep<T> &step : prog.steps) {
    if (auto *a = std::get_if<PAffine<T>>(&step.op))
      n += (a->scale.capacity() + a->shift.capacity()) * sizeof(T);
    if (auto *l = std::get_if<PLinear<T>>(&step.op))
      n += (l->a.capacity() + l->c.capacity() + l->a_inv.capacity()) * sizeof(T);
    if (auto *c = std::get_if<PCoupling<T>>(&step.op))
      n += net_owned_bytes(c->net) + c->scale_weight.capacity() * sizeof(T);
    if (auto *s = std::get_if<PSplit<T>>(&step.op)) n += net_owned_bytes(s->prior);
    if (auto *t = std::get_if<PTop<T>>(&step.op))
      n += (t->mean.capacity() + t->log_std.capacity() + t->class_offsets.capacity()) * sizeof(T);
  }
  return n;
}

template Program<float> build_program<float>(const Graph &, const ProgramOptions &);
template Program<double> build_program<double>(const Graph &, const ProgramOptions &);
template size_t owned_weight_bytes<float>(const Program<float> &);
template size_t owned_weight_bytes<double>(const Program<double> &);

static double net_flops(const Net &net, const Shape3 &s) {
  double f = 0;
  for (const NetOp &op : net.ops)
    if (auto *c = std::get_if<Conv2dOp>(&op))
      f += 2.0 * c->out_channels() * c->weight.dim(1) * c->kernel_h() * c->kernel_w() * s.plane();
  return f;
}

FlopCount count_flops(const Graph &g) {
  FlopCount fc;
  for (const Layer &l : g.layers) {
    double f = 0;
    if (std::holds_alternative<InvConvLayer>(l.op)) {
      f = 2.0 * l.in.c * l.in.c * l.in.plane();
    } else if (auto *c = std::get_if<CouplingLayer>(&l.op)) {
      f = net_flops(c->net, l.in);
    } else if (auto *s = std::get_if<SplitLayer>(&l.op)) {
      f = net_flops(s->prior, l.in);
    }
    fc.encode += f;
    fc.decode += f;
  }
  return fc;
}

int64_t count_parameters(const Graph &g) {
  int64_t n = 0;
  auto net_params = [](const Net &net) {
    int64_t k = 0;
    for (const NetOp &op : net.ops) {
      if (auto *c = std::get_if<Conv2dOp>(&op)) k += c->weight.size() + c->bias.size();
      if (auto *a = std::get_if<NetActNormOp>(&op)) k += a->bias.size() + a->scale.size();
      if (auto *o = std::get_if<OutputScaleOp>(&op)) k += o->log_scale.size();
    }
    return k;
  };
  for (const Layer &l : g.layers) {
    if (auto *a = std::get_if<ActNormLayer>(&l.op)) n += a->bias.size() + a->scale.size();
    if (auto *c = std::get_if<InvConvLayer>(&l.op))
      n += c->form == InvConvForm::Dense
               ? c->weight.size()
               : c->lower.size() + c->upper.size() + c->sign.size() + c->log_s.size();
    if (auto *c = std::get_if<CouplingLayer>(&l.op))
      n += net_params(c->net) + static_cast<int64_t>(c->scale_weight.size());
    if (auto *s = std::get_if<SplitLayer>(&l.op)) n += net_params(s->prior);
    if (auto *b = std::get_if<BatchNormLayer>(&l.op)) n += b->gamma.size() + b->beta.size();
    if (auto *t = std::get_if<TopPriorLayer>(&l.op))
      n += t->mean.size() + t->log_std.size() + t->class_offsets.size();
  }
  return n;
}

}  // namespace flowrt
