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
      s.z.resize(prog_.dims);
      s.pos.resize(prog_.dims);
    }
    for (const PStep<T> &step : prog_.steps)
      if (std::holds_alternative<PSplit<T>>(step.op)) ++levels_;
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

  // What a detailed encode reports, image-major; every pointer may be null: eps (D floats per
  // image, the standardised latents), the per-level log-prior and log-det (levels() doubles
  // per image) and the per-pixel negative log-likelihood (H*W doubles per image, nats).
  struct Detail {
    T *eps = nullptr;
    double *level_log_prior = nullptr, *level_log_det = nullptr, *nll_map = nullptr;
  };
  int levels() const {
    return levels_;
  }

  // encode's walk reporting its terms one by one (see flowrt.h: flowrt_encode_noise,
  // flowrt_level_terms, flowrt_nll_map).
  void encode_detail(size_t n, const T *x, const int32_t *labels, const Detail &out) {
    const int64_t d = prog_.dims, px = prog_.image.height * prog_.image.width;
    const int inner = n > 1 ? 1 : threads_;
#pragma omp parallel for schedule(dynamic, 1) num_threads(threads_) if (n > 1 && threads_ > 1)
    for (int64_t i = 0; i < static_cast<int64_t>(n); ++i) {
      Detail one;
      if (out.eps) one.eps = out.eps + i * d;
      if (out.level_log_prior) one.level_log_prior = out.level_log_prior + i * levels_;
      if (out.level_log_det) one.level_log_det = out.level_log_det + i * levels_;
      if (out.nll_map) one.nll_map = out.nll_map + i * px;
      Scratch &s = scratch_[i];
      double lp = 0, ld = 0;
      encode_one(x + i * d, labels ? labels[i] : -1, one.eps ? one.eps : s.z.data(), &lp, &ld, s,
                 inner, &one);
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
    std::vector<T> z;         // z of a detailed encode that does not ask for eps
    std::vector<double> pos;  // per grid position terms of a detailed encode
  };

  // Adds sign * pos[u, v] (a grid of `grid` positions) evenly over the pixel block each grid
  // position came from.
  void spread(const double *pos, const Shape3 &grid, double sign, double *map) const {
    const int64_t ih = prog_.image.height, iw = prog_.image.width;
    const int64_t bh = ih / grid.h, bw = iw / grid.w;
    const double f = sign / static_cast<double>(bh * bw);
    for (int64_t u = 0; u < grid.h; ++u)
      for (int64_t v = 0; v < grid.w; ++v) {
        const double val = f * pos[u * grid.w + v];
        for (int64_t r = u * bh; r < (u + 1) * bh; ++r)
          for (int64_t c = v * bw; c < (v + 1) * bw; ++c) map[r * iw + c] += val;
      }
  }
  // An input-independent log|det| `logdet`: its share of -logdet on every pixel.
  void spread_constant(double logdet, double *map) const {
    const int64_t px = prog_.image.height * prog_.image.width;
    for (int64_t k = 0; k < px; ++k) map[k] -= logdet / static_cast<double>(px);
  }
  // Turns latent z (n elements, in place) into eps = (z - mean) / std, adding each element's
  // log-density to pos[position] when pos is given.
  // log-density to pos[position] when pos is given; returns their sum.
  static double standardise(T *z, const T *mean, const T *log_std, int64_t n, T mean_offset,
                            T log_std_offset, double *pos) {
    double acc = 0;
    for (int64_t k = 0; k < n; ++k) {
      const double ls = static_cast<double>(log_std[k]) + log_std_offset;
      const double e = (static_cast<double>(z[k]) - mean[k] - mean_offset) * std::exp(-ls);
      const double t = -layers::kHalfLog2Pi - ls - 0.5 * e * e;
      acc += t;
      if (pos) pos[k] += t;
      z[k] = static_cast<T>(e);
    }
    return acc;
  }

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

  // With `detail`, z is where the standardised latents go (they are computed in place of z).
  void encode_one(const T *x, int32_t label, T *z, double *log_p, double *log_det, Scratch &s,
                  int threads, const Detail *detail = nullptr) const {
    T *cur = s.a.data(), *tmp = s.b.data();
    std::memcpy(cur, x, sizeof(T) * prog_.dims);
    double ld = 0, lp = 0;
    double level_ld = 0;  // log|det| since the last split
    int level = 0;
    double *map = detail ? detail->nll_map : nullptr;
    double *pos = map ? s.pos.data() : nullptr;
    if (map) std::fill(map, map + prog_.image.height * prog_.image.width, 0.0);
    // The end of a level: its log-prior `level_lp` and the log-det gathered since the last one.
    auto end_level = [&](double level_lp) {
      if (detail && detail->level_log_prior) detail->level_log_prior[level] = level_lp;
      if (detail && detail->level_log_det) detail->level_log_det[level] = level_ld;
      level_ld = 0;
      ++level;
    };
    for (const PStep<T> &step : prog_.steps) {
      const Shape3 &in = step.in;
      const int64_t plane = in.plane();
      if (auto *sq = std::get_if<PSqueeze>(&step.op)) {
        layers::squeeze(sq->order, in, cur, tmp, false);
        std::swap(cur, tmp);
      } else if (auto *af = std::get_if<PAffine<T>>(&step.op)) {
        layers::channel_affine(af->scale.data(), af->shift.data(), in.c, plane, cur, false);
        ld += step.logdet;
        level_ld += step.logdet;
        if (map) spread_constant(step.logdet, map);
      } else if (auto *li = std::get_if<PLinear<T>>(&step.op)) {
        layers::linear1x1(li->a.data(), li->c.data(), in.c, plane, cur, tmp);
        std::swap(cur, tmp);
        ld += step.logdet;
        level_ld += step.logdet;
        if (map) spread_constant(step.logdet, map);
      } else if (auto *pm = std::get_if<PPermute>(&step.op)) {
        layers::permute_channels(pm->source.data(), in.c, plane, cur, tmp, false);
        std::swap(cur, tmp);
      } else if (auto *cp = std::get_if<PCoupling<T>>(&step.op)) {
        const int64_t cb = in.c / 2;
        T *xa = cur + (cp->conditioning == Half::First ? 0 : cb * plane);
        T *xb = cur + (cp->conditioning == Half::First ? cb * plane : 0);
        const T *h =
            layers::run_net(cp->net, xa, in.h, in.w, s.net_a.data(), s.net_b.data(), threads);
        if (pos) std::fill(pos, pos + plane, 0.0);
        const double c_ld = layers::coupling_apply(*cp, h, cb, plane, xb, false, pos);
        ld += c_ld;
        level_ld += c_ld;
        if (map) spread(pos, in, -1.0, map);
      } else if (auto *sp = std::get_if<PSplit<T>>(&step.op)) {
        const int64_t cz = in.c / 2, n = cz * plane;
        T *leave = cur + (sp->leaving == Half::First ? 0 : n);
        T *keep = cur + (sp->leaving == Half::First ? n : 0);
        std::memcpy(z + step.latent_offset, leave, sizeof(T) * n);
        const double s_lp =
            detail ? split_standardise(*sp, keep, z + step.latent_offset, cz, in, s, threads, pos)
                   : split_log_prob(*sp, keep, leave, cz, in, s, threads);
        lp += s_lp;
        if (map) spread(pos, in, -1.0, map);
        end_level(s_lp);
        if (sp->leaving == Half::First) std::memmove(cur, keep, sizeof(T) * n);
      } else if (auto *tp = std::get_if<PTop<T>>(&step.op)) {
        const int64_t n = in.numel();
        double t_lp = 0;
        if (pos) std::fill(pos, pos + plane, 0.0);
        std::memcpy(z + step.latent_offset, cur, sizeof(T) * n);
        for (int64_t c = 0; c < in.c; ++c) {
          T mo, lo;
          top_offsets(*tp, c, label, in.c, &mo, &lo);
          if (detail) {
            t_lp += standardise(z + step.latent_offset + c * plane, tp->mean.data() + c * plane,
                                tp->log_std.data() + c * plane, plane, mo, lo, pos);
            continue;
          }
          t_lp += layers::gaussian_log_prob(cur + c * plane, tp->mean.data() + c * plane,
                                            tp->log_std.data() + c * plane, plane, mo, lo);
        }
        lp += t_lp;
        if (map) spread(pos, in, -1.0, map);
        end_level(t_lp);
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

  // split_log_prob for a detailed encode: turns the leaving latent z (cz planes) into eps in
  // place, gathers each position's log-density into pos (if given) and returns their sum.
  double split_standardise(const PSplit<T> &sp, const T *keep, T *z, int64_t cz, const Shape3 &in,
                           Scratch &s, int threads, double *pos) const {
    const int64_t plane = in.plane();
    double acc = 0;
    if (pos) std::fill(pos, pos + plane, 0.0);
    if (sp.prior.empty()) {
      for (int64_t j = 0; j < cz; ++j)
        for (int64_t p = 0; p < plane; ++p) {
          const double v = static_cast<double>(z[j * plane + p]);
          const double t = -layers::kHalfLog2Pi - 0.5 * v * v;
          acc += t;
          if (pos) pos[p] += t;
        }
      return acc;
    }
    const T *o =
        layers::run_net(sp.prior, keep, in.h, in.w, s.net_a.data(), s.net_b.data(), threads);
    for (int64_t j = 0; j < cz; ++j) {
      int64_t mc = 0, lc = 0;
      layers::prior_channels(sp.layout, j, cz, &mc, &lc);
      const T *mean = o + mc * plane, *log_std = o + lc * plane;
      T *zj = z + j * plane;
      for (int64_t p = 0; p < plane; ++p) {
        const double ls = static_cast<double>(log_std[p]);
        const double e = (static_cast<double>(zj[p]) - mean[p]) * std::exp(-ls);
        const double t = -layers::kHalfLog2Pi - ls - 0.5 * e * e;
        acc += t;
        if (pos) pos[p] += t;
        zj[p] = static_cast<T>(e);
      }
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
  int levels_ = 1;  // splits + the top
  std::vector<Scratch> scratch_;
};

}  // namespace flowrt
