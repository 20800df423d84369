#!/usr/bin/env python3
"""python_sample.py — the flowrt Python module in a few lines: opens a .flow model, samples a
grid of images at temperature 0.7, writes it as a PNG (pure Python: zlib + struct, no PIL), reads
the PNG back, encodes its images and prints their bits/dim.

    python3 examples/python_sample.py MODEL.flow [-o grid.png] [-n 16] [-t 0.7] [--seed 0]
                                      [--backend auto|ref|onednn|cuda]

The module must be importable, with numpy:
  - from a build tree:   PYTHONPATH=build/python python3 examples/python_sample.py m.flow
  - from an install:     PYTHONPATH=/opt/flowrt/lib/python3/dist-packages python3 ...
  - any libflowrt:       FLOWRT_LIBRARY=/path/to/libflowrt.so.0 PYTHONPATH=python python3 ...
A model to try (an untrained model samples noise; a trained one, e.g. scripts/quickstart.sh's
runs/quickstart/model.flow, samples clothes):
  flowrt init --image 3x32x32 --levels 3 --depth 4 --width 32 --random-nets -o m.flow
"""
import argparse
import math
import struct
import sys
import zlib

import numpy as np

import flowrt

PAD = 2  # pixels between the grid's images


def grid(images, cols):
    """(n, C, H, W) uint8 -> one (C, rows*(H+PAD)-PAD, cols*(W+PAD)-PAD) image, black padding."""
    n, c, h, w = images.shape
    rows = math.ceil(n / cols)
    out = np.zeros((c, rows * (h + PAD) - PAD, cols * (w + PAD) - PAD), np.uint8)
    for i in range(n):
        r, k = divmod(i, cols)
        out[:, r * (h + PAD):r * (h + PAD) + h, k * (w + PAD):k * (w + PAD) + w] = images[i]
    return out


def ungrid(image, n, h, w, cols):
    """The inverse of grid(): (n, C, h, w)."""
    out = np.empty((n, image.shape[0], h, w), np.uint8)
    for i in range(n):
        r, k = divmod(i, cols)
        out[i] = image[:, r * (h + PAD):r * (h + PAD) + h, k * (w + PAD):k * (w + PAD) + w]
    return out


def _chunk(kind, data):
    return (struct.pack(">I", len(data)) + kind + data +
            struct.pack(">I", zlib.crc32(kind + data) & 0xFFFFFFFF))


def write_png(path, chw):
    """Writes a CHW uint8 image (1 channel: grey, 3: RGB) as an 8-bit PNG."""
    c, h, w = chw.shape
    if c not in (1, 3):
        raise ValueError(f"PNG needs 1 or 3 channels, the model has {c}")
    hwc = np.ascontiguousarray(chw.transpose(1, 2, 0))
    raw = b"".join(b"\0" + hwc[y].tobytes() for y in range(h))  # filter 0 (None) per row
    ihdr = struct.pack(">IIBBBBB", w, h, 8, 0 if c == 1 else 2, 0, 0, 0)
    with open(path, "wb") as f:
        f.write(b"\x89PNG\r\n\x1a\n" + _chunk(b"IHDR", ihdr) +
                _chunk(b"IDAT", zlib.compress(raw, 9)) + _chunk(b"IEND", b""))


def read_png(path):
    """Reads back an 8-bit grey or RGB, non-interlaced PNG like write_png's: CHW uint8."""
    with open(path, "rb") as f:
        data = f.read()
    if data[:8] != b"\x89PNG\r\n\x1a\n":
        raise ValueError(f"{path} is not a PNG")
    pos, idat, head = 8, b"", None
    while pos < len(data):
        (length,), kind = struct.unpack(">I", data[pos:pos + 4]), data[pos + 4:pos + 8]
        body = data[pos + 8:pos + 8 + length]
        pos += 12 + length
        if kind == b"IHDR":
            head = struct.unpack(">IIBBBBB", body)
        elif kind == b"IDAT":
            idat += body
    w, h, depth, color, _, _, interlace = head
    if depth != 8 or color not in (0, 2) or interlace:
        raise ValueError(f"{path}: only 8-bit grey/RGB, non-interlaced PNGs are read here")
    c = 1 if color == 0 else 3
    rows = np.frombuffer(zlib.decompress(idat), np.uint8).reshape(h, 1 + w * c)
    if rows[:, 0].any():
        raise ValueError(f"{path}: only PNG filter type 0 is read here")
    return rows[:, 1:].reshape(h, w, c).transpose(2, 0, 1)


def main():
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("model")
    ap.add_argument("-o", "--out", default="grid.png")
    ap.add_argument("-n", type=int, default=16, help="images (default 16)")
    ap.add_argument("-t", "--temperature", type=float, default=0.7)
    ap.add_argument("--seed", type=int, default=0)
    ap.add_argument("--backend", default="auto")
    a = ap.parse_args()

    with flowrt.Model.open(a.model) as model, flowrt.Session(model, backend=a.backend) as session:
        c, h, w = model.image_shape
        print(f"{a.model}: {c}x{h}x{w}, {model.n_bits} bits, {model.levels} levels, "
              f"latent dim {model.latent_dim}; backend {session.backend}; libflowrt "
              f"{flowrt.version()}")
        labels = np.arange(a.n) % model.num_classes if model.num_classes else None
        images = session.sample(a.n, a.temperature, seed=a.seed, labels=labels)
        cols = math.ceil(math.sqrt(a.n))
        write_png(a.out, grid(images, cols))
        print(f"wrote {a.out}: {a.n} samples at T={a.temperature}, seed {a.seed}")

        back = ungrid(read_png(a.out), a.n, h, w, cols)
        assert np.array_equal(back, images), "the PNG did not round-trip"
        z, bpd = session.encode(back, labels=labels)
        for i, b in enumerate(bpd):
            print(f"image {i}: {b:.4f} bits/dim")
        print(f"mean: {bpd.mean():.4f} bits/dim")
        same = np.array_equal(session.decode(z), back)
        print(f"decode(encode(png)) reproduces the pixels: {'yes' if same else 'NO'}")
        return 0 if same else 1


if __name__ == "__main__":
    sys.exit(main())
