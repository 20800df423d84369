"""Exactness of converted models in libflowrt (REF backend, through the C API with ctypes):
the glow-pytorch fixtures' likelihoods, latents, samples and reconstructions, and agreement with
the float64 evaluator on models that use every option of the format. Needs FLOWRT_LIB (the tests
use the flowrt Python module, python/flowrt, on that library)."""
import unittest

import numpy as np

from converters import flow_writer

from .common import assert_evaluator_matches, fixtures, libflowrt, max_rel, ref_session
from .random_models import (FAMILY_VARIANTS, VARIANTS, labels_for, random_family_model,
                            random_model, random_x)

TOL = 1e-4


class GlowPytorchFixtures(unittest.TestCase):
    @classmethod
    def setUpClass(cls):
        libflowrt()

    def _session(self, fx):
        return ref_session(flow_writer.to_bytes(fx.model()))

    def test_model_facts(self):
        for fx in fixtures():
            with self.subTest(fixture=fx.name), self._session(fx) as s:
                c, size = fx.config["in_channel"], fx.config["img_size"]
                self.assertEqual(s.image_shape, (c, size, size))
                self.assertEqual(s.latent_dim, c * size * size)
                self.assertEqual(s.model.n_bits, fx.config["n_bits"])
                self.assertEqual(s.model.metadata("producer"), "flowrt converters glow-pytorch")

    def test_encode(self):
        for fx in fixtures():
            with self.subTest(fixture=fx.name), self._session(fx) as s:
                z, log_p, log_det, bpd = s.encode_ex(fx.x().astype(np.float32))
                prior_lp = fx.array("log_p")
                want_det = np.broadcast_to(fx.array("logdet"), prior_lp.shape)
                scale = np.maximum(np.abs(prior_lp), np.abs(want_det))
                self.assertLess(max_rel(log_p, prior_lp + want_det, scale), TOL)
                self.assertLess(max_rel(log_det, want_det), TOL)
                self.assertLess(max_rel(bpd, fx.array("bits_per_dim")), TOL)
                self.assertLess(max_rel(z, fx.flat_levels("z"), 1.0), TOL)

    def test_encode_pixels(self):
        for fx in fixtures():
            with self.subTest(fixture=fx.name), self._session(fx) as s:
                z, bpd = s.encode(fx.array("images_u8"))
                self.assertLess(max_rel(bpd, fx.array("bits_per_dim")), TOL)
                self.assertLess(max_rel(z, fx.flat_levels("z"), 1.0), TOL)

    def test_sample_from_noise(self):
        for fx in fixtures():
            with self.subTest(fixture=fx.name), self._session(fx) as s:
                _, x = s.decode_noise(fx.flat_levels("eps"), fx.config["temperature"],
                                      return_x=True)
                self.assertLess(max_rel(x, fx.array("sample_t0.7"), 1.0), TOL)

    def test_reconstruction(self):
        for fx in fixtures():
            with self.subTest(fixture=fx.name), self._session(fx) as s:
                x = fx.x()
                _, got = s.decode(fx.flat_levels("z"), return_x=True)
                self.assertLess(np.max(np.abs(got - x)), TOL)
                z, *_ = s.encode_ex(x.astype(np.float32))
                _, got = s.decode(z, return_x=True)
                self.assertLess(np.max(np.abs(got - x)), TOL)


class EveryOption(unittest.TestCase):
    """libflowrt and the float64 evaluator agree on models built from every format option."""

    @classmethod
    def setUpClass(cls):
        libflowrt()

    def test_against_numpy_evaluator(self):
        for v in VARIANTS:
            model = random_model(v, image=(3, 16, 16), levels=3, width=16, n_bits=5)
            top = model.layers[-1].op
            labels = None if top.class_offsets is None else np.arange(6) % top.class_offsets.shape[0]
            with self.subTest(variant=v.name):
                assert_evaluator_matches(self, model, random_x(model, 6), labels, TOL)


class FamilyLayers(unittest.TestCase):
    """libflowrt and the float64 evaluator agree on the format 1.1 layers (checkerboard
    couplings, the tanh scale, logit, flatten) in RealNVP- and NICE-shaped models."""

    @classmethod
    def setUpClass(cls):
        libflowrt()

    def _compare(self, model, n=6):
        assert_evaluator_matches(self, model, random_x(model, n), labels_for(model, n), TOL,
                                 bpd_abs=1e-5)

    def test_against_numpy_evaluator(self):
        for v in FAMILY_VARIANTS:
            for image in ((1, 16, 16), (3, 16, 16)):
                with self.subTest(variant=v.name, image=image):
                    if v.arch == "nice":
                        model = random_family_model(v, image=image, depth=4, width=32, n_bits=5)
                    else:
                        model = random_family_model(v, image=image, scales=3, width=16, n_bits=5)
                    self._compare(model)


if __name__ == "__main__":
    unittest.main()
