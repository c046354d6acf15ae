// Elementwise kernels: unary ops and their gradients, binary ops with broadcasting (zero strides),
// and select. Unary, its gradient and binary move 16-byte vectors when every operand is contiguous
// and aligned (TK_VEC in the prelude), else one element per step through the strided geometry. Op codes follow the order of UnaryOp / BinaryOp (CUDABackend+Elementwise.swift).

extension CUDAKernelSources {
    static let elementwiseBody = #"""
__device__ __forceinline__ ACC tk_unary_apply(int op, ACC x, ACC p0, ACC p1) {
    const ACC one = (ACC)1, half = (ACC)0.5;
    switch (op) {
    case 0: return -x;
    case 1: return tk_exp(x);
    case 2: return tk_log(x);
    case 3: return tk_sqrt(x);
    case 4: return one / tk_sqrt(x);
    case 5: return x * x;
    case 6: return x < (ACC)0 ? -x : x;
    case 7: return tk_tanh(x);
    case 8: return one / (one + tk_exp(-x));
    case 9: return x / (one + tk_exp(-x));
    case 10: return x > (ACC)0 ? x : (ACC)0;
    case 11: return tk_sin(x);
    case 12: return tk_cos(x);
    case 13: return one / x;
    case 14: return half * x * (one + tk_erf(x * (ACC)0.7071067811865476));
    case 15: return half * x * (one + tk_tanh((ACC)0.7978845608028654 * (x + (ACC)0.044715 * x * x * x)));
    case 16: return x / (one + tk_exp((ACC)(-1.702) * x));
    case 17: return p0 == (ACC)2 ? x * x : (p0 == (ACC)0.5 ? tk_sqrt(x) : tk_pow(x, p0));
    case 18: return x + p0;
    case 19: return x * p0;
    default: return tk_min(tk_max(x, p0), p1);  /* clamp: p0 = low or -inf, p1 = high or +inf */
    }
}

__device__ __forceinline__ ACC tk_unary_grad(int op, ACC x, ACC y, ACC g, ACC p0, ACC p1) {
    const ACC one = (ACC)1, half = (ACC)0.5;
    switch (op) {
    case 0: return -g;
    case 1: return g * y;
    case 2: return g / x;
    case 3: return g * half / y;
    case 4: return -half * g * y / x;
    case 5: return (ACC)2 * x * g;
    case 6: return x > (ACC)0 ? g : (x < (ACC)0 ? -g : (ACC)0);
    case 7: return g * (one - y * y);
    case 8: return g * y * (one - y);
    case 9: { ACC s = one / (one + tk_exp(-x)); return g * s * (one + x * (one - s)); }
    case 10: return x > (ACC)0 ? g : (ACC)0;
    case 11: return g * tk_cos(x);
    case 12: return -g * tk_sin(x);
    case 13: return -g * y * y;
    case 14: return g * (half * (one + tk_erf(x * (ACC)0.7071067811865476))
                         + x * (ACC)0.3989422804014327 * tk_exp(-half * x * x));
    case 15: {
        const ACC k = (ACC)0.7978845608028654, c = (ACC)0.044715;
        ACC t = tk_tanh(k * (x + c * x * x * x));
        return g * (half * (one + t) + half * x * (one - t * t) * k * (one + (ACC)3 * c * x * x));
    }
    case 16: { ACC s = one / (one + tk_exp((ACC)(-1.702) * x)); return g * (s + (ACC)1.702 * x * s * (one - s)); }
    case 17: return g * p0 * tk_pow(x, p0 - one);
    case 18: return g;
    case 19: return g * p0;
    default: return (x >= p0 && x <= p1) ? g : (ACC)0;
    }
}

/* out (contiguous) = op(x); x is operand 0 of g. */
extern "C" __global__ void tk_unary(T* out, const T* x, int op, double p0, double p1, TKGeom g) {
    if ((g.contiguous & 1) && tk_vec_ok(out) && tk_vec_ok(x)) {
        const i64 vecs = g.count / TK_VEC;
        TK_GRID_LOOP(v, vecs) {
            const tk_vec xv = ((const tk_vec*)x)[v];
            tk_vec z;
#pragma unroll
            for (int e = 0; e < TK_VEC; ++e) tk_st(&z.e[e], tk_unary_apply(op, tk_ld(&xv.e[e]), (ACC)p0, (ACC)p1));
            ((tk_vec*)out)[v] = z;
        }
        TK_GRID_LOOP(t, g.count - vecs * TK_VEC) {
            const i64 i = vecs * TK_VEC + t;
            tk_st(out + i, tk_unary_apply(op, tk_ld(x + i), (ACC)p0, (ACC)p1));
        }
        return;
    }
    TK_GRID_LOOP(i, g.count) {
        tk_st(out + i, tk_unary_apply(op, tk_ld(x + tk_offset(g, 0, i)), (ACC)p0, (ACC)p1));
    }
}

/* out (contiguous) = d op(x) · gradOutput; x, y, gradOutput are operands 0, 1, 2. */
extern "C" __global__ void tk_unary_backward(T* out, const T* x, const T* y, const T* go, int op, double p0, double p1, TKGeom g) {
    if ((g.contiguous & 7) == 7 && tk_vec_ok(out) && tk_vec_ok(x) && tk_vec_ok(y) && tk_vec_ok(go)) {
        const i64 vecs = g.count / TK_VEC;
        TK_GRID_LOOP(v, vecs) {
            const tk_vec xv = ((const tk_vec*)x)[v], yv = ((const tk_vec*)y)[v], gv = ((const tk_vec*)go)[v];
            tk_vec z;
#pragma unroll
            for (int e = 0; e < TK_VEC; ++e)
                tk_st(&z.e[e], tk_unary_grad(op, tk_ld(&xv.e[e]), tk_ld(&yv.e[e]), tk_ld(&gv.e[e]), (ACC)p0, (ACC)p1));
            ((tk_vec*)out)[v] = z;
        }
        TK_GRID_LOOP(t, g.count - vecs * TK_VEC) {
            const i64 i = vecs * TK_VEC + t;
            tk_st(out + i, tk_unary_grad(op, tk_ld(x + i), tk_ld(y + i), tk_ld(go + i), (ACC)p0, (ACC)p1));
        }
        return;
    }
    TK_GRID_LOOP(i, g.count) {
        ACC xv = tk_ld(x + tk_offset(g, 0, i)), yv = tk_ld(y + tk_offset(g, 1, i)), gv = tk_ld(go + tk_offset(g, 2, i));
        tk_st(out + i, tk_unary_grad(op, xv, yv, gv, (ACC)p0, (ACC)p1));
    }
}

__device__ __forceinline__ ACC tk_binary_apply(int op, ACC a, ACC b) {
    switch (op) {
    case 0: return a + b;
    case 1: return a - b;
    case 2: return a * b;
    case 3: return a / b;
    case 4: return tk_pow(a, b);
    case 5: return tk_max(a, b);
    case 6: return tk_min(a, b);
    case 7: return a == b ? (ACC)1 : (ACC)0;
    case 8: return a > b ? (ACC)1 : (ACC)0;
    case 9: return a >= b ? (ACC)1 : (ACC)0;
    case 10: return a < b ? (ACC)1 : (ACC)0;
    default: return a <= b ? (ACC)1 : (ACC)0;
    }
}

/* out (contiguous) = a op b; a, b are operands 0, 1 (broadcast by zero strides). */
extern "C" __global__ void tk_binary(T* out, const T* a, const T* b, int op, TKGeom g) {
    if ((g.contiguous & 3) == 3 && tk_vec_ok(out) && tk_vec_ok(a) && tk_vec_ok(b)) {
        const i64 vecs = g.count / TK_VEC;
        TK_GRID_LOOP(v, vecs) {
            const tk_vec av = ((const tk_vec*)a)[v], bv = ((const tk_vec*)b)[v];
            tk_vec z;
#pragma unroll
            for (int e = 0; e < TK_VEC; ++e) tk_st(&z.e[e], tk_binary_apply(op, tk_ld(&av.e[e]), tk_ld(&bv.e[e])));
            ((tk_vec*)out)[v] = z;
        }
        TK_GRID_LOOP(t, g.count - vecs * TK_VEC) {
            const i64 i = vecs * TK_VEC + t;
            tk_st(out + i, tk_binary_apply(op, tk_ld(a + i), tk_ld(b + i)));
        }
        return;
    }
    /* One operand contiguous, the other constant along the innermost axis, whose length is whole
       vectors (a per-channel value over an image: a time embedding added to a [B, C, H, W]
       activation): vectors of the first, one value of the other per vector. */
    const int last = (int)g.rank - 1;
    const bool rowA = (g.contiguous & 1) && g.strides[1][last] == 0, rowB = (g.contiguous & 2) && g.strides[0][last] == 0;
    if ((rowA || rowB) && g.shape[last] % TK_VEC == 0 && tk_vec_ok(out) && tk_vec_ok(rowA ? a : b)) {
        const tk_vec* full = (const tk_vec*)(rowA ? a : b);
        const T* single = rowA ? b : a;
        TK_GRID_LOOP(v, g.count / TK_VEC) {
            const tk_vec xv = full[v];
            const ACC y = tk_ld(single + tk_offset(g, rowA ? 1 : 0, v * TK_VEC));
            tk_vec z;
#pragma unroll
            for (int e = 0; e < TK_VEC; ++e) {
                const ACC x = tk_ld(&xv.e[e]);
                tk_st(&z.e[e], rowA ? tk_binary_apply(op, x, y) : tk_binary_apply(op, y, x));
            }
            ((tk_vec*)out)[v] = z;
        }
        return;
    }
    TK_GRID_LOOP(i, g.count) {
        tk_st(out + i, tk_binary_apply(op, tk_ld(a + tk_offset(g, 0, i)), tk_ld(b + tk_offset(g, 1, i))));
    }
}

/* out (contiguous) = cond != 0 ? a : b; cond (any dtype code), a, b are operands 0, 1, 2. */
extern "C" __global__ void tk_select(T* out, const void* cond, int condCode, const T* a, const T* b, TKGeom g) {
    TK_GRID_LOOP(i, g.count) {
        bool c = tk_load_any(cond, tk_offset(g, 0, i), condCode) != 0.0;
        out[i] = c ? a[tk_offset(g, 1, i)] : b[tk_offset(g, 2, i)];
    }
}

/* diffusers' GEGLU on a projection's output h [rows, 2·inner] (the GEMM without its bias; bias
   [2·inner] or null): a = h[r, j] + bias[j], g = h[r, inner + j] + bias[inner + j]. One thread per
   output element, 32-bit index arithmetic when `small` (rows·2·inner < 2^31); a vector of TK_VEC
   elements of one row per thread and step when inner is a whole number of vectors and every operand
   is 16-byte aligned. The bias adds, the gelu and the product happen in ACC and round once, where
   the unfused ops round three times. */
__device__ __forceinline__ void tk_geglu_place(i64 i, i64 inner, int small, i64* row, i64* col) {
    if (small) {
        const unsigned ui = (unsigned)i, un = (unsigned)inner, r = ui / un;
        *row = (i64)r; *col = (i64)(ui - r * un);
    } else {
        *row = i / inner; *col = i - *row * inner;
    }
}
__device__ __forceinline__ ACC tk_geglu_value(ACC a, ACC g) {
    return a * g * (ACC)0.5 * ((ACC)1 + tk_erf(g * (ACC)0.7071067811865476));
}
/* The two gradients: da = go · gelu(g), dg = go · a · gelu′(g) with gelu′(g) = Φ(g) + g · φ(g). */
__device__ __forceinline__ void tk_geglu_grads(ACC d, ACC a, ACC g, ACC* da, ACC* dg) {
    const ACC half = (ACC)0.5;
    const ACC cdf = half * ((ACC)1 + tk_erf(g * (ACC)0.7071067811865476));
    const ACC pdf = (ACC)0.3989422804014327 * tk_exp(-half * g * g);
    *da = d * g * cdf;
    *dg = d * a * (cdf + g * pdf);
}
__device__ __forceinline__ bool tk_geglu_vectors(const void* p, const void* q, const void* r, const void* s, i64 inner) {
    return inner % TK_VEC == 0 && tk_vec_ok(p) && tk_vec_ok(q) && tk_vec_ok(r) && tk_vec_ok(s);
}
/* Row r's vectors at column j: a and g from h, their bias vectors (when there is a bias). */
struct tk_geglu_in { tk_vec a, g, ba, bg; };
__device__ __forceinline__ tk_geglu_in tk_geglu_load(const T* h, const T* bias, i64 r, i64 j, i64 inner) {
    tk_geglu_in in;
    const T* p = h + r * 2 * inner + j;
    in.a = *(const tk_vec*)p;
    in.g = *(const tk_vec*)(p + inner);
    if (bias) { in.ba = *(const tk_vec*)(bias + j); in.bg = *(const tk_vec*)(bias + inner + j); }
    return in;
}

/* out [rows, inner] = a · gelu(g), gelu exact: g · Φ(g). */
extern "C" __global__ void tk_geglu_forward(T* out, const T* h, const T* bias, i64 rows, i64 inner, int small) {
    if (tk_geglu_vectors(out, h, bias, h, inner)) {
        TK_GRID_LOOP(v, rows * inner / TK_VEC) {
            i64 r, j;
            tk_geglu_place(v * TK_VEC, inner, small, &r, &j);
            const tk_geglu_in in = tk_geglu_load(h, bias, r, j, inner);
            tk_vec z;
#pragma unroll
            for (int e = 0; e < TK_VEC; ++e) {
                ACC a = tk_ld(&in.a.e[e]), g = tk_ld(&in.g.e[e]);
                if (bias) { a += tk_ld(&in.ba.e[e]); g += tk_ld(&in.bg.e[e]); }
                tk_st(&z.e[e], tk_geglu_value(a, g));
            }
            ((tk_vec*)out)[v] = z;
        }
        return;
    }
    TK_GRID_LOOP(i, rows * inner) {
        i64 r, j;
        tk_geglu_place(i, inner, small, &r, &j);
        const T* p = h + r * 2 * inner + j;
        ACC a = tk_ld(p), g = tk_ld(p + inner);
        if (bias) { a += tk_ld(bias + j); g += tk_ld(bias + inner + j); }
        tk_st(out + i, tk_geglu_value(a, g));
    }
}

/* dh [rows, 2·inner]: go · gelu(g) in the first half, go · a · gelu′(g) in the second. */
extern "C" __global__ void tk_geglu_backward(T* dh, const T* go, const T* h, const T* bias, i64 rows, i64 inner, int small) {
    if (tk_geglu_vectors(dh, go, h, bias, inner)) {
        TK_GRID_LOOP(v, rows * inner / TK_VEC) {
            i64 r, j;
            tk_geglu_place(v * TK_VEC, inner, small, &r, &j);
            const tk_geglu_in in = tk_geglu_load(h, bias, r, j, inner);
            const tk_vec dv = ((const tk_vec*)go)[v];
            tk_vec za, zg;
#pragma unroll
            for (int e = 0; e < TK_VEC; ++e) {
                ACC a = tk_ld(&in.a.e[e]), g = tk_ld(&in.g.e[e]), da, dg;
                if (bias) { a += tk_ld(&in.ba.e[e]); g += tk_ld(&in.bg.e[e]); }
                tk_geglu_grads(tk_ld(&dv.e[e]), a, g, &da, &dg);
                tk_st(&za.e[e], da);
                tk_st(&zg.e[e], dg);
            }
            T* row = dh + r * 2 * inner + j;
            *(tk_vec*)row = za;
            *(tk_vec*)(row + inner) = zg;
        }
        return;
    }
    TK_GRID_LOOP(i, rows * inner) {
        i64 r, j;
        tk_geglu_place(i, inner, small, &r, &j);
        const T* p = h + r * 2 * inner + j;
        ACC a = tk_ld(p), g = tk_ld(p + inner), da, dg;
        if (bias) { a += tk_ld(bias + j); g += tk_ld(bias + inner + j); }
        tk_geglu_grads(tk_ld(go + i), a, g, &da, &dg);
        T* row = dh + r * 2 * inner + j;
        tk_st(row, da);
        tk_st(row + inner, dg);
    }
}
"""#
}
