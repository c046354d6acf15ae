#!/usr/bin/env python3
"""Generates the CLIP fixtures read by Tests/DiffusionModelsTests/CLIPModelTests.swift.

Usage (from the repository root):
    pip install -r Tests/DiffusionModelsTests/Fixtures/requirements.txt
    python Tests/DiffusionModelsTests/Fixtures/make_clip_fixtures.py

Writes into Fixtures/clip/:
  text_legacy_eos/   CLIPTextModel (quick_gelu, eos_token_id 2: pooled at argmax of the ids, as SD 1.x configs)
  text_gelu/         CLIPTextModel (gelu, eos_token_id 99: pooled at the first EOS, as newer configs;
                     max_position_embeddings 20, layer_norm_eps 1e-6)
  vision/            CLIPVisionModelWithProjection (image 24, patch 8)
  full_clip/         a whole CLIPModel (config model_type "clip" with text_config/vision_config), the layout
                     of the aesthetic scorer's openai/clip-vit-large-patch14
Each model folder is what `save_pretrained(safe_serialization=True)` writes (config.json + model.safetensors),
plus io.safetensors: the inputs and transformers' outputs (float32). Weights are random (seeded) and tiny,
with the vocabulary cut to 100 tokens; norms and biases are perturbed away from transformers' (1, 0) init.
preprocess.safetensors holds CLIPImageProcessor (slow, PIL) outputs and plain PIL resizes for every filter;
config_cases.json holds config.json contents with the values transformers' config classes read from them.
Everything is seeded, so rerunning with the pinned versions reproduces the files.
"""

import json
import os
import platform
import shutil

import numpy as np
import PIL
import safetensors
import torch
import transformers
from PIL import Image
from safetensors.torch import save_file
from transformers import (CLIPConfig, CLIPImageProcessor, CLIPModel, CLIPTextConfig, CLIPTextModel,
                          CLIPVisionConfig, CLIPVisionModelWithProjection)

OUT = os.path.join(os.path.dirname(os.path.abspath(__file__)), "clip")


def metadata(description):
    # One key: a multi-key __metadata__ map is written in hash order (non-reproducible bytes).
    return {"generated_by": json.dumps({
        "generator": "Tests/DiffusionModelsTests/Fixtures/make_clip_fixtures.py",
        "torch": torch.__version__, "transformers": transformers.__version__,
        "safetensors": safetensors.__version__, "numpy": np.__version__, "pillow": PIL.__version__,
        "python": platform.python_version(), "description": description,
    }, sort_keys=True)}


def perturb_norms(model, seed):
    # transformers initialises LayerNorms to (1, 0) and biases to 0; random values make the test
    # sensitive to a missing bias or an affine applied to the wrong tensor.
    g = torch.Generator().manual_seed(seed)
    with torch.no_grad():
        for name, p in model.named_parameters():
            if name.endswith(".bias") or "norm" in name or "layrnorm" in name:
                p.add_(0.1 * torch.randn(p.shape, generator=g))


def save_model(model, folder):
    path = os.path.join(OUT, folder)
    shutil.rmtree(path, ignore_errors=True)
    model.save_pretrained(path, safe_serialization=True)
    keys = safetensors.safe_open(os.path.join(path, "model.safetensors"), "pt").keys()
    # transformers 4.56 registers position_ids as a non-persistent buffer: never saved.
    assert not any("position_ids" in k for k in keys), keys
    return path


def text_outputs(model, ids, prefix, out, mask=None, hidden_states=True, clip_skip=True):
    with torch.no_grad():
        r = model(input_ids=ids, attention_mask=mask, output_hidden_states=True)
    out[prefix + "input_ids"] = ids.clone()
    if mask is not None:
        out[prefix + "attention_mask"] = mask.clone()
    out[prefix + "last_hidden_state"] = r.last_hidden_state.clone()
    out[prefix + "pooler_output"] = r.pooler_output.clone()
    if hidden_states:
        for i, h in enumerate(r.hidden_states):
            out[prefix + f"hidden_states.{i}"] = h.clone()
    if clip_skip:
        # diffusers' clip_skip=1: final_layer_norm(hidden_states[-2]).
        with torch.no_grad():
            out[prefix + "clip_skip_1"] = model.text_model.final_layer_norm(r.hidden_states[-2]).clone()


def make_text_legacy():
    torch.manual_seed(1)
    config = CLIPTextConfig(vocab_size=100, hidden_size=12, intermediate_size=20, projection_dim=12,
                            num_hidden_layers=2, num_attention_heads=3, max_position_embeddings=77,
                            hidden_act="quick_gelu", bos_token_id=0, eos_token_id=2, pad_token_id=1)
    model = CLIPTextModel(config).eval()
    perturb_norms(model, 11)
    save_model(model, "text_legacy_eos")
    g = torch.Generator().manual_seed(2)
    ids = torch.randint(3, 90, (2, 77), generator=g)
    ids[:, 0] = 0
    # Row 0: the largest id (97) twice, so argmax's first-occurrence rule is pinned; an EOS (2) elsewhere
    # that the legacy rule must ignore.
    ids[0, 9] = 97; ids[0, 30] = 97; ids[0, 12] = 2
    # Row 1: SD 1.x layout, the EOS being the largest id and padding with it.
    ids[1, 6] = 95; ids[1, 7:] = 95
    out = {}
    text_outputs(model, ids, "", out, clip_skip=False)
    save_file(out, os.path.join(OUT, "text_legacy_eos", "io.safetensors"),
              metadata=metadata("CLIPTextModel eos_token_id=2 (argmax pooling), output_hidden_states=True"))


def make_text_gelu():
    torch.manual_seed(3)
    config = CLIPTextConfig(vocab_size=100, hidden_size=16, intermediate_size=28, projection_dim=16,
                            num_hidden_layers=3, num_attention_heads=2, max_position_embeddings=20,
                            hidden_act="gelu", layer_norm_eps=1e-6, bos_token_id=98, eos_token_id=99,
                            pad_token_id=99)
    model = CLIPTextModel(config).eval()
    perturb_norms(model, 13)
    save_model(model, "text_gelu")
    g = torch.Generator().manual_seed(4)
    ids = torch.randint(0, 98, (3, 20), generator=g)
    ids[:, 0] = 98
    ids[0, 5:] = 99           # EOS then EOS padding: the first EOS is pooled
    ids[1, 19] = 99           # EOS at the last position
    # Row 2 has no EOS: transformers' argmax of an all-zero row gives position 0.
    out = {}
    text_outputs(model, ids, "full.", out)
    # Shorter than max_position_embeddings.
    text_outputs(model, ids[:, :12].clone(), "short.", out, hidden_states=False, clip_skip=False)
    mask = torch.ones(3, 20, dtype=torch.int64)
    mask[0, 6:] = 0           # right padding after the EOS
    mask[1, 15:18] = 0        # holes in the middle
    text_outputs(model, ids, "masked.", out, mask=mask, hidden_states=False, clip_skip=False)
    save_file(out, os.path.join(OUT, "text_gelu", "io.safetensors"),
              metadata=metadata("CLIPTextModel eos_token_id=99 (first-EOS pooling); full/short/masked inputs"))


def make_vision():
    torch.manual_seed(5)
    config = CLIPVisionConfig(hidden_size=16, intermediate_size=24, projection_dim=12, num_hidden_layers=2,
                              num_attention_heads=4, num_channels=3, image_size=24, patch_size=8,
                              hidden_act="quick_gelu", layer_norm_eps=1e-5)
    model = CLIPVisionModelWithProjection(config).eval()
    perturb_norms(model, 17)
    save_model(model, "vision")
    g = torch.Generator().manual_seed(6)
    pixels = torch.randn(2, 3, 24, 24, generator=g)
    with torch.no_grad():
        r = model(pixel_values=pixels, output_hidden_states=True)
    # last_hidden_state is hidden_states[-1] (the vision encoder has no final norm), stored once.
    assert torch.equal(r.last_hidden_state, r.hidden_states[-1])
    out = {"pixel_values": pixels, "image_embeds": r.image_embeds.clone()}
    for i, h in enumerate(r.hidden_states):
        out[f"hidden_states.{i}"] = h.clone()
    save_file(out, os.path.join(OUT, "vision", "io.safetensors"),
              metadata=metadata("CLIPVisionModelWithProjection, output_hidden_states=True"))


def make_full_clip():
    torch.manual_seed(7)
    text = dict(vocab_size=100, hidden_size=16, intermediate_size=24, num_hidden_layers=1,
                num_attention_heads=2, max_position_embeddings=16, eos_token_id=99, bos_token_id=98)
    vision = dict(hidden_size=16, intermediate_size=24, num_hidden_layers=1, num_attention_heads=2,
                  image_size=16, patch_size=8)
    # projection_dim only at the top level (vision_config keeps its default 512): CLIPModel's
    # visual_projection uses the top-level value, which the Swift loader must follow.
    config = CLIPConfig(text_config=text, vision_config=vision, projection_dim=12)
    model = CLIPModel(config).eval()
    perturb_norms(model, 19)
    save_model(model, "full_clip")
    g = torch.Generator().manual_seed(8)
    pixels = torch.randn(2, 3, 16, 16, generator=g)
    ids = torch.randint(0, 98, (2, 16), generator=g)
    ids[:, 0] = 98; ids[0, 7] = 99; ids[1, 15] = 99
    with torch.no_grad():
        image_features = model.get_image_features(pixel_values=pixels)
        text_out = model.text_model(input_ids=ids)
    out = {"pixel_values": pixels, "image_features": image_features.contiguous(), "input_ids": ids,
           "text_last_hidden_state": text_out.last_hidden_state.contiguous(),
           "text_pooler_output": text_out.pooler_output.contiguous()}
    save_file(out, os.path.join(OUT, "full_clip", "io.safetensors"),
              metadata=metadata("CLIPModel: get_image_features and text_model outputs"))


def pattern_image(batch, height, width, salt):
    # Integer pattern, so the Swift test rebuilds the same input without a fixture file.
    b, c, y, x = np.meshgrid(np.arange(batch), np.arange(3), np.arange(height), np.arange(width), indexing="ij")
    return ((x * 7 + y * 13 + c * 29 + b * 71 + (x * y + salt) % 17 + (x * x) % 11) % 256).astype(np.uint8)


def make_preprocess():
    out = {}
    g = torch.Generator().manual_seed(9)
    # DDPO's aesthetic reward: images in [0, 1] -> uint8 by round(x * 255) -> CLIPImageProcessor (slow, PIL).
    small = torch.rand(2, 3, 20, 28, generator=g)
    out["small.images"] = small
    u8 = (small * 255).round().clamp(0, 255).to(torch.uint8)
    proc = CLIPImageProcessor(size={"shortest_edge": 12}, crop_size={"height": 12, "width": 12})
    out["small.pixel_values"] = proc(images=u8, return_tensors="pt")["pixel_values"]
    # Portrait input, upscaling, odd crop offsets.
    tall = torch.rand(1, 3, 23, 13, generator=g)
    out["tall.images"] = tall
    proc = CLIPImageProcessor(size={"shortest_edge": 20}, crop_size={"height": 17, "width": 19})
    out["tall.pixel_values"] = proc(images=(tall * 255).round().clamp(0, 255).to(torch.uint8),
                                    return_tensors="pt")["pixel_values"]
    # No resize, a crop taller than the image: transformers zero-pads (rows) and crops (columns).
    small_pad = torch.rand(1, 3, 9, 14, generator=g)
    out["pad.images"] = small_pad
    proc = CLIPImageProcessor(do_resize=False, crop_size={"height": 12, "width": 12})
    out["pad.pixel_values"] = proc(images=(small_pad * 255).round().clamp(0, 255).to(torch.uint8),
                                   return_tensors="pt")["pixel_values"]
    # The real case, 512x512 -> 224 with the openai defaults, on a pattern image rebuilt in Swift;
    # only every 7th row/column and the channel sums are stored, to keep the file small.
    big = pattern_image(1, 512, 512, 5)
    pv = CLIPImageProcessor()(images=torch.from_numpy(big), return_tensors="pt")["pixel_values"]
    assert pv.shape == (1, 3, 224, 224)
    out["sd512.pixel_values_every7"] = pv[:, :, ::7, ::7].contiguous()
    out["sd512.channel_sums"] = pv.double().sum(dim=(2, 3))
    # Every PIL filter transformers can pass (resample 1..5): plain PIL resizes of a pattern image
    # (rebuilt in Swift), down, up and mixed, stored as uint8 [3, H, W].
    img = pattern_image(1, 19, 27, 3)[0]
    hwc = np.ascontiguousarray(img.transpose(1, 2, 0))
    for resample in [1, 2, 3, 4, 5]:
        for (h, w) in [(8, 11), (25, 34), (19, 10)]:
            r = np.array(Image.fromarray(hwc).resize((w, h), resample=resample)).transpose(2, 0, 1)
            out[f"filters.{resample}.{h}x{w}"] = torch.from_numpy(np.ascontiguousarray(r))
    save_file(out, os.path.join(OUT, "preprocess.safetensors"),
              metadata=metadata("CLIPImageProcessor (slow, PIL) outputs and PIL resize per filter"))


TEXT_FIELDS = ["vocab_size", "hidden_size", "intermediate_size", "projection_dim", "num_hidden_layers",
               "num_attention_heads", "max_position_embeddings", "hidden_act", "layer_norm_eps",
               "attention_dropout", "pad_token_id", "bos_token_id", "eos_token_id"]
VISION_FIELDS = ["hidden_size", "intermediate_size", "projection_dim", "num_hidden_layers", "num_attention_heads",
                 "num_channels", "image_size", "patch_size", "hidden_act", "layer_norm_eps", "attention_dropout"]


def make_config_cases():
    # config.json contents and the values transformers' config classes make of them.
    generic = {"_name_or_path": "x", "architectures": ["CLIPTextModel"], "torch_dtype": "float16",
               "transformers_version": "4.22.0.dev0", "initializer_factor": 1.0, "initializer_range": 0.02,
               "dropout": 0.3, "output_hidden_states": False, "pruned_heads": {}, "id2label": {"0": "LABEL_0"},
               "label2id": {"LABEL_0": 0}, "top_k": 50, "num_beams": 1, "use_bfloat16": False}
    # SD 1.x text encoder (legacy eos_token_id 2, fields transformers ignores).
    sd1 = dict(generic, vocab_size=49408, hidden_size=768, intermediate_size=3072, num_hidden_layers=12,
               num_attention_heads=12, max_position_embeddings=77, hidden_act="quick_gelu", layer_norm_eps=1e-05,
               attention_dropout=0.0, bos_token_id=0, eos_token_id=2, pad_token_id=1, projection_dim=768,
               model_type="clip_text_model")
    # SD 2.x text encoder shape with fields left to their defaults.
    sd2 = {"hidden_size": 1024, "intermediate_size": 4096, "num_hidden_layers": 23, "num_attention_heads": 16,
           "hidden_act": "gelu", "projection_dim": 512}
    # openai/clip-vit-large-patch14 layout: text_config/vision_config plus the legacy *_config_dict, which
    # win (transformers rebuilds the sub-config from them with defaults, here overriding vocab_size
    # and patch_size/image_size given only in text_config/vision_config).
    whole = {"model_type": "clip", "projection_dim": 768, "logit_scale_init_value": 2.6592,
             "text_config": dict(generic, hidden_size=768, intermediate_size=3072, num_attention_heads=12,
                                 num_hidden_layers=12, projection_dim=768, vocab_size=1000, eos_token_id=2),
             "text_config_dict": {"hidden_size": 768, "intermediate_size": 3072, "num_attention_heads": 12,
                                  "num_hidden_layers": 12, "projection_dim": 768},
             "vision_config": {"hidden_size": 1024, "intermediate_size": 4096, "num_attention_heads": 16,
                               "num_hidden_layers": 24, "patch_size": 16, "image_size": 336, "projection_dim": 768},
             "vision_config_dict": {"hidden_size": 1024, "intermediate_size": 4096, "num_attention_heads": 16,
                                    "num_hidden_layers": 24, "patch_size": 14, "projection_dim": 768}}
    # Whole CLIP without the legacy dicts: text_config/vision_config are used as given.
    plain = {"model_type": "clip", "projection_dim": 32,
             "text_config": {"hidden_size": 64, "num_attention_heads": 4, "eos_token_id": 7, "vocab_size": 10},
             "vision_config": {"hidden_size": 48, "image_size": 64, "patch_size": 16, "hidden_act": "gelu"}}
    cases = []
    for name, d in [("sd1_text", sd1), ("sd2_text", sd2)]:
        t = CLIPTextConfig.from_dict(d).to_dict()
        cases.append({"name": name, "kind": "text", "input": d, "text": {k: t[k] for k in TEXT_FIELDS}})
    for name, d in [("openai_whole", whole), ("plain_whole", plain)]:
        c = CLIPConfig.from_dict(d)
        t, v = c.text_config.to_dict(), c.vision_config.to_dict()
        cases.append({"name": name, "kind": "whole", "input": d, "projection_dim": c.projection_dim,
                      "text": {k: t[k] for k in TEXT_FIELDS}, "vision": {k: v[k] for k in VISION_FIELDS}})
    with open(os.path.join(OUT, "config_cases.json"), "w") as f:
        json.dump({"generated_by": json.loads(metadata("config decoding")["generated_by"]), "cases": cases},
                  f, indent=1, sort_keys=True)
        f.write("\n")


def main():
    os.makedirs(OUT, exist_ok=True)
    make_text_legacy()
    make_text_gelu()
    make_vision()
    make_full_clip()
    make_preprocess()
    make_config_cases()


if __name__ == "__main__":
    main()
