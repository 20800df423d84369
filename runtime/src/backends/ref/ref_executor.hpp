// The flow walk of the CPU executors, and the reference executor.
//
// FlowExecutor<T, Nets> runs a Program<T> with the plain layer math of runtime/src/layers: the
// logit input layer, squeezes, actnorms, invertible 1x1 convolutions, permutations, coupling
// arithmetic (channel halves and checkerboards), splits and priors of every image, step by step.
// A flatten has no step: the step after it reads the same memory as a (C*H*W, 1, 1) tensor. How
// the coupling nets and split priors run is the policy `Nets`, the one thing that differs between
// the executors built on it:
// - RefNets (RefExecutor<T>, the reference executor): layers::run_net, a direct convolution per
//   image. Images of a batch are walked in parallel (OpenMP), each alone; a single image spreads
//   its convolutions' output channels instead. This is the oracle every other backend is tested
//   against, and the tests instantiate it in double precision for brute-force Jacobians.
// - a batched policy (Nets::kBatched; the portable backend's GEMMs): the images of a group walk
//   together, step by step, so that each net runs once on the whole group. Groups are formed per
//   level (a segment of steps ends after each split) from the net activation a group may occupy
//   (Nets::group_size): the small late levels take the whole batch, large early ones a few images.
//   The per-image steps of a group run in parallel over its images.
// The policy's interface: kBatched, kScaledViews (it can run a NetWeights::ViewScaled program,
// i.e. it applies PConv::weight_scale itself), a constructor (program, max_batch, threads),
// run(net, h, w, first slot, images, inputs, outputs, threads) -> the outputs' channel stride,
// and, when batched, group_size(net floats per image) and reserve(net, h, w, images). A net's
// inputs are CHW images, one pointer each: a channel coupling's x_a inside the walk's tensor, a
// checkerboard coupling's masked copy of it (x * m, plus m with mask_channel) in the walk's
// scratch.
//
// build_program checks every program (check_program): what the walk cannot run exactly as the
// format defines it is refused there, with an Error naming the step.
//
// Memory: the Program, one set of activation buffers per image of the maximum batch, and the
// policy's. With NetWeights::View (what the reference backend uses) the Program reads the nets'
// conv weights from the graph's tensors, so a reference session adds no copy of them.
#pragma once

#include <algorithm>
#include <cstring>
#include <string>
#include <vector>

#include "core/error.hpp"
#include "core/threads.hpp"
#include "layers/channel_affine.hpp"
#include "layers/coupling.hpp"
#include "layers/gaussian.hpp"
#include "layers/linear1x1.hpp"
#include "layers/logit.hpp"
#include "layers/net.hpp"
#include "layers/permute.hpp"
#include "layers/squeeze.hpp"
#include "model/program.hpp"

#ifdef _OPENMP
#include <omp.h>
#endif

namespace flowrt {

// The reference executor's nets: layers::run_net on each image, with two activation buffers per
// image slot of the maximum batch.
template <typename T>
class RefNets {
 public:
  static constexpr bool kBatched = false;
  static constexpr bool kScaledViews = false;  // layers::conv2d runs the weights as they are

  RefNets(const Program<T> &prog, size_t max_batch, int) : slots_(max_batch) {
    bool residual = false;
    for (const PStep<T> &st : prog.steps) {
      if (auto *c = std::get_if<PCoupling<T>>(&st.op)) residual |= c->net.has_residual();
      if (auto *p = std::get_if<PSplit<T>>(&st.op)) residual |= p->prior.has_residual();
    }
    for (Slot &s : slots_) {
      s.a.resize(std::max<int64_t>(prog.max_net_elems, 1));
      s.b.resize(std::max<int64_t>(prog.max_net_elems, 1));
      if (residual) s.skip.resize(std::max<int64_t>(prog.max_net_elems, 1));
    }
  }
  // Runs `net` on images in[0..m) (CHW, h x w) in slots slot..slot+m-1; out[j] is image j's
  // output (CHW). Returns the outputs' channel stride.
  int64_t run(const PNet<T> &net, int64_t h, int64_t w, size_t slot, size_t m, const T *const *in,
              const T **out, int threads) {
    for (size_t j = 0; j < m; ++j) {
      Slot &s = slots_[slot + j];
      out[j] = layers::run_net(net, in[j], h, w, s.a.data(), s.b.data(), s.skip.data(), threads);
    }
    return h * w;
  }

 private:
  struct Slot {
    std::vector<T> a, b, skip;  // skip: a residual source (nets with residual adds only)
  };
  std::vector<Slot> slots_;
};

template <typename T, typename Nets>
class FlowExecutor {
  // Every kind of step is handled below; a new kind must be added there (and to check_program).
  static_assert(std::variant_size_v<PStepOp<T>> == 8, "FlowExecutor: a step kind is not handled");

 public:
  FlowExecutor(const Graph &graph, size_t max_batch, int threads, const ProgramOptions &options)
      : prog_(build_program<T>(graph, checked(options))),
        threads_(resolve_threads(threads)),
        max_batch_(std::max<size_t>(max_batch, 1)),
        places_(places_of(prog_)),
        nets_(prog_, max_batch_, threads_) {
    int64_t masked = 0;  // the largest checkerboard net input
    for (const PStep<T> &step : prog_.steps)
      if (auto *cp = std::get_if<PCoupling<T>>(&step.op); cp && is_checkerboard(cp->conditioning))
        masked = std::max(masked, cp->net.in_ch * step.in.plane());
    scratch_.resize(max_batch_);
    for (Scratch &s : scratch_) {
      s.a.resize(prog_.dims);
      s.b.resize(prog_.dims);
      s.z.resize(prog_.dims);
      s.pos.resize(prog_.dims);
      s.grid.resize(prog_.image.height * prog_.image.width);
      s.masked.resize(masked);
    }
    in_ptrs_.resize(max_batch_);
    out_ptrs_.resize(max_batch_);
    for (const PStep<T> &step : prog_.steps)
      if (std::holds_alternative<PSplit<T>>(step.op)) ++levels_;
    plan_segments();
  }
  FlowExecutor(const FlowExecutor &) = delete;
  FlowExecutor &operator=(const FlowExecutor &) = delete;

  const Program<T> &program() const { return prog_; }
  int64_t dims() const { return prog_.dims; }
  Nets &nets() { return nets_; }
  const Nets &nets() const { return nets_; }

  void encode(size_t n, const T *x, const int32_t *labels, T *z, double *log_p, double *log_det) {
    walk_encode(n, x, labels, z, nullptr);
    for (size_t i = 0; i < n; ++i) {
      const Scratch &s = scratch_[i];
      if (log_p) log_p[i] = s.lp + s.ld;
      if (log_det) log_det[i] = s.ld;
    }
  }

  // What a detailed encode reports, image-major; every pointer may be null: eps (D floats per
  // image, the standardised latents), the per-level log-prior and log-det (levels() doubles
  // per image) and the per-pixel negative log-likelihood (H*W doubles per image, nats).
  struct Detail {
    T *eps = nullptr;
    double *level_log_prior = nullptr, *level_log_det = nullptr, *nll_map = nullptr;
  };
  int levels() const { return levels_; }

  // encode's walk reporting its terms one by one (see flowrt.h: flowrt_encode_noise,
  // flowrt_level_terms, flowrt_nll_map).
  void encode_detail(size_t n, const T *x, const int32_t *labels, const Detail &out) {
    walk_encode(n, x, labels, nullptr, &out);
  }

  // noise = false: `src` holds latents z; noise = true: standard normals eps.
  void decode(size_t n, const T *src, bool noise, T temperature, const int32_t *labels, T *x) {
    const int64_t d = prog_.dims;
    const size_t last = prog_.steps.size();
    if constexpr (!Nets::kBatched) {
      const int inner = n > 1 ? 1 : threads_;
#pragma omp parallel for schedule(dynamic, 1) num_threads(threads_) if (n > 1 && threads_ > 1)
      for (int64_t i = 0; i < static_cast<int64_t>(n); ++i) {
        decode_steps(0, last, static_cast<size_t>(i), 1, src, noise, temperature, labels, inner);
        std::memcpy(x + i * d, scratch_[i].cur(), sizeof(T) * d);
      }
    } else {
      for (size_t k = segments_.size(); k-- > 0;) {
        const Segment &seg = segments_[k];
        for (size_t i0 = 0; i0 < n; i0 += seg.chunk)
          decode_steps(seg.first, seg.last, i0, std::min(seg.chunk, n - i0), src, noise,
                       temperature, labels, threads_);
      }
      for_images(0, n, threads_,
                 [&](Scratch &s, size_t i) { std::memcpy(x + i * d, s.cur(), sizeof(T) * d); });
    }
  }

 private:
  struct Scratch {
    std::vector<T> a, b;       // the image's tensor (cur) and the next one (tmp); they swap
    std::vector<T> z;          // z of a detailed encode that does not ask for eps
    std::vector<T> masked;     // a checkerboard coupling's net input
    std::vector<double> pos;   // per grid position (or per element) terms of a detailed encode
    std::vector<double> grid;  // per-element terms gathered onto their grid positions
    bool flip = false;         // b holds the current tensor
    double ld = 0, lp = 0;     // encode: log|det| and log-prior so far
    double level_ld = 0;       // log|det| since the last split
    int level = 0;
    T *cur() { return flip ? b.data() : a.data(); }
    T *tmp() { return flip ? a.data() : b.data(); }
    void swap() { flip = !flip; }
  };
  // Steps [first, last) walked by groups of at most `chunk` images.
  struct Segment {
    size_t first = 0, last = 0, chunk = 1;
  };
  // Where a step's terms land on the likelihood map. On a spatial tensor, element (c, p) belongs
  // to position p of the step's own H x W grid (each grid position then covers a block of
  // pixels). After a flatten the tensor is one vector: element e belongs to position origin[e]
  // of `grid`, the grid of the shape that was flattened, carried through the permutes and splits
  // that move elements; after a step that mixes the vector's elements (a 1x1 conv) no element
  // has a place of its own any more, and the step's own 1x1 grid takes every term (an even
  // share of every pixel).
  struct Place {
    std::vector<int32_t> origin;  // empty: the step's own grid
    Shape3 grid;
    bool per_element() const { return !origin.empty(); }
  };

  static const ProgramOptions &checked(const ProgramOptions &o) {
    if (o.net_weights == NetWeights::ViewScaled && !Nets::kScaledViews)
      fail(FLOWRT_INTERNAL_ERROR, "the reference executor cannot run deferred net foldings");
    return o;
  }

  // Each step's Place (see above). build_program has checked the program (check_program), so
  // the shape changes only by a flatten and every permutation and split fits its tensor.
  static std::vector<Place> places_of(const Program<T> &prog) {
    std::vector<Place> places(prog.steps.size());
    Shape3 prev = prog.image.shape();
    std::vector<int32_t> origin;  // the current vector's element places, after a flatten
    Shape3 grid;
    for (size_t k = 0; k < prog.steps.size(); ++k) {
      const PStep<T> &step = prog.steps[k];
      const Shape3 &in = step.in;
      if (in != prev) {  // a flatten
        grid = Shape3{1, prev.h, prev.w};
        origin.assign(static_cast<size_t>(in.c), 0);
        for (int64_t e = 0; e < in.c; ++e) origin[e] = static_cast<int32_t>(e % prev.plane());
      }
      places[k].origin = origin;
      places[k].grid = grid;
      if (std::holds_alternative<PLinear<T>>(step.op)) {
        origin.clear();  // it mixes the vector's elements
      } else if (auto *pm = std::get_if<PPermute>(&step.op); pm && !origin.empty()) {
        std::vector<int32_t> moved(origin.size());
        for (size_t e = 0; e < moved.size(); ++e) moved[e] = origin[pm->source[e]];
        origin = std::move(moved);
      } else if (auto *sp = std::get_if<PSplit<T>>(&step.op); sp && !origin.empty()) {
        const size_t half = origin.size() / 2, keep = sp->leaving == Half::First ? half : 0;
        origin = std::vector<int32_t>(origin.begin() + keep, origin.begin() + keep + half);
      }
      prev = step.out;
    }
    return places;
  }

  // One segment for the whole flow when images are walked alone; otherwise one per level, with
  // the policy's group size for the largest net activation of the level.
  void plan_segments() {
    if constexpr (!Nets::kBatched) {
      segments_.push_back(Segment{0, prog_.steps.size(), 1});
    } else {
      Segment seg;
      int64_t floats = 1;
      for (size_t k = 0; k < prog_.steps.size(); ++k) {
        const PStep<T> &step = prog_.steps[k];
        if (const PNet<T> *net = net_of(step))
          floats = std::max(floats, net->max_ch * step.in.plane());
        if (std::holds_alternative<PSplit<T>>(step.op) || k + 1 == prog_.steps.size()) {
          seg.last = k + 1;
          seg.chunk = std::clamp<size_t>(nets_.group_size(floats), 1, max_batch_);
          segments_.push_back(seg);
          seg.first = k + 1;
          floats = 1;
        }
      }
      for (const Segment &s : segments_)
        for (size_t k = s.first; k < s.last; ++k)
          if (const PNet<T> *net = net_of(prog_.steps[k]))
            nets_.reserve(*net, prog_.steps[k].in.h, prog_.steps[k].in.w, s.chunk);
    }
  }
  static const PNet<T> *net_of(const PStep<T> &step) {
    if (auto *cp = std::get_if<PCoupling<T>>(&step.op)) return &cp->net;
    if (auto *sp = std::get_if<PSplit<T>>(&step.op); sp && !sp->prior.empty()) return &sp->prior;
    return nullptr;
  }

  // f(scratch, image index) for images i0..i0+m-1: in parallel over the images of a batched
  // group, in order otherwise (a reference group is one image).
  template <typename F>
  void for_images(size_t i0, size_t m, int threads, F &&f) {
    if constexpr (Nets::kBatched) {
#pragma omp parallel for schedule(static) num_threads(threads) if (threads > 1 && m > 1)
      for (int64_t j = 0; j < static_cast<int64_t>(m); ++j) f(scratch_[i0 + j], i0 + j);
    } else {
      (void)threads;
      for (size_t j = 0; j < m; ++j) f(scratch_[i0 + j], i0 + j);
    }
  }

  // Runs `net` on the images i0..i0+m-1, reading each at cur() + offset; out_ptrs_[i] is image
  // i's output. Returns its channel stride.
  int64_t run_net(const PNet<T> &net, const Shape3 &in, int64_t offset, size_t i0, size_t m,
                  int threads) {
    for (size_t j = 0; j < m; ++j) in_ptrs_[i0 + j] = scratch_[i0 + j].cur() + offset;
    return nets_.run(net, in.h, in.w, i0, m, in_ptrs_.data() + i0, out_ptrs_.data() + i0, threads);
  }

  // A coupling's net on images i0..i0+m-1: on x_a of a channel coupling (inside the tensor), or
  // on the masked copy of a checkerboard's. Returns the output's channel stride.
  int64_t run_coupling_net(const PCoupling<T> &cp, const Shape3 &in, size_t i0, size_t m,
                           int threads) {
    if (!is_checkerboard(cp.conditioning))
      return run_net(cp.net, in, cp.conditioning == Half::First ? 0 : in.c / 2 * in.plane(), i0, m,
                     threads);
    for_images(i0, m, threads, [&](Scratch &s, size_t) {
      layers::checkerboard_net_input(cp.conditioning, cp.mask_channel, in, s.cur(),
                                     s.masked.data());
    });
    for (size_t j = 0; j < m; ++j) in_ptrs_[i0 + j] = scratch_[i0 + j].masked.data();
    return nets_.run(cp.net, in.h, in.w, i0, m, in_ptrs_.data() + i0, out_ptrs_.data() + i0,
                     threads);
  }
  // The element-wise half of a coupling on image s's tensor; pos and pos_stride as
  // layers::coupling_transform takes them (per element: indexed by the tensor's element).
  static double coupling_elementwise(const PCoupling<T> &cp, const T *h, int64_t hs,
                                     const Shape3 &in, Scratch &s, bool inverse, double *pos,
                                     bool per_element) {
    const int64_t plane = in.plane();
    if (is_checkerboard(cp.conditioning))
      return layers::coupling_transform(
          cp, h, in.c, layers::Positions{in.h, in.w, layers::transformed_parity(cp.conditioning)},
          s.cur(), inverse, pos, hs, per_element ? plane : 0);
    const int64_t cb = in.c / 2, xb = cp.conditioning == Half::First ? cb * plane : 0;
    return layers::coupling_transform(cp, h, cb, layers::Positions{1, plane, -1}, s.cur() + xb,
                                      inverse, pos && per_element ? pos + xb : pos, hs,
                                      per_element ? plane : 0);
  }

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
  // Image s's term buffer for step k, zeroed: one double per grid position, or per element when
  // the step's elements have places of their own. Null without a map.
  double *terms_of(size_t k, Scratch &s, const double *map) const {
    if (!map) return nullptr;
    const PStep<T> &step = prog_.steps[k];
    const int64_t n = places_[k].per_element() ? step.in.numel() : step.in.plane();
    std::fill(s.pos.begin(), s.pos.begin() + n, 0.0);
    return s.pos.data();
  }
  // Adds sign * the terms of step k (from terms_of) to the map.
  void spread_terms(size_t k, Scratch &s, double sign, double *map) const {
    const Place &place = places_[k];
    if (!place.per_element()) {
      spread(s.pos.data(), prog_.steps[k].in, sign, map);
      return;
    }
    std::fill(s.grid.begin(), s.grid.begin() + place.grid.plane(), 0.0);
    for (size_t e = 0; e < place.origin.size(); ++e) s.grid[place.origin[e]] += s.pos[e];
    spread(s.grid.data(), place.grid, sign, map);
  }
  // Turns latent z (n elements, in place) into eps = (z - mean) / std, adding each element's
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

  // The encode of n images: z (n*D) or, with `detail`, the standardised latents in eps (or the
  // images' own z scratch when eps is not asked for). Leaves log|det| and the log-prior of image
  // i in scratch_[i].
  void walk_encode(size_t n, const T *x, const int32_t *labels, T *z, const Detail *detail) {
    const int64_t d = prog_.dims;
    auto begin = [&](Scratch &s, size_t i) {
      std::memcpy(s.a.data(), x + i * d, sizeof(T) * d);
      s.flip = false;
      s.ld = s.lp = s.level_ld = 0;
      s.level = 0;
      if (double *map = nll_map_of(detail, i))
        std::fill(map, map + prog_.image.height * prog_.image.width, 0.0);
    };
    if constexpr (!Nets::kBatched) {
      const int inner = n > 1 ? 1 : threads_;
#pragma omp parallel for schedule(dynamic, 1) num_threads(threads_) if (n > 1 && threads_ > 1)
      for (int64_t i = 0; i < static_cast<int64_t>(n); ++i) {
        begin(scratch_[i], static_cast<size_t>(i));
        encode_steps(0, prog_.steps.size(), static_cast<size_t>(i), 1, labels, z, detail, inner);
      }
    } else {
      for_images(0, n, threads_, begin);
      for (const Segment &seg : segments_)
        for (size_t i0 = 0; i0 < n; i0 += seg.chunk)
          encode_steps(seg.first, seg.last, i0, std::min(seg.chunk, n - i0), labels, z, detail,
                       threads_);
    }
  }

  double *nll_map_of(const Detail *detail, size_t i) const {
    if (!detail || !detail->nll_map) return nullptr;
    return detail->nll_map + i * prog_.image.height * prog_.image.width;
  }
  // Where image i's latents go: z, or with `detail` its eps (standardised in place) or scratch.
  T *latents_of(T *z, const Detail *detail, Scratch &s, size_t i) const {
    if (!detail) return z + i * prog_.dims;
    return detail->eps ? detail->eps + i * prog_.dims : s.z.data();
  }
  // The end of image i's level: its log-prior `level_lp` and the log-det gathered since the last.
  void end_level(Scratch &s, size_t i, double level_lp, const Detail *detail) const {
    if (detail && detail->level_log_prior)
      detail->level_log_prior[i * levels_ + s.level] = level_lp;
    if (detail && detail->level_log_det) detail->level_log_det[i * levels_ + s.level] = s.level_ld;
    s.level_ld = 0;
    ++s.level;
  }

  // Steps [first, last) of encode for images i0..i0+m-1.
  void encode_steps(size_t first, size_t last, size_t i0, size_t m, const int32_t *labels, T *z,
                    const Detail *detail, int threads) {
    for (size_t k = first; k < last; ++k) {
      const PStep<T> &step = prog_.steps[k];
      const Shape3 &in = step.in;
      const int64_t plane = in.plane();
      // Terms per element (the stride between channels in the term buffer) or per position (0).
      const bool per_element = places_[k].per_element();
      const int64_t pos_stride = per_element ? plane : 0;
      if (auto *lg = std::get_if<PLogit<T>>(&step.op)) {
        for_images(i0, m, threads, [&](Scratch &s, size_t i) {
          double *map = nll_map_of(detail, i);
          double *pos = terms_of(k, s, map);
          const double l_ld =
              layers::logit_encode(lg->alpha, in.c, plane, s.cur(), pos, pos_stride);
          s.ld += l_ld;
          s.level_ld += l_ld;
          if (map) spread_terms(k, s, -1.0, map);
        });
      } else if (auto *sq = std::get_if<PSqueeze>(&step.op)) {
        for_images(i0, m, threads, [&](Scratch &s, size_t) {
          layers::squeeze(sq->order, in, s.cur(), s.tmp(), false);
          s.swap();
        });
      } else if (auto *af = std::get_if<PAffine<T>>(&step.op)) {
        for_images(i0, m, threads, [&](Scratch &s, size_t i) {
          layers::channel_affine(af->scale.data(), af->shift.data(), in.c, plane, s.cur(), false);
          s.ld += step.logdet;
          s.level_ld += step.logdet;
          double *map = nll_map_of(detail, i);
          if (map && per_element) {  // each channel's log|scale| on its own element
            double *pos = terms_of(k, s, map);
            for (int64_t c = 0; c < in.c; ++c)
              pos[c] = static_cast<double>(plane) * std::log(std::fabs(double(af->scale[c])));
            spread_terms(k, s, -1.0, map);
          } else if (map) {
            spread_constant(step.logdet, map);
          }
        });
      } else if (auto *li = std::get_if<PLinear<T>>(&step.op)) {
        for_images(i0, m, threads, [&](Scratch &s, size_t i) {
          layers::linear1x1(li->a.data(), li->c.data(), in.c, plane, s.cur(), s.tmp());
          s.swap();
          s.ld += step.logdet;
          s.level_ld += step.logdet;
          if (double *map = nll_map_of(detail, i)) spread_constant(step.logdet, map);
        });
      } else if (auto *pm = std::get_if<PPermute>(&step.op)) {
        for_images(i0, m, threads, [&](Scratch &s, size_t) {
          layers::permute_channels(pm->source.data(), in.c, plane, s.cur(), s.tmp(), false);
          s.swap();
        });
      } else if (auto *cp = std::get_if<PCoupling<T>>(&step.op)) {
        const int64_t hs = run_coupling_net(*cp, in, i0, m, threads);
        for_images(i0, m, threads, [&](Scratch &s, size_t i) {
          double *map = nll_map_of(detail, i);
          double *pos = terms_of(k, s, map);
          const double c_ld =
              coupling_elementwise(*cp, out_ptrs_[i], hs, in, s, false, pos, per_element);
          s.ld += c_ld;
          s.level_ld += c_ld;
          if (map) spread_terms(k, s, -1.0, map);
        });
      } else if (auto *sp = std::get_if<PSplit<T>>(&step.op)) {
        const int64_t cz = in.c / 2, n = cz * plane;
        const int64_t leave = sp->leaving == Half::First ? 0 : n;
        const int64_t keep = sp->leaving == Half::First ? n : 0;
        const bool prior = !sp->prior.empty();
        const int64_t os = prior ? run_net(sp->prior, in, keep, i0, m, threads) : 0;
        for_images(i0, m, threads, [&](Scratch &s, size_t i) {
          T *cur = s.cur();
          T *zi = latents_of(z, detail, s, i) + step.latent_offset;
          std::memcpy(zi, cur + leave, sizeof(T) * n);
          const T *o = prior ? out_ptrs_[i] : nullptr;
          double *map = nll_map_of(detail, i);
          double *pos = terms_of(k, s, map);
          if (pos && per_element) pos += leave;  // the leaving elements' own places
          const double s_lp = detail ? split_standardise(*sp, o, os, zi, cz, plane, pos, pos_stride)
                                     : split_log_prob(*sp, o, os, cur + leave, cz, plane);
          s.lp += s_lp;
          if (map) spread_terms(k, s, -1.0, map);
          end_level(s, i, s_lp, detail);
          if (sp->leaving == Half::First) std::memmove(cur, cur + keep, sizeof(T) * n);
        });
      } else if (auto *tp = std::get_if<PTop<T>>(&step.op)) {
        for_images(i0, m, threads, [&](Scratch &s, size_t i) {
          const int64_t n = in.numel();
          const int32_t label = labels ? labels[i] : -1;
          T *cur = s.cur();
          T *zi = latents_of(z, detail, s, i) + step.latent_offset;
          double *map = nll_map_of(detail, i);
          double *pos = terms_of(k, s, map);
          double t_lp = 0;
          std::memcpy(zi, cur, sizeof(T) * n);
          for (int64_t c = 0; c < in.c; ++c) {
            T mo, lo;
            top_offsets(*tp, c, label, in.c, &mo, &lo);
            if (detail) {
              t_lp += standardise(zi + c * plane, tp->mean.data() + c * plane,
                                  tp->log_std.data() + c * plane, plane, mo, lo,
                                  pos ? pos + c * pos_stride : nullptr);
              continue;
            }
            t_lp += layers::gaussian_log_prob(cur + c * plane, tp->mean.data() + c * plane,
                                              tp->log_std.data() + c * plane, plane, mo, lo);
          }
          s.lp += t_lp;
          if (map) spread_terms(k, s, -1.0, map);
          end_level(s, i, t_lp, detail);
        });
      }
    }
  }

  // The log-density of a split's leaving latents (cz planes) under its prior: the prior net's
  // output `o` (channel stride os) or, without a prior net, a standard normal.
  static double split_log_prob(const PSplit<T> &sp, const T *o, int64_t os, const T *leave,
                               int64_t cz, int64_t plane) {
    if (sp.prior.empty()) {
      double acc = 0;
      for (int64_t k = 0; k < cz * plane; ++k)
        acc += -layers::kHalfLog2Pi - 0.5 * static_cast<double>(leave[k]) * leave[k];
      return acc;
    }
    double acc = 0;
    for (int64_t j = 0; j < cz; ++j) {
      int64_t mc = 0, lc = 0;
      layers::prior_channels(sp.layout, j, cz, &mc, &lc);
      acc += layers::gaussian_log_prob(leave + j * plane, o + mc * os, o + lc * os, plane);
    }
    return acc;
  }

  // split_log_prob for a detailed encode: turns the leaving latent z (cz planes) into eps in
  // place, adds each element's log-density to pos[j * pos_stride + p] (if given; pos_stride 0
  // sums the channels per position) and returns their sum.
  static double split_standardise(const PSplit<T> &sp, const T *o, int64_t os, T *z, int64_t cz,
                                  int64_t plane, double *pos, int64_t pos_stride) {
    double acc = 0;
    if (sp.prior.empty()) {
      for (int64_t j = 0; j < cz; ++j) {
        double *pj = pos ? pos + j * pos_stride : nullptr;
        for (int64_t p = 0; p < plane; ++p) {
          const double v = static_cast<double>(z[j * plane + p]);
          const double t = -layers::kHalfLog2Pi - 0.5 * v * v;
          acc += t;
          if (pj) pj[p] += t;
        }
      }
      return acc;
    }
    for (int64_t j = 0; j < cz; ++j) {
      int64_t mc = 0, lc = 0;
      layers::prior_channels(sp.layout, j, cz, &mc, &lc);
      const T *mean = o + mc * os, *log_std = o + lc * os;
      T *zj = z + j * plane;
      double *pj = pos ? pos + j * pos_stride : nullptr;
      for (int64_t p = 0; p < plane; ++p) {
        const double ls = static_cast<double>(log_std[p]);
        const double e = (static_cast<double>(zj[p]) - mean[p]) * std::exp(-ls);
        const double t = -layers::kHalfLog2Pi - ls - 0.5 * e * e;
        acc += t;
        if (pj) pj[p] += t;
        zj[p] = static_cast<T>(e);
      }
    }
    return acc;
  }

  // Steps [first, last) of decode, last first, for images i0..i0+m-1; the top step (always the
  // program's last) starts each image from its latents.
  void decode_steps(size_t first, size_t last, size_t i0, size_t m, const T *src, bool noise,
                    T temperature, const int32_t *labels, int threads) {
    const int64_t d = prog_.dims;
    for (size_t k = last; k-- > first;) {
      const PStep<T> &step = prog_.steps[k];
      const Shape3 &in = step.in;
      const int64_t plane = in.plane();
      if (auto *top = std::get_if<PTop<T>>(&step.op)) {
        for_images(i0, m, threads, [&](Scratch &s, size_t i) {
          s.flip = false;
          T *cur = s.cur();
          const T *from = src + i * d + step.latent_offset;
          if (!noise) {
            std::memcpy(cur, from, sizeof(T) * in.numel());
            return;
          }
          const int32_t label = labels ? labels[i] : -1;
          for (int64_t c = 0; c < in.c; ++c) {
            T mo, lo;
            top_offsets(*top, c, label, in.c, &mo, &lo);
            layers::gaussian_sample(from + c * plane, top->mean.data() + c * plane,
                                    top->log_std.data() + c * plane, plane, temperature,
                                    cur + c * plane, mo, lo);
          }
        });
      } else if (auto *lg = std::get_if<PLogit<T>>(&step.op)) {
        for_images(i0, m, threads, [&](Scratch &s, size_t) {
          layers::logit_decode(lg->alpha, in.numel(), s.cur());
        });
      } else if (auto *sq = std::get_if<PSqueeze>(&step.op)) {
        for_images(i0, m, threads, [&](Scratch &s, size_t) {
          layers::squeeze(sq->order, in, s.cur(), s.tmp(), true);
          s.swap();
        });
      } else if (auto *af = std::get_if<PAffine<T>>(&step.op)) {
        for_images(i0, m, threads, [&](Scratch &s, size_t) {
          layers::channel_affine(af->scale.data(), af->shift.data(), in.c, plane, s.cur(), true);
        });
      } else if (auto *li = std::get_if<PLinear<T>>(&step.op)) {
        for_images(i0, m, threads, [&](Scratch &s, size_t) {
          layers::linear1x1_inverse(li->a_inv.data(), li->c.data(), in.c, plane, s.cur(), s.tmp());
          s.swap();
        });
      } else if (auto *pm = std::get_if<PPermute>(&step.op)) {
        for_images(i0, m, threads, [&](Scratch &s, size_t) {
          layers::permute_channels(pm->source.data(), in.c, plane, s.cur(), s.tmp(), true);
          s.swap();
        });
      } else if (auto *cp = std::get_if<PCoupling<T>>(&step.op)) {
        // x_a passes through unchanged, so the net sees what it saw in encode.
        const int64_t hs = run_coupling_net(*cp, in, i0, m, threads);
        for_images(i0, m, threads, [&](Scratch &s, size_t i) {
          coupling_elementwise(*cp, out_ptrs_[i], hs, in, s, true, nullptr, false);
        });
      } else if (auto *sp = std::get_if<PSplit<T>>(&step.op)) {
        const int64_t cz = in.c / 2, n = cz * plane;
        const int64_t leave = sp->leaving == Half::First ? 0 : n;
        const int64_t keep = sp->leaving == Half::First ? n : 0;
        if (sp->leaving == Half::First)
          for_images(i0, m, threads, [&](Scratch &s, size_t) {
            std::memmove(s.cur() + n, s.cur(), sizeof(T) * n);
          });
        const bool prior = noise && !sp->prior.empty();
        const int64_t os = prior ? run_net(sp->prior, in, keep, i0, m, threads) : 0;
        for_images(i0, m, threads, [&](Scratch &s, size_t i) {
          T *to = s.cur() + leave;
          const T *from = src + i * d + step.latent_offset;
          if (!noise) {
            std::memcpy(to, from, sizeof(T) * n);
          } else if (!prior) {
            for (int64_t e = 0; e < n; ++e) to[e] = temperature * from[e];
          } else {
            const T *o = out_ptrs_[i];
            for (int64_t j = 0; j < cz; ++j) {
              int64_t mc = 0, lc = 0;
              layers::prior_channels(sp->layout, j, cz, &mc, &lc);
              layers::gaussian_sample(from + j * plane, o + mc * os, o + lc * os, plane,
                                      temperature, to + j * plane);
            }
          }
        });
      }
    }
  }

  Program<T> prog_;
  int threads_;
  size_t max_batch_;
  std::vector<Place> places_;  // per step
  Nets nets_;
  int levels_ = 1;  // splits + the top
  std::vector<Scratch> scratch_;
  std::vector<Segment> segments_;
  std::vector<const T *> in_ptrs_, out_ptrs_;  // per image slot: a net's input and output
};

// The reference executor: the flow walk with layers::run_net (see above).
template <typename T>
class RefExecutor : public FlowExecutor<T, RefNets<T>> {
  using Base = FlowExecutor<T, RefNets<T>>;

 public:
  // fold: the load-time foldings, with owned (copied) net weights.
  RefExecutor(const Graph &graph, size_t max_batch, int threads, bool fold)
      : Base(graph, max_batch, threads, ProgramOptions{fold, NetWeights::Copy}) {}
  // NetWeights::ViewScaled is not allowed: layers::conv2d runs the weights as they are.
  RefExecutor(const Graph &graph, size_t max_batch, int threads, const ProgramOptions &options)
      : Base(graph, max_batch, threads, options) {}
};

}  // namespace flowrt
