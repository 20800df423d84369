"""The checkpoint reader: reads real torch zip checkpoints, refuses everything else with a clear
message, and never runs code from the file."""
import os
import struct
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
            e.tensor("w", "FloatStorage", "0", 24, 2, (3, 4), (1, 3))
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
        message = str(cm.exception)
        self.assertTrue(message.startswith(path + ": "), message)
        self.assertNotIn("\n", message)
        for fragment in fragments:
            self.assertIn(fragment, message)
        proc = run_cli("glow-pytorch", path, "--image", "1x16x16", "--levels", "2", "--depth", "2",
                       "-o", self._path("out.flow"))
        self.assertEqual(proc.returncode, 2, proc.stderr)
        self.assertEqual(proc.stderr, f"error: {message}\n")
        self.assertFalse(os.path.exists(self._path("out.flow")))
        self.assertFalse(os.path.exists(self.marker), "code from the checkpoint ran")

    def _pickle(self, body: bytes, storages=None):
        """A checkpoint whose data.pkl is PROTO 2 + body."""
        path = self._path()
        torch_zip.write_zip(path, b"\x80\x02" + body, storages or {})
        return path

    def _view(self, size, stride, numel, names=("w",)):
        """A checkpoint whose tensors `names` have that size and stride over one float storage."""
        e = torch_zip._Emitter()
        e.empty_ordered_dict()
        e.op(b"(")
        for name in names:
            e.tensor(name, "FloatStorage", "0", numel, 0, size, stride, long=True)
        e.op(b"u.")
        path = self._path()
        torch_zip.write_zip(path, bytes(e.out), {"0": np.zeros(numel, np.float32).tobytes()})
        return path

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

    def test_deeply_nested_containers(self):
        # A tuple nested 200000 deep as a dict key: hashing it recurses past the C stack. The
        # command line runs first, in its own process, as the failure this guards against is a
        # crash.
        deep_key = self._pickle(b"}" + b")" + b"\x85" * 200000 + b"K\x01s.")
        proc = run_cli("glow-pytorch", deep_key, "--image", "1x16x16", "--levels", "2", "--depth",
                       "2", "-o", self._path("out.flow"))
        self.assertEqual(proc.returncode, 2, proc.stderr)
        self.assertRefused(deep_key, "objects nest more than 100 deep")
        self.assertRefused(self._pickle(b"]" * 5000 + b"a" * 4999 + b"."), "nest more than 100")

    def test_lengths_beyond_the_data(self):
        # The unpickler allocates BINBYTES' length before reading it, and cannot take 2**64 - 1.
        for body, fragment in ((b"B\xff\xff\xff\xff.", "expected 4294967295 bytes in a bytes4"),
                               (b"\x8e" + b"\xff" * 8 + b".", "bytes8 byte count > sys.maxsize"),
                               (b"\x96" + struct.pack("<Q", 1 << 40) + b".", "in a bytearray8"),
                               (b"\x8d" + b"\xff" * 8 + b".", "unicodestring8 byte count"),
                               (b"\x95" + struct.pack("<Q", 1 << 40) + b"N.", "a FRAME of")):
            with self.subTest(fragment=fragment):
                self.assertRefused(self._pickle(body), "damaged checkpoint pickle", fragment)

    def test_memo_index_beyond_the_data(self):
        # The unpickler sizes its memo by the largest index: 2 GB for this one.
        self.assertRefused(self._pickle(b"K\x01r\x00\x00\x00\x10."), "memo index 268435456")

    def test_state_set_on_a_global(self):
        set_dtype = b"ctorch\nFloatStorage\n}X\x05\x00\x00\x00dtypeX\x01\x00\x00\x00xsb."
        self.assertRefused(self._pickle(set_dtype), "set state on torch.FloatStorage")
        defaults = (b"ctorch._utils\n_rebuild_tensor_v2\nN}X\x0c\x00\x00\x00__defaults__)s"
                    b"\x86b.")
        self.assertRefused(self._pickle(defaults), "set state on torch._utils._rebuild_tensor_v2")
        # Nothing of it stuck: a float checkpoint still reads.
        path = self._path("good.pt")
        torch_zip.write_state_dict(path, {"a": np.arange(3, dtype=np.float32)})
        np.testing.assert_array_equal(load_state_dict(path)["a"].array, [0, 1, 2])

    def test_messages_show_what_the_pickle_holds(self):
        pid = (b"(X\x07\x00\x00\x00storagectorch\nFloatStorage\nctorch\nFloatStorage\n"
               b"X\x01\x00\x00\x000X\x03\x00\x00\x00cpuK\x01tQ.")
        self.assertRefused(self._pickle(pid), "unknown persistent id ('storage', "
                           "torch.FloatStorage, torch.FloatStorage, '0', 'cpu', 1)")

    def test_expanded_tensor(self):
        self.assertRefused(self._view((1 << 40,), (0,), 1),
                           "has more elements than its storage (1)")
        self.assertRefused(self._view((0, 1 << 62), (1, 1), 1), "impossible size")

    def test_tensors_view_their_storage(self):
        # Tensors over one storage share its bytes, so a file cannot multiply them.
        state = load_state_dict(self._view((2, 3), (3, 1), 6, names=("a", "b")))
        a, b = state["a"].array, state["b"].array
        self.assertEqual((a.shape, b.shape), ((2, 3), (2, 3)))
        self.assertTrue(np.shares_memory(a, b))
        self.assertFalse(a.flags.writeable)

    def _patch_entry(self, path, name, offset, fmt, *values):
        """Overwrites a field of `name`'s central directory entry."""
        with open(path, "r+b") as f:
            data = bytearray(f.read())
            entry = data.find(b"PK\x01\x02")
            while data[entry + 46:entry + 46 + struct.unpack_from("<H", data, entry + 28)[0]] \
                    != name.encode():
                entry = data.find(b"PK\x01\x02", entry + 4)
            struct.pack_into(fmt, data, entry + offset, *values)
            f.seek(0)
            f.write(data)

    def _archive(self, name="archive/data.pkl", **info):
        path = self._path()
        data_pkl, _ = torch_zip.state_dict_pickle({})
        with zipfile.ZipFile(path, "w") as z:
            entry = zipfile.ZipInfo(name)
            for key, value in info.items():
                setattr(entry, key, value)
            z.writestr(entry, data_pkl)
        return path

    def test_unsupported_members(self):
        # bzip2 and LZMA members expand fully before zipfile cuts them to their stated size.
        self.assertRefused(self._archive(compress_type=zipfile.ZIP_BZIP2), "compression method 12")
        path = self._archive()
        self._patch_entry(path, "archive/data.pkl", 8, "<H", 0x1)   # the flags
        self.assertRefused(path, "is encrypted")

    def test_undecodable_member_name(self):
        path = self._archive("archive/d\u00e4ta/data.pkl")
        with open(path, "r+b") as f:
            data = f.read().replace("\u00e4".encode(), b"\xff\xfe")
            f.seek(0)
            f.write(data)
        self.assertRefused(path, "a damaged zip archive (UnicodeDecodeError")

    def test_member_sizes_past_the_end(self):
        # zipfile allocates what the directory claims before reading it.
        path = self._path()
        torch_zip.write_state_dict(path, {"a": np.zeros(4, np.float32)})
        self._patch_entry(path, "archive/data.pkl", 20, "<II", 0x7FFFFFF0, 0x7FFFFFF0)
        self.assertRefused(path, "'archive/data.pkl' claims 2147483632 bytes", "outside the file")


if __name__ == "__main__":
    unittest.main()
