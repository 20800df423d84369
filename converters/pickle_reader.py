"""Reads a PyTorch checkpoint (torch.save of a state_dict, zip format) without torch and without
running any code from the file.

A torch zip checkpoint is `<prefix>/data.pkl` (a pickle of the state dict) plus one raw
little-endian file per storage, `<prefix>/data/<key>`. The pickle refers to storages through
persistent ids and rebuilds tensors by calling `torch._utils._rebuild_tensor_v2`. The unpickler
below resolves the few globals a state dict needs to functions of this module and refuses every
other global, so a file that tries to call anything else (os.system, eval, ...) fails before
anything runs.
"""
import io
import pickle
import zipfile
from collections import OrderedDict

import numpy as np

from .errors import ConversionError


_MAX_EXPANSION = 100


class CheckpointError(ConversionError):
    pass


class _StorageType:
    """Stands in for torch.FloatStorage and friends: only its dtype is used."""

    def __init__(self, torch_name, dtype):
        self.torch_name = torch_name
        self.dtype = np.dtype(dtype) if dtype is not None else None

    def __call__(self, *args, **kwargs):
        raise CheckpointError(f"the checkpoint calls torch.{self.torch_name}, which a state_dict "
                              "never does")


_STORAGE_TYPES = {
    "FloatStorage": "<f4", "DoubleStorage": "<f8", "HalfStorage": "<f2",
    "BFloat16Storage": "<u2",  # widened to float32 in _bfloat16_to_float32
    "LongStorage": "<i8", "IntStorage": "<i4", "ShortStorage": "<i2", "CharStorage": "i1",
    "ByteStorage": "u1", "BoolStorage": "?",
}


class _Storage:
    def __init__(self, storage_type, array):
        self.storage_type = storage_type
        self.array = array


class CheckpointTensor:
    """A tensor of the checkpoint: its values, and the torch dtype it had."""

    def __init__(self, array, torch_dtype):
        self.array = array
        self.torch_dtype = torch_dtype

    @property
    def shape(self):
        return self.array.shape

    def __setstate__(self, state):
        raise CheckpointError("the checkpoint tries to set state on a tensor")


def _bfloat16_to_float32(raw: np.ndarray) -> np.ndarray:
    return (raw.astype(np.uint32) << 16).view(np.float32)


def _rebuild_tensor_v2(storage, storage_offset, size, stride, requires_grad=False,
                       backward_hooks=None, metadata=None):
    if not isinstance(storage, _Storage):
        raise CheckpointError("a tensor is rebuilt from something that is not a storage")
    if not (isinstance(size, tuple) and isinstance(stride, tuple) and len(size) == len(stride)
            and all(isinstance(v, int) and v >= 0 for v in size + stride)
            and isinstance(storage_offset, int) and storage_offset >= 0):
        raise CheckpointError(f"a tensor has an invalid size {size!r} / stride {stride!r}")
    base = storage.array
    count = int(np.prod(size, dtype=np.int64)) if size else 1
    if count > 0:
        last = storage_offset + sum((s - 1) * st for s, st in zip(size, stride))
        if last >= base.size:
            raise CheckpointError(f"a tensor of size {list(size)} reads past the end of its storage "
                                  f"({base.size} elements)")
    view = np.lib.stride_tricks.as_strided(
        base[storage_offset:] if count > 0 else base[:0], shape=size,
        strides=tuple(st * base.itemsize for st in stride), writeable=False)
    array = np.array(view)
    if storage.storage_type.torch_name == "BFloat16Storage":
        array = _bfloat16_to_float32(array)
    return CheckpointTensor(array, storage.storage_type.torch_name)


def _rebuild_parameter(data, requires_grad=False, backward_hooks=None):
    if not isinstance(data, CheckpointTensor):
        raise CheckpointError("a parameter is rebuilt from something that is not a tensor")
    return data


def _ordered_dict(*args):
    if args:
        raise CheckpointError("the checkpoint builds an OrderedDict from arguments")
    return OrderedDict()


_ALLOWED_GLOBALS = {
    ("collections", "OrderedDict"): _ordered_dict,
    ("torch._utils", "_rebuild_tensor_v2"): _rebuild_tensor_v2,
    ("torch._utils", "_rebuild_parameter"): _rebuild_parameter,
}
_ALLOWED_GLOBALS.update({("torch", name): _StorageType(name, dtype)
                         for name, dtype in _STORAGE_TYPES.items()})


class _RestrictedUnpickler(pickle.Unpickler):
    def __init__(self, data: bytes, load_storage):
        super().__init__(io.BytesIO(data))
        self._load_storage = load_storage
        self._storages = {}

    def find_class(self, module, name):
        target = _ALLOWED_GLOBALS.get((module, name))
        if target is None:
            raise CheckpointError(f"the checkpoint refers to the global '{module}.{name}', which a "
                                  "state_dict never needs; refusing to load it")
        return target

    def persistent_load(self, pid):
        if not (isinstance(pid, tuple) and len(pid) == 5 and pid[0] == "storage"
                and isinstance(pid[1], _StorageType) and isinstance(pid[2], str)
                and isinstance(pid[4], int) and pid[4] >= 0):
            raise CheckpointError(f"the checkpoint has an unknown persistent id {pid!r:.80}")
        _, storage_type, key, _location, numel = pid
        if key not in self._storages:
            self._storages[key] = _Storage(storage_type, self._load_storage(key, storage_type, numel))
        return self._storages[key]


def _find_prefix(names):
    pickles = [n for n in names if n.endswith("/data.pkl") and n.count("/") == 1]
    if len(pickles) != 1:
        raise CheckpointError("not a torch zip checkpoint: expected exactly one <name>/data.pkl, "
                              f"found {len(pickles)}")
    return pickles[0][: -len("data.pkl")]


def load_state_dict(path: str) -> "OrderedDict[str, CheckpointTensor]":
    """The state dict stored in a torch zip checkpoint, tensors as CheckpointTensor."""
    try:
        archive = zipfile.ZipFile(path)
    except FileNotFoundError:
        raise CheckpointError(f"{path}: no such file") from None
    except OSError as e:
        raise CheckpointError(f"{path}: cannot read ({e.strerror})") from None
    except zipfile.BadZipFile:
        with open(path, "rb") as f:
            head = f.read(2)
        if head[:1] == b"\x80":
            raise CheckpointError(f"{path}: a legacy (pre-zip) torch.save file; re-save it with "
                                  "torch >= 1.6 (the default zip format)") from None
        raise CheckpointError(f"{path}: not a zip archive, or truncated") from None
    with archive:
        names = archive.namelist()
        prefix = _find_prefix(names)
        byteorder = "little"
        if prefix + "byteorder" in names:
            byteorder = archive.read(prefix + "byteorder").decode("ascii", "replace").strip()
        if byteorder != "little":
            raise CheckpointError(f"{path}: storages are {byteorder}-endian; only little-endian "
                                  "checkpoints are supported")

        def load_storage(key, storage_type, numel):
            member = prefix + "data/" + key
            try:
                info = archive.getinfo(member)
            except KeyError:
                raise CheckpointError(f"{path}: storage '{key}' is missing from the archive") from None
            expected = numel * storage_type.dtype.itemsize
            # torch.save stores members uncompressed; a compressed one may expand without bound.
            if info.compress_type != zipfile.ZIP_STORED and info.file_size > _MAX_EXPANSION * max(
                    info.compress_size, 1):
                raise CheckpointError(f"{path}: storage '{key}' expands {info.file_size} bytes "
                                      f"from {info.compress_size}: refusing a possible zip bomb")
            if info.file_size != expected:
                raise CheckpointError(f"{path}: storage '{key}' holds {info.file_size} bytes, "
                                      f"expected {expected} ({numel} x {storage_type.torch_name})")
            raw = _read_member(archive, member, path)
            return np.frombuffer(raw, dtype=storage_type.dtype, count=numel)

        data = _read_member(archive, prefix + "data.pkl", path)
        try:
            state = _RestrictedUnpickler(data, load_storage).load()
        except ConversionError:
            raise
        except (pickle.UnpicklingError, EOFError, ValueError, TypeError, AttributeError,
                IndexError, KeyError, MemoryError, RecursionError) as e:
            raise CheckpointError(f"{path}: damaged checkpoint pickle ({type(e).__name__}: {e})") \
                from None
    if not isinstance(state, dict):
        raise CheckpointError(f"{path}: the checkpoint holds a {type(state).__name__}, not a "
                              "state_dict")
    for key, value in state.items():
        if not isinstance(key, str) or not isinstance(value, CheckpointTensor):
            raise CheckpointError(f"{path}: entry {key!r:.60} of the state dict is not a tensor")
    return state


def _read_member(archive, member, path):
    try:
        return archive.read(member)
    except (zipfile.BadZipFile, EOFError, OSError, ValueError) as e:
        raise CheckpointError(f"{path}: cannot read '{member}' from the archive (truncated or "
                              f"damaged: {e})") from None
