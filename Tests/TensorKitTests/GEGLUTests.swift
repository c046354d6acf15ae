import Foundation
import XCTest
@testable import TensorKit

/// The fused GEGLU op (`geglu(h, bias:)`, diffusers' `GEGLU` after its projection): values against a
/// float64 loop written here from the definition a · gelu(g), gelu(g) = g · Φ(g) with Φ from `erf`;
/// gradients against finite differences, with the bias trained or frozen.
final class GEGLUTests: XCTestCase {
    /// a · gelu(g) for h [rows, 2·inner] and an optional bias, in float64.
    private func reference(_ h: [Double], _ bias: [Double]?, rows: Int, inner: Int) -> [Double] {
        var out = [Double](repeating: 0, count: rows * inner)
        for r in 0..<rows {
            for j in 0..<inner {
                let a = h[r * 2 * inner + j] + (bias?[j] ?? 0), g = h[r * 2 * inner + inner + j] + (bias?[inner + j] ?? 0)
                out[r * inner + j] = a * g * 0.5 * (1 + erf(g / 2.0.squareRoot()))
            }
        }
        return out
    }

    func testValuesMatchTheDefinition() {
        for dtype in [DType.float32, .float64] {
            let h = Tensor.randn([2, 3, 10], seed: 1, dtype: dtype) * 2, bias = Tensor.randn([10], seed: 2, dtype: dtype)
            let tolerance = dtype == .float32 ? 1e-6 : 1e-14
            let withBias = geglu(h, bias: bias)
            XCTAssertEqual(withBias.shape, [2, 3, 5])
            assertClose(withBias.toArray(), reference(h.toArray(), bias.toArray(), rows: 6, inner: 5),
                        atol: tolerance, rtol: tolerance, "\(dtype) with bias")
            assertClose(geglu(h).toArray(), reference(h.toArray(), nil, rows: 6, inner: 5),
                        atol: tolerance, rtol: tolerance, "\(dtype) without bias")
        }
        // A non-contiguous input (a transposed view) is read in its logical order.
        let t = Tensor.randn([4, 6], seed: 3, dtype: .float64).transposed(0, 1)
        assertClose(geglu(t).toArray(), reference(t.contiguous().toArray(), nil, rows: 6, inner: 2), atol: 1e-14, rtol: 1e-14,
                    "transposed input")
    }

    func testGradientsByFiniteDifferences() {
        let h = randomDouble([3, 2, 8], seed: 4, scale: 1.5), bias = randomDouble([8], seed: 5)
        assertGradientsMatch([h, bias]) { geglu($0[0], bias: $0[1]) }
        assertGradientsMatch([h, bias], frozen: [1]) { geglu($0[0], bias: $0[1]) }
        assertGradientsMatch([h, bias], frozen: [0]) { geglu($0[0], bias: $0[1]) }
        assertGradientsMatch([h]) { geglu($0[0]) }
    }
}
