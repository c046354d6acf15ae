// Attention on the tensor cores for float16/bfloat16 (FlashAttention-2's algorithm): no N×N score
// matrix is stored, forward or backward.
//
// All three kernels use PTX `mma.sync.m16n8k16` (sm_80+) with float32 accumulators. A warp owns 16
// rows (queries, or keys in dK/dV); a block of 4 warps owns 64 and streams the other side through
// shared memory in tiles of 64 rows, zero-padded to DP (the head dimension rounded up to 16, a
// template parameter) with a pitch of DP + 8 halves so that fragment loads avoid bank conflicts.
//
// Fragment layouts (PTX ISA, "mma.m16n8k16"): g = lane / 4, t = lane % 4.
//   A 16×16 (row-major), 4 registers of 2 halves: {row g, cols 2t..2t+1}, {row g+8, cols 2t..},
//     {row g, cols 2t+8..}, {row g+8, cols 2t+8..}.
//   B 16×8 (k × n), 2 registers: {k 2t..2t+1, col g}, {k 2t+8..2t+9, col g}.
//   C 16×8 float: {row g, cols 2t, 2t+1}, {row g+8, cols 2t, 2t+1}.
// So the C fragments of two adjacent 8-column score tiles are exactly the A fragment of a 16-wide
// probability tile: P·V needs no trip through shared memory.
//
// Forward: S = Q·Kᵀ per key tile, online softmax in the log2 domain (running max and sum per row;
// each lane keeps partial sums of its columns, summed over the 4 lanes of a row at the end), O
// rescaled and accumulated; lse = ln Σ exp(scale·q·k), the convention of the other attention kernels.
// Backward (recompute P from lse; delta = rowdot(dO, O) comes from tk_attention_backward_rowdot):
// one kernel per query block for dQ = Σ dS·K over key tiles, one per key block for dV = Σ Pᵀ·dO and
// dK = Σ dSᵀ·Q over query tiles. No atomics, so results are deterministic. P and dS enter the
// tensor cores in the storage type, as the cuBLAS path stores them.
//
// Non-causal only, d == dv, d ≤ 128 forward and ≤ 64 backward (the register budget); other shapes
// take the cuBLAS or fused scalar paths. Only the float16/bfloat16 instantiations define kernel bodies.

extension CUDAKernelSources {
    /// Padded head dimensions with a compiled flash kernel, forward and backward.
    static let flashForwardWidths = [32, 48, 64, 80, 96, 128]
    static let flashBackwardWidths = [32, 48, 64]

    static var flashAttentionKernels: [String] {
        flashForwardWidths.map { "tk_flash_forward_d\($0)" }
            + flashBackwardWidths.flatMap { ["tk_flash_backward_dq_d\($0)", "tk_flash_backward_dkdv_d\($0)"] }
    }

    static var flashAttentionBody: String {
        let forward = flashForwardWidths.map { w in
            """
            extern "C" __global__ void tk_flash_forward_d\(w)(T* out, float* lse, const T* q, const T* k, const T* v,
                    i64 nq, i64 nk, int d, double scale) {
                TK_FA_BODY(tk_fa_forward<\(w)>(out, lse, q, k, v, nq, nk, d, scale))
            }
            """
        }
        let backward = flashBackwardWidths.map { w in
            """
            extern "C" __global__ void tk_flash_backward_dq_d\(w)(T* dq, const T* q, const T* k, const T* v, const T* go,
                    const float* lse, const float* delta, i64 nq, i64 nk, int d, double scale) {
                TK_FA_BODY(tk_fa_backward_dq<\(w)>(dq, q, k, v, go, lse, delta, nq, nk, d, scale))
            }
            extern "C" __global__ void tk_flash_backward_dkdv_d\(w)(T* dk, T* dv, const T* q, const T* k, const T* v,
                    const T* go, const float* lse, const float* delta, i64 nq, i64 nk, int d, double scale) {
                TK_FA_BODY(tk_fa_backward_dkdv<\(w)>(dk, dv, q, k, v, go, lse, delta, nq, nk, d, scale))
            }
            """
        }
        return flashAttentionDevice + (forward + backward).joined(separator: "\n") + "\n"
    }

    static let flashAttentionDevice = #"""
#if TK_DTYPE == 2 || TK_DTYPE == 3
#define TK_FA_BODY(call) call;
#define TK_FA_ROWS 64
#define TK_FA_LOG2E 1.4426950408889634f
#define TK_FA_LN2 0.6931471805599453f

/* Two floats as one register of two storage-type values, the first in the low half. */
__device__ __forceinline__ u32 tk_fa_pack(float lo, float hi) {
#if TK_DTYPE == 2
    return (u32)tk_float_to_half(lo) | ((u32)tk_float_to_half(hi) << 16);
#else
    return (u32)tk_float_to_bf16(lo) | ((u32)tk_float_to_bf16(hi) << 16);
#endif
}

/* c (16×8, float) += a (16×16) · b (16×8). */
__device__ __forceinline__ void tk_fa_mma(float* c, const u32* a, u32 b0, u32 b1) {
#if TK_DTYPE == 2
    asm volatile("mma.sync.aligned.m16n8k16.row.col.f32.f16.f16.f32 {%0,%1,%2,%3}, {%4,%5,%6,%7}, {%8,%9}, {%0,%1,%2,%3};\n"
#else
    asm volatile("mma.sync.aligned.m16n8k16.row.col.f32.bf16.bf16.f32 {%0,%1,%2,%3}, {%4,%5,%6,%7}, {%8,%9}, {%0,%1,%2,%3};\n"
#endif
                 : "+f"(c[0]), "+f"(c[1]), "+f"(c[2]), "+f"(c[3])
                 : "r"(a[0]), "r"(a[1]), "r"(a[2]), "r"(a[3]), "r"(b0), "r"(b1));
}

/* Two adjacent values of row `row`, columns col and col + 1, of a [rows, d] matrix; zero outside. */
__device__ __forceinline__ u32 tk_fa_pair(const u16* m, i64 row, i64 rows, int col, int d) {
    if (row >= rows) return 0u;
    const u16* p = m + row * d;
    u32 lo = col < d ? (u32)p[col] : 0u;
    u32 hi = col + 1 < d ? (u32)p[col + 1] : 0u;
    return lo | (hi << 16);
}

/* The A fragments of rows r0..r0+15 of a [rows, d] matrix, DP/16 column steps of 16. */
template <int DP>
__device__ __forceinline__ void tk_fa_load_a(u32 (*a)[4], const u16* m, i64 r0, i64 rows, int d, int g, int t) {
#pragma unroll
    for (int ks = 0; ks < DP / 16; ++ks) {
        const int c = ks * 16 + 2 * t;
        a[ks][0] = tk_fa_pair(m, r0 + g, rows, c, d);
        a[ks][1] = tk_fa_pair(m, r0 + g + 8, rows, c, d);
        a[ks][2] = tk_fa_pair(m, r0 + g, rows, c + 8, d);
        a[ks][3] = tk_fa_pair(m, r0 + g + 8, rows, c + 8, d);
    }
}

/* Rows r0..r0+63 of a [rows, d] matrix into shared memory [64][DP + 8], zero-padded (the whole block). */
template <int DP>
__device__ __forceinline__ void tk_fa_load_tile(u16* s, const u16* m, i64 r0, i64 rows, int d) {
    const int pitch = DP + 8;
    if ((d & 1) == 0 && (((u64)m) & 3u) == 0) {
        /* Pairs never straddle the row end when d is even: 32-bit loads and stores. */
        for (int e = threadIdx.x; e < TK_FA_ROWS * (DP / 2); e += blockDim.x) {
            const int r = e / (DP / 2), c = 2 * (e % (DP / 2));
            u32 w = 0u;
            if (r0 + r < rows && c < d) w = *(const u32*)(m + (r0 + r) * d + c);
            *(u32*)(s + r * pitch + c) = w;
        }
    } else {
        for (int e = threadIdx.x; e < TK_FA_ROWS * DP; e += blockDim.x) {
            const int r = e / DP, c = e % DP;
            s[r * pitch + c] = (r0 + r < rows && c < d) ? m[(r0 + r) * d + c] : (u16)0;
        }
    }
}

/* Where this thread works: warp w of its block owns rows r0 … r0+15 (of `rows`: queries, or keys
   for dK/dV) of head bh; g and t place the lane in the fragment layouts. */
struct tk_fa_place { int g, t; i64 bh, r0; };
__device__ __forceinline__ tk_fa_place tk_fa_locate(i64 rows) {
    const int warp = threadIdx.x >> 5, lane = threadIdx.x & 31;
    const i64 blocks = (rows + TK_FA_ROWS - 1) / TK_FA_ROWS;
    return { lane >> 2, lane & 3, (i64)blockIdx.x / blocks, ((i64)blockIdx.x % blocks) * TK_FA_ROWS + warp * 16 };
}

/* Head bh of a contiguous [BH, rows, d] tensor, as raw 16-bit values. */
__device__ __forceinline__ const u16* tk_fa_head(const T* m, i64 bh, i64 rows, int d) { return (const u16*)m + bh * rows * d; }

/* Waits until the block is done with the previous tiles, then stages rows j0 … j0+63 of two
   [rows, d] matrices (the caller synchronises again before reading them). */
template <int DP>
__device__ __forceinline__ void tk_fa_stage(u16* sa, const u16* a, u16* sb, const u16* b, i64 j0, i64 rows, int d) {
    __syncthreads();
    tk_fa_load_tile<DP>(sa, a, j0, rows, d);
    tk_fa_load_tile<DP>(sb, b, j0, rows, d);
}

template <int DP>
__device__ __forceinline__ void tk_fa_zero(float (*acc)[4]) {
#pragma unroll
    for (int dt = 0; dt < DP / 8; ++dt) acc[dt][0] = acc[dt][1] = acc[dt][2] = acc[dt][3] = 0.f;
}

/* acc[nt] (16 × 64 in 8 tiles of 8 columns) = A (16 × DP, registers) · Bᵀ, where B is a shared
   [64][pitch] tile read by rows: B-fragment pairs are contiguous in a row. */
template <int DP>
__device__ __forceinline__ void tk_fa_mma_rows(float (*acc)[4], const u32 (*a)[4], const u16* s, int g, int t) {
    const int pitch = DP + 8;
#pragma unroll
    for (int nt = 0; nt < TK_FA_ROWS / 8; ++nt) {
        acc[nt][0] = acc[nt][1] = acc[nt][2] = acc[nt][3] = 0.f;
#pragma unroll
        for (int ks = 0; ks < DP / 16; ++ks) {
            const u16* p = s + (nt * 8 + g) * pitch + ks * 16 + 2 * t;
            tk_fa_mma(acc[nt], a[ks], *(const u32*)p, *(const u32*)(p + 8));
        }
    }
}

/* out[dt] (16 × DP) += P (16 × 64, given as C fragments p[8][4]) · B, where B is a shared [64][pitch]
   tile read by columns: B-fragment pairs are two rows apart in one column. */
template <int DP>
__device__ __forceinline__ void tk_fa_mma_cols(float (*out)[4], const float (*p)[4], const u16* s, int g, int t) {
    const int pitch = DP + 8;
#pragma unroll
    for (int kk = 0; kk < TK_FA_ROWS / 16; ++kk) {
        u32 a[4];
        a[0] = tk_fa_pack(p[2 * kk][0], p[2 * kk][1]);
        a[1] = tk_fa_pack(p[2 * kk][2], p[2 * kk][3]);
        a[2] = tk_fa_pack(p[2 * kk + 1][0], p[2 * kk + 1][1]);
        a[3] = tk_fa_pack(p[2 * kk + 1][2], p[2 * kk + 1][3]);
#pragma unroll
        for (int dt = 0; dt < DP / 8; ++dt) {
            const u16* c = s + (kk * 16 + 2 * t) * pitch + dt * 8 + g;
            const u32 b0 = (u32)c[0] | ((u32)c[pitch] << 16);
            const u32 b1 = (u32)c[8 * pitch] | ((u32)c[9 * pitch] << 16);
            tk_fa_mma(out[dt], a, b0, b1);
        }
    }
}

__device__ __forceinline__ float tk_fa_quad_max(float x) {
    x = fmaxf(x, __shfl_xor_sync(0xffffffffu, x, 1));
    return fmaxf(x, __shfl_xor_sync(0xffffffffu, x, 2));
}
__device__ __forceinline__ float tk_fa_quad_sum(float x) {
    x += __shfl_xor_sync(0xffffffffu, x, 1);
    return x + __shfl_xor_sync(0xffffffffu, x, 2);
}

/* Writes rows r0+g and r0+g+8 of a 16 × DP accumulator (times `mul`) into a [rows, d] matrix. */
template <int DP>
__device__ __forceinline__ void tk_fa_store(T* m, const float (*acc)[4], i64 r0, i64 rows, int d, float mul0, float mul1, int g, int t) {
#pragma unroll
    for (int dt = 0; dt < DP / 8; ++dt) {
#pragma unroll
        for (int e = 0; e < 2; ++e) {
            const int c = dt * 8 + 2 * t + e;
            if (c >= d) continue;
            if (r0 + g < rows) tk_st(m + (r0 + g) * d + c, acc[dt][e] * mul0);
            if (r0 + g + 8 < rows) tk_st(m + (r0 + g + 8) * d + c, acc[dt][2 + e] * mul1);
        }
    }
}

/* Grid: BH · ceil(nq / 64) blocks of 128 threads; q, k, v, out [BH, n, d] contiguous; lse [BH, nq]. */
template <int DP>
__device__ __forceinline__ void tk_fa_forward(T* out, float* lse, const T* q, const T* k, const T* v,
                                              i64 nq, i64 nk, int d, double scale) {
    __shared__ __align__(16) u16 Ks[TK_FA_ROWS * (DP + 8)];
    __shared__ __align__(16) u16 Vs[TK_FA_ROWS * (DP + 8)];
    const tk_fa_place at = tk_fa_locate(nq);
    const int g = at.g, t = at.t;
    const i64 bh = at.bh, r0 = at.r0;
    const float c = (float)scale * TK_FA_LOG2E;
    u32 qa[DP / 16][4];
    tk_fa_load_a<DP>(qa, tk_fa_head(q, bh, nq, d), r0, nq, d, g, t);
    float o[DP / 8][4];
    tk_fa_zero<DP>(o);
    float m0 = -TK_INF, m1 = -TK_INF, l0 = 0.f, l1 = 0.f;

    for (i64 j0 = 0; j0 < nk; j0 += TK_FA_ROWS) {
        tk_fa_stage<DP>(Ks, tk_fa_head(k, bh, nk, d), Vs, tk_fa_head(v, bh, nk, d), j0, nk, d);
        __syncthreads();
        float s[TK_FA_ROWS / 8][4];
        tk_fa_mma_rows<DP>(s, qa, Ks, g, t);
        float x0 = -TK_INF, x1 = -TK_INF;
#pragma unroll
        for (int nt = 0; nt < TK_FA_ROWS / 8; ++nt) {
#pragma unroll
            for (int e = 0; e < 2; ++e) {
                const bool ok = j0 + nt * 8 + 2 * t + e < nk;
                s[nt][e] = ok ? s[nt][e] * c : -TK_INF;
                s[nt][2 + e] = ok ? s[nt][2 + e] * c : -TK_INF;
                x0 = fmaxf(x0, s[nt][e]);
                x1 = fmaxf(x1, s[nt][2 + e]);
            }
        }
        const float n0 = fmaxf(m0, tk_fa_quad_max(x0)), n1 = fmaxf(m1, tk_fa_quad_max(x1));
        const float a0 = exp2f(m0 - n0), a1 = exp2f(m1 - n1);
        m0 = n0; m1 = n1;
        l0 *= a0; l1 *= a1;
#pragma unroll
        for (int dt = 0; dt < DP / 8; ++dt) { o[dt][0] *= a0; o[dt][1] *= a0; o[dt][2] *= a1; o[dt][3] *= a1; }
#pragma unroll
        for (int nt = 0; nt < TK_FA_ROWS / 8; ++nt) {
            s[nt][0] = exp2f(s[nt][0] - m0); s[nt][1] = exp2f(s[nt][1] - m0);
            s[nt][2] = exp2f(s[nt][2] - m1); s[nt][3] = exp2f(s[nt][3] - m1);
            l0 += s[nt][0] + s[nt][1];
            l1 += s[nt][2] + s[nt][3];
        }
        tk_fa_mma_cols<DP>(o, s, Vs, g, t);
    }
    l0 = tk_fa_quad_sum(l0);
    l1 = tk_fa_quad_sum(l1);
    T* oh = out + bh * nq * d;
    tk_fa_store<DP>(oh, o, r0, nq, d, 1.f / l0, 1.f / l1, g, t);
    if (t == 0) {
        if (r0 + g < nq) lse[bh * nq + r0 + g] = (m0 + log2f(l0)) * TK_FA_LN2;
        if (r0 + g + 8 < nq) lse[bh * nq + r0 + g + 8] = (m1 + log2f(l1)) * TK_FA_LN2;
    }
}

/* dQ = scale · Σ_j dS·K with dS = P ⊙ (dP − delta), dP = dO·Vᵀ. Grid as the forward. */
template <int DP>
__device__ __forceinline__ void tk_fa_backward_dq(T* dq, const T* q, const T* k, const T* v, const T* go,
                                                  const float* lse, const float* delta, i64 nq, i64 nk, int d, double scale) {
    __shared__ __align__(16) u16 Ks[TK_FA_ROWS * (DP + 8)];
    __shared__ __align__(16) u16 Vs[TK_FA_ROWS * (DP + 8)];
    const tk_fa_place at = tk_fa_locate(nq);
    const int g = at.g, t = at.t;
    const i64 bh = at.bh, r0 = at.r0;
    const float c = (float)scale * TK_FA_LOG2E;
    u32 qa[DP / 16][4], ga[DP / 16][4];
    tk_fa_load_a<DP>(qa, tk_fa_head(q, bh, nq, d), r0, nq, d, g, t);
    tk_fa_load_a<DP>(ga, tk_fa_head(go, bh, nq, d), r0, nq, d, g, t);
    /* This lane's two rows: their log-sum-exp (log2 units) and delta; zero past the end. */
    const bool in0 = r0 + g < nq, in1 = r0 + g + 8 < nq;
    const float* lh = lse + bh * nq + r0 + g;
    const float* dh = delta + bh * nq + r0 + g;
    const float L0 = in0 ? lh[0] * TK_FA_LOG2E : 0.f, L1 = in1 ? lh[8] * TK_FA_LOG2E : 0.f;
    const float D0 = in0 ? dh[0] : 0.f, D1 = in1 ? dh[8] : 0.f;
    float acc[DP / 8][4];
    tk_fa_zero<DP>(acc);

    for (i64 j0 = 0; j0 < nk; j0 += TK_FA_ROWS) {
        tk_fa_stage<DP>(Ks, tk_fa_head(k, bh, nk, d), Vs, tk_fa_head(v, bh, nk, d), j0, nk, d);
        __syncthreads();
        float s[TK_FA_ROWS / 8][4], dp[TK_FA_ROWS / 8][4];
        tk_fa_mma_rows<DP>(s, qa, Ks, g, t);
        tk_fa_mma_rows<DP>(dp, ga, Vs, g, t);
#pragma unroll
        for (int nt = 0; nt < TK_FA_ROWS / 8; ++nt) {
#pragma unroll
            for (int e = 0; e < 2; ++e) {
                const bool ok = j0 + nt * 8 + 2 * t + e < nk;
                const float p0 = ok ? exp2f(s[nt][e] * c - L0) : 0.f;
                const float p1 = ok ? exp2f(s[nt][2 + e] * c - L1) : 0.f;
                s[nt][e] = p0 * (dp[nt][e] - D0);
                s[nt][2 + e] = p1 * (dp[nt][2 + e] - D1);
            }
        }
        tk_fa_mma_cols<DP>(acc, s, Ks, g, t);
    }
    tk_fa_store<DP>(dq + bh * nq * d, acc, r0, nq, d, (float)scale, (float)scale, g, t);
}

/* dV = Σ_i Pᵀ·dO and dK = scale · Σ_i dSᵀ·Q, a warp per 16 keys. Grid: BH · ceil(nk / 64) blocks. */
template <int DP>
__device__ __forceinline__ void tk_fa_backward_dkdv(T* dk, T* dv, const T* q, const T* k, const T* v, const T* go,
                                                    const float* lse, const float* delta, i64 nq, i64 nk, int d, double scale) {
    __shared__ __align__(16) u16 Qs[TK_FA_ROWS * (DP + 8)];
    __shared__ __align__(16) u16 Gs[TK_FA_ROWS * (DP + 8)];
    __shared__ float Ls[TK_FA_ROWS], Ds[TK_FA_ROWS];
    const tk_fa_place at = tk_fa_locate(nk);
    const int g = at.g, t = at.t;
    const i64 bh = at.bh, r0 = at.r0;
    const float c = (float)scale * TK_FA_LOG2E;
    u32 ka[DP / 16][4], va[DP / 16][4];
    tk_fa_load_a<DP>(ka, tk_fa_head(k, bh, nk, d), r0, nk, d, g, t);
    tk_fa_load_a<DP>(va, tk_fa_head(v, bh, nk, d), r0, nk, d, g, t);
    float accK[DP / 8][4], accV[DP / 8][4];
    tk_fa_zero<DP>(accK);
    tk_fa_zero<DP>(accV);

    for (i64 i0 = 0; i0 < nq; i0 += TK_FA_ROWS) {
        tk_fa_stage<DP>(Qs, tk_fa_head(q, bh, nq, d), Gs, tk_fa_head(go, bh, nq, d), i0, nq, d);
        for (int r = threadIdx.x; r < TK_FA_ROWS; r += blockDim.x) {
            const bool ok = i0 + r < nq;
            Ls[r] = ok ? lse[bh * nq + i0 + r] * TK_FA_LOG2E : 0.f;
            Ds[r] = ok ? delta[bh * nq + i0 + r] : 0.f;
        }
        __syncthreads();
        /* Sᵀ = K·Qᵀ and dPᵀ = V·dOᵀ (16 keys × 64 queries); then Pᵀ and dSᵀ over the queries. */
        float st[TK_FA_ROWS / 8][4], dpt[TK_FA_ROWS / 8][4];
        tk_fa_mma_rows<DP>(st, ka, Qs, g, t);
        tk_fa_mma_rows<DP>(dpt, va, Gs, g, t);
#pragma unroll
        for (int nt = 0; nt < TK_FA_ROWS / 8; ++nt) {
#pragma unroll
            for (int e = 0; e < 2; ++e) {
                const int col = nt * 8 + 2 * t + e;
                const bool ok = i0 + col < nq;
                const float L = Ls[col], D = Ds[col];
                const float p0 = ok ? exp2f(st[nt][e] * c - L) : 0.f;
                const float p1 = ok ? exp2f(st[nt][2 + e] * c - L) : 0.f;
                st[nt][e] = p0;
                st[nt][2 + e] = p1;
                dpt[nt][e] = p0 * (dpt[nt][e] - D);
                dpt[nt][2 + e] = p1 * (dpt[nt][2 + e] - D);
            }
        }
        tk_fa_mma_cols<DP>(accV, st, Gs, g, t);
        tk_fa_mma_cols<DP>(accK, dpt, Qs, g, t);
    }
    tk_fa_store<DP>(dk + bh * nk * d, accK, r0, nk, d, (float)scale, (float)scale, g, t);
    tk_fa_store<DP>(dv + bh * nk * d, accV, r0, nk, d, 1.f, 1.f, g, t);
}
#else
/* float32/float64: the kernels exist (one module per dtype) but are never launched. */
#define TK_FA_BODY(call)
#endif

"""#
}
