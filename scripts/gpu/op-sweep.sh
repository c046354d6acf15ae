#!/usr/bin/env bash
# Random op programs on the GPU against PyTorch (scripts/tensorkit_sweep.py through `ddpo eval-ops`,
# so no Swift is needed there): float32 (TF32 off) against PyTorch's float32, float16 and bfloat16
# against float64 PyTorch on the same rounded inputs (2e-2 of the value range, or within 10x of
# PyTorch's own CUDA run in that dtype), and a float32 run at the larger sizes (--big). The op check
# (`ddpo gpu-check`) tests each op on chosen shapes; this draws shapes, strides, broadcasts and
# arguments at random, so the vector-access and fast-copy paths also meet odd sizes and views.
# Each run ends with one summary line; failed cases are listed above it, and the first 10 of each
# run are kept under $OUT/op-sweep/ for replay (`ddpo eval-ops CASE/program.json CASE/inputs.safetensors
# OUT.safetensors --device cuda:0 --dtype D`).
#   OP_SWEEP_CASES (default 300 per dtype), OP_SWEEP_SEED (default 11)
set -uo pipefail
cd "$(dirname "$0")/../.."
source scripts/gpu/env.sh
OUT="${OUT:-/tmp/op-sweep-out}"
cases="${OP_SWEEP_CASES:-300}"; seed="${OP_SWEEP_SEED:-11}"
if ! python3 -c 'import torch, safetensors.torch' 2>/dev/null; then
    echo "op-sweep: skipped: python3 cannot import torch and safetensors here"; exit 3
fi
status=0
for run in "float32" "float16" "bfloat16" "float32 --big"; do
    set -- $run
    python3 scripts/tensorkit_sweep.py --bin "$DDPO eval-ops" --device cuda:0 --ref-device cuda --dtype "$@" \
        --cases "$cases" --seed "$seed" --keep "$OUT/op-sweep/$1${2:-}" --keep-limit 10 2>&1 | grep -vE "^case [0-9]+ .*torch refused" | tail -n 15
    [ "${PIPESTATUS[0]}" = 0 ] || status=1
done
exit $status
