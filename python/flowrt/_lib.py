"""Finding, loading and declaring libflowrt (the C API of runtime/include/flowrt.h) for ctypes.

Where the library is looked for, first match wins:

1. ``FLOWRT_LIBRARY``: the path of the library file, or a directory holding ``libflowrt.so.0``.
   When it is set nothing else is tried, and a path that does not load is an error.
2. The file ``_config.py`` that CMake writes beside the package: the installed package's names the
   library relative to the package (``<prefix>/lib/python3/dist-packages/flowrt`` ->
   ``<prefix>/lib/libflowrt.so.0``); the build tree's copy (``build/python/flowrt``) names the
   library it was built with.
3. Without ``_config.py`` (the package used straight from the source tree ``python/flowrt``): the
   install layout relative to the package, then ``build/lib`` of the source checkout.
4. The dynamic loader's own search (``LD_LIBRARY_PATH``, ``ldconfig``): ``libflowrt.so.0``.

The library is loaded on first use (or by :func:`load_library`), not at import.
"""
import ctypes
import os
import threading

SONAME = "libflowrt.so.0"

_c_int_p = ctypes.POINTER(ctypes.c_int)
_c_size_p = ctypes.POINTER(ctypes.c_size_t)
_vp = ctypes.c_void_p
_vpp = ctypes.POINTER(ctypes.c_void_p)
_int, _size, _u64, _float = ctypes.c_int, ctypes.c_size_t, ctypes.c_uint64, ctypes.c_float

# name: (restype, argtypes). Every array argument is a raw address (numpy's .ctypes.data).
SIGNATURES = {
    "flowrt_version": (ctypes.c_char_p, []),
    "flowrt_format_major_supported": (_int, []),
    "flowrt_status_string": (ctypes.c_char_p, [_int]),
    "flowrt_last_error": (ctypes.c_char_p, []),
    "flowrt_backend_available": (_int, [_int]),
    "flowrt_backend_name": (ctypes.c_char_p, [_int]),
    "flowrt_model_open": (_int, [ctypes.c_char_p, _vpp]),
    "flowrt_model_from_memory": (_int, [_vp, _size, _vpp]),
    "flowrt_model_free": (None, [_vp]),
    "flowrt_model_image_shape": (_int, [_vp, _c_int_p, _c_int_p, _c_int_p]),
    "flowrt_model_n_bits": (_int, [_vp, _c_int_p]),
    "flowrt_model_latent_dim": (_int, [_vp, _c_size_p]),
    "flowrt_model_levels": (_int, [_vp, _c_int_p]),
    "flowrt_model_latent_shape": (_int, [_vp, _int, _c_int_p, _c_int_p, _c_int_p, _c_size_p]),
    "flowrt_model_num_classes": (_int, [_vp, _c_int_p]),
    "flowrt_model_metadata": (_int, [_vp, ctypes.c_char_p, _vp, _size, _c_size_p]),
    "flowrt_session_options_create": (_int, [_vpp]),
    "flowrt_session_options_free": (None, [_vp]),
    "flowrt_session_options_set_backend": (_int, [_vp, _int]),
    "flowrt_session_options_set_threads": (_int, [_vp, _int]),
    "flowrt_session_options_set_device": (_int, [_vp, _int]),
    "flowrt_session_options_set_precision": (_int, [_vp, _int]),
    "flowrt_session_options_set_max_batch": (_int, [_vp, _size]),
    "flowrt_session_create": (_int, [_vp, _vp, _vpp]),
    "flowrt_session_free": (None, [_vp]),
    "flowrt_session_backend": (_int, [_vp]),
    "flowrt_sample": (_int, [_vp, _size, _float, _u64, _vp]),
    "flowrt_sample_class": (_int, [_vp, _size, _float, _u64, _vp, _vp]),
    "flowrt_encode": (_int, [_vp, _size, _vp, _vp, _vp]),
    "flowrt_encode_float": (_int, [_vp, _size, _vp, _vp, _vp]),
    "flowrt_encode_ex": (_int, [_vp, _size, _vp, _vp, _vp, _vp, _vp, _vp]),
    "flowrt_decode": (_int, [_vp, _size, _vp, _vp, _vp]),
    "flowrt_decode_noise": (_int, [_vp, _size, _vp, _float, _vp, _vp, _vp]),
    "flowrt_pixels_to_x": (_int, [_vp, _size, _vp, _vp]),
    "flowrt_encode_noise": (_int, [_vp, _size, _vp, _vp, _vp]),
    "flowrt_level_terms": (_int, [_vp, _size, _vp, _vp, _vp, _vp]),
    "flowrt_nll_map": (_int, [_vp, _size, _vp, _vp, _vp]),
    "flowrt_model_noise": (_int, [_vp, _size, _u64, _u64, _vp]),
}


class LibraryNotFoundError(OSError):
    """libflowrt could not be found or loaded; the message lists every place that was tried."""


class _Loaded:
    def __init__(self, cdll, path, how):
        self.cdll = cdll
        self.path = path  # what was passed to dlopen (a bare soname for the loader's search)
        self.how = how    # which rule found it
        self.missing = []
        for name, (restype, argtypes) in SIGNATURES.items():
            try:
                fn = getattr(cdll, name)
            except AttributeError:
                self.missing.append(name)
                continue
            fn.restype, fn.argtypes = restype, argtypes


_lock = threading.Lock()
_loaded = None


def _package_dir():
    return os.path.dirname(os.path.abspath(__file__))


def _config():
    try:
        from . import _config as cfg  # written by CMake (python/CMakeLists.txt)
    except ImportError:
        return None
    return cfg


def _in_directory(directory):
    for name in (SONAME, "libflowrt.so"):
        p = os.path.join(directory, name)
        if os.path.exists(p):
            return p
    return os.path.join(directory, SONAME)


def candidates():
    """The (rule, path) pairs tried in order, as described in this module's docstring."""
    env = os.environ.get("FLOWRT_LIBRARY")
    if env:
        return [("FLOWRT_LIBRARY", _in_directory(env) if os.path.isdir(env) else env)]
    pkg = _package_dir()
    out = []
    cfg = _config()
    if cfg is not None:
        lib = cfg.LIBRARY if os.path.isabs(cfg.LIBRARY) else os.path.join(pkg, cfg.LIBRARY)
        out.append((f"{cfg.KIND} tree (flowrt/_config.py)", os.path.normpath(lib)))
    else:
        # <prefix>/lib/python3/dist-packages/flowrt -> <prefix>/lib; python/flowrt -> build/lib.
        out.append(("install layout",
                    os.path.normpath(os.path.join(pkg, "..", "..", "..", SONAME))))
        out.append(("source checkout's build tree",
                    os.path.normpath(os.path.join(pkg, "..", "..", "build", "lib", SONAME))))
    out.append(("the dynamic loader's search path", SONAME))
    return out


def _dlopen(path, how):
    return _Loaded(ctypes.CDLL(path), path, how)


def load(path=None):
    """Loads libflowrt once (thread-safe) and returns the _Loaded handle.

    path: load this file instead of searching; an error if another library is already loaded."""
    global _loaded
    with _lock:
        if _loaded is not None:
            if path is not None and os.path.realpath(path) != os.path.realpath(_loaded.path):
                raise RuntimeError(f"libflowrt is already loaded from {_loaded.path}; cannot load "
                                   f"{path} as well (load_library must come before first use)")
            return _loaded
        if path is not None:
            tries = [("load_library()", _in_directory(path) if os.path.isdir(path) else path)]
        else:
            tries = candidates()
        failures = []
        for how, p in tries:
            explicit = how in ("FLOWRT_LIBRARY", "load_library()")
            if os.path.dirname(p) and not os.path.exists(p):
                failures.append(f"{how}: {p} does not exist")
                continue
            try:
                _loaded = _dlopen(p, how)
            except OSError as e:
                failures.append(f"{how}: {e}")
                if explicit:
                    break
                continue
            return _loaded
        raise LibraryNotFoundError("cannot load libflowrt; tried:\n  " + "\n  ".join(failures) +
                                   "\n(set FLOWRT_LIBRARY to the path of libflowrt.so.0)")


def loaded():
    """The loaded library, or None before first use."""
    return _loaded
