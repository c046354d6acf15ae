import XCTest
@testable import TensorKit

/// Finite-difference checks of every differentiable core op (elementwise, reductions, views,
/// matmul, joins) over broadcast and non-contiguous inputs.
final class CoreOpsGradientTests: XCTestCase {
    func testUnaryOps() {
        let x = randomDouble([3, 4], seed: 1)
        let positive = randomDouble([3, 4], seed: 2, scale: 0.3, shift: 1.5)
        let cases: [(String, (Tensor) -> Tensor, Tensor)] = [
            ("neg", { -$0 }, x), ("exp", { $0.exp() }, x), ("log", { $0.log() }, positive),
            ("sqrt", { $0.sqrt() }, positive), ("rsqrt", { $0.rsqrt() }, positive), ("square", { $0.square() }, x),
            ("abs", { $0.abs() }, x), ("tanh", { $0.tanh() }, x), ("sigmoid", { $0.sigmoid() }, x),
            ("silu", { $0.silu() }, x), ("gelu", { $0.gelu() }, x), ("gelu_tanh", { $0.gelu(approximate: true) }, x),
            ("quick_gelu", { $0.quickGelu() }, x), ("pow", { $0.pow(2.5) }, positive),
            ("clamp", { $0.clamp(min: -0.5, max: 0.7) }, x), ("reciprocal", { $0.reciprocal() }, positive),
            ("sin", { $0.sin() }, x), ("cos", { $0.cos() }, x),
            ("scalar arithmetic", { ($0 * 3 + 1) / 2 - 0.25 }, x),
        ]
        for (name, f, input) in cases {
            let before = testRun.map { $0.failureCount } ?? 0
            assertGradientsMatch([input]) { f($0[0]) }
            if (testRun?.failureCount ?? 0) > before { XCTFail("gradient of \(name)") }
        }
    }

    func testUnaryForwardAgainstClosedForms() {
        let values: [Double] = [-2.5, -1, -0.1, 0, 0.3, 1.7]
        let x = Tensor(values, shape: [6], dtype: .float64)
        assertClose(x.gelu().toArray(), values.map { 0.5 * $0 * (1 + erf($0 / 2.0.squareRoot())) }, atol: 1e-12)
        assertClose(x.gelu(approximate: true).toArray(),
                    values.map { 0.5 * $0 * (1 + tanh((2 / Double.pi).squareRoot() * ($0 + 0.044715 * $0 * $0 * $0))) }, atol: 1e-12)
        assertClose(x.quickGelu().toArray(), values.map { $0 / (1 + exp(-1.702 * $0)) }, atol: 1e-12)
        assertClose(x.silu().toArray(), values.map { $0 / (1 + exp(-$0)) }, atol: 1e-12)
        assertClose(x.clamp(min: -1, max: 0.5).toArray(), values.map { min(max($0, -1), 0.5) }, atol: 0)
    }

    func testBinaryOpsWithBroadcasting() {
        let a = randomDouble([2, 3, 4], seed: 3)
        let b = randomDouble([3, 1], seed: 4, scale: 0.5, shift: 2)  // away from 0 for division and pow
        assertGradientsMatch([a, b]) { $0[0] + $0[1] }
        assertGradientsMatch([a, b]) { $0[0] - $0[1] }
        assertGradientsMatch([a, b]) { $0[0] * $0[1] }
        assertGradientsMatch([a, b]) { $0[0] / $0[1] }
        assertGradientsMatch([a, b]) { $0[1] / $0[0].square().add(1) }
        let base = randomDouble([3, 4], seed: 5, scale: 0.2, shift: 1.5)
        let exponent = randomDouble([4], seed: 6)
        assertGradientsMatch([base, exponent]) { $0[0].pow($0[1]) }
        let c = randomDouble([2, 3, 4], seed: 7)
        assertGradientsMatch([a, c]) { $0[0].maximum($0[1]) }
        assertGradientsMatch([a, c]) { $0[0].minimum($0[1]) }
    }

    func testBinaryForwardMatchesElementwiseLoop() {
        let a = randomDouble([2, 3, 4], seed: 8), b = randomDouble([3, 1], seed: 9)
        let av = a.toArray(), bv = b.toArray()
        var expected: [Double] = []
        for i in 0..<2 { for j in 0..<3 { for k in 0..<4 { expected.append(av[i * 12 + j * 4 + k] * bv[j]) } } }
        assertClose((a * b).toArray(), expected, atol: 1e-15)
    }

    func testWhere() {
        let cond = Tensor([1, 0, 1, 0], shape: [4, 1], dtype: .float64)
        let a = randomDouble([4, 3], seed: 10), b = randomDouble([3], seed: 11)
        assertGradientsMatch([a, b]) { Tensor.where(cond, $0[0], $0[1]) }
        let out = Tensor.where(cond, a, b).toArray(), av = a.toArray(), bv = b.toArray()
        for r in 0..<4 { for c in 0..<3 { XCTAssertEqual(out[r * 3 + c], r % 2 == 0 ? av[r * 3 + c] : bv[c]) } }
    }

    func testReductions() {
        let x = randomDouble([3, 4, 5], seed: 12)
        assertGradientsMatch([x]) { $0[0].sum() }
        assertGradientsMatch([x]) { $0[0].sum(axes: [0, 2]) }
        assertGradientsMatch([x]) { $0[0].sum(axis: 1, keepDims: true) }
        assertGradientsMatch([x]) { $0[0].mean(axes: [-1]) }
        assertGradientsMatch([x]) { $0[0].max(axis: 2) }
        assertGradientsMatch([x]) { $0[0].min(axes: [0, 1], keepDims: true) }
        assertGradientsMatch([x]) { $0[0].variance(axes: [1]) }
        assertGradientsMatch([x]) { $0[0].variance(axes: [0, 2], correction: 0, keepDims: true) }
        // Non-contiguous input.
        assertGradientsMatch([x]) { $0[0].permute([2, 0, 1]).sum(axes: [1]) }
    }

    func testReductionValuesByHand() {
        let x = Tensor([1, 2, 3, 4, 5, 6], shape: [2, 3], dtype: .float64)
        XCTAssertEqual(x.sum(axis: 0).toArray(), [5, 7, 9])
        XCTAssertEqual(x.sum(axis: 1).toArray(), [6, 15])
        XCTAssertEqual(x.mean().item(), 3.5)
        XCTAssertEqual(x.max(axis: 1).toArray(), [3, 6])
        XCTAssertEqual(x.min(axis: 0).toArray(), [1, 2, 3])
        XCTAssertEqual(x.variance(axes: [1]).toArray(), [1, 1])           // unbiased
        XCTAssertEqual(x.variance(axes: [1], correction: 0).toArray()[0], 2.0 / 3.0, accuracy: 1e-15)
        // Ties share the gradient of max evenly.
        let tied = Tensor([2, 5, 5], shape: [3], dtype: .float64).requiringGrad()
        tied.max().backward()
        XCTAssertEqual(tied.grad?.toArray(), [0, 0.5, 0.5])
    }

    func testViewsAndNonContiguousInputs() {
        let x = randomDouble([2, 3, 4], seed: 13)
        assertGradientsMatch([x]) { $0[0].permute([2, 0, 1]).reshape([4, 6]) * 2 }
        assertGradientsMatch([x]) { $0[0].transposed(0, 2).contiguous().exp() }
        assertGradientsMatch([x]) { $0[0].slice(2, 1, 4, step: 2).square() }
        assertGradientsMatch([x]) { $0[0].slice(1, 1, 2).expand([2, 5, 4]).tanh() }
        assertGradientsMatch([x]) { $0[0].unsqueeze(1).squeeze(1).flatten(from: 1) }
        // A view's values are the right elements.
        let v = Tensor((0..<24).map(Double.init), shape: [2, 3, 4], dtype: .float64)
        XCTAssertEqual(v.permute([2, 0, 1]).toArray()[0..<6], [0, 4, 8, 12, 16, 20])
        XCTAssertEqual(v.slice(2, 1, 4, step: 2).toArray()[0..<4], [1, 3, 5, 7])
        XCTAssertEqual(v.transposed(1, 2).contiguous().toArray()[0..<4], [0, 4, 8, 1])
    }

    func testMatmulWithBroadcastingAndTransposes() {
        let a = randomDouble([2, 3, 4], seed: 14), b = randomDouble([4, 5], seed: 15)
        assertGradientsMatch([a, b]) { $0[0].matmul($0[1]) }
        let c = randomDouble([3, 1, 4, 2], seed: 16), d = randomDouble([2, 2, 3], seed: 17)
        assertGradientsMatch([c, d]) { $0[0].matmul($0[1]) }
        let e = randomDouble([5, 4], seed: 18), f = randomDouble([3, 5], seed: 19)
        assertGradientsMatch([e, f]) { $0[0].transposed().matmul($0[1].transposed()) }
        let v = randomDouble([4], seed: 20)
        assertGradientsMatch([a, v]) { $0[0].matmul($0[1]) }
        // Two vectors give their dot product, a 0-D tensor, as torch.matmul does (this trapped).
        let w = randomDouble([4], seed: 24)
        assertGradientsMatch([v, w]) { $0[0].matmul($0[1]) }
        let dot = v.matmul(w)
        XCTAssertEqual(dot.shape, [])
        XCTAssertEqual(dot.item(), zip(v.toArray(), w.toArray()).map(*).reduce(0, +), accuracy: 1e-12)
        // Forward against a hand loop, with transposed operands.
        let av = e.toArray(), bv = f.toArray()
        let out = e.transposed().matmul(f.transposed()).toArray()
        for i in 0..<4 { for j in 0..<3 {
            var s = 0.0
            for k in 0..<5 { s += av[k * 4 + i] * bv[j * 5 + k] }
            XCTAssertEqual(out[i * 3 + j], s, accuracy: 1e-12)
        } }
    }

    func testLinear() {
        let x = randomDouble([2, 3, 4], seed: 21), w = randomDouble([5, 4], seed: 22), b = randomDouble([5], seed: 23)
        assertGradientsMatch([x, w, b]) { linear($0[0], weight: $0[1], bias: $0[2]) }
    }

    func testConcatSplitStackPadUpsample() {
        let a = randomDouble([2, 3], seed: 24), b = randomDouble([2, 2], seed: 25)
        assertGradientsMatch([a, b]) { Tensor.concat([$0[0], $0[1]], axis: 1).square() }
        assertGradientsMatch([a]) { t in
            let parts = t[0].split([1, 2], axis: 1)
            return parts[0] * parts[1].sum(axis: 1, keepDims: true)
        }
        assertGradientsMatch([a]) { t in t[0].chunk(2, axis: 1)[1].exp() }
        let c = randomDouble([2, 3], seed: 26)
        assertGradientsMatch([a, c]) { Tensor.stack([$0[0], $0[1]], axis: 1).tanh() }
        let img = randomDouble([1, 2, 3, 3], seed: 27)
        assertGradientsMatch([img]) { $0[0].pad([(1, 2), (0, 1)], value: 0.5).square() }
        assertGradientsMatch([img]) { $0[0].upsampleNearest().square() }
        // Values by hand.
        let x = Tensor([1, 2, 3, 4], shape: [1, 1, 2, 2], dtype: .float64)
        XCTAssertEqual(x.upsampleNearest().toArray(), [1, 1, 2, 2, 1, 1, 2, 2, 3, 3, 4, 4, 3, 3, 4, 4])
        XCTAssertEqual(x.pad([(1, 0)], value: 9).toArray(), [9, 1, 2, 9, 3, 4])
        XCTAssertEqual(Tensor.concat([x.reshape([2, 2]), x.reshape([2, 2])], axis: 0).toArray(), [1, 2, 3, 4, 1, 2, 3, 4])
    }

    func testDropoutKeepsExpectationAndRoutesGradientThroughTheMask() {
        let p = 0.3
        var g = PhiloxGenerator(seed: 99)
        let x = Tensor.ones([100_000], dtype: .float64).requiringGrad()
        let y = x.dropout(p, training: true, generator: &g)
        let values = y.toArray()
        let zeros = values.filter { $0 == 0 }.count
        // Binomial(1e5, 0.3): standard deviation ≈ 145, so ±1000 is a 7-sigma band.
        XCTAssertEqual(Double(zeros), p * 100_000, accuracy: 1000)
        XCTAssertTrue(values.allSatisfy { $0 == 0 || Swift.abs($0 - 1 / (1 - p)) < 1e-12 })
        y.sum().backward()
        XCTAssertEqual(x.grad!.toArray(), values)  // d/dx (x·mask/(1-p)) = mask/(1-p) = y at x = 1
        var g2 = PhiloxGenerator(seed: 99)
        XCTAssertEqual(x.detach().dropout(p, training: false, generator: &g2).toArray(), x.toArray())
        XCTAssertEqual(g2.offset, 0, "eval-mode dropout draws nothing")
    }

    func testDtypeConversions() {
        let values: [Double] = [0.1, -2.5, 1000.25, 3.0e-3]
        let x = Tensor(values, shape: [4], dtype: .float32)
        // float16: 10 mantissa bits; bfloat16: 7 (round to nearest even).
        assertClose(x.to(.float16).to(.float32).toArray(), values, atol: 0, rtol: 1.0 / 1024)
        assertClose(x.to(.bfloat16).to(.float32).toArray(), values, atol: 0, rtol: 1.0 / 128)
        XCTAssertEqual(x.to(.bfloat16).to(.float32).toArray()[1], -2.5)
        XCTAssertEqual(Float(Tensor([1.0 / 3.0], shape: [1], dtype: .bfloat16).item()), Float(bitPattern: 0x3EAB_0000))
        XCTAssertEqual(Tensor(indices: [3, -1, 7], shape: [3]).to(.float32).toArray(), [3, -1, 7])
        // The gradient passes through a dtype round trip unchanged (d/dy of sum(2y) is 2).
        let y = randomDouble([3], seed: 28).requiringGrad()
        (y.to(.float32) * 2).to(.float64).sum().backward()
        XCTAssertEqual(y.grad?.dtype, .float64)
        XCTAssertEqual(y.grad?.toArray(), [2, 2, 2])
    }
}

private extension Tensor {
    func add(_ c: Double) -> Tensor { self + c }
}
