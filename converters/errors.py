"""The one exception type the converters raise for bad input, and how its messages show what
came from the file.

The command line turns it into a one-line message and exit code 2; anything else escaping is a
bug in the converters, not in the user's file.
"""
import reprlib


class ConversionError(Exception):
    """Input that cannot be converted: a refused or damaged checkpoint, a malformed .flow file,
    architecture flags that contradict the tensors."""


_short = reprlib.Repr()
_short.maxstring = _short.maxother = 60
_short.maxlevel = 3


def shown(value) -> str:
    """A value read from a file, for a message: its repr (so newlines are escaped), at most some
    60 characters and 3 levels of nesting (so a deeply nested one cannot exhaust the stack)."""
    return _short.repr(value)


def one_line(text, limit: int = 160) -> str:
    """Text from elsewhere (another exception's message), for a message: one line, bounded."""
    text = " ".join(str(text).split())
    return text if len(text) <= limit else text[:limit - 3] + "..."


def layer_label(index: int, name: str) -> str:
    """'layer 3 (block0/flow1/actnorm)', the name quoted when it is long or unprintable."""
    if not name:
        return f"layer {index} (unnamed)"
    return f"layer {index} ({name if name.isprintable() and len(name) <= 80 else shown(name)})"
