"""A float64 NumPy evaluator of .flow models: encoder, decoder, decoder from noise.

It follows schema/flow.fbs literally, layer by layer, with no folding or fusing, so that it can
serve as an independent check of libflowrt and of the ONNX graphs. Conventions are the C API's:
x is NCHW in the network's range, z is per image the latents in the order they leave the flow
(CHW each, flattened), log_p includes the log-determinant.
"""
import math
from dataclasses import dataclass
from typing import List, Optional

import numpy as np

from .model_ir import (ActNorm, AFFINE_FORM, Conv2d, COUPLING_TYPE, Coupling, Flatten, HALF,
                       InvConv1x1, Logit, OutputScale, PADDING, PERMUTE_KIND, Permute,
                       PRIOR_LAYOUT, ReLU, ResidualAdd, SCALE_FUNCTION, SHIFT_SCALE_SPLIT,
                       SQUEEZE_ORDER, Split, Squeeze, TOP_PRIOR_KIND, TopPrior, checkerboard_mask)
from .shapes import trace

_HALF_LOG_2PI = 0.5 * math.log(2.0 * math.pi)


def pixels_to_x(pixels: np.ndarray, n_bits: int) -> np.ndarray:
    """uint8 pixels -> the network's input at the bin centre (top n_bits bits kept)."""
    bins = 2.0 ** n_bits
    p = np.floor(np.asarray(pixels, dtype=np.float64) / 2.0 ** (8 - n_bits))
    return p / bins - 0.5 + 0.5 / bins


def bits_per_dim(log_p: np.ndarray, dims: int, n_bits: int) -> np.ndarray:
    return -(log_p - dims * n_bits * math.log(2.0)) / (dims * math.log(2.0))


def squeeze(x: np.ndarray, order: int) -> np.ndarray:
    n, c, h, w = x.shape
    t = x.reshape(n, c, h // 2, 2, w // 2, 2)           # n c y i x j
    if order == SQUEEZE_ORDER.CHANNEL_MAJOR:
        t = t.transpose(0, 1, 3, 5, 2, 4)               # n c i j y x -> c*4 + 2i + j
    else:
        t = t.transpose(0, 3, 5, 1, 2, 4)               # n i j c y x -> (2i + j)*C + c
    return t.reshape(n, 4 * c, h // 2, w // 2)


def unsqueeze(y: np.ndarray, order: int) -> np.ndarray:
    n, c4, h, w = y.shape
    c = c4 // 4
    if order == SQUEEZE_ORDER.CHANNEL_MAJOR:
        t = y.reshape(n, c, 2, 2, h, w).transpose(0, 1, 4, 2, 5, 3)
    else:
        t = y.reshape(n, 2, 2, c, h, w).transpose(0, 3, 4, 1, 5, 2)
    return t.reshape(n, c, 2 * h, 2 * w)


def conv2d(x: np.ndarray, op: Conv2d) -> np.ndarray:
    """Stride-1 "same" convolution with the op's padding mode, in float64."""
    weight = np.asarray(op.weight, dtype=np.float64)
    o, _, kh, kw = weight.shape
    ph, pw = (kh - 1) // 2, (kw - 1) // 2
    n, c, h, w = x.shape
    value = op.pad_value if op.padding == PADDING.CONSTANT else 0.0
    padded = np.full((n, c, h + 2 * ph, w + 2 * pw), value, dtype=np.float64)
    padded[:, :, ph:ph + h, pw:pw + w] = x
    if op.padding == PADDING.EDGE_CHANNEL:
        edge = np.ones((n, 1, h + 2 * ph, w + 2 * pw))
        edge[:, :, ph:ph + h, pw:pw + w] = 0.0
        padded = np.concatenate([padded, edge], axis=1)
    windows = np.lib.stride_tricks.sliding_window_view(padded, (kh, kw), axis=(2, 3))
    cols = windows.transpose(0, 2, 3, 1, 4, 5).reshape(n * h * w, -1)   # [NHW, I*kh*kw]
    out = cols @ weight.reshape(o, -1).T
    if op.bias is not None:
        out += np.asarray(op.bias, dtype=np.float64)
    return out.reshape(n, h, w, o).transpose(0, 3, 1, 2)


def run_net(ops, x: np.ndarray) -> np.ndarray:
    inputs = []   # every op's input (no op changes an array in place), for the residual adds
    for op in ops:
        inputs.append(x)
        if isinstance(op, ResidualAdd):
            x = x + inputs[op.from_]
        elif isinstance(op, Conv2d):
            x = conv2d(x, op)
        elif isinstance(op, ReLU):
            x = np.maximum(x, 0.0)
        elif isinstance(op, ActNorm):
            x = _channel(op.scale) * (x + _channel(op.bias))
        elif isinstance(op, OutputScale):
            x = x * np.exp(op.factor * _channel(op.log_scale))
    return x


def _channel(v) -> np.ndarray:
    return np.asarray(v, dtype=np.float64)[None, :, None, None]


def halves(x: np.ndarray, first_is_a: bool):
    c = x.shape[1] // 2
    a, b = x[:, :c], x[:, c:]
    return (a, b) if first_is_a else (b, a)


def shift_and_raw_scale(h: np.ndarray, split: int):
    cb = h.shape[1] // 2
    if split == SHIFT_SCALE_SPLIT.SHIFT_SCALE_HALVES:
        return h[:, :cb], h[:, cb:]
    if split == SHIFT_SCALE_SPLIT.SCALE_SHIFT_HALVES:
        return h[:, cb:], h[:, :cb]
    if split == SHIFT_SCALE_SPLIT.SHIFT_SCALE_INTERLEAVED:
        return h[:, 0::2], h[:, 1::2]
    return h[:, 1::2], h[:, 0::2]


def log_scale(raw: np.ndarray, op: Coupling) -> np.ndarray:
    """log s for the coupling's scale function, computed without forming s (stable)."""
    a = raw + op.scale_bias
    if op.scale_fn == SCALE_FUNCTION.SIGMOID:
        return -np.logaddexp(0.0, -a)
    if op.scale_fn == SCALE_FUNCTION.TANH:
        return _channel(op.scale_weight) * np.tanh(a)
    return a


def logit_alpha(op: Logit) -> float:
    """alpha at the precision the file stores (float32), so results do not depend on whether
    the model was read back."""
    return float(np.float32(op.alpha))


def logit_forward(x: np.ndarray, op: Logit):
    """(y, per-image log|det|) of the logit layer."""
    # u = alpha + (1 - 2 alpha)(x + 1/2) = 1/2 + k x and 1 - u = 1/2 - k x with k = 1 - 2 alpha:
    # both formed without subtracting from 1.
    k = 1.0 - 2.0 * logit_alpha(op)
    log_u, log_1mu = np.log(0.5 + k * x), np.log(0.5 - k * x)
    log_det = (math.log(k) - log_u - log_1mu).reshape(x.shape[0], -1).sum(axis=1)
    return log_u - log_1mu, log_det


def logit_inverse(y: np.ndarray, op: Logit) -> np.ndarray:
    # x = (sigmoid(y) - 1/2) / (1 - 2 alpha), and sigmoid(y) - 1/2 = tanh(y / 2) / 2 without the
    # cancellation near u = 1/2.
    return 0.5 * np.tanh(0.5 * y) / (1.0 - 2.0 * logit_alpha(op))


def prior_mean_logstd(o: np.ndarray, layout: int):
    cz = o.shape[1] // 2
    if layout == PRIOR_LAYOUT.MEAN_LOGSTD_HALVES:
        return o[:, :cz], o[:, cz:]
    return o[:, 0::2], o[:, 1::2]


def gaussian_log_p(z, mean, log_std) -> np.ndarray:
    """Per image sum of log N(z; mean, exp(log_std)^2)."""
    lp = -_HALF_LOG_2PI - log_std - 0.5 * (z - mean) ** 2 * np.exp(-2.0 * log_std)
    return lp.reshape(z.shape[0], -1).sum(axis=1)


def _transform(op: Coupling, b: np.ndarray, h: np.ndarray, forward: bool, keep):
    """(x_b transformed by the net output h, per-image log|det|). `keep` (a boolean mask of the
    positions that are transformed, or None for all) zeroes the shift and log-scale elsewhere,
    where the transform is then exactly the identity."""
    n = b.shape[0]
    if op.type == COUPLING_TYPE.ADDITIVE:
        if keep is not None:
            h = np.where(keep, h, 0.0)
        return (b + h if forward else b - h), np.zeros(n)
    t, raw = shift_and_raw_scale(h, op.split)
    ls = log_scale(raw, op)
    if keep is not None:
        t, ls = np.where(keep, t, 0.0), np.where(keep, ls, 0.0)
    s = np.exp(ls)
    if op.form == AFFINE_FORM.SHIFT_THEN_SCALE:
        b = (b + t) * s if forward else b / s - t
    else:
        b = b * s + t if forward else (b - t) / s
    return b, ls.reshape(n, -1).sum(axis=1)


@dataclass
class EncodeResult:
    z: np.ndarray              # [N, D]
    latents: List[np.ndarray]  # per level [N, C, H, W], leaving order
    log_p: np.ndarray          # [N], nats, log-determinant included
    log_det: np.ndarray        # [N]
    bits_per_dim: np.ndarray   # [N]


class Evaluator:
    def __init__(self, model):
        self.model = model
        self.shapes = trace(model)
        self.latent_shapes = [s.latent for s in self.shapes if s.latent is not None]
        self.dims = int(np.prod(model.image.shape))
        self._w = {}
        self._w_inv = {}
        for i, layer in enumerate(model.layers):
            if isinstance(layer.op, InvConv1x1):
                w = layer.op.matrix()
                self._w[i] = w
                self._w_inv[i] = np.linalg.inv(w)

    # ---- priors ------------------------------------------------------------------------
    def _top_prior(self, op: TopPrior, n: int, labels):
        shape = self.shapes[-1].out_shape
        if op.kind == TOP_PRIOR_KIND.STANDARD_NORMAL:
            mean, log_std = np.zeros((n,) + shape), np.zeros((n,) + shape)
        else:
            mean = np.broadcast_to(np.asarray(op.mean, np.float64), (n,) + shape).copy()
            log_std = np.broadcast_to(np.asarray(op.log_std, np.float64), (n,) + shape).copy()
        if op.class_offsets is not None:
            if labels is None:
                raise ValueError("this model is class-conditional: labels are required")
            labels = np.asarray(labels)
            if np.any(labels < 0) or np.any(labels >= op.class_offsets.shape[0]):
                raise ValueError("a label is out of range")
            off = np.asarray(op.class_offsets, np.float64)[labels]
            c = shape[0]
            mean += off[:, :c, None, None]
            log_std += off[:, c:, None, None]
        return mean, log_std

    @staticmethod
    def _split_prior(op: Split, h: np.ndarray):
        if not op.prior:
            return np.zeros_like(h), np.zeros_like(h)
        return prior_mean_logstd(run_net(op.prior, h), op.prior_layout)

    # ---- encoder -----------------------------------------------------------------------
    def encode(self, x: np.ndarray, labels=None) -> EncodeResult:
        x = np.asarray(x, dtype=np.float64)
        n = x.shape[0]
        log_det = np.zeros(n)
        log_prior = np.zeros(n)
        latents = []
        for i, layer in enumerate(self.model.layers):
            op = layer.op
            hw = x.shape[2] * x.shape[3]
            if isinstance(op, Squeeze):
                x = squeeze(x, op.order)
            elif isinstance(op, ActNorm):
                x = _channel(op.scale) * (x + _channel(op.bias))
                log_det += hw * np.sum(np.log(np.abs(np.asarray(op.scale, np.float64))))
            elif isinstance(op, InvConv1x1):
                x = np.einsum("oc,nchw->nohw", self._w[i], x)
                log_det += hw * op.log_abs_det()
            elif isinstance(op, Permute):
                x = x[:, self._permutation(op, x.shape[1])]
            elif isinstance(op, Coupling):
                x, ld = self._coupling(op, x, forward=True)
                log_det += ld
            elif isinstance(op, Logit):
                x, ld = logit_forward(x, op)
                log_det += ld
            elif isinstance(op, Flatten):
                x = x.reshape(n, -1, 1, 1)
            elif isinstance(op, Split):
                first_leaves = op.leaving == HALF.FIRST
                z, h = halves(x, first_leaves)
                mean, log_std = self._split_prior(op, h)
                log_prior += gaussian_log_p(z, mean, log_std)
                latents.append(z)
                x = h
            elif isinstance(op, TopPrior):
                mean, log_std = self._top_prior(op, n, labels)
                log_prior += gaussian_log_p(x, mean, log_std)
                latents.append(x)
        log_p = log_prior + log_det
        z = np.concatenate([l.reshape(n, -1) for l in latents], axis=1)
        return EncodeResult(z, latents, log_p, log_det,
                            bits_per_dim(log_p, self.dims, self.model.image.n_bits))

    def _coupling(self, op: Coupling, x: np.ndarray, forward: bool):
        if op.checkerboard:
            return self._checkerboard_coupling(op, x, forward)
        first_is_a = op.conditioning == HALF.FIRST
        a, b = halves(x, first_is_a)
        b, log_det = _transform(op, b, run_net(op.net, a), forward, keep=None)
        out = np.concatenate([a, b] if first_is_a else [b, a], axis=1)
        return out, log_det

    @staticmethod
    def _checkerboard_coupling(op: Coupling, x: np.ndarray, forward: bool):
        # x_a = x * m is the same before and after the coupling, so the net sees the same input
        # in both directions; every channel is transformed, at the positions where m = 0 only.
        n, _, h, w = x.shape
        m = checkerboard_mask(op.conditioning, h, w)[None, None]
        net_in = x * m
        if op.mask_channel:
            net_in = np.concatenate([net_in, np.broadcast_to(m, (n, 1, h, w))], axis=1)
        return _transform(op, x, run_net(op.net, net_in), forward, keep=m == 0)

    @staticmethod
    def _permutation(op: Permute, c: int) -> np.ndarray:
        if op.kind == PERMUTE_KIND.REVERSE:
            return np.arange(c)[::-1]
        return np.asarray(op.indices, dtype=np.int64)

    # ---- decoder -----------------------------------------------------------------------
    def split_latents(self, z: np.ndarray) -> List[np.ndarray]:
        """[N, D] -> per level [N, C, H, W]."""
        z = np.asarray(z, dtype=np.float64)
        n = z.shape[0]
        out, at = [], 0
        for shape in self.latent_shapes:
            size = int(np.prod(shape))
            out.append(z[:, at:at + size].reshape((n,) + shape))
            at += size
        return out

    def decode(self, z: np.ndarray, labels=None) -> np.ndarray:
        """The flow's own latents -> x (the priors are not used)."""
        return self._decode(self.split_latents(z), None, labels)

    def decode_noise(self, eps: np.ndarray, temperature: float, labels=None) -> np.ndarray:
        """Standard-normal noise -> x, each latent = mean + temperature * std * eps."""
        return self._decode(self.split_latents(eps), float(temperature), labels)

    def _decode(self, parts, temperature: Optional[float], labels) -> np.ndarray:
        n = parts[0].shape[0]
        level = len(parts) - 1
        x = None
        for i in range(len(self.model.layers) - 1, -1, -1):
            op = self.model.layers[i].op
            if isinstance(op, TopPrior):
                x = parts[level]
                if temperature is not None:
                    mean, log_std = self._top_prior(op, n, labels)
                    x = mean + temperature * np.exp(log_std) * x
                level -= 1
            elif isinstance(op, Split):
                z = parts[level]
                if temperature is not None:
                    mean, log_std = self._split_prior(op, x)
                    z = mean + temperature * np.exp(log_std) * z
                x = np.concatenate([z, x] if op.leaving == HALF.FIRST else [x, z], axis=1)
                level -= 1
            elif isinstance(op, Coupling):
                x, _ = self._coupling(op, x, forward=False)
            elif isinstance(op, Permute):
                x = x[:, np.argsort(self._permutation(op, x.shape[1]))]
            elif isinstance(op, InvConv1x1):
                x = np.einsum("oc,nchw->nohw", self._w_inv[i], x)
            elif isinstance(op, ActNorm):
                x = x / _channel(op.scale) - _channel(op.bias)
            elif isinstance(op, Squeeze):
                x = unsqueeze(x, op.order)
            elif isinstance(op, Flatten):
                x = x.reshape((n,) + self.shapes[i].in_shape)
            elif isinstance(op, Logit):
                x = logit_inverse(x, op)
        return x
