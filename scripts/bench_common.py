"""Pieces the reference-side benchmark scripts share (bench_sd_torch.py, bench_ddpo_trl.py and
gpu_bench.py import them from this folder): TRL's example animal prompts, ddpo-pytorch's JPEG
compressibility reward, and CLIP's byte-to-symbol table."""

import io

# TRL's examples/scripts/ddpo.py animal list.
ANIMALS = ["cat", "dog", "horse", "monkey", "rabbit", "zebra", "spider", "bird", "sheep", "deer", "cow", "goat",
           "lion", "frog", "chicken", "duck", "goose", "bee", "pig", "turkey", "fly", "llama", "camel", "bat",
           "gorilla", "hedgehog", "kangaroo"]


def jpeg_compressibility(images, prompts, metadata):
    """ddpo-pytorch's reward: minus the kB of each image [0, 1] as uint8 JPEG at quality 95."""
    import numpy as np
    import torch
    from PIL import Image
    arr = (images * 255).round().clamp(0, 255).to(torch.uint8).cpu().numpy().transpose(0, 2, 3, 1)
    sizes = []
    for image in arr:
        buffer = io.BytesIO()
        Image.fromarray(image).save(buffer, format="JPEG", quality=95)
        sizes.append(buffer.tell() / 1000)
    return -torch.tensor(np.array(sizes), dtype=torch.float32), {}


def clip_byte_symbols():
    """The 256 printable stand-ins CLIP's byte-level BPE uses for bytes (GPT-2's bytes_to_unicode)."""
    bs = list(range(ord("!"), ord("~") + 1)) + list(range(ord("¡"), ord("¬") + 1)) + list(range(ord("®"), ord("ÿ") + 1))
    cs = bs[:]
    n = 0
    for b in range(256):
        if b not in bs:
            bs.append(b)
            cs.append(256 + n)
            n += 1
    return [chr(c) for c in cs]
