// A null CUDA driver, cuBLAS and cuBLASLt for measuring TensorKit's host-side cost on a machine
// without a GPU (scripts/host-overhead.sh). Every entry point TensorKit resolves exists and
// succeeds, but nothing runs: kernel launches, GEMMs, device copies and memsets are counted and
// dropped, device memory is address space that is never touched (so an SD 1.5 model "fits"),
// and a device-to-host copy returns zeros. The device reports itself as an sm_90 part with 132
// multiprocessors and 80 GiB, so the CUDA backend takes the paths it takes on an H100.
//
// With NULL_CUDA_STATS=1 the counts are printed to stderr when the process exits; with
// NULL_CUDA_TRACE_ALLOCATIONS set, every device allocation is (size, launches so far).
// Built by scripts/host-overhead.sh into .build-null-cuda/ as libcuda.so.1, libcublas.so.13 and
// libcublasLt.so.13 (one object, three names); TensorKit finds them through
// TENSORKIT_CUDA_DRIVER_PATH and TENSORKIT_CUBLAS_PATH.

#include <stdatomic.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

typedef int CUresult;
typedef unsigned long long CUdeviceptr;

static atomic_ullong launches, gemms, syncs, uploads, upload_bytes, downloads, download_bytes,
    device_copies, memsets, allocations, frees, events_recorded, event_waits;
static atomic_ullong next_address = 1ull << 40;  // far from anything the host maps
static const size_t total_memory = 80ull << 30;
static atomic_ullong in_use;

static void report(void) {
    const char *flag = getenv("NULL_CUDA_STATS");
    if (!flag || !*flag || strcmp(flag, "0") == 0) return;
    fprintf(stderr,
            "null-cuda: launches %llu, gemms %llu, stream syncs %llu, uploads %llu (%llu bytes), downloads %llu "
            "(%llu bytes), device copies %llu, memsets %llu, allocations %llu, frees %llu, events recorded %llu, "
            "event waits %llu\n",
            launches, gemms, syncs, uploads, upload_bytes, downloads, download_bytes, device_copies, memsets,
            allocations, frees, events_recorded, event_waits);
}

__attribute__((constructor)) static void setup(void) { atexit(report); }

// MARK: driver

CUresult cuInit(unsigned flags) { (void)flags; return 0; }
CUresult cuDriverGetVersion(int *v) { *v = 13000; return 0; }
CUresult cuDeviceGetCount(int *n) { *n = 1; return 0; }
CUresult cuDeviceGet(int *d, int ordinal) { *d = ordinal; return 0; }
CUresult cuDeviceGetName(char *name, int len, int dev) {
    (void)dev;
    snprintf(name, (size_t)len, "null CUDA device (host cost only)");
    return 0;
}
CUresult cuDeviceTotalMem_v2(size_t *bytes, int dev) { (void)dev; *bytes = total_memory; return 0; }
CUresult cuDeviceGetAttribute(int *value, int attribute, int dev) {
    (void)dev;
    switch (attribute) {
    case 16: *value = 132; break;  // multiprocessors
    case 75: *value = 9; break;    // compute capability major
    case 76: *value = 0; break;    // minor
    default: *value = 0;
    }
    return 0;
}
CUresult cuDevicePrimaryCtxRetain(void **ctx, int dev) { (void)dev; *ctx = (void *)0x1; return 0; }
CUresult cuCtxSetCurrent(void *ctx) { (void)ctx; return 0; }
CUresult cuStreamCreate(void **stream, unsigned flags) { (void)flags; *stream = (void *)0x2; return 0; }
CUresult cuStreamSynchronize(void *stream) { (void)stream; syncs++; return 0; }
CUresult cuMemAlloc_v2(CUdeviceptr *p, size_t bytes) {
    size_t rounded = (bytes + 4095) & ~(size_t)4095;
    if (in_use + rounded > total_memory) return 2;  // CUDA_ERROR_OUT_OF_MEMORY
    *p = atomic_fetch_add(&next_address, rounded + 4096);
    in_use += rounded;
    allocations++;
    static int trace = -1;
    if (trace < 0) trace = getenv("NULL_CUDA_TRACE_ALLOCATIONS") != NULL;
    if (trace) fprintf(stderr, "null-cuda: allocation %llu: %zu bytes after %llu launches\n", allocations, bytes, launches);
    return 0;
}
// Sizes are not tracked per address: freed memory is not given back to the budget (the caching
// allocator frees rarely; an out-of-memory retry would free, then allocate again).
CUresult cuMemFree_v2(CUdeviceptr p) { (void)p; frees++; return 0; }
CUresult cuMemAllocHost_v2(void **p, size_t bytes) { *p = malloc(bytes ? bytes : 1); return *p ? 0 : 2; }
CUresult cuMemFreeHost(void *p) { free(p); return 0; }
CUresult cuMemcpyHtoDAsync_v2(CUdeviceptr dst, const void *src, size_t n, void *stream) {
    (void)dst; (void)src; (void)stream;
    uploads++;
    upload_bytes += n;
    return 0;
}
CUresult cuMemcpyDtoHAsync_v2(void *dst, CUdeviceptr src, size_t n, void *stream) {
    (void)src; (void)stream;
    memset(dst, 0, n);
    downloads++;
    download_bytes += n;
    return 0;
}
CUresult cuMemcpyDtoDAsync_v2(CUdeviceptr dst, CUdeviceptr src, size_t n, void *stream) {
    (void)dst; (void)src; (void)n; (void)stream;
    device_copies++;
    return 0;
}
CUresult cuMemsetD8Async(CUdeviceptr dst, unsigned char v, size_t n, void *stream) {
    (void)dst; (void)v; (void)n; (void)stream;
    memsets++;
    return 0;
}
CUresult cuMemGetInfo_v2(size_t *free_bytes, size_t *total) {
    *free_bytes = total_memory - in_use;
    *total = total_memory;
    return 0;
}
CUresult cuModuleLoadData(void **module, const void *image) { (void)image; *module = (void *)0x3; return 0; }
CUresult cuModuleGetFunction(void **f, void *module, const char *name) { (void)module; *f = (void *)name; return 0; }
CUresult cuLaunchKernel(void *f, unsigned gx, unsigned gy, unsigned gz, unsigned bx, unsigned by, unsigned bz,
                        unsigned shared, void *stream, void **params, void **extra) {
    (void)f; (void)gx; (void)gy; (void)gz; (void)bx; (void)by; (void)bz; (void)shared; (void)stream;
    (void)params; (void)extra;
    launches++;
    return 0;
}
CUresult cuEventCreate(void **event, unsigned flags) { (void)flags; *event = malloc(1); return 0; }
CUresult cuEventDestroy_v2(void *event) { free(event); return 0; }
CUresult cuEventRecord(void *event, void *stream) { (void)event; (void)stream; events_recorded++; return 0; }
CUresult cuEventSynchronize(void *event) { (void)event; event_waits++; return 0; }
CUresult cuEventQuery(void *event) { (void)event; return 0; }
CUresult cuGetErrorString(CUresult code, const char **text) {
    *text = code == 2 ? "out of memory (null device)" : "error (null device)";
    return 0;
}
CUresult cuGetErrorName(CUresult code, const char **text) {
    *text = code == 2 ? "CUDA_ERROR_OUT_OF_MEMORY" : "CUDA_ERROR_UNKNOWN";
    return 0;
}

// MARK: cuBLAS

int cublasCreate_v2(void **handle) { *handle = (void *)0x4; return 0; }
int cublasSetStream_v2(void *handle, void *stream) { (void)handle; (void)stream; return 0; }
int cublasGetVersion_v2(void *handle, int *version) { (void)handle; *version = 130000; return 0; }
int cublasGemmStridedBatchedEx(void *handle, int ta, int tb, int m, int n, int k, const void *alpha, const void *a,
                               int atype, int lda, long long sa, const void *b, int btype, int ldb, long long sb,
                               const void *beta, void *c, int ctype, int ldc, long long sc, int batch, int compute,
                               int algo) {
    (void)handle; (void)ta; (void)tb; (void)m; (void)n; (void)k; (void)alpha; (void)a; (void)atype; (void)lda;
    (void)sa; (void)b; (void)btype; (void)ldb; (void)sb; (void)beta; (void)c; (void)ctype; (void)ldc; (void)sc;
    (void)batch; (void)compute; (void)algo;
    gemms++;
    return 0;
}
