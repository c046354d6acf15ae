#!/usr/bin/env python3
"""Generates Fixtures/scheduler/conversion.json, read by PipelineTests.testSchedulerConversionMatchesDiffusers.

Usage (from the repository root):
    pip install -r Tests/DiffusionModelsTests/Fixtures/requirements.txt
    python Tests/DiffusionModelsTests/Fixtures/make_scheduler_conversion_fixtures.py

DDPO samples with DDIM whatever scheduler a Stable Diffusion folder ships. TRL's
DefaultDDPOStableDiffusionPipeline loads the folder with StableDiffusionPipeline.from_pretrained,
whose __init__ rewrites outdated scheduler configs (steps_offset -> 1, clip_sample true -> false),
and then converts with DDIMScheduler.from_config. from_config drops every field the folder's
config file left out (the loaded config lists them in `_use_default_values`), so those take DDIM's
own defaults, even where the pipeline had rewritten them. Each case here is a scheduler_config.json
as a folder might hold it; the script saves it, loads it with its class's from_pretrained, passes
it through the pipeline's __init__ and DDIMScheduler.from_config exactly as TRL does, and records
the DDIM config that results (every DDIM field), its timesteps for a few step counts and
final_alpha_cumprod.
"""

import json
import os
import tempfile
import warnings

import diffusers
from diffusers import DDIMScheduler, StableDiffusionPipeline

OUT = os.path.join(os.path.dirname(os.path.abspath(__file__)), "scheduler", "conversion.json")

CASES = {
    # Stable Diffusion 1.5 and 2.1 as published.
    "sd15_pndm": {"_class_name": "PNDMScheduler", "_diffusers_version": "0.6.0", "beta_end": 0.012,
                  "beta_schedule": "scaled_linear", "beta_start": 0.00085, "num_train_timesteps": 1000,
                  "set_alpha_to_one": False, "skip_prk_steps": True, "steps_offset": 1, "trained_betas": None,
                  "clip_sample": False},
    "sd21_ddim": {"_class_name": "DDIMScheduler", "_diffusers_version": "0.8.0", "beta_end": 0.012,
                  "beta_schedule": "scaled_linear", "beta_start": 0.00085, "clip_sample": False,
                  "num_train_timesteps": 1000, "prediction_type": "v_prediction", "set_alpha_to_one": False,
                  "skip_prk_steps": True, "steps_offset": 1, "trained_betas": None},
    # Fields left out: DDIM's defaults win (clip_sample true, steps_offset 0, set_alpha_to_one true).
    "ddim_sparse": {"_class_name": "DDIMScheduler", "beta_schedule": "scaled_linear", "beta_start": 0.00085,
                    "beta_end": 0.012},
    "pndm_sparse": {"_class_name": "PNDMScheduler", "beta_schedule": "scaled_linear", "beta_start": 0.00085,
                    "beta_end": 0.012, "skip_prk_steps": True},
    "ddpm_sparse": {"_class_name": "DDPMScheduler", "beta_schedule": "scaled_linear", "prediction_type": "v_prediction"},
    "euler_sparse": {"_class_name": "EulerDiscreteScheduler", "beta_schedule": "scaled_linear",
                     "timestep_spacing": "trailing"},
    # Stated outdated values: rewritten.
    "ddim_outdated": {"_class_name": "DDIMScheduler", "beta_schedule": "scaled_linear", "beta_start": 0.00085,
                      "beta_end": 0.012, "clip_sample": True, "steps_offset": 0, "set_alpha_to_one": False},
    "pndm_outdated": {"_class_name": "PNDMScheduler", "beta_schedule": "linear", "clip_sample": True,
                      "steps_offset": 2, "skip_prk_steps": True},
    "euler_offset0": {"_class_name": "EulerDiscreteScheduler", "beta_schedule": "scaled_linear", "steps_offset": 0,
                      "timestep_spacing": "leading", "prediction_type": "v_prediction"},
    "dpm_clip_range": {"_class_name": "DPMSolverMultistepScheduler", "beta_schedule": "squaredcos_cap_v2",
                       "clip_sample": True, "clip_sample_range": 2.0, "steps_offset": 1, "timestep_spacing": "linspace",
                       "set_alpha_to_one": False},
    "lms_thresholding": {"_class_name": "LMSDiscreteScheduler", "beta_schedule": "scaled_linear", "thresholding": True,
                         "sample_max_value": 1.5, "steps_offset": 1},
    "ddim_zero_snr": {"_class_name": "DDIMScheduler", "beta_schedule": "scaled_linear", "rescale_betas_zero_snr": True,
                      "timestep_spacing": "trailing", "prediction_type": "v_prediction", "clip_sample": False},
}
STEP_COUNTS = [1, 7, 50]


def convert(raw):
    with tempfile.TemporaryDirectory() as d:
        with open(os.path.join(d, "scheduler_config.json"), "w") as f:
            json.dump(raw, f)
        cls = getattr(diffusers, raw["_class_name"])
        loaded = cls.from_pretrained(d)
    pipe = StableDiffusionPipeline(vae=None, text_encoder=None, tokenizer=None, unet=None, scheduler=loaded,
                                   safety_checker=None, feature_extractor=None, requires_safety_checker=False)
    ddim = DDIMScheduler.from_config(pipe.scheduler.config)
    config = {k: v for k, v in dict(ddim.config).items() if not k.startswith("_")}
    timesteps = {}
    for n in STEP_COUNTS:
        ddim.set_timesteps(n)
        timesteps[str(n)] = [int(t) for t in ddim.timesteps]
    return dict(raw=raw, ddim=config, timesteps=timesteps, final_alpha_cumprod=float(ddim.final_alpha_cumprod))


def main():
    warnings.filterwarnings("ignore")
    diffusers.utils.logging.set_verbosity_error()
    out = {"diffusers": diffusers.__version__, "cases": {name: convert(raw) for name, raw in CASES.items()}}
    with open(OUT, "w") as f:
        json.dump(out, f, indent=1, sort_keys=True)
    for name, case in out["cases"].items():
        print(f"{name:18s} clip_sample {case['ddim']['clip_sample']!s:5s} steps_offset {case['ddim']['steps_offset']}"
              f" set_alpha_to_one {case['ddim']['set_alpha_to_one']}")


if __name__ == "__main__":
    main()
