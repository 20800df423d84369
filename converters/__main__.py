"""Command line of the converters.

    python3 -m converters glow-pytorch CKPT.pt --image 3x32x32 --levels L --depth K
                          [--affine] [--no-lu] [--n-bits N] -o M.flow
    python3 -m converters onnx M.flow --direction decode|encode [--batch N|dynamic] -o M.onnx
    python3 -m converters inspect M.flow

Exit codes: 0 success, 2 bad input or usage (one line on stderr, no traceback).
"""
import argparse
import re
import sys

from .errors import ConversionError

EXIT_BAD_INPUT = 2


def _image(text):
    m = re.fullmatch(r"(\d+)x(\d+)x(\d+)", text)
    if not m or any(int(v) < 1 for v in m.groups()):
        raise argparse.ArgumentTypeError(f"expected CxHxW with positive sizes, got {text!r}")
    return tuple(int(v) for v in m.groups())


def _batch(text):
    if text == "dynamic":
        return text
    if text.isdigit() and int(text) >= 1:
        return int(text)
    raise argparse.ArgumentTypeError(f"expected a positive integer or 'dynamic', got {text!r}")


def _parser():
    p = argparse.ArgumentParser(prog="python3 -m converters",
                                description="flowrt converters: checkpoints -> .flow -> ONNX")
    sub = p.add_subparsers(dest="command", required=True)

    g = sub.add_parser("glow-pytorch", help="import a rosinality/glow-pytorch state_dict checkpoint")
    g.add_argument("checkpoint")
    g.add_argument("--image", type=_image, required=True, help="CxHxW the model was trained on")
    g.add_argument("--levels", type=int, required=True, help="n_block")
    g.add_argument("--depth", type=int, required=True, help="n_flow (flow steps per block)")
    g.add_argument("--affine", action="store_true", help="affine couplings (default additive)")
    g.add_argument("--no-lu", action="store_true",
                   help="dense 1x1 convs (InvConv2d) in every block but the last")
    g.add_argument("--n-bits", type=int, default=8)
    g.add_argument("-o", "--output", required=True)

    o = sub.add_parser("onnx", help="export a .flow model to ONNX")
    o.add_argument("model")
    o.add_argument("--direction", choices=("decode", "encode"), required=True)
    o.add_argument("--batch", type=_batch, default="dynamic")
    o.add_argument("-o", "--output", required=True)

    i = sub.add_parser("inspect", help="print a .flow model's layers, shapes and parameters")
    i.add_argument("model")
    return p


def _run(args):
    if args.command == "glow-pytorch":
        from . import flow_writer
        from .glow_pytorch import GlowConfig, convert
        c, h, w = args.image
        if args.levels < 1 or args.depth < 1:
            raise ConversionError("--levels and --depth must be at least 1")
        cfg = GlowConfig(c, h, w, args.levels, args.depth, args.affine, not args.no_lu,
                         args.n_bits)
        flow_writer.write(convert(args.checkpoint, cfg), args.output)
    elif args.command == "onnx":
        from . import flow_reader
        from .onnx_export import export_to_file
        export_to_file(flow_reader.read(args.model), args.direction, args.batch, args.output)
    else:
        from . import flow_reader
        from .inspect_flow import summary
        print(summary(flow_reader.read(args.model)))


def main(argv=None):
    args = _parser().parse_args(argv)
    try:
        _run(args)
    except ConversionError as e:
        print(f"error: {e}", file=sys.stderr)
        return EXIT_BAD_INPUT
    except OSError as e:
        print(f"error: {e.filename or ''}: {e.strerror}", file=sys.stderr)
        return EXIT_BAD_INPUT
    return 0


if __name__ == "__main__":
    sys.exit(main())
