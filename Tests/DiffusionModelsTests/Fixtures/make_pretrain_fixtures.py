#!/usr/bin/env python3
"""Fixtures for Tests/DiffusionModelsTests/PretrainTests.swift, and a check of the shipped model.

Usage (from the repository root):
    pip install -r Tests/DiffusionModelsTests/Fixtures/requirements.txt
    python Tests/DiffusionModelsTests/Fixtures/make_pretrain_fixtures.py [--check-model models/shapes-sd]

1. Tokenizer: Fixtures/pretrain/tokenizer/ holds the tokenizer files Swift's `ShapesTokenizer`
   writes for the caption grammar (copied from the shipped model's tokenizer/ folder; the Swift
   test checks that the builder still writes exactly these files). transformers' slow
   `CLIPTokenizer.from_pretrained` (what diffusers loads) reads them here and its ids for TEXTS,
   padded to model_max_length as diffusers' `encode_prompt` does, go to
   Fixtures/pretrain/tokenizer_ids.json. The Swift test compares ours to these.

2. --check-model DIR: loads DIR with diffusers' `StableDiffusionPipeline.from_pretrained` (float32),
   samples PROMPTS (DDIM, 30 steps, guidance 5, torch seed 0) and prints, per image, the named
   colour nearest to the mean colour of the shape's core (the pixels farthest from the corner
   (background) colour, as Swift's ShapeDetector reads it). Writes Fixtures/pretrain/diffusers_check.json. This shows the folder works in diffusers;
   it is not a bit-parity test (torch draws other noise than our Philox generator).
"""

import argparse
import json
import os
import shutil

HERE = os.path.dirname(os.path.abspath(__file__))
OUT = os.path.join(HERE, "pretrain")
ROOT = os.path.abspath(os.path.join(HERE, "..", "..", ".."))

TEXTS = [
    "a red circle",
    "a blue square on a yellow background",
    "A Purple Triangle  on a WHITE background",
    "a orange cross",
    "a green circle on a black background",
    "",
    "a pink elephant",  # words outside the grammar: byte-level pieces
    "red, red... red!",
    "a white square on a gray background at night under the moon with stars",  # truncated at 16
]

COLOURS = {
    "red": (220, 30, 30), "green": (30, 170, 50), "blue": (30, 70, 230), "yellow": (245, 220, 30),
    "white": (250, 250, 250), "black": (15, 15, 15), "purple": (140, 50, 190), "orange": (250, 130, 20),
    "gray": (128, 128, 128),  # the background of captions that name none
}
PROMPTS = ["a red circle", "a blue square", "a yellow triangle", "a green cross",
           "a white circle on a black background", "a orange square on a blue background"]


def tokenizer_fixture(model_dir):
    from transformers import CLIPTokenizer

    src = os.path.join(model_dir, "tokenizer")
    dst = os.path.join(OUT, "tokenizer")
    os.makedirs(dst, exist_ok=True)
    for name in ["vocab.json", "merges.txt", "tokenizer_config.json", "special_tokens_map.json"]:
        shutil.copyfile(os.path.join(src, name), os.path.join(dst, name))
    tok = CLIPTokenizer.from_pretrained(dst)
    ids = tok(TEXTS, padding="max_length", max_length=tok.model_max_length, truncation=True).input_ids
    tokens = [tok.tokenize(t) for t in TEXTS]
    with open(os.path.join(OUT, "tokenizer_ids.json"), "w") as f:
        json.dump({"texts": TEXTS, "input_ids": ids, "tokens": tokens, "model_max_length": tok.model_max_length,
                   "vocab_size": len(tok)}, f, indent=1)
    print("tokenizer ids:", ids[:2], "...")


def nearest_colour(rgb, shape=False):
    names = [k for k in COLOURS if not (shape and k == "gray")]
    return min(names, key=lambda k: sum((a - b) ** 2 for a, b in zip(COLOURS[k], rgb)))


def check_model(model_dir):
    import numpy as np
    import torch
    from diffusers import StableDiffusionPipeline

    pipe = StableDiffusionPipeline.from_pretrained(model_dir, torch_dtype=torch.float32, safety_checker=None)
    dtypes = {p.dtype for m in (pipe.unet, pipe.vae, pipe.text_encoder) for p in m.parameters()}
    images = pipe(PROMPTS, num_inference_steps=30, guidance_scale=5.0, output_type="np",
                  generator=torch.Generator().manual_seed(0)).images
    results = []
    for prompt, image in zip(PROMPTS, images):
        pixels = (image * 255).reshape(-1, 3)
        corner = np.concatenate([image[:2, :2], image[:2, -2:], image[-2:, :2], image[-2:, -2:]]).reshape(-1, 3) * 255
        background = corner.mean(0)
        far = np.linalg.norm(pixels - background, axis=1) > 60  # as Swift's ShapeDetector
        distance = np.linalg.norm(pixels - background, axis=1)
        core = far & (distance >= 0.75 * distance.max())  # the shape's core, as ShapeDetector
        shape_colour = nearest_colour(pixels[core].mean(0), shape=True) if far.any() else None
        results.append({"prompt": prompt, "shape_colour": shape_colour, "shape_pixels": int(far.sum()),
                        "background": nearest_colour(background)})
        print(results[-1])
    with open(os.path.join(OUT, "diffusers_check.json"), "w") as f:
        json.dump({"model": os.path.relpath(model_dir, ROOT), "parameter_dtypes": sorted(map(str, dtypes)),
                   "results": results}, f, indent=1)


if __name__ == "__main__":
    parser = argparse.ArgumentParser()
    parser.add_argument("--model", default=os.path.join(ROOT, "models", "shapes-sd"),
                        help="folder whose tokenizer/ the fixture copies")
    parser.add_argument("--check-model", default=None)
    args = parser.parse_args()
    os.makedirs(OUT, exist_ok=True)
    tokenizer_fixture(args.model)
    if args.check_model:
        check_model(args.check_model)
