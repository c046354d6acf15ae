#!/usr/bin/env bash
# Builds the `ddpo` command for the GPU machine (which has no Swift) into .gpu-bin/:
#   .gpu-bin/bundle.tar.xz   ddpo (stripped; Swift's runtime and Foundation linked statically) and the
#                            shared libraries it needs from this machine (OpenBLAS, its Fortran
#                            runtime, libpng, libjpeg), compressed to fit the device call's 64 MiB.
# scripts/gpu-check.sh and scripts/gpu-bench.sh unpack it there. `ddpo gpu-check` is the TensorKit op
# check (also built alone as tensorkit-gpu-check). CUDA itself is loaded at run time there.
#
# Foundation's URLSession needs libcurl, which the device may lack and which would drag OpenSSL and
# more along: the GPU build links a stub libcurl.so.4 (scripts/gpu/curl-stub.c) whose calls all fail,
# so only the http:// reward is unavailable in this bundle.
set -euo pipefail
cd "$(dirname "$0")/.."
STUB=.build-gpu-stub
mkdir -p "$STUB"
cc -shared -fPIC -O2 -Wl,-soname,libcurl.so.4 -o "$STUB/libcurl.so.4" scripts/gpu/curl-stub.c
ln -sf libcurl.so.4 "$STUB/libcurl.so"
swift build -c release --static-swift-stdlib --product ddpo -Xlinker -L"$PWD/$STUB"
BIN="$(swift build -c release --static-swift-stdlib --show-bin-path)/ddpo"
STAGE=$(mktemp -d)
trap 'rm -rf "$STAGE"' EXIT
cp "$BIN" "$STAGE/ddpo"
strip "$STAGE/ddpo"
# Every shared library ddpo loads that is not part of the C runtime (present on any Linux).
LD_LIBRARY_PATH="$PWD/$STUB" ldd "$BIN" | awk '$3 ~ /^\// { print $1, $3 }' | while read -r name path; do
    case "$name" in
        libc.so*|libm.so*|libdl.so*|libpthread.so*|librt.so*|ld-linux*|libgcc_s.so*|libstdc++.so*|libz.so*|libcurl.so*) ;;
        *) cp -L "$path" "$STAGE/$name" ;;
    esac
done
cp "$STUB/libcurl.so.4" "$STAGE/"
rm -rf .gpu-bin && mkdir -p .gpu-bin
tar -C "$STAGE" -cf - . | xz -T0 -6 > .gpu-bin/bundle.tar.xz
tar -tvJf .gpu-bin/bundle.tar.xz
ls -la .gpu-bin
