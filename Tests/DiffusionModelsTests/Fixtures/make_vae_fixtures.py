#!/usr/bin/env python3
"""Generates the AutoencoderKL fixtures read by Tests/DiffusionModelsTests/VAETests.swift.

Usage (from the repository root):
    pip install -r Tests/DiffusionModelsTests/Fixtures/requirements.txt
    python Tests/DiffusionModelsTests/Fixtures/make_vae_fixtures.py

For each case below a seeded random-weight diffusers AutoencoderKL is written with
save_pretrained(safe_serialization=True) into Fixtures/vae/<case>/vae/ (config.json plus
diffusion_pytorch_model.safetensors, or only diffusion_pytorch_model.fp16.safetensors for the case
stored as the fp16 variant), and Fixtures/vae/<case>/io.safetensors holds:
  x                       input images [B, in_channels, H, W] in [-1, 1]
  mean, logvar, std, var  the posterior (DiagonalGaussianDistribution of encode(x)); logvar clamped
  kl                      posterior.kl() [B]
  noise, sample           a fixed standard-normal draw and mean + std * noise
  z, dec                  a fixed latent [B, latent_channels, h, w] and decode(z).sample
  forward                 vae(x).sample (decode of the posterior mode)
  grad_out                a fixed upstream gradient for decode(sample)
  grad.x                  d/dx of  sum(decode(mean + std * noise) * grad_out) + 0.5 * sum(kl)
  grad.<parameter key>    the same loss's gradients of a few parameters
  grad_dec, grad.z        a fixed upstream gradient for decode(z), and d/dz of sum(decode(z) * grad_dec)
Fixtures/vae/distribution.safetensors: DiagonalGaussianDistribution on hand-made parameters whose
log-variances fall outside the clamp range [-30, 20] (keys params, mean, logvar, std, var, kl, mode),
the KL to a second distribution (other_params, kl_other) and the NLL of a tensor (nll_sample, nll).

The weights start from diffusers' default init; then every GroupNorm weight/bias and every bias
gets a random offset (defaults are ones/zeros), so a missing, swapped or misplaced tensor shows.
The "legacy_keys" case is saved with the pre-0.14 attention names (query/key/value/proj_attn),
which diffusers renames on load; its reference outputs come from the model diffusers loaded back.
The fp16 case computes its reference from the fp16-rounded weights upcast to float32, so the Swift
side (which loads the fp16 file into float32) sees exactly the same weights.
Everything is seeded, so rerunning with the pinned versions reproduces the files.
"""

import json
import os
import platform
import shutil

import diffusers
import safetensors
import torch
from diffusers import AutoencoderKL
from diffusers.models.autoencoders.vae import DiagonalGaussianDistribution
from safetensors.torch import load_file, save_file

OUT_DIR = os.path.join(os.path.dirname(os.path.abspath(__file__)), "vae")

# Parameters whose gradients are stored (when the model has them).
GRAD_PARAMS = [
    "encoder.conv_in.weight",
    "encoder.down_blocks.0.resnets.0.norm1.weight",
    "encoder.down_blocks.0.downsamplers.0.conv.weight",
    "encoder.down_blocks.1.resnets.0.conv_shortcut.weight",
    "encoder.mid_block.attentions.0.group_norm.weight",
    "encoder.mid_block.attentions.0.to_q.weight",
    "encoder.mid_block.attentions.0.to_v.bias",
    "encoder.mid_block.resnets.1.conv2.weight",
    "encoder.conv_out.bias",
    "quant_conv.weight",
    "post_quant_conv.weight",
    "decoder.conv_in.weight",
    "decoder.mid_block.attentions.0.to_out.0.weight",
    "decoder.up_blocks.0.resnets.2.norm2.bias",
    "decoder.up_blocks.0.upsamplers.0.conv.weight",
    "decoder.up_blocks.1.resnets.0.conv_shortcut.weight",
    "decoder.conv_norm_out.weight",
    "decoder.conv_out.weight",
]

CASES = {
    # Stable Diffusion's VAE layout shrunk: two levels, attention in the mid blocks, quant convs.
    "sd_tiny": dict(
        config=dict(
            in_channels=3, out_channels=3, latent_channels=4, block_out_channels=(8, 16), layers_per_block=1,
            down_block_types=("DownEncoderBlock2D",) * 2, up_block_types=("UpDecoderBlock2D",) * 2,
            norm_num_groups=4, sample_size=32,
        ),
        batch=2, size=(32, 32),
    ),
    # Three levels, two resnets per block (three per decoder block), a non-square size whose halves
    # are odd (the encoder's (0, 1, 0, 1) pad matters), SDXL's scaling factor, SD3's shift factor, no
    # quant_conv, no mid-block attention, a different output channel count.
    "three_level": dict(
        config=dict(
            in_channels=3, out_channels=2, latent_channels=3, block_out_channels=(8, 12, 16), layers_per_block=2,
            down_block_types=("DownEncoderBlock2D",) * 3, up_block_types=("UpDecoderBlock2D",) * 3,
            norm_num_groups=4, sample_size=40, scaling_factor=0.13025, shift_factor=0.0609,
            use_quant_conv=False, use_post_quant_conv=True, mid_block_add_attention=False, force_upcast=False,
        ),
        batch=2, size=(25, 38),
    ),
    # Stored only as diffusion_pytorch_model.fp16.safetensors; no post_quant_conv, "swish" spelling,
    # a list sample_size and latents_mean/latents_std (kept in the config, used by pipelines only).
    "fp16_variant": dict(
        config=dict(
            in_channels=3, out_channels=3, latent_channels=4, block_out_channels=(12, 24), layers_per_block=1,
            down_block_types=("DownEncoderBlock2D",) * 2, up_block_types=("UpDecoderBlock2D",) * 2,
            norm_num_groups=4, sample_size=[24, 24], act_fn="swish", use_post_quant_conv=False,
            latents_mean=[0.1, -0.2, 0.3, 0.0], latents_std=[1.1, 0.9, 1.0, 1.2],
        ),
        batch=1, size=(24, 24), fp16=True,
    ),
    # One level (diffusers' default block list: no down/upsampling), weights saved with the legacy
    # attention key names that diffusers still reads.
    "legacy_keys": dict(
        config=dict(
            in_channels=3, out_channels=3, latent_channels=2, block_out_channels=(8,), layers_per_block=1,
            norm_num_groups=2, sample_size=8,
        ),
        batch=2, size=(8, 6), legacy=True,
    ),
}

LEGACY_NAMES = {"to_q": "query", "to_k": "key", "to_v": "value", "to_out.0": "proj_attn"}


def generated_by(name, case):
    return json.dumps({
        "generator": "Tests/DiffusionModelsTests/Fixtures/make_vae_fixtures.py",
        "case": name,
        "diffusers": diffusers.__version__,
        "torch": torch.__version__,
        "safetensors": safetensors.__version__,
        "python": platform.python_version(),
        "weights": "float16 variant (reference computed from the rounded weights in float32)"
                   if case.get("fp16") else "float32",
    }, sort_keys=True)


def randomise(model, gen):
    with torch.no_grad():
        for key, p in model.named_parameters():
            if "norm" in key:
                p.add_(0.2 * torch.randn(p.shape, generator=gen))
            elif key.endswith(".bias"):
                p.add_(0.05 * torch.randn(p.shape, generator=gen))


def save(model, name, case, vae_dir):
    if case.get("fp16"):
        model.half().save_pretrained(vae_dir, safe_serialization=True, variant="fp16")
        model.float()
        return model
    model.save_pretrained(vae_dir, safe_serialization=True)
    if not case.get("legacy"):
        return model
    # Rewrite the attention keys with the old names, then let diffusers load them back.
    path = os.path.join(vae_dir, "diffusion_pytorch_model.safetensors")
    tensors = load_file(path)
    renamed = {}
    for key, value in tensors.items():
        for new, old in LEGACY_NAMES.items():
            marker = f".attentions.0.{new}."
            if marker in key:
                key = key.replace(marker, f".attentions.0.{old}.")
        renamed[key] = value
    assert any(".query." in k for k in renamed) and not any(".to_q." in k for k in renamed)
    save_file(renamed, path, metadata={"format": "pt"})
    reloaded = AutoencoderKL.from_pretrained(vae_dir)
    for key, value in model.state_dict().items():
        assert torch.equal(reloaded.state_dict()[key], value), key
    return reloaded.eval()


def make(name, case, seed):
    torch.manual_seed(seed)
    gen = torch.Generator().manual_seed(seed + 1)
    model = AutoencoderKL(**case["config"])
    randomise(model, gen)
    if case.get("fp16"):
        model = model.half().float()
    model.eval()

    case_dir = os.path.join(OUT_DIR, name)
    shutil.rmtree(case_dir, ignore_errors=True)
    vae_dir = os.path.join(case_dir, "vae")
    model = save(model, name, case, vae_dir)

    cfg = model.config
    b = case["batch"]
    h, w = case["size"]
    x = torch.rand(b, cfg.in_channels, h, w, generator=gen) * 2 - 1

    with torch.no_grad():
        posterior = model.encode(x).latent_dist
        forward = model(x).sample
    lh, lw = posterior.mean.shape[2:]
    noise = torch.randn(posterior.mean.shape, generator=gen)
    z = torch.randn(b, cfg.latent_channels, lh, lw, generator=gen)

    # Full path: encode → sample with the given noise → decode, plus the KL term.
    x_leaf = x.clone().requires_grad_(True)
    post = model.encode(x_leaf).latent_dist
    sample = post.mean + post.std * noise
    dec_sample = model.decode(sample).sample
    grad_out = torch.randn(dec_sample.shape, generator=gen)
    loss = (dec_sample * grad_out).sum() + 0.5 * post.kl().sum()
    model.zero_grad(set_to_none=True)
    loss.backward()
    params = dict(model.named_parameters())
    param_grads = {"grad." + k: params[k].grad.clone() for k in GRAD_PARAMS if k in params}

    # Decoder alone.
    z_leaf = z.clone().requires_grad_(True)
    dec = model.decode(z_leaf).sample
    grad_dec = torch.randn(dec.shape, generator=gen)
    dec.backward(grad_dec)

    tensors = {
        "x": x, "mean": posterior.mean, "logvar": posterior.logvar, "std": posterior.std, "var": posterior.var,
        "kl": posterior.kl(), "noise": noise, "sample": posterior.mean + posterior.std * noise,
        "z": z, "dec": dec, "forward": forward, "grad_out": grad_out, "grad.x": x_leaf.grad,
        "grad_dec": grad_dec, "grad.z": z_leaf.grad, **param_grads,
    }
    tensors = {k: v.detach().contiguous() for k, v in tensors.items()}
    save_file(tensors, os.path.join(case_dir, "io.safetensors"), metadata={"generated_by": generated_by(name, case)})
    size = sum(os.path.getsize(os.path.join(d, f)) for d, _, fs in os.walk(case_dir) for f in fs)
    nparams = sum(p.numel() for p in model.parameters())
    print(f"{name}: {nparams} parameters, {size / 1e3:.0f} kB, latents {tuple(posterior.mean.shape)}, "
          f"dec {tuple(dec.shape)} max|dec| {dec.abs().max():.3f}, logvar in "
          f"[{posterior.logvar.min():.2f}, {posterior.logvar.max():.2f}], {len(param_grads)} parameter gradients")


def make_distribution(seed):
    gen = torch.Generator().manual_seed(seed)
    params = torch.randn(2, 6, 3, 4, generator=gen) * 3
    # Log-variances beyond both ends of the clamp.
    params[0, 3, 0, 0] = -45.0
    params[0, 4, 1, 2] = 27.5
    params[1, 5, 2, 3] = 20.0
    params[1, 3, 2, 1] = -30.5
    d = DiagonalGaussianDistribution(params)
    other = DiagonalGaussianDistribution(torch.randn(2, 6, 3, 4, generator=gen))
    nll_sample = torch.randn(2, 3, 3, 4, generator=gen)
    tensors = {"params": params, "mean": d.mean, "logvar": d.logvar, "std": d.std, "var": d.var,
               "kl": d.kl(), "mode": d.mode(), "other_params": other.parameters, "kl_other": d.kl(other),
               "nll_sample": nll_sample, "nll": d.nll(nll_sample)}
    tensors = {k: v.detach().contiguous() for k, v in tensors.items()}
    path = os.path.join(OUT_DIR, "distribution.safetensors")
    save_file(tensors, path, metadata={"generated_by": generated_by("distribution", {})})
    print(f"distribution: {os.path.getsize(path) / 1e3:.1f} kB")


def main():
    torch.use_deterministic_algorithms(True)
    os.makedirs(OUT_DIR, exist_ok=True)
    for i, (name, case) in enumerate(CASES.items()):
        make(name, case, seed=3000 + 10 * i)
    make_distribution(seed=3999)
    total = sum(os.path.getsize(os.path.join(d, f)) for d, _, fs in os.walk(OUT_DIR) for f in fs)
    print(f"total {total / 1e6:.2f} MB")


if __name__ == "__main__":
    main()
