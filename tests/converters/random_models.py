"""Random, well-conditioned models that use every option of the format (both squeeze orders,
LU and dense 1x1 convs, fixed permutations, every coupling variant and padding mode, split
priors in both layouts or none, learned / standard-normal / class-conditional top priors), for
tests that compare implementations with each other."""
from dataclasses import dataclass

import numpy as np

from converters.model_ir import (ActNorm, AFFINE_FORM, Conv2d, COUPLING_TYPE, Coupling, HALF,
                                 INV_CONV_FORM, ImageSpec, InvConv1x1, Layer, Model, OutputScale,
                                 PADDING, PERMUTE_KIND, Permute, PRIOR_LAYOUT, ReLU, SCALE_FUNCTION,
                                 SHIFT_SCALE_SPLIT, SQUEEZE_ORDER, Split, Squeeze, TOP_PRIOR_KIND,
                                 TopPrior, f32)


@dataclass
class Variant:
    name: str
    squeeze_order: int
    affine: bool
    split: int
    scale_fn: int
    form: int
    padding: int
    pad_value: float
    prior_layout: int          # 0: standard-normal split priors
    top: int
    classes: int = 0
    permute: int = 0           # 0: invertible 1x1 convs (LU and dense alternating)


VARIANTS = [
    # Glow as glow-pytorch writes it.
    Variant("glow_pytorch_like", SQUEEZE_ORDER.CHANNEL_MAJOR, True,
            SHIFT_SCALE_SPLIT.SCALE_SHIFT_HALVES, SCALE_FUNCTION.SIGMOID,
            AFFINE_FORM.SHIFT_THEN_SCALE, PADDING.CONSTANT, 1.0,
            PRIOR_LAYOUT.MEAN_LOGSTD_HALVES, TOP_PRIOR_KIND.LEARNED),
    # Glow as the TensorFlow original writes it, class-conditional.
    Variant("glow_tf_like", SQUEEZE_ORDER.SUBPIXEL_MAJOR, True,
            SHIFT_SCALE_SPLIT.SHIFT_SCALE_INTERLEAVED, SCALE_FUNCTION.SIGMOID,
            AFFINE_FORM.SHIFT_THEN_SCALE, PADDING.EDGE_CHANNEL, 0.0,
            PRIOR_LAYOUT.MEAN_LOGSTD_INTERLEAVED, TOP_PRIOR_KIND.LEARNED, classes=3),
    # RealNVP-like: exp scale, scale then shift, channel reversal, standard-normal priors.
    Variant("realnvp_like", SQUEEZE_ORDER.CHANNEL_MAJOR, True,
            SHIFT_SCALE_SPLIT.SHIFT_SCALE_HALVES, SCALE_FUNCTION.EXP,
            AFFINE_FORM.SCALE_THEN_SHIFT, PADDING.ZEROS, 0.0, 0,
            TOP_PRIOR_KIND.STANDARD_NORMAL, permute=PERMUTE_KIND.REVERSE),
    # Interleaved raw-scale-first split, constant padding other than 1, a fixed shuffle.
    Variant("interleaved_shuffle", SQUEEZE_ORDER.SUBPIXEL_MAJOR, True,
            SHIFT_SCALE_SPLIT.SCALE_SHIFT_INTERLEAVED, SCALE_FUNCTION.EXP,
            AFFINE_FORM.SHIFT_THEN_SCALE, PADDING.CONSTANT, 0.5,
            PRIOR_LAYOUT.MEAN_LOGSTD_HALVES, TOP_PRIOR_KIND.LEARNED,
            permute=PERMUTE_KIND.INDICES),
    # NICE-like: additive couplings.
    Variant("nice_like", SQUEEZE_ORDER.CHANNEL_MAJOR, False, 0, 0, 0, PADDING.ZEROS, 0.0,
            PRIOR_LAYOUT.MEAN_LOGSTD_HALVES, TOP_PRIOR_KIND.STANDARD_NORMAL),
]


def _conv(rng, out_c, in_c, k, padding, pad_value, gain):
    # Weights scaled by the fan-in keep every net's gain near `gain` whatever its width, so
    # that the inverse stays stable when sampling far from the training data.
    extra = 1 if padding == PADDING.EDGE_CHANNEL else 0
    std = gain / np.sqrt((in_c + extra) * k * k)
    return Conv2d(f32(rng.normal(0, std, (out_c, in_c + extra, k, k))),
                  f32(rng.normal(0, 0.05, out_c)), padding, pad_value)


def _net(rng, v: Variant, in_c, out_c, width):
    return [
        _conv(rng, width, in_c, 3, v.padding, v.pad_value, 1.0), ReLU(),
        ActNorm(f32(rng.normal(0, 0.1, width)), f32(np.exp(rng.normal(0, 0.1, width)))),
        _conv(rng, width, width, 1, PADDING.ZEROS, 0.0, 1.0), ReLU(),
        _conv(rng, out_c, width, 3, v.padding, v.pad_value, 0.3),
        OutputScale(f32(rng.normal(0, 0.05, out_c)), 3.0),
    ]


def _invconv(rng, c, dense):
    # Off-diagonal entries shrink with sqrt(c) so that W stays well conditioned at any width.
    spread = 0.5 / np.sqrt(c)
    if dense:
        q, _ = np.linalg.qr(rng.normal(size=(c, c)))
        return InvConv1x1(INV_CONV_FORM.DENSE, weight=f32(q + spread * rng.normal(size=(c, c))))
    return InvConv1x1(INV_CONV_FORM.LU, perm=rng.permutation(c).astype(np.int32),
                      lower=f32(rng.normal(0, spread, (c, c))),
                      upper=f32(rng.normal(0, spread, (c, c))),
                      sign=f32(rng.choice([-1.0, 1.0], c)), log_s=f32(rng.normal(0, 0.1, c)))


def random_model(v: Variant, image=(2, 8, 8), levels=2, depth=2, width=8, n_bits=8, seed=0):
    rng = np.random.default_rng(seed)
    c, h, w = image
    layers = []
    for level in range(levels):
        c, h, w = 4 * c, h // 2, w // 2
        layers.append(Layer(f"level{level}/squeeze", Squeeze(v.squeeze_order)))
        for step in range(depth):
            at = f"level{level}/step{step}"
            layers.append(Layer(at + "/actnorm", ActNorm(f32(rng.normal(0, 0.2, c)),
                                                         f32(np.exp(rng.normal(0, 0.2, c))))))
            if v.permute == PERMUTE_KIND.REVERSE:
                layers.append(Layer(at + "/reverse", Permute(PERMUTE_KIND.REVERSE)))
            elif v.permute == PERMUTE_KIND.INDICES:
                layers.append(Layer(at + "/shuffle", Permute(
                    PERMUTE_KIND.INDICES, rng.permutation(c).astype(np.int32))))
            else:
                layers.append(Layer(at + "/invconv", _invconv(rng, c, dense=step % 2 == 1)))
            conditioning = HALF.FIRST if step % 2 == 0 else HALF.SECOND
            net = _net(rng, v, c // 2, c if v.affine else c // 2, width)
            if v.affine:
                op = Coupling(COUPLING_TYPE.AFFINE, conditioning, net, v.split, v.scale_fn,
                              2.0 if v.scale_fn == SCALE_FUNCTION.SIGMOID else 0.0, v.form)
            else:
                op = Coupling(COUPLING_TYPE.ADDITIVE, conditioning, net)
            layers.append(Layer(at + "/coupling", op))
        if level < levels - 1:
            leaving = HALF.SECOND if level % 2 == 0 else HALF.FIRST
            prior = []
            if v.prior_layout:
                prior = [_conv(rng, c, c // 2, 3, v.padding, v.pad_value, 0.3),
                         OutputScale(f32(rng.normal(0, 0.05, c)), 3.0)]
            layers.append(Layer(f"level{level}/split", Split(leaving, prior, v.prior_layout)))
            c //= 2
    top = TopPrior(v.top)
    if v.top == TOP_PRIOR_KIND.LEARNED:
        top.mean = f32(rng.normal(0, 0.2, (c, h, w)))
        top.log_std = f32(rng.normal(0, 0.2, (c, h, w)))
    if v.classes:
        top.class_offsets = f32(rng.normal(0, 0.2, (v.classes, 2 * c)))
    layers.append(Layer("top/prior", top))
    return Model(ImageSpec(image[0], image[1], image[2], n_bits), layers,
                 [("producer", "flowrt converter tests"), ("variant", v.name)])


def random_x(model, n, seed=1):
    """Inputs in the network's range, at bin centres like real images."""
    rng = np.random.default_rng(seed)
    bins = 2 ** model.image.n_bits
    p = rng.integers(0, bins, (n,) + model.image.shape)
    return p / bins - 0.5 + 0.5 / bins
