#!/usr/bin/env bash
# Installs the system libraries the package links (Debian/Ubuntu), only when something is missing.
set -euo pipefail
need=()
pkg-config --exists openblas 2>/dev/null || need+=(libopenblas-dev)
pkg-config --exists libpng16 2>/dev/null || need+=(libpng-dev)
pkg-config --exists libjpeg 2>/dev/null || need+=(libjpeg62-turbo-dev)
command -v pkg-config >/dev/null 2>&1 || need+=(pkg-config)
command -v g++ >/dev/null 2>&1 || need+=(g++)          # the CUDA kernels run under a host emulation in the tests
command -v python3 >/dev/null 2>&1 || need+=(python3)  # ... built into modules by scripts/emu-cuda/make_module.py
if [ ${#need[@]} -gt 0 ]; then
    sudo=""
    [ "$(id -u)" -eq 0 ] || sudo="sudo"
    echo "installing: ${need[*]}" >&2
    $sudo apt-get update -qq
    DEBIAN_FRONTEND=noninteractive $sudo apt-get install -y -qq "${need[@]}" >/dev/null
fi
