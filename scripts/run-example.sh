#!/usr/bin/env bash
# The main job (until the `ddpo train` app lands): installs what is missing, builds in release
# and runs notebooks-md/01-tensors-and-autograd.md through the `ddpo` command.
set -euo pipefail
cd "$(dirname "$0")/.."
scripts/install-deps.sh
exec swift run -c release ddpo notebook 01
