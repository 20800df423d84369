#!/usr/bin/env python3
"""Writes the IDX files of the OOD benchmark (Python standard library only, deterministic).

usage: make_data.py FASHION_MNIST_DIR OUT_DIR [--mu 0.15] [--holdout-class 500]
       [--holdout-all 5000]

OUT_DIR/
  class<c>/                     one-class novelty, inlier class c (c = 0..9)
    train-images-idx3-ubyte     class c's training images but the last H (flowtrain --data-dir)
    train-labels-idx1-ubyte
    t10k-images-idx3-ubyte      = holdout: flowtrain's "test" set, so its model selection sees
    t10k-labels-idx1-ubyte        held-out *training* images, never the test set
    holdout-images-idx3-ubyte   the last H training images of class c (--train of flowrt ood)
    in-images-idx3-ubyte        class c's test images (1000)
    out-images-idx3-ubyte       the other nine classes' test images (9000)
  class<c>-bg/                  the background model's data: class<c>'s train/t10k files with
                                each pixel replaced by a uniform random value with probability
                                mu (Ren et al. 2019's input perturbation)
  all/                          every class: train = the first 60000-H training images,
                                t10k = holdout = the last H
  all-bg/                       all/ perturbed as above
  shift/                        the Fashion-MNIST test set shifted: hflip, vflip, invert (255-p)
                                (10000 each), noise (uniform pixels) and constant (one uniform
                                random value per image) (2000 each)
"""
import argparse
import gzip
import os
import random
import struct


def read_idx(path):
    opener = gzip.open if path.endswith(".gz") else open
    with opener(path, "rb") as f:
        data = f.read()
    magic = struct.unpack(">I", data[:4])[0]
    if magic == 0x803:
        n, h, w = struct.unpack(">III", data[4:16])
        size = h * w
        return [data[16 + i * size:16 + (i + 1) * size] for i in range(n)], (h, w)
    if magic == 0x801:
        n = struct.unpack(">I", data[4:8])[0]
        return list(data[8:8 + n]), None
    raise SystemExit(f"{path}: not an IDX file")


def find(d, name):
    for p in (os.path.join(d, name), os.path.join(d, name + ".gz")):
        if os.path.exists(p):
            return p
    raise SystemExit(f"{d}/{name}[.gz]: not found")


def write_images(path, images, hw=(28, 28)):
    tmp = path + ".tmp"
    with open(tmp, "wb") as f:
        f.write(struct.pack(">IIII", 0x803, len(images), hw[0], hw[1]))
        for im in images:
            f.write(im)
    os.replace(tmp, path)


def write_labels(path, labels):
    tmp = path + ".tmp"
    with open(tmp, "wb") as f:
        f.write(struct.pack(">II", 0x801, len(labels)))
        f.write(bytes(labels))
    os.replace(tmp, path)


def perturb(images, mu, rng):
    """Each pixel replaced by a uniform random value with probability mu."""
    thr = int(round(mu * 256))
    out = []
    for im in images:
        r = rng.randbytes(len(im))
        v = rng.randbytes(len(im))
        out.append(bytes(vv if m < thr else p for p, m, vv in zip(im, r, v)))
    return out


def write_split(d, train, train_labels, test, test_labels):
    os.makedirs(d, exist_ok=True)
    write_images(os.path.join(d, "train-images-idx3-ubyte"), train)
    write_labels(os.path.join(d, "train-labels-idx1-ubyte"), train_labels)
    write_images(os.path.join(d, "t10k-images-idx3-ubyte"), test)
    write_labels(os.path.join(d, "t10k-labels-idx1-ubyte"), test_labels)


def main():
    ap = argparse.ArgumentParser()
    ap.add_argument("src")
    ap.add_argument("out")
    ap.add_argument("--mu", type=float, default=0.15)
    ap.add_argument("--holdout-class", type=int, default=500)
    ap.add_argument("--holdout-all", type=int, default=5000)
    a = ap.parse_args()

    tr_x, hw = read_idx(find(a.src, "train-images-idx3-ubyte"))
    tr_y, _ = read_idx(find(a.src, "train-labels-idx1-ubyte"))
    te_x, _ = read_idx(find(a.src, "t10k-images-idx3-ubyte"))
    te_y, _ = read_idx(find(a.src, "t10k-labels-idx1-ubyte"))
    h, w = hw
    rng = random.Random(20240601)

    for c in range(10):
        xs = [x for x, y in zip(tr_x, tr_y) if y == c]
        fit, hold = xs[:-a.holdout_class], xs[-a.holdout_class:]
        d = os.path.join(a.out, f"class{c}")
        write_split(d, fit, [c] * len(fit), hold, [c] * len(hold))
        write_images(os.path.join(d, "holdout-images-idx3-ubyte"), hold, hw)
        write_images(os.path.join(d, "in-images-idx3-ubyte"),
                     [x for x, y in zip(te_x, te_y) if y == c], hw)
        write_images(os.path.join(d, "out-images-idx3-ubyte"),
                     [x for x, y in zip(te_x, te_y) if y != c], hw)
        write_split(os.path.join(a.out, f"class{c}-bg"), perturb(fit, a.mu, rng), [c] * len(fit),
                    perturb(hold, a.mu, rng), [c] * len(hold))

    n_fit = len(tr_x) - a.holdout_all
    fit, hold = tr_x[:n_fit], tr_x[n_fit:]
    write_split(os.path.join(a.out, "all"), fit, tr_y[:n_fit], hold, tr_y[n_fit:])
    write_images(os.path.join(a.out, "all", "holdout-images-idx3-ubyte"), hold, hw)
    write_split(os.path.join(a.out, "all-bg"), perturb(fit, a.mu, rng), tr_y[:n_fit],
                perturb(hold, a.mu, rng), tr_y[n_fit:])

    s = os.path.join(a.out, "shift")
    os.makedirs(s, exist_ok=True)
    rows = lambda im: [im[y * w:(y + 1) * w] for y in range(h)]
    write_images(os.path.join(s, "hflip-images-idx3-ubyte"),
                 [b"".join(r[::-1] for r in rows(im)) for im in te_x], hw)
    write_images(os.path.join(s, "vflip-images-idx3-ubyte"),
                 [b"".join(rows(im)[::-1]) for im in te_x], hw)
    table = bytes(255 - i for i in range(256))
    write_images(os.path.join(s, "invert-images-idx3-ubyte"),
                 [im.translate(table) for im in te_x], hw)
    write_images(os.path.join(s, "noise-images-idx3-ubyte"),
                 [rng.randbytes(h * w) for _ in range(2000)], hw)
    write_images(os.path.join(s, "constant-images-idx3-ubyte"),
                 [bytes([rng.randrange(256)]) * (h * w) for _ in range(2000)], hw)


if __name__ == "__main__":
    main()
