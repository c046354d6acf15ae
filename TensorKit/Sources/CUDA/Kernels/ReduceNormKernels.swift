// Row reductions, group/layer normalisation and softmax. One thread block per row (grid-stride
// over rows); partial sums per thread in ACC, combined across the block in double for sums.

extension CUDAKernelSources {
    static let reduceBody = #"""
/* x [rows, inner] contiguous -> out [rows]; op 0 sum, 1 max, 2 min (NaN propagates). */
extern "C" __global__ void tk_reduce_rows(T* out, const T* x, i64 rows, i64 inner, int op) {
    __shared__ double scratch[32];
    for (i64 r = blockIdx.x; r < rows; r += gridDim.x) {
        const T* xr = x + r * inner;
        if (op == 0) {
            double s = 0.0;
            for (i64 i = threadIdx.x; i < inner; i += blockDim.x) s += (double)tk_ld(xr + i);
            s = tk_block_sum(s, scratch);
            if (threadIdx.x == 0) tk_st(out + r, (ACC)s);
        } else {
            double m = op == 1 ? -TK_INF : TK_INF;
            for (i64 i = threadIdx.x; i < inner; i += blockDim.x) {
                double v = (double)tk_ld(xr + i);
                m = op == 1 ? tk_max(m, v) : tk_min(m, v);
            }
            /* min(x) = -max(-x) */
            if (op == 2) m = -m;
            m = tk_block_max(m, scratch);
            if (op == 2) m = -m;
            if (threadIdx.x == 0) tk_st(out + r, (ACC)m);
        }
        __syncthreads();
    }
}
"""#

    static let normBody = #"""
/* Who works on one row: a whole block (WARP false: threads step blockDim.x, sums across the block
   through `scratch`, barriers between rows) or one warp (WARP true: lanes step 32, sums by
   shuffles, no barriers; 8 rows per block of 256 threads). Layer norm takes the warp for rows of at
   most `CUDABackend.layerNormWarpMaximum` values (SD's 320 to 1280, CLIP's 768), where a block per
   row left most of its threads idle and paid three block-wide reductions per row. */
template <bool WARP> struct tk_team {
    __device__ static int first() { return WARP ? (int)(threadIdx.x & 31) : (int)threadIdx.x; }
    __device__ static int step() { return WARP ? 32 : (int)blockDim.x; }
    __device__ static bool leader() { return first() == 0; }
    __device__ static double sum(double v, double* scratch) { return WARP ? tk_warp_sum(v) : tk_block_sum(v, scratch); }
    __device__ static i64 firstRow() { return WARP ? (((i64)blockIdx.x * blockDim.x + threadIdx.x) >> 5) : (i64)blockIdx.x; }
    __device__ static i64 rowStep() { return WARP ? (((i64)gridDim.x * blockDim.x) >> 5) : (i64)gridDim.x; }
    __device__ static void endRow() { if (!WARP) __syncthreads(); }
};

/* Mean and 1/sqrt(var + eps) of n contiguous values, corrected two-pass (as CPUNorm.swift), by the
   team (block) or by the calling warp. */
template <bool WARP = false>
__device__ void tk_moments(const T* x, i64 n, double eps, double* scratch, double* meanOut, double* rstdOut) {
    typedef tk_team<WARP> team;
    double s = 0.0;
    for (i64 i = team::first(); i < n; i += team::step()) s += (double)tk_ld(x + i);
    double first = team::sum(s, scratch) / (double)n;
    ACC m1 = (ACC)first;
    double d1 = 0.0, d2 = 0.0;
    for (i64 i = team::first(); i < n; i += team::step()) {
        double d = (double)(tk_ld(x + i) - m1);
        d1 += d; d2 += d * d;
    }
    d1 = team::sum(d1, scratch);
    d2 = team::sum(d2, scratch);
    double shift = d1 / (double)n;
    double var = d2 / (double)n - shift * shift;
    if (var < 0.0) var = 0.0;
    *meanOut = (double)m1 + shift;
    *rstdOut = 1.0 / sqrt(var + eps);
}

/* a / b, in 32-bit unsigned arithmetic when `small` (both below 2^31): a 64-bit division per
   element costs several times a 32-bit one. */
__device__ __forceinline__ i64 tk_div_small(i64 a, i64 b, int small) {
    return small ? (i64)((u32)a / (u32)b) : a / b;
}

/* SiLU fused into group norm: silu(z) = z·σ(z), and g·silu'(z) = g·σ(z)·(1 + z·(1 - σ(z)))
   (as tk_unary_apply / tk_unary_grad in the elementwise family). */
__device__ __forceinline__ ACC tk_silu(ACC z) { return z / ((ACC)1 + tk_exp(-z)); }
__device__ __forceinline__ ACC tk_silu_grad(ACC g, ACC z) {
    ACC s = (ACC)1 / ((ACC)1 + tk_exp(-z));
    return g * s * ((ACC)1 + z * ((ACC)1 - s));
}

/* Group norm over x [N, C, S] contiguous: each of the N·G `blocks` (n, group) is `size` = C/G·S
   contiguous elements, cut into `splits` chunks of `chunk` elements that separate thread blocks
   handle (job = blk·splits + k), so that a small batch still fills the GPU. Each pass is two
   kernels: one writes every chunk's partial sums in double to part[2·job], the next combines the
   group's partials in a fixed order (deterministic) and sweeps its chunk. */
struct tk_gn_job { i64 blk, lo, hi; };
__device__ __forceinline__ tk_gn_job tk_gn_locate(i64 job, int splits, i64 size, i64 chunk) {
    const i64 blk = job / splits, lo = (job % splits) * chunk;
    return { blk, lo, lo + chunk < size ? lo + chunk : size };
}
/* Whether the group-norm sweeps move TK_VEC elements at a time: chunks, groups and channel planes
   whole vectors (so no vector crosses a chunk, group or channel) and every array aligned. */
__device__ __forceinline__ bool tk_gn_vectors(i64 chunk, i64 size, i64 spatial, const void* p, const void* q, const void* r) {
    return chunk % TK_VEC == 0 && size % TK_VEC == 0 && spatial % TK_VEC == 0 && tk_vec_ok(p) && tk_vec_ok(q) && tk_vec_ok(r);
}

/* Σ over the group's chunks of part[2·job + which], shared out over the block's threads (the same
   order in every block of the group, whatever `splits`). */
__device__ __forceinline__ double tk_gn_total(const double* part, i64 blk, int splits, int which, double* scratch) {
    double s = 0.0;
    for (int k = threadIdx.x; k < splits; k += blockDim.x) s += part[2 * (blk * splits + k) + which];
    return tk_block_sum(s, scratch);
}

/* Forward, first kernel: a chunk's Σ(x − p) and Σ(x − p)², p being its group's first element (a
   shift that keeps the variance accurate when |mean| ≫ std, as the two-pass formula does). */
extern "C" __global__ void tk_group_norm_partial(double* part, const T* x, i64 blocks, i64 size, i64 chunk, int splits) {
    __shared__ double scratch[32];
    const bool vec = tk_gn_vectors(chunk, size, TK_VEC, x, x, x);
    for (i64 job = blockIdx.x; job < blocks * splits; job += gridDim.x) {
        const tk_gn_job at = tk_gn_locate(job, splits, size, chunk);
        const T* xb = x + at.blk * size;
        const ACC p = tk_ld(xb);
        double s1 = 0.0, s2 = 0.0;
        if (vec) {
            for (i64 v = at.lo / TK_VEC + threadIdx.x; v < at.hi / TK_VEC; v += blockDim.x) {
                const tk_vec xv = ((const tk_vec*)xb)[v];
#pragma unroll
                for (int e = 0; e < TK_VEC; ++e) {
                    double d = (double)(tk_ld(&xv.e[e]) - p);
                    s1 += d; s2 += d * d;
                }
            }
        } else {
            for (i64 i = at.lo + threadIdx.x; i < at.hi; i += blockDim.x) {
                double d = (double)(tk_ld(xb + i) - p);
                s1 += d; s2 += d * d;
            }
        }
        s1 = tk_block_sum(s1, scratch);
        s2 = tk_block_sum(s2, scratch);
        if (threadIdx.x == 0) { part[2 * job] = s1; part[2 * job + 1] = s2; }
        __syncthreads();
    }
}

/* Forward, second kernel: mean/rstd [N·G] (written by each group's first chunk) and the output of
   one chunk. With `silu` the output is silu((x-μ)·r·w + b). `small`: every index is below 2^31. */
extern "C" __global__ void tk_group_norm_forward(T* y, ACC* meanOut, ACC* rstdOut, const T* x, const T* w, const T* b,
                                                 const double* part, i64 blocks, i64 channels, i64 groups, i64 spatial,
                                                 i64 chunk, int splits, double eps, int silu, int small) {
    __shared__ double scratch[32];
    i64 per = channels / groups, size = per * spatial;
    const bool vec = tk_gn_vectors(chunk, size, spatial, x, y, x);
    for (i64 job = blockIdx.x; job < blocks * splits; job += gridDim.x) {
        const tk_gn_job at = tk_gn_locate(job, splits, size, chunk);
        const T* xb = x + at.blk * size;
        T* yb = y + at.blk * size;
        const double n = (double)size, shift = tk_gn_total(part, at.blk, splits, 0, scratch) / n;
        double var = tk_gn_total(part, at.blk, splits, 1, scratch) / n - shift * shift;
        if (var < 0.0) var = 0.0;
        ACC m = (ACC)((double)tk_ld(xb) + shift), r = (ACC)(1.0 / sqrt(var + eps));
        if (at.lo == 0 && threadIdx.x == 0) { meanOut[at.blk] = m; rstdOut[at.blk] = r; }
        i64 c0 = (at.blk % groups) * per;
        if (vec) {
            for (i64 v = at.lo / TK_VEC + threadIdx.x; v < at.hi / TK_VEC; v += blockDim.x) {
                const i64 c = c0 + tk_div_small(v * TK_VEC, spatial, small);
                const ACC scale = w ? r * tk_ld(w + c) : r;
                const ACC shiftc = b ? tk_ld(b + c) : (ACC)0;
                const tk_vec xv = ((const tk_vec*)xb)[v];
                tk_vec out;
#pragma unroll
                for (int e = 0; e < TK_VEC; ++e) {
                    const ACC z = (tk_ld(&xv.e[e]) - m) * scale + shiftc;
                    tk_st(&out.e[e], silu ? tk_silu(z) : z);
                }
                ((tk_vec*)yb)[v] = out;
            }
            continue;
        }
        for (i64 i = at.lo + threadIdx.x; i < at.hi; i += blockDim.x) {
            i64 c = c0 + tk_div_small(i, spatial, small);
            ACC scale = w ? r * tk_ld(w + c) : r;
            ACC shiftc = b ? tk_ld(b + c) : (ACC)0;
            ACC z = (tk_ld(xb + i) - m) * scale + shiftc;
            tk_st(yb + i, silu ? tk_silu(z) : z);
        }
    }
}

/* The gradient reaching the normalisation's output: g itself, or with `silu` g·silu'(z) for the
   pre-activation z = (x-μ)·r·w + b recomputed exactly as the forward computed it. */
__device__ __forceinline__ ACC tk_group_norm_upstream(ACC g, ACC xc, ACC r, const T* w, const T* b, i64 c, int silu) {
    if (!silu) return g;
    ACC scale = w ? r * tk_ld(w + c) : r;
    return tk_silu_grad(g, xc * scale + (b ? tk_ld(b + c) : (ACC)0));
}

/* Element i of group blk in the backward sweeps: its channel's weight (1 without), x − μ and the
   gradient reaching the normalisation's output. */
struct tk_gn_grad { ACC wc, xc, g; };
__device__ __forceinline__ tk_gn_grad tk_gn_grad_at(const T* go, const T* x, const T* w, const T* b, ACC mean, ACC rstd,
                                                    i64 blk, i64 i, i64 groups, i64 per, i64 spatial, int silu, int small) {
    const i64 at = blk * per * spatial + i, c = (blk % groups) * per + tk_div_small(i, spatial, small);
    const ACC xc = tk_ld(x + at) - mean;
    return { w ? tk_ld(w + c) : (ACC)1, xc, tk_group_norm_upstream(tk_ld(go + at), xc, rstd, w, b, c, silu) };
}

/* Vector v (elements v·TK_VEC …, one channel c) of group blk in the backward sweeps: x and the
   output gradient as stored, and the channel's weight (1 without). */
struct tk_gn_gradv { tk_vec x, g; ACC wc; i64 c; };
__device__ __forceinline__ tk_gn_gradv tk_gn_grad_vector(const T* go, const T* x, const T* w, i64 blk, i64 v,
                                                         i64 groups, i64 per, i64 spatial, int small) {
    const i64 base = blk * per * spatial, c = (blk % groups) * per + tk_div_small(v * TK_VEC, spatial, small);
    return { ((const tk_vec*)(x + base))[v], ((const tk_vec*)(go + base))[v], w ? tk_ld(w + c) : (ACC)1, c };
}

/* dx for group norm: with dŷ = g·w, dx = r·dŷ - r·mean(dŷ) - r³·mean(dŷ·(x-μ))·(x-μ); with `silu`,
   g is first multiplied by silu'(z) (recomputed in both sweeps, nothing stored). First kernel: a
   chunk's Σ dŷ and Σ dŷ·(x-μ); second: dx over a chunk. Chunks as tk_group_norm_partial's. */
extern "C" __global__ void tk_group_norm_backward_partial(double* part, const T* go, const T* x, const T* w, const T* b,
                                                          const ACC* meanIn, const ACC* rstdIn, i64 blocks, i64 channels,
                                                          i64 groups, i64 spatial, i64 chunk, int splits, int silu, int small) {
    __shared__ double scratch[32];
    i64 per = channels / groups, size = per * spatial;
    const bool vec = tk_gn_vectors(chunk, size, spatial, go, x, x);
    for (i64 job = blockIdx.x; job < blocks * splits; job += gridDim.x) {
        const tk_gn_job at = tk_gn_locate(job, splits, size, chunk);
        const ACC m = meanIn[at.blk], ra = rstdIn[at.blk];
        double s1 = 0.0, s2 = 0.0;
        if (vec) {
            for (i64 v = at.lo / TK_VEC + threadIdx.x; v < at.hi / TK_VEC; v += blockDim.x) {
                const tk_gn_gradv e = tk_gn_grad_vector(go, x, w, at.blk, v, groups, per, spatial, small);
#pragma unroll
                for (int k = 0; k < TK_VEC; ++k) {
                    const ACC xc = tk_ld(&e.x.e[k]) - m;
                    const ACC gv = tk_group_norm_upstream(tk_ld(&e.g.e[k]), xc, ra, w, b, e.c, silu) * e.wc;
                    s1 += (double)gv;
                    s2 += (double)(gv * xc);
                }
            }
        } else {
            for (i64 i = at.lo + threadIdx.x; i < at.hi; i += blockDim.x) {
                const tk_gn_grad e = tk_gn_grad_at(go, x, w, b, m, ra, at.blk, i, groups, per, spatial, silu, small);
                ACC gv = e.g * e.wc;
                s1 += (double)gv;
                s2 += (double)(gv * e.xc);
            }
        }
        s1 = tk_block_sum(s1, scratch);
        s2 = tk_block_sum(s2, scratch);
        if (threadIdx.x == 0) { part[2 * job] = s1; part[2 * job + 1] = s2; }
        __syncthreads();
    }
}

extern "C" __global__ void tk_group_norm_backward(T* dx, const T* go, const T* x, const T* w, const T* b,
                                                  const ACC* meanIn, const ACC* rstdIn, const double* part,
                                                  i64 blocks, i64 channels, i64 groups, i64 spatial,
                                                  i64 chunk, int splits, int silu, int small) {
    __shared__ double scratch[32];
    i64 per = channels / groups, size = per * spatial;
    const bool vec = tk_gn_vectors(chunk, size, spatial, go, x, dx);
    for (i64 job = blockIdx.x; job < blocks * splits; job += gridDim.x) {
        const tk_gn_job at = tk_gn_locate(job, splits, size, chunk);
        T* db = dx + at.blk * size;
        const ACC m = meanIn[at.blk], ra = rstdIn[at.blk];
        double r = (double)ra, count = (double)size;
        ACC bco = (ACC)(-r * r * r * tk_gn_total(part, at.blk, splits, 1, scratch) / count);
        ACC cco = (ACC)(-r * tk_gn_total(part, at.blk, splits, 0, scratch) / count);
        if (vec) {
            for (i64 v = at.lo / TK_VEC + threadIdx.x; v < at.hi / TK_VEC; v += blockDim.x) {
                const tk_gn_gradv e = tk_gn_grad_vector(go, x, w, at.blk, v, groups, per, spatial, small);
                tk_vec out;
#pragma unroll
                for (int k = 0; k < TK_VEC; ++k) {
                    const ACC xc = tk_ld(&e.x.e[k]) - m;
                    const ACC g = tk_group_norm_upstream(tk_ld(&e.g.e[k]), xc, ra, w, b, e.c, silu);
                    tk_st(&out.e[k], g * (ACC)(r * (double)e.wc) + xc * bco + cco);
                }
                ((tk_vec*)db)[v] = out;
            }
            continue;
        }
        for (i64 i = at.lo + threadIdx.x; i < at.hi; i += blockDim.x) {
            const tk_gn_grad e = tk_gn_grad_at(go, x, w, b, m, ra, at.blk, i, groups, per, spatial, silu, small);
            tk_st(db + i, e.g * (ACC)(r * (double)e.wc) + e.xc * bco + cco);
        }
    }
}

/* dw[c] = Σ_n Σ_s g·(x-μ)·r and db[c] = Σ_n Σ_s g (g times silu'(z) with `silu`): one block per
   channel, its n·S elements in a fixed order. `small`: every index is below 2^31. */
extern "C" __global__ void tk_group_norm_params(T* dw, T* dbias, const T* go, const T* x, const T* w, const T* b,
                                                const ACC* meanIn, const ACC* rstdIn,
                                                i64 n, i64 channels, i64 groups, i64 spatial, int silu, int small) {
    __shared__ double scratch[32];
    i64 per = channels / groups;
    for (i64 c = blockIdx.x; c < channels; c += gridDim.x) {
        i64 g = c / per;
        double sw = 0.0, sb = 0.0;
        for (i64 e = threadIdx.x; e < n * spatial; e += blockDim.x) {
            i64 ni = tk_div_small(e, spatial, small), s = e - ni * spatial;
            i64 blk = ni * groups + g;
            i64 at = (ni * channels + c) * spatial + s;
            ACC r = rstdIn[blk], xc = tk_ld(x + at) - meanIn[blk];
            ACC gv = tk_group_norm_upstream(tk_ld(go + at), xc, r, w, b, c, silu);
            sw += (double)(gv * xc) * (double)r;
            sb += (double)gv;
        }
        sw = tk_block_sum(sw, scratch);
        sb = tk_block_sum(sb, scratch);
        if (threadIdx.x == 0) { tk_st(dw + c, (ACC)sw); tk_st(dbias + c, (ACC)sb); }
        __syncthreads();
    }
}

/* x [rows, count] contiguous, a team (block or warp, see tk_team) per row; w/b [count] optional. */
template <bool WARP>
__device__ __forceinline__ void tk_layer_norm_forward_rows(T* y, ACC* meanOut, ACC* rstdOut, const T* x, const T* w, const T* b,
                                                           i64 rows, i64 count, double eps, double* scratch) {
    typedef tk_team<WARP> team;
    for (i64 row = team::firstRow(); row < rows; row += team::rowStep()) {
        const T* xr = x + row * count;
        T* yr = y + row * count;
        double mean, rstd;
        tk_moments<WARP>(xr, count, eps, scratch, &mean, &rstd);
        ACC m = (ACC)mean, r = (ACC)rstd;
        if (team::leader()) { meanOut[row] = m; rstdOut[row] = r; }
        for (i64 i = team::first(); i < count; i += team::step()) {
            ACC v = (tk_ld(xr + i) - m) * r;
            if (w) v *= tk_ld(w + i);
            if (b) v += tk_ld(b + i);
            tk_st(yr + i, v);
        }
        team::endRow();
    }
}

template <bool WARP>
__device__ __forceinline__ void tk_layer_norm_backward_rows(T* dx, const T* go, const T* x, const T* w, const ACC* meanIn,
                                                            const ACC* rstdIn, i64 rows, i64 count, double* scratch) {
    typedef tk_team<WARP> team;
    for (i64 row = team::firstRow(); row < rows; row += team::rowStep()) {
        const T* gr = go + row * count;
        const T* xr = x + row * count;
        T* dr = dx + row * count;
        ACC m = meanIn[row];
        double r = (double)rstdIn[row];
        double s1 = 0.0, s2 = 0.0;
        for (i64 i = team::first(); i < count; i += team::step()) {
            ACC gv = tk_ld(gr + i) * (w ? tk_ld(w + i) : (ACC)1);
            s1 += (double)gv;
            s2 += (double)(gv * (tk_ld(xr + i) - m));
        }
        s1 = team::sum(s1, scratch);
        s2 = team::sum(s2, scratch);
        double n = (double)count;
        ACC bco = (ACC)(-r * r * r * s2 / n), cco = (ACC)(-r * s1 / n);
        for (i64 i = team::first(); i < count; i += team::step()) {
            ACC wv = w ? tk_ld(w + i) : (ACC)1;
            tk_st(dr + i, tk_ld(gr + i) * (ACC)(r * (double)wv) + (tk_ld(xr + i) - m) * bco + cco);
        }
        team::endRow();
    }
}

/* A block per row (wide rows). */
extern "C" __global__ void tk_layer_norm_forward(T* y, ACC* meanOut, ACC* rstdOut, const T* x, const T* w, const T* b,
                                                 i64 rows, i64 count, double eps) {
    __shared__ double scratch[32];
    tk_layer_norm_forward_rows<false>(y, meanOut, rstdOut, x, w, b, rows, count, eps, scratch);
}
extern "C" __global__ void tk_layer_norm_backward(T* dx, const T* go, const T* x, const T* w, const ACC* meanIn, const ACC* rstdIn,
                                                  i64 rows, i64 count) {
    __shared__ double scratch[32];
    tk_layer_norm_backward_rows<false>(dx, go, x, w, meanIn, rstdIn, rows, count, scratch);
}

/* A warp per row (rows of at most CUDABackend.layerNormWarpMaximum values). */
extern "C" __global__ void tk_layer_norm_forward_warp(T* y, ACC* meanOut, ACC* rstdOut, const T* x, const T* w, const T* b,
                                                      i64 rows, i64 count, double eps) {
    tk_layer_norm_forward_rows<true>(y, meanOut, rstdOut, x, w, b, rows, count, eps, 0);
}
extern "C" __global__ void tk_layer_norm_backward_warp(T* dx, const T* go, const T* x, const T* w, const ACC* meanIn,
                                                       const ACC* rstdIn, i64 rows, i64 count) {
    tk_layer_norm_backward_rows<true>(dx, go, x, w, meanIn, rstdIn, rows, count, 0);
}

/* Layer norm's dw[j] = Σ_rows g·(x-μ)·r and db[j] = Σ_rows g, in two deterministic passes (no
   atomics). Pass 1: block (tile, chunk) of 256 threads covers columns tile·32 … +31 of rows
   chunk·chunkRows … +chunkRows-1; thread t takes column t % 32 (a warp reads 32 consecutive values
   of a row) and every 8th row from t / 32, in double; the 8 row lanes are added in order and
   written to partial [2, chunks, count] (dw partials, then db partials). */
extern "C" __global__ void tk_layer_norm_params_partial(double* partial, const T* go, const T* x,
                                                        const ACC* meanIn, const ACC* rstdIn,
                                                        i64 rows, i64 count, i64 chunkRows, i64 chunks) {
    __shared__ double sw[8][32], sb[8][32];
    const int lane = threadIdx.x & 31, rowLane = threadIdx.x >> 5;
    const i64 tiles = (count + 31) / 32;
    for (i64 blk = blockIdx.x; blk < tiles * chunks; blk += gridDim.x) {
        const i64 tile = blk % tiles, chunk = blk / tiles;
        const i64 j = tile * 32 + lane;
        const i64 r0 = chunk * chunkRows, r1 = r0 + chunkRows < rows ? r0 + chunkRows : rows;
        double aw = 0.0, ab = 0.0;
        if (j < count) {
            for (i64 row = r0 + rowLane; row < r1; row += 8) {
                ACC gv = tk_ld(go + row * count + j);
                aw += (double)(gv * (tk_ld(x + row * count + j) - meanIn[row])) * (double)rstdIn[row];
                ab += (double)gv;
            }
        }
        sw[rowLane][lane] = aw;
        sb[rowLane][lane] = ab;
        __syncthreads();
        if (rowLane == 0 && j < count) {
            double tw = 0.0, tb = 0.0;
            for (int k = 0; k < 8; ++k) { tw += sw[k][lane]; tb += sb[k][lane]; }
            partial[chunk * count + j] = tw;
            partial[(chunks + chunk) * count + j] = tb;
        }
        __syncthreads();
    }
}

/* Pass 2: dw[j], db[j] = the chunks' partials of column j added in chunk order. */
extern "C" __global__ void tk_layer_norm_params_reduce(T* dw, T* dbias, const double* partial, i64 count, i64 chunks) {
    TK_GRID_LOOP(j, count) {
        double sw = 0.0, sb = 0.0;
        for (i64 k = 0; k < chunks; ++k) {
            sw += partial[k * count + j];
            sb += partial[(chunks + k) * count + j];
        }
        tk_st(dw + j, (ACC)sw);
        tk_st(dbias + j, (ACC)sb);
    }
}
"""#

    static let softmaxBody = #"""
/* Softmax / log-softmax over rows of `length` (contiguous), one block per row. */
extern "C" __global__ void tk_softmax_forward(T* y, const T* x, i64 rows, i64 length, int logMode) {
    __shared__ ACC mscratch[32];
    __shared__ double scratch[32];
    for (i64 row = blockIdx.x; row < rows; row += gridDim.x) {
        const T* xr = x + row * length;
        T* yr = y + row * length;
        ACC m = -TK_INF;
        for (i64 i = threadIdx.x; i < length; i += blockDim.x) m = tk_max(m, tk_ld(xr + i));
        m = tk_block_max(m, mscratch);
        double s = 0.0;
        for (i64 i = threadIdx.x; i < length; i += blockDim.x) s += (double)tk_exp(tk_ld(xr + i) - m);
        s = tk_block_sum(s, scratch);
        if (logMode) {
            ACC c = m + (ACC)log(s);
            for (i64 i = threadIdx.x; i < length; i += blockDim.x) tk_st(yr + i, tk_ld(xr + i) - c);
        } else {
            ACC inv = (ACC)(1.0 / s);
            for (i64 i = threadIdx.x; i < length; i += blockDim.x) tk_st(yr + i, tk_exp(tk_ld(xr + i) - m) * inv);
        }
        __syncthreads();
    }
}

/* softmax: dx = y·(g - Σ g·y); log-softmax: dx = g - exp(y)·Σ g. */
extern "C" __global__ void tk_softmax_backward(T* dx, const T* y, const T* go, i64 rows, i64 length, int logMode) {
    __shared__ double scratch[32];
    for (i64 row = blockIdx.x; row < rows; row += gridDim.x) {
        const T* yr = y + row * length;
        const T* gr = go + row * length;
        T* dr = dx + row * length;
        double s = 0.0;
        for (i64 i = threadIdx.x; i < length; i += blockDim.x)
            s += logMode ? (double)tk_ld(gr + i) : (double)(tk_ld(gr + i) * tk_ld(yr + i));
        ACC total = (ACC)tk_block_sum(s, scratch);
        for (i64 i = threadIdx.x; i < length; i += blockDim.x) {
            ACC yv = tk_ld(yr + i), gv = tk_ld(gr + i);
            tk_st(dr + i, logMode ? gv - tk_exp(yv) * total : yv * (gv - total));
        }
        __syncthreads();
    }
}
"""#
}
