"""Runs ONNX models in ONNX Runtime through Node.js (onnxruntime-node, installed by
install_onnxruntime.sh into tests/converters/node_modules)."""
import json
import os
import shutil
import subprocess
import tempfile
import unittest

import numpy as np

HERE = os.path.dirname(os.path.abspath(__file__))
NODE_MODULES = os.path.join(HERE, "node_modules", "onnxruntime-node")
NODE = shutil.which("node") or "/usr/bin/node"


def require_onnxruntime():
    """Raises SkipTest, with the reason, when ONNX Runtime cannot run here; with
    FLOWRT_REQUIRE_ONNXRUNTIME=1 (CI) that is a failure instead, so a broken install step
    cannot pass unnoticed."""
    reason = None
    if not os.path.exists(NODE):
        reason = "node is not installed"
    elif not os.path.isdir(NODE_MODULES):
        reason = "onnxruntime-node is not installed: run tests/converters/install_onnxruntime.sh"
    if reason is None:
        return
    if os.environ.get("FLOWRT_REQUIRE_ONNXRUNTIME") == "1":
        raise AssertionError(reason + " (FLOWRT_REQUIRE_ONNXRUNTIME=1)")
    raise unittest.SkipTest(reason)


def run(model_path: str, inputs: dict, threads: int = 1) -> dict:
    """Runs the model on {name: array} (float32 or int64) and returns {output: array}."""
    with tempfile.TemporaryDirectory() as tmp:
        spec = {}
        for name, array in inputs.items():
            array = np.asarray(array)
            kind = "int64" if array.dtype.kind in "iu" else "float32"
            array = np.ascontiguousarray(array, dtype="<i8" if kind == "int64" else "<f4")
            file = os.path.join(tmp, name + ".in")
            array.tofile(file)
            spec[name] = {"type": kind, "dims": list(array.shape), "file": file}
        request = os.path.join(tmp, "request.json")
        with open(request, "w") as f:
            json.dump({"model": model_path, "threads": threads, "out_dir": tmp, "inputs": spec}, f)
        proc = subprocess.run([NODE, os.path.join(HERE, "ort_run.js"), request],
                              capture_output=True, text=True, timeout=300)
        if proc.returncode != 0:
            raise RuntimeError(f"ONNX Runtime failed: {proc.stderr.strip()}")
        with open(os.path.join(tmp, "outputs.json")) as f:
            shapes = json.load(f)
        return {name: np.fromfile(os.path.join(tmp, name + ".bin"), dtype="<f4").reshape(dims)
                for name, dims in shapes.items()}
