#!/usr/bin/env bash
# Downloads into .whl/ the Python wheels that scripts/gpu-bench.sh installs on the device machine
# (no network there) for the reference side of the GPU benchmark (scripts/gpu_bench.py).
#
#   scripts/fetch-bench-wheels.sh                  # diffusers 0.35.2, trl 0.21.0, peft 0.21.2 (~5.2 MB)
#   scripts/fetch-bench-wheels.sh --transformers4  # plan B: also transformers 4.56.2,
#                                                  # huggingface_hub 0.36.2, tokenizers 0.22.2 (~16 MB more)
#
# The device (nvidia-h200 / nvidia-h100-x1 image, see /work/.library/device/KINDS.md) has Python
# 3.12.3 with torch 2.11.0+cu130, transformers 5.17.0, huggingface_hub 1.33.0, tokenizers 0.23.2,
# accelerate 1.15.0, safetensors 0.8.0, numpy 2.5.2, pillow, peft (version unread), and also pandas,
# requests, rich, regex, httpx, pyyaml, psutil — but neither diffusers nor trl.
#
# What was checked (2026-11-27, on the build machine, CPU, /work/venv's torch 2.15 with
# PYTHONPATH=/tmp/gb/site holding exactly the device's transformers 5.17.0, huggingface_hub 1.33.0,
# tokenizers 0.23.2, accelerate 1.15.0 plus these wheels): StableDiffusionPipeline (DDIM, CFG, VAE
# decode), the UNet, CLIPTokenizer on a vocab.json/merges.txt folder, and TRL 0.21's DDPOTrainer
# (DefaultDDPOStableDiffusionPipeline, use_lora=True, 2 epochs of `step`) all run:
# `python scripts/gpu_bench.py --device cpu --tiny`. So TRL 0.21 + diffusers 0.35.2 need NO older
# transformers. Notes from that check:
#   - peft is carried (0.21.2) because the device's version is unknown and peft <= 0.17 cannot
#     import with transformers 5 (`HybridCache` is gone); 0.21.2 works with transformers 5.17
#     (and with 4.56.2: the plan-B set below).
#   - TRL 0.21's trainer imports pandas (trl/trainer/utils.py) and diffusers imports requests; the
#     device has both, so they are not carried.
#   - transformers 5 saves CLIPTextModel weights without the `text_model.` prefix; gpu_bench.py
#     rewrites the file in SD 1.5's layout (transformers 5 loads that layout back).
# Plan B (--transformers4) is the set this repository's fixtures were made with; carry it only
# if the device's transformers 5.17 fails there (gpu-bench.sh installs whatever is in .whl/).
#
# Size: all wheels travel with the working tree, whose limit is 64 MiB in all (tracked files
# ~20 MB + .gpu-bin + .whl): keep .whl small.
set -euo pipefail
cd "$(dirname "$0")/.."

WHEELS=(diffusers==0.35.2 trl==0.21.0 peft==0.21.2)
if [ "${1:-}" = "--transformers4" ]; then
    WHEELS+=(transformers==4.56.2 huggingface_hub==0.36.2 tokenizers==0.22.2)
fi

tmp=$(mktemp -d)
trap 'rm -rf "$tmp"' EXIT
python3 -m pip download -q --no-deps --only-binary=:all: --python-version 3.12 --implementation cp \
    --platform manylinux_2_28_x86_64 --platform manylinux_2_17_x86_64 --platform manylinux2014_x86_64 \
    -d "$tmp" "${WHEELS[@]}"
# One version of each package only (two stop the device's install): replace .whl/'s wheels.
mkdir -p .whl
rm -f .whl/*.whl
mv "$tmp"/*.whl .whl/
ls -l .whl/*.whl | awk '{ printf "%10d  %s\n", $5, $NF }'
du -cb .whl/*.whl | tail -1 | awk '{ printf "%.1f MB in .whl/\n", $1 / 1e6 }'
