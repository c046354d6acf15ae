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
/* Mean and 1/sqrt(var + eps) of n contiguous values, corrected two-pass (as CPUNorm.swift). */
__device__ void tk_moments(const T* x, i64 n, double eps, double* scratch, double* meanOut, double* rstdOut) {
    double s = 0.0;
    for (i64 i = threadIdx.x; i < n; i += blockDim.x) s += (double)tk_ld(x + i);
    double first = tk_block_sum(s, scratch) / (double)n;
    ACC m1 = (ACC)first;
    double d1 = 0.0, d2 = 0.0;
    for (i64 i = threadIdx.x; i < n; i += blockDim.x) {
        double d = (double)(tk_ld(x + i) - m1);
        d1 += d; d2 += d * d;
    }
    d1 = tk_block_sum(d1, scratch);
    d2 = tk_block_sum(d2, scratch);
    double shift = d1 / (double)n;
    double var = d2 / (double)n - shift * shift;
    if (var < 0.0) var = 0.0;
    *meanOut = (double)m1 + shift;
    *rstdOut = 1.0 / sqrt(var + eps);
}

/* x [N, C, S] contiguous, one block per (n, group) of C/G·S contiguous elements; mean/rstd [N·G]. */
extern "C" __global__ void tk_group_norm_forward(T* y, ACC* meanOut, ACC* rstdOut, const T* x, const T* w, const T* b,
                                                 i64 blocks, i64 channels, i64 groups, i64 spatial, double eps) {
    __shared__ double scratch[32];
    i64 per = channels / groups, size = per * spatial;
    for (i64 blk = blockIdx.x; blk < blocks; blk += gridDim.x) {
        const T* xb = x + blk * size;
        T* yb = y + blk * size;
        double mean, rstd;
        tk_moments(xb, size, eps, scratch, &mean, &rstd);
        ACC m = (ACC)mean, r = (ACC)rstd;
        if (threadIdx.x == 0) { meanOut[blk] = m; rstdOut[blk] = r; }
        i64 c0 = (blk % groups) * per;
        for (i64 i = threadIdx.x; i < size; i += blockDim.x) {
            i64 c = c0 + i / spatial;
            ACC scale = w ? r * tk_ld(w + c) : r;
            ACC shift = b ? tk_ld(b + c) : (ACC)0;
            tk_st(yb + i, (tk_ld(xb + i) - m) * scale + shift);
        }
        __syncthreads();
    }
}

/* dx for group norm: with dŷ = g·w, dx = r·dŷ - r·mean(dŷ) - r³·mean(dŷ·(x-μ))·(x-μ). */
extern "C" __global__ void tk_group_norm_backward(T* dx, const T* go, const T* x, const T* w, const ACC* meanIn, const ACC* rstdIn,
                                                  i64 blocks, i64 channels, i64 groups, i64 spatial) {
    __shared__ double scratch[32];
    i64 per = channels / groups, size = per * spatial;
    for (i64 blk = blockIdx.x; blk < blocks; blk += gridDim.x) {
        const T* gb = go + blk * size;
        const T* xb = x + blk * size;
        T* db = dx + blk * size;
        ACC m = meanIn[blk];
        double r = (double)rstdIn[blk];
        i64 c0 = (blk % groups) * per;
        double s1 = 0.0, s2 = 0.0;
        for (i64 i = threadIdx.x; i < size; i += blockDim.x) {
            ACC wc = w ? tk_ld(w + c0 + i / spatial) : (ACC)1;
            ACC gv = tk_ld(gb + i) * wc;
            s1 += (double)gv;
            s2 += (double)(gv * (tk_ld(xb + i) - m));
        }
        s1 = tk_block_sum(s1, scratch);
        s2 = tk_block_sum(s2, scratch);
        double count = (double)size;
        ACC bco = (ACC)(-r * r * r * s2 / count), cco = (ACC)(-r * s1 / count);
        for (i64 i = threadIdx.x; i < size; i += blockDim.x) {
            ACC wc = w ? tk_ld(w + c0 + i / spatial) : (ACC)1;
            tk_st(db + i, tk_ld(gb + i) * (ACC)(r * (double)wc) + (tk_ld(xb + i) - m) * bco + cco);
        }
        __syncthreads();
    }
}

/* dw[c] = Σ_n Σ_s g·(x-μ)·r and db[c] = Σ_n Σ_s g: one block per channel. */
extern "C" __global__ void tk_group_norm_params(T* dw, T* dbias, const T* go, const T* x, const ACC* meanIn, const ACC* rstdIn,
                                                i64 n, i64 channels, i64 groups, i64 spatial) {
    __shared__ double scratch[32];
    i64 per = channels / groups;
    for (i64 c = blockIdx.x; c < channels; c += gridDim.x) {
        double sw = 0.0, sb = 0.0;
        for (i64 e = threadIdx.x; e < n * spatial; e += blockDim.x) {
            i64 ni = e / spatial, s = e % spatial;
            i64 blk = (ni * channels + c) / per;
            i64 at = (ni * channels + c) * spatial + s;
            ACC gv = tk_ld(go + at);
            sw += (double)(gv * (tk_ld(x + at) - meanIn[blk])) * (double)rstdIn[blk];
            sb += (double)gv;
        }
        sw = tk_block_sum(sw, scratch);
        sb = tk_block_sum(sb, scratch);
        if (threadIdx.x == 0) { tk_st(dw + c, (ACC)sw); tk_st(dbias + c, (ACC)sb); }
        __syncthreads();
    }
}

/* x [rows, count] contiguous, one block per row; w/b [count] optional. */
extern "C" __global__ void tk_layer_norm_forward(T* y, ACC* meanOut, ACC* rstdOut, const T* x, const T* w, const T* b,
                                                 i64 rows, i64 count, double eps) {
    __shared__ double scratch[32];
    for (i64 row = blockIdx.x; row < rows; row += gridDim.x) {
        const T* xr = x + row * count;
        T* yr = y + row * count;
        double mean, rstd;
        tk_moments(xr, count, eps, scratch, &mean, &rstd);
        ACC m = (ACC)mean, r = (ACC)rstd;
        if (threadIdx.x == 0) { meanOut[row] = m; rstdOut[row] = r; }
        for (i64 i = threadIdx.x; i < count; i += blockDim.x) {
            ACC v = (tk_ld(xr + i) - m) * r;
            if (w) v *= tk_ld(w + i);
            if (b) v += tk_ld(b + i);
            tk_st(yr + i, v);
        }
        __syncthreads();
    }
}

extern "C" __global__ void tk_layer_norm_backward(T* dx, const T* go, const T* x, const T* w, const ACC* meanIn, const ACC* rstdIn,
                                                  i64 rows, i64 count) {
    __shared__ double scratch[32];
    for (i64 row = blockIdx.x; row < rows; row += gridDim.x) {
        const T* gr = go + row * count;
        const T* xr = x + row * count;
        T* dr = dx + row * count;
        ACC m = meanIn[row];
        double r = (double)rstdIn[row];
        double s1 = 0.0, s2 = 0.0;
        for (i64 i = threadIdx.x; i < count; i += blockDim.x) {
            ACC gv = tk_ld(gr + i) * (w ? tk_ld(w + i) : (ACC)1);
            s1 += (double)gv;
            s2 += (double)(gv * (tk_ld(xr + i) - m));
        }
        s1 = tk_block_sum(s1, scratch);
        s2 = tk_block_sum(s2, scratch);
        double n = (double)count;
        ACC bco = (ACC)(-r * r * r * s2 / n), cco = (ACC)(-r * s1 / n);
        for (i64 i = threadIdx.x; i < count; i += blockDim.x) {
            ACC wv = w ? tk_ld(w + i) : (ACC)1;
            tk_st(dr + i, tk_ld(gr + i) * (ACC)(r * (double)wv) + (tk_ld(xr + i) - m) * bco + cco);
        }
        __syncthreads();
    }
}

/* dw[j] = Σ_rows g·(x-μ)·r, db[j] = Σ_rows g: one thread per column, rows in order. */
extern "C" __global__ void tk_layer_norm_params(T* dw, T* dbias, const T* go, const T* x, const ACC* meanIn, const ACC* rstdIn,
                                                i64 rows, i64 count) {
    TK_GRID_LOOP(j, count) {
        double sw = 0.0, sb = 0.0;
        for (i64 row = 0; row < rows; ++row) {
            ACC gv = tk_ld(go + row * count + j);
            sw += (double)(gv * (tk_ld(x + row * count + j) - meanIn[row])) * (double)rstdIn[row];
            sb += (double)gv;
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
