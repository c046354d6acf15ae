// Attention on the tensor cores for float16/bfloat16 (FlashAttention-2's algorithm): no N×N score
// matrix is stored, forward or backward.
//
// All three kernels use PTX `mma.sync.m16n8k16` (sm_80+) with float32 accumulators. A warp owns 16
// rows (queries, or keys in dK/dV); a block of 4 warps owns 64 and streams the other side through
// shared memory in tiles of 64 rows, zero-padded to DP (the head dimension rounded up to 16, a
// template parameter) with a pitch of DP + 8 halves so that fragment loads avoid bank conflicts.
//
// Every kernel has two builds (template parameter P). The pipelined one (P = true, the default)
// copies tile i + 1 with cp.async while the block computes on tile i (two buffers while two stages
// of both tiles fit in 46 KiB, head widths up to 80; one above) and reads B operands with ldmatrix,
// two mma operands per instruction; on an H200 it is 4–5.5× faster than the plain one (P = false,
// kernel names ending in _sync: ordinary loads), which computes the same values and remains as the
// fallback (`CUDA.flashPipeline`).
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
//
// Operands need not be contiguous (`TKFALayout`): each has its own batch, head and row strides, with
// the head dimension unit-stride. So the heads of a [B, N, H·D] projection are read in place, and
// the output and the gradients are written in their inputs' layout: a transformer's attention takes
// no head-split or head-merge copies, forward or backward.

extension CUDAKernelSources {
    /// Padded head dimensions with a compiled flash kernel, forward and backward.
    static let flashForwardWidths = [32, 48, 64, 80, 96, 128]
    static let flashBackwardWidths = [32, 48, 64]

    /// Kernel-name suffixes of the two builds of every flash kernel: "" pipelined (cp.async tile
    /// copies, ldmatrix fragment loads; the default) and "_sync" (plain loads, see `CUDA.flashPipeline`).
    static let flashVariants = [(suffix: "", pipelined: true), (suffix: "_sync", pipelined: false)]

    static var flashAttentionKernels: [String] {
        ["tk_flash_rowdot"] + flashVariants.flatMap { v in
            flashForwardWidths.map { "tk_flash_forward_d\($0)\(v.suffix)" }
                + flashBackwardWidths.flatMap { ["tk_flash_backward_dq_d\($0)\(v.suffix)", "tk_flash_backward_dkdv_d\($0)\(v.suffix)"] }
        }
    }

    static var flashAttentionBody: String {
        let kernels = flashVariants.flatMap { variant -> [String] in
            let (x, p) = (variant.suffix, variant.pipelined)
            let forward = flashForwardWidths.map { w in
                // Up to width 80, four blocks of 128 threads per multiprocessor (≤ 128 registers; no
                // spills at sm_80/sm_90): without the bound, width 80 took 138 and fitted only three.
                """
                extern "C" __global__ void \(w <= 80 ? "__launch_bounds__(128, 4) " : "")tk_flash_forward_d\(w)\(x)(T* out, float* lse, const T* q, const T* k, const T* v,
                        i64 nq, i64 nk, int d, double scale, TKFALayout lay) {
                    TK_FA_BODY(tk_fa_forward<\(w), \(p)>(out, lse, q, k, v, nq, nk, d, scale, lay))
                }
                """
            }
            let backward = flashBackwardWidths.map { w in
                """
                extern "C" __global__ void tk_flash_backward_dq_d\(w)\(x)(T* dq, const T* q, const T* k, const T* v, const T* go,
                        const float* lse, const float* delta, i64 nq, i64 nk, int d, double scale, TKFALayout lay) {
                    TK_FA_BODY(tk_fa_backward_dq<\(w), \(p)>(dq, q, k, v, go, lse, delta, nq, nk, d, scale, lay))
                }
                extern "C" __global__ void tk_flash_backward_dkdv_d\(w)\(x)(T* dk, T* dv, const T* q, const T* k, const T* v,
                        const T* go, const float* lse, const float* delta, i64 nq, i64 nk, int d, double scale, TKFALayout lay) {
                    TK_FA_BODY(tk_fa_backward_dkdv<\(w), \(p)>(dk, dv, q, k, v, go, lse, delta, nq, nk, d, scale, lay))
                }
                """
            }
            return forward + backward
        }
        let rowdot = """
            extern "C" __global__ void tk_flash_rowdot(float* delta, const T* o, const T* go, i64 rows, i64 nq, int d, TKFALayout lay) {
                TK_FA_BODY(tk_fa_rowdot(delta, o, go, rows, nq, d, lay))
            }
            """
        return tensorCoreDevice + flashAttentionDevice + ([rowdot] + kernels).joined(separator: "\n") + "\n"
    }

    /// Tensor-core helpers shared by the flash and convolution kernels (float16/bfloat16 only): the
    /// paired conversion, `mma.sync.m16n8k16`, `ldmatrix`, `cp.async` and the two-stage tile loop.
    static let tensorCoreDevice = #"""
#if TK_DTYPE == 2 || TK_DTYPE == 3
/* Two floats as one register of two storage-type values, the first in the low half. */
template <bool P>
__device__ __forceinline__ u32 tk_fa_pack(float lo, float hi) {
    if (P) {
        /* One instruction for both (sm_80+); its upper half is the first operand. */
        u32 r;
#if TK_DTYPE == 2
        asm("cvt.rn.f16x2.f32 %0, %1, %2;\n" : "=r"(r) : "f"(hi), "f"(lo));
#else
        asm("cvt.rn.bf16x2.f32 %0, %1, %2;\n" : "=r"(r) : "f"(hi), "f"(lo));
#endif
        return r;
    }
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

/* Four 8×8 matrices of 16-bit values from shared memory, warp-collective (ldmatrix, sm_75+): lane l
   gives the address of row l % 8 of matrix l / 8 (16-byte aligned); r[i] receives matrix i's
   {row g, columns 2t, 2t+1}, or with `trans` {rows 2t, 2t+1 of column g}: the B fragment of a
   16×8 operand stored k-major. */
__device__ __forceinline__ void tk_fa_ldsm(u32* r, const u16* row) {
    const u32 a = (u32)__cvta_generic_to_shared(row);
    asm volatile("ldmatrix.sync.aligned.m8n8.x4.shared.b16 {%0,%1,%2,%3}, [%4];\n"
                 : "=r"(r[0]), "=r"(r[1]), "=r"(r[2]), "=r"(r[3]) : "r"(a));
}
__device__ __forceinline__ void tk_fa_ldsm_trans(u32* r, const u16* row) {
    const u32 a = (u32)__cvta_generic_to_shared(row);
    asm volatile("ldmatrix.sync.aligned.m8n8.x4.trans.shared.b16 {%0,%1,%2,%3}, [%4];\n"
                 : "=r"(r[0]), "=r"(r[1]), "=r"(r[2]), "=r"(r[3]) : "r"(a));
}

/* Asynchronous global → shared copies (cp.async, sm_80+): 16 or 4 bytes, zero-filled when !ok (src
   is then not read). They land once a later tk_fa_wait covers their commit group. */
__device__ __forceinline__ void tk_fa_copy16(void* dst, const void* src, bool ok) {
    const u32 a = (u32)__cvta_generic_to_shared(dst);
    const int n = ok ? 16 : 0;
    asm volatile("cp.async.cg.shared.global [%0], [%1], 16, %2;\n" :: "r"(a), "l"(src), "r"(n) : "memory");
}
__device__ __forceinline__ void tk_fa_copy4(void* dst, const void* src, bool ok) {
    const u32 a = (u32)__cvta_generic_to_shared(dst);
    const int n = ok ? 4 : 0;
    asm volatile("cp.async.ca.shared.global [%0], [%1], 4, %2;\n" :: "r"(a), "l"(src), "r"(n) : "memory");
}
__device__ __forceinline__ void tk_fa_commit() { asm volatile("cp.async.commit_group;\n" ::: "memory"); }
/* Waits until at most N of this thread's commit groups are still in flight. */
template <int N>
__device__ __forceinline__ void tk_fa_wait() { asm volatile("cp.async.wait_group %0;\n" :: "n"(N) : "memory"); }

/* Step `it` of a loop over `tiles` tiles (64 rows each in the flash kernels): makes tile `it` ready
   in buffer it % STAGES and, when double-buffered, starts tile it + 1 into the other buffer, so that
   its copies overlap this step's arithmetic. stage(tile, buffer) issues one tile's copies (every thread). Ends with a
   barrier; the caller ends the step with another, so no buffer is refilled while it is read. */
template <int STAGES, bool P, typename F>
__device__ __forceinline__ int tk_fa_advance(int it, int tiles, F stage) {
    if (STAGES == 1) {
        stage(it, 0);
        if (P) { tk_fa_commit(); tk_fa_wait<0>(); }
    } else {
        if (it == 0) { stage(0, 0); if (P) tk_fa_commit(); }
        if (it + 1 < tiles) {
            stage(it + 1, (it + 1) & 1);
            if (P) { tk_fa_commit(); tk_fa_wait<1>(); }
        } else if (P) {
            tk_fa_wait<0>();
        }
    }
    __syncthreads();
    return STAGES == 1 ? 0 : (it & 1);
}

#endif

"""#

    static let flashAttentionDevice = #"""
/* Where each operand's heads and rows lie (every dtype's kernels take it; only float16/bfloat16
   ones read it): head (b, h) of operand s starts b·batch[s] + h·head[s] elements in, its rows are
   row[s] elements apart and its d values adjacent. [B, H, N, D] contiguous is (H·N·D, N·D, D); the
   heads of a [B, N, H·D] projection read in place are (N·H·D, D, H·D). Slots: TK_FA_Q … TK_FA_DV. */
struct TKFALayout {
    i64 heads;
    i64 batch[8], head[8], row[8];
};
#define TK_FA_Q 0
#define TK_FA_K 1
#define TK_FA_V 2
#define TK_FA_O 3
#define TK_FA_GO 4
#define TK_FA_DQ 5
#define TK_FA_DK 6
#define TK_FA_DV 7

#if TK_DTYPE == 2 || TK_DTYPE == 3
#define TK_FA_BODY(...) __VA_ARGS__;
#define TK_FA_ROWS 64
#define TK_FA_LOG2E 1.4426950408889634f
#define TK_FA_LN2 0.6931471805599453f

/* One head of one operand: its first element as raw 16-bit values and its row pitch (elements). */
struct tk_fa_mat { const u16* p; int pitch; };

/* Two adjacent values of row `row`, columns col and col + 1, of a [rows, d] matrix; zero outside. */
__device__ __forceinline__ u32 tk_fa_pair(tk_fa_mat m, int row, int rows, int col, int d) {
    if (row >= rows) return 0u;
    const u16* p = m.p + row * m.pitch;
    u32 lo = col < d ? (u32)p[col] : 0u;
    u32 hi = col + 1 < d ? (u32)p[col + 1] : 0u;
    return lo | (hi << 16);
}

/* The A fragments of rows r0..r0+15 of a [rows, d] matrix, DP/16 column steps of 16. */
template <int DP>
__device__ __forceinline__ void tk_fa_load_a(u32 (*a)[4], tk_fa_mat m, int r0, int rows, int d, int g, int t) {
#pragma unroll
    for (int ks = 0; ks < DP / 16; ++ks) {
        const int c = ks * 16 + 2 * t;
        a[ks][0] = tk_fa_pair(m, r0 + g, rows, c, d);
        a[ks][1] = tk_fa_pair(m, r0 + g + 8, rows, c, d);
        a[ks][2] = tk_fa_pair(m, r0 + g, rows, c + 8, d);
        a[ks][3] = tk_fa_pair(m, r0 + g + 8, rows, c + 8, d);
    }
}

/* Rows r0..r0+63 of a [rows, d] matrix into shared memory [64][DP + 8], zero-padded (the whole
   block). P: 16-byte cp.async copies when every row starts 16-byte aligned (d and the row pitch
   multiples of 8, an aligned base), which land at the caller's wait; otherwise plain 32- or 16-bit
   loads and stores. */
template <int DP, bool P>
__device__ __forceinline__ void tk_fa_load_tile(u16* s, tk_fa_mat m, int r0, int rows, int d) {
    const int pitch = DP + 8;
    if (P && ((d | m.pitch) & 7) == 0 && (((u64)m.p) & 15u) == 0) {
        for (int e = threadIdx.x; e < TK_FA_ROWS * (DP / 8); e += blockDim.x) {
            const int r = e / (DP / 8), c = 8 * (e % (DP / 8));
            const bool ok = r0 + r < rows && c < d;
            tk_fa_copy16(s + r * pitch + c, ok ? m.p + (r0 + r) * m.pitch + c : m.p, ok);
        }
    } else if (((d | m.pitch) & 1) == 0 && (((u64)m.p) & 3u) == 0) {
        /* Pairs never straddle the row end when d is even: 32-bit loads and stores. */
        for (int e = threadIdx.x; e < TK_FA_ROWS * (DP / 2); e += blockDim.x) {
            const int r = e / (DP / 2), c = 2 * (e % (DP / 2));
            u32 w = 0u;
            if (r0 + r < rows && c < d) w = *(const u32*)(m.p + (r0 + r) * m.pitch + c);
            *(u32*)(s + r * pitch + c) = w;
        }
    } else {
        for (int e = threadIdx.x; e < TK_FA_ROWS * DP; e += blockDim.x) {
            const int r = e / DP, c = e % DP;
            s[r * pitch + c] = (r0 + r < rows && c < d) ? m.p[(r0 + r) * m.pitch + c] : (u16)0;
        }
    }
}

/* 64 row statistics (lse or delta) from r0 on into shared memory, zero past `rows`. */
template <bool P>
__device__ __forceinline__ void tk_fa_load_rows(float* s, const float* m, int r0, int rows) {
    for (int r = threadIdx.x; r < TK_FA_ROWS; r += blockDim.x) {
        const bool ok = r0 + r < rows;
        if (P) tk_fa_copy4(s + r, ok ? m + r0 + r : m, ok);
        else s[r] = ok ? m[r0 + r] : 0.f;
    }
}

/* Where this thread works: warp w of its block owns rows r0 … r0+15 (of `rows`: queries, or keys
   for dK/dV) of head bh; g and t place the lane in the fragment layouts. */
struct tk_fa_place { int g, t, lane, r0; i64 bh; };
__device__ __forceinline__ tk_fa_place tk_fa_locate(i64 rows) {
    const int warp = threadIdx.x >> 5, lane = threadIdx.x & 31;
    const i64 blocks = (rows + TK_FA_ROWS - 1) / TK_FA_ROWS;
    return { lane >> 2, lane & 3, lane, (int)((i64)blockIdx.x % blocks) * TK_FA_ROWS + warp * 16, (i64)blockIdx.x / blocks };
}

/* Head bh (= b·heads + h) of operand `slot`, read as raw 16-bit values; tk_fa_out: the same for an
   output, in the storage type. */
__device__ __forceinline__ i64 tk_fa_offset(const TKFALayout& at, int slot, i64 bh) {
    const i64 b = bh / at.heads;
    return b * at.batch[slot] + (bh - b * at.heads) * at.head[slot];
}
__device__ __forceinline__ tk_fa_mat tk_fa_head(const T* m, const TKFALayout& at, int slot, i64 bh) {
    return { (const u16*)m + tk_fa_offset(at, slot, bh), (int)at.row[slot] };
}
__device__ __forceinline__ T* tk_fa_out(T* m, const TKFALayout& at, int slot, i64 bh) { return m + tk_fa_offset(at, slot, bh); }

/* Shared tiles of the other side, double-buffered when two stages of two tiles fit in 46 KiB (head
   widths up to 80): a[s] and b[s] hold 64 rows each, la[s] and lb[s] 64 row statistics (dK/dV). */
template <int DP>
struct tk_fa_tiles {
    static constexpr int STAGES = 4 * TK_FA_ROWS * (DP + 8) * 2 <= 46 * 1024 ? 2 : 1;
    u16 a[STAGES][TK_FA_ROWS * (DP + 8)];
    u16 b[STAGES][TK_FA_ROWS * (DP + 8)];
    float la[STAGES][TK_FA_ROWS], lb[STAGES][TK_FA_ROWS];
};

template <int DP>
__device__ __forceinline__ void tk_fa_zero(float (*acc)[4]) {
#pragma unroll
    for (int dt = 0; dt < DP / 8; ++dt) acc[dt][0] = acc[dt][1] = acc[dt][2] = acc[dt][3] = 0.f;
}

/* acc[nt] (16 × 64 in 8 tiles of 8 columns) = A (16 × DP, registers) · Bᵀ, where B is a shared
   [64][pitch] tile read by rows: B-fragment pairs are contiguous in a row. P: ldmatrix, the
   fragments of two column tiles per instruction. */
template <int DP, bool P>
__device__ __forceinline__ void tk_fa_mma_rows(float (*acc)[4], const u32 (*a)[4], const u16* s, int lane) {
    const int pitch = DP + 8, g = lane >> 2, t = lane & 3;
#pragma unroll
    for (int nt = 0; nt < TK_FA_ROWS / 8; ++nt) acc[nt][0] = acc[nt][1] = acc[nt][2] = acc[nt][3] = 0.f;
    if (P) {
        /* Lanes 0-7: rows of column tile nt, k 0-7; 8-15: k 8-15; 16-31: the same for nt + 1. */
        const u16* base = s + ((lane >> 4) * 8 + (lane & 7)) * pitch + ((lane >> 3) & 1) * 8;
#pragma unroll
        for (int nt = 0; nt < TK_FA_ROWS / 8; nt += 2) {
#pragma unroll
            for (int ks = 0; ks < DP / 16; ++ks) {
                u32 b[4];
                tk_fa_ldsm(b, base + nt * 8 * pitch + ks * 16);
                tk_fa_mma(acc[nt], a[ks], b[0], b[1]);
                tk_fa_mma(acc[nt + 1], a[ks], b[2], b[3]);
            }
        }
    } else {
#pragma unroll
        for (int nt = 0; nt < TK_FA_ROWS / 8; ++nt) {
#pragma unroll
            for (int ks = 0; ks < DP / 16; ++ks) {
                const u16* p = s + (nt * 8 + g) * pitch + ks * 16 + 2 * t;
                tk_fa_mma(acc[nt], a[ks], *(const u32*)p, *(const u32*)(p + 8));
            }
        }
    }
}

/* out[dt] (16 × DP) += Pr (16 × 64, given as C fragments p[8][4]) · B, where B is a shared
   [64][pitch] tile read by columns: B-fragment pairs are two rows apart in one column. P: ldmatrix
   with transposition, the fragments of two column tiles per instruction. */
template <int DP, bool P>
__device__ __forceinline__ void tk_fa_mma_cols(float (*out)[4], const float (*p)[4], const u16* s, int lane) {
    const int pitch = DP + 8, g = lane >> 2, t = lane & 3;
#pragma unroll
    for (int kk = 0; kk < TK_FA_ROWS / 16; ++kk) {
        u32 a[4];
        a[0] = tk_fa_pack<P>(p[2 * kk][0], p[2 * kk][1]);
        a[1] = tk_fa_pack<P>(p[2 * kk][2], p[2 * kk][3]);
        a[2] = tk_fa_pack<P>(p[2 * kk + 1][0], p[2 * kk + 1][1]);
        a[3] = tk_fa_pack<P>(p[2 * kk + 1][2], p[2 * kk + 1][3]);
        if (P) {
            /* Lanes 0-7: rows k 0-7 of column tile dt; 8-15: k 8-15; 16-31: the same for dt + 1. */
            const u16* base = s + (kk * 16 + ((lane >> 3) & 1) * 8 + (lane & 7)) * pitch + (lane >> 4) * 8;
#pragma unroll
            for (int dt = 0; dt < DP / 8; dt += 2) {
                u32 b[4];
                tk_fa_ldsm_trans(b, base + dt * 8);
                tk_fa_mma(out[dt], a, b[0], b[1]);
                tk_fa_mma(out[dt + 1], a, b[2], b[3]);
            }
        } else {
#pragma unroll
            for (int dt = 0; dt < DP / 8; ++dt) {
                const u16* c = s + (kk * 16 + 2 * t) * pitch + dt * 8 + g;
                const u32 b0 = (u32)c[0] | ((u32)c[pitch] << 16);
                const u32 b1 = (u32)c[8 * pitch] | ((u32)c[9 * pitch] << 16);
                tk_fa_mma(out[dt], a, b0, b1);
            }
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

/* Writes rows r0+g and r0+g+8 of a 16 × DP accumulator (times `mul`) into a [rows, d] matrix whose
   rows are `pitch` elements apart. */
template <int DP>
__device__ __forceinline__ void tk_fa_store(T* m, int pitch, const float (*acc)[4], int r0, int rows, int d, float mul0, float mul1, int g, int t) {
#pragma unroll
    for (int dt = 0; dt < DP / 8; ++dt) {
#pragma unroll
        for (int e = 0; e < 2; ++e) {
            const int c = dt * 8 + 2 * t + e;
            if (c >= d) continue;
            if (r0 + g < rows) tk_st(m + (r0 + g) * pitch + c, acc[dt][e] * mul0);
            if (r0 + g + 8 < rows) tk_st(m + (r0 + g + 8) * pitch + c, acc[dt][2 + e] * mul1);
        }
    }
}

/* The forward's and dQ's loop over one head's key tiles: key tile `it` into sm.a and its value tile
   into sm.b (buffer `advance` returns), the next pair's copies started (tk_fa_advance). */
template <int DP>
struct tk_fa_stream {
    tk_fa_mat k, v;
    int keys, d;
    __device__ __forceinline__ int tiles() const { return (keys + TK_FA_ROWS - 1) / TK_FA_ROWS; }
    template <bool P>
    __device__ __forceinline__ int advance(tk_fa_tiles<DP>& sm, int it) const {
        return tk_fa_advance<tk_fa_tiles<DP>::STAGES, P>(it, tiles(), [&](int tile, int b) {
            tk_fa_load_tile<DP, P>(sm.a[b], k, tile * TK_FA_ROWS, keys, d);
            tk_fa_load_tile<DP, P>(sm.b[b], v, tile * TK_FA_ROWS, keys, d);
        });
    }
};

/* The backward's delta[bh·nq + i] = Σ_c o[i, c] · dO[i, c] of head bh (operands TK_FA_O and TK_FA_GO
   as laid out), a warp per row: tk_attention_backward_rowdot for the flash kernels' layouts, summed
   in the same order. */
__device__ __forceinline__ void tk_fa_rowdot(float* delta, const T* o, const T* go, i64 rows, i64 nq, int d,
                                             const TKFALayout& lay) {
    const int lane = threadIdx.x & 31;
    const i64 warps = ((i64)gridDim.x * blockDim.x) >> 5;
    for (i64 row = ((i64)blockIdx.x * blockDim.x + threadIdx.x) >> 5; row < rows; row += warps) {
        const i64 bh = row / nq, i = row - bh * nq;
        const T* op = o + tk_fa_offset(lay, TK_FA_O, bh) + i * lay.row[TK_FA_O];
        const T* gp = go + tk_fa_offset(lay, TK_FA_GO, bh) + i * lay.row[TK_FA_GO];
        float s = 0.f;
        for (int c = lane; c < d; c += 32) s += tk_ld(op + c) * tk_ld(gp + c);
        s = tk_warp_sum(s);
        if (lane == 0) delta[row] = s;
    }
}

/* Grid: BH · ceil(nq / 64) blocks of 128 threads; q, k, v, out [B, H, n, d] laid out as `lay` says,
   every row offset (n · pitch) < 2³¹; lse [BH, nq] contiguous. */
template <int DP, bool P>
__device__ __forceinline__ void tk_fa_forward(T* out, float* lse, const T* q, const T* k, const T* v,
                                              i64 nq, i64 nk, int d, double scale, const TKFALayout& lay) {
    __shared__ __align__(16) tk_fa_tiles<DP> sm;
    const tk_fa_place at = tk_fa_locate(nq);
    const int g = at.g, t = at.t, r0 = at.r0, rows = (int)nq, keys = (int)nk;
    const i64 bh = at.bh;
    const float c = (float)scale * TK_FA_LOG2E;
    u32 qa[DP / 16][4];
    tk_fa_load_a<DP>(qa, tk_fa_head(q, lay, TK_FA_Q, bh), r0, rows, d, g, t);
    float o[DP / 8][4];
    tk_fa_zero<DP>(o);
    float m0 = -TK_INF, m1 = -TK_INF, l0 = 0.f, l1 = 0.f;
    const tk_fa_stream<DP> kv{ tk_fa_head(k, lay, TK_FA_K, bh), tk_fa_head(v, lay, TK_FA_V, bh), keys, d };

    for (int it = 0; it < kv.tiles(); ++it) {
        const int buf = kv.template advance<P>(sm, it);
        const int j0 = it * TK_FA_ROWS;
        float s[TK_FA_ROWS / 8][4];
        tk_fa_mma_rows<DP, P>(s, qa, sm.a[buf], at.lane);
        float x0 = -TK_INF, x1 = -TK_INF;
        const bool full = j0 + TK_FA_ROWS <= keys;
#pragma unroll
        for (int nt = 0; nt < TK_FA_ROWS / 8; ++nt) {
#pragma unroll
            for (int e = 0; e < 2; ++e) {
                const bool ok = full || j0 + nt * 8 + 2 * t + e < keys;
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
        tk_fa_mma_cols<DP, P>(o, s, sm.b[buf], at.lane);
        __syncthreads();
    }
    l0 = tk_fa_quad_sum(l0);
    l1 = tk_fa_quad_sum(l1);
    tk_fa_store<DP>(tk_fa_out(out, lay, TK_FA_O, bh), (int)lay.row[TK_FA_O], o, r0, rows, d, 1.f / l0, 1.f / l1, g, t);
    if (t == 0) {
        if (r0 + g < rows) lse[bh * nq + r0 + g] = (m0 + log2f(l0)) * TK_FA_LN2;
        if (r0 + g + 8 < rows) lse[bh * nq + r0 + g + 8] = (m1 + log2f(l1)) * TK_FA_LN2;
    }
}

/* dQ = scale · Σ_j dS·K with dS = P ⊙ (dP − delta), dP = dO·Vᵀ. Grid as the forward. */
template <int DP, bool P>
__device__ __forceinline__ void tk_fa_backward_dq(T* dq, const T* q, const T* k, const T* v, const T* go,
                                                  const float* lse, const float* delta, i64 nq, i64 nk, int d, double scale,
                                                  const TKFALayout& lay) {
    __shared__ __align__(16) tk_fa_tiles<DP> sm;
    const tk_fa_place at = tk_fa_locate(nq);
    const int g = at.g, t = at.t, r0 = at.r0, rows = (int)nq, keys = (int)nk;
    const i64 bh = at.bh;
    const float c = (float)scale * TK_FA_LOG2E;
    u32 qa[DP / 16][4], ga[DP / 16][4];
    tk_fa_load_a<DP>(qa, tk_fa_head(q, lay, TK_FA_Q, bh), r0, rows, d, g, t);
    tk_fa_load_a<DP>(ga, tk_fa_head(go, lay, TK_FA_GO, bh), r0, rows, d, g, t);
    /* This lane's two rows: their log-sum-exp (log2 units) and delta; zero past the end. */
    const bool in0 = r0 + g < rows, in1 = r0 + g + 8 < rows;
    const float* lh = lse + bh * nq + r0 + g;
    const float* dh = delta + bh * nq + r0 + g;
    const float L0 = in0 ? lh[0] * TK_FA_LOG2E : 0.f, L1 = in1 ? lh[8] * TK_FA_LOG2E : 0.f;
    const float D0 = in0 ? dh[0] : 0.f, D1 = in1 ? dh[8] : 0.f;
    float acc[DP / 8][4];
    tk_fa_zero<DP>(acc);
    const tk_fa_stream<DP> kv{ tk_fa_head(k, lay, TK_FA_K, bh), tk_fa_head(v, lay, TK_FA_V, bh), keys, d };

    for (int it = 0; it < kv.tiles(); ++it) {
        const int buf = kv.template advance<P>(sm, it);
        const int j0 = it * TK_FA_ROWS;
        const bool full = j0 + TK_FA_ROWS <= keys;
        float s[TK_FA_ROWS / 8][4], dp[TK_FA_ROWS / 8][4];
        tk_fa_mma_rows<DP, P>(s, qa, sm.a[buf], at.lane);
        tk_fa_mma_rows<DP, P>(dp, ga, sm.b[buf], at.lane);
#pragma unroll
        for (int nt = 0; nt < TK_FA_ROWS / 8; ++nt) {
#pragma unroll
            for (int e = 0; e < 2; ++e) {
                const bool ok = full || j0 + nt * 8 + 2 * t + e < keys;
                const float p0 = ok ? exp2f(s[nt][e] * c - L0) : 0.f;
                const float p1 = ok ? exp2f(s[nt][2 + e] * c - L1) : 0.f;
                s[nt][e] = p0 * (dp[nt][e] - D0);
                s[nt][2 + e] = p1 * (dp[nt][2 + e] - D1);
            }
        }
        tk_fa_mma_cols<DP, P>(acc, s, sm.a[buf], at.lane);
        __syncthreads();
    }
    tk_fa_store<DP>(tk_fa_out(dq, lay, TK_FA_DQ, bh), (int)lay.row[TK_FA_DQ], acc, r0, rows, d, (float)scale, (float)scale, g, t);
}

/* dV = Σ_i Pᵀ·dO and dK = scale · Σ_i dSᵀ·Q, a warp per 16 keys. Grid: BH · ceil(nk / 64) blocks. */
template <int DP, bool P>
__device__ __forceinline__ void tk_fa_backward_dkdv(T* dk, T* dv, const T* q, const T* k, const T* v, const T* go,
                                                    const float* lse, const float* delta, i64 nq, i64 nk, int d, double scale,
                                                    const TKFALayout& lay) {
    __shared__ __align__(16) tk_fa_tiles<DP> sm;
    const tk_fa_place at = tk_fa_locate(nk);
    const int g = at.g, t = at.t, r0 = at.r0, rows = (int)nq, keys = (int)nk;
    const i64 bh = at.bh;
    const float c = (float)scale * TK_FA_LOG2E;
    u32 ka[DP / 16][4], va[DP / 16][4];
    tk_fa_load_a<DP>(ka, tk_fa_head(k, lay, TK_FA_K, bh), r0, keys, d, g, t);
    tk_fa_load_a<DP>(va, tk_fa_head(v, lay, TK_FA_V, bh), r0, keys, d, g, t);
    float accK[DP / 8][4], accV[DP / 8][4];
    tk_fa_zero<DP>(accK);
    tk_fa_zero<DP>(accV);
    const tk_fa_mat qh = tk_fa_head(q, lay, TK_FA_Q, bh), gh = tk_fa_head(go, lay, TK_FA_GO, bh);
    const int tiles = (rows + TK_FA_ROWS - 1) / TK_FA_ROWS;

    for (int it = 0; it < tiles; ++it) {
        const int buf = tk_fa_advance<tk_fa_tiles<DP>::STAGES, P>(it, tiles, [&](int tile, int b) {
            tk_fa_load_tile<DP, P>(sm.a[b], qh, tile * TK_FA_ROWS, rows, d);
            tk_fa_load_tile<DP, P>(sm.b[b], gh, tile * TK_FA_ROWS, rows, d);
            tk_fa_load_rows<P>(sm.la[b], lse + bh * nq, tile * TK_FA_ROWS, rows);
            tk_fa_load_rows<P>(sm.lb[b], delta + bh * nq, tile * TK_FA_ROWS, rows);
        });
        const int i0 = it * TK_FA_ROWS;
        const bool full = i0 + TK_FA_ROWS <= rows;
        /* Sᵀ = K·Qᵀ and dPᵀ = V·dOᵀ (16 keys × 64 queries); then Pᵀ and dSᵀ over the queries. */
        float st[TK_FA_ROWS / 8][4], dpt[TK_FA_ROWS / 8][4];
        tk_fa_mma_rows<DP, P>(st, ka, sm.a[buf], at.lane);
        tk_fa_mma_rows<DP, P>(dpt, va, sm.b[buf], at.lane);
#pragma unroll
        for (int nt = 0; nt < TK_FA_ROWS / 8; ++nt) {
#pragma unroll
            for (int e = 0; e < 2; ++e) {
                const int col = nt * 8 + 2 * t + e;
                const bool ok = full || i0 + col < rows;
                const float L = sm.la[buf][col] * TK_FA_LOG2E, D = sm.lb[buf][col];
                const float p0 = ok ? exp2f(st[nt][e] * c - L) : 0.f;
                const float p1 = ok ? exp2f(st[nt][2 + e] * c - L) : 0.f;
                st[nt][e] = p0;
                st[nt][2 + e] = p1;
                dpt[nt][e] = p0 * (dpt[nt][e] - D);
                dpt[nt][2 + e] = p1 * (dpt[nt][2 + e] - D);
            }
        }
        tk_fa_mma_cols<DP, P>(accV, st, sm.b[buf], at.lane);
        tk_fa_mma_cols<DP, P>(accK, dpt, sm.a[buf], at.lane);
        __syncthreads();
    }
    tk_fa_store<DP>(tk_fa_out(dk, lay, TK_FA_DK, bh), (int)lay.row[TK_FA_DK], accK, r0, keys, d, (float)scale, (float)scale, g, t);
    tk_fa_store<DP>(tk_fa_out(dv, lay, TK_FA_DV, bh), (int)lay.row[TK_FA_DV], accV, r0, keys, d, 1.f, 1.f, g, t);
}
#else
/* float32/float64: the kernels exist (one module per dtype) but are never launched. */
#define TK_FA_BODY(...)
#endif

"""#
}
