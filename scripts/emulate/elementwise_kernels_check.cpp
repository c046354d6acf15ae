// Runs TensorKit's fused GEGLU kernels (tk_geglu_forward, tk_geglu_backward) under cuda_host.h and
// compares them with a double-precision loop written here from the definition: with a = h[r, j] +
// bias[j] and g = h[r, inner + j] + bias[inner + j] (from the same stored inputs), out = a · g · Φ(g),
// dh[r, j] = go · g · Φ(g), dh[r, inner + j] = go · a · (Φ(g) + g · φ(g)). Built and run by
// CUDAKernelEmulationTests for float32 and float16 (the `elementwise` family's source is included as
// elementwise_kernels.inc). Tolerance: |got − want| ≤ 1e-5 + r·|want|, r = 1e-5 (float32) or 2e-3
// (float16's rounding of the result); 32- and 64-bit indexing, with and without a bias.
#include "cuda_host.h"
#include "elementwise_kernels.inc"
#include <cmath>
#include <cstdio>
#include <random>
#include <string>
#include <vector>

#if TK_DTYPE == 2
float tk_host_element(uint16_t bits) { return tk_host_half_to_float(bits); }
static const double relative = 2e-3;
#else
float tk_host_element(uint16_t bits) { return __uint_as_float((uint32_t)bits << 16); }
static const double relative = 1e-5;
#endif

static int failures = 0;
static void report(const std::string& name, size_t bad, size_t total, double worst) {
    if (bad) ++failures;
    std::printf("%-52s %zu/%zu outside (worst excess %.3g) %s\n", name.c_str(), bad, total, worst, bad ? "FAIL" : "pass");
}

static std::vector<T> stored(size_t n, unsigned seed, float scale) {
    std::mt19937 rng(seed);
    std::normal_distribution<float> normal;
    std::vector<T> v(n);
    for (auto& x : v) tk_st(&x, (ACC)(scale * normal(rng)));
    return v;
}

static double value(const std::vector<T>& v, size_t i) { return (double)tk_ld(&v[i]); }

static void check(long rows, long inner, bool withBias, int small) {
    const std::string name = "geglu " + std::to_string(rows) + "x" + std::to_string(inner) + (withBias ? " bias" : " no bias")
        + (small ? " (32-bit)" : " (64-bit)");
    auto h = stored(rows * 2 * inner, 1 + rows, 1.5f), bias = stored(2 * inner, 2 + inner, 1.f), go = stored(rows * inner, 3, 1.f);
    std::vector<T> out(rows * inner), dh(rows * 2 * inner);
    const T* b = withBias ? bias.data() : nullptr;
    tk_host_launch(3, 64, [&] { tk_geglu_forward(out.data(), h.data(), b, rows, inner, small); });
    tk_host_launch(2, 96, [&] { tk_geglu_backward(dh.data(), go.data(), h.data(), b, rows, inner, small); });
    size_t badOut = 0, badGrad = 0;
    double worstOut = 0, worstGrad = 0;
    auto compare = [](double got, double want, size_t& bad, double& worst) {
        const double excess = std::fabs(got - want) - (1e-5 + relative * std::fabs(want));
        if (!(excess <= 0)) { ++bad; worst = std::isnan(excess) ? INFINITY : std::max(worst, excess); }
    };
    for (long r = 0; r < rows; ++r) for (long j = 0; j < inner; ++j) {
        const double a = value(h, r * 2 * inner + j) + (withBias ? value(bias, j) : 0);
        const double g = value(h, r * 2 * inner + inner + j) + (withBias ? value(bias, inner + j) : 0);
        const double cdf = 0.5 * (1 + std::erf(g / std::sqrt(2.0))), pdf = std::exp(-0.5 * g * g) / std::sqrt(2 * M_PI);
        const double d = value(go, r * inner + j);
        compare(value(out, r * inner + j), a * g * cdf, badOut, worstOut);
        compare(value(dh, r * 2 * inner + j), d * g * cdf, badGrad, worstGrad);
        compare(value(dh, r * 2 * inner + inner + j), d * a * (cdf + g * pdf), badGrad, worstGrad);
    }
    report(name + " forward", badOut, out.size(), worstOut);
    report(name + " backward", badGrad, dh.size(), worstGrad);
}

int main() {
    for (int small = 0; small < 2; ++small) {
        check(37, 20, true, small);
        check(5, 129, false, small);
        check(1, 3, true, small);
    }
    return failures ? 1 : 0;
}
