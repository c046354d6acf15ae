#!/usr/bin/env python3
"""TRL 0.21's DDPOTrainer with the quick start's schedule on the built-in model, for comparing with
`ddpo train` (no --model): 10 epochs, 20 steps, sample batch 16 x 2, train batch 8, lr 3e-3, clip 0.2,
half the timesteps, guidance 5, LoRA, the color:red reward (1 - |pixel - (220, 30, 30)/255| / sqrt(3),
mean over pixels), prompts drawn from the same 32 shape captions. Prints the mean reward per epoch.

    PYTHONPATH=<trl 0.21 + deps> python scripts/ddpo_trl_builtin_check.py models/shapes-sd
"""
import os, random, sys, tempfile, time, warnings
warnings.filterwarnings("ignore")
import numpy as np, torch
from trl import DDPOConfig, DDPOTrainer, DefaultDDPOStableDiffusionPipeline
torch.set_num_threads(2); random.seed(0); torch.manual_seed(0)
colors = ["red","green","blue","yellow","white","black","purple","orange"]; shapes = ["circle","square","triangle","cross"]
prompts = [f"a {colors[k % 8]} {shapes[(k + k // 8) % 4]}" for k in range(32)]
target = torch.tensor([220, 30, 30], dtype=torch.float32) / 255
def prompt_fn(): return random.choice(prompts), {}
def color_red(images, p, m):
    d = (images.float().clamp(0, 1) - target.view(1, 3, 1, 1)).pow(2).sum(1).sqrt()
    return (1 - d / 3 ** 0.5).mean(dim=(1, 2)), {}
work = tempfile.mkdtemp()
cfg = DDPOConfig(num_epochs=10, mixed_precision="no", log_with=None, seed=0, sample_num_steps=20, sample_batch_size=16,
                 sample_num_batches_per_epoch=2, train_batch_size=8, train_learning_rate=3e-3, train_clip_range=0.2,
                 train_timestep_fraction=0.5, sample_guidance_scale=5.0, save_freq=10**6, logdir=work,
                 project_kwargs=dict(project_dir=work, logging_dir=os.path.join(work, "logs")))
pipe = DefaultDDPOStableDiffusionPipeline(sys.argv[1], use_lora=True)
rewards = []
orig = color_red
def logged(images, p, m):
    r, meta = orig(images, p, m); rewards.append(r); return r, meta
trainer = DDPOTrainer(cfg, logged, prompt_fn, pipe)
gs = 0
for e in range(cfg.num_epochs):
    t = time.time(); n0 = len(rewards)
    gs = trainer.step(e, gs)
    r = torch.cat(rewards[n0:])
    print(f"trl epoch {e}: reward {r.mean():.4f} ± {r.std(unbiased=False):.4f} ({time.time()-t:.1f} s)", flush=True)
