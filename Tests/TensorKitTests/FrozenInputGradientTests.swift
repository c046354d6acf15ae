import XCTest
@testable import TensorKit

/// Ops skip the gradients of inputs that do not require grad (a LoRA'd model's frozen weights) and
/// keep alive only what the remaining gradients read. Finite differences check that the gradients
/// still computed are right with every combination of frozen operands, and that frozen inputs get none.
final class FrozenInputGradientTests: XCTestCase {
    func testMatmulWithEitherOperandFrozen() {
        let a = randomDouble([2, 3, 4], seed: 101), b = randomDouble([4, 5], seed: 102)
        assertGradientsMatch([a, b], frozen: [1]) { $0[0].matmul($0[1]) }
        // The weight gradient of a batched input times a matrix is one GEMM over all rows.
        assertGradientsMatch([a, b], frozen: [0]) { $0[0].matmul($0[1]) }
        // ... also when the input is a non-contiguous view and the matrix a transposed one.
        let c = randomDouble([4, 2, 3], seed: 103), w = randomDouble([5, 4], seed: 104)
        assertGradientsMatch([c, w], frozen: [0]) { $0[0].permute([1, 2, 0]).matmul($0[1].transposed()) }
        let d = randomDouble([3, 1, 4, 2], seed: 105), e = randomDouble([2, 2, 3], seed: 106)
        assertGradientsMatch([d, e], frozen: [0]) { $0[0].matmul($0[1]) }
        assertGradientsMatch([d, e], frozen: [1]) { $0[0].matmul($0[1]) }
    }

    func testLinearWithFrozenWeightAndBias() {
        let x = randomDouble([2, 3, 4], seed: 107), w = randomDouble([5, 4], seed: 108), b = randomDouble([5], seed: 109)
        assertGradientsMatch([x, w, b], frozen: [1, 2]) { linear($0[0], weight: $0[1], bias: $0[2]) }
        assertGradientsMatch([x, w, b], frozen: [0]) { linear($0[0], weight: $0[1], bias: $0[2]) }
        assertGradientsMatch([x, w, b], frozen: [0, 1]) { linear($0[0], weight: $0[1], bias: $0[2]) }
    }

    func testBinaryOpsWithOneSideFrozen() {
        let a = randomDouble([2, 3, 4], seed: 110)
        let b = randomDouble([3, 1], seed: 111, scale: 0.5, shift: 2)
        let ops: [(String, (Tensor, Tensor) -> Tensor)] = [
            ("add", { $0 + $1 }), ("sub", { $0 - $1 }), ("mul", { $0 * $1 }), ("div", { $0 / $1 }),
            ("maximum", { $0.maximum($1) }), ("minimum", { $0.minimum($1) }),
        ]
        for (name, op) in ops {
            for frozen in [0, 1] {
                let before = testRun?.failureCount ?? 0
                assertGradientsMatch([a, b], frozen: [frozen]) { op($0[0], $0[1]) }
                if (testRun?.failureCount ?? 0) > before { XCTFail("\(name) with input \(frozen) frozen") }
            }
        }
        let base = randomDouble([3, 4], seed: 112, scale: 0.2, shift: 1.5), exponent = randomDouble([4], seed: 113)
        assertGradientsMatch([base, exponent], frozen: [0]) { $0[0].pow($0[1]) }
        assertGradientsMatch([base, exponent], frozen: [1]) { $0[0].pow($0[1]) }
    }

    func testWhereWithOneSideFrozen() {
        let a = randomDouble([3, 4], seed: 114), b = randomDouble([4], seed: 115)
        let condition = randomDouble([3, 4], seed: 116).gt(0)
        assertGradientsMatch([a, b], frozen: [1]) { Tensor.where(condition, $0[0], $0[1]) }
        assertGradientsMatch([a, b], frozen: [0]) { Tensor.where(condition, $0[0], $0[1]) }
    }

    func testConvWithFrozenWeightOrInput() {
        let x = randomDouble([2, 3, 5, 5], seed: 117), w = randomDouble([4, 3, 3, 3], seed: 118)
        let bias = randomDouble([4], seed: 119)
        let conv: ([Tensor]) -> Tensor = { conv2d($0[0], weight: $0[1], bias: $0[2], stride: (2, 1), padding: (1, 1)) }
        assertGradientsMatch([x, w, bias], frozen: [1, 2], conv)
        assertGradientsMatch([x, w, bias], frozen: [0], conv)
        assertGradientsMatch([x, w, bias], frozen: [0, 2], conv)
    }

    /// A LoRA-shaped chain: frozen base weights, trainable low-rank factors; every unary op whose
    /// derivative reads only its input or only its output sits between them.
    func testChainThroughFrozenLayersReachesTheTrainableOnes() {
        let x = randomDouble([2, 3, 4], seed: 120)
        let base = randomDouble([4, 4], seed: 121), baseBias = randomDouble([4], seed: 122)
        let down = randomDouble([2, 4], seed: 123, scale: 0.5), up = randomDouble([4, 2], seed: 124, scale: 0.5)
        assertGradientsMatch([x, base, baseBias, down, up], frozen: [0, 1, 2]) { t in
            let h = linear(t[0], weight: t[1], bias: t[2]) + linear(linear(t[0], weight: t[3], bias: nil), weight: t[4], bias: nil) * 0.5
            let a = h.silu() + h.exp() * 0.1 + h.tanh() - h.sigmoid() + (h.square() + 1).sqrt() + (h.square() + 1).reciprocal()
            return linear(-a, weight: t[1], bias: nil).gelu()
        }
    }
}
