#!/usr/bin/env python3
"""Generates the LoRA and DDPOConfig fixtures read by Tests/RLAlgorithmsTests/{LoRATests,DDPOConfigTests}.swift.

Usage (from the repository root):
    pip install -r Tests/RLAlgorithmsTests/Fixtures/requirements.txt
    python Tests/RLAlgorithmsTests/Fixtures/make_lora_fixtures.py

Everything is seeded, so rerunning with the pinned versions reproduces the files' contents (the
byte order of a file's two safetensors metadata entries follows a Rust HashMap and may change).

Fixtures/lora/
  unet/                      a tiny random diffusers UNet2DConditionModel (config.json +
                             diffusion_pytorch_model.safetensors, save_pretrained)
  io.safetensors             sample, timestep, encoder_hidden_states: fixed forward inputs;
                             out_base: the UNet's output without LoRA
  <case>/pytorch_lora_weights.safetensors
                             the LoRA file written by diffusers' own saver
                             (StableDiffusionPipeline.save_lora_weights), see CASES
  <case>/ours/pytorch_lora_weights.safetensors
                             the same LoRA written here in the scheme the Swift code writes (see
                             `write_ours`); this script proves that diffusers' load_lora_weights
                             loads it unchanged and reproduces the output
  <case>/io.safetensors      out_lora: the UNet output with the LoRA applied (PEFT, scale alpha/r);
                             out_fused: the output after pipe.fuse_lora()
Fixtures/config/
  trl_defaults.json          every trl.DDPOConfig field with its default (dataclasses.fields);
                             exp_name is TRL's script-name default, i.e. this script's name
  trl_messages.json          what TRL 0.21's DDPOTrainer._config_check (the real function, run on
                             a stub trainer holding a DDPOConfig and an accelerator's process
                             count) returns for valid and invalid batch-size combinations

What diffusers 0.35.2 writes and reads (checked below, not assumed):
  * save_lora_weights writes the state dict it is given, each key prefixed "unet.", with
    safetensors metadata {"format": "pt"} and, only when `unet_lora_adapter_metadata` is passed,
    "lora_adapter_metadata": JSON of the PEFT LoraConfig with every key prefixed "unet.".
  * TRL's DDPO pipeline saves convert_state_dict_to_diffusers(get_peft_model_state_dict(unet)):
    keys "unet.<module>.lora.down.weight" / ".lora.up.weight" for to_q/to_k/to_v/to_out.0 (the
    converter only maps those four names; any other target keeps PEFT's lora_A/lora_B, so a file
    can mix both forms), no alpha.
  * load_lora_weights accepts "lora.down/lora.up" (converted when the file's first key has no
    "lora_A") and PEFT "lora_A/lora_B". Without lora_adapter_metadata it sets lora_alpha = r, i.e.
    scale 1; a ".alpha" key is not read for this key form. With the metadata it builds the
    LoraConfig from it, so lora_alpha in the metadata is how a scale alpha/r != 1 survives.
  Our scheme therefore is: every key "unet.<module path>.lora.down.weight" / ".lora.up.weight"
  (float32), metadata {"format": "pt", "lora_adapter_metadata": {"unet.r", "unet.lora_alpha",
  "unet.target_modules" (the adapted module paths, sorted), "unet.rank_pattern",
  "unet.alpha_pattern"}}; for rank 4 / alpha 4 its keys, shapes and dtypes equal TRL's file.
"""

import dataclasses
import json
import os
import platform
import shutil
import sys
from types import SimpleNamespace

import diffusers
import peft
import safetensors
import torch
import trl
from diffusers import DDIMScheduler, StableDiffusionPipeline, UNet2DConditionModel
from peft import LoraConfig
from peft.utils import get_peft_model_state_dict
from safetensors import safe_open
from safetensors.torch import save_file
from trl import DDPOConfig
from trl.models.sd_utils import convert_state_dict_to_diffusers
from trl.trainer.ddpo_trainer import DDPOTrainer

HERE = os.path.dirname(os.path.abspath(__file__))
LORA_DIR = os.path.join(HERE, "lora")
CONFIG_DIR = os.path.join(HERE, "config")
WEIGHT_NAME = "pytorch_lora_weights.safetensors"

UNET_CONFIG = dict(
    block_out_channels=(8, 16), layers_per_block=1, sample_size=8, in_channels=4, out_channels=4,
    down_block_types=("CrossAttnDownBlock2D", "DownBlock2D"),
    up_block_types=("UpBlock2D", "CrossAttnUpBlock2D"),
    cross_attention_dim=8, attention_head_dim=2, norm_num_groups=4,
)

CASES = {
    # TRL's default pipeline LoRA (rank 4, alpha 4, Gaussian A, the four attention projections),
    # saved exactly as TRL's DefaultDDPOStableDiffusionPipeline.save_pretrained / save_checkpoint do.
    "r4": dict(r=4, alpha=4, targets=["to_q", "to_k", "to_v", "to_out.0"], saver="trl"),
    # alpha != r, and convolutions too (resnet conv1 is 3x3, proj_in 1x1 here), saved the way
    # diffusers' own training scripts do it: PEFT keys plus the LoraConfig as adapter metadata
    # (diffusers.training_utils._collate_lora_metadata).
    "r2_alpha8_conv": dict(r=2, alpha=8, targets=["to_q", "to_k", "to_v", "to_out.0", "conv1", "proj_in"],
                           saver="peft_metadata"),
}


def versions():
    return {
        "generator": "Tests/RLAlgorithmsTests/Fixtures/make_lora_fixtures.py",
        "diffusers": diffusers.__version__, "peft": peft.__version__, "trl": trl.__version__,
        "torch": torch.__version__, "safetensors": safetensors.__version__, "python": platform.python_version(),
    }


def make_pipe(unet):
    """A StableDiffusionPipeline around `unet` only: enough for load_lora_weights / fuse_lora."""
    return StableDiffusionPipeline(vae=None, text_encoder=None, tokenizer=None, unet=unet,
                                   scheduler=DDIMScheduler(clip_sample=False), safety_checker=None,
                                   feature_extractor=None, requires_safety_checker=False)


def max_rel(a, b):
    return ((a - b).abs().max() / b.abs().max()).item()


def write_ours(path, unet, r, alpha):
    """The LoRA of a PEFT-adapted `unet` in the scheme RLAlgorithms/LoRA writes."""
    tensors, modules = {}, set()
    for key, value in get_peft_model_state_dict(unet).items():
        module, kind = key.rsplit(".lora_", 1)
        modules.add(module)
        name = {"A.weight": "lora.down.weight", "B.weight": "lora.up.weight"}[kind]
        tensors[f"unet.{module}.{name}"] = value.detach().float().contiguous()
    adapter = {"unet.r": r, "unet.lora_alpha": alpha, "unet.target_modules": sorted(modules),
               "unet.rank_pattern": {}, "unet.alpha_pattern": {}}
    os.makedirs(os.path.dirname(path), exist_ok=True)
    save_file(tensors, path, metadata={"format": "pt", "lora_adapter_metadata": json.dumps(adapter, indent=2, sort_keys=True)})


def make_lora(seed):
    shutil.rmtree(LORA_DIR, ignore_errors=True)
    torch.manual_seed(seed)
    base = UNet2DConditionModel(**UNET_CONFIG).eval()
    base.save_pretrained(os.path.join(LORA_DIR, "unet"), safe_serialization=True)
    base_state = {k: v.clone() for k, v in base.state_dict().items()}

    def fresh_unet():
        unet = UNet2DConditionModel(**UNET_CONFIG).eval()
        unet.load_state_dict(base_state)
        return unet

    gen = torch.Generator().manual_seed(seed + 1)
    sample = torch.randn(2, 4, 8, 8, generator=gen)
    timestep = torch.tensor([999.0, 17.0])
    enc = torch.randn(2, 5, UNET_CONFIG["cross_attention_dim"], generator=gen)

    def run(unet):
        with torch.no_grad():
            return unet(sample, timestep, enc).sample

    out_base = run(base)
    save_file({"sample": sample, "timestep": timestep, "encoder_hidden_states": enc, "out_base": out_base},
              os.path.join(LORA_DIR, "io.safetensors"), metadata={"generated_by": json.dumps(versions(), sort_keys=True)})

    for index, (name, case) in enumerate(CASES.items()):
        case_dir = os.path.join(LORA_DIR, name)
        torch.manual_seed(seed + 10 + index)
        unet = fresh_unet()
        config = LoraConfig(r=case["r"], lora_alpha=case["alpha"], init_lora_weights="gaussian",
                            target_modules=case["targets"])
        unet.add_adapter(config)
        with torch.no_grad():  # B starts at zero: make it non-zero so the LoRA changes the output
            for key, p in unet.named_parameters():
                if "lora_B" in key:
                    p.copy_(torch.randn(p.shape, generator=gen) * 0.5 * case["r"] / case["alpha"])
        out_lora = run(unet)
        effect = max_rel(out_lora, out_base)
        assert effect > 1e-2, f"{name}: the LoRA barely changes the output ({effect})"

        if case["saver"] == "trl":
            state = convert_state_dict_to_diffusers(get_peft_model_state_dict(unet))
            StableDiffusionPipeline.save_lora_weights(save_directory=case_dir, unet_lora_layers=state)
        else:
            state = get_peft_model_state_dict(unet)
            adapter = unet.peft_config["default"].to_dict()
            adapter["target_modules"] = sorted(adapter["target_modules"])  # a set: sorted for reproducible files
            StableDiffusionPipeline.save_lora_weights(
                save_directory=case_dir, unet_lora_layers=state, unet_lora_adapter_metadata=adapter)
        ours = os.path.join(case_dir, "ours", WEIGHT_NAME)
        write_ours(ours, unet, case["r"], case["alpha"])

        # Both files load into a fresh pipeline with diffusers' load_lora_weights and reproduce the
        # output; fuse_lora folds the LoRA into the weights.
        out_fused = None
        for directory in [case_dir, os.path.dirname(ours)]:
            pipe = make_pipe(fresh_unet())
            pipe.load_lora_weights(directory)
            loaded = run(pipe.unet)
            assert max_rel(loaded, out_lora) < 1e-6, f"{name}: {directory} loads to a different output"
            pipe.fuse_lora()
            fused = run(pipe.unet)
            assert max_rel(fused, out_lora) < 2e-5, f"{name}: fused output differs by {max_rel(fused, out_lora)}"
            out_fused = fused if out_fused is None else out_fused

        # TRL's load_checkpoint path (lora_state_dict + load_lora_into_unet, no metadata) reads the
        # rank-4 file too; for alpha != r it would lose the scale, which is why we store metadata.
        if case["saver"] == "trl":
            unet2 = fresh_unet()
            state, alphas = StableDiffusionPipeline.lora_state_dict(case_dir, weight_name=WEIGHT_NAME)
            StableDiffusionPipeline.load_lora_into_unet(state, network_alphas=alphas, unet=unet2)
            assert max_rel(run(unet2), out_lora) < 1e-6

        save_file({"out_lora": out_lora, "out_fused": out_fused}, os.path.join(case_dir, "io.safetensors"),
                  metadata={"generated_by": json.dumps(dict(versions(), case=name, **{k: str(v) for k, v in case.items()}),
                                                       sort_keys=True)})
        with safe_open(os.path.join(case_dir, WEIGHT_NAME), "pt") as f:
            keys, meta = list(f.keys()), f.metadata()
        print(f"{name}: {len(keys)} tensors, e.g. {keys[0]}; metadata keys {sorted(meta)}; "
              f"LoRA changes the output by {effect:.3f} (relative)")

    # A finding, not a fixture: TRL's converter with a non-attention target writes mixed key forms.
    unet = fresh_unet()
    unet.add_adapter(LoraConfig(r=2, lora_alpha=2, init_lora_weights="gaussian", target_modules=["to_q", "conv1"]))
    mixed = convert_state_dict_to_diffusers(get_peft_model_state_dict(unet))
    forms = sorted({("lora_A" in k) for k in mixed})
    print(f"TRL converter with targets to_q+conv1 gives mixed lora_A/lora.down keys: {forms == [False, True]}")

    size = sum(os.path.getsize(os.path.join(d, f)) for d, _, fs in os.walk(LORA_DIR) for f in fs)
    print(f"lora: {sum(p.numel() for p in base.parameters())} UNet parameters, {size / 1e6:.2f} MB")


def make_config():
    shutil.rmtree(CONFIG_DIR, ignore_errors=True)
    os.makedirs(CONFIG_DIR)
    defaults = {}
    for f in dataclasses.fields(DDPOConfig):
        value = f.default if f.default is not dataclasses.MISSING else f.default_factory()
        defaults[f.name] = value
    with open(os.path.join(CONFIG_DIR, "trl_defaults.json"), "w") as out:
        json.dump({"versions": versions(), "script_name": os.path.basename(sys.argv[0]), "defaults": defaults},
                  out, indent=2)
        out.write("\n")

    # (sample_batch_size, train_batch_size, sample_num_batches_per_epoch,
    #  train_gradient_accumulation_steps, num_processes)
    combos = [
        (1, 2, 2, 1, 1),   # sample < train
        (3, 2, 2, 1, 1),   # not divisible
        (4, 2, 1, 4, 1),   # 4 samples per epoch, total train batch 8
        (2, 1, 1, 3, 2),   # 2 processes: 4 samples per epoch, total train batch 6
        (6, 3, 1, 1, 4),   # 4 processes: 24 samples per epoch, total 12: valid
        (4, 2, 2, 2, 1),   # valid
        (2, 2, 3, 1, 3),   # 3 processes: 18 samples per epoch, total 6: valid
        (8, 4, 3, 2, 1),   # 24 samples per epoch, total 8: valid
        (8, 4, 1, 3, 1),   # 8 samples per epoch, total 12
    ]
    results = []
    for sbs, tbs, nb, gas, nproc in combos:
        config = DDPOConfig(sample_batch_size=sbs, train_batch_size=tbs, sample_num_batches_per_epoch=nb,
                            train_gradient_accumulation_steps=gas)
        stub = SimpleNamespace(config=config, accelerator=SimpleNamespace(num_processes=nproc))
        ok, message = DDPOTrainer._config_check(stub)
        results.append({"sample_batch_size": sbs, "train_batch_size": tbs, "sample_num_batches_per_epoch": nb,
                        "train_gradient_accumulation_steps": gas, "num_processes": nproc,
                        "ok": ok, "message": message})
    with open(os.path.join(CONFIG_DIR, "trl_messages.json"), "w") as out:
        json.dump({"versions": versions(), "checks": results}, out, indent=2)
        out.write("\n")
    print(f"config: {len(defaults)} DDPOConfig fields, {len(results)} batch-size checks "
          f"({sum(not r['ok'] for r in results)} invalid)")


def main():
    torch.use_deterministic_algorithms(True)
    make_lora(seed=3000)
    make_config()


if __name__ == "__main__":
    main()
