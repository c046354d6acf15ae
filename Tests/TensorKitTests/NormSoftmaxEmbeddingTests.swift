import XCTest
@testable import TensorKit

/// CPU group/layer norm, softmax/log-softmax and embedding: forwards against plain float64 loops,
/// gradients against finite differences (small shapes) or against the same function composed from
/// differentiable primitive ops (larger shapes that reach the SIMD, blocking and threading paths).
final class NormSoftmaxEmbeddingTests: XCTestCase {

    // MARK: naive references

    /// Group norm of row-major [N, C, S] values with plain loops in Double.
    private func naiveGroupNorm(_ x: [Double], n: Int, c: Int, s: Int, groups: Int, weight: [Double]?, bias: [Double]?,
                                eps: Double) -> (out: [Double], mean: [Double], rstd: [Double]) {
        var out = [Double](repeating: 0, count: x.count)
        var means: [Double] = [], rstds: [Double] = []
        let perGroup = c / groups
        for ni in 0..<n {
            for g in 0..<groups {
                let start = (ni * c + g * perGroup) * s, count = perGroup * s
                let values = x[start..<start + count]
                let mean = values.reduce(0, +) / Double(count)
                let variance = values.map { ($0 - mean) * ($0 - mean) }.reduce(0, +) / Double(count)
                let rstd = 1 / (variance + eps).squareRoot()
                means.append(mean); rstds.append(rstd)
                for i in 0..<count {
                    let channel = g * perGroup + i / s
                    out[start + i] = (x[start + i] - mean) * rstd * (weight?[channel] ?? 1) + (bias?[channel] ?? 0)
                }
            }
        }
        return (out, means, rstds)
    }

    private func naiveLayerNorm(_ x: [Double], count: Int, weight: [Double]?, bias: [Double]?, eps: Double) -> [Double] {
        var out = [Double](repeating: 0, count: x.count)
        for row in 0..<(x.count / count) {
            let values = x[(row * count)..<((row + 1) * count)]
            let mean = values.reduce(0, +) / Double(count)
            let variance = values.map { ($0 - mean) * ($0 - mean) }.reduce(0, +) / Double(count)
            let rstd = 1 / (variance + eps).squareRoot()
            for i in 0..<count {
                out[row * count + i] = (x[row * count + i] - mean) * rstd * (weight?[i] ?? 1) + (bias?[i] ?? 0)
            }
        }
        return out
    }

    private func naiveSoftmax(_ x: [Double], length: Int, log: Bool) -> [Double] {
        var out = [Double](repeating: 0, count: x.count)
        for row in 0..<(x.count / length) {
            let values = x[(row * length)..<((row + 1) * length)]
            let m = values.max()!
            let total = values.map { Foundation.exp($0 - m) }.reduce(0, +)
            for i in 0..<length {
                let v = x[row * length + i] - m
                out[row * length + i] = log ? v - Foundation.log(total) : Foundation.exp(v) / total
            }
        }
        return out
    }

    /// Group norm composed from differentiable primitives (reference for the fused backward).
    private func composedGroupNorm(_ x: Tensor, groups: Int, weight: Tensor?, bias: Tensor?, eps: Double) -> Tensor {
        let n = x.shape[0], c = x.shape[1]
        let grouped = x.reshape([n, groups, -1])
        let centered = grouped - grouped.mean(axes: [2], keepDims: true)
        let variance = centered.square().mean(axes: [2], keepDims: true)
        var y = (centered * (variance + eps).rsqrt()).reshape(x.shape)
        let paramShape = [1, c] + [Int](repeating: 1, count: x.rank - 2)
        if let weight { y = y * weight.reshape(paramShape) }
        if let bias { y = y + bias.reshape(paramShape) }
        return y
    }

    private func composedLayerNorm(_ x: Tensor, normalizedShape: [Int], weight: Tensor?, bias: Tensor?, eps: Double) -> Tensor {
        let axes = Array((x.rank - normalizedShape.count)..<x.rank)
        let centered = x - x.mean(axes: axes, keepDims: true)
        let variance = centered.square().mean(axes: axes, keepDims: true)
        var y = centered * (variance + eps).rsqrt()
        if let weight { y = y * weight }
        if let bias { y = y + bias }
        return y
    }

    /// Gradients of sum(f(inputs) · w) for a fixed random w, one array per input.
    private func gradients(_ inputs: [Tensor], seed: UInt64 = 77, _ f: ([Tensor]) -> Tensor) -> [[Double]] {
        let leaves = inputs.map { $0.detach().requiringGrad() }
        let y = f(leaves)
        let w = Tensor.randn(y.shape, seed: seed, dtype: y.dtype)
        (y * w).sum().backward()
        return leaves.map { $0.grad?.toArray() ?? [] }
    }

    // MARK: group norm

    func testGroupNormForwardMatchesNaive() {
        for (shape, groups, affine) in [([2, 6, 5], 3, true), ([2, 6, 3, 4], 2, false), ([3, 4, 2, 3], 4, true),
                                        ([2, 32, 17, 3], 8, true), ([1, 6], 3, true)] {
            let c = shape[1], s = shape.dropFirst(2).reduce(1, *)
            let x = randomDouble(shape, seed: 1, scale: 2, shift: 0.5)
            let w = affine ? randomDouble([c], seed: 2) : nil, b = affine ? randomDouble([c], seed: 3) : nil
            let ref = naiveGroupNorm(x.toArray(), n: shape[0], c: c, s: s, groups: groups,
                                     weight: w?.toArray(), bias: b?.toArray(), eps: 1e-5)
            let y = groupNorm(x, groups: groups, weight: w, bias: b, eps: 1e-5)
            XCTAssertEqual(y.shape, shape)
            assertClose(y.toArray(), ref.out, atol: 1e-12, rtol: 1e-10, "group_norm \(shape) G\(groups)")
            let (_, stats) = CPUBackend.shared.groupNorm(x, groups: groups, weight: w, bias: b, eps: 1e-5, silu: false)
            XCTAssertEqual(stats.mean.shape, [shape[0], groups])
            assertClose(stats.mean.toArray(), ref.mean, atol: 1e-12, rtol: 1e-10, "group_norm mean")
            assertClose(stats.rstd.toArray(), ref.rstd, atol: 1e-12, rtol: 1e-10, "group_norm rstd")
            // float32 path (SIMD runs and tails) against the float64 reference.
            let y32 = groupNorm(x.to(.float32), groups: groups, weight: w?.to(.float32), bias: b?.to(.float32), eps: 1e-5)
            assertClose(y32.toArray(), ref.out, atol: 2e-5, rtol: 1e-5, "group_norm float32 \(shape)")
        }
    }

    /// A large common offset must not cost float32 its variance (naive Σx² - (Σx)² would).
    func testGroupNormFloat32LargeOffsetIsAccurate() {
        let shape = [2, 8, 40, 40]
        let x = randomDouble(shape, seed: 4, scale: 0.5, shift: 1000)
        let ref = naiveGroupNorm(x.to(.float32).to(.float64).toArray(), n: 2, c: 8, s: 1600, groups: 4,
                                 weight: nil, bias: nil, eps: 1e-5)
        let y = groupNorm(x.to(.float32), groups: 4, weight: nil, bias: nil)
        // The float32 inputs near 1000 carry ~3e-5 of rounding, i.e. ~1e-4 after scaling by 1/0.5.
        assertClose(y.toArray(), ref.out, atol: 5e-4, rtol: 0, "group_norm float32 offset 1000")
    }

    func testGroupNormGradients() {
        for (shape, groups) in [([2, 6, 5], 1), ([2, 6, 5], 3), ([2, 6, 5], 6), ([2, 4, 3, 3], 2)] {
            let c = shape[1]
            let x = randomDouble(shape, seed: 5, scale: 1.5, shift: 0.3)
            let w = randomDouble([c], seed: 6), b = randomDouble([c], seed: 7)
            assertGradientsMatch([x, w, b]) { t in groupNorm(t[0], groups: groups, weight: t[1], bias: t[2]) }
            assertGradientsMatch([x]) { t in groupNorm(t[0], groups: groups, weight: nil, bias: nil) }
            assertGradientsMatch([x, w]) { t in groupNorm(t[0], groups: groups, weight: t[1], bias: nil) }
        }
    }

    /// Larger shapes (multi-chunk threading, SIMD runs) against the composed-op gradients.
    func testGroupNormBackwardMatchesComposedOps() {
        for dtype in [DType.float64, .float32] {
            let shape = [3, 64, 13, 11]
            let x = randomDouble(shape, seed: 8, scale: 2, shift: -1).to(dtype)
            let w = randomDouble([64], seed: 9).to(dtype), b = randomDouble([64], seed: 10).to(dtype)
            let fused = gradients([x, w, b]) { t in groupNorm(t[0], groups: 16, weight: t[1], bias: t[2]) }
            let composed = gradients([x.to(.float64), w.to(.float64), b.to(.float64)]) { t in
                composedGroupNorm(t[0], groups: 16, weight: t[1], bias: t[2], eps: 1e-5)
            }
            let tol = dtype == .float64 ? 1e-9 : 2e-4
            for (i, name) in ["input", "weight", "bias"].enumerated() {
                assertClose(fused[i], composed[i], atol: tol, rtol: tol, "group_norm \(dtype) \(name) gradient")
            }
        }
    }

    // MARK: group norm + SiLU (fused)

    private func naiveSiLU(_ v: [Double]) -> [Double] { v.map { $0 / (1 + Foundation.exp(-$0)) } }

    func testGroupNormSiLUForwardMatchesNaive() {
        for (shape, groups, affine) in [([2, 6, 5], 3, true), ([2, 6, 3, 4], 2, false), ([2, 32, 17, 3], 8, true),
                                        ([1, 6], 3, true)] {
            let c = shape[1], s = shape.dropFirst(2).reduce(1, *)
            let x = randomDouble(shape, seed: 21, scale: 2, shift: 0.5)
            let w = affine ? randomDouble([c], seed: 22) : nil, b = affine ? randomDouble([c], seed: 23, scale: 3) : nil
            let ref = naiveGroupNorm(x.toArray(), n: shape[0], c: c, s: s, groups: groups,
                                     weight: w?.toArray(), bias: b?.toArray(), eps: 1e-5)
            let expected = naiveSiLU(ref.out)
            let y = groupNorm(x, groups: groups, weight: w, bias: b, eps: 1e-5, silu: true)
            XCTAssertEqual(y.shape, shape)
            assertClose(y.toArray(), expected, atol: 1e-12, rtol: 1e-10, "group_norm+silu \(shape) G\(groups)")
            // The statistics stay those of the normalisation.
            let (_, stats) = CPUBackend.shared.groupNorm(x, groups: groups, weight: w, bias: b, eps: 1e-5, silu: true)
            assertClose(stats.mean.toArray(), ref.mean, atol: 1e-12, rtol: 1e-10, "group_norm+silu mean")
            assertClose(stats.rstd.toArray(), ref.rstd, atol: 1e-12, rtol: 1e-10, "group_norm+silu rstd")
            let y32 = groupNorm(x.to(.float32), groups: groups, weight: w?.to(.float32), bias: b?.to(.float32),
                                eps: 1e-5, silu: true)
            assertClose(y32.toArray(), expected, atol: 2e-5, rtol: 1e-5, "group_norm+silu float32 \(shape)")
        }
    }

    func testGroupNormSiLUGradients() {
        for (shape, groups) in [([2, 6, 5], 1), ([2, 6, 5], 3), ([2, 4, 3, 3], 2), ([1, 6], 6)] {
            let c = shape[1]
            let x = randomDouble(shape, seed: 24, scale: 1.5, shift: 0.3)
            let w = randomDouble([c], seed: 25), b = randomDouble([c], seed: 26, scale: 2)
            assertGradientsMatch([x, w, b]) { t in groupNorm(t[0], groups: groups, weight: t[1], bias: t[2], silu: true) }
            assertGradientsMatch([x]) { t in groupNorm(t[0], groups: groups, weight: nil, bias: nil, silu: true) }
            assertGradientsMatch([x, w]) { t in groupNorm(t[0], groups: groups, weight: t[1], bias: nil, silu: true) }
            assertGradientsMatch([x, b]) { t in groupNorm(t[0], groups: groups, weight: nil, bias: t[1], silu: true) }
        }
    }

    /// Larger shapes (threads, SIMD runs with tails) against silu(group norm) composed from primitives.
    func testGroupNormSiLUBackwardMatchesComposedOps() {
        for dtype in [DType.float64, .float32] {
            let shape = [3, 64, 13, 11]
            let x = randomDouble(shape, seed: 27, scale: 2, shift: -1).to(dtype)
            let w = randomDouble([64], seed: 28).to(dtype), b = randomDouble([64], seed: 29, scale: 2).to(dtype)
            let fused = gradients([x, w, b]) { t in groupNorm(t[0], groups: 16, weight: t[1], bias: t[2], silu: true) }
            let composed = gradients([x.to(.float64), w.to(.float64), b.to(.float64)]) { t in
                composedGroupNorm(t[0], groups: 16, weight: t[1], bias: t[2], eps: 1e-5).silu()
            }
            let tol = dtype == .float64 ? 1e-9 : 2e-4
            for (i, name) in ["input", "weight", "bias"].enumerated() {
                assertClose(fused[i], composed[i], atol: tol, rtol: tol, "group_norm+silu \(dtype) \(name) gradient")
            }
        }
    }

    /// On the CPU the fused op computes silu and its derivative exactly as the elementwise op does,
    /// so it equals the unfused composition bit for bit (trained models do not drift with fusion).
    func testGroupNormSiLUEqualsUnfusedExactly() {
        for dtype in [DType.float32, .float64] {
            let shape = [2, 64, 9, 7]
            let x = randomDouble(shape, seed: 44, scale: 2, shift: 0.5).to(dtype)
            let w = randomDouble([64], seed: 45).to(dtype), b = randomDouble([64], seed: 46, scale: 2).to(dtype)
            let fusedOut = groupNorm(x, groups: 32, weight: w, bias: b, silu: true).toArray()
            let unfusedOut = groupNorm(x, groups: 32, weight: w, bias: b).silu().toArray()
            XCTAssertEqual(fusedOut, unfusedOut, "group_norm+silu \(dtype) forward")
            let fused = gradients([x, w, b]) { t in groupNorm(t[0], groups: 32, weight: t[1], bias: t[2], silu: true) }
            let unfused = gradients([x, w, b]) { t in groupNorm(t[0], groups: 32, weight: t[1], bias: t[2]).silu() }
            for (i, name) in ["input", "weight", "bias"].enumerated() {
                XCTAssertEqual(fused[i], unfused[i], "group_norm+silu \(dtype) \(name) gradient")
            }
        }
    }

    // MARK: layer norm

    func testLayerNormForwardMatchesNaive() {
        for (shape, normalized, affine) in [([2, 3, 5], [5], true), ([2, 3, 4], [3, 4], false), ([5, 37], [37], true),
                                            ([3, 1100], [1100], true), ([4, 2, 16], [2, 16], true)] {
            let count = normalized.reduce(1, *)
            let x = randomDouble(shape, seed: 11, scale: 3, shift: -2)
            let w = affine ? randomDouble(normalized, seed: 12) : nil, b = affine ? randomDouble(normalized, seed: 13) : nil
            let ref = naiveLayerNorm(x.toArray(), count: count, weight: w?.toArray(), bias: b?.toArray(), eps: 1e-5)
            let y = layerNorm(x, normalizedShape: normalized, weight: w, bias: b)
            assertClose(y.toArray(), ref, atol: 1e-12, rtol: 1e-10, "layer_norm \(shape)")
            let y32 = layerNorm(x.to(.float32), normalizedShape: normalized, weight: w?.to(.float32), bias: b?.to(.float32))
            assertClose(y32.toArray(), ref, atol: 2e-5, rtol: 1e-5, "layer_norm float32 \(shape)")
        }
    }

    func testLayerNormGradients() {
        for (shape, normalized) in [([2, 3, 5], [5]), ([2, 3, 4], [3, 4])] {
            let x = randomDouble(shape, seed: 14, scale: 1.5, shift: 0.4)
            let w = randomDouble(normalized, seed: 15), b = randomDouble(normalized, seed: 16)
            assertGradientsMatch([x, w, b]) { t in layerNorm(t[0], normalizedShape: normalized, weight: t[1], bias: t[2]) }
            assertGradientsMatch([x]) { t in layerNorm(t[0], normalizedShape: normalized, weight: nil, bias: nil) }
            assertGradientsMatch([x, b]) { t in layerNorm(t[0], normalizedShape: normalized, weight: nil, bias: t[1]) }
        }
    }

    /// Many rows (several partial dw/db blocks, threads) and rows longer than one summation block.
    func testLayerNormBackwardMatchesComposedOps() {
        for dtype in [DType.float64, .float32] {
            for (shape, normalized) in [([3, 70, 40], [40]), ([5, 1100], [1100]), ([130, 3, 7], [3, 7])] {
                let x = randomDouble(shape, seed: 17, scale: 2, shift: 1).to(dtype)
                let w = randomDouble(normalized, seed: 18).to(dtype), b = randomDouble(normalized, seed: 19).to(dtype)
                let fused = gradients([x, w, b]) { t in layerNorm(t[0], normalizedShape: normalized, weight: t[1], bias: t[2]) }
                let composed = gradients([x.to(.float64), w.to(.float64), b.to(.float64)]) { t in
                    composedLayerNorm(t[0], normalizedShape: normalized, weight: t[1], bias: t[2], eps: 1e-5)
                }
                let tol = dtype == .float64 ? 1e-9 : 3e-4
                for (i, name) in ["input", "weight", "bias"].enumerated() {
                    assertClose(fused[i], composed[i], atol: tol, rtol: tol, "layer_norm \(dtype) \(shape) \(name) gradient")
                }
                let noAffine = gradients([x]) { t in layerNorm(t[0], normalizedShape: normalized, weight: nil, bias: nil) }
                let noAffineRef = gradients([x.to(.float64)]) { t in
                    composedLayerNorm(t[0], normalizedShape: normalized, weight: nil, bias: nil, eps: 1e-5)
                }
                assertClose(noAffine[0], noAffineRef[0], atol: tol, rtol: tol, "layer_norm \(dtype) \(shape) no-affine gradient")
            }
        }
    }

    // MARK: frozen parameters

    /// Frozen weight and bias (LoRA): the input gradient is still right, the parameters get no
    /// gradient, and the backends are asked for none. A trainable bias beside a frozen weight still
    /// gets its own.
    func testGroupNormFrozenParameters() {
        for silu in [false, true] {
            let x = randomDouble([2, 6, 5], seed: 30, scale: 1.5, shift: 0.3)
            let w = randomDouble([6], seed: 31), b = randomDouble([6], seed: 32, scale: 2)
            assertGradientsMatch([x]) { t in groupNorm(t[0], groups: 3, weight: w, bias: b, silu: silu) }
            XCTAssertNil(w.grad, "frozen group_norm weight (silu \(silu))")
            XCTAssertNil(b.grad, "frozen group_norm bias (silu \(silu))")
            assertGradientsMatch([x, b]) { t in groupNorm(t[0], groups: 3, weight: w, bias: t[1], silu: silu) }
            XCTAssertNil(w.grad, "frozen group_norm weight beside a trainable bias (silu \(silu))")

            // Backend level: nothing for the parameters, and the same input gradient either way.
            for dtype in [DType.float64, .float32] {
                let xs = randomDouble([3, 64, 13, 11], seed: 33).to(dtype)
                let ws = randomDouble([64], seed: 34).to(dtype), bs = randomDouble([64], seed: 35).to(dtype)
                let g = randomDouble([3, 64, 13, 11], seed: 36).to(dtype)
                let cpu = CPUBackend.shared
                let (_, stats) = cpu.groupNorm(xs, groups: 16, weight: ws, bias: bs, eps: 1e-5, silu: silu)
                let frozen = cpu.groupNormBackward(g, x: xs, groups: 16, weight: ws, bias: bs, stats: stats,
                                                   silu: silu, parameterGradients: false)
                let full = cpu.groupNormBackward(g, x: xs, groups: 16, weight: ws, bias: bs, stats: stats,
                                                 silu: silu, parameterGradients: true)
                XCTAssertNil(frozen.weight); XCTAssertNil(frozen.bias)
                XCTAssertNotNil(full.weight); XCTAssertNotNil(full.bias)
                XCTAssertEqual(frozen.input.toArray(), full.input.toArray(), "group_norm \(dtype) silu \(silu) input gradient")
            }
        }
    }

    func testLayerNormFrozenParameters() {
        for (shape, normalized) in [([2, 3, 5], [5]), ([2, 3, 4], [3, 4])] {
            let x = randomDouble(shape, seed: 37, scale: 1.5, shift: 0.4)
            let w = randomDouble(normalized, seed: 38), b = randomDouble(normalized, seed: 39)
            assertGradientsMatch([x]) { t in layerNorm(t[0], normalizedShape: normalized, weight: w, bias: b) }
            XCTAssertNil(w.grad, "frozen layer_norm weight")
            XCTAssertNil(b.grad, "frozen layer_norm bias")
            assertGradientsMatch([x, b]) { t in layerNorm(t[0], normalizedShape: normalized, weight: w, bias: t[1]) }
            XCTAssertNil(w.grad, "frozen layer_norm weight beside a trainable bias")
        }
        for dtype in [DType.float64, .float32] {
            // Several partial-sum blocks of rows.
            let xs = randomDouble([3, 70, 40], seed: 40).to(dtype), g = randomDouble([3, 70, 40], seed: 41).to(dtype)
            let ws = randomDouble([40], seed: 42).to(dtype), bs = randomDouble([40], seed: 43).to(dtype)
            let cpu = CPUBackend.shared
            let (_, stats) = cpu.layerNorm(xs, normalizedCount: 40, weight: ws, bias: bs, eps: 1e-5)
            let frozen = cpu.layerNormBackward(g, x: xs, normalizedCount: 40, weight: ws, stats: stats, parameterGradients: false)
            let full = cpu.layerNormBackward(g, x: xs, normalizedCount: 40, weight: ws, stats: stats, parameterGradients: true)
            XCTAssertNil(frozen.weight); XCTAssertNil(frozen.bias)
            XCTAssertNotNil(full.weight); XCTAssertNotNil(full.bias)
            XCTAssertEqual(frozen.input.toArray(), full.input.toArray(), "layer_norm \(dtype) input gradient")
        }
    }

    // MARK: softmax

    func testSoftmaxForwardMatchesNaive() {
        for length in [1, 5, 8, 9, 16, 17, 77, 300] {
            let x = randomDouble([6, length], seed: UInt64(20 + length), scale: 4)
            for log in [false, true] {
                let ref = naiveSoftmax(x.toArray(), length: length, log: log)
                let y = log ? x.logSoftmax() : x.softmax()
                assertClose(y.toArray(), ref, atol: 1e-14, rtol: 1e-12, "softmax(log: \(log)) length \(length)")
                let y32 = log ? x.to(.float32).logSoftmax() : x.to(.float32).softmax()
                assertClose(y32.toArray(), ref, atol: log ? 2e-6 : 1e-7, rtol: 2e-6, "float32 softmax(log: \(log)) length \(length)")
            }
        }
    }

    /// Masked (-inf) entries get probability 0; large logits do not overflow; a fully masked row is NaN (as in PyTorch).
    func testSoftmaxMaskedAndExtremeRows() {
        let inf = Double.infinity
        let values: [Double] = [0, -inf, 1, -inf, 2, 3, 4, 5, 6, 7, 8, 9, 10, 11, 12, 13, 14, 15, -inf,
                                1000, 999, -1000, 0, 1000, 5, 6, 7, 8, 9, 10, 11, 12, 13, 14, 15, 16, 17, 18,
                                -inf, -inf, -inf, -inf, -inf, -inf, -inf, -inf, -inf, -inf, -inf, -inf, -inf, -inf, -inf, -inf, -inf, -inf, -inf]
        let length = 19
        for dtype in [DType.float32, .float64] {
            let x = Tensor(values, shape: [3, length], dtype: dtype)
            let y = x.softmax().toArray(), ly = x.logSoftmax().toArray()
            let finiteRows = Array(values[0..<(2 * length)])
            let ref = naiveSoftmax(finiteRows, length: length, log: false)
            assertClose(Array(y[0..<(2 * length)]), ref, atol: 1e-7, rtol: 1e-5, "\(dtype) masked softmax")
            XCTAssertEqual(y[1], 0); XCTAssertEqual(y[18], 0)
            XCTAssertEqual(ly[1], -inf)
            let lref = naiveSoftmax(finiteRows, length: length, log: true)
            for i in 0..<(2 * length) where lref[i].isFinite {
                XCTAssertEqual(ly[i], lref[i], accuracy: 1e-5 * max(1, abs(lref[i])), "\(dtype) log_softmax element \(i)")
            }
            XCTAssertTrue(y[(2 * length)...].allSatisfy { $0.isNaN }, "\(dtype) fully masked row")
        }
    }

    func testSoftmaxGradients() {
        let x = randomDouble([3, 4, 5], seed: 30, scale: 2)
        for axis in [-1, 1, 0] {
            assertGradientsMatch([x]) { t in t[0].softmax(axis: axis) }
            assertGradientsMatch([x]) { t in t[0].logSoftmax(axis: axis) }
        }
        let long = randomDouble([2, 37], seed: 31, scale: 2)
        assertGradientsMatch([long]) { t in t[0].softmax() }
        assertGradientsMatch([long]) { t in t[0].logSoftmax() }
    }

    /// The float32 backward (SIMD exp in log-softmax) against float64 on rows with tails.
    func testSoftmaxFloat32BackwardMatchesFloat64() {
        for length in [7, 77, 1030] {
            let x = randomDouble([20, length], seed: UInt64(40 + length), scale: 3)
            for log in [false, true] {
                let g64 = gradients([x]) { t in log ? t[0].logSoftmax() : t[0].softmax() }
                let g32 = gradients([x.to(.float32)]) { t in log ? t[0].logSoftmax() : t[0].softmax() }
                assertClose(g32[0], g64[0], atol: 2e-6, rtol: 1e-4, "float32 softmax(log: \(log)) gradient, length \(length)")
            }
        }
    }

    func testVectorExpAccuracy() {
        var worst = 0.0
        var x: Float = -87
        while x <= 10 {
            var v = SIMD8<Float>()
            for j in 0..<8 { v[j] = x + Float(j) * 0.00123 }
            let e = VectorMath.exp8(v)
            for j in 0..<8 {
                let exact = Foundation.exp(Double(v[j]))
                worst = max(worst, abs(Double(e[j]) - exact) / exact)
            }
            x += 0.0173
        }
        XCTAssertLessThan(worst, 1.5e-7, "VectorMath.exp8 worst relative error \(worst)")
        let special = VectorMath.exp8(SIMD8<Float>(-.infinity, -100, -87.5, 0, .nan, -0.0, 1, 88))
        XCTAssertEqual(special[0], 0); XCTAssertEqual(special[1], 0); XCTAssertEqual(special[2], 0)
        XCTAssertEqual(special[3], 1); XCTAssertTrue(special[4].isNaN); XCTAssertEqual(special[5], 1)
        XCTAssertEqual(Double(special[6]), M_E, accuracy: 1e-6)
        XCTAssertEqual(Double(special[7]) / Foundation.exp(88.0), 1, accuracy: 1e-6)
    }

    // MARK: embedding

    func testEmbeddingGathersRows() {
        let weight = randomDouble([7, 3], seed: 50)
        let table = weight.toArray()
        let ids = [3, 0, 6, 3, 1, 5]
        for dtype in [DType.int64, .int32] {
            let indices = Tensor(indices: ids, shape: [2, 3], dtype: dtype)
            let out = embedding(indices, weight: weight)
            XCTAssertEqual(out.shape, [2, 3, 3])
            XCTAssertEqual(out.toArray(), ids.flatMap { Array(table[($0 * 3)..<($0 * 3 + 3)]) })
        }
        // float32 table and a scalar index.
        let scalar = embedding(Tensor(indices: [4], shape: []), weight: weight.to(.float32))
        XCTAssertEqual(scalar.shape, [3])
        assertClose(scalar.toArray(), Array(table[12..<15]), atol: 1e-6, rtol: 1e-6)
    }

    func testEmbeddingGradientAccumulatesRepeatedIndices() {
        let weight = randomDouble([5, 4], seed: 51)
        let ids = [2, 0, 2, 4, 2, 0]
        let indices = Tensor(indices: ids, shape: [3, 2])
        assertGradientsMatch([weight]) { t in embedding(indices, weight: t[0]).square() }
        // Scatter-add against a hand loop (also through the threaded column split and float32).
        for dtype in [DType.float64, .float32] {
            let big = randomDouble([11, 300], seed: 52).to(dtype)
            let many = (0..<400).map { ($0 * 7) % 11 }
            let idx = Tensor(indices: many, shape: [20, 20], dtype: .int32)
            let g = randomDouble([20, 20, 300], seed: 53).to(dtype)
            let leaf = big.detach().requiringGrad()
            embedding(idx, weight: leaf).backward(g)
            var expected = [Double](repeating: 0, count: 11 * 300)
            let gv = g.toArray()
            for (i, row) in many.enumerated() { for c in 0..<300 { expected[row * 300 + c] += gv[i * 300 + c] } }
            assertClose(leaf.grad!.toArray(), expected, atol: 1e-5, rtol: 1e-5, "embedding \(dtype) scatter-add")
        }
    }
}
