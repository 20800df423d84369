"""Exports a .flow model to ONNX (opset 17): the decoder (noise -> image) or the encoder
(image -> latents and log-likelihood).

Graph interface (N is the batch: a fixed number, or the symbolic "N" for a dynamic batch):
- decoder: inputs  eps [N, D] float (standard normals, the C API's z layout), temperature []
                   float, and label [N] int64 for a class-conditional top prior;
           output  x [N, C, H, W], the network's range (about -0.5..0.5).
- encoder: inputs  x [N, C, H, W] float, and label [N] int64 for a class-conditional top prior;
           outputs z [N, D], log_p [N] (nats, log-determinant included), log_det [N],
                   bits_per_dim [N].

What is computed at export time, in float64, then stored as float32 constants:
- every 1x1 convolution matrix and its inverse (the decoder never inverts at run time), with an
  adjacent actnorm folded in: encoder W*diag(s), W*(s*b); decoder diag(1/s)*W^-1, -b;
- an OutputScale folded into the convolution before it;
- the padding of CONSTANT / EDGE_CHANNEL convolutions: conv(pad_v(x)) = conv(pad_0(x)) +
  conv(pad_v(0)), and the second term does not depend on x, so it becomes a constant bias map
  added to a zero-padded Conv; a checkerboard coupling's mask channel, a constant input of the
  net's first convolution, joins that map the same way;
- the checkerboard masks, and the input-independent parts of the log-determinant (the logit
  layer's log(1 - 2 alpha) per element among them).

A checkerboard coupling transforms every element and then keeps the conditioning positions as
they were (Where, so an overflow there cannot leak into the result); a flatten is a Reshape; a
residual add is an Add of the tensor that was the input of its source op (nothing is folded
across a residual source: an OutputScale whose input is one stays a Mul, and the mask channel is
a real input channel when a connection starts at the net's input).
"""
import math
from typing import List, Optional

import numpy as np
import onnx
from onnx import TensorProto, helper, numpy_helper

from .errors import ConversionError
from .model_ir import (ActNorm, AFFINE_FORM, Conv2d, COUPLING_TYPE, Coupling, Flatten, HALF,
                       InvConv1x1, Logit, OutputScale, PADDING, PERMUTE_KIND, Permute,
                       PRIOR_LAYOUT, ReLU, ResidualAdd, SCALE_FUNCTION, SHIFT_SCALE_SPLIT,
                       SQUEEZE_ORDER, Split, Squeeze, TOP_PRIOR_KIND, TopPrior, checkerboard_mask)
from .numpy_eval import conv2d, logit_alpha
from .shapes import trace

OPSET = 17
_HALF_LOG_2PI = 0.5 * math.log(2.0 * math.pi)


class _Graph:
    """Accumulates nodes and float32 constants with unique names."""

    def __init__(self):
        self.nodes = []
        self.initializers = []
        self._count = 0

    def _name(self, hint):
        self._count += 1
        return f"{hint}_{self._count}"

    def const(self, value, hint="c", dtype=np.float32) -> str:
        name = self._name(hint)
        self.initializers.append(numpy_helper.from_array(np.asarray(value, dtype=dtype), name))
        return name

    def ints(self, values, hint="i") -> str:
        return self.const(np.asarray(values, dtype=np.int64), hint, np.int64)

    def op(self, op_type, inputs, **attrs) -> str:
        out = self._name(op_type.lower())
        self.nodes.append(helper.make_node(op_type, list(inputs), [out], **attrs))
        return out

    # ---- shape helpers ----------------------------------------------------------------
    def reshape(self, x, shape):
        return self.op("Reshape", [x, self.ints(shape, "shape")])

    def channels(self, x, start, stop, step=1):
        return self.op("Slice", [x, self.ints([start]), self.ints([stop]), self.ints([1]),
                                 self.ints([step])])

    def halves(self, x, c):
        return self.channels(x, 0, c // 2), self.channels(x, c // 2, c)

    def per_image_sum(self, x):
        """[N, ...] -> [N]"""
        flat = self.op("Flatten", [x], axis=1)
        return self.op("ReduceSum", [flat, self.ints([1])], keepdims=0)


def _channel_vec(v):
    return np.asarray(v, dtype=np.float64).reshape(1, -1, 1, 1)


# ---- small CNNs (coupling nets, split priors) -------------------------------------------------

def _conv_parts(op: Conv2d, scale: Optional[np.ndarray], hw, fixed: Optional[np.ndarray] = None):
    """(weight, bias, constant map or None) of a conv whose output is multiplied per channel
    by `scale`, with non-zero padding turned into a constant map (see the module doc). `fixed`
    [k, H, W] are constant input channels after the variable ones (a checkerboard mask): their
    part of the output joins the map and the weight keeps the variable channels only."""
    w = np.asarray(op.weight, dtype=np.float64)
    o = w.shape[0]
    bias = np.zeros(o) if op.bias is None else np.asarray(op.bias, dtype=np.float64)
    edge = 1 if op.padding == PADDING.EDGE_CHANNEL else 0
    n_fixed = 0 if fixed is None else fixed.shape[0]
    variable = w.shape[1] - edge - n_fixed
    const_map = None
    if fixed is not None or edge or (op.padding == PADDING.CONSTANT and op.pad_value != 0.0):
        inputs = np.zeros((1, variable) + tuple(hw))
        if fixed is not None:
            inputs = np.concatenate([inputs, np.asarray(fixed, np.float64)[None]], axis=1)
        const_map = conv2d(inputs, Conv2d(w, bias, op.padding, op.pad_value))[0]
        bias = None
    # The edge channel is zero inside the image and the fixed channels are constants: their
    # parts are in const_map.
    w = w[:, :variable]
    if scale is not None:
        w = w * scale[:, None, None, None]
        if bias is not None:
            bias = bias * scale
        if const_map is not None:
            const_map = const_map * scale[:, None, None]
    return w, bias, const_map


def _net(g: _Graph, ops, x: str, hw, fixed: Optional[np.ndarray] = None) -> str:
    """The net on x, or, with `fixed` [k, H, W], on x with those constant channels appended."""
    sources = {op.from_ for op in ops if isinstance(op, ResidualAdd)}
    if fixed is not None and (not isinstance(ops[0], Conv2d) or 0 in sources):
        # Nothing to fold the constants into, or a residual add needs the whole input: append
        # them as real channels.
        batch = g.op("Shape", [x], start=0, end=1)
        size = g.op("Concat", [batch, g.ints(np.shape(fixed))], axis=0)
        x = g.op("Concat", [x, g.op("Expand", [g.const(fixed[None], "mask"), size])], axis=1)
        fixed = None
    saved = {}   # op index -> the tensor that is that op's input, for the residual adds
    i = 0
    while i < len(ops):
        op = ops[i]
        if i in sources:
            saved[i] = x
        if isinstance(op, ResidualAdd):
            x = g.op("Add", [x, saved[op.from_]])
        elif isinstance(op, Conv2d):
            fixed_in = fixed if i == 0 else None
            scale = None
            if i + 1 < len(ops) and isinstance(ops[i + 1], OutputScale) and i + 1 not in sources:
                nxt = ops[i + 1]
                scale = np.exp(nxt.factor * np.asarray(nxt.log_scale, dtype=np.float64))
                i += 1
            w, bias, const_map = _conv_parts(op, scale, hw, fixed_in)
            kh, kw = w.shape[2], w.shape[3]
            inputs = [x, g.const(w, "conv_w")] + ([g.const(bias, "conv_b")] if bias is not None else [])
            x = g.op("Conv", inputs, kernel_shape=[kh, kw],
                     pads=[(kh - 1) // 2, (kw - 1) // 2, (kh - 1) // 2, (kw - 1) // 2])
            if const_map is not None:
                x = g.op("Add", [x, g.const(const_map[None], "pad_map")])
        elif isinstance(op, ReLU):
            x = g.op("Relu", [x])
        elif isinstance(op, ActNorm):
            s = _channel_vec(op.scale)
            x = g.op("Add", [g.op("Mul", [x, g.const(s)]), g.const(s * _channel_vec(op.bias))])
        elif isinstance(op, OutputScale):
            x = g.op("Mul", [x, g.const(np.exp(op.factor * _channel_vec(op.log_scale)))])
        i += 1
    return x


def _shift_raw(g: _Graph, h: str, c2: int, split: int):
    cb = c2 // 2
    if split == SHIFT_SCALE_SPLIT.SHIFT_SCALE_HALVES:
        return g.channels(h, 0, cb), g.channels(h, cb, c2)
    if split == SHIFT_SCALE_SPLIT.SCALE_SHIFT_HALVES:
        return g.channels(h, cb, c2), g.channels(h, 0, cb)
    if split == SHIFT_SCALE_SPLIT.SHIFT_SCALE_INTERLEAVED:
        return g.channels(h, 0, c2, 2), g.channels(h, 1, c2, 2)
    return g.channels(h, 1, c2, 2), g.channels(h, 0, c2, 2)


def _mean_logstd(g: _Graph, o: str, c2: int, layout: int):
    if layout == PRIOR_LAYOUT.MEAN_LOGSTD_HALVES:
        return g.halves(o, c2)
    return g.channels(o, 0, c2, 2), g.channels(o, 1, c2, 2)


def _coupling(g: _Graph, op: Coupling, x: str, shape, forward: bool):
    """Returns (output, per-image log-det or None)."""
    c, h, w = shape
    if op.checkerboard:
        m = checkerboard_mask(op.conditioning, h, w)
        # x * m is x_a, equal before and after the coupling: the net input of both directions.
        net_out = _net(g, op.net, g.op("Mul", [x, g.const(m[None, None], "mask")]), (h, w),
                       m[None] if op.mask_channel else None)
        keep = g.const(m[None, None] == 0, "transformed", np.bool_)
        return _transform(g, op, x, net_out, c, forward, keep)
    first, second = g.halves(x, c)
    a, b = (first, second) if op.conditioning == HALF.FIRST else (second, first)
    b, log_det = _transform(g, op, b, _net(g, op.net, a, (h, w)), c // 2, forward, None)
    parts = [a, b] if op.conditioning == HALF.FIRST else [b, a]
    return g.op("Concat", parts, axis=1), log_det


def _transform(g: _Graph, op: Coupling, b: str, net_out: str, cb: int, forward: bool,
               keep: Optional[str]):
    """(x_b transformed by the net output, per-image log-det or None). `keep` (a boolean
    constant) selects the positions that are transformed; elsewhere the shift is 0 and the scale
    1, so the transform is exactly the identity there."""
    def where(value, otherwise):
        if keep is None:
            return value
        return g.op("Where", [keep, value, g.const(np.float32(otherwise))])

    if op.type == COUPLING_TYPE.ADDITIVE:
        return g.op("Add" if forward else "Sub", [b, where(net_out, 0.0)]), None
    t, raw = _shift_raw(g, net_out, 2 * cb, op.split)
    pre = g.op("Add", [raw, g.const(np.float32(op.scale_bias))])
    if op.scale_fn == SCALE_FUNCTION.SIGMOID:
        s = g.op("Sigmoid", [pre])
        if forward:   # log sigmoid(a) = -softplus(-a), stable for large |a|
            log_s = g.op("Neg", [g.op("Softplus", [g.op("Neg", [pre])])])
    elif op.scale_fn == SCALE_FUNCTION.TANH:
        log_s = g.op("Mul", [g.op("Tanh", [pre]), g.const(_channel_vec(op.scale_weight))])
        s = g.op("Exp", [log_s])
    else:
        s = g.op("Exp", [pre])
        log_s = pre
    t, s = where(t, 0.0), where(s, 1.0)
    shift_first = op.form == AFFINE_FORM.SHIFT_THEN_SCALE
    if forward:
        b = g.op("Mul", [g.op("Add", [b, t]), s]) if shift_first else \
            g.op("Add", [g.op("Mul", [b, s]), t])
        return b, g.per_image_sum(where(log_s, 0.0))
    b = g.op("Sub", [g.op("Div", [b, s]), t]) if shift_first else \
        g.op("Div", [g.op("Sub", [b, t]), s])
    return b, None


def _logit(g: _Graph, x: str, op: Logit, forward: bool):
    """Forward: (y, per-image sum of -log u - log(1 - u)); inverse: (x, None). The constant
    log(1 - 2 alpha) per element is the caller's."""
    k = 1.0 - 2.0 * logit_alpha(op)
    if not forward:   # x = (sigmoid(y) - 1/2) / k = tanh(y / 2) / (2k)
        return g.op("Mul", [g.op("Tanh", [g.op("Mul", [x, g.const(np.float32(0.5))])]),
                            g.const(np.float32(0.5 / k))]), None
    # u = 1/2 + k x and 1 - u = 1/2 - k x, neither formed by subtracting from 1.
    kx = g.op("Mul", [x, g.const(np.float32(k))])
    half = g.const(np.float32(0.5))
    log_u = g.op("Log", [g.op("Add", [half, kx])])
    log_1mu = g.op("Log", [g.op("Sub", [half, kx])])
    log_det = g.op("Neg", [g.per_image_sum(g.op("Add", [log_u, log_1mu]))])
    return g.op("Sub", [log_u, log_1mu]), log_det


def _squeeze(g: _Graph, x: str, shape, order: int, forward: bool) -> str:
    c, h, w = shape   # the input shape of the squeeze layer (encoder direction)
    if forward:
        t = g.reshape(x, [-1, c, h // 2, 2, w // 2, 2])
        perm = [0, 1, 3, 5, 2, 4] if order == SQUEEZE_ORDER.CHANNEL_MAJOR else [0, 3, 5, 1, 2, 4]
        return g.reshape(g.op("Transpose", [t], perm=perm), [-1, 4 * c, h // 2, w // 2])
    if order == SQUEEZE_ORDER.CHANNEL_MAJOR:
        t = g.reshape(x, [-1, c, 2, 2, h // 2, w // 2])
        perm = [0, 1, 4, 2, 5, 3]
    else:
        t = g.reshape(x, [-1, 2, 2, c, h // 2, w // 2])
        perm = [0, 3, 4, 1, 5, 2]
    return g.reshape(g.op("Transpose", [t], perm=perm), [-1, c, h, w])


def _permutation(op: Permute, c: int) -> np.ndarray:
    if op.kind == PERMUTE_KIND.REVERSE:
        return np.arange(c)[::-1].copy()
    return np.asarray(op.indices, dtype=np.int64)


def _conv1x1(g: _Graph, x: str, w: np.ndarray, bias: Optional[np.ndarray]) -> str:
    c = w.shape[0]
    inputs = [x, g.const(w.reshape(c, c, 1, 1), "w1x1")]
    if bias is not None:
        inputs.append(g.const(bias, "b1x1"))
    return g.op("Conv", inputs, kernel_shape=[1, 1])


def _top_prior_params(g: _Graph, op: TopPrior, shape, label: Optional[str]):
    """(mean, log_std) tensor names: [1, C, H, W] constants, plus the class offsets."""
    c = shape[0]
    if op.kind == TOP_PRIOR_KIND.LEARNED:
        mean = np.asarray(op.mean, np.float64)[None]
        log_std = np.asarray(op.log_std, np.float64)[None]
    else:
        mean = np.zeros((1,) + shape)
        log_std = np.zeros((1,) + shape)
    mean_n, log_std_n = g.const(mean, "prior_mean"), g.const(log_std, "prior_logstd")
    if op.class_offsets is not None:
        offsets = g.op("Gather", [g.const(op.class_offsets, "class_offsets"), label], axis=0)
        offsets = g.reshape(offsets, [-1, 2 * c, 1, 1])
        d_mean, d_log_std = g.halves(offsets, 2 * c)
        mean_n = g.op("Add", [mean_n, d_mean])
        log_std_n = g.op("Add", [log_std_n, d_log_std])
    return mean_n, log_std_n


def _neg_log_density_sum(g: _Graph, z: str, mean: str, log_std: str) -> str:
    """Per image sum of log_std + (z - mean)^2 / (2 std^2), i.e. -log N without the 2*pi term."""
    d = g.op("Mul", [g.op("Sub", [z, mean]), g.op("Exp", [g.op("Neg", [log_std])])])
    term = g.op("Add", [log_std, g.op("Mul", [g.op("Mul", [d, d]), g.const(np.float32(0.5))])])
    return g.per_image_sum(term)


def _fold_pairs(layers):
    """Indices i where an ActNorm at i is directly followed by an InvConv1x1 (folded together)."""
    return {i for i in range(len(layers) - 1)
            if isinstance(layers[i].op, ActNorm) and isinstance(layers[i + 1].op, InvConv1x1)}


def _encoder(g: _Graph, model, shapes, label):
    layers = model.layers
    folded = _fold_pairs(layers)
    x = "x"
    const_log_det = 0.0
    log_dets: List[str] = []
    neg_log_prior: List[str] = []
    latents: List[str] = []
    i = 0
    while i < len(layers):
        op = layers[i].op
        c, h, w = shapes[i].in_shape
        if isinstance(op, Squeeze):
            x = _squeeze(g, x, shapes[i].in_shape, op.order, forward=True)
        elif isinstance(op, ActNorm) and i in folded:
            inv = layers[i + 1].op
            s, b = np.asarray(op.scale, np.float64), np.asarray(op.bias, np.float64)
            wm = inv.matrix()
            x = _conv1x1(g, x, wm * s[None, :], wm @ (s * b))
            const_log_det += h * w * (np.sum(np.log(np.abs(s))) + inv.log_abs_det())
            i += 1
        elif isinstance(op, ActNorm):
            s = _channel_vec(op.scale)
            x = g.op("Add", [g.op("Mul", [x, g.const(s)]), g.const(s * _channel_vec(op.bias))])
            const_log_det += h * w * np.sum(np.log(np.abs(np.asarray(op.scale, np.float64))))
        elif isinstance(op, InvConv1x1):
            x = _conv1x1(g, x, op.matrix(), None)
            const_log_det += h * w * op.log_abs_det()
        elif isinstance(op, Permute):
            x = g.op("Gather", [x, g.ints(_permutation(op, c))], axis=1)
        elif isinstance(op, Coupling):
            x, ld = _coupling(g, op, x, (c, h, w), forward=True)
            if ld is not None:
                log_dets.append(ld)
        elif isinstance(op, Logit):
            x, ld = _logit(g, x, op, forward=True)
            log_dets.append(ld)
            const_log_det += c * h * w * math.log(1.0 - 2.0 * logit_alpha(op))
        elif isinstance(op, Flatten):
            x = g.reshape(x, [-1, c * h * w, 1, 1])
        elif isinstance(op, Split):
            first, second = g.halves(x, c)
            z, x = (first, second) if op.leaving == HALF.FIRST else (second, first)
            if op.prior:
                o = _net(g, op.prior, x, (h, w))
                mean, log_std = _mean_logstd(g, o, c, op.prior_layout)
                neg_log_prior.append(_neg_log_density_sum(g, z, mean, log_std))
            else:
                neg_log_prior.append(g.per_image_sum(g.op("Mul", [g.op("Mul", [z, z]),
                                                                  g.const(np.float32(0.5))])))
            latents.append(g.op("Flatten", [z], axis=1))
        elif isinstance(op, TopPrior):
            mean, log_std = _top_prior_params(g, op, (c, h, w), label)
            neg_log_prior.append(_neg_log_density_sum(g, x, mean, log_std))
            latents.append(g.op("Flatten", [x], axis=1))
        i += 1

    dims = int(np.prod(model.image.shape))
    batch = g.op("Shape", ["x"], start=0, end=1)
    log_det = g.op("ConstantOfShape", [batch], value=helper.make_tensor(
        "v", TensorProto.FLOAT, [1], [float(const_log_det)]))
    if log_dets:
        log_det = g.op("Sum", [log_det] + log_dets)
    prior = g.op("Sum", neg_log_prior) if len(neg_log_prior) > 1 else neg_log_prior[0]
    log_p = g.op("Sub", [g.op("Sub", [log_det, prior]),
                         g.const(np.float32(dims * _HALF_LOG_2PI))])
    ln2 = math.log(2.0)
    bpd = g.op("Add", [g.op("Mul", [log_p, g.const(np.float32(-1.0 / (dims * ln2)))]),
                       g.const(np.float32(model.image.n_bits))])
    z = g.op("Concat", latents, axis=1) if len(latents) > 1 else latents[0]
    return {"z": z, "log_p": log_p, "log_det": log_det, "bits_per_dim": bpd}


def _decoder(g: _Graph, model, shapes, label):
    layers = model.layers
    folded = _fold_pairs(layers)
    latent_layers = [i for i, s in enumerate(shapes) if s.latent is not None]
    starts, at = {}, 0
    for i in latent_layers:
        starts[i] = at
        at += int(np.prod(shapes[i].latent))

    def noise(i):
        c, h, w = shapes[i].latent
        part = g.op("Slice", ["eps", g.ints([starts[i]]), g.ints([starts[i] + c * h * w]),
                              g.ints([1])])
        return g.reshape(g.op("Mul", [part, "temperature"]), [-1, c, h, w])

    x = None
    i = len(layers) - 1
    while i >= 0:
        op = layers[i].op
        c, h, w = shapes[i].in_shape
        if isinstance(op, TopPrior):
            mean, log_std = _top_prior_params(g, op, (c, h, w), label)
            x = g.op("Add", [mean, g.op("Mul", [noise(i), g.op("Exp", [log_std])])])
        elif isinstance(op, Split):
            te = noise(i)
            if op.prior:
                o = _net(g, op.prior, x, (h, w))
                mean, log_std = _mean_logstd(g, o, c, op.prior_layout)
                z = g.op("Add", [mean, g.op("Mul", [te, g.op("Exp", [log_std])])])
            else:
                z = te
            x = g.op("Concat", [z, x] if op.leaving == HALF.FIRST else [x, z], axis=1)
        elif isinstance(op, Coupling):
            x, _ = _coupling(g, op, x, (c, h, w), forward=False)
        elif isinstance(op, Permute):
            x = g.op("Gather", [x, g.ints(np.argsort(_permutation(op, c)))], axis=1)
        elif isinstance(op, InvConv1x1) and (i - 1) in folded:
            an = layers[i - 1].op
            s, b = np.asarray(an.scale, np.float64), np.asarray(an.bias, np.float64)
            w_inv = np.linalg.inv(op.matrix())
            x = _conv1x1(g, x, w_inv / s[:, None], -b)
            i -= 1
        elif isinstance(op, InvConv1x1):
            x = _conv1x1(g, x, np.linalg.inv(op.matrix()), None)
        elif isinstance(op, ActNorm):
            s = _channel_vec(op.scale)
            x = g.op("Sub", [g.op("Mul", [x, g.const(1.0 / s)]), g.const(_channel_vec(op.bias))])
        elif isinstance(op, Squeeze):
            x = _squeeze(g, x, (c, h, w), op.order, forward=False)
        elif isinstance(op, Flatten):
            x = g.reshape(x, [-1, c, h, w])
        elif isinstance(op, Logit):
            x, _ = _logit(g, x, op, forward=False)
        i -= 1
    return {"x": x}


def export(model, direction: str, batch) -> onnx.ModelProto:
    """The ONNX model of one direction ("encode" or "decode"); batch is an int or "dynamic"."""
    if direction not in ("encode", "decode"):
        raise ConversionError(f"direction must be encode or decode, not {direction!r}")
    if batch != "dynamic" and not (isinstance(batch, int) and batch >= 1):
        raise ConversionError(f"batch must be a positive integer or 'dynamic', not {batch!r}")
    shapes = trace(model)
    n = "N" if batch == "dynamic" else batch
    c, h, w = model.image.shape
    dims = c * h * w
    top = model.layers[-1].op
    conditional = isinstance(top, TopPrior) and top.class_offsets is not None
    g = _Graph()
    label = "label" if conditional else None
    label_input = [helper.make_tensor_value_info("label", TensorProto.INT64, [n])] if conditional else []
    if direction == "encode":
        outputs = _encoder(g, model, shapes, label)
        inputs = [helper.make_tensor_value_info("x", TensorProto.FLOAT, [n, c, h, w])] + label_input
        out_shapes = {"z": [n, dims], "log_p": [n], "log_det": [n], "bits_per_dim": [n]}
    else:
        outputs = _decoder(g, model, shapes, label)
        inputs = [helper.make_tensor_value_info("eps", TensorProto.FLOAT, [n, dims]),
                  helper.make_tensor_value_info("temperature", TensorProto.FLOAT, [])] + label_input
        out_shapes = {"x": [n, c, h, w]}
    # Rename each final tensor to its public name.
    for public, internal in outputs.items():
        g.nodes.append(helper.make_node("Identity", [internal], [public]))
    graph = helper.make_graph(
        g.nodes, f"flow_{direction}", inputs,
        [helper.make_tensor_value_info(k, TensorProto.FLOAT, v) for k, v in out_shapes.items()],
        g.initializers)
    proto = helper.make_model(graph, opset_imports=[helper.make_opsetid("", OPSET)],
                              producer_name="flowrt converters")
    proto.ir_version = 8   # the IR version of opset 17 (onnx 1.12)
    meta = dict(model.metadata)
    for key, value in (("flowrt.direction", direction), ("flowrt.n_bits", str(model.image.n_bits)),
                       ("flowrt.image", f"{c}x{h}x{w}"),
                       ("flowrt.source", meta.get("source", ""))):
        entry = proto.metadata_props.add()
        entry.key, entry.value = key, value
    onnx.checker.check_model(proto)
    return proto


def export_to_file(model, direction: str, batch, path: str) -> None:
    proto = export(model, direction, batch)
    onnx.save(proto, path)
