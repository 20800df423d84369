#!/usr/bin/env python3
"""Table and curves of the architecture comparisons (benchmarks/ablation/run.sh).

usage: summarise.py RUN_DIR     writes RUN_DIR/summary.md and RUN_DIR/curves.svg

Each model's run directory holds flowtrain's metrics.csv (test bits/dim on --eval-images test
images every --eval-every steps, images/s per logging interval) and eval.txt (the full test set
with uniform dequantisation). Training time is summed from the logged images/s, so evaluations
are not counted in it.
"""
import csv
import os
import re
import sys

ORDER = ["glow-reverse-additive", "glow-shuffle-additive", "glow-lu-additive",
         "glow-reverse-affine", "glow-shuffle-affine", "glow-lu-affine", "realnvp",
         "realnvp-plain", "nice"]
COLOURS = {"glow-reverse-additive": "#9ecae1", "glow-shuffle-additive": "#4292c6",
           "glow-lu-additive": "#08306b", "glow-reverse-affine": "#fcbba1",
           "glow-shuffle-affine": "#ef3b2c", "glow-lu-affine": "#67000d", "realnvp": "#31a354",
           "realnvp-plain": "#a1d99b", "nice": "#756bb1"}
BATCH = 16  # flowtrain's default --batch, which run.sh keeps


def read_run(path):
    rows = []
    with open(os.path.join(path, "metrics.csv")) as f:
        for r in csv.DictReader(f):
            rows.append(r)
    curve, seconds, last_step = [], 0.0, 0
    for r in rows:
        step = int(r["step"])
        ips = float(r["images_per_s"] or 0)
        if ips > 0 and step > last_step:
            seconds += (step - last_step) * BATCH / ips
            last_step = step
        if r["test_bpd"]:
            curve.append((step, seconds, float(r["test_bpd"])))
    final = None
    with open(os.path.join(path, "eval.txt")) as f:
        m = re.search(r"([0-9]+\.[0-9]+) bits/dim with uniform dequantisation", f.read())
        if m:
            final = float(m.group(1))
    return {"curve": curve, "steps": last_step, "seconds": seconds, "final": final}


def steps_to_saturate(curve, final_fraction=0.95):
    """First step at which the curve has made 95% of its total improvement."""
    if len(curve) < 2:
        return None
    first, best = curve[0][2], min(c[2] for c in curve)
    if first <= best:
        return curve[0][0]
    goal = first - final_fraction * (first - best)
    return next(step for step, _, bpd in curve if bpd <= goal)


def polyline(points, colour):
    pts = " ".join(f"{x:.1f},{y:.1f}" for x, y in points)
    return f'<polyline fill="none" stroke="{colour}" stroke-width="1.8" points="{pts}"/>'


def panel(runs, x_of, x_label, x0, width, top, height, y_lo, y_hi):
    x_max = max(max((x_of(c) for c in r["curve"]), default=1) for r in runs.values()) or 1
    sx = lambda v: x0 + 55 + (width - 70) * v / x_max
    sy = lambda v: top + height - (height - 20) * (min(max(v, y_lo), y_hi) - y_lo) / (y_hi - y_lo)
    out = [f'<rect x="{x0 + 55}" y="{top + 20}" width="{width - 70}" height="{height - 20}" '
           'fill="none" stroke="#999"/>']
    for k in range(6):
        v = y_lo + (y_hi - y_lo) * k / 5
        out.append(f'<text x="{x0 + 50}" y="{sy(v) + 4:.1f}" font-size="11" '
                   f'text-anchor="end">{v:.2f}</text>')
        t = x_max * k / 5
        label = f"{t / 60:.0f}" if x_label.startswith("minutes") else f"{t:.0f}"
        out.append(f'<text x="{sx(t):.1f}" y="{top + height + 15}" font-size="11" '
                   f'text-anchor="middle">{label}</text>')
    out.append(f'<text x="{x0 + 55 + (width - 70) / 2}" y="{top + height + 32}" font-size="12" '
               f'text-anchor="middle">{x_label}</text>')
    for name, r in runs.items():
        out.append(polyline([(sx(x_of(c)), sy(c[2])) for c in r["curve"]], COLOURS[name]))
    return out


def write_svg(runs, path):
    values = [c[2] for r in runs.values() for c in r["curve"]]
    finals = sorted(values)
    y_lo = finals[0] - 0.05
    # The first evaluations sit far above the rest: the axis shows the best 85% of the points.
    y_hi = finals[int(0.85 * (len(finals) - 1))] + 0.05
    w, h = 1000, 420
    parts = [f'<svg xmlns="http://www.w3.org/2000/svg" width="{w}" height="{h}" '
             'font-family="sans-serif">', '<rect width="100%" height="100%" fill="white"/>',
             f'<text x="{w / 2}" y="20" font-size="14" text-anchor="middle">Fashion-MNIST 28x28: '
             'test bits/dim (1000 test images) during training</text>',
             f'<text x="14" y="{h / 2}" font-size="12" transform="rotate(-90 14 {h / 2})" '
             'text-anchor="middle">bits/dim</text>']
    parts += panel(runs, lambda c: c[0], "steps", 0, 400, 30, 320, y_lo, y_hi)
    parts += panel(runs, lambda c: c[1], "minutes of training", 400, 400, 30, 320, y_lo, y_hi)
    for i, name in enumerate(runs):
        y = 60 + 18 * i
        parts.append(f'<line x1="820" y1="{y}" x2="845" y2="{y}" stroke="{COLOURS[name]}" '
                     'stroke-width="3"/>')
        parts.append(f'<text x="850" y="{y + 4}" font-size="12">{name}</text>')
    parts.append("</svg>")
    with open(path + ".tmp", "w") as f:
        f.write("\n".join(parts) + "\n")
    os.replace(path + ".tmp", path)


def main():
    if len(sys.argv) != 2:
        sys.exit(__doc__)
    root = sys.argv[1]
    runs = {n: read_run(os.path.join(root, n)) for n in ORDER
            if os.path.exists(os.path.join(root, n, "eval.txt"))}
    if not runs:
        sys.exit(f"summarise.py: no finished run under {root}")
    cpu = open(os.path.join(root, "cpu.txt")).read().split(":", 1)[-1].strip() \
        if os.path.exists(os.path.join(root, "cpu.txt")) else "unknown CPU"
    budget = open(os.path.join(root, "budget.txt")).read().strip() \
        if os.path.exists(os.path.join(root, "budget.txt")) else ""
    lines = [f"CPU: {cpu}; {budget}.", "",
             "| model | steps | training min | best test bpd (1000 images) | "
             "final test bpd (10000, dequantised) | steps to 95 % of its gain |",
             "|---|---:|---:|---:|---:|---:|"]
    for name, r in runs.items():
        best = min((c[2] for c in r["curve"]), default=None)
        sat = steps_to_saturate(r["curve"])
        fmt = lambda v: "—" if v is None else f"{v:.3f}"
        lines.append(f"| {name} | {r['steps']} | {r['seconds'] / 60:.1f} | {fmt(best)} | "
                     f"{fmt(r['final'])} | {'—' if sat is None else sat} |")
    with open(os.path.join(root, "summary.md"), "w") as f:
        f.write("\n".join(lines) + "\n")
    write_svg(runs, os.path.join(root, "curves.svg"))
    print("\n".join(lines))
    print(f"curves: {os.path.join(root, 'curves.svg')}")


if __name__ == "__main__":
    main()
