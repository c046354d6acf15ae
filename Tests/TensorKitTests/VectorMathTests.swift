import XCTest
@testable import TensorKit

/// The float32 activations use vectorised polynomial approximations; float64 goes through libm.
/// Holding the two together checks the approximations against an independent implementation.
final class VectorMathTests: XCTestCase {
    let grid: [Double] = stride(from: -30.0, through: 30.0, by: 0.0173).map { $0 } + [0, 1e-7, -1e-7, 1e-3, -1e-3, 0.4999, 0.5, 0.5001]

    func compare(_ name: String, tolerance: Double, floor: Double = 1e-4, _ f: (Tensor) -> Tensor) {
        let x64 = Tensor(grid, shape: [grid.count], dtype: .float64)
        // Evaluate the float64 reference at the float32-rounded inputs.
        let x32 = x64.to(.float32)
        let expected = f(x32.to(.float64)).toArray()
        let actual = f(x32).toArray()
        for i in 0..<grid.count where expected[i].isFinite {
            // Relative error with a small absolute floor: near zero, float32 formulas such as 1 + tanh(u)
            // for u ≪ 0 cancel (PyTorch's float32 kernels share this), so tiny values compare absolutely.
            let error = Swift.abs(actual[i] - expected[i]) / (Swift.abs(expected[i]) + floor)
            if error > tolerance {
                XCTFail("\(name)(\(grid[i])) = \(actual[i]), libm gives \(expected[i])")
                return
            }
        }
    }

    func testForwardMatchesLibm() {
        compare("exp", tolerance: 1e-6) { $0.clamp(max: 80).exp() }
        compare("tanh", tolerance: 1e-6) { $0.tanh() }
        compare("sigmoid", tolerance: 1e-6) { $0.sigmoid() }
        compare("silu", tolerance: 1e-6) { $0.silu() }
        compare("quick_gelu", tolerance: 1e-6) { $0.quickGelu() }
        // Both GELU forms compute 1 + erf/tanh, which cancels in float32 for x ≪ 0 (as PyTorch's do).
        compare("gelu", tolerance: 2e-3) { $0.gelu() }
        compare("gelu_tanh", tolerance: 2e-3) { $0.gelu(approximate: true) }
    }

    func testGradientsMatchLibm() {
        for (name, f) in [("silu", { (t: Tensor) in t.silu() }), ("sigmoid", { $0.sigmoid() }), ("tanh", { $0.tanh() }),
                          ("quick_gelu", { $0.quickGelu() }), ("gelu", { $0.gelu() }), ("gelu_tanh", { $0.gelu(approximate: true) })] {
            compare("d/dx \(name)", tolerance: 2e-3, floor: 1e-3) { x in
                let leaf = x.detach().requiringGrad()
                f(leaf).sum().backward()
                return leaf.grad!
            }
        }
    }

    func testSpecialValues() {
        let x = Tensor([.nan, .infinity, -.infinity, -100, 100], shape: [5])
        let e = x.exp().toArray()
        XCTAssertTrue(e[0].isNaN)
        XCTAssertEqual(Array(e[1...]), [.infinity, 0, 0, .infinity])
        let t = x.tanh().toArray()
        XCTAssertTrue(t[0].isNaN)
        XCTAssertEqual(Array(t[1...]), [1, -1, -1, 1])
    }
}
