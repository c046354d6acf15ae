// Dtype-independent kernels: strided copy with conversion (and its vectorised and tiled-transpose
// forms), fill, and Philox random fill.

extension CUDAKernelSources {
    static let memoryBody = #"""
/* Sixteen bytes moved as one unit: same-dtype copies whose rows are runs of whole, aligned 16-byte
   units go as such (the host folds elements into units; `CUDAGeometry.vectorized`). */
struct __align__(16) tk_u128 { u64 lo, hi; };

/* dst (operand 0) <- src (operand 1), converting between dtype codes; same-dtype copies move raw
   bits so integers and NaN payloads survive. elementSize: the unit moved when the codes are equal
   (1, 2, 4, 8 or 16 bytes). */
extern "C" __global__ void tk_copy(void* dst, int dstCode, const void* src, int srcCode, int elementSize, TKGeom g) {
    TK_GRID_LOOP(i, g.count) {
        i64 d = tk_offset(g, 0, i), s = tk_offset(g, 1, i);
        if (dstCode == srcCode) {
            switch (elementSize) {
            case 16: ((tk_u128*)dst)[d] = ((const tk_u128*)src)[s]; break;
            case 8: ((u64*)dst)[d] = ((const u64*)src)[s]; break;
            case 4: ((u32*)dst)[d] = ((const u32*)src)[s]; break;
            case 2: ((u16*)dst)[d] = ((const u16*)src)[s]; break;
            default: ((unsigned char*)dst)[d] = ((const unsigned char*)src)[s]; break;
            }
        } else {
            tk_store_any(dst, d, dstCode, tk_load_any(src, s, srcCode));
        }
    }
}

/* A batch of matrices whose unit strides differ, moved as raw E-sized elements: dst[b, p, q] at
   b·db + p·dp + q and src[b, p, q] at b·sb + p + q·sq. A block of 256 threads moves one (b, 32 p,
   32 q) tile through shared memory, reading along p and writing along q, so both sides are
   coalesced (the generic copy reads one of them a whole stride apart per thread). */
template <typename E>
__device__ __forceinline__ void tk_transpose_tile(E* dst, const E* src, E (*tile)[33], i64 P, i64 Q,
                                                  i64 db, i64 dp, i64 sb, i64 sq) {
    const i64 tilesP = (P + 31) / 32, tilesQ = (Q + 31) / 32;
    const i64 blk = blockIdx.x, b = blk / (tilesP * tilesQ), rest = blk - b * (tilesP * tilesQ);
    const i64 p0 = (rest / tilesQ) * 32, q0 = (rest % tilesQ) * 32;
    const int tx = threadIdx.x & 31, ty = threadIdx.x >> 5;
    const E* s = src + b * sb;
    E* d = dst + b * db;
    for (int j = ty; j < 32; j += 8) {
        if (q0 + j < Q && p0 + tx < P) tile[j][tx] = s[(q0 + j) * sq + p0 + tx];
    }
    __syncthreads();
    for (int j = ty; j < 32; j += 8) {
        if (p0 + j < P && q0 + tx < Q) d[(p0 + j) * dp + q0 + tx] = tile[tx][j];
    }
}

/* Grid: batches · ceil(P / 32) · ceil(Q / 32) blocks of 256 threads; elementSize 2, 4 or 8. */
extern "C" __global__ void tk_copy_transpose(void* dst, const void* src, int elementSize, i64 P, i64 Q,
                                             i64 db, i64 dp, i64 sb, i64 sq) {
    __shared__ u64 raw[32 * 33];
    switch (elementSize) {
    case 8: tk_transpose_tile<u64>((u64*)dst, (const u64*)src, (u64 (*)[33])raw, P, Q, db, dp, sb, sq); break;
    case 4: tk_transpose_tile<u32>((u32*)dst, (const u32*)src, (u32 (*)[33])raw, P, Q, db, dp, sb, sq); break;
    default: tk_transpose_tile<u16>((u16*)dst, (const u16*)src, (u16 (*)[33])raw, P, Q, db, dp, sb, sq); break;
    }
}

extern "C" __global__ void tk_fill(void* dst, int code, double value, TKGeom g) {
    TK_GRID_LOOP(i, g.count) { tk_store_any(dst, tk_offset(g, 0, i), code, value); }
}

/* Contiguous dst: element i from Philox block offset + i/4, lane i%4 (Philox.fill). normal != 0:
   Box-Muller on lane pairs with (a, b) = (mean, std); else uniform in [a, b). Computed in double
   like the CPU, then stored as the CPU stores it. */
extern "C" __global__ void tk_random(void* dst, int code, i64 count, u64 seed, u64 offset, int normal, double a, double b) {
    i64 blocks = (count + 3) / 4;
    TK_GRID_LOOP(blk, blocks) {
        tk_u32x4 w = tk_philox(seed, offset + (u64)blk);
        double lanes[4];
        if (normal) {
            double r0 = sqrt(-2.0 * log(tk_uniform_open(w.x))), a0 = 2.0 * 3.141592653589793 * tk_uniform(w.y);
            double r1 = sqrt(-2.0 * log(tk_uniform_open(w.z))), a1 = 2.0 * 3.141592653589793 * tk_uniform(w.w);
            lanes[0] = a + b * r0 * cos(a0); lanes[1] = a + b * r0 * sin(a0);
            lanes[2] = a + b * r1 * cos(a1); lanes[3] = a + b * r1 * sin(a1);
        } else {
            double span = b - a;
            lanes[0] = a + span * tk_uniform(w.x); lanes[1] = a + span * tk_uniform(w.y);
            lanes[2] = a + span * tk_uniform(w.z); lanes[3] = a + span * tk_uniform(w.w);
        }
        for (int l = 0; l < 4; ++l) {
            i64 i = blk * 4 + l;
            if (i < count) tk_store_any(dst, i, code, lanes[l]);
        }
    }
}
"""#
}
