#include "backends/onednn/onednn_net.hpp"

#include <algorithm>
#include <cstdlib>
#include <string>

#include "core/error.hpp"

namespace flowrt::onednn {

using dnnl::memory;
using tag = memory::format_tag;
constexpr memory::data_type f32 = memory::data_type::f32;
constexpr memory::data_type bf16 = memory::data_type::bf16;
// The tap formulation pays off below one AVX-512 block of output channels, given enough input
// channels for the matmul (measured: 256->4 3x3 at 16x16 runs 2.8x faster, 512->12 1.5x).
constexpr int64_t kTapsBelowOut = 16;
constexpr int64_t kTapsFromIn = 64;
// A 1x1 conv runs as oneDNN's convolution when that keeps one weights layout at every batch
// size from 1 to the largest the session plans, probed when there are at most this many (a
// primitive descriptor costs ~30 us), else as a matmul.
constexpr size_t kMaxLayoutProbe = 1024;

// FLOWRT_ONEDNN_1X1=matmul, =conv or =rows forces the form of every 1x1 conv (tests: the
// parity suite runs them all; conv may then hold a second weights layout). Unset or anything
// else: probe.
enum class Force1x1 { Probe, Matmul, Conv, Rows };
Force1x1 force_1x1() {
  const char *env = std::getenv("FLOWRT_ONEDNN_1X1");
  if (!env) return Force1x1::Probe;
  const std::string v = env;
  return v == "matmul" ? Force1x1::Matmul
         : v == "conv" ? Force1x1::Conv
         : v == "rows" ? Force1x1::Rows
                       : Force1x1::Probe;
}

const dnnl::memory &WeightCache::get(const memory::desc &want, Context &ctx) {
  for (auto &c : copies_)
    if (c.first == want) return c.second;
  if (!copies_.empty()) {  // another layout: from the prepared copy
    memory dst(want, ctx.eng);
    dnnl::reorder(copies_[0].second, dst).execute(ctx.strm, copies_[0].second, dst);
    ctx.strm.wait();
    copies_.emplace_back(want, dst);
    return copies_.back().second;
  }
  if (direct_ && want == plain_) {
    // oneDNN only reads a primitive's weights: the read-only mapping is safe to hand it.
    copies_.emplace_back(want, memory(want, ctx.eng, const_cast<float *>(direct_)));
    mapped_ = true;
  } else {
    memory dst(want, ctx.eng);
    if (want == plain_) {
      fill_(static_cast<float *>(dst.get_data_handle()));
    } else {
      std::vector<float> plain(plain_.get_size() / sizeof(float));
      fill_(plain.data());
      memory user(plain_, ctx.eng, plain.data());
      dnnl::reorder(user, dst).execute(ctx.strm, user, dst);
      ctx.strm.wait();
    }
    copies_.emplace_back(want, dst);
  }
  fill_ = nullptr;
  direct_ = nullptr;
  if (!mapped_) owner_.reset();
  return copies_[0].second;
}

void Exec::run(const dnnl::stream &s) const {
  const dnnl_status_t st =
      dnnl_primitive_execute(prim.get(), s.get(), static_cast<int>(args.size()), args.data());
  if (st != dnnl_success) fail(FLOWRT_INTERNAL_ERROR, "oneDNN primitive execution failed");
}

// The weights of the data channels in the layout the conv's form reads, folded
// (PConv::weight_at); Glow's edge channel (the last input) only enters the correction map, since
// it is 0 inside the image. The fill reads the Program's weights when the prepared copy is made,
// so it keeps them (a view of the model's bytes, normally) until then.
void OnednnNet::make_weights(Conv &c) {
  const std::shared_ptr<const PConv<float>> src = c.src;
  const int64_t out = c.out, in = c.in, taps = c.kh * c.kw;
  const bool exact = src->weight.is_view() && src->weight_scale.empty() && src->in_total == in;
  const float *direct = exact ? src->weight.data() : nullptr;
  switch (c.form) {
    case Conv::Form::Direct:
    case Conv::Form::Rows:
      c.weights = WeightCache(
          memory::desc({out, in, c.kh, c.kw}, f32, tag::oihw),
          [src, out, in, taps](float *dst) {
            for (int64_t o = 0; o < out; ++o)
              for (int64_t i = 0; i < in; ++i)
                for (int64_t t = 0; t < taps; ++t)
                  dst[(o * in + i) * taps + t] = src->weight_at(o, i * taps + t);
          },
          direct, exact ? src : nullptr);
      break;
    case Conv::Form::Taps:
      c.weights = WeightCache(
          memory::desc({in, taps * out}, f32, tag::ab), [src, out, in, taps](float *dst) {
            for (int64_t o = 0; o < out; ++o)
              for (int64_t i = 0; i < in; ++i)
                for (int64_t t = 0; t < taps; ++t)
                  dst[i * taps * out + t * out + o] = src->weight_at(o, i * taps + t);
          });
      break;
    case Conv::Form::Pointwise:  // (in, out) with out outer: the format's [out][in]
      c.weights = WeightCache(
          memory::desc({in, out}, f32, tag::ba),
          [src, out, in](float *dst) {
            for (int64_t o = 0; o < out; ++o)
              for (int64_t i = 0; i < in; ++i) dst[o * in + i] = src->weight_at(o, i);
          },
          direct, exact ? src : nullptr);
      break;
  }
}

// A conv whose output is a residual source writes it plain in f32, the form Role::Skip keeps.
bool OnednnNet::plain_dst(size_t k) const {
  const Conv &c = std::get<Conv>(ops_[k]);
  const Conv *next = k + 1 < ops_.size() ? std::get_if<Conv>(&ops_[k + 1]) : nullptr;
  return k == last_conv_ || !next || next->form != Conv::Form::Direct || !c.corr.empty() ||
         source_[k + 1];
}

memory::data_type OnednnNet::dst_type(size_t k) const {
  const Conv &c = std::get<Conv>(ops_[k]);
  const bool conv_next =
      k + 1 < ops_.size() && std::holds_alternative<Conv>(ops_[k + 1]) && !source_[k + 1];
  // A tap conv's partial products are summed in f32.
  return k == last_conv_ || !conv_next || !c.corr.empty() || c.form == Conv::Form::Taps ? f32 : dt_;
}

OnednnNet::ConvDescs OnednnNet::direct_descs(const Conv &c, size_t k, size_t n) const {
  const memory::dim nb = static_cast<memory::dim>(n);
  ConvDescs d;
  d.src = memory::desc({nb, c.in, h_, w_}, dt_, tag::any);
  d.bias = memory::desc({c.out}, f32, tag::x);
  d.dst = memory::desc({nb, c.out, h_, w_}, dst_type(k), plain_dst(k) ? tag::nhwc : tag::any);
  d.pad = {c.kh / 2, c.kw / 2};
  d.relu = c.relu && c.corr.empty();  // else the ReLU follows the correction pass
  return d;
}

OnednnNet::ConvDescs OnednnNet::rows_descs(const Conv &c, size_t k, size_t n) const {
  const memory::dim m = static_cast<memory::dim>(n) * h_ * w_;
  ConvDescs d;
  d.src = memory::desc({1, c.in, 1, m}, dt_, tag::nhwc);
  d.bias = memory::desc({c.out}, f32, tag::x);
  d.dst = memory::desc({1, c.out, 1, m}, dst_type(k), tag::nhwc);
  d.pad = {0, 0};
  d.relu = c.relu;
  return d;
}

bool OnednnNet::rows_pay(const Conv &c, size_t k, size_t max_batch, Context &ctx) const {
  const Context::Probe key{{1, c.in, c.out, h_, w_, c.relu, static_cast<int64_t>(dst_type(k)),
                            static_cast<int64_t>(max_batch)}};
  auto hit = std::find_if(ctx.probes.begin(), ctx.probes.end(),
                          [&](const auto &e) { return e.first == key; });
  if (hit != ctx.probes.end()) return hit->second;
  // Only where the matmul would repack plain weights on every call.
  const memory::dim m = static_cast<memory::dim>(max_batch) * h_ * w_;
  const auto mm = make_matmul_pd(
      ctx.eng, memory::desc({m, c.in}, dt_, tag::ab), memory::desc({c.in, c.out}, dt_, tag::any),
      memory::desc({1, c.out}, f32, tag::ab), memory::desc({m, c.out}, dst_type(k), tag::ab),
      Primitives::attr(c.relu));
  bool pays = mm.weights_desc() == memory::desc({c.in, c.out}, dt_, tag::ab) ||
              mm.weights_desc() == memory::desc({c.in, c.out}, dt_, tag::ba);
  const memory::desc any({c.out, c.in, 1, 1}, dt_, tag::any);
  memory::desc first;
  for (size_t n = 1; n <= max_batch && pays; ++n) {
    const ConvDescs d = rows_descs(c, k, n);
    const auto pd =
        make_conv_pd(ctx.eng, d.src, any, d.bias, d.dst, d.pad, Primitives::attr(d.relu));
    if (n == 1) first = pd.weights_desc();
    pays = pd.weights_desc() == first && !is_ref_impl(impl_name(pd));
  }
  ctx.probes.emplace_back(key, pays);
  return pays;
}

void OnednnNet::choose_forms(size_t max_batch, Context &ctx) {
  // Last op first: a conv's destination layout depends on the form of the op after it.
  for (size_t k = ops_.size(); k-- > 0;) {
    auto *c = std::get_if<Conv>(&ops_[k]);
    if (!c || c->kh != 1 || c->kw != 1) continue;
    const Force1x1 force = force_1x1();
    bool stable =
        force == Force1x1::Conv || (force == Force1x1::Probe && max_batch <= kMaxLayoutProbe);
    if (stable && force == Force1x1::Probe) {
      // Weights layouts of the direct conv, keyed by everything the primitive depends on.
      const Context::Probe key{
          {0, c->in, c->out, h_, w_, c->relu, plain_dst(k), static_cast<int64_t>(max_batch)}};
      auto hit = std::find_if(ctx.probes.begin(), ctx.probes.end(),
                              [&](const auto &e) { return e.first == key; });
      if (hit != ctx.probes.end()) {
        stable = hit->second;
      } else {  // primitive descriptors only: the probe creates no primitive
        const memory::desc any({c->out, c->in, 1, 1}, dt_, tag::any);
        memory::desc first;
        for (size_t n = 1; n <= max_batch && stable; ++n) {
          const ConvDescs d = direct_descs(*c, k, n);
          const auto pd =
              make_conv_pd(ctx.eng, d.src, any, d.bias, d.dst, d.pad, Primitives::attr(d.relu));
          if (n == 1) first = pd.weights_desc();
          stable = pd.weights_desc() == first && !is_ref_impl(impl_name(pd));
        }
        ctx.probes.emplace_back(key, stable);
      }
    }
    if (stable) {
      c->form = Conv::Form::Direct;
      make_weights(*c);
    } else if (force == Force1x1::Rows ||
               (force == Force1x1::Probe && max_batch <= kMaxLayoutProbe &&
                rows_pay(*c, k, max_batch, ctx))) {
      c->form = Conv::Form::Rows;
      make_weights(*c);
    }
  }
  for (Op &op : ops_)
    if (auto *c = std::get_if<Conv>(&op)) c->src.reset();  // the fills keep what they need
}

OnednnNet::OnednnNet(const PNet<float> &net, int64_t h, int64_t w, memory::data_type dt)
    : in_ch_(net.in_ch), out_ch_(net.out_ch), h_(h), w_(w), dt_(dt) {
  source_ = net.residual_source;  // empty without residual adds
  source_.resize(net.ops.size() + 1, 0);
  for (const PNetOp<float> &op : net.ops) {
    if (auto *r = std::get_if<PResidualAdd>(&op)) {
      ops_.emplace_back(Add{r->relu});
      continue;
    }
    if (auto *a = std::get_if<PChannelAffine<float>>(&op)) {
      ops_.emplace_back(Affine{a->scale, a->shift});
      continue;
    }
    if (std::holds_alternative<PRelu>(op)) {
      ops_.emplace_back(Relu{});
      continue;
    }
    const PConv<float> &pc = std::get<PConv<float>>(op);
    Conv c;
    c.out = pc.out_ch, c.in = pc.in_ch, c.kh = pc.kh, c.kw = pc.kw, c.relu = pc.relu;
    c.bias = pc.bias;
    const int64_t taps = c.kh * c.kw;
    c.form = taps == 1                                      ? Conv::Form::Pointwise
             : c.out < kTapsBelowOut && c.in >= kTapsFromIn ? Conv::Form::Taps
                                                            : Conv::Form::Direct;
    c.src = std::make_shared<const PConv<float>>(pc);
    make_weights(c);
    // Per output channel and kernel tap: what an out-of-image tap adds.
    std::vector<double> outside(c.out * taps, 0.0);
    bool any = false;
    for (int64_t o = 0; o < c.out; ++o)
      for (int64_t t = 0; t < taps; ++t) {
        double v = 0;
        if (pc.padding == PaddingMode::EdgeChannel) v = pc.weight_at(o, c.in * taps + t);
        if (pc.padding == PaddingMode::Constant && pc.pad_value != 0.f)
          for (int64_t i = 0; i < c.in; ++i)
            v += static_cast<double>(pc.pad_value) * pc.weight_at(o, i * taps + t);
        outside[o * taps + t] = v;
        any = any || v != 0.0;
      }
    if (any) {
      const int64_t ph = c.kh / 2, pw = c.kw / 2;
      c.corr.assign(h * w * c.out, 0.f);
      for (int64_t y = 0; y < h; ++y)
        for (int64_t x = 0; x < w; ++x)
          for (int64_t o = 0; o < c.out; ++o) {
            double acc = 0;
            for (int64_t ky = 0; ky < c.kh; ++ky)
              for (int64_t kx = 0; kx < c.kw; ++kx) {
                const int64_t iy = y + ky - ph, ix = x + kx - pw;
                if (iy < 0 || iy >= h || ix < 0 || ix >= w)
                  acc += outside[o * taps + ky * c.kw + kx];
              }
            c.corr[(y * w + x) * c.out + o] = static_cast<float>(acc);
          }
    }
    ops_.emplace_back(std::move(c));
  }
  last_conv_ = ops_.size();
  for (size_t k = 0; k < ops_.size(); ++k)
    if (std::holds_alternative<Conv>(ops_[k])) last_conv_ = k;
}

std::unique_ptr<OnednnNet::Plan> OnednnNet::create(size_t n, Context &ctx, Needs &needs) {
  auto plan = std::make_unique<Plan>();
  plan->n = n;
  const memory::dim nb = static_cast<memory::dim>(n);
  const size_t plane = static_cast<size_t>(h_ * w_);
  auto nhwc = [&](int64_t ch, memory::data_type dt = f32) {
    return memory::desc({nb, ch, h_, w_}, dt, tag::nhwc);
  };
  auto other = [](Role r) { return r == Role::T0 ? Role::T1 : Role::T0; };
  Role cur = Role::In;
  memory::desc cur_md = nhwc(in_ch_);
  int64_t ch = in_ch_;
  // Brings the current activations into the layout `want` a conv reads: f32 (always plain
  // NHWC) to bf16 by the element-wise rounding, any other change by a oneDNN reorder.
  auto feed = [&](const memory::desc &want) {
    if (cur_md == want) return;
    if (want.data_type() == bf16 && cur_md.data_type() == f32) {
      Plan::Item cv;
      cv.kind = Plan::Kind::ToBf16;
      cv.src = cur;
      cv.dst = other(cur), cv.dst_md = nhwc(ch, bf16);
      cv.channels = ch;
      needs.need(cv.dst, cv.dst_md.get_size());
      cur = cv.dst, cur_md = cv.dst_md;
      plan->items.push_back(std::move(cv));
      if (cur_md == want) return;
    }
    Plan::Item re;
    re.kind = Plan::Kind::Reorder;
    re.src = cur, re.src_md = cur_md;
    re.dst = other(cur), re.dst_md = want;
    needs.need(re.dst, re.dst_md.get_size());
    cur = re.dst, cur_md = re.dst_md;
    plan->items.push_back(std::move(re));
  };
  needs.need(Role::In, n * plane * in_ch_ * sizeof(float));

  for (size_t k = 0; k < ops_.size(); ++k) {
    if (source_[k]) {  // kept plain in f32 until its add (a no-op feed when already so)
      feed(nhwc(ch));
      Plan::Item keep;
      keep.kind = Plan::Kind::Keep;
      keep.src = cur, keep.dst = Role::Skip, keep.channels = ch;
      needs.need(Role::Skip, n * plane * ch * sizeof(float));
      plan->items.push_back(std::move(keep));
    }
    if (std::holds_alternative<Add>(ops_[k])) {
      feed(nhwc(ch));
      Plan::Item add;
      add.kind = Plan::Kind::Add;
      add.op = k;
      add.src = Role::Skip, add.dst = cur, add.channels = ch;
      plan->items.push_back(std::move(add));
      continue;
    }
    Plan::Item item;
    item.op = k;
    item.channels = ch;
    const Conv *conv = std::get_if<Conv>(&ops_[k]);
    if (conv && conv->form == Conv::Form::Rows) {
      const Conv *c = conv;
      feed(nhwc(c->in, dt_));  // the pixel rows, as they are
      const ConvDescs d = rows_descs(*c, k, n);
      const auto e =
          pd_for_cache(c->weights, memory::desc({c->out, c->in, 1, 1}, dt_, tag::any),
                       [&](const memory::desc &wd) {
                         return ctx.prims.conv(ctx.eng, d.src, wd, d.bias, d.dst, d.pad, d.relu);
                       });
      item.kind = Plan::Kind::RowsConv;
      item.prim = e.prim;
      item.src = cur, item.src_md = cur_md;
      item.dst = k == last_conv_ ? Role::Out : other(cur);
      item.dst_md = nhwc(c->out, dst_type(k));
      needs.need(item.dst, item.dst_md.get_size());
      needs.need(Role::Scratchpad, e.pd.scratchpad_desc().get_size());
      item.pd = e.pd;
      cur = item.dst, cur_md = item.dst_md, ch = c->out;
      plan->items.push_back(std::move(item));
      continue;
    }
    if (conv && conv->form != Conv::Form::Direct) {
      const Conv *c = conv;
      feed(nhwc(c->in, dt_));  // the matmul reads plain pixel rows
      const bool pointwise = c->form == Conv::Form::Pointwise;
      const memory::data_type out_dt = dst_type(k);
      const memory::dim m = nb * h_ * w_, cols = c->kh * c->kw * c->out;
      const memory::desc rows({m, c->in}, dt_, tag::ab), out_rows({m, cols}, out_dt, tag::ab);
      const memory::desc bias = pointwise ? memory::desc({1, cols}, f32, tag::ab) : memory::desc();
      const auto e = pd_for_cache(
          c->weights, memory::desc({c->in, cols}, dt_, tag::any), [&](const memory::desc &wd) {
            return ctx.prims.matmul(ctx.eng, rows, wd, bias, out_rows, pointwise && c->relu);
          });
      const auto &pd = e.pd;
      item.prim = e.prim;
      if (pointwise) {
        item.kind = Plan::Kind::Matmul;
        item.src = cur, item.src_md = cur_md;
        item.dst = k == last_conv_ ? Role::Out : other(cur);
        item.dst_md = nhwc(c->out, out_dt);
        needs.need(item.dst, item.dst_md.get_size());
        needs.need(Role::Scratchpad, pd.scratchpad_desc().get_size());
        item.mm_pd = pd;
        cur = item.dst, cur_md = item.dst_md, ch = c->out;
        plan->items.push_back(std::move(item));
        continue;
      }
      item.kind = Plan::Kind::TapMatmul;
      item.src = cur, item.src_md = cur_md;
      item.dst = other(cur), item.dst_md = pd.dst_desc();
      needs.need(item.dst, item.dst_md.get_size());
      needs.need(Role::Scratchpad, pd.scratchpad_desc().get_size());
      item.mm_pd = pd;
      const Role taps_role = item.dst;
      plan->items.push_back(std::move(item));
      Plan::Item sum;
      sum.kind = Plan::Kind::TapSum;
      sum.op = k;
      sum.src = taps_role;
      // The sum may overwrite the matmul's input, never the taps it reads.
      sum.dst = k == last_conv_                         ? Role::Out
                : (cur == Role::In || cur == Role::Out) ? other(taps_role)
                                                        : cur;
      sum.dst_md = nhwc(c->out);
      sum.channels = c->out;
      needs.need(sum.dst, sum.dst_md.get_size());
      cur = sum.dst, cur_md = sum.dst_md, ch = c->out;
      plan->items.push_back(std::move(sum));
      continue;
    }
    if (const Conv *c = conv) {
      ConvDescs d = direct_descs(*c, k, n);
      const memory::desc any_weights({c->out, c->in, c->kh, c->kw}, dt_, tag::any);
      auto make = [&](const ConvDescs &dd) {
        return pd_for_cache(c->weights, any_weights, [&](const memory::desc &wd) {
          return ctx.prims.conv(ctx.eng, dd.src, wd, dd.bias, dd.dst, dd.pad, dd.relu);
        });
      };
      auto e = make(d);
      // Plain NHWC on both sides is tried where oneDNN's own choice is ref:any for a plain output
      // (oneDNN 2.6's AVX2 convolutions write plain NHWC only from a plain NHWC source; AVX-512's
      // take any source), or would reorder a plain input (below AVX-512 it gives the nets' first
      // 3x3 conv at the 8x8 and 4x4 levels 8-channel blocked activations, and a reorder then
      // runs on either side): its AVX2 kernel also runs plain NHWC, which the neighbours use.
      // Else a plain output that only ref:any writes is written in the conv's own layout and a
      // reorder makes it plain; both are far cheaper than ref:any.
      ConvDescs plain_io = d;
      plain_io.src = nhwc(c->in, dt_);
      plain_io.dst = nhwc(c->out, dst_type(k));
      const bool ref_plain = plain_dst(k) && is_ref_impl(impl_name(e.pd));
      const bool reorders_input = cur_md == plain_io.src && e.pd.src_desc() != plain_io.src;
      if (ref_plain || reorders_input) {
        auto e1 = make(plain_io);
        if (!is_ref_impl(impl_name(e1.pd))) e = std::move(e1);
      }
      bool reorder_after = false;
      const memory::desc plain = d.dst;
      if (plain_dst(k) && is_ref_impl(impl_name(e.pd))) {
        ConvDescs blocked = d;
        blocked.dst =
            memory::desc({static_cast<memory::dim>(n), c->out, h_, w_}, dst_type(k), tag::any);
        auto e2 = make(blocked);
        if (!is_ref_impl(impl_name(e2.pd))) e = std::move(e2), reorder_after = true;
      }
      const auto &pd = e.pd;
      item.prim = e.prim;
      feed(pd.src_desc());
      item.kind = Plan::Kind::Conv;
      item.src = cur, item.src_md = cur_md;
      item.dst = k == last_conv_ && !reorder_after ? Role::Out : other(cur);
      item.dst_md = pd.dst_desc();
      needs.need(item.dst, item.dst_md.get_size());
      needs.need(Role::Scratchpad, pd.scratchpad_desc().get_size());
      item.pd = pd;
      cur = item.dst, cur_md = item.dst_md, ch = c->out;
      plan->items.push_back(std::move(item));
      if (reorder_after) {
        Plan::Item re;
        re.kind = Plan::Kind::Reorder;
        re.src = cur, re.src_md = cur_md;
        re.dst = k == last_conv_ ? Role::Out : other(cur);
        re.dst_md = plain;
        needs.need(re.dst, re.dst_md.get_size());
        cur = re.dst, cur_md = re.dst_md;
        plan->items.push_back(std::move(re));
      }
      if (!c->corr.empty()) {
        Plan::Item fix;
        fix.kind = Plan::Kind::Correct;
        fix.op = k;
        fix.src = fix.dst = cur;
        fix.channels = ch;
        plan->items.push_back(std::move(fix));
      }
      continue;
    }
    item.kind = std::holds_alternative<Affine>(ops_[k]) ? Plan::Kind::Affine : Plan::Kind::Relu;
    item.src = item.dst = cur;
    plan->items.push_back(std::move(item));
  }
  if (cur != Role::Out) {
    Plan::Item cp;
    cp.kind = Plan::Kind::Copy;
    cp.src = cur, cp.dst = Role::Out, cp.channels = ch;
    plan->items.push_back(std::move(cp));
  }
  needs.need(Role::Out, n * plane * out_ch_ * sizeof(float));
  return plan;
}

void OnednnNet::bind(Plan &plan, Context &ctx, MemoryCache &mems) {
  for (Plan::Item &it : plan.items) {
    it.exec = Exec{};
    if (it.kind == Plan::Kind::Reorder) {
      memory src(it.src_md, ctx.eng, ctx.buf(it.src).data());
      memory dst(it.dst_md, ctx.eng, ctx.buf(it.dst).data());
      it.exec.prim = dnnl::reorder(src, dst);
      it.exec.add(DNNL_ARG_FROM, src);
      it.exec.add(DNNL_ARG_TO, dst);
      it.reorder_impl = impl_name(it.exec.prim);
    } else if (it.kind == Plan::Kind::TapMatmul || it.kind == Plan::Kind::Matmul) {
      Conv &c = std::get<Conv>(ops_[it.op]);
      const auto &pd = *it.mm_pd;
      it.exec.prim = it.prim;
      it.exec.add(DNNL_ARG_SRC, mems.get(ctx.eng, pd.src_desc(), ctx.buf(it.src).data()));
      it.exec.add(DNNL_ARG_WEIGHTS, c.weights.get(pd.weights_desc(), ctx));
      if (it.kind == Plan::Kind::Matmul)
        it.exec.add(DNNL_ARG_BIAS,
                    ctx.constants.get(ctx.eng, pd.bias_desc(), const_cast<float *>(c.bias.data())));
      it.exec.add(DNNL_ARG_DST, mems.get(ctx.eng, pd.dst_desc(), ctx.buf(it.dst).data()));
      it.exec.add(DNNL_ARG_SCRATCHPAD,
                  mems.get(ctx.eng, pd.scratchpad_desc(), ctx.buf(Role::Scratchpad).data()));
    } else if (it.kind == Plan::Kind::Conv || it.kind == Plan::Kind::RowsConv) {
      Conv &c = std::get<Conv>(ops_[it.op]);
      const auto &pd = *it.pd;
      it.exec.prim = it.prim;
      it.exec.add(DNNL_ARG_SRC, mems.get(ctx.eng, pd.src_desc(), ctx.buf(it.src).data()));
      it.exec.add(DNNL_ARG_WEIGHTS, c.weights.get(pd.weights_desc(), ctx));
      it.exec.add(DNNL_ARG_BIAS,
                  ctx.constants.get(ctx.eng, pd.bias_desc(), const_cast<float *>(c.bias.data())));
      it.exec.add(DNNL_ARG_DST, mems.get(ctx.eng, pd.dst_desc(), ctx.buf(it.dst).data()));
      it.exec.add(DNNL_ARG_SCRATCHPAD,
                  mems.get(ctx.eng, pd.scratchpad_desc(), ctx.buf(Role::Scratchpad).data()));
    }
  }
}

void OnednnNet::run(const Plan &plan, Context &ctx, const Par &par) const {
  const size_t plane = static_cast<size_t>(h_ * w_);
  for (const Plan::Item &it : plan.items) {
    float *x = ctx.buf(it.dst).data();
    const size_t floats = plan.n * plane * it.channels;
    switch (it.kind) {
      case Plan::Kind::Conv:
      case Plan::Kind::RowsConv:
      case Plan::Kind::TapMatmul:
      case Plan::Kind::Matmul:
      case Plan::Kind::Reorder:
        it.exec.run(ctx.strm);
        break;
      case Plan::Kind::ToBf16:
        to_bf16(par, floats, ctx.buf(it.src).data(), reinterpret_cast<uint16_t *>(x));
        break;
      case Plan::Kind::TapSum: {
        const Conv &c = std::get<Conv>(ops_[it.op]);
        tap_sum(par, ctx.buf(it.src).data(), plan.n, h_, w_, c.kh, c.kw, c.out, c.bias.data(),
                c.corr.empty() ? nullptr : c.corr.data(), c.relu, x);
        break;
      }
      case Plan::Kind::Correct: {
        const Conv &c = std::get<Conv>(ops_[it.op]);
        add_map(par, c.corr.data(), static_cast<int64_t>(plane) * c.out, plan.n, c.relu, x);
        break;
      }
      case Plan::Kind::Affine: {
        const Affine &a = std::get<Affine>(ops_[it.op]);
        channel_affine(par, a.scale.data(), a.shift.data(), nullptr, it.channels,
                       static_cast<int64_t>(plan.n * plane), x, false);
        break;
      }
      case Plan::Kind::Relu:
        relu(par, floats, x);
        break;
      case Plan::Kind::Keep:
        copy(par, floats, ctx.buf(it.src).data(), x);
        break;
      case Plan::Kind::Add:
        add_into(par, floats, ctx.buf(it.src).data(), std::get<Add>(ops_[it.op]).relu, x);
        break;
      case Plan::Kind::Copy:
        copy(par, floats, ctx.buf(it.src).data(), x);
        break;
    }
  }
}

void OnednnNet::impl_names(const Plan &plan, std::vector<std::string> &out) {
  for (const Plan::Item &it : plan.items) {
    if (it.kind == Plan::Kind::Reorder) out.emplace_back("reorder " + it.reorder_impl);
    if (it.pd)
      out.emplace_back(std::string(it.kind == Plan::Kind::RowsConv ? "conv1x1-as-rows " : "conv ") +
                       impl_name(*it.pd));
    if (it.mm_pd)
      out.emplace_back(std::string(it.kind == Plan::Kind::Matmul ? "conv1x1-as-matmul "
                                                                 : "conv-as-taps matmul ") +
                       impl_name(*it.mm_pd));
  }
}

void OnednnNet::add_weight_bytes(WeightBytes &bytes) const {
  for (const Op &op : ops_)
    if (auto *c = std::get_if<Conv>(&op)) bytes.add(c->weights);
}

}  // namespace flowrt::onednn
