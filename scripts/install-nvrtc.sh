#!/usr/bin/env bash
# Installs NVIDIA's NVRTC (a CPU-only library) from its pinned PyPI wheel into .build-nvrtc/, for the
# CUDA kernel compile test (Tests/TensorKitTests/CUDAKernelCompileTests.swift). Idempotent: does
# nothing when the library is already there. Prints the library directory on stdout (everything
# else goes to stderr); exits non-zero when the wheel cannot be fetched (e.g. no network), and the
# test then skips with "skipped: NVRTC not found (looked in …)".
#
# Usage: export TENSORKIT_NVRTC_PATH="$(scripts/install-nvrtc.sh)"
set -euo pipefail
cd "$(dirname "$0")/.."

PACKAGE=nvidia-cuda-nvrtc
VERSION=13.5.37            # CUDA 13 NVRTC; the wheel unpacks to nvidia/cu13/lib/libnvrtc.so.13
ROOT="$PWD/.build-nvrtc"
LIBDIR="$ROOT/$VERSION/nvidia/cu13/lib"

if [ -f "$LIBDIR/libnvrtc.so.13" ]; then echo "$LIBDIR"; exit 0; fi

mkdir -p "$ROOT/download"
WHEEL=$(ls "$ROOT"/download/nvidia_cuda_nvrtc-"$VERSION"-*.whl 2>/dev/null | head -1 || true)
if [ -z "$WHEEL" ]; then
    echo "install-nvrtc: downloading $PACKAGE==$VERSION" >&2
    python3 -m pip download --quiet --no-deps --only-binary=:all: "$PACKAGE==$VERSION" -d "$ROOT/download" >&2
    WHEEL=$(ls "$ROOT"/download/nvidia_cuda_nvrtc-"$VERSION"-*.whl | head -1)
fi

# A wheel is a zip; unpack with Python's zipfile (no unzip needed).
rm -rf "$ROOT/$VERSION.tmp"
python3 -c 'import sys, zipfile; zipfile.ZipFile(sys.argv[1]).extractall(sys.argv[2])' "$WHEEL" "$ROOT/$VERSION.tmp"
rm -rf "$ROOT/$VERSION" && mv "$ROOT/$VERSION.tmp" "$ROOT/$VERSION"
test -f "$LIBDIR/libnvrtc.so.13"
echo "$LIBDIR"
