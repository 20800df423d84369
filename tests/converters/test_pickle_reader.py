"""The checkpoint reader: reads real torch zip checkpoints, refuses everything else with a clear
message, and never runs code from the file."""
import os
import tempfile
import unittest
import zipfile

import numpy as np

from converters.pickle_reader import CheckpointError, load_state_dict

from . import torch_zip
from .common import fixtures, run_cli


class ReadsRealCheckpoints(unittest.TestCase):
    def test_fixture_state_dicts(self):
        for fx in fixtures():
            with self.subTest(fixture=fx.name):
                state = load_state_dict(fx.checkpoint)
                c4 = 4 * fx.config["in_channel"]
                loc = state["blocks.0.flows.0.actnorm.loc"]
                self.assertEqual(loc.shape, (1, c4, 1, 1))
                self.assertEqual(loc.torch_dtype, "FloatStorage")
                self.assertEqual(loc.array.dtype, np.float32)
                flag = state["blocks.0.flows.0.actnorm.initialized"]
                self.assertEqual((flag.torch_dtype, flag.shape, int(flag.array)),
                                 ("ByteStorage", (), 1))

    def test_rewritten_fixture_reads_back_identically(self):
        fx = fixtures()[0]
        state = load_state_dict(fx.checkpoint)
        with tempfile.TemporaryDirectory() as tmp:
            path = os.path.join(tmp, "copy.pt")
            torch_zip.write_state_dict(path, {k: v.array for k, v in state.items()})
            again = load_state_dict(path)
        self.assertEqual(list(again), list(state))
        for key in state:
            np.testing.assert_array_equal(again[key].array, state[key].array)

    def test_strided_and_offset_views(self):
        base = np.arange(24, dtype=np.float32)
        _, storages = torch_zip.state_dict_pickle({"w": base})
        # "w" rebuilt as a 3x4 view with strides (1, 3) starting at element 2.
        with tempfile.TemporaryDirectory() as tmp:
            path = os.path.join(tmp, "view.pt")
            e = torch_zip._Emitter()
            e.empty_ordered_dict()
            e.op(b"(")
            e.string("w")
            e.global_("torch._utils", "_rebuild_tensor_v2")
            e.op(b"((")
            e.string("storage")
            e.global_("torch", "FloatStorage")
            e.string("0")
            e.string("cpu")
            e.int_(24)
            e.op(b"tQ")
            e.int_(2)
            e.int_tuple((3, 4))
            e.int_tuple((1, 3))
            e.op(b"\x89")
            e.empty_ordered_dict()
            e.op(b"tR")
            e.op(b"u.")
            torch_zip.write_zip(path, bytes(e.out), storages)
            w = load_state_dict(path)["w"].array
        np.testing.assert_array_equal(w, base[2 + np.arange(3)[:, None] + 3 * np.arange(4)])


class RefusesHostileFiles(unittest.TestCase):
    def setUp(self):
        self.tmp = tempfile.TemporaryDirectory()
        self.dir = self.tmp.name
        self.marker = os.path.join(self.dir, "pwned")

    def tearDown(self):
        self.tmp.cleanup()

    def _path(self, name="bad.pt"):
        return os.path.join(self.dir, name)

    def assertRefused(self, path, *fragments):
        with self.assertRaises(CheckpointError) as cm:
            load_state_dict(path)
        for fragment in fragments:
            self.assertIn(fragment, str(cm.exception))
        proc = run_cli("glow-pytorch", path, "--image", "1x16x16", "--levels", "2", "--depth", "2",
                       "-o", self._path("out.flow"))
        self.assertEqual(proc.returncode, 2, proc.stderr)
        self.assertNotIn("Traceback", proc.stderr)
        for fragment in fragments:
            self.assertIn(fragment, proc.stderr)
        self.assertFalse(os.path.exists(self._path("out.flow")))
        self.assertFalse(os.path.exists(self.marker), "code from the checkpoint ran")

    def test_os_system_via_global_reduce(self):
        path = self._path()
        torch_zip.write_zip(path, torch_zip.call_pickle("os", "system", f"touch {self.marker}"), {})
        self.assertRefused(path, "os.system")

    def test_other_callables(self):
        for module, name, arg in (("builtins", "eval", f"open('{self.marker}', 'w')"),
                                  ("posix", "system", f"touch {self.marker}"),
                                  ("subprocess", "getoutput", f"touch {self.marker}"),
                                  ("torch", "load", self.marker)):
            with self.subTest(glob=f"{module}.{name}"):
                path = self._path(f"{name}.pt")
                torch_zip.write_zip(path, torch_zip.call_pickle(module, name, arg), {})
                self.assertRefused(path, f"{module}.{name}")

    def test_payload_hidden_inside_a_state_dict(self):
        good, storages = torch_zip.state_dict_pickle({"a": np.zeros(2, np.float32)})
        # Put a call to os.system where the tensor's backward hooks go.
        evil = torch_zip.call_pickle("os", "system", f"touch {self.marker}")[2:-1]
        hooks = b"ccollections\nOrderedDict\n)R"
        self.assertEqual(good.count(hooks), 2)
        tampered = good[::-1].replace(hooks[::-1], evil[::-1], 1)[::-1]
        path = self._path()
        torch_zip.write_zip(path, tampered, storages)
        self.assertRefused(path, "os.system")

    def test_storage_type_called(self):
        path = self._path()
        torch_zip.write_zip(path, torch_zip.call_pickle("torch", "FloatStorage", "x"), {})
        self.assertRefused(path, "torch.FloatStorage")

    def test_truncated_zip(self):
        fx = fixtures()[0]
        with open(fx.checkpoint, "rb") as f:
            data = f.read()
        for cut in (len(data) // 2, len(data) - 30, 100):
            with self.subTest(cut=cut):
                path = self._path(f"cut{cut}.pt")
                with open(path, "wb") as f:
                    f.write(data[:cut])
                self.assertRefused(path, "not a zip archive, or truncated")

    def test_damaged_storage_bytes(self):
        path = self._path()
        torch_zip.write_state_dict(path, {"a": np.arange(64, dtype=np.float32)})
        with open(path, "r+b") as f:
            data = bytearray(f.read())
            at = data.find(np.arange(64, dtype=np.float32).tobytes())
            data[at + 10] ^= 0xFF   # the zip's CRC no longer matches
            f.seek(0)
            f.write(data)
        self.assertRefused(path, "truncated or damaged")

    def test_missing_storage(self):
        path = self._path()
        torch_zip.write_state_dict(path, {"a": np.zeros(3, np.float32), "b": np.ones(2, np.float32)},
                                   skip_storages=("1",))
        self.assertRefused(path, "storage '1' is missing")

    def test_storage_size_mismatch(self):
        data_pkl, storages = torch_zip.state_dict_pickle({"a": np.zeros(4, np.float32)})
        storages["0"] = storages["0"][:8]
        path = self._path()
        torch_zip.write_zip(path, data_pkl, storages)
        self.assertRefused(path, "storage '0' holds 8 bytes, expected 16")

    def test_zip_bomb_storage(self):
        data_pkl, storages = torch_zip.state_dict_pickle({"a": np.zeros(1 << 20, np.float32)})
        path = self._path()
        with zipfile.ZipFile(path, "w", zipfile.ZIP_DEFLATED) as z:
            z.writestr("archive/data.pkl", data_pkl)
            z.writestr("archive/data/0", storages["0"])
        self.assertRefused(path, "refusing a possible zip bomb")

    def test_tensor_larger_than_its_storage(self):
        path = self._path()
        torch_zip.write_state_dict(path, {"a": np.zeros(4, np.float32)}, shapes={"a": (2, 3)})
        self.assertRefused(path, "reads past the end of its storage")

    def test_not_a_state_dict(self):
        path = self._path()
        torch_zip.write_zip(path, b"\x80\x02]q\x00(K\x01K\x02e.", {})
        self.assertRefused(path, "holds a list, not a state_dict")

    def test_garbage_pickle(self):
        path = self._path()
        torch_zip.write_zip(path, b"\x80\x02\xff\xfe garbage", {})
        self.assertRefused(path, "damaged checkpoint pickle")

    def test_not_a_zip(self):
        path = self._path()
        with open(path, "wb") as f:
            f.write(os.urandom(300))
        self.assertRefused(path, "not a zip archive")

    def test_legacy_format(self):
        path = self._path()
        with open(path, "wb") as f:
            f.write(b"\x80\x02\x8a\x0alegacy torch.save magic")
        self.assertRefused(path, "legacy (pre-zip) torch.save")

    def test_no_data_pkl(self):
        path = self._path()
        with zipfile.ZipFile(path, "w") as z:
            z.writestr("archive/other", b"x")
        self.assertRefused(path, "expected exactly one <name>/data.pkl")

    def test_missing_file(self):
        self.assertRefused(self._path("absent.pt"), "no such file")


if __name__ == "__main__":
    unittest.main()
