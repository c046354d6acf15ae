#!/usr/bin/env bash
# The quick GPU check (one device call, ~2 minutes; carry [".gpu-bin", ".whl"]):
#   1. the TensorKit op check (ddpo gpu-check);
#   2. an SD 1.5-config UNet with random weights: diffusers vs `ddpo bench-unet` (time, error), then a
#      per-kernel profile of ours (TENSORKIT_CUDA_PROFILE=1);
#   3. the built-in model on the GPU: `ddpo sample` in float32 against the CPU's images, fp16 timing,
#      and a 2-epoch `ddpo train` in fp16 and in float32.
# scripts/gpu-bench.sh is the full benchmark.
set -uo pipefail
cd "$(dirname "$0")/../.."
source scripts/gpu/env.sh
OUT="${OUT:-/tmp/smoke-out}"; mkdir -p "$OUT"
python3 -m pip install -q --no-index --no-deps --no-compile --no-cache-dir --target /tmp/site .whl/diffusers-*.whl >/dev/null 2>&1
nvidia-smi --query-gpu=name,driver_version,memory.total --format=csv,noheader
T=$(date +%s)
timeout 200 "$DDPO" gpu-check 2>&1 | grep -vE "pass .*s$" | tee "$OUT/gpu-check.txt"
echo "== gpu-check: rc ${PIPESTATUS[0]} in $(( $(date +%s) - T )) s"
T=$(date +%s)
PYTHONPATH=/tmp/site PYTHONUNBUFFERED=1 timeout 200 python3 scripts/gpu/unet_smoke.py "$DDPO" 2>&1 | tail -40 | tee "$OUT/unet.txt"
echo "== unet smoke: $(( $(date +%s) - T )) s"

T=$(date +%s)
S=/tmp/smoke-sample; rm -rf $S
P=(--prompt "a red circle on a blue background" --prompt "a green square on a white background" --steps 20 --seed 3 --quiet)
timeout 60 "$DDPO" sample "${P[@]}" --device cpu --out $S/cpu --timing
timeout 60 "$DDPO" sample "${P[@]}" --device cuda:0 --mixed_precision no --out $S/gpu32 --timing
timeout 60 "$DDPO" sample "${P[@]}" --device cuda:0 --mixed_precision fp16 --out $S/gpu16 --timing
python3 - <<'PY'
from safetensors.numpy import load_file
import numpy as np
c = load_file("/tmp/smoke-sample/cpu/samples.safetensors")
for name in ["gpu32", "gpu16"]:
    try:
        g = load_file(f"/tmp/smoke-sample/{name}/samples.safetensors")
        for k in ["images", "latents"]:
            d = np.abs(g[k] - c[k]).max() / max(np.abs(c[k]).max(), 1e-12)
            print(f"sample {name} vs cpu: {k} max rel diff {d:.2e}, finite {np.isfinite(g[k]).all()}")
    except Exception as e:
        print(f"sample {name}: {e}")
PY
echo "== sample: $(( $(date +%s) - T )) s"

T=$(date +%s)
for mp in fp16 no; do
    L=/tmp/smoke-train-$mp; rm -rf $L
    timeout 120 "$DDPO" train --device cuda:0 --mixed_precision $mp --num_epochs 2 --logdir $L --run_name r --quiet --report_prompts 2 2>&1 | tail -5
    echo "-- train $mp: rc $? after $(( $(date +%s) - T )) s"
    python3 -c "
import json
for l in open('$L/r/metrics.jsonl'):
    o = json.loads(l)
    if 'reward_mean' in o or 'epoch_seconds' in o: print({k: round(v, 4) for k, v in o.items() if k != 'step'})
" 2>&1 | tail -6
done
echo "== train: $(( $(date +%s) - T )) s"
