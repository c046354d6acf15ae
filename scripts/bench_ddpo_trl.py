#!/usr/bin/env python3
"""The TRL side of scripts/bench-sd.sh: seconds per DDPO epoch with TRL 0.21's `DDPOTrainer`.

    python scripts/bench_ddpo_trl.py .build-bench-models/tiny [--epochs 3] [--warmup 1] [--threads 2]

The folder is one written by `scripts/bench_sd_torch.py make`; its name (tiny or small) picks the
settings, the same as RLAlgorithms/Benchmarks/main.swift's `ddpo_epoch` case:

  tiny   20 steps, sample batch 4, train batch 2
  small  10 steps, sample batch 2, train batch 1
  both   2 sample batches per epoch, TRL's `DefaultDDPOStableDiffusionPipeline(dir, use_lora=True)`,
         the JPEG-compressibility reward (images -> uint8 -> JPEG quality 95 -> minus size in kB, as
         ddpo-pytorch's `jpeg_compressibility`), prompts drawn from TRL's example animal list,
         mixed_precision "no", log_with None, CPU, TRL's other DDPOConfig defaults (guidance 5, eta 1,
         train_cfg, timestep fraction 1, one inner epoch, AdamW lr 3e-4, clip 1e-4).

Each epoch is `DDPOTrainer.step(epoch, global_step)` timed on its own; the first --warmup epochs are
not counted. Prints one tab-separated line: config/ddpo_epoch, median ms, epochs, minimum ms, peak
RSS MiB; per-epoch times (split into sampling and training) go to stderr.
"""

import argparse
import os
import random
import resource
import sys
import tempfile
import time
import warnings

from bench_common import ANIMALS, jpeg_compressibility

SETTINGS = {
    "tiny": dict(sample_num_steps=20, sample_batch_size=4, train_batch_size=2),
    "small": dict(sample_num_steps=10, sample_batch_size=2, train_batch_size=1),
}
SETTINGS["sd15"] = SETTINGS["small"]  # SD 1.5 at full size (bench_sd_torch.py make sd15) takes small's


def main():
    parser = argparse.ArgumentParser()
    parser.add_argument("model_dir")
    parser.add_argument("--epochs", type=int, default=3)
    parser.add_argument("--warmup", type=int, default=1)
    parser.add_argument("--threads", type=int, default=int(os.environ.get("TORCH_THREADS", "2")))
    args = parser.parse_args()
    name = os.path.basename(os.path.normpath(args.model_dir))
    if name not in SETTINGS:
        raise SystemExit(f"the model folder's name must be one of {', '.join(SETTINGS)}, got {name}")

    warnings.filterwarnings("ignore")
    import torch
    from trl import DDPOConfig, DDPOTrainer, DefaultDDPOStableDiffusionPipeline

    torch.set_num_threads(args.threads)
    random.seed(0)

    def prompt_fn():
        return random.choice(ANIMALS), {}

    workdir = tempfile.mkdtemp(prefix="ddpo-trl-bench-")
    config = DDPOConfig(
        num_epochs=args.warmup + args.epochs, mixed_precision="no", log_with=None, seed=0,
        sample_num_batches_per_epoch=2, save_freq=10**6, logdir=workdir,
        project_kwargs=dict(project_dir=workdir, logging_dir=os.path.join(workdir, "logs")),
        **SETTINGS[name])
    pipeline = DefaultDDPOStableDiffusionPipeline(args.model_dir, use_lora=True)
    trainer = DDPOTrainer(config, jpeg_compressibility, prompt_fn, pipeline)

    # Phase split for the stderr report: wrap the sampler.
    phase = {}
    generate = trainer._generate_samples

    def timed_generate(*a, **k):
        t0 = time.perf_counter()
        out = generate(*a, **k)
        phase["sampling"] = time.perf_counter() - t0
        return out

    trainer._generate_samples = timed_generate

    times = []
    global_step = 0
    for epoch in range(args.warmup + args.epochs):
        t0 = time.perf_counter()
        global_step = trainer.step(epoch, global_step)
        t = time.perf_counter() - t0
        warm = " [warm-up]" if epoch < args.warmup else ""
        print(f"trl {name} epoch {epoch}: {t:.2f} s (sampling {phase['sampling']:.2f} s, "
              f"reward + training {t - phase['sampling']:.2f} s){warm}", file=sys.stderr, flush=True)
        if epoch >= args.warmup:
            times.append(t * 1000)
    times.sort()
    mid = len(times) // 2
    median = times[mid] if len(times) % 2 else (times[mid - 1] + times[mid]) / 2
    peak = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024.0
    print(f"{name}/ddpo_epoch\t{median:.3f}\t{len(times)}\t{times[0]:.3f}\t{peak:.1f}", flush=True)


if __name__ == "__main__":
    main()
