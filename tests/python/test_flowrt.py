"""Tests of the flowrt Python module (python/flowrt) on small models made with `flowrt init`.

Run through run_tests.py (ctest: python_module, python_installed), or by hand:
  FLOWRT_TOOL=build/bin/flowrt PYTHONPATH=build/python python3 -m unittest discover -s tests/python
FLOWRT_TOOL names the flowrt command (else `flowrt` on PATH). FLOWRT_TEST_LIBRARY and
FLOWRT_TEST_PACKAGE, when set, are the library and package directory the module must have found.
"""
import os
import shutil
import subprocess
import sys
import tempfile
import threading
import unittest

import numpy as np

import flowrt

MODELS = {}  # name -> path
TMP = None


def tool():
    t = os.environ.get("FLOWRT_TOOL") or shutil.which("flowrt")
    if not t:
        raise RuntimeError("set FLOWRT_TOOL to the flowrt command (it makes the test models)")
    return t


def setUpModule():
    global TMP
    TMP = tempfile.mkdtemp(prefix="flowrt-py-", dir=os.environ.get("FLOWRT_TEST_TMP"))
    specs = {
        # An unconditional RGB model with random coupling nets (not the identity).
        "rgb": ["--image", "3x16x16", "--levels", "2", "--depth", "2", "--width", "16",
                "--random-nets", "--seed", "3"],
        # Class-conditional, 5 bits, three levels, additive couplings.
        "cond": ["--image", "1x8x8", "--levels", "3", "--depth", "2", "--width", "8",
                 "--classes", "4", "--n-bits", "5", "--coupling", "additive", "--random-nets",
                 "--seed", "4"],
    }
    for name, args in specs.items():
        path = os.path.join(TMP, name + ".flow")
        subprocess.run([tool(), "init", *args, "-o", path], check=True, stdout=subprocess.DEVNULL)
        MODELS[name] = path


def tearDownModule():
    if TMP:
        shutil.rmtree(TMP, ignore_errors=True)


def quantize(pixels, n_bits):
    """Pixels as a model with n_bits writes them (its values in the top bits)."""
    return pixels & np.uint8((0xFF << (8 - n_bits)) & 0xFF)


def random_pixels(model, n, seed=0):
    rng = np.random.default_rng(seed)
    px = rng.integers(0, 256, (n,) + model.image_shape, dtype=np.uint8)
    return quantize(px, model.n_bits)


def max_rel(a, b):
    a, b = np.asarray(a, np.float64), np.asarray(b, np.float64)
    return float(np.max(np.abs(a - b) / np.maximum(np.abs(b), 1e-30)))


class Base(unittest.TestCase):
    def open(self, name, **kw):
        model = flowrt.Model.open(MODELS[name])
        self.addCleanup(model.close)
        kw.setdefault("backend", "ref")
        kw.setdefault("threads", 2)
        session = flowrt.Session(model, **kw)
        self.addCleanup(session.close)
        return model, session

    @staticmethod
    def labels(model, n):
        return None if model.num_classes == 0 else np.arange(n, dtype=np.int32) % model.num_classes


class Library(unittest.TestCase):
    def test_found_where_expected(self):
        want = os.environ.get("FLOWRT_TEST_LIBRARY")
        if want:
            self.assertEqual(os.path.realpath(flowrt.library_path()), os.path.realpath(want))
        pkg = os.environ.get("FLOWRT_TEST_PACKAGE")
        if pkg:
            self.assertEqual(os.path.realpath(os.path.dirname(flowrt.__file__)),
                             os.path.realpath(pkg))

    def test_version(self):
        self.assertEqual(flowrt.version(), flowrt.__version__)
        self.assertGreaterEqual(flowrt.format_major_supported(), 1)

    def test_backends(self):
        self.assertTrue(flowrt.backend_available("ref"))
        self.assertTrue(flowrt.backend_available("AUTO"))
        self.assertIsNone(flowrt.backend_unavailable_reason("ref"))
        self.assertTrue(flowrt.backend_available("portable"))
        for name in ("onednn", "cuda"):
            reason = flowrt.backend_unavailable_reason(name)
            self.assertEqual(reason is None, flowrt.backend_available(name))
            if reason is not None:  # the missing plugin, or what the loaded plugin lacks
                self.assertRegex(reason, r"libflowrt-|device|driver")
        with self.assertRaisesRegex(ValueError, "backend must be one of"):
            flowrt.backend_available("tpu")

    def _python(self, code, **env):
        e = {k: v for k, v in os.environ.items() if k != "FLOWRT_LIBRARY"}
        e["PYTHONPATH"] = os.path.dirname(os.path.dirname(os.path.abspath(flowrt.__file__)))
        e.update(env)
        return subprocess.run([sys.executable, "-c", code], env=e, capture_output=True, text=True)

    def test_flowrt_library_overrides(self):
        # A copy elsewhere, named by FLOWRT_LIBRARY as a file and as a directory.
        d = tempfile.mkdtemp(dir=TMP)
        copy = os.path.join(d, "libflowrt.so.0")
        shutil.copy(os.path.realpath(flowrt.library_path()), copy)
        for value in (copy, d):
            r = self._python("import flowrt; print(flowrt.library_path()); print(flowrt.version())",
                             FLOWRT_LIBRARY=value)
            self.assertEqual(r.returncode, 0, r.stderr)
            self.assertEqual(r.stdout.split(), [copy, flowrt.version()])
        r = self._python("import flowrt; flowrt.version()",
                         FLOWRT_LIBRARY=os.path.join(d, "missing.so"))
        self.assertNotEqual(r.returncode, 0)
        self.assertIn("LibraryNotFoundError", r.stderr)
        self.assertIn("FLOWRT_LIBRARY: " + os.path.join(d, "missing.so") + " does not exist",
                      r.stderr)

    def test_without_config_the_install_layout_is_searched(self):
        # A package copied without its generated _config.py into <prefix>/lib/python3/...
        prefix = tempfile.mkdtemp(dir=TMP)
        pkg = os.path.join(prefix, "lib", "python3", "dist-packages", "flowrt")
        os.makedirs(pkg)
        src = os.path.dirname(os.path.abspath(flowrt.__file__))
        for name in ("__init__.py", "_lib.py"):
            shutil.copy(os.path.join(src, name), pkg)
        lib = os.path.join(prefix, "lib", "libflowrt.so.0")
        os.symlink(os.path.realpath(flowrt.library_path()), lib)
        r = self._python("import flowrt; print(flowrt.library_path()); "
                         "print(flowrt._lib.loaded().how)",
                         PYTHONPATH=os.path.dirname(pkg))
        self.assertEqual(r.returncode, 0, r.stderr)
        self.assertEqual(r.stdout.splitlines(), [lib, "install layout"])
        os.remove(lib)
        r = self._python("import flowrt; flowrt.version()", PYTHONPATH=os.path.dirname(pkg),
                         LD_LIBRARY_PATH="")
        if r.returncode != 0:  # unless the dynamic loader finds an installed libflowrt
            self.assertIn("install layout: " + lib + " does not exist", r.stderr)
            self.assertIn("set FLOWRT_LIBRARY", r.stderr)

    def test_import_does_not_load(self):
        r = self._python("import flowrt, flowrt._lib as l; print(l.loaded() is None)",
                         FLOWRT_LIBRARY="/nonexistent/libflowrt.so.0")
        self.assertEqual(r.returncode, 0, r.stderr)
        self.assertEqual(r.stdout.strip(), "True")

    def test_load_library_after_use(self):
        flowrt.version()
        self.assertEqual(flowrt.load_library(flowrt.library_path()), flowrt.library_path())
        with self.assertRaisesRegex(RuntimeError, "already loaded"):
            flowrt.load_library("/elsewhere/libflowrt.so.0")


class ModelFacts(Base):
    def test_facts(self):
        with flowrt.Model.open(MODELS["rgb"]) as m:
            self.assertEqual(m.image_shape, (3, 16, 16))
            self.assertEqual(m.n_bits, 8)
            self.assertEqual(m.latent_dim, 3 * 16 * 16)
            self.assertEqual(m.num_classes, 0)
            self.assertEqual(m.levels, 2)
        with flowrt.Model.open(MODELS["cond"]) as m:
            self.assertEqual((m.image_shape, m.n_bits, m.num_classes, m.levels),
                             ((1, 8, 8), 5, 4, 3))
            offset = 0
            for s in m.latent_shapes:
                self.assertEqual(s.offset, offset)
                self.assertEqual(s.size, s.c * s.h * s.w)
                offset += s.size
            self.assertEqual(offset, m.latent_dim)

    def test_agrees_with_flowrt_info(self):
        info = subprocess.run([tool(), "info", MODELS["cond"]], check=True, capture_output=True,
                              text=True).stdout
        lines = dict(line.split(": ", 1) for line in info.splitlines() if ": " in line)
        with flowrt.Model.open(MODELS["cond"]) as m:
            c, h, w = m.image_shape
            self.assertEqual(lines["image"], f"{c}x{h}x{w} n_bits={m.n_bits}")
            self.assertEqual(int(lines["levels"]), m.levels)
            self.assertEqual(int(lines["latent_dim"]), m.latent_dim)
            self.assertEqual(lines["meta.producer"], m.metadata("producer"))
            self.assertEqual(lines["meta.seed"], m.metadata("seed"))

    def test_metadata(self):
        with flowrt.Model.open(MODELS["rgb"]) as m:
            self.assertTrue(m.metadata("producer").startswith("flowrt init"))
            with self.assertRaises(KeyError):
                m.metadata("no such key")
            self.assertEqual(m.metadata("no such key", "dflt"), "dflt")
            self.assertIsNone(m.metadata("no such key", None))

    def test_from_bytes(self):
        with open(MODELS["cond"], "rb") as f:
            data = f.read()
        for buf in (data, bytearray(data), memoryview(data), np.frombuffer(data, np.uint8)):
            with flowrt.Model.from_bytes(buf) as m:
                self.assertEqual(m.latent_dim, 64)
                self.assertEqual(m.source, "<bytes>")
        with self.assertRaises(TypeError):
            flowrt.Model.from_bytes(12)

    def test_split_latents(self):
        with flowrt.Model.open(MODELS["cond"]) as m:
            z = np.arange(2 * m.latent_dim, dtype=np.float32).reshape(2, -1)
            parts = m.split_latents(z)
            self.assertEqual([p.shape[1:] for p in parts], [s[:3] for s in m.latent_shapes])
            for p in parts:
                self.assertTrue(np.shares_memory(p, z))
            self.assertEqual(parts[0][1, 0, 0, 0], z[1, 0])


class Errors(Base):
    def test_missing_file(self):
        path = os.path.join(TMP, "no such model.flow")
        with self.assertRaises(flowrt.IoError) as cm:
            flowrt.Model.open(path)
        e = cm.exception
        self.assertIsInstance(e, OSError)
        self.assertIsInstance(e, flowrt.Error)
        self.assertEqual(e.status, flowrt.Status.IO_ERROR)
        self.assertIn(path, e.message)
        self.assertTrue(str(e).startswith("FLOWRT_IO_ERROR: "), str(e))

    def test_corrupt_bytes(self):
        with self.assertRaises(flowrt.FormatError) as cm:
            flowrt.Model.from_bytes(b"this is not a flow model at all")
        self.assertEqual(cm.exception.status, flowrt.Status.FORMAT_ERROR)
        self.assertIn("not a .flow model", cm.exception.message)
        with open(MODELS["rgb"], "rb") as f:
            data = f.read()
        with self.assertRaises(flowrt.FormatError):
            flowrt.Model.from_bytes(data[: len(data) // 2])
        path = os.path.join(TMP, "corrupt.flow")
        with open(path, "wb") as f:
            f.write(data[:100])
        with self.assertRaises(flowrt.FormatError):
            flowrt.Model.open(path)

    def test_wrong_shapes_and_dtypes(self):
        m, s = self.open("rgb")
        px = random_pixels(m, 2)
        with self.assertRaisesRegex(ValueError, r"pixels must have shape \(n, 3, 16, 16\), got "
                                                r"\(2, 3, 16, 8\)"):
            s.encode(px[..., :8])
        with self.assertRaisesRegex(ValueError, r"\(n, 3, 16, 16\), got \(3, 16, 16\)"):
            s.encode(px[0])
        with self.assertRaisesRegex(TypeError, "uint8.*float32.*encode_float"):
            s.encode(px.astype(np.float32))
        with self.assertRaisesRegex(TypeError, "uint8 pixels or float x"):
            s.nll_map(px.astype(np.int16))
        with self.assertRaisesRegex(ValueError, r"z must have shape \(n, 768\), got \(2, 767\)"):
            s.decode(np.zeros((2, 767), np.float32))
        with self.assertRaisesRegex(TypeError, "eps must be a float array"):
            s.decode_noise(np.zeros((2, 768), np.int32))
        with self.assertRaisesRegex(ValueError, r"labels must have shape \(2,\)"):
            s.encode_noise(px, labels=[0, 1, 2])
        with self.assertRaisesRegex(TypeError, "labels must be integers"):
            s.encode_noise(px, labels=[0.5, 1.0])
        with self.assertRaisesRegex(ValueError, "n must be >= 0"):
            s.sample(-1)
        with self.assertRaisesRegex(ValueError, r"seed must be in \[0, 2\*\*64\)"):
            s.sample(1, seed=-1)

    def test_library_errors(self):
        m, s = self.open("rgb")
        with self.assertRaisesRegex(flowrt.InvalidArgumentError, "not class-conditional"):
            s.sample(2, labels=[0, 1])
        mc, sc = self.open("cond")
        with self.assertRaises(ValueError) as cm:  # InvalidArgumentError is a ValueError
            sc.sample(2, labels=[0, 7])
        self.assertIsInstance(cm.exception, flowrt.InvalidArgumentError)
        self.assertIn("labels[1] = 7", str(cm.exception))
        with self.assertRaisesRegex(flowrt.InvalidArgumentError, "temperature"):
            s.sample(1, temperature=-1.0)
        with self.assertRaises(flowrt.UnsupportedError):
            flowrt.Session(m, backend="ref", precision="bf16")
        with self.assertRaisesRegex(flowrt.InvalidArgumentError, "max_batch"):
            flowrt.Session(m, backend="ref", max_batch=0)
        with self.assertRaisesRegex(ValueError, "precision must be one of"):
            flowrt.Session(m, precision="int8")
        with self.assertRaises(TypeError):
            flowrt.Session(42)

    def test_closed(self):
        m = flowrt.Model.open(MODELS["rgb"])
        s = flowrt.Session(m, backend="ref")
        s.close()
        s.close()
        self.assertTrue(s.closed)
        with self.assertRaisesRegex(ValueError, "session is closed"):
            s.sample(1)
        m.close()
        with self.assertRaisesRegex(ValueError, "model is closed"):
            m.noise(1, 0)


class Identities(Base):
    def test_noise_round_trip_is_exact(self):
        for name in MODELS:
            with self.subTest(model=name):
                m, s = self.open(name)
                n = 6
                lab = self.labels(m, n)
                for px in (random_pixels(m, n, 1), s.sample(n, 0.7, seed=5, labels=lab)):
                    eps = s.encode_noise(px, labels=lab)
                    self.assertEqual((eps.shape, eps.dtype), ((n, m.latent_dim), np.float32))
                    back = s.decode_noise(eps, 1.0, labels=lab)
                    np.testing.assert_array_equal(back, px)
                    # From x as well as from pixels.
                    np.testing.assert_array_equal(s.encode_noise(m.pixels_to_x(px), labels=lab),
                                                  eps)

    def test_level_terms_sum_to_log_p(self):
        for name in MODELS:
            with self.subTest(model=name):
                m, s = self.open(name)
                n = 5
                lab = self.labels(m, n)
                px = random_pixels(m, n, 2)
                r = s.encode_ex(px, labels=lab)
                t = s.level_terms(px, labels=lab)
                self.assertEqual(t.log_prior.shape, (n, m.levels))
                self.assertEqual(t.log_det.dtype, np.float64)
                self.assertLess(max_rel((t.log_prior + t.log_det).sum(axis=1), r.log_p), 1e-6)
                self.assertLess(max_rel(t.log_det.sum(axis=1), r.log_det), 1e-5)

    def test_nll_map_sums_to_minus_log_p(self):
        for name in MODELS:
            with self.subTest(model=name):
                m, s = self.open(name)
                n = 5
                lab = self.labels(m, n)
                x = m.pixels_to_x(random_pixels(m, n, 3))
                nll = s.nll_map(x, labels=lab)
                self.assertEqual((nll.shape, nll.dtype), ((n,) + m.image_shape[1:], np.float64))
                r = s.encode_ex(x, labels=lab)
                self.assertLess(max_rel(nll.sum(axis=(1, 2)), -r.log_p), 1e-6)

    def test_encode_forms_agree(self):
        for name in MODELS:
            with self.subTest(model=name):
                m, s = self.open(name)
                n = 4
                lab = self.labels(m, n)
                px = random_pixels(m, n, 4)
                x = m.pixels_to_x(px)
                self.assertEqual((x.shape, x.dtype), (px.shape, np.float32))
                step = 2.0 ** -m.n_bits
                np.testing.assert_allclose(
                    x, (px >> (8 - m.n_bits)) * step - 0.5 + step / 2, atol=1e-7)
                z, bpd = s.encode(px, labels=lab)
                z2, bpd2 = s.encode_float(x, labels=lab)
                r = s.encode_ex(px, labels=lab)
                np.testing.assert_array_equal(z, z2)
                np.testing.assert_allclose(bpd, bpd2, rtol=1e-12)
                np.testing.assert_array_equal(z, r.z)
                np.testing.assert_allclose(r.bits_per_dim, bpd, rtol=1e-12)
                d = m.latent_dim
                want = -(r.log_p - d * np.log(2.0 ** m.n_bits)) / (d * np.log(2.0))
                np.testing.assert_allclose(r.bits_per_dim, want, rtol=1e-9)
                np.testing.assert_array_equal(s.decode(z), px)
                px2, x2 = s.decode(z, return_x=True)
                np.testing.assert_array_equal(px2, px)
                np.testing.assert_allclose(x2, x, atol=1e-4)
                # float64 x is accepted (converted once).
                np.testing.assert_array_equal(s.encode_float(x.astype(np.float64),
                                                             labels=lab)[0], z)

    def test_empty_batch(self):
        m, s = self.open("rgb")
        self.assertEqual(s.sample(0).shape, (0, 3, 16, 16))
        z, bpd = s.encode(np.zeros((0, 3, 16, 16), np.uint8))
        self.assertEqual((z.shape, bpd.shape), ((0, 768), (0,)))


class Sampling(Base):
    def test_deterministic_by_seed(self):
        for name in MODELS:
            with self.subTest(model=name):
                m, s = self.open(name)
                lab = self.labels(m, 5)
                a = s.sample(5, 0.7, seed=11, labels=lab)
                self.assertEqual((a.shape, a.dtype), ((5,) + m.image_shape, np.uint8))
                np.testing.assert_array_equal(a, s.sample(5, 0.7, seed=11, labels=lab))
                self.assertFalse(np.array_equal(a, s.sample(5, 0.7, seed=12, labels=lab)))
                # Image i of a seed is the same whatever n and whatever the max batch.
                sub = None if lab is None else lab[:3]
                np.testing.assert_array_equal(a[:3], s.sample(3, 0.7, seed=11, labels=sub))
                _, small = self.open(name, max_batch=2)
                np.testing.assert_array_equal(a, small.sample(5, 0.7, seed=11, labels=lab))
                # sample == decode_noise of the model's own noise.
                eps = m.noise(5, 11)
                np.testing.assert_array_equal(a, s.decode_noise(eps, 0.7, labels=lab))
                np.testing.assert_array_equal(m.noise(2, 11, first_image=3), eps[3:])
                np.testing.assert_array_equal(s.noise(5, 11), eps)

    def test_scalar_label(self):
        m, s = self.open("cond")
        np.testing.assert_array_equal(s.sample(3, seed=2, labels=1),
                                      s.sample(3, seed=2, labels=[1, 1, 1]))

    def test_temperature_zero_is_the_mean(self):
        m, s = self.open("rgb")
        a = s.sample(2, 0.0, seed=1)
        np.testing.assert_array_equal(a, s.sample(2, 0.0, seed=2))


class NoCopy(Base):
    def test_conforming_inputs_are_passed_as_they_are(self):
        a = np.zeros((2, 3, 4, 4), np.float32)
        self.assertIs(flowrt._c_array(a, np.float32), a)
        p = np.zeros((2, 3, 4, 4), np.uint8)
        self.assertIs(flowrt._c_array(p, np.uint8), p)
        strided = np.zeros((2, 3, 4, 8), np.float32)[..., ::2]
        conv = flowrt._c_array(strided, np.float32)
        self.assertTrue(conv.flags.c_contiguous)
        self.assertFalse(np.shares_memory(conv, strided))
        f64 = flowrt._c_array(a.astype(np.float64), np.float32)
        self.assertEqual(f64.dtype, np.float32)

    def test_out_arrays_are_written_in_place(self):
        m, s = self.open("cond")
        n = 3
        lab = self.labels(m, n)
        d, (c, h, w), L = m.latent_dim, m.image_shape, m.levels
        px_out = np.full((n, c, h, w), 7, np.uint8)
        px = s.sample(n, 0.7, seed=1, labels=lab, out=px_out)
        self.assertIs(px, px_out)
        np.testing.assert_array_equal(px, s.sample(n, 0.7, seed=1, labels=lab))

        z_out, bpd_out = np.empty((n, d), np.float32), np.empty(n, np.float64)
        z, bpd = s.encode(px, labels=lab, out=(z_out, bpd_out))
        self.assertIs(z, z_out)
        self.assertIs(bpd, bpd_out)
        z_ref, bpd_ref = s.encode(px, labels=lab)
        np.testing.assert_array_equal(z_out, z_ref)
        np.testing.assert_array_equal(bpd_out, bpd_ref)

        lp = np.empty(n, np.float64)
        r = s.encode_ex(px, labels=lab, out=(None, lp, None, None))
        self.assertIs(r.log_p, lp)

        outs = (np.empty((n, d), np.float32), np.empty(n, np.float64))
        self.assertIs(s.encode_float(m.pixels_to_x(px), labels=lab, out=outs)[0], outs[0])

        eps_out = np.empty((n, d), np.float32)
        self.assertIs(s.encode_noise(px, labels=lab, out=eps_out), eps_out)
        px_back = np.empty_like(px)
        x_back = np.empty((n, c, h, w), np.float32)
        got = s.decode_noise(eps_out, 1.0, labels=lab, return_x=True, out=(px_back, x_back))
        self.assertIs(got[0], px_back)
        self.assertIs(got[1], x_back)
        np.testing.assert_array_equal(px_back, px)

        self.assertIs(s.decode(z_out, out=px_back), px_back)
        t_out = (np.empty((n, L)), np.empty((n, L)))
        t = s.level_terms(px, labels=lab, out=t_out)
        self.assertIs(t.log_prior, t_out[0])
        self.assertIs(t.log_det, t_out[1])
        nll_out = np.empty((n, h, w))
        self.assertIs(s.nll_map(px, labels=lab, out=nll_out), nll_out)
        x_out = np.empty((n, c, h, w), np.float32)
        self.assertIs(m.pixels_to_x(px, out=x_out), x_out)
        noise_out = np.empty((n, d), np.float32)
        self.assertIs(m.noise(n, 5, out=noise_out), noise_out)

        # Outputs into a slice of a bigger, C-contiguous buffer.
        big = np.zeros((2 * n, d), np.float32)
        self.assertTrue(np.shares_memory(s.encode_noise(px, labels=lab, out=big[n:]), big))
        np.testing.assert_array_equal(big[n:], eps_out)
        self.assertFalse(big[:n].any())

    def test_bad_out_arrays(self):
        m, s = self.open("rgb")
        px = random_pixels(m, 2)
        with self.assertRaisesRegex(TypeError, "dtype float32"):
            s.encode_noise(px, out=np.empty((2, 768), np.float64))
        with self.assertRaisesRegex(ValueError, r"shape \(2, 768\)"):
            s.encode_noise(px, out=np.empty((3, 768), np.float32))
        with self.assertRaisesRegex(ValueError, "C-contiguous"):
            s.encode_noise(px, out=np.empty((2, 1536), np.float32)[:, ::2])
        ro = np.empty((2, 768), np.float32)
        ro.flags.writeable = False
        with self.assertRaisesRegex(ValueError, "writeable"):
            s.encode_noise(px, out=ro)
        z = np.zeros((2, 768), np.float32)
        x = np.zeros((2, 3, 16, 16), np.float32)
        with self.assertRaisesRegex(ValueError, "overlap"):
            s.encode_noise(x, out=x.reshape(2, 768))
        with self.assertRaisesRegex(TypeError, "tuple of 2"):
            s.encode(px, out=z)

    def test_strided_inputs_give_the_same_results(self):
        m, s = self.open("rgb")
        px = random_pixels(m, 4, 6)
        wide = np.zeros((4, 3, 16, 32), np.uint8)
        wide[..., ::2] = px
        np.testing.assert_array_equal(s.encode(wide[..., ::2])[0], s.encode(px)[0])
        x = m.pixels_to_x(px)
        fortran = np.asfortranarray(x)
        np.testing.assert_array_equal(s.nll_map(fortran), s.nll_map(x))


class Lifetime(Base):
    def test_session_outlives_closed_model(self):
        m = flowrt.Model.open(MODELS["rgb"])
        s = flowrt.Session(m, backend="ref", threads=1)
        px = s.sample(2, seed=1)
        m.close()
        self.assertTrue(m.closed)
        self.assertIsNotNone(m._handle)  # still used by the session
        eps = s.encode_noise(px)  # converts the pixels with the model's handle
        np.testing.assert_array_equal(s.decode_noise(eps), px)
        self.assertEqual(s.noise(1, 1).shape, (1, 768))
        s.close()
        self.assertIsNone(m._handle)

    def test_context_managers(self):
        with flowrt.Model.open(MODELS["rgb"]) as m:
            with flowrt.Session(m, backend="ref") as s:
                self.assertEqual(s.backend, "ref")
                self.assertEqual(s.image_shape, m.image_shape)
            self.assertTrue(s.closed)
            self.assertFalse(m.closed)
        self.assertTrue(m.closed)
        self.assertIsNone(m._handle)

    def test_session_from_a_path_owns_its_model(self):
        with flowrt.Session(MODELS["rgb"], backend="ref") as s:
            self.assertEqual(s.sample(1).shape, (1, 3, 16, 16))
            model = s.model
        self.assertTrue(model.closed)
        self.assertIsNone(model._handle)


class Backends(Base):
    def test_auto_resolves(self):
        with flowrt.Session(MODELS["rgb"], backend="auto", threads=1) as s:
            self.assertIn(s.backend, ("portable", "onednn", "cuda"))

    def test_other_backends_agree_with_ref(self):
        m, ref = self.open("rgb")
        px = random_pixels(m, 3, 7)
        z_ref, bpd_ref = ref.encode(px)
        for name in ("onednn", "cuda", "portable"):
            if not flowrt.backend_available(name):
                continue
            with self.subTest(backend=name), flowrt.Session(m, backend=name, threads=2) as s:
                self.assertEqual(s.backend, name)
                z, bpd = s.encode(px)
                np.testing.assert_allclose(z, z_ref, atol=1e-3)
                np.testing.assert_allclose(bpd, bpd_ref, rtol=1e-4)
                # The latent terms run on the reference path whatever the backend.
                eps = s.encode_noise(px)
                np.testing.assert_array_equal(eps, ref.encode_noise(px))

    def test_busy_from_another_thread(self):
        # A session is one thread's at a time: concurrent calls either wait their turn in
        # Python or get BusyError from the library; none corrupts the other.
        m, s = self.open("rgb", max_batch=4)
        want = s.sample(8, seed=3)
        errors, results = [], []

        def work():
            try:
                results.append(s.sample(8, seed=3))
            except flowrt.BusyError as e:
                errors.append(e)

        threads = [threading.Thread(target=work) for _ in range(4)]
        for t in threads:
            t.start()
        for t in threads:
            t.join()
        self.assertEqual(len(errors) + len(results), 4)
        for r in results:
            np.testing.assert_array_equal(r, want)
        for e in errors:
            self.assertEqual(e.status, flowrt.Status.BUSY)


class Example(unittest.TestCase):
    SCRIPT = os.path.join(os.path.dirname(os.path.abspath(__file__)), "..", "..", "examples",
                          "python_sample.py")

    def test_python_sample(self):
        env = dict(os.environ)
        env["PYTHONPATH"] = os.path.dirname(os.path.dirname(os.path.abspath(flowrt.__file__)))
        for name, n in (("rgb", 5), ("cond", 4)):
            with self.subTest(model=name):
                png = os.path.join(TMP, f"grid_{name}.png")
                r = subprocess.run([sys.executable, self.SCRIPT, MODELS[name], "-o", png, "-n",
                                    str(n), "--backend", "ref"], env=env, capture_output=True,
                                   text=True)
                self.assertEqual(r.returncode, 0, r.stdout + r.stderr)
                self.assertIn(f"wrote {png}: {n} samples at T=0.7", r.stdout)
                self.assertIn("reproduces the pixels: yes", r.stdout)
                images = [line for line in r.stdout.splitlines() if line.startswith("image ")]
                self.assertEqual(len(images), n)

    def test_png_reads_in_libpng(self):
        # One image: the grid is the image itself, and `flowrt score` (libpng) reads it.
        png = os.path.join(TMP, "one.png")
        env = dict(os.environ)
        env["PYTHONPATH"] = os.path.dirname(os.path.dirname(os.path.abspath(flowrt.__file__)))
        r = subprocess.run([sys.executable, self.SCRIPT, MODELS["rgb"], "-o", png, "-n", "1",
                            "--seed", "9", "--backend", "ref"], env=env, capture_output=True,
                           text=True, check=True)
        ours = float(r.stdout.split("image 0: ")[1].split()[0])
        score = subprocess.run([tool(), "score", MODELS["rgb"], png, "--backend", "ref"],
                               capture_output=True, text=True, check=True).stdout
        self.assertAlmostEqual(float(score.split()[1]), ours, places=4)


if __name__ == "__main__":
    unittest.main()
