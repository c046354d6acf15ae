// Runs TensorKit's tensor-core convolution (tk_conv_mma; its channels-last operands are made here by
// a loop) under cuda_host.h and compares it with convolutions computed in double from the same
// stored inputs: forward with and without bias and residual, several M and N tiles, stride 2, a
// dilated 5×3 window, eight input channels (every K step crosses taps), and the stride-1 input
// gradient (`flip`, weights transposed to [c, kh, kw, o]). Built and run by CUDAKernelEmulationTests
// for float16 and bfloat16 (the `conv_mma` family's source is included as conv_mma_kernels.inc);
// cp.async copies land late (at their wait) and then early. Tolerance: max |got − want| ≤ 1e-2 ·
// max |want| per tensor, the GPU op check's; exit 1 on a failure.
#include "cuda_host.h"
#include "conv_mma_kernels.inc"
#include <cmath>
#include <cstdio>
#include <random>
#include <string>
#include <vector>

#if TK_DTYPE == 2
float tk_host_element(uint16_t bits) { return tk_host_half_to_float(bits); }
#else
float tk_host_element(uint16_t bits) { return __uint_as_float((uint32_t)bits << 16); }
#endif

static int failures = 0;
static void report(const std::string& name, double error, double scale) {
    const double relative = scale > 0 ? error / scale : error;
    const bool ok = relative <= 1e-2;
    if (!ok) ++failures;
    std::printf("%-70s max rel. error %.2e %s\n", name.c_str(), relative, ok ? "pass" : "FAIL");
}

static std::vector<T> stored(size_t n, unsigned seed) {
    std::mt19937 rng(seed);
    std::normal_distribution<float> normal;
    std::vector<T> v(n);
    for (auto& x : v) tk_st(&x, (ACC)normal(rng));
    return v;
}
static double value(const std::vector<T>& v, size_t i) { return (double)tk_ld(&v[i]); }

struct Conv { long n, c, h, w, o, kh, kw, sh, sw, ph, pw, dh, dw; };
static long outH(const Conv& k) { return (k.h + 2 * k.ph - k.dh * (k.kh - 1) - 1) / k.sh + 1; }
static long outW(const Conv& k) { return (k.w + 2 * k.pw - k.dw * (k.kw - 1) - 1) / k.sw + 1; }

/* in [n, c, hw] -> [n, hw, c], the operands' layout (the backend makes it with tk_copy_transpose,
   which memory_kernels_check.cpp checks). */
static std::vector<T> channelsLast(const std::vector<T>& in, long n, long c, long hw) {
    std::vector<T> out(n * hw * c);
    for (long i = 0; i < n; ++i) for (long ch = 0; ch < c; ++ch) for (long q = 0; q < hw; ++q)
        out[(i * hw + q) * c + ch] = in[(i * c + ch) * hw + q];
    return out;
}

static void forward(const std::string& label, const Conv& k, bool withBias, bool withResidual) {
    const long oh = outH(k), ow = outW(k), L = oh * ow;
    auto x = stored(k.n * k.c * k.h * k.w, 1), w = stored(k.o * k.c * k.kh * k.kw, 2);
    auto bias = stored(k.o, 3), residual = stored(k.n * k.o * L, 4);
    auto xl = channelsLast(x, k.n, k.c, k.h * k.w);
    auto wl = channelsLast(w, k.o, k.c, k.kh * k.kw);
    std::vector<T> out(k.n * k.o * L);
    TKConvMMA g{ k.n, k.c, k.h, k.w, k.kh, k.kw, oh, ow, k.sh, k.sw, k.ph, k.pw, k.dh, k.dw, k.o };
    const long blocks = ((k.n * L + 127) / 128) * ((k.o + 127) / 128);
    tk_host_launch((int)blocks, 256, [&] {
        tk_conv_mma(out.data(), xl.data(), wl.data(), withBias ? bias.data() : nullptr, withResidual ? residual.data() : nullptr, g, 0);
    });
    double error = 0, scale = 0;
    for (long n = 0; n < k.n; ++n) for (long o = 0; o < k.o; ++o) for (long y = 0; y < oh; ++y) for (long xo = 0; xo < ow; ++xo) {
        double s = withBias ? value(bias, o) : 0;
        for (long c = 0; c < k.c; ++c) for (long ky = 0; ky < k.kh; ++ky) for (long kx = 0; kx < k.kw; ++kx) {
            const long iy = y * k.sh - k.ph + ky * k.dh, ix = xo * k.sw - k.pw + kx * k.dw;
            if (iy < 0 || iy >= k.h || ix < 0 || ix >= k.w) continue;
            s += value(w, ((o * k.c + c) * k.kh + ky) * k.kw + kx) * value(x, ((n * k.c + c) * k.h + iy) * k.w + ix);
        }
        const long i = ((n * k.o + o) * oh + y) * ow + xo;
        if (withResidual) s += value(residual, i);
        error = std::max(error, std::fabs(value(out, i) - s));
        if (!(std::fabs(value(out, i) - s) <= 1e30)) error = INFINITY;
        scale = std::max(scale, std::fabs(s));
    }
    report(label, error, scale);
}

/* The input gradient of a stride-1 convolution k (input [n, c, h, w], output gradient [n, o, oh, ow]). */
static void inputGradient(const std::string& label, const Conv& k) {
    const long oh = outH(k), ow = outW(k);
    auto gy = stored(k.n * k.o * oh * ow, 5), w = stored(k.o * k.c * k.kh * k.kw, 6);
    auto gl = channelsLast(gy, k.n, k.o, oh * ow);
    auto wt = channelsLast(w, 1, k.o, k.c * k.kh * k.kw);  /* [c, kh, kw, o] */
    std::vector<T> dx(k.n * k.c * k.h * k.w);
    TKConvMMA g{ k.n, k.o, oh, ow, k.kh, k.kw, k.h, k.w, 1, 1, k.kh - 1 - k.ph, k.kw - 1 - k.pw, 1, 1, k.c };
    const long blocks = ((k.n * k.h * k.w + 127) / 128) * ((k.c + 127) / 128);
    tk_host_launch((int)blocks, 256, [&] { tk_conv_mma(dx.data(), gl.data(), wt.data(), nullptr, nullptr, g, 1); });
    double error = 0, scale = 0;
    for (long n = 0; n < k.n; ++n) for (long c = 0; c < k.c; ++c) for (long y = 0; y < k.h; ++y) for (long x = 0; x < k.w; ++x) {
        double s = 0;
        for (long o = 0; o < k.o; ++o) for (long ky = 0; ky < k.kh; ++ky) for (long kx = 0; kx < k.kw; ++kx) {
            const long yo = y + k.ph - ky, xo = x + k.pw - kx;
            if (yo < 0 || yo >= oh || xo < 0 || xo >= ow) continue;
            s += value(gy, ((n * k.o + o) * oh + yo) * ow + xo) * value(w, ((o * k.c + c) * k.kh + ky) * k.kw + kx);
        }
        const double got = value(dx, ((n * k.c + c) * k.h + y) * k.w + x);
        error = std::fabs(got - s) <= 1e30 ? std::max(error, std::fabs(got - s)) : INFINITY;
        scale = std::max(scale, std::fabs(s));
    }
    report(label, error, scale);
}

int main() {
    for (int mode = 0; mode < 2; ++mode) {
        tk_host_eager_copies = mode == 1;
        const std::string m = mode ? "eager " : "async ";
        forward(m + "3x3 pad 1, c 16, o 24, 2 images (2 N tiles), bias + residual", {2, 16, 9, 11, 24, 3, 3, 1, 1, 1, 1, 1, 1}, true, true);
        forward(m + "3x3 pad 1, c 32, o 136 (2 M tiles), 210 pixels, no bias", {1, 32, 15, 14, 136, 3, 3, 1, 1, 1, 1, 1, 1}, false, false);
        forward(m + "3x3 stride 2 pad 1, c 8 (steps cross taps), o 8, bias", {2, 8, 10, 9, 8, 3, 3, 2, 2, 1, 1, 1, 1}, true, false);
        forward(m + "5x3 dilation 2, padding (2, 1), c 24, o 16, residual", {1, 24, 12, 10, 16, 5, 3, 1, 1, 2, 1, 2, 2}, false, true);
        inputGradient(m + "input gradient 3x3 pad 1, c 24, o 16, 2 images", {2, 24, 7, 7, 16, 3, 3, 1, 1, 1, 1, 1, 1});
        inputGradient(m + "input gradient 3x3 pad 0, c 8, o 40", {1, 8, 9, 8, 40, 3, 3, 1, 1, 0, 0, 1, 1});
    }
    return failures ? 1 : 0;
}
