"""Imports a rosinality/glow-pytorch checkpoint (the state_dict of its `Glow` model).

How glow-pytorch's model.py maps onto .flow layers:
- Block.forward squeezes with view(b, c, h/2, 2, w/2, 2).permute(0, 1, 3, 5, 2, 4): input
  (c, 2y+i, 2x+j) lands in channel c*4 + 2i + j, the CHANNEL_MAJOR order.
- ActNorm computes scale * (input + loc): our ActNorm with bias = loc, scale = scale.
- InvConv2dLU: W = w_p @ (w_l * l_mask + I) @ (w_u * u_mask + diag(s_sign * exp(w_s))), our LU
  form with P taken from the w_p matrix (P[i][perm[i]] = 1). InvConv2d: dense weight[out][in].
- AffineCoupling: in_a, in_b = input.chunk(2, 1) (in_a conditions, the FIRST half); its net is
  Conv2d 3x3 (zero padding) -> ReLU -> Conv2d 1x1 -> ReLU -> ZeroConv2d, and ZeroConv2d pads
  with the value 1, convolves (3x3, bias) and multiplies by exp(3 * scale). Affine:
  log_s, t = net(in_a).chunk(2, 1) (scale first), s = sigmoid(log_s + 2), out_b = (in_b + t) * s.
  Additive: out_b = in_b + net(in_a), the net having C/2 outputs.
- Split: out, z_new = out.chunk(2, 1): the SECOND half leaves, and its prior is the block's
  ZeroConv2d on the kept half, whose output chunks into mean, log_sd (halves).
- The last block does not split; its prior is that ZeroConv2d run on zeros. It does not depend
  on the input, so it becomes a LEARNED top prior, computed here in float64 (the ones the conv
  pads with make it vary at the borders).
- Glow builds its last block with the default conv_lu=True whatever conv_lu the model was built
  with, so --no-lu describes every block but the last; the last block's form is read off its keys.
"""
import os
import re
from dataclasses import dataclass
from typing import Dict, List

import numpy as np

from .errors import ConversionError
from .model_ir import (ActNorm, AFFINE_FORM, Conv2d, COUPLING_TYPE, Coupling, HALF, INV_CONV_FORM,
                       ImageSpec, InvConv1x1, Layer, Model, OutputScale, PADDING, PRIOR_LAYOUT,
                       ReLU, SCALE_FUNCTION, SHIFT_SCALE_SPLIT, SQUEEZE_ORDER, Split, Squeeze,
                       TOP_PRIOR_KIND, TopPrior, f32)
from .pickle_reader import CheckpointTensor, load_state_dict

PRODUCER = "flowrt converters glow-pytorch"
_FLOAT_DTYPES = {"FloatStorage", "DoubleStorage", "HalfStorage", "BFloat16Storage"}
_DTYPE_NAMES = {"LongStorage": "int64", "IntStorage": "int32", "ShortStorage": "int16",
                "CharStorage": "int8", "ByteStorage": "uint8", "BoolStorage": "bool"}
_LU_BUFFERS = ("u_mask", "l_mask", "l_eye")   # deterministic buffers; checked when present
_F32_MAX = float(np.finfo(np.float32).max)


@dataclass
class GlowConfig:
    channels: int
    height: int
    width: int
    levels: int     # glow-pytorch n_block
    depth: int      # glow-pytorch n_flow
    affine: bool = False
    lu: bool = True
    n_bits: int = 8


class _Params:
    """The state dict, with every lookup checked and every key accounted for."""

    def __init__(self, state: Dict[str, CheckpointTensor]):
        self.state = state
        self.used = set()

    def has(self, key):
        return key in self.state

    def get(self, key, shape) -> np.ndarray:
        t = self.state.get(key)
        if t is None:
            raise ConversionError(f"the checkpoint lacks '{key}'")
        self.used.add(key)
        if t.torch_dtype not in _FLOAT_DTYPES:
            raise ConversionError(f"'{key}' holds {_DTYPE_NAMES.get(t.torch_dtype, t.torch_dtype)} "
                                  "values, expected floating point")
        if tuple(t.shape) != tuple(shape):
            raise ConversionError(f"'{key}' has shape {list(t.shape)}, expected {list(shape)}")
        with np.errstate(invalid="ignore"):   # widening a signaling NaN; reported below
            values = t.array.astype(np.float64)
        if not np.all(np.isfinite(values)):
            raise ConversionError(f"'{key}' holds NaN or infinity")
        if not np.all(np.abs(values) <= _F32_MAX):   # a double storage: .flow stores float32
            raise ConversionError(f"'{key}' holds values beyond the float32 range")
        return values

    def ignore(self, key):
        self.used.add(key)


def _zero_conv(p: _Params, prefix: str, c_in: int, c_out: int):
    """ZeroConv2d -> [Conv2d (pad with 1), OutputScale(factor 3)] and its float64 parts."""
    w = p.get(prefix + ".conv.weight", (c_out, c_in, 3, 3))
    b = p.get(prefix + ".conv.bias", (c_out,))
    s = p.get(prefix + ".scale", (1, c_out, 1, 1)).reshape(c_out)
    ops = [Conv2d(f32(w), f32(b), PADDING.CONSTANT, 1.0), OutputScale(f32(s), 3.0)]
    return ops, (w, b, s)


def _constant_prior(w, b, s, c: int, h: int, width: int):
    """ZeroConv2d applied to zeros [c, h, width] (padded with ones), in float64."""
    padded = np.zeros((c, h + 2, width + 2))
    padded[:, 0, :] = padded[:, -1, :] = 1.0
    padded[:, :, 0] = padded[:, :, -1] = 1.0
    out = np.empty((w.shape[0], h, width))
    with np.errstate(over="ignore", invalid="ignore"):   # the caller checks the range
        for o in range(w.shape[0]):
            acc = np.full((h, width), b[o])
            for i in range(3):
                for j in range(3):
                    acc += np.tensordot(w[o, :, i, j], padded[:, i:i + h, j:j + width], axes=1)
            out[o] = acc
        return out * np.exp(3.0 * s)[:, None, None]


def _lu_invconv(p: _Params, prefix: str, c: int) -> InvConv1x1:
    w_p = p.get(prefix + ".w_p", (c, c))
    w_l = p.get(prefix + ".w_l", (c, c))
    w_u = p.get(prefix + ".w_u", (c, c))
    w_s = p.get(prefix + ".w_s", (c,))
    s_sign = p.get(prefix + ".s_sign", (c,))
    standard = {
        "u_mask": np.triu(np.ones((c, c)), 1),
        "l_mask": np.tril(np.ones((c, c)), -1),
        "l_eye": np.eye(c),
    }
    masks = {}
    for name in _LU_BUFFERS:
        key = f"{prefix}.{name}"
        masks[name] = standard[name]
        if p.has(key):
            masks[name] = p.get(key, (c, c))
            if not np.array_equal(masks[name], standard[name]):
                raise ConversionError(f"'{key}' differs from glow-pytorch's fixed {name}; this "
                                      "checkpoint is not a plain InvConv2dLU")
    if not (np.all((w_p == 0) | (w_p == 1)) and np.all(w_p.sum(0) == 1)
            and np.all(w_p.sum(1) == 1)):
        raise ConversionError(f"'{prefix}.w_p' is not a permutation matrix")
    if not np.all(np.abs(s_sign) == 1):
        raise ConversionError(f"'{prefix}.s_sign' has entries other than +1 and -1")
    perm = np.argmax(w_p, axis=1).astype(np.int32)
    return InvConv1x1(INV_CONV_FORM.LU, perm=perm, lower=f32(w_l * masks["l_mask"]),
                      upper=f32(w_u * masks["u_mask"]), sign=f32(s_sign), log_s=f32(w_s))


def _coupling(p: _Params, prefix: str, c: int, affine: bool) -> Coupling:
    first = p.state.get(prefix + ".net.0.weight")
    if first is None:
        raise ConversionError(f"the checkpoint lacks '{prefix}.net.0.weight'")
    width = first.shape[0]
    out_key = prefix + ".net.4.conv.weight"
    if out_key in p.state:
        produced = p.state[out_key].shape[0]
        if produced != (c if affine else c // 2):
            actual = "affine" if produced == c else "additive" if produced == c // 2 else None
            hint = f"; the checkpoint is {actual}: {'pass' if actual == 'affine' else 'drop'} " \
                   "--affine" if actual else ""
            raise ConversionError(f"'{out_key}' has {produced} output channels, an "
                                  f"{'affine' if affine else 'additive'} coupling on {c} channels "
                                  f"has {c if affine else c // 2}{hint}")
    w0 = p.get(prefix + ".net.0.weight", (width, c // 2, 3, 3))
    b0 = p.get(prefix + ".net.0.bias", (width,))
    w2 = p.get(prefix + ".net.2.weight", (width, width, 1, 1))
    b2 = p.get(prefix + ".net.2.bias", (width,))
    zero_ops, _ = _zero_conv(p, prefix + ".net.4", width, c if affine else c // 2)
    net = [Conv2d(f32(w0), f32(b0), PADDING.ZEROS), ReLU(), Conv2d(f32(w2), f32(b2), PADDING.ZEROS),
           ReLU()] + zero_ops
    if affine:
        return Coupling(COUPLING_TYPE.AFFINE, HALF.FIRST, net, SHIFT_SCALE_SPLIT.SCALE_SHIFT_HALVES,
                        SCALE_FUNCTION.SIGMOID, 2.0, AFFINE_FORM.SHIFT_THEN_SCALE)
    return Coupling(COUPLING_TYPE.ADDITIVE, HALF.FIRST, net)


def build_model(state: Dict[str, CheckpointTensor], cfg: GlowConfig, source_name: str) -> Model:
    """The .flow model of a glow-pytorch state dict, checked against the architecture flags."""
    blocks = {int(m.group(1)) for k in state for m in [re.match(r"blocks\.(\d+)\.", k)] if m}
    if not blocks:
        raise ConversionError("the checkpoint has no 'blocks.N.' entries: not a glow-pytorch Glow "
                              "state_dict")
    if blocks != set(range(cfg.levels)):
        raise ConversionError(f"--levels {cfg.levels} does not match the checkpoint, which has "
                              f"{len(blocks)} blocks")
    for b in range(cfg.levels):
        flows = {int(m.group(1)) for k in state
                 for m in [re.match(rf"blocks\.{b}\.flows\.(\d+)\.", k)] if m}
        if flows != set(range(cfg.depth)):
            raise ConversionError(f"--depth {cfg.depth} does not match the checkpoint, whose block "
                                  f"{b} has {len(flows)} flows")
    if cfg.height % (1 << cfg.levels) or cfg.width % (1 << cfg.levels):
        raise ConversionError(f"--image {cfg.channels}x{cfg.height}x{cfg.width}: height and width "
                              f"must be divisible by 2^levels = {1 << cfg.levels}")
    if not 1 <= cfg.n_bits <= 8:
        raise ConversionError(f"--n-bits {cfg.n_bits} is outside 1..8")
    loc0 = state.get("blocks.0.flows.0.actnorm.loc")
    if loc0 is not None and loc0.shape[1:2] != (4 * cfg.channels,):
        raise ConversionError(f"--image has {cfg.channels} channels, but the checkpoint's first "
                              f"actnorm has {loc0.shape[1] if len(loc0.shape) > 1 else '?'} = "
                              "4 x image channels")

    p = _Params(state)
    layers: List[Layer] = []
    c, h, w = cfg.channels, cfg.height, cfg.width
    last_block_lu = None
    for b in range(cfg.levels):
        last = b == cfg.levels - 1
        c, h, w = 4 * c, h // 2, w // 2
        layers.append(Layer(f"block{b}/squeeze", Squeeze(SQUEEZE_ORDER.CHANNEL_MAJOR)))
        for f in range(cfg.depth):
            prefix = f"blocks.{b}.flows.{f}"
            name = f"block{b}/flow{f}"
            loc = p.get(prefix + ".actnorm.loc", (1, c, 1, 1)).reshape(c)
            scale = p.get(prefix + ".actnorm.scale", (1, c, 1, 1)).reshape(c)
            if np.any(scale == 0):
                raise ConversionError(f"'{prefix}.actnorm.scale' has a zero entry")
            p.ignore(prefix + ".actnorm.initialized")
            layers.append(Layer(name + "/actnorm", ActNorm(f32(loc), f32(scale))))

            has_lu = p.has(prefix + ".invconv.w_p")
            has_dense = p.has(prefix + ".invconv.weight")
            if has_lu == has_dense:
                raise ConversionError(f"'{prefix}.invconv' has {'both' if has_lu else 'neither'} "
                                      "LU parameters (w_p, w_l, w_s, w_u) and a dense weight")
            if not last and has_lu != cfg.lu:
                raise ConversionError(
                    f"'{prefix}.invconv' is {'an LU' if has_lu else 'a dense'} 1x1 conv, but "
                    f"{'--no-lu was' if not cfg.lu else 'the flags (no --no-lu) were'} given; "
                    f"{'drop' if has_lu else 'pass'} --no-lu")
            if last:
                last_block_lu = has_lu
            if has_lu:
                inv = _lu_invconv(p, prefix + ".invconv", c)
            else:
                weight = p.get(prefix + ".invconv.weight", (c, c, 1, 1)).reshape(c, c)
                inv = InvConv1x1(INV_CONV_FORM.DENSE, weight=f32(weight))
            layers.append(Layer(name + "/invconv", inv))
            layers.append(Layer(name + "/coupling", _coupling(p, prefix + ".coupling", c, cfg.affine)))
        if not last:
            prior, _ = _zero_conv(p, f"blocks.{b}.prior", c // 2, c)
            layers.append(Layer(f"block{b}/split",
                                Split(HALF.SECOND, prior, PRIOR_LAYOUT.MEAN_LOGSTD_HALVES)))
            c //= 2
        else:
            _, (pw, pb, ps) = _zero_conv(p, f"blocks.{b}.prior", c, 2 * c)
            out = _constant_prior(pw, pb, ps, c, h, w)
            if not np.all(np.abs(out) <= _F32_MAX):
                raise ConversionError(f"the top prior that 'blocks.{b}.prior' gives is beyond the "
                                      "float32 range")
            layers.append(Layer(f"block{b}/prior",
                                TopPrior(TOP_PRIOR_KIND.LEARNED, f32(out[:c]), f32(out[c:]))))

    unused = sorted(set(state) - p.used)
    if unused:
        raise ConversionError(f"the checkpoint has entries glow-pytorch's Glow does not: "
                              f"{', '.join(unused[:5])}{' ...' if len(unused) > 5 else ''}")
    metadata = [
        ("producer", PRODUCER),
        ("source", source_name),
        ("source_format", "glow-pytorch state_dict (torch zip)"),
        ("glow_pytorch.n_block", str(cfg.levels)),
        ("glow_pytorch.n_flow", str(cfg.depth)),
        ("glow_pytorch.affine", str(cfg.affine).lower()),
        ("glow_pytorch.conv_lu", str(cfg.lu).lower()),
        ("glow_pytorch.last_block_conv_lu", str(bool(last_block_lu)).lower()),
    ]
    return Model(ImageSpec(cfg.channels, cfg.height, cfg.width, cfg.n_bits), layers, metadata)


def convert(checkpoint_path: str, cfg: GlowConfig) -> Model:
    state = load_state_dict(checkpoint_path)
    return build_model(state, cfg, os.path.basename(checkpoint_path))
