"""Mutation fuzzing of the converters' readers: the torch zip container and the restricted
unpickler (converters.pickle_reader), the glow-pytorch import of what they accept, and the .flow
reader (converters.flow_reader) with the `inspect` summary of what it accepts.

Every input is a valid seed changed by a few mutations drawn from random.Random(f"{seed}/{i}"),
so iteration i of a seed is the same input whatever the count or the split across processes.
An input passes when the reader returns, or raises ConversionError with a short one-line
message (a checkpoint error naming the file, no object shown by its address). Anything else
fails it: another exception type, a warning, a message over several lines, more than the time
bound, a MemoryError under the address-space bound (the readers check sizes before allocating,
so no input here comes near it), or the interpreter dying. Workers run as separate processes,
so a crash names the iteration that caused it.

    # one worker, iterations [0, 2000) of seed 1
    python3 -m tests.converters.fuzz_readers --seed 1 --first 0 --count 2000
    # the whole run split across the CPUs, as the test does
    python3 -m tests.converters.fuzz_readers --seed 1 --count 200000 --jobs 0
    # replay one iteration with the exception's traceback
    python3 -m tests.converters.fuzz_readers --seed 1 --first 1234 --count 1 --raise
"""
import argparse
import io
import json
import os
import pickletools
import random
import re
import resource
import signal
import struct
import subprocess
import sys
import tempfile
import time
import traceback
import warnings
import zipfile
from dataclasses import dataclass, field
from typing import List, Optional

from .common import FIXTURES, REPO, fixtures  # first: puts the repository on sys.path

import numpy as np  # noqa: E402

from converters import flow_reader, flow_writer  # noqa: E402
from converters.errors import ConversionError  # noqa: E402
from converters.glow_pytorch import GlowConfig, build_model  # noqa: E402
from converters.inspect_flow import summary as summary_of_model  # noqa: E402
from converters.pickle_reader import load_state_dict  # noqa: E402

from . import torch_zip  # noqa: E402
from .random_models import (FAMILY_VARIANTS, VARIANTS, random_family_model,  # noqa: E402
                            random_model)

CORPUS = os.path.join(REPO, "tests", "fuzz", "corpus")
INPUT_SECONDS = float(os.environ.get("FLOWRT_PYFUZZ_INPUT_SECONDS", "10"))
# Room for the largest legitimate need of one input (a few MB) many times over, far below the
# gigabytes a length field taken on trust would ask for.
MEMORY_HEADROOM = 1 << 30
MAX_MESSAGE = 512
TARGETS = ("zip", "pickle", "names", "flow")
_TARGET_WEIGHTS = (30, 40, 5, 25)


# ---- seeds -------------------------------------------------------------------------------------

@dataclass
class CheckpointSeed:
    name: str
    data: bytes                          # the zip file
    members: list                        # [(name, bytes)] in archive order
    prefix: str                          # "<prefix>/data.pkl"
    pickle: bytes
    ops: list                            # [(position, opcode byte)] of the pickle
    fields: list                         # [(offset, width, kind)] of the zip's header fields
    config: Optional[GlowConfig] = None  # set for fixtures: accepted inputs are also imported


@dataclass
class FlowSeed:
    name: str
    data: bytes


def _zip_fields(data: bytes):
    """The flag, method, length and offset fields of every record of a valid zip."""
    with zipfile.ZipFile(io.BytesIO(data)) as z:
        infos = z.infolist()
        at = z.start_dir
    fields = []
    for info in infos:
        o = info.header_offset
        fields += [(o + 6, 2, "flags"), (o + 8, 2, "method"), (o + 18, 4, "len"),
                   (o + 22, 4, "len"), (o + 26, 2, "len"), (o + 28, 2, "len")]
    for _ in infos:
        n, m, k = struct.unpack_from("<HHH", data, at + 28)
        fields += [(at + 8, 2, "flags"), (at + 10, 2, "method"), (at + 20, 4, "len"),
                   (at + 24, 4, "len"), (at + 28, 2, "len"), (at + 30, 2, "len"),
                   (at + 32, 2, "len"), (at + 34, 2, "len"), (at + 42, 4, "len")]
        at += 46 + n + m + k
    end = data.rfind(b"PK\x05\x06")
    fields += [(end + 8, 2, "len"), (end + 10, 2, "len"), (end + 12, 4, "len"),
               (end + 16, 4, "len"), (end + 20, 2, "len")]
    return fields


def _checkpoint_seed(name, data, config=None):
    with zipfile.ZipFile(io.BytesIO(data)) as z:
        members = [(info.filename, z.read(info)) for info in z.infolist()]
    pkl_name = next(n for n, _ in members if n.endswith("/data.pkl"))
    pkl = dict(members)[pkl_name]
    ops = [(pos, pkl[pos:pos + 1]) for _, _, pos in pickletools.genops(pkl)]
    return CheckpointSeed(name, data, members, pkl_name[:-len("/data.pkl")], pkl, ops,
                          _zip_fields(data), config)


def _small_checkpoint() -> bytes:
    tensors = {"w": np.arange(6, dtype=np.float32).reshape(2, 3),
               "b": np.linspace(-1.0, 1.0, 3), "step": np.array(7, np.int64),
               "flag": np.array(1, np.uint8), "index": np.arange(4, dtype=np.int32)}
    out = io.BytesIO()
    torch_zip.write_state_dict(out, tensors)
    with zipfile.ZipFile(out) as z:
        members = [(info.filename, z.read(info)) for info in z.infolist()]
    return pack(members)   # zipfile stamps entries with the time; pack does not


class Seeds:
    """The valid inputs mutations start from: a small generated checkpoint and the glow-pytorch
    fixtures (when present), the corpus' valid .flow files and five generated models (two Glow,
    two with the format 1.1 layers, one with format 1.2's residual connections)."""

    def __init__(self):
        self.checkpoints = [_checkpoint_seed("generated.pt", _small_checkpoint())]
        self.fixtures_present = os.path.isdir(FIXTURES)
        if self.fixtures_present:
            for fx in fixtures():
                with open(fx.checkpoint, "rb") as f:
                    self.checkpoints.append(_checkpoint_seed(fx.name, f.read(), fx.glow_config()))
        self.flows = []
        if os.path.isdir(CORPUS):
            for name in sorted(os.listdir(CORPUS)):
                if name.startswith("valid_"):
                    with open(os.path.join(CORPUS, name), "rb") as f:
                        self.flows.append(FlowSeed(name, f.read()))
        for variant in VARIANTS[:2]:
            self.flows.append(FlowSeed(variant.name, flow_writer.to_bytes(random_model(variant))))
        residual = next(v for v in FAMILY_VARIANTS if v.name == "realnvp_residual_edges")
        # Every format 1.1 table, then the residual adds.
        for variant in (FAMILY_VARIANTS[0], FAMILY_VARIANTS[-1], residual):
            self.flows.append(FlowSeed(variant.name, flow_writer.to_bytes(
                random_family_model(variant, image=(1, 4, 4)))))

    def names(self):
        return [s.name for s in self.checkpoints] + [s.name for s in self.flows]


# ---- mutations ---------------------------------------------------------------------------------

_BYTES = (0x00, 0xFF, 0x7F, 0x80)
# The length-prefixed and memo-index opcodes and the width of their argument.
_ARG_WIDTH = {b"X": 4, b"\x8c": 1, b"B": 4, b"C": 1, b"\x8d": 8, b"\x8e": 8, b"\x96": 8,
              b"T": 4, b"U": 1, b"\x8a": 1, b"\x8b": 4, b"q": 1, b"r": 4, b"h": 1, b"j": 4,
              b"J": 4, b"K": 1, b"M": 2, b"\x95": 8}
_OPCODES = [op.code.encode("latin-1") for op in pickletools.opcodes]


def _wide(rng, width, original, size):
    """An interesting value for a `width`-byte field: extremes, off by one, inflated."""
    top = (1 << (8 * width)) - 1
    return rng.choice((top, top >> 1, (top >> 1) + 1, 0, 1, original + 1, 2 * original + 1,
                       original + 0x10000, size, size + 1, 1 << (4 * width))) & top


def _put(data, at, width, value):
    data[at:at + width] = value.to_bytes(width, "little")


def m_flip(rng, data, ctx):
    i = rng.randrange(len(data))
    bit = rng.randrange(8)
    data[i] ^= 1 << bit
    return f"flip bit {bit} of byte {i}"


def m_byte(rng, data, ctx):
    i = rng.randrange(len(data))
    data[i] = rng.choice(_BYTES)
    return f"byte {i} = {data[i]:#x}"


def m_word(rng, data, ctx):
    width = rng.choice((2, 4, 8))
    if len(data) < width:
        return m_byte(rng, data, ctx)
    if ctx.get("aligned"):   # FlatBuffers offsets and lengths are aligned
        i = rng.randrange(len(data) // width) * width
    else:
        i = rng.randrange(len(data) - width + 1)
    value = _wide(rng, width, int.from_bytes(data[i:i + width], "little"), len(data))
    _put(data, i, width, value)
    return f"{width} bytes at {i} = {value:#x}"


def m_truncate(rng, data, ctx):
    n = len(data)
    cut = rng.choice((rng.randrange(n), n - rng.randint(1, min(64, n)), rng.randrange(min(n, 64))))
    del data[cut:]
    return f"truncate to {cut}"


def _chunk(rng, data):
    i = rng.randrange(len(data))
    n = rng.choice((1, 2, 4, 8, rng.randint(1, 64), rng.randint(1, max(1, len(data) // 4))))
    return i, min(n, len(data) - i)


def m_delete(rng, data, ctx):
    i, n = _chunk(rng, data)
    del data[i:i + n]
    return f"delete {n} bytes at {i}"


def m_duplicate(rng, data, ctx):
    i, n = _chunk(rng, data)
    j = rng.randrange(len(data) + 1)
    data[j:j] = data[i:i + n]
    return f"copy {n} bytes from {i} to {j}"


def m_zip_field(rng, data, ctx):
    at, width, kind = rng.choice(ctx["fields"])
    if at + width > len(data):
        return m_word(rng, data, ctx)
    original = int.from_bytes(data[at:at + width], "little")
    if kind == "flags":   # encrypted, data descriptor, patched data, UTF-8 names
        value = original ^ rng.choice((0x1, 0x8, 0x20, 0x40, 0x800))
    elif kind == "method":
        value = rng.choice((1, 8, 9, 12, 14, 99, 0xFFFF))
    else:
        value = _wide(rng, width, original, len(data))
    _put(data, at, width, value)
    return f"zip {kind} field at {at} = {value:#x}"


_GENERIC = (m_flip, m_byte, m_word, m_truncate, m_delete, m_duplicate)


def _op_bounds(rng, data, ctx):
    """A position where an opcode of the seed pickle starts (or the end), for insertions."""
    ops = ctx["ops"]
    positions = [p for p, _ in ops if p <= len(data)]
    return rng.choice(positions) if positions else 0


def m_pickle_arg(rng, data, ctx):
    """Sets the length or memo index of an opcode of the seed to an extreme value."""
    candidates = [(p, c) for p, c in ctx["ops"] if c in _ARG_WIDTH
                  and p + 1 + _ARG_WIDTH[c] <= len(data) and data[p:p + 1] == c]
    if not candidates:
        return m_pickle_insert(rng, data, ctx)
    p, c = rng.choice(candidates)
    width = _ARG_WIDTH[c]
    value = _wide(rng, width, int.from_bytes(data[p + 1:p + 1 + width], "little"), len(data))
    _put(data, p + 1, width, value)
    return f"pickle {pickletools.code2op[c.decode('latin-1')].name} at {p}: argument {value:#x}"


def m_pickle_insert(rng, data, ctx):
    """Inserts an opcode whose length or memo index is extreme (BINBYTES of 4 GB, a memo write
    at index 2**31, a FRAME of 2**64 - 1 bytes...)."""
    code = rng.choice(list(_ARG_WIDTH))
    width = _ARG_WIDTH[code]
    value = _wide(rng, width, 0, len(data))
    at = _op_bounds(rng, data, ctx)
    data[at:at] = code + value.to_bytes(width, "little")
    return f"insert {pickletools.code2op[code.decode('latin-1')].name} {value:#x} at {at}"


def m_pickle_opcode(rng, data, ctx):
    p, _ = rng.choice(ctx["ops"])
    if p >= len(data):
        return m_flip(rng, data, ctx)
    code = rng.choice(_OPCODES)
    data[p:p + 1] = code
    return f"opcode at {p} = {pickletools.code2op[code.decode('latin-1')].name}"


def _op_span(rng, data, ctx):
    ops = ctx["ops"]
    k = rng.randrange(len(ops))
    start = ops[k][0]
    end = ops[k + 1][0] if k + 1 < len(ops) else len(data)
    return start, max(start, min(end, len(data)))


def m_pickle_drop_op(rng, data, ctx):
    start, end = _op_span(rng, data, ctx)
    del data[start:end]
    return f"drop the opcode at {start}"


def m_pickle_repeat_op(rng, data, ctx):
    start, end = _op_span(rng, data, ctx)
    data[start:start] = data[start:end] * rng.choice((1, 2, 100))
    return f"repeat the opcode at {start}"


def _nested(rng, depth):
    """Pickle opcodes that push one object nested `depth` levels deep."""
    kind = rng.choice(("tuple", "list", "marks", "frozenset", "dict"))
    if kind == "tuple":
        return kind, b")" + b"\x85" * depth
    if kind == "list":
        return kind, b"]" * depth + b"a" * (depth - 1)
    if kind == "marks":
        return kind, b"(" * depth + b"t" * depth
    if kind == "frozenset":
        return kind, b"(" * depth + b"\x91" * depth
    return kind, b"(K\x01" * depth + b"}" + b"d" * depth


def m_pickle_bomb(rng, data, ctx):
    """Deeply nested containers: pushed and dropped, in place of a string of the seed (a key, a
    storage key), or as a whole pickle whose dict key, value or result they are."""
    depth = rng.choice((50, 1000, 30000, 200000))
    kind, nested = _nested(rng, depth)
    where = rng.randrange(3)
    strings = [(p, c) for p, c in ctx["ops"] if c == b"X" and p + 5 <= len(data)
               and data[p:p + 1] == c]
    if where == 0 or not strings:
        at = _op_bounds(rng, data, ctx)
        data[at:at] = nested + b"0"
        return f"push and pop a {kind} {depth} deep at {at}"
    if where == 1:
        p, _ = rng.choice(strings)
        n = struct.unpack_from("<I", data, p + 1)[0]
        data[p:p + 5 + n] = nested
        return f"a {kind} {depth} deep in place of the string at {p}"
    form = rng.randrange(3)
    body = (b"}" + nested + b"K\x01s", b"}X\x01\x00\x00\x00k" + nested + b"s", nested)[form]
    data[:] = b"\x80\x02" + body + b"."
    return f"a {kind} {depth} deep as the pickle's {('dict key', 'dict value', 'result')[form]}"


_PICKLE = (m_pickle_arg, m_pickle_insert, m_pickle_opcode, m_pickle_drop_op, m_pickle_repeat_op)


def _odd_name(rng, name, prefix):
    rest = name[len(prefix):]
    return rng.choice((
        "../" + name, ".." + rest, "/" + name, prefix + "/.." + rest, prefix + "/./" + rest[1:],
        prefix + "\\" + rest[1:], "\u00e4" + name, prefix[:1] * 300 + rest, name + "/",
        name.replace("data", "d\u0000ta"), ""))


def mutate_members(rng, seed: CheckpointSeed, members: list):
    """Changes the archive's entries: odd names ('..', absolute, backslashes, NUL, very long),
    duplicates, drops, a second data.pkl, and damaged byteorder or storage contents."""
    k = rng.randrange(len(members))
    name, content = members[k]
    choice = rng.randrange(7)
    if choice == 0:
        members[k] = (_odd_name(rng, name, seed.prefix), content)
        return f"rename {name!r} to {members[k][0]!r}"
    if choice == 1:
        new = rng.choice(("..", "/", "", ".", "a/b", "x" * 200))
        members[:] = [(new + n[len(seed.prefix):], c) for n, c in members]
        return f"prefix {seed.prefix!r} -> {new!r}"
    if choice == 2:
        members.insert(rng.randrange(len(members) + 1), members[k])
        return f"duplicate {name!r}"
    if choice == 3:
        del members[k]
        return f"drop {name!r}"
    if choice == 4:
        members.append(("other/data.pkl", seed.pickle))
        return "a second data.pkl"
    if choice == 5:
        value = rng.choice((b"big", b"little\n", b"lit\ntle", b"\xff\xfe", b"", b"x" * 5000))
        members[:] = [(n, value if n.endswith("/byteorder") else c) for n, c in members]
        return f"byteorder {value[:16]!r}"
    data = bytearray(content)
    if data:
        what = rng.choice(_GENERIC)(rng, data, {})
    else:
        data += b"\x00"
        what = "one byte"
    members[k] = (name, bytes(data))
    return f"{name!r} content: {what}"


def pack(members) -> bytes:
    """A stored zip of (name, bytes), the same bytes every time."""
    out = io.BytesIO()
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")   # duplicate names are meant
        with zipfile.ZipFile(out, "w", zipfile.ZIP_STORED) as z:
            for name, content in members:
                z.writestr(zipfile.ZipInfo(name or "-"), content)
    return out.getvalue()


@dataclass
class Input:
    target: str
    seed_name: str
    data: bytes
    mutations: List[str] = field(default_factory=list)
    config: Optional[GlowConfig] = None


def _steps(rng):
    return 1 + (rng.random() < 0.5) + (rng.random() < 0.25) + (rng.random() < 0.125)


def make_input(seeds: Seeds, seed: int, iteration: int) -> Input:
    """Iteration `iteration` of `seed`: the same input every time."""
    rng = random.Random(f"{seed}/{iteration}")
    target = rng.choices(TARGETS, _TARGET_WEIGHTS)[0]
    if target == "flow":
        s = rng.choice(seeds.flows)
        data = bytearray(s.data)
        ctx = {"aligned": True}
        steps = [rng.choice(_GENERIC + (m_word, m_word))(rng, data, ctx) if data else "empty"
                 for _ in range(_steps(rng))]
        return Input(target, s.name, bytes(data), steps)
    s = rng.choice(seeds.checkpoints)
    if target == "zip":
        data = bytearray(s.data)
        ctx = {"fields": s.fields}
        steps = [rng.choice(_GENERIC + (m_zip_field,) * 3)(rng, data, ctx) if data else "empty"
                 for _ in range(_steps(rng))]
        return Input(target, s.name, bytes(data), steps, s.config)
    members = list(s.members)
    steps = []
    if target == "names":
        steps = [mutate_members(rng, s, members) for _ in range(_steps(rng))]
    else:
        pkl = bytearray(s.pickle)
        ctx = {"ops": s.ops}
        for _ in range(_steps(rng)):
            if not pkl:
                break
            r = rng.random()
            if r < 0.03:
                steps.append(m_pickle_bomb(rng, pkl, ctx))
            elif r < 0.6:
                steps.append(rng.choice(_PICKLE)(rng, pkl, ctx))
            else:
                steps.append(rng.choice(_GENERIC)(rng, pkl, ctx))
        members = [(n, bytes(pkl) if n == s.prefix + "/data.pkl" else c) for n, c in members]
        if rng.random() < 0.1:
            steps.append(mutate_members(rng, s, members))
    return Input(target, s.name, pack(members), steps, s.config)


# ---- running one input under bounds ------------------------------------------------------------

class InputTimeout(BaseException):
    """Raised by the alarm; a BaseException so that no except clause of a reader takes it."""


def _on_alarm(signum, frame):
    raise InputTimeout()


def _address_space():
    with open("/proc/self/statm") as f:
        return int(f.read().split()[0]) * resource.getpagesize()


class Outcome:
    ACCEPTED, REJECTED, FAILED = "accepted", "rejected", "failed"


def bounded_call(fn, seconds=INPUT_SECONDS, headroom=MEMORY_HEADROOM):
    """(Outcome, message or failure) of fn() under a time and an address-space bound; warnings
    are errors. ConversionError is a rejection, provided its message is short and one line."""
    old_handler = signal.signal(signal.SIGALRM, _on_alarm)
    soft, hard = resource.getrlimit(resource.RLIMIT_AS)
    limit = _address_space() + headroom
    if hard != resource.RLIM_INFINITY:
        limit = min(limit, hard)
    start = time.perf_counter()
    try:
        resource.setrlimit(resource.RLIMIT_AS, (limit, hard))
        signal.setitimer(signal.ITIMER_REAL, seconds)
        with warnings.catch_warnings():
            # What Python shows by default is an error; it hides these categories outside
            # __main__ (pickle's invalid-escape DeprecationWarning among them).
            warnings.simplefilter("error")
            for hidden in (DeprecationWarning, PendingDeprecationWarning, ImportWarning,
                           ResourceWarning):
                warnings.simplefilter("ignore", hidden)
            fn()
        outcome = (Outcome.ACCEPTED, None)
    except InputTimeout:
        outcome = (Outcome.FAILED, f"InputTimeout: still running after {seconds:g} s")
    except ConversionError as e:
        message = str(e)
        if not message or "\n" in message or "\r" in message or len(message) > MAX_MESSAGE:
            outcome = (Outcome.FAILED, f"ConversionError with a bad message: {message[:300]!r}")
        elif "MemoryError" in message:
            outcome = (Outcome.FAILED, f"ConversionError from a MemoryError: {message[:300]}")
        elif re.search(r"\bat 0x[0-9a-f]+", message):   # a default repr means nothing to a user
            outcome = (Outcome.FAILED, f"ConversionError showing an address: {message[:300]}")
        else:
            outcome = (Outcome.REJECTED, message)
    except BaseException as e:   # noqa: B902 - everything else is what the fuzzing looks for
        if isinstance(e, KeyboardInterrupt):
            raise
        frame = traceback.extract_tb(e.__traceback__)[-1]
        where = f"{os.path.relpath(frame.filename, REPO)}:{frame.lineno} in {frame.name}"
        outcome = (Outcome.FAILED, f"{type(e).__name__}: {str(e)[:200]} [{where}]")
    finally:
        signal.setitimer(signal.ITIMER_REAL, 0)
        resource.setrlimit(resource.RLIMIT_AS, (soft, hard))
        signal.signal(signal.SIGALRM, old_handler)
    elapsed = time.perf_counter() - start
    if outcome[0] != Outcome.FAILED and elapsed > seconds:   # stuck where signals wait
        outcome = (Outcome.FAILED, f"InputTimeout: took {elapsed:.1f} s, over {seconds:g} s")
    return outcome


def failure_kind(detail: str) -> str:
    """What a failure is, without the input's particulars: its type and where it came from."""
    head = detail.split(":", 1)[0]
    if detail.endswith("]") and " [" in detail:
        return f"{head} [{detail.rsplit(' [', 1)[1]}"
    return head if head != "AssertionError" else detail.split(":", 2)[1].strip()


def reader_call(inp: Input, path: str):
    """The reader call an input exercises, on `path` holding its bytes."""
    if inp.target == "flow":   # what `inspect` does
        return lambda: summary_of_model(flow_reader.from_bytes(inp.data))

    def checkpoint():
        try:
            state = load_state_dict(path)
        except ConversionError as e:
            if path not in str(e):
                raise AssertionError(f"the message does not name the file: {e}") from None
            raise
        if inp.config is not None:
            build_model(state, inp.config, os.path.basename(path))
    return checkpoint


def _fingerprint(value):
    if isinstance(value, dict):
        return [(k, v.torch_dtype, v.shape, v.array.tobytes()) for k, v in value.items()]
    return flow_writer.to_bytes(value)


# ---- worker ------------------------------------------------------------------------------------

def _empty_result(seed):
    return {"seed": seed, "stats": {t: {Outcome.ACCEPTED: 0, Outcome.REJECTED: 0,
                                         Outcome.FAILED: 0} for t in TARGETS},
            "kinds": {}, "failures": [], "examples": {t: [] for t in TARGETS},
            "seeds_changed": [], "slowest": {"seconds": 0.0, "iteration": None}}


def _merge(into, result, max_failures=50):
    for t, s in result["stats"].items():
        for o, n in s.items():
            into["stats"][t][o] += n
    for kind, n in result["kinds"].items():
        into["kinds"][kind] = into["kinds"].get(kind, 0) + n
    into["failures"] = (into["failures"] + result["failures"])[:max_failures]
    for t, its in result["examples"].items():
        into["examples"][t] = (into["examples"][t] + its)[:3]
    into["seeds_changed"] = sorted(set(into["seeds_changed"]) | set(result["seeds_changed"]))
    if result["slowest"]["seconds"] > into["slowest"]["seconds"]:
        into["slowest"] = result["slowest"]
    for key in ("seeds", "fixtures_present"):
        if key in result:
            into[key] = result[key]


def _record_failure(result, seed, i, inp, detail, max_failures=50):
    kind = failure_kind(detail)
    result["kinds"][kind] = result["kinds"].get(kind, 0) + 1
    if len(result["failures"]) < max_failures:
        result["failures"].append({"seed": seed, "iteration": i, "target": inp.target,
                                   "seed_input": inp.seed_name, "mutations": inp.mutations,
                                   "failure": detail})


def _save(result, progress):
    if progress:
        with open(progress + ".tmp", "w") as f:
            json.dump(result, f)
        os.replace(progress + ".tmp", progress + ".json")


def run(seed, first, count, skip=(), progress=None, reraise=False, die_at=None, workdir=None):
    """Runs iterations [first, first + count) of `seed` but `skip`; returns the tallies and the
    failures. With `progress`, keeps the iteration being run in that file and the result so
    far, with the next iteration to run, in PROGRESS.json, for a driver to resume after a
    crash. Files go to a temporary folder in `workdir`."""
    seeds = Seeds()
    result = _empty_result(seed)
    result.update(seeds=seeds.names(), fixtures_present=seeds.fixtures_present, next=first)
    fd = os.open(progress, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o644) if progress else None
    with tempfile.TemporaryDirectory(prefix="flowrt-pyfuzz-", dir=workdir) as tmp:
        seed_paths = []
        for k, s in enumerate(seeds.checkpoints):
            seed_paths.append(os.path.join(tmp, f"seed{k}.pt"))
            with open(seed_paths[-1], "wb") as f:
                f.write(s.data)

        def fingerprints():
            return [_fingerprint(load_state_dict(p)) for p in seed_paths] + \
                [_fingerprint(flow_reader.from_bytes(s.data)) for s in seeds.flows]
        # The seeds read back the same before and after: no input changed the readers' state.
        before = fingerprints()
        path = os.path.join(tmp, "input.pt")
        for i in range(first, first + count):
            if (i - first) % 100 == 0:
                result["next"] = i
                _save(result, progress)
            if i in skip:
                continue
            if fd is not None:
                os.pwrite(fd, f"{i:<20}".encode(), 0)
            if die_at == i:
                os.kill(os.getpid(), signal.SIGSEGV)
            inp = make_input(seeds, seed, i)
            if inp.target != "flow":
                with open(path, "wb") as f:
                    f.write(inp.data)
            call = reader_call(inp, path)
            if reraise:
                call()
                continue
            start = time.perf_counter()
            outcome, detail = bounded_call(call)
            elapsed = time.perf_counter() - start
            if elapsed > result["slowest"]["seconds"]:
                result["slowest"] = {"seconds": round(elapsed, 3), "iteration": i}
            result["stats"][inp.target][outcome] += 1
            if outcome == Outcome.FAILED:
                _record_failure(result, seed, i, inp, detail)
            elif outcome == Outcome.REJECTED and len(result["examples"][inp.target]) < 3:
                result["examples"][inp.target].append(i)
        result["seeds_changed"] = [n for n, b, a in zip(seeds.names(), before, fingerprints())
                                   if a != b]
    result["next"] = first + count
    _save(result, progress)
    if fd is not None:
        os.close(fd)
    return result


# ---- driver ------------------------------------------------------------------------------------

class _Range:
    """A share of the iterations and the worker process running what is left of it."""

    def __init__(self, first, end, progress):
        self.next, self.end, self.progress = first, end, progress
        self.skip, self.proc = [], None

    def spawn(self, seed, env, die_at):
        cmd = [sys.executable, "-X", "faulthandler", "-m", "tests.converters.fuzz_readers",
               "--seed", str(seed), "--first", str(self.next), "--count",
               str(self.end - self.next), "--progress", self.progress,
               "--workdir", os.path.dirname(self.progress), "--json"]
        if self.skip:
            cmd += ["--skip", ",".join(map(str, self.skip))]
        if die_at is not None:
            cmd += ["--die-at", str(die_at)]
        self.proc = subprocess.Popen(cmd, cwd=REPO, env=env, stdout=subprocess.PIPE,
                                     stderr=subprocess.PIPE, text=True)


def _died(seed, at, how, err, seeds_cache):
    """The failure of an iteration that killed its worker, described by regenerating it."""
    description = {"seed": seed, "iteration": at, "target": "?", "seed_input": "?",
                   "mutations": []}
    if at.isdigit():
        if not seeds_cache:
            seeds_cache.append(Seeds())
        inp = make_input(seeds_cache[0], seed, int(at))
        description.update(target=inp.target, seed_input=inp.seed_name, mutations=inp.mutations)
    last = err.strip().splitlines()[:1]
    description["failure"] = f"the worker died ({how}){': ' + last[0] if last else ''}"
    return description


def run_parallel(seed, count, jobs=0, timeout=3600, die_at=None, max_restarts=20):
    """Runs iterations [0, count) in `jobs` worker processes (0: one per CPU) and merges what
    they found. A worker that dies is a failure of the iteration it was on; the rest of its
    share is run by a new worker."""
    jobs = jobs or len(os.sched_getaffinity(0))
    jobs = max(1, min(jobs, count))
    env = dict(os.environ, OPENBLAS_NUM_THREADS="1", OMP_NUM_THREADS="1")
    merged = _empty_result(seed)
    merged.update(count=count, jobs=jobs)
    seeds_cache = []
    deadline = time.monotonic() + timeout
    with tempfile.TemporaryDirectory(prefix="flowrt-pyfuzz-run-") as tmp:
        ranges = [_Range(count * k // jobs, count * (k + 1) // jobs,
                         os.path.join(tmp, f"progress{k}")) for k in range(jobs)]
        for r in ranges:
            r.spawn(seed, env, die_at)
        active, restarts = list(ranges), 0
        while active:
            r = active[0]
            try:
                out, err = r.proc.communicate(timeout=max(0.1, deadline - time.monotonic()))
            except subprocess.TimeoutExpired:
                for other in active:
                    other.proc.kill()
                    other.proc.communicate()
                    with open(other.progress) as f:
                        at = f.read().strip()
                    merged["kinds"]["the run's time limit"] = len(active)
                    merged["failures"].append({"seed": seed, "iteration": at, "target": "?",
                                               "failure": f"past the run's {timeout} s limit"})
                break
            active.pop(0)
            if r.proc.returncode == 0 and out.strip():
                _merge(merged, json.loads(out.splitlines()[-1]))
                continue
            # Keep what the worker saved, then resume after the iteration that killed it.
            if os.path.exists(r.progress + ".json"):
                with open(r.progress + ".json") as f:
                    partial = json.load(f)
                _merge(merged, partial)
                r.next = partial["next"]
            with open(r.progress) as f:
                at = f.read().strip()
            how = f"signal {-r.proc.returncode}" if r.proc.returncode < 0 \
                else f"exit {r.proc.returncode}"
            failure = _died(seed, at, how, err, seeds_cache)
            _merge(merged, dict(_empty_result(seed), failures=[failure],
                                kinds={"the worker died": 1}))
            if failure["target"] in merged["stats"]:
                merged["stats"][failure["target"]][Outcome.FAILED] += 1
            if at.isdigit() and restarts < max_restarts:
                restarts += 1
                r.skip.append(int(at))
                r.spawn(seed, env, die_at)
                active.append(r)
    merged["failed"] = sum(s[Outcome.FAILED] for s in merged["stats"].values()) + \
        merged["kinds"].get("the run's time limit", 0)
    return merged


def summary(result) -> str:
    stats = result["stats"]
    total = {o: sum(s[o] for s in stats.values())
             for o in (Outcome.ACCEPTED, Outcome.REJECTED, Outcome.FAILED)}
    lines = [f"{sum(total.values())} inputs (seed {result['seed']}): {total['accepted']} accepted, "
             f"{total['rejected']} rejected, {total['failed']} failed"]
    lines += [f"  {t}: {s['accepted']} accepted, {s['rejected']} rejected, {s['failed']} failed"
              for t, s in stats.items()]
    if result["slowest"]["iteration"] is not None:
        lines.append(f"  slowest input: {result['slowest']['seconds']} s "
                     f"(iteration {result['slowest']['iteration']})")
    for kind, n in sorted(result["kinds"].items(), key=lambda kv: -kv[1]):
        lines.append(f"  {n:6d} x {kind}")
    for f in result["failures"]:
        lines.append(f"  FAILED seed {f['seed']} iteration {f['iteration']} ({f['target']}, "
                     f"{f.get('seed_input', '?')}: {'; '.join(f.get('mutations', []))}): "
                     f"{f['failure']}")
    if result["seeds_changed"]:
        lines.append(f"  seeds read differently after the run: {result['seeds_changed']}")
    return "\n".join(lines)


def main(argv=None):
    p = argparse.ArgumentParser(prog="python3 -m tests.converters.fuzz_readers",
                                description=__doc__.split("\n\n")[0])
    p.add_argument("--seed", type=int, default=1)
    p.add_argument("--first", type=int, default=0)
    p.add_argument("--count", type=int, default=2000)
    p.add_argument("--skip", default="", help="iterations not to run, comma-separated")
    p.add_argument("--jobs", type=int, help="split [0, count) across processes (0: one per CPU)")
    p.add_argument("--progress", help="file that names the iteration being run")
    p.add_argument("--workdir", help="where the temporary files go")
    p.add_argument("--raise", dest="reraise", action="store_true",
                   help="no bounds, no catching: show the traceback")
    p.add_argument("--die-at", type=int, help=argparse.SUPPRESS)   # checks crash attribution
    p.add_argument("--json", action="store_true", help="print the result as one JSON line")
    args = p.parse_args(argv)
    start = time.perf_counter()
    if args.jobs is not None:
        result = run_parallel(args.seed, args.count, args.jobs, die_at=args.die_at)
    else:
        skip = {int(v) for v in args.skip.split(",") if v}
        result = run(args.seed, args.first, args.count, skip, args.progress, args.reraise,
                     args.die_at, args.workdir)
        result["failed"] = sum(s[Outcome.FAILED] for s in result["stats"].values())
    result["seconds"] = round(time.perf_counter() - start, 1)
    if args.json:   # the driver judges the result
        print(json.dumps(result))
        return 0
    print(summary(result))
    print(f"  {result['seconds']} s")
    return 1 if result["failed"] or result["seeds_changed"] else 0


if __name__ == "__main__":
    sys.exit(main())
