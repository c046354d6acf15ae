import COpenBLAS
import Foundation

// Threading of matrix products. TensorKit runs OpenBLAS on one thread and splits each large
// product itself, into column (or row) blocks run on its own workers, the same ones that run the
// elementwise kernels:
// - OpenBLAS's threads spin for a long while after each product (2^28 cycles by default). Between
//   products they competed for the cores with TensorKit's workers: on 2 cores a quarter of the
//   CPU time went to `sched_yield`, and run times of one UNet pass varied by up to 1.5×.
// - The blocks are pulled from a shared counter, so a worker that the OS does not schedule costs
//   its block, not the whole product (OpenBLAS hands each thread a fixed share).
// - The split depends only on the product's shape, never on the number of workers, so results do
//   not depend on TENSORKIT_NUM_THREADS. (They may differ in the last bits from an unsplit product:
//   OpenBLAS picks its kernels by size.)
// An explicit OPENBLAS_NUM_THREADS (or `BLASThreads.count` above 1) hands the threading back to
// OpenBLAS: products are then not split.

/// OpenBLAS's own thread count. TensorKit sets it to 1 on first use unless `OPENBLAS_NUM_THREADS` is
/// set, and then splits large products across its own workers itself (see above). Above 1,
/// OpenBLAS threads every product and TensorKit does not split them.
public enum BLASThreads {
    public static var count: Int {
        get { _ = blasThreadingConfigured; return Int(openblas_get_num_threads()) }
        set { _ = blasThreadingConfigured; openblas_set_num_threads(Int32(max(1, newValue))) }
    }
}

private let blasThreadingConfigured: Void = {
    if ProcessInfo.processInfo.environment["OPENBLAS_NUM_THREADS"] == nil { openblas_set_num_threads(1) }
}()

/// Blocks a product C [m, n] = op(A) op(B), inner size k, is split into (shape only: see the notes
/// above): at most 16, each of at least 2^19 multiply-adds and 128 columns (or rows). Each block
/// packs the whole other operand again (k × the shorter side), so narrower blocks of a deep product
/// cost more in packing than they gain: 32-wide ones ran an SD 1.5 low-level convolution about 10 %
/// slower than 128-wide ones.
@inline(__always) func gemmBlocks(_ m: Int, _ n: Int, _ k: Int) -> Int {
    max(1, min(16, (m * n * k) >> 19, max(m, n) / 128))
}

/// Row-major GEMM: C = alpha · op(A) · op(B) + beta · C. `split: false` for callers that already
/// run on several workers (attention's tasks).
@inline(__always)
func gemm<T: CPUFloat>(_ transA: Bool, _ transB: Bool, _ m: Int, _ n: Int, _ k: Int, _ alpha: T,
                       _ a: UnsafePointer<T>, _ lda: Int, _ b: UnsafePointer<T>, _ ldb: Int,
                       _ beta: T, _ c: UnsafeMutablePointer<T>, _ ldc: Int, split: Bool = true) {
    _ = blasThreadingConfigured
    let blocks = split ? gemmBlocks(m, n, k) : 1
    if blocks == 1 || openblas_get_num_threads() > 1 {
        blasGemm(transA, transB, m, n, k, alpha, a, lda, b, ldb, beta, c, ldc)
        return
    }
    // Split the longer side of C into blocks of a multiple of 16 (the kernels' register tiles).
    let columns = n >= m, side = columns ? n : m
    let per = ((side + blocks - 1) / blocks + 15) / 16 * 16
    forEachTask((side + per - 1) / per) { block in
        let first = block * per, size = min(per, side - first)
        if columns {
            blasGemm(transA, transB, m, size, k, alpha, a, lda, transB ? b + first * ldb : b + first, ldb,
                     beta, c + first, ldc)
        } else {
            blasGemm(transA, transB, size, n, k, alpha, transA ? a + first : a + first * lda, lda, b, ldb,
                     beta, c + first * ldc, ldc)
        }
    }
}

@inline(__always)
private func blasGemm<T: CPUFloat>(_ transA: Bool, _ transB: Bool, _ m: Int, _ n: Int, _ k: Int, _ alpha: T,
                                   _ a: UnsafePointer<T>, _ lda: Int, _ b: UnsafePointer<T>, _ ldb: Int,
                                   _ beta: T, _ c: UnsafeMutablePointer<T>, _ ldc: Int) {
    let ta = transA ? CblasTrans : CblasNoTrans, tb = transB ? CblasTrans : CblasNoTrans
    if T.self == Float.self {
        cblas_sgemm(CblasRowMajor, ta, tb, blasint(m), blasint(n), blasint(k), Float(alpha),
                    UnsafeRawPointer(a).assumingMemoryBound(to: Float.self), blasint(lda),
                    UnsafeRawPointer(b).assumingMemoryBound(to: Float.self), blasint(ldb), Float(beta),
                    UnsafeMutableRawPointer(c).assumingMemoryBound(to: Float.self), blasint(ldc))
    } else {
        cblas_dgemm(CblasRowMajor, ta, tb, blasint(m), blasint(n), blasint(k), Double(alpha),
                    UnsafeRawPointer(a).assumingMemoryBound(to: Double.self), blasint(lda),
                    UnsafeRawPointer(b).assumingMemoryBound(to: Double.self), blasint(ldb), Double(beta),
                    UnsafeMutableRawPointer(c).assumingMemoryBound(to: Double.self), blasint(ldc))
    }
}
