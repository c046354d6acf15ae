import XCTest
@testable import TensorKit

/// conv2d forward against a direct seven-loop convolution, and its input, weight and bias gradients
/// against finite differences, over the kernel paths (1×1, stride-1 shifted GEMMs, strided im2col).
final class ConvTests: XCTestCase {
    struct Case {
        let name: String
        let input: [Int], weight: [Int]
        var stride = (1, 1), padding = (0, 0), dilation = (1, 1), groups = 1
        var bias = true
    }

    static let cases: [Case] = [
        Case(name: "3x3 pad 1", input: [1, 2, 5, 5], weight: [3, 2, 3, 3], padding: (1, 1)),
        Case(name: "3x3 valid, batch 2", input: [2, 1, 6, 6], weight: [2, 1, 3, 3]),
        Case(name: "batch 2 pad 1", input: [2, 2, 5, 4], weight: [3, 2, 3, 3], padding: (1, 1)),
        Case(name: "stride 2", input: [1, 2, 7, 6], weight: [3, 2, 3, 3], stride: (2, 2), padding: (1, 1)),
        Case(name: "1x1", input: [2, 3, 4, 4], weight: [2, 3, 1, 1]),
        Case(name: "1x1 no bias", input: [1, 3, 3, 5], weight: [4, 3, 1, 1], bias: false),
        Case(name: "1x1 stride 2", input: [1, 3, 5, 5], weight: [2, 3, 1, 1], stride: (2, 2)),
        Case(name: "1x1 groups 2", input: [2, 4, 3, 3], weight: [6, 2, 1, 1], groups: 2),
        Case(name: "groups 2", input: [1, 4, 5, 5], weight: [4, 2, 3, 3], padding: (1, 1), groups: 2),
        Case(name: "dilation 2", input: [1, 2, 7, 7], weight: [2, 2, 3, 3], padding: (2, 2), dilation: (2, 2)),
        Case(name: "non-square", input: [1, 2, 6, 7], weight: [2, 2, 2, 3], stride: (1, 2), padding: (0, 1)),
        Case(name: "non-square stride 1", input: [2, 2, 5, 6], weight: [3, 2, 3, 2], padding: (2, 0), bias: false),
        // Padding beyond the kernel reach: the input gradient cannot be a flipped convolution.
        Case(name: "padding > kernel", input: [1, 2, 4, 4], weight: [2, 2, 1, 3], padding: (1, 3)),
        Case(name: "strided, dilated, grouped", input: [1, 4, 9, 8], weight: [2, 2, 3, 2],
             stride: (2, 3), padding: (1, 0), dilation: (2, 1), groups: 2),
    ]

    /// Independent reference: out[n, o, y, x] = b[o] + Σ_{c, i, j} in[n, g·Cg + c, y·s − p + i·d, x·s − p + j·d] · w[o, c, i, j].
    static func directConv(_ x: [Double], _ xs: [Int], _ w: [Double], _ ws: [Int], _ b: [Double]?,
                           _ c: Case) -> [Double] {
        let (n, cin, h, wd) = (xs[0], xs[1], xs[2], xs[3])
        let (o, cg, kh, kw) = (ws[0], ws[1], ws[2], ws[3])
        let og = o / c.groups
        let oh = (h + 2 * c.padding.0 - c.dilation.0 * (kh - 1) - 1) / c.stride.0 + 1
        let ow = (wd + 2 * c.padding.1 - c.dilation.1 * (kw - 1) - 1) / c.stride.1 + 1
        var out = [Double](repeating: 0, count: n * o * oh * ow)
        for img in 0..<n {
            for oc in 0..<o {
                let g = oc / og
                for y in 0..<oh {
                    for xo in 0..<ow {
                        var acc = b?[oc] ?? 0
                        for ci in 0..<cg {
                            for i in 0..<kh {
                                for j in 0..<kw {
                                    let iy = y * c.stride.0 - c.padding.0 + i * c.dilation.0
                                    let ix = xo * c.stride.1 - c.padding.1 + j * c.dilation.1
                                    if iy < 0 || iy >= h || ix < 0 || ix >= wd { continue }
                                    acc += x[((img * cin + g * cg + ci) * h + iy) * wd + ix] * w[((oc * cg + ci) * kh + i) * kw + j]
                                }
                            }
                        }
                        out[((img * o + oc) * oh + y) * ow + xo] = acc
                    }
                }
            }
        }
        return out
    }

    func conv(_ x: Tensor, _ w: Tensor, _ b: Tensor?, _ c: Case) -> Tensor {
        conv2d(x, weight: w, bias: b, stride: c.stride, padding: c.padding, dilation: c.dilation, groups: c.groups)
    }

    func inputs(_ c: Case, seed: UInt64) -> (Tensor, Tensor, Tensor?) {
        (randomDouble(c.input, seed: seed), randomDouble(c.weight, seed: seed + 1, scale: 0.5),
         c.bias ? randomDouble([c.weight[0]], seed: seed + 2) : nil)
    }

    func testForwardMatchesDirectConvolution() {
        for (k, c) in Self.cases.enumerated() {
            let (x, w, b) = inputs(c, seed: UInt64(10 * k))
            let expected = Self.directConv(x.toArray(), c.input, w.toArray(), c.weight, b?.toArray(), c)
            assertClose(conv(x, w, b, c).toArray(), expected, atol: 1e-12, rtol: 1e-12, "\(c.name) float64")
            let y32 = conv(x.to(.float32), w.to(.float32), b?.to(.float32), c)
            XCTAssertEqual(y32.dtype, .float32)
            assertClose(y32.toArray(), expected, atol: 1e-5, rtol: 1e-5, "\(c.name) float32")
        }
    }

    func testGradients() {
        for (k, c) in Self.cases.enumerated() {
            let (x, w, b) = inputs(c, seed: UInt64(10 * k + 1000))
            let before = testRun?.failureCount ?? 0
            assertGradientsMatch([x, w] + (b.map { [$0] } ?? [])) { t in
                self.conv(t[0], t[1], t.count > 2 ? t[2] : nil, c)
            }
            if (testRun?.failureCount ?? 0) > before { XCTFail("gradient of \(c.name)") }
        }
    }

    func testNonContiguousInput() {
        // A transposed view of the input: the op makes it contiguous and routes the gradient back.
        let x = randomDouble([2, 2, 6, 5], seed: 77), w = randomDouble([3, 2, 3, 3], seed: 78, scale: 0.5)
        let b = randomDouble([3], seed: 79)
        assertGradientsMatch([x, w, b]) { t in
            conv2d(t[0].transposed(2, 3), weight: t[1], bias: t[2], padding: (1, 1))
        }
        let c = Case(name: "transposed", input: [2, 2, 5, 6], weight: [3, 2, 3, 3], padding: (1, 1))
        let expected = Self.directConv(x.transposed(2, 3).toArray(), c.input, w.toArray(), c.weight, b.toArray(), c)
        assertClose(conv2d(x.transposed(2, 3), weight: w, bias: b, padding: (1, 1)).toArray(), expected,
                    atol: 1e-12, rtol: 1e-12, "transposed input")
    }

    /// Blocks of a few rows (cutting through images) give the same results as whole-batch blocks.
    func testSmallScratchBlocks() {
        for (k, c) in Self.cases.enumerated() {
            let (x, w, b) = inputs(c, seed: UInt64(10 * k + 2000))
            func run() -> [[Double]] {
                x.requiresGrad = true; w.requiresGrad = true; b?.requiresGrad = true
                x.grad = nil; w.grad = nil; b?.grad = nil
                let y = conv(x, w, b, c)
                (y * randomDouble(y.shape, seed: 5)).sum().backward()
                return [y.toArray(), x.grad!.toArray(), w.grad!.toArray()]
            }
            let whole = run()
            let saved = convScratchElements
            convScratchElements = 1  // one output row per block
            let blocked = run()
            convScratchElements = saved
            for (part, name) in zip(0..<3, ["output", "input grad", "weight grad"]) {
                assertClose(blocked[part], whole[part], atol: 1e-12, rtol: 1e-12, "\(c.name) \(name)")
            }
        }
    }
}
