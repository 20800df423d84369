"""The .flow writer and reader: round trips of every layer option, 32-byte aligned tensors,
and clear errors on damaged or inconsistent files."""
import os
import tempfile
import unittest
from unittest import mock

import numpy as np

from converters import fbs, flow_reader, flow_writer
from converters.errors import ConversionError
from converters.model_ir import ActNorm, Coupling, Squeeze, f32
from converters.shapes import trace

from .common import fixtures, run_cli, tensor_data_offsets
from .random_models import FAMILY_VARIANTS, VARIANTS, random_family_model, random_model


def _models():
    yield from ((v.name, random_model(v)) for v in VARIANTS)
    yield from ((v.name, random_family_model(v)) for v in FAMILY_VARIANTS)
    yield from ((fx.name, fx.model()) for fx in fixtures())


class RoundTrip(unittest.TestCase):
    def test_write_read_write_is_identical(self):
        for name, model in _models():
            with self.subTest(model=name):
                data = flow_writer.to_bytes(model)
                again = flow_reader.from_bytes(data)
                self.assertEqual(flow_writer.to_bytes(again), data)
                self.assertEqual(again.metadata, model.metadata)
                self.assertEqual([l.name for l in again.layers], [l.name for l in model.layers])

    def test_tensor_data_is_32_byte_aligned(self):
        for name, model in _models():
            with self.subTest(model=name):
                data = flow_writer.to_bytes(model)
                offsets = tensor_data_offsets(data)
                self.assertTrue(offsets)
                self.assertEqual([o for o in offsets if o % 32], [])

    def test_every_enum_is_written(self):
        # The builder skips fields equal to their default; enums default to UNSPECIFIED (0), so a
        # written enum is always present in the table. Check the raw vtable of each layer op.
        model = random_model(VARIANTS[1])
        data = flow_writer.to_bytes(model)
        m = fbs.Model.Model.GetRootAs(data, 0)
        for i in range(m.LayersLength()):
            layer = m.Layers(i)
            table = layer.Op()
            if layer.OpType() == fbs.LayerOp.LayerOp.Squeeze:
                sq = fbs.Squeeze.Squeeze()
                sq.Init(table.Bytes, table.Pos)
                self.assertNotEqual(sq._tab.Offset(4), 0)
            if layer.OpType() == fbs.LayerOp.LayerOp.Coupling:
                c = fbs.Coupling.Coupling()
                c.Init(table.Bytes, table.Pos)
                for enum in (c.Type(), c.Conditioning(), c.Split(), c.ScaleFn(), c.Form()):
                    self.assertNotEqual(enum, 0)

    def test_write_is_atomic_file(self):
        model = random_model(VARIANTS[0])
        with tempfile.TemporaryDirectory() as tmp:
            path = os.path.join(tmp, "m.flow")
            flow_writer.write(model, path)
            self.assertEqual(os.listdir(tmp), ["m.flow"])
            self.assertEqual(flow_writer.to_bytes(flow_reader.read(path)),
                             flow_writer.to_bytes(model))


class RejectsBadFiles(unittest.TestCase):
    def setUp(self):
        self.model = random_model(VARIANTS[0])
        self.data = flow_writer.to_bytes(self.model)

    def assertRejected(self, data, fragment):
        with self.assertRaises(ConversionError) as cm:
            flow_reader.from_bytes(data)
        self.assertIn(fragment, str(cm.exception))
        with tempfile.TemporaryDirectory() as tmp:
            path = os.path.join(tmp, "bad.flow")
            with open(path, "wb") as f:
                f.write(data)
            proc = run_cli("inspect", path)
            self.assertEqual(proc.returncode, 2, proc.stderr)
            self.assertEqual(proc.stderr, f"error: {cm.exception}\n")
            self.assertIn(fragment, proc.stderr)

    def _write_unchecked(self, model):
        with mock.patch("converters.flow_writer.trace"):
            return flow_writer.to_bytes(model)

    def test_wrong_identifier(self):
        self.assertRejected(self.data[:4] + b"XXXX" + self.data[8:], "not a .flow file")

    def test_truncated(self):
        for cut in (len(self.data) // 2, len(self.data) - 64, 12):
            with self.subTest(cut=cut):
                with self.assertRaises(ConversionError):
                    flow_reader.from_bytes(self.data[:cut])

    def test_unspecified_enum(self):
        self.model.layers[0].op = Squeeze(0)
        self.assertRejected(self._write_unchecked(self.model), "order is unset")

    def test_tensor_shape_and_bytes_disagree(self):
        data = bytearray(self.data)
        m = fbs.Model.Model.GetRootAs(bytes(data), 0)
        layer = m.Layers(1)   # the first actnorm
        an = fbs.ActNorm.ActNorm()
        an.Init(layer.Op().Bytes, layer.Op().Pos)
        shape_at = an.Bias()._tab.Vector(an.Bias()._tab.Offset(4))
        data[shape_at:shape_at + 8] = np.int64(9).tobytes()
        self.assertRejected(bytes(data), "tensor holds 32 bytes, shape [9] needs 36")

    def test_shape_does_not_fit_the_layer_sequence(self):
        self.model.layers[1].op = ActNorm(f32(np.zeros(5)), f32(np.ones(5)))
        self.assertRejected(self._write_unchecked(self.model), "actnorm bias has shape [5], expected [8]")

    def test_non_finite_tensor(self):
        self.model.layers[1].op.scale[0] = np.inf
        self.assertRejected(self._write_unchecked(self.model), "NaN or infinity")

    def test_singular_invconv(self):
        inv = self.model.layers[2].op
        inv.log_s[:] = -200.0
        self.assertRejected(self._write_unchecked(self.model), "not invertible")

    def test_top_prior_not_last(self):
        self.model.layers.append(self.model.layers[0])
        self.assertRejected(self._write_unchecked(self.model), "the top prior must be the last layer")

    def test_random_damage_gives_clear_errors(self):
        # Flipped bytes and cut-off files: either a valid model or a ConversionError, nothing
        # else (no IndexError, struct.error, numpy warnings turned into crashes...).
        rng = np.random.default_rng(2024)
        for trial in range(400):
            damaged = bytearray(self.data)
            for _ in range(int(rng.integers(1, 4))):
                damaged[int(rng.integers(0, len(damaged)))] = int(rng.integers(0, 256))
            if trial % 10 == 0:
                damaged = damaged[:int(rng.integers(0, len(damaged)))]
            with np.errstate(all="raise"):
                try:
                    flow_reader.from_bytes(bytes(damaged))
                except ConversionError:
                    pass

    def test_messages_are_one_line(self):
        # Layer names and tensor shapes come from the file: shown quoted and bounded.
        self.model.layers[1].name = "level0/step0\nactnorm"
        self.model.layers[1].op = ActNorm(f32(np.zeros(5)), f32(np.ones(5)))
        self.assertRejected(self._write_unchecked(self.model),
                            "layer 1 ('level0/step0\\nactnorm') op 0: actnorm bias has shape [5]")
        data = bytearray(self.data)
        m = fbs.Model.Model.GetRootAs(bytes(data), 0)
        an = fbs.ActNorm.ActNorm()
        an.Init(m.Layers(1).Op().Bytes, m.Layers(1).Op().Pos)
        shape_at = an.Bias()._tab.Vector(an.Bias()._tab.Offset(4))
        data[shape_at - 4:shape_at] = np.uint32(9).tobytes()   # the shape vector's length
        self.assertRejected(bytes(data), "tensor shape [8, ")
        self.assertRejected(bytes(data), "...] of rank 9 is invalid")

    def test_conv_without_weight(self):
        coupling = next(layer.op for layer in self.model.layers if isinstance(layer.op, Coupling))
        coupling.net[0].weight = None
        with self.assertRaises(ConversionError) as cm:   # trace also checks models built in memory
            trace(self.model)
        self.assertIn("net op 0: conv weight is missing", str(cm.exception))

    def test_writer_validates(self):
        self.model.layers[1].op = ActNorm(f32(np.zeros(5)), f32(np.ones(5)))
        with self.assertRaises(ConversionError):
            flow_writer.to_bytes(self.model)


if __name__ == "__main__":
    unittest.main()
