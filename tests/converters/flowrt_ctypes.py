"""A ctypes binding of the parts of libflowrt's C API (runtime/include/flowrt.h) the converter
tests use. The library is found through the FLOWRT_LIB environment variable."""
import ctypes
import os
import unittest

import numpy as np

OK = 0
BACKEND_REF = 1

_c_float_p = ctypes.POINTER(ctypes.c_float)
_c_double_p = ctypes.POINTER(ctypes.c_double)
_c_uint8_p = ctypes.POINTER(ctypes.c_uint8)
_c_int32_p = ctypes.POINTER(ctypes.c_int32)


class FlowrtError(Exception):
    def __init__(self, status, message):
        super().__init__(f"status {status}: {message}")
        self.status = status


def load_library():
    """The library named by FLOWRT_LIB; raises SkipTest, with the reason, when it is not set."""
    path = os.environ.get("FLOWRT_LIB")
    if not path:
        raise unittest.SkipTest("FLOWRT_LIB is not set: libflowrt comparisons skipped (set it to "
                                "the path of libflowrt.so)")
    if not os.path.exists(path):
        raise FileNotFoundError(f"FLOWRT_LIB={path} does not exist")
    lib = ctypes.CDLL(path)
    vp, vpp = ctypes.c_void_p, ctypes.POINTER(ctypes.c_void_p)
    sigs = {
        "flowrt_version": (ctypes.c_char_p, []),
        "flowrt_last_error": (ctypes.c_char_p, []),
        "flowrt_model_from_memory": (ctypes.c_int, [ctypes.c_char_p, ctypes.c_size_t, vpp]),
        "flowrt_model_free": (None, [vp]),
        "flowrt_model_image_shape": (ctypes.c_int, [vp] + [ctypes.POINTER(ctypes.c_int)] * 3),
        "flowrt_model_n_bits": (ctypes.c_int, [vp, ctypes.POINTER(ctypes.c_int)]),
        "flowrt_model_latent_dim": (ctypes.c_int, [vp, ctypes.POINTER(ctypes.c_size_t)]),
        "flowrt_model_metadata": (ctypes.c_int, [vp, ctypes.c_char_p, ctypes.c_char_p,
                                                 ctypes.c_size_t, ctypes.POINTER(ctypes.c_size_t)]),
        "flowrt_session_options_create": (ctypes.c_int, [vpp]),
        "flowrt_session_options_free": (None, [vp]),
        "flowrt_session_options_set_backend": (ctypes.c_int, [vp, ctypes.c_int]),
        "flowrt_session_options_set_threads": (ctypes.c_int, [vp, ctypes.c_int]),
        "flowrt_session_create": (ctypes.c_int, [vp, vp, vpp]),
        "flowrt_session_free": (None, [vp]),
        "flowrt_encode": (ctypes.c_int, [vp, ctypes.c_size_t, _c_uint8_p, _c_float_p, _c_double_p]),
        "flowrt_encode_ex": (ctypes.c_int, [vp, ctypes.c_size_t, _c_float_p, _c_int32_p, _c_float_p,
                                            _c_double_p, _c_double_p, _c_double_p]),
        "flowrt_decode": (ctypes.c_int, [vp, ctypes.c_size_t, _c_float_p, _c_float_p, _c_uint8_p]),
        "flowrt_decode_noise": (ctypes.c_int, [vp, ctypes.c_size_t, _c_float_p, ctypes.c_float,
                                               _c_int32_p, _c_float_p, _c_uint8_p]),
    }
    for name, (restype, argtypes) in sigs.items():
        fn = getattr(lib, name)
        fn.restype, fn.argtypes = restype, argtypes
    return lib


def _ptr(array, ctype):
    return None if array is None else array.ctypes.data_as(ctypes.POINTER(ctype))


class Session:
    """A model loaded from .flow bytes and a session on the REF backend."""

    def __init__(self, lib, flow_bytes: bytes, threads: int = 1):
        self.lib = lib
        self.model = ctypes.c_void_p()
        self.session = ctypes.c_void_p()
        self._check(lib.flowrt_model_from_memory(flow_bytes, len(flow_bytes),
                                                 ctypes.byref(self.model)))
        options = ctypes.c_void_p()
        self._check(lib.flowrt_session_options_create(ctypes.byref(options)))
        try:
            self._check(lib.flowrt_session_options_set_backend(options, BACKEND_REF))
            self._check(lib.flowrt_session_options_set_threads(options, threads))
            self._check(lib.flowrt_session_create(self.model, options, ctypes.byref(self.session)))
        finally:
            lib.flowrt_session_options_free(options)
        c, h, w = ctypes.c_int(), ctypes.c_int(), ctypes.c_int()
        self._check(lib.flowrt_model_image_shape(self.model, ctypes.byref(c), ctypes.byref(h),
                                                 ctypes.byref(w)))
        self.image_shape = (c.value, h.value, w.value)
        d = ctypes.c_size_t()
        self._check(lib.flowrt_model_latent_dim(self.model, ctypes.byref(d)))
        self.latent_dim = d.value
        nb = ctypes.c_int()
        self._check(lib.flowrt_model_n_bits(self.model, ctypes.byref(nb)))
        self.n_bits = nb.value

    def close(self):
        self.lib.flowrt_session_free(self.session)
        self.lib.flowrt_model_free(self.model)
        self.session = self.model = None

    def __enter__(self):
        return self

    def __exit__(self, *exc):
        self.close()

    def _check(self, status):
        if status != OK:
            raise FlowrtError(status, self.lib.flowrt_last_error().decode("utf-8", "replace"))

    def metadata(self, key: str) -> str:
        buf = ctypes.create_string_buffer(4096)
        length = ctypes.c_size_t()
        self._check(self.lib.flowrt_model_metadata(self.model, key.encode(), buf, len(buf),
                                                   ctypes.byref(length)))
        return buf.value.decode("utf-8")

    def encode_ex(self, x: np.ndarray, labels=None):
        """x [N, C, H, W] -> (z [N, D], log_p, log_det, bits_per_dim)."""
        x = np.ascontiguousarray(x, dtype=np.float32)
        n = x.shape[0]
        z = np.empty((n, self.latent_dim), np.float32)
        log_p, log_det, bpd = (np.empty(n, np.float64) for _ in range(3))
        lab = None if labels is None else np.ascontiguousarray(labels, dtype=np.int32)
        self._check(self.lib.flowrt_encode_ex(self.session, n, _ptr(x, ctypes.c_float),
                                              _ptr(lab, ctypes.c_int32), _ptr(z, ctypes.c_float),
                                              _ptr(log_p, ctypes.c_double),
                                              _ptr(log_det, ctypes.c_double),
                                              _ptr(bpd, ctypes.c_double)))
        return z, log_p, log_det, bpd

    def encode_pixels(self, pixels: np.ndarray):
        """uint8 [N, C, H, W] -> (z, bits_per_dim)."""
        pixels = np.ascontiguousarray(pixels, dtype=np.uint8)
        n = pixels.shape[0]
        z = np.empty((n, self.latent_dim), np.float32)
        bpd = np.empty(n, np.float64)
        self._check(self.lib.flowrt_encode(self.session, n, _ptr(pixels, ctypes.c_uint8),
                                           _ptr(z, ctypes.c_float), _ptr(bpd, ctypes.c_double)))
        return z, bpd

    def decode(self, z: np.ndarray) -> np.ndarray:
        z = np.ascontiguousarray(z, dtype=np.float32)
        n = z.shape[0]
        x = np.empty((n,) + self.image_shape, np.float32)
        self._check(self.lib.flowrt_decode(self.session, n, _ptr(z, ctypes.c_float),
                                           _ptr(x, ctypes.c_float), None))
        return x

    def decode_noise(self, eps: np.ndarray, temperature: float, labels=None) -> np.ndarray:
        eps = np.ascontiguousarray(eps, dtype=np.float32)
        n = eps.shape[0]
        x = np.empty((n,) + self.image_shape, np.float32)
        lab = None if labels is None else np.ascontiguousarray(labels, dtype=np.int32)
        self._check(self.lib.flowrt_decode_noise(self.session, n, _ptr(eps, ctypes.c_float),
                                                 temperature, _ptr(lab, ctypes.c_int32),
                                                 _ptr(x, ctypes.c_float), None))
        return x
