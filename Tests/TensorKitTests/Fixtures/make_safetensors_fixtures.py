#!/usr/bin/env python3
"""Interop fixtures for SafeTensorsTests.swift and ImageIOTests.swift.

Writes (next to this script):
  safetensors/python_*.safetensors   files written by Python's safetensors (torch API)
  safetensors/expected.json          their dtypes, shapes, values (as exact strings), metadata
  images/*.png, images/*.jpg         images written by Pillow
  images/expected.json               Pillow's decoded pixels of those files, and the byte
                                     counts of Pillow's quality-95 JPEGs of generated images
                                     (the ddpo "jpeg_incompressibility" reward measures these)

The reverse direction: safetensors/swift_written.safetensors is written by the Swift test
`SafeTensorsTests.testSwiftWrittenFixture` (run it with TENSORKIT_WRITE_FIXTURES=1 to regenerate;
without it the test checks the Swift writer still produces the same bytes). This script
loads that file with Python's safetensors and checks every value, and that Python writing the
same tensors produces the identical bytes:

  python make_safetensors_fixtures.py                # regenerate Python fixtures, then check
  python make_safetensors_fixtures.py --check FILE   # only check a Swift-written file

Pinned packages: requirements.txt beside this script. Keep the fixtures tiny.
"""
import argparse
import base64
import io
import json
import math
import struct
import sys
import zlib
from pathlib import Path

import numpy as np
import torch
from PIL import Image, features
from safetensors.torch import load_file, save, save_file

HERE = Path(__file__).resolve().parent
ST_DIR = HERE / "safetensors"
IMG_DIR = HERE / "images"


# ---------------------------------------------------------------------------------------------
# safetensors written by Python


def python_mixed():
    return {
        "conv.weight": torch.arange(8, dtype=torch.float32).reshape(2, 1, 2, 2) * 0.25 - 1,
        "f32_special": torch.tensor([0.0, -0.0, math.inf, -math.inf, math.nan], dtype=torch.float32),
        "f64": torch.tensor([math.pi, -1e-300, 1e300], dtype=torch.float64),
        "f16": torch.tensor([0.0, 1.0, -2.5, 65504.0, 6e-8, 0.1], dtype=torch.float16).reshape(2, 3),
        "bf16": torch.tensor([1.0, -0.1, 3.0e38, 1e-30], dtype=torch.bfloat16),
        "i64": torch.tensor([-(2**62), -1, 0, 2**53 + 1], dtype=torch.int64),
        "i32": torch.tensor([-(2**31), 2**31 - 1, 0, 7], dtype=torch.int32).reshape(2, 2),
        "u8": torch.tensor([0, 1, 127, 128, 254, 255], dtype=torch.uint8),
        "mask": torch.tensor([True, False, True, False, False, True]).reshape(2, 3),
        "empty": torch.zeros(0, 4, dtype=torch.float32),
        "scalar": torch.tensor(3.5, dtype=torch.float32),
        'name with \u00fc and "quotes"': torch.tensor([1.0], dtype=torch.float16),
    }


PYTHON_FILES = {
    # One metadata key per file: Python writes several in hash order, and fixtures should
    # regenerate byte for byte.
    "python_mixed.safetensors": (python_mixed, {"note": 'fixture \u00fc "quoted"\n\ttab'}),
    "python_no_metadata.safetensors": (lambda: {"bytes": torch.tensor([3, 2, 1], dtype=torch.uint8)}, None),
    "python_empty.safetensors": (lambda: {}, {"format": "pt"}),
}

ST_NAMES = {
    torch.float32: "F32", torch.float64: "F64", torch.float16: "F16", torch.bfloat16: "BF16",
    torch.int32: "I32", torch.int64: "I64", torch.uint8: "U8", torch.bool: "BOOL",
}


def value_strings(t):
    """Exact element values as strings: repr of the float value (round-trips), or the integer."""
    flat = t.reshape(-1)
    if t.dtype.is_floating_point:
        return [repr(float(v)) for v in flat.double().tolist()]
    if t.dtype == torch.bool:
        return ["1" if v else "0" for v in flat.tolist()]
    return [str(int(v)) for v in flat.tolist()]


def write_python_safetensors():
    ST_DIR.mkdir(exist_ok=True)
    expected = {}
    for filename, (make, metadata) in PYTHON_FILES.items():
        tensors = make()
        save_file(tensors, str(ST_DIR / filename), metadata=metadata)
        expected[filename] = {
            "metadata": metadata,
            "tensors": {
                name: {"dtype": ST_NAMES[t.dtype], "shape": list(t.shape), "values": value_strings(t)}
                for name, t in tensors.items()
            },
        }
    (ST_DIR / "expected.json").write_text(json.dumps(expected, indent=1, sort_keys=True) + "\n")


# ---------------------------------------------------------------------------------------------
# safetensors written by Swift (must match SafeTensorsTests.swiftWrittenTensors)


def swift_expected():
    weight = (torch.arange(6, dtype=torch.float32) - 2.5) * 0.5
    return {
        "weight": weight.reshape(2, 3),
        # Written from a transposed (non-contiguous) view on the Swift side.
        "weight_t": weight.reshape(2, 3).t().contiguous(),
        "half": torch.tensor([1.0, -2.0, 0.5, 65504.0], dtype=torch.float16),
        "brain": torch.tensor([1.0, -3.5, 256.0], dtype=torch.bfloat16),
        "double": torch.tensor([math.pi, -math.e], dtype=torch.float64),
        "long": torch.tensor([-(2**40), 0, 2**53 + 1], dtype=torch.int64),
        "int": torch.tensor([-7, 2**31 - 1], dtype=torch.int32),
        "bytes": torch.tensor([0, 1, 128, 255], dtype=torch.uint8),
        "flags": torch.tensor([True, False, True]),
        "empty": torch.zeros(0, dtype=torch.float32),
        "scalar": torch.tensor(42.0, dtype=torch.float64),
    }


SWIFT_METADATA = {"format": "pt"}


def check_swift_file(path):
    path = Path(path)
    loaded = load_file(str(path))
    expected = swift_expected()
    problems = []
    if sorted(loaded) != sorted(expected):
        problems.append(f"names {sorted(loaded)} != {sorted(expected)}")
    for name, want in expected.items():
        got = loaded.get(name)
        if got is None:
            continue
        if got.dtype != want.dtype or got.shape != want.shape or not torch.equal(got, want):
            problems.append(f"{name}: got {got.dtype} {tuple(got.shape)} {got.tolist()}, "
                            f"want {want.dtype} {tuple(want.shape)} {want.tolist()}")
    from safetensors import safe_open
    with safe_open(str(path), framework="pt") as handle:
        if handle.metadata() != SWIFT_METADATA:
            problems.append(f"metadata {handle.metadata()} != {SWIFT_METADATA}")
    # Same layout as Python's writer: byte-identical file.
    if save(expected, metadata=SWIFT_METADATA) != path.read_bytes():
        problems.append("bytes differ from what Python's safetensors writes for the same tensors")
    if problems:
        print(f"FAIL {path}:\n  " + "\n  ".join(problems))
        return False
    print(f"OK {path}: {len(loaded)} tensors load in Python with the expected values; "
          "bytes identical to Python's writer")
    return True


# ---------------------------------------------------------------------------------------------
# Images (generators must match ImageIOTests.swift exactly: integer arithmetic only)


def gradient(w=64, h=64):
    return [((x * 255) // (w - 1), (y * 255) // (h - 1), ((x + y) * 255) // (w + h - 2))
            for y in range(h) for x in range(w)]


def checkerboard(w=64, h=64, cell=8):
    return [(235, 64, 52) if ((x // cell) + (y // cell)) % 2 == 0 else (30, 30, 200)
            for y in range(h) for x in range(w)]


def pattern(w=40, h=24):
    return [((x * x + 3 * y) % 256, (x * y + 17) % 256, (5 * x + y * y) % 256)
            for y in range(h) for x in range(w)]


def noise_bytes(count, seed=12345):
    state = seed
    out = bytearray()
    for _ in range(count):
        state = (state * 1103515245 + 12345) % 2**31
        out.append((state >> 16) & 0xFF)
    return bytes(out)


def image_from(pixels, w, h):
    img = Image.new("RGB", (w, h))
    img.putdata(pixels)
    return img


def png_16bit_rgb(values16, w, h):
    """A minimal 16-bit RGB PNG (Pillow cannot write one)."""
    raw = bytearray()
    for y in range(h):
        raw.append(0)  # filter: none
        for x in range(w):
            for c in range(3):
                raw += struct.pack(">H", values16[(y * w + x) * 3 + c])

    def chunk(kind, data):
        return struct.pack(">I", len(data)) + kind + data + struct.pack(">I", zlib.crc32(kind + data))

    return (b"\x89PNG\r\n\x1a\n" + chunk(b"IHDR", struct.pack(">IIBBBBB", w, h, 16, 2, 0, 0, 0))
            + chunk(b"IDAT", zlib.compress(bytes(raw))) + chunk(b"IEND", b""))


def rgb_b64(img):
    return base64.b64encode(img.convert("RGB").tobytes()).decode()


def write_images():
    IMG_DIR.mkdir(exist_ok=True)
    expected = {
        "pillow": __import__("PIL").__version__,
        "libjpeg_turbo": features.version("libjpeg_turbo"),
        "jpeg_q95_sizes": {},
        "decoded": {},
    }
    generated = {"gradient": (gradient(), 64, 64), "checkerboard": (checkerboard(), 64, 64),
                 "pattern": (pattern(), 40, 24)}
    for name, (pixels, w, h) in generated.items():
        buffer = io.BytesIO()
        image_from(pixels, w, h).save(buffer, format="JPEG", quality=95)  # as ddpo's reward
        expected["jpeg_q95_sizes"][name] = len(buffer.getvalue())
    # One Pillow JPEG kept whole, so the test can also compare bytes.
    image_from(*generated["gradient"]).save(IMG_DIR / "pil_gradient_q95.jpg", format="JPEG", quality=95)

    noise = noise_bytes(24 * 16 * 4)
    rgb = Image.frombytes("RGB", (24, 16), noise[: 24 * 16 * 3])
    rgba = Image.frombytes("RGBA", (24, 16), noise)
    gray = Image.frombytes("L", (24, 16), noise[: 24 * 16])
    palette = rgb.quantize(colors=16)
    palette.info["transparency"] = 3
    files = {
        "pil_rgb.png": lambda p: rgb.save(p),
        "pil_rgba.png": lambda p: rgba.save(p),
        "pil_gray.png": lambda p: gray.save(p),
        "pil_palette.png": lambda p: palette.save(p, transparency=3),
        "pil_pattern_q90.jpg": lambda p: image_from(*generated["pattern"]).save(p, quality=90),
        "pil_gray_q90.jpg": lambda p: gray.save(p, quality=90),
    }
    for filename, write in files.items():
        write(IMG_DIR / filename)
        with Image.open(IMG_DIR / filename) as img:
            expected["decoded"][filename] = {"width": img.width, "height": img.height, "rgb_base64": rgb_b64(img)}
    # 16-bit: samples v * 257 must come back as v.
    values8 = noise[: 8 * 6 * 3]
    (IMG_DIR / "rgb16.png").write_bytes(png_16bit_rgb([v * 257 for v in values8], 8, 6))
    expected["decoded"]["rgb16.png"] = {"width": 8, "height": 6, "rgb_base64": base64.b64encode(values8).decode()}
    expected["quantize"] = torch_quantize_cases()
    (IMG_DIR / "expected.json").write_text(json.dumps(expected, sort_keys=True, separators=(",", ":")) + "\n")


def torch_quantize_cases():
    """ddpo-pytorch's float->uint8 conversion, `(x * 255).round().clamp(0, 255).to(torch.uint8)`,
    on a [3, 11, 17] grid around every rounding midpoint, in float32 and float16 (where the
    product itself is rounded to half precision). Inputs are stored as bit patterns."""
    x = (torch.arange(-20, 541, dtype=torch.float64) / 510).to(torch.float32).reshape(3, 11, 17)
    cases = {}
    for name, dtype, bits_dtype in (("float32", torch.float32, torch.int32), ("float16", torch.float16, torch.int16)):
        xs = x.to(dtype)
        out = (xs * 255).round().clamp(0, 255).to(torch.uint8)
        bits = xs.view(bits_dtype).to(torch.int64) & (0xFFFFFFFF if dtype == torch.float32 else 0xFFFF)
        cases[name] = {"shape": list(xs.shape), "bits": bits.reshape(-1).tolist(),
                       "bytes_chw": out.reshape(-1).tolist()}
    return cases


def main():
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--check", metavar="FILE", help="only check a Swift-written safetensors file")
    args = parser.parse_args()
    if args.check:
        return 0 if check_swift_file(args.check) else 1
    write_python_safetensors()
    write_images()
    total = sum(p.stat().st_size for d in (ST_DIR, IMG_DIR) for p in d.iterdir() if p.is_file())
    print(f"wrote fixtures under {HERE} ({total} bytes in total)")
    swift_file = ST_DIR / "swift_written.safetensors"
    if swift_file.exists():
        return 0 if check_swift_file(swift_file) else 1
    print(f"{swift_file} not found: run the Swift test with TENSORKIT_WRITE_FIXTURES=1 first")
    return 0


if __name__ == "__main__":
    sys.exit(main())
