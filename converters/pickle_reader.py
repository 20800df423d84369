"""Reads a PyTorch checkpoint (torch.save of a state_dict, zip format) without torch and without
running any code from the file.

A torch zip checkpoint is `<prefix>/data.pkl` (a pickle of the state dict) plus one raw
little-endian file per storage, `<prefix>/data/<key>`. The pickle refers to storages through
persistent ids and rebuilds tensors by calling `torch._utils._rebuild_tensor_v2`. The unpickler
below resolves the few globals a state dict needs to functions of this module and refuses every
other global, so a file that tries to call anything else (os.system, eval, ...) fails before
anything runs.

A damaged or hostile file gives a CheckpointError naming the file, never another exception:
sizes in the zip directory and lengths in the pickle are checked against what the file holds
before anything is allocated, and the pickle is walked once without building anything
(_check_pickle) before the unpickler sees it.
"""
import io
import math
import os
import pickle
import pickletools
import struct
import zipfile
import zlib
from collections import OrderedDict

import numpy as np

from .errors import ConversionError, one_line, shown


_MAX_EXPANSION = 100
# Containers a pickle may nest: a state dict nests 6 deep, and hashing a tuple nested some
# 100000 deep overflows the C stack.
_MAX_NESTING = 100
# The largest product of the other dimensions of a tensor with a zero dimension: numpy refuses
# shapes whose product overflows, empty or not.
_MAX_EMPTY_SHAPE = 1 << 40
# What zipfile raises on a damaged archive besides BadZipFile: undecodable names (ValueError),
# unsupported features (NotImplementedError), bad deflate data (zlib.error), short reads.
_ZIP_ERRORS = (zipfile.BadZipFile, zipfile.LargeZipFile, EOFError, OSError, ValueError,
               NotImplementedError, RuntimeError, zlib.error, struct.error, OverflowError)


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

    def __setstate__(self, state):
        # BUILD on a global would otherwise change it for every later load in this process.
        raise CheckpointError(f"the checkpoint tries to set state on torch.{self.torch_name}")

    def __repr__(self):   # in messages
        return f"torch.{self.torch_name}"


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

    def __repr__(self):
        return f"<{self.storage_type!r} of {self.array.size} elements>"


class CheckpointTensor:
    """A tensor of the checkpoint: its values (a read-only view of its storage), and the torch
    dtype it had."""

    def __init__(self, array, torch_dtype):
        self.array = array
        self.torch_dtype = torch_dtype

    @property
    def shape(self):
        return self.array.shape

    def __repr__(self):
        return f"<tensor {list(self.shape)} from torch.{self.torch_dtype}>"

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
        raise CheckpointError(f"a tensor has an invalid size {shown(size)} / stride "
                              f"{shown(stride)}")
    base = storage.array
    count = math.prod(size)
    if count > 0:
        last = storage_offset + sum((s - 1) * st for s, st in zip(size, stride))
        if last >= base.size:
            raise CheckpointError(f"a tensor of size {list(size)} reads past the end of its storage "
                                  f"({base.size} elements)")
        # Only overlapping (stride 0) views get here; a state dict has none, and refusing them
        # keeps every tensor within the bytes the file holds.
        if count > base.size:
            raise CheckpointError(f"a tensor of size {list(size)} has more elements than its "
                                  f"storage ({base.size})")
        strides = tuple(st * base.itemsize if s > 1 else 0 for s, st in zip(size, stride))
        start = base[storage_offset:]
    else:
        if math.prod(s for s in size if s) > _MAX_EMPTY_SHAPE:
            raise CheckpointError(f"an empty tensor has the impossible size {list(size)}")
        strides, start = (0,) * len(size), base[:0]
    # A view, not a copy: many tensors may share one storage.
    view = np.lib.stride_tricks.as_strided(start, shape=size, strides=strides, writeable=False)
    return CheckpointTensor(view, storage.storage_type.torch_name)


def _rebuild_parameter(data, requires_grad=False, backward_hooks=None):
    if not isinstance(data, CheckpointTensor):
        raise CheckpointError("a parameter is rebuilt from something that is not a tensor")
    return data


def _ordered_dict(*args):
    if args:
        raise CheckpointError("the checkpoint builds an OrderedDict from arguments")
    return OrderedDict()


class _Global:
    """An allowed global that is a function: calls it, and refuses BUILD, which would otherwise
    set attributes (__defaults__...) on the function itself."""
    __slots__ = ("_name", "_function")

    def __init__(self, name, function):
        self._name = name
        self._function = function

    def __call__(self, *args, **kwargs):
        return self._function(*args, **kwargs)

    def __setstate__(self, state):
        raise CheckpointError(f"the checkpoint tries to set state on {self._name}")

    def __repr__(self):
        return self._name


_ALLOWED_GLOBALS = {
    ("collections", "OrderedDict"): _Global("collections.OrderedDict", _ordered_dict),
    ("torch._utils", "_rebuild_tensor_v2"): _Global("torch._utils._rebuild_tensor_v2",
                                                    _rebuild_tensor_v2),
    ("torch._utils", "_rebuild_parameter"): _Global("torch._utils._rebuild_parameter",
                                                    _rebuild_parameter),
}
_ALLOWED_GLOBALS.update({("torch", name): _StorageType(name, dtype)
                         for name, dtype in _STORAGE_TYPES.items()})


_MARK = None
_IN_PLACE = {"APPEND", "APPENDS", "SETITEM", "SETITEMS", "ADDITEMS", "BUILD"}
_MEMO_PUT = {"PUT", "BINPUT", "LONG_BINPUT"}
_MEMO_GET = {"GET", "BINGET", "LONG_BINGET"}


def _check_pickle(data: bytes):
    """Walks the opcodes of a pickle, tracking only how deep each stack entry nests, and raises
    ValueError for what the C unpickler would take on trust: a length past the end of the data
    (pickletools reads each argument from what is there; the unpickler allocates BINBYTES'
    length before reading it), a memo index beyond the data's size (the unpickler sizes its
    memo by the largest index), containers nested over _MAX_NESTING deep."""
    stack, memo = [], {}
    for op, arg, pos in pickletools.genops(data):
        name = op.name
        if name == "MARK":
            stack.append(_MARK)
            continue
        if name == "FRAME":
            if arg > len(data) - pos:
                raise ValueError(f"a FRAME of {arg} bytes at position {pos} is longer than the "
                                 "data")
            continue
        if name in _MEMO_PUT or name == "MEMOIZE":
            index = len(memo) if name == "MEMOIZE" else arg
            if index > len(data):
                raise ValueError(f"memo index {index} at position {pos} is beyond the data's size")
            if not stack or stack[-1] is _MARK:
                raise ValueError(f"nothing to memoize at position {pos}")
            memo[index] = stack[-1]
            continue
        if name in _MEMO_GET:
            if arg not in memo:
                raise ValueError(f"memo index {arg} at position {pos} is read before it is written")
            stack.append(memo[arg])
            continue
        if name == "DUP":
            if not stack or stack[-1] is _MARK:
                raise ValueError(f"stack underflow at position {pos}")
            stack.append(stack[-1])
            continue
        before = op.stack_before
        popped = []
        if pickletools.markobject in before:
            if _MARK not in stack:
                raise ValueError(f"no mark for {name} at position {pos}")
            k = len(stack) - 1 - stack[::-1].index(_MARK)
            popped = stack[k + 1:]
            del stack[k:]
            below = before.index(pickletools.markobject)
        else:
            below = len(before)
        if len(stack) < below or _MARK in stack[len(stack) - below:]:
            raise ValueError(f"stack underflow at position {pos}")
        operands = stack[len(stack) - below:] + popped
        del stack[len(stack) - below:]
        if name in _IN_PLACE:   # the container changes, at the bottom of the operands
            depth = max([operands[0]] + [d + 1 for d in operands[1:]])
        else:
            depth = 1 + max(operands, default=-1)
        if depth > _MAX_NESTING:
            raise ValueError(f"objects nest more than {_MAX_NESTING} deep at position {pos}")
        stack.extend([depth] * len(op.stack_after))


class _RestrictedUnpickler(pickle.Unpickler):
    def __init__(self, data: bytes, load_storage):
        super().__init__(io.BytesIO(data))
        self._load_storage = load_storage
        self._storages = {}

    def find_class(self, module, name):
        target = _ALLOWED_GLOBALS.get((module, name))
        if target is None:
            raise CheckpointError(f"the checkpoint refers to the global "
                                  f"{shown(f'{module}.{name}')}, which a state_dict never "
                                  "needs; refusing to load it")
        return target

    def persistent_load(self, pid):
        if not (isinstance(pid, tuple) and len(pid) == 5 and pid[0] == "storage"
                and isinstance(pid[1], _StorageType) and isinstance(pid[2], str)
                and isinstance(pid[4], int) and pid[4] >= 0):
            raise CheckpointError(f"the checkpoint has an unknown persistent id {shown(pid)}")
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
    """The state dict stored in a torch zip checkpoint, tensors as CheckpointTensor. Raises
    CheckpointError, with a message that starts with `path`, on anything else."""
    try:
        return _load(path)
    except ConversionError as e:
        raise CheckpointError(f"{path}: {e}") from None


def _load(path):
    try:
        archive = zipfile.ZipFile(path)
    except FileNotFoundError:
        raise CheckpointError("no such file") from None
    except zipfile.BadZipFile:
        with open(path, "rb") as f:
            head = f.read(2)
        if head[:1] == b"\x80":
            raise CheckpointError("a legacy (pre-zip) torch.save file; re-save it with torch >= "
                                  "1.6 (the default zip format)") from None
        raise CheckpointError("not a zip archive, or truncated") from None
    except OSError as e:
        raise CheckpointError(f"cannot read ({e.strerror})") from None
    except _ZIP_ERRORS as e:
        raise CheckpointError(f"a damaged zip archive ({type(e).__name__}: {one_line(e)})") \
            from None
    with archive:
        size = os.fstat(archive.fp.fileno()).st_size
        names = archive.namelist()
        prefix = _find_prefix(names)
        byteorder = "little"
        if prefix + "byteorder" in names:
            byteorder = _read_member(archive, prefix + "byteorder", size).decode(
                "ascii", "replace").strip()
        if byteorder != "little":
            order = byteorder if byteorder.isalpha() and len(byteorder) <= 20 else shown(byteorder)
            raise CheckpointError(f"storages are {order}-endian; only little-endian checkpoints "
                                  "are supported")

        def load_storage(key, storage_type, numel):
            member = prefix + "data/" + key
            try:
                info = archive.getinfo(member)
            except KeyError:
                raise CheckpointError(f"storage {shown(key)} is missing from the archive") from None
            expected = numel * storage_type.dtype.itemsize
            if info.file_size != expected:
                raise CheckpointError(f"storage {shown(key)} holds {info.file_size} bytes, "
                                      f"expected {expected} ({numel} x {storage_type.torch_name})")
            raw = np.frombuffer(_read_member(archive, member, size), dtype=storage_type.dtype,
                                count=numel)
            if storage_type.torch_name == "BFloat16Storage":
                return _bfloat16_to_float32(raw)
            return raw

        data = _read_member(archive, prefix + "data.pkl", size)
        try:
            _check_pickle(data)
            state = _RestrictedUnpickler(data, load_storage).load()
        except ConversionError:
            raise
        except (pickle.UnpicklingError, EOFError, ValueError, TypeError, AttributeError,
                IndexError, KeyError, RecursionError, OverflowError) as e:
            raise CheckpointError(f"damaged checkpoint pickle ({type(e).__name__}: "
                                  f"{one_line(e)})") from None
    if not isinstance(state, dict):
        raise CheckpointError(f"the checkpoint holds a {type(state).__name__}, not a state_dict")
    for key, value in state.items():
        if not isinstance(key, str) or not isinstance(value, CheckpointTensor):
            raise CheckpointError(f"entry {shown(key)} of the state dict is not a tensor")
    return state


def _read_member(archive, member, archive_size):
    """The bytes of a member, once its directory entry is known to fit in the file: zipfile
    allocates what the entry claims before reading."""
    info = archive.getinfo(member)
    label = shown(member)
    if info.flag_bits & 0x1:
        raise CheckpointError(f"{label} is encrypted")
    if info.compress_type not in (zipfile.ZIP_STORED, zipfile.ZIP_DEFLATED):
        raise CheckpointError(f"{label} uses compression method {info.compress_type}; torch.save "
                              "stores members uncompressed")
    if info.header_offset < 0 or info.header_offset + info.compress_size > archive_size:
        raise CheckpointError(f"{label} claims {info.compress_size} bytes at offset "
                              f"{info.header_offset}, outside the file ({archive_size} bytes): "
                              "truncated or damaged")
    if info.compress_type == zipfile.ZIP_STORED and info.file_size != info.compress_size:
        raise CheckpointError(f"{label} is stored with {info.compress_size} bytes but claims "
                              f"{info.file_size}: damaged")
    # torch.save stores members uncompressed; a compressed one may expand without bound.
    if info.compress_type != zipfile.ZIP_STORED and info.file_size > _MAX_EXPANSION * max(
            info.compress_size, 1):
        raise CheckpointError(f"{label} expands {info.file_size} bytes from {info.compress_size}: "
                              "refusing a possible zip bomb")
    try:
        return archive.read(info)
    except _ZIP_ERRORS as e:
        raise CheckpointError(f"cannot read {label} from the archive (truncated or damaged: "
                              f"{type(e).__name__}: {one_line(e)})") from None
