// Runs TensorKit's fused GEGLU kernels (tk_geglu_forward, tk_geglu_backward) under cuda_host.h and
// compares them with a double-precision loop written here from the definition: with a = h[r, j] +
// bias[j] and g = h[r, inner + j] + bias[inner + j] (from the same stored inputs), out = a · g · Φ(g),
// dh[r, j] = go · g · Φ(g), dh[r, inner + j] = go · a · (Φ(g) + g · φ(g)). Built and run by
// CUDAKernelEmulationTests for float32 and float16 (the `elementwise` family's source is included as
// elementwise_kernels.inc). Tolerance: |got − want| ≤ 1e-5 + r·|want|, r = 1e-5 (float32) or 2e-3
// (float16's rounding of the result); 32- and 64-bit indexing, with and without a bias. Also the
// vector and element paths of tk_binary, tk_unary and tk_unary_backward (checkElementwise).
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

/* A TKGeom over `shape` with up to three operands' strides; the mask marks the contiguous ones. */
static TKGeom geometry(const std::vector<long>& shape, const std::vector<std::vector<long>>& strides) {
    TKGeom g{};
    g.rank = (i64)shape.size();
    g.count = 1;
    for (long n : shape) g.count *= n;
    std::vector<long> contiguous(shape.size(), 1);
    for (int a = (int)shape.size() - 2; a >= 0; --a) contiguous[a] = contiguous[a + 1] * shape[a + 1];
    for (int a = 0; a < TK_MAX_RANK; ++a) g.shape[a] = a < (int)shape.size() ? shape[a] : 1;
    for (size_t k = 0; k < strides.size(); ++k) {
        for (size_t a = 0; a < shape.size(); ++a) g.strides[k][a] = strides[k][a];
        if (strides[k] == contiguous) g.contiguous |= 1LL << k;
    }
    return g;
}

/* The elementwise kernels' vector paths (every operand contiguous and 16-byte aligned; a count that
   leaves a tail) and their element paths (an operand one element off alignment; a broadcast operand),
   against loops: binary add and mul exactly (both round the float result once), silu and its
   gradient against double. */
static void checkElementwise() {
    const long n = 1003;  /* not a multiple of any vector width */
    auto a = stored(n + 1, 21, 1.f), b = stored(n + 1, 22, 1.f), go = stored(n + 1, 23, 1.f);
    for (int shift = 0; shift < 2; ++shift) {
        const char* path = shift ? "element path (operand off alignment)" : "vector path";
        const T* ap = a.data() + shift;
        std::vector<T> out(n);
        const TKGeom g = geometry({n}, {{1}, {1}});
        for (int op : {0, 2}) {
            tk_host_launch(2, 64, [&] { tk_binary(out.data(), ap, b.data(), op, g); });
            size_t bad = 0;
            for (long i = 0; i < n; ++i) {
                T want;
                const ACC x = tk_ld(ap + i), y = tk_ld(&b[i]);
                tk_st(&want, op == 0 ? x + y : x * y);
                bad += tk_ld(&out[i]) != tk_ld(&want);
            }
            report(std::string("binary ") + (op == 0 ? "add, " : "mul, ") + path, bad, n, 0);
        }
        const TKGeom g1 = geometry({n}, {{1}});
        tk_host_launch(2, 64, [&] { tk_unary(out.data(), ap, 9, 0, 0, g1); });
        size_t bad = 0;
        double worst = 0;
        for (long i = 0; i < n; ++i) {
            const double x = value(a, i + shift), want = x / (1 + std::exp(-x));
            const double excess = std::fabs(value(out, i) - want) - (1e-5 + relative * std::fabs(want));
            if (!(excess <= 0)) { ++bad; worst = std::max(worst, excess); }
        }
        report(std::string("unary silu, ") + path, bad, n, worst);
        std::vector<T> y(n), dx(n);
        tk_host_launch(2, 64, [&] { tk_unary(y.data(), ap, 9, 0, 0, g1); });
        const TKGeom g3 = geometry({n}, {{1}, {1}, {1}});
        tk_host_launch(2, 64, [&] { tk_unary_backward(dx.data(), ap, y.data(), go.data(), 9, 0, 0, g3); });
        bad = 0; worst = 0;
        for (long i = 0; i < n; ++i) {
            const double x = value(a, i + shift), sg = 1 / (1 + std::exp(-x)), want = value(go, i) * sg * (1 + x * (1 - sg));
            const double excess = std::fabs(value(dx, i) - want) - (1e-5 + relative * std::fabs(want));
            if (!(excess <= 0)) { ++bad; worst = std::max(worst, excess); }
        }
        report(std::string("unary backward silu, ") + path, bad, n, worst);
    }
    /* b broadcast along the rows (stride 0): the strided path. */
    const long rows = 17, cols = 59;
    auto m = stored(rows * cols, 24, 1.f), r = stored(cols, 25, 1.f);
    std::vector<T> out(rows * cols);
    const TKGeom g = geometry({rows, cols}, {{cols, 1}, {0, 1}});
    tk_host_launch(2, 64, [&] { tk_binary(out.data(), m.data(), r.data(), 0, g); });
    size_t bad = 0;
    for (long i = 0; i < rows * cols; ++i) {
        T want;
        tk_st(&want, tk_ld(&m[i]) + tk_ld(&r[i % cols]));
        bad += tk_ld(&out[i]) != tk_ld(&want);
    }
    report("binary add, broadcast row (strided path)", bad, rows * cols, 0);
    /* One value per row over rows of whole vectors (a time embedding over an image): the per-vector
       path, the broadcast operand second (add) and first (sub: the operand order matters). */
    const long wide = 64;
    auto img = stored(rows * wide, 26, 1.f), per = stored(rows, 27, 1.f);
    std::vector<T> o2(rows * wide);
    for (int first = 0; first < 2; ++first) {
        const TKGeom gb = first ? geometry({rows, wide}, {{1, 0}, {wide, 1}}) : geometry({rows, wide}, {{wide, 1}, {1, 0}});
        const int op = first ? 1 : 0;
        tk_host_launch(2, 64, [&] {
            if (first) tk_binary(o2.data(), per.data(), img.data(), op, gb);
            else tk_binary(o2.data(), img.data(), per.data(), op, gb);
        });
        bad = 0;
        for (long i = 0; i < rows * wide; ++i) {
            T want;
            const ACC x = tk_ld(&img[i]), y = tk_ld(&per[i / wide]);
            tk_st(&want, first ? y - x : x + y);
            bad += tk_ld(&o2[i]) != tk_ld(&want);
        }
        report(first ? "binary sub, a value per row first (per-vector path)" : "binary add, a value per row second (per-vector path)",
               bad, rows * wide, 0);
    }
}

int main() {
    for (int small = 0; small < 2; ++small) {
        check(37, 20, true, small);
        check(5, 129, false, small);
        check(1, 3, true, small);
        check(6, 24, true, small);  /* whole vectors in float32 and float16: the vector path */
    }
    checkElementwise();
    return failures ? 1 : 0;
}
