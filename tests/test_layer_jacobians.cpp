// Per-layer exactness of the reference executor on tiny shapes, for every layer kind and every
// option of the format: the inverse undoes the forward map to ~1e-12 in double; the executor's
// log|det| equals log|det J| of a brute-force Jacobian (central differences in double, LU
// determinant); the latents and the prior term of log p equal an independent naive encoder that
// follows schema/flow.fbs; and the float executor agrees with the double brute force to 1e-4.
#include <doctest/doctest.h>

#include <algorithm>
#include <cmath>
#include <string>
#include <vector>

#include "backends/ref/ref_executor.hpp"
#include "core/linalg.hpp"
#include "model/nice_builder.hpp"
#include "model/realnvp_builder.hpp"
#include "test_support.hpp"

namespace flowrt {
namespace {

using test::Rng;

// Worst errors seen for one graph (or accumulated over many).
struct Errors {
  double inverse_d = 0;  // max|decode(encode(x)) - x| / max|x|, double
  double logdet_d = 0;   // |log_det - log|det J_fd|| / max(1, |log|det J_fd||), double
  double latent_d = 0;   // max|z - z_naive| / max(1, max|z_naive|), double
  double prior_d = 0;    // |(log_p - log_det) - log_prior_naive| / max(1, |...|), double
  double inverse_f = 0;  // as above, float executor
  double logdet_f = 0;   // float executor's log_det against the double brute force
  double latent_f = 0;   // float latents against the naive encoder
  double log_p_f = 0;    // float log_p against the double executor's
  void merge(const Errors &o) {
    inverse_d = std::max(inverse_d, o.inverse_d);
    logdet_d = std::max(logdet_d, o.logdet_d);
    latent_d = std::max(latent_d, o.latent_d);
    prior_d = std::max(prior_d, o.prior_d);
    inverse_f = std::max(inverse_f, o.inverse_f);
    logdet_f = std::max(logdet_f, o.logdet_f);
    latent_f = std::max(latent_f, o.latent_f);
    log_p_f = std::max(log_p_f, o.log_p_f);
  }
  std::string report() const {
    return "double: inverse " + test::sci(inverse_d) + ", log-det " + test::sci(logdet_d) +
           ", latents " + test::sci(latent_d) + ", prior " + test::sci(prior_d) +
           "; float: inverse " + test::sci(inverse_f) + ", log-det " + test::sci(logdet_f) +
           ", latents " + test::sci(latent_f) + ", log p " + test::sci(log_p_f);
  }
};

// log|det dz/dx| by central differences of the double executor's encoder, all 2D perturbed
// inputs in one batch.
double brute_force_log_det(RefExecutor<double> &ex, const std::vector<double> &x, int label,
                           double h) {
  const int64_t d = static_cast<int64_t>(x.size());
  std::vector<double> xs(static_cast<size_t>(2 * d * d)), zs(xs.size());
  for (int64_t k = 0; k < d; ++k) {
    std::copy(x.begin(), x.end(), xs.begin() + (2 * k) * d);
    std::copy(x.begin(), x.end(), xs.begin() + (2 * k + 1) * d);
    xs[(2 * k) * d + k] += h;
    xs[(2 * k + 1) * d + k] -= h;
  }
  std::vector<int32_t> labels(static_cast<size_t>(2 * d), label);
  ex.encode(static_cast<size_t>(2 * d), xs.data(), label >= 0 ? labels.data() : nullptr, zs.data(),
            nullptr, nullptr);
  std::vector<double> jac(static_cast<size_t>(d * d));  // J[i][k] = dz_i / dx_k
  for (int64_t k = 0; k < d; ++k)
    for (int64_t i = 0; i < d; ++i)
      jac[i * d + k] = (zs[(2 * k) * d + i] - zs[(2 * k + 1) * d + i]) / (2 * h);
  return log_abs_det(jac, d);
}

// Runs every check on graph `g` with a random input, for both the folded and the unfolded
// program. Fails the current test case on any tolerance it exceeds.
Errors check_graph(const Graph &g, uint64_t seed, int label = -1) {
  Errors worst;
  const int64_t d = g.dims();
  Rng rng(seed);
  const std::vector<double> x = rng.doubles(static_cast<size_t>(d), -0.5, 0.5);
  const test::NaiveResult naive = test::naive_encode(g, x, label);
  const std::vector<int32_t> one_label{label};
  const int32_t *labels = label >= 0 ? one_label.data() : nullptr;
  for (bool fold : {false, true}) {
    INFO("fold " << fold);
    Errors e;
    RefExecutor<double> ex(g, static_cast<size_t>(2 * d), 1, fold);
    std::vector<double> z(static_cast<size_t>(d)), back(z.size());
    double log_p = 0, log_det = 0;
    ex.encode(1, x.data(), labels, z.data(), &log_p, &log_det);
    ex.decode(1, z.data(), false, 0.0, nullptr, back.data());
    e.inverse_d = test::max_abs_diff(back, x) / test::max_abs(x);
    const double fd = brute_force_log_det(ex, x, label, 1e-6);
    e.logdet_d = test::rel_err(log_det, fd);
    e.latent_d = test::max_abs_diff(z, naive.z) / std::max(1.0, test::max_abs(naive.z));
    e.prior_d = test::rel_err(log_p - log_det, naive.log_prior);

    RefExecutor<float> exf(g, 1, 1, fold);
    std::vector<float> xf(x.begin(), x.end()), zf(xf.size()), backf(xf.size());
    double log_p_f = 0, log_det_f = 0;
    exf.encode(1, xf.data(), labels, zf.data(), &log_p_f, &log_det_f);
    exf.decode(1, zf.data(), false, 0.f, nullptr, backf.data());
    e.inverse_f = test::max_abs_diff(backf, xf) / test::max_abs(xf);
    e.logdet_f = test::rel_err(log_det_f, fd);
    e.latent_f = test::max_abs_diff(zf, naive.z) / std::max(1.0, test::max_abs(naive.z));
    e.log_p_f = test::rel_err(log_p_f, log_p);

    CHECK(std::isfinite(log_p));
    CHECK(e.inverse_d <= 1e-12);
    CHECK(e.logdet_d <= 1e-6);
    CHECK(e.latent_d <= 1e-12);
    CHECK(e.prior_d <= 1e-10);
    CHECK(e.inverse_f <= 1e-5);
    CHECK(e.logdet_f <= 1e-4);
    CHECK(e.latent_f <= 1e-5);
    CHECK(e.log_p_f <= 1e-4);
    worst.merge(e);
  }
  return worst;
}

const ImageSpec kImage444{4, 4, 4, 8};

std::string padding_name(PaddingMode p) {
  return p == PaddingMode::Zeros ? "zeros" : p == PaddingMode::Constant ? "constant" : "edge";
}

// 2 channels at 4x5: an odd width, so the rows of a checkerboard start on alternating parities.
const ImageSpec kImage245{2, 4, 5, 8};

// Tanh's per-channel bound on |log s|, one of them negative.
Tensor rand_scale_weight(Rng &rng, int64_t cb) {
  std::vector<float> w = rng.floats(static_cast<size_t>(cb), 0.5, 1.5);
  w[0] = -w[0];
  return Tensor::from_vector({cb}, std::move(w));
}

// A checkerboard coupling on c channels with a random net (c (+1 mask) -> c or 2c channels).
CouplingLayer checkerboard_coupling(Rng &rng, int64_t c, Half phase, bool mask, CouplingType type,
                                    ShiftScaleSplit split = ShiftScaleSplit::ShiftScaleHalves,
                                    ScaleFunction fn = ScaleFunction::Tanh,
                                    AffineForm form = AffineForm::ScaleThenShift) {
  CouplingLayer cp;
  cp.type = type;
  cp.conditioning = phase;
  cp.mask_channel = mask;
  const bool affine = type == CouplingType::Affine;
  cp.net = test::rand_coupling_net(rng, c + (mask ? 1 : 0), 4, affine ? 2 * c : c,
                                   PaddingMode::Zeros, false, 1.0);
  cp.split = split;
  cp.scale_fn = fn;
  cp.scale_bias = fn == ScaleFunction::Sigmoid ? 2.f : 0.1f;
  cp.form = form;
  if (affine && fn == ScaleFunction::Tanh) cp.scale_weight = rand_scale_weight(rng, c);
  return cp;
}

const char *phase_name(Half h) {
  return h == Half::CheckerboardEven ? "even" : "odd";
}

TEST_SUITE("layer_jacobians") {
  TEST_CASE("squeeze in both sub-pixel orders is a volume-preserving map matching the format") {
    Errors all;
    for (SqueezeOrder order : {SqueezeOrder::ChannelMajor, SqueezeOrder::SubpixelMajor}) {
      INFO("order " << static_cast<int>(order));
      const Graph g = test::graph_of({2, 4, 4, 8}, {test::make_layer("sq", SqueezeLayer{order})});
      CHECK(g.layers.back().in == Shape3{8, 2, 2});
      all.merge(check_graph(g, 1));
    }
    MESSAGE("squeeze: " << all.report());
  }

  TEST_CASE("the two squeeze orders differ (the format's order field matters)") {
    const Graph a = test::graph_of(
        {2, 4, 4, 8}, {test::make_layer("sq", SqueezeLayer{SqueezeOrder::ChannelMajor})});
    const Graph b = test::graph_of(
        {2, 4, 4, 8}, {test::make_layer("sq", SqueezeLayer{SqueezeOrder::SubpixelMajor})});
    Rng rng(2);
    std::vector<double> x = rng.doubles(32, -0.5, 0.5), za(32), zb(32);
    RefExecutor<double>(a, 1, 1, true).encode(1, x.data(), nullptr, za.data(), nullptr, nullptr);
    RefExecutor<double>(b, 1, 1, true).encode(1, x.data(), nullptr, zb.data(), nullptr, nullptr);
    CHECK(test::max_abs_diff(za, zb) > 0.01);
  }

  TEST_CASE("actnorm log-det and inverse match the brute force, with negative scales") {
    Rng rng(3);
    ActNormLayer an{test::rand_tensor(rng, {4}, -0.5, 0.5), test::rand_tensor(rng, {4}, 0.5, 2.0)};
    std::vector<float> s = an.scale.to_vector();
    s[1] = -s[1];
    an.scale = Tensor::from_vector({4}, s);
    const Graph g = test::graph_of(kImage444, {test::make_layer("an", an)});
    MESSAGE("actnorm: " << check_graph(g, 4).report());
  }

  TEST_CASE("invconv LU and dense: log-det, inverse and latents match the brute force") {
    Errors all;
    for (int form = 0; form < 2; ++form) {
      INFO("form " << std::string(form ? "dense" : "LU"));
      Rng rng(5 + form);
      InvConvLayer ic = form ? test::rand_dense_invconv(rng, 4) : test::rand_lu_invconv(rng, 4);
      const Graph g = test::graph_of(kImage444, {test::make_layer("ic", ic)});
      all.merge(check_graph(g, 6));
    }
    MESSAGE("invconv: " << all.report());
  }

  TEST_CASE("actnorm folded into the following invconv keeps log-det and inverse exact") {
    Errors all;
    for (int form = 0; form < 2; ++form) {
      Rng rng(7 + form);
      ActNormLayer an{test::rand_tensor(rng, {4}, -0.5, 0.5),
                      test::rand_tensor(rng, {4}, 0.5, 2.0)};
      InvConvLayer ic = form ? test::rand_dense_invconv(rng, 4) : test::rand_lu_invconv(rng, 4);
      const Graph g =
          test::graph_of(kImage444, {test::make_layer("an", an), test::make_layer("ic", ic)});
      CHECK(build_program<double>(g, true).steps.size() == 2);  // actnorm+invconv fused, top
      CHECK(build_program<double>(g, false).steps.size() == 3);
      all.merge(check_graph(g, 8));
    }
    MESSAGE("actnorm+invconv: " << all.report());
  }

  TEST_CASE("invconv inverse matches LU: W = P L (U + diag(sign exp(log_s))) and W W^-1 = I") {
    for (int64_t c : {2, 4, 12, 48}) {
      INFO("channels " << c);
      Rng rng(static_cast<uint64_t>(c));
      for (int form = 0; form < 2; ++form) {
        InvConvLayer ic = form ? test::rand_dense_invconv(rng, c) : test::rand_lu_invconv(rng, c);
        const Graph g = test::graph_of({c, 2, 2, 8}, {test::make_layer("ic", ic)});
        const auto &prepared = std::get<InvConvLayer>(g.layers[0].op);
        const std::vector<double> w = test::naive_invconv_weight(ic, c);
        CHECK(test::max_abs_diff(prepared.w, w) <= 1e-12);
        const std::vector<double> wwi = matmul(prepared.w, prepared.w_inv, c);
        const std::vector<double> wiw = matmul(prepared.w_inv, prepared.w, c);
        double err = 0;
        for (int64_t i = 0; i < c; ++i)
          for (int64_t j = 0; j < c; ++j) {
            const double id = i == j ? 1.0 : 0.0;
            err = std::max({err, std::fabs(wwi[i * c + j] - id), std::fabs(wiw[i * c + j] - id)});
          }
        CHECK(err <= 1e-10);
        // log|det W| = sum(log_s) for LU; an independent determinant for both.
        CHECK(prepared.log_abs_det == doctest::Approx(log_abs_det(w, c)).epsilon(1e-12));
        if (!form) {
          double sum = 0;
          for (int64_t i = 0; i < c; ++i) sum += ic.log_s[i];
          CHECK(prepared.log_abs_det == doctest::Approx(sum).epsilon(1e-10));
        }
        MESSAGE(std::string(form ? "dense" : "LU") << " C=" << c << ": max|W W^-1 - I| = " << err);
      }
    }
  }

  TEST_CASE("permute reverse and indices are volume-preserving and match the format") {
    Errors all;
    const Graph rev = test::graph_of(
        kImage444, {test::make_layer("p", PermuteLayer{PermuteKind::Reverse, {}, {}})});
    all.merge(check_graph(rev, 9));
    const Graph idx = test::graph_of(
        kImage444, {test::make_layer("p", PermuteLayer{PermuteKind::Indices, {2, 0, 3, 1}, {}})});
    all.merge(check_graph(idx, 10));
    MESSAGE("permute: " << all.report());
  }

  TEST_CASE(
      "additive coupling: both conditioning halves, every padding, with and without net actnorm") {
    Errors all;
    int n = 0;
    for (Half cond : {Half::First, Half::Second})
      for (PaddingMode pad : {PaddingMode::Zeros, PaddingMode::Constant, PaddingMode::EdgeChannel})
        for (bool an : {false, true}) {
          INFO("conditioning " << static_cast<int>(cond) << ", padding " << padding_name(pad)
                               << ", net actnorm " << an);
          Rng rng(100 + n);
          CouplingLayer cp;
          cp.type = CouplingType::Additive;
          cp.conditioning = cond;
          cp.net = test::rand_coupling_net(rng, 2, 4, 2, pad, an);
          const Graph g = test::graph_of(kImage444, {test::make_layer("cp", cp)});
          all.merge(check_graph(g, 200 + n++));
        }
    MESSAGE("additive coupling (" << n << " variants): " << all.report());
  }

  TEST_CASE(
      "affine coupling: every split, scale function, form, conditioning, padding and net actnorm") {
    Errors all;
    int n = 0;
    for (ShiftScaleSplit split :
         {ShiftScaleSplit::ShiftScaleHalves, ShiftScaleSplit::ScaleShiftHalves,
          ShiftScaleSplit::ShiftScaleInterleaved, ShiftScaleSplit::ScaleShiftInterleaved})
      for (ScaleFunction fn : {ScaleFunction::Sigmoid, ScaleFunction::Exp})
        for (AffineForm form : {AffineForm::ShiftThenScale, AffineForm::ScaleThenShift})
          for (Half cond : {Half::First, Half::Second})
            for (PaddingMode pad :
                 {PaddingMode::Zeros, PaddingMode::Constant, PaddingMode::EdgeChannel})
              for (bool an : {false, true}) {
                INFO("split " << static_cast<int>(split) << ", scale fn " << static_cast<int>(fn)
                              << ", form " << static_cast<int>(form) << ", conditioning "
                              << static_cast<int>(cond) << ", padding " << padding_name(pad)
                              << ", net actnorm " << an);
                Rng rng(1000 + n);
                CouplingLayer cp;
                cp.type = CouplingType::Affine;
                cp.conditioning = cond;
                cp.net = test::rand_coupling_net(rng, 2, 4, 4, pad, an, 1.0);
                cp.split = split;
                cp.scale_fn = fn;
                cp.scale_bias = fn == ScaleFunction::Sigmoid ? 2.f : 0.1f;
                cp.form = form;
                const Graph g = test::graph_of(kImage444, {test::make_layer("cp", cp)});
                all.merge(check_graph(g, 2000 + n++));
              }
    CHECK(n == 192);
    MESSAGE("affine coupling (" << n << " variants): " << all.report());
  }

  TEST_CASE("affine coupling scale conventions change the result (no option is ignored)") {
    // Same net and input; each convention must give different latents from the base one.
    Rng rng(77);
    CouplingLayer base;
    base.type = CouplingType::Affine;
    base.conditioning = Half::First;
    base.net = test::rand_coupling_net(rng, 2, 4, 4, PaddingMode::Zeros, false, 1.0);
    base.split = ShiftScaleSplit::ShiftScaleHalves;
    base.scale_fn = ScaleFunction::Sigmoid;
    base.form = AffineForm::ShiftThenScale;
    auto encode = [&](const CouplingLayer &cp) {
      const Graph g = test::graph_of(kImage444, {test::make_layer("cp", cp)});
      std::vector<double> x = Rng(5).doubles(64, -0.5, 0.5), z(64);
      RefExecutor<double>(g, 1, 1, true).encode(1, x.data(), nullptr, z.data(), nullptr, nullptr);
      return z;
    };
    const std::vector<double> z0 = encode(base);
    std::vector<CouplingLayer> changed(6, base);
    changed[0].split = ShiftScaleSplit::ScaleShiftHalves;
    changed[1].split = ShiftScaleSplit::ShiftScaleInterleaved;
    changed[2].split = ShiftScaleSplit::ScaleShiftInterleaved;
    changed[3].scale_fn = ScaleFunction::Exp;
    changed[4].form = AffineForm::ScaleThenShift;
    changed[5].conditioning = Half::Second;
    for (size_t i = 0; i < changed.size(); ++i) {
      INFO("change " << i);
      CHECK(test::max_abs_diff(encode(changed[i]), z0) > 1e-3);
    }
  }

  TEST_CASE("split: leaving first or second with a learned prior (halves, interleaved) or none") {
    Errors all;
    int n = 0;
    for (Half leaving : {Half::First, Half::Second})
      for (int prior = 0; prior < 3; ++prior)
        for (PaddingMode pad : {PaddingMode::Zeros, PaddingMode::EdgeChannel}) {
          if (prior == 2 && pad != PaddingMode::Zeros) continue;  // no net, no padding
          INFO("leaving " << static_cast<int>(leaving) << ", prior "
                          << std::string(prior == 0   ? "halves"
                                         : prior == 1 ? "interleaved"
                                                      : "empty")
                          << ", padding " << padding_name(pad));
          Rng rng(300 + n);
          SplitLayer sp;
          sp.leaving = leaving;
          if (prior < 2) sp.prior = test::rand_prior_net(rng, 2, pad);
          sp.layout =
              prior == 1 ? PriorLayout::MeanLogstdInterleaved : PriorLayout::MeanLogstdHalves;
          // An actnorm before the split gives the flow a nonzero log-det.
          ActNormLayer an{test::rand_tensor(rng, {4}, -0.3, 0.3),
                          test::rand_tensor(rng, {4}, 0.6, 1.6)};
          const Graph g = test::graph_of(
              kImage444, {test::make_layer("an", an), test::make_layer("split", sp)});
          CHECK(g.layers[1].latent == Shape3{2, 4, 4});
          CHECK(g.layers[1].latent_offset == 0);
          CHECK(g.layers.back().latent_offset == 32);
          all.merge(check_graph(g, 400 + n++));
        }
    MESSAGE("split (" << n << " variants): " << all.report());
  }

  TEST_CASE("top prior: learned, standard normal, and class offsets for every label") {
    Errors all;
    Rng rng(500);
    ActNormLayer an{test::rand_tensor(rng, {4}, -0.3, 0.3), test::rand_tensor(rng, {4}, 0.6, 1.6)};
    TopPriorLayer learned{TopPriorKind::Learned,
                          test::rand_tensor(rng, {4, 4, 4}, -0.5, 0.5),
                          test::rand_tensor(rng, {4, 4, 4}, -0.5, 0.5),
                          {}};
    all.merge(check_graph(test::graph_of(kImage444, {test::make_layer("an", an)}, learned), 501));
    all.merge(check_graph(test::graph_of(kImage444, {test::make_layer("an", an)}), 502));
    for (TopPriorKind kind : {TopPriorKind::Learned, TopPriorKind::StandardNormal}) {
      TopPriorLayer top = kind == TopPriorKind::Learned ? learned : test::standard_top();
      top.class_offsets = test::rand_tensor(rng, {3, 8}, -0.5, 0.5);
      const Graph g = test::graph_of(kImage444, {test::make_layer("an", an)}, top);
      std::vector<double> log_p(3);
      for (int label = 0; label < 3; ++label) {
        INFO("kind " << static_cast<int>(kind) << ", label " << label);
        all.merge(check_graph(g, 503, label));
        std::vector<double> x = Rng(503).doubles(64, -0.5, 0.5), z(64);
        RefExecutor<double>(g, 1, 1, true)
            .encode(1, x.data(), std::vector<int32_t>{label}.data(), z.data(), &log_p[label],
                    nullptr);
      }
      CHECK(log_p[0] != log_p[1]);
      CHECK(log_p[1] != log_p[2]);
    }
    MESSAGE("top prior: " << all.report());
  }

  TEST_CASE("whole tiny flows: brute-force Jacobian matches log-det for every option family") {
    Errors all;
    std::vector<test::Variant> variants(9);
    variants[1].permutation = Permutation::Dense;
    variants[1].coupling = CouplingType::Additive;
    variants[2].permutation = Permutation::Reverse;
    variants[2].scale_fn = ScaleFunction::Exp;
    variants[2].form = AffineForm::ScaleThenShift;
    variants[2].conditioning = Half::Second;
    variants[3].permutation = Permutation::Shuffle;
    variants[3].split = ShiftScaleSplit::ShiftScaleInterleaved;
    variants[3].padding = PaddingMode::EdgeChannel;
    variants[3].net_actnorm = true;
    variants[4].squeeze = SqueezeOrder::SubpixelMajor;
    variants[4].leaving = Half::First;
    variants[4].layout = PriorLayout::MeanLogstdInterleaved;
    variants[4].padding = PaddingMode::Constant;
    variants[5].empty_split_prior = true;
    variants[5].top = TopPriorKind::StandardNormal;
    variants[6].classes = 3;
    variants[7].depth = 2;
    variants[7].levels = 3;
    variants[8].residual = true;  // residual coupling nets and priors (format 1.2)
    for (size_t i = 0; i < variants.size(); ++i) {
      INFO("variant " << i);
      variants[i].seed = 20 + i;
      const Graph g = test::variant_graph(variants[i]);
      all.merge(check_graph(g, 600 + i, variants[i].classes ? 2 : -1));
    }
    MESSAGE("whole flows: " << all.report());
  }
  TEST_CASE(
      "checkerboard coupling: both phases, mask channel on and off, additive and affine with "
      "every split, scale function and form") {
    Errors all;
    int n = 0;
    for (Half phase : {Half::CheckerboardEven, Half::CheckerboardOdd})
      for (bool mask : {false, true}) {
        {
          INFO("additive, phase " << phase_name(phase) << ", mask channel " << mask);
          Rng rng(3000 + n);
          const CouplingLayer cp =
              checkerboard_coupling(rng, 2, phase, mask, CouplingType::Additive);
          all.merge(
              check_graph(test::graph_of(kImage245, {test::make_layer("cb", cp)}), 4000 + n++));
        }
        for (ShiftScaleSplit split :
             {ShiftScaleSplit::ShiftScaleHalves, ShiftScaleSplit::ScaleShiftHalves,
              ShiftScaleSplit::ShiftScaleInterleaved, ShiftScaleSplit::ScaleShiftInterleaved})
          for (ScaleFunction fn : {ScaleFunction::Sigmoid, ScaleFunction::Exp, ScaleFunction::Tanh})
            for (AffineForm form : {AffineForm::ShiftThenScale, AffineForm::ScaleThenShift}) {
              INFO("affine, phase " << phase_name(phase) << ", mask channel " << mask << ", split "
                                    << static_cast<int>(split) << ", scale fn "
                                    << static_cast<int>(fn) << ", form " << static_cast<int>(form));
              Rng rng(3000 + n);
              const CouplingLayer cp =
                  checkerboard_coupling(rng, 2, phase, mask, CouplingType::Affine, split, fn, form);
              const Graph g = test::graph_of(kImage245, {test::make_layer("cb", cp)});
              all.merge(check_graph(g, 4000 + n++));
            }
      }
    CHECK(n == 100);
    MESSAGE("checkerboard coupling (" << n << " variants): " << all.report());
  }

  TEST_CASE("checkerboard coupling: x_a's positions pass unchanged, every x_b element changes") {
    for (Half phase : {Half::CheckerboardEven, Half::CheckerboardOdd})
      for (bool mask : {false, true})
        for (CouplingType type : {CouplingType::Additive, CouplingType::Affine}) {
          INFO("phase " << phase_name(phase) << ", mask channel " << mask << ", "
                        << (type == CouplingType::Affine ? "affine" : "additive"));
          Rng rng(5000 + 4 * (phase == Half::CheckerboardOdd) + 2 * mask +
                  (type == CouplingType::Affine));
          const CouplingLayer cp = checkerboard_coupling(rng, 2, phase, mask, type);
          const Graph g = test::graph_of(kImage245, {test::make_layer("cb", cp)});
          const std::vector<double> x = rng.doubles(40, -0.5, 0.5);
          std::vector<double> z(40), back(40);
          RefExecutor<double> ex(g, 1, 1, true);
          ex.encode(1, x.data(), nullptr, z.data(), nullptr, nullptr);
          ex.decode(1, z.data(), false, 0.0, nullptr, back.data());
          size_t kept = 0, changed = 0;
          for (int64_t c = 0; c < 2; ++c)
            for (int64_t i = 0; i < 4; ++i)
              for (int64_t j = 0; j < 5; ++j) {
                const size_t k = static_cast<size_t>((c * 4 + i) * 5 + j);
                // m = 1 where (i + j) is even for EVEN, odd for ODD.
                const bool xa = (i + j) % 2 == (phase == Half::CheckerboardEven ? 0 : 1);
                if (xa) {
                  kept += z[k] == x[k] && back[k] == x[k];
                } else {
                  changed += std::fabs(z[k] - x[k]) > 1e-6;
                }
              }
          CHECK(kept == 20);
          CHECK(changed == 20);
        }
  }

  TEST_CASE("the checkerboard phase, the mask channel and the tanh weights change the result") {
    Rng rng(5100);
    const CouplingLayer base =
        checkerboard_coupling(rng, 2, Half::CheckerboardEven, true, CouplingType::Affine);
    auto encode = [&](const CouplingLayer &cp) {
      const Graph g = test::graph_of(kImage245, {test::make_layer("cb", cp)});
      std::vector<double> x = Rng(6).doubles(40, -0.5, 0.5), z(40);
      RefExecutor<double>(g, 1, 1, true).encode(1, x.data(), nullptr, z.data(), nullptr, nullptr);
      return z;
    };
    const std::vector<double> z0 = encode(base);
    std::vector<CouplingLayer> changed(3, base);
    changed[0].conditioning = Half::CheckerboardOdd;
    // Without the mask channel the net's last input channel is gone: drop its weights.
    changed[1].mask_channel = false;
    changed[1].net = test::rand_coupling_net(rng, 2, 4, 4, PaddingMode::Zeros, false, 1.0);
    changed[2].scale_weight = rand_scale_weight(rng, 2);
    for (size_t i = 0; i < changed.size(); ++i) {
      INFO("change " << i);
      CHECK(test::max_abs_diff(encode(changed[i]), z0) > 1e-3);
    }
    // The mask channel itself: same net, its weights on the mask zeroed, gives a different map
    // from the net with them (the mask is a real input).
    CouplingLayer zeroed = base;
    auto &conv = std::get<Conv2dOp>(zeroed.net.ops[0]);
    std::vector<float> w = conv.weight.to_vector();
    for (int64_t o = 0; o < conv.weight.dim(0); ++o)
      for (int64_t t = 0; t < 9; ++t) w[(o * 3 + 2) * 9 + t] = 0.f;
    conv.weight = Tensor::from_vector(conv.weight.shape(), w);
    CHECK(test::max_abs_diff(encode(zeroed), z0) > 1e-3);
  }

  TEST_CASE("tanh scale on channel couplings: every split, form and conditioning half") {
    Errors all;
    int n = 0;
    for (ShiftScaleSplit split :
         {ShiftScaleSplit::ShiftScaleHalves, ShiftScaleSplit::ScaleShiftHalves,
          ShiftScaleSplit::ShiftScaleInterleaved, ShiftScaleSplit::ScaleShiftInterleaved})
      for (AffineForm form : {AffineForm::ShiftThenScale, AffineForm::ScaleThenShift})
        for (Half cond : {Half::First, Half::Second}) {
          INFO("split " << static_cast<int>(split) << ", form " << static_cast<int>(form)
                        << ", conditioning " << static_cast<int>(cond));
          Rng rng(5200 + n);
          CouplingLayer cp;
          cp.type = CouplingType::Affine;
          cp.conditioning = cond;
          cp.net = test::rand_coupling_net(rng, 2, 4, 4, PaddingMode::Zeros, false, 1.0);
          cp.split = split;
          cp.scale_fn = ScaleFunction::Tanh;
          cp.scale_bias = 0.2f;
          cp.form = form;
          cp.scale_weight = rand_scale_weight(rng, 2);
          const Graph g = test::graph_of(kImage444, {test::make_layer("cp", cp)});
          all.merge(check_graph(g, 5300 + n++));
        }
    MESSAGE("tanh channel coupling (" << n << " variants): " << all.report());
  }

  TEST_CASE(
      "logit layer: input-dependent log-det, inverse and latents, alone and before an actnorm") {
    Errors all;
    for (float alpha : {0.05f, 0.25f, 0.45f})
      for (bool actnorm : {false, true}) {
        INFO("alpha " << alpha << ", actnorm " << actnorm);
        Rng rng(5400);
        std::vector<Layer> layers{test::make_layer("logit", LogitLayer{alpha})};
        if (actnorm)
          layers.push_back(
              test::make_layer("an", ActNormLayer{test::rand_tensor(rng, {4}, -0.5, 0.5),
                                                  test::rand_tensor(rng, {4}, 0.5, 2.0)}));
        const Graph g = test::graph_of(kImage444, std::move(layers));
        all.merge(check_graph(g, 5500));
        // log|det| = sum of log(1 - 2 alpha) - log u - log(1 - u), independently of the runtime.
        const std::vector<double> x = Rng(5501).doubles(64, -0.5, 0.5);
        std::vector<double> z(64);
        double log_det = 0, want = 0;
        RefExecutor<double>(g, 1, 1, false)
            .encode(1, x.data(), nullptr, z.data(), nullptr, &log_det);
        for (double v : x) {
          const double u = alpha + (1 - 2.0 * alpha) * (v + 0.5);
          want += std::log(1 - 2.0 * alpha) - std::log(u) - std::log(1 - u);
        }
        if (actnorm) {
          const auto &an = std::get<ActNormLayer>(g.layers[1].op);
          for (int64_t c = 0; c < 4; ++c) want += 16 * std::log(std::fabs(double(an.scale[c])));
        }
        CHECK(test::rel_err(log_det, want) <= 1e-12);
      }
    MESSAGE("logit: " << all.report());
  }

  TEST_CASE("whole small RealNVP and NICE models: brute-force Jacobian, inverse, latents") {
    Errors all;
    int n = 0;
    for (int64_t channels : {1, 3})
      for (bool variant : {false, true}) {
        INFO("RealNVP, channels " << channels << ", variant " << variant);
        RealNvpConfig cfg;
        cfg.channels = channels;
        cfg.height = cfg.width = 8;
        cfg.scales = 2;
        cfg.hidden = 8;
        cfg.checkerboard = cfg.channelwise = cfg.final_checkerboard = 2;
        cfg.random_nets = true;
        cfg.seed = 70 + n;
        if (variant) {  // no mask channel, no batch norm, no logit
          cfg.mask_channel = false;
          cfg.batchnorm = false;
          cfg.logit_alpha = 0.f;
        }
        all.merge(check_graph(build_realnvp(cfg), 7000 + n++));
      }
    for (int64_t channels : {1, 3}) {
      INFO("NICE, channels " << channels);
      NiceConfig cfg;
      cfg.channels = channels;
      cfg.height = cfg.width = 4;
      cfg.couplings = 4;
      cfg.hidden = 16;
      cfg.hidden_layers = 2;
      cfg.random_nets = true;
      cfg.seed = 80 + n;
      all.merge(check_graph(build_nice(cfg), 7000 + n++));
    }
    MESSAGE("RealNVP and NICE (" << n << " models): " << all.report());
  }
}

}  // namespace
}  // namespace flowrt
