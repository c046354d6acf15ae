#!/usr/bin/env python3
"""Fixtures for TensorKit's AdamW8bit, from bitsandbytes' own AdamW8bit on its CPU backend.

    /work/venv/bin/python Tests/TensorKitTests/Fixtures/make_adamw8bit_fixtures.py

Pins: torch 2.15.0, numpy 2.4.6, safetensors 0.8.0 (requirements.txt beside this script) and
bitsandbytes==0.50.2 (listed in Tests/RLAlgorithmsTests/Fixtures/requirements.txt, where TRL's
`train_use_8bit_adam` comes from).

Writes adamw8bit/adamw8bit.safetensors with:
- qmap.signed / qmap.unsigned: bitsandbytes' `create_dynamic_map(signed=True/False)` (state1 / state2 codes);
- three parameters: `a` [4100] (16 full blocks of 256 + a 4-element block), `b` [40, 110] (8-bit, 18 blocks,
  the last partial) and `c` [300] (below min_8bit_size = 4096, so bitsandbytes keeps 32-bit state);
  `<name>.init` the initial values, `<name>.grad.<k>` the gradient of step k (k = 1...STEPS), with blocks of
  very different scales so the per-block absmax matters;
- after steps 1 and STEPS: `<name>.param.<k>`, and for the 8-bit ones `<name>.state1.<k>`, `<name>.state2.<k>`
  (uint8 codes), `<name>.absmax1.<k>`, `<name>.absmax2.<k>`; for `c` `c.exp_avg.<k>`, `c.exp_avg_sq.<k>`.
Hyper-parameters are in the file's metadata.
"""
import json
import os

import numpy as np
import torch
from safetensors.torch import save_file

import bitsandbytes as bnb
import bitsandbytes.functional as F

HERE = os.path.dirname(os.path.abspath(__file__))
OUT = os.path.join(HERE, "adamw8bit")
os.makedirs(OUT, exist_ok=True)

STEPS = 4
HYPER = {"lr": 0.01, "beta1": 0.9, "beta2": 0.999, "eps": 1e-8, "weight_decay": 0.01}


def main():
    g = torch.Generator().manual_seed(31)
    shapes = {"a": [4100], "b": [40, 110], "c": [300]}
    params = {k: torch.nn.Parameter(torch.randn(*s, generator=g)) for k, s in shapes.items()}
    opt = bnb.optim.AdamW8bit(list(params.values()), lr=HYPER["lr"], betas=(HYPER["beta1"], HYPER["beta2"]),
                              eps=HYPER["eps"], weight_decay=HYPER["weight_decay"])
    out = {"qmap.signed": F.create_dynamic_map(signed=True), "qmap.unsigned": F.create_dynamic_map(signed=False)}
    for k, p in params.items():
        out[f"{k}.init"] = p.detach().clone()
    for step in range(1, STEPS + 1):
        for k, p in params.items():
            n = p.numel()
            # Per-256-block scales from 1e-4 to 10, so some blocks are tiny next to others.
            scales = 10.0 ** torch.randint(-4, 2, ((n + 255) // 256,), generator=g).float()
            grad = torch.randn(n, generator=g) * scales.repeat_interleave(256)[:n]
            grad = grad.view(p.shape).contiguous()
            out[f"{k}.grad.{step}"] = grad.clone()
            p.grad = grad
        opt.step()
        if step in (1, STEPS):
            for k, p in params.items():
                st = opt.state[p]
                out[f"{k}.param.{step}"] = p.detach().clone()
                if st["state1"].dtype == torch.uint8:
                    assert torch.equal(st["qmap1"], out["qmap.signed"]) and torch.equal(st["qmap2"], out["qmap.unsigned"])
                    for name in ("state1", "state2", "absmax1", "absmax2"):
                        out[f"{k}.{name}.{step}"] = st[name].clone()
                else:
                    out[f"{k}.exp_avg.{step}"] = st["state1"].clone()
                    out[f"{k}.exp_avg_sq.{step}"] = st["state2"].clone()
                assert st["step"] == step
    meta = {"steps": str(STEPS), "bitsandbytes": bnb.__version__, "torch": torch.__version__,
            "hyper": json.dumps(HYPER)}
    save_file({k: v.contiguous() for k, v in out.items()}, os.path.join(OUT, "adamw8bit.safetensors"), metadata=meta)
    print("wrote", OUT, os.path.getsize(os.path.join(OUT, "adamw8bit.safetensors")), "bytes")


if __name__ == "__main__":
    main()
