// Convolution helpers (im2col / col2im for GEMM-based conv2d, bias add) and embedding
// gather / scatter-add.

extension CUDAKernelSources {
    static let convBody = #"""
/* Geometry of one conv2d: input [n, c, h, w], kernel kh×kw, output oh×ow. */
struct TKConv {
    i64 n, c, h, w, kh, kw, oh, ow;
    i64 sh, sw, ph, pw, dh, dw;
};

/* input [n, c, h, w] -> col [n, c·kh·kw, L] for the output pixels l0 … l0+L-1 (all oh·ow of them,
   or a band of whole output rows), zeros where the window leaves the image.
   One thread per (image, channel, output pixel) writes that pixel's kh·kw column entries, so the
   index arithmetic (32-bit when `small`, i.e. every index < 2^31) is paid once per kh·kw values;
   consecutive threads read and write consecutive pixels. */
extern "C" __global__ void tk_im2col(T* col, const T* input, TKConv g, int small, i64 l0, i64 L) {
    const i64 rowsPerImage = g.c * g.kh * g.kw;
    TK_GRID_LOOP(i, g.n * g.c * L) {
        i64 l, c, n, oy, ox;
        if (small) {
            const unsigned ui = (unsigned)i, uL = (unsigned)L, uc = (unsigned)g.c;
            l = ui % uL; c = (ui / uL) % uc; n = ui / (uL * uc);
            const unsigned p = (unsigned)(l0 + l);
            oy = p / (unsigned)g.ow; ox = p - (unsigned)oy * (unsigned)g.ow;
        } else {
            l = i % L; c = (i / L) % g.c; n = i / (L * g.c);
            oy = (l0 + l) / g.ow; ox = (l0 + l) % g.ow;
        }
        const T* image = input + (n * g.c + c) * g.h * g.w;
        T* out = col + (n * rowsPerImage + c * g.kh * g.kw) * L + l;
        const i64 y0 = oy * g.sh - g.ph, x0 = ox * g.sw - g.pw;
        for (i64 ki = 0; ki < g.kh; ++ki) {
            const i64 y = y0 + ki * g.dh;
            for (i64 kj = 0; kj < g.kw; ++kj) {
                const i64 x = x0 + kj * g.dw;
                T value;
                if (y >= 0 && y < g.h && x >= 0 && x < g.w) value = image[y * g.w + x];
                else tk_st(&value, (ACC)0);
                out[(ki * g.kw + kj) * L] = value;
            }
        }
    }
}

/* col [n, c·kh·kw, oh·ow] -> image [n, c, h, w]: each pixel gathers the window positions that
   read it (no atomics, deterministic). The pixel's coordinates come from 32-bit division when
   `small` (every index < 2^31); the taps use int arithmetic and skip the stride division for
   stride 1. Rows above the pixel end the kernel-row loop early (ty only decreases with ki). */
extern "C" __global__ void tk_col2im(T* image, const T* col, TKConv g, int small) {
    const i64 L = g.oh * g.ow, rowsPerImage = g.c * g.kh * g.kw;
    const int kh = (int)g.kh, kw = (int)g.kw, oh = (int)g.oh, ow = (int)g.ow;
    const int sh = (int)g.sh, sw = (int)g.sw, ph = (int)g.ph, pw = (int)g.pw, dh = (int)g.dh, dw = (int)g.dw;
    TK_GRID_LOOP(i, g.n * g.c * g.h * g.w) {
        int x, y;
        i64 c, n;
        if (small) {
            const u32 ui = (u32)i, uw = (u32)g.w, uh = (u32)g.h, uc = (u32)g.c;
            u32 t = ui / uw;
            x = (int)(ui - t * uw);
            u32 t2 = t / uh;
            y = (int)(t - t2 * uh);
            c = (i64)(t2 % uc); n = (i64)(t2 / uc);
        } else {
            x = (int)(i % g.w); y = (int)((i / g.w) % g.h); c = (i / (g.w * g.h)) % g.c; n = i / (g.w * g.h * g.c);
        }
        const T* window = col + (n * rowsPerImage + c * g.kh * g.kw) * L;
        ACC s = (ACC)0;
        for (int ki = 0; ki < kh; ++ki) {
            const int ty = y + ph - ki * dh;
            if (ty < 0) break;
            int oy = ty;
            if (sh != 1) { if (ty % sh != 0) continue; oy = ty / sh; }
            if (oy >= oh) continue;
            for (int kj = 0; kj < kw; ++kj) {
                const int tx = x + pw - kj * dw;
                if (tx < 0) break;
                int ox = tx;
                if (sw != 1) { if (tx % sw != 0) continue; ox = tx / sw; }
                if (ox >= ow) continue;
                s += tk_ld(window + (i64)(ki * kw + kj) * L + (i64)oy * ow + ox);
            }
        }
        tk_st(image + i, s);
    }
}

/* out[i] = (x[i] + bias[(i / inner) % channels]) + residual[i] in ACC, stored once: a convolution's
   bias (inner = spatial size) or a linear layer's (inner = 1), with the residual add of the block
   that follows fused in. bias and residual may be null; out may be x. 32-bit index arithmetic
   when count < 2^31. */
__device__ __forceinline__ i64 tk_bias_channel(i64 i, i64 channels, i64 inner, bool small) {
    return small ? (i64)(((u32)i / (u32)inner) % (u32)channels) : (i / inner) % channels;
}

extern "C" __global__ void tk_bias_residual(T* out, const T* x, const T* bias, const T* residual,
                                            i64 count, i64 channels, i64 inner) {
    const bool small = count < 2147483648LL;
    if (tk_vec_ok(out) && tk_vec_ok(x) && tk_vec_ok(residual)) {
        /* 16-byte vectors of x, residual and out; the bias (small, cached) element by element. */
        const i64 vecs = count / TK_VEC;
        TK_GRID_LOOP(w, vecs) {
            const tk_vec xv = ((const tk_vec*)x)[w];
            tk_vec rv, z;
            if (residual) rv = ((const tk_vec*)residual)[w];
#pragma unroll
            for (int e = 0; e < TK_VEC; ++e) {
                ACC v = tk_ld(&xv.e[e]);
                if (bias) v = v + tk_ld(bias + tk_bias_channel(w * TK_VEC + e, channels, inner, small));
                if (residual) v = v + tk_ld(&rv.e[e]);
                tk_st(&z.e[e], v);
            }
            ((tk_vec*)out)[w] = z;
        }
        TK_GRID_LOOP(t, count - vecs * TK_VEC) {
            const i64 i = vecs * TK_VEC + t;
            ACC v = tk_ld(x + i);
            if (bias) v = v + tk_ld(bias + tk_bias_channel(i, channels, inner, small));
            if (residual) v = v + tk_ld(residual + i);
            tk_st(out + i, v);
        }
        return;
    }
    TK_GRID_LOOP(i, count) {
        ACC v = tk_ld(x + i);
        if (bias) v = v + tk_ld(bias + tk_bias_channel(i, channels, inner, small));
        if (residual) v = v + tk_ld(residual + i);
        tk_st(out + i, v);
    }
}
"""#

    static let embeddingBody = #"""
__device__ __forceinline__ i64 tk_index(const void* indices, int code, i64 i) {
    return code == 4 ? (i64)((const int*)indices)[i] : ((const i64*)indices)[i];
}

/* out [count, width] = weight[indices[i], :]; indices int32 (code 4) or int64 (code 5), checked on the host. */
extern "C" __global__ void tk_embedding_forward(T* out, const T* weight, const void* indices, int code, i64 count, i64 width) {
    TK_GRID_LOOP(i, count * width) {
        i64 row = tk_index(indices, code, i / width);
        out[i] = weight[row * width + i % width];
    }
}

/* out [V, width] (zeroed) += rows of gradOutput: one thread per column walks the indices in order,
   so repeated indices never race and sums are deterministic. */
extern "C" __global__ void tk_embedding_backward(T* out, const T* go, const void* indices, int code, i64 count, i64 width) {
    TK_GRID_LOOP(j, width) {
        for (i64 i = 0; i < count; ++i) {
            T* dst = out + tk_index(indices, code, i) * width + j;
            tk_st(dst, tk_ld(dst) + tk_ld(go + i * width + j));
        }
    }
}
"""#
}
