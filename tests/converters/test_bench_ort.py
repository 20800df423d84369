"""The ONNX Runtime benchmark driver runs and reports what it promises."""
import json
import os
import subprocess
import sys
import tempfile
import unittest

from converters import flow_writer

from . import ort_node
from .common import REPO, fixtures

BENCH = os.path.join(REPO, "benchmarks", "onnxruntime", "bench_ort.py")


class BenchOrt(unittest.TestCase):
    def test_reports_both_directions(self):
        ort_node.require_onnxruntime()
        with tempfile.TemporaryDirectory() as tmp:
            path = os.path.join(tmp, "m.flow")
            flow_writer.write(fixtures()[0].model(), path)
            proc = subprocess.run([sys.executable, BENCH, path, "--batch", "4", "--iters", "3",
                                   "--warmup", "1"], capture_output=True, text=True, timeout=300)
        self.assertEqual(proc.returncode, 0, proc.stderr)
        results = [json.loads(line) for line in proc.stdout.splitlines()]
        self.assertEqual([r["direction"] for r in results], ["encode", "decode"])
        for r in results:
            self.assertEqual((r["batch"], r["threads"], r["iters"], r["model"]), (4, 2, 3, "m.flow"))
            self.assertGreater(r["median_ms"], 0)
            # median_ms is rounded to 0.1 us in the report.
            self.assertAlmostEqual(r["images_per_s"], 4 / (r["median_ms"] / 1000),
                                   delta=1e-3 * r["images_per_s"])


if __name__ == "__main__":
    unittest.main()
