#include "model/program_check.hpp"

#include <string>
#include <vector>

#include "core/error.hpp"

namespace flowrt {
namespace {

template <typename T, typename Refuse>
void check_coupling(const PCoupling<T> &cp, const Shape3 &in, bool shape_kept,
                    const Refuse &refuse) {
  if (!shape_kept) refuse("a coupling changes the shape");
  const bool checker = is_checkerboard(cp.conditioning);
  if (!checker && cp.conditioning != Half::First && cp.conditioning != Half::Second)
    refuse("unknown coupling conditioning");
  if (checker && in.plane() < 2)
    refuse("a checkerboard coupling on " + to_string(in) + " (fewer than 2 positions)");
  if (!checker && (in.c % 2 || cp.mask_channel))
    refuse("a channel coupling on " + to_string(in) +
           (cp.mask_channel ? " with a mask channel" : ""));
  const int64_t cb = checker ? in.c : in.c / 2;
  const int64_t net_in = checker ? in.c + (cp.mask_channel ? 1 : 0) : cb;
  const bool affine = cp.type == CouplingType::Affine;
  if (!affine && cp.type != CouplingType::Additive) refuse("unknown coupling type");
  if (cp.net.empty() || cp.net.in_ch != net_in || cp.net.out_ch != (affine ? 2 * cb : cb))
    refuse("the coupling net is not " + std::to_string(net_in) + " -> " +
           std::to_string(affine ? 2 * cb : cb) + " channels");
  if (!affine) return;
  const int split = static_cast<int>(cp.split);
  if (split < 1 || split > 4) refuse("unknown shift/scale split");
  if (cp.form != AffineForm::ShiftThenScale && cp.form != AffineForm::ScaleThenShift)
    refuse("unknown affine form");
  if (cp.scale_fn != ScaleFunction::Sigmoid && cp.scale_fn != ScaleFunction::Exp &&
      cp.scale_fn != ScaleFunction::Tanh)
    refuse("unknown scale function");
  if (cp.scale_fn == ScaleFunction::Tanh && static_cast<int64_t>(cp.scale_weight.size()) != cb)
    refuse("the tanh scale has " + std::to_string(cp.scale_weight.size()) + " weights, expected " +
           std::to_string(cb));
}

}  // namespace

template <typename T>
void check_program(const Graph &graph, const Program<T> &prog) {
  Shape3 prev = prog.image.shape();
  for (size_t k = 0; k < prog.steps.size(); ++k) {
    const PStep<T> &step = prog.steps[k];
    const Shape3 &in = step.in;
    const std::string where = "step " + std::to_string(k) +
                              (step.layer_index < graph.layers.size()
                                   ? " (layer " + std::to_string(step.layer_index) + " '" +
                                         graph.layers[step.layer_index].name + "')"
                                   : std::string());
    auto refuse = [&](const std::string &why) {
      fail(FLOWRT_UNSUPPORTED, "cannot run " + where + ": " + why);
    };
    if (in.numel() < 1 || in.numel() > prog.dims) refuse("input " + to_string(in));
    // Only a flatten, which has no step, changes the shape between steps.
    if (in != prev && in != Shape3{prev.numel(), 1, 1})
      refuse("its input " + to_string(in) + " is neither the previous output " + to_string(prev) +
             " nor its flattening");
    const bool last = k + 1 == prog.steps.size();
    const bool shape_kept = step.out == in;
    if (std::holds_alternative<PTop<T>>(step.op) != last)
      refuse(last ? "the last step is not the top prior" : "the top prior is not the last step");
    if (auto *lg = std::get_if<PLogit<T>>(&step.op)) {
      if (k != 0) refuse("a logit step is not the first");
      if (!shape_kept) refuse("a logit step changes the shape");
      const double alpha = static_cast<double>(lg->alpha);
      if (!(alpha > 0 && alpha < 0.5)) refuse("logit alpha out of (0, 0.5)");
    } else if (std::holds_alternative<PSqueeze>(step.op)) {
      if (in.h % 2 || in.w % 2 || step.out != Shape3{in.c * 4, in.h / 2, in.w / 2})
        refuse("a squeeze of " + to_string(in) + " to " + to_string(step.out));
    } else if (auto *af = std::get_if<PAffine<T>>(&step.op)) {
      if (!shape_kept || static_cast<int64_t>(af->scale.size()) != in.c ||
          af->shift.size() != af->scale.size())
        refuse("an actnorm's parameters do not fit " + to_string(in));
    } else if (auto *li = std::get_if<PLinear<T>>(&step.op)) {
      if (!shape_kept || static_cast<int64_t>(li->a.size()) != in.c * in.c ||
          li->a_inv.size() != li->a.size() || static_cast<int64_t>(li->c.size()) != in.c)
        refuse("a 1x1 convolution's matrices do not fit " + to_string(in));
    } else if (auto *pm = std::get_if<PPermute>(&step.op)) {
      if (!shape_kept || static_cast<int64_t>(pm->source.size()) != in.c)
        refuse("a permutation of " + std::to_string(pm->source.size()) + " channels on " +
               to_string(in));
      std::vector<bool> seen(static_cast<size_t>(in.c), false);
      for (int32_t s : pm->source) {
        if (s < 0 || s >= in.c || seen[s]) refuse("the permutation is not one");
        seen[s] = true;
      }
    } else if (auto *cp = std::get_if<PCoupling<T>>(&step.op)) {
      check_coupling(*cp, in, shape_kept, refuse);
    } else if (auto *sp = std::get_if<PSplit<T>>(&step.op)) {
      if (sp->leaving != Half::First && sp->leaving != Half::Second)
        refuse("a split leaves a channel half, not a checkerboard");
      if (in.c % 2 || step.out != Shape3{in.c / 2, in.h, in.w} ||
          step.latent != Shape3{in.c / 2, in.h, in.w})
        refuse("a split of " + to_string(in) + " to " + to_string(step.out));
      if (step.latent_offset < 0 || step.latent_offset + step.latent.numel() > prog.dims)
        refuse("the split's latents lie outside z");
      if (!sp->prior.empty() && (sp->prior.in_ch != in.c / 2 || sp->prior.out_ch != in.c))
        refuse("the split prior net is not " + std::to_string(in.c / 2) + " -> " +
               std::to_string(in.c) + " channels");
    } else if (auto *tp = std::get_if<PTop<T>>(&step.op)) {
      if (step.latent != in || step.latent_offset + in.numel() != prog.dims ||
          static_cast<int64_t>(tp->mean.size()) != in.numel() ||
          tp->log_std.size() != tp->mean.size() ||
          static_cast<int64_t>(tp->class_offsets.size()) != tp->n_classes * 2 * in.c)
        refuse("the top prior does not fit " + to_string(in));
    }
    prev = step.out;
  }
}

template void check_program<float>(const Graph &, const Program<float> &);
template void check_program<double>(const Graph &, const Program<double> &);

}  // namespace flowrt
