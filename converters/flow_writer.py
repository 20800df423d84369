"""Serialises a model (converters.model_ir) to .flow bytes.

Two things the Python FlatBuffers builder does not do on its own:
- it ignores the schema's `force_align: 32` on Tensor.data, so data vectors are started with
  an explicit 32-byte alignment (the runtime maps files and reads tensors in place);
- it skips scalar fields equal to their default, which is harmless, but every enum is still set
  explicitly because 0 (UNSPECIFIED) is rejected by every reader.
"""
import os
import tempfile

import flatbuffers
import numpy as np

from . import fbs
from .errors import ConversionError
from .model_ir import (ActNorm, Conv2d, Coupling, Flatten, INV_CONV_FORM, InvConv1x1, Logit,
                       OutputScale, PERMUTE_KIND, Permute, ReLU, ResidualAdd, Split, Squeeze,
                       TopPrior)
from .shapes import trace

TENSOR_ALIGNMENT = 32

_LAYER_OP = fbs.LayerOp.LayerOp
_NET_OP = fbs.NetOp.NetOp


def _tensor(b: flatbuffers.Builder, array: np.ndarray) -> int:
    array = np.ascontiguousarray(array, dtype="<f4")
    data = array.tobytes()
    b.StartVector(1, len(data), TENSOR_ALIGNMENT)
    b.head = b.Head() - len(data)
    b.Bytes[b.Head():b.Head() + len(data)] = data
    data_off = b.EndVector()
    shape = np.asarray(array.shape if array.ndim else (1,), dtype="<i8")
    shape_off = b.CreateNumpyVector(shape)
    fbs.Tensor.Start(b)
    fbs.Tensor.AddShape(b, shape_off)
    fbs.Tensor.AddDtype(b, fbs.DType.DType.F32)
    fbs.Tensor.AddData(b, data_off)
    return fbs.Tensor.End(b)


def _int_vector(b, values) -> int:
    return b.CreateNumpyVector(np.asarray(values, dtype="<i4"))


def _net_op(b, op):
    """Returns (NetOp type, offset) of one op of a coupling net or prior."""
    if isinstance(op, Conv2d):
        w = _tensor(b, op.weight)
        bias = _tensor(b, op.bias) if op.bias is not None else None
        fbs.Conv2d.Start(b)
        fbs.Conv2d.AddWeight(b, w)
        if bias is not None:
            fbs.Conv2d.AddBias(b, bias)
        fbs.Conv2d.AddPadding(b, op.padding)
        fbs.Conv2d.AddPadValue(b, float(op.pad_value))
        return _NET_OP.Conv2d, fbs.Conv2d.End(b)
    if isinstance(op, ActNorm):
        return _NET_OP.ActNorm, _actnorm(b, op)
    if isinstance(op, ReLU):
        fbs.ReLU.Start(b)
        return _NET_OP.ReLU, fbs.ReLU.End(b)
    if isinstance(op, OutputScale):
        t = _tensor(b, op.log_scale)
        fbs.OutputScale.Start(b)
        fbs.OutputScale.AddLogScale(b, t)
        fbs.OutputScale.AddFactor(b, float(op.factor))
        return _NET_OP.OutputScale, fbs.OutputScale.End(b)
    if isinstance(op, ResidualAdd):
        fbs.ResidualAdd.Start(b)
        fbs.ResidualAdd.AddFrom_(b, int(op.from_))
        return _NET_OP.ResidualAdd, fbs.ResidualAdd.End(b)
    raise ConversionError(f"cannot write net op {type(op).__name__}")


def _net(b, ops) -> int:
    offsets = []
    for op in ops:
        kind, off = _net_op(b, op)
        fbs.NetLayer.Start(b)
        fbs.NetLayer.AddOpType(b, kind)
        fbs.NetLayer.AddOp(b, off)
        offsets.append(fbs.NetLayer.End(b))
    b.StartVector(4, len(offsets), 4)
    for off in reversed(offsets):
        b.PrependUOffsetTRelative(off)
    return b.EndVector()


def _actnorm(b, op: ActNorm) -> int:
    bias = _tensor(b, op.bias)
    scale = _tensor(b, op.scale)
    fbs.ActNorm.Start(b)
    fbs.ActNorm.AddBias(b, bias)
    fbs.ActNorm.AddScale(b, scale)
    return fbs.ActNorm.End(b)


def _layer_op(b, op):
    """Returns (LayerOp type, offset)."""
    if isinstance(op, Squeeze):
        fbs.Squeeze.Start(b)
        fbs.Squeeze.AddOrder(b, op.order)
        return _LAYER_OP.Squeeze, fbs.Squeeze.End(b)
    if isinstance(op, ActNorm):
        return _LAYER_OP.ActNorm, _actnorm(b, op)
    if isinstance(op, InvConv1x1):
        if op.form == INV_CONV_FORM.DENSE:
            w = _tensor(b, op.weight)
            fbs.InvConv1x1.Start(b)
            fbs.InvConv1x1.AddForm(b, op.form)
            fbs.InvConv1x1.AddWeight(b, w)
            return _LAYER_OP.InvConv1x1, fbs.InvConv1x1.End(b)
        perm = _int_vector(b, op.perm)
        lower, upper = _tensor(b, op.lower), _tensor(b, op.upper)
        sign, log_s = _tensor(b, op.sign), _tensor(b, op.log_s)
        fbs.InvConv1x1.Start(b)
        fbs.InvConv1x1.AddForm(b, op.form)
        fbs.InvConv1x1.AddPerm(b, perm)
        fbs.InvConv1x1.AddLower(b, lower)
        fbs.InvConv1x1.AddUpper(b, upper)
        fbs.InvConv1x1.AddSign(b, sign)
        fbs.InvConv1x1.AddLogS(b, log_s)
        return _LAYER_OP.InvConv1x1, fbs.InvConv1x1.End(b)
    if isinstance(op, Permute):
        indices = _int_vector(b, op.indices) if op.kind == PERMUTE_KIND.INDICES else None
        fbs.Permute.Start(b)
        fbs.Permute.AddKind(b, op.kind)
        if indices is not None:
            fbs.Permute.AddIndices(b, indices)
        return _LAYER_OP.Permute, fbs.Permute.End(b)
    if isinstance(op, Coupling):
        net = _net(b, op.net)
        scale_weight = _tensor(b, op.scale_weight) if op.scale_weight is not None else None
        fbs.Coupling.Start(b)
        fbs.Coupling.AddType(b, op.type)
        fbs.Coupling.AddConditioning(b, op.conditioning)
        fbs.Coupling.AddNet(b, net)
        if op.split:
            fbs.Coupling.AddSplit(b, op.split)
        if op.scale_fn:
            fbs.Coupling.AddScaleFn(b, op.scale_fn)
        fbs.Coupling.AddScaleBias(b, float(op.scale_bias))
        if op.form:
            fbs.Coupling.AddForm(b, op.form)
        if op.mask_channel:
            fbs.Coupling.AddMaskChannel(b, True)
        if scale_weight is not None:
            fbs.Coupling.AddScaleWeight(b, scale_weight)
        return _LAYER_OP.Coupling, fbs.Coupling.End(b)
    if isinstance(op, Split):
        prior = _net(b, op.prior) if op.prior else None
        fbs.Split.Start(b)
        fbs.Split.AddLeaving(b, op.leaving)
        if prior is not None:
            fbs.Split.AddPrior(b, prior)
            fbs.Split.AddPriorLayout(b, op.prior_layout)
        return _LAYER_OP.Split, fbs.Split.End(b)
    if isinstance(op, TopPrior):
        mean = _tensor(b, op.mean) if op.mean is not None else None
        log_std = _tensor(b, op.log_std) if op.log_std is not None else None
        offsets = _tensor(b, op.class_offsets) if op.class_offsets is not None else None
        fbs.TopPrior.Start(b)
        fbs.TopPrior.AddKind(b, op.kind)
        if mean is not None:
            fbs.TopPrior.AddMean(b, mean)
        if log_std is not None:
            fbs.TopPrior.AddLogStd(b, log_std)
        if offsets is not None:
            fbs.TopPrior.AddClassOffsets(b, offsets)
        return _LAYER_OP.TopPrior, fbs.TopPrior.End(b)
    if isinstance(op, Logit):
        fbs.Logit.Start(b)
        fbs.Logit.AddAlpha(b, float(op.alpha))
        return _LAYER_OP.Logit, fbs.Logit.End(b)
    if isinstance(op, Flatten):
        fbs.Flatten.Start(b)
        return _LAYER_OP.Flatten, fbs.Flatten.End(b)
    raise ConversionError(f"cannot write layer {type(op).__name__}")


def to_bytes(model) -> bytes:
    """The .flow bytes of a model, after validating it."""
    trace(model)
    b = flatbuffers.Builder(1 << 16)
    layer_offsets = []
    for layer in model.layers:
        kind, off = _layer_op(b, layer.op)
        name = b.CreateString(layer.name)
        fbs.Layer.Start(b)
        fbs.Layer.AddName(b, name)
        fbs.Layer.AddOpType(b, kind)
        fbs.Layer.AddOp(b, off)
        layer_offsets.append(fbs.Layer.End(b))
    b.StartVector(4, len(layer_offsets), 4)
    for off in reversed(layer_offsets):
        b.PrependUOffsetTRelative(off)
    layers = b.EndVector()

    kv_offsets = []
    for key, value in model.metadata:
        k, v = b.CreateString(key), b.CreateString(value)
        fbs.KeyValue.Start(b)
        fbs.KeyValue.AddKey(b, k)
        fbs.KeyValue.AddValue(b, v)
        kv_offsets.append(fbs.KeyValue.End(b))
    b.StartVector(4, len(kv_offsets), 4)
    for off in reversed(kv_offsets):
        b.PrependUOffsetTRelative(off)
    metadata = b.EndVector()

    img = model.image
    fbs.ImageSpec.Start(b)
    fbs.ImageSpec.AddChannels(b, img.channels)
    fbs.ImageSpec.AddHeight(b, img.height)
    fbs.ImageSpec.AddWidth(b, img.width)
    fbs.ImageSpec.AddNBits(b, img.n_bits)
    image = fbs.ImageSpec.End(b)

    fbs.Model.Start(b)
    fbs.Model.AddFormatMajor(b, model.format_major)
    # A file that uses a format 1.1 or 1.2 feature says so, whatever the model was read as.
    fbs.Model.AddFormatMinor(b, max(model.format_minor, model.required_format_minor()))
    fbs.Model.AddImage(b, image)
    fbs.Model.AddLayers(b, layers)
    fbs.Model.AddMetadata(b, metadata)
    root = fbs.Model.End(b)
    b.Finish(root, file_identifier=fbs.FILE_IDENTIFIER)
    return bytes(b.Output())


def write(model, path: str) -> None:
    """Writes atomically: a temporary file in the same folder, flushed, then renamed."""
    data = to_bytes(model)
    folder = os.path.dirname(os.path.abspath(path))
    try:
        fd, tmp = tempfile.mkstemp(prefix=".flow-", dir=folder)
    except OSError as e:
        raise ConversionError(f"cannot write {path}: {e.strerror}") from None
    try:
        with os.fdopen(fd, "wb") as f:
            f.write(data)
            f.flush()
            os.fsync(f.fileno())
        os.replace(tmp, path)
    except BaseException:
        if os.path.exists(tmp):
            os.unlink(tmp)
        raise
