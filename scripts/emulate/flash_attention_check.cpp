// Runs TensorKit's flash-attention kernels (forward, dQ, dK/dV) under cuda_host.h and compares them
// with attention computed in double from the same rounded inputs. Built and run by
// CUDAKernelEmulationTests once per storage type (the kernel source is included as
// flash_kernels.inc, with TK_DTYPE defined at its top). Exit 1 if any error exceeds 1e-2, the GPU
// op check's tolerance for float16/bfloat16 (max |x - ref| / max |ref| per tensor).
#include "cuda_host.h"
#include "flash_kernels.inc"
#include <cstdio>
#include <random>
#include <string>

#if TK_DTYPE == 2
float tk_host_element(uint16_t bits) { return tk_host_half_to_float(bits); }
static const char* dtypeName = "float16";
#else
float tk_host_element(uint16_t bits) { return __uint_as_float((uint32_t)bits << 16); }
static const char* dtypeName = "bfloat16";
#endif

typedef void (*Forward)(T*, float*, const T*, const T*, const T*, i64, i64, int, double);
typedef void (*BackwardDQ)(T*, const T*, const T*, const T*, const T*, const float*, const float*, i64, i64, int, double);
typedef void (*BackwardDKDV)(T*, T*, const T*, const T*, const T*, const T*, const float*, const float*, i64, i64, int, double);

static int width(int d, const int* widths, int n) {
    for (int i = 0; i < n; ++i) if (d <= widths[i]) return widths[i];
    return 0;
}

/* The pipelined build (cp.async, ldmatrix) or the plain one ("_sync"), as CUDA.flashPipeline picks. */
static bool pipelined = true;
#define TK_PICK(name) (pipelined ? name : name##_sync)
static Forward forwardKernel(int w) {
    switch (w) {
    case 32: return TK_PICK(tk_flash_forward_d32); case 48: return TK_PICK(tk_flash_forward_d48);
    case 64: return TK_PICK(tk_flash_forward_d64); case 80: return TK_PICK(tk_flash_forward_d80);
    case 96: return TK_PICK(tk_flash_forward_d96); case 128: return TK_PICK(tk_flash_forward_d128);
    }
    return nullptr;
}
static BackwardDQ dqKernel(int w) {
    switch (w) {
    case 32: return TK_PICK(tk_flash_backward_dq_d32); case 48: return TK_PICK(tk_flash_backward_dq_d48);
    case 64: return TK_PICK(tk_flash_backward_dq_d64);
    }
    return nullptr;
}
static BackwardDKDV dkdvKernel(int w) {
    switch (w) {
    case 32: return TK_PICK(tk_flash_backward_dkdv_d32); case 48: return TK_PICK(tk_flash_backward_dkdv_d48);
    case 64: return TK_PICK(tk_flash_backward_dkdv_d64);
    }
    return nullptr;
}

static std::vector<T> rounded(std::mt19937& rng, size_t n, float spread) {
    std::normal_distribution<float> normal(0.f, spread);
    std::vector<T> v(n);
    for (auto& x : v) tk_st(&x, normal(rng));
    return v;
}
static double value(const T& x) { return (double)tk_ld(&x); }

static double relError(const std::vector<T>& got, const std::vector<double>& want) {
    double worst = 0, scale = 0;
    for (size_t i = 0; i < want.size(); ++i) {
        worst = std::max(worst, std::fabs(value(got[i]) - want[i]));
        scale = std::max(scale, std::fabs(want[i]));
    }
    return worst / std::max(scale, 1e-30);
}

static int failures = 0;
static void report(const std::string& name, const char* what, double err) {
    const bool ok = err <= 1e-2 && !std::isnan(err);
    if (!ok) ++failures;
    std::printf("%-34s %-9s %-6s %.2e %s\n", name.c_str(), dtypeName, what, err, ok ? "pass" : "FAIL");
}

static void check(int bh, int nq, int nk, int d, bool backward, unsigned seed) {
    const int fw[] = {32, 48, 64, 80, 96, 128}, bw[] = {32, 48, 64};
    const int wf = width(d, fw, 6), wb = width(d, bw, 3);
    const std::string name = std::string(!pipelined ? "sync  " : tk_host_eager_copies ? "eager " : "async ")
        + "bh" + std::to_string(bh) + " nq" + std::to_string(nq) + " nk" + std::to_string(nk)
        + " d" + std::to_string(d) + " (DP " + std::to_string(wf) + ")";
    std::mt19937 rng(seed);
    const double scale = 1.0 / std::sqrt((double)d);
    auto q = rounded(rng, (size_t)bh * nq * d, 1.5f), k = rounded(rng, (size_t)bh * nk * d, 1.5f);
    auto v = rounded(rng, (size_t)bh * nk * d, 1.f), go = rounded(rng, (size_t)bh * nq * d, 1.f);

    // Reference in double.
    std::vector<double> P((size_t)bh * nq * nk), O((size_t)bh * nq * d), L((size_t)bh * nq);
    for (int h = 0; h < bh; ++h) for (int i = 0; i < nq; ++i) {
        double m = -INFINITY;
        double* p = &P[((size_t)h * nq + i) * nk];
        for (int j = 0; j < nk; ++j) {
            double s = 0;
            for (int c = 0; c < d; ++c) s += value(q[((size_t)h * nq + i) * d + c]) * value(k[((size_t)h * nk + j) * d + c]);
            p[j] = s * scale; m = std::max(m, p[j]);
        }
        double sum = 0;
        for (int j = 0; j < nk; ++j) { p[j] = std::exp(p[j] - m); sum += p[j]; }
        for (int j = 0; j < nk; ++j) p[j] /= sum;
        L[(size_t)h * nq + i] = m + std::log(sum);
        for (int c = 0; c < d; ++c) {
            double o = 0;
            for (int j = 0; j < nk; ++j) o += p[j] * value(v[((size_t)h * nk + j) * d + c]);
            O[((size_t)h * nq + i) * d + c] = o;
        }
    }
    std::vector<T> out((size_t)bh * nq * d);
    std::vector<float> lse((size_t)bh * nq);
    const int blocksQ = (nq + 63) / 64, blocksK = (nk + 63) / 64;
    tk_host_launch(bh * blocksQ, 128, [&] { forwardKernel(wf)(out.data(), lse.data(), q.data(), k.data(), v.data(), nq, nk, d, scale); });
    report(name, "out", relError(out, O));
    double lseErr = 0;
    for (size_t i = 0; i < L.size(); ++i) lseErr = std::max(lseErr, std::fabs(lse[i] - L[i]));
    report(name, "lse", lseErr);  // absolute: log-space
    if (!backward) return;

    // delta from the kernel's output, as tk_attention_backward_rowdot computes it.
    std::vector<float> delta((size_t)bh * nq);
    for (size_t r = 0; r < delta.size(); ++r) {
        float s = 0;
        for (int c = 0; c < d; ++c) s += tk_ld(&out[r * d + c]) * tk_ld(&go[r * d + c]);
        delta[r] = s;
    }
    std::vector<double> dQ((size_t)bh * nq * d, 0), dK((size_t)bh * nk * d, 0), dV((size_t)bh * nk * d, 0);
    for (int h = 0; h < bh; ++h) for (int i = 0; i < nq; ++i) {
        const double* p = &P[((size_t)h * nq + i) * nk];
        double D = 0;
        for (int c = 0; c < d; ++c) D += O[((size_t)h * nq + i) * d + c] * value(go[((size_t)h * nq + i) * d + c]);
        for (int j = 0; j < nk; ++j) {
            double dp = 0;
            for (int c = 0; c < d; ++c) dp += value(go[((size_t)h * nq + i) * d + c]) * value(v[((size_t)h * nk + j) * d + c]);
            const double ds = p[j] * (dp - D) * scale;
            for (int c = 0; c < d; ++c) {
                dQ[((size_t)h * nq + i) * d + c] += ds * value(k[((size_t)h * nk + j) * d + c]);
                dK[((size_t)h * nk + j) * d + c] += ds * value(q[((size_t)h * nq + i) * d + c]);
                dV[((size_t)h * nk + j) * d + c] += p[j] * value(go[((size_t)h * nq + i) * d + c]);
            }
        }
    }
    std::vector<T> dq((size_t)bh * nq * d), dk((size_t)bh * nk * d), dv((size_t)bh * nk * d);
    tk_host_launch(bh * blocksQ, 128, [&] {
        dqKernel(wb)(dq.data(), q.data(), k.data(), v.data(), go.data(), lse.data(), delta.data(), nq, nk, d, scale);
    });
    tk_host_launch(bh * blocksK, 128, [&] {
        dkdvKernel(wb)(dk.data(), dv.data(), q.data(), k.data(), v.data(), go.data(), lse.data(), delta.data(), nq, nk, d, scale);
    });
    report(name, "dq", relError(dq, dQ));
    report(name, "dk", relError(dk, dK));
    report(name, "dv", relError(dv, dV));
}

int main() {
    /* The plain build, the pipelined one with cp.async copies landing at their wait, and again with
       them landing at once. */
    for (int mode = 0; mode < 3; ++mode) {
        pipelined = mode > 0;
        tk_host_eager_copies = mode == 2;
        check(2, 70, 77, 40, true, 1);     // SD 1.5's first level (d 40), rows and keys not multiples of 64
        check(1, 128, 64, 64, true, 2);    // exact tiles, d 64 (SD 2.x, SDXL)
        check(1, 33, 130, 20, true, 3);    // d 20 in a 32-wide kernel, three key tiles: 32-bit tile loads
        check(1, 40, 50, 33, true, 4);     // odd d: 16-bit tile loads
        check(2, 65, 77, 64, true, 5);     // cross-attention length 77
        check(1, 70, 200, 48, true, 9);    // four key tiles (double-buffered), d 48
        check(1, 70, 90, 80, false, 6);    // forward only: d 80 (double-buffered), 96 and 128 (one stage)
        check(1, 20, 70, 96, false, 7);
        check(1, 64, 130, 128, false, 8);
    }
    std::printf("%s: %d failure(s)\n", dtypeName, failures);
    return failures ? 1 : 0;
}
