#!/usr/bin/env bash
# The OOD benchmark of `flowrt ood` on Fashion-MNIST, end to end: data files, 22 small Glow
# models trained with flowtrain, 15 `flowrt ood` runs, a Markdown table.
#
#   benchmarks/ood/run.sh            # 23 min measured on 2 shared cores (21 of them training,
#                                    # two runs at a time)
#
# (a) one-class novelty: for each class c a Glow trained on class c's training images only
#     (minus the last 500, held out); scored on the whole test set, class c as inlier (1000),
#     the other nine classes as anomalies (9000).
# (b) shifted inputs: a Glow trained on every class (minus the last 5000 training images, held
#     out) against the test set flipped, inverted, uniform noise and constant images.
# Background models (likelihood ratio, Ren et al. 2019): a smaller Glow trained on the same
# training images with each pixel replaced by a uniform random value with probability 0.15.
# The typicality test's H and threshold come from the held-out training images (--train).
#
# Everything is written under runs/ood/ (OOD_OUT): data/, models/<name>/ (flowtrain run
# directories), results/*.json|svg|txt, RESULTS.md, timing.txt. A rerun skips the models that
# are already trained (delete runs/ood/models to retrain).
#
# Knobs (environment): FLOWRT_BIN (build/bin), FASHION_MNIST_DIR, OOD_OUT, OOD_JOBS (2, parallel
# runs, each --threads 1), OOD_CLASS_TIME (150s), OOD_BG_TIME (60s), OOD_ALL_TIME (300s),
# OOD_ALL_BG_TIME (120s), OOD_BATCH_SIZE (5, the typicality test's K), OOD_SEED (1).
set -euo pipefail

ROOT=$(cd "$(dirname "$0")/../.." && pwd)
BIN=${FLOWRT_BIN:-$ROOT/build/bin}
SRC=${FASHION_MNIST_DIR:-/usr/share/datasets/fashion-mnist}
OUT=${OOD_OUT:-$ROOT/runs/ood}
JOBS=${OOD_JOBS:-2}
CLASS_TIME=${OOD_CLASS_TIME:-150s}
BG_TIME=${OOD_BG_TIME:-60s}
ALL_TIME=${OOD_ALL_TIME:-300s}
ALL_BG_TIME=${OOD_ALL_BG_TIME:-120s}
K=${OOD_BATCH_SIZE:-5}
SEED=${OOD_SEED:-1}
ARCH=(--levels 2 --depth 4 --width 64)     # 77 k parameters, 1x28x28 (no padding)
BG_ARCH=(--levels 2 --depth 2 --width 32)  # the background model: smaller
PYTHON=${PYTHON:-python3}

for tool in flowrt flowtrain; do
  if [[ ! -x $BIN/$tool ]]; then
    echo "run.sh: $BIN/$tool not found; building it (Release, -j1)" >&2
    cmake -S "$ROOT" -B "$ROOT/build" -DCMAKE_BUILD_TYPE=Release >/dev/null
    cmake --build "$ROOT/build" --target flowrt_cli flowtrain -j1 >/dev/null
    BIN=$ROOT/build/bin
  fi
done
for f in train-images-idx3-ubyte train-labels-idx1-ubyte t10k-images-idx3-ubyte \
         t10k-labels-idx1-ubyte; do
  [[ -e $SRC/$f || -e $SRC/$f.gz ]] || { echo "run.sh: $SRC/$f[.gz] not found" >&2; exit 1; }
done
mkdir -p "$OUT/models" "$OUT/results"
TIMING=$OUT/timing.txt
: >"$TIMING"
stamp() { echo "$(date -u +%FT%TZ) $*" | tee -a "$TIMING" >&2; }
T0=$(date +%s)
stamp "start: $(nproc) cores, load $(cut -d' ' -f1-3 /proc/loadavg)"

# ---- data ----
if [[ ! -e $OUT/data/.done ]]; then
  "$PYTHON" "$ROOT/benchmarks/ood/make_data.py" "$SRC" "$OUT/data"
  touch "$OUT/data/.done"
fi
stamp "data ready"

# ---- training: a queue of runs, JOBS at a time ----
train() {  # name data_dir time arch...
  local name=$1 dir=$2 time=$3
  shift 3
  local run=$OUT/models/$name
  if [[ -e $run/.done ]]; then return 0; fi
  rm -rf "$run"
  OMP_NUM_THREADS=1 "$BIN/flowtrain" train --data fashion-mnist --data-dir "$dir" "$@" \
    --batch 32 --threads 1 --time "$time" --seed "$SEED" --log-every 200 --out "$run" \
    >"$OUT/models/$name.log" 2>&1
  touch "$run/.done"
  echo "trained $name: $(tail -n 2 "$OUT/models/$name.log" | head -n 1)" >&2
}

queue() {  # runs "cmd args" lines from stdin, JOBS at a time; fails if any failed
  local failed=0 line
  while IFS= read -r line; do
    while (( $(jobs -rp | wc -l) >= JOBS )); do wait -n || failed=1; done
    eval "$line" &
  done
  while (( $(jobs -rp | wc -l) > 0 )); do wait -n || failed=1; done
  return $failed
}

D=$OUT/data
REUSED=$(find "$OUT/models" -mindepth 2 -maxdepth 2 -name .done | wc -l)
{
  echo "train all $D/all $ALL_TIME ${ARCH[*]}"
  for c in 0 1 2 3 4 5 6 7 8 9; do echo "train class$c $D/class$c $CLASS_TIME ${ARCH[*]}"; done
  echo "train all-bg $D/all-bg $ALL_BG_TIME ${BG_ARCH[*]}"
  for c in 0 1 2 3 4 5 6 7 8 9; do echo "train class$c-bg $D/class$c-bg $BG_TIME ${BG_ARCH[*]}"; done
} | queue
stamp "training done ($REUSED of 22 models reused from an earlier run)"

# ---- scoring ----
ood() {  # name model background in out train
  local name=$1
  "$BIN/flowrt" ood "$2" --background "$3" --in "$4" --out "$5" --train "$6" \
    --batch-size "$K" --complexity png --seed "$SEED" --threads 1 \
    --json "$OUT/results/$name.json" --plot "$OUT/results/$name.svg" \
    >"$OUT/results/$name.txt" 2>"$OUT/results/$name.log"
}
M=$OUT/models
{
  for c in 0 1 2 3 4 5 6 7 8 9; do
    echo "ood class$c $M/class$c/model.flow $M/class$c-bg/model.flow $D/class$c/in-images-idx3-ubyte $D/class$c/out-images-idx3-ubyte $D/class$c/holdout-images-idx3-ubyte"
  done
  for s in hflip vflip invert noise constant; do
    echo "ood shift-$s $M/all/model.flow $M/all-bg/model.flow $SRC/t10k-images-idx3-ubyte$( [[ -e $SRC/t10k-images-idx3-ubyte ]] || echo .gz) $D/shift/$s-images-idx3-ubyte $D/all/holdout-images-idx3-ubyte"
  done
} | queue
stamp "scoring done"

T1=$(date +%s)
stamp "end: $(( (T1 - T0) / 60 )) min $(( (T1 - T0) % 60 )) s wall, load $(cut -d' ' -f1-3 /proc/loadavg)"
"$PYTHON" "$ROOT/benchmarks/ood/summarise.py" "$OUT" >"$OUT/RESULTS.md"
cat "$OUT/RESULTS.md"
