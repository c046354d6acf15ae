#!/usr/bin/env python3
"""Generates the DDPO training-step fixture read by Tests/RLAlgorithmsTests/TrainStepTests.swift.

Usage (from the repository root):
    pip install -r Tests/RLAlgorithmsTests/Fixtures/requirements.txt
    python Tests/DiffusionModelsTests/Fixtures/make_pipeline_fixtures.py   # the model folder used here
    python Tests/RLAlgorithmsTests/Fixtures/make_train_step_fixtures.py

TRL 0.21's own `DefaultDDPOStableDiffusionPipeline` (LoRA: rank 4, alpha 4, to_q/to_k/to_v/to_out.0)
loads the tiny SD 1.x folder of the pipeline fixtures (Tests/DiffusionModelsTests/Fixtures/pipeline/
sd1/model). Its LoRA up-projections start at zero, so they are set to seeded random values, and the
adapter is saved with TRL's own `save_pretrained` path into train_step/lora/ (so the Swift side
starts from the same weights). Then TRL's `DDPOTrainer.calculate_loss` (the real method, bound to a
stand-in holding what it reads: sd_pipeline, config, autocast, loss) scores one training batch of the
recorded DDPO trajectory (the pipeline fixture's `ddpo.*`: both samples, at per-sample timestep
indices), with train_cfg, and its loss is back-propagated. train_step/io.safetensors holds:
  latents, next_latents, log_probs, timesteps, advantages   the batch (timesteps as float32 ints)
  prompt_embeds, negative_prompt_embeds                    what TRL concatenates for train_cfg
  loss, approx_kl, clipfrac                                TRL's outputs
  grad.<LoRA key>                                          every LoRA parameter's gradient, under
                                                           the file's key (unet.<path>.lora.down/up.weight)
train_step/case.json: guidance scale, eta, clip range, adv clip max, the timestep indices.
"""

import json
import os
import shutil
import types

import torch
from safetensors.torch import load_file, save_file
from trl import DDPOConfig
from trl.models.modeling_sd_base import DefaultDDPOStableDiffusionPipeline
from trl.trainer.ddpo_trainer import DDPOTrainer

HERE = os.path.dirname(os.path.abspath(__file__))
OUT = os.path.join(HERE, "train_step")
MODEL = os.path.join(HERE, "..", "..", "DiffusionModelsTests", "Fixtures", "pipeline", "sd1")


def main():
    if os.path.exists(OUT):
        shutil.rmtree(OUT)
    os.makedirs(OUT)
    torch.manual_seed(0)
    pipe = DefaultDDPOStableDiffusionPipeline(os.path.join(MODEL, "model"), use_lora=True)
    layers = pipe.get_trainable_layers()  # adds TRL's PEFT LoRA to the UNet
    g = torch.Generator().manual_seed(1)
    with torch.no_grad():
        for name, p in pipe.unet.named_parameters():
            if "lora_B" in name:
                p.copy_(torch.randn(p.shape, generator=g) * 0.02)
    pipe.save_pretrained(os.path.join(OUT, "_saved"))
    os.makedirs(os.path.join(OUT, "lora"))
    shutil.copy(os.path.join(OUT, "_saved", "pytorch_lora_weights.safetensors"), os.path.join(OUT, "lora"))
    shutil.rmtree(os.path.join(OUT, "_saved"))
    file_keys = sorted(load_file(os.path.join(OUT, "lora", "pytorch_lora_weights.safetensors")).keys())

    io = load_file(os.path.join(MODEL, "io.safetensors"))
    with open(os.path.join(MODEL, "case.json")) as f:
        case = json.load(f)
    steps = case["steps"]
    pipe.scheduler.set_timesteps(steps)
    timesteps_all = torch.tensor(case["timesteps"])
    index = torch.tensor([2, 0])  # each sample at its own timestep, as after TRL's shuffle
    rows = torch.arange(2)
    latents = io["ddpo.latents"][rows, index]
    next_latents = io["ddpo.latents"][rows, index + 1]
    log_probs = io["ddpo.log_probs"][rows, index]
    timesteps = timesteps_all[index]
    advantages = torch.tensor([1.3, -0.7])
    prompt_embeds = io["prompt_embeds"]
    negative = pipe.text_encoder(pipe.tokenizer([""], return_tensors="pt", padding="max_length", truncation=True,
                                                max_length=pipe.tokenizer.model_max_length).input_ids)[0]
    negative = negative.repeat(2, 1, 1).detach()

    config = DDPOConfig(sample_guidance_scale=case["ddpo_guidance"], sample_eta=1.0, train_cfg=True,
                        train_clip_range=0.05, train_adv_clip_max=1.0, mixed_precision="no")
    stand_in = types.SimpleNamespace(sd_pipeline=pipe, config=config, autocast=pipe.autocast,
                                     loss=lambda a, c, r: DDPOTrainer.loss(None, a, c, r))
    embeds = torch.cat([negative, prompt_embeds])
    pipe.unet.train()
    loss, approx_kl, clipfrac = DDPOTrainer.calculate_loss(stand_in, latents, timesteps, next_latents, log_probs,
                                                           advantages, embeds)
    loss.backward()

    out = {"latents": latents, "next_latents": next_latents, "log_probs": log_probs,
           "timesteps": timesteps.to(torch.float32), "advantages": advantages, "prompt_embeds": prompt_embeds,
           "negative_prompt_embeds": negative, "loss": loss.detach().reshape(1), "approx_kl": approx_kl.detach().reshape(1),
           "clipfrac": clipfrac.detach().reshape(1)}
    # PEFT names → the file's keys (lora_A = down, lora_B = up).
    grads = {}
    for name, p in pipe.unet.named_parameters():
        if p.grad is None or "lora" not in name:
            continue
        path = name.replace("base_model.model.", "").replace(".lora_A.default.weight", ".lora.down.weight")
        path = path.replace(".lora_B.default.weight", ".lora.up.weight")
        grads["grad.unet." + path] = p.grad
    assert sorted(k[len("grad."):] for k in grads) == file_keys, "gradient keys do not match the LoRA file"
    out.update(grads)
    save_file({k: v.detach().to(torch.float32).contiguous() for k, v in out.items()}, os.path.join(OUT, "io.safetensors"))
    with open(os.path.join(OUT, "case.json"), "w") as f:
        json.dump({"guidance": case["ddpo_guidance"], "eta": 1.0, "clip_range": 0.05, "adv_clip_max": 1.0,
                   "indices": index.tolist(), "negative_prompt": ""}, f, indent=2)
    for root, _, files in os.walk(OUT):
        for name in sorted(files):
            print(os.path.relpath(os.path.join(root, name), OUT), os.path.getsize(os.path.join(root, name)))


if __name__ == "__main__":
    main()
