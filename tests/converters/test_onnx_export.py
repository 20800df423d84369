"""ONNX export: valid opset-17 graphs with the documented interface, and, run in ONNX Runtime,
the same numbers as the float64 evaluator (and as libflowrt when FLOWRT_LIB is set)."""
import os
import tempfile
import unittest

import numpy as np
import onnx

from converters import flow_writer
from converters.numpy_eval import Evaluator
from converters.onnx_export import OPSET, export

from . import ort_node
from .common import fixtures, libflowrt, max_rel, ref_session, run_cli
from .random_models import (FAMILY_VARIANTS, VARIANTS, labels_for, random_family_model,
                            random_model, random_x)

TOL = 1e-4


def _glow_cases():
    """(name, model, x float64, labels or None) for every fixture and Glow-shaped variant."""
    out = [(fx.name, fx.model(), fx.x(), None) for fx in fixtures()]
    for v in VARIANTS:
        model = random_model(v, image=(3, 16, 16), levels=3, width=16)
        out.append((v.name, model, random_x(model, 5), labels_for(model, 5)))
    return out


def _cases():
    """The Glow cases and the RealNVP- and NICE-shaped variants (format 1.1 layers)."""
    out = _glow_cases()
    for v in FAMILY_VARIANTS:
        if v.arch == "nice":
            model = random_family_model(v, image=(1, 8, 8), depth=4, width=32)
        else:
            model = random_family_model(v, image=(3, 16, 16), scales=3, width=16)
        out.append((v.name, model, random_x(model, 5), labels_for(model, 5)))
    return out


def _dims(value_info):
    return [d.dim_param or d.dim_value for d in value_info.type.tensor_type.shape.dim]


class GraphInterface(unittest.TestCase):
    def test_interface_and_checker(self):
        for name, model, _, labels in _cases():
            c, h, w = model.image.shape
            d = c * h * w
            for batch in (4, "dynamic"):
                n = "N" if batch == "dynamic" else batch
                with self.subTest(model=name, batch=batch):
                    enc = export(model, "encode", batch)
                    dec = export(model, "decode", batch)
                    for proto in (enc, dec):
                        onnx.checker.check_model(proto, full_check=True)
                        self.assertEqual([o.version for o in proto.opset_import], [OPSET])
                    label = [("label", [n])] if labels is not None else []
                    self.assertEqual([(i.name, _dims(i)) for i in enc.graph.input],
                                     [("x", [n, c, h, w])] + label)
                    self.assertEqual([(o.name, _dims(o)) for o in enc.graph.output],
                                     [("z", [n, d]), ("log_p", [n]), ("log_det", [n]),
                                      ("bits_per_dim", [n])])
                    self.assertEqual([(i.name, _dims(i)) for i in dec.graph.input],
                                     [("eps", [n, d]), ("temperature", [])] + label)
                    self.assertEqual([(o.name, _dims(o)) for o in dec.graph.output],
                                     [("x", [n, c, h, w])])

    def test_cli(self):
        fx = fixtures()[0]
        with tempfile.TemporaryDirectory() as tmp:
            flow = os.path.join(tmp, "m.flow")
            flow_writer.write(fx.model(), flow)
            for direction, batch in (("decode", "8"), ("encode", "dynamic")):
                out = os.path.join(tmp, f"{direction}.onnx")
                proc = run_cli("onnx", flow, "--direction", direction, "--batch", batch, "-o", out)
                self.assertEqual(proc.returncode, 0, proc.stderr)
                onnx.checker.check_model(onnx.load(out))
            bad = run_cli("onnx", flow, "--direction", "decode", "--batch", "0", "-o",
                          os.path.join(tmp, "x.onnx"))
            self.assertEqual(bad.returncode, 2)
            with open(os.path.join(tmp, "junk.flow"), "wb") as f:
                f.write(b"\0" * 64)
            bad = run_cli("onnx", os.path.join(tmp, "junk.flow"), "--direction", "decode", "-o",
                          os.path.join(tmp, "x.onnx"))
            self.assertEqual(bad.returncode, 2)
            self.assertIn("not a .flow file", bad.stderr)


class RunsInOnnxRuntime(unittest.TestCase):
    @classmethod
    def setUpClass(cls):
        ort_node.require_onnxruntime()
        cls.tmp = tempfile.TemporaryDirectory()

    @classmethod
    def tearDownClass(cls):
        cls.tmp.cleanup()

    def _save(self, proto, name):
        path = os.path.join(self.tmp.name, name)
        onnx.save(proto, path)
        return path

    @staticmethod
    def _with_labels(feeds, labels):
        if labels is not None:
            feeds["label"] = np.asarray(labels, dtype=np.int64)
        return feeds

    def _check_encode(self, got, want_z, want_log_p, want_log_det, want_bpd, dims):
        self.assertLess(max_rel(got["z"], want_z, 1.0), TOL)
        # log-likelihoods are sums over D terms: compare relative to D.
        self.assertLess(max_rel(got["log_p"], want_log_p, dims), TOL)
        self.assertLess(max_rel(got["log_det"], want_log_det, dims), TOL)
        self.assertLess(max_rel(got["bits_per_dim"], want_bpd), TOL)

    def test_against_numpy_evaluator(self):
        for name, model, x, labels in _cases():
            with self.subTest(model=name):
                ev = Evaluator(model)
                n = x.shape[0]
                enc = self._save(export(model, "encode", "dynamic"), f"{name}_enc.onnx")
                got = ort_node.run(enc, self._with_labels({"x": x}, labels))
                r = ev.encode(x, labels)
                self._check_encode(got, r.z, r.log_p, r.log_det, r.bits_per_dim, ev.dims)
                dec = self._save(export(model, "decode", n), f"{name}_dec.onnx")
                eps = np.random.default_rng(11).standard_normal((n, ev.dims))
                for t in (0.0, 0.7, 1.0):
                    got = ort_node.run(dec, self._with_labels(
                        {"eps": eps, "temperature": np.array(t, np.float32)}, labels))
                    self.assertLess(max_rel(got["x"], ev.decode_noise(eps, t, labels), 1.0), TOL)

    def test_dynamic_batch(self):
        name, model, x, labels = _cases()[0]
        path = self._save(export(model, "encode", "dynamic"), "dyn.onnx")
        full = ort_node.run(path, {"x": x})
        for n in (1, 3):
            part = ort_node.run(path, {"x": x[:n]})
            self.assertEqual(part["z"].shape[0], n)
            np.testing.assert_allclose(part["log_p"], full["log_p"][:n], rtol=1e-6, atol=1e-4)

    def test_fixture_sample_matches_glow_pytorch(self):
        for fx in fixtures():
            with self.subTest(fixture=fx.name):
                eps = fx.flat_levels("eps")
                path = self._save(export(fx.model(), "decode", eps.shape[0]), f"{fx.name}_s.onnx")
                got = ort_node.run(path, {"eps": eps, "temperature": np.array(
                    fx.config["temperature"], np.float32)})
                self.assertLess(max_rel(got["x"], fx.array("sample_t0.7"), 1.0), TOL)

    def test_against_libflowrt(self):
        libflowrt()
        for name, model, x, labels in _cases():
            with self.subTest(model=name), ref_session(flow_writer.to_bytes(model)) as session:
                z, log_p, log_det, bpd = session.encode_ex(x, labels)
                enc = self._save(export(model, "encode", "dynamic"), f"{name}_enc_rt.onnx")
                got = ort_node.run(enc, self._with_labels({"x": x}, labels))
                self._check_encode(got, z, log_p, log_det, bpd, session.latent_dim)
                eps = np.random.default_rng(12).standard_normal((x.shape[0], session.latent_dim))
                dec = self._save(export(model, "decode", "dynamic"), f"{name}_dec_rt.onnx")
                got = ort_node.run(dec, self._with_labels(
                    {"eps": eps, "temperature": np.array(0.7, np.float32)}, labels))
                _, want = session.decode_noise(eps, 0.7, labels, return_x=True)
                self.assertLess(max_rel(got["x"], want, 1.0), TOL)


if __name__ == "__main__":
    unittest.main()
