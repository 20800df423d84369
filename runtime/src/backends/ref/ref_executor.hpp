// The reference executor: runs a Program<T> image by image with the plain layer math of
// runtime/src/layers. It is the oracle every other backend is tested against, and the tests
// instantiate it in double precision for brute-force Jacobians. Images of a batch run in
// parallel (OpenMP); a single image spreads its convolutions' output channels instead.
// Its memory is the Program plus one set of activation buffers per image of the maximum batch;
// with NetWeights::View (what the reference backend uses) the Program reads the nets' conv
// weights from the graph's tensors, so a session adds no copy of them.
#pragma once

#include <algorithm>
#include <cstring>
#include <vector>

#include "core/error.hpp"
#include "core/threads.hpp"
#include "layers/channel_affine.hpp"
#include "layers/coupling.hpp"
#include "layers/gaussian.hpp"
#include "layers/linear1x1.hpp"
#include "layers/net.hpp"
#include "layers/permute.hpp"
#include "layers/squeeze.hpp"
#include "model/program.hpp"

#ifdef _OPENMP
#include <omp.h>
#endif

namespace flowrt {

template <typename T>
class RefExecutor {
 public:
  // fold: the load-time foldings, with owned (copied) net weights.
  RefExecutor(const Graph &graph, size_t max_batch, int threads, bool fold)
      : RefExecutor(graph, max_batch, threads, ProgramOptions{fold, NetWeights::Copy}) {}
  // NetWeights::ViewScaled is not allowed: layers::conv2d runs the weights as they are.
  RefExecutor(const Graph &graph, size_t max_batch, int threads, const ProgramOptions &options)
      : prog_(build_program<T>(graph, checked(options))), threads_(resolve_threads(threads)) {
    scratch_.resize(max_batch);
    for (Scratch &s : scratch_) {
      s.a.resize(prog_.dims);
      s.b.resize(prog_.dims);
      s.net_a.resize(std::max<int64_t>(prog_.max_net_elems, 1));
      s.net_b.resize(std::max<int64_t>(prog_.max_net_elems, 1));
    }
  }

  const Program<T> &program() const { return prog_; }
  int64_t dims() const { return prog_.dims; }

  void encode(size_t n, const T *x, const int32_t *labels, T *z, double *log_p, double *log_det) {
    const int64_t d = prog_.dims;
    const int inner = n > 1 ? 1 : threads_;
#pragma omp parallel for schedule(dynamic, 1) num_threads(threads_) if (n > 1 && threads_ > 1)
    for (int64_t i = 0; i < static_cast<int64_t>(n); ++i) {
      double lp = 0, ld = 0;
      encode_one(x + i * d, labels ? labels[i] : -1, z + i * d, &lp, &ld, scratch_[i], inner);
      if (log_p) log_p[i] = lp;
      if (log_det) log_det[i] = ld;
    }
  }

  // noise = false: `src` holds latents z; noise = true: standard normals eps.
  void decode(size_t n, const T *src, bool noise, T temperature, const int32_t *labels, T *x) {
    const int64_t d = prog_.dims;
    const int inner = n > 1 ? 1 : threads_;
#pragma omp parallel for schedule(dynamic, 1) num_threads(threads_) if (n > 1 && threads_ > 1)
    for (int64_t i = 0; i < static_cast<int64_t>(n); ++i)
      decode_one(src + i * d, noise, temperature, labels ? labels[i] : -1, x + i * d, scratch_[i],
                 inner);
  }

 private:
  struct Scratch {
    std::vector<T> a, b, net_a, net_b;
  };

  static const ProgramOptions &checked(const ProgramOptions &o) {
    if (o.net_weights == NetWeights::ViewScaled)
      fail(FLOWRT_INTERNAL_ERROR, "the reference executor cannot run deferred net foldings");
    return o;
  }

  // Class offsets of the top prior for `label` (or zeros).
  void top_offsets(const PTop<T> &top, int64_t c, int32_t label, int64_t channels, T *mean_off,
                   T *ls_off) const {
    *mean_off = T(0);
    *ls_off = T(0);
    if (label >= 0 && top.n_classes > 0) {
      *mean_off = top.class_offsets[label * 2 * channels + c];
      *ls_off = top.class_offsets[label * 2 * channels + channels + c];
    }
  }

  void encode_one(const T *x, int32_t label, T *z, double *log_p, double *log_det, Scratch &s,
                  int threads) const {
    T *cur = s.a.data(), *tmp = s.b.data();
    std::memcpy(cur, x, sizeof(T) * prog_.dims);
    double ld = 0, lp = 0;
    for (const PStep<T> &step : prog_.steps) {
      const Shape3 &in = step.in;
      const int64_t plane = in.plane();
      if (auto *sq = std::get_if<PSqueeze>(&step.op)) {
        layers::squeeze(sq->order, in, cur, tmp, false);
        std::swap(cur, tmp);
      } else if (auto *af = std::get_if<PAffine<T>>(&step.op)) {
        layers::channel_affine(af->scale.data(), af->shift.data(), in.c, plane, cur, false);
        ld += step.logdet;
      } else if (auto *li = std::get_if<PLinear<T>>(&step.op)) {
        layers::linear1x1(li->a.data(), li->c.data(), in.c, plane, cur, tmp);
        std::swap(cur, tmp);
        ld += step.logdet;
      } else if (auto *pm = std::get_if<PPermute>(&step.op)) {
        layers::permute_channels(pm->source.data(), in.c, plane, cur, tmp, false);
        std::swap(cur, tmp);
      } else if (auto *cp = std::get_if<PCoupling<T>>(&step.op)) {
        const int64_t cb = in.c / 2;
        T *xa = cur + (cp->conditioning == Half::First ? 0 : cb * plane);
        T *xb = cur + (cp->conditioning == Half::First ? cb * plane : 0);
        const T *h =
            layers::run_net(cp->net, xa, in.h, in.w, s.net_a.data(), s.net_b.data(), threads);
        ld += layers::coupling_apply(*cp, h, cb, plane, xb, false);
      } else if (auto *sp = std::get_if<PSplit<T>>(&step.op)) {
        const int64_t cz = in.c / 2, n = cz * plane;
        T *leave = cur + (sp->leaving == Half::First ? 0 : n);
        T *keep = cur + (sp->leaving == Half::First ? n : 0);
        std::memcpy(z + step.latent_offset, leave, sizeof(T) * n);
        lp += split_log_prob(*sp, keep, leave, cz, in, s, threads);
        if (sp->leaving == Half::First) std::memmove(cur, keep, sizeof(T) * n);
      } else if (auto *tp = std::get_if<PTop<T>>(&step.op)) {
        const int64_t n = in.numel();
        std::memcpy(z + step.latent_offset, cur, sizeof(T) * n);
        for (int64_t c = 0; c < in.c; ++c) {
          T mo, lo;
          top_offsets(*tp, c, label, in.c, &mo, &lo);
          lp += layers::gaussian_log_prob(cur + c * plane, tp->mean.data() + c * plane,
                                          tp->log_std.data() + c * plane, plane, mo, lo);
        }
      }
    }
    *log_det = ld;
    *log_p = lp + ld;
  }

  double split_log_prob(const PSplit<T> &sp, const T *keep, const T *leave, int64_t cz,
                        const Shape3 &in, Scratch &s, int threads) const {
    const int64_t plane = in.plane();
    if (sp.prior.empty()) {
      double acc = 0;
      for (int64_t k = 0; k < cz * plane; ++k)
        acc += -layers::kHalfLog2Pi - 0.5 * static_cast<double>(leave[k]) * leave[k];
      return acc;
    }
    const T *o =
        layers::run_net(sp.prior, keep, in.h, in.w, s.net_a.data(), s.net_b.data(), threads);
    double acc = 0;
    for (int64_t j = 0; j < cz; ++j) {
      int64_t mc = 0, lc = 0;
      layers::prior_channels(sp.layout, j, cz, &mc, &lc);
      acc += layers::gaussian_log_prob(leave + j * plane, o + mc * plane, o + lc * plane, plane);
    }
    return acc;
  }

  void decode_one(const T *src, bool noise, T temperature, int32_t label, T *x, Scratch &s,
                  int threads) const {
    T *cur = s.a.data(), *tmp = s.b.data();
    const PStep<T> &top_step = prog_.steps.back();
    const auto &top = std::get<PTop<T>>(top_step.op);
    {
      const Shape3 &in = top_step.in;
      const int64_t plane = in.plane();
      const T *from = src + top_step.latent_offset;
      if (!noise) {
        std::memcpy(cur, from, sizeof(T) * in.numel());
      } else {
        for (int64_t c = 0; c < in.c; ++c) {
          T mo, lo;
          top_offsets(top, c, label, in.c, &mo, &lo);
          layers::gaussian_sample(from + c * plane, top.mean.data() + c * plane,
                                  top.log_std.data() + c * plane, plane, temperature,
                                  cur + c * plane, mo, lo);
        }
      }
    }
    for (size_t k = prog_.steps.size() - 1; k-- > 0;) {
      const PStep<T> &step = prog_.steps[k];
      const Shape3 &in = step.in;
      const int64_t plane = in.plane();
      if (auto *sq = std::get_if<PSqueeze>(&step.op)) {
        layers::squeeze(sq->order, in, cur, tmp, true);
        std::swap(cur, tmp);
      } else if (auto *af = std::get_if<PAffine<T>>(&step.op)) {
        layers::channel_affine(af->scale.data(), af->shift.data(), in.c, plane, cur, true);
      } else if (auto *li = std::get_if<PLinear<T>>(&step.op)) {
        layers::linear1x1_inverse(li->a_inv.data(), li->c.data(), in.c, plane, cur, tmp);
        std::swap(cur, tmp);
      } else if (auto *pm = std::get_if<PPermute>(&step.op)) {
        layers::permute_channels(pm->source.data(), in.c, plane, cur, tmp, true);
        std::swap(cur, tmp);
      } else if (auto *cp = std::get_if<PCoupling<T>>(&step.op)) {
        const int64_t cb = in.c / 2;
        T *xa = cur + (cp->conditioning == Half::First ? 0 : cb * plane);
        T *xb = cur + (cp->conditioning == Half::First ? cb * plane : 0);
        const T *h =
            layers::run_net(cp->net, xa, in.h, in.w, s.net_a.data(), s.net_b.data(), threads);
        layers::coupling_apply(*cp, h, cb, plane, xb, true);
      } else if (auto *sp = std::get_if<PSplit<T>>(&step.op)) {
        const int64_t cz = in.c / 2, n = cz * plane;
        if (sp->leaving == Half::First) std::memmove(cur + n, cur, sizeof(T) * n);
        T *leave = cur + (sp->leaving == Half::First ? 0 : n);
        const T *keep = cur + (sp->leaving == Half::First ? n : 0);
        const T *from = src + step.latent_offset;
        if (!noise) {
          std::memcpy(leave, from, sizeof(T) * n);
        } else if (sp->prior.empty()) {
          for (int64_t e = 0; e < n; ++e) leave[e] = temperature * from[e];
        } else {
          const T *o =
              layers::run_net(sp->prior, keep, in.h, in.w, s.net_a.data(), s.net_b.data(), threads);
          for (int64_t j = 0; j < cz; ++j) {
            int64_t mc = 0, lc = 0;
            layers::prior_channels(sp->layout, j, cz, &mc, &lc);
            layers::gaussian_sample(from + j * plane, o + mc * plane, o + lc * plane, plane,
                                    temperature, leave + j * plane);
          }
        }
      }
    }
    std::memcpy(x, cur, sizeof(T) * prog_.dims);
  }

  Program<T> prog_;
  int threads_;
  std::vector<Scratch> scratch_;
};

}  // namespace flowrt
