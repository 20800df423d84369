#!/usr/bin/env bash
# flowrt (oneDNN backend, flowbench) against ONNX Runtime (CPU, onnxruntime-node) on the same
# model, batch and thread count, timed one after the other in one run. The ONNX graphs come from
# `python3 -m converters onnx` (the decoder takes the noise and the temperature, so it is timed
# against flowbench's `sample`, whose noise generation costs < 1 %).
# PRECISIONS="fp32 bf16" adds flowrt's bf16 rows (CPUs with bf16 units) against the same ONNX
# Runtime timings (fp32: its CPU provider has no bf16 convolutions).
# Usage: benchmarks/onnxruntime/run.sh [BUILD_DIR]
# Environment: ARCHS, BATCHES, THREADS, PRECISIONS (default fp32), ROUNDS (default 1: each round
# times flowrt then ONNX Runtime; the table gives medians over the rounds, and the median of the
# rounds' ratios, which a noisy machine moves less than either time), OUT.
set -euo pipefail
HERE=$(cd "$(dirname "$0")" && pwd)
ROOT=$(cd "$HERE/../.." && pwd)
BUILD=$(cd "${1:-$ROOT/build}" && pwd)
ARCHS=${ARCHS:-"fmnist cifar"}
BATCHES=${BATCHES:-"1 16"}
THREADS=${THREADS:-2}
PRECISIONS=${PRECISIONS:-fp32}
ROUNDS=${ROUNDS:-1}
OUT=${OUT:-$(mktemp -d -t flowrt-ort-XXXXXX)}
mkdir -p "$OUT"
echo "| model | batch | flowrt precision | flowrt encode ms | ORT encode ms | ratio | flowrt sample ms | ORT decode ms | ratio |"
echo "|---|---:|---|---:|---:|---:|---:|---:|---:|"
for arch in $ARCHS; do
  "$BUILD/bin/flowrt" init --arch "$arch" --random-nets --seed 1 -o "$OUT/$arch.flow" > /dev/null
  for b in $BATCHES; do
    for ((r = 1; r <= ROUNDS; r++)); do  # flowrt, then ONNX Runtime, round after round
      "$BUILD/bin/flowbench" --model "$OUT/$arch.flow" --backend onednn --op encode,sample \
        --batch "$b" --precision "${PRECISIONS// /,}" --threads "$THREADS" --warmup 1 --reps 5 \
        --min-time 1 --json "$OUT/fb-$arch-$b-$r.json" > /dev/null
      /usr/bin/python3 "$HERE/bench_ort.py" "$OUT/$arch.flow" --batch "$b" --threads "$THREADS" \
        --iters 10 > "$OUT/ort-$arch-$b-$r.jsonl"
    done
    /usr/bin/python3 - "$OUT" "$arch" "$b" "$ROUNDS" <<'PY'
import json, statistics, sys
out, arch, batch, rounds = sys.argv[1], sys.argv[2], sys.argv[3], int(sys.argv[4])
fb, ort = [], []  # per round: {precision: {op: ms}}, {direction: ms}
for r in range(1, rounds + 1):
    t = {}
    for row in json.load(open("%s/fb-%s-%s-%d.json" % (out, arch, batch, r)))["results"]:
        t.setdefault(row["precision"], {})[row["op"]] = row["median_ms"]
    fb.append(t)
    ort.append({json.loads(line)["direction"]: json.loads(line)["median_ms"]
                for line in open("%s/ort-%s-%s-%d.jsonl" % (out, arch, batch, r))})
med = statistics.median
for precision in fb[0]:
    e = [f[precision]["encode"] for f in fb]
    s = [f[precision]["sample"] for f in fb]
    oe, od = [o["encode"] for o in ort], [o["decode"] for o in ort]
    # The ratio of each round (both timed minutes apart), then the median over the rounds.
    re = med([o / f for o, f in zip(oe, e)])
    rs = med([o / f for o, f in zip(od, s)])
    print("| %s | %s | %s | %.2f | %.2f | %.2fx | %.2f | %.2f | %.2fx |" % (
        arch, batch, precision, med(e), med(oe), re, med(s), med(od), rs))
PY
  done
done
echo
echo "ratio = ONNX Runtime time / flowrt time; raw results in $OUT"
