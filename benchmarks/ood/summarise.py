#!/usr/bin/env python3
"""Markdown tables of the OOD benchmark from runs/ood/results/*.json (written by run.sh).

usage: summarise.py RUN_DIR > RESULTS.md
"""
import json
import os
import platform
import subprocess
import sys

CLASSES = ["T-shirt/top", "Trouser", "Pullover", "Dress", "Coat", "Sandal", "Shirt", "Sneaker",
           "Bag", "Ankle boot"]
SCORES = [("bpd", "bits/dim"), ("typicality", "typicality K batches"),
          ("typicality_k1", "typicality K=1"), ("likelihood_ratio", "likelihood ratio"),
          ("complexity", "complexity (PNG)")]
SHIFTS = [("hflip", "horizontal flip"), ("vflip", "vertical flip"), ("invert", "inverted 255−p"),
          ("noise", "uniform noise"), ("constant", "constant images")]


def load(path):
    with open(path) as f:
        return json.load(f)


def cpu():
    try:
        out = subprocess.run(["lscpu"], capture_output=True, text=True).stdout
        for line in out.splitlines():
            if line.startswith("Model name:"):
                return line.split(":", 1)[1].strip()
    except OSError:
        pass
    return platform.processor() or "unknown CPU"


def f3(x):
    return "—" if x is None else f"{x:.3f}"


def main():
    run = sys.argv[1]
    res = os.path.join(run, "results")
    k = None
    print("### OOD detection with `flowrt ood` (Fashion-MNIST)\n")
    timing = os.path.join(run, "timing.txt")
    if os.path.exists(timing):
        with open(timing) as f:
            lines = f.read().strip().splitlines()
        print(f"Measured {lines[0].split()[0][:10]} on {os.cpu_count()} cores ({cpu()}) by "
              "`benchmarks/ood/run.sh`:\n\n```\n" + "\n".join(lines) + "\n```\n")

    rows, sums, n = [], {key: 0.0 for key, _ in SCORES}, 0
    for c, name in enumerate(CLASSES):
        p = os.path.join(res, f"class{c}.json")
        if not os.path.exists(p):
            rows.append(f"| {c} {name} | missing |")
            continue
        d = load(p)
        k = d["typicality"]["batch_size"]
        s = d["scores"]
        vals = [s[key]["auroc"] if key in s else None for key, _ in SCORES]
        for (key, _), v in zip(SCORES, vals):
            sums[key] += v if v is not None else float("nan")
        n += 1
        rows.append(f"| {c} {name} | {d['bpd']['in']['mean']:.3f} | {d['bpd']['out']['mean']:.3f} | "
                    + " | ".join(f3(v) for v in vals) + " |")
    head = [label.replace("K batches", f"K={k} batches" if k else "batches") for _, label in SCORES]
    print("**(a) One-class novelty** — AUROC, inlier class vs the other nine (test set: 1000 vs "
          "9000 images; typicality over batches of K shuffled images):\n")
    print("| inlier class | bpd in | bpd out | " + " | ".join(head) + " |")
    print("|---|---:|---:|" + "---:|" * len(SCORES))
    for r in rows:
        print(r)
    if n:
        print(f"| **mean over {n} classes** | | | "
              + " | ".join(f"**{sums[key] / n:.3f}**" for key, _ in SCORES) + " |")
    print()

    print("**(b) Shifted inputs** against the model trained on all classes (in: the 10000 test "
          "images) — AUROC, and FPR at 95 % TPR in parentheses:\n")
    print("| OOD set | n | bpd in | bpd out | " + " | ".join(head) + " |")
    print("|---|---:|---:|---:|" + "---:|" * len(SCORES))
    for key_s, label in SHIFTS:
        p = os.path.join(res, f"shift-{key_s}.json")
        if not os.path.exists(p):
            print(f"| {label} | missing |")
            continue
        d = load(p)
        s = d["scores"]
        cells = [f"{s[key]['auroc']:.3f} ({s[key]['fpr_at_95_tpr']:.2f})" if key in s else "—"
                 for key, _ in SCORES]
        print(f"| {label} | {d['bpd']['out']['n']} | {d['bpd']['in']['mean']:.3f} | "
              f"{d['bpd']['out']['mean']:.3f} | " + " | ".join(cells) + " |")
    print()

    # The models' own numbers.
    print("Models (flowtrain, held-out training images as its evaluation set):\n")
    print("| model | training images | held-out bpd | steps |")
    print("|---|---:|---:|---:|")
    models = os.path.join(run, "models")
    for name in ["all", "all-bg"] + [f"class{c}" for c in range(10)] + \
            [f"class{c}-bg" for c in range(10)]:
        m = os.path.join(models, name, "metrics.csv")
        if not os.path.exists(m):
            continue
        with open(m) as f:
            lines = [l.strip().split(",") for l in f if l.strip()]
        hdr, data = lines[0], lines[1:]
        ti = hdr.index("test_bpd")
        tests = [float(r[ti]) for r in data if r[ti]]
        log = os.path.join(models, name + ".log")
        first = open(log).readline() if os.path.exists(log) else ""
        imgs = first.split(": ", 1)[1].split(" training")[0] if ": " in first else "?"
        print(f"| {name} | {imgs} | {min(tests):.3f} | {data[-1][0]} |" if tests else
              f"| {name} | {imgs} | — | {data[-1][0]} |")
    print()


if __name__ == "__main__":
    main()
