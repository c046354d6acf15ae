// A host emulation of the CUDA features TensorKit's kernels use, so that their exact source (as NVRTC
// receives it; `tensorkit-gpu-check --print-source` prints it) runs on a CPU: a block is OS threads
// with a barrier for __syncthreads, a warp exchanges values through a buffer and a 32-thread barrier
// (__shfl_xor_sync, mma.sync, ldmatrix), cp.async copies land at their wait (or at once, to expose
// the other kind of race), and __shared__ arrays are statics (blocks run one after another).
// scripts/emu-cuda/make_module.py substitutes the PTX `asm` statements with the tk_host_* calls;
// Tests/TensorKitTests/CUDAKernelEmulationTests.swift builds the result into a driver
// (flash_attention_check.cpp, conv_kernels_check.cpp, …) with g++, scripts/emu-cuda into modules.
// It checks index arithmetic, fragment layouts, masking and the algorithm, not speed or the
// hardware's rounding of tensor-core sums.
#pragma once
#include <barrier>
#include <cmath>
#include <cstdint>
#include <cstdio>
#include <cstdlib>
#include <cstring>
#include <functional>
#include <math.h>
#include <thread>
#include <vector>

#define __device__
#define __global__
#define __forceinline__ inline
#define __shared__ static
#define __align__(n) __attribute__((aligned(n)))
#define __launch_bounds__(...)

struct tk_dim3 { unsigned x = 0, y = 0, z = 0; };
inline thread_local tk_dim3 threadIdx, blockIdx;
inline tk_dim3 blockDim, gridDim;

inline float __uint_as_float(unsigned u) { float f; std::memcpy(&f, &u, 4); return f; }
inline unsigned __float_as_uint(float f) { unsigned u; std::memcpy(&u, &f, 4); return u; }
inline float __int_as_float(int u) { float f; std::memcpy(&f, &u, 4); return f; }
inline double __longlong_as_double(long long u) { double f; std::memcpy(&f, &u, 8); return f; }

#ifdef TK_HOST_FIBERS
/* Fiber mode (scripts/emu-cuda): a block's threads are fibers of one OS thread, switched only at
   barriers, so a launch costs no thread creation. The barrier yields until every fiber arrived. */
#include <ucontext.h>
void tk_fiber_yield();
struct tk_host_barrier {
    int target, arrived = 0;
    unsigned generation = 0;
    explicit tk_host_barrier(int n) : target(n) {}
    void arrive_and_wait() {
        const unsigned g = generation;
        if (++arrived == target) { arrived = 0; ++generation; return; }
        while (generation == g) tk_fiber_yield();
    }
};
#else
typedef std::barrier<> tk_host_barrier;
#endif

struct tk_host_block {
    int threads = 0;
    tk_host_barrier* block = nullptr;
    tk_host_barrier* warp[32] = {};
    float shuffle[32][32];
    double shuffle64[32][32];
    uint32_t a[32][32][4], b[32][32][2];
    const uint16_t* rows[32][32];
};
inline tk_host_block tk_host;

inline void __syncthreads() { tk_host.block->arrive_and_wait(); }

/* A lane's value from lane ^ mask of its warp, through the warp's exchange buffer. */
template <typename V> inline V tk_host_shuffle(V (*buffer)[32], V x, int mask) {
    const int w = threadIdx.x >> 5, lane = threadIdx.x & 31;
    buffer[w][lane] = x;
    tk_host.warp[w]->arrive_and_wait();
    const V y = buffer[w][lane ^ mask];
    tk_host.warp[w]->arrive_and_wait();
    return y;
}
inline float __shfl_xor_sync(unsigned, float x, int mask) { return tk_host_shuffle(tk_host.shuffle, x, mask); }
inline double __shfl_xor_sync(unsigned, double x, int mask) { return tk_host_shuffle(tk_host.shuffle64, x, mask); }
/* Lane `source`'s value, for every lane of the warp. */
template <typename V> inline V tk_host_broadcast(V (*buffer)[32], V x, int source) {
    const int w = threadIdx.x >> 5, lane = threadIdx.x & 31;
    buffer[w][lane] = x;
    tk_host.warp[w]->arrive_and_wait();
    const V y = buffer[w][source & 31];
    tk_host.warp[w]->arrive_and_wait();
    return y;
}
inline float __shfl_sync(unsigned, float x, int source) { return tk_host_broadcast(tk_host.shuffle, x, source); }
inline double __shfl_sync(unsigned, double x, int source) { return tk_host_broadcast(tk_host.shuffle64, x, source); }

inline size_t __cvta_generic_to_shared(const void* p) { return (size_t)p; }

/* `extern __shared__` arrays point here (make_module.py substitutes them); a launch sizes it. */
inline unsigned char* tk_host_dynamic_shared = nullptr;

inline void tk_host_misaligned(const char* what, const void* p, size_t alignment) {
    if ((uintptr_t)p % alignment) {
        std::fprintf(stderr, "%s: address %p is not %zu-byte aligned\n", what, p, alignment);
        std::abort();
    }
}

/* ldmatrix.sync.aligned.m8n8.x4[.trans].shared.b16, warp-collective: lane l gives row l % 8 of
   matrix l / 8; r[i] = matrix i's {row g, cols 2t, 2t+1}, or transposed {rows 2t, 2t+1 of col g}. */
inline void tk_host_ldmatrix(uint32_t* r, const uint16_t* row, bool trans) {
    const int w = threadIdx.x >> 5, lane = threadIdx.x & 31;
    tk_host_misaligned("ldmatrix", row, 16);
    tk_host.rows[w][lane] = row;
    tk_host.warp[w]->arrive_and_wait();
    const int g = lane >> 2, t = lane & 3;
    for (int i = 0; i < 4; ++i) {
        const uint16_t* const* m = tk_host.rows[w] + 8 * i;
        const uint32_t lo = trans ? m[2 * t][g] : m[g][2 * t];
        const uint32_t hi = trans ? m[2 * t + 1][g] : m[g][2 * t + 1];
        r[i] = lo | (hi << 16);
    }
    tk_host.warp[w]->arrive_and_wait();
}

/* cp.async (zero-filled when n == 0), commit_group and wait_group. A copy lands at the wait that
   covers its group, the latest moment the hardware allows (so a read before the wait sees stale
   data), or at once when tk_host_eager_copies is set (the earliest: so a copy into a buffer that
   another warp still reads shows up too). */
struct tk_host_copy_op { void* dst; const void* src; int n, size; };
inline bool tk_host_eager_copies = false;
struct tk_host_copies { std::vector<tk_host_copy_op> open; std::vector<std::vector<tk_host_copy_op>> groups; };
#ifdef TK_HOST_FIBERS
tk_host_copies& tk_host_thread_copies();  // the running fiber's
#else
inline tk_host_copies& tk_host_thread_copies() { static thread_local tk_host_copies copies; return copies; }
#endif
#define tk_host_open (tk_host_thread_copies().open)
#define tk_host_groups (tk_host_thread_copies().groups)
inline void tk_host_land(const tk_host_copy_op& op) {
    if (op.n) std::memcpy(op.dst, op.src, op.size); else std::memset(op.dst, 0, op.size);
}
inline void tk_host_copy(void* dst, const void* src, int n, int size) {
    tk_host_misaligned("cp.async destination", dst, size);
    if (n) tk_host_misaligned("cp.async source", src, size);
    if (tk_host_eager_copies) tk_host_land({dst, src, n, size});
    else tk_host_open.push_back({dst, src, n, size});
}
inline void tk_host_commit() { tk_host_groups.push_back(std::move(tk_host_open)); tk_host_open.clear(); }
inline void tk_host_wait(int pending) {
    while ((int)tk_host_groups.size() > pending) {
        for (const auto& op : tk_host_groups.front()) tk_host_land(op);
        tk_host_groups.erase(tk_host_groups.begin());
    }
}

/* float16 → float, exactly, by moving bits (a subnormal's mantissa times 2^-24 is exact). */
inline float tk_host_half_to_float(uint16_t h) {
    const uint32_t sign = (uint32_t)(h & 0x8000u) << 16, exp = (h >> 10) & 31, man = h & 1023;
    if (exp == 0) { const float v = (float)man * 5.9604644775390625e-8f; return sign ? -v : v; }
    if (exp == 31) return __uint_as_float(sign | 0x7F800000u | (man << 13));
    return __uint_as_float(sign | ((exp + 112) << 23) | (man << 13));
}
/* float → float16, round to nearest even; NaN → 0x7E00, |f| ≥ 65520 → ±inf. */
inline uint16_t tk_host_float_to_half(float f) {
    uint32_t x = __float_as_uint(f);
    const uint16_t sign = (uint16_t)((x >> 16) & 0x8000u);
    x &= 0x7FFFFFFFu;
    if (x > 0x7F800000u) return 0x7E00;
    if (x >= 0x477FF000u) return sign | 0x7C00;  // 65520 and up
    if (x < 0x38800000u) {                       // below 2^-14: units of 2^-24 (the product is exact)
        return sign | (uint16_t)std::nearbyint(__uint_as_float(x) * 16777216.0f);
    }
    const uint32_t mantissa = x & 0x7FFFFFu, rest = mantissa & 0x1FFFu;
    uint32_t h = (((x >> 23) - 112) << 10) | (mantissa >> 13);
    if (rest > 0x1000u || (rest == 0x1000u && (h & 1))) ++h;  // a carry moves into the exponent
    return sign | (uint16_t)h;
}

float tk_host_element(uint16_t bits);  // storage type → float, defined per dtype by the driver

/* mma.m16n8k16.row.col: c (16×8) += A (16×16) · B (16×8), warp-collective. */
inline void tk_host_mma(float* c, const uint32_t* a, uint32_t b0, uint32_t b1) {
    const int w = threadIdx.x >> 5, lane = threadIdx.x & 31;
    for (int i = 0; i < 4; ++i) tk_host.a[w][lane][i] = a[i];
    tk_host.b[w][lane][0] = b0; tk_host.b[w][lane][1] = b1;
    tk_host.warp[w]->arrive_and_wait();
    float A[16][16], B[16][8];
    for (int l = 0; l < 32; ++l) {
        const int g = l >> 2, t = l & 3;
        const uint32_t* r = tk_host.a[w][l];
        const int rows[4] = {g, g + 8, g, g + 8}, cols[4] = {2 * t, 2 * t, 2 * t + 8, 2 * t + 8};
        for (int i = 0; i < 4; ++i) {
            A[rows[i]][cols[i]] = tk_host_element((uint16_t)(r[i] & 0xFFFF));
            A[rows[i]][cols[i] + 1] = tk_host_element((uint16_t)(r[i] >> 16));
        }
        for (int i = 0; i < 2; ++i) {
            const uint32_t v = tk_host.b[w][l][i];
            B[2 * t + 8 * i][g] = tk_host_element((uint16_t)(v & 0xFFFF));
            B[2 * t + 8 * i + 1][g] = tk_host_element((uint16_t)(v >> 16));
        }
    }
    tk_host.warp[w]->arrive_and_wait();
    const int g = lane >> 2, t = lane & 3;
    for (int i = 0; i < 4; ++i) {
        const int row = g + (i >= 2 ? 8 : 0), col = 2 * t + (i & 1);
        float s = c[i];
        for (int k = 0; k < 16; ++k) s += A[row][k] * B[k][col];
        c[i] = s;
    }
}

#ifndef TK_HOST_FIBERS
/* Runs `kernel` over `grid` blocks of `threads` threads, one block at a time. */
inline void tk_host_launch(int grid, int threads, const std::function<void()>& kernel) {
    std::barrier<> block(threads);
    std::vector<std::barrier<>*> warps;
    for (int w = 0; w < threads / 32; ++w) { warps.push_back(new std::barrier<>(32)); tk_host.warp[w] = warps.back(); }
    tk_host.block = &block;
    blockDim.x = threads; gridDim.x = grid;
    for (int b = 0; b < grid; ++b) {
        std::vector<std::thread> pool;
        for (int i = 0; i < threads; ++i)
            pool.emplace_back([&, i, b] { threadIdx.x = i; blockIdx.x = b; kernel(); });
        for (auto& p : pool) p.join();
    }
    for (auto* w : warps) delete w;
}
#endif
