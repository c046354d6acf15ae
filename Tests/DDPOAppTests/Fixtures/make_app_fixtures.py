"""Reference outputs for the `ddpo` command's tests, from transformers / diffusers on the tiny SD1
folder of Tests/DiffusionModelsTests/Fixtures/pipeline/sd1/model (written by make_pipeline_fixtures.py).

  tokenize.json  texts and the input ids the pipeline's tokenizer gives them (padding="max_length",
                 truncation=True, max_length=tokenizer.model_max_length), as diffusers' encode_prompt
  info.json      parameter count of each component (sum of numel over the loaded module's parameters)

Run from the repository root with the pinned requirements (Tests/RLAlgorithmsTests/Fixtures/requirements.txt):
  python Tests/DDPOAppTests/Fixtures/make_app_fixtures.py
"""
import json
import os

import diffusers
import transformers

HERE = os.path.dirname(os.path.abspath(__file__))
MODEL = os.path.join(HERE, "..", "..", "DiffusionModelsTests", "Fixtures", "pipeline", "sd1", "model")

TEXTS = [
    "the cat",
    "",
    "A Dog and THE cat!!",
    "hello   world,  the world is hello",
    "the cat the cat the cat the cat the cat the cat the cat the cat",
    "café naïve — 猫",
]


def main():
    tokenizer = transformers.CLIPTokenizer.from_pretrained(os.path.join(MODEL, "tokenizer"))
    ids = tokenizer(TEXTS, padding="max_length", truncation=True, max_length=tokenizer.model_max_length).input_ids
    with open(os.path.join(HERE, "tokenize.json"), "w") as f:
        json.dump({"texts": TEXTS, "max_length": tokenizer.model_max_length, "ids": ids,
                   "transformers": transformers.__version__}, f, indent=1, ensure_ascii=False)
        f.write("\n")

    counts = {}
    unet = diffusers.UNet2DConditionModel.from_pretrained(os.path.join(MODEL, "unet"))
    vae = diffusers.AutoencoderKL.from_pretrained(os.path.join(MODEL, "vae"))
    text = transformers.CLIPTextModel.from_pretrained(os.path.join(MODEL, "text_encoder"))
    for name, module in [("unet", unet), ("vae", vae), ("text_encoder", text)]:
        counts[name] = sum(p.numel() for p in module.parameters())
    with open(os.path.join(HERE, "info.json"), "w") as f:
        json.dump({"parameters": counts, "diffusers": diffusers.__version__}, f, indent=1)
        f.write("\n")


if __name__ == "__main__":
    main()
