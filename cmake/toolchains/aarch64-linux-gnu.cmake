# Cross build for 64-bit Arm Linux with Debian's cross toolchain (crossbuild-essential-arm64)
# and multiarch libraries (libpng-dev:arm64, zlib1g-dev:arm64, libflatbuffers-dev:arm64; see
# scripts/cross_aarch64.sh). There is no sysroot: the target's libraries live in
# /usr/lib/aarch64-linux-gnu beside the host's, the cross compiler's own (libc, libstdc++,
# libgomp) in /usr/aarch64-linux-gnu. Programs (flatc) are the host's.
#
#   cmake -S . -B build-aarch64 -DCMAKE_TOOLCHAIN_FILE=cmake/toolchains/aarch64-linux-gnu.cmake
#
# ctest runs the target's programs under qemu-user (qemu-aarch64 -L /usr/aarch64-linux-gnu,
# package qemu-user); FLOWRT_CROSS_TRIPLE / FLOWRT_QEMU override the triplet and the emulator.
set(CMAKE_SYSTEM_NAME Linux)
set(CMAKE_SYSTEM_PROCESSOR aarch64)

if(NOT FLOWRT_CROSS_TRIPLE)
  set(FLOWRT_CROSS_TRIPLE aarch64-linux-gnu)
endif()
set(CMAKE_C_COMPILER ${FLOWRT_CROSS_TRIPLE}-gcc)
set(CMAKE_CXX_COMPILER ${FLOWRT_CROSS_TRIPLE}-g++)
# Multiarch: find_library/find_package look in /usr/lib/<triplet> (never the host's directory).
set(CMAKE_LIBRARY_ARCHITECTURE ${FLOWRT_CROSS_TRIPLE})
set(CMAKE_FIND_ROOT_PATH_MODE_PROGRAM NEVER)
# pkg-config: the target's .pc files only.
set(ENV{PKG_CONFIG_LIBDIR} /usr/lib/${FLOWRT_CROSS_TRIPLE}/pkgconfig:/usr/share/pkgconfig)

# -L: the target's dynamic loader is the cross toolchain's (/usr/<triplet>/lib). The C and C++
# runtime must come from the same place: the multiarch libc6:<arch> (a dependency of
# libpng-dev:<arch>) is another glibc build, and the host's ld.so.cache sends the loader to it;
# a loader and a libc of two builds hang in the first pthread_create (seen with qemu 7.2,
# 2.36-8cross1 vs 2.36-9+deb12u14). LD_LIBRARY_PATH puts the toolchain's runtime first; the
# multiarch libraries (libpng, zlib) are still found through the cache.
if(NOT FLOWRT_QEMU)
  find_program(FLOWRT_QEMU NAMES qemu-${CMAKE_SYSTEM_PROCESSOR} qemu-${CMAKE_SYSTEM_PROCESSOR}-static)
endif()
if(FLOWRT_QEMU)
  set(CMAKE_CROSSCOMPILING_EMULATOR ${FLOWRT_QEMU} -L /usr/${FLOWRT_CROSS_TRIPLE}
      -E LD_LIBRARY_PATH=/usr/${FLOWRT_CROSS_TRIPLE}/lib)
endif()
