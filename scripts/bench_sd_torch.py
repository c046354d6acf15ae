#!/usr/bin/env python3
"""The diffusers side of scripts/bench-sd.sh, and the maker of the random-weight models both sides load.

    python scripts/bench_sd_torch.py make --out .build-bench-models          # writes tiny/ and small/ (if missing)
    python scripts/bench_sd_torch.py make --out .build-bench-models sd15     # SD 1.5's full size (4.2 GB, opt-in)
    python scripts/bench_sd_torch.py case --models .build-bench-models tiny unet_fwd_b2 [--budget 2] [--threads 2]

`make` builds two Stable Diffusion folders in the diffusers layout with seeded random weights
(`StableDiffusionPipeline.save_pretrained`, safetensors, float32), a DDIM scheduler with SD 1.5's
settings and the real CLIP BPE vocabulary (derived from open_clip's merges, as
Tests/DiffusionModelsTests/Fixtures/make_tokenizer_fixtures.py does), model_max_length 77:

  tiny   diffusers' SD test config (the shape of hf-internal-testing/tiny-stable-diffusion-torch):
         UNet (32, 64), DownBlock2D + CrossAttnDownBlock2D, layers_per_block 2, attention_head_dim 8,
         cross_attention_dim 32, sample_size 32 (1.43 M parameters); VAE (32, 64), 2 levels (64x64
         images); CLIP text encoder hidden 32, 5 layers, 4 heads, intermediate 37.
  small  SD 1.5's block layout at reduced width: UNet (64, 128, 256, 256), 3 CrossAttnDownBlock2D +
         DownBlock2D, UNetMidBlock2DCrossAttn, UpBlock2D + 3 CrossAttnUpBlock2D, layers_per_block 1,
         attention_head_dim 8, cross_attention_dim 256, sample_size 32 (23.6 M parameters, the
         "small" pipeline of REFERENCES.md section 7); VAE (64, 128, 256, 256), 4 levels,
         layers_per_block 2 (256x256 images); text encoder hidden 256, 4 layers, 4 heads,
         intermediate 1024.
  sd15   Stable Diffusion 1.5's configuration at full size, made only when asked for: UNet (320, 640,
         1280, 1280), layers_per_block 2, cross_attention_dim 768, sample_size 64 (860 M parameters);
         VAE (128, 256, 512, 512), 512x512 images; CLIP ViT-L/14's text encoder (hidden 768, 12 layers,
         12 heads, intermediate 3072). About 4.2 GB of float32 safetensors.

`case` runs one timed case in this process (so the process's peak RSS is the case's) and prints one
tab-separated line: config/case, median ms, repetitions, minimum ms, peak RSS MiB. Timing rule (as
scripts/bench_torch.py and RLAlgorithms/Benchmarks/main.swift): one warm-up call (two when it is
short), then repetitions for about `--budget` seconds, at least 3 and at most 25; the median.

Cases:
  unet_fwd_b2     UNet forward, no grad, batch 2 (one CFG step), timestep 500, 77 text tokens
  unet_fwdbwd_b1  UNet forward + backward, batch 1, every weight requiring grad, fixed upstream grad
  unet_lora_fwdbwd_b2
                  one DDPO training pass: UNet forward + backward at batch 2 (train batch 1 with CFG),
                  base weights frozen, PEFT LoRA rank 4 (alpha 4, gaussian init) on to_q/to_k/to_v/
                  to_out.0 as TRL's DDPO pipeline adds it; fixed upstream grad
  vae_decode_b1   VAE decode of one latent (post_quant_conv + decoder), no grad
  sample          StableDiffusionPipeline.__call__: one prompt, guidance 7.5 (UNet batch 2), DDIM
                  eta 0, 20 steps (tiny) / 10 steps (small), text encoding and VAE decode included
"""

import argparse
import gzip
import json
import os
import resource
import sys
import time

from bench_common import clip_byte_symbols

SAMPLE_STEPS = {"tiny": 20, "small": 10, "sd15": 10}
PROMPT = "a photo of a cat"

def sd15_layout(unet_channels, layers_per_block, latent_size, cross_attention_dim, vae_channels, image_size, text):
    """SD 1.5's pipeline layout (3 CrossAttnDownBlock2D + DownBlock2D, mid block with cross-attention,
    UpBlock2D + 3 CrossAttnUpBlock2D; a 4-level VAE) at the given widths and sizes."""
    return dict(
        unet=dict(block_out_channels=unet_channels, layers_per_block=layers_per_block, sample_size=latent_size,
                  in_channels=4, out_channels=4,
                  down_block_types=("CrossAttnDownBlock2D",) * 3 + ("DownBlock2D",),
                  up_block_types=("UpBlock2D",) + ("CrossAttnUpBlock2D",) * 3,
                  cross_attention_dim=cross_attention_dim, attention_head_dim=8),
        vae=dict(block_out_channels=vae_channels, in_channels=3, out_channels=3, latent_channels=4,
                 layers_per_block=2, down_block_types=("DownEncoderBlock2D",) * 4,
                 up_block_types=("UpDecoderBlock2D",) * 4, sample_size=image_size),
        text=text,
    )


CONFIGS = {
    "tiny": dict(
        unet=dict(block_out_channels=(32, 64), layers_per_block=2, sample_size=32, in_channels=4, out_channels=4,
                  down_block_types=("DownBlock2D", "CrossAttnDownBlock2D"),
                  up_block_types=("CrossAttnUpBlock2D", "UpBlock2D"),
                  cross_attention_dim=32, attention_head_dim=8),
        vae=dict(block_out_channels=(32, 64), in_channels=3, out_channels=3, latent_channels=4,
                 down_block_types=("DownEncoderBlock2D",) * 2, up_block_types=("UpDecoderBlock2D",) * 2,
                 sample_size=64),
        text=dict(hidden_size=32, intermediate_size=37, num_hidden_layers=5, num_attention_heads=4),
    ),
    # SD 1.5's block layout: at reduced width (small) and at full size (sd15).
    "small": sd15_layout(unet_channels=(64, 128, 256, 256), layers_per_block=1, latent_size=32, cross_attention_dim=256,
                         vae_channels=(64, 128, 256, 256), image_size=256,
                         text=dict(hidden_size=256, intermediate_size=1024, num_hidden_layers=4, num_attention_heads=4)),
    "sd15": sd15_layout(unet_channels=(320, 640, 1280, 1280), layers_per_block=2, latent_size=64, cross_attention_dim=768,
                        vae_channels=(128, 256, 512, 512), image_size=512,
                        text=dict(hidden_size=768, intermediate_size=3072, num_hidden_layers=12, num_attention_heads=12)),
}
# Made by `make` unless named: sd15 is large and slow, for explicit runs only.
DEFAULT_CONFIGS = ("tiny", "small")


def peak_rss_mib():
    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024.0  # Linux: KiB


# MARK: - making the models

def clip_vocab_files(folder):
    """vocab.json + merges.txt of the real CLIP tokenizer (49408 tokens)."""
    import importlib.util
    spec = importlib.util.find_spec("open_clip")
    path = os.path.join(spec.submodule_search_locations[0], "bpe_simple_vocab_16e6.txt.gz")
    with gzip.open(path, "rt", encoding="utf-8") as f:
        merges = f.read().split("\n")[1:49152 - 256 - 2 + 1]
    symbols = clip_byte_symbols()
    vocab = symbols + [s + "</w>" for s in symbols]
    vocab += ["".join(m.split()) for m in merges]
    vocab += ["<|startoftext|>", "<|endoftext|>"]
    assert len(vocab) == 49408
    os.makedirs(folder, exist_ok=True)
    with open(os.path.join(folder, "vocab.json"), "w", encoding="utf-8") as f:
        json.dump({t: i for i, t in enumerate(vocab)}, f, ensure_ascii=False)
    with open(os.path.join(folder, "merges.txt"), "w", encoding="utf-8") as f:
        f.write("#version: 0.2\n" + "\n".join(merges) + "\n")
    return os.path.join(folder, "vocab.json"), os.path.join(folder, "merges.txt")


def make(out, names=DEFAULT_CONFIGS):
    import shutil
    import torch
    from diffusers import AutoencoderKL, DDIMScheduler, StableDiffusionPipeline, UNet2DConditionModel
    from transformers import CLIPTextConfig, CLIPTextModel, CLIPTokenizer

    import diffusers
    import transformers
    # The folders depend on the libraries that wrote them too: transformers 5 saves the text encoder's
    # keys without "text_model." and the tokenizer as tokenizer.json only, which transformers 4 cannot read.
    versions = {"torch": torch.__version__, "diffusers": diffusers.__version__, "transformers": transformers.__version__}
    for name in names:
        cfg = CONFIGS[name]
        folder = os.path.join(out, name)
        stamp = os.path.join(folder, ".config.json")
        wanted = json.dumps({"config": cfg, "versions": versions}, sort_keys=True)
        if os.path.exists(stamp) and open(stamp).read() == wanted:
            continue
        shutil.rmtree(folder, ignore_errors=True)
        torch.manual_seed(0)
        vocab_path, merges_path = clip_vocab_files(os.path.join(out, "_tokenizer"))
        tokenizer = CLIPTokenizer(vocab_path, merges_path, model_max_length=77, pad_token="<|endoftext|>")
        text_config = CLIPTextConfig(vocab_size=49408, bos_token_id=49406, eos_token_id=49407, pad_token_id=49407,
                                     max_position_embeddings=77, projection_dim=cfg["text"]["hidden_size"],
                                     hidden_act="quick_gelu", **cfg["text"])
        pipe = StableDiffusionPipeline(
            vae=AutoencoderKL(**cfg["vae"]).eval(), text_encoder=CLIPTextModel(text_config).eval(),
            tokenizer=tokenizer, unet=UNet2DConditionModel(**cfg["unet"]).eval(),
            scheduler=DDIMScheduler(beta_start=0.00085, beta_end=0.012, beta_schedule="scaled_linear",
                                    clip_sample=False, set_alpha_to_one=False, steps_offset=1),
            safety_checker=None, feature_extractor=None, requires_safety_checker=False)
        pipe.save_pretrained(folder, safe_serialization=True)
        shutil.rmtree(os.path.join(out, "_tokenizer"))
        with open(stamp, "w") as f:
            f.write(wanted)
        params = sum(p.numel() for p in pipe.unet.parameters()) / 1e6
        print(f"made {folder} (UNet {params:.2f} M parameters)", file=sys.stderr)


# MARK: - timing

def measure(body, budget, min_reps=3, max_reps=25):
    t0 = time.perf_counter()
    body()
    first = time.perf_counter() - t0
    if first < 0.2:
        body()
    reps = max(min_reps, min(max_reps, int(budget / max(first, 1e-6))))
    times = []
    for _ in range(reps):
        t0 = time.perf_counter()
        body()
        times.append((time.perf_counter() - t0) * 1000)
    times.sort()
    mid = len(times) // 2
    median = times[mid] if len(times) % 2 else (times[mid - 1] + times[mid]) / 2
    return median, times[0], reps


def setup_case(folder, config, case):
    import torch
    from diffusers import AutoencoderKL, StableDiffusionPipeline, UNet2DConditionModel

    g = torch.Generator().manual_seed(0)
    if case.startswith("unet_"):
        unet = UNet2DConditionModel.from_pretrained(os.path.join(folder, "unet")).eval()
        batch = 1 if case == "unet_fwdbwd_b1" else 2
        size = unet.config.sample_size
        x = torch.randn(batch, unet.config.in_channels, size, size, generator=g)
        ehs = torch.randn(batch, 77, unet.config.cross_attention_dim, generator=g)
        t = torch.tensor(500)
        if case == "unet_fwd_b2":
            unet.requires_grad_(False)

            def body():
                with torch.no_grad():
                    unet(x, t, ehs).sample
            return body
        if case == "unet_lora_fwdbwd_b2":
            from peft import LoraConfig
            unet.requires_grad_(False)
            unet.add_adapter(LoraConfig(r=4, lora_alpha=4, init_lora_weights="gaussian",
                                        target_modules=["to_k", "to_q", "to_v", "to_out.0"]))
            upstream = torch.randn(batch, unet.config.out_channels, size, size, generator=g)

            def body():
                unet(x, t, ehs).sample.backward(upstream)
                unet.zero_grad(set_to_none=True)
            return body
        if case == "unet_fwdbwd_b1":
            unet.requires_grad_(True)
            upstream = torch.randn(batch, unet.config.out_channels, size, size, generator=g)

            def body():
                unet(x, t, ehs).sample.backward(upstream)
                unet.zero_grad(set_to_none=True)
            return body
    if case == "vae_decode_b1":
        vae = AutoencoderKL.from_pretrained(os.path.join(folder, "vae")).eval().requires_grad_(False)
        levels = len(vae.config.block_out_channels)
        size = vae.config.sample_size // (2 ** (levels - 1))
        z = torch.randn(1, vae.config.latent_channels, size, size, generator=g)

        def body():
            with torch.no_grad():
                vae.decode(z).sample
        return body
    if case == "sample":
        pipe = StableDiffusionPipeline.from_pretrained(folder, torch_dtype=torch.float32)
        pipe.set_progress_bar_config(disable=True)
        steps = SAMPLE_STEPS[config]

        def body():
            pipe(prompt=[PROMPT], num_inference_steps=steps, guidance_scale=7.5, eta=0.0, output_type="pt",
                 generator=torch.Generator().manual_seed(0)).images
        return body
    raise SystemExit(f"unknown case {case}")


def run_case(args):
    import torch
    torch.set_num_threads(args.threads)
    folder = os.path.join(args.models, args.config)
    body = setup_case(folder, args.config, args.case)
    median, minimum, reps = measure(body, args.budget)
    print(f"{args.config}/{args.case}\t{median:.3f}\t{reps}\t{minimum:.3f}\t{peak_rss_mib():.1f}", flush=True)


def main():
    parser = argparse.ArgumentParser()
    sub = parser.add_subparsers(dest="cmd", required=True)
    m = sub.add_parser("make")
    m.add_argument("--out", default=".build-bench-models")
    m.add_argument("configs", nargs="*", help=f"which folders to make, of {sorted(CONFIGS)} (default: tiny small)")
    c = sub.add_parser("case")
    c.add_argument("--models", default=".build-bench-models")
    c.add_argument("--threads", type=int, default=int(os.environ.get("TORCH_THREADS", "2")))
    c.add_argument("--budget", type=float, default=2.0)
    c.add_argument("config", choices=sorted(CONFIGS))
    c.add_argument("case")
    args = parser.parse_args()
    if args.cmd == "make":
        unknown = [c for c in args.configs if c not in CONFIGS]
        if unknown:
            parser.error(f"make: unknown config {unknown[0]!r}; known: {', '.join(sorted(CONFIGS))}")
        make(args.out, args.configs or DEFAULT_CONFIGS)
    else:
        run_case(args)


if __name__ == "__main__":
    main()
