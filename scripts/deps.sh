#!/usr/bin/env bash
# Installs the Debian packages flowrt builds and tests with, when any is missing. Proven on a
# minimal Debian bookworm root (debootstrap --variant=minbase): nothing else is assumed.
# Usage: scripts/deps.sh [extra-package...]
#        scripts/deps.sh --only package...   just these (a script that needs a few, not all)
set -euo pipefail
only=0
if [ "${1:-}" = --only ]; then
  only=1
  shift
fi
# ocl-icd-opencl-dev: Debian's oneDNN is built with its OpenCL runtime, and its CMake package
# requires the OpenCL headers and loader, which libdnnl-dev only recommends.
packages=(build-essential cmake pkg-config clang clang-format flatbuffers-compiler
  libflatbuffers-dev doctest-dev libdnnl-dev ocl-icd-opencl-dev libpng-dev zlib1g-dev python3
  python3-numpy python3-flatbuffers python3-onnx nodejs dataset-fashion-mnist libopenmpi-dev
  openmpi-bin "$@")
((only)) && packages=("$@")
missing=()
for p in "${packages[@]}"; do
  dpkg-query -W -f='${Status}' "$p" 2>/dev/null | grep -q "install ok installed" || missing+=("$p")
done
# Debian's nodejs comes without npm; NodeSource's includes it (and conflicts with Debian's npm).
((only)) || command -v npm > /dev/null 2>&1 || missing+=(npm)
if [ ${#missing[@]} -gt 0 ]; then
  echo "installing: ${missing[*]}"
  SUDO=""
  [ "$(id -u)" -eq 0 ] || SUDO="sudo"
  $SUDO apt-get update -q
  DEBIAN_FRONTEND=noninteractive $SUDO apt-get install -y -q --no-install-recommends "${missing[@]}"
fi
