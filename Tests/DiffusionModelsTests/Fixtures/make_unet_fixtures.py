#!/usr/bin/env python3
"""Generates the UNet2DConditionModel fixtures read by Tests/DiffusionModelsTests/UNetTests.swift.

Usage (from the repository root):
    pip install -r Tests/DiffusionModelsTests/Fixtures/requirements.txt
    python Tests/DiffusionModelsTests/Fixtures/make_unet_fixtures.py

For each case below, a seeded random-weight diffusers UNet2DConditionModel is written with
save_pretrained(safe_serialization=True) into Fixtures/unet/<case>/unet/ (config.json plus
diffusion_pytorch_model.safetensors, or diffusion_pytorch_model.fp16.safetensors for the case whose
weights are stored in float16 to stay small), and Fixtures/unet/<case>/io.safetensors holds:
  sample, timestep, encoder_hidden_states   the forward inputs (timestep keeps the dtype/shape
                                             diffusers was given: float32 [B], 0-d float64, int64 [1]...)
  t_emb, emb                                 time_proj output and time_embedding output
  out                                        diffusers' float32 output
  grad_out                                   a fixed random upstream gradient
  grad.sample, grad.encoder_hidden_states    input gradients autograd gives for grad_out
  grad.<parameter key>                       gradients of a few parameters
Fixtures/unet/blocks.safetensors holds single building blocks in the configurations the VAE uses
(each under "<block>.": its parameters under their diffusers keys, "x" (and "temb"), "out"):
  attn_vae      Attention with group_norm, biases, residual_connection, rescale_output_factor, 4-D input
  attn_cross    Attention as attn2 of a transformer block (cross-attention, [B, N, C] input)
  resnet_vae    ResnetBlock2D without a time embedding, channel change (conv_shortcut), output scale
  resnet_temb   ResnetBlock2D with a time embedding, same channels
  down_pad0     Downsample2D(padding=0): the VAE's asymmetric (0, 1, 0, 1) pad then a stride-2 conv
  down_pool     Downsample2D without a conv (2x2 average pooling) on odd sizes
  up_size       Upsample2D with an explicit output size (nearest resize, then conv)
  timesteps     Timesteps(64, flip_sin_to_cos=False, downscale_freq_shift=1) on fractional timesteps
The fp16-stored case computes its reference from the fp16-rounded weights upcast to float32, so
the Swift side (which loads the fp16 file into float32) sees exactly the same weights.
Everything is seeded, so rerunning with the pinned versions reproduces the files.
"""

import json
import os
import platform
import shutil

import diffusers
import safetensors
import torch
from diffusers import UNet2DConditionModel
from safetensors.torch import save_file

OUT_DIR = os.path.join(os.path.dirname(os.path.abspath(__file__)), "unet")

# Parameters whose gradients are stored (when the model has them).
GRAD_PARAMS = [
    "conv_in.weight",
    "time_embedding.linear_1.weight",
    "down_blocks.0.resnets.0.norm1.weight",
    "down_blocks.0.attentions.0.transformer_blocks.0.attn1.to_q.weight",
    "down_blocks.0.attentions.0.transformer_blocks.0.attn2.to_k.weight",
    "down_blocks.0.attentions.0.transformer_blocks.0.ff.net.0.proj.weight",
    "down_blocks.0.attentions.0.proj_in.weight",
    "mid_block.attentions.0.transformer_blocks.0.attn2.to_v.weight",
    "up_blocks.0.upsamplers.0.conv.weight",
    "up_blocks.1.resnets.0.conv_shortcut.weight",
    "conv_out.bias",
]

CASES = {
    # diffusers' tiny SD test UNet (tests/pipelines/stable_diffusion get_dummy_components /
    # hf-internal-testing/tiny-stable-diffusion-torch): stored in float16 (2.2 MB instead of 4.4).
    "sd_tiny": dict(
        config=dict(
            block_out_channels=(32, 64), layers_per_block=2, sample_size=32, in_channels=4, out_channels=4,
            down_block_types=("CrossAttnDownBlock2D", "DownBlock2D"),
            up_block_types=("UpBlock2D", "CrossAttnUpBlock2D"),
            cross_attention_dim=32, attention_head_dim=8, norm_num_groups=32,
        ),
        fp16=True, batch=2, size=(16, 16), tokens=77,
        timestep=lambda: torch.tensor([999.0, 17.0], dtype=torch.float32),
    ),
    # SD 2.x style: linear proj_in/proj_out, per-block head counts, upcast_attention.
    "sd2_linear": dict(
        config=dict(
            block_out_channels=(16, 32), layers_per_block=1, sample_size=8, in_channels=4, out_channels=4,
            down_block_types=("CrossAttnDownBlock2D", "CrossAttnDownBlock2D"),
            up_block_types=("CrossAttnUpBlock2D", "CrossAttnUpBlock2D"),
            cross_attention_dim=24, attention_head_dim=(2, 4), norm_num_groups=8,
            use_linear_projection=True, upcast_attention=True,
        ),
        fp16=False, batch=2, size=(8, 8), tokens=5,
        timestep=lambda: torch.tensor(500.5, dtype=torch.float64),  # a Python-float-like 0-d timestep
    ),
    # Three levels, per-block transformer depth and resnet count, no mid block, 4 groups, an input
    # size not divisible by 4 (exercises the upsample_size path), int64 timestep of shape [1].
    "three_level": dict(
        config=dict(
            block_out_channels=(16, 24, 32), layers_per_block=(1, 2, 1), sample_size=16, in_channels=3,
            out_channels=5,
            down_block_types=("CrossAttnDownBlock2D", "CrossAttnDownBlock2D", "DownBlock2D"),
            up_block_types=("UpBlock2D", "CrossAttnUpBlock2D", "CrossAttnUpBlock2D"),
            mid_block_type=None,
            cross_attention_dim=16, attention_head_dim=4, norm_num_groups=4, norm_eps=1e-6,
            transformer_layers_per_block=(2, 1, 1), time_embedding_dim=40,
        ),
        fp16=False, batch=2, size=(10, 14), tokens=6,
        timestep=lambda: torch.tensor([321], dtype=torch.int64),
    ),
    # Sin-first timestep embedding with freq_shift 1, centred input, padding-0 downsampling (the
    # asymmetric pad path), non-default mid_block_scale_factor and conv_in/conv_out kernels.
    "flip_shift": dict(
        config=dict(
            block_out_channels=(8, 16), layers_per_block=1, sample_size=8, in_channels=4, out_channels=4,
            down_block_types=("CrossAttnDownBlock2D", "DownBlock2D"),
            up_block_types=("UpBlock2D", "CrossAttnUpBlock2D"),
            cross_attention_dim=8, attention_head_dim=2, norm_num_groups=2,
            flip_sin_to_cos=False, freq_shift=1, center_input_sample=True, downsample_padding=0,
            mid_block_scale_factor=1.5, conv_in_kernel=1, conv_out_kernel=5,
        ),
        fp16=False, batch=3, size=(8, 8), tokens=4,
        timestep=lambda: torch.tensor([0, 250, 999], dtype=torch.int64),
    ),
}


def generated_by(name, case):
    return json.dumps({
        "generator": "Tests/DiffusionModelsTests/Fixtures/make_unet_fixtures.py",
        "case": name,
        "diffusers": diffusers.__version__,
        "torch": torch.__version__,
        "safetensors": safetensors.__version__,
        "python": platform.python_version(),
        "weights": "float16 (reference computed from the rounded weights in float32)" if case["fp16"] else "float32",
    }, sort_keys=True)


def make(name, case, seed):
    torch.manual_seed(seed)
    model = UNet2DConditionModel(**case["config"])
    if case["fp16"]:
        model = model.half().float()
    model.eval()

    gen = torch.Generator().manual_seed(seed + 1)
    cfg = model.config
    h, w = case["size"]
    sample = torch.randn(case["batch"], cfg.in_channels, h, w, generator=gen)
    enc = torch.randn(case["batch"], case["tokens"], cfg.cross_attention_dim, generator=gen)
    timestep = case["timestep"]()

    sample_leaf = sample.clone().requires_grad_(True)
    enc_leaf = enc.clone().requires_grad_(True)
    out = model(sample_leaf, timestep, enc_leaf).sample
    grad_out = torch.randn(out.shape, generator=gen)
    out.backward(grad_out)
    with torch.no_grad():
        t_emb = model.get_time_embed(sample=sample, timestep=timestep)
        emb = model.time_embedding(t_emb)

    tensors = {
        "sample": sample, "timestep": timestep, "encoder_hidden_states": enc,
        "t_emb": t_emb, "emb": emb, "out": out.detach(), "grad_out": grad_out,
        "grad.sample": sample_leaf.grad, "grad.encoder_hidden_states": enc_leaf.grad,
    }
    params = dict(model.named_parameters())
    for key in GRAD_PARAMS:
        if key in params:
            tensors["grad." + key] = params[key].grad
    tensors = {k: v.detach().contiguous() for k, v in tensors.items()}

    case_dir = os.path.join(OUT_DIR, name)
    shutil.rmtree(case_dir, ignore_errors=True)
    unet_dir = os.path.join(case_dir, "unet")
    if case["fp16"]:
        model.half().save_pretrained(unet_dir, safe_serialization=True, variant="fp16")
    else:
        model.save_pretrained(unet_dir, safe_serialization=True)
    save_file(tensors, os.path.join(case_dir, "io.safetensors"), metadata={"generated_by": generated_by(name, case)})
    size = sum(os.path.getsize(os.path.join(d, f)) for d, _, fs in os.walk(case_dir) for f in fs)
    nparams = sum(p.numel() for p in model.parameters())
    print(f"{name}: {nparams} parameters, {size / 1e6:.2f} MB, out {tuple(out.shape)} max|out| {out.abs().max():.4f}")


def make_blocks(seed):
    from diffusers.models.attention_processor import Attention
    from diffusers.models.downsampling import Downsample2D
    from diffusers.models.embeddings import Timesteps
    from diffusers.models.resnet import ResnetBlock2D
    from diffusers.models.upsampling import Upsample2D

    torch.manual_seed(seed)
    gen = torch.Generator().manual_seed(seed)
    tensors = {}

    def randn(*shape):
        return torch.randn(*shape, generator=gen)

    def add(name, module, out, **inputs):
        # Non-trivial norm affine parameters (defaults are ones/zeros).
        with torch.no_grad():
            for key, p in module.named_parameters():
                if "norm" in key:
                    p.add_(0.1 * randn(*p.shape))
        for key, value in module.state_dict().items():
            tensors[f"{name}.{key}"] = value
        for key, value in inputs.items():
            tensors[f"{name}.{key}"] = value
        tensors[f"{name}.out"] = out(module, **inputs)

    with torch.no_grad():
        add("attn_vae", Attention(8, heads=1, dim_head=8, bias=True, norm_num_groups=2, eps=1e-6,
                                  residual_connection=True, rescale_output_factor=2.0, upcast_softmax=True,
                                  _from_deprecated_attn_block=True),
            lambda m, x: m(x), x=randn(2, 8, 3, 5))
        add("attn_cross", Attention(12, cross_attention_dim=6, heads=3, dim_head=4),
            lambda m, x, context: m(x, encoder_hidden_states=context), x=randn(2, 7, 12), context=randn(2, 5, 6))
        add("resnet_vae", ResnetBlock2D(in_channels=4, out_channels=8, temb_channels=None, groups=2, eps=1e-6,
                                        output_scale_factor=1.5),
            lambda m, x: m(x, None), x=randn(2, 4, 5, 6))
        add("resnet_temb", ResnetBlock2D(in_channels=6, out_channels=6, temb_channels=10, groups=3, eps=1e-5),
            lambda m, x, temb: m(x, temb), x=randn(2, 6, 4, 4), temb=randn(2, 10))
        add("down_pad0", Downsample2D(4, use_conv=True, out_channels=6, padding=0, name="op"),
            lambda m, x: m(x), x=randn(2, 4, 7, 6))
        add("down_pool", Downsample2D(3, use_conv=False), lambda m, x: m(x), x=randn(2, 3, 5, 7))
        add("up_size", Upsample2D(4, use_conv=True, out_channels=5),
            lambda m, x: m(x, output_size=(7, 5)), x=randn(2, 4, 3, 4))
        t = torch.tensor([0.0, 1.5, 999.0, 421.25])
        tensors["timesteps.t"] = t
        tensors["timesteps.out"] = Timesteps(64, flip_sin_to_cos=False, downscale_freq_shift=1)(t)

    tensors = {k: v.detach().contiguous() for k, v in tensors.items()}
    path = os.path.join(OUT_DIR, "blocks.safetensors")
    save_file(tensors, path, metadata={"generated_by": generated_by("blocks", {"fp16": False})})
    print(f"blocks: {len(tensors)} tensors, {os.path.getsize(path) / 1e3:.1f} kB")


def main():
    torch.use_deterministic_algorithms(True)
    for i, (name, case) in enumerate(CASES.items()):
        make(name, case, seed=1000 + i)
    make_blocks(seed=2000)


if __name__ == "__main__":
    main()
