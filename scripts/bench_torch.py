#!/usr/bin/env python3
"""PyTorch CPU counterpart of `tensorkit-bench` (TensorKit/Benchmarks/main.swift).

    python scripts/bench_torch.py [--list] [--quick] [--threads N] [PREFIX ...]

Same case names, shapes, dtype (float32) and timing rule (warm-up, then repetitions for about
1.5 s, 3..25 of them, median). Backward cases run autograd with a fixed upstream gradient and clear
the leaves' grads after each repetition, as the Swift side does. Prints one tab-separated line per
case to stdout: name, median ms, GFLOP/s at the median (or "-"), repetitions, minimum ms.
"""

import argparse
import sys
import time

import torch
import torch.nn.functional as F


def measure(body, budget, min_reps=3, max_reps=25):
    t0 = time.perf_counter()
    body()  # warm-up
    first = (time.perf_counter() - t0) * 1e3
    if first < 200:
        body()
    reps = max(min_reps, min(max_reps, int(budget * 1000 / max(first, 1e-3))))
    times = []
    for _ in range(reps):
        t0 = time.perf_counter()
        body()
        times.append((time.perf_counter() - t0) * 1e3)
    times.sort()
    mid = len(times) // 2
    median = times[mid] if len(times) % 2 else (times[mid - 1] + times[mid]) / 2
    return median, times[0], reps


_gen = torch.Generator()


def randn(shape, seed, scale=1.0):
    _gen.manual_seed(seed)
    return torch.randn(*shape, generator=_gen, dtype=torch.float32) * scale


def param(shape, seed, scale=1.0):
    return randn(shape, seed, scale).requires_grad_(True)


def forward_backward(leaves, upstream, f):
    def body():
        y = f()
        y.backward(upstream)
        for leaf in leaves:
            leaf.grad = None
    return body


def no_grad(f):
    def body():
        with torch.no_grad():
            f()
    return body


CASES = []  # (name, flops or None, setup -> body)


def case(name, flops=None):
    def register(setup):
        CASES.append((name, flops, setup))
        return setup
    return register


def define_cases():
    for n in (256, 512, 1024, 2048):
        flops = 2.0 * n ** 3

        def setup(n=n):
            a, b = randn((n, n), 1), randn((n, n), 2)
            return no_grad(lambda: torch.matmul(a, b))
        case(f"matmul_{n}", flops)(setup)

    flops = 2 * 2 * 4096 * 320 * 1280.0

    @case("linear_2x4096x320to1280_fwd", flops)
    def _():
        x, w, b = randn((2, 4096, 320), 3), randn((1280, 320), 4), randn((1280,), 5)
        return no_grad(lambda: F.linear(x, w, b))

    @case("linear_2x4096x320to1280_fwdbwd", 3 * flops)
    def _():
        x, w, b = param((2, 4096, 320), 3), param((1280, 320), 4, 0.05), param((1280,), 5)
        return forward_backward([x, w, b], randn((2, 4096, 1280), 6), lambda: F.linear(x, w, b))

    for n, c, h, label in ((2, 320, 64, "2x320x64x64"), (2, 640, 32, "2x640x32x32"), (1, 128, 256, "1x128x256x256"),
                           (2, 1280, 16, "2x1280x16x16"), (2, 1280, 8, "2x1280x8x8"), (2, 256, 8, "2x256x8x8")):
        flops = 2.0 * n * c * h * h * c * 9

        def fwd(n=n, c=c, h=h):
            x, w, b = randn((n, c, h, h), 7), randn((c, c, 3, 3), 8, 0.02), randn((c,), 9)
            return no_grad(lambda: F.conv2d(x, w, b, padding=1))

        def fwdbwd(n=n, c=c, h=h):
            x, w, b = param((n, c, h, h), 7), param((c, c, 3, 3), 8, 0.02), param((c,), 9)
            return forward_backward([x, w, b], randn((n, c, h, h), 10), lambda: F.conv2d(x, w, b, padding=1))
        case(f"conv2d3x3_{label}_fwd", flops)(fwd)
        case(f"conv2d3x3_{label}_fwdbwd", 3 * flops)(fwdbwd)

    @case("group_norm_2x320x64x64_g32_fwd")
    def _():
        x, w, b = randn((2, 320, 64, 64), 11), randn((320,), 12), randn((320,), 13)
        return no_grad(lambda: F.group_norm(x, 32, w, b, eps=1e-6))

    @case("group_norm_2x320x64x64_g32_fwdbwd")
    def _():
        x, w, b = param((2, 320, 64, 64), 11), param((320,), 12), param((320,), 13)
        return forward_backward([x, w, b], randn((2, 320, 64, 64), 14), lambda: F.group_norm(x, 32, w, b, eps=1e-6))

    @case("layer_norm_2x4096x320_fwd")
    def _():
        x, w, b = randn((2, 4096, 320), 15), randn((320,), 16), randn((320,), 17)
        return no_grad(lambda: F.layer_norm(x, (320,), w, b))

    @case("layer_norm_2x4096x320_fwdbwd")
    def _():
        x, w, b = param((2, 4096, 320), 15), param((320,), 16), param((320,), 17)
        return forward_backward([x, w, b], randn((2, 4096, 320), 18), lambda: F.layer_norm(x, (320,), w, b))

    for nk, label in ((4096, "self_2x8x4096x40"), (77, "cross_2x8x4096x77x40")):
        flops = 4.0 * 2 * 8 * 4096 * nk * 40

        def fwd(nk=nk):
            q, k, v = randn((2, 8, 4096, 40), 19), randn((2, 8, nk, 40), 20), randn((2, 8, nk, 40), 21)
            return no_grad(lambda: F.scaled_dot_product_attention(q, k, v))

        def fwdbwd(nk=nk):
            q, k, v = param((2, 8, 4096, 40), 19), param((2, 8, nk, 40), 20), param((2, 8, nk, 40), 21)
            return forward_backward([q, k, v], randn((2, 8, 4096, 40), 22),
                                    lambda: F.scaled_dot_product_attention(q, k, v))
        case(f"attention_{label}_fwd", flops)(fwd)
        case(f"attention_{label}_fwdbwd", 2.5 * flops)(fwdbwd)

    @case("softmax_2x8x1024x1024_fwd")
    def _():
        x = randn((2, 8, 1024, 1024), 23)
        return no_grad(lambda: torch.softmax(x, -1))

    @case("softmax_2x8x1024x1024_fwdbwd")
    def _():
        x = param((2, 8, 1024, 1024), 23)
        return forward_backward([x], randn((2, 8, 1024, 1024), 24), lambda: torch.softmax(x, -1))

    ew = (2, 320, 64, 64)

    @case("add_bcast_2x320x64x64")
    def _():
        x, b = randn(ew, 25), randn((1, 320, 1, 1), 26)
        return no_grad(lambda: x + b)

    @case("mul_2x320x64x64")
    def _():
        x, y = randn(ew, 25), randn(ew, 27)
        return no_grad(lambda: x * y)

    @case("silu_2x320x64x64_fwd")
    def _():
        x = randn(ew, 25)
        return no_grad(lambda: F.silu(x))

    @case("silu_2x320x64x64_fwdbwd")
    def _():
        x = param(ew, 25)
        return forward_backward([x], randn(ew, 28), lambda: F.silu(x))

    @case("gelu_2x320x64x64_fwd")
    def _():
        x = randn(ew, 25)
        return no_grad(lambda: F.gelu(x))

    @case("gelu_2x320x64x64_fwdbwd")
    def _():
        x = param(ew, 25)
        return forward_backward([x], randn(ew, 28), lambda: F.gelu(x))

    # diffusers' GEGLU after its projection: (h + b) split in halves, a * gelu(g)
    gg = (2, 1024, 2560)

    def geglu(h, b):
        a, g = (h + b).chunk(2, dim=-1)
        return a * F.gelu(g)

    @case("geglu_2x1024x2560_fwd")
    def _():
        h, b = randn(gg, 29), randn((2560,), 30)
        return no_grad(lambda: geglu(h, b))

    @case("geglu_2x1024x2560_fwdbwd")
    def _():
        h, b = param(gg, 29), param((2560,), 30)
        return forward_backward([h, b], randn((2, 1024, 1280), 31), lambda: geglu(h, b))


def main():
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("prefixes", nargs="*")
    parser.add_argument("--list", action="store_true")
    parser.add_argument("--quick", action="store_true", help="0.3 s per case instead of 1.5 s")
    parser.add_argument("--threads", type=int, default=2)
    args = parser.parse_args()
    define_cases()
    if args.list:
        for name, _, _ in CASES:
            print(name)
        return
    torch.set_num_threads(args.threads)
    # A whole case name selects only that case; anything else is a prefix (as tensorkit-bench does).
    names = {c[0] for c in CASES}
    selected = [c for c in CASES if not args.prefixes
                or any(c[0] == p if p in names else c[0].startswith(p) for p in args.prefixes)]
    if not selected:
        sys.exit(f"no case matches {args.prefixes}; see --list")
    print(f"torch {torch.__version__}, {torch.get_num_threads()} threads", file=sys.stderr)
    budget = 0.3 if args.quick else 1.5
    for name, flops, setup in selected:
        print(f"running {name}", file=sys.stderr)
        ms, fastest, reps = measure(setup(), budget)
        gflops = f"{flops / (ms * 1e6):.1f}" if flops else "-"
        print(f"{name}\t{ms:.3f}\t{gflops}\t{reps}\t{fastest:.3f}", flush=True)


if __name__ == "__main__":
    main()
