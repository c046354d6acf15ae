import XCTest
@testable import TensorKit

final class AutogradTests: XCTestCase {
    func testGradientsAccumulateIntoLeavesAcrossBackwardCalls() {
        let x = Tensor([1, 2, 3], shape: [3], dtype: .float64).requiringGrad()
        (x * x).sum().backward()          // d/dx x² = 2x
        (x * 3).sum().backward()          // + 3
        XCTAssertEqual(x.grad?.toArray(), [5, 7, 9])
    }

    func testSharedSubexpressionGetsSummedGradient() {
        // y = a·b + a  ⇒ dy/da = b + 1, dy/db = a
        let a = Tensor([2], shape: [1], dtype: .float64).requiringGrad()
        let b = Tensor([5], shape: [1], dtype: .float64).requiringGrad()
        let ab = a * b
        (ab + a + ab * 0).sum().backward()
        XCTAssertEqual(a.grad?.item(), 6)
        XCTAssertEqual(b.grad?.item(), 2)
    }

    /// Leaf gradients own their memory. The seed a caller passes, and a gradient that reaches two
    /// leaves (add's backward passes it through to both), are copied, so writing into one leaf's
    /// `.grad` (as clipGradNorm, the loss scaler and the optimizers do) changes nothing else. A
    /// backward kernel's fresh output is kept as it is (values: silu'(0) = 0.5 and
    /// silu'(1) = σ(1)(1 + 1 − σ(1)) = 0.7310586 · 1.2689414 = 0.9276705, by hand).
    func testLeafGradientsOwnTheirMemory() {
        let seed = Tensor([0.5, -1, 2], shape: [3])
        let x = Tensor([1, 2, 3], shape: [3]).requiringGrad()
        x.backward(seed)
        XCTAssertFalse(x.grad!.storage === seed.storage)

        let a = Tensor([1, 2, 3], shape: [3]).requiringGrad(), b = Tensor([4, 5, 6], shape: [3]).requiringGrad()
        (a + b).backward(seed)
        XCTAssertFalse(a.grad!.storage === b.grad!.storage)
        XCTAssertFalse(a.grad!.storage === seed.storage)
        XCTAssertFalse(b.grad!.storage === seed.storage)
        a.grad!.assign(Tensor.zeros([3]))
        XCTAssertEqual(b.grad!.toArray(), [0.5, -1, 2])
        XCTAssertEqual(seed.toArray(), [0.5, -1, 2])

        let z = Tensor([0, 1], shape: [2]).requiringGrad()
        z.silu().backward(Tensor([1, 1], shape: [2]))
        let g = z.grad!.toArray()
        XCTAssertEqual(g[0], 0.5, accuracy: 1e-6)
        XCTAssertEqual(g[1], 0.9276705, accuracy: 1e-6)
        XCTAssertTrue(z.grad!.isContiguous)
    }

    func testLinearWeightGradientThroughTheTransposedView() {
        // linear(x, W) multiplies by W's transposed view; W's gradient Σ_rows dyᵀ·x, by hand in double.
        let x = Tensor((0..<24).map { Double($0) * 0.25 - 3 }, shape: [2, 3, 4], dtype: .float64)
        let w = Tensor((0..<20).map { Double($0 % 7) - 2.5 }, shape: [5, 4], dtype: .float64).requiringGrad()
        let dy = Tensor((0..<30).map { Double(($0 * 5) % 11) - 4 }, shape: [2, 3, 5], dtype: .float64)
        linear(x, weight: w, bias: nil).backward(dy)
        let xs = x.toArray(), dys = dy.toArray()
        var expected = [Double](repeating: 0, count: 20)
        for r in 0..<6 { for o in 0..<5 { for c in 0..<4 { expected[o * 4 + c] += dys[r * 5 + o] * xs[r * 4 + c] } } }
        XCTAssertEqual(w.grad!.toArray(), expected)
        XCTAssertEqual(w.grad!.strides, [4, 1])

        // The same rule when the caller's seed is what the transposed view's gradient would view:
        // the leaf must not take the caller's memory.
        let v = Tensor([1, 2, 3, 4, 5, 6], shape: [2, 3], dtype: .float64).requiringGrad()
        let seed = Tensor([6, 5, 4, 3, 2, 1], shape: [3, 2], dtype: .float64)
        v.transposed().backward(seed)
        XCTAssertFalse(v.grad!.storage === seed.storage)
        XCTAssertEqual(v.grad!.toArray(), [6, 4, 2, 5, 3, 1])
        v.grad!.assign(Tensor.zeros([2, 3], dtype: .float64))
        XCTAssertEqual(seed.toArray(), [6, 5, 4, 3, 2, 1])
    }

    func testNoGradScopeRecordsNothing() {
        let x = Tensor([1, 2], shape: [2]).requiringGrad()
        let y = withNoGrad { (x * 2).exp() }
        XCTAssertFalse(y.requiresGrad)
        XCTAssertNil(y.gradFn)
        XCTAssertTrue(GradMode.isEnabled)
        let z = x * 2
        XCTAssertNotNil(z.gradFn)
    }

    func testDetachStopsGradient() {
        let x = Tensor([3], shape: [1], dtype: .float64).requiringGrad()
        (x * x.detach()).sum().backward()   // only the first factor contributes: d/dx = x
        XCTAssertEqual(x.grad?.item(), 3)
    }

    func testFrozenLeafGetsNoGradient() {
        let w = Tensor([1, 2], shape: [2], dtype: .float64)
        let x = Tensor([3, 4], shape: [2], dtype: .float64).requiringGrad()
        (w * x).sum().backward()
        XCTAssertNil(w.grad)
        XCTAssertEqual(x.grad?.toArray(), [1, 2])
    }

    func testCheckpointMatchesPlainBackward() {
        let w1 = randomDouble([4, 4], seed: 1).requiringGrad(), w2 = randomDouble([4, 4], seed: 2).requiringGrad()
        let x = randomDouble([3, 4], seed: 3).requiringGrad()
        func block(_ h: Tensor) -> Tensor { h.matmul(w1).tanh().matmul(w2).silu() }

        block(x).square().sum().backward()
        let plain = [x.grad!.toArray(), w1.grad!.toArray(), w2.grad!.toArray()]
        for t in [x, w1, w2] { t.grad = nil }

        let out = checkpoint([x]) { block($0[0]) }
        XCTAssertEqual(out.gradFn?.name, "checkpoint")
        out.square().sum().backward()
        let recomputed = [x.grad!.toArray(), w1.grad!.toArray(), w2.grad!.toArray()]
        for (p, r) in zip(plain, recomputed) { assertClose(r, p, atol: 1e-12, rtol: 1e-12, "checkpoint") }
    }

    func testCheckpointGradientsAgainstFiniteDifferences() {
        let w = randomDouble([3, 3], seed: 4)
        let x = randomDouble([2, 3], seed: 5)
        assertGradientsMatch([x, w]) { t in checkpoint([t[0]]) { $0[0].matmul(t[1]).gelu() } }
    }

    func testBackwardWithExplicitGradient() {
        let x = Tensor([1, 2, 3], shape: [3], dtype: .float64).requiringGrad()
        let y = x * x
        y.backward(Tensor([1, 0, 2], shape: [3], dtype: .float64))
        XCTAssertEqual(x.grad?.toArray(), [2, 0, 12])
    }

    func testGraphIsReleasedAfterBackward() {
        let x = Tensor([1], shape: [1]).requiringGrad()
        weak var weakIntermediate: Storage?
        var y: Tensor
        do {
            let intermediate = x * 2
            weakIntermediate = intermediate.storage
            y = intermediate * intermediate         // mul's backward reads both of its inputs
        }
        XCTAssertNotNil(weakIntermediate)   // its memory is held by y's backward
        y.sum().backward()
        XCTAssertNil(weakIntermediate)      // freed with the graph
        XCTAssertEqual(x.grad?.toArray(), [8])  // d(4x²)/dx at 1
        _ = y
    }

    /// The graph routes gradients without holding the tensors it routes them through: an
    /// intermediate's memory that no backward function reads is freed as soon as the caller drops it, while
    /// the gradient still flows through its node.
    func testGraphKeepsOnlyWhatBackwardReads() {
        let x = Tensor([0.5, -1], shape: [2], dtype: .float64).requiringGrad()
        weak var weakScaled: Storage?
        weak var weakShifted: Storage?
        var y: Tensor
        do {
            let scaled = x * 3                      // backward needs only the constant
            let shifted = scaled + 1                // backward needs nothing
            weakScaled = scaled.storage
            weakShifted = shifted.storage
            y = shifted.exp()                       // backward reads its output, not its input
        }
        XCTAssertNil(weakScaled)
        XCTAssertNil(weakShifted)
        y.sum().backward()
        // d/dx exp(3x + 1) = 3·exp(3x + 1), worked out by hand.
        let expected = [0.5, -1.0].map { 3 * Foundation.exp(3 * $0 + 1) }
        for (got, want) in zip(x.grad!.toArray(), expected) { XCTAssertEqual(got, want, accuracy: 1e-12) }
    }
}
