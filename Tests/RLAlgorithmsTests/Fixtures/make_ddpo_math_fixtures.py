#!/usr/bin/env python3
"""Fixtures for the DDPO building blocks that need no pipeline (RLAlgorithms/Rewards, Training/Advantages,
Training/PPOLoss), written to ddpo_math/ next to this script.

    /work/venv/bin/python Tests/RLAlgorithmsTests/Fixtures/make_ddpo_math_fixtures.py

Pins: requirements.txt beside this script (torch, numpy, pillow, safetensors, transformers, trl 0.21.0).
Every expected value below is computed by the reference code itself:

- jpeg.*: ddpo-pytorch's `jpeg_incompressibility` (ddpo_pytorch/rewards.py, copied verbatim below, the same
  code as TRL's docs) on fixed float32 images: `(x*255).round().clamp(0,255).to(uint8)` then Pillow JPEG q95,
  size = bytes / 1000. The images are stored (jpeg_images.safetensors), sizes and rewards in ddpo_math.json.
- aesthetic.*: TRL's examples/scripts/ddpo.py `AestheticScorer.__call__` (CLIP image features, L2 norm, the
  MLP head `layers.{0,2,4,6,7}` with dropout between) on a tiny random CLIP vision tower saved with
  `save_pretrained` (aesthetic_clip/) and a random head (aesthetic_head.safetensors) with TRL's key names and
  scaled-down widths (D -> 64 -> 16 -> 8 -> 4 -> 1 instead of 768 -> 1024 -> 128 -> 64 -> 16 -> 1, to keep the
  file small). Preprocessing is transformers' PIL CLIP image processor (the "slow" one TRL used).
- advantages.global: TRL 0.21 `DDPOTrainer.step`: `(rewards - rewards.mean()) / (rewards.std() + 1e-8)` (numpy,
  population std) on float64 rewards.
- advantages.tracker*: `trl.trainer.utils.PerPromptStatTracker` itself, called over several epochs of random
  rewards with repeated prompts; the advantages of every epoch and the final `get_stats()`.
- ppo.*: TRL 0.21 `DDPOTrainer.calculate_loss` needs a trainer and a UNet for the log-probs; its loss part is
  re-typed here line by line from trl/trainer/ddpo_trainer.py (calculate_loss after `log_prob = ...`), which
  then calls `DDPOTrainer.loss` itself; in float64, with the gradient of the loss w.r.t. the new
  log-probs from torch autograd.
"""
import io
import json
import os

import numpy as np
import torch
from PIL import Image
from safetensors.torch import save_file

import trl
from trl import DDPOTrainer
from trl.trainer.utils import PerPromptStatTracker

TRL_VERSION = trl.__version__

HERE = os.path.dirname(os.path.abspath(__file__))
OUT = os.path.join(HERE, "ddpo_math")
os.makedirs(OUT, exist_ok=True)
RESULT = {"versions": {"torch": torch.__version__, "numpy": np.__version__, "trl": TRL_VERSION,
                       "pillow": Image.__version__}}


# ---------------------------------------------------------------- JPEG (ddpo-pytorch rewards.py, verbatim)
def jpeg_incompressibility():
    def _fn(images, prompts, metadata):
        if isinstance(images, torch.Tensor):
            images = (images * 255).round().clamp(0, 255).to(torch.uint8).cpu().numpy()
            images = images.transpose(0, 2, 3, 1)  # NCHW -> NHWC
        images = [Image.fromarray(image) for image in images]
        buffers = [io.BytesIO() for _ in images]
        for image, buffer in zip(images, buffers):
            image.save(buffer, format="JPEG", quality=95)
        sizes = [buffer.tell() / 1000 for buffer in buffers]
        return np.array(sizes), {}

    return _fn


def jpeg_compressibility():
    jpeg_fn = jpeg_incompressibility()

    def _fn(images, prompts, metadata):
        rew, meta = jpeg_fn(images, prompts, metadata)
        return -rew, meta

    return _fn


def make_jpeg():
    g = torch.Generator().manual_seed(1234)
    batches = {}
    # Uniform noise (large files), slightly outside [0, 1] to exercise the clamp.
    batches["noise"] = torch.rand(2, 3, 24, 40, generator=g) * 1.1 - 0.05
    # Smooth gradients (small files), odd size (chroma subsampling edge blocks).
    y = torch.linspace(0, 1, 33).view(1, 1, 33, 1)
    x = torch.linspace(0, 1, 27).view(1, 1, 1, 27)
    grad = torch.cat([x * y, (1 - x) * y, 0.5 * (x + y)], dim=1)
    batches["gradient"] = torch.cat([grad, grad.flip(2) * 0.7], dim=0).contiguous()
    # Exact half-way values k/510: round half to even decides the byte.
    k = torch.arange(3 * 8 * 8, dtype=torch.float32).view(1, 3, 8, 8) % 511
    batches["halves"] = (k / 510).contiguous()
    tensors, info = {}, {}
    for name, images in batches.items():
        tensors[name] = images.float().contiguous()
        inc, _ = jpeg_incompressibility()(images, None, None)
        comp, _ = jpeg_compressibility()(images, None, None)
        u8 = (images * 255).round().clamp(0, 255).to(torch.uint8).numpy().transpose(0, 2, 3, 1)
        sizes = []
        for im in u8:
            buf = io.BytesIO()
            Image.fromarray(im).save(buf, format="JPEG", quality=95)
            sizes.append(len(buf.getvalue()))
        info[name] = {"bytes": sizes, "incompressibility": inc.tolist(), "compressibility": comp.tolist()}
    save_file(tensors, os.path.join(OUT, "jpeg_images.safetensors"))
    RESULT["jpeg"] = info


# ---------------------------------------------------------------- aesthetic scorer (TRL examples/scripts/ddpo.py)
class MLP(torch.nn.Module):
    """TRL's MLP with its key layout, widths scaled down (see the module docstring)."""

    def __init__(self, d):
        super().__init__()
        self.layers = torch.nn.Sequential(
            torch.nn.Linear(d, 64),
            torch.nn.Dropout(0.2),
            torch.nn.Linear(64, 16),
            torch.nn.Dropout(0.2),
            torch.nn.Linear(16, 8),
            torch.nn.Dropout(0.1),
            torch.nn.Linear(8, 4),
            torch.nn.Linear(4, 1),
        )

    @torch.no_grad()
    def forward(self, embed):
        return self.layers(embed)


def make_aesthetic():
    from transformers import CLIPVisionConfig, CLIPVisionModelWithProjection
    try:  # transformers >= 5: the PIL processor has its own class; 4.x: CLIPImageProcessor is the PIL one.
        from transformers.models.clip.image_processing_pil_clip import CLIPImageProcessorPil as Processor
    except ImportError:
        from transformers import CLIPImageProcessor as Processor

    torch.manual_seed(7)
    config = CLIPVisionConfig(hidden_size=32, intermediate_size=48, projection_dim=24, num_hidden_layers=2,
                              num_attention_heads=4, image_size=32, patch_size=8, hidden_act="quick_gelu")
    clip = CLIPVisionModelWithProjection(config).eval()
    # Larger-than-default weights so the embedding direction depends visibly on the image.
    with torch.no_grad():
        for p in clip.parameters():
            p.add_(torch.randn_like(p) * 0.05)
    folder = os.path.join(OUT, "aesthetic_clip")
    clip.save_pretrained(folder, safe_serialization=True)
    processor = Processor(size={"shortest_edge": 32}, crop_size={"height": 32, "width": 32})
    processor.save_pretrained(folder)
    mlp = MLP(24).eval()
    with torch.no_grad():  # wider weights than nn.Linear's init, so that scores differ clearly between images
        for name, p in mlp.named_parameters():
            if name.endswith("weight"):
                p.mul_(4.0)
    save_file({k: v.contiguous() for k, v in mlp.state_dict().items()}, os.path.join(OUT, "aesthetic_head.safetensors"))

    g = torch.Generator().manual_seed(99)
    images = torch.rand(3, 3, 40, 36, generator=g)
    images[2] = images[2] * 0.2 + 0.6  # a low-contrast one
    save_file({"images": images}, os.path.join(OUT, "aesthetic_images.safetensors"))

    # TRL: aesthetic_scorer._fn then AestheticScorer.__call__ (get_image_features == image_embeds here).
    u8 = (images * 255).round().clamp(0, 255).to(torch.uint8)
    inputs = processor(images=u8, return_tensors="pt")
    inputs = {k: v.to(torch.float32) for k, v in inputs.items()}
    with torch.no_grad():
        embed = clip(**inputs).image_embeds
        embed = embed / torch.linalg.vector_norm(embed, dim=-1, keepdim=True)
        scores = mlp(embed).squeeze(1)
    RESULT["versions"]["transformers"] = __import__("transformers").__version__
    RESULT["aesthetic"] = {"scores": scores.tolist(), "embeds_normalized": embed.tolist()}


# ---------------------------------------------------------------- advantages
def make_advantages():
    rng = np.random.default_rng(2024)
    rewards = rng.normal(3.0, 2.0, size=12)
    RESULT["advantages_global"] = {
        "rewards": rewards.tolist(),
        # trl/trainer/ddpo_trainer.py, DDPOTrainer.step, per_prompt_stat_tracking=False:
        "advantages": ((rewards - rewards.mean()) / (rewards.std() + 1e-8)).tolist(),
    }
    cases = []
    for buffer_size, min_count, epochs, batch in [(8, 4, 6, 10), (16, 16, 4, 12), (3, 2, 5, 7)]:
        tracker = PerPromptStatTracker(buffer_size, min_count)
        pool = ["a cat", "a dog", "a horse", "a rabbit", "an ant"]
        history = []
        for epoch in range(epochs):
            # Repeated prompts, and a prompt that first shows up late.
            k = 4 if epoch < 2 else 5
            prompts = [pool[i] for i in rng.integers(0, k, size=batch)]
            rewards = rng.normal(1.0 + epoch, 1.5, size=batch)
            adv = tracker.update(prompts, rewards)
            history.append({"prompts": prompts, "rewards": rewards.tolist(), "advantages": adv.tolist()})
        stats = {k: {"mean": float(v["mean"]), "std": float(v["std"]), "count": int(v["count"]),
                     "buffer": [float(x) for x in tracker.stats[k]]} for k, v in tracker.get_stats().items()}
        cases.append({"buffer_size": buffer_size, "min_count": min_count, "epochs": history, "stats": stats})
    RESULT["advantages_tracker"] = cases


# ---------------------------------------------------------------- PPO loss (TRL 0.21 calculate_loss / loss)
def trl_loss(advantages, clip_range, ratio):
    # DDPOTrainer.loss itself (it does not use self).
    return DDPOTrainer.loss(None, advantages, clip_range, ratio)


def trl_calculate_loss_tail(log_prob, log_probs, advantages, adv_clip_max, clip_range):
    # DDPOTrainer.calculate_loss after `log_prob = scheduler_step_output.log_probs`
    advantages = torch.clamp(
        advantages,
        -adv_clip_max,
        adv_clip_max,
    )
    ratio = torch.exp(log_prob - log_probs)
    loss = trl_loss(advantages, clip_range, ratio)
    approx_kl = 0.5 * torch.mean((log_prob - log_probs) ** 2)
    clipfrac = torch.mean((torch.abs(ratio - 1.0) > clip_range).float())
    return loss, approx_kl, clipfrac


def make_ppo():
    g = torch.Generator().manual_seed(5)
    cases = []
    for name, n, scale, clip_range, adv_clip_max in [("tiny_clip", 16, 2e-4, 1e-4, 5.0),
                                                      ("wide_clip", 24, 0.3, 0.2, 5.0),
                                                      ("adv_clip", 10, 0.05, 0.02, 1.5)]:
        old = torch.randn(n, generator=g, dtype=torch.float64) - 1.0
        new = (old + torch.randn(n, generator=g, dtype=torch.float64) * scale).requires_grad_(True)
        adv = torch.randn(n, generator=g, dtype=torch.float64) * 3.0
        loss, kl, cf = trl_calculate_loss_tail(new, old, adv, adv_clip_max, clip_range)
        (grad,) = torch.autograd.grad(loss, new)
        cases.append({"name": name, "clip_range": clip_range, "adv_clip_max": adv_clip_max,
                      "logp_old": old.tolist(), "logp_new": new.detach().tolist(), "advantages": adv.tolist(),
                      "loss": loss.item(), "approx_kl": kl.item(), "clipfrac": cf.item(),
                      "grad_logp_new": grad.tolist()})
    RESULT["ppo"] = cases


if __name__ == "__main__":
    make_jpeg()
    make_aesthetic()
    make_advantages()
    make_ppo()
    with open(os.path.join(OUT, "ddpo_math.json"), "w") as f:
        json.dump(RESULT, f, indent=1, sort_keys=True)
        f.write("\n")
    total = 0
    for root, _, files in os.walk(OUT):
        for name in files:
            total += os.path.getsize(os.path.join(root, name))
    print(f"wrote {OUT} ({total} bytes)")
