"""A text summary of a .flow model: the same facts `flowrt info` prints.

The first lines are the machine-comparable summary, one `key: value` each, with the keys and
value forms `flowrt info` uses:

    format: 1.0
    image: 3x32x32 n_bits=5
    layers: 47
    params: 1234567
    latent_dim: 3072
    levels: 3

then the latents and one line per layer, also comparable:

    latent 0: 6x16x16
    layer 0: squeeze "block0/squeeze" 3x32x32 -> 12x16x16 params=0

(`params` counts the float values the layer's tensors store, nested net ops included), and the
metadata as `meta.KEY: VALUE`. The indented lines under a layer (its settings) are for people.
"""
from typing import List

import numpy as np

from .fbs import enum_names
from .model_ir import (ActNorm, AFFINE_FORM, Conv2d, COUPLING_TYPE, Coupling, HALF, INV_CONV_FORM,
                       InvConv1x1, LAYER_TYPE_NAMES, Logit, OutputScale, PADDING, PERMUTE_KIND,
                       Permute, PRIOR_LAYOUT, ReLU, ResidualAdd, SCALE_FUNCTION,
                       SHIFT_SCALE_SPLIT, SQUEEZE_ORDER, Split, Squeeze, TOP_PRIOR_KIND, TopPrior,
                       parameter_count)
from .shapes import trace


def _dims(shape) -> str:
    return "x".join(str(d) for d in shape)


def _name(enum_class, value) -> str:
    return enum_names(enum_class).get(value, str(value))


def _net_text(ops) -> str:
    parts = []
    for op in ops:
        if isinstance(op, Conv2d):
            o, i, kh, kw = op.weight.shape
            pad = _name(PADDING, op.padding)
            if op.padding == PADDING.CONSTANT:
                pad += f"({op.pad_value:g})"
            parts.append(f"conv{kh}x{kw}({i}->{o}, {pad}{', bias' if op.bias is not None else ''})")
        elif isinstance(op, ReLU):
            parts.append("relu")
        elif isinstance(op, ActNorm):
            parts.append("actnorm")
        elif isinstance(op, OutputScale):
            parts.append(f"scale(exp({op.factor:g}*s))")
        elif isinstance(op, ResidualAdd):
            parts.append(f"add(input of op {op.from_})")
    if any(isinstance(op, ResidualAdd) for op in ops):   # number the ops the adds refer to
        parts = [f"{k}:{p}" for k, p in enumerate(parts)]
    return " -> ".join(parts)


def _details(op) -> List[str]:
    if isinstance(op, Squeeze):
        return [f"order={_name(SQUEEZE_ORDER, op.order)}"]
    if isinstance(op, InvConv1x1):
        return [f"form={_name(INV_CONV_FORM, op.form)} log|det W|={op.log_abs_det():.6g}"]
    if isinstance(op, Permute):
        return [f"kind={_name(PERMUTE_KIND, op.kind)}"]
    if isinstance(op, Coupling):
        line = f"type={_name(COUPLING_TYPE, op.type)} conditioning={_name(HALF, op.conditioning)}"
        if op.mask_channel:
            line += " mask_channel"
        if op.type == COUPLING_TYPE.AFFINE:
            scale = f"{_name(SCALE_FUNCTION, op.scale_fn)}(raw+{op.scale_bias:g})"
            if op.scale_fn == SCALE_FUNCTION.TANH:   # log s = w * tanh(raw + bias)
                w = np.asarray(op.scale_weight, dtype=np.float64)
                scale += f" w=[{np.min(w):.4g}..{np.max(w):.4g}]"
            line += (f" split={_name(SHIFT_SCALE_SPLIT, op.split)} scale={scale}"
                     f" form={_name(AFFINE_FORM, op.form)}")
        return [line, "net: " + _net_text(op.net)]
    if isinstance(op, Logit):
        return [f"alpha={op.alpha:g}"]
    if isinstance(op, Split):
        lines = [f"leaving={_name(HALF, op.leaving)}"]
        if op.prior:
            lines += [f"prior ({_name(PRIOR_LAYOUT, op.prior_layout)}): " + _net_text(op.prior)]
        else:
            lines += ["prior: standard normal"]
        return lines
    if isinstance(op, TopPrior):
        line = f"kind={_name(TOP_PRIOR_KIND, op.kind)}"
        if op.class_offsets is not None:
            line += f" classes={op.class_offsets.shape[0]}"
        return [line]
    return []


def summary(model) -> str:
    shapes = trace(model)
    latents = [s.latent for s in shapes if s.latent is not None]
    total = sum(parameter_count(layer.op) for layer in model.layers)
    img = model.image
    lines = [
        f"format: {model.format_major}.{model.format_minor}",
        f"image: {_dims(img.shape)} n_bits={img.n_bits}",
        f"layers: {len(model.layers)}",
        f"params: {total}",
        f"latent_dim: {int(sum(np.prod(s) for s in latents))}",
        f"levels: {len(latents)}",
    ]
    for i, shape in enumerate(latents):
        lines.append(f"latent {i}: {_dims(shape)}")
    for i, (layer, s) in enumerate(zip(model.layers, shapes)):
        kind = LAYER_TYPE_NAMES[type(layer.op)]
        lines.append(f'layer {i}: {kind} "{layer.name}" {_dims(s.in_shape)} -> '
                     f"{_dims(s.out_shape)} params={parameter_count(layer.op)}")
        lines += ["    " + d for d in _details(layer.op)]
    for key, value in model.metadata:
        lines.append(f"meta.{key}: {value}")
    return "\n".join(lines)
