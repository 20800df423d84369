"""`python3 -m converters inspect`: the summary facts are right, and are the ones `flowrt info`
prints (compared when FLOWRT_TOOL names the flowrt executable)."""
import os
import re
import subprocess
import tempfile
import unittest

import numpy as np

from converters import flow_writer

from .common import fixtures, run_cli, tensors_in_buffer
from .random_models import FAMILY_VARIANTS, VARIANTS, random_family_model, random_model

SUMMARY_KEYS = ("format", "image", "levels", "layers", "params", "latent_dim")
LAYER_LINE = re.compile(r'layer (\d+): (\S+) "([^"]*)" (\S+) -> (\S+) params=(\d+)$')


def _models():
    yield from ((fx.name, fx.model()) for fx in fixtures())
    yield from ((v.name, random_model(v, image=(3, 16, 16), levels=3)) for v in VARIANTS)
    yield from ((v.name, random_family_model(v, image=(3, 16, 16), scales=3))
                for v in FAMILY_VARIANTS)


def _inspect(path):
    proc = run_cli("inspect", path)
    if proc.returncode != 0:
        raise AssertionError(proc.stderr)
    summary, layers = {}, []
    for line in proc.stdout.splitlines():
        m = LAYER_LINE.match(line)
        if m:
            layers.append((int(m.group(1)),) + m.groups()[1:5] + (int(m.group(6)),))
        elif not line.startswith(" ") and ": " in line:
            key, value = line.split(": ", 1)
            summary[key] = value
    return summary, layers


class InspectSummary(unittest.TestCase):
    def test_facts(self):
        for name, model in _models():
            with self.subTest(model=name), tempfile.TemporaryDirectory() as tmp:
                path = os.path.join(tmp, "m.flow")
                data = flow_writer.to_bytes(model)
                with open(path, "wb") as f:
                    f.write(data)
                summary, layers = _inspect(path)
                c, h, w = model.image.shape
                self.assertEqual(summary["image"], f"{c}x{h}x{w} n_bits={model.image.n_bits}")
                self.assertEqual(summary["format"], f"1.{model.required_format_minor()}")
                self.assertEqual(int(summary["layers"]), len(model.layers))
                self.assertEqual(int(summary["latent_dim"]), c * h * w)
                total = sum(count for _, count in tensors_in_buffer(data))
                self.assertEqual(int(summary["params"]), total)
                self.assertEqual(sum(p for *_, p in layers), total)
                self.assertEqual([l[2] for l in layers], [l.name for l in model.layers])
                latents = [v for k, v in summary.items() if k.startswith("latent ")]
                self.assertEqual(int(summary["levels"]), len(latents))
                self.assertEqual(sum(int(np.prod([int(d) for d in s.split("x")])) for s in latents),
                                 c * h * w)
                for key, value in model.metadata:
                    self.assertEqual(summary[f"meta.{key}"], value)

    def test_glow_pytorch_shapes(self):
        fx = fixtures()[0]
        with tempfile.TemporaryDirectory() as tmp:
            path = os.path.join(tmp, "m.flow")
            flow_writer.write(fx.model(), path)
            summary, layers = _inspect(path)
        c, s = fx.config["in_channel"], fx.config["img_size"]
        self.assertEqual(layers[0][1:5], ("squeeze", "block0/squeeze", f"{c}x{s}x{s}",
                                          f"{4 * c}x{s // 2}x{s // 2}"))
        self.assertEqual(summary["latent 0"], f"{2 * c}x{s // 2}x{s // 2}")
        self.assertEqual(layers[-1][1], "top_prior")


class MatchesFlowrtInfo(unittest.TestCase):
    def test_same_summary_and_layers(self):
        tool = os.environ.get("FLOWRT_TOOL")
        if not tool:
            raise unittest.SkipTest("FLOWRT_TOOL is not set: comparison with `flowrt info` "
                                    "skipped (set it to the path of the flowrt executable)")
        for name, model in _models():
            with self.subTest(model=name), tempfile.TemporaryDirectory() as tmp:
                path = os.path.join(tmp, "m.flow")
                flow_writer.write(model, path)
                ours, our_layers = _inspect(path)
                proc = subprocess.run([tool, "info", path, "--layers"], capture_output=True,
                                      text=True, timeout=120)
                self.assertEqual(proc.returncode, 0, proc.stderr)
                theirs, their_layers = {}, []
                lines = proc.stdout.splitlines()
                for line in lines:
                    if ": " in line and not line.startswith(" "):
                        key, value = line.split(": ", 1)
                        theirs[key] = value
                # The layer table: "#  name  kind  in  out  params  detail".
                header = next(i for i, l in enumerate(lines) if l.split()[:2] == ["#", "name"])
                for line in lines[header + 1:]:
                    cols = line.split()
                    if cols:
                        their_layers.append((int(cols[0]), cols[2], cols[1], cols[3], cols[4],
                                             int(cols[5])))
                for key in SUMMARY_KEYS:
                    self.assertEqual(theirs.get(key), ours[key], key)
                for key, value in model.metadata:
                    self.assertEqual(theirs.get(f"meta.{key}"), value)
                self.assertEqual(their_layers, our_layers)


if __name__ == "__main__":
    unittest.main()
