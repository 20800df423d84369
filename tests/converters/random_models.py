"""Random, well-conditioned models that use every option of the format (both squeeze orders,
LU and dense 1x1 convs, fixed permutations, every coupling variant and padding mode, split
priors in both layouts or none, learned / standard-normal / class-conditional top priors), for
tests that compare implementations with each other.

FAMILY_VARIANTS are the format 1.1 layers in RealNVP- and NICE-shaped models: checkerboard
couplings of both phases with and without the mask channel (affine with each scale function, and
additive), the tanh scale, the logit input layer and flatten with 1x1 "fully-connected" nets;
and the residual connections of format 1.2 in coupling nets and split priors (RealNVP's residual
blocks, and connections from the net's input and from an output scale's input)."""
from dataclasses import dataclass

import numpy as np

from converters.model_ir import (ActNorm, AFFINE_FORM, Conv2d, COUPLING_TYPE, Coupling, Flatten,
                                 HALF, INV_CONV_FORM, ImageSpec, InvConv1x1, Layer, Logit, Model,
                                 OutputScale, PADDING, PERMUTE_KIND, Permute, PRIOR_LAYOUT, ReLU,
                                 ResidualAdd, SCALE_FUNCTION, SHIFT_SCALE_SPLIT, SQUEEZE_ORDER,
                                 Split, Squeeze, TOP_PRIOR_KIND, TopPrior, f32)


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


@dataclass
class FamilyVariant:
    name: str
    arch: str                  # "realnvp" or "nice"
    affine: bool = True
    scale_fn: int = SCALE_FUNCTION.TANH
    split: int = SHIFT_SCALE_SPLIT.SHIFT_SCALE_HALVES
    form: int = AFFINE_FORM.SCALE_THEN_SHIFT
    mask_channel: bool = True  # realnvp: the checkerboard nets' extra input
    logit_alpha: float = 0.0   # 0: no logit layer
    padding: int = PADDING.ZEROS
    pad_value: float = 0.0
    net_actnorm_first: bool = False  # a net that starts with an actnorm, not a conv
    prior_layout: int = 0      # realnvp: 0 for standard-normal split priors
    top: int = TOP_PRIOR_KIND.STANDARD_NORMAL
    classes: int = 0
    permute: int = PERMUTE_KIND.INDICES  # nice: between couplings, INDICES = none
    # Residual nets (either field; their split priors are residual too): res_blocks blocks in
    # every coupling net as flowrt init builds them, and with residual_edges first connections
    # from the net's input (the mask channel included) and from an output scale's input.
    res_blocks: int = 0
    residual_edges: bool = False

    @property
    def residual(self) -> bool:
        return self.res_blocks > 0 or self.residual_edges


# alpha values a float32 holds exactly: the in-memory model and the file then agree bit for bit.
_ALPHA = float(np.float32(0.05))

FAMILY_VARIANTS = [
    # RealNVP as flowrt init --arch realnvp builds it (batch norms as actnorms).
    FamilyVariant("realnvp", "realnvp", logit_alpha=_ALPHA),
    # Sigmoid scale, shift then scale, no mask channel, constant padding, learned priors.
    FamilyVariant("realnvp_sigmoid_nomask", "realnvp", scale_fn=SCALE_FUNCTION.SIGMOID,
                  split=SHIFT_SCALE_SPLIT.SCALE_SHIFT_INTERLEAVED,
                  form=AFFINE_FORM.SHIFT_THEN_SCALE, mask_channel=False, logit_alpha=0.125,
                  padding=PADDING.CONSTANT, pad_value=1.0,
                  prior_layout=PRIOR_LAYOUT.MEAN_LOGSTD_HALVES, top=TOP_PRIOR_KIND.LEARNED),
    # Exp scale, edge padding after the mask channel, nets that start with an actnorm (so the
    # mask channel goes through it), class-conditional.
    FamilyVariant("realnvp_exp_edge", "realnvp", scale_fn=SCALE_FUNCTION.EXP,
                  split=SHIFT_SCALE_SPLIT.SHIFT_SCALE_INTERLEAVED, padding=PADDING.EDGE_CHANNEL,
                  net_actnorm_first=True, prior_layout=PRIOR_LAYOUT.MEAN_LOGSTD_INTERLEAVED,
                  top=TOP_PRIOR_KIND.LEARNED, classes=2),
    # Additive checkerboard and channel couplings.
    FamilyVariant("checker_additive", "realnvp", affine=False, logit_alpha=_ALPHA,
                  padding=PADDING.CONSTANT, pad_value=0.5),
    # RealNVP with residual nets as flowrt init --arch realnvp builds them (format 1.2).
    FamilyVariant("realnvp_residual", "realnvp", logit_alpha=_ALPHA, res_blocks=2),
    # Connections the ONNX export cannot fold across (from the net's input, the mask channel
    # included, and from an output scale's input), constant padding, residual split priors.
    FamilyVariant("realnvp_residual_edges", "realnvp", scale_fn=SCALE_FUNCTION.EXP,
                  form=AFFINE_FORM.SHIFT_THEN_SCALE, padding=PADDING.CONSTANT, pad_value=1.0,
                  prior_layout=PRIOR_LAYOUT.MEAN_LOGSTD_HALVES, top=TOP_PRIOR_KIND.LEARNED,
                  residual_edges=True),
    # Additive, edge padding, nets that start with an actnorm, those connections and a block.
    FamilyVariant("realnvp_residual_actnorm_first", "realnvp", affine=False,
                  padding=PADDING.EDGE_CHANNEL, net_actnorm_first=True, residual_edges=True,
                  res_blocks=1),
    # NICE as flowrt init --arch nice builds it.
    FamilyVariant("nice", "nice", affine=False),
    # NICE with residual fully-connected nets.
    FamilyVariant("nice_residual", "nice", affine=False, res_blocks=2),
    # Affine tanh couplings on the flattened vector after a logit, reversals between them,
    # a learned class-conditional top prior.
    FamilyVariant("nice_tanh_logit", "nice", logit_alpha=_ALPHA, permute=PERMUTE_KIND.REVERSE,
                  top=TOP_PRIOR_KIND.LEARNED, classes=3),
]


def _family_coupling(rng, v: FamilyVariant, conditioning, c, hw, width):
    op = Coupling(COUPLING_TYPE.AFFINE if v.affine else COUPLING_TYPE.ADDITIVE, conditioning, [])
    op.mask_channel = op.checkerboard and v.mask_channel
    cb = op.transformed_channels(c)
    in_c, out_c = op.net_input_channels(c), 2 * cb if v.affine else cb
    k, padding = (3, v.padding) if hw > 1 else (1, PADDING.ZEROS)
    net = []
    if v.net_actnorm_first:
        net.append(ActNorm(f32(rng.normal(0, 0.1, in_c)), f32(np.exp(rng.normal(0, 0.1, in_c)))))
    if v.residual:
        net += _residual_net(rng, v, in_c, out_c, width, k, padding, len(net))
    else:
        net += [_conv(rng, width, in_c, k, padding, v.pad_value, 1.0), ReLU(),
                _conv(rng, width, width, 1, PADDING.ZEROS, 0.0, 1.0), ReLU(),
                _conv(rng, out_c, width, k, padding, v.pad_value, 0.3)]
    op.net = net
    if v.affine:
        op.split, op.scale_fn, op.form = v.split, v.scale_fn, v.form
        op.scale_bias = 2.0 if v.scale_fn == SCALE_FUNCTION.SIGMOID else 0.0
        if v.scale_fn == SCALE_FUNCTION.TANH:
            op.scale_weight = f32(rng.normal(1.0, 0.1, cb))
    return op


def _residual_net(rng, v: FamilyVariant, in_c, out_c, width, k, padding, first):
    """The ops of a residual net whose first op has index `first` in its net. flowrt init's
    shape: conv in->width, ReLU, per block [conv, actnorm, ReLU, conv, actnorm, add of the
    block's input, ReLU], conv width->out. With v.residual_edges, before the blocks: a conv
    in->in and the add of its input (the net's input with the mask channel, unless an actnorm
    comes first), then a conv in->width whose output scale's input is added after the next
    conv."""
    net = []

    def at():
        return first + len(net)

    def conv(o, i, gain):
        return _conv(rng, o, i, k, padding, v.pad_value, gain)

    if v.residual_edges:
        net += [conv(in_c, in_c, 0.5), ResidualAdd(first)]
        scaled = at() + 1
        net += [conv(width, in_c, 1.0), OutputScale(f32(rng.normal(0, 0.05, width)), 3.0),
                ReLU(), conv(width, width, 0.5), ResidualAdd(scaled), ReLU()]
    else:
        net += [conv(width, in_c, 1.0), ReLU()]
    for _ in range(v.res_blocks):
        start = at()
        net += [conv(width, width, 1.0), _actnorm(rng, width), ReLU(), conv(width, width, 0.5),
                _actnorm(rng, width), ResidualAdd(start), ReLU()]
    net.append(conv(out_c, width, 0.3))
    return net


def _split_prior(rng, v: FamilyVariant, c, width):
    """A split prior on c // 2 channels (c outputs, mean and log-std), residual for the
    residual variants."""
    if not v.residual:
        return [_conv(rng, c, c // 2, 3, v.padding, v.pad_value, 0.3),
                OutputScale(f32(rng.normal(0, 0.05, c)), 3.0)]

    def conv(o, i, gain):
        return _conv(rng, o, i, 3, v.padding, v.pad_value, gain)

    return [conv(width, c // 2, 1.0), ReLU(), conv(width, width, 0.5), ResidualAdd(2), ReLU(),
            conv(c, width, 0.3), OutputScale(f32(rng.normal(0, 0.05, c)), 3.0)]


def _actnorm(rng, c, spread=0.1):
    return ActNorm(f32(rng.normal(0, spread, c)), f32(np.exp(rng.normal(0, spread, c))))


def _top(rng, v, shape):
    top = TopPrior(v.top)
    if v.top == TOP_PRIOR_KIND.LEARNED:
        top.mean = f32(rng.normal(0, 0.2, shape))
        top.log_std = f32(rng.normal(0, 0.2, shape))
    if v.classes:
        top.class_offsets = f32(rng.normal(0, 0.2, (v.classes, 2 * shape[0])))
    return top


def random_family_model(v: FamilyVariant, image=(3, 8, 8), scales=2, depth=2, width=8,
                        n_bits=8, seed=0):
    """realnvp: per scale `depth` checkerboard couplings (EVEN, ODD, ...), a squeeze, `depth`
    channel couplings and a split, the last scale `depth` checkerboard couplings, every coupling
    followed by an actnorm. nice: flatten, `depth` couplings alternating halves (a permutation
    between them when v.permute is REVERSE), an actnorm. `scales` is ignored for nice."""
    rng = np.random.default_rng(seed)
    c, h, w = image
    layers = []
    if v.logit_alpha:
        layers.append(Layer("logit", Logit(v.logit_alpha)))
    if v.arch == "nice":
        layers.append(Layer("flatten", Flatten()))
        c, h, w = c * h * w, 1, 1
        for k in range(depth):
            if k and v.permute == PERMUTE_KIND.REVERSE:
                layers.append(Layer(f"coupling{k}/reverse", Permute(PERMUTE_KIND.REVERSE)))
            layers.append(Layer(f"coupling{k}", _family_coupling(
                rng, v, HALF.FIRST if k % 2 == 0 else HALF.SECOND, c, 1, width)))
        layers.append(Layer("scaling", _actnorm(rng, c)))
    else:
        for level in range(scales):
            last = level == scales - 1
            for k in range(depth):
                at = f"scale{level}/checker{k}"
                half = HALF.CHECKERBOARD_EVEN if k % 2 == 0 else HALF.CHECKERBOARD_ODD
                layers.append(Layer(at + "/coupling",
                                    _family_coupling(rng, v, half, c, h * w, width)))
                layers.append(Layer(at + "/batchnorm", _actnorm(rng, c)))
            if last:
                break
            layers.append(Layer(f"scale{level}/squeeze", Squeeze(SQUEEZE_ORDER.CHANNEL_MAJOR)))
            c, h, w = 4 * c, h // 2, w // 2
            for k in range(depth):
                at = f"scale{level}/channel{k}"
                half = HALF.FIRST if k % 2 == 0 else HALF.SECOND
                layers.append(Layer(at + "/coupling",
                                    _family_coupling(rng, v, half, c, h * w, width)))
                layers.append(Layer(at + "/batchnorm", _actnorm(rng, c)))
            prior = _split_prior(rng, v, c, width) if v.prior_layout else []
            layers.append(Layer(f"scale{level}/split", Split(HALF.SECOND, prior, v.prior_layout)))
            c //= 2
    layers.append(Layer("top_prior", _top(rng, v, (c, h, w))))
    return Model(ImageSpec(image[0], image[1], image[2], n_bits), layers,
                 [("producer", "flowrt converter tests"), ("variant", v.name)])


def labels_for(model, n):
    """Labels 0, 1, ... for a class-conditional model, else None."""
    top = model.layers[-1].op
    return None if top.class_offsets is None else np.arange(n) % top.class_offsets.shape[0]


def random_x(model, n, seed=1):
    """Inputs in the network's range, at bin centres like real images."""
    rng = np.random.default_rng(seed)
    bins = 2 ** model.image.n_bits
    p = rng.integers(0, bins, (n,) + model.image.shape)
    return p / bins - 0.5 + 0.5 / bins
