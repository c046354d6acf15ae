import COpenBLAS

/// Row-major GEMM wrappers: C = alpha · op(A) · op(B) + beta · C.
@inline(__always)
func sgemm(_ transA: Bool, _ transB: Bool, _ m: Int, _ n: Int, _ k: Int, _ alpha: Float,
           _ a: UnsafePointer<Float>, _ lda: Int, _ b: UnsafePointer<Float>, _ ldb: Int,
           _ beta: Float, _ c: UnsafeMutablePointer<Float>, _ ldc: Int) {
    cblas_sgemm(CblasRowMajor, transA ? CblasTrans : CblasNoTrans, transB ? CblasTrans : CblasNoTrans,
                blasint(m), blasint(n), blasint(k), alpha, a, blasint(lda), b, blasint(ldb), beta, c, blasint(ldc))
}

@inline(__always)
func dgemm(_ transA: Bool, _ transB: Bool, _ m: Int, _ n: Int, _ k: Int, _ alpha: Double,
           _ a: UnsafePointer<Double>, _ lda: Int, _ b: UnsafePointer<Double>, _ ldb: Int,
           _ beta: Double, _ c: UnsafeMutablePointer<Double>, _ ldc: Int) {
    cblas_dgemm(CblasRowMajor, transA ? CblasTrans : CblasNoTrans, transB ? CblasTrans : CblasNoTrans,
                blasint(m), blasint(n), blasint(k), alpha, a, blasint(lda), b, blasint(ldb), beta, c, blasint(ldc))
}

/// Generic entry point for kernels written over CPUFloat.
@inline(__always)
func gemm<T: CPUFloat>(_ transA: Bool, _ transB: Bool, _ m: Int, _ n: Int, _ k: Int, _ alpha: T,
                       _ a: UnsafePointer<T>, _ lda: Int, _ b: UnsafePointer<T>, _ ldb: Int,
                       _ beta: T, _ c: UnsafeMutablePointer<T>, _ ldc: Int) {
    if T.self == Float.self {
        sgemm(transA, transB, m, n, k, Float(alpha), UnsafeRawPointer(a).assumingMemoryBound(to: Float.self), lda,
              UnsafeRawPointer(b).assumingMemoryBound(to: Float.self), ldb, Float(beta),
              UnsafeMutableRawPointer(c).assumingMemoryBound(to: Float.self), ldc)
    } else {
        dgemm(transA, transB, m, n, k, Double(alpha), UnsafeRawPointer(a).assumingMemoryBound(to: Double.self), lda,
              UnsafeRawPointer(b).assumingMemoryBound(to: Double.self), ldb, Double(beta),
              UnsafeMutableRawPointer(c).assumingMemoryBound(to: Double.self), ldc)
    }
}

/// OpenBLAS's own thread count (its default: `OPENBLAS_NUM_THREADS`, else one per core). Small
/// models run faster with 1: OpenBLAS's spinning threads then do not compete with TensorKit's
/// workers for the cores (2–3× on the built-in model on 2 cores).
public enum BLASThreads {
    public static var count: Int {
        get { Int(openblas_get_num_threads()) }
        set { openblas_set_num_threads(Int32(max(1, newValue))) }
    }
}
