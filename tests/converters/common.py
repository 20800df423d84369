"""Shared helpers of the converter tests: paths, the glow-pytorch fixtures, the command line,
libflowrt sessions (the flowrt Python module) and a walk over the tensors of a .flow buffer."""
import contextlib
import json
import os
import subprocess
import sys
import unittest
from dataclasses import dataclass

import numpy as np

HERE = os.path.dirname(os.path.abspath(__file__))
REPO = os.path.dirname(os.path.dirname(HERE))
FIXTURES = os.path.join(REPO, "tests", "fixtures", "glow-pytorch")

if REPO not in sys.path:
    sys.path.insert(0, REPO)

from converters import fbs  # noqa: E402
from converters.glow_pytorch import GlowConfig, convert  # noqa: E402
from converters.numpy_eval import pixels_to_x  # noqa: E402


@dataclass
class Fixture:
    name: str
    folder: str
    config: dict

    @property
    def checkpoint(self):
        return os.path.join(self.folder, "checkpoint.pt")

    def array(self, name):
        return np.load(os.path.join(self.folder, name + ".npy"))

    @property
    def levels(self):
        return self.config["n_block"]

    def glow_config(self) -> GlowConfig:
        c = self.config
        return GlowConfig(c["in_channel"], c["img_size"], c["img_size"], c["n_block"], c["n_flow"],
                          c["affine"], c["conv_lu"], c["n_bits"])

    def cli_args(self):
        c = self.config
        args = ["--image", f"{c['in_channel']}x{c['img_size']}x{c['img_size']}",
                "--levels", str(c["n_block"]), "--depth", str(c["n_flow"]),
                "--n-bits", str(c["n_bits"])]
        if c["affine"]:
            args.append("--affine")
        if not c["conv_lu"]:
            args.append("--no-lu")
        return args

    def model(self):
        return convert(self.checkpoint, self.glow_config())

    def x(self):
        """The images at the bin centre, as glow-pytorch saw them (float64)."""
        return pixels_to_x(self.array("images_u8"), self.config["n_bits"])

    def flat_levels(self, prefix):
        """z0, z1, ... (or eps0, ...) flattened per image and concatenated: the C API layout."""
        parts = [self.array(f"{prefix}{k}") for k in range(self.levels)]
        return np.concatenate([p.reshape(p.shape[0], -1) for p in parts], axis=1)


def fixtures():
    out = []
    for name in sorted(os.listdir(FIXTURES)):
        folder = os.path.join(FIXTURES, name)
        config = os.path.join(folder, "config.json")
        if os.path.isfile(config):
            with open(config) as f:
                out.append(Fixture(name, folder, json.load(f)))
    if not out:
        raise RuntimeError(f"no fixtures under {FIXTURES}")
    return out


def libflowrt():
    """The flowrt Python module of this tree (python/flowrt) on the libflowrt that FLOWRT_LIB
    names; raises SkipTest, with the reason, when FLOWRT_LIB is not set."""
    path = os.environ.get("FLOWRT_LIB")
    if not path:
        raise unittest.SkipTest("FLOWRT_LIB is not set: libflowrt comparisons skipped (set it to "
                                "the path of libflowrt.so)")
    if not os.path.exists(path):
        raise FileNotFoundError(f"FLOWRT_LIB={path} does not exist")
    if getattr(sys.modules.get("flowrt"), "placeholder_for_fb", False):
        del sys.modules["flowrt"]  # the converters' stand-in parent of flowrt.fb (fbs.py)
    sys.path.insert(0, os.path.join(REPO, "python"))
    try:
        import flowrt  # the module of this tree, beside the converters' flowrt.fb (fbs.py)
    finally:
        sys.path.pop(0)
    if not hasattr(flowrt, "load_library"):
        raise ImportError("another module named flowrt was imported before python/flowrt: "
                          f"{getattr(flowrt, '__file__', flowrt)}")
    flowrt.load_library(path)
    return flowrt


@contextlib.contextmanager
def ref_session(flow_bytes: bytes, threads: int = 1):
    """A flowrt.Session on the REF backend for a model given as .flow bytes (both freed on exit);
    SkipTest when FLOWRT_LIB is not set."""
    flowrt = libflowrt()
    with flowrt.Model.from_bytes(flow_bytes) as model, \
            flowrt.Session(model, backend="ref", threads=threads) as session:
        yield session


def run_cli(*args):
    """Runs `python3 -m converters ARGS` from the repository root."""
    return subprocess.run([sys.executable, "-m", "converters", *args], cwd=REPO,
                          capture_output=True, text=True, timeout=600)


def tensors_in_buffer(flow: bytes):
    """(data offset in the buffer, element count) of every Tensor in a .flow file, nested ones
    included, found by walking the FlatBuffer directly."""
    found = []

    def tensor(t):
        if t is not None:
            count = int(np.prod(t.ShapeAsNumpy()))
            found.append((t._tab.Vector(t._tab.Offset(8)), count))

    def union(holder, cls):
        table = holder.Op()
        obj = cls()
        obj.Init(table.Bytes, table.Pos)
        return obj

    def net(length, get):
        for i in range(length):
            nl = get(i)
            kind = nl.OpType()
            if kind == fbs.NetOp.NetOp.Conv2d:
                c = union(nl, fbs.Conv2d.Conv2d)
                tensor(c.Weight())
                tensor(c.Bias())
            elif kind == fbs.NetOp.NetOp.ActNorm:
                a = union(nl, fbs.ActNorm.ActNorm)
                tensor(a.Bias())
                tensor(a.Scale())
            elif kind == fbs.NetOp.NetOp.OutputScale:
                tensor(union(nl, fbs.OutputScale.OutputScale).LogScale())

    m = fbs.Model.Model.GetRootAs(flow, 0)
    ops = fbs.LayerOp.LayerOp
    for i in range(m.LayersLength()):
        layer = m.Layers(i)
        kind = layer.OpType()
        if kind == ops.ActNorm:
            a = union(layer, fbs.ActNorm.ActNorm)
            tensor(a.Bias())
            tensor(a.Scale())
        elif kind == ops.InvConv1x1:
            v = union(layer, fbs.InvConv1x1.InvConv1x1)
            for t in (v.Weight(), v.Lower(), v.Upper(), v.Sign(), v.LogS()):
                tensor(t)
        elif kind == ops.Coupling:
            c = union(layer, fbs.Coupling.Coupling)
            net(c.NetLength(), c.Net)
            tensor(c.ScaleWeight())
        elif kind == ops.Split:
            s = union(layer, fbs.Split.Split)
            net(s.PriorLength(), s.Prior)
        elif kind == ops.TopPrior:
            t = union(layer, fbs.TopPrior.TopPrior)
            for x in (t.Mean(), t.LogStd(), t.ClassOffsets()):
                tensor(x)
    return found


def tensor_data_offsets(flow: bytes):
    return [offset for offset, _ in tensors_in_buffer(flow)]


def max_rel(actual, expected, scale=None):
    """max |actual - expected| / max(|expected|, scale) elementwise."""
    actual = np.asarray(actual, np.float64)
    expected = np.asarray(expected, np.float64)
    denom = np.abs(expected) if scale is None else np.maximum(np.abs(expected), scale)
    return float(np.max(np.abs(actual - expected) / denom))


def assert_evaluator_matches(tc, model, x, labels, tol, bpd_abs=None):
    """The float64 evaluator against libflowrt (REF backend) on x: latents, log-densities,
    log-determinants, bits/dim (within bpd_abs, or tol relative when None), the decoder's
    inverse and samples at T = 0.7 from the same noise."""
    from converters import flow_writer
    from converters.numpy_eval import Evaluator
    ev = Evaluator(model)
    with ref_session(flow_writer.to_bytes(model)) as s:
        r = ev.encode(x, labels)
        z, log_p, log_det, bpd = s.encode_ex(x.astype(np.float32), labels)
        tc.assertLess(max_rel(z, r.z, 1.0), tol, "z")
        tc.assertLess(max_rel(log_p, r.log_p, ev.dims), tol, "log_p")
        tc.assertLess(max_rel(log_det, r.log_det, ev.dims), tol, "log_det")
        if bpd_abs is None:
            tc.assertLess(max_rel(bpd, r.bits_per_dim), tol, "bits/dim")
        else:
            tc.assertLess(np.max(np.abs(bpd - r.bits_per_dim)), bpd_abs, "bits/dim")
        tc.assertLess(max_rel(s.decode(r.z, return_x=True)[1], x, 1.0), tol, "decode")
        eps = np.random.default_rng(4).standard_normal((x.shape[0], ev.dims))
        tc.assertLess(max_rel(s.decode_noise(eps, 0.7, labels, return_x=True)[1],
                              ev.decode_noise(eps, 0.7, labels), 1.0), tol, "sample")
