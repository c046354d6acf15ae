// Dtype-independent kernels: strided copy with conversion, fill, and Philox random fill.

extension CUDAKernelSources {
    static let memoryBody = #"""
/* dst (operand 0) <- src (operand 1), converting between dtype codes; same-dtype copies move raw
   bits so integers and NaN payloads survive. */
extern "C" __global__ void tk_copy(void* dst, int dstCode, const void* src, int srcCode, int elementSize, TKGeom g) {
    TK_GRID_LOOP(i, g.count) {
        i64 d = tk_offset(g, 0, i), s = tk_offset(g, 1, i);
        if (dstCode == srcCode) {
            switch (elementSize) {
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
