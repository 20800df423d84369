#include "backends/onednn/onednn_net.hpp"

#include "core/error.hpp"

namespace flowrt::onednn {

using dnnl::memory;
using tag = memory::format_tag;
constexpr memory::data_type f32 = memory::data_type::f32;
// The tap formulation pays off below one AVX-512 block of output channels, given enough input
// channels for the matmul (measured: 256->4 3x3 at 16x16 runs 2.8x faster, 512->12 1.5x).
constexpr int64_t kTapsBelowOut = 16;
constexpr int64_t kTapsFromIn = 64;

const dnnl::memory &WeightCache::get(const memory::desc &want, Context &ctx) {
  for (auto &c : copies_)
    if (c.first == want) return c.second;
  memory user(user_, ctx.eng, data_.data());
  memory dst(want, ctx.eng);
  dnnl::reorder(user, dst).execute(ctx.strm, user, dst);
  ctx.strm.wait();
  copies_.emplace_back(want, dst);
  return copies_.back().second;
}

void Exec::run(const dnnl::stream &s) const {
  const dnnl_status_t st =
      dnnl_primitive_execute(prim.get(), s.get(), static_cast<int>(args.size()), args.data());
  if (st != dnnl_success) fail(FLOWRT_INTERNAL_ERROR, "oneDNN primitive execution failed");
}

OnednnNet::OnednnNet(const PNet<float> &net, int64_t h, int64_t w)
    : in_ch_(net.in_ch), out_ch_(net.out_ch), h_(h), w_(w) {
  for (const PNetOp<float> &op : net.ops) {
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
    // The data channels' weights; Glow's edge channel (the last input) only enters the
    // correction map, since it is 0 inside the image.
    const int64_t taps = c.kh * c.kw;
    std::vector<float> wt(c.out * c.in * taps);
    for (int64_t o = 0; o < c.out; ++o)
      for (int64_t i = 0; i < c.in; ++i)
        for (int64_t t = 0; t < taps; ++t)
          wt[(o * c.in + i) * taps + t] = pc.weight[(o * pc.in_total + i) * taps + t];
    c.taps = taps > 1 && c.out < kTapsBelowOut && c.in >= kTapsFromIn;
    if (c.taps) {
      std::vector<float> tw(c.in * taps * c.out);
      for (int64_t o = 0; o < c.out; ++o)
        for (int64_t i = 0; i < c.in; ++i)
          for (int64_t t = 0; t < taps; ++t)
            tw[i * taps * c.out + t * c.out + o] = wt[(o * c.in + i) * taps + t];
      c.tap_weights = WeightCache(memory::desc({c.in, taps * c.out}, f32, tag::ab), std::move(tw));
    } else {
      c.weights =
          WeightCache(memory::desc({c.out, c.in, c.kh, c.kw}, f32, tag::oihw), std::move(wt));
    }
    // Per output channel and kernel tap: what an out-of-image tap adds.
    std::vector<double> outside(c.out * taps, 0.0);
    bool any = false;
    for (int64_t o = 0; o < c.out; ++o)
      for (int64_t t = 0; t < taps; ++t) {
        double v = 0;
        if (pc.padding == PaddingMode::EdgeChannel)
          v = pc.weight[(o * pc.in_total + c.in) * taps + t];
        if (pc.padding == PaddingMode::Constant && pc.pad_value != 0.f)
          for (int64_t i = 0; i < c.in; ++i)
            v += static_cast<double>(pc.pad_value) * pc.weight[(o * pc.in_total + i) * taps + t];
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
}

std::unique_ptr<OnednnNet::Plan> OnednnNet::create(size_t n, Context &ctx, Needs &needs) {
  auto plan = std::make_unique<Plan>();
  plan->n = n;
  const memory::dim nb = static_cast<memory::dim>(n);
  const size_t plane = static_cast<size_t>(h_ * w_);
  auto nhwc = [&](int64_t ch) { return memory::desc({nb, ch, h_, w_}, f32, tag::nhwc); };
  auto other = [](Role r) { return r == Role::T0 ? Role::T1 : Role::T0; };
  Role cur = Role::In;
  memory::desc cur_md = nhwc(in_ch_);
  int64_t ch = in_ch_;
  needs.need(Role::In, n * plane * in_ch_ * sizeof(float));
  size_t last_conv = ops_.size();
  for (size_t k = 0; k < ops_.size(); ++k)
    if (std::holds_alternative<Conv>(ops_[k])) last_conv = k;

  for (size_t k = 0; k < ops_.size(); ++k) {
    Plan::Item item;
    item.op = k;
    item.channels = ch;
    if (const Conv *c = std::get_if<Conv>(&ops_[k]); c && c->taps) {
      if (cur_md != nhwc(c->in)) {  // the matmul reads plain pixel rows
        Plan::Item re;
        re.kind = Plan::Kind::Reorder;
        re.src = cur, re.src_md = cur_md;
        re.dst = other(cur), re.dst_md = nhwc(c->in);
        needs.need(re.dst, re.dst_md.get_size());
        cur = re.dst, cur_md = re.dst_md;
        plan->items.push_back(std::move(re));
      }
      const memory::dim m = nb * h_ * w_, cols = c->kh * c->kw * c->out;
      dnnl::primitive_attr attr;
      attr.set_scratchpad_mode(dnnl::scratchpad_mode::user);
      auto pd = make_matmul_pd(ctx.eng, memory::desc({m, c->in}, f32, tag::ab),
                               memory::desc({c->in, cols}, f32, tag::any), memory::desc(),
                               memory::desc({m, cols}, f32, tag::ab), attr);
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
      sum.dst = k == last_conv                          ? Role::Out
                : (cur == Role::In || cur == Role::Out) ? other(taps_role)
                                                        : cur;
      sum.dst_md = nhwc(c->out);
      sum.channels = c->out;
      needs.need(sum.dst, sum.dst_md.get_size());
      cur = sum.dst, cur_md = sum.dst_md, ch = c->out;
      plan->items.push_back(std::move(sum));
      continue;
    }
    if (const Conv *c = std::get_if<Conv>(&ops_[k])) {
      const Conv *next = k + 1 < ops_.size() ? std::get_if<Conv>(&ops_[k + 1]) : nullptr;
      const bool plain_dst = k == last_conv || !next || next->taps || !c->corr.empty();
      dnnl::primitive_attr attr;
      attr.set_scratchpad_mode(dnnl::scratchpad_mode::user);
      if (c->relu && c->corr.empty()) {
        dnnl::post_ops po;
        append_relu(po);
        attr.set_post_ops(po);
      }
      auto pd =
          make_conv_pd(ctx.eng, memory::desc({nb, c->in, h_, w_}, f32, tag::any),
                       memory::desc({c->out, c->in, c->kh, c->kw}, f32, tag::any),
                       memory::desc({c->out}, f32, tag::x),
                       plain_dst ? nhwc(c->out) : memory::desc({nb, c->out, h_, w_}, f32, tag::any),
                       {c->kh / 2, c->kw / 2}, attr);
      if (pd.src_desc() != cur_md) {
        Plan::Item re;
        re.kind = Plan::Kind::Reorder;
        re.src = cur, re.src_md = cur_md;
        re.dst = other(cur), re.dst_md = pd.src_desc();
        needs.need(re.dst, re.dst_md.get_size());
        cur = re.dst, cur_md = re.dst_md;
        plan->items.push_back(std::move(re));
      }
      item.kind = Plan::Kind::Conv;
      item.src = cur, item.src_md = cur_md;
      item.dst = k == last_conv ? Role::Out : other(cur);
      item.dst_md = pd.dst_desc();
      needs.need(item.dst, item.dst_md.get_size());
      needs.need(Role::Scratchpad, pd.scratchpad_desc().get_size());
      item.pd = pd;
      cur = item.dst, cur_md = item.dst_md, ch = c->out;
      plan->items.push_back(std::move(item));
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

void OnednnNet::bind(Plan &plan, Context &ctx) {
  for (Plan::Item &it : plan.items) {
    it.exec = Exec{};
    if (it.kind == Plan::Kind::Reorder) {
      memory src(it.src_md, ctx.eng, ctx.buf(it.src).data());
      memory dst(it.dst_md, ctx.eng, ctx.buf(it.dst).data());
      it.exec.prim = dnnl::reorder(src, dst);
      it.exec.add(DNNL_ARG_FROM, src);
      it.exec.add(DNNL_ARG_TO, dst);
    } else if (it.kind == Plan::Kind::TapMatmul) {
      Conv &c = std::get<Conv>(ops_[it.op]);
      const auto &pd = *it.mm_pd;
      it.exec.prim = dnnl::matmul(pd);
      it.exec.add(DNNL_ARG_SRC, memory(pd.src_desc(), ctx.eng, ctx.buf(it.src).data()));
      it.exec.add(DNNL_ARG_WEIGHTS, c.tap_weights.get(pd.weights_desc(), ctx));
      it.exec.add(DNNL_ARG_DST, memory(pd.dst_desc(), ctx.eng, ctx.buf(it.dst).data()));
      it.exec.add(DNNL_ARG_SCRATCHPAD,
                  memory(pd.scratchpad_desc(), ctx.eng, ctx.buf(Role::Scratchpad).data()));
    } else if (it.kind == Plan::Kind::Conv) {
      Conv &c = std::get<Conv>(ops_[it.op]);
      const auto &pd = *it.pd;
      it.exec.prim = dnnl::convolution_forward(pd);
      it.exec.add(DNNL_ARG_SRC, memory(pd.src_desc(), ctx.eng, ctx.buf(it.src).data()));
      it.exec.add(DNNL_ARG_WEIGHTS, c.weights.get(pd.weights_desc(), ctx));
      it.exec.add(DNNL_ARG_BIAS, memory(pd.bias_desc(), ctx.eng, c.bias.data()));
      it.exec.add(DNNL_ARG_DST, memory(pd.dst_desc(), ctx.eng, ctx.buf(it.dst).data()));
      it.exec.add(DNNL_ARG_SCRATCHPAD,
                  memory(pd.scratchpad_desc(), ctx.eng, ctx.buf(Role::Scratchpad).data()));
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
      case Plan::Kind::TapMatmul:
      case Plan::Kind::Reorder:
        it.exec.run(ctx.strm);
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
      case Plan::Kind::Copy:
        copy(par, floats, ctx.buf(it.src).data(), x);
        break;
    }
  }
}

void OnednnNet::impl_names(const Plan &plan, std::vector<std::string> &out) {
  for (const Plan::Item &it : plan.items) {
    if (it.pd) out.emplace_back(std::string("conv ") + impl_name(*it.pd));
    if (it.mm_pd) out.emplace_back(std::string("conv-as-taps matmul ") + impl_name(*it.mm_pd));
  }
}

}  // namespace flowrt::onednn
