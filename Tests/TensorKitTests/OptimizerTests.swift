import Foundation
import XCTest
@testable import TensorKit

/// Deterministic gradient of parameter `index` at step `step` (a smooth, sign-changing pattern).
private func syntheticGradient(_ count: Int, index: Int, step: Int) -> [Double] {
    (0..<count).map { i -> Double in
        let phase: Double = Double(i) * 1.3 + Double(step) * 0.7 + Double(index)
        let scale: Double = 0.5 + Double(i % 3)
        return sin(phase) * scale
    }
}

/// Plain-Double AdamW from the PyTorch formulas, one parameter.
private struct ReferenceAdamW {
    var lr: Double, beta1: Double, beta2: Double, eps: Double, wd: Double
    var m: [Double], v: [Double], t = 0
    init(count: Int, lr: Double, betas: (Double, Double), eps: Double, wd: Double) {
        self.lr = lr; beta1 = betas.0; beta2 = betas.1; self.eps = eps; self.wd = wd
        m = Array(repeating: 0, count: count); v = m
    }
    mutating func step(_ p: inout [Double], _ g: [Double]) {
        t += 1
        let bc1 = 1 - pow(beta1, Double(t)), bc2 = 1 - pow(beta2, Double(t))
        for i in 0..<p.count {
            p[i] *= 1 - lr * wd
            m[i] = beta1 * m[i] + (1 - beta1) * g[i]
            v[i] = beta2 * v[i] + (1 - beta2) * g[i] * g[i]
            let denom = v[i].squareRoot() / bc2.squareRoot() + eps
            p[i] -= (lr / bc1) * m[i] / denom
        }
    }
}

/// Plain-Double SGD from the PyTorch formulas, one parameter.
private struct ReferenceSGD {
    var lr: Double, momentum: Double, dampening: Double, wd: Double, nesterov: Bool
    var buffer: [Double]? = nil
    mutating func step(_ p: inout [Double], _ g: [Double]) {
        var d = zip(g, p).map { $0 + wd * $1 }
        if momentum != 0 {
            if let b = buffer {
                buffer = zip(b, d).map { momentum * $0 + (1 - dampening) * $1 }
            } else {
                buffer = d
            }
            d = nesterov ? zip(d, buffer!).map { $0 + momentum * $1 } : buffer!
        }
        for i in 0..<p.count { p[i] -= lr * d[i] }
    }
}

final class OptimizerTests: XCTestCase {
    private func makeParameters(_ dtype: DType) -> [Tensor] {
        [randomDouble([3, 4], seed: 1), randomDouble([5], seed: 2), randomDouble([2, 1, 3], seed: 3)]
            .map { $0.to(dtype).contiguousCopy().requiringGrad() }
    }

    /// Runs `steps` steps of `optimizer` and a Double reference side by side; parameter 1 has no
    /// gradient on step 2 (it must be skipped, its step count not advancing).
    private func compare(_ optimizer: Optimizer, dtype: DType, steps: Int, atol: Double, rtol: Double,
                         reference makeReference: (Int) -> (inout [Double], [Double]) -> Void,
                         file: StaticString = #filePath, line: UInt = #line) {
        let params = optimizer.parameters
        var expected = params.map { $0.toArray() }
        let references = params.indices.map { makeReference($0) }
        for step in 1...steps {
            for (i, p) in params.enumerated() {
                if i == 1 && step == 2 { p.grad = nil; continue }
                let g = syntheticGradient(p.numel, index: i, step: step)
                p.grad = Tensor(g, shape: p.shape, dtype: dtype)
                // Round the gradient the way the optimizer sees it.
                references[i](&expected[i], p.grad!.toArray())
            }
            optimizer.step()
            for (i, p) in params.enumerated() {
                assertClose(p.toArray(), expected[i], atol: atol, rtol: rtol, "param \(i) after step \(step)", file: file, line: line)
            }
        }
    }

    /// Wraps a value-type reference as a closure with its own state.
    private final class Box<R> { var value: R; init(_ v: R) { value = v } }

    private func adamReference(_ params: [Tensor], lr: Double, betas: (Double, Double), eps: Double, wd: Double)
        -> (Int) -> (inout [Double], [Double]) -> Void {
        { i in
            let box = Box(ReferenceAdamW(count: params[i].numel, lr: lr, betas: betas, eps: eps, wd: wd))
            return { p, g in box.value.step(&p, g) }
        }
    }

    func testAdamWMatchesHandDerivedReferenceFloat64() {
        for (betas, wd) in [((0.9, 0.999), 0.01), ((0.3, 0.9), 0.0), ((0.5, 0.99), 0.1)] {
            for tensorPath in [false, true] {
                let params = makeParameters(.float64)
                let opt = AdamW(parameters: params, lr: 0.05, betas: betas, eps: 1e-8, weightDecay: wd)
                opt.forceTensorPath = tensorPath
                compare(opt, dtype: .float64, steps: 6, atol: 1e-12, rtol: 1e-10,
                        reference: adamReference(params, lr: 0.05, betas: betas, eps: 1e-8, wd: wd))
                XCTAssertEqual(opt.stepCount(of: 0), 6)
                XCTAssertEqual(opt.stepCount(of: 1), 5, "a step without gradient is skipped")
            }
        }
    }

    func testAdamWFloat32AndDefaults() {
        let params = makeParameters(.float32)
        let opt = AdamW(parameters: params)
        XCTAssertEqual(opt.learningRate, 1e-3)
        XCTAssertEqual(opt.betas.0, 0.9); XCTAssertEqual(opt.betas.1, 0.999)
        XCTAssertEqual(opt.eps, 1e-8); XCTAssertEqual(opt.weightDecay, 1e-2)
        compare(opt, dtype: .float32, steps: 5, atol: 1e-6, rtol: 1e-5,
                reference: adamReference(params, lr: 1e-3, betas: (0.9, 0.999), eps: 1e-8, wd: 1e-2))
    }

    func testSGDMatchesHandDerivedReference() {
        let configs: [(momentum: Double, dampening: Double, wd: Double, nesterov: Bool)] = [
            (0, 0, 0, false), (0.9, 0, 0, false), (0.9, 0.3, 0.05, false), (0.8, 0, 0.01, true),
        ]
        for c in configs {
            for tensorPath in [false, true] {
                let params = makeParameters(.float64)
                let opt = SGD(parameters: params, lr: 0.1, momentum: c.momentum, dampening: c.dampening,
                              weightDecay: c.wd, nesterov: c.nesterov)
                opt.forceTensorPath = tensorPath
                compare(opt, dtype: .float64, steps: 5, atol: 1e-12, rtol: 1e-10) { _ in
                    let box = Box(ReferenceSGD(lr: 0.1, momentum: c.momentum, dampening: c.dampening, wd: c.wd, nesterov: c.nesterov))
                    return { p, g in box.value.step(&p, g) }
                }
            }
        }
        let f32 = makeParameters(.float32)
        compare(SGD(parameters: f32, lr: 0.1, momentum: 0.9), dtype: .float32, steps: 4, atol: 1e-6, rtol: 1e-5) { _ in
            let box = Box(ReferenceSGD(lr: 0.1, momentum: 0.9, dampening: 0, wd: 0, nesterov: false))
            return { p, g in box.value.step(&p, g) }
        }
    }

    func testClipGradNormMatchesHandComputation() {
        let params = makeParameters(.float64)
        let grads = params.enumerated().map { syntheticGradient($0.element.numel, index: $0.offset, step: 1) }
        func reset() { for (p, g) in zip(params, grads) { p.grad = Tensor(g, shape: p.shape, dtype: .float64) } }
        let total = grads.flatMap { $0 }.map { $0 * $0 }.reduce(0, +).squareRoot()

        reset()
        let returned = clipGradNorm(params, maxNorm: 1.0)
        XCTAssertEqual(returned, total, accuracy: 1e-12)
        let coef = 1.0 / (total + 1e-6)
        for (p, g) in zip(params, grads) { assertClose(p.grad!.toArray(), g.map { $0 * coef }, atol: 1e-14, rtol: 1e-12) }

        reset()
        XCTAssertEqual(clipGradNorm(params, maxNorm: total * 2), total, accuracy: 1e-12)
        for (p, g) in zip(params, grads) { XCTAssertEqual(p.grad!.toArray(), g, "no clipping below the limit") }

        reset()
        params[1].grad = nil
        let maxAbs = (grads[0] + grads[2]).map { abs($0) }.max()!
        XCTAssertEqual(clipGradNorm(params, maxNorm: 0.5, normType: .infinity), maxAbs, accuracy: 1e-12)
        assertClose(params[0].grad!.toArray(), grads[0].map { $0 * 0.5 / (maxAbs + 1e-6) }, atol: 1e-14, rtol: 1e-12)

        let f32 = makeParameters(.float32)
        for (p, g) in zip(f32, grads) { p.grad = Tensor(g, shape: p.shape, dtype: .float32) }
        let total32 = f32.flatMap { $0.grad!.toArray() }.map { $0 * $0 }.reduce(0, +).squareRoot()
        XCTAssertEqual(clipGradNorm(f32, maxNorm: 1.0), total32, accuracy: 1e-9)

        // Strided gradients take the tensor path (as on a GPU): partial sums on the device, read
        // back together. [3, 4] and [2, 1, 3] become permuted views; [5] stays contiguous.
        let strided = makeParameters(.float64)
        func resetStrided() {
            for (p, g) in zip(strided, grads) {
                let order = Array((0..<p.rank).reversed())
                p.grad = Tensor(g, shape: order.map { p.shape[$0] }, dtype: .float64).permute(order)
            }
        }
        resetStrided()
        XCTAssertFalse(strided[0].grad!.isContiguous)
        let permutedValues = strided.map { $0.grad!.toArray() }
        XCTAssertEqual(clipGradNorm(strided, maxNorm: 1.0), total, accuracy: 1e-12)
        for (p, g) in zip(strided, permutedValues) { assertClose(p.grad!.toArray(), g.map { $0 * coef }, atol: 1e-14, rtol: 1e-12) }
        resetStrided()
        let maxAll = grads.flatMap { $0 }.map { abs($0) }.max()!
        XCTAssertEqual(clipGradNorm(strided, maxNorm: 1e9, normType: .infinity), maxAll, accuracy: 1e-12)
    }

    /// Two identical runs; the second is interrupted after `cut` steps, its optimizer state saved to
    /// safetensors and restored into a fresh optimizer, then both continue.
    private func assertResumesIdentically(_ make: ([Tensor]) -> Optimizer, cut: Int = 3, total: Int = 6) throws {
        let paramsA = makeParameters(.float32)
        let paramsB = paramsA.map { $0.contiguousCopy().requiringGrad() }
        let optA = make(paramsA)
        var optB = make(paramsB)
        func feed(_ params: [Tensor], _ step: Int) {
            for (i, p) in params.enumerated() {
                p.grad = i == 2 && step <= 2 ? nil : Tensor(syntheticGradient(p.numel, index: i, step: step), shape: p.shape)
            }
        }
        let path = FileManager.default.temporaryDirectory.appendingPathComponent("optim-\(UUID().uuidString).safetensors").path
        defer { try? FileManager.default.removeItem(atPath: path) }
        for step in 1...total {
            if step == cut + 1 {
                try saveSafeTensors(optB.stateDict(), to: path)
                optB = make(paramsB)
                try optB.loadStateDict(try loadSafeTensors(path))
            }
            feed(paramsA, step); optA.step()
            feed(paramsB, step); optB.step()
        }
        for (a, b) in zip(paramsA, paramsB) { XCTAssertEqual(a.toArray(), b.toArray()) }
        // Sanity: skipping the restore would have changed the result (fresh state differs).
        let paramsC = paramsA.map { $0.contiguousCopy().requiringGrad() }
        let optC = make(paramsC)
        feed(paramsC, total + 1); optC.step()
        feed(paramsA, total + 1); optA.step()
        XCTAssertNotEqual(paramsA[0].toArray(), paramsC[0].toArray())
    }

    func testStateRoundTripThroughSafeTensorsResumesIdentically() throws {
        try assertResumesIdentically { AdamW(parameters: $0, lr: 0.01, weightDecay: 0.1) }
        try assertResumesIdentically { SGD(parameters: $0, lr: 0.05, momentum: 0.9, nesterov: true) }
    }

    func testLoadStateDictNamesTheProblem() {
        let params = makeParameters(.float32)
        let opt = AdamW(parameters: params)
        for p in params { p.grad = Tensor.ones(like: p) }
        opt.step()
        let good = opt.stateDict()
        XCTAssertEqual(Set(good.keys), Set(["param_count"] + (0..<3).flatMap { i in
            ["exp_avg", "exp_avg_sq", "step"].map { "state.\(i).\($0)" } }))
        XCTAssertEqual(good["state.1.step"]?.dtype, .int64)

        func expect(_ dict: [String: Tensor], _ error: OptimizerStateError, line: UInt = #line) {
            let fresh = AdamW(parameters: params)
            XCTAssertThrowsError(try fresh.loadStateDict(dict), line: line) { e in
                XCTAssertEqual(e as? OptimizerStateError, error, line: line)
                XCTAssertTrue("\(e)".contains("optimizer state"), line: line)
            }
        }
        var missing = good; missing.removeValue(forKey: "state.1.exp_avg_sq")
        expect(missing, .missingKey("state.1.exp_avg_sq"))
        var wrongShape = good; wrongShape["state.0.exp_avg"] = Tensor.zeros([4, 3])
        expect(wrongShape, .shapeMismatch(key: "state.0.exp_avg", expected: [3, 4], found: [4, 3]))
        var extra = good; extra["state.0.momentum_buffer"] = Tensor.zeros([3, 4])
        expect(extra, .unexpectedKey("state.0.momentum_buffer"))
        var outOfRange = good; outOfRange["state.7.step"] = OptimizerState.scalar(1)
        expect(outOfRange, .unexpectedKey("state.7.step"))
        var count = good; count["param_count"] = OptimizerState.scalar(2)
        expect(count, .parameterCountMismatch(expected: 3, found: 2))
        var noCount = good; noCount.removeValue(forKey: "param_count")
        expect(noCount, .missingKey("param_count"))

        let fresh = AdamW(parameters: params)
        XCTAssertNoThrow(try fresh.loadStateDict(good))
        XCTAssertEqual(fresh.stepCount(of: 2), 1)
    }

    func testTrainingALinearLayerWithAdamWReducesLoss() {
        // End to end: module parameters, autograd, clipping and the optimizer together.
        let layer = Linear(3, 1, seed: 1)
        let x = Tensor.randn([32, 3], seed: 2)
        let target = x.matmul(Tensor([1.5, -2, 0.5], shape: [3, 1])) + 0.25
        let opt = AdamW(parameters: layer.trainableParameters(), lr: 0.05, weightDecay: 0)
        func loss() -> Tensor { (layer(x) - target).square().mean() }
        let initial = withNoGrad { loss().item() }
        for _ in 0..<200 {
            opt.zeroGrad()
            loss().backward()
            clipGradNorm(opt.parameters, maxNorm: 10)
            opt.step()
        }
        let final = withNoGrad { loss().item() }
        XCTAssertLessThan(final, initial * 1e-3)
        assertClose(layer.weight.toArray(), [1.5, -2, 0.5], atol: 0.02, rtol: 0, "learned weights")
    }
}
