"""Tests of the converters (python3 -m unittest discover -s tests/converters -t .)."""
