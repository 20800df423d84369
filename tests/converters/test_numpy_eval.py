"""The float64 evaluator on its own: exact invertibility and log-determinants against a
brute-force Jacobian, for every option of the format."""
import math
import unittest

import numpy as np

from converters.model_ir import SQUEEZE_ORDER
from converters.numpy_eval import Evaluator, pixels_to_x, squeeze

from .random_models import VARIANTS, random_model, random_x


def _labels(model, n):
    top = model.layers[-1].op
    return None if top.class_offsets is None else np.arange(n) % top.class_offsets.shape[0]


class Invertibility(unittest.TestCase):
    def test_decode_encode(self):
        for v in VARIANTS:
            with self.subTest(variant=v.name):
                model = random_model(v, image=(3, 8, 8), levels=3)
                ev = Evaluator(model)
                x = random_x(model, 4)
                labels = _labels(model, 4)
                r = ev.encode(x, labels)
                self.assertEqual(r.z.shape, (4, 3 * 8 * 8))
                self.assertLess(np.max(np.abs(ev.decode(r.z, labels) - x)), 1e-10)

    def test_decode_noise_applies_the_top_prior(self):
        # encode(decode_noise(eps, T)) returns the top latent mean + T * std * eps, with the
        # top prior's own mean and log-std (and class offsets).
        for v in VARIANTS:
            with self.subTest(variant=v.name):
                model = random_model(v)
                ev = Evaluator(model)
                labels = _labels(model, 3)
                eps = np.random.default_rng(3).standard_normal((3, ev.dims))
                top = model.layers[-1].op
                shape = ev.latent_shapes[-1]
                mean = np.zeros((3,) + shape)
                log_std = np.zeros((3,) + shape)
                if top.mean is not None:
                    mean += top.mean
                    log_std += top.log_std
                if top.class_offsets is not None:
                    off = top.class_offsets[labels].astype(np.float64)
                    mean += off[:, :shape[0], None, None]
                    log_std += off[:, shape[0]:, None, None]
                size = int(np.prod(shape))
                for t in (0.0, 0.7):
                    z = ev.encode(ev.decode_noise(eps, t, labels), labels).latents[-1]
                    want = mean + t * np.exp(log_std) * eps[:, -size:].reshape(z.shape)
                    self.assertLess(np.max(np.abs(z - want)), 1e-10)


class LogDeterminant(unittest.TestCase):
    """log_det against log|det dz/dx| of a central-difference Jacobian in float64."""

    def test_against_brute_force_jacobian(self):
        for v in VARIANTS:
            with self.subTest(variant=v.name):
                model = random_model(v, image=(2, 4, 4), levels=2, seed=5)
                ev = Evaluator(model)
                x = random_x(model, 1, seed=7)
                labels = _labels(model, 1)
                d = ev.dims
                jac = np.empty((d, d))
                h = 1e-6
                flat = x.reshape(-1)
                for k in range(d):
                    e = np.zeros(d)
                    e[k] = h
                    plus = ev.encode((flat + e).reshape(x.shape), labels).z[0]
                    minus = ev.encode((flat - e).reshape(x.shape), labels).z[0]
                    jac[:, k] = (plus - minus) / (2 * h)
                brute = np.linalg.slogdet(jac)[1]
                r = ev.encode(x, labels)
                self.assertAlmostEqual(r.log_det[0], brute, delta=1e-5 * max(1.0, abs(brute)))
                # log_p is the prior density of z plus log_det, and bits/dim follows from it.
                self.assertTrue(math.isfinite(r.log_p[0]))
                bpd = -(r.log_p[0] - d * 8 * math.log(2)) / (d * math.log(2))
                self.assertAlmostEqual(r.bits_per_dim[0], bpd, places=12)


class Conventions(unittest.TestCase):
    def test_squeeze_orders(self):
        x = np.arange(2 * 4 * 4, dtype=np.float64).reshape(1, 2, 4, 4)
        cm = squeeze(x, SQUEEZE_ORDER.CHANNEL_MAJOR)
        sm = squeeze(x, SQUEEZE_ORDER.SUBPIXEL_MAJOR)
        for c in range(2):
            for i in range(2):
                for j in range(2):
                    for y in range(2):
                        for xx in range(2):
                            v = x[0, c, 2 * y + i, 2 * xx + j]
                            self.assertEqual(cm[0, c * 4 + 2 * i + j, y, xx], v)
                            self.assertEqual(sm[0, (2 * i + j) * 2 + c, y, xx], v)

    def test_pixels_to_x(self):
        p = np.array([0, 7, 8, 255], dtype=np.uint8)
        np.testing.assert_allclose(pixels_to_x(p, 8), p / 256 - 0.5 + 0.5 / 256)
        np.testing.assert_allclose(pixels_to_x(p, 5), np.array([0, 0, 1, 31]) / 32 - 0.5 + 0.5 / 32)


if __name__ == "__main__":
    unittest.main()
