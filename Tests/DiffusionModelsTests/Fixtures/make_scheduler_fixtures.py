#!/usr/bin/env python3
"""Generates the DDIMScheduler fixtures read by Tests/DiffusionModelsTests/DDIMSchedulerTests.swift.

Usage (from the repository root):
    pip install -r Tests/DiffusionModelsTests/Fixtures/requirements.txt
    python Tests/DiffusionModelsTests/Fixtures/make_scheduler_fixtures.py

Writes into Fixtures/scheduler/:
  fixtures.json          per config: the scheduler_config.json dict given to
                         DDIMScheduler.from_config (SD 1.5's is a PNDMScheduler config), the
                         timesteps set_timesteps gives for several step counts, final_alpha_cumprod,
                         and the step / log-prob cases below; plus "timestep_sweep": for every step
                         count 1..1000 and each spacing, a checksum of diffusers' timesteps.
  tensors.safetensors    float32 tensors, keys "<config>.betas", "<config>.alphas_cumprod",
                         "<config>.step<i>.<name>" and "<config>.logprob<i>.<name>". Outputs
                         suffixed "_f64" come from the same computation run in float64 on the
                         same float32 ᾱ values (stored rounded to float32): the precise reference,
                         since diffusers' float32 scalars lose all precision where
                         1 − ᾱ_prev − σ_t² cancels (ᾱ_t ≈ 0).

Step cases call diffusers 0.35.2's DDIMScheduler.step with the variance noise passed explicitly
(variance_noise=). Log-prob cases are computed by `ddpo_step_with_logprob` below, written here
from the formulas of ddpo-pytorch's `ddim_step_with_logprob` (kvablack/ddpo-pytorch,
ddpo_pytorch/diffusers_patch/ddim_with_logprob.py) in the same float32 torch operations: it is
the reference, not diffusers. Each log-prob case has per-sample timesteps (as in DDPO training),
and either samples x_{t-1} from given noise or scores a given prev_sample; it also stores the
gradient of sum(log_prob * grad_weight) with respect to model_output from torch autograd (float64).
Everything is seeded, so rerunning with the pinned versions reproduces the files.
"""

import json
import math
import os

import numpy as np
import torch
from diffusers import DDIMScheduler
from safetensors.torch import save_file

OUT_DIR = os.path.join(os.path.dirname(os.path.abspath(__file__)), "scheduler")

# scheduler_config.json contents, as found in diffusers folders.
CONFIGS = {
    # Stable Diffusion 1.5's scheduler folder (a PNDM config; DDPO converts it with from_config).
    "sd15": {
        "_class_name": "PNDMScheduler", "_diffusers_version": "0.6.0", "beta_end": 0.012,
        "beta_schedule": "scaled_linear", "beta_start": 0.00085, "num_train_timesteps": 1000,
        "set_alpha_to_one": False, "skip_prk_steps": True, "steps_offset": 1, "trained_betas": None,
        "clip_sample": False,
    },
    # DDIM defaults: linear betas, clip_sample true, set_alpha_to_one true, leading, offset 0.
    "defaults": {"_class_name": "DDIMScheduler"},
    "linear_v_trailing": {
        "_class_name": "DDIMScheduler", "prediction_type": "v_prediction", "clip_sample": False,
        "timestep_spacing": "trailing", "beta_start": 0.0002, "beta_end": 0.03,
    },
    # Zero terminal SNR (ᾱ_999 = 0) with v-prediction, as SD 2.x fine-tunes use it.
    "zero_snr": {
        "_class_name": "EulerDiscreteScheduler", "beta_schedule": "scaled_linear", "beta_start": 0.00085,
        "beta_end": 0.012, "prediction_type": "v_prediction", "rescale_betas_zero_snr": True,
        "timestep_spacing": "trailing", "clip_sample": False, "set_alpha_to_one": False,
        "interpolation_type": "linear", "use_karras_sigmas": False,
    },
    "cosine_sample_clip": {
        "_class_name": "DDIMScheduler", "beta_schedule": "squaredcos_cap_v2", "prediction_type": "sample",
        "clip_sample": True, "clip_sample_range": 1.5, "timestep_spacing": "linspace",
        "num_train_timesteps": 500,
    },
    # Thresholding wins over clip_sample; offset 0 puts timestep 0 in the schedule.
    "threshold": {
        "_class_name": "DDIMScheduler", "thresholding": True, "dynamic_thresholding_ratio": 0.9,
        "sample_max_value": 2.0, "clip_sample": True, "steps_offset": 0,
    },
    "trained_betas": {
        "_class_name": "DDIMScheduler", "num_train_timesteps": 40,
        "trained_betas": [round(0.001 + 0.02 * (i / 39) ** 1.5, 6) for i in range(40)],
        "beta_schedule": "linear", "clip_sample": False, "steps_offset": 2, "set_alpha_to_one": True,
    },
}

STEP_COUNTS = [1, 3, 7, 10, 50]
SHAPE = [2, 2, 3, 3]
LOGPROB_SHAPE = [3, 2, 3, 3]


def ddpo_step_with_logprob(scheduler, model_output, timestep, sample, eta, prev_sample=None, noise=None):
    """DDPO's DDIM step with log-probability (ddpo-pytorch), in float32 torch ops.

    timestep: int64 tensor, 0-d or [B]. Returns (prev_sample, log_prob [B]).
    """
    cfg = scheduler.config
    shape = sample.shape

    def per_sample(values):  # [B] or 0-d -> broadcast over the sample
        return values.reshape(values.shape + (1,) * (len(shape) - values.ndim)).broadcast_to(shape)

    prev_timestep = timestep - cfg.num_train_timesteps // scheduler.num_inference_steps
    prev_timestep = torch.clamp(prev_timestep, 0, cfg.num_train_timesteps - 1)
    alpha_t = scheduler.alphas_cumprod.gather(0, timestep)
    # After the clamp prev_timestep >= 0 always, so final_alpha_cumprod is never used.
    alpha_prev = torch.where(prev_timestep >= 0, scheduler.alphas_cumprod.gather(0, prev_timestep),
                             scheduler.final_alpha_cumprod)
    variance = (1 - alpha_prev) / (1 - alpha_t) * (1 - alpha_t / alpha_prev)
    std = per_sample(eta * variance ** 0.5)
    alpha_t, alpha_prev = per_sample(alpha_t), per_sample(alpha_prev)
    beta_t = 1 - alpha_t

    if cfg.prediction_type == "epsilon":
        x0 = (sample - beta_t ** 0.5 * model_output) / alpha_t ** 0.5
        eps = model_output
    elif cfg.prediction_type == "sample":
        x0 = model_output
        eps = (sample - alpha_t ** 0.5 * x0) / beta_t ** 0.5
    else:
        x0 = alpha_t ** 0.5 * sample - beta_t ** 0.5 * model_output
        eps = alpha_t ** 0.5 * model_output + beta_t ** 0.5 * sample
    if cfg.thresholding:
        x0 = scheduler._threshold_sample(x0)
    elif cfg.clip_sample:
        x0 = x0.clamp(-cfg.clip_sample_range, cfg.clip_sample_range)

    mean = alpha_prev ** 0.5 * x0 + (1 - alpha_prev - std ** 2) ** 0.5 * eps
    if prev_sample is None:
        prev_sample = mean + std * noise
    log_prob = (-((prev_sample.detach() - mean) ** 2) / (2 * std ** 2) - torch.log(std)
                - torch.log(torch.sqrt(2 * torch.as_tensor(math.pi, dtype=sample.dtype))))
    return prev_sample, log_prob.mean(dim=tuple(range(1, log_prob.ndim)))


def float64_twin(config):
    """The same scheduler (same float32 ᾱ values) doing its arithmetic in float64: the precise
    reference. diffusers' float32 step keeps its scalars (σ_t, 1 − ᾱ_prev − σ_t²) in float32, which
    cancels to rounding noise when ᾱ_t ≈ 0, and torch's CPU sqrt is not correctly rounded."""
    sched = DDIMScheduler.from_config(config)
    sched.alphas_cumprod = sched.alphas_cumprod.double()
    sched.final_alpha_cumprod = sched.final_alpha_cumprod.double()
    return sched


def randn(gen, shape, scale=1.0):
    return torch.randn(shape, generator=gen, dtype=torch.float32) * scale


def sample_batch(gen, shape):
    # Samples of different magnitude, so thresholding's per-sample s lands both at 1 and inside (1, 2).
    scales = torch.tensor([0.5, 1.0, 1.4][: shape[0]]).reshape(-1, *([1] * (len(shape) - 1)))
    return randn(gen, shape) * scales


def weighted_sum(ts):
    return int(sum((i + 1) * int(t) for i, t in enumerate(ts)))


def timestep_sweep():
    """For each spacing, Σ (i+1)·t_i of diffusers' timesteps for every step count 1..1000.

    "trailing" checksums cover the first n timesteps: numpy's float arange sometimes gives n + 1
    values ending in -1; those n are listed under "trailing_extra". Counts whose schedule leaves
    0..999 (leading with steps_offset 1 at n = 1000) are null.
    """
    sweep = {"num_train_timesteps": 1000, "leading_steps_offset": 1}
    extra = []
    for spacing in ("leading", "trailing", "linspace"):
        sched = DDIMScheduler(timestep_spacing=spacing, steps_offset=1 if spacing == "leading" else 0)
        sums = []
        for n in range(1, 1001):
            sched.set_timesteps(n)
            ts = sched.timesteps.tolist()
            if len(ts) != n:
                assert spacing == "trailing" and len(ts) == n + 1 and ts[-1] == -1, (spacing, n, ts[-3:])
                extra.append(n)
                ts = ts[:n]
            sums.append(None if min(ts) < 0 or max(ts) >= 1000 else weighted_sum(ts))
        sweep[spacing] = sums
    sweep["trailing_extra"] = extra
    return sweep


def main():
    os.makedirs(OUT_DIR, exist_ok=True)
    tensors = {}
    out = {"configs": {}, "timestep_sweep": timestep_sweep()}
    gen = torch.Generator().manual_seed(20240607)

    for name, config in CONFIGS.items():
        sched = DDIMScheduler.from_config(config)
        sched64 = float64_twin(config)
        T = sched.config.num_train_timesteps
        entry = {"config": config, "timesteps": {}, "final_alpha_cumprod": float(sched.final_alpha_cumprod)}
        tensors[f"{name}.betas"] = sched.betas.clone()
        tensors[f"{name}.alphas_cumprod"] = sched.alphas_cumprod.clone()
        # All T steps too, except for T = 1000 (timestep_sweep covers every count there).
        for n in STEP_COUNTS + ([T] if T < 1000 else []):
            try:
                sched.set_timesteps(n)
                entry["timesteps"][str(n)] = sched.timesteps.tolist()
            except Exception:  # noqa: BLE001 - recorded as "diffusers refuses"
                entry["timesteps"][str(n)] = None

        sched.set_timesteps(10)
        sched64.set_timesteps(10)
        ts = sched.timesteps.tolist()

        # diffusers step: first, middle and last timestep of a 10-step schedule, eta 0 and 1.
        steps = []
        for t in (ts[0], ts[5], ts[-1]):
            for eta in (0.0, 1.0):
                for clipped in ((False, True) if name == "cosine_sample_clip" else (False,)):
                    i = len(steps)
                    model_output = randn(gen, SHAPE, 0.8)
                    sample = sample_batch(gen, SHAPE)
                    noise = randn(gen, SHAPE)
                    res = sched.step(model_output, t, sample, eta=eta, use_clipped_model_output=clipped,
                                     variance_noise=noise)
                    res64 = sched64.step(model_output.double(), t, sample.double(), eta=eta,
                                         use_clipped_model_output=clipped, variance_noise=noise.double())
                    key = f"{name}.step{i}"
                    tensors[f"{key}.prev_sample_f64"] = res64.prev_sample
                    tensors[f"{key}.pred_original_sample_f64"] = res64.pred_original_sample
                    tensors[f"{key}.model_output"] = model_output
                    tensors[f"{key}.sample"] = sample
                    tensors[f"{key}.noise"] = noise
                    tensors[f"{key}.prev_sample"] = res.prev_sample
                    tensors[f"{key}.pred_original_sample"] = res.pred_original_sample
                    steps.append({"timestep": t, "eta": eta, "use_clipped_model_output": clipped})
        entry["steps"] = steps

        # DDPO log-probs: per-sample timesteps, sampled (given noise) and scored (given prev_sample).
        logprobs = []
        # The last step (t_prev clamps to 0) unless it is t = 0, where DDPO's log-prob is undefined.
        last = ts[9] if ts[9] > 0 else ts[8]
        batch_timesteps = [[ts[0], ts[4], last], [ts[2], ts[2], ts[2]]]
        if name == "sd15":
            batch_timesteps.append([ts[7], ts[3], ts[9]])
        for per_sample in batch_timesteps:
            for eta in (1.0, 0.5):
                for mode in ("sample", "score"):
                    i = len(logprobs)
                    model_output = randn(gen, LOGPROB_SHAPE, 0.8)
                    sample = sample_batch(gen, LOGPROB_SHAPE)
                    timestep = torch.tensor(per_sample, dtype=torch.int64)
                    if mode == "sample":
                        noise = randn(gen, LOGPROB_SHAPE)
                        given = None
                        tensors[f"{name}.logprob{i}.noise"] = noise
                    else:
                        noise = None
                        given = sample_batch(gen, LOGPROB_SHAPE) * 0.9
                    weight = randn(gen, [LOGPROB_SHAPE[0]])
                    key = f"{name}.logprob{i}"
                    for suffix, sch, dtype in (("", sched, torch.float32), ("_f64", sched64, torch.float64)):
                        mo = model_output.to(dtype).requires_grad_(True)
                        prev, log_prob = ddpo_step_with_logprob(
                            sch, mo, timestep, sample.to(dtype), eta,
                            prev_sample=None if given is None else given.to(dtype),
                            noise=None if noise is None else noise.to(dtype))
                        (grad,) = torch.autograd.grad((log_prob * weight.to(dtype)).sum(), mo)
                        tensors[f"{key}.prev_sample{suffix}"] = prev.detach()
                        tensors[f"{key}.log_prob{suffix}"] = log_prob.detach()
                        if suffix:  # torch's float32 gradient adds nothing over the float64 one
                            tensors[f"{key}.grad_model_output{suffix}"] = grad
                    tensors[f"{key}.model_output"] = model_output
                    tensors[f"{key}.sample"] = sample
                    tensors[f"{key}.grad_weight"] = weight
                    logprobs.append({"timesteps": per_sample, "eta": eta, "mode": mode})
        entry["logprobs"] = logprobs

        # Where DDPO's log-prob is NaN/inf: a timestep whose clamped previous timestep is itself (t=0).
        if 0 in ts:
            mo, sa, nz = randn(gen, LOGPROB_SHAPE), randn(gen, LOGPROB_SHAPE), randn(gen, LOGPROB_SHAPE)
            _, lp = ddpo_step_with_logprob(sched, mo, torch.tensor([0, ts[0], ts[1]]), sa, 1.0, noise=nz)
            entry["ddpo_undefined_at_zero"] = {"timesteps": [0, ts[0], ts[1]], "log_prob_finite": torch.isfinite(lp).tolist()}

        out["configs"][name] = entry

    tensors = {k: v.detach().contiguous().to(torch.float32) for k, v in tensors.items()}
    save_file(tensors, os.path.join(OUT_DIR, "tensors.safetensors"))
    with open(os.path.join(OUT_DIR, "fixtures.json"), "w") as f:
        json.dump(out, f, separators=(",", ":"))
        f.write("\n")
    print(f"wrote {len(tensors)} tensors for {len(CONFIGS)} configs to {OUT_DIR}")


if __name__ == "__main__":
    main()
