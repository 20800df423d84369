"""flowrt converters: import other frameworks' checkpoints into .flow files, inspect them,
evaluate them in float64 NumPy, and export them to ONNX.

Run as ``python3 -m converters --help`` from the repository root.
"""
