// Convolution on the tensor cores for float16/bfloat16 (implicit GEMM): out [n, o, oh, ow] (NCHW) =
// W · im2col(x) + bias + residual, without writing im2col's columns. The GEMM is M = o output
// channels × N = n·oh·ow output pixels × K = kh·kw·c; its B operand is read straight from the input
// in channels-last layout, x [n, h, w, c], where each window tap of a pixel is c contiguous values
// (the host makes that copy: one pass over the input, where im2col writes kh·kw of them and the GEMM
// reads those again). The weights come as [o, kh, kw, c], so K runs tap by tap, channels fastest.
//
// A block of 8 warps computes a 128 × 128 output tile (warp tiles 64 × 32 of mma.sync.m16n8k16 with
// float32 accumulators) over K in steps of 32: both 128 × 32 operand tiles are copied with 16-byte
// cp.async (eight channels of one tap; zero-filled outside the image or past the ends) into shared
// memory with a pitch of 40 halves (ldmatrix rows 80 bytes apart: no bank conflicts), double-
// buffered so that step k + 1's copies overlap step k's mma. The epilogue adds the bias and the
// residual in float32 and rounds once.
//
// With `flip` the kernel reads tap kh·kw − 1 − t of the weights where it would read tap t: a
// stride-1 convolution's input gradient is this convolution of the output gradient with the weights
// transposed to [c, kh, kw, o] and rotated by 180°, padding kh − 1 − ph (CUDABackend+NN.swift).
//
// Needs c % 8 == 0 (16-byte chunks never straddle a tap) and sm_80+; other convolutions take the
// im2col path. Only the float16/bfloat16 instantiations define a kernel body.

extension CUDAKernelSources {
    static let convMMAKernels = ["tk_conv_mma"]

    static var convMMABody: String { tensorCoreDevice + convMMADevice }

    static let convMMADevice = #"""
/* Geometry: input [n, h, w, c] (channels last), weights [o, kh, kw, c], output [n, o, oh, ow]. */
struct TKConvMMA {
    i64 n, c, h, w, kh, kw, oh, ow;
    i64 sh, sw, ph, pw, dh, dw, o;
};

#if TK_DTYPE == 2 || TK_DTYPE == 3
#define TK_CM_BM 128
#define TK_CM_BN 128
#define TK_CM_BK 32
#define TK_CM_PITCH 40

struct tk_cm_tiles {
    u16 a[2][TK_CM_BM * TK_CM_PITCH];
    u16 b[2][TK_CM_BN * TK_CM_PITCH];
};

__device__ __forceinline__ void tk_conv_mma_body(T* out, const T* x, const T* w, const T* bias, const T* residual,
                                                 const TKConvMMA& g, int flip) {
    __shared__ __align__(16) tk_cm_tiles sm;
    const int tid = threadIdx.x, warp = tid >> 5, lane = tid & 31, gq = lane >> 2, tq = lane & 3;
    const int wm = warp & 1, wn = warp >> 1;  /* this warp's 64 × 32 part of the block tile */
    const int C = (int)g.c, KW = (int)g.kw, KH = (int)g.kh, H = (int)g.h, W = (int)g.w;
    const int K = KH * KW * C, taps = KH * KW;
    const i64 L = g.oh * g.ow, P = g.n * L;
    const i64 mTiles = (g.o + TK_CM_BM - 1) / TK_CM_BM;
    const i64 m0 = ((i64)blockIdx.x % mTiles) * TK_CM_BM, p0 = ((i64)blockIdx.x / mTiles) * TK_CM_BN;

    /* This thread copies rows tid / 4 and tid / 4 + 64 of both tiles, k columns kc … kc + 7 of
       each step: weight rows m0 + row, and the pixels p0 + row (image, window corner iy0, ix0). */
    const int kc = 8 * (tid & 3);
    int row[2], iy0[2], ix0[2];
    const u16* wrow[2];
    const u16* image[2];
    bool pixel[2];
#pragma unroll
    for (int j = 0; j < 2; ++j) {
        row[j] = (tid >> 2) + 64 * j;
        const i64 m = m0 + row[j], p = p0 + row[j];
        wrow[j] = m < g.o ? (const u16*)w + m * K : nullptr;
        pixel[j] = p < P;
        const i64 n = pixel[j] ? p / L : 0, q = pixel[j] ? p - n * L : 0, oy = q / g.ow, ox = q - oy * g.ow;
        image[j] = (const u16*)x + n * g.h * g.w * g.c;
        iy0[j] = (int)(oy * g.sh - g.ph);
        ix0[j] = (int)(ox * g.sw - g.pw);
    }
    /* The window tap (ky, kx) and channel ci of column kc at the current step, advanced by 32
       columns a step (steps come in order: tk_fa_advance stages 0, 1, 2, …). */
    int ky, kx, ci;
    {
        const int tap = kc / C;
        ci = kc - tap * C; ky = tap / KW; kx = tap - ky * KW;
    }
    const int dh = (int)g.dh, dw = (int)g.dw;
    auto stage = [&](int kt, int buf) {
        if (kt > 0) {
            ci += TK_CM_BK;
            while (ci >= C) { ci -= C; if (++kx == KW) { kx = 0; ++ky; } }
        }
        const bool kin = ky < KH;
        const int tap = ky * KW + kx;
        const int wk = flip ? (taps - 1 - tap) * C + ci : tap * C + ci;
#pragma unroll
        for (int j = 0; j < 2; ++j) {
            const bool wok = kin && wrow[j] != nullptr;
            tk_fa_copy16(sm.a[buf] + row[j] * TK_CM_PITCH + kc, wok ? wrow[j] + wk : (const u16*)w, wok);
            const int iy = iy0[j] + ky * dh, ix = ix0[j] + kx * dw;
            const bool xok = kin && pixel[j] && iy >= 0 && iy < H && ix >= 0 && ix < W;
            tk_fa_copy16(sm.b[buf] + row[j] * TK_CM_PITCH + kc,
                         xok ? image[j] + ((i64)iy * W + ix) * C + ci : (const u16*)x, xok);
        }
    };

    float acc[4][4][4];
#pragma unroll
    for (int mt = 0; mt < 4; ++mt)
#pragma unroll
        for (int nt = 0; nt < 4; ++nt) acc[mt][nt][0] = acc[mt][nt][1] = acc[mt][nt][2] = acc[mt][nt][3] = 0.f;

    const int tiles = (K + TK_CM_BK - 1) / TK_CM_BK;
    /* ldmatrix row addresses: A (row-major m × k) matrices {rows 0-7, 8-15} × {k 0-7, 8-15} in
       fragment order; B (stored n × k) matrices {k 0-7, 8-15} of n tile 0, then of n tile 1. */
    const int aRow = wm * 64 + ((lane >> 3) & 1) * 8 + (lane & 7), aCol = (lane >> 4) * 8;
    const int bRow = wn * 32 + (lane >> 4) * 8 + (lane & 7), bCol = ((lane >> 3) & 1) * 8;
    for (int it = 0; it < tiles; ++it) {
        const int buf = tk_fa_advance<2, true>(it, tiles, stage);
        const u16* sa = sm.a[buf];
        const u16* sb = sm.b[buf];
#pragma unroll
        for (int ks = 0; ks < TK_CM_BK / 16; ++ks) {
            u32 a[4][4];
#pragma unroll
            for (int mt = 0; mt < 4; ++mt) tk_fa_ldsm(a[mt], sa + (aRow + mt * 16) * TK_CM_PITCH + ks * 16 + aCol);
#pragma unroll
            for (int np = 0; np < 2; ++np) {
                u32 b[4];
                tk_fa_ldsm(b, sb + (bRow + np * 16) * TK_CM_PITCH + ks * 16 + bCol);
#pragma unroll
                for (int mt = 0; mt < 4; ++mt) {
                    tk_fa_mma(acc[mt][2 * np], a[mt], b[0], b[1]);
                    tk_fa_mma(acc[mt][2 * np + 1], a[mt], b[2], b[3]);
                }
            }
        }
        __syncthreads();
    }

    /* C fragment (mt, nt): rows (channels) g and g + 8, columns (pixels) 2t and 2t + 1. */
    i64 at[4][2];
    bool colOk[4][2];
#pragma unroll
    for (int nt = 0; nt < 4; ++nt)
#pragma unroll
        for (int e = 0; e < 2; ++e) {
            const i64 p = p0 + wn * 32 + nt * 8 + 2 * tq + e;
            colOk[nt][e] = p < P;
            const i64 n = colOk[nt][e] ? p / L : 0;
            at[nt][e] = n * g.o * L + (p - n * L);
        }
#pragma unroll
    for (int mt = 0; mt < 4; ++mt)
#pragma unroll
        for (int h = 0; h < 2; ++h) {
            const i64 co = m0 + wm * 64 + mt * 16 + gq + 8 * h;
            if (co >= g.o) continue;
            const float b = bias ? (float)tk_ld(bias + co) : 0.f;
#pragma unroll
            for (int nt = 0; nt < 4; ++nt)
#pragma unroll
                for (int e = 0; e < 2; ++e) {
                    if (!colOk[nt][e]) continue;
                    const i64 i = at[nt][e] + co * L;
                    float v = acc[mt][nt][2 * h + e] + b;
                    if (residual) v += (float)tk_ld(residual + i);
                    tk_st(out + i, v);
                }
        }
}
#define TK_CM_BODY(...) __VA_ARGS__;
#else
/* float32/float64: the kernel exists (one module per dtype) but is never launched. */
#define TK_CM_BODY(...)
#endif

extern "C" __global__ void tk_conv_mma(T* out, const T* x, const T* w, const T* bias,
        const T* residual, TKConvMMA g, int flip) {
    TK_CM_BODY(tk_conv_mma_body(out, x, w, bias, residual, g, flip))
}
"""#
}
