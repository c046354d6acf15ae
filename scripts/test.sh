#!/usr/bin/env bash
# The test command: installs what is missing, then runs every XCTest suite in release mode
# (numeric code is 10-300x slower in debug builds).
set -euo pipefail
cd "$(dirname "$0")/.."
scripts/install-deps.sh
export TENSORKIT_NVRTC_PATH="$(scripts/install-nvrtc.sh || echo "$PWD/.build-nvrtc/missing")"  # NVRTC for the CUDA kernel compile test (skips if unavailable)
exec swift test -c release -Xswiftc -enable-testing --disable-swift-testing "$@"
