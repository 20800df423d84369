"""The format 1.1 layers (checkerboard couplings, the tanh scale, logit, flatten) in the converters,
and the family models with format 1.2's residual nets: the writer and reader (format_minor,
round trips, the rules a file must keep), the float64 evaluator against the contract written out
element by element and against brute-force Jacobians, and files exchanged with the flowrt
command (`flowrt init --arch realnvp|nice` models read and rewritten; FLOWRT_TOOL names the
executable)."""
import math
import os
import struct
import subprocess
import tempfile
import unittest
from unittest import mock

import numpy as np

from converters import flow_reader, flow_writer
from converters.errors import ConversionError
from converters.model_ir import (ActNorm, AFFINE_FORM, Conv2d, COUPLING_TYPE, Coupling, Flatten,
                                 HALF, ImageSpec, Layer, Logit, Model, PADDING, ReLU, ResidualAdd,
                                 SCALE_FUNCTION, SHIFT_SCALE_SPLIT, Split, TOP_PRIOR_KIND,
                                 TopPrior, f32, layer_tensors)
from converters.numpy_eval import Evaluator, pixels_to_x
from converters.shapes import trace

from .random_models import (FAMILY_VARIANTS, VARIANTS, labels_for, random_family_model,
                            random_model, random_x)


def _variant(name):
    return next(v for v in FAMILY_VARIANTS if v.name == name)


def _small(v, seed=0):
    """A model small enough for a brute-force Jacobian: 3x4x4 RealNVP (two scales), 1x4x4 NICE."""
    if v.arch == "nice":
        return random_family_model(v, image=(1, 4, 4), depth=4, width=16, seed=seed)
    return random_family_model(v, image=(3, 4, 4), scales=2, depth=2, width=8, seed=seed)


def _brute_log_det(ev, x, labels, h=1e-6):
    """log|det dz/dx| from a central-difference Jacobian, in float64."""
    d = ev.dims
    flat = x.reshape(-1)
    jac = np.empty((d, d))
    for k in range(d):
        e = np.zeros(d)
        e[k] = h
        plus = ev.encode((flat + e).reshape(x.shape), labels).z[0]
        minus = ev.encode((flat - e).reshape(x.shape), labels).z[0]
        jac[:, k] = (plus - minus) / (2 * h)
    sign, log_det = np.linalg.slogdet(jac)
    return sign, log_det


def _tool():
    tool = os.environ.get("FLOWRT_TOOL")
    if not tool:
        raise unittest.SkipTest("FLOWRT_TOOL is not set: the flowrt command is not run (set it "
                                "to the path of the flowrt executable)")
    return tool


def _run_tool(*args):
    proc = subprocess.run([_tool(), *args], capture_output=True, text=True, timeout=300)
    if proc.returncode != 0:
        raise AssertionError(f"flowrt {' '.join(args)} failed: {proc.stderr.strip()}")
    return proc.stdout


def _info_without_path(path):
    """`flowrt info --layers`, less the line that names the file."""
    out = _run_tool("info", path, "--layers")
    return [line for line in out.splitlines() if not line.startswith("model: ")]


class Format(unittest.TestCase):
    def test_round_trip_and_format_minor(self):
        for v in FAMILY_VARIANTS:
            with self.subTest(variant=v.name):
                model = random_family_model(v)
                self.assertEqual(model.format_minor, 0)   # the writer raises it
                data = flow_writer.to_bytes(model)
                again = flow_reader.from_bytes(data)
                self.assertEqual(again.format_minor, 2 if v.residual else 1)
                self.assertEqual(flow_writer.to_bytes(again), data)
                for a, b in zip(model.layers, again.layers):
                    self.assertEqual(type(a.op), type(b.op))
                    nets = [(a.op.net, b.op.net)] if isinstance(a.op, Coupling) else \
                        [(a.op.prior, b.op.prior)] if isinstance(a.op, Split) else []
                    for net_a, net_b in nets:
                        self.assertEqual([type(o) for o in net_a], [type(o) for o in net_b])
                        self.assertEqual([o.from_ for o in net_a if isinstance(o, ResidualAdd)],
                                         [o.from_ for o in net_b if isinstance(o, ResidualAdd)])
                    ta, tb = layer_tensors(a.op), layer_tensors(b.op)
                    self.assertEqual(len(ta), len(tb))
                    for x, y in zip(ta, tb):
                        np.testing.assert_array_equal(x, y)
                    if isinstance(a.op, Coupling):
                        self.assertEqual((a.op.conditioning, a.op.mask_channel, a.op.scale_fn),
                                         (b.op.conditioning, b.op.mask_channel, b.op.scale_fn))
                    if isinstance(a.op, Logit):
                        self.assertEqual(a.op.alpha, b.op.alpha)
                x = random_x(model, 2)
                labels = labels_for(model, 2)
                np.testing.assert_array_equal(Evaluator(model).encode(x, labels).log_p,
                                              Evaluator(again).encode(x, labels).log_p)

    def test_format_1_0_models_stay_1_0(self):
        for v in VARIANTS:
            with self.subTest(variant=v.name):
                self.assertEqual(flow_reader.from_bytes(
                    flow_writer.to_bytes(random_model(v))).format_minor, 0)

    def test_scale_weight_is_counted_as_parameters(self):
        model = random_family_model(_variant("realnvp"))
        coupling = next(l.op for l in model.layers if isinstance(l.op, Coupling))
        tensors = layer_tensors(coupling)
        self.assertTrue(any(t is coupling.scale_weight for t in tensors))


class Rules(unittest.TestCase):
    """What the reader and the writer refuse (the rules libflowrt's loader applies)."""

    def setUp(self):
        self.model = random_family_model(_variant("realnvp"), image=(1, 8, 8))

    def _coupling(self, checkerboard):
        return next(l.op for l in self.model.layers if isinstance(l.op, Coupling)
                    and l.op.checkerboard == checkerboard)

    def assertRefused(self, fragment):
        with self.assertRaises(ConversionError) as cm:
            flow_writer.to_bytes(self.model)
        self.assertIn(fragment, str(cm.exception))
        with mock.patch("converters.flow_writer.trace"):
            data = flow_writer.to_bytes(self.model)
        with self.assertRaises(ConversionError) as cm:
            flow_reader.from_bytes(data)
        self.assertIn(fragment, str(cm.exception))

    def test_mask_channel_on_a_channel_coupling(self):
        self._coupling(False).mask_channel = True
        self.assertRefused("mask_channel is set on a channel coupling")

    def test_tanh_scale_weight_of_a_checkerboard_is_c(self):
        self._coupling(True).scale_weight = f32(np.ones(3))
        self.assertRefused("scale_weight has shape [3], expected [1]")

    def test_tanh_scale_weight_of_a_channel_coupling_is_c_over_2(self):
        self._coupling(False).scale_weight = f32(np.ones(4))   # 4x4x4 after the squeeze
        self.assertRefused("scale_weight has shape [4], expected [2]")

    def test_tanh_scale_weight_is_bounded(self):
        self._coupling(True).scale_weight[0] = 61.0
        self.assertRefused("scale_weight is out of range")

    def test_tanh_without_scale_weight(self):
        self._coupling(True).scale_weight = None
        with self.assertRaises(ConversionError) as cm:
            flow_writer.to_bytes(self.model)
        self.assertIn("scale_weight is missing", str(cm.exception))

    def test_scale_weight_without_tanh(self):
        c = self._coupling(True)
        c.scale_fn = SCALE_FUNCTION.EXP
        with self.assertRaises(ConversionError) as cm:
            flow_writer.to_bytes(self.model)
        self.assertIn("scale_weight is set, but the scale function is not TANH", str(cm.exception))
        # In a file it is ignored, as libflowrt ignores it.
        with mock.patch("converters.flow_writer.trace"):
            data = flow_writer.to_bytes(self.model)
        read = flow_reader.from_bytes(data)
        self.assertIsNone(next(l.op for l in read.layers if isinstance(l.op, Coupling)
                               and l.op.checkerboard).scale_weight)

    def test_checkerboard_net_channels(self):
        c = self._coupling(True)
        c.mask_channel = False           # the net still takes C + 1 channels
        self.assertRefused("conv weight takes 2 input channels, the net has 1")

    def test_logit_first_and_alpha_in_range(self):
        self.model.layers[0].op.alpha = 0.5
        self.assertRefused("alpha = 0.5 is out of range (0, 0.5)")
        self.model.layers[0].op.alpha = 0.0
        self.assertRefused("alpha = 0 is out of range (0, 0.5)")
        self.model.layers[0].op.alpha = 0.05
        self.model.layers[0], self.model.layers[1] = self.model.layers[1], self.model.layers[0]
        self.assertRefused("logit must be the first layer")

    def test_split_cannot_leave_a_checkerboard(self):
        split = next(l.op for l in self.model.layers if isinstance(l.op, Split))
        split.leaving = HALF.CHECKERBOARD_ODD
        self.assertRefused("a split leaves a channel half, not a checkerboard")

    def test_checkerboard_needs_two_positions(self):
        model = random_family_model(_variant("nice"), image=(1, 2, 2), depth=2)
        coupling = next(l.op for l in model.layers if isinstance(l.op, Coupling))
        coupling.conditioning = HALF.CHECKERBOARD_EVEN   # after the flatten: 4x1x1
        with self.assertRaises(ConversionError) as cm:
            trace(model)
        self.assertIn("a checkerboard coupling needs at least 2 positions, got 4x1x1",
                      str(cm.exception))

    def test_odd_channel_counts_are_fine_for_checkerboards(self):
        for c in (1, 3):
            shapes = trace(random_family_model(_variant("realnvp"), image=(c, 8, 8)))
            self.assertEqual(shapes[0].in_shape, (c, 8, 8))

    def test_flatten_shape(self):
        shapes = trace(random_family_model(_variant("nice"), image=(3, 4, 2)))
        self.assertEqual(shapes[1].out_shape, (24, 1, 1))   # layer 0 is the logit
        self.assertEqual(shapes[-1].latent, (24, 1, 1))

    def test_random_damage_gives_clear_errors(self):
        rng = np.random.default_rng(11)
        for v in (_variant("realnvp"), _variant("nice_tanh_logit")):
            data = flow_writer.to_bytes(random_family_model(v, image=(1, 4, 4)))
            for trial in range(150):
                damaged = bytearray(data)
                for _ in range(int(rng.integers(1, 4))):
                    damaged[int(rng.integers(0, len(damaged)))] = int(rng.integers(0, 256))
                with np.errstate(all="raise"):
                    try:
                        flow_reader.from_bytes(bytes(damaged))
                    except ConversionError:
                        pass


def _one_coupling_model(coupling, shape):
    c, h, w = shape
    return Model(ImageSpec(c, h, w), [Layer("coupling", coupling),
                                      Layer("top", TopPrior(TOP_PRIOR_KIND.STANDARD_NORMAL))])


class Contract(unittest.TestCase):
    """The evaluator against the contract's formulas written out one element at a time."""

    def test_checkerboard_coupling_elementwise(self):
        rng = np.random.default_rng(3)
        c, h, w = 2, 3, 3   # odd sides: the two phases cover different position counts
        cases = [(HALF.CHECKERBOARD_EVEN, True, SCALE_FUNCTION.TANH, AFFINE_FORM.SCALE_THEN_SHIFT),
                 (HALF.CHECKERBOARD_ODD, False, SCALE_FUNCTION.SIGMOID,
                  AFFINE_FORM.SHIFT_THEN_SCALE),
                 (HALF.CHECKERBOARD_ODD, True, SCALE_FUNCTION.EXP, AFFINE_FORM.SCALE_THEN_SHIFT)]
        for half, mask_channel, scale_fn, form in cases:
            with self.subTest(half=half, mask_channel=mask_channel, scale_fn=scale_fn):
                in_c = c + (1 if mask_channel else 0)
                weight = f32(rng.normal(0, 0.5, (2 * c, in_c, 1, 1)))
                bias = f32(rng.normal(0, 0.5, 2 * c))
                scale_weight = f32(rng.normal(1, 0.2, c)) if scale_fn == SCALE_FUNCTION.TANH \
                    else None
                scale_bias = 2.0 if scale_fn == SCALE_FUNCTION.SIGMOID else 0.25
                op = Coupling(COUPLING_TYPE.AFFINE, half, [Conv2d(weight, bias, PADDING.ZEROS)],
                              SHIFT_SCALE_SPLIT.SHIFT_SCALE_HALVES, scale_fn, scale_bias, form,
                              mask_channel, scale_weight)
                x = rng.uniform(-0.5, 0.5, (1, c, h, w))
                r = Evaluator(_one_coupling_model(op, (c, h, w))).encode(x)
                want = np.empty_like(x)
                want_log_det = 0.0
                for i in range(h):
                    for j in range(w):
                        m = 1.0 if (i + j) % 2 == (0 if half == HALF.CHECKERBOARD_EVEN else 1) \
                            else 0.0
                        net_in = [x[0, k, i, j] * m for k in range(c)] + ([m] if mask_channel
                                                                         else [])
                        out = [sum(float(weight[o, k, 0, 0]) * net_in[k] for k in range(in_c))
                               + float(bias[o]) for o in range(2 * c)]
                        for k in range(c):
                            xv = x[0, k, i, j]
                            if m == 1.0:
                                want[0, k, i, j] = xv
                                continue
                            t, a = out[k], out[c + k] + scale_bias
                            if scale_fn == SCALE_FUNCTION.TANH:
                                log_s = float(scale_weight[k]) * math.tanh(a)
                            elif scale_fn == SCALE_FUNCTION.SIGMOID:
                                log_s = math.log(1.0 / (1.0 + math.exp(-a)))
                            else:
                                log_s = a
                            s = math.exp(log_s)
                            want[0, k, i, j] = xv * s + t if form == AFFINE_FORM.SCALE_THEN_SHIFT \
                                else (xv + t) * s
                            want_log_det += log_s
                np.testing.assert_allclose(r.latents[0], want, rtol=0, atol=1e-13)
                self.assertAlmostEqual(r.log_det[0], want_log_det, places=12)
                # The conditioning positions pass through bit for bit.
                m = np.array([[(i + j) % 2 == (0 if half == HALF.CHECKERBOARD_EVEN else 1)
                               for j in range(w)] for i in range(h)])
                np.testing.assert_array_equal(r.latents[0][:, :, m], x[:, :, m])

    def test_additive_checkerboard_elementwise(self):
        rng = np.random.default_rng(4)
        c, h, w = 3, 2, 4
        weight = f32(rng.normal(0, 0.5, (c, c + 1, 1, 1)))
        op = Coupling(COUPLING_TYPE.ADDITIVE, HALF.CHECKERBOARD_ODD,
                      [Conv2d(weight, None, PADDING.ZEROS)], mask_channel=True)
        x = rng.uniform(-0.5, 0.5, (2, c, h, w))
        r = Evaluator(_one_coupling_model(op, (c, h, w))).encode(x)
        net_weight = weight[:, :, 0, 0].astype(np.float64)
        for n in range(2):
            for i in range(h):
                for j in range(w):
                    m = float((i + j) % 2 == 1)
                    net_in = np.append(x[n, :, i, j] * m, m)
                    want = x[n, :, i, j] + (1 - m) * (net_weight @ net_in)
                    np.testing.assert_allclose(r.latents[0][n, :, i, j], want, rtol=0, atol=1e-14)
        np.testing.assert_array_equal(r.log_det, 0.0)

    def test_logit(self):
        alpha = float(np.float32(0.05))
        model = Model(ImageSpec(1, 2, 3), [Layer("logit", Logit(alpha)),
                                           Layer("top", TopPrior(TOP_PRIOR_KIND.STANDARD_NORMAL))])
        # The whole pixel range, both ends included.
        x = np.array([-0.5, -0.25, 0.0, 0.1, 0.4, 0.5 - 1 / 256]).reshape(1, 1, 2, 3)
        ev = Evaluator(model)
        r = ev.encode(x)
        u = alpha + (1 - 2 * alpha) * (x + 0.5)
        np.testing.assert_allclose(r.z, np.log(u / (1 - u)).reshape(1, -1), rtol=1e-14)
        self.assertAlmostEqual(r.log_det[0], np.sum(math.log(1 - 2 * alpha) - np.log(u)
                                                    - np.log(1 - u)), places=12)
        np.testing.assert_allclose(ev.decode(r.z), x, rtol=0, atol=1e-15)
        # Any latent decodes into the pixel interval.
        far = ev.decode(np.array([[-40.0, -5, 0, 5, 40, 1e3]]))
        self.assertTrue(np.all(np.abs(far) <= 0.5 / (1 - 2 * alpha)))

    def test_flatten_order(self):
        # Element (c, i, j) becomes channel (c*H + i)*W + j: an actnorm after the flatten scales
        # the image in its NCHW order.
        rng = np.random.default_rng(5)
        shape = (2, 3, 4)
        d = 24
        scale = f32(np.exp(rng.normal(0, 0.3, d)))
        bias = f32(rng.normal(0, 0.3, d))
        model = Model(ImageSpec(*shape), [Layer("flatten", Flatten()),
                                          Layer("scale", ActNorm(bias, scale)),
                                          Layer("top", TopPrior(TOP_PRIOR_KIND.STANDARD_NORMAL))])
        x = rng.uniform(-0.5, 0.5, (2,) + shape)
        ev = Evaluator(model)
        r = ev.encode(x)
        want = scale.astype(np.float64) * (x.reshape(2, d) + bias.astype(np.float64))
        np.testing.assert_allclose(r.z, want, rtol=1e-15)
        self.assertAlmostEqual(r.log_det[0], float(np.sum(np.log(scale.astype(np.float64)))),
                               places=12)
        np.testing.assert_allclose(ev.decode(r.z), x, rtol=0, atol=1e-15)


class Evaluation(unittest.TestCase):
    def test_decode_inverts_encode(self):
        for v in FAMILY_VARIANTS:
            with self.subTest(variant=v.name):
                model = random_family_model(v, image=(3, 8, 8), scales=2)
                ev = Evaluator(model)
                x = random_x(model, 4)
                labels = labels_for(model, 4)
                r = ev.encode(x, labels)
                self.assertEqual(r.z.shape, (4, ev.dims))
                self.assertLess(np.max(np.abs(ev.decode(r.z, labels) - x)), 1e-10)
                eps = np.random.default_rng(2).standard_normal((4, ev.dims))
                sample = ev.decode_noise(eps, 0.8, labels)
                if v.logit_alpha:   # the logit's inverse maps onto the pixel interval
                    self.assertLessEqual(np.max(np.abs(sample)), 0.5 / (1 - 2 * v.logit_alpha))
                self.assertLess(np.max(np.abs(ev.decode(ev.encode(sample, labels).z, labels)
                                              - sample)), 1e-10)

    def test_log_det_against_brute_force_jacobian(self):
        for v in FAMILY_VARIANTS:
            for seed in (0, 1):
                with self.subTest(variant=v.name, seed=seed):
                    model = _small(v, seed)
                    ev = Evaluator(model)
                    x = random_x(model, 1, seed=7 + seed)
                    labels = labels_for(model, 1)
                    sign, brute = _brute_log_det(ev, x, labels)
                    self.assertNotEqual(sign, 0)
                    r = ev.encode(x, labels)
                    self.assertLess(abs(r.log_det[0] - brute), 1e-6 * max(1.0, abs(brute)),
                                    (r.log_det[0], brute))
                    d = ev.dims
                    bpd = -(r.log_p[0] - d * 8 * math.log(2)) / (d * math.log(2))
                    self.assertAlmostEqual(r.bits_per_dim[0], bpd, places=12)

    def test_conditioning_positions_pass_through_a_checkerboard(self):
        # The Jacobian of one checkerboard coupling: identity rows at x_a's elements, and the
        # elements of x_b depend on x_a and on themselves only (a triangular Jacobian).
        v = _variant("realnvp")
        model = _small(v)
        layers = [l for l in model.layers if isinstance(l.op, Coupling) and l.op.checkerboard]
        for layer in layers[:2]:
            with self.subTest(layer=layer.name):
                shape = trace(model)[model.layers.index(layer)].in_shape
                one = _one_coupling_model(layer.op, shape)
                ev = Evaluator(one)
                x = np.random.default_rng(1).uniform(-1, 1, (1,) + shape)
                d = ev.dims
                jac = np.empty((d, d))
                for k in range(d):
                    e = np.zeros(d)
                    e[k] = 1e-6
                    jac[:, k] = (ev.encode(x + e.reshape(x.shape)).z[0]
                                 - ev.encode(x - e.reshape(x.shape)).z[0]) / 2e-6
                c, h, w = shape
                m = np.broadcast_to(((np.add.outer(np.arange(h), np.arange(w)) % 2)
                                     == (0 if layer.op.conditioning == HALF.CHECKERBOARD_EVEN
                                         else 1)), (c, h, w)).reshape(-1)
                a, b = np.flatnonzero(m), np.flatnonzero(~m)
                np.testing.assert_allclose(jac[np.ix_(a, a)], np.eye(len(a)), rtol=0, atol=1e-9)
                np.testing.assert_array_equal(jac[np.ix_(a, b)], 0.0)
                block = jac[np.ix_(b, b)]
                self.assertLess(np.max(np.abs(block - np.diag(np.diag(block)))), 1e-8)
                self.assertGreater(np.max(np.abs(jac[np.ix_(b, a)])), 1e-3)  # the net is used
                self.assertAlmostEqual(ev.encode(x).log_det[0],
                                       float(np.sum(np.log(np.diag(block)))), delta=1e-7)


class FlowrtFiles(unittest.TestCase):
    """Files exchanged with the flowrt command."""

    INIT = {
        "realnvp_c1": ["--arch", "realnvp", "--image", "1x8x8", "--levels", "2", "--depth", "2",
                       "--width", "8"],
        "realnvp_plain": ["--arch", "realnvp", "--image", "1x8x8", "--levels", "2", "--depth",
                          "2", "--width", "8", "--res-blocks", "0"],
        "realnvp_one_block": ["--arch", "realnvp", "--image", "3x8x8", "--levels", "2",
                              "--depth", "2", "--width", "8", "--res-blocks", "1"],
        "realnvp_c3": ["--arch", "realnvp", "--image", "3x8x8", "--levels", "2", "--depth", "2",
                       "--width", "8"],
        "nice": ["--arch", "nice", "--image", "1x4x4", "--depth", "4", "--width", "16"],
    }

    def test_python_written_files_read_in_flowrt(self):
        with tempfile.TemporaryDirectory() as tmp:
            for v in FAMILY_VARIANTS:
                with self.subTest(variant=v.name):
                    path = os.path.join(tmp, v.name + ".flow")
                    model = random_family_model(v)
                    flow_writer.write(model, path)
                    info = _info_without_path(path)
                    self.assertIn(f"format: 1.{2 if v.residual else 1}", info)
                    self.assertIn(f"layers: {len(model.layers)}", info)

    def test_flowrt_models_read_and_rewritten(self):
        with tempfile.TemporaryDirectory() as tmp:
            for name, args in self.INIT.items():
                with self.subTest(model=name):
                    original = os.path.join(tmp, name + ".flow")
                    _run_tool("init", *args, "--random-nets", "--seed", "3", "-o", original)
                    model = flow_reader.read(original)
                    residual = name.startswith("realnvp") and name != "realnvp_plain"
                    self.assertEqual(model.format_minor, 2 if residual else 1)
                    self._check_structure(name, model)
                    rewritten = os.path.join(tmp, name + "_py.flow")
                    flow_writer.write(model, rewritten)
                    # Same semantics: libflowrt sees the same layers, shapes, parameters and
                    # metadata in both files, the converters the same tensors and numbers.
                    self.assertEqual(_info_without_path(rewritten), _info_without_path(original))
                    again = flow_reader.read(rewritten)
                    self.assertEqual(flow_writer.to_bytes(again), flow_writer.to_bytes(model))
                    x = random_x(model, 3)
                    np.testing.assert_array_equal(Evaluator(model).encode(x).log_p,
                                                  Evaluator(again).encode(x).log_p)

    def test_score_matches_the_evaluator(self):
        # bits/dim of `flowrt score --backend ref` (printed to 6 decimals) against the float64
        # evaluator, on grey images (an IDX file) for flowrt's own models and the converters'.
        rng = np.random.default_rng(9)
        with tempfile.TemporaryDirectory() as tmp:
            models = {}
            for name in ("realnvp_c1", "nice"):
                path = os.path.join(tmp, name + ".flow")
                _run_tool("init", *self.INIT[name], "--random-nets", "--seed", "5", "-o", path)
                models[name] = path
            for v in FAMILY_VARIANTS:
                if not v.classes:   # score takes no labels
                    path = os.path.join(tmp, v.name + ".flow")
                    flow_writer.write(random_family_model(v, image=(1, 8, 8), depth=2), path)
                    models[v.name] = path
            for name, path in models.items():
                with self.subTest(model=name):
                    model = flow_reader.read(path)
                    _, h, w = model.image.shape
                    pixels = rng.integers(0, 256, (5, h, w), dtype=np.uint8)
                    images = os.path.join(tmp, f"{name}.idx")
                    with open(images, "wb") as f:
                        f.write(struct.pack(">IIII", 0x803, 5, h, w) + pixels.tobytes())
                    out = _run_tool("score", path, images, "--backend", "ref")
                    got = [float(line.split("\t")[1]) for line in out.splitlines()
                           if line.startswith(images + "[")]
                    want = Evaluator(model).encode(
                        pixels_to_x(pixels[:, None], model.image.n_bits)).bits_per_dim
                    self.assertEqual(len(got), 5)
                    self.assertLess(np.max(np.abs(np.array(got) - want)), 1e-5)

    def _check_structure(self, name, model):
        kinds = [type(l.op).__name__ for l in model.layers]
        couplings = [l.op for l in model.layers if isinstance(l.op, Coupling)]
        if name.startswith("realnvp"):
            self.assertEqual(kinds[0], "Logit")
            self.assertAlmostEqual(model.layers[0].op.alpha, 0.05, places=7)
            checker = [c for c in couplings if c.checkerboard]
            self.assertEqual([c.conditioning for c in checker[:2]],
                             [HALF.CHECKERBOARD_EVEN, HALF.CHECKERBOARD_ODD])
            for layer, shapes in zip(model.layers, trace(model)):
                c = layer.op
                if isinstance(c, Coupling):
                    self.assertEqual(c.mask_channel, c.checkerboard)
                    self.assertEqual(c.scale_fn, SCALE_FUNCTION.TANH)
                    self.assertEqual(c.scale_weight.shape,
                                     (c.transformed_channels(shapes.in_shape[0]),))
                    self._check_residual_net(name, c.net)
        else:
            self.assertEqual(kinds[:2], ["Flatten", "Permute"])
            self.assertFalse(any(isinstance(o, ResidualAdd) for c in couplings for o in c.net))
            self.assertEqual(kinds[-2:], ["ActNorm", "TopPrior"])
            self.assertTrue(all(c.type == COUPLING_TYPE.ADDITIVE for c in couplings))


    def _check_residual_net(self, name, net):
        """flowrt init's RealNVP net: conv, ReLU, per block [conv, actnorm, ReLU, conv, actnorm,
        add of the block's input, ReLU], conv (--res-blocks, 2 by default); with no blocks the
        plain conv, ReLU, conv 1x1, ReLU, conv."""
        blocks = {"realnvp_plain": 0, "realnvp_one_block": 1}.get(name, 2)
        if blocks == 0:
            self.assertEqual([type(o) for o in net], [Conv2d, ReLU, Conv2d, ReLU, Conv2d])
            return
        block = [Conv2d, ActNorm, ReLU, Conv2d, ActNorm, ResidualAdd, ReLU]
        self.assertEqual([type(o) for o in net], [Conv2d, ReLU] + block * blocks + [Conv2d])
        self.assertEqual([o.from_ for o in net if isinstance(o, ResidualAdd)],
                         [2 + 7 * b for b in range(blocks)])


if __name__ == "__main__":
    unittest.main()
