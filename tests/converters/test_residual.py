"""Residual connections (format 1.2's ResidualAdd) in the converters: the writer and reader (round
trips, format_minor, and hostile files refused with libflowrt's messages), the float64 evaluator
against a net written out op by op, and libflowrt (REF backend, FLOWRT_LIB), ONNX Runtime and
the evaluator against each other on residual RealNVP models, `flowrt init`'s among them
(FLOWRT_TOOL names the flowrt executable)."""
import os
import subprocess
import tempfile
import unittest
from unittest import mock

import numpy as np

from converters import fbs, flow_reader, flow_writer, numpy_eval
from converters.errors import ConversionError
from converters.model_ir import (ActNorm, Conv2d, COUPLING_TYPE, Coupling, HALF, ImageSpec,
                                 Layer, Model, PADDING, ReLU, ResidualAdd, Split,
                                 TOP_PRIOR_KIND, TopPrior, f32, layer_tensors)
from converters.numpy_eval import Evaluator, run_net
from converters.onnx_export import export

from . import ort_node
from .common import assert_evaluator_matches, libflowrt, max_rel, ref_session
from .random_models import FAMILY_VARIANTS, labels_for, random_family_model, random_x

TOL = 1e-4
RESIDUAL_VARIANTS = [v for v in FAMILY_VARIANTS if v.residual]


def _variant(name):
    return next(v for v in FAMILY_VARIANTS if v.name == name)


def _adds(ops):
    return [(i, op.from_) for i, op in enumerate(ops) if isinstance(op, ResidualAdd)]


def _tool():
    return os.environ.get("FLOWRT_TOOL")


def _init(tmp, name, *args):
    """A `flowrt init --arch realnvp --random-nets` model (SkipTest without FLOWRT_TOOL)."""
    tool = _tool()
    if not tool:
        raise unittest.SkipTest("FLOWRT_TOOL is not set: flowrt init models are not made (set "
                                "it to the path of the flowrt executable)")
    path = os.path.join(tmp, name + ".flow")
    proc = subprocess.run([tool, "init", "--arch", "realnvp", "--random-nets", "--seed", "4",
                           *args, "-o", path], capture_output=True, text=True, timeout=300)
    if proc.returncode != 0:
        raise AssertionError(f"flowrt init failed: {proc.stderr.strip()}")
    return path


# The flowrt init models the numeric tests use: residual blocks 2 (the default) and 1, grey and
# colour images.
INIT_ARGS = {
    "init_c1": ["--image", "1x16x16", "--levels", "3", "--depth", "2", "--width", "16"],
    "init_c3_one_block": ["--image", "3x16x16", "--levels", "2", "--depth", "3", "--width", "16",
                          "--res-blocks", "1"],
}


class Format(unittest.TestCase):
    def test_round_trip(self):
        for v in RESIDUAL_VARIANTS:
            with self.subTest(variant=v.name):
                model = random_family_model(v)
                data = flow_writer.to_bytes(model)
                again = flow_reader.from_bytes(data)
                self.assertEqual(again.format_minor, 2)
                self.assertEqual(flow_writer.to_bytes(again), data)
                nets = [(a.op, b.op) for a, b in zip(model.layers, again.layers)
                        if isinstance(a.op, (Coupling, Split))]
                self.assertTrue(any(_adds(a.net if isinstance(a, Coupling) else a.prior)
                                    for a, _ in nets))
                for a, b in nets:
                    ops_a = a.net if isinstance(a, Coupling) else a.prior
                    ops_b = b.net if isinstance(b, Coupling) else b.prior
                    self.assertEqual([type(o) for o in ops_a], [type(o) for o in ops_b])
                    self.assertEqual(_adds(ops_a), _adds(ops_b))
                    for x, y in zip(layer_tensors(a), layer_tensors(b)):
                        np.testing.assert_array_equal(x, y)

    def test_connection_from_the_net_input(self):
        # from = 0 is the schema's default, which the builder leaves out of the table.
        model = random_family_model(_variant("realnvp_residual_edges"))
        net = next(l.op.net for l in model.layers if isinstance(l.op, Coupling))
        self.assertEqual(_adds(net)[0], (1, 0))
        again = flow_reader.from_bytes(flow_writer.to_bytes(model))
        self.assertEqual(_adds(next(l.op.net for l in again.layers
                                    if isinstance(l.op, Coupling))), _adds(net))

    def test_format_minor(self):
        v = _variant("realnvp_residual_edges")
        model = random_family_model(v)
        self.assertEqual(model.required_format_minor(), 2)
        # Only the split priors residual: still 1.2.
        for layer in model.layers:
            if isinstance(layer.op, Coupling):
                layer.op.net = _plain_net(layer.op.net)
        self.assertFalse(any(_adds(l.op.net) for l in model.layers if isinstance(l.op, Coupling)))
        self.assertEqual(model.required_format_minor(), 2)
        self.assertEqual(flow_reader.from_bytes(flow_writer.to_bytes(model)).format_minor, 2)
        for layer in model.layers:
            if isinstance(layer.op, Split):
                layer.op.prior = _plain_net(layer.op.prior)
        self.assertEqual(model.required_format_minor(), 1)
        self.assertEqual(flow_reader.from_bytes(flow_writer.to_bytes(model)).format_minor, 1)


def _plain_net(ops):
    """The net with its residual adds left out (a plain net of the same shape)."""
    return [op for op in ops if not isinstance(op, ResidualAdd)]


class HostileFiles(unittest.TestCase):
    """Connections that break libflowrt's rules: the writer refuses the model, the reader the
    file, each with libflowrt's message, and libflowrt refuses the file too."""

    def setUp(self):
        # Coupling 0 (layer 1) has its adds at ops 7 (from 2) and 14 (from 9); its net takes
        # 2 channels (the image and the mask) and is 8 wide.
        self.model = random_family_model(_variant("realnvp_residual"), image=(1, 8, 8))
        self.net = self.model.layers[1].op.net
        self.assertEqual(_adds(self.net), [(7, 2), (14, 9)])

    def assertRefused(self, fragment, where="layer 1 (scale0/checker0/coupling) net op "):
        with self.assertRaises(ConversionError) as cm:
            flow_writer.to_bytes(self.model)
        self.assertIn(where + fragment, str(cm.exception))
        with mock.patch("converters.flow_writer.trace"):
            data = flow_writer.to_bytes(self.model)
        with self.assertRaises(ConversionError) as cm:
            flow_reader.from_bytes(data)
        self.assertIn(where + fragment, str(cm.exception))
        self.assertNotIn("\n", str(cm.exception))
        self._refused_by_flowrt(data, fragment)

    def _refused_by_flowrt(self, data, fragment):
        tool = _tool()
        if not tool:
            return
        with tempfile.TemporaryDirectory() as tmp:
            path = os.path.join(tmp, "hostile.flow")
            with open(path, "wb") as f:
                f.write(data)
            proc = subprocess.run([tool, "info", path], capture_output=True, text=True,
                                  timeout=120)
        self.assertNotEqual(proc.returncode, 0)
        self.assertIn(fragment.split(": ", 1)[1] if ": " in fragment else fragment, proc.stderr)

    def test_from_itself(self):
        self.net[7].from_ = 7
        self.assertRefused("7: residual connection from op 7 must come from an earlier op of the "
                           "net [0, 7)")

    def test_from_a_later_op(self):
        self.net[7].from_ = 12
        self.assertRefused("7: residual connection from op 12 must come from an earlier op of "
                           "the net [0, 7)")

    def test_from_negative_and_extreme(self):
        for value in (-1, -(1 << 31), (1 << 31) - 1):
            with self.subTest(value=value):
                self.net[7].from_ = value
                self.assertRefused(f"7: residual connection from op {value} must come from an "
                                   "earlier op of the net [0, 7)")

    def test_overlapping_connections(self):
        self.net[14].from_ = 5   # starts inside the connection 2 -> 7
        self.assertRefused("14: residual connection from op 5 overlaps the one that ends at op 7")

    def test_connection_from_the_previous_add(self):
        self.net[14].from_ = 7   # the input of the previous add is still inside it
        self.assertRefused("14: residual connection from op 7 overlaps the one that ends at op 7")

    def test_channel_mismatch(self):
        self.net[7].from_ = 0    # the net's input: 1 channel and the mask
        self.assertRefused("7: residual connection adds 2 channels (the input of op 0) to 8")

    def test_channel_mismatch_at_the_output(self):
        # An add after the last conv (2 channels) of a connection from a hidden activation.
        self.net.append(ResidualAdd(15))
        self.assertRefused("17: residual connection adds 8 channels (the input of op 15) to 2")

    def test_split_prior(self):
        self.model = random_family_model(_variant("realnvp_residual_edges"), image=(1, 8, 8))
        at = next(i for i, l in enumerate(self.model.layers) if isinstance(l.op, Split))
        prior = self.model.layers[at].op.prior
        self.assertEqual(_adds(prior), [(3, 2)])
        prior[3].from_ = 0       # the prior's input: 2 channels, the hidden activation 8
        self.assertRefused("3: residual connection adds 2 channels (the input of op 0) to 8",
                           f"layer {at} (scale0/split) prior op ")

    def test_residual_add_without_table(self):
        # A net op whose type says ResidualAdd but whose table is missing.
        state = {}
        add_type, add_op = fbs.NetLayer.AddOpType, fbs.NetLayer.AddOp

        def op_type(b, kind):
            state["kind"] = kind
            add_type(b, kind)

        def op(b, off):
            if state.get("kind") != fbs.NetOp.NetOp.ResidualAdd:
                add_op(b, off)

        with mock.patch.object(fbs.NetLayer, "AddOpType", op_type), \
                mock.patch.object(fbs.NetLayer, "AddOp", op):
            data = flow_writer.to_bytes(self.model)
        with self.assertRaises(ConversionError) as cm:
            flow_reader.from_bytes(data)
        self.assertIn("layer 1 (scale0/checker0/coupling) net op 7: the residual add has no table",
                      str(cm.exception))
        self._refused_by_flowrt(data, "the .flow buffer is corrupt")   # NetLayer.op is required


class Contract(unittest.TestCase):
    def test_net_written_out(self):
        # ops: 0 conv A (c->c), 1 ReLU, 2 add(0), 3 conv B (c->w), 4 actnorm, 5 ReLU, 6 conv C
        # (w->w), 7 add(5): y = C(relu(h)) + h with h = actnorm(B(relu(A x) + x)).
        rng = np.random.default_rng(8)
        c, w = 3, 5
        a = f32(rng.normal(0, 0.7, (c, c, 1, 1)))
        b = f32(rng.normal(0, 0.7, (w, c, 1, 1)))
        cc = f32(rng.normal(0, 0.7, (w, w, 1, 1)))
        bias_a, bias_c = f32(rng.normal(0, 0.3, c)), f32(rng.normal(0, 0.3, w))
        an = ActNorm(f32(rng.normal(0, 0.3, w)), f32(np.exp(rng.normal(0, 0.3, w))))
        ops = [Conv2d(a, bias_a, PADDING.ZEROS), ReLU(), ResidualAdd(0),
               Conv2d(b, None, PADDING.ZEROS), an, ReLU(), Conv2d(cc, bias_c, PADDING.ZEROS),
               ResidualAdd(5)]
        x = rng.normal(0, 1, (2, c, 3, 4))
        got = run_net(ops, x)

        def f64(t):
            return np.asarray(t, np.float64)

        for n in range(2):
            for i in range(3):
                for j in range(4):
                    v = x[n, :, i, j]
                    h0 = np.maximum(f64(a)[:, :, 0, 0] @ v + f64(bias_a), 0.0) + v
                    h = f64(an.scale) * (f64(b)[:, :, 0, 0] @ h0 + f64(an.bias))
                    want = f64(cc)[:, :, 0, 0] @ np.maximum(h, 0.0) + f64(bias_c) + h
                    np.testing.assert_allclose(got[n, :, i, j], want, rtol=0, atol=1e-13)
        # The model checks accept exactly this net.
        model = Model(ImageSpec(2 * c, 3, 4), [
            Layer("coupling", Coupling(COUPLING_TYPE.ADDITIVE, HALF.FIRST, ops[:3] + [
                Conv2d(f32(np.zeros((c, c, 1, 1))), None, PADDING.ZEROS)])),
            Layer("top", TopPrior(TOP_PRIOR_KIND.STANDARD_NORMAL))])
        flow_reader.from_bytes(flow_writer.to_bytes(model))

    def test_the_adds_change_the_result(self):
        # Without its adds the net computes something else: the comparisons below see them.
        model = random_family_model(_variant("realnvp_residual"), image=(3, 16, 16), scales=3,
                                    width=16)
        x = random_x(model, 3)
        with_adds = Evaluator(model).encode(x)
        for layer in model.layers:
            if isinstance(layer.op, Coupling):
                layer.op.net = _plain_net(layer.op.net)
        without = Evaluator(model).encode(x)
        self.assertGreater(np.max(np.abs(with_adds.z - without.z)), 100 * TOL)


def _residual_cases(tmp):
    """(name, model, x, labels) of the residual variants and, with FLOWRT_TOOL, flowrt init's
    residual RealNVP models."""
    out = []
    for v in RESIDUAL_VARIANTS:
        if v.arch == "nice":
            model = random_family_model(v, image=(1, 8, 8), depth=4, width=32, n_bits=5)
        else:
            model = random_family_model(v, image=(3, 16, 16), scales=3, width=16, n_bits=5)
        out.append((v.name, model, random_x(model, 5), labels_for(model, 5)))
    if _tool():
        for name, args in INIT_ARGS.items():
            model = flow_reader.read(_init(tmp, name, *args))
            assert model.format_minor == 2 and any(
                _adds(l.op.net) for l in model.layers if isinstance(l.op, Coupling))
            out.append((name, model, random_x(model, 5), None))
    return out


class AgainstLibflowrt(unittest.TestCase):
    """libflowrt (REF backend) against the float64 evaluator and ONNX Runtime."""

    @classmethod
    def setUpClass(cls):
        libflowrt()
        cls.tmp = tempfile.TemporaryDirectory()
        cls.cases = _residual_cases(cls.tmp.name)

    @classmethod
    def tearDownClass(cls):
        cls.tmp.cleanup()

    def test_numpy_evaluator(self):
        for name, model, x, labels in self.cases:
            with self.subTest(model=name):
                assert_evaluator_matches(self, model, x, labels, TOL, bpd_abs=1e-5)

    def test_evaluator_without_adds_disagrees(self):
        # The same comparison fails for an evaluator that skips the adds.
        def skip_adds(ops, x):
            return run_net(_plain_net(ops), x)

        name, model, x, labels = self.cases[0]
        with ref_session(flow_writer.to_bytes(model)) as s:
            z, *_ = s.encode_ex(x.astype(np.float32), labels)
        with mock.patch.object(numpy_eval, "run_net", skip_adds):
            wrong = Evaluator(model).encode(x, labels)
        self.assertGreater(max_rel(z, wrong.z, 1.0), 100 * TOL)

    def test_onnx_runtime(self):
        ort_node.require_onnxruntime()
        for name, model, x, labels in self.cases:
            with self.subTest(model=name), ref_session(flow_writer.to_bytes(model)) as s:
                feeds = {} if labels is None else {"label": np.asarray(labels, np.int64)}
                enc = os.path.join(self.tmp.name, f"{name}_enc.onnx")
                proto = export(model, "encode", "dynamic")
                # Every residual add of the nets the encoder runs is an Add node.
                self.assertGreaterEqual(sum(n.op_type == "Add" for n in proto.graph.node),
                                        _count_adds(model))
                with open(enc, "wb") as f:
                    f.write(proto.SerializeToString())
                got = ort_node.run(enc, dict(feeds, x=x))
                z, log_p, log_det, bpd = s.encode_ex(x.astype(np.float32), labels)
                self.assertLess(max_rel(got["z"], z, 1.0), TOL, "z")
                self.assertLess(max_rel(got["log_p"], log_p, s.latent_dim), TOL, "log_p")
                self.assertLess(max_rel(got["log_det"], log_det, s.latent_dim), TOL, "log_det")
                self.assertLess(np.max(np.abs(got["bits_per_dim"] - bpd)), 1e-5, "bits/dim")
                dec = os.path.join(self.tmp.name, f"{name}_dec.onnx")
                with open(dec, "wb") as f:
                    f.write(export(model, "decode", "dynamic").SerializeToString())
                eps = np.random.default_rng(12).standard_normal((x.shape[0], s.latent_dim))
                for t in (0.0, 0.7):
                    got = ort_node.run(dec, dict(feeds, eps=eps,
                                                 temperature=np.array(t, np.float32)))
                    _, want = s.decode_noise(eps, t, labels, return_x=True)
                    self.assertLess(max_rel(got["x"], want, 1.0), TOL, f"sample at T={t}")


def _count_adds(model):
    return sum(len(_adds(l.op.net if isinstance(l.op, Coupling) else l.op.prior))
               for l in model.layers if isinstance(l.op, (Coupling, Split)))


if __name__ == "__main__":
    unittest.main()
