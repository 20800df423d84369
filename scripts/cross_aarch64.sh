#!/usr/bin/env bash
# libflowrt for 64-bit Arm Linux (aarch64), cross-built on an x86-64 Debian bookworm machine
# with Debian's cross toolchain, and tested there under qemu-user:
#   1. installs what is missing (the arm64 architecture for multiarch packages, the cross
#      compiler, qemu-user, the target's libpng/zlib/FlatBuffers packages);
#   2. a small native build of the `flowrt` command (build-aarch64-host/), for step 5;
#   3. configures build-aarch64/ with cmake/toolchains/aarch64-linux-gnu.cmake: libflowrt (core
#      and reference backend), the `flowrt` command and the runtime's tests; no trainer, CUDA,
#      MPI, benchmarks or fuzzers (the oneDNN backend too, see below);
#   4. runs the tests under qemu (ctest: CMAKE_CROSSCOMPILING_EMULATOR); those that cannot mean
#      anything under an emulator are listed as disabled, each with its reason;
#   5. checks that the format is portable: the same `flowrt init` writes the same bytes on both
#      machines, a model written on the host scores the same images to the same bits/dim on
#      aarch64 (1e-5), one written on aarch64 scores the same on the host, and the aarch64
#      library's encode/decode round trip gives every pixel back.
#
#   scripts/cross_aarch64.sh                   everything (needs root or sudo when a package is missing)
#   FLOWRT_JOBS=N scripts/cross_aarch64.sh     build jobs (default 2)
#
# oneDNN is left out. Debian bookworm has libdnnl-dev:arm64 (2.6.3), but it cannot be installed
# beside libdnnl-dev:amd64, which scripts/deps.sh installs for the native builds: its
# dnnl_config.h differs (GPU runtime none vs OpenCL) and dpkg refuses to overwrite it. Built
# against a copy unpacked elsewhere, the backend compiles and its parity suite passes under qemu,
# but Debian's arm64 library runs its convolutions on oneDNN's reference kernels ("conv ref:any",
# no Arm Compute Library), so it fails the optimised-kernel test and brings nothing the
# reference backend does not.
set -euo pipefail
cd "$(dirname "$0")/.."
root=$(pwd)
jobs=${FLOWRT_JOBS:-2}
triple=aarch64-linux-gnu
build="build-aarch64"
host_build="build-aarch64-host"
start=$SECONDS
stamp() { echo "== [$(date -u +%H:%M:%S), $((SECONDS - start)) s] $*"; }

# ---- 1. packages ---------------------------------------------------------------------------
# Header-only FlatBuffers, but libflatbuffers-dev:arm64 holds the CMake package for the target
# (its flatc target is the host's flatbuffers-compiler, a Multi-Arch: foreign package).
stamp "packages"
SUDO=""
[ "$(id -u)" -eq 0 ] || SUDO="sudo"
host_packages=(build-essential cmake pkg-config flatbuffers-compiler libflatbuffers-dev
  doctest-dev libpng-dev zlib1g-dev crossbuild-essential-arm64 qemu-user)
target_packages=(libpng-dev:arm64 zlib1g-dev:arm64 libflatbuffers-dev:arm64)
update=0
if ! dpkg --print-foreign-architectures | grep -qx arm64; then
  echo "adding the arm64 architecture (dpkg --add-architecture arm64)"
  $SUDO dpkg --add-architecture arm64
  update=1
fi
missing=()
for p in "${host_packages[@]}" "${target_packages[@]}"; do
  dpkg-query -W -f='${Status}' "$p" 2> /dev/null | grep -q "install ok installed" || missing+=("$p")
done
if [ ${#missing[@]} -gt 0 ]; then
  echo "installing: ${missing[*]}"
  update=1
fi
if [ $update = 1 ]; then
  $SUDO apt-get update -q
fi
if [ ${#missing[@]} -gt 0 ]; then
  DEBIAN_FRONTEND=noninteractive $SUDO apt-get install -y -q --no-install-recommends "${missing[@]}"
fi
# How ctest runs the target's programs (the toolchain file's CMAKE_CROSSCOMPILING_EMULATOR).
qemu=(qemu-aarch64 -L "/usr/$triple" -E "LD_LIBRARY_PATH=/usr/$triple/lib")

# ---- 2. the host's flowrt, for the format check ---------------------------------------------
stamp "host build of the flowrt command ($host_build)"
mkdir -p $host_build
cmake -S . -B $host_build -DCMAKE_BUILD_TYPE=Release -DFLOWRT_BUILD_TESTS=OFF \
  -DFLOWRT_BUILD_TRAINER=OFF -DFLOWRT_BUILD_BENCHMARKS=OFF -DFLOWRT_WITH_ONEDNN=OFF \
  -DFLOWRT_WITH_CUDA=OFF -DFLOWRT_WITH_MPI=OFF -DFLOWRT_WITH_NCCL=OFF > $host_build/configure.log 2>&1 \
  || { cat $host_build/configure.log; exit 1; }
cmake --build $host_build -j"$jobs" --target flowrt_cli > /dev/null

# ---- 3. the cross build -------------------------------------------------------------------
stamp "cross build ($build)"
cmake -S . -B $build -DCMAKE_TOOLCHAIN_FILE="$root/cmake/toolchains/$triple.cmake" \
  -DCMAKE_BUILD_TYPE=Release -DFLOWRT_BUILD_TRAINER=OFF -DFLOWRT_BUILD_BENCHMARKS=OFF \
  -DFLOWRT_WITH_ONEDNN=OFF -DFLOWRT_WITH_CUDA=OFF -DFLOWRT_WITH_MPI=OFF -DFLOWRT_WITH_NCCL=OFF \
  -DFLOWRT_FUZZ=OFF
cmake --build $build -j"$jobs"
for f in $build/lib/libflowrt.so $build/bin/flowrt $build/bin/flowrt_tests; do
  machine=$(readelf -h "$f" | sed -n 's/^ *Machine: *//p')
  echo "$f: $machine"
  [ "$machine" = "AArch64" ] || { echo "FAIL: $f is not an aarch64 binary"; exit 1; }
done
# The core links the C/C++ runtime and OpenMP only: no backend toolkit, no libflatbuffers.
scripts/check_core_deps.sh $build/lib/libflowrt.so
if readelf -d $build/lib/libflowrt.so | grep -q 'NEEDED.*flatbuffers'; then
  echo "FAIL: libflowrt.so links libflatbuffers (the runtime uses its headers only)"
  exit 1
fi

# ---- 4. the tests under qemu ----------------------------------------------------------------
stamp "tests under $(${qemu[0]} --version | head -1)"
ctest --test-dir $build --output-on-failure
if [ -s $build/cross-disabled-tests.txt ]; then
  echo "disabled in the cross build (shown as 'Not Run (Disabled)' above):"
  sed 's/^/  /' $build/cross-disabled-tests.txt
fi
echo "not built here: the trainer's suites (FLOWRT_BUILD_TRAINER=OFF), cuda, oneDNN (see above), benchmarks, fuzzers"

# ---- 5. the format across the two machines ----------------------------------------------------
stamp "the .flow format: x86-64 <-> aarch64"
work=$build/format-check
rm -rf $work && mkdir -p $work
x86=$host_build/bin/flowrt
arm() { "${qemu[@]}" $build/bin/flowrt "$@"; }

# Images: 12 of 3x32x32, in an IDX file (big-endian header), half smooth patterns and half noise.
be32() { printf '\\x%02x\\x%02x\\x%02x\\x%02x' $(($1 >> 24 & 255)) $(($1 >> 16 & 255)) $(($1 >> 8 & 255)) $(($1 & 255)); }
make_idx() {  # make_idx N H W OUT
  local n=$1 h=$2 w=$3 i x y v s=12345 px buf
  buf='\x00\x00\x08\x03'$(be32 "$n")$(be32 "$h")$(be32 "$w")
  for ((i = 0; i < n; i++)); do
    for ((y = 0; y < h; y++)); do
      for ((x = 0; x < w; x++)); do
        if ((i % 2)); then
          s=$(((s * 1103515245 + 12345) & 0x7fffffff)); v=$((s >> 16 & 255))
        else
          v=$(((x * 7 + y * 5 + i * 29 + (x * y) % 23) & 255))
        fi
        printf -v px '\\x%02x' "$v"; buf+=$px
      done
    done
  done
  printf '%b' "$buf" > "$4"
}
# Grey 32x32 images: an RGB model sees each channel repeated (flowrt score).
make_idx 12 32 32 $work/images.idx

# Two models: affine coupling with LU 1x1 convolutions, and additive coupling with dense ones
# and five-bit pixels; random nets, so that every layer matters.
models=("--image 3x32x32 --levels 3 --depth 4 --width 32 --random-nets --seed 7"
  "--image 3x32x32 --levels 2 --depth 3 --width 24 --coupling additive --permutation dense --n-bits 5 --random-nets --seed 11")
compare() {  # compare A B WHAT: per-image bits/dim to 1e-5
  awk -F'\t' -v what="$3" 'NR == FNR { if (NF == 2) a[$1] = $2; next }
    NF == 2 { n++; d = $2 - a[$1]; if (d < 0) d = -d; if (d > m) m = d; if (!($1 in a)) bad = 1 }
    END { printf "  %s: %d images, largest |difference| %.2e bits/dim\n", what, n, m;
          exit (n == 12 && !bad && m <= 1e-5) ? 0 : 1 }' "$1" "$2" \
    || { echo "FAIL: $3: bits/dim differ by more than 1e-5"; paste "$1" "$2"; exit 1; }
}
status=0
for k in 0 1; do
  echo "model $k: flowrt init ${models[$k]}"
  # The same command writes the same bytes on both machines (the initial values, the layout).
  # Twice at most: the files hold the UTC date, which may turn between the two.
  for attempt in 1 2; do
    # shellcheck disable=SC2086
    $x86 init ${models[$k]} -o $work/x86_$k.flow > /dev/null
    # shellcheck disable=SC2086
    arm init ${models[$k]} -o $work/arm_$k.flow > /dev/null
    cmp -s $work/x86_$k.flow $work/arm_$k.flow && break
    if [ $attempt = 2 ]; then
      echo "FAIL: flowrt init wrote different files on x86-64 and on aarch64 (cmp -l: $(cmp -l $work/x86_$k.flow $work/arm_$k.flow | wc -l) bytes differ)"
      status=1
    fi
  done
  echo "  x86-64 and aarch64 wrote $(stat -c %s $work/x86_$k.flow) and $(stat -c %s $work/arm_$k.flow) bytes: $(cmp -s $work/x86_$k.flow $work/arm_$k.flow && echo identical || echo DIFFERENT)"
  for writer in x86 arm; do
    f=$work/${writer}_$k.flow
    $x86 score $f $work/images.idx --backend ref --per-image > $work/score_${writer}_$k.x86
    arm score $f $work/images.idx --backend ref --per-image > $work/score_${writer}_$k.arm
    compare $work/score_${writer}_$k.x86 $work/score_${writer}_$k.arm \
      "written on $writer, scored on x86-64 vs aarch64"
  done
  # The aarch64 library's round trip on the x86-written model: every pixel comes back.
  arm reconstruct $work/x86_$k.flow $work/images.idx --backend ref > $work/reconstruct_$k.arm \
    || { cat $work/reconstruct_$k.arm; echo "FAIL: aarch64 round trip changed pixels"; status=1; }
  echo "  aarch64 round trip: $(grep pixels_changed $work/reconstruct_$k.arm)"
done
[ $status = 0 ] || exit 1
stamp "aarch64: build, tests and format check passed"
