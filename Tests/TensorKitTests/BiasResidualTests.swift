import XCTest
@testable import TensorKit

/// The fused bias + residual epilogues: `linear(…, residual:)`, `conv2d(…, residual:)` and
/// `Backend.addBiasResidual`. Values against float64 loops written here and, bit for bit, against
/// the separate adds they replace (the models' outputs must not move); gradients against finite
/// differences, with frozen inputs.
final class BiasResidualTests: XCTestCase {
    func testLinearResidualEqualsSeparateAddsAndHandLoop() {
        let x = Tensor.randn([2, 5, 7], seed: 1), w = Tensor.randn([6, 7], seed: 2)
        let b = Tensor.randn([6], seed: 3), r = Tensor.randn([2, 5, 6], seed: 4)
        let fused = linear(x, weight: w, bias: b, residual: r)
        XCTAssertEqual(fused.shape, [2, 5, 6])
        XCTAssertEqual(fused.toArray(), (linear(x, weight: w, bias: b) + r).toArray(), "not bit-identical to the two adds")
        let (xs, ws, bs, rs) = (x.toArray(), w.toArray(), b.toArray(), r.toArray())
        var expected = [Double](repeating: 0, count: 60)
        for row in 0..<10 {
            for o in 0..<6 {
                var s = 0.0
                for i in 0..<7 { s += xs[row * 7 + i] * ws[o * 7 + i] }
                expected[row * 6 + o] = s + bs[o] + rs[row * 6 + o]
            }
        }
        assertClose(fused.toArray(), expected, atol: 1e-5, rtol: 1e-5, "linear + bias + residual")
        // No bias: the residual alone.
        XCTAssertEqual(linear(x, weight: w, bias: nil, residual: r).toArray(), (linear(x, weight: w, bias: nil) + r).toArray())
    }

    func testConvResidualEqualsSeparateAdd() {
        let x = Tensor.randn([2, 3, 6, 5], seed: 5), w = Tensor.randn([4, 3, 3, 3], seed: 6)
        let b = Tensor.randn([4], seed: 7), r = Tensor.randn([2, 4, 3, 3], seed: 8)
        let fused = conv2d(x, weight: w, bias: b, stride: (2, 2), padding: (1, 1), residual: r)
        let separate = conv2d(x, weight: w, bias: b, stride: (2, 2), padding: (1, 1)) + r
        XCTAssertEqual(fused.toArray(), separate.toArray(), "not bit-identical to conv + residual")
        // The 1×1 (GEMM-only) path of a transformer's proj_out.
        let w1 = Tensor.randn([3, 3, 1, 1], seed: 9), b1 = Tensor.randn([3], seed: 14), r1 = Tensor.randn([2, 3, 6, 5], seed: 10)
        XCTAssertEqual(conv2d(x, weight: w1, bias: b1, residual: r1).toArray(),
                       (conv2d(x, weight: w1, bias: b1) + r1).toArray())
    }

    func testBackendChannelBiasWithInnerBlocks() {
        // Element i takes bias[(i / inner) % C]: a [2, 3, 5] tensor with a bias over axis 1.
        let x = Tensor.randn([2, 3, 5], seed: 11), b = Tensor.randn([3], seed: 12), r = Tensor.randn([2, 3, 5], seed: 13)
        let out = CPUBackend.shared.addBiasResidual(x, bias: b, residual: r, inner: 5).toArray()
        let (xs, bs, rs) = (x.toArray(), b.toArray(), r.toArray())
        let expected = (0..<30).map { i in Double(Float(Float(xs[i]) + Float(bs[(i / 5) % 3])) + Float(rs[i])) }
        XCTAssertEqual(out, expected, "float32 (x + b) + r, rounded after each add")
        let biasOnly = CPUBackend.shared.addBiasResidual(x, bias: b, residual: nil, inner: 5).toArray()
        XCTAssertEqual(biasOnly, (0..<30).map { i in Double(Float(xs[i]) + Float(bs[(i / 5) % 3])) })
    }

    func testGradientsByFiniteDifferences() {
        let x = randomDouble([2, 3, 4], seed: 20), w = randomDouble([5, 4], seed: 21)
        let b = randomDouble([5], seed: 22), r = randomDouble([2, 3, 5], seed: 23)
        assertGradientsMatch([x, w, b, r]) { linear($0[0], weight: $0[1], bias: $0[2], residual: $0[3]) }
        // Frozen weight and bias (a LoRA'd model's base layer): gradients for x and the residual only.
        assertGradientsMatch([x, w, b, r], frozen: [1, 2]) { linear($0[0], weight: $0[1], bias: $0[2], residual: $0[3]) }
        assertGradientsMatch([x, w, r], frozen: [0]) { linear($0[0], weight: $0[1], bias: nil, residual: $0[2]) }

        let cx = randomDouble([1, 2, 5, 4], seed: 24), cw = randomDouble([3, 2, 3, 3], seed: 25)
        let cb = randomDouble([3], seed: 26), cr = randomDouble([1, 3, 5, 4], seed: 27)
        assertGradientsMatch([cx, cw, cb, cr]) { conv2d($0[0], weight: $0[1], bias: $0[2], padding: (1, 1), residual: $0[3]) }
        assertGradientsMatch([cx, cw, cb, cr], frozen: [1, 2, 3]) {
            conv2d($0[0], weight: $0[1], bias: $0[2], padding: (1, 1), residual: $0[3])
        }
    }

    func testLayersWithDeltasAddThemInTheBiasPass() {
        // x Wᵀ + b + Σ delta(x) (+ residual): the deltas' sum, and the residual, go into the bias pass.
        final class Shift: Module, LayerDelta {
            let factor: Double
            init(_ factor: Double) { self.factor = factor }
            func callAsFunction(_ x: Tensor) -> Tensor { x * factor }
        }
        /// A delta that broadcasts against the output (not fusable: added separately).
        final class Offset: Module, LayerDelta {
            func callAsFunction(_ x: Tensor) -> Tensor { Tensor([0.25, -0.5], shape: [2], dtype: .float64) }
        }
        var g = PhiloxGenerator(seed: 30)
        let layer = Linear(2, 2, dtype: .float64, generator: &g)
        layer.deltas = [Shift(0.5), Shift(-0.125)]
        let x = randomDouble([1, 3, 2], seed: 31), r = randomDouble([1, 3, 2], seed: 32)
        let (xs, ws, bs, rs) = (x.toArray(), layer.weight.toArray(), layer.bias!.toArray(), r.toArray())
        var expected = [Double](repeating: 0, count: 6)
        for row in 0..<3 {
            for o in 0..<2 {
                expected[row * 2 + o] = xs[row * 2] * ws[o * 2] + xs[row * 2 + 1] * ws[o * 2 + 1] + bs[o] + 0.375 * xs[row * 2 + o]
            }
        }
        assertClose(layer(x).toArray(), expected, atol: 1e-12, rtol: 1e-12, "linear + two deltas")
        assertClose(layer(x, residual: r).toArray(), zip(expected, rs).map { $0 + $1 }, atol: 1e-12, rtol: 1e-12,
                    "linear + two deltas + residual")
        layer.deltas = [Offset()]
        assertClose(layer(x).toArray(), expected.enumerated().map { i, e in e - 0.375 * xs[i] + [0.25, -0.5][i % 2] },
                    atol: 1e-12, rtol: 1e-12, "a broadcasting delta")
        // Gradients through the fused path: x (through the base and the deltas) and the residual.
        layer.deltas = [Shift(0.5)]
        assertGradientsMatch([x, r]) { layer($0[0], residual: $0[1]) }

        let conv = Conv2d(2, 2, kernelSize: 3, padding: 1, dtype: .float64, generator: &g)
        let cx = randomDouble([1, 2, 4, 3], seed: 33), cr = randomDouble([1, 2, 4, 3], seed: 34)
        let base = conv2d(cx, weight: conv.weight, bias: conv.bias, padding: (1, 1)).toArray()
        conv.deltas = [Shift(0.5)]
        assertClose(conv(cx).toArray(), zip(base, cx.toArray()).map { $0 + 0.5 * $1 }, atol: 1e-12, rtol: 1e-12, "conv + delta")
        assertClose(conv(cx, residual: cr).toArray(), zip(zip(base, cx.toArray()), cr.toArray()).map { $0.0 + 0.5 * $0.1 + $1 },
                    atol: 1e-12, rtol: 1e-12, "conv + delta + residual")
    }
}
