#!/usr/bin/env python3
"""Reads a `ddpo train` run folder with TensorBoard's own reader and checks what the app promises:
the scalars reward_mean, reward_std, loss, approx_kl, clipfrac, and the sample images.

  pip install tensorboard==2.21.0   (pinned in Tests/RLAlgorithmsTests/Fixtures/requirements.txt)
  python3 scripts/check-tensorboard.py logs/<run_name>
"""
import sys

from tensorboard.backend.event_processing.event_accumulator import EventAccumulator


def main(run):
    acc = EventAccumulator(run, size_guidance={"scalars": 0, "images": 0})
    acc.Reload()
    tags = acc.Tags()
    missing = [t for t in ["reward_mean", "reward_std", "loss", "approx_kl", "clipfrac"] if t not in tags["scalars"]]
    if missing:
        sys.exit(f"{run}: scalars missing: {missing} (found {tags['scalars']})")
    for tag in ["reward_mean", "loss"]:
        events = acc.Scalars(tag)
        print(f"{tag}: {len(events)} points, steps {[e.step for e in events][:8]}, values {[round(e.value, 5) for e in events][:8]}")
    if "samples" not in tags["images"]:
        sys.exit(f"{run}: no 'samples' image (found {tags['images'][:5]})")
    captioned = [t for t in tags["images"] if " | " in t]
    grid = acc.Images("samples")[-1]
    print(f"images: 'samples' grid {grid.width}x{grid.height} at step {grid.step}; {len(captioned)} 'prompt | reward' tags, e.g. {captioned[:2]}")
    print("ok")


if __name__ == "__main__":
    main(sys.argv[1] if len(sys.argv) > 1 else "logs")
