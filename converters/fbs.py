"""Access to the FlatBuffers classes generated from schema/flow.fbs.

The generated code lives in converters/_generated (checked in, so converting needs no flatc;
tests/converters/test_generated.py checks it against flatc's output). flatc emits absolute
imports ("from flowrt.fb.Tensor import Tensor") under the schema's namespace, while `flowrt`
is also the name of libflowrt's Python module (python/flowrt). So the generated package is
registered as the module `flowrt.fb` only: the parent is the real flowrt module where it can
be imported, otherwise a bare namespace holding nothing else, and the top-level name is never
shadowed on sys.path.
"""
import importlib
import importlib.util
import os
import sys
import types

_GENERATED_FB = os.path.join(os.path.dirname(os.path.abspath(__file__)), "_generated", "flowrt",
                             "fb")


def _register_generated():
    if "flowrt.fb" in sys.modules:
        return
    if "flowrt" not in sys.modules:
        try:
            importlib.import_module("flowrt")
        except ImportError:
            parent = types.ModuleType("flowrt")
            parent.__path__ = []
            parent.placeholder_for_fb = True  # python/flowrt may replace it (sys.modules)
            sys.modules["flowrt"] = parent
    spec = importlib.util.spec_from_file_location(
        "flowrt.fb", os.path.join(_GENERATED_FB, "__init__.py"),
        submodule_search_locations=[_GENERATED_FB])
    module = importlib.util.module_from_spec(spec)
    sys.modules["flowrt.fb"] = module
    spec.loader.exec_module(module)


_register_generated()

from flowrt.fb import (  # noqa: E402  (needs the registration above)
    ActNorm, AffineForm, Conv2d, Coupling, CouplingType, DType, Flatten, Half, ImageSpec,
    InvConv1x1, InvConvForm, KeyValue, Layer, LayerOp, Logit, Model, NetLayer, NetOp, OutputScale,
    PaddingMode, Permute, PermuteKind, PriorLayout, ReLU, ResidualAdd, ScaleFunction,
    ShiftScaleSplit, Split, Squeeze, SqueezeOrder, Tensor, TopPrior, TopPriorKind)

__all__ = [
    "ActNorm", "AffineForm", "Conv2d", "Coupling", "CouplingType", "DType", "Flatten", "Half",
    "ImageSpec", "InvConv1x1", "InvConvForm", "KeyValue", "Layer", "LayerOp", "Logit", "Model",
    "NetLayer", "NetOp", "OutputScale", "PaddingMode", "Permute", "PermuteKind", "PriorLayout",
    "ReLU", "ResidualAdd", "ScaleFunction", "ShiftScaleSplit", "Split", "Squeeze", "SqueezeOrder",
    "Tensor", "TopPrior", "TopPriorKind", "FILE_IDENTIFIER", "enum_names",
]

FILE_IDENTIFIER = b"FLOW"


def enum_names(enum_class):
    """{value: "NAME"} for a generated enum class."""
    return {v: k for k, v in vars(enum_class).items() if not k.startswith("_") and isinstance(v, int)}
