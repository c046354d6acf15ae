#!/usr/bin/env bash
# Builds the GPU op check as a binary that runs on the device machine (which has no Swift):
# Swift's standard library and Foundation are linked statically; the two shared libraries it still
# needs from this machine (OpenBLAS and its Fortran runtime) are copied beside it into .gpu-bin/.
# CUDA itself is loaded at run time there (see scripts/gpu-check.sh).
set -euo pipefail
cd "$(dirname "$0")/.."
swift build -c release --static-swift-stdlib --product tensorkit-gpu-check
BIN="$(swift build -c release --static-swift-stdlib --show-bin-path)/tensorkit-gpu-check"
rm -rf .gpu-bin && mkdir -p .gpu-bin
cp "$BIN" .gpu-bin/
for lib in libopenblas.so.0 libgfortran.so.5; do
    path=$(ldd "$BIN" | awk -v l="$lib" '$1 == l { print $3 }')
    if [ -z "$path" ]; then   # libgfortran comes in through OpenBLAS
        path=$(ldd "$(ldd "$BIN" | awk '$1 == "libopenblas.so.0" { print $3 }')" | awk -v l="$lib" '$1 == l { print $3 }')
    fi
    cp -L "$path" .gpu-bin/
done
# libopenblas may also need libquadmath (x86-64 gfortran); copy it when present.
q=$(ldd .gpu-bin/libgfortran.so.5 | awk '$1 == "libquadmath.so.0" { print $3 }'); [ -n "$q" ] && cp -L "$q" .gpu-bin/ || true
ls -la .gpu-bin
