#!/usr/bin/env python3
"""Generates the StableDiffusionPipeline fixtures read by Tests/DiffusionModelsTests/PipelineTests.swift.

Usage (from the repository root):
    pip install -r Tests/DiffusionModelsTests/Fixtures/requirements.txt
    python Tests/DiffusionModelsTests/Fixtures/make_pipeline_fixtures.py

Each case is a whole Stable Diffusion folder in the diffusers layout, built from seeded tiny
random-weight components and written with `StableDiffusionPipeline.save_pretrained` into
Fixtures/pipeline/<case>/model/ (model_index.json, unet/, vae/, text_encoder/, tokenizer/,
scheduler/). The folder is then loaded back with `from_pretrained`, exactly as a user (and TRL's
`DefaultDDPOStableDiffusionPipeline`) would, the scheduler is converted with
`DDIMScheduler.from_config` as TRL does, and these runs are recorded from the same initial latents:

  eta 0    diffusers' `StableDiffusionPipeline.__call__` (output_type "pt": images in [0, 1])
  eta 1    the same call with the DDIM variance noise taken from a given list (diffusers draws it
           with `randn_tensor` in scheduling_ddim; the script substitutes the recorded tensors)
  ddpo     TRL 0.21's `pipeline_step` (the DDPO sampler: every latent and the log-probability of
           every step) at eta 1 with the same substituted noise (TRL draws it in
           trl.models.modeling_sd_base.scheduler_step), at the case's `ddpo_guidance` (TRL's
           pipeline_step fails without classifier-free guidance: its `_encode_prompt` call
           concatenates a missing negative embedding)

Fixtures/pipeline/<case>/io.safetensors holds:
  prompt_embeds, negative_prompt_embeds   `encode_prompt` output for the prompts / negatives
  latents                                 the initial latents [B*n, C, h, w]
  noise                                   the variance noise, one [B*n, C, h, w] slice per step
  eta0.images, eta0.latents               images [B*n, 3, H, W] in [0, 1], final latents
  eta1.images, eta1.latents
  ddpo.latents                            [B*n, T+1, C, h, w] (x_T, then every step's sample)
  ddpo.log_probs                          [B*n, T]
  ddpo.images
Fixtures/pipeline/<case>/case.json: prompts, negative prompts, steps, guidance, image size,
images per prompt, the DDIM timesteps, and the scheduler config diffusers ended up using after its
pipeline rewrote old configs (steps_offset -> 1, clip_sample -> false).

Cases:
  sd1   SD 1.x shape: conv proj_in/out, CFG (guidance 7.5) with negative prompts, the scheduler
        stored as SD 1.5 stores it (a PNDMScheduler config that DDPO converts to DDIM), tokenizer as
        vocab.json + merges.txt.
  sd2v  SD 2.x shape: linear projections, per-block head counts, gelu text encoder, v_prediction,
        "trailing" spacing, no CFG (guidance 1.0), two images per prompt, a non-square image,
        an old DDIM config (steps_offset 0, clip_sample true) that the pipeline rewrites, and every
        weight stored only as the fp16 variant.
Everything is seeded, so rerunning with the pinned versions reproduces the files.
"""

import json
import os
import shutil

import diffusers
import torch
import trl.models.modeling_sd_base as trl_sd
from diffusers import AutoencoderKL, DDIMScheduler, StableDiffusionPipeline, UNet2DConditionModel
from diffusers.schedulers import scheduling_ddim
from safetensors.torch import save_file
from transformers import CLIPTextConfig, CLIPTextModel, CLIPTokenizer

HERE = os.path.dirname(os.path.abspath(__file__))
OUT_DIR = os.path.join(HERE, "pipeline")
TINY_TOKENIZER = os.path.join(HERE, "tokenizer", "tiny", "tokenizer.json")


def tiny_tokenizer(folder, max_length, pad_token="<|endoftext|>"):
    """The tiny BPE vocabulary of the tokenizer fixtures, as vocab.json + merges.txt (the files a
    slow CLIPTokenizer reads and SD 1.x folders ship), with its own model_max_length."""
    with open(TINY_TOKENIZER, encoding="utf-8") as f:
        model = json.load(f)["model"]
    os.makedirs(folder, exist_ok=True)
    with open(os.path.join(folder, "vocab.json"), "w", encoding="utf-8") as f:
        json.dump(model["vocab"], f, ensure_ascii=False)
    merges = [m if isinstance(m, str) else " ".join(m) for m in model["merges"]]
    with open(os.path.join(folder, "merges.txt"), "w", encoding="utf-8") as f:
        f.write("#version: 0.2\n" + "\n".join(merges) + "\n")
    return CLIPTokenizer(os.path.join(folder, "vocab.json"), os.path.join(folder, "merges.txt"),
                         model_max_length=max_length, pad_token=pad_token)


def perturb(module, seed, scale=0.05):
    """Moves every parameter off its initial value (norm weights 1, biases 0, ...) so that a
    missing, swapped or mis-scaled weight changes the outputs."""
    g = torch.Generator().manual_seed(seed)
    with torch.no_grad():
        for p in module.parameters():
            p.add_(torch.randn(p.shape, generator=g) * scale)


CASES = {
    "sd1": dict(
        unet=dict(block_out_channels=(16, 32), layers_per_block=1, sample_size=8, in_channels=4, out_channels=4,
                  down_block_types=("CrossAttnDownBlock2D", "DownBlock2D"),
                  up_block_types=("UpBlock2D", "CrossAttnUpBlock2D"),
                  cross_attention_dim=16, attention_head_dim=4, norm_num_groups=8),
        vae=dict(block_out_channels=(8, 16), layers_per_block=1, latent_channels=4, norm_num_groups=4,
                 down_block_types=("DownEncoderBlock2D",) * 2, up_block_types=("UpDecoderBlock2D",) * 2,
                 sample_size=16, scaling_factor=0.18215),
        text=dict(hidden_size=16, intermediate_size=24, num_hidden_layers=2, num_attention_heads=2,
                  max_position_embeddings=12, hidden_act="quick_gelu"),
        scheduler=dict(_class_name="PNDMScheduler", beta_start=0.00085, beta_end=0.012, beta_schedule="scaled_linear",
                       num_train_timesteps=1000, set_alpha_to_one=False, skip_prk_steps=True, steps_offset=1,
                       trained_betas=None, clip_sample=False),
        prompts=["the cat", "a dog and the cat"], negative=["hello world", ""],
        steps=4, guidance=7.5, ddpo_guidance=7.5, height=16, width=16, per_prompt=1, variant=None,
    ),
    "sd2v": dict(
        unet=dict(block_out_channels=(16, 24), layers_per_block=1, sample_size=8, in_channels=4, out_channels=4,
                  down_block_types=("CrossAttnDownBlock2D", "CrossAttnDownBlock2D"),
                  up_block_types=("CrossAttnUpBlock2D", "CrossAttnUpBlock2D"),
                  cross_attention_dim=12, attention_head_dim=(2, 3), norm_num_groups=8,
                  use_linear_projection=True, upcast_attention=True),
        vae=dict(block_out_channels=(8, 8, 16), layers_per_block=1, latent_channels=4, norm_num_groups=4,
                 down_block_types=("DownEncoderBlock2D",) * 3, up_block_types=("UpDecoderBlock2D",) * 3,
                 sample_size=32, scaling_factor=0.13025),
        text=dict(hidden_size=12, intermediate_size=20, num_hidden_layers=2, num_attention_heads=3,
                  max_position_embeddings=12, hidden_act="gelu"),
        scheduler=dict(_class_name="DDIMScheduler", beta_start=0.00085, beta_end=0.012, beta_schedule="scaled_linear",
                       num_train_timesteps=1000, set_alpha_to_one=False, steps_offset=0, clip_sample=True,
                       prediction_type="v_prediction", timestep_spacing="trailing"),
        prompts=["the world is hello"], negative=None,
        steps=3, guidance=1.0, ddpo_guidance=2.0, height=16, width=32, per_prompt=2, variant="fp16",
    ),
}


def random_pipeline(case, tokenizer, scheduler, perturb_seed, scale=0.05):
    """A StableDiffusionPipeline of random-weight models from the case's "text", "unet" and "vae"
    keyword arguments, every parameter moved off its initial value (`perturb`, seeds perturb_seed,
    + 1, + 2). Draws from torch's global generator: seed it first."""
    vocab = tokenizer.get_vocab()
    text_config = CLIPTextConfig(vocab_size=len(vocab), bos_token_id=vocab["<|startoftext|>"],
                                 eos_token_id=vocab["<|endoftext|>"], pad_token_id=vocab["<|endoftext|>"],
                                 projection_dim=case["text"]["hidden_size"], **case["text"])
    text_encoder = CLIPTextModel(text_config).eval()
    unet = UNet2DConditionModel(**case["unet"]).eval()
    vae = AutoencoderKL(**case["vae"]).eval()
    for i, module in enumerate([text_encoder, unet, vae]):
        perturb(module, perturb_seed + i, scale)
    return StableDiffusionPipeline(vae=vae, text_encoder=text_encoder, tokenizer=tokenizer, unet=unet,
                                   scheduler=scheduler, safety_checker=None, feature_extractor=None,
                                   requires_safety_checker=False)


def build(name, case, folder):
    torch.manual_seed(0)
    tokenizer = tiny_tokenizer(os.path.join(folder, "_tok"), case["text"]["max_position_embeddings"])
    scheduler = DDIMScheduler(beta_start=0.00085, beta_end=0.012, beta_schedule="scaled_linear",
                              clip_sample=False, set_alpha_to_one=False, steps_offset=1)
    pipe = random_pipeline(case, tokenizer, scheduler, perturb_seed=100)
    model_dir = os.path.join(folder, "model")
    if case["variant"]:
        pipe.save_pretrained(model_dir, safe_serialization=True, variant=case["variant"])
    else:
        pipe.save_pretrained(model_dir, safe_serialization=True)
    shutil.rmtree(os.path.join(folder, "_tok"))
    # The scheduler as the case stores it (possibly another class, possibly an old config).
    write_scheduler(model_dir, case["scheduler"])
    return model_dir


def write_scheduler(model_dir, config):
    """Replaces a saved folder's scheduler with `config` as written (its class in model_index.json
    too), as folders that ship another scheduler class or an outdated config hold it."""
    sched = dict(config, _diffusers_version=diffusers.__version__)
    with open(os.path.join(model_dir, "scheduler", "scheduler_config.json"), "w") as f:
        json.dump(sched, f, indent=2, sort_keys=True)
    index_path = os.path.join(model_dir, "model_index.json")
    with open(index_path) as f:
        index = json.load(f)
    index["scheduler"] = ["diffusers", sched["_class_name"]]
    with open(index_path, "w") as f:
        json.dump(index, f, indent=2, sort_keys=True)


class NoiseFeed:
    """Stands in for `randn_tensor` in the DDIM step: hands out the recorded noise, one step at a time."""

    def __init__(self, noise):
        self.noise = noise
        self.i = 0

    def __call__(self, shape, generator=None, device=None, dtype=None, layout=None):
        out = self.noise[self.i]
        assert tuple(out.shape) == tuple(shape), (out.shape, shape)
        self.i += 1
        return out.clone().to(dtype=dtype)


def record(name, case):
    folder = os.path.join(OUT_DIR, name)
    os.makedirs(folder)
    model_dir = build(name, case, folder)

    kwargs = dict(variant=case["variant"]) if case["variant"] else {}
    pipe = StableDiffusionPipeline.from_pretrained(model_dir, torch_dtype=torch.float32, **kwargs)
    pipe.scheduler = DDIMScheduler.from_config(pipe.scheduler.config)  # as TRL's DDPO pipeline
    pipe.set_progress_bar_config(disable=True)

    n = case["per_prompt"]
    batch = len(case["prompts"]) * n
    h, w = case["height"] // pipe.vae_scale_factor, case["width"] // pipe.vae_scale_factor
    g = torch.Generator().manual_seed(7)
    latents = torch.randn(batch, pipe.unet.config.in_channels, h, w, generator=g)
    noise = torch.randn(case["steps"], batch, pipe.unet.config.in_channels, h, w, generator=g)
    cfg = case["guidance"] > 1.0
    common = dict(prompt=case["prompts"], negative_prompt=case["negative"], num_inference_steps=case["steps"],
                  guidance_scale=case["guidance"], height=case["height"], width=case["width"],
                  num_images_per_prompt=n)

    io = {"latents": latents, "noise": noise}
    with torch.no_grad():
        cond, uncond = pipe.encode_prompt(case["prompts"], "cpu", n, True, case["negative"])
        io["prompt_embeds"], io["negative_prompt_embeds"] = cond, uncond

        out = pipe(latents=latents.clone(), eta=0.0, output_type="pt", return_dict=False, **common)
        io["eta0.images"] = out[0]
        io["eta0.latents"] = pipe(latents=latents.clone(), eta=0.0, output_type="latent", return_dict=False,
                                  **common)[0]

        original = scheduling_ddim.randn_tensor
        try:
            scheduling_ddim.randn_tensor = NoiseFeed(noise)
            io["eta1.images"] = pipe(latents=latents.clone(), eta=1.0, output_type="pt", return_dict=False, **common)[0]
            scheduling_ddim.randn_tensor = NoiseFeed(noise)
            io["eta1.latents"] = pipe(latents=latents.clone(), eta=1.0, output_type="latent", return_dict=False,
                                      **common)[0]
        finally:
            scheduling_ddim.randn_tensor = original

        original = trl_sd.randn_tensor
        try:
            trl_sd.randn_tensor = NoiseFeed(noise)
            ddpo = trl_sd.pipeline_step(pipe, latents=latents.clone(), eta=1.0, output_type="pt",
                                        **dict(common, guidance_scale=case["ddpo_guidance"]))
        finally:
            trl_sd.randn_tensor = original
        io["ddpo.latents"] = torch.stack(ddpo.latents, dim=1)
        io["ddpo.log_probs"] = torch.stack(ddpo.log_probs, dim=1)
        io["ddpo.images"] = ddpo.images

    io = {k: v.detach().to(torch.float32).contiguous() for k, v in io.items()}
    save_file(io, os.path.join(folder, "io.safetensors"), metadata={"diffusers": diffusers.__version__})
    info = dict(prompts=case["prompts"], negative_prompts=case["negative"], steps=case["steps"],
                guidance=case["guidance"], ddpo_guidance=case["ddpo_guidance"], height=case["height"], width=case["width"], images_per_prompt=n,
                variant=case["variant"], classifier_free_guidance=cfg,
                timesteps=[int(t) for t in pipe.scheduler.timesteps],
                scheduler={k: v for k, v in dict(pipe.scheduler.config).items() if not k.startswith("_")})
    with open(os.path.join(folder, "case.json"), "w") as f:
        json.dump(info, f, indent=2, sort_keys=True)


def main():
    if os.path.exists(OUT_DIR):
        shutil.rmtree(OUT_DIR)
    for name, case in CASES.items():
        record(name, case)
    total = 0
    for root, _, files in os.walk(OUT_DIR):
        for fname in sorted(files):
            p = os.path.join(root, fname)
            total += os.path.getsize(p)
            print(f"{os.path.relpath(p, OUT_DIR):60s} {os.path.getsize(p):9d} bytes")
    print(f"total {total} bytes")


if __name__ == "__main__":
    main()
