"""glow-pytorch import: the command line converts every fixture into a valid, aligned .flow, the
float64 evaluator of that .flow reproduces what glow-pytorch computed, and architecture flags
that contradict the checkpoint are refused."""
import os
import tempfile
import unittest

import numpy as np

from converters import flow_reader, flow_writer
from converters.model_ir import INV_CONV_FORM, InvConv1x1, TopPrior
from converters.numpy_eval import Evaluator
from converters.pickle_reader import load_state_dict

from . import torch_zip
from .common import fixtures, max_rel, run_cli, tensor_data_offsets

TOL = 1e-4


class ConvertsFixtures(unittest.TestCase):
    def test_cli_writes_valid_aligned_files(self):
        for fx in fixtures():
            with self.subTest(fixture=fx.name), tempfile.TemporaryDirectory() as tmp:
                out = os.path.join(tmp, "m.flow")
                proc = run_cli("glow-pytorch", fx.checkpoint, *fx.cli_args(), "-o", out)
                self.assertEqual(proc.returncode, 0, proc.stderr)
                with open(out, "rb") as f:
                    data = f.read()
                self.assertEqual(data[4:8], b"FLOW")
                offsets = tensor_data_offsets(data)
                self.assertGreater(len(offsets), 10)
                self.assertEqual([o for o in offsets if o % 32], [],
                                 "tensor data not 32-byte aligned")
                model = flow_reader.from_bytes(data)
                meta = model.metadata_dict()
                self.assertEqual(meta["producer"], "flowrt converters glow-pytorch")
                self.assertEqual(meta["source"], "checkpoint.pt")
                self.assertEqual(model.image.n_bits, fx.config["n_bits"])
                # Same bytes as the library call: the command line adds nothing.
                self.assertEqual(data, flow_writer.to_bytes(fx.model()))

    def test_last_block_is_lu_even_without_conv_lu(self):
        for fx in fixtures():
            with self.subTest(fixture=fx.name):
                model = fx.model()
                forms = [(layer.name.split("/")[0], layer.op.form) for layer in model.layers
                         if isinstance(layer.op, InvConv1x1)]
                last = f"block{fx.levels - 1}"
                for block, form in forms:
                    expect = INV_CONV_FORM.LU if (block == last or fx.config["conv_lu"]) \
                        else INV_CONV_FORM.DENSE
                    self.assertEqual(form, expect, block)

    def test_layer_sequence(self):
        fx = fixtures()[0]
        names = [layer.name for layer in fx.model().layers]
        depth = fx.config["n_flow"]
        expect = []
        for b in range(fx.levels):
            expect.append(f"block{b}/squeeze")
            for f in range(depth):
                expect += [f"block{b}/flow{f}/{k}" for k in ("actnorm", "invconv", "coupling")]
            expect.append(f"block{b}/split" if b < fx.levels - 1 else f"block{b}/prior")
        self.assertEqual(names, expect)


class MatchesGlowPytorch(unittest.TestCase):
    """The evaluator on the converted file against the numbers glow-pytorch computed."""

    def test_encode(self):
        for fx in fixtures():
            with self.subTest(fixture=fx.name):
                ev = Evaluator(flow_reader.from_bytes(flow_writer.to_bytes(fx.model())))
                r = ev.encode(fx.x())
                prior_lp = fx.array("log_p")
                log_det = np.broadcast_to(fx.array("logdet"), prior_lp.shape)
                # log_p sums terms of either sign: its error is relative to their size.
                scale = np.maximum(np.abs(prior_lp), np.abs(log_det))
                self.assertLess(max_rel(r.log_p, prior_lp + log_det, scale), TOL)
                self.assertLess(max_rel(r.log_det, log_det), TOL)
                self.assertLess(max_rel(r.bits_per_dim, fx.array("bits_per_dim")), TOL)
                for k, latent in enumerate(r.latents):
                    self.assertLess(max_rel(latent, fx.array(f"z{k}"), 1.0), TOL, f"z{k}")
                np.testing.assert_allclose(r.bits_per_dim.mean(), fx.config["mean_bits_per_dim"],
                                           rtol=TOL)

    def test_sample_and_reconstruction(self):
        for fx in fixtures():
            with self.subTest(fixture=fx.name):
                ev = Evaluator(fx.model())
                sample = ev.decode_noise(fx.flat_levels("eps"), fx.config["temperature"])
                self.assertLess(max_rel(sample, fx.array("sample_t0.7"), 1.0), TOL)
                x = fx.x()
                back = ev.decode(fx.flat_levels("z"))
                self.assertLess(np.max(np.abs(back - x)), TOL)
                self.assertLess(np.max(np.abs(ev.decode(ev.encode(x).z) - x)), 1e-9)

    def test_top_prior_varies_at_the_border(self):
        # ZeroConv2d pads with ones: a constant prior would be wrong at the border.
        for fx in fixtures():
            top = fx.model().layers[-1].op
            self.assertIsInstance(top, TopPrior)
            interior = top.mean[:, 1:-1, 1:-1]
            self.assertTrue(np.allclose(interior, interior[:, :1, :1]))
            self.assertFalse(np.allclose(top.mean, top.mean[:, :1, :1]))


class RefusesContradictions(unittest.TestCase):
    def setUp(self):
        self.tmp = tempfile.TemporaryDirectory()
        self.out = os.path.join(self.tmp.name, "m.flow")
        self.fx = {f.name: f for f in fixtures()}

    def tearDown(self):
        self.tmp.cleanup()

    def assertFails(self, checkpoint, args, *fragments):
        if os.path.exists(self.out):
            os.unlink(self.out)
        proc = run_cli("glow-pytorch", checkpoint, *args, "-o", self.out)
        self.assertEqual(proc.returncode, 2, proc.stderr)
        self.assertEqual(len(proc.stderr.splitlines()), 1, proc.stderr)   # no warning either
        self.assertTrue(proc.stderr.startswith("error: "), proc.stderr)
        for fragment in fragments:
            self.assertIn(fragment, proc.stderr)
        self.assertFalse(os.path.exists(self.out))

    def _args(self, fx, **changes):
        args = fx.cli_args()
        for flag, value in changes.items():
            flag = "--" + flag.replace("_", "-")
            if value is None:
                args.remove(flag)
            elif value is True:
                args.append(flag)
            else:
                args[args.index(flag) + 1] = value
        return args

    def test_flags(self):
        affine = self.fx["affine_lu_c1_16"]
        additive = self.fx["additive_dense_c3_16"]
        cases = [
            (affine, dict(affine=None), "pass --affine"),
            (additive, dict(affine=True), "drop --affine"),
            (additive, dict(no_lu=None), "pass --no-lu"),
            (affine, dict(no_lu=True), "drop --no-lu"),
            (affine, dict(levels="3"), "--levels 3 does not match"),
            (affine, dict(depth="1"), "--depth 1 does not match"),
            (additive, dict(image="1x16x16"), "4 x image channels"),
            (affine, dict(image="1x10x12"), "divisible by 2^levels = 4"),
            (affine, dict(n_bits="9"), "--n-bits 9 is outside 1..8"),
        ]
        for fx, changes, message in cases:
            with self.subTest(changes=changes):
                self.assertFails(fx.checkpoint, self._args(fx, **changes), message)

    def _rewritten(self, fx, edit):
        state = {k: v.array for k, v in load_state_dict(fx.checkpoint).items()}
        edit(state)
        path = os.path.join(self.tmp.name, "edited.pt")
        torch_zip.write_state_dict(path, state)
        return path

    def test_rewritten_checkpoint_converts_identically(self):
        fx = self.fx["affine_lu_c1_16"]
        path = self._rewritten(fx, lambda s: None)
        proc = run_cli("glow-pytorch", path, *fx.cli_args(), "-o", self.out)
        self.assertEqual(proc.returncode, 0, proc.stderr)
        a = flow_reader.read(self.out)
        b = fx.model()
        self.assertEqual(a.metadata_dict()["source"], "edited.pt")
        a.metadata = b.metadata
        self.assertEqual(flow_writer.to_bytes(a), flow_writer.to_bytes(b))

    def test_wrong_shape(self):
        fx = self.fx["affine_lu_c1_16"]
        key = "blocks.1.flows.0.coupling.net.2.weight"
        path = self._rewritten(fx, lambda s: s.__setitem__(key, s[key][:, :-1]))
        self.assertFails(path, fx.cli_args(), key, "expected [32, 32, 1, 1]")

    def test_integer_parameter(self):
        fx = self.fx["affine_lu_c1_16"]
        key = "blocks.0.flows.1.actnorm.scale"
        path = self._rewritten(fx, lambda s: s.__setitem__(key, s[key].astype(np.int64)))
        self.assertFails(path, fx.cli_args(), key, "holds int64 values, expected floating point")

    def test_double_parameters_are_accepted(self):
        fx = self.fx["affine_lu_c1_16"]
        key = "blocks.0.flows.1.actnorm.scale"
        path = self._rewritten(fx, lambda s: s.__setitem__(key, s[key].astype(np.float64)))
        proc = run_cli("glow-pytorch", path, *fx.cli_args(), "-o", self.out)
        self.assertEqual(proc.returncode, 0, proc.stderr)

    def test_missing_and_unknown_entries(self):
        fx = self.fx["affine_lu_c1_16"]
        key = "blocks.0.prior.scale"
        path = self._rewritten(fx, lambda s: s.pop(key))
        self.assertFails(path, fx.cli_args(), f"lacks '{key}'")
        path = self._rewritten(fx, lambda s: s.__setitem__("blocks.0.extra", np.zeros(1, np.float32)))
        self.assertFails(path, fx.cli_args(), "blocks.0.extra")

    def test_bad_lu_parameters(self):
        fx = self.fx["affine_lu_c1_16"]
        key = "blocks.0.flows.0.invconv.w_p"
        path = self._rewritten(fx, lambda s: s.__setitem__(key, s[key] * 2))
        self.assertFails(path, fx.cli_args(), "is not a permutation matrix")
        key = "blocks.0.flows.0.invconv.u_mask"
        path = self._rewritten(fx, lambda s: s.__setitem__(key, np.ones_like(s[key])))
        self.assertFails(path, fx.cli_args(), "not a plain InvConv2dLU")

    def test_non_finite_values(self):
        fx = self.fx["additive_dense_c3_16"]
        key = "blocks.0.flows.2.coupling.net.0.bias"

        def poison(s):
            s[key] = s[key].copy()
            s[key][3] = np.nan
        self.assertFails(self._rewritten(fx, poison), fx.cli_args(), key, "NaN")

        def signaling_nan(s):   # widening it to float64 raises numpy's invalid-value flag
            s[key] = s[key].copy()
            s[key].view(np.uint32)[3] = 0x7F800001
        self.assertFails(self._rewritten(fx, signaling_nan), fx.cli_args(), key, "NaN")

    def test_values_beyond_float32(self):
        fx = self.fx["affine_lu_c1_16"]
        key = "blocks.0.flows.1.actnorm.loc"

        def huge_double(s):
            s[key] = s[key].astype(np.float64)
            s[key][0, 1] = 1e300
        self.assertFails(self._rewritten(fx, huge_double), fx.cli_args(), key,
                         "beyond the float32 range")
        # exp(3 * 1000) overflows: the top prior glow-pytorch would compute is infinite.
        key = "blocks.1.prior.scale"
        path = self._rewritten(fx, lambda s: s.__setitem__(key, np.full_like(s[key], 1000.0)))
        self.assertFails(path, fx.cli_args(), "'blocks.1.prior' gives is beyond the float32 range")


if __name__ == "__main__":
    unittest.main()
