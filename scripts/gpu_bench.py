#!/usr/bin/env python3
"""GPU benchmark: our `ddpo` binary against diffusers 0.35.2 and TRL 0.21's DDPOTrainer, at Stable
Diffusion 1.5 scale with random weights. Run on the device machine by scripts/gpu-bench.sh.

    python3 scripts/gpu_bench.py                         # device: cuda, SD 1.5 config, fp16
    python3 scripts/gpu_bench.py --device cpu --tiny     # here: tiny config, fp32, a few steps

Phases, in order of value, each timed and each in its own subprocess with a hard timeout (a
failure or a timeout becomes a row "failed: <reason>" and the script goes on):

  weights   a random-weight SD 1.5-config diffusers folder in /tmp/sd15 (UNet 320/640/1280/1280,
            cross-attention 768, SD VAE, CLIP ViT-L/14 text encoder, PNDM scheduler config as SD
            1.5's, the real CLIP BPE tokenizer derived from the repository's merges.txt), built on
            the GPU with torch.manual_seed(0) and saved in fp16 safetensors.
  unet      UNet forward, batch 2 (CFG), 64x64 latents, 77x768 text states, one timestep, fp16,
            default SDPA attention, no grad: 3 warm-up runs, median of 20. The inputs and diffusers'
            output are saved (float32) in /tmp/bench; `ddpo bench-unet` runs the same inputs and
            its output is compared: max|ours - ref| / max|ref| <= 1e-2. On CUDA ours runs again with
            convolutions through im2col + cuBLAS (TENSORKIT_CUDA_CONV_MMA=0), an A/B row.
  sample    50-step DDIM (eta 0, guidance 7.5), 2 prompts at 512x512, fp16, VAE decode included,
            model load excluded: StableDiffusionPipeline (one 2-step warm-up call) vs `ddpo sample
            --timing --warmup_steps 2` (the same warm-up in the process, so neither side pays kernel
            loading, cuBLAS set-up or allocator growth in the timed call). On CUDA ours runs again
            with TENSORKIT_CUDA_CONV_MMA=0, an A/B row; and, while 260 s remain (the epoch needs ~200), with
            TENSORKIT_CUDA_VECTORS=0 and TENSORKIT_CUDA_FAST_COPY=0 (element-wise access), another.
            The note splits each side into text encoding, denoising and VAE decode (ours in its timed
            run; diffusers' in a second run in parts: encode_prompt, output_type="latent", vae.decode).
  ddpo      one DDPO epoch with TRL's blog settings (sample batch 6 x 4 batches, train batch 3,
            50 steps, fp16, LoRA rank 4, jpeg_compressibility, a fixed animal prompt list):
            TRL DDPOTrainer.step (epoch 0; epoch 1 too when time allows) vs `ddpo train
            --num_epochs 1` (its metrics.jsonl's epoch_seconds; the note adds our sampling part's
            time in the models and in the reward).
  profile   (opt-in: --phases ...,profile) ours only, TENSORKIT_CUDA_PROFILE=1: a one-batch DDPO
            epoch (10 steps), the same with TENSORKIT_CUDA_CONV_MMA=0 when time allows, and a
            10-step sampling run; the per-kernel tables, sampling and training apart, are in
            bench-logs.txt (profile_train.log, profile_train_im2col.log, profile_sample.log).

Prints a markdown table at the end (and writes $OUT/bench.md and $OUT/bench.json when OUT is set).
Our binary is $DDPO (default .gpu-bin/ddpo, else .build/release/ddpo).
"""

import argparse
import json
import os
import random
import resource
import shlex
import shutil
import signal
import subprocess
import sys
import time
import traceback

from bench_common import ANIMALS, clip_byte_symbols, jpeg_compressibility

HERE = os.path.dirname(os.path.abspath(__file__))
ROOT = os.path.dirname(HERE)
MERGES = os.path.join(ROOT, "Tests", "DiffusionModelsTests", "Fixtures", "tokenizer", "merges.txt")

SAMPLE_PROMPTS = ["a photo of a cat", "a photo of a dog"]

# SD 1.5's configurations (runwayml/stable-diffusion-v1-5), and a tiny one for CPU tests.
FULL = dict(
    unet=dict(sample_size=64, in_channels=4, out_channels=4, center_input_sample=False, flip_sin_to_cos=True,
              freq_shift=0, down_block_types=["CrossAttnDownBlock2D"] * 3 + ["DownBlock2D"],
              up_block_types=["UpBlock2D"] + ["CrossAttnUpBlock2D"] * 3, block_out_channels=[320, 640, 1280, 1280],
              layers_per_block=2, downsample_padding=1, mid_block_scale_factor=1, act_fn="silu",
              norm_num_groups=32, norm_eps=1e-5, cross_attention_dim=768, attention_head_dim=8),
    vae=dict(in_channels=3, out_channels=3, down_block_types=["DownEncoderBlock2D"] * 4,
             up_block_types=["UpDecoderBlock2D"] * 4, block_out_channels=[128, 256, 512, 512], layers_per_block=2,
             act_fn="silu", latent_channels=4, norm_num_groups=32, sample_size=512),
    text=dict(vocab_size=49408, hidden_size=768, intermediate_size=3072, num_hidden_layers=12,
              num_attention_heads=12, max_position_embeddings=77, hidden_act="quick_gelu", projection_dim=768,
              layer_norm_eps=1e-5, bos_token_id=0, eos_token_id=2, pad_token_id=1),
    latent=64, image=512, sample_steps=50,
    ddpo=dict(sample_batch_size=6, sample_num_batches_per_epoch=4, train_batch_size=3, sample_num_steps=50),
)
TINY = dict(
    unet=dict(sample_size=8, in_channels=4, out_channels=4, block_out_channels=[32, 64], layers_per_block=2,
              down_block_types=["DownBlock2D", "CrossAttnDownBlock2D"],
              up_block_types=["CrossAttnUpBlock2D", "UpBlock2D"], cross_attention_dim=32, attention_head_dim=8),
    vae=dict(in_channels=3, out_channels=3, down_block_types=["DownEncoderBlock2D"] * 2,
             up_block_types=["UpDecoderBlock2D"] * 2, block_out_channels=[32, 64], latent_channels=4,
             sample_size=16),
    text=dict(vocab_size=49408, hidden_size=32, intermediate_size=37, num_hidden_layers=2, num_attention_heads=4,
              max_position_embeddings=77, hidden_act="quick_gelu", projection_dim=32, layer_norm_eps=1e-5,
              bos_token_id=0, eos_token_id=2, pad_token_id=1),
    latent=8, image=16, sample_steps=4,
    ddpo=dict(sample_batch_size=2, sample_num_batches_per_epoch=2, train_batch_size=1, sample_num_steps=4),
)
SCHEDULER = {"_class_name": "PNDMScheduler", "_diffusers_version": "0.6.0", "beta_end": 0.012,
             "beta_schedule": "scaled_linear", "beta_start": 0.00085, "num_train_timesteps": 1000,
             "set_alpha_to_one": False, "skip_prk_steps": True, "steps_offset": 1, "trained_betas": None,
             "clip_sample": False}
MODEL_INDEX = {"_class_name": "StableDiffusionPipeline", "_diffusers_version": "0.6.0",
               "feature_extractor": [None, None], "safety_checker": [None, None], "requires_safety_checker": False,
               "scheduler": ["diffusers", "PNDMScheduler"], "text_encoder": ["transformers", "CLIPTextModel"],
               "tokenizer": ["transformers", "CLIPTokenizer"], "unet": ["diffusers", "UNet2DConditionModel"],
               "vae": ["diffusers", "AutoencoderKL"]}


def special(content):
    return {"__type": "AddedToken", "content": content, "lstrip": False, "normalized": True, "rstrip": False,
            "single_word": False}


# ---------------------------------------------------------------------------------------------
# Children (each runs in its own process: `--child NAME`) write their results as JSON to --result.

class Ctx:
    def __init__(self, a):
        self.a = a
        self.cfg = TINY if a.tiny else FULL
        self.model = a.model
        self.bench = a.bench
        self.cuda = a.device.startswith("cuda")

    def torch(self):
        import torch
        self.dtype = torch.float16 if (self.cuda and not self.a.fp32) else torch.float32
        if not self.cuda:
            torch.set_num_threads(max(1, os.cpu_count() or 1))
        return torch

    def sync(self):
        import torch
        if self.cuda:
            torch.cuda.synchronize()

    def reset_peak(self):
        import torch
        if self.cuda:
            torch.cuda.reset_peak_memory_stats()

    def peak_mib(self):
        import torch
        if self.cuda:
            return torch.cuda.max_memory_allocated() / 2**20
        return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024.0  # process peak RSS (KiB on Linux)

    def reserved_mib(self):
        # What PyTorch's caching allocator held from the device at its peak (None on the CPU).
        import torch
        return torch.cuda.max_memory_reserved() / 2**20 if self.cuda else None


def write_result(path, obj):
    tmp = path + ".tmp"
    with open(tmp, "w") as f:
        json.dump(obj, f)
    os.replace(tmp, path)


def write_tokenizer(folder):
    """The real CLIP vocabulary (49408 tokens) from the repository's merges.txt when it is there;
    otherwise the 512 byte-level tokens and the two specials with no merges."""
    os.makedirs(folder, exist_ok=True)
    symbols = clip_byte_symbols()
    merges = []
    if os.path.exists(MERGES):
        with open(MERGES, encoding="utf-8") as f:
            lines = f.read().split("\n")
        merges = [m for m in lines[1:] if m.strip()][: 49152 - 256 - 2]
    vocab = symbols + [s + "</w>" for s in symbols] + ["".join(m.split()) for m in merges]
    vocab += ["<|startoftext|>", "<|endoftext|>"]
    with open(os.path.join(folder, "vocab.json"), "w", encoding="utf-8") as f:
        json.dump({t: i for i, t in enumerate(vocab)}, f, ensure_ascii=False)
    with open(os.path.join(folder, "merges.txt"), "w", encoding="utf-8") as f:
        f.write("#version: 0.2\n" + "".join(m + "\n" for m in merges))
    config = {"add_prefix_space": False, "bos_token": special("<|startoftext|>"), "do_lower_case": True,
              "eos_token": special("<|endoftext|>"), "errors": "replace", "model_max_length": 77,
              "pad_token": "<|endoftext|>", "tokenizer_class": "CLIPTokenizer", "unk_token": special("<|endoftext|>")}
    with open(os.path.join(folder, "tokenizer_config.json"), "w") as f:
        json.dump(config, f, indent=2)
    smap = {k: ({kk: vv for kk, vv in v.items() if kk != "__type"} if isinstance(v, dict) else v)
            for k, v in config.items() if k in ("bos_token", "eos_token", "pad_token", "unk_token")}
    with open(os.path.join(folder, "special_tokens_map.json"), "w") as f:
        json.dump(smap, f, indent=2)
    return len(vocab), len(merges)


def save_model(model, path):
    try:
        model.save_pretrained(path, safe_serialization=True)
    except TypeError:  # transformers 5 always writes safetensors and may not take the flag
        model.save_pretrained(path)


def fix_text_encoder_keys(folder):
    """transformers 5 saves CLIPTextModel without the `text_model.` prefix; SD 1.5's checkpoint (and
    every diffusers folder on the Hub) has it. Rewrite the file in SD 1.5's layout."""
    from safetensors.torch import load_file, save_file
    path = os.path.join(folder, "model.safetensors")
    sd = load_file(path)
    if all(k.startswith("text_model.") for k in sd):
        return "text_model.* (as saved)"
    sd = {(k if k.startswith("text_model.") else "text_model." + k): v.contiguous() for k, v in sd.items()
          if not k.endswith("position_ids")}
    save_file(sd, path, metadata={"format": "pt"})
    return "text_model.* (prefix added)"


def child_weights(c):
    t0 = time.perf_counter()
    torch = c.torch()
    import diffusers
    import transformers
    from diffusers import AutoencoderKL, UNet2DConditionModel
    from transformers import CLIPTextConfig, CLIPTextModel, CLIPTokenizer
    res = {"torch": torch.__version__, "diffusers": diffusers.__version__, "transformers": transformers.__version__}
    for name in ("trl", "peft", "accelerate", "huggingface_hub", "tokenizers"):
        try:
            res[name] = __import__(name).__version__
        except Exception as e:  # noqa: BLE001
            res[name] = f"not importable: {type(e).__name__}: {e}"[:200]
    res["device_name"] = torch.cuda.get_device_name() if c.cuda else "cpu"
    shutil.rmtree(c.model, ignore_errors=True)
    os.makedirs(c.model)
    dev = torch.device(c.a.device)
    torch.manual_seed(0)
    # Initialised in float32 on the device (fast at this size), then cast and saved in fp16.
    with dev:
        unet = UNet2DConditionModel(**c.cfg["unet"]).eval()
        vae = AutoencoderKL(**c.cfg["vae"]).eval()
        text = CLIPTextModel(CLIPTextConfig(**c.cfg["text"])).eval()
    save_dtype = torch.float16 if not c.a.tiny else torch.float32
    unet, vae, text = unet.to(save_dtype), vae.to(save_dtype), text.to(save_dtype)
    res["unet_params_m"] = sum(p.numel() for p in unet.parameters()) / 1e6
    res["init_s"] = time.perf_counter() - t0
    # Sanity: the fp16 UNet's output on unit-normal inputs is finite.
    with torch.no_grad():
        lat = c.cfg["latent"]
        g = torch.Generator(device=dev).manual_seed(1)
        x = torch.randn(2, 4, lat, lat, generator=g, device=dev, dtype=c.dtype)
        ehs = torch.randn(2, 77, c.cfg["unet"]["cross_attention_dim"], generator=g, device=dev, dtype=c.dtype)
        out = unet.to(c.dtype)(x, torch.tensor([500.0], device=dev), ehs).sample.float()
        res["check_dtype"] = str(c.dtype).replace("torch.", "")
        res["unet_finite"] = bool(torch.isfinite(out).all())
        res["unet_out_std"] = float(out.std())
        img = vae.to(c.dtype).decode(x[:1] / 0.18215).sample.float()
        res["vae_finite"] = bool(torch.isfinite(img).all())
        ids = torch.randint(0, 49408, (2, 77), generator=g, device=dev)
        hs = text.to(c.dtype)(ids).last_hidden_state.float()
        res["text_finite"] = bool(torch.isfinite(hs).all())
    unet, vae, text = unet.to(save_dtype), vae.to(save_dtype), text.to(save_dtype)
    save_model(unet, os.path.join(c.model, "unet"))
    save_model(vae, os.path.join(c.model, "vae"))
    save_model(text, os.path.join(c.model, "text_encoder"))
    res["text_keys"] = fix_text_encoder_keys(os.path.join(c.model, "text_encoder"))
    os.makedirs(os.path.join(c.model, "scheduler"))
    with open(os.path.join(c.model, "scheduler", "scheduler_config.json"), "w") as f:
        json.dump(SCHEDULER, f, indent=2)
    with open(os.path.join(c.model, "model_index.json"), "w") as f:
        json.dump(MODEL_INDEX, f, indent=2)
    res["vocab"], res["merges"] = write_tokenizer(os.path.join(c.model, "tokenizer"))
    tok = CLIPTokenizer.from_pretrained(os.path.join(c.model, "tokenizer"))
    res["tokenizer_ids"] = tok("a photo of a cat", padding="max_length", max_length=77, truncation=True).input_ids[:8]
    res["files"] = sorted(os.path.relpath(os.path.join(d, f), c.model) for d, _, fs in os.walk(c.model) for f in fs)
    res["seconds"] = time.perf_counter() - t0
    write_result(c.a.result, res)


def child_unet_ref(c):
    torch = c.torch()
    from diffusers import UNet2DConditionModel
    from safetensors.torch import save_file
    dev = torch.device(c.a.device)
    c.reset_peak()
    unet = UNet2DConditionModel.from_pretrained(os.path.join(c.model, "unet"), torch_dtype=c.dtype).to(dev).eval()
    unet.requires_grad_(False)
    from diffusers.models.attention_processor import AttnProcessor2_0
    unet.set_attn_processor(AttnProcessor2_0())  # SDPA (diffusers' default; set_default_attn_processor is not)
    proc = type(next(iter(unet.attn_processors.values()))).__name__
    lat, cad = c.cfg["latent"], c.cfg["unet"]["cross_attention_dim"]
    g = torch.Generator().manual_seed(0)
    inputs = {"sample": torch.randn(2, 4, lat, lat, generator=g), "timestep": torch.tensor([500.0]),
              "encoder_hidden_states": torch.randn(2, 77, cad, generator=g)}
    os.makedirs(c.bench, exist_ok=True)
    save_file(inputs, os.path.join(c.bench, "unet_in.safetensors"))
    x = inputs["sample"].to(dev, c.dtype)
    t = inputs["timestep"].to(dev)
    ehs = inputs["encoder_hidden_states"].to(dev, c.dtype)
    times = []
    with torch.no_grad():
        for i in range(c.a.warmup + c.a.iterations):
            c.sync()
            t0 = time.perf_counter()
            out = unet(x, t, ehs).sample
            c.sync()
            if i >= c.a.warmup:
                times.append((time.perf_counter() - t0) * 1000)
    out = out.float().cpu().contiguous()
    save_file({"out": out}, os.path.join(c.bench, "unet_ref.safetensors"))
    times.sort()
    write_result(c.a.result, {"median_ms": times[len(times) // 2], "min_ms": times[0], "peak_mib": c.peak_mib(),
                              "finite": bool(torch.isfinite(out).all()), "attn_processor": proc,
                              "out_absmax": float(out.abs().max())})


def child_sample_ref(c):
    torch = c.torch()
    from diffusers import DDIMScheduler, StableDiffusionPipeline
    dev = torch.device(c.a.device)
    c.reset_peak()
    pipe = StableDiffusionPipeline.from_pretrained(c.model, torch_dtype=c.dtype, safety_checker=None,
                                                   requires_safety_checker=False)
    pipe.scheduler = DDIMScheduler.from_config(pipe.scheduler.config)
    pipe = pipe.to(dev)
    pipe.set_progress_bar_config(disable=True)
    steps = c.cfg["sample_steps"]

    def run(n):
        return pipe(prompt=SAMPLE_PROMPTS, num_inference_steps=n, guidance_scale=7.5, eta=0.0, output_type="pt",
                    height=c.cfg["image"], width=c.cfg["image"],
                    generator=torch.Generator(device=dev).manual_seed(0)).images

    run(2)  # warm-up
    c.sync()
    t0 = time.perf_counter()
    images = run(steps)
    c.sync()
    seconds = time.perf_counter() - t0
    peak = c.peak_mib()
    # The same run again in three timed parts, as `ddpo sample --timing` splits ours: the text
    # encoder, the denoising loop (output_type="latent"), the VAE decode.
    t0 = time.perf_counter()
    cond, uncond = pipe.encode_prompt(SAMPLE_PROMPTS, dev, 1, True)
    c.sync()
    t1 = time.perf_counter()
    latents = pipe(prompt_embeds=cond, negative_prompt_embeds=uncond, num_inference_steps=steps, guidance_scale=7.5,
                   eta=0.0, output_type="latent", height=c.cfg["image"], width=c.cfg["image"],
                   generator=torch.Generator(device=dev).manual_seed(0)).images
    c.sync()
    t2 = time.perf_counter()
    pipe.vae.decode(latents / pipe.vae.config.scaling_factor, return_dict=False)
    c.sync()
    t3 = time.perf_counter()
    write_result(c.a.result, {"sampling_seconds": seconds, "peak_mib": peak, "steps": steps,
                              "images": list(images.shape), "finite": bool(torch.isfinite(images).all()),
                              "text_seconds": t1 - t0, "denoise_seconds": t2 - t1, "decode_seconds": t3 - t2})


def child_ddpo_ref(c):
    import warnings
    warnings.filterwarnings("ignore")
    c.torch()  # imports torch and sets it up for this process
    from trl import DDPOConfig, DDPOTrainer, DefaultDDPOStableDiffusionPipeline
    random.seed(0)

    def prompt_fn():
        return random.choice(ANIMALS), {}

    workdir = os.path.join(c.bench, "trl")
    shutil.rmtree(workdir, ignore_errors=True)
    os.makedirs(workdir)
    mp = "fp16" if (c.cuda and not c.a.fp32) else "no"
    config = DDPOConfig(num_epochs=2, mixed_precision=mp, log_with=None, seed=0, save_freq=10**6, logdir=workdir,
                        train_gradient_accumulation_steps=1, train_timestep_fraction=1.0,
                        project_kwargs=dict(project_dir=workdir, logging_dir=os.path.join(workdir, "logs")),
                        **c.cfg["ddpo"])
    c.reset_peak()
    pipeline = DefaultDDPOStableDiffusionPipeline(c.model, use_lora=True)
    rewards = []

    def reward_fn(images, prompts, metadata):
        r, meta = jpeg_compressibility(images, prompts, metadata)
        rewards.extend(r.tolist())
        return r, meta

    trainer = DDPOTrainer(config, reward_fn, prompt_fn, pipeline)
    phase = {}
    generate = trainer._generate_samples

    def timed_generate(*a, **k):
        t0 = time.perf_counter()
        out = generate(*a, **k)
        c.sync()
        phase["sampling"] = time.perf_counter() - t0
        return out

    trainer._generate_samples = timed_generate
    res = {"mixed_precision": mp, "epochs": []}
    global_step = 0
    for epoch in range(2):
        c.sync()
        t0 = time.perf_counter()
        global_step = trainer.step(epoch, global_step)
        c.sync()
        seconds = time.perf_counter() - t0
        res["epochs"].append({"epoch": epoch, "seconds": seconds, "sampling_seconds": phase.get("sampling"),
                              "peak_mib": c.peak_mib(), "reserved_mib": c.reserved_mib(),
                              "reward_mean": sum(rewards) / len(rewards) if rewards else None})
        rewards.clear()
        write_result(c.a.result, res)
        if time.time() + 1.15 * seconds + 5 > c.a.deadline:
            break


CHILDREN = {"weights": child_weights, "unet_ref": child_unet_ref, "sample_ref": child_sample_ref,
            "ddpo_ref": child_ddpo_ref}


# ---------------------------------------------------------------------------------------------
# The orchestrator.

class Runner:
    def __init__(self, a):
        self.a = a
        self.start = time.time()
        self.deadline = self.start + a.budget
        self.logs = os.path.join(a.bench, "logs")
        os.makedirs(self.logs, exist_ok=True)
        self.results = {}

    def remaining(self):
        return self.deadline - time.time()

    def timeout(self, cap):
        return max(1.0, min(cap, self.remaining()))

    def run(self, name, argv, cap, env=None):
        """Runs argv with a hard timeout (killing its process group); returns (rc or None on timeout,
        stdout, stderr tail, seconds) and keeps both streams in logs/<name>.log."""
        t = self.timeout(cap)
        if self.remaining() < 3:
            return None, "", f"skipped: the {self.a.budget:.0f} s budget is spent", 0.0
        print(f"[{time.time() - self.start:6.1f} s] {name}: {' '.join(shlex.quote(x) for x in argv)} "
              f"(timeout {t:.0f} s)", file=sys.stderr, flush=True)
        t0 = time.time()
        log = os.path.join(self.logs, name + ".log")
        with open(log, "w") as errf:
            p = subprocess.Popen(argv, stdout=subprocess.PIPE, stderr=errf, text=True, start_new_session=True,
                                 env=env)
            try:
                out, _ = p.communicate(timeout=t)
                rc = p.returncode
            except subprocess.TimeoutExpired:
                kill_group(p)
                out, _ = p.communicate()
                rc = None
            except BaseException:  # SIGTERM from the caller's timeout: kill the phase, then print the table
                kill_group(p)
                raise
        seconds = time.time() - t0
        with open(log, errors="replace") as f:
            err = f.read()
        with open(log, "a") as f:
            f.write("\n--- stdout ---\n" + (out or "")[-20000:])
        if rc is None:
            err += f"\ntimeout after {t:.0f} s"
        print(f"[{time.time() - self.start:6.1f} s] {name}: rc {rc}, {seconds:.1f} s", file=sys.stderr, flush=True)
        return rc, out or "", err, seconds

    def child(self, name, cap, extra=()):
        result = os.path.join(self.a.bench, name + ".json")
        if os.path.exists(result):
            os.remove(result)
        t = self.timeout(cap)
        argv = [sys.executable, os.path.abspath(__file__), "--child", name, "--result", result,
                "--device", self.a.device, "--model", self.a.model, "--bench", self.a.bench,
                "--deadline", str(time.time() + t - 2), *extra]
        if self.a.tiny:
            argv.append("--tiny")
        if self.a.fp32:
            argv.append("--fp32")
        rc, out, err, seconds = self.run(name, argv, cap)
        res = None
        if os.path.exists(result):
            with open(result) as f:
                res = json.load(f)
        if res is None or rc not in (0, None) and not res:
            return {"error": failure(rc, err), "wall_s": seconds}
        res = dict(res)
        res["wall_s"] = seconds
        if rc != 0:
            res["partial"] = failure(rc, err)
        return res

    def ours(self, name, args, cap, env=None):
        if not os.path.exists(self.a.ddpo):
            return {"error": f"no binary at {self.a.ddpo}"}
        rc, out, err, seconds = self.run(name, [self.a.ddpo, *args], cap, env=env)
        res = {"wall_s": seconds, "stdout_tail": out.strip().splitlines()[-3:] if out.strip() else []}
        if rc != 0:
            res["error"] = failure(rc, err, first=True)
        res["json"] = last_json(out)
        return res


def epoch_switches(R, margin=0.97):
    """The backend switches for our DDPO epoch, from this call's sampling A/B rows: a path that is new
    and unmeasured on a GPU (the tensor-core convolution; the vector and fast-copy forms) is turned off
    for the epoch when the same sampling run without it was faster by more than 3 %. The epoch is too
    long to run twice; the sampling run is the closest to its sampling part, and the choice is
    printed with the table."""
    base = ((R.get("sample_ours") or {}).get("json") or {}).get("sampling_seconds")
    if not base or "error" in (R.get("sample_ours") or {}):
        return {}
    out = {}
    for key, env in (("sample_ours_im2col", {"TENSORKIT_CUDA_CONV_MMA": "0"}),
                     ("sample_ours_scalar", {"TENSORKIT_CUDA_VECTORS": "0", "TENSORKIT_CUDA_FAST_COPY": "0"})):
        run = R.get(key) or {}
        t = (run.get("json") or {}).get("sampling_seconds")
        if t and "error" not in run and t < margin * base:
            out.update(env)
    return out


def kill_group(p):
    try:
        os.killpg(p.pid, signal.SIGKILL)
    except (ProcessLookupError, PermissionError):
        pass


class Terminated(Exception):
    pass


def on_sigterm(signum, frame):
    raise Terminated(f"signal {signum}: stopped by the caller's timeout")


def failure(rc, err, first=False):
    """A one-line reason: a timeout; else, for our binary (first=True), its first stderr line (the
    error it reports); for Python, the last line naming an error (the traceback's exception)."""
    lines = [ln.strip() for ln in err.strip().splitlines() if ln.strip()]
    if rc is None:
        return (lines[-1] if lines and ("timeout after" in lines[-1] or "skipped" in lines[-1]) else "timeout")
    if not lines:
        return f"exit {rc}"
    if first:
        msg = lines[0]
    else:
        picks = [ln for ln in lines if ("Error" in ln or "error:" in ln.lower() or "Exception" in ln)]
        msg = picks[-1] if picks else lines[-1]
    return f"exit {rc}: " + msg[:300]


def last_json(text):
    for line in reversed(text.strip().splitlines()):
        line = line.strip()
        if line.startswith("{") and line.endswith("}"):
            try:
                return json.loads(line)
            except json.JSONDecodeError:
                continue
    return None


def compare_unet(bench):
    import numpy as np
    from safetensors.numpy import load_file
    ref = load_file(os.path.join(bench, "unet_ref.safetensors"))["out"].astype(np.float64)
    ours = load_file(os.path.join(bench, "unet_ours.safetensors"))
    o = (ours["out"] if "out" in ours else next(iter(ours.values()))).astype(np.float64)
    if o.shape != ref.shape:
        return {"error": f"shape {list(o.shape)} vs reference {list(ref.shape)}"}
    diff = np.abs(o - ref)
    rel = float(diff.max() / max(np.abs(ref).max(), 1e-30))
    return {"rel_err": rel, "mean_abs_err": float(diff.mean()), "ref_absmax": float(np.abs(ref).max()),
            "finite": bool(np.isfinite(o).all()), "pass": bool(np.isfinite(o).all() and rel <= 1e-2)}


def fmt(x, unit="", digits=1):
    if x is None:
        return "—"
    return f"{x:.{digits}f}{unit}"


def main_orchestrator(a):
    r = Runner(a)
    cfg = TINY if a.tiny else FULL
    cuda = a.device.startswith("cuda")
    mp = "fp16" if (cuda and not a.fp32) else "no"
    R = r.results
    R["settings"] = {"device": a.device, "tiny": a.tiny, "mixed_precision": mp, "budget_s": a.budget,
                     "ddpo_binary": a.ddpo, "python": sys.version.split()[0]}

    try:
        # a. weights
        R["weights"] = r.child("weights", 120 if not a.tiny else 60)
        have_model = "error" not in R["weights"] and os.path.exists(os.path.join(a.model, "model_index.json"))

        # b. unet
        phases = set(a.phases.split(","))
        if have_model and "unet" in phases:
            R["unet_ref"] = r.child("unet_ref", 60, ["--warmup", str(a.warmup), "--iterations", str(a.iterations)])
            ours_out = os.path.join(a.bench, "unet_ours.safetensors")
            if os.path.exists(ours_out):
                os.remove(ours_out)
            if "error" not in R["unet_ref"]:
                R["unet_ours"] = r.ours("unet_ours", ["bench-unet", "--model", a.model, "--inputs",
                                                      os.path.join(a.bench, "unet_in.safetensors"), "--out", ours_out,
                                                      "--device", a.device, "--mixed_precision", mp,
                                                      "--warmup", str(a.warmup), "--iterations", str(a.iterations)], 90)
                if os.path.exists(ours_out):
                    try:
                        R["unet_check"] = compare_unet(a.bench)
                    except Exception as e:  # noqa: BLE001
                        R["unet_check"] = {"error": f"{type(e).__name__}: {e}"[:300]}
                else:
                    R["unet_check"] = {"error": "no output from ours"}
                if cuda and "error" not in R["unet_ours"]:
                    # A/B in the same call: convolutions through im2col + cuBLAS (TENSORKIT_CUDA_CONV_MMA=0).
                    R["unet_ours_im2col"] = r.ours("unet_ours_im2col", ["bench-unet", "--model", a.model, "--inputs",
                                                                        os.path.join(a.bench, "unet_in.safetensors"),
                                                                        "--out", os.path.join(a.bench, "unet_ours_im2col.safetensors"),
                                                                        "--device", a.device, "--mixed_precision", mp,
                                                                        "--warmup", str(a.warmup), "--iterations", str(a.iterations)],
                                                   60, env=dict(os.environ, TENSORKIT_CUDA_CONV_MMA="0"))

        # c. sample
        if have_model and "sample" in phases:
            R["sample_ref"] = r.child("sample_ref", 60)
            prompts = []
            for p in SAMPLE_PROMPTS:
                prompts += ["--prompt", p]
            R["sample_ours"] = r.ours("sample_ours", ["sample", "--model", a.model, "--device", a.device,
                                                      "--mixed_precision", mp, "--steps", str(cfg["sample_steps"]),
                                                      *prompts, "--out", os.path.join(a.bench, "ours_samples"),
                                                      "--quiet", "--timing", "--warmup_steps", "2"], 100)
            if cuda and "error" not in R["sample_ours"]:  # A/B: convolutions through im2col + cuBLAS
                R["sample_ours_im2col"] = r.ours("sample_ours_im2col", [
                    "sample", "--model", a.model, "--device", a.device, "--mixed_precision", mp,
                    "--steps", str(cfg["sample_steps"]), *prompts, "--out", os.path.join(a.bench, "ours_samples_im2col"),
                    "--quiet", "--timing", "--warmup_steps", "2"], 60, env=dict(os.environ, TENSORKIT_CUDA_CONV_MMA="0"))
            if cuda and "error" not in R["sample_ours"] and r.remaining() > 260:  # A/B: element-wise access
                R["sample_ours_scalar"] = r.ours("sample_ours_scalar", [
                    "sample", "--model", a.model, "--device", a.device, "--mixed_precision", mp,
                    "--steps", str(cfg["sample_steps"]), *prompts, "--out", os.path.join(a.bench, "ours_samples_scalar"),
                    "--quiet", "--timing", "--warmup_steps", "2"], 60,
                    env=dict(os.environ, TENSORKIT_CUDA_VECTORS="0", TENSORKIT_CUDA_FAST_COPY="0"))

        # d. ddpo epoch (TRL first with its own cap, leaving the rest for ours)
        if have_model and "ddpo" in phases:
            prompts_file = os.path.join(a.bench, "prompts.txt")
            with open(prompts_file, "w") as f:
                f.write("\n".join(ANIMALS) + "\n")
            ref_cap = min(120, max(30, r.remaining() - 100))
            R["ddpo_ref"] = r.child("ddpo_ref", ref_cap)
            logdir = os.path.join(a.bench, "logs_ddpo")
            shutil.rmtree(logdir, ignore_errors=True)
            d = cfg["ddpo"]
            switches = epoch_switches(R) if cuda else {}
            R["ddpo_switches"] = switches
            R["ddpo_ours"] = r.ours("ddpo_ours", ["train", "--model", a.model, "--device", a.device,
                                                  "--mixed_precision", mp, "--num_epochs", "1",
                                                  "--sample_batch_size", str(d["sample_batch_size"]),
                                                  "--sample_num_batches_per_epoch", str(d["sample_num_batches_per_epoch"]),
                                                  "--train_batch_size", str(d["train_batch_size"]),
                                                  "--sample_num_steps", str(d["sample_num_steps"]),
                                                  "--reward", "jpeg_compressibility", "--prompts", prompts_file,
                                                  "--logdir", logdir, "--run_name", "r", "--quiet", "--save_freq", "1000",
                                                  # TRL trains without gradient checkpointing; ours decides
                                                  # (auto, the default: off when a pass fits); no report sampling
                                                  "--gradient_checkpointing", "auto", "--report_prompts", "0"],
                                      240, env=dict(os.environ, **switches) if switches else None)
            metrics = os.path.join(logdir, "r", "metrics.jsonl")
            if os.path.exists(metrics):
                with open(metrics) as f:
                    rows = [json.loads(ln) for ln in f if ln.strip().startswith("{")]
                merged = {}
                for row_ in rows:  # one epoch: keep each key's last value (reward, losses, timing rows)
                    merged.update(row_)
                R["ddpo_ours"]["metrics"] = merged or None
        # e. per-kernel profile of ours (opt-in): one short DDPO epoch and one sampling run with
        # TENSORKIT_CUDA_PROFILE=1; the tables (sampling and training apart) are in their logs.
        if have_model and "profile" in phases:
            d = cfg["ddpo"]
            env = dict(os.environ, TENSORKIT_CUDA_PROFILE="1")
            prompts_file = os.path.join(a.bench, "prompts.txt")
            with open(prompts_file, "w") as f:
                f.write("\n".join(ANIMALS) + "\n")
            logdir = os.path.join(a.bench, "logs_profile")
            shutil.rmtree(logdir, ignore_errors=True)
            R["profile_train"] = r.ours("profile_train", [
                "train", "--model", a.model, "--device", a.device, "--mixed_precision", mp, "--num_epochs", "1",
                "--sample_batch_size", str(d["sample_batch_size"]), "--sample_num_batches_per_epoch", "1",
                "--train_batch_size", str(d["train_batch_size"]), "--sample_num_steps", "10",
                "--reward", "jpeg_compressibility", "--prompts", prompts_file, "--logdir", logdir, "--run_name", "r",
                "--quiet", "--save_freq", "1000", "--gradient_checkpointing", "false", "--report_prompts", "0"],
                150, env=env)
            if r.remaining() > 40:  # the same epoch with convolutions through im2col, for comparison
                R["profile_train_im2col"] = r.ours("profile_train_im2col", [
                    "train", "--model", a.model, "--device", a.device, "--mixed_precision", mp, "--num_epochs", "1",
                    "--sample_batch_size", str(d["sample_batch_size"]), "--sample_num_batches_per_epoch", "1",
                    "--train_batch_size", str(d["train_batch_size"]), "--sample_num_steps", "10",
                    "--reward", "jpeg_compressibility", "--prompts", prompts_file, "--logdir", logdir + "_im2col",
                    "--run_name", "r", "--quiet", "--save_freq", "1000", "--gradient_checkpointing", "false",
                    "--report_prompts", "0"], 60, env=dict(env, TENSORKIT_CUDA_CONV_MMA="0"))
            R["profile_sample"] = r.ours("profile_sample", [
                "sample", "--model", a.model, "--device", a.device, "--mixed_precision", mp, "--steps", "10",
                "--prompt", SAMPLE_PROMPTS[0], "--prompt", SAMPLE_PROMPTS[1], "--out", os.path.join(a.bench, "profile_samples"),
                "--quiet", "--timing", "--warmup_steps", "2"], 90, env=env)
    except Exception:  # noqa: BLE001 -- a bug here must not cost the table
        R["orchestrator_error"] = traceback.format_exc()[-2000:]
        traceback.print_exc()
    R["total_s"] = time.time() - r.start
    try:
        table = render(R, cfg, a)
    except Exception:  # noqa: BLE001
        table = "render failed:\n" + traceback.format_exc() + "\n" + json.dumps(R, indent=1, default=str)
    if "orchestrator_error" in R:
        table += "\n\norchestrator error:\n" + R["orchestrator_error"]
    print(table, flush=True)
    out = os.environ.get("OUT")
    if out:
        os.makedirs(out, exist_ok=True)
        with open(os.path.join(out, "bench.md"), "w") as f:
            f.write(table + "\n")
        with open(os.path.join(out, "bench.json"), "w") as f:
            json.dump(R, f, indent=2, default=str)
        # One file of logs ($OUT brings back at most 8 files): each phase's stderr and stdout, tail-cut.
        with open(os.path.join(out, "bench-logs.txt"), "w") as f:
            for name in sorted(os.listdir(r.logs)):
                with open(os.path.join(r.logs, name), errors="replace") as g:
                    text = g.read()
                f.write(f"\n===== {name} ({len(text)} chars, last 40000) =====\n{text[-40000:]}\n")


def render(R, cfg, a):
    W = R.get("weights", {})
    rows = []

    def row(meas, ours, ref, ratio, mem, note):
        rows.append(f"| {meas} | {ours} | {ref} | {ratio} | {mem} | {note} |")

    def err(x):
        return f"failed: {x['error']}" if x and "error" in x else None

    def ratio(o, r_):
        return f"{o / r_:.2f}" if o is not None and r_ else "—"

    def mem(o, r_):
        return f"{fmt(o, ' MiB', 0)} / {fmt(r_, ' MiB', 0)}"

    def conv_ab_row(run, ref, key, unit, label="the same, convolutions through im2col + cuBLAS (TENSORKIT_CUDA_CONV_MMA=0)"):
        """Ours again with a switch off (`run`: TENSORKIT_CUDA_CONV_MMA=0 unless `label` says otherwise;
        None when it did not run) against `ref`."""
        if run is None:
            return
        j, r_value = run.get("json") or {}, (ref or {}).get(key)
        row(label,
            err(run) or fmt(j.get(key), unit, 2), err(ref) or fmt(r_value, unit, 2),
            ratio(j.get(key), r_value), mem(j.get("peak_mib"), (ref or {}).get("peak_mib")), "A/B in the same call")

    # weights
    if "error" in W:
        row("weights (random SD 1.5 config, fp16)", "—", err(W), "—", "—", "")
    else:
        fin = "finite" if W.get("unet_finite") and W.get("vae_finite") and W.get("text_finite") else \
            f"NOT finite (unet {W.get('unet_finite')}, vae {W.get('vae_finite')}, text {W.get('text_finite')})"
        row("weights (random, built on the device)", "—", fmt(W.get("seconds"), " s"), "—", "—",
            f"UNet {fmt(W.get('unet_params_m'), ' M', 0)} params, {W.get('check_dtype', '')} outputs {fin}, UNet out std "
            f"{fmt(W.get('unet_out_std'), '', 3)}; tokenizer {W.get('vocab')} tokens")
    lat = cfg["latent"]
    # unet
    U, UO, UC = R.get("unet_ref"), R.get("unet_ours"), R.get("unet_check") or {}
    if U is not None:
        oj = (UO or {}).get("json") or {}
        o_ms, r_ms = oj.get("median_ms"), (U or {}).get("median_ms")
        if UC.get("error") or "rel_err" not in UC:
            chk = f"check failed: {UC.get('error', 'n/a')}"
        else:
            chk = (f"{'PASS' if UC['pass'] else 'FAIL'}: rel err {UC['rel_err']:.2e} (≤ 1e-2), "
                   f"mean abs err {UC['mean_abs_err']:.2e}")
        note = f"median of {a.iterations}, {a.warmup} warm-up; {U.get('attn_processor', '')}; {chk}"
        row(f"UNet forward, batch 2, {lat}×{lat}, 77 tokens (ms)",
            err(UO) or fmt(o_ms, " ms", 2), err(U) or fmt(r_ms, " ms", 2), ratio(o_ms, r_ms),
            mem(oj.get("peak_mib"), U.get("peak_mib")), note)
        conv_ab_row(R.get("unet_ours_im2col"), U, "median_ms", " ms")
    # sample
    S, SO = R.get("sample_ref"), R.get("sample_ours")
    if S is not None:
        oj = (SO or {}).get("json") or {}
        o_s, r_s = oj.get("sampling_seconds"), S.get("sampling_seconds")
        ours_cell = err(SO) or (fmt(o_s, " s", 2) if o_s is not None else "failed: no sampling_seconds in stdout")
        row(f"sampling: {cfg['sample_steps']} DDIM steps, 2 prompts, {cfg['image']}², CFG 7.5 (s)", ours_cell,
            err(S) or fmt(r_s, " s", 2), ratio(o_s, r_s), mem(oj.get("peak_mib"), S.get("peak_mib")),
            "load excluded; text encoding + VAE decode included"
            + (f"; ours: text {fmt(oj['text_seconds'], ' s', 3)}, denoising {fmt(oj['denoise_seconds'], ' s', 3)}, "
               f"decode {fmt(oj['decode_seconds'], ' s', 3)}, {oj.get('raw_allocations', '?')} device allocations"
               if "denoise_seconds" in oj else "")
            + (f"; diffusers (a second run, in parts): text {fmt(S['text_seconds'], ' s', 3)}, denoising "
               f"{fmt(S['denoise_seconds'], ' s', 3)}, decode {fmt(S['decode_seconds'], ' s', 3)}"
               if "denoise_seconds" in S else "")
            + ("" if S.get("finite", True) else "; ref images NOT finite"))
        conv_ab_row(R.get("sample_ours_im2col"), S, "sampling_seconds", " s")
        conv_ab_row(R.get("sample_ours_scalar"), S, "sampling_seconds", " s",
                    "the same, element-wise access (TENSORKIT_CUDA_VECTORS=0, TENSORKIT_CUDA_FAST_COPY=0)")
    # ddpo
    D, DO = R.get("ddpo_ref"), R.get("ddpo_ours")
    if D is not None:
        m = (DO or {}).get("metrics") or {}
        o_s = m.get("epoch_seconds")
        eps = D.get("epochs") or []
        r_s = eps[0]["seconds"] if eps else None
        ref_cell = err(D) or (fmt(r_s, " s", 1) if r_s is not None else "failed: no epoch finished")
        if not err(DO) and o_s is None:
            ours_cell = "failed: no epoch_seconds in metrics.jsonl" + (f" (run wall {DO['wall_s']:.0f} s)" if DO else "")
        else:
            ours_cell = err(DO) or fmt(o_s, " s", 1)
        note = []
        if R.get("ddpo_switches"):
            note.append("ours with " + " ".join(f"{k}={v}" for k, v in R["ddpo_switches"].items())
                        + " (the sampling A/B rows above were > 3 % faster so)")
        if eps:
            note.append(f"TRL epoch 0 {eps[0]['seconds']:.1f} s (sampling {fmt(eps[0].get('sampling_seconds'), ' s')})")
        if len(eps) > 1:
            note.append(f"TRL epoch 1 {eps[1]['seconds']:.1f} s (sampling {fmt(eps[1].get('sampling_seconds'), ' s')})")
        if "partial" in (D or {}):
            note.append(f"TRL: {D['partial'][:120]}")
        if m:
            note.append(f"ours sampling {fmt(m.get('sampling_seconds'), ' s')} (models "
                        f"{fmt(m.get('sampling_model_seconds'), ' s')}, reward {fmt(m.get('sampling_reward_seconds'), ' s')}), "
                        f"reward_mean {fmt(m.get('reward_mean'), '', 3)}")
            if m.get("gradient_checkpointing") is not None:
                note.append(f"ours gradient checkpointing auto: {'on' if m['gradient_checkpointing'] else 'off'} "
                            f"(pass estimated {fmt(m.get('checkpointing_estimate_mib'), ' MiB', 0)}, "
                            f"{fmt(m.get('checkpointing_available_mib'), ' MiB', 0)} available)")
            if eps and eps[0].get("reward_mean") is not None:
                note.append(f"TRL epoch 0 reward_mean {eps[0]['reward_mean']:.3f}")
            if m.get("gpu_reserved_peak_mib") is not None or (eps and eps[-1].get("reserved_mib") is not None):
                note.append(f"held from the device at the peak: ours {fmt(m.get('gpu_reserved_peak_mib'), ' MiB', 0)}, "
                            f"TRL {fmt(eps[-1].get('reserved_mib') if eps else None, ' MiB', 0)} (max_memory_reserved)")
        d = cfg["ddpo"]
        row(f"DDPO epoch: {d['sample_batch_size']}×{d['sample_num_batches_per_epoch']} samples, "
            f"{d['sample_num_steps']} steps, train batch {d['train_batch_size']}, LoRA r4 (s)",
            ours_cell, ref_cell, ratio(o_s, r_s), mem(m.get("gpu_peak_mib"), eps[-1]["peak_mib"] if eps else None),
            "; ".join(note))
    head = [f"GPU: {W.get('device_name', '?')} — torch {W.get('torch', '?')}, diffusers {W.get('diffusers', '?')}, "
            f"transformers {W.get('transformers', '?')}, trl {W.get('trl', '?')}, peft {W.get('peft', '?')}, "
            f"accelerate {W.get('accelerate', '?')} — {R['settings']['mixed_precision']} "
            f"{'(tiny config)' if a.tiny else '(SD 1.5 config, random weights)'}"
            + ("; ours with TENSORKIT_CUDA_FLASH_ATTENTION=0 (cuBLAS attention)"
               if os.environ.get("TENSORKIT_CUDA_FLASH_ATTENTION") == "0" else "")
            + ("; ours with TENSORKIT_CUDA_FLASH_PIPELINE=0 (the flash kernels' plain build)"
               if os.environ.get("TENSORKIT_CUDA_FLASH_PIPELINE") == "0" else "")
            + ("; ours with TENSORKIT_CUDA_CONV_MMA=0 (convolutions through im2col)"
               if os.environ.get("TENSORKIT_CUDA_CONV_MMA") == "0" else "")
            + ("; ours with TENSORKIT_CUDA_VECTORS=0 (element-wise access)"
               if os.environ.get("TENSORKIT_CUDA_VECTORS") == "0" else "")
            + ("; ours with TENSORKIT_CUDA_FAST_COPY=0 (element-by-element strided copies)"
               if os.environ.get("TENSORKIT_CUDA_FAST_COPY") == "0" else ""),
            "",
            "| measurement | ours | reference | ratio (ours/ref) | peak memory ours / ref | note |",
            "|---|---|---|---|---|---|"]
    UC = R.get("unet_check") or {}
    tail = ["", "UNet error check: " + (
        f"{'PASS' if UC.get('pass') else 'FAIL'} — max|ours−ref|/max|ref| = {UC['rel_err']:.3e}, "
        f"mean abs err {UC['mean_abs_err']:.3e}, max|ref| {UC['ref_absmax']:.3g}" if "rel_err" in UC
        else f"not done ({UC.get('error', 'no run')})"),
        f"Total {R.get('total_s', 0):.0f} s. Reference peak memory: torch.cuda.max_memory_allocated (weights "
        f"included){'; CPU: process peak RSS' if not a.device.startswith('cuda') else ''}."]
    return "\n".join(head + rows + tail)


def main():
    p = argparse.ArgumentParser()
    p.add_argument("--device", default="cuda")
    p.add_argument("--tiny", action="store_true")
    p.add_argument("--fp32", action="store_true", help="fp32 on CUDA too")
    p.add_argument("--model", default=None)
    p.add_argument("--bench", default="/tmp/bench")
    p.add_argument("--budget", type=float, default=330.0, help="seconds for the whole run")
    p.add_argument("--phases", default="unet,sample,ddpo",
                   help="which of unet,sample,ddpo,profile to run (weights always; profile is opt-in)")
    p.add_argument("--warmup", type=int, default=3)
    p.add_argument("--iterations", type=int, default=20)
    p.add_argument("--ddpo", default=os.environ.get("DDPO") or (
        os.path.join(ROOT, ".gpu-bin", "ddpo") if os.path.exists(os.path.join(ROOT, ".gpu-bin", "ddpo"))
        else os.path.join(ROOT, ".build", "release", "ddpo")))
    p.add_argument("--child")
    p.add_argument("--result")
    p.add_argument("--deadline", type=float, default=float("inf"))
    a = p.parse_args()
    if a.device == "cuda":
        a.device = "cuda:0"
    if a.model is None:
        a.model = "/tmp/sd15-tiny" if a.tiny else "/tmp/sd15"
    if a.child:
        os.environ.setdefault("TQDM_DISABLE", "1")  # TRL's and diffusers' progress bars: log noise
        try:
            CHILDREN[a.child](Ctx(a))
        except BaseException:
            traceback.print_exc()
            sys.exit(1)
        return
    os.makedirs(a.bench, exist_ok=True)
    signal.signal(signal.SIGTERM, on_sigterm)
    try:
        main_orchestrator(a)
    except BaseException:
        traceback.print_exc()
        sys.exit(1)


if __name__ == "__main__":
    main()
