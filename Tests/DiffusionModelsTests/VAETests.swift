import Foundation
import XCTest
@testable import DiffusionModels

/// AutoencoderKL and DiagonalGaussianDistribution against diffusers 0.35.2, from the fixtures that
/// Fixtures/make_vae_fixtures.py writes into Fixtures/vae/ (see that script for what each holds).
///
/// Tolerance, float32 parity: per tensor, relError = max|ours − diffusers| / max|diffusers| ≤ 1e-4,
/// for forward outputs and gradients alike (observed: ≤ 3e-6 forward, ≤ 5e-6 gradients).
/// VAE_VERBOSE=1 prints every relative error.
final class VAETests: XCTestCase {
    static let fixtures = URL(fileURLWithPath: #filePath).deletingLastPathComponent()
        .appendingPathComponent("Fixtures").appendingPathComponent("vae")
    static let parityTolerance = 1e-4

    // MARK: parity with diffusers

    /// Two levels, mid-block attention, quant convs, 32×32 images.
    func testParitySDTiny() throws { try checkParity("sd_tiny") }
    /// Three levels, 2 resnets per encoder block, 25×38 images (odd halves), no quant_conv, no
    /// mid-block attention, out_channels ≠ in_channels.
    func testParityThreeLevelsOddSize() throws { try checkParity("three_level") }
    /// Weights only in diffusion_pytorch_model.fp16.safetensors, no post_quant_conv, act_fn "swish".
    func testParityFP16Variant() throws { try checkParity("fp16_variant") }
    /// One level (no up/downsampling), attention weights under the legacy query/key/value/proj_attn names.
    func testParityLegacyAttentionKeys() throws { try checkParity("legacy_keys") }

    /// Loads `<case>/vae` and checks the posterior (mean, logvar, std, var, kl), a sample for given
    /// noise, decode(z), forward(x), then the gradients of
    /// Σ decode(mean + std·noise)·grad_out + ½ Σ kl with respect to x and a few parameters, and of
    /// Σ decode(z)·grad_dec with respect to z.
    func checkParity(_ name: String, file: StaticString = #filePath, line: UInt = #line) throws {
        let dir = Self.fixtures.appendingPathComponent(name)
        let vae = try AutoencoderKL.load(directory: dir.appendingPathComponent("vae"))
        let io = try loadSafeTensors(dir.appendingPathComponent("io.safetensors").path)
        func get(_ key: String) throws -> Tensor { try XCTUnwrap(io[key], "\(name)/io.safetensors lacks \(key)") }
        func close(_ a: Tensor, _ key: String) throws {
            assertParityClose(a, try get(key), Self.parityTolerance, "\(name) \(key)", file: file, line: line)
        }

        let x = try get("x")
        try withNoGrad {
            let posterior = vae.encode(x)
            try close(posterior.mean, "mean")
            try close(posterior.logvar, "logvar")
            try close(posterior.std, "std")
            try close(posterior.var, "var")
            try close(posterior.kl(), "kl")
            try close(posterior.sample(noise: try get("noise")), "sample")
            try close(vae.decode(try get("z")), "dec")
            try close(vae(x), "forward")
        }

        // Gradients through encode → sample → decode, plus the KL term.
        let xLeaf = x.detach().requiringGrad()
        let posterior = vae.encode(xLeaf)
        let decoded = vae.decode(posterior.sample(noise: try get("noise")))
        let loss = (decoded * (try get("grad_out"))).sum() + posterior.kl().sum() * 0.5
        loss.backward()
        try close(try XCTUnwrap(xLeaf.grad, "\(name): no gradient reached x"), "grad.x")
        let params = Dictionary(uniqueKeysWithValues: vae.namedParameters())
        var checked = 0
        for (key, _) in io where key.hasPrefix("grad.") && key != "grad.x" && key != "grad.z" {
            let param = String(key.dropFirst(5))
            let p = try XCTUnwrap(params[param], "\(name): the model has no parameter \(param)")
            try close(try XCTUnwrap(p.grad, "\(name): no gradient reached \(param)"), key)
            checked += 1
        }
        XCTAssertGreaterThanOrEqual(checked, 10, "\(name): too few parameter gradients in the fixture", file: file, line: line)

        // The decoder alone, with respect to its input.
        vae.zeroGrad()
        let zLeaf = try get("z").detach().requiringGrad()
        vae.decode(zLeaf).backward(try get("grad_dec"))
        try close(try XCTUnwrap(zLeaf.grad, "\(name): no gradient reached z"), "grad.z")
    }

    /// DiagonalGaussianDistribution on parameters whose log-variances lie beyond both clamp limits
    /// (-45 → -30, 27.5 → 20): mean, logvar, std, var, mode, kl, kl to another distribution, nll.
    func testDistributionMatchesDiffusers() throws {
        let t = try loadSafeTensors(Self.fixtures.appendingPathComponent("distribution.safetensors").path)
        func get(_ key: String) throws -> Tensor { try XCTUnwrap(t[key], "distribution.safetensors lacks \(key)") }
        let d = DiagonalGaussianDistribution(parameters: try get("params"))
        let other = DiagonalGaussianDistribution(parameters: try get("other_params"))
        let tol = Self.parityTolerance
        assertParityClose(d.mean, try get("mean"), tol, "mean")
        assertParityClose(d.logvar, try get("logvar"), tol, "logvar")
        XCTAssertEqual(d.logvar.min().item(), -30)
        XCTAssertEqual(d.logvar.max().item(), 20)
        assertParityClose(d.std, try get("std"), tol, "std")
        assertParityClose(d.var, try get("var"), tol, "var")
        assertParityClose(d.mode(), try get("mode"), tol, "mode")
        assertParityClose(d.kl(), try get("kl"), tol, "kl")
        assertParityClose(d.kl(other), try get("kl_other"), tol, "kl_other")
        assertParityClose(d.nll(try get("nll_sample")), try get("nll"), tol, "nll")

        let fixed = DiagonalGaussianDistribution(parameters: try get("params"), deterministic: true)
        XCTAssertEqual(fixed.std.abs().max().item(), 0)
        XCTAssertEqual(fixed.kl().toArray(), [0])
    }

    /// sample(generator:) is mean + std·ε with ε the generator's next standard-normal draw, and it
    /// advances the generator; the sampled forward pass decodes that sample.
    func testSampleWithGeneratorDrawsFromTheGenerator() throws {
        let dir = Self.fixtures.appendingPathComponent("sd_tiny")
        let vae = try AutoencoderKL.load(directory: dir.appendingPathComponent("vae"))
        let x = try XCTUnwrap(loadSafeTensors(dir.appendingPathComponent("io.safetensors").path)["x"])
        withNoGrad {
            let posterior = vae.encode(x)
            var g = PhiloxGenerator(seed: 42)
            let a = posterior.sample(generator: &g)
            let b = posterior.sample(generator: &g)
            var h = PhiloxGenerator(seed: 42)
            let noise = Tensor.randn(posterior.mean.shape, generator: &h)
            XCTAssertEqual(a.toArray(), posterior.sample(noise: noise).toArray())
            XCTAssertNotEqual(a.toArray(), b.toArray(), "the generator must advance")
            var k = PhiloxGenerator(seed: 42)
            XCTAssertEqual(vae(x, samplePosteriorWith: &k).toArray(), vae.decode(a).toArray())
            XCTAssertEqual(vae.downsampleFactor, 2)
            XCTAssertEqual(a.shape, [2, 4, 16, 16])
        }
    }

    // MARK: config

    func testEmptyConfigTakesDiffusersDefaults() throws {
        let config = try JSONDecoder().decode(AutoencoderKLConfig.self, from: Data("{}".utf8))
        XCTAssertEqual(config, AutoencoderKLConfig())
        XCTAssertEqual(config.block_out_channels, [64])
        XCTAssertEqual(config.scaling_factor, 0.18215)
        XCTAssertNil(config.shift_factor)
        XCTAssertTrue(config.use_quant_conv && config.use_post_quant_conv && config.mid_block_add_attention)
        XCTAssertNoThrow(try config.validate())
    }

    /// Reads every field of a fixture config (list sample_size, latents_mean/std, swish), ignores
    /// unknown keys, and round-trips through JSON with explicit nulls.
    func testConfigFieldsUnknownKeysAndRoundTrip() throws {
        var json = try configJSON("fp16_variant")
        json["_some_future_key"] = 1
        json["some_unknown_key"] = "x"
        let config = try JSONDecoder().decode(AutoencoderKLConfig.self, from: JSONSerialization.data(withJSONObject: json))
        XCTAssertEqual(config.sample_size, .list([24, 24]))
        XCTAssertEqual(config.latents_mean, [0.1, -0.2, 0.3, 0.0])
        XCTAssertEqual(config.latents_std, [1.1, 0.9, 1.0, 1.2])
        XCTAssertEqual(config.act_fn, "swish")
        XCTAssertFalse(config.use_post_quant_conv)
        XCTAssertNoThrow(try config.validate())
        let three = try AutoencoderKLConfig.load(
            from: Self.fixtures.appendingPathComponent("three_level/vae/config.json"))
        XCTAssertEqual(three.scaling_factor, 0.13025)
        XCTAssertEqual(three.shift_factor, 0.0609)
        XCTAssertFalse(three.force_upcast)
        for c in [config, three, AutoencoderKLConfig()] {
            let again = try JSONDecoder().decode(AutoencoderKLConfig.self, from: JSONEncoder().encode(c))
            XCTAssertEqual(again, c)
        }
        // An explicit null reads as None, not as the default.
        var nulls = try configJSON("three_level")
        nulls["shift_factor"] = NSNull()
        let n = try JSONDecoder().decode(AutoencoderKLConfig.self, from: JSONSerialization.data(withJSONObject: nulls))
        XCTAssertNil(n.shift_factor)
    }

    /// Every unimplemented option (and every inconsistent value) is refused with an error naming the field.
    func testUnsupportedFieldsAreRefusedByName() throws {
        let base = try configJSON("sd_tiny")
        // (field set, value, field the error must name)
        let cases: [(String, Any, String)] = [
            ("down_block_types", ["DownBlock2D", "DownEncoderBlock2D"], "down_block_types"),
            ("down_block_types", ["DownEncoderBlock2D", "AttnDownEncoderBlock2D"], "down_block_types"),
            ("down_block_types", ["DownEncoderBlock2D"], "down_block_types"),
            ("up_block_types", ["UpDecoderBlock2D", "AttnUpDecoderBlock2D"], "up_block_types"),
            ("up_block_types", ["UpDecoderBlock2D", "UpDecoderBlock2D", "UpDecoderBlock2D"], "up_block_types"),
            ("act_fn", "gelu", "act_fn"), ("act_fn", "mish", "act_fn"),
            ("norm_num_groups", 3, "norm_num_groups"), ("norm_num_groups", 0, "norm_num_groups"),
            ("block_out_channels", [Int](), "block_out_channels"), ("block_out_channels", [8, 0], "block_out_channels"),
            ("block_out_channels", [8, 16, 16], "down_block_types"),
            ("layers_per_block", 0, "layers_per_block"), ("layers_per_block", [1, 2], "layers_per_block"),
            ("latent_channels", 0, "latent_channels"), ("in_channels", 0, "in_channels"),
            ("out_channels", -1, "out_channels"), ("scaling_factor", 0, "scaling_factor"),
            ("latents_mean", [0.1], "latents_mean"), ("latents_std", [1, 1, 1, -1], "latents_std"),
            ("sample_size", 0, "sample_size"), ("sample_size", [Int](), "sample_size"),
            ("in_channels", "three", "in_channels"), ("use_quant_conv", "yes", "use_quant_conv"),
        ]
        for (field, value, expected) in cases {
            var json = base
            json[field] = value
            let data = try JSONSerialization.data(withJSONObject: json)
            do {
                let config = try JSONDecoder().decode(AutoencoderKLConfig.self, from: data)
                _ = try AutoencoderKL(config: config)
                XCTFail("\(field) = \(value) was accepted")
            } catch let error as AutoencoderKLConfigError {
                XCTAssertEqual(error.field, expected, "\(field) = \(value): \(error)")
                XCTAssertTrue(error.description.contains("`\(expected)`"), error.description)
            } catch DecodingError.typeMismatch(_, let context) {
                XCTAssertEqual(context.codingPath.first?.stringValue, expected, "\(field) = \(value)")
            }
        }
    }

    /// Through `load(directory:)` the error names the config file and the field.
    func testLoadNamesConfigFileAndField() throws {
        let dir = try temporaryCopy(of: "sd_tiny")
        var json = try configJSON("sd_tiny")
        json["down_block_types"] = ["DownBlock2D", "DownEncoderBlock2D"]
        try JSONSerialization.data(withJSONObject: json).write(to: dir.appendingPathComponent("config.json"))
        XCTAssertThrowsError(try AutoencoderKL.load(directory: dir)) { error in
            let text = "\(error)"
            XCTAssertTrue(text.contains(dir.appendingPathComponent("config.json").path)
                          && text.contains("`down_block_types`") && text.contains("DownBlock2D"), text)
        }
        json = try configJSON("sd_tiny")
        json["act_fn"] = "gelu"
        try JSONSerialization.data(withJSONObject: json).write(to: dir.appendingPathComponent("config.json"))
        XCTAssertThrowsError(try AutoencoderKL.load(directory: dir)) { error in
            let text = "\(error)"
            XCTAssertTrue(text.contains("config.json") && text.contains("`act_fn`") && text.contains("gelu"), text)
        }
        json["act_fn"] = "silu"
        json["force_upcast"] = "no"
        try JSONSerialization.data(withJSONObject: json).write(to: dir.appendingPathComponent("config.json"))
        XCTAssertThrowsError(try AutoencoderKL.load(directory: dir)) { error in
            let text = "\(error)"
            XCTAssertTrue(text.contains("config.json") && text.contains("force_upcast"), text)
        }
    }

    // MARK: strict loading

    func testStrictLoadNamesMissingUnexpectedAndMismatchedKeys() throws {
        let dir = try temporaryCopy(of: "sd_tiny")
        let weightsURL = dir.appendingPathComponent("diffusion_pytorch_model.safetensors")
        var weights = try loadSafeTensors(weightsURL.path)
        XCTAssertNotNil(weights.removeValue(forKey: "decoder.up_blocks.1.resnets.1.conv1.weight"))
        weights["encoder.mid_block.attentions.1.to_q.weight"] = Tensor(zeros: [16, 16])
        weights["quant_conv.bias"] = Tensor(zeros: [4])
        try saveSafeTensors(weights, to: weightsURL.path)
        XCTAssertThrowsError(try AutoencoderKL.load(directory: dir)) { error in
            guard let e = error as? DiffusersLoadError, let report = e.report else {
                return XCTFail("expected a DiffusersLoadError with a report, got \(error)")
            }
            XCTAssertEqual(report.missingKeys, ["decoder.up_blocks.1.resnets.1.conv1.weight"])
            XCTAssertEqual(report.unexpectedKeys, ["encoder.mid_block.attentions.1.to_q.weight"])
            XCTAssertEqual(report.shapeMismatches.map(\.key), ["quant_conv.bias"])
            let text = e.description
            for key in ["decoder.up_blocks.1.resnets.1.conv1.weight", "encoder.mid_block.attentions.1.to_q.weight",
                        "quant_conv.bias", "AutoencoderKL", "diffusion_pytorch_model.safetensors"] {
                XCTAssertTrue(text.contains(key), "message does not name \(key): \(text)")
            }
        }
    }

    /// The model built from each fixture config has exactly diffusers' keys (strict load of every
    /// fixture), and without mid-block attention there are no attention keys at all.
    func testKeysFollowTheConfig() throws {
        let three = try AutoencoderKL.load(directory: Self.fixtures.appendingPathComponent("three_level/vae"))
        let keys = three.stateKeys()
        XCTAssertFalse(keys.contains { $0.contains("attentions") })
        XCTAssertFalse(keys.contains { $0.hasPrefix("quant_conv") })
        XCTAssertTrue(keys.contains("post_quant_conv.weight"))
        XCTAssertEqual(keys.filter { $0.hasPrefix("decoder.up_blocks.0.resnets.") && $0.hasSuffix("conv1.weight") }.count, 3)
        XCTAssertTrue(keys.contains("encoder.down_blocks.1.downsamplers.0.conv.weight"))
        XCTAssertFalse(keys.contains { $0.hasPrefix("encoder.down_blocks.2.downsamplers") })
        XCTAssertFalse(keys.contains { $0.hasPrefix("decoder.up_blocks.2.upsamplers") })
        XCTAssertEqual(three.encoder.conv_out.outChannels, 6)  // double_z: 2 × latent_channels
        let tiny = try AutoencoderKL.load(directory: Self.fixtures.appendingPathComponent("sd_tiny/vae"))
        XCTAssertTrue(tiny.stateKeys().contains("decoder.mid_block.attentions.0.to_out.0.weight"))
        XCTAssertTrue(tiny.stateKeys().contains("encoder.mid_block.attentions.0.group_norm.bias"))
        XCTAssertFalse(tiny.isTraining, "load returns the model in eval mode")
    }

    /// The fp16-only folder is found without naming the variant and with it; weights become float32
    /// (or the requested dtype); an absent variant is an error naming what was looked for.
    func testFP16VariantIsFound() throws {
        let dir = Self.fixtures.appendingPathComponent("fp16_variant").appendingPathComponent("vae")
        XCTAssertFalse(FileManager.default.fileExists(atPath: dir.appendingPathComponent("diffusion_pytorch_model.safetensors").path))
        let a = try AutoencoderKL.load(directory: dir)
        let b = try AutoencoderKL.load(directory: dir, variant: "fp16")
        XCTAssertEqual(a.encoder.conv_in.weight.dtype, .float32)
        XCTAssertEqual(a.encoder.conv_in.weight.toArray(), b.encoder.conv_in.weight.toArray())
        let c = try AutoencoderKL.load(directory: dir, dtype: .float64)
        XCTAssertEqual(c.decoder.conv_out.weight.dtype, .float64)
        XCTAssertEqual(c.decoder.conv_out.weight.toArray(), a.decoder.conv_out.weight.toArray())
        XCTAssertThrowsError(try AutoencoderKL.load(directory: dir, variant: "bf16")) { error in
            XCTAssertTrue("\(error)".contains("diffusion_pytorch_model.bf16.safetensors"), "\(error)")
        }
    }

    // MARK: gradient checkpointing

    /// Checkpointed and plain forward/backward agree (relError ≤ 1e-6 on the output, the input
    /// gradient and every parameter gradient, on the scale of the largest parameter gradient).
    func testGradientCheckpointingMatchesPlainPath() throws {
        let dir = Self.fixtures.appendingPathComponent("three_level")
        let vae = try AutoencoderKL.load(directory: dir.appendingPathComponent("vae"))
        let io = try loadSafeTensors(dir.appendingPathComponent("io.safetensors").path)
        func run(_ checkpointing: Bool) throws -> (out: Tensor, grads: [String: Tensor]) {
            vae.zeroGrad()
            vae.gradientCheckpointing = checkpointing
            let x = try XCTUnwrap(io["x"]).detach().requiringGrad()
            let posterior = vae.encode(x)
            let out = vae.decode(posterior.sample(noise: try XCTUnwrap(io["noise"])))
            out.backward(try XCTUnwrap(io["grad_out"]))
            var grads = ["<x>": try XCTUnwrap(x.grad)]
            for (key, p) in vae.namedParameters() { grads[key] = p.grad }
            return (out.detach(), grads)
        }
        let plain = try run(false)
        let checkpointed = try run(true)
        vae.gradientCheckpointing = false
        XCTAssertTrue(checkpointed.grads.count == plain.grads.count && plain.grads.count == vae.parameters().count + 1,
                      "some parameter got no gradient")
        assertParityClose(checkpointed.out, plain.out, 1e-6, "checkpointed output")
        assertParityClose(try XCTUnwrap(checkpointed.grads["<x>"]), try XCTUnwrap(plain.grads["<x>"]), 1e-6, "checkpointed grad x")
        let scale = plain.grads.filter { $0.key != "<x>" }.map { $0.value.abs().max().item() }.max() ?? 0
        for (key, g) in plain.grads where key != "<x>" {
            let c = try XCTUnwrap(checkpointed.grads[key], key)
            let diff = (c - g).abs().max().item()
            XCTAssertLessThanOrEqual(diff, 1e-6 * scale, "checkpointed grad \(key): max abs diff \(diff), scale \(scale)")
        }
    }

    // MARK: helpers

    private func configJSON(_ name: String) throws -> [String: Any] {
        let url = Self.fixtures.appendingPathComponent(name).appendingPathComponent("vae").appendingPathComponent("config.json")
        return try XCTUnwrap(JSONSerialization.jsonObject(with: Data(contentsOf: url)) as? [String: Any])
    }

    /// A writable copy of a fixture's vae/ folder, removed after the test.
    private func temporaryCopy(of name: String) throws -> URL {
        let source = Self.fixtures.appendingPathComponent(name).appendingPathComponent("vae")
        let root = FileManager.default.temporaryDirectory.appendingPathComponent("vae-tests-\(UUID().uuidString)")
        try FileManager.default.createDirectory(at: root, withIntermediateDirectories: true)
        addTeardownBlock { try? FileManager.default.removeItem(at: root) }
        let dir = root.appendingPathComponent("vae")
        try FileManager.default.copyItem(at: source, to: dir)
        return dir
    }
}
