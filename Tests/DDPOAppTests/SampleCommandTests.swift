import Foundation
import XCTest
import RLAlgorithms

/// `ddpo sample`, `ddpo tokenize` and `ddpo info` as subprocesses, against diffusers' and
/// transformers' outputs on the same folder.
final class SampleCommandTests: XCTestCase {
    let model = DDPOProcess.fixtureModel.path
    let io = DDPOProcess.repositoryRoot.appendingPathComponent("Tests/DiffusionModelsTests/Fixtures/pipeline/sd1/io.safetensors")
    /// The sd1 case's call (make_pipeline_fixtures.py): prompts, negatives, steps, guidance.
    let sd1Call = ["--prompt", "the cat", "--prompt", "a dog and the cat", "--negative-prompt", "hello world",
                   "--negative_prompt", "", "--steps", "4", "--guidance", "7.5"]

    /// The sd1 fixture, and each of `keys` written alone to `<key>.safetensors` in `dir` (as --latents
    /// and --noise read them).
    func fixtureInputs(_ keys: [String], in dir: URL) throws -> (SafeTensorsFile, [String: URL]) {
        let reference = try SafeTensorsFile(path: io.path)
        var files: [String: URL] = [:]
        for key in keys {
            files[key] = dir.appendingPathComponent("\(key).safetensors")
            try saveSafeTensors([key: try reference.tensor(key)], to: files[key]!.path)
        }
        return (reference, files)
    }

    /// With the initial latents diffusers used, eta 0 and the case's prompts, negatives, steps and
    /// guidance, `ddpo sample` reproduces diffusers' images (make_pipeline_fixtures.py, case sd1).
    func testSampleWithLatentsReproducesDiffusers() throws {
        let dir = try DDPOProcess.temporaryDirectory()
        let (reference, files) = try fixtureInputs(["latents"], in: dir)
        let out = dir.appendingPathComponent("out")
        let result = try DDPOProcess.run(["sample", "--model", model] + sd1Call
                                         + ["--eta", "0", "--latents", files["latents"]!.path, "--out", out.path, "--quiet"])
        XCTAssertEqual(result.status, 0, result.stderr)
        let samples = try SafeTensorsFile(path: out.appendingPathComponent("samples.safetensors").path)
        let images = try samples.tensor("images"), expected = try reference.tensor("eta0.images")
        XCTAssertEqual(images.shape, expected.shape)
        let worst = zip(images.toArray(), expected.toArray()).map { abs($0 - $1) }.max() ?? .infinity
        XCTAssertLessThan(worst, 1e-4, "images differ from diffusers' by up to \(worst)")
        let latents = try samples.tensor("latents"), expectedLatents = try reference.tensor("eta0.latents")
        XCTAssertEqual(latents.shape, expectedLatents.shape)
        let worstLatent = zip(latents.toArray(), expectedLatents.toArray()).map { abs($0 - $1) / max(1, abs($1)) }.max() ?? .infinity
        XCTAssertLessThan(worstLatent, 1e-4)
        // One PNG per prompt, in order, equal to the quantised images.
        let pngs = try FileManager.default.contentsOfDirectory(atPath: out.path).filter { $0.hasSuffix(".png") }.sorted()
        XCTAssertEqual(pngs, ["00_the-cat.png", "01_a-dog-and-the-cat.png"])
        let second = try RGBImage(contentsOf: out.appendingPathComponent(pngs[1]).path)
        let column = expected.slice(0, 1, 2).toArray()
        // Pixel (0, 0) of the red plane: round(x * 255) as the references quantise.
        XCTAssertEqual(Int(second.pixels[0]), Int((column[0] * 255).rounded()), accuracy: 1)
    }

    func testSampleWithSeedIsDeterministicAndHonoursTheSize() throws {
        let dir = try DDPOProcess.temporaryDirectory()
        var outputs: [[Double]] = []
        // The second run first makes a discarded 2-step warm-up call (benchmarks): same images.
        for (name, extra) in [("a", [String]()), ("b", ["--warmup_steps", "2", "--timing"])] {
            let result = try DDPOProcess.run(["sample", "--model", model, "--prompt", "the cat", "--seed", "7", "--steps", "3",
                                              "--eta", "1", "--height", "16", "--width", "24", "--out", dir.appendingPathComponent(name).path, "--quiet"] + extra)
            XCTAssertEqual(result.status, 0, result.stderr)
            if name == "b" { XCTAssertTrue(result.stdout.contains("\"sampling_seconds\""), result.stdout) }
            let images = try SafeTensorsFile(path: dir.appendingPathComponent("\(name)/samples.safetensors").path).tensor("images")
            XCTAssertEqual(images.shape, [1, 3, 16, 24])
            let values = images.toArray()
            XCTAssertTrue(values.allSatisfy { $0 >= 0 && $0 <= 1 })
            outputs.append(values)
        }
        XCTAssertEqual(outputs[0], outputs[1])
        let other = try DDPOProcess.run(["sample", "--model", model, "--prompt", "the cat", "--seed", "8", "--steps", "3",
                                         "--eta", "1", "--height", "16", "--width", "24", "--out", dir.appendingPathComponent("c").path, "--quiet"])
        XCTAssertEqual(other.status, 0, other.stderr)
        let third = try SafeTensorsFile(path: dir.appendingPathComponent("c/samples.safetensors").path).tensor("images").toArray()
        XCTAssertNotEqual(third, outputs[0], "another seed gave the same image")
    }

    func testSampleAppliesATrainedLoRA() throws {
        // A LoRA written by `ddpo train` (a whole-model fine-tune is tested in TrainCommandTests).
        let dir = try DDPOProcess.temporaryDirectory()
        let train = try DDPOProcess.run(["train", "--model", model, "--logdir", dir.path, "--run_name", "r", "--num_epochs", "1",
                                         "--sample_batch_size", "2", "--sample_num_batches_per_epoch", "1", "--sample_num_steps", "3",
                                         "--train_batch_size", "2", "--train_learning_rate", "0.05", "--train_clip_range", "0.5",
                                         "--report_prompts", "0", "--quiet"])
        XCTAssertEqual(train.status, 0, train.stderr)
        var images: [[Double]] = []
        for (name, extra) in [("base", [String]()), ("lora", ["--lora", dir.appendingPathComponent("r/final").path])] {
            let result = try DDPOProcess.run(["sample", "--model", model, "--prompt", "the cat", "--steps", "3",
                                              "--out", dir.appendingPathComponent(name).path, "--quiet"] + extra)
            XCTAssertEqual(result.status, 0, result.stderr)
            images.append(try SafeTensorsFile(path: dir.appendingPathComponent("\(name)/samples.safetensors").path).tensor("images").toArray())
        }
        XCTAssertNotEqual(images[0], images[1], "the LoRA changed nothing")
    }

    /// LoRA files that also hold text-encoder layers, as diffusers' training scripts save them
    /// (Fixtures/make_lora_sample_fixtures.py): PEFT keys with per-component adapter metadata (text
    /// encoder r 2, alpha 3, MLP layers too), and train_dreambooth_lora.py's converted keys
    /// ("lora.down/up" for the UNet, "lora_linear_layer.down/up" for the text encoder), and kohya-ss
    /// sd-scripts' form ("lora_unet_…"/"lora_te_…" with lora_down/lora_up/alpha, alpha ≠ rank, a 3×3
    /// conv layer too), as community LoRAs come. With the sd1
    /// case's call and latents at eta 0, `ddpo sample --lora` reproduces the images diffusers samples
    /// after `pipe.load_lora_weights` (1e-4), and the text encoder's layers count: the images differ
    /// from the UNet-only ones.
    func testSampleAppliesDiffusersLoRAWithTextEncoderLayers() throws {
        let dir = try DDPOProcess.temporaryDirectory()
        let (_, files) = try fixtureInputs(["latents"], in: dir)
        let fixtures = DDPOProcess.repositoryRoot.appendingPathComponent("Tests/DDPOAppTests/Fixtures/lora_sample")
        let reference = try SafeTensorsFile(path: fixtures.appendingPathComponent("io.safetensors").path)
        for name in ["peft", "dreambooth", "kohya"] {
            let out = dir.appendingPathComponent(name)
            let result = try DDPOProcess.run(["sample", "--model", model] + sd1Call
                                             + ["--eta", "0", "--latents", files["latents"]!.path, "--quiet", "--out", out.path,
                                                "--lora", fixtures.appendingPathComponent(name).path])
            XCTAssertEqual(result.status, 0, result.stderr)
            let images = try SafeTensorsFile(path: out.appendingPathComponent("samples.safetensors").path).tensor("images").toArray()
            let expected = try reference.tensor("\(name).images").toArray(), unetOnly = try reference.tensor("\(name).unet_only").toArray()
            XCTAssertEqual(images.count, expected.count)
            let worst = zip(images, expected).map { abs($0 - $1) }.max() ?? .infinity
            XCTAssertLessThan(worst, 1e-4, "\(name): images differ from diffusers' by up to \(worst)")
            XCTAssertGreaterThan(zip(expected, unetOnly).map { abs($0 - $1) }.max() ?? 0, 0.1, "\(name): the text encoder's layers should matter")
        }
    }

    /// With the recorded step noise (`--noise`, [steps, B, C, h, w]), `--eta 1` reproduces
    /// diffusers' eta-1 run, and `--trajectory` reproduces TRL 0.21's `pipeline_step`: every latent
    /// of the trajectory, every step's log-probability and the timesteps (make_pipeline_fixtures.py,
    /// case sd1: ddpo.latents, ddpo.log_probs, eta1.images; tolerance 1e-4 relative, as PipelineTests).
    func testSampleReplaysStepNoiseAndWritesDDPOTrajectory() throws {
        let dir = try DDPOProcess.temporaryDirectory()
        let (reference, files) = try fixtureInputs(["latents", "noise"], in: dir)
        let common = ["sample", "--model", model] + sd1Call
            + ["--latents", files["latents"]!.path, "--noise", files["noise"]!.path, "--quiet"]
        func relativeError(_ a: Tensor, _ b: Tensor) -> Double {
            let scale = max(b.toArray().map(abs).max() ?? 0, 1e-6)
            return (zip(a.toArray(), b.toArray()).map { abs($0 - $1) }.max() ?? .infinity) / scale
        }

        let plain = dir.appendingPathComponent("eta1")
        var result = try DDPOProcess.run(common + ["--eta", "1", "--out", plain.path])
        XCTAssertEqual(result.status, 0, result.stderr)
        var samples = try SafeTensorsFile(path: plain.appendingPathComponent("samples.safetensors").path)
        XCTAssertLessThan(relativeError(try samples.tensor("images"), try reference.tensor("eta1.images")), 1e-4)
        XCTAssertLessThan(relativeError(try samples.tensor("latents"), try reference.tensor("eta1.latents")), 1e-4)
        XCTAssertFalse(samples.keys.contains("log_probs"))

        let ddpo = dir.appendingPathComponent("ddpo")
        result = try DDPOProcess.run(common + ["--trajectory", "--out", ddpo.path])   // eta 1 by default
        XCTAssertEqual(result.status, 0, result.stderr)
        samples = try SafeTensorsFile(path: ddpo.appendingPathComponent("samples.safetensors").path)
        let trajectory = try samples.tensor("trajectory"), expected = try reference.tensor("ddpo.latents")
        XCTAssertEqual(trajectory.shape, expected.shape)
        XCTAssertLessThan(relativeError(trajectory, expected), 1e-4)
        let logProbs = try samples.tensor("log_probs"), expectedLogProbs = try reference.tensor("ddpo.log_probs")
        XCTAssertEqual(logProbs.shape, expectedLogProbs.shape)
        XCTAssertLessThan(relativeError(logProbs, expectedLogProbs), 1e-4)
        XCTAssertLessThan(relativeError(try samples.tensor("images"), try reference.tensor("ddpo.images")), 1e-4)
        // diffusers' 4 DDIM timesteps for SD 1.5's config (steps_offset 1, leading): 751, 501, 251, 1.
        XCTAssertEqual(try samples.tensor("timesteps").toArray().map { Int($0) }, [751, 501, 251, 1, 751, 501, 251, 1])
    }

    func testSampleErrors() throws {
        let dir = try DDPOProcess.temporaryDirectory()
        let wrongKey = dir.appendingPathComponent("wrong-key.safetensors")
        try saveSafeTensors(["noise": Tensor.zeros([1, 4, 2, 2])], to: wrongKey.path)
        let wrongShape = dir.appendingPathComponent("wrong-shape.safetensors")
        try saveSafeTensors(["latents": Tensor.zeros([2, 4, 2, 2])], to: wrongShape.path)
        let wrongChannels = dir.appendingPathComponent("wrong-channels.safetensors")
        try saveSafeTensors(["latents": Tensor.zeros([1, 3, 2, 2])], to: wrongChannels.path)
        let garbage = dir.appendingPathComponent("garbage.safetensors")
        try Data("not a safetensors file".utf8).write(to: garbage)
        // A text-encoder LoRA layer the model does not have (layer 99 of a 5-layer encoder).
        let dreambooth = try SafeTensorsFile(path: DDPOProcess.repositoryRoot
            .appendingPathComponent("Tests/DDPOAppTests/Fixtures/lora_sample/dreambooth/pytorch_lora_weights.safetensors").path)
        var renamed: [String: Tensor] = [:]
        for key in dreambooth.keys { renamed[key.replacingOccurrences(of: "encoder.layers.0.", with: "encoder.layers.99.")] = try dreambooth.tensor(key) }
        let badTextEncoder = dir.appendingPathComponent("bad-text-encoder.safetensors")
        try saveSafeTensors(renamed, to: badTextEncoder.path)
        // A kohya file with a LoHa weight, which we do not read.
        let kohya = try SafeTensorsFile(path: DDPOProcess.repositoryRoot
            .appendingPathComponent("Tests/DDPOAppTests/Fixtures/lora_sample/kohya/pytorch_lora_weights.safetensors").path)
        var loha: [String: Tensor] = ["lora_unet_conv_in.hada_w1_a": Tensor.zeros([2, 2])]
        for key in kohya.keys { loha[key] = try kohya.tensor(key) }
        let lohaFile = dir.appendingPathComponent("loha.safetensors")
        try saveSafeTensors(loha, to: lohaFile.path)
        let base = ["sample", "--model", model, "--out", dir.appendingPathComponent("never").path]
        let cases: [([String], Int32, [String])] = [
            ([], 2, ["--prompt"]),
            (["--prompt", "a", "--latents", wrongKey.path], 2, [wrongKey.path, "no tensor 'latents'", "noise"]),
            (["--prompt", "a", "--latents", wrongShape.path], 2, [wrongShape.path, "[2, 4, 2, 2]", "one per --prompt"]),
            (["--prompt", "a", "--latents", wrongChannels.path], 2, ["--latents", "3 channels", "takes 4"]),
            (["--prompt", "a", "--latents", garbage.path], 2, ["--latents", garbage.path]),
            (["--prompt", "a", "--latents", dir.appendingPathComponent("none.safetensors").path], 2, ["--latents", "none.safetensors"]),
            (["--prompt", "a", "--prompt", "b", "--negative-prompt", "x", "--negative-prompt", "y", "--negative-prompt", "z"], 2, ["--negative-prompt given 3 times for 2 prompts"]),
            (["--prompt", "a", "--steps", "0"], 2, ["--steps"]),
            (["--prompt", "a", "--warmup_steps", "-1"], 2, ["--warmup_steps", "≥ 0"]),
            (["--prompt", "a", "--height", "30"], 2, ["--height", "multiple of 8"]),
            (["--prompt", "a", "--lora", "/nonexistent/lora"], 2, ["--lora", "/nonexistent/lora"]),
            (["--prompt", "a", "--lora", badTextEncoder.path], 1,
             ["--lora", badTextEncoder.path, "text_encoder.text_model.encoder.layers.99.", "no Linear or Conv2d module"]),
            (["--prompt", "a", "--lora", lohaFile.path], 1, ["--lora", lohaFile.path, "lora_unet_conv_in.hada_w1_a", "LoHa"]),
            (["--prompt", "a", "--seeds", "3"], 2, ["unknown option '--seeds'", "did you mean '--seed'"]),
            (["--prompt", "a", "--trajectory", "--eta", "0"], 2, ["--trajectory", "--eta > 0"]),
            (["--prompt", "a", "--noise", wrongShape.path, "--eta", "1"], 2, ["--noise", "no tensor 'noise'"]),
            (["--prompt", "a", "--noise", wrongKey.path], 2, ["--noise", "only with --eta > 0"]),
            (["--prompt", "a", "--steps", "1", "--noise", wrongKey.path, "--eta", "1"], 2, ["--noise", "[1, 4, 2, 2]", "[1 (--steps), 1 (one per --prompt), C, h, w]"]),
        ]
        for (flags, status, expected) in cases {
            let result = try DDPOProcess.run(base + flags)
            XCTAssertEqual(result.status, status, "\(flags): \(result.stderr)")
            for text in expected { XCTAssertTrue(result.stderr.contains(text), "\(flags): stderr lacks '\(text)': \(result.stderr)") }
        }
        XCTAssertFalse(FileManager.default.fileExists(atPath: dir.appendingPathComponent("never").path))
    }

    /// Token ids as transformers' CLIPTokenizer gives them (make_app_fixtures.py), one JSON array a line,
    /// from arguments and from a file.
    func testTokenizeMatchesTransformers() throws {
        let fixture = try XCTUnwrap(JSONValue(parsing: Data(contentsOf: DDPOProcess.fixtures.appendingPathComponent("tokenize.json"))).objectValue)
        let texts = try XCTUnwrap(fixture["texts"]?.arrayValue).map { try XCTUnwrap($0.stringValue) }
        let expected = try XCTUnwrap(fixture["ids"]?.arrayValue).map { try XCTUnwrap($0.arrayValue).map { Int(try XCTUnwrap($0.doubleValue)) } }
        let dir = try DDPOProcess.temporaryDirectory()
        let file = dir.appendingPathComponent("texts.txt")
        try Data((texts.joined(separator: "\n") + "\n").utf8).write(to: file)
        for arguments in [["tokenize", "--model", model] + texts, ["tokenize", "--model", model, "--file", file.path]] {
            let result = try DDPOProcess.run(arguments)
            XCTAssertEqual(result.status, 0, result.stderr)
            let lines = result.stdout.split(separator: "\n", omittingEmptySubsequences: false).dropLast()
            XCTAssertEqual(lines.count, texts.count)
            let ids = try lines.map { try XCTUnwrap(JSONValue(parsing: Data($0.utf8)).arrayValue).map { Int(try XCTUnwrap($0.doubleValue)) } }
            XCTAssertEqual(ids, expected)
        }
        let none = try DDPOProcess.run(["tokenize", "--model", model])
        XCTAssertEqual(none.status, 2)
        XCTAssertTrue(none.stderr.contains("no texts"))
    }

    /// Parameter counts as diffusers/transformers count the loaded modules (make_app_fixtures.py).
    func testInfoReportsComponentsCountsAndACleanLoad() throws {
        let fixture = try XCTUnwrap(JSONValue(parsing: Data(contentsOf: DDPOProcess.fixtures.appendingPathComponent("info.json"))).objectValue)
        let counts = try XCTUnwrap(fixture["parameters"]?.objectValue)
        let result = try DDPOProcess.run(["info", "--model", model])
        XCTAssertEqual(result.status, 0, result.stderr)
        for (component, className, file) in [("unet", "UNet2DConditionModel", "diffusion_pytorch_model.safetensors"),
                                             ("vae", "AutoencoderKL", "diffusion_pytorch_model.safetensors"),
                                             ("text_encoder", "CLIPTextModel", "model.safetensors")] {
            // The component's section runs from its header to the next blank line.
            let header = try XCTUnwrap(result.stdout.range(of: "\n\(component): \(className)"), result.stdout)
            let section = result.stdout[header.upperBound...].components(separatedBy: "\n\n")[0]
            let n = Int(try XCTUnwrap(counts[component]?.doubleValue))
            XCTAssertTrue(section.contains("\(file): "), section)
            XCTAssertTrue(section.contains(" \(InfoFormat.grouped(n)) parameters, float32"), "\(component): expected \(n) parameters: \(section)")
        }
        XCTAssertTrue(result.stdout.contains("scheduler: PNDMScheduler"))
        XCTAssertTrue(result.stdout.contains("strict load: clean"))

        // A folder whose UNet weights lack a tensor: reported, exit status 1.
        let broken = try DDPOProcess.temporaryDirectory().appendingPathComponent("broken")
        try FileManager.default.copyItem(at: DDPOProcess.fixtureModel, to: broken)
        let unetFile = broken.appendingPathComponent("unet/diffusion_pytorch_model.safetensors")
        var state = try loadSafeTensors(unetFile.path)
        state.removeValue(forKey: "conv_in.weight")
        try saveSafeTensors(state, to: unetFile.path)
        let bad = try DDPOProcess.run(["info", "--model", broken.path])
        XCTAssertEqual(bad.status, 1)
        XCTAssertTrue(bad.stdout.contains("strict load: FAILED"), bad.stdout)
        XCTAssertTrue(bad.stdout.contains("conv_in.weight"), bad.stdout)
    }
}

/// Thousands separators as `ddpo info` prints them (1234567 → 1,234,567).
enum InfoFormat {
    static func grouped(_ n: Int) -> String {
        let formatter = NumberFormatter()
        formatter.numberStyle = .decimal
        formatter.groupingSeparator = ","
        formatter.usesGroupingSeparator = true
        return formatter.string(from: NSNumber(value: n)) ?? String(n)
    }
}
