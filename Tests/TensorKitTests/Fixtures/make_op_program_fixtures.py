#!/usr/bin/env python3
"""Generates the op-program fixtures read by Tests/TensorKitTests/OpProgramTests.swift.

Usage (from the repository root):
    pip install -r Tests/TensorKitTests/Fixtures/requirements.txt
    python Tests/TensorKitTests/Fixtures/make_op_program_fixtures.py

scripts/tensorkit_sweep.py draws random op programs and compares TensorKit with PyTorch on each;
it needs PyTorch, so CI cannot run it. This keeps a fixed sample of its float64 cases, with PyTorch's
results, so the same comparison runs in the test suite: the first CASES draws of seed SEED, plus
cases pinned here because the sweep once found a bug in them (two 1-D operands of matmul, which
trapped). Writes op_programs/programs.json (a list of {"name", "family", "program"}) and
op_programs/tensors.safetensors ("<name>/<input>" for each program input, "<name>/expected/<key>"
for PyTorch's "out" and "grad.<input>" / "param.<name>" / "norm.<k>"), with the generating versions
in the file's metadata. Everything is seeded: rerunning with the pinned versions reproduces the files.
"""

import json
import os
import platform
import random
import sys

import safetensors
import torch
from safetensors.torch import save_file

HERE = os.path.dirname(os.path.abspath(__file__))
ROOT = os.path.dirname(os.path.dirname(os.path.dirname(HERE)))
sys.path.insert(0, os.path.join(ROOT, "scripts"))
import tensorkit_sweep as sweep  # noqa: E402  (the sweep's generators and PyTorch reference)

OUT_DIR = os.path.join(HERE, "op_programs")
SEED, CASES = 20261128, 160


def pinned_cases():
    """Programs the sweep found bugs in, built with its Builder so they look like drawn ones."""
    cases = []
    for k, (m, n) in enumerate([(7, 7), (1, 1)]):  # matmul of two vectors: a 0-D dot product
        b = sweep.Builder(random.Random(k), torch.float64)
        out = b.node("matmul", [b.leaf([m]), b.leaf([n])])
        cases.append((f"pinned_vecvec_{k}", "matmul", {"grad": b.grad, "nodes": b.nodes, "output": out}, b.inputs))
    return cases


def main():
    os.makedirs(OUT_DIR, exist_ok=True)
    entries, tensors = [], {}

    def add(name, family, program, inputs, ref):
        entries.append({"name": name, "family": family, "program": program})
        for key, value in inputs.items():
            tensors[f"{name}/{key}"] = value.contiguous()
        for key, value in ref.items():
            tensors[f"{name}/expected/{key}"] = value.detach().contiguous()

    for case in range(CASES):
        try:
            family, program, inputs, ref = sweep.draw_case(SEED, case, "float64")
        except Exception:
            continue  # a draw PyTorch refuses (the sweep skips these too)
        add(f"case_{case:03d}", family, program, inputs, ref)
    for name, family, program, inputs in pinned_cases():
        inputs, ref = sweep.with_seed(program, inputs, torch.Generator().manual_seed(len(entries)))
        add(name, family, program, inputs, ref)

    with open(os.path.join(OUT_DIR, "programs.json"), "w") as f:
        json.dump(entries, f, indent=0, sort_keys=True)
        f.write("\n")
    generated_by = json.dumps({
        "generator": "Tests/TensorKitTests/Fixtures/make_op_program_fixtures.py",
        "sweep": "scripts/tensorkit_sweep.py", "seed": SEED, "cases": CASES,
        "torch": torch.__version__, "safetensors": safetensors.__version__, "python": platform.python_version(),
    }, sort_keys=True)
    save_file(tensors, os.path.join(OUT_DIR, "tensors.safetensors"), metadata={"generated_by": generated_by})
    families = {}
    for e in entries:
        families[e["family"]] = families.get(e["family"], 0) + 1
    size = os.path.getsize(os.path.join(OUT_DIR, "tensors.safetensors"))
    print(f"{len(entries)} programs, {len(tensors)} tensors, {size / 1024:.0f} KiB; " +
          ", ".join(f"{k} {v}" for k, v in sorted(families.items())))


if __name__ == "__main__":
    main()
