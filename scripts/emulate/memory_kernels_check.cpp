// Runs TensorKit's copy kernels in their fast forms under cuda_host.h and compares them, byte for
// byte, with copies done by loops written here from the layouts:
//   - tk_copy_transpose: dst[b, p, q] at b·db + p·dp + q ← src[b, p, q] at b·sb + p + q·sq, for
//     2-, 4- and 8-byte elements, whole and partial 32 × 32 tiles, one batch and several, a
//     destination that is a slice of a wider buffer (dp > q, db > p·dp) and a source batch stride
//     wider than its matrix;
//   - tk_copy with 16-byte units (what `CUDAGeometry.vectorized` makes of a head split
//     [B, N, H, D] → [B, H, N, D] or a channel-slice concat) and with 2-byte elements, through the
//     TKGeom offsets.
// Built and run by CUDAKernelEmulationTests (the `memory` family's source is included as
// memory_kernels.inc); exit 1 on a failure.
#include "cuda_host.h"
#include "memory_kernels.inc"
#include <cstdio>
#include <random>
#include <string>
#include <vector>

float tk_host_element(uint16_t bits) { return tk_host_half_to_float(bits); }

static int failures = 0;
static void report(const std::string& name, size_t bad, size_t total) {
    if (bad) ++failures;
    std::printf("%-72s %zu/%zu bytes differ %s\n", name.c_str(), bad, total, bad ? "FAIL" : "pass");
}

static std::vector<unsigned char> noise(size_t n, unsigned seed) {
    std::mt19937 rng(seed);
    std::vector<unsigned char> v(n);
    for (auto& x : v) x = (unsigned char)(rng() & 0xFF);
    return v;
}

static size_t differing(const std::vector<unsigned char>& a, const std::vector<unsigned char>& b) {
    size_t bad = 0;
    for (size_t i = 0; i < a.size(); ++i) bad += a[i] != b[i];
    return bad;
}

/* One batched transpose of `es`-byte elements; the destination buffer starts as other noise, so
   bytes outside the written elements must survive as well. */
static void transpose(int es, long batches, long P, long Q, long db, long dp, long sb, long sq) {
    const size_t srcElems = (size_t)((batches - 1) * sb + (P - 1) + (Q - 1) * sq + 1);
    const size_t dstElems = (size_t)((batches - 1) * db + (P - 1) * dp + Q);
    const auto src = noise(srcElems * es, 7 + (unsigned)P);
    auto dst = noise(dstElems * es, 11 + (unsigned)Q), want = dst;
    for (long b = 0; b < batches; ++b)
        for (long p = 0; p < P; ++p)
            for (long q = 0; q < Q; ++q)
                std::memcpy(&want[(size_t)(b * db + p * dp + q) * es], &src[(size_t)(b * sb + p + q * sq) * es], es);
    const int grid = (int)(batches * ((P + 31) / 32) * ((Q + 31) / 32));
    tk_host_launch(grid, 256, [&] { tk_copy_transpose(dst.data(), src.data(), es, P, Q, db, dp, sb, sq); });
    const std::string name = "transpose " + std::to_string(es) + "-byte, " + std::to_string(batches) + " x " + std::to_string(P) + " x "
        + std::to_string(Q) + " (db " + std::to_string(db) + ", dp " + std::to_string(dp) + ", sb " + std::to_string(sb) + ", sq " + std::to_string(sq) + ")";
    report(name, differing(dst, want), dst.size());
}

/* A geometry of two operands (destination, source) over `shape`, as CUDAGeometry writes it. */
static TKGeom geometry(const std::vector<long>& shape, const std::vector<long>& dstStrides, const std::vector<long>& srcStrides) {
    TKGeom g{};
    g.rank = (i64)shape.size();
    g.count = 1;
    for (long s : shape) g.count *= s;
    g.contiguous = 0;
    for (int a = 0; a < TK_MAX_RANK; ++a) g.shape[a] = a < (int)shape.size() ? shape[a] : 1;
    for (int a = 0; a < (int)shape.size(); ++a) { g.strides[0][a] = dstStrides[a]; g.strides[1][a] = srcStrides[a]; }
    return g;
}

/* Head split [B, N, H, D] → [B, H, N, D] of `es`-byte elements, moved in `unit`-byte units
   (D·es a multiple of unit): the geometry in units, as the host's vectorisation makes it. */
static void headSplit(int es, int unit, long B, long N, long H, long D) {
    const long k = unit / es, Du = D / k;
    const auto src = noise((size_t)(B * N * H * D * es), 3 + (unsigned)N);
    std::vector<unsigned char> dst(src.size(), 0), want(src.size(), 0);
    for (long b = 0; b < B; ++b) for (long n = 0; n < N; ++n) for (long h = 0; h < H; ++h)
        std::memcpy(&want[(size_t)(((b * H + h) * N + n) * D) * es], &src[(size_t)(((b * N + n) * H + h) * D) * es], D * es);
    const TKGeom g = geometry({B, H, N, Du}, {H * N * Du, N * Du, Du, 1}, {N * H * Du, Du, H * Du, 1});
    tk_host_launch(4, 256, [&] { tk_copy(dst.data(), 2, src.data(), 2, unit, g); });
    const std::string name = "copy in " + std::to_string(unit) + "-byte units, head split " + std::to_string(B) + "x" + std::to_string(N)
        + "x" + std::to_string(H) + "x" + std::to_string(D) + " of " + std::to_string(es) + "-byte elements";
    report(name, differing(dst, want), dst.size());
}

/* Channels [c0, c0 + C) of a [B, Ctotal, HW] buffer written from a contiguous [B, C, HW] source (a
   concat's slice), in 16-byte units. */
static void channelSlice(long B, long C, long Ctotal, long c0, long HW) {
    const int es = 2, unit = 16;
    const long k = unit / es, HWu = C * HW / k;
    const auto src = noise((size_t)(B * C * HW * es), 5);
    auto dst = noise((size_t)(B * Ctotal * HW * es), 9), want = dst;
    for (long b = 0; b < B; ++b)
        std::memcpy(&want[(size_t)((b * Ctotal + c0) * HW) * es], &src[(size_t)(b * C * HW) * es], C * HW * es);
    const TKGeom g = geometry({B, HWu}, {Ctotal * HW / k, 1}, {HWu, 1});
    unsigned char* base = dst.data() + (size_t)(c0 * HW * es);
    tk_host_launch(3, 256, [&] { tk_copy(base, 2, src.data(), 2, unit, g); });
    report("copy in 16-byte units, channels " + std::to_string(c0) + "..<" + std::to_string(c0 + C) + " of "
           + std::to_string(Ctotal) + " (concat slice)", differing(dst, want), dst.size());
}

int main() {
    // Whole tiles, partial tiles, one batch (rank-2 plans), several.
    transpose(2, 1, 64, 96, 0, 96, 0, 64);
    transpose(2, 3, 70, 45, 70 * 45, 45, 70 * 45, 70);
    transpose(4, 2, 33, 100, 33 * 100, 100, 33 * 100, 33);
    transpose(8, 2, 40, 32, 40 * 32, 32, 40 * 32, 40);
    // The destination a slice of a wider buffer; the source batch wider than its matrix.
    transpose(2, 2, 50, 40, 50 * 64 + 7, 64, 50 * 40 + 13, 50);
    transpose(4, 5, 32, 33, 32 * 40, 40, 32 * 33 * 2, 32);
    headSplit(2, 16, 2, 70, 4, 40);
    headSplit(4, 16, 1, 33, 3, 8);
    headSplit(2, 8, 2, 5, 8, 4);
    headSplit(2, 2, 2, 9, 3, 5);
    channelSlice(2, 24, 64, 16, 36);
    std::printf("%s\n", failures ? "FAILED" : "all passed");
    return failures ? 1 : 0;
}
