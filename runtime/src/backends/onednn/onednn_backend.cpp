// The oneDNN CPU backend. A Program<float> (actnorm folded into the 1x1 convs, net actnorms and
// output scales folded into convolutions, ReLU fused) becomes a list of steps over NHWC
// activations: coupling nets and split priors are oneDNN convolution chains (onednn_net), the
// invertible 1x1 convs (and their precomputed inverses) are matmuls over the pixel rows, and the
// rest are single-pass element-wise kernels (onednn_elementwise): the couplings' arithmetic
// (channel halves or a checkerboard of positions; a checkerboard net's masked input is one pass
// too), the logit input layer (fused with the NCHW <-> NHWC transpose of the images), and a
// relayout where a flatten changes the shape between steps (none where both NHWC layouts are the
// NCHW vector, as for NICE's first flatten). Primitives and their memories are made once per batch
// size, at construction for max_batch and at the first call for any smaller batch; afterwards a
// call only executes them.
//
// Memory: the Program views the nets' weights in the model's bytes (NetWeights::ViewScaled, the
// foldings kept aside), and each weight tensor gets one prepared copy, in the layout of the first
// primitive that uses it, which every batch size's primitives then share (see onednn_net.hpp);
// encode and decode share the nets' copies, and only an invertible 1x1 conv has one matrix per
// direction (A and A^-1). Nothing plain is kept once the prepared copies exist. Identical
// primitives (the K steps of a level) are made once (Context::prims).
//
// Precision BF16: the nets' convolutions run in bf16 (see onednn_net.hpp); the invertible 1x1
// convs and their inverses, the actnorms (RealNVP's batch norms too), the logit, the coupling
// arithmetic, the priors' Gaussian math and the log-determinants stay fp32, since a bf16 flow
// stream is no longer invertible. It is refused on CPUs without bf16 units, where oneDNN emulates
// bf16 more slowly than fp32.
#include "backends/onednn/onednn_backend.hpp"

#include <algorithm>
#include <cmath>
#include <cstdlib>

#include "backends/onednn/onednn_net.hpp"
#include "backends/onednn/onednn_threads.hpp"
#include "core/error.hpp"
#include "layers/coupling.hpp"
#include "layers/gaussian.hpp"

namespace flowrt {
namespace onednn {
namespace {

using dnnl::memory;
using tag = memory::format_tag;
constexpr memory::data_type f32 = memory::data_type::f32;

// The data type of the nets' convolutions for a session's precision; refuses the ones this
// backend does not implement, and bf16 without bf16 units.
memory::data_type net_type(flowrt_precision p) {
  if (p == FLOWRT_PRECISION_FP32) return f32;
  if (p != FLOWRT_PRECISION_BF16)
    fail(FLOWRT_UNSUPPORTED, std::string("precision ") + precision_name(p) +
                                 " is CUDA only (the onednn backend computes in fp32 or bf16)");
  if (!cpu_has_bf16())
    fail(FLOWRT_UNSUPPORTED,
         "precision bf16 needs a CPU with bf16 units (oneDNN ISA avx512_core_bf16 or "
         "avx512_core_amx); oneDNN reports this CPU as " +
             cpu_isa_name());
  return memory::data_type::bf16;
}

struct SqueezeStep {
  SqueezeOrder order;
};
struct AffineStep {
  std::vector<float> scale, shift, inv_scale;
};
struct LinearStep {  // y = x A^T + c per pixel row; x = y A_inv^T - A_inv c
  WeightCache fwd, inv;
  std::vector<float> fwd_bias, inv_bias;
};
struct PermuteStep {
  std::vector<int32_t> source;
};
struct CouplingStep {
  CouplingSpec spec;
  size_t net = 0;
  int64_t xa_offset = 0;      // channel couplings: x_a's first channel
  bool mask_channel = false;  // checkerboard: the mask is the net's last input channel
};
struct SplitStep {
  SplitSpec spec;
  int net = -1;  // -1: standard normal prior
};
struct TopStep {
  TopSpec spec;
};
struct LogitStep {
  float alpha;
};
// Between two steps whose shapes differ (a flatten: the Program has no step for it), the NHWC
// activations of `in` become those of `out`; the NCHW vector they stand for does not change.
struct ReshapeStep {};
using StepOp = std::variant<SqueezeStep, AffineStep, LinearStep, PermuteStep, CouplingStep,
                            SplitStep, TopStep, LogitStep, ReshapeStep>;
struct Step {
  StepOp op;
  Shape3 in, out;
  double logdet = 0;
  size_t linear = 0;     // index among the LinearSteps
  size_t net_bytes = 0;  // the largest activation of one image in the step's net (0: none)
};

// Steps run level by level: a segment ends after each split. Within a segment the batch is
// processed in chunks small enough for the nets' activations to stay in cache (large batches
// of big levels), while small late levels take the whole batch (their weights are read once).
struct Segment {
  size_t first = 0, last = 0;  // steps [first, last)
  size_t chunk = 1;
};
// Activation bytes per chunk that the level-wise chunking aims at (measured: 16 CIFAR-size
// images of 512 channels at 16x16 run faster than 4 or 64). FLOWRT_ONEDNN_CHUNK_BYTES overrides
// it (tuning on other machines; the tests use it to exercise chunking on tiny models).
size_t chunk_bytes() {
  const char *env = std::getenv("FLOWRT_ONEDNN_CHUNK_BYTES");
  if (env && *env) {
    const long long v = std::atoll(env);
    if (v > 0) return static_cast<size_t>(v);
  }
  return size_t{8} << 20;
}

// A matmul bound to the state buffers at call time (they alternate between steps).
struct MatmulRun {
  Exec exec;
  memory src, dst;
  std::string impl;
  void run(const dnnl::stream &s, const float *from, float *to) {
    src.set_data_handle(const_cast<float *>(from));
    dst.set_data_handle(to);
    exec.run(s);
  }
};

struct Plan {
  std::vector<std::unique_ptr<OnednnNet::Plan>> nets;
  struct Linear {
    dnnl::matmul::primitive_desc fwd_pd, inv_pd;
    dnnl::primitive fwd_prim, inv_prim;  // shared with the linears of the same shape
    MatmulRun fwd, inv;
  };
  std::vector<Linear> linears;  // one per LinearStep, in step order
};

class OnednnBackend final : public Backend {
 public:
  OnednnBackend(const Graph &g, const BackendOptions &o)
      : Backend(g.dims()),
        max_batch_(std::max<size_t>(o.max_batch, 1)),
        threads_(resolve_threads(o.threads)),
        net_dt_(net_type(o.precision)) {
    const Program<float> prog =
        build_program<float>(g, ProgramOptions{o.fold, NetWeights::ViewScaled});
    size_t linears = 0;
    for (const PStep<float> &ps : prog.steps) {
      const Shape3 prev = steps_.empty() ? ps.in : steps_.back().out;
      if (prev != ps.in && !(nhwc_is_nchw(prev) && nhwc_is_nchw(ps.in))) {
        Step re;
        re.op = ReshapeStep{};
        re.in = prev, re.out = ps.in;
        steps_.push_back(re);
      }
      steps_.push_back(compile(ps));
      if (std::holds_alternative<LinearStep>(steps_.back().op)) steps_.back().linear = linears++;
    }
    make_segments();
    const size_t bytes = max_batch_ * static_cast<size_t>(dims_) * sizeof(float);
    state_[0].reserve(bytes);
    state_[1].reserve(bytes);
    partial_.resize(max_batch_ + threads_ + 1);
    ld_.resize(max_batch_);
    lp_.resize(max_batch_);
    csr_.resize(threads_);
    plans_.resize(max_batch_ + 1);
    {
      // Every batch size 1..max_batch may get a plan (a call's last chunk, impls()).
      const ThreadCount team(threads_);  // the probes' primitives, like the plans'
      for (auto &net : nets_) net->choose_forms(max_batch_, ctx_);
    }
    for (const Segment &seg : segments_) plan(std::min(max_batch_, seg.chunk));
  }

  flowrt_backend kind() const override { return FLOWRT_BACKEND_ONEDNN; }

  void encode(size_t n, const float *x, const int32_t *labels, float *z, double *log_p,
              double *log_det) override {
    if (n == 0) return;
    ComputeScope scope(threads_, csr_);
    const Par par{threads_, partial_.data()};
    std::fill(ld_.begin(), ld_.begin() + n, 0.0);
    std::fill(lp_.begin(), lp_.begin() + n, 0.0);
    float *cur = state_[0].data(), *alt = state_[1].data();
    // These steps read the caller's NCHW images themselves.
    bool from_x = std::holds_alternative<SqueezeStep>(steps_.front().op) ||
                  std::holds_alternative<LogitStep>(steps_.front().op);
    if (!from_x) nchw_to_nhwc(par, steps_.front().in, n, x, cur);
    for (const Segment &seg : segments_) {
      const size_t chunk = std::min(n, seg.chunk);
      Cursor end{};
      for (size_t i0 = 0; i0 < n; i0 += chunk) {
        Cursor c{cur, alt, from_x};
        encode_steps(seg, std::min(chunk, n - i0), i0, par, x, labels, z, c);
        end = c;
      }
      cur = end.cur, alt = end.alt, from_x = end.from_x;
    }
    for (size_t i = 0; i < n; ++i) {
      if (log_det) log_det[i] = ld_[i];
      if (log_p) log_p[i] = lp_[i] + ld_[i];
    }
  }

  void decode(size_t n, const float *z, float *x) override {
    ComputeScope scope(threads_, csr_);
    run_decode(n, z, false, 0.f, nullptr, x);
  }
  void decode_noise(size_t n, const float *eps, float temperature, const int32_t *labels,
                    float *x) override {
    ComputeScope scope(threads_, csr_);
    run_decode(n, eps, true, temperature, labels, x);
  }
  // The Philox draws on the session's threads, then the decode.
  void sample(size_t n, uint64_t seed, uint64_t first_image, float temperature,
              const int32_t *labels, float *eps_scratch, float *x) override {
    ComputeScope scope(threads_, csr_);
    philox_fill(seed, first_image, n, dims_, eps_scratch, threads_);
    run_decode(n, eps_scratch, true, temperature, labels, x);
  }

  WeightBytes weight_bytes() const {
    WeightBytes b;
    for (const auto &net : nets_) net->add_weight_bytes(b);
    for (const Step &st : steps_)
      if (auto *l = std::get_if<LinearStep>(&st.op)) b.add(l->fwd), b.add(l->inv);
    return b;
  }

  std::vector<std::string> impls(size_t n) {
    std::vector<std::string> out;
    Plan &p = plan(std::clamp<size_t>(n, 1, max_batch_));
    for (auto &np : p.nets) OnednnNet::impl_names(*np, out);
    for (auto &l : p.linears) {
      out.push_back(std::string("matmul ") + impl_name(l.fwd_pd));
      out.push_back(std::string("matmul ") + impl_name(l.inv_pd));
    }
    return out;
  }

 private:
  static void add_logdet(double *ld, size_t n, double v) {
    for (size_t i = 0; i < n; ++i) ld[i] += v;
  }

  void run_coupling_net(const CouplingStep &cp, Plan &p, const Par &par, size_t n, const Step &st,
                        const float *state) {
    float *in = ctx_.buf(Role::In).data();
    if (cp.spec.checkerboard)
      checker_input(par, cp.spec, cp.mask_channel, n, state, in);
    else
      gather_channels(par, st.in.c, cp.xa_offset, st.in.c - cp.spec.cb,
                      static_cast<int64_t>(n) * st.in.plane(), state, in);
    nets_[cp.net]->run(*p.nets[cp.net], ctx_, par);
  }

  // Runs inside the caller's ComputeScope.
  void run_decode(size_t n, const float *src, bool noise, float temperature, const int32_t *labels,
                  float *x) {
    if (n == 0) return;
    const Par par{threads_, partial_.data()};
    float *cur = state_[0].data(), *alt = state_[1].data();
    bool written = false;
    for (size_t s = segments_.size(); s-- > 0;) {
      const Segment &seg = segments_[s];
      const size_t chunk = std::min(n, seg.chunk);
      // Last chunk first: a split grows each image's tensor while decoding, so a chunk's
      // output region extends over the inputs of the chunks after it, never before it.
      Cursor end{};
      for (size_t i0 = (n - 1) / chunk * chunk;; i0 -= chunk) {
        Cursor c{cur, alt, false};
        decode_steps(seg, std::min(chunk, n - i0), i0, par, src, noise, temperature, labels, x, c);
        end = c;
        if (i0 == 0) break;
      }
      cur = end.cur, alt = end.alt, written = end.from_x;
    }
    if (!written) nhwc_to_nchw(par, steps_.front().in, n, cur, x);
  }

  // The two state buffers of a chunk's walk through a segment (they swap after each step that
  // writes a new tensor) and whether the images are still in the caller's NCHW input (encode) /
  // already written to the caller's output (decode).
  struct Cursor {
    float *cur = nullptr, *alt = nullptr;
    bool from_x = false;
  };

  // Steps of one segment for images i0 .. i0+m-1.
  void encode_steps(const Segment &seg, size_t m, size_t i0, const Par &par, const float *x,
                    const int32_t *labels, float *z, Cursor &c) {
    Plan &p = plan(m);
    const int64_t d = dims_;
    double *ld = ld_.data() + i0, *lp = lp_.data() + i0;
    float *zi = z + i0 * d;
    const int32_t *lab = labels ? labels + i0 : nullptr;
    for (size_t k = seg.first; k < seg.last; ++k) {
      const Step &st = steps_[k];
      float *cur = c.cur + i0 * st.in.numel(), *alt = c.alt + i0 * st.out.numel();
      const int64_t rows = static_cast<int64_t>(m) * st.in.plane();
      bool swap = true;
      if (auto *sq = std::get_if<SqueezeStep>(&st.op)) {
        squeeze(par, sq->order, st.in, m, c.from_x, c.from_x ? x + i0 * d : cur, alt);
        c.from_x = false;
      } else if (auto *af = std::get_if<AffineStep>(&st.op)) {
        channel_affine(par, af->scale.data(), af->shift.data(), nullptr, st.in.c, rows, cur, false);
        add_logdet(ld, m, st.logdet);
        swap = false;
      } else if (std::holds_alternative<LinearStep>(st.op)) {
        p.linears[st.linear].fwd.run(ctx_.strm, cur, alt);
        add_logdet(ld, m, st.logdet);
      } else if (auto *pm = std::get_if<PermuteStep>(&st.op)) {
        permute(par, pm->source.data(), st.in.c, rows, cur, alt, false);
      } else if (auto *cp = std::get_if<CouplingStep>(&st.op)) {
        run_coupling_net(*cp, p, par, m, st, cur);
        coupling(par, cp->spec, m, st.in.plane(), ctx_.buf(Role::Out).data(), cur, false, ld);
        swap = false;
      } else if (auto *sp = std::get_if<SplitStep>(&st.op)) {
        const bool prior = sp->net >= 0;
        split_encode(par, sp->spec, m, st.in.plane(), cur, alt,
                     prior ? ctx_.buf(Role::In).data() : nullptr, zi, lp);
        if (prior) {
          nets_[sp->net]->run(*p.nets[sp->net], ctx_, par);
          split_prior_log_p(par, sp->spec, m, st.in.plane(), cur, ctx_.buf(Role::Out).data(), lp);
        }
      } else if (auto *tp = std::get_if<TopStep>(&st.op)) {
        top_encode(par, tp->spec, m, cur, lab, zi, lp);
        swap = false;
      } else if (auto *lg = std::get_if<LogitStep>(&st.op)) {
        logit_encode(par, lg->alpha, st.in, m, c.from_x, c.from_x ? x + i0 * d : cur, alt, ld);
        c.from_x = false;
      } else if (std::holds_alternative<ReshapeStep>(st.op)) {
        reshape(par, st.in, st.out, m, cur, alt);
      }
      if (swap) std::swap(c.cur, c.alt);
    }
  }

  void decode_steps(const Segment &seg, size_t m, size_t i0, const Par &par, const float *src,
                    bool noise, float temperature, const int32_t *labels, float *x, Cursor &c) {
    Plan &p = plan(m);
    const int64_t d = dims_;
    const float *si = src + i0 * d;
    const int32_t *lab = labels ? labels + i0 : nullptr;
    for (size_t k = seg.last; k-- > seg.first;) {
      const Step &st = steps_[k];
      // Decoding reads the step's output shape and writes its input shape.
      float *cur = c.cur + i0 * st.out.numel(), *alt = c.alt + i0 * st.in.numel();
      const int64_t rows = static_cast<int64_t>(m) * st.in.plane();
      bool swap = true;
      if (auto *tp = std::get_if<TopStep>(&st.op)) {
        top_decode(par, tp->spec, m, si, noise, temperature, lab, c.cur + i0 * st.in.numel());
        swap = false;
      } else if (auto *sq = std::get_if<SqueezeStep>(&st.op)) {
        c.from_x = k == 0;  // the first squeeze writes the NCHW images directly
        unsqueeze(par, sq->order, st.in, m, c.from_x, cur, c.from_x ? x + i0 * d : alt);
      } else if (auto *af = std::get_if<AffineStep>(&st.op)) {
        channel_affine(par, af->scale.data(), af->shift.data(), af->inv_scale.data(), st.in.c, rows,
                       cur, true);
        swap = false;
      } else if (std::holds_alternative<LinearStep>(st.op)) {
        p.linears[st.linear].inv.run(ctx_.strm, cur, alt);
      } else if (auto *pm = std::get_if<PermuteStep>(&st.op)) {
        permute(par, pm->source.data(), st.in.c, rows, cur, alt, true);
      } else if (auto *cp = std::get_if<CouplingStep>(&st.op)) {
        run_coupling_net(*cp, p, par, m, st, cur);
        coupling(par, cp->spec, m, st.in.plane(), ctx_.buf(Role::Out).data(), cur, true, nullptr);
        swap = false;
      } else if (auto *lg = std::get_if<LogitStep>(&st.op)) {
        c.from_x = k == 0;  // the first step writes the NCHW images directly
        logit_decode(par, lg->alpha, st.in, m, c.from_x, cur, c.from_x ? x + i0 * d : alt);
      } else if (std::holds_alternative<ReshapeStep>(st.op)) {
        reshape(par, st.out, st.in, m, cur, alt);
      } else if (auto *sp = std::get_if<SplitStep>(&st.op)) {
        const bool prior = noise && sp->net >= 0;
        split_unkeep(par, sp->spec, m, st.in.plane(), cur, alt,
                     prior ? ctx_.buf(Role::In).data() : nullptr);
        if (prior) nets_[sp->net]->run(*p.nets[sp->net], ctx_, par);
        split_fill(par, sp->spec, m, st.in.plane(), si, noise, temperature,
                   prior ? ctx_.buf(Role::Out).data() : nullptr, alt);
      }
      if (swap) std::swap(c.cur, c.alt);
    }
  }

  Step compile(const PStep<float> &ps) {
    Step st;
    st.in = ps.in;
    st.out = ps.out;
    st.logdet = ps.logdet;
    const int64_t c = ps.in.c;
    if (auto *sq = std::get_if<PSqueeze>(&ps.op)) {
      st.op = SqueezeStep{sq->order};
    } else if (auto *af = std::get_if<PAffine<float>>(&ps.op)) {
      AffineStep a{af->scale, af->shift, {}};
      for (float s : af->scale) a.inv_scale.push_back(1.f / s);
      st.op = std::move(a);
    } else if (auto *li = std::get_if<PLinear<float>>(&ps.op)) {
      LinearStep l;
      const memory::desc wd({c, c}, f32, tag::ba);  // (k, n) -> A[n][k]: the matrix is x A^T
      auto fill_from = [](std::vector<float> v) {
        return [v = std::move(v)](float *dst) { std::copy(v.begin(), v.end(), dst); };
      };
      l.fwd = WeightCache(wd, fill_from(li->a));
      l.inv = WeightCache(wd, fill_from(li->a_inv));
      l.fwd_bias = li->c;
      l.inv_bias.assign(c, 0.f);
      for (int64_t r = 0; r < c; ++r) {
        double acc = 0;
        for (int64_t k = 0; k < c; ++k) acc -= static_cast<double>(li->a_inv[r * c + k]) * li->c[k];
        l.inv_bias[r] = static_cast<float>(acc);
      }
      st.op = std::move(l);
    } else if (auto *pm = std::get_if<PPermute>(&ps.op)) {
      st.op = PermuteStep{pm->source};
    } else if (auto *cp = std::get_if<PCoupling<float>>(&ps.op)) {
      CouplingStep s;
      CouplingSpec &sp = s.spec;
      sp.checkerboard = is_checkerboard(cp->conditioning);
      sp.cb = sp.checkerboard ? c : c / 2;
      sp.affine = cp->type == CouplingType::Affine;
      sp.scale_fn = cp->scale_fn;
      sp.shift_then_scale = cp->form == AffineForm::ShiftThenScale;
      sp.scale_bias = cp->scale_bias;
      sp.channels = c;
      sp.h_channels = cp->net.out_ch;
      if (sp.checkerboard) {
        // x_a: (y + x) even for EVEN; x_b is the other parity.
        sp.parity = cp->conditioning == Half::CheckerboardEven ? 1 : 0;
        sp.height = ps.in.h, sp.width = ps.in.w;
        s.mask_channel = cp->mask_channel;
      } else {
        sp.xb_offset = cp->conditioning == Half::First ? c - sp.cb : 0;
        s.xa_offset = cp->conditioning == Half::First ? 0 : sp.cb;
      }
      for (int64_t j = 0; j < sp.cb; ++j) {
        int64_t t = j, raw = j;
        if (sp.affine) layers::shift_scale_channels(cp->split, j, sp.cb, &t, &raw);
        sp.t_index.push_back(static_cast<int32_t>(t));
        sp.raw_index.push_back(static_cast<int32_t>(raw));
      }
      if (sp.affine && sp.scale_fn == ScaleFunction::Tanh) sp.scale_weight = cp->scale_weight;
      s.net = add_net(cp->net, ps.in);
      st.net_bytes = cp->net.max_ch * ps.in.plane() * sizeof(float);
      st.op = std::move(s);
    } else if (auto *spl = std::get_if<PSplit<float>>(&ps.op)) {
      SplitStep s;
      SplitSpec &sp = s.spec;
      sp.channels = c;
      sp.cz = c / 2;
      sp.leave_offset = spl->leaving == Half::First ? 0 : sp.cz;
      sp.keep_offset = spl->leaving == Half::First ? sp.cz : 0;
      sp.latent_offset = ps.latent_offset;
      sp.image_dims = dims_;
      sp.has_prior = !spl->prior.empty();
      if (sp.has_prior) {
        for (int64_t j = 0; j < sp.cz; ++j) {
          int64_t m = 0, l = 0;
          layers::prior_channels(spl->layout, j, sp.cz, &m, &l);
          sp.mean_index.push_back(static_cast<int32_t>(m));
          sp.log_std_index.push_back(static_cast<int32_t>(l));
        }
        s.net = static_cast<int>(add_net(spl->prior, {sp.cz, ps.in.h, ps.in.w}));
        st.net_bytes = spl->prior.max_ch * ps.in.plane() * sizeof(float);
      }
      st.op = std::move(s);
    } else if (auto *lg = std::get_if<PLogit<float>>(&ps.op)) {
      st.op = LogitStep{lg->alpha};
    } else {
      // Every other kind of step has a branch above: a new one must get its own.
      static_assert(std::variant_size_v<PStepOp<float>> == 8, "a Program step kind is not handled");
      const auto &tp = std::get<PTop<float>>(ps.op);
      TopSpec t;
      const int64_t plane = ps.in.plane();
      t.channels = c, t.plane = plane, t.latent_offset = ps.latent_offset, t.image_dims = dims_;
      for (auto *v : {&t.mean, &t.std, &t.inv_std, &t.log_std}) v->resize(c * plane);
      for (int64_t ch = 0; ch < c; ++ch)
        for (int64_t p = 0; p < plane; ++p) {
          const float ls = tp.log_std[ch * plane + p];
          t.mean[p * c + ch] = tp.mean[ch * plane + p];
          t.log_std[p * c + ch] = ls;
          t.std[p * c + ch] = std::exp(ls);
          t.inv_std[p * c + ch] = std::exp(-ls);
        }
      t.n_classes = tp.n_classes;
      for (int64_t k = 0; k < tp.n_classes; ++k)
        for (int64_t ch = 0; ch < c; ++ch) {
          const float lo = tp.class_offsets[k * 2 * c + c + ch];
          t.cls_mean.push_back(tp.class_offsets[k * 2 * c + ch]);
          t.cls_log_std.push_back(lo);
          t.cls_std.push_back(std::exp(lo));
          t.cls_inv_std.push_back(std::exp(-lo));
        }
      st.op = TopStep{std::move(t)};
    }
    return st;
  }

  void make_segments() {
    const size_t budget = chunk_bytes();
    Segment seg;
    size_t bytes = 1;  // largest net activation of one image in the segment
    for (size_t k = 0; k < steps_.size(); ++k) {
      bytes = std::max(bytes, steps_[k].net_bytes);
      if (std::holds_alternative<SplitStep>(steps_[k].op) || k + 1 == steps_.size()) {
        seg.last = k + 1;
        seg.chunk = std::clamp<size_t>(budget / bytes, 1, max_batch_);
        segments_.push_back(seg);
        seg.first = k + 1;
        bytes = 1;
      }
    }
  }

  size_t add_net(const PNet<float> &net, const Shape3 &in) {
    nets_.push_back(std::make_unique<OnednnNet>(net, in.h, in.w, net_dt_));
    return nets_.size() - 1;
  }

  // The primitives of batch size n, created at its first use.
  Plan &plan(size_t n) {
    if (plans_[n]) return *plans_[n];
    // oneDNN fixes a primitive's thread partition when it creates it: for the session's thread
    // count, also when this runs outside a call (the constructor, impls()).
    const ThreadCount team(threads_);
    auto p = std::make_unique<Plan>();
    Needs needs;
    for (auto &net : nets_) p->nets.push_back(net->create(n, ctx_, needs));
    for (const Step &st : steps_) {
      const auto *l = std::get_if<LinearStep>(&st.op);
      if (!l) continue;
      const memory::dim m = static_cast<memory::dim>(n) * st.in.plane(), c = st.in.c;
      const memory::desc rows({m, c}, f32, tag::ab), w({c, c}, f32, tag::any),
          b({1, c}, f32, tag::ab);
      auto make = [&](const memory::desc &wd) {
        return ctx_.prims.matmul(ctx_.eng, rows, wd, b, rows, false);
      };
      const auto fwd = pd_for_cache(l->fwd, w, make), inv = pd_for_cache(l->inv, w, make);
      needs.need(Role::Scratchpad, std::max(fwd.pd.scratchpad_desc().get_size(),
                                            inv.pd.scratchpad_desc().get_size()));
      p->linears.push_back(Plan::Linear{fwd.pd, inv.pd, fwd.prim, inv.prim, {}, {}});
    }
    bool grew = false;
    for (int r = 0; r < static_cast<int>(Role::Count); ++r)
      grew = ctx_.buffers[r].reserve(std::max<size_t>(needs.bytes[r], 64)) || grew;
    plans_[n] = std::move(p);
    for (size_t k = 1; k < plans_.size(); ++k)
      if (plans_[k] && (grew || k == n)) bind(*plans_[k]);
    return *plans_[n];
  }

  void bind(Plan &p) {
    MemoryCache mems;
    for (size_t i = 0; i < nets_.size(); ++i) nets_[i]->bind(*p.nets[i], ctx_, mems);
    size_t li = 0;
    for (Step &st : steps_) {
      auto *l = std::get_if<LinearStep>(&st.op);
      if (!l) continue;
      Plan::Linear &pl = p.linears[li++];
      bind_matmul(pl.fwd_pd, pl.fwd_prim, l->fwd, l->fwd_bias, mems, pl.fwd);
      bind_matmul(pl.inv_pd, pl.inv_prim, l->inv, l->inv_bias, mems, pl.inv);
    }
  }

  void bind_matmul(const dnnl::matmul::primitive_desc &pd, const dnnl::primitive &prim,
                   WeightCache &w, std::vector<float> &bias, MemoryCache &mems, MatmulRun &run) {
    run = MatmulRun{};
    run.exec.prim = prim;
    // Shared with the linears of the same shape: run() sets their handles before each execution.
    run.src = mems.get(ctx_.eng, pd.src_desc(), state_[0].data());
    run.dst = mems.get(ctx_.eng, pd.dst_desc(), state_[1].data());
    run.exec.add(DNNL_ARG_SRC, run.src);
    run.exec.add(DNNL_ARG_WEIGHTS, w.get(pd.weights_desc(), ctx_));
    run.exec.add(DNNL_ARG_BIAS, ctx_.constants.get(ctx_.eng, pd.bias_desc(), bias.data()));
    run.exec.add(DNNL_ARG_DST, run.dst);
    run.exec.add(DNNL_ARG_SCRATCHPAD,
                 mems.get(ctx_.eng, pd.scratchpad_desc(), ctx_.buf(Role::Scratchpad).data()));
  }

  size_t max_batch_;
  int threads_;
  memory::data_type net_dt_;
  Context ctx_;
  std::vector<Step> steps_;
  std::vector<Segment> segments_;
  std::vector<std::unique_ptr<OnednnNet>> nets_;
  std::vector<std::unique_ptr<Plan>> plans_;  // by batch size
  Buffer state_[2];
  std::vector<double> partial_, ld_, lp_;
  std::vector<unsigned> csr_;
};

}  // namespace
}  // namespace onednn

std::unique_ptr<Backend> create_onednn_backend(const Graph &graph, const BackendOptions &options) {
  return std::make_unique<onednn::OnednnBackend>(graph, options);
}

std::vector<std::string> onednn_primitive_impls(Backend &backend, size_t n) {
  if (auto *b = dynamic_cast<onednn::OnednnBackend *>(&backend)) return b->impls(n);
  return {};
}

OnednnWeightBytes onednn_weight_bytes(const Backend &backend) {
  OnednnWeightBytes out;
  if (auto *b = dynamic_cast<const onednn::OnednnBackend *>(&backend)) {
    const onednn::WeightBytes w = b->weight_bytes();
    out.prepared = w.prepared, out.mapped = w.mapped, out.extra = w.extra;
  }
  return out;
}

std::string onednn_version() {
  const dnnl_version_t *v = dnnl_version();
  return std::to_string(v->major) + "." + std::to_string(v->minor) + "." + std::to_string(v->patch);
}

}  // namespace flowrt
