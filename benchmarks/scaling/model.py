#!/usr/bin/env python3
"""Step-time model of data-parallel flowtrain, and what it predicts for H200 GPUs.

    t(N) = compute(B / N) + exposed reduction(N) + update
    reduction of one bucket of s bytes over N ranks (ring) = 2 (N - 1) / N * s / busbw + alpha (N - 1)
    efficiency(N) = t(1) / (N t(N))          (strong scaling: the global batch B stays fixed)

compute(b) = max(b * t_image, t_floor): the images' arithmetic, or the launch floor of a step's
kernels when that is longer. The update (gradient norm, Adam) runs on every rank over all the
parameters, so it does not shrink with N. Without overlap (`--dist nccl` with
FLOWRT_NCCL_OVERLAP=0: its buckets of ncclAllReduce run between the backward pass and the update)
the whole reduction is exposed. With overlap (`--dist nccl`'s default, see
trainer/dist/grad_buckets.cpp) bucket k is reduced on a stream of its own as soon as the backward
pass has finished every layer writing it, one bucket at a time, so only what the backward pass
cannot cover is exposed, and always at least the last bucket.

Modelled, not measured: 25 MiB buckets with the remainder last, ready uniformly (in bytes) over
the backward pass. flowrt's plan for cifar closes buckets at layer boundaries: 8 of at most 25
MiB, the last 2.6 MiB, and the first three (level 2's gradients) are final after ~7 % of the
backward pass's arithmetic (parameters x spatial size, a proxy), not 3/8 of it; both
simplifications overstate the exposed reduction. Not modelled: NCCL's kernels taking SMs and
memory bandwidth from the backward pass they overlap.

Two uses:
  1. CPU check (with --measured results.json from run.sh): the model's 2-rank step time from
     measured inputs (one rank's compute alone, bench_reduce's reduction) against the measured one.
  2. GPU extrapolation: the cifar Glow at global batch 512 on (a) 8 H200s over NVLink 4, (b) 2
     nodes x 8 H200s over one 400 Gb/s NDR InfiniBand link per node. The H200 step time has NOT
     been measured (no GPU run exists yet): it is an assumption, stated below with its reasoning.

Writes OUT/model.md (inputs and tables), OUT/model.json, OUT/efficiency.svg and OUT/efficiency.png.
Usage: model.py --out DIR [--measured results.json] [--batch 512] [--no-png]
(benchmarks/scaling/efficiency.svg and .png are its output on the run in benchmarks/RESULTS.md.)
python3 + numpy only (the SVG is written by hand, the PNG by a small zlib PNG writer).
"""
import argparse
import json
import math
import os
import struct
import zlib

import numpy as np

# ---- the model -------------------------------------------------------------------------------

CIFAR_PARAMS = 44_058_096  # `flowrt init --arch cifar` + `flowrt info`: params
CIFAR_GFLOP_ENCODE = 8.023056384  # `flowrt info`: flops_encode per image
BUCKET_BYTES = 25 << 20  # trainer/dist/nccl_reducer.hpp: NcclReduceOptions::bucket_bytes


def ring_ms(nbytes, n, busbw_gbps, alpha_us):
    """One ring all-reduce of nbytes over n ranks, in ms."""
    if n <= 1:
        return 0.0
    return 2.0 * (n - 1) / n * nbytes / (busbw_gbps * 1e9) * 1e3 + alpha_us * 1e-3 * (n - 1)


def buckets(total_bytes, bucket_bytes):
    k = max(1, math.ceil(total_bytes / bucket_bytes))
    sizes = [bucket_bytes] * (k - 1) + [total_bytes - bucket_bytes * (k - 1)]
    return sizes


def exposed_ms(total_bytes, n, busbw, alpha, backward_ms, overlap, bucket_bytes=BUCKET_BYTES):
    """The reduction time that adds to the step: all of it without overlap; with overlap, what is
    left after the backward pass ends. Bucket k's gradients are ready when the backward pass has
    produced k/K of them (uniformly over backward_ms); buckets go one after another."""
    sizes = buckets(total_bytes, bucket_bytes)
    times = [ring_ms(s, n, busbw, alpha) for s in sizes]
    if not overlap:
        return sum(times)
    done, produced = 0.0, 0
    for s, t in zip(sizes, times):
        produced += s
        ready = backward_ms * produced / total_bytes
        done = max(done, ready) + t
    return max(0.0, done - backward_ms)


def step_ms(n, b_global, sysm, overlap):
    b = b_global / n
    compute = max(b * sysm["image_ms"], sysm["floor_ms"])
    backward = compute * sysm["backward_share"]
    link = sysm["link"](n)
    red = exposed_ms(sysm["grad_bytes"], n, link["busbw"], link["alpha_us"], backward, overlap)
    return {"n": n, "per_gpu_batch": b, "compute_ms": compute, "reduce_ms": red,
            "update_ms": sysm["update_ms"], "step_ms": compute + red + sysm["update_ms"],
            "link": link["name"]}


def efficiency_table(b_global, sysm, ns, overlap):
    rows = [step_ms(n, b_global, sysm, overlap) for n in ns]
    t1 = rows[0]["step_ms"] if rows[0]["n"] == 1 else step_ms(1, b_global, sysm, overlap)["step_ms"]
    for r in rows:
        r["efficiency"] = t1 / (r["n"] * r["step_ms"])
        r["images_per_s"] = b_global / (r["step_ms"] * 1e-3)
    return rows


# ---- the assumptions (H200) --------------------------------------------------------------------

H200_FP32_TFLOPS = 67.0  # NVIDIA H200 SXM datasheet: FP32 67 TFLOPS (same GH100 as H100 SXM)
H200_TF32_DENSE_TFLOPS = 494.7  # datasheet: TF32 Tensor Core 989 TFLOPS *with sparsity*; dense half
H200_HBM_TBPS = 4.8  # datasheet: 4.8 TB/s HBM3e


def h200_system(precision="fp32", nics_per_node=1):
    gflop_train = 3.0 * CIFAR_GFLOP_ENCODE  # forward, backward to data, backward to weights
    if precision == "fp32":  # the trainer's default --precision: cuBLAS FP32, CUDA cores
        frac, peak = 0.40, H200_FP32_TFLOPS
    else:  # tf32: tensor cores
        frac, peak = 0.25, H200_TF32_DENSE_TFLOPS
    achieved = frac * peak
    image_ms = gflop_train / achieved  # GFLOP / TFLOP/s = ms
    grad_bytes = 4.0 * CIFAR_PARAMS
    # Update: gradient norm (read g), Adam (read g, p, m, v; write p, m, v): 8 passes over 176 MB
    # at ~85 % of HBM bandwidth.
    update_ms = 8 * grad_bytes / (0.85 * H200_HBM_TBPS * 1e12) * 1e3
    # Launch floor: ~45 kernels per flow step (forward and backward of actnorm, 1x1 conv, the
    # coupling net's 3 convolutions with im2col/col2im, bias, ReLU, coupling) x 96 flow steps,
    # plus priors, Adam: ~4,500 launches at ~2.5 us each on the host.
    floor_ms = 4500 * 2.5e-3
    nvlink = {"name": "NVLink 4", "busbw": 370.0, "alpha_us": 10.0}
    ib_bw = 0.9 * 50.0 * nics_per_node  # 400 Gb/s = 50 GB/s per direction per NIC, ~90 % achieved
    ib = {"name": "IB NDR %dx400G/node" % nics_per_node, "busbw": min(ib_bw, nvlink["busbw"]),
          "alpha_us": 10.0}
    return {
        "name": "H200 %s" % precision, "precision": precision, "achieved_tflops": achieved,
        "peak_tflops": peak, "fraction_of_peak": frac, "gflop_per_image": gflop_train,
        "image_ms": image_ms, "floor_ms": floor_ms, "backward_share": 2.0 / 3.0,
        "grad_bytes": grad_bytes, "update_ms": update_ms,
        "link": lambda n: nvlink if n <= 8 else ib, "nvlink": nvlink, "ib": ib,
    }


# ---- the CPU check -----------------------------------------------------------------------------

def cpu_check(measured):
    s = measured["train_summary"]
    if "p1t1b32" not in s or "p1t2" not in s or "fmnist" not in measured.get("reduce", {}):
        return []  # a partial run (CASES): nothing to check against
    red = {x["mode"]: x for x in measured["reduce"]["fmnist"]["results"]}
    rank_ms = s["p1t1b32"]["step_ms_median"]
    base_ms = s["p1t2"]["step_ms_median"]
    batch = measured["config"]["global_batch"]
    out = []
    for mode in ("ordered", "fast"):
        case = "r2" + mode
        if case not in s or mode not in red:
            continue
        pred = rank_ms + red[mode]["median_ms"]
        meas = s[case]["step_ms_median"]
        out.append({"mode": mode, "rank_compute_ms": rank_ms, "reduce_ms": red[mode]["median_ms"],
                    "predicted_step_ms": pred, "measured_step_ms": meas,
                    "predicted_over_measured": pred / meas,
                    "predicted_ratio_vs_p1t2": base_ms / pred,
                    "measured_ratio_vs_p1t2": base_ms / meas,
                    "predicted_images_per_s": batch / (pred * 1e-3)})
    return out


# ---- drawing -----------------------------------------------------------------------------------

W, H = 720, 440
PL, PR, PT, PB = 70, 250, 40, 60  # plot margins: left, right, top, bottom
Y0, Y1 = 0.5, 1.0  # efficiency axis (Y0 is lowered to the lowest point, set_range)


def set_range(series):
    global Y0
    low = min(e for _, _, _, pts in series for _, e in pts)
    Y0 = min(0.8, math.floor(low * 10) / 10)


def xy(n, e):
    x = PL + (W - PL - PR) * math.log2(n) / 4.0
    y = PT + (H - PT - PB) * (Y1 - min(max(e, Y0), Y1)) / (Y1 - Y0)
    return x, y


def write_svg(path, series, title, subtitle):
    o = ['<svg xmlns="http://www.w3.org/2000/svg" width="%d" height="%d" viewBox="0 0 %d %d" '
         'font-family="sans-serif" font-size="12">' % (W, H, W, H),
         '<rect width="100%" height="100%" fill="white"/>',
         '<text x="%d" y="20" font-size="14" font-weight="bold">%s</text>' % (PL, title),
         '<text x="%d" y="34" font-size="11" fill="#555">%s</text>' % (PL, subtitle)]
    for k in range(round((Y1 - Y0) * 10) + 1):  # y grid every 10 %
        e = Y0 + k / 10
        _, y = xy(1, e)
        o.append('<line x1="%d" y1="%.1f" x2="%d" y2="%.1f" stroke="#ddd"/>' % (PL, y, W - PR, y))
        o.append('<text x="%d" y="%.1f" text-anchor="end">%d %%</text>' % (PL - 6, y + 4, round(100 * e)))
    for n in (1, 2, 4, 8, 16):
        x, _ = xy(n, Y0)
        o.append('<line x1="%.1f" y1="%d" x2="%.1f" y2="%d" stroke="#eee"/>' % (x, PT, x, H - PB))
        o.append('<text x="%.1f" y="%d" text-anchor="middle">%d</text>' % (x, H - PB + 16, n))
    _, y90 = xy(1, 0.9)
    o.append('<line x1="%d" y1="%.1f" x2="%d" y2="%.1f" stroke="#c00" stroke-dasharray="5,4"/>'
             % (PL, y90, W - PR, y90))
    o.append('<text x="%d" y="%.1f" fill="#c00" font-size="11">90 %% target</text>' % (W - PR - 70, y90 - 4))
    o.append('<rect x="%d" y="%d" width="%d" height="%d" fill="none" stroke="#333"/>'
             % (PL, PT, W - PL - PR, H - PT - PB))
    o.append('<text x="%d" y="%d" text-anchor="middle">GPUs N (1-8: one node, NVLink; 16: 2 nodes x 8, '
             'InfiniBand)</text>' % ((PL + W - PR) // 2, H - 18))
    o.append('<text x="18" y="%d" text-anchor="middle" transform="rotate(-90 18 %d)">efficiency '
             't(1) / (N t(N))</text>' % ((PT + H - PB) // 2, (PT + H - PB) // 2))
    for i, (label, color, dash, pts) in enumerate(series):
        p = " ".join("%.1f,%.1f" % xy(n, e) for n, e in pts)
        o.append('<polyline points="%s" fill="none" stroke="%s" stroke-width="2"%s/>'
                 % (p, color, ' stroke-dasharray="6,4"' if dash else ""))
        for n, e in pts:
            x, y = xy(n, e)
            o.append('<circle cx="%.1f" cy="%.1f" r="3" fill="%s"/>' % (x, y, color))
        ly = PT + 14 + 20 * i
        o.append('<line x1="%d" y1="%d" x2="%d" y2="%d" stroke="%s" stroke-width="2"%s/>'
                 % (W - PR + 12, ly - 4, W - PR + 40, ly - 4, color,
                    ' stroke-dasharray="6,4"' if dash else ""))
        o.append('<text x="%d" y="%d" font-size="11">%s</text>' % (W - PR + 46, ly, label))
    o.append("</svg>")
    with open(path, "w") as f:
        f.write("\n".join(o) + "\n")


# A 5x7 font for the PNG's labels (upper case, digits, a few signs): 7 rows of 5 bits per glyph.
FONT = {
    "0": "0E 11 13 15 19 11 0E", "1": "04 0C 04 04 04 04 0E", "2": "0E 11 01 02 04 08 1F",
    "3": "1F 02 04 02 01 11 0E", "4": "02 06 0A 12 1F 02 02", "5": "1F 10 1E 01 01 11 0E",
    "6": "06 08 10 1E 11 11 0E", "7": "1F 01 02 04 08 08 08", "8": "0E 11 11 0E 11 11 0E",
    "9": "0E 11 11 0F 01 02 0C", "A": "0E 11 11 1F 11 11 11", "B": "1E 11 11 1E 11 11 1E",
    "C": "0E 11 10 10 10 11 0E", "D": "1C 12 11 11 11 12 1C", "E": "1F 10 10 1E 10 10 1F",
    "F": "1F 10 10 1E 10 10 10", "G": "0E 11 10 17 11 11 0F", "H": "11 11 11 1F 11 11 11",
    "I": "0E 04 04 04 04 04 0E", "J": "07 02 02 02 02 12 0C", "K": "11 12 14 18 14 12 11",
    "L": "10 10 10 10 10 10 1F", "M": "11 1B 15 15 11 11 11", "N": "11 11 19 15 13 11 11",
    "O": "0E 11 11 11 11 11 0E", "P": "1E 11 11 1E 10 10 10", "Q": "0E 11 11 11 15 12 0D",
    "R": "1E 11 11 1E 14 12 11", "S": "0F 10 10 0E 01 01 1E", "T": "1F 04 04 04 04 04 04",
    "U": "11 11 11 11 11 11 0E", "V": "11 11 11 11 11 0A 04", "W": "11 11 11 15 15 15 0A",
    "X": "11 11 0A 04 0A 11 11", "Y": "11 11 11 0A 04 04 04", "Z": "1F 01 02 04 08 10 1F",
    " ": "00 00 00 00 00 00 00", "%": "18 19 02 04 08 13 03", ".": "00 00 00 00 00 0C 0C",
    ",": "00 00 00 00 0C 04 08", "-": "00 00 00 1F 00 00 00", "(": "02 04 08 08 08 04 02",
    ")": "08 04 02 02 02 04 08", "/": "00 01 02 04 08 10 00", ":": "00 0C 0C 00 0C 0C 00",
    "=": "00 00 1F 00 1F 00 00", "+": "00 04 04 1F 04 04 00", "*": "00 04 15 0E 15 04 00",
}


def hex_rgb(c):
    c = c.lstrip("#")
    return np.array([int(c[i:i + 2], 16) for i in (0, 2, 4)], dtype=np.uint8)


def write_png(path, series, title):
    img = np.full((H, W, 3), 255, dtype=np.uint8)

    def dot(x, y, color, r=1):
        x0, x1 = max(0, int(round(x)) - r), min(W, int(round(x)) + r + 1)
        y0, y1 = max(0, int(round(y)) - r), min(H, int(round(y)) + r + 1)
        img[y0:y1, x0:x1] = color

    def line(xa, ya, xb, yb, color, r=1, dash=0):
        steps = int(max(abs(xb - xa), abs(yb - ya))) + 1
        for k in range(steps + 1):
            if dash and (k // dash) % 2:
                continue
            t = k / steps
            dot(xa + (xb - xa) * t, ya + (yb - ya) * t, color, r)

    def text(x, y, s, color, scale=1, anchor="left"):
        s = s.upper()
        width = 6 * scale * len(s)
        if anchor == "end":
            x -= width
        elif anchor == "middle":
            x -= width // 2
        for i, ch in enumerate(s):
            rows = [int(v, 16) for v in FONT.get(ch, FONT["*"]).split()]
            for ry, bits in enumerate(rows):
                for rx in range(5):
                    if bits >> (4 - rx) & 1:
                        px, py = int(x + (6 * i + rx) * scale), int(y + ry * scale)
                        img[max(0, py):min(H, py + scale), max(0, px):min(W, px + scale)] = color

    grey, dark, red = hex_rgb("#dddddd"), hex_rgb("#333333"), hex_rgb("#cc0000")
    text(PL, 10, title, dark, 2)
    for k in range(round((Y1 - Y0) * 10) + 1):
        e = Y0 + k / 10
        _, y = xy(1, e)
        line(PL, y, W - PR, y, grey, 0)
        text(PL - 6, y - 3, "%d%%" % round(100 * e), dark, 1, "end")
    for n in (1, 2, 4, 8, 16):
        x, _ = xy(n, Y0)
        text(x, H - PB + 8, str(n), dark, 1, "middle")
    _, y90 = xy(1, 0.9)
    line(PL, y90, W - PR, y90, red, 0, dash=5)
    for a, b in (((PL, PT), (W - PR, PT)), ((W - PR, PT), (W - PR, H - PB)),
                 ((W - PR, H - PB), (PL, H - PB)), ((PL, H - PB), (PL, PT))):
        line(a[0], a[1], b[0], b[1], dark, 0)
    text((PL + W - PR) // 2, H - 24, "GPUS N (1-8 NVLINK, 16 = 2X8 INFINIBAND)", dark, 1, "middle")
    for i, (label, color, dash, pts) in enumerate(series):
        c = hex_rgb(color)
        for (na, ea), (nb, eb) in zip(pts, pts[1:]):
            line(*xy(na, ea), *xy(nb, eb), c, 1, dash=6 if dash else 0)
        for n, e in pts:
            dot(*xy(n, e), c, 3)
        ly = PT + 10 + 20 * i
        line(W - PR + 12, ly, W - PR + 40, ly, c, 1, dash=6 if dash else 0)
        text(W - PR + 46, ly - 3, label, dark, 1)
    raw = b"".join(b"\x00" + img[y].tobytes() for y in range(H))

    def chunk(kind, data):
        return (struct.pack(">I", len(data)) + kind + data
                + struct.pack(">I", zlib.crc32(kind + data) & 0xFFFFFFFF))

    with open(path, "wb") as f:
        f.write(b"\x89PNG\r\n\x1a\n" + chunk(b"IHDR", struct.pack(">IIBBBBB", W, H, 8, 2, 0, 0, 0))
                + chunk(b"IDAT", zlib.compress(raw, 9)) + chunk(b"IEND", b""))


# ---- main --------------------------------------------------------------------------------------

def main():
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--measured", help="results.json of benchmarks/scaling/run.sh")
    ap.add_argument("--out", required=True, help="directory for model.md/.json, efficiency.svg/.png")
    ap.add_argument("--batch", type=int, default=512, help="global batch (cifar)")
    ap.add_argument("--no-png", action="store_true")
    args = ap.parse_args()
    os.makedirs(args.out, exist_ok=True)
    ns = [1, 2, 4, 8, 16]
    md, doc = [], {"batch": args.batch, "ns": ns}

    if args.measured:
        measured = json.load(open(args.measured))
        chk = cpu_check(measured)
        doc["cpu_check"] = chk
    if args.measured and chk:
        md += ["### CPU check: the model against the measured 2-rank step (fmnist, batch %d)" %
               measured["config"]["global_batch"], "",
               "Inputs measured by run.sh on %s (commit %s): one rank's compute = 1 process x 1 "
               "thread at batch %d alone; reduction = bench_reduce, 2 ranks x 1 thread, fmnist "
               "gradient." % (measured["machine"]["cpu"], measured["commit"],
                              measured["config"]["global_batch"] // 2), "",
               "| mode | rank compute ms | reduction ms | model step ms | measured step ms | "
               "model / measured | 2 ranks / 1 process: model | measured |",
               "|---|---:|---:|---:|---:|---:|---:|---:|"]
        for c in chk:
            md.append("| %s | %.1f | %.2f | %.1f | %.1f | %.3f | %.3f | %.3f |" % (
                c["mode"], c["rank_compute_ms"], c["reduce_ms"], c["predicted_step_ms"],
                c["measured_step_ms"], c["predicted_over_measured"], c["predicted_ratio_vs_p1t2"],
                c["measured_ratio_vs_p1t2"]))
        md.append("")

    systems = {"fp32": h200_system("fp32"), "tf32": h200_system("tf32")}
    s = systems["fp32"]
    md += ["### GPU model inputs (cifar Glow, global batch %d)" % args.batch, "",
           "| input | value | source |", "|---|---|---|",
           "| parameters / gradient bytes | %s / %.1f MB fp32 | counted: `flowrt info` |" % (
               format(CIFAR_PARAMS, ","), s["grad_bytes"] * 1e-6),
           "| training FLOPs per image | %.2f GFLOP (3 x %.3f encode) | counted: `flowrt info`, "
           "x3 as flowtrain bench counts |" % (s["gflop_per_image"], CIFAR_GFLOP_ENCODE),
           "| **H200 compute per image, fp32** | **%.3f ms** (%.1f TFLOP/s = %d %% of %.0f FP32) "
           "| **assumed**, not measured |" % (s["image_ms"], s["achieved_tflops"],
                                               round(100 * s["fraction_of_peak"]), s["peak_tflops"]),
           "| H200 compute per image, tf32 (sensitivity) | %.3f ms (%.1f TFLOP/s = %d %% of %.1f "
           "dense TF32) | assumed |" % (systems["tf32"]["image_ms"], systems["tf32"]["achieved_tflops"],
                                        round(100 * systems["tf32"]["fraction_of_peak"]),
                                        systems["tf32"]["peak_tflops"]),
           "| launch floor of a step | %.1f ms (~4,500 kernels x 2.5 us) | assumed (rough count of "
           "trainer/cuda launches) |" % s["floor_ms"],
           "| backward share of compute | 2/3 | FLOP count (backward = 2 x forward) |",
           "| update (norm + Adam) per step, every N | %.2f ms (8 passes over the gradient at 85 %% "
           "of 4.8 TB/s) | assumed |" % s["update_ms"],
           "| NVLink 4 busbw (N <= 8) | %.0f GB/s | assumed: 450 GB/s per direction line rate "
           "(18 links) less NCCL's ~20 %% protocol overhead, as an NCCL maintainer puts it "
           "(NVIDIA/nccl-tests#212); NVLink SHARP's ~480 GB/s not assumed |" % s["nvlink"]["busbw"],
           "| InfiniBand busbw (N = 16) | %.0f GB/s | assumed: one 400 Gb/s NDR link per node = "
           "50 GB/s per direction, ~90 %% achieved; a flat ring over 16 crosses it |" % s["ib"]["busbw"],
           "| latency alpha | %.0f us x (N-1) per bucket | assumed (a fixed ~70 us per 25 MiB "
           "all-reduce on 8 GPUs) |" % s["nvlink"]["alpha_us"],
           "| buckets | %d x 25 MiB, ready uniformly over the backward pass | modelled; "
           "`--dist nccl`'s plan (trainer/dist/grad_buckets.cpp): 8 of at most 25 MiB, closed at "
           "layer boundaries, the last 2.6 MiB |" % len(buckets(s["grad_bytes"], BUCKET_BYTES)), ""]

    series = []
    colors = {("fp32", False): "#1f5fbf", ("fp32", True): "#1f5fbf",
              ("tf32", False): "#d9822b", ("tf32", True): "#d9822b"}
    doc["tables"] = {}
    for prec in ("fp32", "tf32"):
        sysm = systems[prec]
        no = efficiency_table(args.batch, sysm, ns, False)
        ov = efficiency_table(args.batch, sysm, ns, True)
        doc["tables"][prec] = {"no_overlap": no, "overlap": ov}
        md += ["### Modelled efficiency, H200 %s, %s: cifar, global batch %d" % (
                   prec, "base case" if prec == "fp32" else "sensitivity (faster compute)",
                   args.batch), "",
               "| N | link | per-GPU batch | compute ms | update ms | reduction ms, no overlap | "
               "efficiency, no overlap | exposed ms, overlap | efficiency, overlap |",
               "|---:|---|---:|---:|---:|---:|---:|---:|---:|"]
        for a, b in zip(no, ov):
            md.append("| %d | %s | %g | %.1f | %.2f | %.2f | %.1f %% | %.2f | %.1f %% |" % (
                a["n"], a["link"] if a["n"] > 1 else "—", a["per_gpu_batch"], a["compute_ms"],
                a["update_ms"], a["reduce_ms"], 100 * a["efficiency"], b["reduce_ms"],
                100 * b["efficiency"]))
        md.append("")
        series.append(("%s, no overlap" % prec, colors[(prec, False)], True,
                       [(r["n"], r["efficiency"]) for r in no]))
        series.append(("%s, overlap" % prec, colors[(prec, True)], False,
                       [(r["n"], r["efficiency"]) for r in ov]))

    # N = 16 with a DGX-style 8 x 400G NICs per node, for comparison.
    dgx = h200_system("fp32", nics_per_node=8)
    d16 = {o: efficiency_table(args.batch, dgx, [1, 16], o)[1] for o in (False, True)}
    doc["n16_8nics_fp32"] = d16
    md += ["With 8 x 400 Gb/s NICs per node (DGX H200 style) instead of one, N = 16, fp32: reduction "
           "%.2f ms, efficiency %.1f %% without overlap, %.1f %% with." % (
               d16[False]["reduce_ms"], 100 * d16[False]["efficiency"], 100 * d16[True]["efficiency"]), ""]

    # How slow must an image be for 8 GPUs to keep 90 %? (efficiency rises with compute time)
    def break_even(overlap):
        lo, hi = 1e-4, 10.0
        for _ in range(60):
            mid = math.sqrt(lo * hi)
            sysm = dict(systems["fp32"], image_ms=mid)
            e = efficiency_table(args.batch, sysm, [1, 8], overlap)[1]["efficiency"]
            lo, hi = (lo, mid) if e >= 0.9 else (mid, hi)
        return hi
    be = {o: break_even(o) for o in (False, True)}
    doc["break_even_image_ms_8gpu"] = {"no_overlap": be[False], "overlap": be[True]}
    md += ["8 GPUs stay >= 90 %% efficient as long as an image takes >= %.3f ms (<= %.0f TFLOP/s "
           "achieved) without overlap, >= %.3f ms (<= %.0f TFLOP/s) with overlap; below that the "
           "launch floor (%.1f ms at 64 images per GPU) and the reduction dominate." % (
               be[False], s["gflop_per_image"] / be[False], be[True], s["gflop_per_image"] / be[True],
               s["floor_ms"]), ""]

    e8 = doc["tables"]["fp32"]["overlap"][3]
    assert e8["n"] == 8
    doc["verdict_8gpu_nvlink_overlap_fp32"] = e8["efficiency"]
    md += ["Target: modelled efficiency at 8 GPUs (NVLink, cifar, global batch %d, with overlap) >= "
           "90 %%: %.1f %% in the fp32 base case (%s), %.1f %% at tf32." % (
               args.batch, 100 * e8["efficiency"], "met" if e8["efficiency"] >= 0.9 else "missed",
               100 * doc["tables"]["tf32"]["overlap"][3]["efficiency"]), ""]

    for sysm in systems.values():
        sysm.pop("link")
    doc["systems"] = systems
    with open(os.path.join(args.out, "model.md"), "w") as f:
        f.write("\n".join(md))
    with open(os.path.join(args.out, "model.json"), "w") as f:
        json.dump(doc, f, indent=1)
    set_range(series)
    title = "Modelled data-parallel efficiency, cifar Glow, global batch %d, H200" % args.batch
    write_svg(os.path.join(args.out, "efficiency.svg"), series, title,
              "model.py: H200 compute per image assumed (not measured); NVLink 370 GB/s, "
              "IB 45 GB/s per node; 25 MiB buckets")
    if not args.no_png:
        write_png(os.path.join(args.out, "efficiency.png"), series,
                  "EFFICIENCY, CIFAR GLOW, BATCH %d, H200 (MODEL)" % args.batch)
    print("\n".join(md))


if __name__ == "__main__":
    main()
