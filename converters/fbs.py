"""Access to the FlatBuffers classes generated from schema/flow.fbs.

The generated code lives in converters/_generated (checked in, so converting needs no flatc;
tests/converters/test_generated.py checks it against flatc's output). flatc emits absolute
imports ("from flowrt.fb.Tensor import Tensor"), so its root must be importable as a top-level
package.
"""
import os
import sys

_GENERATED = os.path.join(os.path.dirname(os.path.abspath(__file__)), "_generated")
if _GENERATED not in sys.path:
    sys.path.insert(0, _GENERATED)

from flowrt.fb import (  # noqa: E402  (needs the path above)
    ActNorm, AffineForm, Conv2d, Coupling, CouplingType, DType, Half, ImageSpec, InvConv1x1,
    InvConvForm, KeyValue, Layer, LayerOp, Model, NetLayer, NetOp, OutputScale, PaddingMode,
    Permute, PermuteKind, PriorLayout, ReLU, ScaleFunction, ShiftScaleSplit, Split, Squeeze,
    SqueezeOrder, Tensor, TopPrior, TopPriorKind)

__all__ = [
    "ActNorm", "AffineForm", "Conv2d", "Coupling", "CouplingType", "DType", "Half", "ImageSpec",
    "InvConv1x1", "InvConvForm", "KeyValue", "Layer", "LayerOp", "Model", "NetLayer", "NetOp",
    "OutputScale", "PaddingMode", "Permute", "PermuteKind", "PriorLayout", "ReLU", "ScaleFunction",
    "ShiftScaleSplit", "Split", "Squeeze", "SqueezeOrder", "Tensor", "TopPrior", "TopPriorKind",
    "FILE_IDENTIFIER", "enum_names",
]

FILE_IDENTIFIER = b"FLOW"


def enum_names(enum_class):
    """{value: "NAME"} for a generated enum class."""
    return {v: k for k, v in vars(enum_class).items() if not k.startswith("_") and isinstance(v, int)}
