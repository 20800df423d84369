#!/usr/bin/env bash
# flowrt (oneDNN backend, flowbench) against ONNX Runtime (CPU, onnxruntime-node) on the same
# model, batch and thread count, timed one after the other in one run. The ONNX graphs come from
# `python3 -m converters onnx` (the decoder takes the noise and the temperature, so it is timed
# against flowbench's `sample`, whose noise generation costs < 1 %).
# PRECISIONS="fp32 bf16" adds flowrt's bf16 rows (CPUs with bf16 units) against the same ONNX
# Runtime timings (fp32: its CPU provider has no bf16 convolutions).
# Usage: benchmarks/onnxruntime/run.sh [BUILD_DIR]
# Environment: ARCHS, BATCHES, THREADS, PRECISIONS (default fp32), OUT.
set -euo pipefail
HERE=$(cd "$(dirname "$0")" && pwd)
ROOT=$(cd "$HERE/../.." && pwd)
BUILD=$(cd "${1:-$ROOT/build}" && pwd)
ARCHS=${ARCHS:-"fmnist cifar"}
BATCHES=${BATCHES:-"1 16"}
THREADS=${THREADS:-2}
PRECISIONS=${PRECISIONS:-fp32}
OUT=${OUT:-$(mktemp -d -t flowrt-ort-XXXXXX)}
mkdir -p "$OUT"
echo "| model | batch | flowrt precision | flowrt encode ms | ORT encode ms | ratio | flowrt sample ms | ORT decode ms | ratio |"
echo "|---|---:|---|---:|---:|---:|---:|---:|---:|"
for arch in $ARCHS; do
  "$BUILD/bin/flowrt" init --arch "$arch" --random-nets --seed 1 -o "$OUT/$arch.flow" > /dev/null
  for b in $BATCHES; do
    "$BUILD/bin/flowbench" --model "$OUT/$arch.flow" --backend onednn --op encode,sample --batch "$b" \
      --precision "${PRECISIONS// /,}" --threads "$THREADS" --warmup 1 --reps 5 --min-time 1 \
      --json "$OUT/fb-$arch-$b.json" > /dev/null
    /usr/bin/python3 "$HERE/bench_ort.py" "$OUT/$arch.flow" --batch "$b" --threads "$THREADS" \
      --iters 10 > "$OUT/ort-$arch-$b.jsonl"
    /usr/bin/python3 - "$OUT/fb-$arch-$b.json" "$OUT/ort-$arch-$b.jsonl" "$arch" "$b" <<'PY'
import json, sys
fb = {}
for r in json.load(open(sys.argv[1]))["results"]:
    fb.setdefault(r["precision"], {})[r["op"]] = r["median_ms"]
ort = {}
for line in open(sys.argv[2]):
    r = json.loads(line)
    ort[r["direction"]] = r["median_ms"]
oe, od = ort["encode"], ort["decode"]
for precision, t in fb.items():
    e, s = t["encode"], t["sample"]
    print("| %s | %s | %s | %.2f | %.2f | %.2fx | %.2f | %.2f | %.2fx |" % (
        sys.argv[3], sys.argv[4], precision, e, oe, oe / e, s, od, od / s))
PY
  done
done
echo
echo "ratio = ONNX Runtime time / flowrt time; raw results in $OUT"
