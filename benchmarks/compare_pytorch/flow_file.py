"""Reads a .flow file into plain Python objects (numpy arrays and dicts), with the FlatBuffers
Python code that `flatc --python` generates from schema/flow.fbs at run time. Only what the
PyTorch comparison needs; the runtime's own loader is the one that validates files."""

import importlib
import os
import subprocess
import sys
import tempfile

import numpy as np

HERE = os.path.dirname(os.path.abspath(__file__))
SCHEMA = os.path.join(HERE, "..", "..", "schema", "flow.fbs")


def _fb():
    """Generates and imports the flowrt.fb package (once per process)."""
    if "flowrt.fb.Model" in sys.modules:
        return sys.modules["flowrt.fb"]
    generated = os.path.join(HERE, "..", "..", "converters", "_generated")
    if os.path.isdir(os.path.join(generated, "flowrt", "fb")):
        out = generated  # the converters' checked-in copy (no flatc needed, e.g. on GPU hosts)
    else:
        out = tempfile.mkdtemp(prefix="flowrt-fbpy-")
        subprocess.run(["flatc", "--python", "-o", out, SCHEMA], check=True)
    sys.path.insert(0, out)
    pkg = importlib.import_module("flowrt.fb")
    for name in ("Model", "Layer", "LayerOp", "Squeeze", "ActNorm", "InvConv1x1", "Permute",
                 "Coupling", "Split", "TopPrior", "NetLayer", "NetOp", "Conv2d", "OutputScale",
                 "Tensor"):
        setattr(pkg, name, importlib.import_module("flowrt.fb." + name))
    return pkg


def _tensor(t):
    if t is None:
        return None
    shape = tuple(int(d) for d in t.ShapeAsNumpy())
    return np.frombuffer(t.DataAsNumpy().tobytes(), dtype="<f4").reshape(shape).copy()


def _table(fb, cls_module, union_table):
    obj = getattr(cls_module, cls_module.__name__.split(".")[-1])()
    obj.Init(union_table.Bytes, union_table.Pos)
    return obj


def _net(fb, count, get):
    ops = []
    names = {v: k for k, v in vars(fb.NetOp.NetOp).items() if not k.startswith("_")}
    for i in range(count):
        nl = get(i)
        kind = names[nl.OpType()]
        if kind == "Conv2d":
            c = _table(fb, fb.Conv2d, nl.Op())
            ops.append({"op": "conv", "weight": _tensor(c.Weight()), "bias": _tensor(c.Bias()),
                        "padding": c.Padding(), "pad_value": c.PadValue()})
        elif kind == "ReLU":
            ops.append({"op": "relu"})
        elif kind == "OutputScale":
            o = _table(fb, fb.OutputScale, nl.Op())
            ops.append({"op": "output_scale", "log_scale": _tensor(o.LogScale()),
                        "factor": o.Factor()})
        elif kind == "ActNorm":
            a = _table(fb, fb.ActNorm, nl.Op())
            ops.append({"op": "actnorm", "bias": _tensor(a.Bias()), "scale": _tensor(a.Scale())})
        else:
            raise ValueError("unknown net op %r" % kind)
    return ops


def read_flow(path):
    """Returns {"image": (C, H, W, n_bits), "layers": [dict per layer]}."""
    fb = _fb()
    with open(path, "rb") as f:
        buf = f.read()
    model = fb.Model.Model.GetRootAs(buf, 0)
    im = model.Image()
    layers = []
    names = {v: k for k, v in vars(fb.LayerOp.LayerOp).items() if not k.startswith("_")}
    for i in range(model.LayersLength()):
        layer = model.Layers(i)
        kind = names[layer.OpType()]
        op = layer.Op()
        if kind == "Squeeze":
            layers.append({"kind": "squeeze", "order": _table(fb, fb.Squeeze, op).Order()})
        elif kind == "ActNorm":
            a = _table(fb, fb.ActNorm, op)
            layers.append({"kind": "actnorm", "bias": _tensor(a.Bias()),
                           "scale": _tensor(a.Scale())})
        elif kind == "InvConv1x1":
            c = _table(fb, fb.InvConv1x1, op)
            layers.append({"kind": "invconv", "form": c.Form(), "weight": _tensor(c.Weight()),
                           "perm": c.PermAsNumpy() if c.PermLength() else None,
                           "lower": _tensor(c.Lower()), "upper": _tensor(c.Upper()),
                           "sign": _tensor(c.Sign()), "log_s": _tensor(c.LogS())})
        elif kind == "Permute":
            p = _table(fb, fb.Permute, op)
            layers.append({"kind": "permute", "permute_kind": p.Kind(),
                           "indices": p.IndicesAsNumpy() if p.IndicesLength() else None})
        elif kind == "Coupling":
            c = _table(fb, fb.Coupling, op)
            layers.append({"kind": "coupling", "type": c.Type(), "conditioning": c.Conditioning(),
                           "net": _net(fb, c.NetLength(), c.Net), "split": c.Split(),
                           "scale_fn": c.ScaleFn(), "scale_bias": c.ScaleBias(),
                           "form": c.Form()})
        elif kind == "Split":
            s = _table(fb, fb.Split, op)
            layers.append({"kind": "split", "leaving": s.Leaving(),
                           "prior": _net(fb, s.PriorLength(), s.Prior),
                           "layout": s.PriorLayout()})
        elif kind == "TopPrior":
            t = _table(fb, fb.TopPrior, op)
            layers.append({"kind": "top", "prior_kind": t.Kind(), "mean": _tensor(t.Mean()),
                           "log_std": _tensor(t.LogStd()),
                           "class_offsets": _tensor(t.ClassOffsets())})
        else:
            raise ValueError("unknown layer %r" % kind)
    return {"image": (im.Channels(), im.Height(), im.Width(), im.NBits()), "layers": layers}
