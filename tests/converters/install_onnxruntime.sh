#!/usr/bin/env bash
# Installs onnxruntime-node (pinned in package-lock.json) into tests/converters/node_modules.
# --ignore-scripts: the package's install script only downloads the optional CUDA/TensorRT
# providers; the CPU binding ships inside the npm package itself.
set -euo pipefail
cd "$(dirname "$0")"
npm ci --ignore-scripts --no-audit --no-fund
node -e "const ort = require('onnxruntime-node'); \
  if (!ort.listSupportedBackends().some(b => b.name === 'cpu' && b.bundled)) process.exit(1); \
  console.log('onnxruntime-node ' + ort.env.versions.node + ' (CPU) loads');"
