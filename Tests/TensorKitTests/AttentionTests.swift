import XCTest
@testable import TensorKit

/// The chunked CPU attention kernels against a naive float64 softmax(q kᵀ · scale + mask) v built
/// from core ops, and against finite differences.
final class AttentionTests: XCTestCase {
    /// Naive attention with the full score matrix; the causal mask is PyTorch's top-left `is_causal`
    /// (query i sees keys j ≤ i). Returns the output and the log-sum-exp of the masked scores.
    private func naiveAttention(_ q: Tensor, _ k: Tensor, _ v: Tensor, scale: Double, causal: Bool) -> (Tensor, Tensor) {
        let nq = q.shape[2], nk = k.shape[2]
        var s = q.matmul(k.transposed()) * scale
        if causal {
            var mask = [Double](repeating: 0, count: nq * nk)
            for i in 0..<nq { for j in 0..<nk where j > i { mask[i * nk + j] = -1e30 } }
            s = s + Tensor(mask, shape: [nq, nk], dtype: q.dtype)
        }
        // The shift does not change the softmax, so it carries no gradient.
        let shift = s.max(axis: -1, keepDims: true).detach()
        let e = (s - shift).exp()
        let total = e.sum(axis: -1, keepDims: true)
        return ((e / total).matmul(v), (total.log() + shift).squeeze(-1))
    }

    private struct Case {
        var b = 1, h = 2, nq = 9, nk = 9, d = 8, dv: Int? = nil, causal = false, chunk: Int? = nil
    }

    private func inputs(_ c: Case, seed: UInt64, dtype: DType = .float64) -> (Tensor, Tensor, Tensor) {
        let q = randomDouble([c.b, c.h, c.nq, c.d], seed: seed).to(dtype)
        let k = randomDouble([c.b, c.h, c.nk, c.d], seed: seed + 1).to(dtype)
        let v = randomDouble([c.b, c.h, c.nk, c.dv ?? c.d], seed: seed + 2).to(dtype)
        return (q, k, v)
    }

    private let cases: [Case] = [
        Case(b: 2, h: 3, nq: 37, nk: 37, d: 8, causal: false, chunk: 16),   // 37 rows: a partial last block
        Case(b: 2, h: 3, nq: 37, nk: 37, d: 8, causal: true, chunk: 16),
        Case(b: 1, h: 2, nq: 20, nk: 77, d: 40, causal: false, chunk: 7),   // CLIP-like cross-attention
        Case(b: 1, h: 2, nq: 20, nk: 77, d: 40, causal: true, chunk: 7),    // causal with Nq < Nk
        Case(b: 1, h: 1, nq: 50, nk: 9, d: 64, causal: true, chunk: 8),     // causal with Nq > Nk
        Case(b: 2, h: 1, nq: 77, nk: 77, d: 64, causal: true, chunk: nil),  // default block size
        Case(b: 1, h: 3, nq: 13, nk: 11, d: 8, dv: 5, causal: false, chunk: 4),  // value width ≠ key width
        Case(b: 1, h: 3, nq: 13, nk: 11, d: 8, dv: 5, causal: true, chunk: 4),
    ]

    func testForwardMatchesNaiveReference() {
        for (n, c) in cases.enumerated() {
            let (q, k, v) = inputs(c, seed: UInt64(10 * n + 1))
            let scale = 1 / Double(c.d).squareRoot()
            let (out, lse) = CPUBackend.shared.attention(q: q, k: k, v: v, scale: scale, causal: c.causal, chunkRows: c.chunk)
            let (refOut, refLse) = naiveAttention(q, k, v, scale: scale, causal: c.causal)
            XCTAssertEqual(out.shape, refOut.shape, "case \(n)")
            XCTAssertEqual(lse.shape, [c.b, c.h, c.nq], "case \(n)")
            assertClose(out.toArray(), refOut.toArray(), atol: 1e-12, rtol: 1e-10, "output, case \(n)")
            assertClose(lse.toArray(), refLse.toArray(), atol: 1e-12, rtol: 1e-10, "logSumExp, case \(n)")
        }
    }

    func testOpWrapperUsesDefaultScaleAndCausalFlag() {
        let c = Case(b: 1, h: 2, nq: 6, nk: 6, d: 40)
        let (q, k, v) = inputs(c, seed: 3)
        for causal in [false, true] {
            let out = scaledDotProductAttention(q, k, v, causal: causal)
            let (ref, _) = naiveAttention(q, k, v, scale: 1 / 40.0.squareRoot(), causal: causal)
            assertClose(out.toArray(), ref.toArray(), atol: 1e-12, rtol: 1e-10, "causal \(causal)")
        }
        let custom = scaledDotProductAttention(q, k, v, scale: 0.3)
        assertClose(custom.toArray(), naiveAttention(q, k, v, scale: 0.3, causal: false).0.toArray(), atol: 1e-12, rtol: 1e-10)
    }

    /// float32 runs the vectorised exp; compare with the float64 reference, also with large scores
    /// where the softmax saturates (the row-maximum shift must keep it finite).
    func testFloat32MatchesFloat64Reference() {
        for (n, c) in [Case(b: 2, h: 2, nq: 130, nk: 130, d: 40, causal: false),
                       Case(b: 2, h: 2, nq: 130, nk: 130, d: 40, causal: true),
                       Case(b: 1, h: 3, nq: 70, nk: 77, d: 64, causal: false, chunk: 16)].enumerated() {
            for magnitude in [1.0, 30.0] {
                let (q64, k, v) = inputs(c, seed: UInt64(100 + n))
                let q = q64 * magnitude
                let scale = 1 / Double(c.d).squareRoot()
                let (out, lse) = CPUBackend.shared.attention(q: q.to(.float32), k: k.to(.float32), v: v.to(.float32),
                                                             scale: scale, causal: c.causal, chunkRows: c.chunk)
                XCTAssertEqual(out.dtype, .float32)
                let (refOut, refLse) = naiveAttention(q.to(.float32).to(.float64), k.to(.float32).to(.float64),
                                                      v.to(.float32).to(.float64), scale: scale, causal: c.causal)
                assertClose(out.toArray(), refOut.toArray(), atol: 2e-5, rtol: 1e-4, "float32 output, case \(n) ×\(magnitude)")
                assertClose(lse.toArray(), refLse.toArray(), atol: 2e-5, rtol: 1e-5, "float32 logSumExp, case \(n) ×\(magnitude)")
            }
        }
    }

    /// A NaN query row gives a NaN output row (as PyTorch's softmax does) and leaves the other rows
    /// alone; the float32 path clamps before its exp, so it has to notice the NaN separately.
    func testNonFiniteScoresPropagateToTheirRow() {
        let c = Case(b: 1, h: 2, nq: 20, nk: 24, d: 8)
        for dtype in [DType.float64, .float32] {
            let (q, k, v) = inputs(c, seed: 42, dtype: dtype)
            let (clean, _) = naiveAttention(q.to(.float64), k.to(.float64), v.to(.float64), scale: 0.5, causal: false)
            let poisoned = q.contiguousCopy()
            if dtype == .float32 { poisoned.pointer(as: Float.self)[3 * 8 + 1] = .nan } else { poisoned.pointer(as: Double.self)[3 * 8 + 1] = .nan }
            let (out, lse) = CPUBackend.shared.attention(q: poisoned, k: k, v: v, scale: 0.5, causal: false, chunkRows: nil)
            let got = out.toArray(), want = clean.toArray()
            for i in 0..<got.count {
                if i / 8 == 3 {
                    XCTAssert(got[i].isNaN, "\(dtype): element \(i) of the NaN row is \(got[i])")
                } else {
                    XCTAssertEqual(got[i], want[i], accuracy: 1e-5, "\(dtype): element \(i)")
                }
            }
            XCTAssert(lse.toArray()[3].isNaN, "\(dtype): logSumExp of the NaN row")
        }
    }

    /// Degenerate sizes: no keys gives zeros (as PyTorch) and a −inf log-sum-exp; zero-width
    /// queries make every score 0, so each row averages the values it may see.
    func testDegenerateSizes() {
        let q = randomDouble([1, 2, 3, 4], seed: 1)
        let (none, lse) = CPUBackend.shared.attention(q: q, k: Tensor(zeros: [1, 2, 0, 4], dtype: .float64),
                                                      v: Tensor(zeros: [1, 2, 0, 4], dtype: .float64), scale: 1, causal: false)
        XCTAssertEqual(none.toArray(), [Double](repeating: 0, count: 24))
        XCTAssertEqual(lse.toArray(), [Double](repeating: -.infinity, count: 6))

        let v = randomDouble([1, 1, 5, 3], seed: 2)
        let vals = v.toArray()
        for causal in [false, true] {
            let (out, _) = CPUBackend.shared.attention(q: Tensor(zeros: [1, 1, 4, 0], dtype: .float64),
                                                       k: Tensor(zeros: [1, 1, 5, 0], dtype: .float64), v: v,
                                                       scale: 1, causal: causal)
            var expected: [Double] = []
            for i in 0..<4 {
                let seen = causal ? i + 1 : 5
                for c in 0..<3 { expected.append((0..<seen).map { vals[$0 * 3 + c] }.reduce(0, +) / Double(seen)) }
            }
            assertClose(out.toArray(), expected, atol: 1e-12, rtol: 1e-12, "D = 0, causal \(causal)")
        }
        let (empty, _) = CPUBackend.shared.attention(q: q, k: q, v: Tensor(zeros: [1, 2, 3, 0], dtype: .float64),
                                                     scale: 1, causal: true)
        XCTAssertEqual(empty.shape, [1, 2, 3, 0])
    }

    // MARK: backward

    func testGradientsMatchFiniteDifferences() {
        for causal in [false, true] {
            for (nq, nk) in [(5, 5), (7, 9), (8, 6)] {
                let c = Case(b: 1, h: 2, nq: nq, nk: nk, d: 4, causal: causal)
                let (q, k, v) = inputs(c, seed: UInt64(nq * 10 + nk))
                let before = testRun?.failureCount ?? 0
                assertGradientsMatch([q, k, v]) { xs in scaledDotProductAttention(xs[0], xs[1], xs[2], causal: causal) }
                if (testRun?.failureCount ?? 0) > before { XCTFail("gradcheck nq \(nq) nk \(nk) causal \(causal)") }
            }
        }
    }

    /// Small blocks so the dK/dV accumulation crosses block boundaries, against the naive graph's autograd.
    func testBackwardAcrossBlocksMatchesNaiveAutograd() {
        for (n, c) in cases.enumerated() {
            for dtype in [DType.float64, .float32] {
                let (q, k, v) = inputs(c, seed: UInt64(10 * n + 5), dtype: dtype)
                let scale = 1 / Double(c.d).squareRoot()
                let gradOut = randomDouble([c.b, c.h, c.nq, c.dv ?? c.d], seed: UInt64(n + 77)).to(dtype)
                let (out, lse) = CPUBackend.shared.attention(q: q, k: k, v: v, scale: scale, causal: c.causal, chunkRows: c.chunk)
                let (dq, dk, dv) = CPUBackend.shared.attentionBackward(
                    q: q, k: k, v: v, output: out, logSumExp: lse, gradOutput: gradOut, scale: scale,
                    causal: c.causal, chunkRows: c.chunk)

                let (q64, k64, v64) = (q.to(.float64), k.to(.float64), v.to(.float64))
                for t in [q64, k64, v64] { t.requiresGrad = true }
                let (ref, _) = naiveAttention(q64, k64, v64, scale: scale, causal: c.causal)
                (ref * gradOut.to(.float64)).sum().backward()
                let (atol, rtol) = dtype == .float64 ? (1e-11, 1e-9) : (1e-4, 1e-3)
                assertClose(dq.toArray(), q64.grad!.toArray(), atol: atol, rtol: rtol, "dq, case \(n) \(dtype)")
                assertClose(dk.toArray(), k64.grad!.toArray(), atol: atol, rtol: rtol, "dk, case \(n) \(dtype)")
                assertClose(dv.toArray(), v64.grad!.toArray(), atol: atol, rtol: rtol, "dv, case \(n) \(dtype)")
            }
        }
    }

    func testOneKeyGivesTheQueriesNoGradient() {
        // Softmax over a single key is 1 whatever the score, so the output is v for every query and
        // dq is exactly 0 (by hand); dv is the sum of the output gradients over the queries, dk is 0.
        for dtype in [DType.float32, .float64] {
            let c = Case(b: 2, h: 3, nq: 19, nk: 1, d: 40, chunk: 8)
            let (q, k, v) = inputs(c, seed: 31, dtype: dtype)
            let gradOut = randomDouble([2, 3, 19, 40], seed: 32).to(dtype)
            let (out, lse) = CPUBackend.shared.attention(q: q, k: k, v: v, scale: 0.7, causal: false, chunkRows: c.chunk)
            let (dq, dk, dv) = CPUBackend.shared.attentionBackward(
                q: q, k: k, v: v, output: out, logSumExp: lse, gradOutput: gradOut, scale: 0.7, causal: false,
                chunkRows: c.chunk)
            XCTAssertEqual(dq.toArray(), [Double](repeating: 0, count: dq.numel), "dq \(dtype)")
            XCTAssertEqual(dk.toArray(), [Double](repeating: 0, count: dk.numel), "dk \(dtype)")
            assertClose(dv.toArray(), gradOut.to(.float64).sum(axis: 2, keepDims: true).toArray(),
                        atol: dtype == .float32 ? 1e-5 : 1e-12, rtol: 1e-6, "dv \(dtype)")
        }
    }

    func testSingleHeadRunsTheSerialPath() {
        // One head and one block: no worker threads, OpenBLAS keeps its own threading.
        let c = Case(b: 1, h: 1, nq: 33, nk: 21, d: 8, causal: true)
        let (q, k, v) = inputs(c, seed: 9)
        for t in [q, k, v] { t.requiresGrad = true }
        let out = scaledDotProductAttention(q, k, v, causal: true, scale: 0.5)
        out.sum().backward()
        let (q2, k2, v2) = (q.detach(), k.detach(), v.detach())
        for t in [q2, k2, v2] { t.requiresGrad = true }
        let (ref, _) = naiveAttention(q2, k2, v2, scale: 0.5, causal: true)
        ref.sum().backward()
        assertClose(out.toArray(), ref.toArray(), atol: 1e-12, rtol: 1e-10, "output")
        for (a, b) in [(q, q2), (k, k2), (v, v2)] {
            assertClose(a.grad!.toArray(), b.grad!.toArray(), atol: 1e-11, rtol: 1e-9, "gradient")
        }
    }
}
