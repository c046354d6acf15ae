// Fused scaled-dot-product attention (FlashAttention-style): no N×N score matrix is ever stored.
//
// Forward: a block of R warps handles R query rows of one (batch, head), one row per warp. Keys
// and values stream through shared memory in tiles of TK ≤ 32 rows; lane j scores key j of the
// tile, the warp updates a running max / sum (online softmax) and lanes accumulate the output
// over their slice of the value dimension. Saves the per-row log-sum-exp.
//
// Backward (recompute from the log-sum-exp): rowdot gives D_i = dO_i·O_i; the dQ kernel mirrors
// the forward (warp per query row, key tiles), the dK/dV kernel swaps roles (warp per key row,
// query tiles). No atomics, so results are deterministic.
//
// Shared-memory rows that lanes read one-per-lane use an odd pitch, so they hit 32 distinct banks.
// The causal mask is PyTorch's top-left aligned `is_causal`: query i sees keys j ≤ i.
// Per-lane accumulators cap d and dv at 32·TK_ATT_MAXV = 384.

extension CUDAKernelSources {
    static let attentionBody = #"""
#define TK_ATT_MAXV 12
#define TK_FULL 0xffffffffu

__device__ __forceinline__ int tk_odd(int n) { return n | 1; }

/* q [BH, nq, d], k [BH, nk, d], v [BH, nk, dv] contiguous; out [BH, nq, dv]; lse [BH, nq] (ACC).
   Grid: BH · ceil(nq / R) blocks of 32·R threads. Shared: TK·odd(d) + TK·dv + R·d ACCs. */
extern "C" __global__ void tk_attention_forward(T* out, ACC* lse, const T* q, const T* k, const T* v,
                                                i64 nq, i64 nk, int d, int dv, double scale, int causal, int tileKeys) {
    extern __shared__ __align__(16) unsigned char tk_smem[];
    const int R = blockDim.x >> 5, warp = threadIdx.x >> 5, lane = threadIdx.x & 31;
    const int dp = tk_odd(d);
    ACC* Ks = (ACC*)tk_smem;
    ACC* Vs = Ks + tileKeys * dp;
    ACC* Qs = Vs + tileKeys * dv;
    const i64 rowBlocks = (nq + R - 1) / R;
    const i64 bh = blockIdx.x / rowBlocks, firstRow = (blockIdx.x % rowBlocks) * R;
    const i64 row = firstRow + warp;
    const bool active = row < nq;
    const T* kh = k + bh * nk * d;
    const T* vh = v + bh * nk * dv;
    if (active) for (int c = lane; c < d; c += 32) Qs[warp * d + c] = tk_ld(q + (bh * nq + row) * d + c) * (ACC)scale;

    ACC m = -TK_INF, l = (ACC)0;
    ACC acc[TK_ATT_MAXV];
#pragma unroll
    for (int i = 0; i < TK_ATT_MAXV; ++i) acc[i] = (ACC)0;

    i64 keyEnd = nk;
    if (causal) { i64 last = firstRow + R; keyEnd = last < nk ? last : nk; }
    for (i64 j0 = 0; j0 < keyEnd; j0 += tileKeys) {
        const int tk = (int)((keyEnd - j0) < tileKeys ? (keyEnd - j0) : tileKeys);
        __syncthreads();
        for (int e = threadIdx.x; e < tk * d; e += blockDim.x) Ks[(e / d) * dp + e % d] = tk_ld(kh + (j0 + e / d) * d + e % d);
        for (int e = threadIdx.x; e < tk * dv; e += blockDim.x) Vs[e] = tk_ld(vh + j0 * dv + e);
        __syncthreads();
        if (!active) continue;
        const bool valid = lane < tk && (!causal || j0 + lane <= row);
        ACC s = -TK_INF;
        if (valid) {
            ACC dot = (ACC)0;
            for (int c = 0; c < d; ++c) dot += Qs[warp * d + c] * Ks[lane * dp + c];
            s = dot;
        }
        const ACC newM = tk_max(m, tk_warp_max(s));
        const ACC p = valid ? tk_exp(s - newM) : (ACC)0;
        const ACC corr = (m == -TK_INF) ? (ACC)0 : tk_exp(m - newM);
        l = l * corr + tk_warp_sum(p);
#pragma unroll
        for (int i = 0; i < TK_ATT_MAXV; ++i) acc[i] *= corr;
        for (int jj = 0; jj < tk; ++jj) {
            const ACC pj = __shfl_sync(TK_FULL, p, jj);
#pragma unroll
            for (int i = 0; i < TK_ATT_MAXV; ++i) {
                const int c = lane + 32 * i;
                if (c < dv) acc[i] += pj * Vs[jj * dv + c];
            }
        }
        m = newM;
    }
    if (!active) return;
    const ACC inv = l > (ACC)0 ? (ACC)1 / l : (ACC)0;
#pragma unroll
    for (int i = 0; i < TK_ATT_MAXV; ++i) {
        const int c = lane + 32 * i;
        if (c < dv) tk_st(out + (bh * nq + row) * dv + c, acc[i] * inv);
    }
    if (lane == 0) lse[bh * nq + row] = l == (ACC)0 ? -TK_INF : m + tk_log(l);
}

/* delta[i] = Σ_c dO[i, c]·O[i, c], one warp per row (rows = BH·nq). */
extern "C" __global__ void tk_attention_backward_rowdot(ACC* delta, const T* o, const T* go, i64 rows, int dv) {
    const int lane = threadIdx.x & 31;
    const i64 warps = ((i64)gridDim.x * blockDim.x) >> 5;
    for (i64 row = ((i64)blockIdx.x * blockDim.x + threadIdx.x) >> 5; row < rows; row += warps) {
        ACC s = (ACC)0;
        for (int c = lane; c < dv; c += 32) s += tk_ld(o + row * dv + c) * tk_ld(go + row * dv + c);
        s = tk_warp_sum(s);
        if (lane == 0) delta[row] = s;
    }
}

/* dQ_i = scale · Σ_j P_ij (dO_i·V_j - D_i) K_j. Warp per query row, key tiles in shared memory.
   Shared: TK·odd(d) + TK·odd(dv) + R·d + R·dv ACCs. */
extern "C" __global__ void tk_attention_backward_dq(T* dq, const T* q, const T* k, const T* v, const T* go,
                                                    const ACC* lse, const ACC* delta,
                                                    i64 nq, i64 nk, int d, int dv, double scale, int causal, int tileKeys) {
    extern __shared__ __align__(16) unsigned char tk_smem[];
    const int R = blockDim.x >> 5, warp = threadIdx.x >> 5, lane = threadIdx.x & 31;
    const int dp = tk_odd(d), dvp = tk_odd(dv);
    ACC* Ks = (ACC*)tk_smem;
    ACC* Vs = Ks + tileKeys * dp;
    ACC* Qs = Vs + tileKeys * dvp;
    ACC* Gs = Qs + R * d;
    const i64 rowBlocks = (nq + R - 1) / R;
    const i64 bh = blockIdx.x / rowBlocks, firstRow = (blockIdx.x % rowBlocks) * R;
    const i64 row = firstRow + warp;
    const bool active = row < nq;
    const T* kh = k + bh * nk * d;
    const T* vh = v + bh * nk * dv;
    ACC rowLse = (ACC)0, rowDelta = (ACC)0;
    if (active) {
        for (int c = lane; c < d; c += 32) Qs[warp * d + c] = tk_ld(q + (bh * nq + row) * d + c) * (ACC)scale;
        for (int c = lane; c < dv; c += 32) Gs[warp * dv + c] = tk_ld(go + (bh * nq + row) * dv + c);
        rowLse = lse[bh * nq + row];
        rowDelta = delta[bh * nq + row];
    }
    ACC acc[TK_ATT_MAXV];
#pragma unroll
    for (int i = 0; i < TK_ATT_MAXV; ++i) acc[i] = (ACC)0;

    i64 keyEnd = nk;
    if (causal) { i64 last = firstRow + R; keyEnd = last < nk ? last : nk; }
    for (i64 j0 = 0; j0 < keyEnd; j0 += tileKeys) {
        const int tk = (int)((keyEnd - j0) < tileKeys ? (keyEnd - j0) : tileKeys);
        __syncthreads();
        for (int e = threadIdx.x; e < tk * d; e += blockDim.x) Ks[(e / d) * dp + e % d] = tk_ld(kh + (j0 + e / d) * d + e % d);
        for (int e = threadIdx.x; e < tk * dv; e += blockDim.x) Vs[(e / dv) * dvp + e % dv] = tk_ld(vh + (j0 + e / dv) * dv + e % dv);
        __syncthreads();
        if (!active) continue;
        const bool valid = lane < tk && (!causal || j0 + lane <= row);
        ACC ds = (ACC)0;
        if (valid) {
            ACC s = (ACC)0, dpv = (ACC)0;
            for (int c = 0; c < d; ++c) s += Qs[warp * d + c] * Ks[lane * dp + c];
            for (int c = 0; c < dv; ++c) dpv += Gs[warp * dv + c] * Vs[lane * dvp + c];
            const ACC p = tk_exp(s - rowLse);
            ds = p * (dpv - rowDelta);
        }
        for (int jj = 0; jj < tk; ++jj) {
            const ACC dsj = __shfl_sync(TK_FULL, ds, jj);
#pragma unroll
            for (int i = 0; i < TK_ATT_MAXV; ++i) {
                const int c = lane + 32 * i;
                if (c < d) acc[i] += dsj * Ks[jj * dp + c];
            }
        }
    }
    if (!active) return;
#pragma unroll
    for (int i = 0; i < TK_ATT_MAXV; ++i) {
        const int c = lane + 32 * i;
        if (c < d) tk_st(dq + (bh * nq + row) * d + c, acc[i] * (ACC)scale);
    }
}

/* dV_j = Σ_i P_ij dO_i, dK_j = scale · Σ_i P_ij (dO_i·V_j - D_i) Q_i. Warp per key row, query tiles.
   Shared: TQ·odd(d) + TQ·odd(dv) + 2·TQ + R·d + R·dv ACCs. */
extern "C" __global__ void tk_attention_backward_dkdv(T* dk, T* dvOut, const T* q, const T* k, const T* v, const T* go,
                                                      const ACC* lse, const ACC* delta,
                                                      i64 nq, i64 nk, int d, int dv, double scale, int causal, int tileRows) {
    extern __shared__ __align__(16) unsigned char tk_smem[];
    const int R = blockDim.x >> 5, warp = threadIdx.x >> 5, lane = threadIdx.x & 31;
    const int dp = tk_odd(d), dvp = tk_odd(dv);
    ACC* Qs = (ACC*)tk_smem;
    ACC* Gs = Qs + tileRows * dp;
    ACC* Ls = Gs + tileRows * dvp;
    ACC* Ds = Ls + tileRows;
    ACC* Kw = Ds + tileRows;
    ACC* Vw = Kw + R * d;
    const i64 keyBlocks = (nk + R - 1) / R;
    const i64 bh = blockIdx.x / keyBlocks, firstKey = (blockIdx.x % keyBlocks) * R;
    const i64 key = firstKey + warp;
    const bool active = key < nk;
    const T* qh = q + bh * nq * d;
    const T* gh = go + bh * nq * dv;
    if (active) {
        for (int c = lane; c < d; c += 32) Kw[warp * d + c] = tk_ld(k + (bh * nk + key) * d + c);
        for (int c = lane; c < dv; c += 32) Vw[warp * dv + c] = tk_ld(v + (bh * nk + key) * dv + c);
    }
    ACC accK[TK_ATT_MAXV], accV[TK_ATT_MAXV];
#pragma unroll
    for (int i = 0; i < TK_ATT_MAXV; ++i) { accK[i] = (ACC)0; accV[i] = (ACC)0; }

    const i64 start = causal ? (firstKey < nq ? firstKey : nq) : 0;
    for (i64 i0 = start; i0 < nq; i0 += tileRows) {
        const int tq = (int)((nq - i0) < tileRows ? (nq - i0) : tileRows);
        __syncthreads();
        for (int e = threadIdx.x; e < tq * d; e += blockDim.x) Qs[(e / d) * dp + e % d] = tk_ld(qh + (i0 + e / d) * d + e % d) * (ACC)scale;
        for (int e = threadIdx.x; e < tq * dv; e += blockDim.x) Gs[(e / dv) * dvp + e % dv] = tk_ld(gh + (i0 + e / dv) * dv + e % dv);
        for (int e = threadIdx.x; e < tq; e += blockDim.x) { Ls[e] = lse[bh * nq + i0 + e]; Ds[e] = delta[bh * nq + i0 + e]; }
        __syncthreads();
        if (!active) continue;
        const bool valid = lane < tq && (!causal || key <= i0 + lane);
        ACC p = (ACC)0, ds = (ACC)0;
        if (valid) {
            ACC s = (ACC)0, dpv = (ACC)0;
            for (int c = 0; c < d; ++c) s += Qs[lane * dp + c] * Kw[warp * d + c];
            for (int c = 0; c < dv; ++c) dpv += Gs[lane * dvp + c] * Vw[warp * dv + c];
            p = tk_exp(s - Ls[lane]);
            ds = p * (dpv - Ds[lane]);
        }
        for (int ii = 0; ii < tq; ++ii) {
            const ACC pi = __shfl_sync(TK_FULL, p, ii), dsi = __shfl_sync(TK_FULL, ds, ii);
#pragma unroll
            for (int i = 0; i < TK_ATT_MAXV; ++i) {
                const int c = lane + 32 * i;
                if (c < dv) accV[i] += pi * Gs[ii * dvp + c];
                if (c < d) accK[i] += dsi * Qs[ii * dp + c];  /* Qs holds q·scale: dK = scale·Σ ds·q */
            }
        }
    }
    if (!active) return;
#pragma unroll
    for (int i = 0; i < TK_ATT_MAXV; ++i) {
        const int c = lane + 32 * i;
        if (c < d) tk_st(dk + (bh * nk + key) * d + c, accK[i]);
        if (c < dv) tk_st(dvOut + (bh * nk + key) * dv + c, accV[i]);
    }
}

/* The GEMM path (CUDABackend.attentionByGEMM, for large non-causal attention): cuBLAS computes the
   scaled scores s = scale·QKᵀ [rows, n] in ACC; these kernels do the row-wise parts.
   softmax_rows: p = exp(s - lse) in T and lse per row (one block per row, grid-stride). */
extern "C" __global__ void tk_attention_softmax_rows(T* p, ACC* lse, const ACC* s, i64 rows, i64 n, int cached) {
    __shared__ ACC scratch[32];
    extern __shared__ __align__(16) unsigned char tk_smem[];
    float* row = (float*)tk_smem;   /* n floats when cached (ACC is float wherever this path runs) */
    for (i64 r = blockIdx.x; r < rows; r += gridDim.x) {
        const ACC* sr = s + r * n;
        ACC m = -TK_INF;
        if (cached) {
            for (i64 j = threadIdx.x; j < n; j += blockDim.x) { const float v = (float)sr[j]; row[j] = v; m = tk_max(m, (ACC)v); }
        } else {
            for (i64 j = threadIdx.x; j < n; j += blockDim.x) m = tk_max(m, sr[j]);
        }
        m = tk_block_max(m, scratch);
        ACC sum = (ACC)0;
        for (i64 j = threadIdx.x; j < n; j += blockDim.x) sum += tk_exp((cached ? (ACC)row[j] : sr[j]) - m);
        sum = tk_block_sum(sum, scratch);
        const ACC l = m + tk_log(sum);
        T* pr = p + r * n;
        for (i64 j = threadIdx.x; j < n; j += blockDim.x) tk_st(pr + j, tk_exp((cached ? (ACC)row[j] : sr[j]) - l));
        if (threadIdx.x == 0) lse[r] = l;
        __syncthreads();
    }
}

/* Backward: p = exp(s - lse) from the forward's log-sum-exp. */
extern "C" __global__ void tk_attention_probs(T* p, const ACC* s, const ACC* lse, i64 rows, i64 n) {
    TK_GRID_LOOP(i, rows * n) tk_st(p + i, tk_exp(s[i] - lse[i / n]));
}

/* Backward: dS = scale · p ⊙ (dp - delta_row), written over p (T); dp = dO·Vᵀ in ACC. */
extern "C" __global__ void tk_attention_dscores(T* p, const ACC* dp, const ACC* delta, i64 rows, i64 n, double scale) {
    TK_GRID_LOOP(i, rows * n) tk_st(p + i, tk_ld(p + i) * (dp[i] - delta[i / n]) * (ACC)scale);
}
"""#
}
