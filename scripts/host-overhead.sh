#!/usr/bin/env bash
# The CUDA backend's host-side cost, measured on a machine without a GPU.
#
# `ddpo` runs against a null CUDA driver and cuBLAS (scripts/null-cuda/null_cuda.c): every call
# succeeds, nothing runs, and launches, GEMMs, stream waits and copies are counted. What is left of
# the wall time is what the host spends to queue the work: Swift op dispatch, autograd bookkeeping,
# the caching allocator, kernel-argument marshalling. On a GPU that time overlaps the device's
# unless something makes the host wait (a stream sync), so it bounds how fast a step can go, and
# the count of waits says how often the overlap is lost. Kernels are compiled by the real NVRTC
# for sm_90, as on an H100.
#
# Usage: [DDPO=BINARY] scripts/host-overhead.sh MODEL_DIR [--no-build] [--iterations N] [--steps N]
#   MODEL_DIR: a diffusers folder; SD 1.5's configuration is what the numbers in BENCHMARKS.md use
#   (random weights: `python scripts/gpu_bench.py --device cpu --child weights --result /tmp/w.json
#   --model /tmp/sd15`, which needs torch and diffusers).
# Prints, for the UNet forward (batch 2, 64×64 latents, 77 tokens, fp16), a DDIM sampling run
# (2 prompts, CFG 7.5, 512², VAE decode) and a DDPO epoch at TRL's settings cut to one sample batch
# (6 prompts, 10 steps, train batch 3, LoRA), the host time and the null driver's counts; for the
# epoch also per training pass and per optimizer step, from three epochs that differ in one of them.
# Last, that epoch once more with TENSORKIT_CUDA_MEMORY_TRACE=1: its peak of device memory (the
# caching allocator's accounting, exact on the null driver) and the call sites of what was live at
# the peak (named by scripts/symbolize-trace.sh when addr2line is installed).
set -euo pipefail
cd "$(dirname "$0")/.."

MODEL=${1:?usage: scripts/host-overhead.sh MODEL_DIR [--no-build] [--iterations N] [--steps N]}
shift
BUILD=1 ITERATIONS=20 STEPS=20
while [ $# -gt 0 ]; do
    case "$1" in
        --no-build) BUILD=0 ;;
        --iterations) ITERATIONS=$2; shift ;;
        --steps) STEPS=$2; shift ;;
        *) echo "host-overhead: unknown option $1" >&2; exit 2 ;;
    esac
    shift
done
[ -f "$MODEL/unet/config.json" ] || { echo "host-overhead: $MODEL/unet/config.json: not found (a diffusers folder is needed)" >&2; exit 2; }

NULL=.build-null-cuda
mkdir -p "$NULL"
cc -O2 -shared -fPIC -o "$NULL/libcuda.so.1.tmp" scripts/null-cuda/null_cuda.c
mv "$NULL/libcuda.so.1.tmp" "$NULL/libcuda.so.1"
ln -sf libcuda.so.1 "$NULL/libcublas.so.13"
ln -sf libcuda.so.1 "$NULL/libcublasLt.so.13"
# DDPO=path/to/ddpo measures another build (an A/B against an older commit's binary).
if [ -z "${DDPO:-}" ]; then
    if [ "$BUILD" = 1 ]; then swift build -c release --product ddpo >&2; fi
    DDPO=.build/release/ddpo
fi

export TENSORKIT_NVRTC_PATH="${TENSORKIT_NVRTC_PATH:-$(scripts/install-nvrtc.sh)}"
export TENSORKIT_CUDA_DRIVER_PATH="$PWD/$NULL/libcuda.so.1" TENSORKIT_CUBLAS_PATH="$PWD/$NULL"
export TENSORKIT_KERNEL_CACHE="${TENSORKIT_KERNEL_CACHE:-$PWD/$NULL/kernels}"
export NULL_CUDA_STATS=1

WORK=$(mktemp -d)
trap 'rm -rf "$WORK"' EXIT

# UNet inputs as gpu_bench.py feeds them (values do not matter here): safetensors written by hand.
python3 - "$WORK/unet_in.safetensors" "$MODEL/unet/config.json" <<'EOF'
import json, random, struct, sys
cad = json.load(open(sys.argv[2]))["cross_attention_dim"]
cad = cad[0] if isinstance(cad, list) else cad
random.seed(0)
tensors = {"sample": [2, 4, 64, 64], "timestep": [1], "encoder_hidden_states": [2, 77, cad]}
header, blobs, offset = {}, [], 0
for name, shape in tensors.items():
    n = 1
    for s in shape: n *= s
    data = struct.pack(f"<{n}f", *([500.0] if name == "timestep" else [random.gauss(0, 1) for _ in range(n)]))
    header[name] = {"dtype": "F32", "shape": shape, "data_offsets": [offset, offset + len(data)]}
    blobs.append(data)
    offset += len(data)
h = json.dumps(header).encode()
h += b" " * (-len(h) % 8)
with open(sys.argv[1], "wb") as f:
    f.write(struct.pack("<Q", len(h)) + h + b"".join(blobs))
EOF

echo "== UNet forward, batch 2 (CFG), 64x64 latents, fp16: $ITERATIONS timed passes after 3 warm-up"
"$DDPO" bench-unet --model "$MODEL" --inputs "$WORK/unet_in.safetensors" --device cuda:0 \
    --warmup 3 --iterations "$ITERATIONS" 2>&1 | grep -v "^$"

echo "== DDIM sampling, 2 prompts, $STEPS steps, CFG 7.5, 512², VAE decode, fp16 (2-step warm-up first)"
"$DDPO" sample --model "$MODEL" --device cuda:0 --mixed_precision fp16 --steps "$STEPS" --warmup_steps 2 \
    --prompt "a photo of a cat" --prompt "a photo of a dog" --out "$WORK/samples" --timing --quiet 2>&1 | grep -v "^$"

echo "== DDPO epoch: 6 samples x 10 steps (batch 12 with CFG), train batch 3, LoRA r4, fp16: per pass and per optimizer step"
printf 'cat\ndog\nhorse\n' > "$WORK/prompts.txt"
python3 - "$DDPO" "$MODEL" "$WORK" <<'EOF'
import json, re, subprocess, sys
ddpo, model, work = sys.argv[1:]

def epoch(name, fraction, accumulation):
    logdir = f"{work}/logs-{name}"
    cmd = [ddpo, "train", "--model", model, "--device", "cuda:0", "--mixed_precision", "fp16", "--num_epochs", "1",
           "--sample_batch_size", "6", "--sample_num_batches_per_epoch", "1", "--train_batch_size", "3",
           "--sample_num_steps", "10", "--train_timestep_fraction", str(fraction),
           "--train_gradient_accumulation_steps", str(accumulation), "--reward", "jpeg_compressibility",
           "--prompts", f"{work}/prompts.txt", "--logdir", logdir, "--run_name", "r", "--quiet", "--save_freq", "1000",
           "--gradient_checkpointing", "false", "--report_prompts", "0"]
    run = subprocess.run(cmd, capture_output=True, text=True)
    if run.returncode != 0:
        sys.exit(f"host-overhead: ddpo train failed ({run.returncode}):\n{run.stderr[-2000:]}")
    line = [l for l in run.stderr.splitlines() if l.startswith("null-cuda:")][-1]
    counts = {}
    for part in line[len("null-cuda: "):].split(", "):
        m = re.match(r"([a-z ]+?) (\d+)", part)
        counts[m.group(1)] = int(m.group(2))
    rows = [json.loads(l) for l in open(f"{logdir}/r/metrics.jsonl") if l.strip()]
    e = [r for r in rows if "epoch_seconds" in r][-1]
    counts["host ms (training part)"] = 1000 * (e["epoch_seconds"] - e["sampling_seconds"])
    return counts

full = epoch("full", 1.0, 1)          # 20 passes, 2 optimizer steps
half = epoch("half", 0.5, 1)          # 10 passes, 2 optimizer steps
accumulated = epoch("accum", 1.0, 2)  # 20 passes, 1 optimizer step
print("| | per training pass | per optimizer step |")
print("|---|---|---|")
for k in ["host ms (training part)", "launches", "gemms", "stream syncs", "downloads", "uploads", "memsets", "device copies"]:
    print(f"| {k} | {(full[k] - half[k]) / 10:.1f} | {full[k] - accumulated[k]:.1f} |")
EOF

echo "== Device memory: the same epoch (6 samples x 10 steps, train batch 3, no checkpointing), what is live at its peak"
TENSORKIT_CUDA_MEMORY_TRACE=1 "$DDPO" train --model "$MODEL" --device cuda:0 --mixed_precision fp16 --num_epochs 1 \
    --sample_batch_size 6 --sample_num_batches_per_epoch 1 --train_batch_size 3 --sample_num_steps 10 \
    --reward jpeg_compressibility --prompts "$WORK/prompts.txt" --logdir "$WORK/logs-memory" --run_name r --quiet \
    --save_freq 1000 --gradient_checkpointing false --report_prompts 0 2> "$WORK/trace.txt" >/dev/null \
    || { echo "host-overhead: ddpo train failed:"; tail -20 "$WORK/trace.txt"; exit 1; }
python3 -c "
import json, sys
rows = [json.loads(l) for l in open(sys.argv[1]) if l.strip()]
e = [r for r in rows if 'gpu_peak_mib' in r][-1]
print('gpu_peak_mib %.1f, gpu_in_use_mib %.1f (at the end), gpu_cached_mib %.1f' % (e['gpu_peak_mib'], e['gpu_in_use_mib'], e['gpu_cached_mib']))
" "$WORK/logs-memory/r/metrics.jsonl"
if command -v addr2line >/dev/null && command -v swift >/dev/null; then
    grep -v "^null-cuda" "$WORK/trace.txt" | scripts/symbolize-trace.sh --short 4 | head -60
else
    grep -v "^null-cuda" "$WORK/trace.txt" | head -60
fi
