"""Reads .flow bytes into a model (converters.model_ir) and validates it.

The Python FlatBuffers runtime has no verifier, so every offset the generated accessors follow
is checked for bounds here before it is used, and any failure of the accessors on a damaged
buffer becomes a ConversionError.
"""
import struct

import numpy as np
from flatbuffers.table import Table

from . import fbs
from .errors import ConversionError, layer_label, one_line
from .model_ir import (ActNorm, Conv2d, Coupling, COUPLING_TYPE, Flatten, ImageSpec, InvConv1x1,
                       Layer, Logit, Model, OutputScale, Permute, ReLU, ResidualAdd,
                       SCALE_FUNCTION, Split, Squeeze, TopPrior)
from .shapes import trace

_LAYER_OP = fbs.LayerOp.LayerOp
_NET_OP = fbs.NetOp.NetOp
_MAX_ELEMENTS = 1 << 31
# vtable offsets (4 + 2 * field index) of the vectors whose bounds are checked before the
# generated accessors walk them.
_INVCONV_PERM = 8
_PERMUTE_INDICES = 6
_MODEL_LAYERS = 10
_MODEL_METADATA = 12
_COUPLING_NET = 8
_SPLIT_PRIOR = 6


class _Buffer:
    def __init__(self, data: bytes):
        self.data = data

    def vector_span(self, tab: Table, field_offset: int, elem_size: int):
        """(start, count) of a vector field after bounds checks, or None when absent."""
        o = tab.Offset(field_offset)
        if o == 0:
            return None
        at = tab.Pos + o
        self._check(at, 4)
        start = tab.Vector(o)
        count = tab.VectorLen(o)
        self._check(start, count * elem_size)
        return start, count

    def _check(self, at: int, size: int):
        if at < 0 or size < 0 or at + size > len(self.data):
            raise ConversionError("malformed .flow file: an offset points outside the buffer")


def _tensor(buf: _Buffer, t, what: str):
    if t is None:
        return None
    tab = t._tab
    shape_span = buf.vector_span(tab, 4, 8)
    data_span = buf.vector_span(tab, 8, 1)
    if shape_span is None or data_span is None:
        raise ConversionError(f"{what}: a tensor lacks its shape or data")
    shape = tuple(int(d) for d in np.frombuffer(buf.data, "<i8", shape_span[1], shape_span[0]))
    if not 1 <= len(shape) <= 4 or any(d < 1 for d in shape):
        shown = list(shape) if len(shape) <= 4 else \
            f"[{', '.join(map(str, shape[:4]))}, ...] of rank {len(shape)}"
        raise ConversionError(f"{what}: tensor shape {shown} is invalid (rank 1..4, dims >= 1)")
    n = 1
    for d in shape:
        n *= d
        if n > _MAX_ELEMENTS:
            raise ConversionError(f"{what}: tensor shape {list(shape)} is too large")
    if t.Dtype() != fbs.DType.DType.F32:
        raise ConversionError(f"{what}: tensor dtype {t.Dtype()} is not F32")
    if data_span[1] != 4 * n:
        raise ConversionError(f"{what}: tensor holds {data_span[1]} bytes, shape {list(shape)} "
                              f"needs {4 * n}")
    return np.frombuffer(buf.data, "<f4", n, data_span[0]).reshape(shape).astype(np.float32)


def _ints(buf: _Buffer, tab: Table, field_offset: int):
    span = buf.vector_span(tab, field_offset, 4)
    if span is None:
        return None
    return np.frombuffer(buf.data, "<i4", span[1], span[0]).astype(np.int32)


def _union(tab_holder, cls):
    table = tab_holder.Op()
    if table is None:
        return None
    obj = cls()
    obj.Init(table.Bytes, table.Pos)
    return obj


def _net(buf, length, get, what):
    ops = []
    for i in range(length):
        nl = get(i)
        kind = nl.OpType()
        at = f"{what} op {i}"
        if kind == _NET_OP.Conv2d:
            c = _union(nl, fbs.Conv2d.Conv2d)
            ops.append(Conv2d(_tensor(buf, c.Weight(), at), _tensor(buf, c.Bias(), at),
                              c.Padding(), c.PadValue()))
        elif kind == _NET_OP.ActNorm:
            a = _union(nl, fbs.ActNorm.ActNorm)
            ops.append(ActNorm(_tensor(buf, a.Bias(), at), _tensor(buf, a.Scale(), at)))
        elif kind == _NET_OP.ReLU:
            ops.append(ReLU())
        elif kind == _NET_OP.OutputScale:
            s = _union(nl, fbs.OutputScale.OutputScale)
            ops.append(OutputScale(_tensor(buf, s.LogScale(), at), s.Factor()))
        elif kind == _NET_OP.ResidualAdd:
            r = _union(nl, fbs.ResidualAdd.ResidualAdd)
            if r is None:
                raise ConversionError(f"{at}: the residual add has no table")
            ops.append(ResidualAdd(r.From_()))   # checked against the net by shapes.trace
        else:
            raise ConversionError(f"{at}: unknown net op type {kind}")
    return ops


def _layer(buf, fl, index):
    name = fl.Name()
    name = name.decode("utf-8", "replace") if name is not None else ""
    at = layer_label(index, name)
    kind = fl.OpType()
    if kind == _LAYER_OP.Squeeze:
        op = Squeeze(_union(fl, fbs.Squeeze.Squeeze).Order())
    elif kind == _LAYER_OP.ActNorm:
        a = _union(fl, fbs.ActNorm.ActNorm)
        op = ActNorm(_tensor(buf, a.Bias(), at), _tensor(buf, a.Scale(), at))
    elif kind == _LAYER_OP.InvConv1x1:
        v = _union(fl, fbs.InvConv1x1.InvConv1x1)
        op = InvConv1x1(v.Form(), _tensor(buf, v.Weight(), at), _ints(buf, v._tab, _INVCONV_PERM),
                        _tensor(buf, v.Lower(), at), _tensor(buf, v.Upper(), at),
                        _tensor(buf, v.Sign(), at), _tensor(buf, v.LogS(), at))
    elif kind == _LAYER_OP.Permute:
        p = _union(fl, fbs.Permute.Permute)
        op = Permute(p.Kind(), _ints(buf, p._tab, _PERMUTE_INDICES))
    elif kind == _LAYER_OP.Coupling:
        c = _union(fl, fbs.Coupling.Coupling)
        if c.NetIsNone():
            raise ConversionError(f"{at}: the coupling has no net")
        buf.vector_span(c._tab, _COUPLING_NET, 4)
        net = _net(buf, c.NetLength(), c.Net, at + " net")
        # scale_weight belongs to the TANH scale only; libflowrt ignores it otherwise, and so
        # does this reader.
        tanh = c.Type() == COUPLING_TYPE.AFFINE and c.ScaleFn() == SCALE_FUNCTION.TANH
        op = Coupling(c.Type(), c.Conditioning(), net, c.Split(), c.ScaleFn(), c.ScaleBias(),
                      c.Form(), bool(c.MaskChannel()),
                      _tensor(buf, c.ScaleWeight(), at) if tanh else None)
    elif kind == _LAYER_OP.Split:
        s = _union(fl, fbs.Split.Split)
        buf.vector_span(s._tab, _SPLIT_PRIOR, 4)
        prior = [] if s.PriorIsNone() else _net(buf, s.PriorLength(), s.Prior, at + " prior")
        op = Split(s.Leaving(), prior, s.PriorLayout())
    elif kind == _LAYER_OP.TopPrior:
        t = _union(fl, fbs.TopPrior.TopPrior)
        op = TopPrior(t.Kind(), _tensor(buf, t.Mean(), at), _tensor(buf, t.LogStd(), at),
                      _tensor(buf, t.ClassOffsets(), at))
    elif kind == _LAYER_OP.Logit:
        op = Logit(_union(fl, fbs.Logit.Logit).Alpha())
    elif kind == _LAYER_OP.Flatten:
        if _union(fl, fbs.Flatten.Flatten) is None:
            raise ConversionError(f"{at}: the flatten layer has no table")
        op = Flatten()
    else:
        raise ConversionError(f"{at}: unknown layer type {kind}")
    return Layer(name, op)


def from_bytes(data: bytes) -> Model:
    data = bytes(data)
    if len(data) < 8 or data[4:8] != fbs.FILE_IDENTIFIER:
        raise ConversionError("not a .flow file (the FlatBuffers identifier is not FLOW)")
    buf = _Buffer(data)
    try:
        m = fbs.Model.Model.GetRootAs(data, 0)
        if m.FormatMajor() != 1:
            raise ConversionError(f"format_major {m.FormatMajor()} is not supported (this reader "
                                  f"reads 1)")
        spec = m.Image()
        if spec is None:
            raise ConversionError("the model has no image spec")
        image = ImageSpec(spec.Channels(), spec.Height(), spec.Width(), spec.NBits())
        if m.LayersIsNone():
            raise ConversionError("the model has no layer list")
        buf.vector_span(m._tab, _MODEL_LAYERS, 4)
        layers = [_layer(buf, m.Layers(i), i) for i in range(m.LayersLength())]
        metadata = []
        buf.vector_span(m._tab, _MODEL_METADATA, 4)
        for i in range(m.MetadataLength()):
            kv = m.Metadata(i)
            key = kv.Key()
            if key is None:
                raise ConversionError(f"metadata entry {i} has no key")
            value = kv.Value()
            metadata.append((key.decode("utf-8", "replace"),
                             value.decode("utf-8", "replace") if value is not None else ""))
        model = Model(image, layers, metadata, m.FormatMajor(), m.FormatMinor())
    except ConversionError:
        raise
    except (IndexError, struct.error, ValueError, TypeError, AttributeError, UnicodeError) as e:
        raise ConversionError(f"malformed .flow file ({type(e).__name__}: {one_line(e)})") from None
    trace(model)
    return model


def read(path: str) -> Model:
    try:
        with open(path, "rb") as f:
            data = f.read()
    except OSError as e:
        raise ConversionError(f"cannot read {path}: {e.strerror}") from None
    return from_bytes(data)
