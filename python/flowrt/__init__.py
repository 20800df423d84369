"""flowrt: Glow-family normalizing flows in Python, a thin ctypes binding of libflowrt.

::

    import flowrt
    with flowrt.Model.open("fmnist.flow") as model, flowrt.Session(model) as session:
        pixels = session.sample(16, temperature=0.7, seed=1)  # uint8 (16, C, H, W)
        z, bpd = session.encode(pixels)                       # float32 (16, D), float64 (16,)
        assert (session.decode(z) == pixels).all()

Conventions (those of the C API, runtime/include/flowrt.h):

- Images are NCHW numpy arrays. Pixels are ``uint8``; the network's continuous input ``x`` is
  ``float32`` in (-0.5, 0.5) (:meth:`Model.pixels_to_x` gives the bin centres). Methods that take
  "pixels_or_x" accept either: a ``uint8`` array is converted with ``flowrt_pixels_to_x``, a
  floating array is taken as ``x``.
- Latents ``z`` and noise ``eps`` are ``float32`` arrays ``(n, latent_dim)``: per image, every
  level's latent in the order it leaves the flow, each CHW (:attr:`Model.latent_shapes`).
- ``labels`` (every method that takes them): None, or the classes of a class-conditional
  model, an integer array (n,) in [0, num_classes) or one integer for every image.
- Inputs that already are C-contiguous, aligned arrays of the right dtype are passed to the
  library by pointer; anything else (another float dtype, a strided view, a list) is converted
  once. Every method that returns arrays takes ``out=`` (one array, or a tuple with one entry per
  output, ``None`` entries allocated) and writes into those arrays in place.
- Shapes and dtypes are checked here (``ValueError``, ``TypeError``); failures inside libflowrt
  raise :class:`Error` (a subclass per status) with the library's message.
- The library's calls release the GIL. A :class:`Model` may be shared by threads; a
  :class:`Session` is used by one thread at a time (a concurrent call raises :class:`BusyError`).

The shared library is found as :mod:`flowrt._lib` describes (``FLOWRT_LIBRARY`` first).
"""
import collections
import enum
import operator
import os
import threading

import numpy as np

from . import _lib
from ._lib import LibraryNotFoundError

__version__ = "0.1.0"

__all__ = [
    "Model", "Session", "Error", "InvalidArgumentError", "IoError", "FormatError",
    "UnsupportedError", "OutOfMemoryError", "DeviceError", "BusyError", "InternalError",
    "LibraryNotFoundError", "Status", "LatentShape", "EncodeResult", "LevelTerms", "version",
    "format_major_supported", "backend_available", "backend_unavailable_reason", "load_library",
    "library_path", "BACKENDS", "PRECISIONS",
]

BACKENDS = ("auto", "ref", "onednn", "cuda", "portable")
"""Backend names, in the order of the C enum flowrt_backend."""
PRECISIONS = ("fp32", "tf32", "bf16", "fp16")
"""Precision names, in the order of the C enum flowrt_precision."""


# ---- errors -------------------------------------------------------------------------------------

class Status(enum.IntEnum):
    """flowrt_status: the C API's status codes."""
    OK = 0
    INVALID_ARGUMENT = 1
    IO_ERROR = 2
    FORMAT_ERROR = 3
    UNSUPPORTED = 4
    OUT_OF_MEMORY = 5
    DEVICE_ERROR = 6
    BUSY = 7
    INTERNAL_ERROR = 8


class Error(Exception):
    """A libflowrt call failed.

    Attributes: ``status`` (a :class:`Status`, or a plain int for a code this module does not
    know), ``message`` (flowrt_last_error()'s text). ``str(error)`` is
    ``"FLOWRT_<STATUS>: <message>"``."""

    def __init__(self, status, message):
        try:
            status = Status(status)
            name = "FLOWRT_" + status.name
        except ValueError:
            name = f"status {status}"
        super().__init__(f"{name}: {message}")
        self.status = status
        self.message = message


class InvalidArgumentError(Error, ValueError):
    """FLOWRT_INVALID_ARGUMENT: an argument libflowrt refused (also a ValueError)."""


class IoError(Error, OSError):
    """FLOWRT_IO_ERROR: a file could not be opened or read (also an OSError)."""


class FormatError(Error):
    """FLOWRT_FORMAT_ERROR: the bytes are not a valid .flow model."""


class UnsupportedError(Error):
    """FLOWRT_UNSUPPORTED: valid, but not supported here (a newer format, a backend not built)."""


class OutOfMemoryError(Error, MemoryError):
    """FLOWRT_OUT_OF_MEMORY (also a MemoryError)."""


class DeviceError(Error):
    """FLOWRT_DEVICE_ERROR: the requested device is missing or failed."""


class BusyError(Error):
    """FLOWRT_BUSY: the session is in use by another thread."""


class InternalError(Error):
    """FLOWRT_INTERNAL_ERROR."""


_ERRORS = {
    Status.INVALID_ARGUMENT: InvalidArgumentError, Status.IO_ERROR: IoError,
    Status.FORMAT_ERROR: FormatError, Status.UNSUPPORTED: UnsupportedError,
    Status.OUT_OF_MEMORY: OutOfMemoryError, Status.DEVICE_ERROR: DeviceError,
    Status.BUSY: BusyError, Status.INTERNAL_ERROR: InternalError,
}


def _error(status, message):
    return _ERRORS.get(status, Error)(status, message)


def _c():
    """The loaded library (loaded on first use)."""
    return _lib.load()


def _fn(name):
    lib = _c()
    if name in lib.missing:
        raise UnsupportedError(Status.UNSUPPORTED,
                               f"{name} is not in the libflowrt at {lib.path} "
                               f"(version {lib.cdll.flowrt_version().decode()}): it is older "
                               f"than this module ({__version__})")
    return getattr(lib.cdll, name)


def _call(name, *args):
    status = _fn(name)(*args)
    if status != 0:
        raise _error(status, _c().cdll.flowrt_last_error().decode("utf-8", "replace"))


# ---- library ------------------------------------------------------------------------------------

def load_library(path=None):
    """Loads libflowrt now and returns the path it was loaded from.

    Without ``path`` the usual search runs (``FLOWRT_LIBRARY``, the install or build tree, the
    dynamic loader). With ``path`` (a file, or a directory holding libflowrt.so.0) exactly that
    library is loaded; it must come before any other use of the module, else RuntimeError.
    Raises :class:`LibraryNotFoundError` (an OSError) listing every place tried."""
    return _lib.load(None if path is None else os.fspath(path)).path


def library_path():
    """The path libflowrt was loaded from (loading it if needed); a bare ``libflowrt.so.0`` when
    the dynamic loader's own search found it."""
    return _c().path


def version():
    """The version ("MAJOR.MINOR.PATCH") of the loaded libflowrt."""
    return _fn("flowrt_version")().decode()


def format_major_supported():
    """The highest .flow format_major the loaded libflowrt reads."""
    return int(_fn("flowrt_format_major_supported")())


def _enum_index(value, names, what):
    if isinstance(value, str):
        try:
            return names.index(value.lower())
        except ValueError:
            pass
    raise ValueError(f"{what} must be one of {', '.join(repr(n) for n in names)}; got {value!r}")


def backend_available(name):
    """True if backend ``name`` ('auto', 'ref', 'onednn', 'cuda', 'portable') can run here.

    'ref' and 'auto' always can; :func:`backend_unavailable_reason` says why another cannot."""
    return bool(_fn("flowrt_backend_available")(_enum_index(name, BACKENDS, "backend")))


def backend_unavailable_reason(name):
    """None if backend ``name`` is available, else libflowrt's reason (the plugin file it looked
    for and what is wrong)."""
    if backend_available(name):
        return None
    return _c().cdll.flowrt_last_error().decode("utf-8", "replace")


# ---- array helpers ------------------------------------------------------------------------------

def _count(n, what="n"):
    try:
        n = operator.index(n)
    except TypeError:
        raise TypeError(f"{what} must be an integer, got {type(n).__name__}") from None
    if n < 0:
        raise ValueError(f"{what} must be >= 0, got {n}")
    return n


def _u64(v, what):
    try:
        v = operator.index(v)
    except TypeError:
        raise TypeError(f"{what} must be an integer, got {type(v).__name__}") from None
    if not 0 <= v < 1 << 64:
        raise ValueError(f"{what} must be in [0, 2**64), got {v}")
    return v


def _shape_str(shape):
    dims = ["n" if s is None else str(s) for s in shape]
    return "(" + ", ".join(dims) + ("," if len(dims) == 1 else "") + ")"


def _check_shape(a, shape, what):
    if a.ndim != len(shape) or any(w is not None and w != s for s, w in zip(a.shape, shape)):
        raise ValueError(f"{what} must have shape {_shape_str(shape)}, got {tuple(a.shape)}")


def _as_array(a):
    return a if isinstance(a, np.ndarray) else np.asarray(a)


def _c_array(a, dtype):
    """``a`` itself when it is a C-contiguous, aligned array of ``dtype``, else one converted
    copy: what is passed to libflowrt."""
    return np.require(a, dtype, ["C_CONTIGUOUS", "ALIGNED"])


def _addr(a):
    return None if a is None else a.ctypes.data


def _output(out, dtype, shape, what, inputs=()):
    if out is None:
        return np.empty(shape, dtype)
    if not isinstance(out, np.ndarray):
        raise TypeError(f"out ({what}) must be a numpy array, got {type(out).__name__}")
    if out.dtype != dtype:
        raise TypeError(f"out ({what}) must have dtype {np.dtype(dtype).name}, got {out.dtype}")
    if out.shape != tuple(shape):
        raise ValueError(f"out ({what}) must have shape {tuple(shape)}, got {out.shape}")
    if not (out.flags.c_contiguous and out.flags.aligned and out.flags.writeable):
        raise ValueError(f"out ({what}) must be a writeable, C-contiguous, aligned array")
    for a in inputs:
        if a is not None and np.may_share_memory(out, a):
            raise ValueError(f"out ({what}) must not overlap an input array")
    return out


def _outs(out, count, what):
    """out= of a method with ``count`` outputs -> a list of arrays or Nones."""
    if out is None:
        return [None] * count
    if count == 1 and not isinstance(out, tuple):
        return [out]
    if not isinstance(out, tuple) or len(out) != count:
        raise TypeError(f"out must be a tuple of {count} arrays (or None entries) for {what}")
    return list(out)


LatentShape = collections.namedtuple("LatentShape", "c h w offset")
LatentShape.__doc__ = ("Shape (c, h, w) of one level's latent and where it starts in an image's "
                       "z (offset, in floats). size = c*h*w.")
LatentShape.size = property(lambda s: s.c * s.h * s.w, doc="Floats of this level per image.")

EncodeResult = collections.namedtuple("EncodeResult", "z log_p log_det bits_per_dim")
EncodeResult.__doc__ = ("Session.encode_ex's result: z float32 (n, latent_dim); log_p (nats), "
                        "log_det (log|det dz/dx|) and bits_per_dim float64 (n,).")

LevelTerms = collections.namedtuple("LevelTerms", "log_prior log_det")
LevelTerms.__doc__ = ("Session.level_terms' result: float64 (n, levels) each; per image "
                      "sum(log_prior + log_det) = log p(x).")


# ---- models -------------------------------------------------------------------------------------

class Model:
    """A loaded, verified .flow model (flowrt_model). Immutable; may be shared by threads.

    Create with :meth:`open` or :meth:`from_bytes`; free with :meth:`close` or a ``with`` block.
    Sessions created from it keep working after it is closed: the C model is freed when the
    model and every session made from it are closed."""

    def __init__(self, _handle, _source):
        """Internal: use Model.open or Model.from_bytes."""
        self._handle = _handle
        self._closed = False
        self._sessions = 0  # open sessions that use _handle (pixels_to_x)
        self._lock = threading.Lock()
        self._free = _c().cdll.flowrt_model_free
        self.source = _source
        """Where the model came from: the path, or "<bytes>"."""
        try:
            self._read_facts()
        except BaseException:
            self.close()
            raise

    @classmethod
    def open(cls, path):
        """Opens (memory-maps) and verifies the .flow file at ``path`` (str or os.PathLike).

        Raises :class:`IoError` when the file cannot be read and :class:`FormatError` when it is
        not a valid model, with libflowrt's message."""
        raw = os.fsencode(os.fspath(path))
        if b"\0" in raw:
            raise ValueError("path contains a NUL character")
        h = _lib.ctypes.c_void_p()
        _call("flowrt_model_open", raw, _lib.ctypes.byref(h))
        return cls(h, os.fsdecode(raw))

    @classmethod
    def from_bytes(cls, data):
        """Loads a model from the bytes of a .flow file (bytes, bytearray, memoryview or a uint8
        numpy array). libflowrt copies them: ``data`` may be discarded afterwards."""
        try:
            view = memoryview(data)
        except TypeError:
            raise TypeError(f"data must be a bytes-like object, got "
                            f"{type(data).__name__}") from None
        buf = np.frombuffer(view.cast("B") if view.c_contiguous else view.tobytes(), np.uint8)
        h = _lib.ctypes.c_void_p()
        _call("flowrt_model_from_memory", _addr(buf), buf.size, _lib.ctypes.byref(h))
        return cls(h, "<bytes>")

    def _read_facts(self):
        ct = _lib.ctypes
        c, h, w, i = ct.c_int(), ct.c_int(), ct.c_int(), ct.c_int()
        d, off = ct.c_size_t(), ct.c_size_t()
        _call("flowrt_model_image_shape", self._handle, ct.byref(c), ct.byref(h), ct.byref(w))
        self._image_shape = (c.value, h.value, w.value)
        _call("flowrt_model_n_bits", self._handle, ct.byref(i))
        self._n_bits = i.value
        _call("flowrt_model_latent_dim", self._handle, ct.byref(d))
        self._latent_dim = d.value
        _call("flowrt_model_num_classes", self._handle, ct.byref(i))
        self._num_classes = i.value
        _call("flowrt_model_levels", self._handle, ct.byref(i))
        shapes = []
        for level in range(i.value):
            _call("flowrt_model_latent_shape", self._handle, level, ct.byref(c), ct.byref(h),
                  ct.byref(w), ct.byref(off))
            shapes.append(LatentShape(c.value, h.value, w.value, off.value))
        self._latent_shapes = tuple(shapes)

    # -- lifetime

    def close(self):
        """Closes the model (idempotent): it can no longer be used, and the C model is freed now
        unless open sessions made from it still use it (then the last one's close frees it)."""
        self._closed = True
        self._release()

    def _release(self, sessions=0):
        """Adds ``sessions`` to the count of open sessions, then frees the C model if it is
        closed and unused."""
        lock = getattr(self, "_lock", None)
        if lock is None:  # __init__ did not get that far
            return
        with lock:
            self._sessions += sessions
            h = self._handle
            if h is None or not self._closed or self._sessions > 0:
                return
            self._handle = None
        if h.value:
            self._free(h)

    @property
    def closed(self):
        """True once :meth:`close` ran."""
        return self._closed

    def __enter__(self):
        return self

    def __exit__(self, *exc):
        self.close()

    def __del__(self):
        self.close()

    def _h(self):
        if self._closed:
            raise ValueError("the model is closed")
        return self._handle

    def __repr__(self):
        state = "closed" if self._closed else f"image {self._image_shape}, {self.levels} levels"
        return f"<flowrt.Model {self.source!r}: {state}>"

    # -- facts

    @property
    def image_shape(self):
        """(C, H, W) of the model's images."""
        return self._image_shape

    @property
    def n_bits(self):
        """Bits per pixel value the model reads (1..8)."""
        return self._n_bits

    @property
    def latent_dim(self):
        """Floats of z per image (= C*H*W)."""
        return self._latent_dim

    @property
    def levels(self):
        """Number of latent levels (splits + 1)."""
        return len(self._latent_shapes)

    @property
    def latent_shapes(self):
        """A :class:`LatentShape` (c, h, w, offset) per level: level 0 leaves the flow first, the
        last is the top."""
        return self._latent_shapes

    @property
    def num_classes(self):
        """Classes of a class-conditional model's top prior; 0 when unconditional."""
        return self._num_classes

    def metadata(self, key, default=KeyError):
        """The metadata value stored under ``key`` (str).

        A missing key raises KeyError, or returns ``default`` when one is given."""
        ct = _lib.ctypes
        k = key.encode() if isinstance(key, str) else bytes(key)
        if b"\0" in k:
            raise ValueError("key contains a NUL character")
        length = ct.c_size_t()
        size = 256
        while True:
            buf = ct.create_string_buffer(size)
            status = _fn("flowrt_model_metadata")(self._h(), k, ct.addressof(buf), size,
                                                   ct.byref(length))
            if status == Status.INVALID_ARGUMENT:  # the only one with valid arguments: no such key
                if default is KeyError:
                    raise KeyError(key)
                return default
            if status != 0:
                raise _error(status, _c().cdll.flowrt_last_error().decode("utf-8", "replace"))
            if length.value < size:
                return buf.raw[:length.value].decode("utf-8", "replace")
            size = length.value + 1

    def split_latents(self, z):
        """Views of z (n, latent_dim) per level: a list of (n, c, h, w) arrays, no copy."""
        z = _as_array(z)
        _check_shape(z, (None, self._latent_dim), "z")
        return [z[:, s.offset:s.offset + s.size].reshape((z.shape[0], s.c, s.h, s.w))
                for s in self._latent_shapes]

    # -- arrays

    def _pixels(self, pixels, what="pixels"):
        a = _as_array(pixels)
        if a.dtype != np.uint8:
            hint = "; float inputs are x (encode_float)" if a.dtype.kind == "f" else ""
            raise TypeError(f"{what} must be a uint8 array (n, C, H, W), got dtype {a.dtype}{hint}")
        _check_shape(a, (None,) + self._image_shape, what)
        return _c_array(a, np.uint8)

    def _floats(self, a, shape, what):
        a = _as_array(a)
        if a.dtype.kind != "f":
            raise TypeError(f"{what} must be a float array {_shape_str(shape)}, got dtype "
                            f"{a.dtype}")
        _check_shape(a, shape, what)
        return _c_array(a, np.float32)

    def _x(self, pixels_or_x, what="pixels_or_x"):
        """x (float32, C-contiguous) from uint8 pixels or float x."""
        a = _as_array(pixels_or_x)
        if a.dtype == np.uint8:
            return self._pixels_to_x(a, None, self._handle)  # sessions keep _handle alive
        if a.dtype.kind != "f":
            raise TypeError(f"{what} must be uint8 pixels or float x (n, C, H, W), got dtype "
                            f"{a.dtype}")
        return self._floats(a, (None,) + self._image_shape, what)

    def _labels(self, labels, n):
        if labels is None:
            return None
        a = _as_array(labels)
        if a.dtype.kind not in "iu":
            raise TypeError(f"labels must be integers, got dtype {a.dtype}")
        if a.dtype != np.int32 and a.size and (a.min() < -2**31 or a.max() >= 2**31):
            raise ValueError("labels are out of the int32 range")
        if a.ndim == 0:
            return np.full(n, a, np.int32)
        _check_shape(a, (n,), "labels")
        return _c_array(a, np.int32)

    def pixels_to_x(self, pixels, out=None):
        """uint8 pixels (n, C, H, W) -> float32 x (n, C, H, W) at the bin centres (the input
        flowrt_encode computes from pixels)."""
        return self._pixels_to_x(pixels, out, self._h())

    def _pixels_to_x(self, pixels, out, handle):
        p = self._pixels(pixels)
        x = _output(out, np.float32, p.shape, "x", (p,))
        _call("flowrt_pixels_to_x", handle, p.shape[0], _addr(p), _addr(x))
        return x

    def noise(self, n, seed, first_image=0, out=None):
        """The standard normals flowrt_sample uses for ``seed``, images first_image ..
        first_image+n-1: float32 (n, latent_dim)."""
        return self._noise(n, seed, first_image, out, self._h())

    def _noise(self, n, seed, first_image, out, handle):
        n = _count(n)
        eps = _output(out, np.float32, (n, self._latent_dim), "eps")
        _call("flowrt_model_noise", handle, n, _u64(seed, "seed"),
              _u64(first_image, "first_image"), _addr(eps))
        return eps


# ---- sessions -----------------------------------------------------------------------------------

class Session:
    """A flowrt_session: a backend, its prepared weights and scratch memory for ``max_batch``.

    Session(model, backend='auto', threads=0, max_batch=16, precision='fp32', device=0)

    - model: a :class:`Model`, or a path (then the session opens the model and owns it).
    - backend: 'auto' (CUDA if usable, else oneDNN, else portable), 'ref', 'onednn', 'cuda' or
      'portable'.
    - threads: CPU threads (0: all cores). max_batch: largest batch one pass computes (larger
      batches are processed in chunks, same results). precision: 'fp32' (exact; the default),
      'tf32', 'bf16', 'fp16' (see flowrt.h). device: the CUDA device index.

    A session is used by one thread at a time. Free it with :meth:`close` or a ``with`` block."""

    def __init__(self, model, backend="auto", threads=0, max_batch=16, precision="fp32",
                 device=0):
        self._handle = None
        self._owned_model = None
        b = _enum_index(backend, BACKENDS, "backend")
        p = _enum_index(precision, PRECISIONS, "precision")
        threads, device = _int_arg(threads, "threads"), _int_arg(device, "device")
        max_batch = _count(max_batch, "max_batch")
        if not isinstance(model, Model):
            if isinstance(model, (str, os.PathLike)):
                model = self._owned_model = Model.open(model)
            else:
                raise TypeError(f"model must be a flowrt.Model or a path, got "
                                f"{type(model).__name__}")
        ct = _lib.ctypes
        self._free = _c().cdll.flowrt_session_free
        self.model = model
        """The :class:`Model` this session runs."""
        opts = ct.c_void_p()
        try:
            _call("flowrt_session_options_create", ct.byref(opts))
            _call("flowrt_session_options_set_backend", opts, b)
            _call("flowrt_session_options_set_threads", opts, threads)
            _call("flowrt_session_options_set_device", opts, device)
            _call("flowrt_session_options_set_precision", opts, p)
            _call("flowrt_session_options_set_max_batch", opts, max_batch)
            h = ct.c_void_p()
            _call("flowrt_session_create", model._h(), opts, ct.byref(h))
            self._handle = h
            model._release(+1)
        except BaseException:
            if self._owned_model is not None:
                self._owned_model.close()
            raise
        finally:
            _c().cdll.flowrt_session_options_free(opts)
        self.precision = PRECISIONS[p]
        """The precision asked for."""
        self.max_batch = max_batch
        """The maximum batch the session was created for."""

    # -- lifetime

    def close(self):
        """Frees the session now (idempotent), and the model if the session opened it (or if it
        was closed already and this was its last open session)."""
        h, self._handle = getattr(self, "_handle", None), None
        if h is None:
            return
        if h.value:
            self._free(h)
        if self._owned_model is not None:
            self._owned_model._closed = True
        self.model._release(-1)

    @property
    def closed(self):
        """True once :meth:`close` ran."""
        return self._handle is None

    def __enter__(self):
        return self

    def __exit__(self, *exc):
        self.close()

    def __del__(self):
        self.close()

    def _h(self):
        if self._handle is None:
            raise ValueError("the session is closed")
        return self._handle

    def __repr__(self):
        state = "closed" if self.closed else f"backend {self.backend}"
        return f"<flowrt.Session on {self.model.source!r}: {state}>"

    # -- facts

    @property
    def backend(self):
        """The backend the session runs on: 'ref', 'onednn', 'cuda' or 'portable' (never 'auto')."""
        code = _fn("flowrt_session_backend")(self._h())
        return _fn("flowrt_backend_name")(code).decode()

    @property
    def image_shape(self):
        """The model's (C, H, W)."""
        return self.model.image_shape

    @property
    def latent_dim(self):
        """The model's floats of z per image."""
        return self.model.latent_dim

    @property
    def levels(self):
        """The model's number of latent levels."""
        return self.model.levels

    def _n_pixels(self, n):
        return (n,) + self.model.image_shape

    # -- compute

    def sample(self, n, temperature=0.7, seed=0, labels=None, out=None):
        """Samples n images at ``temperature`` (>= 0): uint8 (n, C, H, W).

        Image i of a seed is the same at every batch size and on every backend. labels (n,)
        integers, or one integer for all, pick the classes of a class-conditional model."""
        n = _count(n)
        lab = self.model._labels(labels, n)
        px = _output(out, np.uint8, self._n_pixels(n), "pixels", (lab,))
        seed = _u64(seed, "seed")
        if lab is None:
            _call("flowrt_sample", self._h(), n, float(temperature), seed, _addr(px))
        else:
            _call("flowrt_sample_class", self._h(), n, float(temperature), seed, _addr(lab),
                  _addr(px))
        return px

    def encode(self, pixels, labels=None, out=None):
        """Encodes uint8 pixels (n, C, H, W): (z float32 (n, latent_dim), bits_per_dim float64
        (n,)). out=(z, bits_per_dim) writes into those arrays."""
        m = self.model
        p = m._pixels(pixels)
        n = p.shape[0]
        lab = m._labels(labels, n)
        oz, ob = _outs(out, 2, "encode")
        z = _output(oz, np.float32, (n, m.latent_dim), "z", (p, lab))
        bpd = _output(ob, np.float64, (n,), "bits_per_dim", (p, lab, z))
        if lab is None:
            _call("flowrt_encode", self._h(), n, _addr(p), _addr(z), _addr(bpd))
        else:
            x = m._pixels_to_x(p, None, m._handle)
            _call("flowrt_encode_ex", self._h(), n, _addr(x), _addr(lab), _addr(z), None, None,
                  _addr(bpd))
        return z, bpd

    def encode_float(self, x, labels=None, out=None):
        """Encodes continuous inputs x (n, C, H, W) in the network's range (float32; other float
        dtypes are converted): (z, bits_per_dim) as :meth:`encode`."""
        r = self._encode_ex(self.model._floats(x, (None,) + self.model.image_shape, "x"), labels,
                            _outs(out, 2, "encode_float") + [None, None], want=(0, 3))
        return r.z, r.bits_per_dim

    def encode_ex(self, pixels_or_x, labels=None, out=None):
        """Encodes uint8 pixels or float x (n, C, H, W): an :class:`EncodeResult` (z, log_p,
        log_det, bits_per_dim). out=(z, log_p, log_det, bits_per_dim), None entries allocated."""
        oz, olp, old, ob = _outs(out, 4, "encode_ex")
        return self._encode_ex(self.model._x(pixels_or_x), labels, [oz, ob, olp, old],
                               want=(0, 1, 2, 3))

    def _encode_ex(self, x, labels, outs, want):
        m = self.model
        n = x.shape[0]
        lab = m._labels(labels, n)
        oz, ob, olp, old = outs
        z = _output(oz, np.float32, (n, m.latent_dim), "z", (x, lab))
        bpd = _output(ob, np.float64, (n,), "bits_per_dim", (x, lab, z))
        lp = ld = None
        if 1 in want:
            lp = _output(olp, np.float64, (n,), "log_p", (x, lab, z, bpd))
            ld = _output(old, np.float64, (n,), "log_det", (x, lab, z, bpd, lp))
        _call("flowrt_encode_ex", self._h(), n, _addr(x), _addr(lab), _addr(z), _addr(lp),
              _addr(ld), _addr(bpd))
        return EncodeResult(z, lp, ld, bpd)

    def decode(self, z, return_x=False, out=None):
        """Decodes the flow's latents z (n, latent_dim; float32, other floats converted) to uint8
        pixels (n, C, H, W); with return_x, (pixels, x) with x float32 (n, C, H, W).
        out: pixels, or (pixels, x) with return_x."""
        m = self.model
        z = m._floats(z, (None, m.latent_dim), "z")
        n = z.shape[0]
        return self._decoded(n, out, return_x, (z,), lambda px, x: _call(
            "flowrt_decode", self._h(), n, _addr(z), _addr(x), _addr(px)))

    def decode_noise(self, eps, temperature=1.0, labels=None, return_x=False, out=None):
        """Decodes standard-normal noise eps (n, latent_dim) at ``temperature``: each level's
        latent is mean + temperature * std * eps under its prior. Returns uint8 pixels, or
        (pixels, x) with return_x. decode_noise(encode_noise(p), 1.0) == p."""
        m = self.model
        eps = m._floats(eps, (None, m.latent_dim), "eps")
        n = eps.shape[0]
        lab = m._labels(labels, n)
        return self._decoded(n, out, return_x, (eps, lab), lambda px, x: _call(
            "flowrt_decode_noise", self._h(), n, _addr(eps), float(temperature), _addr(lab),
            _addr(x), _addr(px)))

    def _decoded(self, n, out, return_x, inputs, run):
        if return_x:
            opx, ox = _outs(out, 2, "decode with return_x")
        else:
            opx, ox = _outs(out, 1, "decode")[0], None
        px = _output(opx, np.uint8, self._n_pixels(n), "pixels", inputs)
        x = (_output(ox, np.float32, self._n_pixels(n), "x", inputs + (px,))
             if return_x else None)
        run(px, x)
        return (px, x) if return_x else px

    def encode_noise(self, pixels_or_x, labels=None, out=None):
        """The standardised latents eps = (z - mean) / std of every level under its prior:
        float32 (n, latent_dim), the inverse of :meth:`decode_noise` at temperature 1.

        Runs on the reference path whatever the session's backend."""
        m = self.model
        x = m._x(pixels_or_x)
        n = x.shape[0]
        lab = m._labels(labels, n)
        eps = _output(out, np.float32, (n, m.latent_dim), "eps", (x, lab))
        _call("flowrt_encode_noise", self._h(), n, _addr(x), _addr(lab), _addr(eps))
        return eps

    def level_terms(self, pixels_or_x, labels=None, out=None):
        """Per image and level: a :class:`LevelTerms` (log_prior, log_det), float64 (n, levels)
        each, in nats; sum over levels of both = log p(x) (encode_ex's log_p).

        Runs on the reference path whatever the session's backend."""
        m = self.model
        x = m._x(pixels_or_x)
        n = x.shape[0]
        lab = m._labels(labels, n)
        olp, old = _outs(out, 2, "level_terms")
        lp = _output(olp, np.float64, (n, m.levels), "log_prior", (x, lab))
        ld = _output(old, np.float64, (n, m.levels), "log_det", (x, lab, lp))
        _call("flowrt_level_terms", self._h(), n, _addr(x), _addr(lab), _addr(lp), _addr(ld))
        return LevelTerms(lp, ld)

    def nll_map(self, pixels_or_x, labels=None, out=None):
        """Each image's negative log-likelihood spread over its pixel grid: float64 (n, H, W) in
        nats, summing to -log p(x) per image (see flowrt_nll_map for how it is attributed).

        Runs on the reference path whatever the session's backend."""
        m = self.model
        x = m._x(pixels_or_x)
        n = x.shape[0]
        lab = m._labels(labels, n)
        _, h, w = m.image_shape
        nll = _output(out, np.float64, (n, h, w), "nll", (x, lab))
        _call("flowrt_nll_map", self._h(), n, _addr(x), _addr(lab), _addr(nll))
        return nll

    def pixels_to_x(self, pixels, out=None):
        """:meth:`Model.pixels_to_x` of this session's model."""
        self._h()
        return self.model._pixels_to_x(pixels, out, self.model._handle)

    def noise(self, n, seed, first_image=0, out=None):
        """:meth:`Model.noise` of this session's model: the noise :meth:`sample` decodes."""
        self._h()
        return self.model._noise(n, seed, first_image, out, self.model._handle)


def _int_arg(v, what):
    try:
        v = operator.index(v)
    except TypeError:
        raise TypeError(f"{what} must be an integer, got {type(v).__name__}") from None
    if not -2**31 <= v < 2**31:
        raise ValueError(f"{what} is out of range: {v}")
    return v
