#!/usr/bin/env bash
# The GPU benchmark, for the device machine (one call, under 8 minutes): our `ddpo` binary against
# diffusers 0.35.2 / TRL 0.21 at Stable Diffusion 1.5 scale with random weights — UNet forward (with
# an output check), 50-step sampling, one DDPO epoch. Prints a markdown table at the end and writes
# $OUT/bench.md, $OUT/bench.json and $OUT/bench-logs.txt. See scripts/gpu_bench.py.
#
# Here (build machine):
#     scripts/fetch-bench-wheels.sh     # -> .whl/{diffusers,trl,peft}*.whl (the device has no network)
#     scripts/build-gpu-bin.sh          # -> .gpu-bin/bundle.tar.xz (ddpo + its .so deps; scripts/gpu/env.sh)
# Device machine (the `run` tool): carry [".gpu-bin", ".whl"], timeout_s 480, command
#     scripts/gpu-bench.sh
# Everything that travels (tracked files ~20 MB + .gpu-bin + .whl) must stay under 64 MiB.
#
# Environment: BENCH_BUDGET (seconds for gpu_bench.py's phases, default 330), BENCH_TIMEOUT (hard
# limit for it, default 400); extra arguments go to gpu_bench.py (e.g. --fp32).
set -uo pipefail
cd "$(dirname "$0")/.."
T0=$(date +%s)

# Our binary (unpacked from .gpu-bin/bundle.tar.xz) and the library search variables, as
# scripts/gpu-check.sh; sourced before PYTHONPATH points at the carried wheels.
source scripts/gpu/env.sh
if [ ! -x "$DDPO" ] && [ -f "$GPU_BIN_DIR/bundle.tar.xz" ]; then  # tar -J needs xz; Python's lzma does not
    python3 -c 'import sys, tarfile; tarfile.open(sys.argv[1], "r:xz").extractall(sys.argv[2])' \
        "$GPU_BIN_DIR/bundle.tar.xz" "$GPU_BIN_DIR" || true
fi
export DDPO
[ -x "$DDPO" ] || echo "gpu-bench: no executable $DDPO; our side will fail" >&2

# The carried wheels: diffusers and trl (absent there) and peft (shadows the device's, version unread).
if ls .whl/*.whl >/dev/null 2>&1; then
    python3 -m pip install -q --no-index --no-deps --no-compile --no-cache-dir --upgrade --target /tmp/site .whl/*.whl \
        || echo "gpu-bench: wheel install failed; the reference side will fail" >&2
    export PYTHONPATH=/tmp/site${PYTHONPATH:+:$PYTHONPATH}
else
    echo "gpu-bench: no .whl/*.whl (run scripts/fetch-bench-wheels.sh here and carry .whl)" >&2
fi

nvidia-smi --query-gpu=name,driver_version,memory.total --format=csv,noheader 2>/dev/null || true
echo "gpu-bench: setup took $(( $(date +%s) - T0 )) s" >&2
PYTHONUNBUFFERED=1 timeout -k 15 "${BENCH_TIMEOUT:-400}" \
    python3 scripts/gpu_bench.py --budget "${BENCH_BUDGET:-330}" "$@"
rc=$?
echo "gpu-bench: exit $rc after $(( $(date +%s) - T0 )) s" >&2
exit $rc
