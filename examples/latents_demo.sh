#!/usr/bin/env bash
# The pictures of the README's "Working with latents and likelihoods", made by the flowrt
# commands on a trained Fashion-MNIST model:
#   examples/latents_demo.sh [MODEL.flow] [OUT_DIR]   defaults: runs/quickstart/model.flow, runs/latents
# Writes OUT_DIR/{interpolate,interpolate_slerp,manipulate,project.tsv,per_level.txt} and
# OUT_DIR/heatmap/*_nll.png. Needs build/bin/flowrt and /usr/bin/python3 with numpy.
set -euo pipefail
cd "$(dirname "$0")/.."
model=${1:-runs/quickstart/model.flow}
out=${2:-runs/latents}
flowrt=build/bin/flowrt
data=/usr/share/datasets/fashion-mnist
mkdir -p "$out/heatmap"

# Test images 9 (a sneaker), 0 (an ankle boot), 1 (a pullover), 2 (trousers) as PNGs.
PYTHONPATH=build/python /usr/bin/python3 - "$data/t10k-images-idx3-ubyte.gz" "$out" <<'PY'
import gzip, struct, sys
sys.path.insert(0, "examples")
import numpy as np
from python_sample import write_png
with gzip.open(sys.argv[1]) as f:
    _, n, h, w = struct.unpack(">IIII", f.read(16))
    images = np.frombuffer(f.read(), np.uint8).reshape(n, 1, h, w)
for index, name in ((9, "sneaker"), (0, "boot"), (1, "pullover"), (2, "trousers")):
    write_png(f"{sys.argv[2]}/{name}.png", images[index])
PY

$flowrt interpolate "$model" "$out/sneaker.png" "$out/boot.png" --steps 8 -o "$out/interpolate.png"
$flowrt interpolate "$model" "$out/pullover.png" "$out/trousers.png" --steps 8 --slerp \
  -o "$out/interpolate_slerp.png"
$flowrt attributes build "$model" --images "$data/train-images-idx3-ubyte.gz" \
  --labels "$data/train-labels-idx1-ubyte.gz" --limit 20000 -o "$out/dirs.npy"
# Label 9 is "ankle boot": the sneaker moved along the boot direction and against it.
$flowrt manipulate "$model" "$out/sneaker.png" --dirs "$out/dirs.npy" --label 9 \
  --alpha -1,-0.5,0,0.5,1,1.5 -o "$out/manipulate.png"
$flowrt manipulate "$model" "$out/sneaker.png" "$out/boot.png" --dirs "$out/dirs.npy" --project \
  > "$out/project.tsv"
$flowrt score "$model" "$out/sneaker.png" "$out/boot.png" "$out/pullover.png" "$out/trousers.png" \
  --per-level --heatmap "$out/heatmap" | tee "$out/per_level.txt"
# The strips 3x larger (nearest neighbour), as the README shows them.
/usr/bin/python3 - "$out" <<'PY'
import struct, sys, zlib

def read_png(path):
    """8-bit grey or RGB PNG (any filter) -> (width, height, channels, rows of bytes)."""
    data, pos, idat = open(path, "rb").read(), 8, b""
    while pos < len(data):
        n, kind = struct.unpack(">I4s", data[pos:pos + 8])
        if kind == b"IHDR":
            w, h, _, color = struct.unpack(">IIBB", data[pos + 8:pos + 18])
        elif kind == b"IDAT":
            idat += data[pos + 8:pos + 8 + n]
        pos += 12 + n
    c = 3 if color == 2 else 1
    raw, stride, rows, prev = zlib.decompress(idat), w * c, [], bytearray(w * c)
    for y in range(h):
        f, line = raw[y * (stride + 1)], bytearray(raw[y * (stride + 1) + 1:(y + 1) * (stride + 1)])
        for i in range(stride):
            a = line[i - c] if i >= c else 0
            b, d = prev[i], prev[i - c] if i >= c else 0
            if f == 1: line[i] = (line[i] + a) & 255
            elif f == 2: line[i] = (line[i] + b) & 255
            elif f == 3: line[i] = (line[i] + (a + b) // 2) & 255
            elif f == 4:
                p = a + b - d
                pa, pb, pc = abs(p - a), abs(p - b), abs(p - d)
                line[i] = (line[i] + (a if pa <= pb and pa <= pc else b if pb <= pc else d)) & 255
        rows.append(bytes(line))
        prev = line
    return w, h, c, rows

def write_png(path, w, h, c, rows):
    def chunk(kind, body):
        return struct.pack(">I", len(body)) + kind + body + struct.pack(">I", zlib.crc32(kind + body))
    raw = b"".join(b"\0" + r for r in rows)
    open(path, "wb").write(b"\x89PNG\r\n\x1a\n" + chunk(b"IHDR", struct.pack(">IIBBBBB", w, h, 8, 2 if c == 3 else 0, 0, 0, 0))
                           + chunk(b"IDAT", zlib.compress(raw, 9)) + chunk(b"IEND", b""))

for name in ("interpolate", "interpolate_slerp", "manipulate"):
    w, h, c, rows = read_png(f"{sys.argv[1]}/{name}.png")
    big = [bytes(v for x in range(w) for v in r[x * c:(x + 1) * c] * 3) for r in rows for _ in range(3)]
    write_png(f"{sys.argv[1]}/{name}_x3.png", 3 * w, 3 * h, c, big)
PY
