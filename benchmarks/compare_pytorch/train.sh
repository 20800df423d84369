#!/usr/bin/env bash
# Training throughput, flowtrain against a standard PyTorch Glow (glow_torch.py) on the same
# model: a fresh Glow (`flowrt init`, the trainer's starting point), Adam, the bits/dim loss on
# dequantised images, gradient-norm clipping; a fresh process per (implementation, batch).
# bench_torch.py first checks that PyTorch computes flowrt's bits/dim on this model.
# Usage: benchmarks/compare_pytorch/train.sh [BUILD_DIR]   (default: build)
# Environment: THREADS (2), ARCHS ("fmnist"), BATCHES ("16 64"), MIN_TIME (20 s per case), OUT.
set -euo pipefail
HERE=$(cd "$(dirname "$0")" && pwd)
ROOT=$(cd "$HERE/../.." && pwd)
BUILD=$(cd "${1:-$ROOT/build}" && pwd)
THREADS=${THREADS:-2}
ARCHS=${ARCHS:-"fmnist"}
BATCHES=${BATCHES:-"16 64"}
MIN_TIME=${MIN_TIME:-20}
OUT=${OUT:-$(mktemp -d -t flowrt-train-compare-XXXXXX)}
mkdir -p "$OUT"
. "$HERE/common.sh"  # PY, PyTorch's tuning, wait_quiet

for arch in $ARCHS; do
  case $arch in
    tiny) shape=(--image 3x32x32 --levels 2 --depth 4 --width 64) ;;
    fmnist) shape=(--image 1x32x32 --levels 3 --depth 8 --width 256) ;;
    cifar) shape=(--image 3x32x32 --levels 3 --depth 32 --width 512) ;;
    *) echo "train.sh: unknown architecture $arch (tiny, fmnist, cifar)" >&2; exit 2 ;;
  esac
  "$BUILD/bin/flowrt" init "${shape[@]}" --seed 1 -o "$OUT/$arch.flow" > /dev/null
  gflop=$("$BUILD/bin/flowrt" info "$OUT/$arch.flow" | awk '/^flops_encode/ {print 3 * $2 / 1e9}')
  : > "$OUT/torch-$arch.jsonl"
  for b in $BATCHES; do
    wait_quiet
    "$BUILD/bin/flowtrain" bench --model "$OUT/$arch.flow" --batch "$b" --threads "$THREADS" \
      --warmup 3 --reps 10 --min-time "$MIN_TIME" --json "$OUT/flowtrain-$arch-$b.json" > /dev/null
    wait_quiet
    (cd "$HERE" && "$PY" bench_torch.py --model "$OUT/$arch.flow" --lib "$BUILD/lib/libflowrt.so" \
      --name "$arch" --batch "$b" --op train --threads "$THREADS" --warmup 3 --reps 10 \
      --min-time "$MIN_TIME" --gflop "$gflop" >> "$OUT/torch-$arch.jsonl")
  done
done

"$PY" - "$OUT" "$ARCHS" "$BATCHES" <<'PYEOF'
import json, os, sys
out, archs, batches = sys.argv[1], sys.argv[2].split(), [int(b) for b in sys.argv[3].split()]
print("| model | batch | PyTorch img/s | flowtrain img/s | speed-up | PyTorch GFLOP/s | "
      "flowtrain GFLOP/s | PyTorch peak RSS MiB | flowtrain peak RSS MiB |")
print("|---|---:|---:|---:|---:|---:|---:|---:|---:|")
for arch in archs:
    torch = {}
    with open(os.path.join(out, "torch-%s.jsonl" % arch)) as f:
        for line in f:
            r = json.loads(line)
            torch[r["batch"]] = r
    for b in batches:
        with open(os.path.join(out, "flowtrain-%s-%d.json" % (arch, b))) as f:
            doc = json.load(f)
        fr, gf, tr = doc["cases"][0], doc["gflop_per_image"], torch[b]
        print("| %s | %d | %.1f | %.1f | %.2fx | %.0f | %.0f | %.0f | %.0f |" % (
            arch, b, tr["images_per_s"], fr["images_per_s"],
            fr["images_per_s"] / tr["images_per_s"], tr["gflops"], fr["images_per_s"] * gf,
            tr["peak_rss_mib"], fr["peak_rss_mib"]))
print()
print("Median step time; training GFLOP = 3 x the encoder's FLOPs per image; PyTorch %s." %
      tr["torch"])
PYEOF
echo "raw results: $OUT"
