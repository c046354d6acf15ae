#!/usr/bin/env bash
# Peak GPU memory of LoRA DDPO at 512×512 with train batch 1 (ddpo-pytorch's "under 10 GB" claim):
# one epoch of one 20-step sample on the random SD 1.5 folder that scripts/gpu_bench.py leaves in
# /tmp/sd15, fp16, gradient checkpointing on, off and auto (which measures a pass and decides; its
# numbers are printed). Run after scripts/gpu-bench.sh.
set -uo pipefail
cd "$(dirname "$0")/../.."
source scripts/gpu/env.sh
MODEL="${1:-/tmp/sd15}"
[ -d "$MODEL" ] || { echo "memory: no model folder $MODEL (run scripts/gpu-bench.sh first)"; exit 1; }
printf 'a photo of a cat\n' > /tmp/memory-prompts.txt
for gc in ${MEMORY_GC:-true false auto}; do
    L=/tmp/memory-run-$gc; rm -rf $L
    timeout 120 "$DDPO" train --model "$MODEL" --device cuda:0 --mixed_precision fp16 --num_epochs 1 \
        --sample_batch_size 1 --sample_num_batches_per_epoch 1 --sample_num_steps 20 --train_batch_size 1 \
        --reward jpeg_compressibility --prompts /tmp/memory-prompts.txt --report_prompts 0 --save_freq 1000 \
        --gradient_checkpointing $gc --logdir $L --run_name r --quiet 2>&1 | tail -3
    python3 -c "
import json
rows = [json.loads(l) for l in open('$L/r/metrics.jsonl')]
m = {k: v for r in rows for k, v in r.items() if k.startswith('gpu_') or k.endswith('seconds') or 'checkpointing' in k}
print('memory: LoRA, 512x512, train batch 1, gradient checkpointing $gc:', {k: round(v, 1) for k, v in m.items()})
" 2>&1 | tail -2
done
