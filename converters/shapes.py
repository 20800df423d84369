"""Shape tracing and validation of a model: every layer's input and output (C, H, W), the
latents that leave the flow, and every rule of schema/flow.fbs that a shape or value can break.

The reader runs this on every file and the writer on every model it writes, so the evaluator
and the exporter can assume a consistent model.
"""
from dataclasses import dataclass
from typing import List, Optional, Tuple

import numpy as np

from .errors import ConversionError, layer_label
from .model_ir import (ActNorm, AFFINE_FORM, Conv2d, COUPLING_TYPE, Coupling, Flatten, HALF,
                       INV_CONV_FORM, InvConv1x1, Logit, OutputScale, PADDING, PERMUTE_KIND,
                       Permute, PRIOR_LAYOUT, ReLU, ResidualAdd, SCALE_FUNCTION, SHIFT_SCALE_SPLIT,
                       SQUEEZE_ORDER, Split, Squeeze, TOP_PRIOR_KIND, TopPrior, is_checkerboard,
                       layer_tensors)

Shape = Tuple[int, int, int]

# The same bound libflowrt's loader applies (infinity-norm condition number of every 1x1 conv W).
MAX_CONDITION_NUMBER = 1e8
# libflowrt's bound on stored log-scales (|scale_weight| of the TANH scale function among them).
MAX_ABS_LOG_SCALE = 60.0
# libflowrt's bound on the channels of any activation (a flattened image's among them).
MAX_CHANNELS = 65536


@dataclass
class LayerShapes:
    in_shape: Shape
    out_shape: Shape
    latent: Optional[Shape] = None   # what leaves the flow here (Split, TopPrior)


def _fail(where, message):
    raise ConversionError(f"{where}: {message}")


def _check_vector(where, name, t, length):
    if t is None:
        _fail(where, f"{name} is missing")
    if t.ndim != 1 or t.shape[0] != length:
        _fail(where, f"{name} has shape {list(t.shape)}, expected [{length}]")


def _check_enum(where, name, value, enum_class):
    valid = {v for k, v in vars(enum_class).items() if not k.startswith("_") and k != "UNSPECIFIED"}
    if value not in valid:
        _fail(where, f"{name} is {'unset' if value == 0 else value}; it must be one of "
                     f"{sorted(k for k, v in vars(enum_class).items() if v in valid)}")


def _check_permutation(where, name, perm, length):
    if perm is None or len(perm) != length or sorted(int(p) for p in perm) != list(range(length)):
        _fail(where, f"{name} is not a permutation of 0..{length - 1}")


def net_output_channels(ops, in_channels: int, where: str) -> int:
    """Channels out of a coupling net or prior run on `in_channels` channels."""
    if not ops:
        _fail(where, "the net is empty")
    c = in_channels
    in_channels_of = []   # the channels of every op's input, for the residual adds
    last_add = -1
    for i, op in enumerate(ops):
        at = f"{where} op {i}"
        in_channels_of.append(c)
        if isinstance(op, ResidualAdd):
            # libflowrt's rules: an earlier op's input, no overlap with the previous connection
            # (one saved activation at a time), the channel count of the current activation.
            src = op.from_
            if isinstance(src, bool) or not isinstance(src, (int, np.integer)) \
                    or not 0 <= src < i:
                _fail(at, f"residual connection from op {src} must come from an earlier op of "
                          f"the net [0, {i})")
            if src <= last_add:
                _fail(at, f"residual connection from op {src} overlaps the one that ends at op "
                          f"{last_add}")
            if in_channels_of[src] != c:
                _fail(at, f"residual connection adds {in_channels_of[src]} channels (the input "
                          f"of op {src}) to {c}")
            last_add = i
        elif isinstance(op, Conv2d):
            _check_enum(at, "padding", op.padding, PADDING)
            w = op.weight
            if w is None:
                _fail(at, "conv weight is missing")
            if w.ndim != 4:
                _fail(at, f"conv weight has rank {w.ndim}, expected 4 (OIHW)")
            expect_in = c + (1 if op.padding == PADDING.EDGE_CHANNEL else 0)
            if w.shape[1] != expect_in:
                _fail(at, f"conv weight takes {w.shape[1]} input channels, the net has {expect_in}")
            if w.shape[2] % 2 == 0 or w.shape[3] % 2 == 0:
                _fail(at, f"conv kernel {w.shape[2]}x{w.shape[3]} is not odd-sized")
            if op.bias is not None:
                _check_vector(at, "conv bias", op.bias, w.shape[0])
            c = w.shape[0]
        elif isinstance(op, ActNorm):
            _check_vector(at, "actnorm bias", op.bias, c)
            _check_vector(at, "actnorm scale", op.scale, c)
            if np.any(op.scale == 0):
                _fail(at, "actnorm scale has a zero entry")
        elif isinstance(op, OutputScale):
            _check_vector(at, "output scale", op.log_scale, c)
        elif not isinstance(op, ReLU):
            _fail(at, f"unknown net op {type(op).__name__}")
    return c


def _check_invconv(where, op: InvConv1x1, c: int):
    _check_enum(where, "form", op.form, INV_CONV_FORM)
    if op.form == INV_CONV_FORM.DENSE:
        if op.weight is None or op.weight.shape != (c, c):
            _fail(where, f"dense weight must be [{c}, {c}]")
    else:
        _check_permutation(where, "perm", op.perm, c)
        for name in ("lower", "upper"):
            t = getattr(op, name)
            if t is None or t.shape != (c, c):
                _fail(where, f"{name} must be [{c}, {c}]")
        _check_vector(where, "sign", op.sign, c)
        _check_vector(where, "log_s", op.log_s, c)
        if not np.all(np.abs(op.sign) == 1):
            _fail(where, "sign entries must be +1 or -1")
    with np.errstate(all="ignore"):   # overflow here is a finding, reported below
        w = op.matrix()
        invertible = bool(np.all(np.isfinite(w)))
        if invertible:
            try:
                sign, logdet = np.linalg.slogdet(w)
                invertible = sign != 0 and np.isfinite(logdet) and np.linalg.cond(w, np.inf) <= MAX_CONDITION_NUMBER
            except np.linalg.LinAlgError:
                invertible = False
    if not invertible:
        _fail(where, "the 1x1 convolution matrix is not invertible (or its condition number "
                     f"exceeds {MAX_CONDITION_NUMBER:g})")


def _check_coupling(where, op: Coupling, shape: Shape):
    c, h, w = shape
    _check_enum(where, "type", op.type, COUPLING_TYPE)
    _check_enum(where, "conditioning", op.conditioning, HALF)
    if op.checkerboard:
        if h * w < 2:
            _fail(where, f"a checkerboard coupling needs at least 2 positions, got {c}x{h}x{w}")
    else:
        if c % 2:
            _fail(where, f"a coupling needs an even channel count, got {c}")
        if op.mask_channel:
            _fail(where, "mask_channel is set on a channel coupling")
    affine = op.type == COUPLING_TYPE.AFFINE
    cb = op.transformed_channels(c)
    if affine:
        _check_enum(where, "split", op.split, SHIFT_SCALE_SPLIT)
        _check_enum(where, "scale_fn", op.scale_fn, SCALE_FUNCTION)
        _check_enum(where, "form", op.form, AFFINE_FORM)
        if not np.isfinite(op.scale_bias):
            _fail(where, "scale_bias is not finite")
    if affine and op.scale_fn == SCALE_FUNCTION.TANH:
        _check_vector(where, "scale_weight", op.scale_weight, cb)
        if np.any(np.abs(op.scale_weight) > MAX_ABS_LOG_SCALE):
            _fail(where, f"scale_weight is out of range (|log scale| > {MAX_ABS_LOG_SCALE:g})")
    elif op.scale_weight is not None:
        _fail(where, "scale_weight is set, but the scale function is not TANH")
    got = net_output_channels(op.net, op.net_input_channels(c), where + " net")
    want = 2 * cb if affine else cb
    if got != want:
        kind = ("a checkerboard " if op.checkerboard else "a ") + (
            "affine" if affine else "additive")
        _fail(where, f"the net outputs {got} channels, {kind} coupling on {c} channels needs "
                     f"{want}")


def trace(model) -> List[LayerShapes]:
    """Validates the model and returns the shapes at every layer."""
    img = model.image
    if not (img.channels >= 1 and img.height >= 1 and img.width >= 1):
        raise ConversionError(f"image shape {img.channels}x{img.height}x{img.width} is empty")
    if not 1 <= img.n_bits <= 8:
        raise ConversionError(f"n_bits is {img.n_bits}, expected 1..8")
    if not model.layers:
        raise ConversionError("the model has no layers")
    shape: Shape = img.shape
    result = []
    for index, layer in enumerate(model.layers):
        where = layer_label(index, layer.name)
        op = layer.op
        for t in layer_tensors(op):
            if not np.all(np.isfinite(t)):
                _fail(where, "a tensor holds NaN or infinity")
        c, h, w = shape
        latent = None
        if isinstance(op, Squeeze):
            _check_enum(where, "order", op.order, SQUEEZE_ORDER)
            if h % 2 or w % 2:
                _fail(where, f"cannot squeeze {c}x{h}x{w}: height and width must be even")
            out = (4 * c, h // 2, w // 2)
        elif isinstance(op, ActNorm):
            net_output_channels([op], c, where)
            out = shape
        elif isinstance(op, InvConv1x1):
            _check_invconv(where, op, c)
            out = shape
        elif isinstance(op, Permute):
            _check_enum(where, "kind", op.kind, PERMUTE_KIND)
            if op.kind == PERMUTE_KIND.INDICES:
                _check_permutation(where, "indices", op.indices, c)
            out = shape
        elif isinstance(op, Coupling):
            _check_coupling(where, op, shape)
            out = shape
        elif isinstance(op, Split):
            _check_enum(where, "leaving", op.leaving, HALF)
            if is_checkerboard(op.leaving):
                _fail(where, "a split leaves a channel half, not a checkerboard")
            if c % 2:
                _fail(where, f"a split needs an even channel count, got {c}")
            if op.prior:
                _check_enum(where, "prior_layout", op.prior_layout, PRIOR_LAYOUT)
                got = net_output_channels(op.prior, c // 2, where + " prior")
                if got != c:
                    _fail(where, f"the prior outputs {got} channels, expected {c} (mean and log-std)")
            out = (c // 2, h, w)
            latent = out
        elif isinstance(op, TopPrior):
            if index != len(model.layers) - 1:
                _fail(where, "the top prior must be the last layer")
            _check_enum(where, "kind", op.kind, TOP_PRIOR_KIND)
            if op.kind == TOP_PRIOR_KIND.LEARNED:
                for name in ("mean", "log_std"):
                    t = getattr(op, name)
                    if t is None or t.shape != shape:
                        _fail(where, f"{name} must be [{c}, {h}, {w}]")
            if op.class_offsets is not None and (op.class_offsets.ndim != 2
                                                 or op.class_offsets.shape[1] != 2 * c
                                                 or op.class_offsets.shape[0] < 1):
                _fail(where, f"class_offsets must be [n_classes, {2 * c}]")
            out = shape
            latent = shape
        elif isinstance(op, Logit):
            if index != 0:
                _fail(where, "logit must be the first layer")
            # The file stores alpha as a float32: that value is the one checked and used.
            if not 0.0 < np.float32(op.alpha) < 0.5:
                _fail(where, f"alpha = {op.alpha:g} is out of range (0, 0.5)")
            out = shape
        elif isinstance(op, Flatten):
            out = (c * h * w, 1, 1)
            if out[0] > MAX_CHANNELS:
                _fail(where, f"too many channels after flatten: {out[0]} (limit {MAX_CHANNELS})")
        else:
            _fail(where, f"unknown layer type {type(op).__name__}")
        result.append(LayerShapes(shape, out, latent))
        shape = out
    if not isinstance(model.layers[-1].op, TopPrior):
        raise ConversionError("the last layer must be the top prior")
    return result


def latent_shapes(model) -> List[Shape]:
    """Shapes of the latents in the order they leave the flow (the top prior's last)."""
    return [s.latent for s in trace(model) if s.latent is not None]


def latent_dim(model) -> int:
    return int(sum(int(np.prod(s)) for s in latent_shapes(model)))
