import Foundation
import XCTest
@testable import TensorKit

/// Forward outputs and input gradients against PyTorch, in float32, from the fixtures that
/// Fixtures/make_parity_fixtures.py writes into Fixtures/parity/ (one safetensors file per op family).
///
/// A case "<name>" stores its inputs as "<name>.<input>", its configuration as small int64/float64
/// tensors, PyTorch's output as "<name>.out", a random upstream gradient "<name>.grad_out" and the
/// gradients autograd gives each input for it as "<name>.grad_<input>".
final class ParityTests: XCTestCase {
    static let directory = URL(fileURLWithPath: #filePath).deletingLastPathComponent()
        .appendingPathComponent("Fixtures").appendingPathComponent("parity")

    struct Fixture {
        let family: String
        let tensors: [String: Tensor]

        init(_ family: String) throws {
            self.family = family
            let path = ParityTests.directory.appendingPathComponent("\(family).safetensors").path
            tensors = try loadSafeTensors(path)
        }

        /// Case names in sorted order (the part of each key before its first dot).
        var cases: [String] {
            Set(tensors.keys.compactMap { $0.split(separator: ".", maxSplits: 1).first.map(String.init) }).sorted()
        }

        func has(_ c: String, _ key: String) -> Bool { tensors["\(c).\(key)"] != nil }

        func tensor(_ c: String, _ key: String) throws -> Tensor {
            try XCTUnwrap(tensors["\(c).\(key)"], "\(family).safetensors has no tensor \(c).\(key)")
        }

        func ints(_ c: String, _ key: String) throws -> [Int] { try tensor(c, key).toArray().map { Int($0) } }
        func double(_ c: String, _ key: String) throws -> Double { try tensor(c, key).item() }
    }

    /// Runs `op` on the case's inputs (those of `names` present in the file, as float32 leaves that
    /// require grad), compares its output with "<case>.out", back-propagates "<case>.grad_out" and
    /// compares every input's gradient with "<case>.grad_<input>".
    /// Tolerance: |ours − torch| ≤ atol · max(1, max|torch|) + rtol · |torch|, per tensor.
    func check(_ fx: Fixture, _ c: String, inputs names: [String], atol: Double = 1e-5, gradAtol: Double = 1e-5,
               rtol: Double = 1e-4, label: String = "", file: StaticString = #filePath, line: UInt = #line,
               _ op: ([String: Tensor]) throws -> Tensor) throws {
        let name = label.isEmpty ? "\(fx.family)/\(c)" : "\(fx.family)/\(c) (\(label))"
        var leaves: [String: Tensor] = [:]
        for input in names where fx.has(c, input) {
            let t = try fx.tensor(c, input)
            XCTAssertEqual(t.dtype, .float32, "\(fx.family)/\(c).\(input) should be float32", file: file, line: line)
            leaves[input] = t.detach().requiringGrad()
        }
        let out = try op(leaves)
        let expected = try fx.tensor(c, "out")
        compare(out, expected, atol: atol, rtol: rtol, "\(name) forward", file: file, line: line)
        out.backward(try fx.tensor(c, "grad_out"))
        for (input, leaf) in leaves.sorted(by: { $0.key < $1.key }) {
            let expectedGrad = try fx.tensor(c, "grad_\(input)")
            guard let grad = leaf.grad else {
                XCTFail("\(name): no gradient reached \(input)", file: file, line: line)
                continue
            }
            compare(grad, expectedGrad, atol: gradAtol, rtol: rtol, "\(name) grad \(input)", file: file, line: line)
        }
    }

    func compare(_ actual: Tensor, _ expected: Tensor, atol: Double, rtol: Double, _ label: String,
                 file: StaticString = #filePath, line: UInt = #line) {
        XCTAssertEqual(actual.dtype, .float32, "\(label): computed in \(actual.dtype)", file: file, line: line)
        guard actual.shape == expected.shape else {
            XCTFail("\(label): shape \(actual.shape), expected \(expected.shape)", file: file, line: line)
            return
        }
        let e = expected.toArray()
        let scale = max(1, e.reduce(0) { max($0, Swift.abs($1)) })
        assertClose(actual.toArray(), e, atol: atol * scale, rtol: rtol, label, file: file, line: line)
    }

    /// Every case under each of the CPU backend's stride-1 algorithm choices: automatic, then
    /// Winograd (wherever it applies: 3×3, dilation 1), shifted GEMMs and im2col forced.
    func testConv2d() throws {
        let fx = try Fixture("conv2d")
        XCTAssertGreaterThanOrEqual(fx.cases.count, 9)
        let saved = convStrideOneAlgorithm
        defer { convStrideOneAlgorithm = saved }
        for policy in [StrideOneConvAlgorithm?.none, .winograd, .shifted, .im2col] {
            convStrideOneAlgorithm = policy
            for c in fx.cases {
                let s = try fx.ints(c, "stride"), p = try fx.ints(c, "padding"), d = try fx.ints(c, "dilation")
                let groups = try fx.ints(c, "groups")[0]
                try check(fx, c, inputs: ["input", "weight", "bias"], atol: 1e-5, gradAtol: 2e-5,
                          label: "stride-1 algorithm \(policy.map { "\($0)" } ?? "automatic")") { t in
                    conv2d(t["input"]!, weight: t["weight"]!, bias: t["bias"], stride: (s[0], s[1]),
                           padding: (p[0], p[1]), dilation: (d[0], d[1]), groups: groups)
                }
            }
        }
    }

    func testGroupNorm() throws { try checkGroupNorm("group_norm", minimumCases: 6, silu: false) }

    /// The fused op against PyTorch's F.silu(F.group_norm(...)), gradients of input, weight and bias.
    func testGroupNormSiLU() throws { try checkGroupNorm("group_norm_silu", minimumCases: 4, silu: true) }

    private func checkGroupNorm(_ family: String, minimumCases: Int, silu: Bool) throws {
        let fx = try Fixture(family)
        XCTAssertGreaterThanOrEqual(fx.cases.count, minimumCases)
        for c in fx.cases {
            let groups = try fx.ints(c, "groups")[0], eps = try fx.double(c, "eps")
            try check(fx, c, inputs: ["input", "weight", "bias"], atol: 2e-5, gradAtol: 5e-5) { t in
                groupNorm(t["input"]!, groups: groups, weight: t["weight"], bias: t["bias"], eps: eps, silu: silu)
            }
        }
    }

    func testLayerNorm() throws {
        let fx = try Fixture("layer_norm")
        XCTAssertGreaterThanOrEqual(fx.cases.count, 4)
        for c in fx.cases {
            let shape = try fx.ints(c, "normalized_shape"), eps = try fx.double(c, "eps")
            try check(fx, c, inputs: ["input", "weight", "bias"], atol: 2e-5, gradAtol: 5e-5) { t in
                layerNorm(t["input"]!, normalizedShape: shape, weight: t["weight"], bias: t["bias"], eps: eps)
            }
        }
    }

    func testScaledDotProductAttention() throws {
        let fx = try Fixture("attention")
        XCTAssertGreaterThanOrEqual(fx.cases.count, 8)
        for c in fx.cases {
            let causal = try fx.ints(c, "causal")[0] != 0
            let stored = try fx.double(c, "scale")
            let scale: Double? = stored.isNaN ? nil : stored  // NaN marks PyTorch's default 1/√D
            try check(fx, c, inputs: ["q", "k", "v"], atol: 1e-5, gradAtol: 3e-5) { t in
                scaledDotProductAttention(t["q"]!, t["k"]!, t["v"]!, causal: causal, scale: scale)
            }
        }
    }

    func testSoftmaxAndLogSoftmax() throws {
        let fx = try Fixture("softmax")
        XCTAssertGreaterThanOrEqual(fx.cases.count, 6)
        for c in fx.cases {
            let axis = try fx.ints(c, "axis")[0], log = try fx.ints(c, "log")[0] != 0
            try check(fx, c, inputs: ["input"], atol: 1e-5, gradAtol: 1e-5) { t in
                log ? t["input"]!.logSoftmax(axis: axis) : t["input"]!.softmax(axis: axis)
            }
        }
    }

    func testActivations() throws {
        let fx = try Fixture("activations")
        XCTAssertEqual(fx.cases, ["gelu", "gelu_tanh", "quick_gelu", "silu"])
        for c in fx.cases {
            try check(fx, c, inputs: ["input"], atol: 1e-5, gradAtol: 1e-5) { t in
                let x = t["input"]!
                switch c {
                case "gelu": return x.gelu()
                case "gelu_tanh": return x.gelu(approximate: true)
                case "quick_gelu": return x.quickGelu()
                case "silu": return x.silu()
                default:
                    XCTFail("activations fixture case \(c) has no counterpart here")
                    return x
                }
            }
        }
    }

    func testMatmul() throws {
        let fx = try Fixture("matmul")
        XCTAssertEqual(fx.cases.count, 8)
        for c in fx.cases {
            try check(fx, c, inputs: ["a", "b", "bias"], atol: 1e-5, gradAtol: 1e-5) { t in
                let a = t["a"]!, b = t["b"]!
                switch c {
                case "broadcast_batch", "batched_rhs_2d", "vector_matrix", "matrix_vector": return a.matmul(b)
                case "a_transposed": return a.transposed(-1, -2).matmul(b)
                case "b_transposed": return a.matmul(b.transposed(-1, -2))
                case "both_transposed": return a.transposed().matmul(b.transposed())
                case "linear_bias": return linear(a, weight: b, bias: t["bias"])
                default:
                    XCTFail("matmul fixture case \(c) has no counterpart here")
                    return a
                }
            }
        }
    }

    /// A few torch.optim.AdamW steps with non-default lr, betas, eps and weight decay, given the
    /// same gradients per step; parameters compared after every step.
    func testAdamWTrajectory() throws {
        let fx = try Fixture("adamw")
        let c = "trajectory"
        let betas = try fx.tensor(c, "betas").toArray()
        let steps = try fx.ints(c, "steps")[0]
        XCTAssertGreaterThanOrEqual(steps, 3)
        // Copies: the optimizer updates in place, and loaded tensors may map the file.
        let params = try (0..<2).map { try fx.tensor(c, "p\($0).initial").contiguousCopy() }
        let opt = AdamW(parameters: params, lr: try fx.double(c, "lr"), betas: (betas[0], betas[1]),
                        eps: try fx.double(c, "eps"), weightDecay: try fx.double(c, "weight_decay"))
        for step in 0..<steps {
            for (i, p) in params.enumerated() { p.grad = try fx.tensor(c, "p\(i).grad.\(step)") }
            opt.step()
            for (i, p) in params.enumerated() {
                compare(p, try fx.tensor(c, "p\(i).after.\(step)"), atol: 2e-6, rtol: 1e-5, "adamw p\(i) after step \(step)")
            }
        }
    }
}
