import Foundation
import XCTest
@testable import DiffusionModels

/// UNet2DConditionModel and its blocks against diffusers 0.35.2, from the fixtures that
/// Fixtures/make_unet_fixtures.py writes into Fixtures/unet/ (see that script for what each holds).
///
/// Tolerance, float32 parity: per tensor, relError = max|ours − diffusers| / max|diffusers| ≤ 1e-4,
/// for forward outputs and gradients alike (observed: ≤ 2e-6 forward, ≤ 4e-6 gradients).
/// UNET_VERBOSE=1 prints every relative error.
final class UNetTests: XCTestCase {
    static let fixtures = URL(fileURLWithPath: #filePath).deletingLastPathComponent()
        .appendingPathComponent("Fixtures").appendingPathComponent("unet")
    static let parityTolerance = 1e-4

    // MARK: parity with diffusers

    func testParitySDTiny() throws { try checkParity("sd_tiny") }
    func testParitySD2LinearProjection() throws { try checkParity("sd2_linear") }
    func testParityThreeLevelsOddSize() throws { try checkParity("three_level") }
    func testParityFlipShiftPadding0() throws { try checkParity("flip_shift") }

    /// Loads `<case>/unet`, checks time_proj, time_embedding, the output, and the gradients of the
    /// inputs and of a few parameters for diffusers' upstream gradient.
    func checkParity(_ name: String, file: StaticString = #filePath, line: UInt = #line) throws {
        let dir = Self.fixtures.appendingPathComponent(name)
        let unet = try UNet2DConditionModel.load(directory: dir.appendingPathComponent("unet"))
        let io = try loadSafeTensors(dir.appendingPathComponent("io.safetensors").path)
        func get(_ key: String) throws -> Tensor { try XCTUnwrap(io[key], "\(name)/io.safetensors lacks \(key)") }
        let tol = Self.parityTolerance

        let sample = try get("sample").detach().requiringGrad()
        let enc = try get("encoder_hidden_states").detach().requiringGrad()
        let timestep = try get("timestep")

        // Time embedding path alone.
        let batch = sample.shape[0]
        var steps = timestep.toArray()
        if steps.count == 1 { steps = Array(repeating: steps[0], count: batch) }
        let tEmb = unet.time_proj(steps)
        assertParityClose(tEmb, try get("t_emb"), tol, "\(name) t_emb", file: file, line: line)
        assertParityClose(withNoGrad { unet.time_embedding(tEmb) }, try get("emb"), tol, "\(name) emb", file: file, line: line)

        let out = unet(sample: sample, timestep: timestep, encoderHiddenStates: enc)
        assertParityClose(out, try get("out"), tol, "\(name) output", file: file, line: line)

        out.backward(try get("grad_out"))
        assertParityClose(try XCTUnwrap(sample.grad), try get("grad.sample"), tol, "\(name) grad sample", file: file, line: line)
        assertParityClose(try XCTUnwrap(enc.grad), try get("grad.encoder_hidden_states"), tol,
                       "\(name) grad encoder_hidden_states", file: file, line: line)
        let params = Dictionary(uniqueKeysWithValues: unet.namedParameters())
        var checked = 0
        for (key, expected) in io where key.hasPrefix("grad.") && key != "grad.sample" && key != "grad.encoder_hidden_states" {
            let param = String(key.dropFirst(5))
            let p = try XCTUnwrap(params[param], "\(name): the model has no parameter \(param)")
            assertParityClose(try XCTUnwrap(p.grad, "\(name): no gradient reached \(param)"), expected, tol,
                           "\(name) grad \(param)", file: file, line: line)
            checked += 1
        }
        XCTAssertGreaterThanOrEqual(checked, 5, "\(name): too few parameter gradients in the fixture", file: file, line: line)
    }

    /// One timestep given as a Double equals the same timestep as a tensor (both broadcast).
    func testScalarTimestepBroadcasts() throws {
        let dir = Self.fixtures.appendingPathComponent("sd2_linear")
        let unet = try UNet2DConditionModel.load(directory: dir.appendingPathComponent("unet"))
        let io = try loadSafeTensors(dir.appendingPathComponent("io.safetensors").path)
        let sample = try XCTUnwrap(io["sample"]), enc = try XCTUnwrap(io["encoder_hidden_states"])
        let t = try XCTUnwrap(io["timestep"]).item()   // 500.5, 0-d float64
        let a = withNoGrad { unet(sample: sample, timestep: t, encoderHiddenStates: enc) }
        let b = withNoGrad { unet(sample: sample, timesteps: [t, t], encoderHiddenStates: enc) }
        XCTAssertEqual(a.toArray(), b.toArray())
        assertParityClose(a, try XCTUnwrap(io["out"]), Self.parityTolerance, "scalar timestep")
    }

    // MARK: config

    func testEmptyConfigTakesDiffusersDefaults() throws {
        let config = try JSONDecoder().decode(UNet2DConditionConfig.self, from: Data("{}".utf8))
        XCTAssertEqual(config, UNet2DConditionConfig())
        let r = try config.resolved()
        // SD 1.x: attention_head_dim 8 is read as 8 heads (head width 320/8 = 40, ..., 1280/8 = 160).
        XCTAssertEqual(r.attentionHeads, [8, 8, 8, 8])
        XCTAssertEqual(r.layersPerBlock, [2, 2, 2, 2])
        XCTAssertEqual(r.crossAttentionDims, [1280, 1280, 1280, 1280])
        XCTAssertEqual(r.timeEmbedDim, 1280)
        XCTAssertTrue(r.hasMidBlock)
        XCTAssertEqual(r.downKinds, [.crossAttention, .crossAttention, .crossAttention, .plain])
    }

    func testNullAndListFieldsAndRoundTrip() throws {
        let json = """
        {"mid_block_type": null, "attention_head_dim": [5, 10, 20, 20], "layers_per_block": [1, 2, 2, 1],
         "cross_attention_dim": 1024, "transformer_layers_per_block": [1, 2, 3, 4], "use_linear_projection": true,
         "down_block_types": ["UNetResDownBlock2D", "CrossAttnDownBlock2D", "CrossAttnDownBlock2D", "DownBlock2D"],
         "_class_name": "UNet2DConditionModel", "sample_size": 96}
        """
        let config = try JSONDecoder().decode(UNet2DConditionConfig.self, from: Data(json.utf8))
        XCTAssertNil(config.mid_block_type)
        let r = try config.resolved()
        XCTAssertFalse(r.hasMidBlock)
        XCTAssertEqual(r.attentionHeads, [5, 10, 20, 20])
        XCTAssertEqual(r.layersPerBlock, [1, 2, 2, 1])
        XCTAssertEqual(r.transformerLayersPerBlock, [1, 2, 3, 4])
        XCTAssertEqual(r.downKinds[0], .plain)  // "UNetRes" prefix stripped, as diffusers does
        let again = try JSONDecoder().decode(UNet2DConditionConfig.self, from: JSONEncoder().encode(config))
        XCTAssertEqual(again, config)
        XCTAssertNil(again.mid_block_type, "an explicit null must survive encoding")
    }

    /// Every unimplemented option (and every inconsistent value) is refused with an error naming the field.
    func testUnsupportedFieldsAreRefusedByName() throws {
        let base = try baseConfigJSON()
        let cases: [(String, Any)] = [
            ("only_cross_attention", true), ("only_cross_attention", [false, true]),
            ("num_attention_heads", 8), ("dual_cross_attention", true), ("act_fn", "gelu"),
            ("resnet_time_scale_shift", "scale_shift"), ("time_embedding_type", "fourier"),
            ("attention_type", "gated"), ("class_embed_type", "timestep"), ("num_class_embeds", 10),
            ("class_embeddings_concat", true), ("addition_embed_type", "text"), ("encoder_hid_dim", 32),
            ("encoder_hid_dim_type", "text_proj"), ("time_cond_proj_dim", 32), ("time_embedding_act_fn", "silu"),
            ("timestep_post_act", "silu"), ("cross_attention_norm", "layer_norm"), ("resnet_skip_time_act", true),
            ("resnet_out_scale_factor", 2.0), ("mid_block_only_cross_attention", true),
            ("reverse_transformer_layers_per_block", [[1, 1], [1, 1]]),
            ("transformer_layers_per_block", [[1, 1], [1, 1]]), ("transformer_layers_per_block", [1, 1, 1]),
            ("mid_block_type", "UNetMidBlock2DSimpleCrossAttn"),
            ("down_block_types", ["SimpleCrossAttnDownBlock2D", "DownBlock2D"]),
            ("up_block_types", ["UpBlock2D", "AttnUpBlock2D"]), ("up_block_types", ["UpBlock2D"]),
            ("norm_num_groups", NSNull()), ("norm_num_groups", 5), ("conv_in_kernel", 2), ("conv_out_kernel", 0),
            ("layers_per_block", [1, 2, 3]), ("attention_head_dim", [8]), ("attention_head_dim", 64),
            ("block_out_channels", [32, 64, 64]), ("cross_attention_dim", [32]), ("dropout", 1.0),
            ("in_channels", "four"),
        ]
        for (field, value) in cases {
            var json = base
            json[field] = value
            let data = try JSONSerialization.data(withJSONObject: json)
            do {
                let config = try JSONDecoder().decode(UNet2DConditionConfig.self, from: data)
                _ = try UNet2DConditionModel(config: config)
                XCTFail("\(field) = \(value) was accepted")
            } catch let error as UNet2DConditionConfigError {
                XCTAssertEqual(error.field, field, "\(field) = \(value): \(error)")
                XCTAssertTrue(error.description.contains("`\(field)`"), error.description)
            } catch DecodingError.typeMismatch(_, let context) {
                XCTAssertEqual(context.codingPath.first?.stringValue, field, "\(field) = \(value)")
            }
        }
    }

    /// Through `load(directory:)` the error also names the config file.
    func testLoadNamesConfigFileAndField() throws {
        let dir = try temporaryCopy(of: "flip_shift")
        var json = try baseConfigJSON(case: "flip_shift")
        json["upcast_attention"] = "yes"
        try JSONSerialization.data(withJSONObject: json).write(to: dir.appendingPathComponent("config.json"))
        XCTAssertThrowsError(try UNet2DConditionModel.load(directory: dir)) { error in
            let text = "\(error)"
            XCTAssertTrue(text.contains("config.json") && text.contains("upcast_attention"), text)
        }
        json["upcast_attention"] = false
        json["class_embed_type"] = "identity"
        try JSONSerialization.data(withJSONObject: json).write(to: dir.appendingPathComponent("config.json"))
        XCTAssertThrowsError(try UNet2DConditionModel.load(directory: dir)) { error in
            let text = "\(error)"
            XCTAssertTrue(text.contains("config.json") && text.contains("`class_embed_type`"), text)
        }
    }

    // MARK: strict loading

    func testStrictLoadNamesMissingUnexpectedAndMismatchedKeys() throws {
        let dir = try temporaryCopy(of: "flip_shift")
        let weightsURL = dir.appendingPathComponent("diffusion_pytorch_model.safetensors")
        var weights = try loadSafeTensors(weightsURL.path)
        weights["conv_in.weight"] = nil
        weights["down_blocks.0.attentions.0.transformer_blocks.0.attn1.to_q.bias"] = Tensor(zeros: [8])
        weights["conv_out.bias"] = Tensor(zeros: [3])
        try saveSafeTensors(weights, to: weightsURL.path)
        XCTAssertThrowsError(try UNet2DConditionModel.load(directory: dir)) { error in
            guard let e = error as? UNetLoadError, let report = e.report else {
                return XCTFail("expected a UNetLoadError with a report, got \(error)")
            }
            XCTAssertEqual(report.missingKeys, ["conv_in.weight"])
            XCTAssertEqual(report.unexpectedKeys, ["down_blocks.0.attentions.0.transformer_blocks.0.attn1.to_q.bias"])
            XCTAssertEqual(report.shapeMismatches.map(\.key), ["conv_out.bias"])
            let text = e.description
            for key in ["conv_in.weight", "attn1.to_q.bias", "conv_out.bias", "diffusion_pytorch_model.safetensors"] {
                XCTAssertTrue(text.contains(key), "message does not name \(key): \(text)")
            }
        }
    }

    func testMissingWeightsAreExplained() throws {
        let dir = try temporaryCopy(of: "flip_shift")
        try FileManager.default.removeItem(at: dir.appendingPathComponent("diffusion_pytorch_model.safetensors"))
        XCTAssertThrowsError(try UNet2DConditionModel.load(directory: dir)) { error in
            XCTAssertTrue("\(error)".contains("diffusion_pytorch_model.safetensors"), "\(error)")
        }
        try Data("{}".utf8).write(to: dir.appendingPathComponent("diffusion_pytorch_model.safetensors.index.json"))
        XCTAssertThrowsError(try UNet2DConditionModel.load(directory: dir)) { error in
            XCTAssertTrue("\(error)".contains("weight_map"), "\(error)")
        }
        XCTAssertThrowsError(try UNet2DConditionModel.load(directory: dir.appendingPathComponent("nothing-here")))
        // Pickled weights only: refused, with the conversion spelled out.
        try FileManager.default.removeItem(at: dir.appendingPathComponent("diffusion_pytorch_model.safetensors.index.json"))
        try Data([0x80, 0x02]).write(to: dir.appendingPathComponent("diffusion_pytorch_model.bin"))
        XCTAssertThrowsError(try UNet2DConditionModel.load(directory: dir)) { error in
            let text = "\(error)"
            XCTAssertTrue(text.contains("diffusion_pytorch_model.bin") && text.contains("safe_serialization"), text)
        }
    }

    /// A checkpoint split into shards by a `.safetensors.index.json` (as diffusers writes large models)
    /// loads to the same model as the single file; a shard the index names but that is missing is an error.
    func testShardedWeightsLoadThroughTheIndex() throws {
        let dir = try temporaryCopy(of: "flip_shift")
        let single = dir.appendingPathComponent("diffusion_pytorch_model.safetensors")
        let reference = try UNet2DConditionModel.load(directory: dir)
        let weights = try loadSafeTensors(single.path)
        var shards: [[String: Tensor]] = [[:], [:], [:]]
        var map: [String: String] = [:]
        for (i, key) in weights.keys.sorted().enumerated() {
            shards[i % 3][key] = weights[key]!.contiguousCopy()
            map[key] = "diffusion_pytorch_model-0000\(i % 3 + 1)-of-00003.safetensors"
        }
        for (i, shard) in shards.enumerated() {
            try saveSafeTensors(shard, to: dir.appendingPathComponent("diffusion_pytorch_model-0000\(i + 1)-of-00003.safetensors").path)
        }
        try FileManager.default.removeItem(at: single)
        let index = try JSONSerialization.data(withJSONObject: ["metadata": ["total_size": 0], "weight_map": map])
        try index.write(to: dir.appendingPathComponent("diffusion_pytorch_model.safetensors.index.json"))
        let sharded = try UNet2DConditionModel.load(directory: dir)
        let expected = Dictionary(uniqueKeysWithValues: reference.namedParameters())
        for (key, p) in sharded.namedParameters() {
            XCTAssertEqual(p.toArray(), try XCTUnwrap(expected[key]).toArray(), key)
        }
        try FileManager.default.removeItem(at: dir.appendingPathComponent("diffusion_pytorch_model-00002-of-00003.safetensors"))
        XCTAssertThrowsError(try UNet2DConditionModel.load(directory: dir)) { error in
            XCTAssertTrue("\(error)".contains("diffusion_pytorch_model-00002-of-00003.safetensors"), "\(error)")
        }
    }

    /// The fp16 file of sd_tiny is found without naming the variant and also with it.
    func testFP16VariantIsFound() throws {
        let dir = Self.fixtures.appendingPathComponent("sd_tiny").appendingPathComponent("unet")
        let a = try UNet2DConditionModel.load(directory: dir)
        let b = try UNet2DConditionModel.load(directory: dir, variant: "fp16")
        XCTAssertEqual(a.conv_in.weight.dtype, .float32)
        XCTAssertEqual(a.conv_in.weight.toArray(), b.conv_in.weight.toArray())
        XCTAssertThrowsError(try UNet2DConditionModel.load(directory: dir, variant: "bf16"))
    }

    // MARK: gradient checkpointing

    /// Checkpointed and plain forward/backward agree: output and input gradients (relError ≤ 1e-6), and
    /// every parameter's gradient (max abs difference ≤ 1e-6 × the largest parameter gradient). Only the
    /// summation order of gradient contributions differs between the two paths.
    func testGradientCheckpointingMatchesPlainPath() throws {
        for name in ["sd_tiny", "three_level"] {
            let dir = Self.fixtures.appendingPathComponent(name)
            let unet = try UNet2DConditionModel.load(directory: dir.appendingPathComponent("unet"))
            let io = try loadSafeTensors(dir.appendingPathComponent("io.safetensors").path)
            func run(_ checkpointing: Bool) throws -> (out: Tensor, grads: [String: Tensor]) {
                unet.zeroGrad()
                unet.gradientCheckpointing = checkpointing
                let sample = try XCTUnwrap(io["sample"]).detach().requiringGrad()
                let enc = try XCTUnwrap(io["encoder_hidden_states"]).detach().requiringGrad()
                let out = unet(sample: sample, timestep: try XCTUnwrap(io["timestep"]), encoderHiddenStates: enc)
                out.backward(try XCTUnwrap(io["grad_out"]))
                var grads = ["<sample>": try XCTUnwrap(sample.grad), "<enc>": try XCTUnwrap(enc.grad)]
                for (key, p) in unet.namedParameters() { grads[key] = p.grad }
                return (out.detach(), grads)
            }
            let plain = try run(false)
            let checkpointed = try run(true)
            assertParityClose(checkpointed.out, plain.out, 1e-6, "\(name) checkpointed output")
            XCTAssertEqual(Set(checkpointed.grads.keys), Set(plain.grads.keys), "\(name): gradients reached different tensors")
            XCTAssertEqual(plain.grads.count, unet.parameters().count + 2, "\(name): some parameter got no gradient")
            // Parameter gradients are compared on the scale of the largest parameter gradient: a few are
            // pure rounding noise (a per-channel time-embedding bias right before a GroupNorm with one
            // channel per group has an exactly zero true gradient), so a per-tensor ratio means nothing there.
            let scale = plain.grads.filter { !$0.key.hasPrefix("<") }.map { $0.value.abs().max().item() }.max() ?? 0
            for (key, g) in plain.grads {
                guard let c = checkpointed.grads[key] else { continue }
                if key.hasPrefix("<") {
                    assertParityClose(c, g, 1e-6, "\(name) checkpointed grad \(key)")
                } else {
                    let diff = (c - g).abs().max().item()
                    XCTAssertLessThanOrEqual(diff, 1e-6 * scale, "\(name) checkpointed grad \(key): max abs diff \(diff), scale \(scale)")
                }
            }
            unet.gradientCheckpointing = false
        }
    }

    // MARK: end-to-end backward against finite differences

    /// A random tiny UNet in float64 (both block kinds, mid block, odd input size so the explicit-size
    /// upsampling is on the path): directional derivatives ⟨∇f, d⟩ of f = Σ w·UNet(x) along random
    /// unit-norm directions d (jointly over all parameters, over each input, and over single parameter
    /// tensors of every layer kind), against central differences (f(θ+εd) − f(θ−εd)) / 2ε, ε = 1e-5.
    /// Tolerance |analytic − numeric| ≤ 1e-7 · max(1, |numeric|); observed ≤ 3e-10 (O(ε²) truncation
    /// plus rounding), while a wrong backward rule is off by percents.
    func testFiniteDifferenceDirectionalDerivatives() throws {
        var config = UNet2DConditionConfig()
        config.in_channels = 3
        config.out_channels = 2
        config.block_out_channels = [4, 8]
        config.down_block_types = ["CrossAttnDownBlock2D", "DownBlock2D"]
        config.up_block_types = ["UpBlock2D", "CrossAttnUpBlock2D"]
        config.layers_per_block = .one(1)
        config.norm_num_groups = 2
        config.attention_head_dim = .one(2)
        config.cross_attention_dim = .one(6)
        let unet = try UNet2DConditionModel(config: config, dtype: .float64, seed: 7)
        // Non-trivial norm affines (they start at ones/zeros).
        withNoGrad {
            for (i, (key, p)) in unet.namedParameters().enumerated() where key.contains("norm") {
                p.assign(p + Tensor.randn(p.shape, seed: UInt64(100 + i), dtype: .float64) * 0.2)
            }
        }
        let sample = Tensor.randn([2, 3, 5, 6], seed: 1, dtype: .float64).requiringGrad()
        let enc = Tensor.randn([2, 3, 6], seed: 2, dtype: .float64).requiringGrad()
        let timesteps = [37.0, 801.5]
        let probe = withNoGrad { unet(sample: sample, timesteps: timesteps, encoderHiddenStates: enc) }
        XCTAssertEqual(probe.shape, [2, 2, 5, 6])
        let w = Tensor.randn(probe.shape, seed: 3, dtype: .float64)
        func objective() -> Double {
            withNoGrad { (unet(sample: sample, timesteps: timesteps, encoderHiddenStates: enc) * w).sum().item() }
        }
        (unet(sample: sample, timesteps: timesteps, encoderHiddenStates: enc) * w).sum().backward()

        let named = Dictionary(uniqueKeysWithValues: unet.namedParameters())
        var groups: [(String, [Tensor])] = [("all parameters", unet.parameters()), ("sample", [sample]), ("encoder states", [enc])]
        for key in ["conv_in.weight", "time_embedding.linear_1.weight",
                    "down_blocks.0.attentions.0.transformer_blocks.0.attn1.to_q.weight",
                    "down_blocks.0.attentions.0.transformer_blocks.0.attn2.to_k.weight",
                    "down_blocks.0.attentions.0.transformer_blocks.0.ff.net.0.proj.weight",
                    "down_blocks.0.attentions.0.norm.weight", "down_blocks.0.downsamplers.0.conv.weight",
                    "mid_block.attentions.0.proj_out.weight", "mid_block.resnets.1.time_emb_proj.weight",
                    "up_blocks.0.upsamplers.0.conv.weight", "up_blocks.1.resnets.0.conv_shortcut.weight",
                    "up_blocks.1.attentions.1.transformer_blocks.0.norm3.bias", "conv_norm_out.weight", "conv_out.bias"] {
            groups.append((key, [try XCTUnwrap(named[key], "no parameter \(key)")]))
        }
        let eps = 1e-5
        for (gi, (label, tensors)) in groups.enumerated() {
            var directions = tensors.enumerated().map { Tensor.randn($0.element.shape, seed: UInt64(1000 * gi + $0.offset), dtype: .float64) }
            let norm = directions.map { $0.square().sum().item() }.reduce(0, +).squareRoot()
            directions = directions.map { $0 / norm }
            var analytic = 0.0
            for (t, d) in zip(tensors, directions) {
                analytic += (try XCTUnwrap(t.grad, "\(label): no gradient") * d).sum().item()
            }
            let originals = tensors.map { $0.detach().contiguousCopy() }
            func shift(_ s: Double) {
                withNoGrad { for (i, t) in tensors.enumerated() { t.assign(originals[i] + directions[i] * s) } }
            }
            shift(eps)
            let plus = objective()
            shift(-eps)
            let minus = objective()
            shift(0)
            let numeric = (plus - minus) / (2 * eps)
            XCTAssertLessThanOrEqual(abs(analytic - numeric), 1e-7 * max(1, abs(numeric)),
                                     "\(label): analytic \(analytic) vs numeric \(numeric)")
        }
    }

    // MARK: helpers

    private func baseConfigJSON(case name: String = "sd_tiny") throws -> [String: Any] {
        let url = Self.fixtures.appendingPathComponent(name).appendingPathComponent("unet").appendingPathComponent("config.json")
        return try XCTUnwrap(JSONSerialization.jsonObject(with: Data(contentsOf: url)) as? [String: Any])
    }

    /// A writable copy of a fixture's unet/ folder, removed after the test.
    private func temporaryCopy(of name: String) throws -> URL {
        let source = Self.fixtures.appendingPathComponent(name).appendingPathComponent("unet")
        let root = FileManager.default.temporaryDirectory.appendingPathComponent("unet-tests-\(UUID().uuidString)")
        try FileManager.default.createDirectory(at: root, withIntermediateDirectories: true)
        addTeardownBlock { try? FileManager.default.removeItem(at: root) }
        let dir = root.appendingPathComponent("unet")
        try FileManager.default.copyItem(at: source, to: dir)
        return dir
    }
}

/// The building blocks in the configurations the VAE uses (and the UNet's cross-attention) against
/// diffusers (Fixtures/unet/blocks.safetensors). Tolerance: relError ≤ 1e-5 per output.
final class UNetBuildingBlockTests: XCTestCase {
    static let tolerance = 1e-5
    var tensors: [String: Tensor] = [:]

    override func setUpWithError() throws {
        tensors = try loadSafeTensors(UNetTests.fixtures.appendingPathComponent("blocks.safetensors").path)
    }

    /// Loads "<name>.*" parameters into `module` strictly (the keys must be diffusers').
    private func load(_ module: Module, _ name: String) throws {
        var weights: [String: Tensor] = [:]
        for key in module.stateKeys() { weights[key] = tensors["\(name).\(key)"] }
        let own = Set(module.stateKeys())
        for key in tensors.keys where key.hasPrefix(name + ".") {
            let sub = String(key.dropFirst(name.count + 1))
            if !["x", "temb", "context", "out", "t"].contains(sub) { XCTAssertTrue(own.contains(sub), "\(name): unexpected key \(sub)") }
        }
        try module.load(weights, strict: true)
    }

    private func t(_ key: String) throws -> Tensor { try XCTUnwrap(tensors[key], "blocks.safetensors lacks \(key)") }

    func testAttentionVAEStyle() throws {
        var g = PhiloxGenerator(seed: 0)
        let attn = Attention(queryDim: 8, heads: 1, dimHead: 8, bias: true, upcastSoftmax: true, normNumGroups: 2,
                             eps: 1e-6, residualConnection: true, rescaleOutputFactor: 2, generator: &g)
        try load(attn, "attn_vae")
        assertParityClose(attn(try t("attn_vae.x")), try t("attn_vae.out"), Self.tolerance, "VAE attention")
    }

    func testAttentionCross() throws {
        var g = PhiloxGenerator(seed: 0)
        let attn = Attention(queryDim: 12, crossAttentionDim: 6, heads: 3, dimHead: 4, generator: &g)
        try load(attn, "attn_cross")
        assertParityClose(attn(try t("attn_cross.x"), encoderHiddenStates: try t("attn_cross.context")),
                       try t("attn_cross.out"), Self.tolerance, "cross attention")
    }

    /// GEGLU runs fused (the projection's bias inside the kernel), or after a projection with a delta
    /// attached (the bias added there); both against diffusers' definition from unfused ops:
    /// chunk(proj(x)) → a · gelu(g).
    func testGEGLUFusedAndAfterAProjectionWithADelta() throws {
        final class Zero: Module, LayerDelta {
            func callAsFunction(_ x: Tensor) -> Tensor { linear(x, weight: Tensor(zeros: [10, 6]), bias: nil) }
        }
        var g = PhiloxGenerator(seed: 0)
        let layer = GEGLU(dimIn: 6, dimOut: 5, generator: &g)
        let x = Tensor.randn([2, 3, 6], seed: 1)
        let parts = linear(x, weight: layer.proj.weight, bias: layer.proj.bias).chunk(2, axis: -1)
        let expected = parts[0] * parts[1].gelu(approximate: false)
        assertParityClose(layer(x), expected, 1e-6, "GEGLU fused")
        layer.proj.deltas = [Zero()]
        assertParityClose(layer(x), expected, 1e-6, "GEGLU after a projection with a delta")
    }

    func testResnetWithoutTimeEmbedding() throws {
        var g = PhiloxGenerator(seed: 0)
        let block = ResnetBlock2D(inChannels: 4, outChannels: 8, tembChannels: nil, groups: 2, eps: 1e-6,
                                  outputScaleFactor: 1.5, generator: &g)
        XCTAssertNil(block.time_emb_proj)
        XCTAssertNotNil(block.conv_shortcut)
        try load(block, "resnet_vae")
        assertParityClose(block(try t("resnet_vae.x"), temb: nil), try t("resnet_vae.out"), Self.tolerance, "resnet (VAE)")
    }

    func testResnetWithTimeEmbedding() throws {
        var g = PhiloxGenerator(seed: 0)
        let block = ResnetBlock2D(inChannels: 6, outChannels: 6, tembChannels: 10, groups: 3, eps: 1e-5, generator: &g)
        XCTAssertNil(block.conv_shortcut)
        try load(block, "resnet_temb")
        assertParityClose(block(try t("resnet_temb.x"), temb: try t("resnet_temb.temb")), try t("resnet_temb.out"),
                       Self.tolerance, "resnet (temb)")
    }

    /// Latents too small for a `downsample_padding` 0 down path are named before any work, where
    /// PyTorch stops inside diffusers' forward. Reference: this config in diffusers 0.35.2 refuses
    /// 3×8, 8×1, 1×1 and 2×9 latents ("Calculated padded input size per channel: (2 x 5). Kernel size
    /// can't be greater than actual input size" for 3×8 and 2×9) and runs 4×8, 5×8 and 6×6. By hand,
    /// each downsampler pads one row and column and applies a 3×3 stride-2 convolution
    /// (n → ⌊(n − 2) / 2⌋ + 1), so 3×8 reaches down block 1 as 1×4. With padding 1 every size runs.
    /// The default 8 heads exceed these 4-channel levels: diffusers does not use them in plain
    /// blocks, and neither do we.
    func testLatentSizeTooSmallForDownsamplePadding0() throws {
        var config = UNet2DConditionConfig()
        config.block_out_channels = [4, 4, 4]
        config.down_block_types = ["DownBlock2D", "DownBlock2D", "DownBlock2D"]
        config.up_block_types = ["UpBlock2D", "UpBlock2D", "UpBlock2D"]
        config.layers_per_block = .one(1)
        config.norm_num_groups = 2
        config.cross_attention_dim = .one(4)
        config.mid_block_type = nil
        config.downsample_padding = 0
        let unet = try UNet2DConditionModel(config: config, seed: 1)
        let problem = try XCTUnwrap(unet.latentSizeProblem(height: 3, width: 8))
        XCTAssertTrue(problem.contains("3×8") && problem.contains("1×4") && problem.contains("down block 1"), problem)
        for (h, w) in [(8, 1), (1, 1), (2, 9), (0, 6)] { XCTAssertNotNil(unet.latentSizeProblem(height: h, width: w), "\(h)×\(w)") }
        for (h, w) in [(4, 8), (5, 8), (6, 6)] { XCTAssertNil(unet.latentSizeProblem(height: h, width: w), "\(h)×\(w)") }
        config.downsample_padding = 1
        let padded = try UNet2DConditionModel(config: config, seed: 1)
        XCTAssertNil(padded.latentSizeProblem(height: 1, width: 1))
    }

    func testDownsamplePadding0AndPooling() throws {
        var g = PhiloxGenerator(seed: 0)
        let conv = Downsample2D(channels: 4, useConv: true, outChannels: 6, padding: 0, generator: &g)
        try load(conv, "down_pad0")
        assertParityClose(conv(try t("down_pad0.x")), try t("down_pad0.out"), Self.tolerance, "downsample padding 0")
        let pool = Downsample2D(channels: 3, useConv: false, generator: &g)
        XCTAssertTrue(pool.stateKeys().isEmpty)
        assertParityClose(pool(try t("down_pool.x")), try t("down_pool.out"), Self.tolerance, "downsample avg pool")
    }

    func testUpsampleToExplicitSize() throws {
        var g = PhiloxGenerator(seed: 0)
        let up = Upsample2D(channels: 4, useConv: true, outChannels: 5, generator: &g)
        try load(up, "up_size")
        let out = up(try t("up_size.x"), outputSize: (7, 5))
        XCTAssertEqual(out.shape, [2, 5, 7, 5])
        assertParityClose(out, try t("up_size.out"), Self.tolerance, "upsample to 7x5")
    }

    func testTimestepsSinFirstWithShift() throws {
        let proj = Timesteps(numChannels: 64, flipSinToCos: false, downscaleFreqShift: 1)
        XCTAssertTrue(proj.stateKeys().isEmpty)
        assertParityClose(proj(try t("timesteps.t")), try t("timesteps.out"), Self.tolerance, "timesteps")
        // Hand-computed: t = 0 gives sin 0 = 0 then cos 0 = 1 (sin first when not flipped).
        let row = proj([0]).toArray()
        XCTAssertEqual(Array(row[0..<32]), Array(repeating: 0, count: 32))
        XCTAssertEqual(Array(row[32..<64]), Array(repeating: 1, count: 32))
    }

    /// Nearest resize against indices worked out by hand: 3 → 5 reads rows 0,0,1,1,2 (⌊i·3/5⌋).
    func testResizeNearestIndices() throws {
        let x = Tensor([0, 1, 2], shape: [1, 1, 3, 1], dtype: .float32)
        XCTAssertEqual(resizeNearest(x, height: 5, width: 2).toArray(), [0, 0, 0, 0, 1, 1, 1, 1, 2, 2])
    }
}
