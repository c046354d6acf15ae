"""LoRA files with text-encoder layers, as diffusers' training scripts save them, and the images
diffusers samples with each (`pipe.load_lora_weights`), for `ddpo sample --lora` in SampleCommandTests.

On the tiny SD1 folder of Tests/DiffusionModelsTests/Fixtures/pipeline/sd1 (make_pipeline_fixtures.py),
with its case's call (prompts, negatives, 4 steps, guidance 7.5, its initial latents, eta 0):

  lora_sample/peft/pytorch_lora_weights.safetensors
      StableDiffusionPipeline.save_lora_weights with PEFT state dicts and adapter metadata for both
      components: "unet.<module>.lora_A/B.weight" (to_q/to_k/to_v/to_out.0, r 4, alpha 4) and
      "text_encoder.<module>.lora_A/B.weight" (q/k/v/out_proj and fc1/fc2, r 2, alpha 3: the
      metadata carries the scale 1.5)
  lora_sample/dreambooth/pytorch_lora_weights.safetensors
      as diffusers' train_dreambooth_lora.py --train_text_encoder saves: convert_state_dict_to_diffusers
      of each PEFT state dict ("unet.<module>.lora.down/up.weight", "text_encoder.<module>.
      lora_linear_layer.down/up.weight" for q/k/v/out_proj), r 4, no metadata (alpha = r)
  lora_sample/kohya/pytorch_lora_weights.safetensors
      kohya-ss sd-scripts' form, as community LoRAs come: "lora_unet_<module path, '_' for '.'>" and
      "lora_te_<...>" with .lora_down.weight / .lora_up.weight / .alpha; UNet r 4, alpha 2 (scale 0.5)
      on the attention projections and the ResNet blocks' 3x3 conv1 (LoCon), text encoder r 2, alpha 3
  lora_sample/io.safetensors
      <case>.images: diffusers' images [B, 3, H, W] in [0, 1] with that file loaded;
      <case>.unet_only: the same with only the file's UNet layers applied (so the test can see that
      the text encoder's layers matter); base: without LoRA

Run from the repository root with the pinned requirements (Tests/RLAlgorithmsTests/Fixtures/requirements.txt):
  python Tests/DDPOAppTests/Fixtures/make_lora_sample_fixtures.py
"""
import json
import os
import shutil

import diffusers
import peft
import torch
from diffusers import DDIMScheduler, StableDiffusionPipeline
from diffusers.utils import convert_state_dict_to_diffusers
from peft import LoraConfig, get_peft_model_state_dict
from safetensors.torch import load_file, save_file

HERE = os.path.dirname(os.path.abspath(__file__))
SD1 = os.path.join(HERE, "..", "..", "DiffusionModelsTests", "Fixtures", "pipeline", "sd1")
MODEL = os.path.join(SD1, "model")
OUT = os.path.join(HERE, "lora_sample")

CASES = {
    "peft": dict(unet=(4, 4, ["to_q", "to_k", "to_v", "to_out.0"]),
                 text=(2, 3, ["q_proj", "k_proj", "v_proj", "out_proj", "fc1", "fc2"]), convert=False),
    "dreambooth": dict(unet=(4, 4, ["to_q", "to_k", "to_v", "to_out.0"]),
                       text=(4, 4, ["q_proj", "k_proj", "v_proj", "out_proj"]), convert=True),
    "kohya": dict(unet=(4, 2, ["to_q", "to_k", "to_v", "to_out.0", "conv1"]),
                  text=(2, 3, ["q_proj", "k_proj", "v_proj", "out_proj", "fc1", "fc2"]), convert="kohya"),
}


def kohya_state(state, lead, alpha):
    """kohya-ss sd-scripts' keys for a PEFT state dict: "<lead><module path with _ for .>.lora_down.weight",
    ".lora_up.weight" and ".alpha" (a scalar)."""
    out = {}
    for key, value in state.items():
        module, kind = key.rsplit(".lora_", 1)
        name = lead + module.replace(".", "_")
        out[f"{name}.lora_{'down' if kind.startswith('A') else 'up'}.weight"] = value
        out[f"{name}.alpha"] = torch.tensor(float(alpha))
    return out


def sorted_metadata(config):
    """The LoraConfig as diffusers stores it, target_modules sorted (PEFT keeps a set, whose order
    changes between Python processes, and so would the file's bytes)."""
    metadata = config.to_dict()
    metadata["target_modules"] = sorted(metadata["target_modules"])
    return metadata


def pipeline():
    pipe = StableDiffusionPipeline.from_pretrained(MODEL, torch_dtype=torch.float32, safety_checker=None)
    pipe.scheduler = DDIMScheduler.from_config(pipe.scheduler.config)  # as TRL's DDPO pipeline
    pipe.set_progress_bar_config(disable=True)
    return pipe


def randomize(model, seed):
    """PEFT starts lora_B at zero; give every LoRA weight seeded random values."""
    g = torch.Generator().manual_seed(seed)
    with torch.no_grad():
        for name, p in model.named_parameters():
            if "lora_" in name:
                p.copy_(torch.randn(p.shape, generator=g) * 0.3)


def main():
    with open(os.path.join(SD1, "case.json")) as f:
        case = json.load(f)
    latents = load_file(os.path.join(SD1, "io.safetensors"))["latents"]
    call = dict(prompt=case["prompts"], negative_prompt=case["negative_prompts"], num_inference_steps=case["steps"],
                guidance_scale=case["guidance"], height=case["height"], width=case["width"], eta=0.0,
                output_type="pt", return_dict=False)
    if os.path.exists(OUT):
        shutil.rmtree(OUT)
    os.makedirs(OUT)
    io = {}
    with torch.no_grad():
        io["base"] = pipeline()(latents=latents.clone(), **call)[0]
    for k, (name, spec) in enumerate(CASES.items()):
        pipe = pipeline()
        layers = {}
        for component, model, (r, alpha, targets) in [("unet", pipe.unet, spec["unet"]),
                                                       ("text_encoder", pipe.text_encoder, spec["text"])]:
            config = LoraConfig(r=r, lora_alpha=alpha, init_lora_weights="gaussian", target_modules=targets)
            model.add_adapter(config)
            randomize(model, 100 * k + len(layers))
            state = get_peft_model_state_dict(model)
            if spec["convert"] == "kohya":
                state = kohya_state(state, "lora_unet_" if component == "unet" else "lora_te_", alpha)
            elif spec["convert"]:
                state = convert_state_dict_to_diffusers(state)
            layers[component] = (state, config)
        folder = os.path.join(OUT, name)
        if spec["convert"] == "kohya":  # one file of both components' keys, as sd-scripts writes it
            os.makedirs(folder)
            save_file({**layers["unet"][0], **layers["text_encoder"][0]}, os.path.join(folder, "pytorch_lora_weights.safetensors"))
        else:
            kwargs = dict(unet_lora_layers=layers["unet"][0], text_encoder_lora_layers=layers["text_encoder"][0])
            if not spec["convert"]:
                kwargs.update(unet_lora_adapter_metadata=sorted_metadata(layers["unet"][1]),
                              text_encoder_lora_adapter_metadata=sorted_metadata(layers["text_encoder"][1]))
            StableDiffusionPipeline.save_lora_weights(folder, **kwargs)

        loaded = pipeline()
        loaded.load_lora_weights(folder)
        with torch.no_grad():
            io[f"{name}.images"] = loaded(latents=latents.clone(), **call)[0]
            # The file's own layers in memory must give the same images (diffusers read it all).
            direct = pipe(latents=latents.clone(), **call)[0]
            assert (direct - io[f"{name}.images"]).abs().max() < 1e-5, f"{name}: load_lora_weights lost layers"
            pipe.text_encoder.disable_adapters()
            io[f"{name}.unet_only"] = pipe(latents=latents.clone(), **call)[0]
        keys = sorted(load_file(os.path.join(folder, "pytorch_lora_weights.safetensors")))
        print(f"{name}: {len(keys)} keys, e.g. {keys[0]} / {[k for k in keys if k.startswith(('text_encoder', 'lora_te_'))][0]}; "
              f"|images - base| {float((io[f'{name}.images'] - io['base']).abs().max()):.3f}, "
              f"|images - unet only| {float((io[f'{name}.images'] - io[f'{name}.unet_only']).abs().max()):.3f}")
    save_file({k: v.contiguous() for k, v in io.items()}, os.path.join(OUT, "io.safetensors"),
              metadata={"generated_by": json.dumps({"generator": "Tests/DDPOAppTests/Fixtures/make_lora_sample_fixtures.py",
                                                    "diffusers": diffusers.__version__, "peft": peft.__version__,
                                                    "torch": torch.__version__}, sort_keys=True)})


if __name__ == "__main__":
    main()
