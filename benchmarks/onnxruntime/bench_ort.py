"""Benchmarks a .flow model in ONNX Runtime: exports its encoder and/or decoder at a fixed
batch, times each with bench_ort.js, and prints one JSON object per direction (one per line).

    python3 benchmarks/onnxruntime/bench_ort.py M.flow --batch 16 [--threads 2] [--iters 30]
                                                [--direction encode|decode|both]

Needs onnxruntime-node (tests/converters/install_onnxruntime.sh) and node.
"""
import argparse
import json
import os
import shutil
import subprocess
import sys
import tempfile

HERE = os.path.dirname(os.path.abspath(__file__))
REPO = os.path.dirname(os.path.dirname(HERE))
sys.path.insert(0, REPO)

from converters import flow_reader  # noqa: E402
from converters.errors import ConversionError  # noqa: E402
from converters.onnx_export import export_to_file  # noqa: E402


def main(argv=None):
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("model")
    p.add_argument("--batch", type=int, required=True)
    p.add_argument("--threads", type=int, default=2)
    p.add_argument("--iters", type=int, default=30)
    p.add_argument("--warmup", type=int, default=3)
    p.add_argument("--temperature", type=float, default=0.7)
    p.add_argument("--direction", choices=("encode", "decode", "both"), default="both")
    args = p.parse_args(argv)
    node = shutil.which("node")
    if node is None:
        print("error: node is not installed", file=sys.stderr)
        return 2
    try:
        model = flow_reader.read(args.model)
    except ConversionError as e:
        print(f"error: {e}", file=sys.stderr)
        return 2
    top = model.layers[-1].op
    classes = 0 if top.class_offsets is None else top.class_offsets.shape[0]
    image = "x".join(str(d) for d in model.image.shape)
    directions = ("encode", "decode") if args.direction == "both" else (args.direction,)
    with tempfile.TemporaryDirectory() as tmp:
        for direction in directions:
            onnx_path = os.path.join(tmp, f"{direction}_b{args.batch}.onnx")
            export_to_file(model, direction, args.batch, onnx_path)
            proc = subprocess.run(
                [node, os.path.join(HERE, "bench_ort.js"), onnx_path, "--image", image,
                 "--batch", str(args.batch), "--threads", str(args.threads), "--iters",
                 str(args.iters), "--warmup", str(args.warmup), "--temperature",
                 str(args.temperature), "--classes", str(classes)],
                capture_output=True, text=True)
            if proc.returncode != 0:
                print(proc.stderr.strip(), file=sys.stderr)
                return proc.returncode
            result = json.loads(proc.stdout)
            result["model"] = os.path.basename(args.model)
            print(json.dumps(result))
    return 0


if __name__ == "__main__":
    sys.exit(main())
