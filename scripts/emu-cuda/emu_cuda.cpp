// An emulated CUDA device for running TensorKit's CUDA backend on a machine without a GPU: the driver,
// NVRTC and cuBLAS entry points TensorKit resolves, implemented on the host (one object, built by
// scripts/emu-cuda/run.sh under the names libcuda.so.1, libnvrtc.so.13, libcublas.so.13 and
// libcublasLt.so.13). Unlike scripts/null-cuda, everything computes:
// - device memory is host memory (filled with 0xFF bytes, a NaN in every float format, so a kernel
//   that reads what nobody wrote shows up as NaN; EMU_CUDA_POISON=0 leaves it as malloc gives it);
// - "NVRTC" hands the kernel source to scripts/emu-cuda/make_module.py, which applies the host
//   emulation of scripts/emulate/cuda_host.h (PTX asm → tk_host_* calls, a block's threads as fibers)
//   and builds a shared object with one launcher per kernel; its path is the "CUBIN";
// - cuLaunchKernel runs the launcher: blocks one after another, threads as fibers switched at
//   barriers, the parameters unpacked with the kernel's own C types (so the host's marshalling of
//   TKGeom, TKConv, TKFALayout … is checked too);
// - cublasGemmStridedBatchedEx computes in double (OpenBLAS's dgemm) from the stored operands
//   (float32, float64, float16, bfloat16) and rounds once to the output type.
// Stream work runs when it is queued, in order (so the results of a correct program are those of
// the device); EMU_CUDA_DEFER=1 instead holds every queued operation until the host synchronises
// (a stream or event wait, a device-to-host copy's wait), the latest moment a GPU may run it: a host
// that reuses a pinned upload buffer, or reads a download, before waiting then computes wrong values.
// The device reports sm_90 with 132 multiprocessors (EMU_CUDA_SMS=N: N), so the backend takes its
// H100/H200 paths (flash attention and convolutions on tensor cores through the emulated mma.sync,
// cp.async copies).
#include <atomic>
#include <cblas.h>
#include <dlfcn.h>
#include <cmath>
#include <cstdint>
#include <cstdio>
#include <cstdlib>
#include <cstring>
#include <functional>
#include <mutex>
#include <string>
#include <sys/stat.h>
#include <vector>

typedef int CUresult;
typedef unsigned long long CUdeviceptr;
#define EXPORT extern "C" __attribute__((visibility("default")))

static bool env_flag(const char* name, bool fallback) {
    const char* v = getenv(name);
    if (!v || !*v) return fallback;
    return strcmp(v, "0") != 0;
}

// MARK: the queue (immediate, or deferred until the host waits)

static std::atomic<unsigned long long> launches, gemms;
static std::vector<std::function<void()>> queue_ops;
static size_t longest_wait;  // the most operations a host wait found queued (deferred mode)
static std::recursive_mutex queue_lock;
static bool deferred() { static int d = -1; if (d < 0) d = env_flag("EMU_CUDA_DEFER", false); return d; }
static void enqueue(std::function<void()> op) {
    std::lock_guard<std::recursive_mutex> guard(queue_lock);
    if (deferred()) queue_ops.push_back(std::move(op)); else op();
}
static void drain() {
    std::lock_guard<std::recursive_mutex> guard(queue_lock);
    // Operations may not enqueue more, but be safe: take the list first.
    std::vector<std::function<void()>> ops;
    ops.swap(queue_ops);
    if (ops.size() > longest_wait) longest_wait = ops.size();
    for (auto& op : ops) op();
}

static void report() {
    if (env_flag("EMU_CUDA_STATS", false))
        fprintf(stderr, "emu-cuda: launches %llu, gemms %llu, most operations queued at a host wait %zu\n", launches.load(), gemms.load(),
                longest_wait);
}
__attribute__((constructor)) static void setup() { atexit(report); }

// MARK: driver

EXPORT CUresult cuInit(unsigned) { return 0; }
EXPORT CUresult cuDriverGetVersion(int* v) { *v = 13000; return 0; }
EXPORT CUresult cuDeviceGetCount(int* n) { *n = 1; return 0; }
EXPORT CUresult cuDeviceGet(int* d, int ordinal) { *d = ordinal; return 0; }
EXPORT CUresult cuDeviceGetName(char* name, int len, int) { snprintf(name, (size_t)len, "emulated CUDA device (host)"); return 0; }
static const size_t total_memory = 16ull << 30;
EXPORT CUresult cuDeviceTotalMem_v2(size_t* bytes, int) { *bytes = total_memory; return 0; }
EXPORT CUresult cuDeviceGetAttribute(int* value, int attribute, int) {
    switch (attribute) {
    case 16: {  // multiprocessors: 132 (an H100's), or EMU_CUDA_SMS, to move size-based choices (the
                // tensor-core convolution needs two output tiles per multiprocessor) to tiny models
        const char* sms = getenv("EMU_CUDA_SMS");
        *value = sms && atoi(sms) > 0 ? atoi(sms) : 132;
        break;
    }
    case 75: *value = 9; break;    // compute capability major
    case 76: *value = 0; break;
    default: *value = 0;
    }
    return 0;
}
EXPORT CUresult cuDevicePrimaryCtxRetain(void** ctx, int) { *ctx = (void*)0x1; return 0; }
EXPORT CUresult cuCtxSetCurrent(void*) { return 0; }
EXPORT CUresult cuStreamCreate(void** stream, unsigned) { *stream = (void*)0x2; return 0; }
EXPORT CUresult cuStreamSynchronize(void*) { drain(); return 0; }

static size_t in_use;
static std::mutex memory_lock;
static std::vector<std::pair<void*, size_t>> blocks;
EXPORT CUresult cuMemAlloc_v2(CUdeviceptr* p, size_t bytes) {
    std::lock_guard<std::mutex> guard(memory_lock);
    const size_t rounded = (bytes + 255) & ~(size_t)255;
    if (in_use + rounded > total_memory) return 2;
    void* m = aligned_alloc(256, rounded ? rounded : 256);
    if (!m) return 2;
    if (env_flag("EMU_CUDA_POISON", true)) memset(m, 0xFF, rounded);
    in_use += rounded;
    blocks.push_back({m, rounded});
    *p = (CUdeviceptr)m;
    return 0;
}
EXPORT CUresult cuMemFree_v2(CUdeviceptr p) {
    drain();  // as cudaFree, the device is idle before the memory goes
    std::lock_guard<std::mutex> guard(memory_lock);
    for (size_t i = 0; i < blocks.size(); ++i) if ((CUdeviceptr)blocks[i].first == p) {
        in_use -= blocks[i].second;
        free(blocks[i].first);
        blocks.erase(blocks.begin() + (long)i);
        return 0;
    }
    return 1;
}
EXPORT CUresult cuMemAllocHost_v2(void** p, size_t bytes) { *p = malloc(bytes ? bytes : 1); return *p ? 0 : 2; }
EXPORT CUresult cuMemFreeHost(void* p) { drain(); free(p); return 0; }
EXPORT CUresult cuMemcpyHtoDAsync_v2(CUdeviceptr dst, const void* src, size_t n, void*) {
    enqueue([=] { memcpy((void*)dst, src, n); });
    return 0;
}
EXPORT CUresult cuMemcpyDtoHAsync_v2(void* dst, CUdeviceptr src, size_t n, void*) {
    enqueue([=] { memcpy(dst, (const void*)src, n); });
    return 0;
}
EXPORT CUresult cuMemcpyDtoDAsync_v2(CUdeviceptr dst, CUdeviceptr src, size_t n, void*) {
    enqueue([=] { memmove((void*)dst, (const void*)src, n); });
    return 0;
}
EXPORT CUresult cuMemsetD8Async(CUdeviceptr dst, unsigned char v, size_t n, void*) {
    enqueue([=] { memset((void*)dst, v, n); });
    return 0;
}
EXPORT CUresult cuMemGetInfo_v2(size_t* free_bytes, size_t* total) {
    std::lock_guard<std::mutex> guard(memory_lock);
    *free_bytes = total_memory - in_use;
    *total = total_memory;
    return 0;
}

// A module exports, per kernel, tk_emu_bind_<name>(params): the kernel with its parameters unpacked
// and copied (the driver reads them at launch), and tk_emu_run(bound, grid, threads, shared).
typedef void* (*Binder)(void** params);
typedef void (*Runner)(void* bound, unsigned grid, unsigned threads, unsigned shared);
struct Function { Binder bind; Runner run; std::string name; unsigned maxThreads; };

EXPORT CUresult cuModuleLoadData(void** module, const void* image) {
    const char* text = (const char*)image;
    if (strncmp(text, "TKEMU:", 6) != 0) { fprintf(stderr, "emu-cuda: not an emulated module\n"); return 200; }
    void* handle = dlopen(text + 6, RTLD_NOW | RTLD_LOCAL);
    if (!handle) { fprintf(stderr, "emu-cuda: %s\n", dlerror()); return 200; }
    *module = handle;
    return 0;
}
EXPORT CUresult cuModuleGetFunction(void** f, void* module, const char* name) {
    std::string symbol = std::string("tk_emu_bind_") + name;
    void* bind = dlsym(module, symbol.c_str());
    void* run = dlsym(module, "tk_emu_run");
    const unsigned* bound = (const unsigned*)dlsym(module, (std::string("tk_emu_max_threads_") + name).c_str());
    if (!bind || !run || !bound) { fprintf(stderr, "emu-cuda: no kernel %s\n", name); return 500; }
    *f = new Function{(Binder)bind, (Runner)run, name, *bound};
    return 0;
}
EXPORT CUresult cuLaunchKernel(void* f, unsigned gx, unsigned gy, unsigned gz, unsigned bx, unsigned by, unsigned bz,
                               unsigned shared, void*, void** params, void** extra) {
    Function* fn = (Function*)f;
    if (gy != 1 || gz != 1 || by != 1 || bz != 1 || extra) {
        fprintf(stderr, "emu-cuda: %s: only 1-D grids and blocks and kernelParams are emulated\n", fn->name.c_str());
        return 1;
    }
    if (gx == 0 || gx > 0x7FFFFFFFu || bx == 0 || bx > fn->maxThreads) {
        fprintf(stderr, "emu-cuda: %s: launch of %u blocks of %u threads (at most %u a block)\n", fn->name.c_str(), gx, bx,
                fn->maxThreads);
        return 1;
    }
    // Above 48 KiB a kernel needs cuFuncSetAttribute, which TensorKit does not call.
    if (shared > 48 * 1024) { fprintf(stderr, "emu-cuda: %s: %u bytes of dynamic shared memory\n", fn->name.c_str(), shared); return 1; }
    ++launches;
    void* bound = fn->bind(params);
    Runner run = fn->run;
    enqueue([run, bound, gx, bx, shared] { run(bound, gx, bx, shared); });
    return 0;
}

struct Event { bool recorded = false; };
EXPORT CUresult cuEventCreate(void** event, unsigned) { *event = new Event(); return 0; }
EXPORT CUresult cuEventDestroy_v2(void* event) { delete (Event*)event; return 0; }
EXPORT CUresult cuEventRecord(void* event, void*) { ((Event*)event)->recorded = true; return 0; }
EXPORT CUresult cuEventSynchronize(void*) { drain(); return 0; }
EXPORT CUresult cuEventQuery(void*) { drain(); return 0; }
EXPORT CUresult cuGetErrorString(CUresult code, const char** text) { *text = code == 2 ? "out of memory (emulated device)" : "error (emulated device; see stderr)"; return 0; }
EXPORT CUresult cuGetErrorName(CUresult code, const char** text) { *text = code == 2 ? "CUDA_ERROR_OUT_OF_MEMORY" : "CUDA_ERROR_UNKNOWN"; return 0; }

// MARK: NVRTC

struct Program { std::string source, name, log, module; };
EXPORT int nvrtcVersion(int* major, int* minor) { *major = 13; *minor = 0; return 0; }
EXPORT const char* nvrtcGetErrorString(int code) { return code ? "NVRTC_ERROR_COMPILATION (emulated)" : "NVRTC_SUCCESS"; }
EXPORT int nvrtcCreateProgram(void** prog, const char* src, const char* name, int, const char* const*, const char* const*) {
    *prog = new Program{src, name ? name : "kernels", "", ""};
    return 0;
}
EXPORT int nvrtcDestroyProgram(void** prog) { delete (Program*)*prog; *prog = nullptr; return 0; }
EXPORT int nvrtcCompileProgram(void* p, int, const char* const*) {
    Program* prog = (Program*)p;
    const char* dir = getenv("EMU_CUDA_DIR");
    const char* cache = getenv("EMU_CUDA_MODULES");
    if (!dir || !cache) { prog->log = "emu-cuda: EMU_CUDA_DIR and EMU_CUDA_MODULES must be set (scripts/emu-cuda/run.sh)"; return 6; }
    mkdir(cache, 0755);
    const size_t hash = std::hash<std::string>{}(prog->source);
    char base[4096];
    snprintf(base, sizeof base, "%s/%s-%016zx", cache, prog->name.c_str(), hash);
    std::string so = std::string(base) + ".so", cu = std::string(base) + ".cu", log = std::string(base) + ".log";
    struct stat st;
    if (stat(so.c_str(), &st) != 0) {
        FILE* out = fopen(cu.c_str(), "w");
        if (!out) { prog->log = "emu-cuda: cannot write " + cu; return 6; }
        fwrite(prog->source.data(), 1, prog->source.size(), out);
        fclose(out);
        std::string command = "python3 '" + std::string(dir) + "/make_module.py' '" + cu + "' '" + so + "' > '" + log + "' 2>&1";
        if (system(command.c_str()) != 0) {
            FILE* in = fopen(log.c_str(), "r");
            char buffer[8192];
            size_t n = in ? fread(buffer, 1, sizeof buffer - 1, in) : 0;
            if (in) fclose(in);
            buffer[n] = 0;
            prog->log = std::string("emu-cuda: building ") + so + " failed:\n" + buffer;
            return 6;
        }
    }
    prog->module = "TKEMU:" + so;
    return 0;
}
EXPORT int nvrtcGetProgramLogSize(void* p, size_t* size) { *size = ((Program*)p)->log.size() + 1; return 0; }
EXPORT int nvrtcGetProgramLog(void* p, char* out) { memcpy(out, ((Program*)p)->log.c_str(), ((Program*)p)->log.size() + 1); return 0; }
EXPORT int nvrtcGetCUBINSize(void* p, size_t* size) { *size = ((Program*)p)->module.size() + 1; return 0; }
EXPORT int nvrtcGetCUBIN(void* p, char* out) { memcpy(out, ((Program*)p)->module.c_str(), ((Program*)p)->module.size() + 1); return 0; }

// MARK: cuBLAS (column-major, as cuBLAS)

EXPORT int cublasCreate_v2(void** handle) { *handle = (void*)0x4; return 0; }
EXPORT int cublasSetStream_v2(void*, void*) { return 0; }
EXPORT int cublasGetVersion_v2(void*, int* version) { *version = 130000; return 0; }

static double load(const void* p, int type, long long i) {
    switch (type) {
    case 0: return ((const float*)p)[i];
    case 1: return ((const double*)p)[i];
    case 2: {  // float16
        const uint16_t h = ((const uint16_t*)p)[i];
        const int sign = h >> 15, e = (h >> 10) & 31, m = h & 1023;
        double v = e == 0 ? std::ldexp((double)m, -24) : e == 31 ? (m ? NAN : INFINITY) : std::ldexp((double)(m | 1024), e - 25);
        return sign ? -v : v;
    }
    case 14: { uint32_t u = (uint32_t)((const uint16_t*)p)[i] << 16; float f; memcpy(&f, &u, 4); return f; }
    default: fprintf(stderr, "emu-cuda: cuBLAS data type %d\n", type); abort();
    }
}
static uint16_t to_half(float f) {
    if (std::isnan(f)) return 0x7E00;
    const uint16_t sign = std::signbit(f) ? 0x8000 : 0;
    double a = std::fabs((double)f);
    if (a >= 65520.0) return sign | 0x7C00;
    if (a < std::ldexp(1.0, -14)) return sign | (uint16_t)std::nearbyint(a * std::ldexp(1.0, 24));
    int e; std::frexp(a, &e);
    const double unit = std::ldexp(1.0, e - 11);
    const double q = std::nearbyint(a / unit);
    return sign | (uint16_t)((((uint32_t)(e - 1 + 15)) << 10) + (uint32_t)q - 1024);
}
static void store(void* p, int type, long long i, double v) {
    switch (type) {
    case 0: ((float*)p)[i] = (float)v; break;
    case 1: ((double*)p)[i] = v; break;
    case 2: ((uint16_t*)p)[i] = to_half((float)v); break;
    case 14: {
        float f = (float)v; uint32_t u; memcpy(&u, &f, 4);
        if (std::isnan(f)) u = 0x7FC00000; else u += 0x7FFF + ((u >> 16) & 1);
        ((uint16_t*)p)[i] = (uint16_t)(u >> 16);
        break;
    }
    default: fprintf(stderr, "emu-cuda: cuBLAS data type %d\n", type); abort();
    }
}

EXPORT int cublasGemmStridedBatchedEx(void*, int ta, int tb, int m, int n, int k, const void* alpha, const void* a,
                                      int atype, int lda, long long sa, const void* b, int btype, int ldb, long long sb,
                                      const void* beta, void* c, int ctype, int ldc, long long sc, int batch, int compute,
                                      int) {
    // Scalars are double for CUBLAS_COMPUTE_64F (70), float otherwise (32F and its fast modes).
    const double al = compute == 70 ? *(const double*)alpha : *(const float*)alpha;
    const double be = compute == 70 ? *(const double*)beta : *(const float*)beta;
    ++gemms;
    enqueue([=] {
        std::vector<double> A((size_t)m * k), B((size_t)k * n);
        for (int bi = 0; bi < batch; ++bi) {
            const char* ap = (const char*)a; const char* bp = (const char*)b;
            const long long ao = bi * sa, bo = bi * sb, co = bi * sc;
            // op(A)[i, l] and op(B)[l, j], column-major with leading dimensions.
            for (int i = 0; i < m; ++i) for (int l = 0; l < k; ++l)
                A[(size_t)i * k + l] = load(ap, atype, ao + (ta ? (long long)i * lda + l : (long long)l * lda + i));
            for (int j = 0; j < n; ++j) for (int l = 0; l < k; ++l)
                B[(size_t)j * k + l] = load(bp, btype, bo + (tb ? (long long)l * ldb + j : (long long)j * ldb + l));
            std::vector<double> product((size_t)m * n);
            if (k > 0 && m > 0 && n > 0)
                cblas_dgemm(CblasRowMajor, CblasNoTrans, CblasTrans, m, n, k, 1.0, A.data(), k, B.data(), k, 0.0,
                        product.data(), n);
            for (int j = 0; j < n; ++j) for (int i = 0; i < m; ++i) {
                const long long ci = co + (long long)j * ldc + i;
                const double old = be == 0 ? 0 : be * load(c, ctype, ci);
                store(c, ctype, ci, al * product[(size_t)i * n + j] + old);
            }
        }
    });
    return 0;
}
