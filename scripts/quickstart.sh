#!/usr/bin/env bash
# The main job on the built-in default: installs what is missing, builds flowrt (Release), creates
# a Glow model for Fashion-MNIST-sized images (1x32x32, 3 levels x 8 steps, width 256), samples a
# grid from it, and scores the Fashion-MNIST test set with it.
set -euo pipefail
cd "$(dirname "$0")/.."
out=${FLOWRT_QUICKSTART_OUT:-runs/quickstart}
scripts/deps.sh
cmake -S . -B build -DCMAKE_BUILD_TYPE=Release > /dev/null
cmake --build build -j"${FLOWRT_JOBS:-2}"
mkdir -p "$out"
data=/usr/share/datasets/fashion-mnist
if [ -x build/bin/flowtrain ]; then
  build/bin/flowtrain train --data fashion-mnist --levels 3 --depth 8 --width 256 --time 10m \
    --out "$out"
  model="$out/model.flow"
else
  build/bin/flowrt init --image 1x32x32 --levels 3 --depth 8 --width 256 --seed 1 -o "$out/model.flow"
  model="$out/model.flow"
fi
build/bin/flowrt info "$model" | head -12
build/bin/flowrt sample "$model" -n 64 -t 0.7 --seed 1 -o "$out/samples.png"
build/bin/flowrt score "$model" "$data/t10k-images-idx3-ubyte.gz" --limit 1000
echo "samples: $out/samples.png"
