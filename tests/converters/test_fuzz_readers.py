"""Mutation fuzzing of the readers (see fuzz_readers.py): on thousands of damaged and hostile
inputs derived from valid seeds, the torch zip reader, its restricted unpickler, the glow-pytorch
import and the .flow reader return, or raise ConversionError with a one-line message, within a
time and a memory bound; the command line reports those errors as one line and exit code 2.

FLOWRT_PYFUZZ_ITERATIONS sets the number of inputs (default 4000, some 20 s on two cores),
FLOWRT_PYFUZZ_SEED the seed (default 1), FLOWRT_PYFUZZ_INPUT_SECONDS the time bound of one input
(default 10); a longer local run:

    FLOWRT_PYFUZZ_ITERATIONS=200000 python3 -m unittest tests.converters.test_fuzz_readers -v

A failure names its seed and iteration; `python3 -m tests.converters.fuzz_readers --seed S
--first I --count 1 --raise` replays it with its traceback.
"""
import os
import tempfile
import time
import unittest
import warnings

from converters import flow_reader
from converters.errors import ConversionError
from converters.glow_pytorch import convert

from . import fuzz_readers
from .common import FIXTURES, run_cli
from .fuzz_readers import Outcome, bounded_call

ITERATIONS = int(os.environ.get("FLOWRT_PYFUZZ_ITERATIONS", "4000"))
SEED = int(os.environ.get("FLOWRT_PYFUZZ_SEED", "1"))


def _cli_args(cfg):
    """Command-line flags of a GlowConfig (a 1x16x16 two-level model when there is none)."""
    if cfg is None:
        return ["--image", "1x16x16", "--levels", "2", "--depth", "2"]
    args = ["--image", f"{cfg.channels}x{cfg.height}x{cfg.width}", "--levels", str(cfg.levels),
            "--depth", str(cfg.depth), "--n-bits", str(cfg.n_bits)]
    return args + ["--affine"] * cfg.affine + ["--no-lu"] * (not cfg.lu)


def _cpu():
    try:
        with open("/proc/cpuinfo") as f:
            names = [line.split(":", 1)[1].strip() for line in f if line.startswith("model name")]
        return f"{len(os.sched_getaffinity(0))} of {len(names)} x {names[0]}"
    except (OSError, IndexError):
        return f"{os.cpu_count()} CPUs"


class FuzzReaders(unittest.TestCase):
    @classmethod
    def setUpClass(cls):
        start = time.perf_counter()
        # Generous: the default count takes some 20 s on two cores.
        cls.result = fuzz_readers.run_parallel(SEED, ITERATIONS, timeout=max(600, ITERATIONS))
        cls.seconds = time.perf_counter() - start
        print(f"\nreader fuzzing: {fuzz_readers.summary(cls.result)}\n  {cls.seconds:.1f} s on "
              f"{cls.result['jobs']} processes, {_cpu()}", flush=True)

    def test_only_one_line_conversion_errors(self):
        r = self.result
        self.assertEqual(r["failed"], 0, fuzz_readers.summary(r))
        self.assertEqual(r["seeds_changed"], [], "an input changed how later files read")
        ran = {t: sum(s.values()) for t, s in r["stats"].items()}
        self.assertEqual(sum(ran.values()), ITERATIONS)
        if ITERATIONS >= 1000:
            # Every target ran, and mutations get past the first check as well as fail it.
            for target, n in ran.items():
                self.assertGreater(n, ITERATIONS // 50, target)
            for outcome in (Outcome.ACCEPTED, Outcome.REJECTED):
                self.assertGreater(sum(s[outcome] for s in r["stats"].values()),
                                   ITERATIONS // 20, outcome)

    def test_fixtures_are_seeds(self):
        if not self.result.get("fixtures_present"):
            self.skipTest(f"no glow-pytorch fixtures under {FIXTURES}: fuzzed generated seeds only")
        self.assertIn("affine_lu_c1_16", self.result["seeds"])
        self.assertIn("additive_dense_c3_16", self.result["seeds"])

    def test_command_line_prints_the_same_one_line_error(self):
        seeds = fuzz_readers.Seeds()
        checked = 0
        for target, iterations in self.result["examples"].items():
            for i in iterations[:2]:
                inp = fuzz_readers.make_input(seeds, SEED, i)
                with self.subTest(target=target, iteration=i), \
                        tempfile.TemporaryDirectory() as tmp:
                    path = os.path.join(tmp, "input.flow" if target == "flow" else "input.pt")
                    out = os.path.join(tmp, "out.flow")
                    with open(path, "wb") as f:
                        f.write(inp.data)
                    with self.assertRaises(ConversionError) as cm, warnings.catch_warnings():
                        warnings.simplefilter("ignore", DeprecationWarning)
                        if target == "flow":
                            flow_reader.read(path)
                        else:
                            convert(path, inp.config or fuzz_readers.GlowConfig(1, 16, 16, 2, 2))
                    if target == "flow":
                        proc = run_cli("inspect", path)
                    else:
                        proc = run_cli("glow-pytorch", path, *_cli_args(inp.config), "-o", out)
                    self.assertEqual(proc.returncode, 2, proc.stderr)
                    self.assertEqual(proc.stderr, f"error: {cm.exception}\n")
                    self.assertEqual(proc.stdout, "")
                    self.assertFalse(os.path.exists(out))
                    checked += 1
        if ITERATIONS >= 1000:
            self.assertGreaterEqual(checked, 2 * len(fuzz_readers.TARGETS))


class TheBoundsCatch(unittest.TestCase):
    """What the fuzzing reports as a failure, shown on readers that misbehave on purpose."""

    def test_other_exceptions(self):
        for fn in (lambda: [][1], lambda: {}["k"], lambda: b"".decode("utf-8") + b"\xff".decode(),
                   lambda: int("x"), lambda: __import__("struct").unpack("<I", b"")):
            outcome, detail = bounded_call(fn)
            self.assertEqual(outcome, Outcome.FAILED, detail)

    def test_messages(self):
        def raising(message):
            def fn():
                raise ConversionError(message)
            return fn
        self.assertEqual(bounded_call(raising("m.pt: damaged")),
                         (Outcome.REJECTED, "m.pt: damaged"))
        for bad in ("", "two\nlines", "x" * 1000, "m.pt: damaged (MemoryError: )",
                    "m.pt: unknown persistent id <_Storage object at 0x7f3e5c0b2d10>"):
            self.assertEqual(bounded_call(raising(bad))[0], Outcome.FAILED, bad)

    def test_time(self):
        def spin():
            while True:
                pass
        start = time.perf_counter()
        outcome, detail = bounded_call(spin, seconds=0.2)
        self.assertEqual(outcome, Outcome.FAILED)
        self.assertIn("InputTimeout", detail)
        self.assertLess(time.perf_counter() - start, 5)

    def test_memory(self):
        outcome, detail = bounded_call(lambda: bytearray(4 << 30))
        self.assertEqual(outcome, Outcome.FAILED)
        self.assertIn("MemoryError", detail)
        bytearray(8 << 20)   # the bound is lifted again

    def test_warnings(self):
        outcome, detail = bounded_call(lambda: warnings.warn("overflow", RuntimeWarning))
        self.assertEqual(outcome, Outcome.FAILED)
        self.assertIn("RuntimeWarning", detail)

    def test_a_crash_names_its_iteration_and_the_rest_still_runs(self):
        r = fuzz_readers.run_parallel(SEED, 60, jobs=1, timeout=300, die_at=17)
        self.assertEqual(r["failed"], 1, fuzz_readers.summary(r))
        self.assertEqual(r["failures"][0]["iteration"], "17")
        self.assertIn("signal", r["failures"][0]["failure"])
        self.assertEqual(sum(sum(s.values()) for s in r["stats"].values()), 60)

    def test_inputs_depend_only_on_seed_and_iteration(self):
        seeds = fuzz_readers.Seeds()
        a = [fuzz_readers.make_input(seeds, SEED, i) for i in (0, 1, 977)]
        time.sleep(1.1)   # nothing in a seed may depend on the time (zip timestamps)
        b_seeds = fuzz_readers.Seeds()
        b = [fuzz_readers.make_input(b_seeds, SEED, i) for i in (977, 1, 0)][::-1]
        self.assertEqual([s.data for s in seeds.checkpoints + seeds.flows],
                         [s.data for s in b_seeds.checkpoints + b_seeds.flows])
        self.assertEqual([x.data for x in a], [x.data for x in b])
        self.assertEqual([x.mutations for x in a], [x.mutations for x in b])
        self.assertEqual(len({x.data for x in a}), 3)


if __name__ == "__main__":
    unittest.main()
