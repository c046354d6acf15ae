import COpenBLAS
import Foundation

// Scaled dot-product attention without the full score matrix: each (batch, head) is processed in
// blocks of query rows, with one rows×Nk score buffer per worker thread; backward recomputes the
// probabilities from the saved log-sum-exp (FlashAttention's recompute). The key axis is not tiled:
// at SD sizes the GEMMs ran no faster on 256–1024-key tiles than on all 4096 keys.
//
// The causal mask is PyTorch's `is_causal`: top-left aligned, query i sees keys j ≤ i, also when
// Nq ≠ Nk (checked against torch 2.x `F.scaled_dot_product_attention`).

extension CPUBackend {
    /// Operands may be views (the op layer passes the heads of a projection as they lie); the loops
    /// below read contiguous [B, H, N, D] memory, so views are copied first.
    public func attention(q: Tensor, k: Tensor, v: Tensor, scale: Double, causal: Bool) -> (Tensor, Tensor) {
        attention(q: q.contiguous(), k: k.contiguous(), v: v.contiguous(), scale: scale, causal: causal, chunkRows: nil)
    }

    public func attentionBackward(q: Tensor, k: Tensor, v: Tensor, output: Tensor, logSumExp: Tensor,
                                  gradOutput: Tensor, scale: Double, causal: Bool) -> (Tensor, Tensor, Tensor) {
        attentionBackward(q: q.contiguous(), k: k.contiguous(), v: v.contiguous(), output: output.contiguous(),
                          logSumExp: logSumExp.contiguous(), gradOutput: gradOutput.contiguous(),
                          scale: scale, causal: causal, chunkRows: nil)
    }

    /// `chunkRows` overrides the query block size (tests use tiny blocks to cross block boundaries).
    func attention(q: Tensor, k: Tensor, v: Tensor, scale: Double, causal: Bool, chunkRows: Int?) -> (Tensor, Tensor) {
        let g = AttentionGeometry(q: q, k: k, v: v, chunkRows: chunkRows)
        let out = empty([g.batch, g.heads, g.nq, g.dv], q.dtype)
        let lse = empty([g.batch, g.heads, g.nq], q.dtype)
        switch q.dtype {
        case .float32: attentionForward(Float.self, g, q, k, v, out, lse, scale: scale, causal: causal)
        case .float64: attentionForward(Double.self, g, q, k, v, out, lse, scale: scale, causal: causal)
        default: preconditionFailure("attention is not defined for \(q.dtype) on the CPU; convert to float32 first")
        }
        return (out, lse)
    }

    func attentionBackward(q: Tensor, k: Tensor, v: Tensor, output: Tensor, logSumExp: Tensor, gradOutput: Tensor,
                           scale: Double, causal: Bool, chunkRows: Int?) -> (Tensor, Tensor, Tensor) {
        let g = AttentionGeometry(q: q, k: k, v: v, chunkRows: chunkRows)
        precondition(output.shape == [g.batch, g.heads, g.nq, g.dv] && gradOutput.shape == output.shape
                     && logSumExp.shape == [g.batch, g.heads, g.nq],
                     "attentionBackward: output \(output.shape), gradOutput \(gradOutput.shape), logSumExp \(logSumExp.shape)")
        for t in [output, logSumExp, gradOutput] {
            precondition((t.isContiguous || t.numel == 0) && t.dtype == q.dtype, "attentionBackward expects contiguous \(q.dtype) tensors")
        }
        // Storage is zero-initialised, which dK/dV accumulation relies on.
        let dq = empty(q.shape, q.dtype), dk = empty(k.shape, k.dtype), dv = empty(v.shape, v.dtype)
        switch q.dtype {
        case .float32:
            attentionBackwardKernel(Float.self, g, q, k, v, logSumExp, gradOutput, dq, dk, dv, scale: scale, causal: causal)
        case .float64:
            attentionBackwardKernel(Double.self, g, q, k, v, logSumExp, gradOutput, dq, dk, dv, scale: scale, causal: causal)
        default: preconditionFailure("attention backward is not defined for \(q.dtype) on the CPU")
        }
        return (dq, dk, dv)
    }
}

/// Sizes of one attention call; heads are flattened over batch × heads.
struct AttentionGeometry {
    let batch: Int, heads: Int, nq: Int, nk: Int, d: Int, dv: Int
    /// Query rows per block.
    let chunk: Int

    init(q: Tensor, k: Tensor, v: Tensor, chunkRows: Int?) {
        precondition(q.rank == 4 && k.rank == 4 && v.rank == 4, "attention expects [B, H, N, D] tensors")
        precondition(q.shape[0] == k.shape[0] && q.shape[1] == k.shape[1] && k.shape[0...2] == v.shape[0...2]
                     && q.shape[3] == k.shape[3], "attention: q \(q.shape), k \(k.shape), v \(v.shape)")
        // (Empty tensors count as contiguous: Tensor.isContiguous says no for some of them.)
        precondition([q, k, v].allSatisfy { $0.isContiguous || $0.numel == 0 } && q.dtype == k.dtype && k.dtype == v.dtype,
                     "attention expects contiguous tensors of one dtype")
        batch = q.shape[0]; heads = q.shape[1]; nq = q.shape[2]; nk = k.shape[2]; d = q.shape[3]; dv = v.shape[3]
        // OpenBLAS reaches ~40–55 GFLOP/s per core on these thin GEMMs (K or N = D = 40) at 64–256
        // rows and loses a quarter at 16; 128 measured best at N = 4096, 256 for short key axes.
        // Very long key axes get fewer rows so a worker's scores stay under ~8 MB (float32).
        let preferred = nk <= 1024 ? 256 : 128
        chunk = max(1, chunkRows ?? min(preferred, max(16, 2_097_152 / max(nk, 1))))
    }

    var headCount: Int { batch * heads }
    var chunksPerHead: Int { (nq + chunk - 1) / chunk }
}

// MARK: - Forward

private func attentionForward<T: CPUFloat>(_: T.Type, _ g: AttentionGeometry, _ q: Tensor, _ k: Tensor, _ v: Tensor,
                                           _ out: Tensor, _ lse: Tensor, scale: Double, causal: Bool) {
    if g.headCount == 0 || g.nq == 0 { return }
    let qp = q.pointer(as: T.self), kp = k.pointer(as: T.self), vp = v.pointer(as: T.self)
    let op = out.pointer(as: T.self), lp = lse.pointer(as: T.self)
    let (nq, nk, d, dv, chunk) = (g.nq, g.nk, g.d, g.dv, g.chunk)
    if nk == 0 {
        // softmax over no keys: PyTorch yields zeros for the output; the log-sum-exp is -inf.
        for i in 0..<(g.headCount * nq) { lp[i] = -T.infinity }
        return
    }
    let alpha = T(scale)
    let tasks = g.headCount * g.chunksPerHead
    runAttentionTasks(tasks, scratchCount: chunk * nk + chunk, T.self) { task, scratch in
        let h = task / g.chunksPerHead, i0 = (task % g.chunksPerHead) * chunk
        let m = min(chunk, nq - i0)
        // Under the causal mask no row of this block sees past key i0 + m - 1.
        let kn = causal ? min(nk, i0 + m) : nk
        let s = scratch, inverse = scratch + chunk * nk
        let qh = qp + (h * nq + i0) * d, kh = kp + h * nk * d, vh = vp + h * nk * dv
        attentionScores(m, kn, d, alpha, qh, kh, s)
        for r in 0..<m {
            let row = s + r * kn
            let valid = causal ? min(i0 + r + 1, kn) : kn
            if valid < kn { (row + valid).update(repeating: 0, count: kn - valid) }
            let (mx, finite) = rowMaximum(row, valid)
            guard finite else {
                // An inf/NaN score makes the row NaN, as in PyTorch (the vector exp would hide it).
                row.update(repeating: .nan, count: valid)
                lp[h * nq + i0 + r] = .nan
                inverse[r] = 1
                continue
            }
            let sum = exponentiateShifted(row, valid, by: mx)
            lp[h * nq + i0 + r] = mx + T.log(sum)
            inverse[r] = 1 / sum
        }
        if dv == 0 { return }  // BLAS rejects a zero leading dimension
        let oh = op + (h * nq + i0) * dv
        gemm(false, false, m, dv, kn, 1, s, kn, vh, dv, 0, oh, dv, split: false)
        // Normalising the m × Dv output is cheaper than normalising the m × Nk probabilities.
        for r in 0..<m {
            let row = oh + r * dv, f = inverse[r]
            for c in 0..<dv { row[c] *= f }
        }
    }
}

/// s[m, kn] = alpha · q[m, d] · k[kn, d]ᵀ.
@inline(__always)
private func attentionScores<T: CPUFloat>(_ m: Int, _ kn: Int, _ d: Int, _ alpha: T, _ q: UnsafePointer<T>,
                                          _ k: UnsafePointer<T>, _ s: UnsafeMutablePointer<T>) {
    if d == 0 { s.update(repeating: 0, count: m * kn); return }
    gemm(false, true, m, kn, d, alpha, q, d, k, d, 0, s, kn, split: false)
}

// MARK: - Backward

private func attentionBackwardKernel<T: CPUFloat>(
    _: T.Type, _ g: AttentionGeometry, _ q: Tensor, _ k: Tensor, _ v: Tensor, _ lse: Tensor,
    _ gradOut: Tensor, _ dq: Tensor, _ dk: Tensor, _ dv: Tensor, scale: Double, causal: Bool
) {
    if g.headCount == 0 || g.nq == 0 || g.nk == 0 { return }
    let qp = q.pointer(as: T.self), kp = k.pointer(as: T.self), vp = v.pointer(as: T.self)
    let lp = lse.pointer(as: T.self), gp = gradOut.pointer(as: T.self)
    let dqp = dq.pointer(as: T.self), dkp = dk.pointer(as: T.self), dvp = dv.pointer(as: T.self)
    let (nq, nk, d, dvn, chunk) = (g.nq, g.nk, g.d, g.dv, g.chunk)
    let alpha = T(scale)
    // One task per head: dK and dV sum over all query blocks of their head, so a head's blocks
    // stay on one thread and need no reduction.
    runAttentionTasks(g.headCount, scratchCount: 2 * chunk * nk, T.self) { h, scratch in
        let p = scratch, dp = scratch + chunk * nk
        let kh = kp + h * nk * d, vh = vp + h * nk * dvn
        let dkh = dkp + h * nk * d, dvh = dvp + h * nk * dvn
        for i0 in stride(from: 0, to: nq, by: chunk) {
            let m = min(chunk, nq - i0)
            let kn = causal ? min(nk, i0 + m) : nk
            let qc = qp + (h * nq + i0) * d, gc = gp + (h * nq + i0) * dvn
            let lc = lp + h * nq + i0
            // P = exp(S − lse) recomputed from the saved log-sum-exp.
            attentionScores(m, kn, d, alpha, qc, kh, p)
            for r in 0..<m {
                let row = p + r * kn
                let valid = causal ? min(i0 + r + 1, kn) : kn
                if valid < kn { (row + valid).update(repeating: 0, count: kn - valid) }
                if lc[r].isFinite {
                    _ = exponentiateShifted(row, valid, by: lc[r])
                } else {
                    row.update(repeating: .nan, count: valid)
                }
            }
            // dV += Pᵀ dO; dP = dO Vᵀ, then dS = P ∘ (dP − D) in place with D_i = Σ_j P_ij dP_ij.
            // (FlashAttention's D_i = rowsum(dO ∘ O) is the same sum in exact arithmetic, but its
            // rounding differs from dP's: a row whose P is one-hot, a single key above all, would
            // then get a gradient of rounding noise instead of exactly 0.)
            if dvn == 0 {  // BLAS rejects a zero leading dimension
                dp.update(repeating: 0, count: m * kn)
            } else {
                gemm(true, false, kn, dvn, m, 1, p, kn, gc, dvn, 1, dvh, dvn, split: false)
                gemm(false, true, m, kn, dvn, 1, gc, dvn, vh, dvn, 0, dp, kn, split: false)
            }
            for r in 0..<m {
                let pr = p + r * kn, dr = dp + r * kn
                let di = rowDotProduct(pr, dr, kn)
                for j in 0..<kn { dr[j] = pr[j] * (dr[j] - di) }
            }
            if d > 0 {
                // dQ = scale · dS K; dK += scale · dSᵀ Q
                gemm(false, false, m, d, kn, alpha, dp, kn, kh, d, 0, dqp + (h * nq + i0) * d, d, split: false)
                gemm(true, false, kn, d, m, alpha, dp, kn, qc, d, 1, dkh, d, split: false)
            }
        }
    }
}

// MARK: - Row helpers

/// Σ a[j]·b[j] for j < n, in eight lanes of fused multiply-adds.
@inline(__always)
private func rowDotProduct<T: CPUFloat>(_ a: UnsafePointer<T>, _ b: UnsafePointer<T>, _ n: Int) -> T {
    var acc = SIMD8<T>(repeating: 0)
    var j = 0
    while j + 8 <= n {
        acc = acc.addingProduct(UnsafeRawPointer(a + j).loadUnaligned(as: SIMD8<T>.self),
                                UnsafeRawPointer(b + j).loadUnaligned(as: SIMD8<T>.self))
        j += 8
    }
    var sum = acc.sum()
    while j < n { sum = sum.addingProduct(a[j], b[j]); j += 1 }
    return sum
}

/// The maximum of row[0..<n], and whether every element is finite.
@inline(__always)
private func rowMaximum<T: CPUFloat>(_ row: UnsafeMutablePointer<T>, _ n: Int) -> (T, Bool) {
    // Lane-wise selects between two vectors compile to maxps; SIMD's .> with replace(with:where:),
    // pointwiseMax and .max() become per-lane branches or calls in this toolchain.
    var best = SIMD8<T>(repeating: -T.infinity), probe = SIMD8<T>(repeating: 0)
    var j = 0
    while j + 8 <= n {
        let x = UnsafeRawPointer(row + j).loadUnaligned(as: SIMD8<T>.self)
        for l in 0..<8 { best[l] = x[l] > best[l] ? x[l] : best[l] }
        probe += x * 0  // stays 0 unless some x is inf or NaN
        j += 8
    }
    var m = best[0], finite = probe.sum() == 0
    for l in 1..<8 where best[l] > m { m = best[l] }
    while j < n {
        m = Swift.max(m, row[j])
        finite = finite && row[j].isFinite
        j += 1
    }
    return (m, finite)
}

/// row[j] = exp(row[j] − shift) for j < n; returns the sum of the new values.
@inline(__always)
private func exponentiateShifted<T: CPUFloat>(_ row: UnsafeMutablePointer<T>, _ n: Int, by shift: T) -> T {
    if T.self == Float.self {
        return T(exponentiateShiftedFloat(UnsafeMutableRawPointer(row).assumingMemoryBound(to: Float.self), n, Float(shift)))
    }
    var sum: T = 0
    for j in 0..<n {
        let e = T.exp(row[j] - shift)
        row[j] = e
        sum += e
    }
    return sum
}

private func exponentiateShiftedFloat(_ row: UnsafeMutablePointer<Float>, _ n: Int, _ shift: Float) -> Float {
    var acc = SIMD8<Float>(repeating: 0)
    let s = SIMD8<Float>(repeating: shift)
    var j = 0
    while j + 8 <= n {
        let raw = UnsafeMutableRawPointer(row + j)
        let e = VectorMath.exp8(raw.loadUnaligned(as: SIMD8<Float>.self) - s)
        raw.storeBytes(of: e, as: SIMD8<Float>.self)
        acc += e
        j += 8
    }
    var sum = acc.sum()
    while j < n {
        let e = Foundation.expf(row[j] - shift)
        row[j] = e
        sum += e
        j += 1
    }
    return sum
}

// MARK: - Scheduling

/// Runs `body(task, scratch)` for every task in 0..<count (`forEachTask`; causal blocks differ in
/// cost), each thread owning a scratch buffer of `scratchCount` elements. The tasks' GEMMs are not
/// split further. While several threads run, OpenBLAS is held to one thread (it is at one already
/// unless OPENBLAS_NUM_THREADS asked for more): its pthreads build would otherwise serialise
/// concurrent threaded GEMMs on one lock and oversubscribe the cores (6× slower measured).
private func runAttentionTasks<T>(_ count: Int, scratchCount: Int, _: T.Type,
                                  _ body: (Int, UnsafeMutablePointer<T>) -> Void) {
    if min(cpuWorkerCount, count) <= 1 {
        forEachTask(count, scratch: scratchCount, T.self, body)
    } else {
        SingleThreadedBLAS.run { forEachTask(count, scratch: scratchCount, T.self, body) }
    }
}

/// Nested/concurrent-safe "OpenBLAS uses one thread" scope: the first entrant saves the thread count,
/// the last one out restores it.
enum SingleThreadedBLAS {
    private static let lock = NSLock()
    nonisolated(unsafe) private static var depth = 0
    nonisolated(unsafe) private static var saved: Int32 = 1

    static func run(_ body: () -> Void) {
        lock.lock()
        if depth == 0 {
            saved = Int32(BLASThreads.count)
            if saved > 1 { openblas_set_num_threads(1) }
        }
        depth += 1
        lock.unlock()
        defer {
            lock.lock()
            depth -= 1
            if depth == 0 && saved > 1 { openblas_set_num_threads(saved) }
            lock.unlock()
        }
        body()
    }
}
