#!/usr/bin/env python3
"""Generates the PyTorch parity fixtures read by Tests/TensorKitTests/ParityTests.swift.

Usage (from the repository root):
    pip install -r Tests/TensorKitTests/Fixtures/requirements.txt
    python Tests/TensorKitTests/Fixtures/make_parity_fixtures.py

Writes one safetensors file per op family into Fixtures/parity/. Every case is stored under a
"<case>." prefix: the inputs, the op's configuration (int64 / float64 tensors, so the Swift side
needs nothing but the tensors), the float32 output, a fixed random upstream gradient "grad_out"
and the gradients PyTorch's autograd gives each input for it ("grad_<input>"). The generating
versions are recorded in each file's __metadata__ (key "generated_by", JSON) with a description
of the cases.
Everything is seeded, so rerunning with the pinned versions reproduces the files.
"""

import json
import os
import platform
import sys

import numpy as np
import safetensors
import torch
import torch.nn.functional as F
from safetensors.torch import save_file

OUT_DIR = os.path.join(os.path.dirname(os.path.abspath(__file__)), "parity")
DTYPE = torch.float32


def metadata(cases):
    # One metadata key: safetensors writes a multi-key __metadata__ map in hash order, which
    # would make regenerated files differ byte-wise even when every tensor is identical.
    return {"generated_by": json.dumps({
        "generator": "Tests/TensorKitTests/Fixtures/make_parity_fixtures.py",
        "torch": torch.__version__,
        "safetensors": safetensors.__version__,
        "numpy": np.__version__,
        "python": platform.python_version(),
        "dtype": "float32",
        "cases": cases,
    }, sort_keys=True)}


class Family:
    """Collects the tensors and case descriptions of one fixture file."""

    def __init__(self, name, seed):
        self.name = name
        self.tensors = {}
        self.cases = {}
        self.gen = torch.Generator().manual_seed(seed)

    def randn(self, *shape, scale=1.0, shift=0.0):
        return (torch.randn(*shape, generator=self.gen, dtype=DTYPE) * scale + shift)

    def put(self, case, key, tensor):
        full = f"{case}.{key}"
        assert full not in self.tensors, full
        self.tensors[full] = tensor.detach().contiguous().clone()

    def ints(self, case, key, values):
        self.put(case, key, torch.tensor(list(values), dtype=torch.int64))

    def floats(self, case, key, values):
        self.put(case, key, torch.tensor(list(values), dtype=torch.float64))

    def run(self, case, inputs, fn, describe):
        """Stores inputs, fn(*inputs), a random upstream gradient and the input gradients."""
        leaves = {k: v.clone().requires_grad_(True) for k, v in inputs.items()}
        out = fn(**leaves)
        grad_out = self.randn(*out.shape)
        out.backward(grad_out)
        for k, v in leaves.items():
            self.put(case, k, v)
            self.put(case, f"grad_{k}", v.grad)
        self.put(case, "out", out)
        self.put(case, "grad_out", grad_out)
        self.cases[case] = describe

    def save(self):
        path = os.path.join(OUT_DIR, f"{self.name}.safetensors")
        save_file(self.tensors, path, metadata=metadata(self.cases))
        return path


def conv2d_family():
    fam = Family("conv2d", 1001)
    configs = [
        # name, input shape, weight shape, bias, stride, padding, dilation, groups
        ("k3_pad1_bias", (2, 4, 7, 6), (5, 4, 3, 3), True, (1, 1), (1, 1), (1, 1), 1),
        ("k3_stride2", (2, 3, 9, 8), (4, 3, 3, 3), True, (2, 2), (1, 1), (1, 1), 1),
        ("k1x1_nobias", (1, 6, 5, 5), (3, 6, 1, 1), False, (1, 1), (0, 0), (1, 1), 1),
        ("groups2", (2, 6, 6, 5), (4, 3, 3, 3), True, (1, 1), (1, 1), (1, 1), 2),
        ("depthwise", (1, 4, 5, 6), (4, 1, 3, 3), False, (1, 1), (1, 1), (1, 1), 4),
        ("dilation2", (1, 2, 8, 8), (3, 2, 3, 3), True, (1, 1), (2, 2), (2, 2), 1),
        ("asym_k3x2_s21_p01", (2, 3, 7, 9), (2, 3, 3, 2), True, (2, 1), (0, 1), (1, 1), 1),
        ("k4_stride2_nopad", (1, 2, 10, 10), (3, 2, 4, 4), False, (2, 2), (0, 0), (1, 1), 1),
        # Large enough that TensorKit picks Winograd for 3×3 by itself (>= 16 channels each way,
        # >= 64 4×4 output tiles), with partial tiles at both edges (29, 30 are not multiples of 4).
        ("k3_winograd_size", (1, 16, 29, 30), (16, 16, 3, 3), True, (1, 1), (1, 1), (1, 1), 1),
    ]
    for name, xs, ws, has_bias, stride, padding, dilation, groups in configs:
        inputs = {"input": fam.randn(*xs), "weight": fam.randn(*ws, scale=0.3)}
        if has_bias:
            inputs["bias"] = fam.randn(ws[0])
        fam.ints(name, "stride", stride)
        fam.ints(name, "padding", padding)
        fam.ints(name, "dilation", dilation)
        fam.ints(name, "groups", [groups])

        def fn(input, weight, bias=None, _s=stride, _p=padding, _d=dilation, _g=groups):
            return F.conv2d(input, weight, bias, stride=_s, padding=_p, dilation=_d, groups=_g)

        fam.run(name, inputs, fn, dict(input=xs, weight=ws, bias=has_bias, stride=stride,
                                       padding=padding, dilation=dilation, groups=groups))
    return fam


def group_norm_family():
    fam = Family("group_norm", 1002)
    configs = [
        # name, shape, groups, affine, eps, scale, shift (a large shift tests the variance's stability)
        ("g4_affine", (2, 8, 4, 4), 4, True, 1e-5, 1.0, 0.0),
        ("g32_eps1e-6", (2, 64, 3, 3), 32, True, 1e-6, 1.0, 0.0),
        ("g32_eps1e-5_c32", (1, 32, 5, 4), 32, True, 1e-5, 2.0, 0.5),
        ("g3_noaffine_rank3", (3, 6, 5), 3, False, 1e-5, 1.0, 0.0),
        ("g2_shifted", (2, 4, 6, 6), 2, True, 1e-6, 0.5, 20.0),
        ("g1_rank5", (1, 4, 2, 3, 3), 1, True, 1e-5, 1.0, 0.0),
        # Variance comparable to eps: using the wrong eps, or adding it outside the sqrt, shows.
        ("g4_tiny_var_eps1e-5", (2, 8, 3, 3), 4, True, 1e-5, 0.004, 0.0),
        ("g2_tiny_var_eps1e-6", (1, 4, 4, 4), 2, True, 1e-6, 0.001, 0.0),
        # Long groups (4 channels × 64), as in the UNet, for vectorised paths.
        ("g8_long_groups", (1, 32, 8, 8), 8, True, 1e-6, 1.0, 0.0),
    ]
    return run_group_norm_cases(fam, configs, silu=False)


def run_group_norm_cases(fam, configs, silu):
    """One case per config: F.group_norm (then F.silu when `silu`) with gradients. A config whose
    name mentions "wide_bias" draws the bias 6× wider, so pre-activations reach both SiLU tails."""
    for name, shape, groups, affine, eps, scale, shift in configs:
        c = shape[1]
        inputs = {"input": fam.randn(*shape, scale=scale, shift=shift)}
        if affine:
            inputs["weight"] = fam.randn(c, scale=0.5, shift=1.0)
            inputs["bias"] = fam.randn(c, scale=3.0 if "wide_bias" in name else 0.5)
        fam.ints(name, "groups", [groups])
        fam.floats(name, "eps", [eps])

        def fn(input, weight=None, bias=None, _g=groups, _e=eps):
            y = F.group_norm(input, _g, weight, bias, eps=_e)
            return F.silu(y) if silu else y

        fam.run(name, inputs, fn, dict(shape=shape, groups=groups, affine=affine, eps=eps))
    return fam


def group_norm_silu_family():
    """F.silu(F.group_norm(...)), as diffusers' ResnetBlock2D and the UNet/VAE output heads apply it
    (TensorKit fuses the two into one op)."""
    fam = Family("group_norm_silu", 1009)
    configs = [
        # name, shape, groups, affine, eps, scale, shift
        ("g4_affine", (2, 8, 4, 4), 4, True, 1e-5, 1.0, 0.0),
        ("g8_eps1e-6_long_groups", (1, 32, 6, 6), 8, True, 1e-6, 1.5, 0.3),
        ("g3_noaffine_rank3", (2, 6, 5), 3, False, 1e-5, 1.0, 0.0),
        # Shifted input with a large bias spread: pre-activations reach both SiLU tails.
        ("g2_shifted_wide_bias", (2, 4, 5, 5), 2, True, 1e-6, 0.5, 20.0),
    ]
    return run_group_norm_cases(fam, configs, silu=True)


def layer_norm_family():
    fam = Family("layer_norm", 1003)
    configs = [
        # name, shape, normalized shape, affine, eps, scale, shift
        ("last16_affine", (2, 5, 16), (16,), True, 1e-5, 1.0, 0.0),
        ("last2axes_eps1e-6", (3, 4, 6), (4, 6), True, 1e-6, 1.0, 0.0),
        ("noaffine", (4, 10), (10,), False, 1e-5, 1.0, 0.0),
        ("shifted", (2, 3, 32), (32,), True, 1e-5, 1.0, 10.0),
        # Variance comparable to eps (see group_norm).
        ("tiny_var_eps1e-6", (3, 12), (12,), True, 1e-6, 0.001, 0.0),
        ("tiny_var_eps1e-5", (2, 2, 8), (8,), False, 1e-5, 0.003, 0.0),
        ("width320", (3, 320), (320,), True, 1e-5, 1.0, 0.0),
    ]
    for name, shape, normalized, affine, eps, scale, shift in configs:
        inputs = {"input": fam.randn(*shape, scale=scale, shift=shift)}
        if affine:
            inputs["weight"] = fam.randn(*normalized, scale=0.5, shift=1.0)
            inputs["bias"] = fam.randn(*normalized, scale=0.5)
        fam.ints(name, "normalized_shape", normalized)
        fam.floats(name, "eps", [eps])

        def fn(input, weight=None, bias=None, _n=normalized, _e=eps):
            return F.layer_norm(input, _n, weight, bias, eps=_e)

        fam.run(name, inputs, fn, dict(shape=shape, normalized_shape=normalized, affine=affine, eps=eps))
    return fam


def attention_family():
    fam = Family("attention", 1004)
    configs = [
        # name, q shape, k shape, v shape, causal, scale (None: PyTorch's default 1/sqrt(D))
        ("self", (2, 2, 7, 8), (2, 2, 7, 8), (2, 2, 7, 8), False, None),
        ("self_causal", (1, 3, 9, 4), (1, 3, 9, 4), (1, 3, 9, 4), True, None),
        ("cross_nq_ne_nk", (2, 2, 6, 8), (2, 2, 5, 8), (2, 2, 5, 8), False, None),
        ("cross_dv_ne_d", (1, 2, 4, 8), (1, 2, 11, 8), (1, 2, 11, 6), False, None),
        ("explicit_scale", (1, 2, 5, 4), (1, 2, 5, 4), (1, 2, 5, 4), False, 0.3),
        # Longer sequences cross any chunking of the query/key axes.
        ("long_cross", (1, 1, 260, 4), (1, 1, 300, 4), (1, 1, 300, 4), False, None),
        ("long_causal", (1, 1, 257, 4), (1, 1, 257, 4), (1, 1, 257, 4), True, None),
        ("peaked_scores", (1, 1, 6, 4), (1, 1, 6, 4), (1, 1, 6, 4), False, None),
    ]
    for name, qs, ks, vs, causal, scale in configs:
        spread = 6.0 if name == "peaked_scores" else 1.0  # large logits: softmax must be max-shifted
        inputs = {"q": fam.randn(*qs, scale=spread), "k": fam.randn(*ks, scale=spread), "v": fam.randn(*vs)}
        fam.ints(name, "causal", [int(causal)])
        fam.floats(name, "scale", [scale if scale is not None else float("nan")])

        def fn(q, k, v, _c=causal, _s=scale):
            return F.scaled_dot_product_attention(q, k, v, is_causal=_c, scale=_s)

        fam.run(name, inputs, fn, dict(q=qs, k=ks, v=vs, causal=causal,
                                       scale="default" if scale is None else scale))
    return fam


def softmax_family():
    fam = Family("softmax", 1005)
    configs = [
        ("softmax_last", (3, 4, 17), -1, False, 1.0),
        ("softmax_axis1", (3, 5, 6), 1, False, 1.0),
        ("softmax_large", (4, 9), -1, False, 30.0),
        ("log_softmax_last", (3, 4, 17), -1, True, 1.0),
        ("log_softmax_axis0", (5, 3, 2), 0, True, 1.0),
        ("log_softmax_large", (4, 9), -1, True, 30.0),
        ("softmax_rows77", (4, 77), -1, False, 3.0),
        ("softmax_rows300", (2, 300), -1, False, 3.0),
        ("log_softmax_rows300", (2, 300), -1, True, 3.0),
    ]
    for name, shape, axis, log, scale in configs:
        fam.ints(name, "axis", [axis])
        fam.ints(name, "log", [int(log)])

        def fn(input, _a=axis, _l=log):
            return F.log_softmax(input, dim=_a) if _l else F.softmax(input, dim=_a)

        fam.run(name, {"input": fam.randn(*shape, scale=scale)}, fn,
                dict(shape=shape, axis=axis, log=log))
    return fam


def activations_family():
    fam = Family("activations", 1006)
    # A dense sweep over the interesting range plus random points and the tails.
    x = torch.cat([torch.linspace(-8, 8, 401, dtype=DTYPE), fam.randn(200, scale=3.0),
                   torch.tensor([-30.0, -15.0, 15.0, 30.0], dtype=DTYPE)])
    fns = {
        "gelu": lambda input: F.gelu(input),
        "gelu_tanh": lambda input: F.gelu(input, approximate="tanh"),
        "quick_gelu": lambda input: input * torch.sigmoid(1.702 * input),
        "silu": lambda input: F.silu(input),
    }
    for name, fn in fns.items():
        fam.run(name, {"input": x.clone()}, fn, dict(count=x.numel()))
    return fam


def matmul_family():
    fam = Family("matmul", 1007)
    # Each case: inputs, a description of how the Swift side builds the operands, and fn.
    cases = [
        ("broadcast_batch", {"a": fam.randn(2, 1, 3, 4), "b": fam.randn(3, 4, 5)},
         lambda a, b: a @ b),
        ("a_transposed", {"a": fam.randn(2, 6, 3), "b": fam.randn(2, 6, 5)},
         lambda a, b: a.transpose(-1, -2) @ b),
        ("b_transposed", {"a": fam.randn(3, 4), "b": fam.randn(2, 5, 4)},
         lambda a, b: a @ b.transpose(-1, -2)),
        ("both_transposed", {"a": fam.randn(4, 3), "b": fam.randn(5, 4)},
         lambda a, b: a.t() @ b.t()),
        ("batched_rhs_2d", {"a": fam.randn(2, 3, 7, 4), "b": fam.randn(4, 6)},
         lambda a, b: a @ b),
        ("vector_matrix", {"a": fam.randn(4), "b": fam.randn(2, 4, 3)},
         lambda a, b: a @ b),
        ("matrix_vector", {"a": fam.randn(2, 3, 4), "b": fam.randn(4)},
         lambda a, b: a @ b),
        ("linear_bias", {"a": fam.randn(2, 5, 6), "b": fam.randn(3, 6), "bias": fam.randn(3)},
         lambda a, b, bias: F.linear(a, b, bias)),
    ]
    for name, inputs, fn in cases:
        fam.run(name, inputs, fn, {k: list(v.shape) for k, v in inputs.items()})
    return fam


def adamw_family():
    fam = Family("adamw", 1008)
    lr, betas, eps, weight_decay, steps = 0.05, (0.8, 0.95), 1e-6, 0.1, 6
    params = [fam.randn(3, 4).requires_grad_(True), fam.randn(5).requires_grad_(True)]
    case = "trajectory"
    for i, p in enumerate(params):
        fam.put(case, f"p{i}.initial", p)
    opt = torch.optim.AdamW(params, lr=lr, betas=betas, eps=eps, weight_decay=weight_decay)
    for step in range(steps):
        for i, p in enumerate(params):
            # p1's gradients are tiny throughout, so sqrt(v) ~ eps and eps shapes every update;
            # p0 gets one tiny step, where the update rides on the momentum.
            tiny = i == 1 or step == 3
            g = fam.randn(*p.shape, scale=1e-6 if tiny else 1.0)
            p.grad = g
            fam.put(case, f"p{i}.grad.{step}", g)
        opt.step()
        for i, p in enumerate(params):
            fam.put(case, f"p{i}.after.{step}", p)
    fam.floats(case, "lr", [lr])
    fam.floats(case, "betas", betas)
    fam.floats(case, "eps", [eps])
    fam.floats(case, "weight_decay", [weight_decay])
    fam.ints(case, "steps", [steps])
    fam.cases[case] = dict(lr=lr, betas=betas, eps=eps, weight_decay=weight_decay, steps=steps,
                           shapes=[list(p.shape) for p in params])
    return fam


def main():
    torch.manual_seed(0)
    torch.use_deterministic_algorithms(True)
    torch.set_num_threads(1)  # fixed reduction order, reproducible files
    os.makedirs(OUT_DIR, exist_ok=True)
    total = 0
    for make in (conv2d_family, group_norm_family, group_norm_silu_family, layer_norm_family,
                 attention_family, softmax_family, activations_family, matmul_family, adamw_family):
        path = make().save()
        size = os.path.getsize(path)
        total += size
        print(f"{os.path.relpath(path)}: {size} bytes")
    print(f"total {total} bytes (torch {torch.__version__}, python {sys.version.split()[0]})")


if __name__ == "__main__":
    main()
