// Runs TensorKit's flash-attention kernels (forward, the backward's row dot, dQ, dK/dV) under
// cuda_host.h and compares them with attention computed in double from the same rounded inputs, for
// three layouts of every operand: [B·H, N, D] contiguous, the heads of a [B, N, H·D] projection read
// in place (pitch H·D) and of a wider row (pitch 3·H·D, as q in a fused q/k/v projection). Built and run by
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

typedef void (*Forward)(T*, float*, const T*, const T*, const T*, i64, i64, int, double, TKFALayout);
typedef void (*BackwardDQ)(T*, const T*, const T*, const T*, const T*, const float*, const float*, i64, i64, int, double, TKFALayout);
typedef void (*BackwardDKDV)(T*, T*, const T*, const T*, const T*, const T*, const float*, const float*, i64, i64, int, double,
                             TKFALayout);

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
static void report(const std::string& name, const char* what, double err, double tolerance = 1e-2) {
    const bool ok = err <= tolerance && !std::isnan(err);
    if (!ok) ++failures;
    std::printf("%-44s %-9s %-6s %.2e %s\n", name.c_str(), dtypeName, what, err, ok ? "pass" : "FAIL");
}

/* Operand layouts: 0 [B, H, N, D] contiguous; 1 [B, N, H·D] (heads read in place, pitch H·D);
   2 rows of 3·H·D with the operand in the first H·D (pitch 3·H·D). */
struct Layout {
    int kind, B, H, d;
    long pitch() const { return kind == 0 ? d : kind == 1 ? (long)H * d : 3L * H * d; }
    long size(int n) const { return (long)B * n * (kind == 0 ? (long)H * d : pitch()); }
    /* Element (head bh, row i, column c). */
    long at(int n, int bh, int i, int c) const {
        const int b = bh / H, h = bh % H;
        return kind == 0 ? (((long)bh * n + i) * d + c) : ((long)b * n + i) * pitch() + (long)h * d + c;
    }
    void fill(TKFALayout& lay, int slot, int n) const {
        lay.heads = H;
        lay.batch[slot] = kind == 0 ? (long)H * n * d : (long)n * pitch();
        lay.head[slot] = kind == 0 ? (long)n * d : d;
        lay.row[slot] = pitch();
    }
};

/* A canonical [bh, n, d] operand stored in `lay`'s layout (the gaps hold other values). */
static std::vector<T> place(const std::vector<T>& canon, const Layout& lay, int n, std::mt19937& rng) {
    std::vector<T> out = rounded(rng, (size_t)lay.size(n), 3.f);
    const int bh = lay.B * lay.H;
    for (int h = 0; h < bh; ++h) for (int i = 0; i < n; ++i) for (int c = 0; c < lay.d; ++c)
        out[lay.at(n, h, i, c)] = canon[((size_t)h * n + i) * lay.d + c];
    return out;
}
static std::vector<T> gather(const std::vector<T>& stored, const Layout& lay, int n) {
    const int bh = lay.B * lay.H;
    std::vector<T> out((size_t)bh * n * lay.d);
    for (int h = 0; h < bh; ++h) for (int i = 0; i < n; ++i) for (int c = 0; c < lay.d; ++c)
        out[((size_t)h * n + i) * lay.d + c] = stored[lay.at(n, h, i, c)];
    return out;
}

static void check(int B, int H, int nq, int nk, int d, bool backward, unsigned seed, int kind = 0) {
    const int bh = B * H;
    const int fw[] = {32, 48, 64, 80, 96, 128}, bw[] = {32, 48, 64};
    const int wf = width(d, fw, 6), wb = width(d, bw, 3);
    const char* layouts[] = {"", " [B,N,HD]", " pitch 3HD"};
    const std::string name = std::string(!pipelined ? "sync  " : tk_host_eager_copies ? "eager " : "async ")
        + "bh" + std::to_string(bh) + " nq" + std::to_string(nq) + " nk" + std::to_string(nk)
        + " d" + std::to_string(d) + " (DP " + std::to_string(wf) + ")" + layouts[kind];
    std::mt19937 rng(seed);
    const double scale = 1.0 / std::sqrt((double)d);
    auto q = rounded(rng, (size_t)bh * nq * d, 1.5f), k = rounded(rng, (size_t)bh * nk * d, 1.5f);
    auto v = rounded(rng, (size_t)bh * nk * d, 1.f), go = rounded(rng, (size_t)bh * nq * d, 1.f);
    const Layout lay{kind, B, H, d};
    TKFALayout at{};
    for (int slot : {TK_FA_Q, TK_FA_O, TK_FA_GO, TK_FA_DQ}) lay.fill(at, slot, nq);
    for (int slot : {TK_FA_K, TK_FA_V, TK_FA_DK, TK_FA_DV}) lay.fill(at, slot, nk);
    const auto qs = place(q, lay, nq, rng), ks = place(k, lay, nk, rng), vs = place(v, lay, nk, rng), gos = place(go, lay, nq, rng);

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
    std::vector<T> outStored = rounded(rng, (size_t)lay.size(nq), 1.f);
    std::vector<float> lse((size_t)bh * nq);
    const int blocksQ = (nq + 63) / 64, blocksK = (nk + 63) / 64;
    tk_host_launch(bh * blocksQ, 128, [&] {
        forwardKernel(wf)(outStored.data(), lse.data(), qs.data(), ks.data(), vs.data(), nq, nk, d, scale, at);
    });
    const auto out = gather(outStored, lay, nq);
    report(name, "out", relError(out, O));
    double lseErr = 0;
    for (size_t i = 0; i < L.size(); ++i) lseErr = std::max(lseErr, std::fabs(lse[i] - L[i]));
    report(name, "lse", lseErr);  // absolute: log-space
    if (!backward) return;

    // delta = rowdot(out, dO) by tk_flash_rowdot, against a float loop over the same stored values.
    std::vector<float> delta((size_t)bh * nq);
    const long rows = (long)bh * nq;
    tk_host_launch((int)((rows * 32 + 255) / 256), 256, [&] { tk_flash_rowdot(delta.data(), outStored.data(), gos.data(), rows, nq, d, at); });
    double deltaErr = 0, deltaScale = 0;
    for (long r = 0; r < rows; ++r) {
        double s = 0;
        for (int c = 0; c < d; ++c) s += (double)tk_ld(&out[r * d + c]) * (double)tk_ld(&go[r * d + c]);
        deltaErr = std::max(deltaErr, std::fabs(delta[r] - s));
        deltaScale = std::max(deltaScale, std::fabs(s));
    }
    report(name, "delta", deltaErr / std::max(deltaScale, 1e-30), 1e-5);  // float sums of the same products
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
    std::vector<T> dqs = rounded(rng, (size_t)lay.size(nq), 1.f), dks = rounded(rng, (size_t)lay.size(nk), 1.f),
                   dvs = rounded(rng, (size_t)lay.size(nk), 1.f);
    tk_host_launch(bh * blocksQ, 128, [&] {
        dqKernel(wb)(dqs.data(), qs.data(), ks.data(), vs.data(), gos.data(), lse.data(), delta.data(), nq, nk, d, scale, at);
    });
    tk_host_launch(bh * blocksK, 128, [&] {
        dkdvKernel(wb)(dks.data(), dvs.data(), qs.data(), ks.data(), vs.data(), gos.data(), lse.data(), delta.data(), nq, nk, d, scale, at);
    });
    report(name, "dq", relError(gather(dqs, lay, nq), dQ));
    report(name, "dk", relError(gather(dks, lay, nk), dK));
    report(name, "dv", relError(gather(dvs, lay, nk), dV));
}

int main() {
    /* The plain build, the pipelined one with cp.async copies landing at their wait, and again with
       them landing at once. */
    for (int mode = 0; mode < 3; ++mode) {
        pipelined = mode > 0;
        tk_host_eager_copies = mode == 2;
        check(2, 1, 70, 77, 40, true, 1);     // SD 1.5's first level (d 40), rows and keys not multiples of 64
        check(1, 1, 128, 64, 64, true, 2);    // exact tiles, d 64 (SD 2.x, SDXL)
        check(1, 1, 33, 130, 20, true, 3);    // d 20 in a 32-wide kernel, three key tiles: 32-bit tile loads
        check(1, 1, 40, 50, 33, true, 4);     // odd d: 16-bit tile loads
        check(2, 1, 65, 77, 64, true, 5);     // cross-attention length 77
        check(1, 1, 70, 200, 48, true, 9);    // four key tiles (double-buffered), d 48
        check(1, 1, 70, 90, 80, false, 6);    // forward only: d 80 (double-buffered), 96 and 128 (one stage)
        check(1, 1, 20, 70, 96, false, 7);
        check(1, 1, 64, 130, 128, false, 8);
        // Heads read and written in place: [B, N, H·D] (SD 1.5's first level, two batches of two
        // heads; odd d; d 80 forward) and rows of a wider projection (d 20: 4-byte-aligned heads).
        check(2, 2, 70, 77, 40, true, 10, 1);
        check(1, 2, 40, 50, 33, true, 11, 1);
        check(1, 3, 70, 90, 80, false, 12, 1);
        check(1, 2, 33, 130, 20, true, 13, 2);
    }
    std::printf("%s: %d failure(s)\n", dtypeName, failures);
    return failures ? 1 : 0;
}
