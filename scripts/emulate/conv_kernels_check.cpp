// Runs TensorKit's CUDA convolution helpers (tk_im2col, in whole images and in bands of output
// rows; tk_col2im; tk_bias_residual) under cuda_host.h in float32 and compares them with loops
// written here. Built and run by CUDAKernelEmulationTests (the `conv` family's source is included as
// conv_kernels.inc). im2col/col2im move values without arithmetic, so they must match exactly;
// col2im's sums and the bias/residual adds are compared in the same order, also exactly.
#include "cuda_host.h"
#include "conv_kernels.inc"
#include <cstdio>
#include <random>
#include <string>

float tk_host_element(uint16_t bits) { return tk_host_half_to_float(bits); }

static int failures = 0;
static void report(const std::string& name, size_t mismatches, size_t total) {
    if (mismatches) ++failures;
    std::printf("%-58s %zu/%zu differ %s\n", name.c_str(), mismatches, total, mismatches ? "FAIL" : "pass");
}

struct Geometry { long n, c, h, w, kh, kw, sh, sw, ph, pw, dh, dw; };

static TKConv conv(const Geometry& g) {
    TKConv t;
    t.n = g.n; t.c = g.c; t.h = g.h; t.w = g.w; t.kh = g.kh; t.kw = g.kw;
    t.oh = (g.h + 2 * g.ph - g.dh * (g.kh - 1) - 1) / g.sh + 1;
    t.ow = (g.w + 2 * g.pw - g.dw * (g.kw - 1) - 1) / g.sw + 1;
    t.sh = g.sh; t.sw = g.sw; t.ph = g.ph; t.pw = g.pw; t.dh = g.dh; t.dw = g.dw;
    return t;
}

static std::vector<float> randomValues(size_t n, unsigned seed) {
    std::mt19937 rng(seed);
    std::normal_distribution<float> normal;
    std::vector<float> v(n);
    for (auto& x : v) x = normal(rng);
    return v;
}

/* The input value under window position (ki, kj) of output pixel l, or 0 outside the image. */
static float tap(const std::vector<float>& in, const TKConv& g, long n, long c, long ki, long kj, long l) {
    const long oy = l / g.ow, ox = l % g.ow;
    const long y = oy * g.sh - g.ph + ki * g.dh, x = ox * g.sw - g.pw + kj * g.dw;
    if (y < 0 || y >= g.h || x < 0 || x >= g.w) return 0.f;
    return in[((n * g.c + c) * g.h + y) * g.w + x];
}

static void checkIm2col(const std::string& name, const Geometry& geometry, long firstRow, long rows, int small) {
    const TKConv g = conv(geometry);
    const long L = rows * g.ow, l0 = firstRow * g.ow, K = g.c * g.kh * g.kw;
    auto input = randomValues(g.n * g.c * g.h * g.w, 1);
    std::vector<float> col(g.n * K * L, NAN);
    tk_host_launch(3, 64, [&] { tk_im2col(col.data(), input.data(), g, small, l0, L); });
    size_t bad = 0;
    for (long n = 0; n < g.n; ++n) for (long c = 0; c < g.c; ++c) for (long ki = 0; ki < g.kh; ++ki)
        for (long kj = 0; kj < g.kw; ++kj) for (long l = 0; l < L; ++l) {
            const float want = tap(input, g, n, c, ki, kj, l0 + l);
            const float got = col[(n * K + (c * g.kh + ki) * g.kw + kj) * L + l];
            if (!(got == want)) ++bad;
        }
    report(name + (small ? " (32-bit)" : " (64-bit)"), bad, col.size());
}

static void checkCol2im(const std::string& name, const Geometry& geometry, int small) {
    const TKConv g = conv(geometry);
    const long L = g.oh * g.ow, K = g.c * g.kh * g.kw;
    auto col = randomValues(g.n * K * L, 2);
    std::vector<float> image(g.n * g.c * g.h * g.w, NAN);
    tk_host_launch(2, 96, [&] { tk_col2im(image.data(), col.data(), g, small); });
    size_t bad = 0;
    for (long n = 0; n < g.n; ++n) for (long c = 0; c < g.c; ++c) for (long y = 0; y < g.h; ++y)
        for (long x = 0; x < g.w; ++x) {
            // Window positions in the kernel's order: ki ascending, kj ascending.
            float s = 0.f;
            for (long ki = 0; ki < g.kh; ++ki) for (long kj = 0; kj < g.kw; ++kj) {
                const long ty = y + g.ph - ki * g.dh, tx = x + g.pw - kj * g.dw;
                if (ty < 0 || tx < 0 || ty % g.sh || tx % g.sw) continue;
                const long oy = ty / g.sh, ox = tx / g.sw;
                if (oy >= g.oh || ox >= g.ow) continue;
                s += col[(n * K + (c * g.kh + ki) * g.kw + kj) * L + oy * g.ow + ox];
            }
            if (!(image[((n * g.c + c) * g.h + y) * g.w + x] == s)) ++bad;
        }
    report(name + (small ? " (32-bit)" : " (64-bit)"), bad, image.size());
}

/* shift: x, residual and out start that many floats into their buffers (1: off 16-byte alignment,
   the element path; 0: the vector path, four floats at a time). */
static void checkBiasResidual(const std::string& name, long count, long channels, long inner, bool bias, bool residual,
                              bool inPlace, int shift = 0) {
    auto x = randomValues(count + shift, 3), b = randomValues(channels, 4), r = randomValues(count + shift, 5);
    std::vector<float> out(count + shift, NAN);
    float* dst = (inPlace ? x.data() : out.data()) + shift;
    const auto original = x;
    tk_host_launch(2, 64, [&] {
        tk_bias_residual(dst, x.data() + shift, bias ? b.data() : nullptr, residual ? r.data() + shift : nullptr, count, channels, inner);
    });
    size_t bad = 0;
    for (long i = 0; i < count; ++i) {
        float v = original[i + shift];
        if (bias) v = v + b[(i / inner) % channels];
        if (residual) v = v + r[i + shift];
        if (!(dst[i] == v)) ++bad;
    }
    report(name, bad, count);
}

int main() {
    const Geometry sd{2, 3, 9, 7, 3, 3, 1, 1, 1, 1, 1, 1};          // 3×3, stride 1, padding 1
    const Geometry odd{2, 4, 9, 11, 3, 5, 2, 1, 1, 2, 1, 1};        // kernel 3×5, stride 2×1
    const Geometry dilated{1, 2, 10, 8, 3, 3, 1, 2, 2, 1, 2, 1};    // dilation 2×1, stride 1×2
    for (int small = 0; small < 2; ++small) {
        checkIm2col("im2col 3x3 whole images", sd, 0, conv(sd).oh, small);
        checkIm2col("im2col 3x3 band of rows 2..4", sd, 2, 3, small);
        checkIm2col("im2col 3x5 stride 2x1, last band", odd, conv(odd).oh - 2, 2, small);
        checkIm2col("im2col dilation 2x1", dilated, 0, conv(dilated).oh, small);
        checkCol2im("col2im 3x3", sd, small);
        checkCol2im("col2im 3x5 stride 2x1", odd, small);
        checkCol2im("col2im dilation 2x1 stride 1x2", dilated, small);
    }
    checkBiasResidual("bias+residual, conv layout (inner 12)", 2 * 5 * 12, 5, 12, true, true, true);
    checkBiasResidual("bias+residual, linear layout (inner 1)", 7 * 6, 6, 1, true, true, false);
    checkBiasResidual("bias only", 3 * 4 * 5, 4, 5, true, false, false);
    checkBiasResidual("residual only", 50, 1, 1, false, true, true);
    checkBiasResidual("bias+residual, operands off alignment", 2 * 5 * 12 + 3, 5, 12, true, true, false, 1);
    std::printf("conv kernels: %d failure(s)\n", failures);
    return failures ? 1 : 0;
}
