"""The one exception type the converters raise for bad input.

The command line turns it into a one-line message and exit code 2; anything else escaping is a
bug in the converters, not in the user's file.
"""


class ConversionError(Exception):
    """Input that cannot be converted: a refused or damaged checkpoint, a malformed .flow file,
    architecture flags that contradict the tensors."""
