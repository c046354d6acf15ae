// LoRA against diffusers/PEFT: files written by diffusers' own saver load here and reproduce
// PEFT's UNet output, before and after merging; our saver writes what diffusers writes; injection
// selects the layers PEFT selects; gradients match finite differences.
// Fixtures: Fixtures/make_lora_fixtures.py (a tiny random diffusers UNet; cases "r4" = TRL's
// default LoRA saved as TRL saves it, "r2_alpha8_conv" = rank 2, alpha 8 on attention projections,
// resnet conv1 (3×3) and proj_in (1×1 conv), saved with PEFT keys and adapter metadata).
import Foundation
import XCTest
@testable import RLAlgorithms

final class LoRATests: XCTestCase {
    static let fixtures = URL(fileURLWithPath: #filePath).deletingLastPathComponent()
        .appendingPathComponent("Fixtures/lora")

    func caseDir(_ name: String) -> URL { Self.fixtures.appendingPathComponent(name) }

    func baseUNet() throws -> UNet2DConditionModel {
        try UNet2DConditionModel.load(directory: Self.fixtures.appendingPathComponent("unet"))
    }

    func tensors(_ path: String) throws -> [String: Tensor] {
        try loadSafeTensors(Self.fixtures.appendingPathComponent(path).path)
    }

    /// The UNet output for the fixture inputs.
    func run(_ unet: UNet2DConditionModel) throws -> Tensor {
        let io = try tensors("io.safetensors")
        return withNoGrad {
            unet(sample: io["sample"]!, timestep: io["timestep"]!, encoderHiddenStates: io["encoder_hidden_states"]!)
        }
    }

    func assertClose(_ actual: Tensor, _ expected: Tensor, _ what: String, tolerance: Double = 1e-4,
                     file: StaticString = #filePath, line: UInt = #line) {
        XCTAssertEqual(actual.shape, expected.shape, what, file: file, line: line)
        let a = actual.toArray(), e = expected.toArray()
        let diff = zip(a, e).map { abs($0 - $1) }.max() ?? .nan
        let scale = e.map(abs).max() ?? .nan
        XCTAssertLessThanOrEqual(diff / scale, tolerance, "\(what): max|Δ|/max|ref| = \(diff / scale)", file: file, line: line)
    }

    func temporaryDirectory() throws -> URL {
        let dir = FileManager.default.temporaryDirectory.appendingPathComponent("lora-tests-\(UUID().uuidString)")
        try FileManager.default.createDirectory(at: dir, withIntermediateDirectories: true)
        addTeardownBlock { try? FileManager.default.removeItem(at: dir) }
        return dir
    }

    // MARK: parity with diffusers / PEFT

    /// Load diffusers' file → PEFT's output; merge → fuse_lora's output; unmerge → the base output.
    func checkCase(_ name: String, rank: Int, alpha: Double, layers: Int, convLayers: Int,
                   file: StaticString = #filePath, line: UInt = #line) throws {
        let unet = try baseUNet()
        let io = try tensors("io.safetensors"), expected = try tensors("\(name)/io.safetensors")
        let lora = try LoRANetwork.load(contentsOf: caseDir(name), into: unet)
        XCTAssertEqual(lora.entries.count, layers, file: file, line: line)
        XCTAssertEqual(lora.entries.filter { $0.delta is LoRAConv2d }.count, convLayers, file: file, line: line)
        XCTAssertTrue(lora.entries.allSatisfy { $0.delta.rank == rank && $0.delta.alpha == alpha }, file: file, line: line)

        assertClose(try run(unet), expected["out_lora"]!, "\(name): output with the LoRA", file: file, line: line)
        lora.merge()
        XCTAssertTrue(unet.namedModules().allSatisfy { ($0.1 as? Linear)?.deltas.isEmpty ?? true })
        assertClose(try run(unet), expected["out_fused"]!, "\(name): output after merge", file: file, line: line)
        lora.unmerge()
        assertClose(try run(unet), expected["out_lora"]!, "\(name): output after unmerge (LoRA attached)", file: file, line: line)
        lora.remove()
        assertClose(try run(unet), io["out_base"]!, "\(name): output after unmerge and remove", file: file, line: line)
    }

    /// `castWeight` (the mixed-precision cast of a LoRA weight on a GPU, exercised here on the CPU):
    /// the values of `to(_:)`, reused while the weight is unchanged, converted again after a write
    /// (`assign`, as an optimizer step on a GPU writes), and the gradient cast back to the weight's
    /// dtype each call.
    func testWeightCastIsReusedUntilTheWeightIsWritten() {
        let weight = Tensor.randn([4, 6], seed: 3).requiringGrad()
        let first = castWeight(weight, .float64)
        XCTAssertEqual(first.dtype, .float64)
        XCTAssertEqual(first.toArray(), weight.to(.float64).toArray())
        XCTAssertTrue(castWeight(weight, .float64).storage === first.storage, "unchanged weight: the same conversion")
        withNoGrad { weight.assign(weight * 2) }
        let second = castWeight(weight, .float64)
        XCTAssertFalse(second.storage === first.storage, "a written weight is converted again")
        XCTAssertEqual(second.toArray(), weight.to(.float64).toArray())
        // Two calls in one graph: each records its cast, and both gradients reach the float32 weight.
        let g1 = Tensor.randn([4, 6], seed: 4, dtype: .float64), g2 = Tensor.randn([4, 6], seed: 5, dtype: .float64)
        ((castWeight(weight, .float64) * g1).sum() + (castWeight(weight, .float64) * g2).sum()).backward()
        XCTAssertEqual(weight.grad?.dtype, .float32)
        let expected = zip(g1.toArray(), g2.toArray()).map { Double(Float($0) + Float($1)) }
        XCTAssertEqual(weight.grad?.toArray() ?? [], expected)
    }

    func testTRLDefaultLoRAFileMatchesPEFT() throws {
        try checkCase("r4", rank: 4, alpha: 4, layers: 32, convLayers: 0)
    }

    func testAlphaAndConvolutionLoRAFileMatchesPEFT() throws {
        try checkCase("r2_alpha8_conv", rank: 2, alpha: 8, layers: 44, convLayers: 12)
    }

    /// Merge, then take the LoRA off without unmerging: the base output again after unmerge.
    func testMergeUnmergeRestoresBaseOutput() throws {
        let unet = try baseUNet()
        let base = try tensors("io.safetensors")["out_base"]!
        let lora = try LoRANetwork.load(contentsOf: caseDir("r2_alpha8_conv"), into: unet)
        lora.merge()
        lora.unmerge()
        lora.remove()
        assertClose(try run(unet), base, "base output after merge/unmerge/remove")
        XCTAssertEqual(lora.state, .removed)
    }

    /// The files the fixture script wrote in our scheme (and proved diffusers loads) load here too.
    func testOurSchemeFilesFromPythonLoad() throws {
        for name in ["r4", "r2_alpha8_conv"] {
            let unet = try baseUNet()
            let lora = try LoRANetwork.load(contentsOf: caseDir("\(name)/ours"), into: unet)
            XCTAssertFalse(lora.entries.isEmpty)
            assertClose(try run(unet), try tensors("\(name)/io.safetensors")["out_lora"]!, "\(name)/ours")
        }
    }

    // MARK: the file we write

    struct FileSummary: Equatable {
        var entries: [String: String]   // key → "dtype shape"
        var adapter: NSDictionary?
    }

    func summary(_ url: URL, normalizeKeys: Bool = false) throws -> FileSummary {
        let file = try SafeTensorsFile(path: url.path)
        var entries: [String: String] = [:]
        for key in file.keys {
            let info = try file.info(key)
            var name = key
            if normalizeKeys {
                name = name.replacingOccurrences(of: ".lora_A.weight", with: ".lora.down.weight")
                    .replacingOccurrences(of: ".lora_B.weight", with: ".lora.up.weight")
            }
            entries[name] = "\(info.dtype) \(info.shape)"
        }
        let adapter = try file.metadata["lora_adapter_metadata"].map {
            try JSONSerialization.jsonObject(with: Data($0.utf8)) as! NSDictionary
        }
        return FileSummary(entries: entries, adapter: adapter)
    }

    /// For TRL's configuration our file has exactly the keys, shapes and dtypes of TRL's/diffusers'
    /// file, and the metadata of the scheme the fixture script proved diffusers loads.
    func testSavedFileHasDiffusersKeysShapesAndDTypes() throws {
        for name in ["r4", "r2_alpha8_conv"] {
            let unet = try baseUNet()
            let lora = try LoRANetwork.load(contentsOf: caseDir(name), into: unet)
            let saved = try lora.save(to: try temporaryDirectory())
            XCTAssertEqual(saved.lastPathComponent, "pytorch_lora_weights.safetensors")
            let ours = try summary(saved)
            let diffusers = try summary(caseDir(name).appendingPathComponent(LoRANetwork.weightName),
                                        normalizeKeys: name != "r4")
            XCTAssertEqual(ours.entries, diffusers.entries, name)
            XCTAssertEqual(ours, try summary(caseDir("\(name)/ours").appendingPathComponent(LoRANetwork.weightName)), name)
            XCTAssertEqual(try SafeTensorsFile(path: saved.path).metadata["format"], "pt")

            // Values round-trip.
            let original = try loadSafeTensors(caseDir("\(name)/ours").appendingPathComponent(LoRANetwork.weightName).path)
            let written = try loadSafeTensors(saved.path)
            for (key, value) in original { XCTAssertEqual(written[key]?.toArray(), value.toArray(), key) }
        }
    }

    /// Loading into an existing network replaces values only; a file of other layers is refused.
    func testLoadValuesIntoInjectedNetwork() throws {
        let unet = try baseUNet()
        let lora = try LoRANetwork.inject(into: unet, config: LoRAConfig(), seed: 7)
        try lora.load(contentsOf: caseDir("r4"))
        assertClose(try run(unet), try tensors("r4/io.safetensors")["out_lora"]!, "values loaded into an injected network")
        XCTAssertThrowsError(try lora.load(contentsOf: caseDir("r2_alpha8_conv"))) { error in
            XCTAssertTrue("\(error)".contains("proj_in"), "\(error)")
        }
    }

    // MARK: injection

    /// Default targets select the layers PEFT selected for TRL's LoRA (the fixture file's modules);
    /// names plus conv targets those of the second case. The base is frozen, B = 0 leaves the output
    /// bit-identical, and A has PEFT's Gaussian std 1/r.
    func testInjectionSelectsPEFTsLayers() throws {
        func modules(_ name: String) throws -> Set<String> {
            let keys = try SafeTensorsFile(path: caseDir(name).appendingPathComponent(LoRANetwork.weightName).path).keys
            return Set(keys.map { key in
                var k = String(key.dropFirst("unet.".count))
                for suffix in [".lora.down.weight", ".lora.up.weight", ".lora_A.weight", ".lora_B.weight"] where k.hasSuffix(suffix) {
                    k.removeLast(suffix.count)
                }
                return k
            })
        }
        let unet = try baseUNet()
        let before = try run(unet).toArray()
        let lora = try LoRANetwork.inject(into: unet, config: LoRAConfig(), seed: 0)
        XCTAssertEqual(Set(lora.paths), try modules("r4"))
        XCTAssertEqual(unet.trainableParameters().count, 2 * lora.paths.count)
        XCTAssertEqual(Set(unet.trainableParameters().map(ObjectIdentifier.init)), Set(lora.parameters.map(ObjectIdentifier.init)))
        XCTAssertTrue(try run(unet).toArray() == before, "B = 0 changes nothing, bit for bit")

        let downs = lora.entries.flatMap { $0.delta.downWeight.toArray() }
        let mean = downs.reduce(0, +) / Double(downs.count)
        let std = (downs.map { ($0 - mean) * ($0 - mean) }.reduce(0, +) / Double(downs.count)).squareRoot()
        XCTAssertEqual(std, 1.0 / 4, accuracy: 0.1 / 4, "Gaussian A has std 1/r (\(downs.count) draws)")
        XCTAssertTrue(lora.entries.allSatisfy { $0.delta.upWeight.toArray().allSatisfy { $0 == 0 } })

        let other = try baseUNet()
        var config = LoRAConfig(rank: 2, alpha: 8, targetModules: ["to_q", "to_k", "to_v", "to_out.0", "conv1", "proj_in"],
                                initialization: .kaiming)
        let second = try LoRANetwork.inject(into: other, config: config, seed: 1)
        XCTAssertEqual(Set(second.paths), try modules("r2_alpha8_conv"))
        for entry in second.entries {   // kaiming-uniform: |A| ≤ 1/√fan_in
            let w = entry.delta.downWeight
            let bound = 1 / Double(w.numel / w.shape[0]).squareRoot()
            XCTAssertLessThanOrEqual(w.toArray().map(abs).max()!, bound, entry.path)
        }

        // Regex: full match only; union with names.
        config = LoRAConfig(targetModules: [], targetRegex: #"(down|up)_blocks\.\d+\.attentions\.\d+\.proj_in"#)
        XCTAssertEqual(try LoRANetwork.inject(into: try baseUNet(), config: config).paths,
                       ["down_blocks.0.attentions.0.proj_in", "up_blocks.1.attentions.0.proj_in", "up_blocks.1.attentions.1.proj_in"])
        config = LoRAConfig(targetModules: ["conv_in"], targetRegex: #"mid_block\.resnets\.0\.conv1"#)
        XCTAssertEqual(try LoRANetwork.inject(into: try baseUNet(), config: config).paths, ["conv_in", "mid_block.resnets.0.conv1"])
        // freezeBase: false keeps the base trainable.
        let unfrozen = try baseUNet()
        let partial = try LoRANetwork.inject(into: unfrozen, config: LoRAConfig(), freezeBase: false)
        XCTAssertEqual(unfrozen.trainableParameters().count, unfrozen.parameters().count)
        XCTAssertEqual(partial.parameters.count, 64)
    }

    func testInjectionErrorsNameThePatternAndChangeNothing() throws {
        func expectError(_ config: LoRAConfig, _ subject: String, into unet: UNet2DConditionModel? = nil,
                         line: UInt = #line) throws {
            let model = try unet ?? baseUNet()
            let before = model.trainableParameters().count
            XCTAssertThrowsError(try LoRANetwork.inject(into: model, config: config), line: line) { error in
                XCTAssertEqual((error as? LoRAError)?.subject, subject, "\(error)", line: line)
            }
            XCTAssertEqual(model.trainableParameters().count, before, "nothing frozen", line: line)
        }
        try expectError(LoRAConfig(targetModules: ["to_q", "to_qq"]), "to_qq")
        try expectError(LoRAConfig(targetModules: ["q"]), "q")     // a suffix must be a whole segment
        try expectError(LoRAConfig(targetModules: [], targetRegex: "to_q"), "to_q")   // regex: whole path
        try expectError(LoRAConfig(targetModules: ["attn1"]), "down_blocks.0.attentions.0.transformer_blocks.0.attn1")
        try expectError(LoRAConfig(targetModules: [], targetRegex: "(unclosed"), "targetRegex")
        try expectError(LoRAConfig(rank: 0), "rank")
        try expectError(LoRAConfig(alpha: .nan), "alpha")
        let unet = try baseUNet()
        _ = try LoRANetwork.inject(into: unet, config: LoRAConfig(targetModules: ["to_k"]))
        try expectError(LoRAConfig(targetModules: ["attn2.to_k"]), "down_blocks.0.attentions.0.transformer_blocks.0.attn2.to_k", into: unet)
        try expectError(LoRAConfig(targetModules: ["down"]), "down", into: unet)   // the deltas' own layers are no targets
    }

    // MARK: file errors and accepted forms

    /// Writes `tensors` (with optional metadata) as a LoRA file in a fresh directory.
    func write(_ tensors: [String: Tensor], metadata: [String: String]? = nil) throws -> URL {
        let url = try temporaryDirectory().appendingPathComponent(LoRANetwork.weightName)
        try saveSafeTensors(tensors, metadata: metadata, to: url.path)
        return url
    }

    func testAcceptedKeyForms() throws {
        let r4 = try tensors("r4/pytorch_lora_weights.safetensors")
        let expected = try tensors("r4/io.safetensors")["out_lora"]!
        let forms: [String: [String: Tensor]] = [
            "no prefix": Dictionary(uniqueKeysWithValues: r4.map { (String($0.key.dropFirst(5)), $0.value) }),
            "PEFT lora_A/lora_B": Dictionary(uniqueKeysWithValues: r4.map {
                ($0.key.replacingOccurrences(of: ".lora.down.", with: ".lora_A.").replacingOccurrences(of: ".lora.up.", with: ".lora_B."), $0.value)
            }),
        ]
        for (form, weights) in forms {
            let unet = try baseUNet()
            _ = try LoRANetwork.load(contentsOf: try write(weights), into: unet)
            assertClose(try run(unet), expected, form)
        }
        // PEFT form without prefix, from diffusers' second file.
        let r2 = try tensors("r2_alpha8_conv/pytorch_lora_weights.safetensors")
        let meta = try SafeTensorsFile(path: caseDir("r2_alpha8_conv").appendingPathComponent(LoRANetwork.weightName).path).metadata
        let unet = try baseUNet()
        let lora = try LoRANetwork.load(contentsOf: try write(r2, metadata: meta), into: unet)
        XCTAssertTrue(lora.entries.allSatisfy { $0.delta.alpha == 8 })
        // Without the metadata, alpha = r (scale 1), as diffusers reads such a file.
        let bare = try LoRANetwork.load(contentsOf: try write(r2), into: try baseUNet())
        XCTAssertTrue(bare.entries.allSatisfy { $0.delta.alpha == 2 && $0.delta.scale == 1 })
    }

    func testFileErrorsNameTheKey() throws {
        let r4 = try tensors("r4/pytorch_lora_weights.safetensors")
        let q = "unet.down_blocks.0.attentions.0.transformer_blocks.0.attn1.to_q"
        func expectError(_ weights: [String: Tensor], _ key: String, _ fragment: String, line: UInt = #line) throws {
            let url = try write(weights)
            let unet = try baseUNet()
            XCTAssertThrowsError(try LoRANetwork.load(contentsOf: url, into: unet), line: line) { error in
                let e = error as? LoRAError
                XCTAssertEqual(e?.subject, key, "\(error)", line: line)
                XCTAssertEqual(e?.file, url.path, line: line)
                XCTAssertTrue("\(error)".contains(fragment), "\(error)", line: line)
            }
            XCTAssertTrue(unet.namedModules().allSatisfy { ($0.1 as? Linear)?.deltas.isEmpty ?? true }, "nothing attached", line: line)
        }
        var w = r4
        w["unet.down_blocks.0.attentions.0.transformer_blocks.0.attn1.to_q.alpha"] = Tensor(scalar: 4)
        try expectError(w, "unet.down_blocks.0.attentions.0.transformer_blocks.0.attn1.to_q.alpha", "not a LoRA weight key")
        w = r4
        w["\(q).lora.down.weight"] = Tensor.zeros([4, 9])
        try expectError(w, "\(q).lora.down.weight", "expected [4, 8]")
        w = r4
        w["\(q).lora.up.weight"] = Tensor.zeros([8, 3])
        try expectError(w, "\(q).lora.up.weight", "does not fit the down weight")
        w = r4
        w["unet.down_blocks.7.attentions.0.proj_in.lora.down.weight"] = Tensor.zeros([4, 8])
        w["unet.down_blocks.7.attentions.0.proj_in.lora.up.weight"] = Tensor.zeros([8, 4])
        try expectError(w, "unet.down_blocks.7.attentions.0.proj_in.lora.down.weight", "no Linear or Conv2d module")
        w = r4
        w["\(q).lora.up.weight"] = nil
        try expectError(w, "\(q).lora.down.weight", "without an up weight")
        w = r4
        w["text_encoder.text_model.encoder.layers.0.self_attn.q_proj.lora.down.weight"] = Tensor.zeros([4, 8])
        try expectError(w, "text_encoder.text_model.encoder.layers.0.self_attn.q_proj.lora.down.weight", "only unet")
        w = r4
        w["unet.time_embedding.lora.down.weight"] = Tensor.zeros([4, 8])
        w["unet.time_embedding.lora.up.weight"] = Tensor.zeros([8, 4])
        try expectError(w, "unet.time_embedding.lora.down.weight", "no Linear or Conv2d module")
    }

    // MARK: gradients and merge of single layers

    /// Central differences in float64 of sum(layer(x) · w) with respect to x, A and B.
    func checkGradients(_ inputs: [Tensor], _ f: () -> Tensor, file: StaticString = #filePath, line: UInt = #line) {
        let probe = f()
        let w = Tensor.randn(probe.shape, seed: 99, dtype: .float64)
        for t in inputs { t.grad = nil }
        (probe * w).sum().backward()
        let eps = 1e-6
        for (index, t) in inputs.enumerated() {
            let analytic = t.grad!.toArray()
            let p = t.pointer(as: Double.self)
            for i in 0..<t.numel {
                let saved = p[i]
                p[i] = saved + eps
                let plus = withNoGrad { (f() * w).sum().item() }
                p[i] = saved - eps
                let minus = withNoGrad { (f() * w).sum().item() }
                p[i] = saved
                let numeric = (plus - minus) / (2 * eps)
                XCTAssertEqual(analytic[i], numeric, accuracy: 1e-5 + 1e-3 * abs(numeric),
                               "input \(index) element \(i)", file: file, line: line)
            }
        }
    }

    func testLinearGradientsAndMerge() throws {
        let layer = Linear(5, 4, dtype: .float64, seed: 1)
        let delta = LoRALinear(base: layer, rank: 2, alpha: 3, dtype: .float64, seed: 2)
        delta.up.weight.assign(Tensor.randn([4, 2], seed: 3, dtype: .float64))
        layer.deltas.append(delta)
        let x = Tensor.randn([3, 5], seed: 4, dtype: .float64).requiringGrad()
        checkGradients([x, delta.down.weight, delta.up.weight]) { layer(x) }

        // Hand: y = x Wᵀ + b + 1.5 · x Aᵀ Bᵀ, and merging gives W + 1.5 · B A.
        let attached = withNoGrad { layer(x) }.toArray()
        let byHand = withNoGrad { linear(x, weight: layer.weight, bias: layer.bias)
            + x.matmul(delta.down.weight.transposed()).matmul(delta.up.weight.transposed()) * 1.5 }.toArray()
        for (a, b) in zip(attached, byHand) { XCTAssertEqual(a, b, accuracy: 1e-12) }
        let network = LoRANetwork(entries: [.init(path: "layer", layer: layer, delta: delta)])
        network.merge()
        XCTAssertTrue(layer.deltas.isEmpty)
        for (a, b) in zip(withNoGrad { layer(x) }.toArray(), attached) { XCTAssertEqual(a, b, accuracy: 1e-12) }
    }

    func testConvGradientsAndMerge() throws {
        let layer = Conv2d(3, 4, kernelSize: 3, stride: 2, padding: 1, dtype: .float64, seed: 5)
        let delta = LoRAConv2d(base: layer, rank: 2, alpha: 1, initialization: .kaiming, dtype: .float64, seed: 6)
        delta.up.weight.assign(Tensor.randn([4, 2, 1, 1], seed: 7, dtype: .float64))
        layer.deltas.append(delta)
        let x = Tensor.randn([2, 3, 5, 6], seed: 8, dtype: .float64).requiringGrad()
        checkGradients([x, delta.down.weight, delta.up.weight]) { layer(x) }

        let attached = withNoGrad { layer(x) }.toArray()
        let network = LoRANetwork(entries: [.init(path: "conv", layer: layer, delta: delta)])
        network.merge()
        for (a, b) in zip(withNoGrad { layer(x) }.toArray(), attached) { XCTAssertEqual(a, b, accuracy: 1e-12) }
        network.unmerge()
        XCTAssertEqual(layer.deltas.count, 1)
    }
}
