#!/usr/bin/env bash
# The main job on the built-in default: installs what is missing, builds flowrt (Release), trains
# Glow on Fashion-MNIST on the CPU for 10 minutes (1x32x32, 3 levels x 8 steps, width 256),
# exports the model, writes a sample grid and prints the test bits/dim on the full test set.
#   FLOWRT_QUICKSTART_TIME=2m   another training budget (flowtrain's --time: 90s, 2m, 1h)
#   FLOWRT_QUICKSTART_OUT=DIR   another output folder (default runs/quickstart)
set -euo pipefail
cd "$(dirname "$0")/.."
out=${FLOWRT_QUICKSTART_OUT:-runs/quickstart}
budget=${FLOWRT_QUICKSTART_TIME:-10m}
scripts/deps.sh
cmake -S . -B build -DCMAKE_BUILD_TYPE=Release > /dev/null
cmake --build build -j"${FLOWRT_JOBS:-2}"
mkdir -p "$out"
data=/usr/share/datasets/fashion-mnist
if [ -x build/bin/flowtrain ]; then
  build/bin/flowtrain train --data fashion-mnist --levels 3 --depth 8 --width 256 --time "$budget" \
    --out "$out"
  model="$out/model.flow"
else
  build/bin/flowrt init --image 1x32x32 --levels 3 --depth 8 --width 256 --seed 1 -o "$out/model.flow"
  model="$out/model.flow"
fi
build/bin/flowrt info "$model" | head -12
build/bin/flowrt sample "$model" -n 64 -t 0.7 --seed 1 -o "$out/samples.png"
if [ -x build/bin/flowtrain ]; then
  build/bin/flowtrain eval "$model" --data fashion-mnist | tee "$out/eval.txt"
else
  build/bin/flowrt score "$model" "$data/t10k-images-idx3-ubyte.gz" | tee "$out/eval.txt"
fi
# The run is good only if both results came out: a PNG grid and a finite bits/dim.
head -c 8 "$out/samples.png" | od -An -tx1 | tr -d ' \n' | grep -q '^89504e470d0a1a0a$' \
  || { echo "quickstart: $out/samples.png is not a PNG" >&2; exit 1; }
bpd=$(grep 'bits/dim' "$out/eval.txt" | grep -Eo '[0-9]+\.[0-9]{6}' | head -1 || true)
[ -n "$bpd" ] || { echo "quickstart: no finite test bits/dim in the evaluation" >&2; exit 1; }
echo "samples: $out/samples.png"
echo "test bits/dim: $bpd"
