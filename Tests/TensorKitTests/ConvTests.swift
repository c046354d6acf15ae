import XCTest
@testable import TensorKit

/// conv2d forward against a direct seven-loop convolution, and its input, weight and bias gradients
/// against finite differences, over the kernel paths (1×1; for stride 1 Winograd (3×3), shifted
/// GEMMs and im2col; strided im2col).
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
        Case(name: "3x3 uneven padding", input: [1, 2, 5, 6], weight: [2, 2, 3, 3], padding: (2, 0)),
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

    /// Each case under each stride-1 algorithm, forced: Winograd for 3×3 stride-1 undilated kernels,
    /// then everything with shifted GEMMs, then everything with im2col (strided and 1×1 cases take
    /// their own paths under all three).
    func forEachCase(seed: UInt64, _ body: (Case, String, (Tensor, Tensor, Tensor?)) -> Void) {
        let saved = convStrideOneAlgorithm
        defer { convStrideOneAlgorithm = saved }
        for algorithm in [StrideOneConvAlgorithm.winograd, .shifted, .im2col] {
            convStrideOneAlgorithm = algorithm
            for (k, c) in Self.cases.enumerated() {
                let winogradApplies = c.weight[2] == 3 && c.weight[3] == 3 && c.stride == (1, 1) && c.dilation == (1, 1)
                if algorithm == .winograd && !winogradApplies { continue }
                body(c, "\(algorithm)", inputs(c, seed: seed + 10 * UInt64(k)))
            }
        }
    }

    func testForwardMatchesDirectConvolution() {
        forEachCase(seed: 0) { c, algorithm, xwb in
            let (x, w, b) = xwb
            let expected = Self.directConv(x.toArray(), c.input, w.toArray(), c.weight, b?.toArray(), c)
            assertClose(conv(x, w, b, c).toArray(), expected, atol: 1e-12, rtol: 1e-12, "\(c.name) float64 \(algorithm)")
            let y32 = conv(x.to(.float32), w.to(.float32), b?.to(.float32), c)
            XCTAssertEqual(y32.dtype, .float32)
            assertClose(y32.toArray(), expected, atol: 1e-5, rtol: 1e-5, "\(c.name) float32 \(algorithm)")
        }
    }

    /// Output sizes as PyTorch computes them, ⌊(n + 2p − d(k − 1) − 1) / s⌋ + 1 (floor, not
    /// truncation): a kernel one wider than its padded input gives 0, which conv2d refuses, as
    /// PyTorch does. Values worked out by hand.
    func testOutputSizeFloorsLikePyTorch() {
        let p = Conv2dParameters(stride: (2, 2), padding: (0, 0), dilation: (1, 1), groups: 1)
        XCTAssertEqual(p.outputSize(height: 2, width: 3, kernel: (3, 3)).0, 0)   // ⌊−1/2⌋ + 1
        XCTAssertEqual(p.outputSize(height: 2, width: 3, kernel: (3, 3)).1, 1)   // ⌊0/2⌋ + 1
        XCTAssertEqual(p.outputSize(height: 1, width: 7, kernel: (4, 3)).0, -1)  // ⌊−3/2⌋ + 1
        XCTAssertEqual(p.outputSize(height: 1, width: 7, kernel: (4, 3)).1, 3)   // ⌊4/2⌋ + 1
        let q = Conv2dParameters(stride: (3, 1), padding: (1, 2), dilation: (2, 1), groups: 1)
        XCTAssertEqual(q.outputSize(height: 10, width: 5, kernel: (3, 5)).0, 3)  // ⌊(10 + 2 − 4 − 1)/3⌋ + 1
        XCTAssertEqual(q.outputSize(height: 10, width: 5, kernel: (3, 5)).1, 5)  // ⌊(5 + 4 − 4 − 1)/1⌋ + 1
    }

    func testGradients() {
        forEachCase(seed: 1000) { c, algorithm, xwb in
            let (x, w, b) = xwb
            let before = testRun?.failureCount ?? 0
            assertGradientsMatch([x, w] + (b.map { [$0] } ?? [])) { t in
                self.conv(t[0], t[1], t.count > 2 ? t[2] : nil, c)
            }
            if (testRun?.failureCount ?? 0) > before { XCTFail("gradient of \(c.name), \(algorithm)") }
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

    /// Blocks of one output (or tile) row, cutting through images, give the results of whole-batch blocks.
    func testSmallScratchBlocks() {
        forEachCase(seed: 2000) { c, algorithm, xwb in
            let (x, w, b) = xwb
            func run() -> [[Double]] {
                x.requiresGrad = true; w.requiresGrad = true; b?.requiresGrad = true
                x.grad = nil; w.grad = nil; b?.grad = nil
                let y = conv(x, w, b, c)
                (y * randomDouble(y.shape, seed: 5)).sum().backward()
                return [y.toArray(), x.grad!.toArray(), w.grad!.toArray()]
            }
            let whole = run()
            let saved = convScratchBytes
            convScratchBytes = 1
            let blocked = run()
            convScratchBytes = saved
            for (part, name) in zip(0..<3, ["output", "input grad", "weight grad"]) {
                assertClose(blocked[part], whole[part], atol: 1e-12, rtol: 1e-12, "\(c.name) \(name) \(algorithm)")
            }
        }
    }

    /// float32 at a size the automatic policy sends to Winograd (enough channels and tiles; ragged
    /// border tiles both ways): forward against the direct sum, gradients against float64 ones (those
    /// are checked by finite differences above), with looser tolerances than a direct sum needs.
    func testWinogradFloat32() {
        let c = Case(name: "winograd", input: [2, 16, 22, 30], weight: [20, 16, 3, 3], padding: (1, 1))
        let (x, w, b) = inputs(c, seed: 500)
        let x32 = x.to(.float32), w32 = w.to(.float32), b32 = b?.to(.float32)
        let expected = Self.directConv(x.toArray(), c.input, w.toArray(), c.weight, b?.toArray(), c)
        let y = conv(x32, w32, b32, c).toArray()
        assertClose(y, expected, atol: 1e-4, rtol: 1e-4, "float32 winograd")

        // The automatic choice is Winograd: bit-identical to forced Winograd, not to the GEMM path.
        let saved = convStrideOneAlgorithm
        defer { convStrideOneAlgorithm = saved }
        convStrideOneAlgorithm = .winograd
        XCTAssertEqual(conv(x32, w32, b32, c).toArray(), y)
        convStrideOneAlgorithm = .shifted
        XCTAssertNotEqual(conv(x32, w32, b32, c).toArray(), y)
        convStrideOneAlgorithm = saved

        func grads(_ dtype: DType) -> [[Double]] {
            let xs = x.to(dtype).detach().requiringGrad(), ws = w.to(dtype).detach().requiringGrad()
            let y = conv(xs, ws, nil, c)
            (y * randomDouble(y.shape, seed: 6).to(dtype)).sum().backward()
            return [xs.grad!.toArray(), ws.grad!.toArray()]
        }
        let g32 = grads(.float32), g64 = grads(.float64)
        assertClose(g32[0], g64[0], atol: 1e-4, rtol: 1e-4, "float32 input gradient")
        assertClose(g32[1], g64[1], atol: 1e-3, rtol: 1e-4, "float32 weight gradient")
    }

    /// A small image with more output channels than output pixels (a UNet's lowest level): the
    /// automatic choice is im2col in all three passes. Forward against the direct sum, gradients
    /// against finite differences in float64; float32 bit-identical to forced im2col, not to shifted.
    func testSmallImageManyChannelsTakesIm2col() {
        let c = Case(name: "small image", input: [2, 20, 3, 4], weight: [32, 20, 3, 3], padding: (1, 1))
        let (x, w, b) = inputs(c, seed: 600)
        let expected = Self.directConv(x.toArray(), c.input, w.toArray(), c.weight, b?.toArray(), c)
        assertClose(conv(x, w, b, c).toArray(), expected, atol: 1e-12, rtol: 1e-12, "float64")
        assertGradientsMatch([x, w, b!]) { t in self.conv(t[0], t[1], t[2], c) }

        func run(_ algorithm: StrideOneConvAlgorithm?) -> [[Double]] {
            let saved = convStrideOneAlgorithm
            defer { convStrideOneAlgorithm = saved }
            convStrideOneAlgorithm = algorithm
            let xs = x.to(.float32).detach().requiringGrad(), ws = w.to(.float32).detach().requiringGrad()
            let y = conv(xs, ws, b?.to(.float32), c)
            (y * randomDouble(y.shape, seed: 7).to(.float32)).sum().backward()
            return [y, xs.grad!, ws.grad!].map { $0.toArray() }
        }
        let automatic = run(nil)
        assertClose(automatic[0], expected, atol: 1e-4, rtol: 1e-4, "float32")
        XCTAssertEqual(automatic, run(.im2col))
        let shifted = run(.shifted)
        for (part, name) in zip(0..<3, ["output", "input gradient", "weight gradient"]) {
            XCTAssertNotEqual(automatic[part], shifted[part], "\(name): the automatic choice computed it as shifted GEMMs do")
        }
    }
}
