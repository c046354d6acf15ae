// Shared CUDA C prelude: integer types, 16-bit float storage types and conversions, the strided
// geometry, block reductions and Philox4x32-10. Prefixed to every kernel family.

extension CUDAKernelSources {
    static let prelude = #"""
typedef long long i64;
typedef unsigned long long u64;
typedef unsigned int u32;
typedef unsigned short u16;

struct tk_half { u16 bits; };
struct tk_bf16 { u16 bits; };

__device__ __forceinline__ float tk_half_to_float(u16 h) {
    float f;
    asm("cvt.f32.f16 %0, %1;" : "=f"(f) : "h"(h));
    return f;
}
__device__ __forceinline__ u16 tk_float_to_half(float f) {
    u16 h;
    asm("cvt.rn.f16.f32 %0, %1;" : "=h"(h) : "f"(f));
    return h;
}
__device__ __forceinline__ float tk_bf16_to_float(u16 b) { return __uint_as_float(((u32)b) << 16); }
/* Round to nearest even, NaN kept quiet: the CPU's bfloat16Bits exactly. */
__device__ __forceinline__ u16 tk_float_to_bf16(float f) {
    u32 bits = __float_as_uint(f);
    if (f != f) return (u16)((bits >> 16) | 0x0040u);
    u32 rounding = 0x7FFFu + ((bits >> 16) & 1u);
    return (u16)((bits + rounding) >> 16);
}

/* Typed loads and stores between storage and accumulation types. */
__device__ __forceinline__ float tk_ld(const float* p) { return *p; }
__device__ __forceinline__ double tk_ld(const double* p) { return *p; }
__device__ __forceinline__ float tk_ld(const tk_half* p) { return tk_half_to_float(p->bits); }
__device__ __forceinline__ float tk_ld(const tk_bf16* p) { return tk_bf16_to_float(p->bits); }
__device__ __forceinline__ void tk_st(float* p, float v) { *p = v; }
__device__ __forceinline__ void tk_st(double* p, double v) { *p = v; }
__device__ __forceinline__ void tk_st(tk_half* p, float v) { p->bits = tk_float_to_half(v); }
__device__ __forceinline__ void tk_st(tk_bf16* p, float v) { p->bits = tk_float_to_bf16(v); }

#if TK_DTYPE == 1
typedef double T;
typedef double ACC;
#define TK_INF __longlong_as_double(0x7FF0000000000000LL)
#elif TK_DTYPE == 2
typedef tk_half T;
typedef float ACC;
#define TK_INF __int_as_float(0x7F800000)
#elif TK_DTYPE == 3
typedef tk_bf16 T;
typedef float ACC;
#define TK_INF __int_as_float(0x7F800000)
#else
typedef float T;
typedef float ACC;
#define TK_INF __int_as_float(0x7F800000)
#endif

/* TK_VEC elements of T in 16 bytes. Elementwise kernels whose operands are all contiguous and
   16-byte aligned load and store a vector per thread and step: one 2-byte access per thread keeps
   too few bytes in flight to fill the memory bus. The host sizes their grids the same way
   (`CUDADeviceContext.elementGrid`). tk_vec_ok: p may be read a vector at a time (a null operand
   may); never with TK_NO_VECTORS (`CUDA.vectorAccess` off). */
#define TK_VEC (16 / (int)sizeof(T))
struct __align__(16) tk_vec { T e[16 / sizeof(T)]; };
__device__ __forceinline__ bool tk_vec_ok(const void* p) {
#ifdef TK_NO_VECTORS
    return false;
#else
    return (((u64)p) & 15u) == 0;
#endif
}

/* Math on the accumulation type (explicit float/double entry points). */
__device__ __forceinline__ float tk_exp(float x) { return expf(x); }
__device__ __forceinline__ double tk_exp(double x) { return exp(x); }
__device__ __forceinline__ float tk_log(float x) { return logf(x); }
__device__ __forceinline__ double tk_log(double x) { return log(x); }
__device__ __forceinline__ float tk_sqrt(float x) { return sqrtf(x); }
__device__ __forceinline__ double tk_sqrt(double x) { return sqrt(x); }
__device__ __forceinline__ float tk_tanh(float x) { return tanhf(x); }
__device__ __forceinline__ double tk_tanh(double x) { return tanh(x); }
__device__ __forceinline__ float tk_sin(float x) { return sinf(x); }
__device__ __forceinline__ double tk_sin(double x) { return sin(x); }
__device__ __forceinline__ float tk_cos(float x) { return cosf(x); }
__device__ __forceinline__ double tk_cos(double x) { return cos(x); }
__device__ __forceinline__ float tk_erf(float x) { return erff(x); }
__device__ __forceinline__ double tk_erf(double x) { return erf(x); }
__device__ __forceinline__ float tk_pow(float x, float y) { return powf(x, y); }
__device__ __forceinline__ double tk_pow(double x, double y) { return pow(x, y); }
__device__ __forceinline__ bool tk_isnan(float x) { return x != x; }
__device__ __forceinline__ bool tk_isnan(double x) { return x != x; }
/* max/min that propagate NaN, like the CPU backend. */
template <typename A> __device__ __forceinline__ A tk_max(A a, A b) { return (tk_isnan(a) || tk_isnan(b)) ? a + b : (a > b ? a : b); }
template <typename A> __device__ __forceinline__ A tk_min(A a, A b) { return (tk_isnan(a) || tk_isnan(b)) ? a + b : (a < b ? a : b); }

/* Dtype codes (CUDAKernelSources.code): 0 f32, 1 f64, 2 f16, 3 bf16, 4 i32, 5 i64, 6 u8, 7 bool.
   Runtime-typed access for copies, fills and random numbers, converting like the CPU's
   loadScalar/storeScalar (16-bit floats go through float32). */
__device__ __forceinline__ double tk_load_any(const void* base, i64 i, int code) {
    switch (code) {
    case 0: return (double)((const float*)base)[i];
    case 1: return ((const double*)base)[i];
    case 2: return (double)tk_half_to_float(((const u16*)base)[i]);
    case 3: return (double)tk_bf16_to_float(((const u16*)base)[i]);
    case 4: return (double)((const int*)base)[i];
    case 5: return (double)((const i64*)base)[i];
    case 6: return (double)((const unsigned char*)base)[i];
    default: return ((const unsigned char*)base)[i] != 0 ? 1.0 : 0.0;
    }
}
__device__ __forceinline__ void tk_store_any(void* base, i64 i, int code, double v) {
    switch (code) {
    case 0: ((float*)base)[i] = (float)v; break;
    case 1: ((double*)base)[i] = v; break;
    case 2: ((u16*)base)[i] = tk_float_to_half((float)v); break;
    case 3: ((u16*)base)[i] = tk_float_to_bf16((float)v); break;
    case 4: ((int*)base)[i] = (int)v; break;
    case 5: ((i64*)base)[i] = (i64)v; break;
    case 6: ((unsigned char*)base)[i] = (unsigned char)(v < 0.0 ? 0.0 : (v > 255.0 ? 255.0 : v)); break;
    default: ((unsigned char*)base)[i] = v != 0.0 ? 1 : 0; break;
    }
}

/* Strided geometry of up to 4 operands over one shape (host: CUDAGeometry). Operand k's element
   for linear index i (row-major over `shape`) is at sum(coord[a] * strides[k][a]); bit k of
   `contiguous` says operand k is laid out row-major, so its offset is i itself. */
#define TK_MAX_RANK 8
struct TKGeom {
    i64 rank;
    i64 count;
    i64 contiguous;
    i64 shape[TK_MAX_RANK];
    i64 strides[4][TK_MAX_RANK];
};
__device__ __forceinline__ i64 tk_offset(const TKGeom& g, int k, i64 linear) {
    if ((g.contiguous >> k) & 1) return linear;
    i64 off = 0;
    if (g.count <= 0x7FFFFFFFLL) {
        /* Every coordinate fits 32 bits: unsigned 32-bit division is several times cheaper than
           the 64-bit one, which the GPU emulates. The outermost coordinate needs no division. */
        u32 rest = (u32)linear;
        for (int a = (int)g.rank - 1; a > 0; --a) {
            u32 s = (u32)g.shape[a], q = rest / s;
            off += (i64)(rest - q * s) * g.strides[k][a];
            rest = q;
        }
        return off + (i64)rest * g.strides[k][0];
    }
    for (int a = (int)g.rank - 1; a >= 0; --a) {
        i64 s = g.shape[a];
        i64 c = linear % s;
        linear /= s;
        off += c * g.strides[k][a];
    }
    return off;
}

#define TK_GRID_LOOP(i, n) for (i64 i = (i64)blockIdx.x * blockDim.x + threadIdx.x; i < (n); i += (i64)blockDim.x * gridDim.x)

/* Sum over the block (blockDim.x a multiple of 32, at most 1024); every thread gets the total.
   `scratch` holds 32 values. */
template <typename A> __device__ __forceinline__ A tk_warp_sum(A v) {
    for (int o = 16; o > 0; o >>= 1) v += __shfl_xor_sync(0xffffffffu, v, o);
    return v;
}
template <typename A> __device__ __forceinline__ A tk_warp_max(A v) {
    for (int o = 16; o > 0; o >>= 1) v = tk_max(v, __shfl_xor_sync(0xffffffffu, v, o));
    return v;
}
template <typename A> __device__ A tk_block_sum(A v, A* scratch) {
    int lane = threadIdx.x & 31, warp = threadIdx.x >> 5, warps = (blockDim.x + 31) >> 5;
    v = tk_warp_sum(v);
    __syncthreads();
    if (lane == 0) scratch[warp] = v;
    __syncthreads();
    A total = lane < warps ? scratch[lane] : (A)0;
    return tk_warp_sum(total);
}
template <typename A> __device__ A tk_block_max(A v, A* scratch) {
    int lane = threadIdx.x & 31, warp = threadIdx.x >> 5, warps = (blockDim.x + 31) >> 5;
    v = tk_warp_max(v);
    __syncthreads();
    if (lane == 0) scratch[warp] = v;
    __syncthreads();
    A m = lane < warps ? scratch[lane] : -TK_INF;
    return tk_warp_max(m);
}

/* Philox4x32-10 (Random/Philox.swift): block `index` of the stream keyed by `seed`. */
struct tk_u32x4 { u32 x, y, z, w; };
__device__ __forceinline__ tk_u32x4 tk_philox(u64 seed, u64 index) {
    u32 c0 = (u32)index, c1 = (u32)(index >> 32), c2 = 0u, c3 = 0u;
    u32 k0 = (u32)seed, k1 = (u32)(seed >> 32);
    for (int round = 0; round < 10; ++round) {
        if (round > 0) { k0 += 0x9E3779B9u; k1 += 0xBB67AE85u; }
        u64 p0 = (u64)0xD2511F53u * (u64)c0;
        u64 p1 = (u64)0xCD9E8D57u * (u64)c2;
        u32 hi0 = (u32)(p0 >> 32), lo0 = (u32)p0;
        u32 hi1 = (u32)(p1 >> 32), lo1 = (u32)p1;
        u32 n0 = hi1 ^ c1 ^ k0, n2 = hi0 ^ c3 ^ k1;
        c0 = n0; c1 = lo1; c2 = n2; c3 = lo0;
    }
    tk_u32x4 r; r.x = c0; r.y = c1; r.z = c2; r.w = c3;
    return r;
}
__device__ __forceinline__ double tk_uniform(u32 w) { return (double)(w >> 8) * (1.0 / 16777216.0); }
__device__ __forceinline__ double tk_uniform_open(u32 w) { return (double)((w >> 8) + 1u) * (1.0 / 16777216.0); }

"""#
}
