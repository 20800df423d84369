"""In-memory form of a .flow model, shared by the importers, the writer, the reader, the NumPy
evaluator, the ONNX exporter and the inspector.

It mirrors schema/flow.fbs one class per table. Enum fields hold the schema's integer values
(the generated enum classes in converters.fbs name them). Tensors are float32 NumPy arrays, the
exact values a .flow file stores, so evaluating a model before writing it and after reading it
back gives identical results.
"""
from dataclasses import dataclass, field
from typing import List, Optional, Tuple

import numpy as np

from .fbs import (AffineForm, CouplingType, Half, InvConvForm, PaddingMode, PermuteKind,
                  PriorLayout, ScaleFunction, ShiftScaleSplit, SqueezeOrder, TopPriorKind)

# Short aliases for the generated enum classes.
SQUEEZE_ORDER = SqueezeOrder.SqueezeOrder
INV_CONV_FORM = InvConvForm.InvConvForm
PERMUTE_KIND = PermuteKind.PermuteKind
PADDING = PaddingMode.PaddingMode
COUPLING_TYPE = CouplingType.CouplingType
HALF = Half.Half
SHIFT_SCALE_SPLIT = ShiftScaleSplit.ShiftScaleSplit
SCALE_FUNCTION = ScaleFunction.ScaleFunction
AFFINE_FORM = AffineForm.AffineForm
PRIOR_LAYOUT = PriorLayout.PriorLayout
TOP_PRIOR_KIND = TopPriorKind.TopPriorKind


def f32(array) -> np.ndarray:
    """A C-contiguous float32 copy: the precision a .flow file stores."""
    return np.ascontiguousarray(np.asarray(array, dtype=np.float64).astype(np.float32))


@dataclass
class ImageSpec:
    channels: int
    height: int
    width: int
    n_bits: int = 8

    @property
    def shape(self) -> Tuple[int, int, int]:
        return (self.channels, self.height, self.width)


# ---- layers of the flow ------------------------------------------------------------------

@dataclass
class Squeeze:
    order: int


@dataclass
class ActNorm:
    """y = scale * (x + bias). Also a net op."""
    bias: np.ndarray
    scale: np.ndarray


@dataclass
class InvConv1x1:
    form: int
    weight: Optional[np.ndarray] = None      # DENSE: [C, C]
    perm: Optional[np.ndarray] = None        # LU: int32 [C], (P v)[i] = v[perm[i]]
    lower: Optional[np.ndarray] = None       # LU: [C, C], strict lower triangle used
    upper: Optional[np.ndarray] = None       # LU: [C, C], strict upper triangle used
    sign: Optional[np.ndarray] = None        # LU: [C]
    log_s: Optional[np.ndarray] = None       # LU: [C]

    @property
    def channels(self) -> int:
        return int((self.weight if self.form == INV_CONV_FORM.DENSE else self.log_s).shape[0])

    def matrix(self) -> np.ndarray:
        """W in float64."""
        if self.form == INV_CONV_FORM.DENSE:
            return np.asarray(self.weight, dtype=np.float64)
        c = self.channels
        p = np.zeros((c, c))
        p[np.arange(c), np.asarray(self.perm)] = 1.0
        lower = np.tril(np.asarray(self.lower, dtype=np.float64), -1) + np.eye(c)
        upper = np.triu(np.asarray(self.upper, dtype=np.float64), 1) + np.diag(
            np.asarray(self.sign, dtype=np.float64) * np.exp(np.asarray(self.log_s, dtype=np.float64)))
        return p @ lower @ upper

    def log_abs_det(self) -> float:
        """log|det W| in float64 (exactly sum(log_s) for the LU form)."""
        if self.form == INV_CONV_FORM.LU:
            return float(np.sum(np.asarray(self.log_s, dtype=np.float64)))
        return float(np.linalg.slogdet(self.matrix())[1])


@dataclass
class Permute:
    kind: int
    indices: Optional[np.ndarray] = None     # INDICES: int32 [C], y[c] = x[indices[c]]


# ---- ops of a coupling net or a split prior ------------------------------------------------

@dataclass
class Conv2d:
    weight: np.ndarray                       # [O, I, kh, kw]
    bias: Optional[np.ndarray]               # [O] or None
    padding: int
    pad_value: float = 0.0


@dataclass
class ReLU:
    pass


@dataclass
class OutputScale:
    log_scale: np.ndarray                    # [C]
    factor: float = 3.0


@dataclass
class ResidualAdd:
    """y = x + the input of op `from_` of the same net (format 1.2; from_ = 0: the net's input).
    The schema's field is `from`, a Python keyword; the generated code spells it From_ too."""
    from_: int


def has_residual(ops) -> bool:
    return any(isinstance(op, ResidualAdd) for op in ops)


@dataclass
class Coupling:
    type: int
    conditioning: int
    net: List[object]
    split: int = SHIFT_SCALE_SPLIT.UNSPECIFIED
    scale_fn: int = SCALE_FUNCTION.UNSPECIFIED
    scale_bias: float = 2.0
    form: int = AFFINE_FORM.UNSPECIFIED
    # Format 1.1:
    mask_channel: bool = False                # checkerboard: the mask is the net's last input
    scale_weight: Optional[np.ndarray] = None  # TANH: [C_b]

    @property
    def checkerboard(self) -> bool:
        return is_checkerboard(self.conditioning)

    def transformed_channels(self, c: int) -> int:
        """C_b: the channels the coupling transforms at a (C, H, W) input."""
        return c if self.checkerboard else c // 2

    def net_input_channels(self, c: int) -> int:
        return c + (1 if self.mask_channel else 0) if self.checkerboard else c // 2


def is_checkerboard(half: int) -> bool:
    return half in (HALF.CHECKERBOARD_EVEN, HALF.CHECKERBOARD_ODD)


def checkerboard_mask(half: int, h: int, w: int) -> np.ndarray:
    """m(i, j) as float64 [H, W]: 1 at the positions that condition (x_a), 0 at x_b's."""
    parity = 0 if half == HALF.CHECKERBOARD_EVEN else 1
    i, j = np.indices((h, w))
    return ((i + j) % 2 == parity).astype(np.float64)


@dataclass
class Split:
    leaving: int
    prior: List[object] = field(default_factory=list)
    prior_layout: int = PRIOR_LAYOUT.UNSPECIFIED


@dataclass
class TopPrior:
    kind: int
    mean: Optional[np.ndarray] = None        # LEARNED: [C, H, W]
    log_std: Optional[np.ndarray] = None     # LEARNED: [C, H, W]
    class_offsets: Optional[np.ndarray] = None  # [n_classes, 2C] or None


@dataclass
class Logit:
    """y = logit(alpha + (1 - 2 alpha)(x + 1/2)); only as the first layer."""
    alpha: float = 0.05


@dataclass
class Flatten:
    """(C, H, W) -> (C*H*W, 1, 1), the NCHW order unchanged."""


@dataclass
class Layer:
    name: str
    op: object


@dataclass
class Model:
    image: ImageSpec
    layers: List[Layer]
    metadata: List[Tuple[str, str]] = field(default_factory=list)
    format_major: int = 1
    format_minor: int = 0

    def metadata_dict(self):
        return dict(self.metadata)

    def required_format_minor(self) -> int:
        """2 when a net has a residual connection, 1 when a layer or option of format 1.1 is
        used (an older reader rejects those), else 0."""
        for layer in self.layers:
            op = layer.op
            if (isinstance(op, Coupling) and has_residual(op.net)) or (
                    isinstance(op, Split) and has_residual(op.prior)):
                return 2
        for layer in self.layers:
            op = layer.op
            if isinstance(op, (Logit, Flatten)):
                return 1
            if isinstance(op, Coupling) and (
                    op.checkerboard or (op.type == COUPLING_TYPE.AFFINE
                                        and op.scale_fn == SCALE_FUNCTION.TANH)):
                return 1
        return 0


LAYER_TYPE_NAMES = {
    Squeeze: "squeeze", ActNorm: "actnorm", InvConv1x1: "invconv1x1", Permute: "permute",
    Coupling: "coupling", Split: "split", TopPrior: "top_prior", Logit: "logit",
    Flatten: "flatten",
}


def layer_tensors(op) -> List[np.ndarray]:
    """Every Tensor a layer (or net op) stores, nested net ops included."""
    if isinstance(op, Coupling):
        nested = [t for sub in op.net for t in layer_tensors(sub)]
        return nested + ([op.scale_weight] if op.scale_weight is not None else [])
    if isinstance(op, Split):
        return [t for sub in op.prior for t in layer_tensors(sub)]
    names = {
        ActNorm: ("bias", "scale"),
        InvConv1x1: ("weight", "lower", "upper", "sign", "log_s"),
        Conv2d: ("weight", "bias"),
        OutputScale: ("log_scale",),
        TopPrior: ("mean", "log_std", "class_offsets"),
    }.get(type(op), ())
    return [getattr(op, n) for n in names if getattr(op, n) is not None]


def parameter_count(op) -> int:
    """Float values a layer stores: the sum of prod(shape) over its tensors."""
    return int(sum(t.size for t in layer_tensors(op)))
