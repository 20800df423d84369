"""Writes checkpoints in torch.save's zip layout without torch, for the tests: a state dict of
NumPy arrays, or an arbitrary pickle in place of data.pkl (to check what the reader refuses).

The pickle is emitted opcode by opcode, the way torch.save (protocol 2) writes a state dict:
an OrderedDict of tensors, each `_rebuild_tensor_v2(storage, offset, size, stride, False,
OrderedDict())` with the storage given as a persistent id
('storage', torch.<Type>Storage, key, 'cpu', numel).
"""
import pickle
import struct
import zipfile

import numpy as np

_STORAGE_NAMES = {
    np.dtype("float32"): "FloatStorage", np.dtype("float64"): "DoubleStorage",
    np.dtype("float16"): "HalfStorage", np.dtype("int64"): "LongStorage",
    np.dtype("int32"): "IntStorage", np.dtype("uint8"): "ByteStorage",
}


class _Emitter:
    def __init__(self):
        self.out = bytearray(b"\x80\x02")   # PROTO 2

    def op(self, code: bytes):
        self.out += code

    def global_(self, module, name):
        self.out += pickle.GLOBAL + f"{module}\n{name}\n".encode()

    def string(self, s: str):
        data = s.encode()
        self.out += pickle.BINUNICODE + struct.pack("<I", len(data)) + data

    def int_(self, v: int):
        self.out += pickle.BININT + struct.pack("<i", v)

    def int_tuple(self, values, long=False):
        """BININTs, or with `long` LONG1s (for what BININT cannot hold)."""
        self.out += pickle.MARK
        for v in values:
            if long:
                self.out += pickle.LONG1 + b"\x09" + v.to_bytes(9, "little", signed=True)
            else:
                self.int_(v)
        self.out += pickle.TUPLE

    def tensor(self, name, storage, key, numel, offset, size, stride, long=False):
        """`name`: a tensor rebuilt as torch saves it, a view of storage `key` (`numel` elements
        of the class `storage`) at `offset` with that size and stride."""
        self.string(name)
        self.global_("torch._utils", "_rebuild_tensor_v2")
        self.out += pickle.MARK + pickle.MARK
        self.string("storage")
        self.global_("torch", storage)
        self.string(key)
        self.string("cpu")
        self.int_(numel)
        self.out += pickle.TUPLE + pickle.BINPERSID
        self.int_(offset)
        self.int_tuple(size, long)
        self.int_tuple(stride, long)
        self.out += pickle.NEWFALSE
        self.empty_ordered_dict()
        self.out += pickle.TUPLE + pickle.REDUCE

    def empty_ordered_dict(self):
        self.global_("collections", "OrderedDict")
        self.out += pickle.EMPTY_TUPLE + pickle.REDUCE


def state_dict_pickle(tensors: dict, shapes: dict = None) -> (bytes, dict):
    """(data.pkl bytes, {key: raw storage bytes}). `shapes` may override a tensor's recorded
    size (to write a tensor whose shape does not fit its storage)."""
    e = _Emitter()
    storages = {}
    e.empty_ordered_dict()
    e.op(pickle.MARK)
    for index, (name, array) in enumerate(tensors.items()):
        array = np.ascontiguousarray(array)
        key = str(index)
        storages[key] = array.astype(array.dtype.newbyteorder("<")).tobytes()
        size = tuple(shapes.get(name, array.shape)) if shapes else array.shape
        strides = tuple(int(np.prod(size[i + 1:])) for i in range(len(size)))
        e.tensor(name, _STORAGE_NAMES[array.dtype], key, array.size, 0, size, strides)
    e.op(pickle.SETITEMS)
    e.op(pickle.STOP)
    return bytes(e.out), storages


def call_pickle(module: str, name: str, *args: str) -> bytes:
    """A pickle that calls module.name(*args) when loaded by an unrestricted unpickler."""
    e = _Emitter()
    e.global_(module, name)
    e.op(pickle.MARK)
    for a in args:
        e.string(a)
    e.op(pickle.TUPLE)
    e.op(pickle.REDUCE)
    e.op(pickle.STOP)
    return bytes(e.out)


def write_zip(path: str, data_pkl: bytes, storages: dict, prefix: str = "archive",
              skip_storages=()):
    with zipfile.ZipFile(path, "w", zipfile.ZIP_STORED) as z:
        z.writestr(f"{prefix}/data.pkl", data_pkl)
        z.writestr(f"{prefix}/byteorder", "little")
        for key, data in storages.items():
            if key not in skip_storages:
                z.writestr(f"{prefix}/data/{key}", data)
        z.writestr(f"{prefix}/version", "3\n")


def write_state_dict(path: str, tensors: dict, **kwargs):
    data_pkl, storages = state_dict_pickle(tensors, kwargs.pop("shapes", None))
    write_zip(path, data_pkl, storages, **kwargs)
