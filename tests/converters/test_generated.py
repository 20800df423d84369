"""The checked-in FlatBuffers Python code is what flatc generates from schema/flow.fbs."""
import filecmp
import os
import shutil
import subprocess
import tempfile
import unittest

from .common import REPO

GENERATED = os.path.join(REPO, "converters", "_generated")
SCHEMA = os.path.join(REPO, "schema", "flow.fbs")


def _files(root):
    return sorted(os.path.relpath(os.path.join(d, f), root)
                  for d, _, files in os.walk(root) for f in files
                  if f.endswith(".py") and "__pycache__" not in d)


class GeneratedCodeTest(unittest.TestCase):
    def test_matches_flatc(self):
        flatc = shutil.which("flatc")
        if flatc is None:
            raise unittest.SkipTest("flatc is not installed (apt package flatbuffers-compiler)")
        with tempfile.TemporaryDirectory() as tmp:
            subprocess.run([flatc, "--python", "-o", tmp, SCHEMA], check=True)
            self.assertEqual(_files(tmp), _files(GENERATED),
                             "regenerate: flatc --python -o converters/_generated schema/flow.fbs")
            for rel in _files(tmp):
                self.assertTrue(filecmp.cmp(os.path.join(tmp, rel), os.path.join(GENERATED, rel),
                                            shallow=False),
                                f"{rel} differs from flatc's output; regenerate with "
                                "flatc --python -o converters/_generated schema/flow.fbs")


if __name__ == "__main__":
    unittest.main()
