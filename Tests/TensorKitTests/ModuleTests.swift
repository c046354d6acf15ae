import XCTest
@testable import TensorKit

// A small diffusers-shaped tree: arrays of modules, optional children, an override and a buffer.
private final class TinyAttention: Module {
    var to_q: Linear
    var to_k: Linear
    var to_out: [Module]
    init(_ dim: Int, generator: inout PhiloxGenerator) {
        to_q = Linear(dim, dim, bias: false, generator: &generator)
        to_k = Linear(dim, dim, bias: false, generator: &generator)
        to_out = [Linear(dim, dim, generator: &generator), Dropout(0.5)]
    }
}

private final class TinyBlock: Module {
    var norm: LayerNorm?
    var attentions: [TinyAttention]
    var proj: Linear?                 // nil: contributes no keys
    var position_ids: Tensor          // buffer
    var _cache: Tensor? = Tensor.zeros([1])  // leading underscore: invisible
    init(_ dim: Int, withNorm: Bool, generator: inout PhiloxGenerator) {
        norm = withNorm ? LayerNorm(dim) : nil
        attentions = [TinyAttention(dim, generator: &generator)]
        proj = nil
        position_ids = Tensor(indices: [0, 1, 2], shape: [3])
    }
    override class var bufferNames: Set<String> { super.bufferNames.union(["position_ids"]) }
}

private final class TinyModel: Module {
    var conv_in: Conv2d
    var down_blocks: [TinyBlock]
    var mid: TinyBlock?
    var extras: [Module?]
    init(dim: Int = 4, seed: UInt64 = 7) {
        var g = PhiloxGenerator(seed: seed)
        conv_in = Conv2d(2, dim, kernelSize: 3, padding: 1, generator: &g)
        down_blocks = [TinyBlock(dim, withNorm: false, generator: &g), TinyBlock(dim, withNorm: true, generator: &g)]
        mid = TinyBlock(dim, withNorm: false, generator: &g)
        extras = [nil, Linear(dim, 2, generator: &g)]
    }
    override class var keyOverrides: [String: String] { super.keyOverrides.merging(["mid": "mid_block"]) { $1 } }
}

/// A Linear subclass: inherited parameters come first, then its own; overrides and buffers merge.
private final class ScaledLinear: Linear {
    var scale_factor: Tensor
    var running: Tensor
    init() {
        scale_factor = Tensor.ones([2]).requiringGrad()
        running = Tensor.zeros([2])
        var g = PhiloxGenerator(seed: 3)
        super.init(2, 2, generator: &g)
    }
    override class var keyOverrides: [String: String] { super.keyOverrides.merging(["scale_factor": "scale"]) { $1 } }
    override class var bufferNames: Set<String> { super.bufferNames.union(["running"]) }
}

/// y = up(down(x)): a rank-r additive delta for a Linear.
private final class LowRankDelta: Module, LayerDelta {
    var down: Linear
    var up: Linear
    init(_ inFeatures: Int, _ outFeatures: Int, rank: Int, dtype: DType, seed: UInt64) {
        var g = PhiloxGenerator(seed: seed)
        down = Linear(inFeatures, rank, bias: false, dtype: dtype, generator: &g)
        up = Linear(rank, outFeatures, bias: false, dtype: dtype, generator: &g)
    }
    func callAsFunction(_ input: Tensor) -> Tensor { up(down(input)) }
}

/// Row-major [m, k] · [n, k]ᵀ in Double.
private func matmulT(_ a: [Double], _ b: [Double], m: Int, k: Int, n: Int) -> [Double] {
    var out = [Double](repeating: 0, count: m * n)
    for i in 0..<m { for j in 0..<n { for t in 0..<k { out[i * n + j] += a[i * k + t] * b[j * k + t] } } }
    return out
}

final class ModuleTests: XCTestCase {
    func testKeyPathsFollowCheckpointNaming() {
        let model = TinyModel()
        func attn(_ p: String) -> [String] {
            ["\(p).attentions.0.to_q.weight", "\(p).attentions.0.to_k.weight",
             "\(p).attentions.0.to_out.0.weight", "\(p).attentions.0.to_out.0.bias"]
        }
        let expectedParameters = ["conv_in.weight", "conv_in.bias"]
            + attn("down_blocks.0")
            + ["down_blocks.1.norm.weight", "down_blocks.1.norm.bias"] + attn("down_blocks.1")
            + attn("mid_block")
            + ["extras.1.weight", "extras.1.bias"]
        XCTAssertEqual(model.namedParameters().map { $0.0 }, expectedParameters)
        XCTAssertEqual(model.namedBuffers().map { $0.0 },
                       ["down_blocks.0.position_ids", "down_blocks.1.position_ids", "mid_block.position_ids"])
        XCTAssertEqual(Set(model.stateDict().keys), Set(expectedParameters + model.namedBuffers().map { $0.0 }))

        let modulePaths = model.namedModules().map { $0.0 }
        XCTAssertEqual(modulePaths.first, "")
        XCTAssertTrue(modulePaths.contains("down_blocks.1.attentions.0.to_out.1"))   // the Dropout
        XCTAssertTrue(modulePaths.contains("extras.1"))
        XCTAssertFalse(modulePaths.contains("extras.0"))
        XCTAssertEqual(model.namedChildren().map { $0.0 },
                       ["conv_in", "down_blocks.0", "down_blocks.1", "mid_block", "extras.1"])
        // Every parameter tensor is reachable by its key in the state dict.
        let state = model.stateDict()
        for (key, p) in model.namedParameters() { XCTAssertTrue(state[key] === p, key) }
    }

    func testSuperclassPropertiesAreDiscovered() {
        let layer = ScaledLinear()
        XCTAssertEqual(layer.namedParameters().map { $0.0 }, ["weight", "bias", "scale"])
        XCTAssertEqual(layer.namedBuffers().map { $0.0 }, ["running"])
        XCTAssertEqual(layer.stateKeys(), ["weight", "bias", "scale", "running"])
    }

    func testSharedTensorsAppearOnceAsParametersButUnderEveryKey() {
        final class Tied: Module {
            var a: Linear
            var b: Linear
            override init() { a = Linear(3, 3, seed: 1); b = a }
        }
        final class WithBackReference: Module {
            var child: Linear
            weak var _parent: Module?
            override init() { child = Linear(2, 2) }
        }
        let tied = Tied()
        XCTAssertEqual(tied.namedParameters().map { $0.0 }, ["a.weight", "a.bias"])
        XCTAssertEqual(Set(tied.stateDict().keys), ["a.weight", "a.bias", "b.weight", "b.bias"])
        XCTAssertEqual(tied.namedModules().count, 2)

        let m = WithBackReference()
        m._parent = m
        XCTAssertEqual(m.namedParameters().map { $0.0 }, ["child.weight", "child.bias"])
    }

    func testStrictLoadReportsEveryProblemAndChangesNothing() throws {
        let model = TinyModel()
        let before = model.stateDict().mapValues { $0.toArray() }
        var weights = TinyModel(seed: 99).stateDict().mapValues { $0.contiguousCopy() }
        weights.removeValue(forKey: "down_blocks.1.norm.bias")
        weights["mid_block.attentions.0.to_v.weight"] = Tensor.zeros([4, 4])
        weights["conv_in.weight"] = Tensor.zeros([4, 2, 1, 1])

        XCTAssertThrowsError(try model.load(weights)) { error in
            guard let e = error as? ModuleLoadError else { return XCTFail("wrong error type \(error)") }
            XCTAssertEqual(e.report.missingKeys, ["down_blocks.1.norm.bias"])
            XCTAssertEqual(e.report.unexpectedKeys, ["mid_block.attentions.0.to_v.weight"])
            XCTAssertEqual(e.report.shapeMismatches,
                           [.init(key: "conv_in.weight", expected: [4, 2, 3, 3], found: [4, 2, 1, 1])])
            for name in ["down_blocks.1.norm.bias", "mid_block.attentions.0.to_v.weight", "conv_in.weight", "[4, 2, 1, 1]"] {
                XCTAssertTrue(e.description.contains(name), "description lacks \(name): \(e.description)")
            }
        }
        for (key, t) in model.stateDict() { XCTAssertEqual(t.toArray(), before[key], "strict failure modified \(key)") }
    }

    func testNonStrictLoadCopiesTheMatchingSubsetIntoTheSameTensors() throws {
        let model = TinyModel()
        let identities = model.stateDict().mapValues { ObjectIdentifier($0) }
        let originalConv = model.conv_in.weight.toArray()
        let source = TinyModel(seed: 99).stateDict()
        var weights = source.mapValues { $0.contiguousCopy() }
        weights.removeValue(forKey: "mid_block.attentions.0.to_q.weight")
        weights["conv_in.weight"] = Tensor.zeros([1])
        weights["extra.key"] = Tensor.zeros([1])

        let report = try model.load(weights, strict: false)
        XCTAssertEqual(report.missingKeys, ["mid_block.attentions.0.to_q.weight"])
        XCTAssertEqual(report.unexpectedKeys, ["extra.key"])
        XCTAssertEqual(report.shapeMismatches.map { $0.key }, ["conv_in.weight"])
        let state = model.stateDict()
        XCTAssertEqual(state.mapValues { ObjectIdentifier($0) }, identities, "load must not replace tensors")
        XCTAssertEqual(model.conv_in.weight.toArray(), originalConv)
        XCTAssertNotEqual(state["mid_block.attentions.0.to_q.weight"]!.toArray(),
                          source["mid_block.attentions.0.to_q.weight"]!.toArray())
        XCTAssertEqual(Set(report.loadedKeys), Set(state.keys).subtracting(["mid_block.attentions.0.to_q.weight", "conv_in.weight"]))
        for key in report.loadedKeys { XCTAssertEqual(state[key]!.toArray(), source[key]!.toArray(), key) }
    }

    func testFloat16CheckpointIsConvertedIntoFloat32Parameters() throws {
        let layer = Linear(3, 2, seed: 1)
        let values = (0..<6).map { Double($0) * 0.3127 - 0.9 }
        let weights = ["weight": Tensor(values, shape: [2, 3], dtype: .float16),
                       "bias": Tensor([1.0001, -2.5], shape: [2], dtype: .float16)]
        let weightObject = layer.weight
        try layer.load(weights)
        XCTAssertTrue(layer.weight === weightObject)
        XCTAssertEqual(layer.weight.dtype, .float32)
        // Reference: the values rounded through Swift's own Float16.
        XCTAssertEqual(layer.weight.toArray(), values.map { Double(Float(Float16(Float($0)))) })
        XCTAssertEqual(layer.bias!.toArray(), [1.0001, -2.5].map { Double(Float(Float16(Float($0)))) })
    }

    func testFreezeUnfreezeAndTrainableParameters() {
        let model = TinyModel()
        let all = model.parameters().count
        XCTAssertEqual(model.trainableParameters().count, all)
        model.freeze()
        XCTAssertTrue(model.trainableParameters().isEmpty)
        model.down_blocks[1].attentions[0].unfreeze()
        XCTAssertEqual(model.namedTrainableParameters().map { $0.0 },
                       ["down_blocks.1.attentions.0.to_q.weight", "down_blocks.1.attentions.0.to_k.weight",
                        "down_blocks.1.attentions.0.to_out.0.weight", "down_blocks.1.attentions.0.to_out.0.bias"])
        model.unfreeze()
        XCTAssertEqual(model.trainableParameters().count, all)
        XCTAssertFalse(model.down_blocks[0].position_ids.requiresGrad, "buffers are not parameters")
    }

    func testTrainEvalPropagatesAndDropoutIsIdentityInEval() {
        let model = TinyModel()
        model.eval()
        XCTAssertTrue(model.modules().allSatisfy { !$0.isTraining })
        let dropout = model.mid!.attentions[0].to_out[1] as! Dropout
        let x = Tensor.randn([64], seed: 3)
        XCTAssertEqual(dropout(x).toArray(), x.toArray())

        model.train()
        XCTAssertTrue(model.modules().allSatisfy { $0.isTraining })
        let y = dropout(x).toArray(), xs = x.toArray()
        var zeros = 0
        for (a, b) in zip(y, xs) {
            if a == 0 { zeros += 1 } else { XCTAssertEqual(a, Double(Float(b) / Float(0.5)), accuracy: 1e-6) }
        }
        XCTAssertTrue(zeros > 10 && zeros < 54, "p = 0.5 should drop about half of 64, dropped \(zeros)")
    }

    func testDtypeConversionKeepsTensorObjects() {
        let model = TinyModel()
        let before = model.stateDict()
        let values = before.mapValues { $0.toArray() }
        model.to(.float64)
        for (key, t) in model.stateDict() {
            XCTAssertTrue(t === before[key], key)
            XCTAssertEqual(t.dtype, key.hasSuffix("position_ids") ? .int64 : .float64, key)
            XCTAssertEqual(t.toArray(), values[key], key)
        }
        model.to(.cpu)   // already there: unchanged
        XCTAssertEqual(model.conv_in.weight.device, .cpu)
    }

    func testInitialisationRangesAndSeeding() {
        let a = Linear(16, 8, seed: 5), b = Linear(16, 8, seed: 5), c = Linear(16, 8, seed: 6)
        XCTAssertEqual(a.weight.toArray(), b.weight.toArray())
        XCTAssertNotEqual(a.weight.toArray(), c.weight.toArray())
        let bound = 1 / 4.0
        XCTAssertTrue((a.weight.toArray() + a.bias!.toArray()).allSatisfy { abs($0) <= bound })
        let conv = Conv2d(4, 6, kernelSize: 3, groups: 2, seed: 1)
        XCTAssertEqual(conv.weight.shape, [6, 2, 3, 3])
        XCTAssertTrue(conv.weight.toArray().allSatisfy { abs($0) <= 1 / 18.0.squareRoot() })
        var g = PhiloxGenerator(seed: 0)
        let first = Linear(4, 4, generator: &g), second = Linear(4, 4, generator: &g)
        XCTAssertNotEqual(first.weight.toArray(), second.weight.toArray(), "a shared generator advances")
        let skipped = withoutParameterInitialization { Linear(4, 4) }
        XCTAssertTrue(skipped.weight.toArray().allSatisfy { $0 == 0 })
        let norm = GroupNorm(groups: 2, channels: 4)
        XCTAssertEqual(norm.weight!.toArray(), [1, 1, 1, 1])
        XCTAssertEqual(norm.bias!.toArray(), [0, 0, 0, 0])
        XCTAssertNil(GroupNorm(groups: 2, channels: 4, affine: false).weight)
        let emb = Embedding(1000, 8, seed: 2).weight.toArray()
        let mean = emb.reduce(0, +) / Double(emb.count)
        let std = (emb.map { ($0 - mean) * ($0 - mean) }.reduce(0, +) / Double(emb.count)).squareRoot()
        XCTAssertEqual(mean, 0, accuracy: 0.05)
        XCTAssertEqual(std, 1, accuracy: 0.05)
    }

    func testLinearMatchesHandComputation() {
        let layer = Linear(3, 2, dtype: .float64, seed: 4)
        let x = randomDouble([5, 3], seed: 8)
        let w = layer.weight.toArray(), b = layer.bias!.toArray()
        var expected = matmulT(x.toArray(), w, m: 5, k: 3, n: 2)
        for i in 0..<5 { for j in 0..<2 { expected[i * 2 + j] += b[j] } }
        assertClose(layer(x).toArray(), expected, atol: 1e-12, rtol: 1e-12, "linear")
        XCTAssertEqual(layer(randomDouble([2, 4, 3], seed: 9)).shape, [2, 4, 2])
    }

    func testDeltaAddsLowRankProductAndReceivesGradients() {
        let layer = Linear(4, 3, dtype: .float64, seed: 1)
        let delta = LowRankDelta(4, 3, rank: 2, dtype: .float64, seed: 2)
        let x = randomDouble([5, 4], seed: 3)
        let base = layer(x).toArray()
        layer.deltas = [delta]
        let withDelta = layer(x).toArray()
        // Hand reference: x·Dᵀ·Uᵀ.
        let hidden = matmulT(x.toArray(), delta.down.weight.toArray(), m: 5, k: 4, n: 2)
        let product = matmulT(hidden, delta.up.weight.toArray(), m: 5, k: 2, n: 3)
        assertClose(withDelta, zip(base, product).map { $0 + $1 }, atol: 1e-12, rtol: 1e-12, "delta")

        XCTAssertEqual(layer.namedParameters().map { $0.0 },
                       ["weight", "bias", "deltas.0.down.weight", "deltas.0.up.weight"])
        // Only the delta trains: the frozen base gets no gradient, the delta's match finite differences.
        layer.weight.requiresGrad = false
        layer.bias!.requiresGrad = false
        assertGradientsMatch([delta.down.weight, delta.up.weight]) { _ in layer(x) }
        XCTAssertNil(layer.weight.grad)
        XCTAssertEqual(layer.trainableParameters().count, 2)
    }

    func testConv2dDeltaAndConvLayerAgainstNaiveReference() {
        let conv = Conv2d(4, 4, kernelSize: (3, 2), stride: (2, 1), padding: (1, 0), groups: 2, dtype: .float64, seed: 3)
        let x = randomDouble([2, 4, 5, 4], seed: 4)
        let y = conv(x)
        let (oh, ow) = (3, 3)
        XCTAssertEqual(y.shape, [2, 4, oh, ow])
        let xs = x.toArray(), w = conv.weight.toArray(), b = conv.bias!.toArray()
        var expected = [Double](repeating: 0, count: 2 * 4 * oh * ow)
        for n in 0..<2 { for o in 0..<4 { for i in 0..<oh { for j in 0..<ow {
            var s = b[o]
            let g = o / 2
            for ci in 0..<2 { for ki in 0..<3 { for kj in 0..<2 {
                let hi = i * 2 - 1 + ki, wj = j + kj
                if hi < 0 || hi >= 5 || wj < 0 || wj >= 4 { continue }
                s += w[((o * 2 + ci) * 3 + ki) * 2 + kj] * xs[((n * 4 + g * 2 + ci) * 5 + hi) * 4 + wj]
            } } }
            expected[((n * 4 + o) * oh + i) * ow + j] = s
        } } } }
        assertClose(y.toArray(), expected, atol: 1e-12, rtol: 1e-12, "conv2d layer")

        // A delta whose output is a constant-shaped tensor: base + delta exactly.
        final class ConstantDelta: Module, LayerDelta {
            var scale: Tensor = Tensor([0.5], shape: [1], dtype: .float64)
            func callAsFunction(_ input: Tensor) -> Tensor {
                input.slice(2, 0, 5, step: 2).slice(3, 0, 3) * scale
            }
        }
        conv.deltas = [ConstantDelta()]
        let shifted = conv(x).toArray()
        let extra = x.slice(2, 0, 5, step: 2).slice(3, 0, 3).toArray().map { $0 * 0.5 }
        assertClose(shifted, zip(expected, extra).map { $0 + $1 }, atol: 1e-12, rtol: 1e-12, "conv2d delta")
        XCTAssertTrue(conv.stateDict().keys.contains("deltas.0.scale"))
    }

    func testNormAndEmbeddingLayersAgainstNaiveReference() {
        let gn = GroupNorm(groups: 2, channels: 4, eps: 1e-5, dtype: .float64)
        gn.weight!.assign(Tensor([1, 2, 3, 4], shape: [4], dtype: .float64))
        gn.bias!.assign(Tensor([0, 1, 0, -1], shape: [4], dtype: .float64))
        let x = randomDouble([2, 4, 3], seed: 6)
        let xs = x.toArray()
        var expected = [Double](repeating: 0, count: xs.count)
        for n in 0..<2 { for g in 0..<2 {
            let start = n * 12 + g * 6
            let group = Array(xs[start..<start + 6])
            let mean = group.reduce(0, +) / 6
            let variance = group.map { ($0 - mean) * ($0 - mean) }.reduce(0, +) / 6
            for k in 0..<6 {
                let c = g * 2 + k / 3
                expected[start + k] = (group[k] - mean) / (variance + 1e-5).squareRoot() * Double(c + 1) + [0, 1, 0, -1][c]
            }
        } }
        assertClose(gn(x).toArray(), expected, atol: 1e-10, rtol: 1e-10, "group norm layer")

        let ln = LayerNorm(3, eps: 1e-6, dtype: .float64)
        ln.weight!.assign(Tensor([2, 1, 0.5], shape: [3], dtype: .float64))
        var lnExpected: [Double] = []
        for row in 0..<8 {
            let r = Array(xs[row * 3..<row * 3 + 3])
            let mean = r.reduce(0, +) / 3
            let variance = r.map { ($0 - mean) * ($0 - mean) }.reduce(0, +) / 3
            lnExpected += r.enumerated().map { (k, v) in (v - mean) / (variance + 1e-6).squareRoot() * [2, 1, 0.5][k] }
        }
        assertClose(ln(x).toArray(), lnExpected, atol: 1e-10, rtol: 1e-10, "layer norm layer")
        XCTAssertNil(LayerNorm(3, elementwiseAffine: false).weight)

        let emb = Embedding(5, 3, dtype: .float64, seed: 1)
        let table = emb.weight.toArray()
        let ids = [4, 0, 4, 2]
        XCTAssertEqual(emb(Tensor(indices: ids, shape: [2, 2])).toArray(), ids.flatMap { Array(table[$0 * 3..<$0 * 3 + 3]) })
        XCTAssertEqual(emb(Tensor(indices: ids, shape: [2, 2])).shape, [2, 2, 3])
    }
}
