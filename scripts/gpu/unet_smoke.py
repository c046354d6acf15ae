#!/usr/bin/env python3
"""A quick first look on the GPU machine: an SD 1.5-config UNet with random weights (diffusers),
fp16, batch 2, 64x64 latents; diffusers' eager SDPA forward time vs `ddpo bench-unet` on the same
weights and inputs, and the relative error of ours. (scripts/gpu_bench.py is the full benchmark.)"""
import json, os, subprocess, sys, time
import torch
from diffusers import UNet2DConditionModel
from safetensors.torch import save_file, load_file

ddpo, root = sys.argv[1], "/tmp/unet-smoke"
os.makedirs(root + "/model/unet", exist_ok=True)
cfg = dict(sample_size=64, in_channels=4, out_channels=4, down_block_types=["CrossAttnDownBlock2D"] * 3 + ["DownBlock2D"],
           up_block_types=["UpBlock2D"] + ["CrossAttnUpBlock2D"] * 3, block_out_channels=[320, 640, 1280, 1280],
           layers_per_block=2, cross_attention_dim=768, attention_head_dim=8)
torch.manual_seed(0)
t0 = time.time()
with torch.device("cuda"):
    unet = UNet2DConditionModel(**cfg).half().eval()
unet.save_pretrained(root + "/model/unet", safe_serialization=True)
print(f"weights: {sum(p.numel() for p in unet.parameters())/1e6:.0f} M params in {time.time()-t0:.1f} s", flush=True)
g = torch.Generator().manual_seed(1)
x = torch.randn(2, 4, 64, 64, generator=g); e = torch.randn(2, 77, 768, generator=g); t = torch.tensor([500.0])
save_file({"sample": x, "timestep": t, "encoder_hidden_states": e}, root + "/in.safetensors")
xc, ec = x.cuda().half(), e.cuda().half()
times = []
with torch.no_grad():
    for i in range(23):
        torch.cuda.synchronize(); s = time.perf_counter()
        ref = unet(xc, t.cuda(), ec).sample
        torch.cuda.synchronize()
        if i >= 3: times.append((time.perf_counter() - s) * 1000)
times.sort()
ref = ref.float().cpu()
print(f"diffusers: median {times[len(times)//2]:.2f} ms, min {times[0]:.2f} ms, peak {torch.cuda.max_memory_allocated()/2**20:.0f} MiB, finite {bool(torch.isfinite(ref).all())}", flush=True)
del unet; torch.cuda.empty_cache()
r = subprocess.run([ddpo, "bench-unet", "--model", root + "/model", "--inputs", root + "/in.safetensors", "--out", root + "/ours.safetensors",
                    "--device", "cuda:0", "--mixed_precision", "fp16", "--warmup", "3", "--iterations", "20"],
                   capture_output=True, text=True, timeout=240)
print("ours:", r.stdout.strip()[-400:], r.stderr.strip()[-2000:], "rc", r.returncode, flush=True)
if r.returncode == 0:
    out = load_file(root + "/ours.safetensors")["out"]
    err = ((out - ref).abs().max() / ref.abs().max()).item()
    print(f"relative error ours vs diffusers: {err:.3e} (mean abs {(out - ref).abs().mean().item():.3e}); ratio {json.loads(r.stdout.strip().splitlines()[-1])['median_ms'] / times[len(times)//2]:.2f}")
    prof = subprocess.run([ddpo, "bench-unet", "--model", root + "/model", "--inputs", root + "/in.safetensors",
                           "--device", "cuda:0", "--mixed_precision", "fp16", "--warmup", "1", "--iterations", "1"],
                          capture_output=True, text=True, timeout=120, env=dict(os.environ, TENSORKIT_CUDA_PROFILE="1"))
    print("profile (one forward, synchronised per kernel):", prof.stdout.strip())
    print(prof.stderr.strip()[-3500:])
