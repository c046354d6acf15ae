import Foundation
import TensorKit
import XCTest
@testable import DiffusionModels

/// The built-in model's pretraining: the procedural data set (pixel colours against the named
/// colours), the tokenizer files (ids against transformers' CLIPTokenizer, from
/// Fixtures/make_pretrain_fixtures.py), a tiny training run (losses fall, the folder loads
/// strictly), the model locator, and the shipped models/shapes-sd (its samples show the colours and
/// shapes their prompts name, read back by `ShapeDetector`).
final class PretrainTests: XCTestCase {
    static let fixtures = URL(fileURLWithPath: #filePath).deletingLastPathComponent()
        .appendingPathComponent("Fixtures/pretrain")
    static let repositoryRoot = URL(fileURLWithPath: #filePath).deletingLastPathComponent()
        .deletingLastPathComponent().deletingLastPathComponent()

    func temporaryDirectory() throws -> URL {
        let url = FileManager.default.temporaryDirectory.appendingPathComponent("pretrain-tests-\(UUID().uuidString)")
        try FileManager.default.createDirectory(at: url, withIntermediateDirectories: true)
        addTeardownBlock { try? FileManager.default.removeItem(at: url) }
        return url
    }

    // MARK: - Data set

    func rgb(_ image: RGBImage, _ x: Int, _ y: Int) -> [UInt8] {
        let i = (y * image.width + x) * 3
        return Array(image.pixels[i..<(i + 3)])
    }

    func testScenesShowTheNamedColoursAtTheCentreAndCorners() {
        let data = ShapesDataset(imageSize: 32, seed: 3)
        var named = 0
        for index in 0..<200 {
            let scene = data.scene(at: index)
            let image = data.render(scene)
            // The shape covers its centre (every kind contains (0, 0) with a margin wider than a pixel).
            XCTAssertEqual(rgb(image, Int(scene.centerX), Int(scene.centerY)), scene.color.rgb, "scene \(index): \(scene.caption)")
            for (x, y) in [(0, 0), (31, 0), (0, 31), (31, 31)] {
                XCTAssertEqual(rgb(image, x, y), scene.background.rgb, "scene \(index) corner (\(x), \(y))")
            }
            // The caption names the shape and colour, and the background exactly when it is not gray.
            let words = scene.caption.split(separator: " ").map(String.init)
            XCTAssertEqual(Array(words.prefix(3)), ["a", scene.color.name, scene.shape.rawValue])
            if scene.backgroundNamed {
                named += 1
                XCTAssertEqual(Array(words.dropFirst(3)), ["on", "a", scene.background.name, "background"])
                XCTAssertNotEqual(scene.background, scene.color)
            } else {
                XCTAssertEqual(words.count, 3)
                XCTAssertEqual(scene.background, ShapesDataset.defaultBackground)
            }
        }
        XCTAssert((70...130).contains(named), "about half the captions name a background, got \(named)/200")
        // Every shape and colour occurs.
        let scenes = (0..<200).map(data.scene(at:))
        XCTAssertEqual(Set(scenes.map(\.shape)), Set(ShapeKind.allCases))
        XCTAssertEqual(Set(scenes.map(\.color.name)), Set(ShapesDataset.colors.map(\.name)))
    }

    func testSameSeedSameImagesOtherSeedOtherImages() {
        let a = ShapesDataset(imageSize: 16, seed: 11).batch(5..<13)
        let b = ShapesDataset(imageSize: 16, seed: 11).batch(5..<13)
        let c = ShapesDataset(imageSize: 16, seed: 12).batch(5..<13)
        XCTAssertEqual(a.images.shape, [8, 3, 16, 16])
        XCTAssertEqual(a.images.toArray(), b.images.toArray())
        XCTAssertEqual(a.captions, b.captions)
        XCTAssertNotEqual(a.images.toArray(), c.images.toArray())
        let values = a.images.toArray()
        XCTAssertEqual(values.min()!, -1 + 2 * 15.0 / 255, accuracy: 1e-6)  // black (15) is the darkest colour
        XCTAssertLessThanOrEqual(values.max()!, 1)
    }

    func testDetectorReadsRenderedScenes() {
        let data = ShapesDataset(imageSize: 32, seed: 5)
        var correct = 0
        for index in 0..<60 {
            let scene = data.scene(at: index)
            let reading = ShapeDetector.read(data.render(scene))
            XCTAssertEqual(reading.background, scene.background)
            XCTAssertEqual(reading.color, scene.color)
            if reading.shape == scene.shape { correct += 1 }
            XCTAssertEqual(reading.matches(scene.caption), reading.shape == scene.shape)
        }
        XCTAssertGreaterThanOrEqual(correct, 58, "the template fit names the drawn shape")
    }

    // MARK: - Tokenizer

    func testEveryGrammarWordIsOneToken() throws {
        let files = ShapesTokenizer(modelMaxLength: 16)
        for word in ShapesDataset.vocabularyWords {
            XCTAssertEqual(ShapesTokenizer.bpe(word, ranks: Dictionary(uniqueKeysWithValues: files.merges.enumerated().map { ("\($1.0) \($1.1)", $0) })),
                           [word + "</w>"])
        }
        let dir = try temporaryDirectory()
        try files.write(to: dir)
        let tokenizer = try CLIPTokenizer(directory: dir)
        XCTAssertEqual(tokenizer.modelMaxLength, 16)
        XCTAssertEqual(tokenizer.bosTokenID, files.startOfTextID)
        XCTAssertEqual(tokenizer.eosTokenID, files.endOfTextID)
        XCTAssertEqual(tokenizer.padTokenID, files.endOfTextID)
        for word in ShapesDataset.vocabularyWords {
            XCTAssertEqual(tokenizer.tokenize(word), [word + "</w>"])
        }
        XCTAssertEqual(tokenizer.encode("a red circle on a blue background").count, 2 + 7)
    }

    struct TokenizerFixture: Decodable {
        var texts: [String]
        var input_ids: [[Int]]
        var tokens: [[String]]
        var model_max_length: Int
        var vocab_size: Int
    }

    /// The builder still writes the fixture's files byte for byte, and our tokenizer gives
    /// transformers' ids on them.
    func testTokenizerMatchesTransformers() throws {
        let dir = try temporaryDirectory()
        let files = ShapesTokenizer(modelMaxLength: 16)
        try files.write(to: dir)
        let fixtureDir = Self.fixtures.appendingPathComponent("tokenizer")
        for name in ["vocab.json", "merges.txt", "tokenizer_config.json", "special_tokens_map.json"] {
            XCTAssertEqual(try Data(contentsOf: dir.appendingPathComponent(name)),
                           try Data(contentsOf: fixtureDir.appendingPathComponent(name)), name)
        }
        let fixture = try JSONDecoder().decode(TokenizerFixture.self,
                                               from: Data(contentsOf: Self.fixtures.appendingPathComponent("tokenizer_ids.json")))
        XCTAssertEqual(fixture.vocab_size, files.vocabularySize)
        let tokenizer = try CLIPTokenizer(directory: fixtureDir)
        let ids = try tokenizer.inputIDs(fixture.texts).toArray().map { Int($0) }
        XCTAssertEqual(ids, fixture.input_ids.flatMap { $0 })
        XCTAssertEqual(fixture.texts.map(tokenizer.tokenize), fixture.tokens)
    }

    // MARK: - Training

    func testTinyPretrainingLowersTheLossesAndWritesALoadableFolder() throws {
        var options = PretrainOptions(seed: 1)
        options.vaeSteps = 40
        options.denoiserSteps = 40
        options.batchSize = 8
        options.warmupSteps = 5
        options.vaeLearningRate = 2e-3
        options.denoiserLearningRate = 2e-3
        let trainer = try Pretrainer(recipe: .tiny, options: options)
        var reports: [PretrainProgress] = []
        let initial = try trainer.evaluate()
        try trainer.trainVAE { reports.append($0) }
        let scale = trainer.calibrateLatentScale(count: 64)
        let afterVAE = try trainer.evaluate()
        try trainer.trainDenoiser { reports.append($0) }
        let final = try trainer.evaluate()
        XCTAssertEqual(reports.count, 80)
        XCTAssertEqual(reports.last?.stage, .denoiser)
        XCTAssertEqual(trainer.vaeLosses.count, 40)
        XCTAssertEqual(trainer.denoiserLosses.count, 40)
        // Held-out losses (fixed scenes never trained on, fixed noise) fall in each stage.
        XCTAssertLessThan(afterVAE.vae, 0.8 * initial.vae, "VAE reconstruction error \(initial.vae) → \(afterVAE.vae)")
        XCTAssertEqual(final.vae, afterVAE.vae, "the denoiser stage leaves the VAE alone")
        XCTAssertLessThan(final.denoiser, 0.8 * afterVAE.denoiser, "ε-MSE \(afterVAE.denoiser) → \(final.denoiser)")
        XCTAssert(scale.isFinite && scale > 0)

        let out = try temporaryDirectory().appendingPathComponent("model")
        try trainer.save(to: out, extraFiles: ["README.md": Data("card".utf8)])
        let parent = out.deletingLastPathComponent()
        XCTAssertEqual(try FileManager.default.contentsOfDirectory(atPath: parent.path), ["model"], "no temporary folder left")
        // Half-precision files, loaded strictly (and converted to float32) by the pipeline loader.
        let unetFile = try SafeTensorsFile(path: out.appendingPathComponent("unet/diffusion_pytorch_model.safetensors").path)
        XCTAssert(unetFile.header.entries.values.allSatisfy { $0.dtype == .float16 })
        let pipeline = try StableDiffusionPipeline.load(directory: out)
        XCTAssertEqual(pipeline.vae.config.scaling_factor, scale, accuracy: 1e-9)
        XCTAssertEqual(pipeline.defaultImageSize.height, 16)
        XCTAssertEqual(pipeline.unet.conv_in.weight.dtype, .float32)
        // The loaded weights are the trained ones, rounded to float16.
        let trained = trainer.unet.stateDict(), loaded = pipeline.unet.stateDict()
        XCTAssertEqual(Set(trained.keys), Set(loaded.keys))
        for key in ["conv_in.weight", "down_blocks.0.attentions.0.transformer_blocks.0.attn2.to_k.weight"] {
            let a = trained[key]!.toArray(), b = loaded[key]!.toArray()
            XCTAssertEqual(a.count, b.count)
            for (x, y) in zip(a, b) { XCTAssertEqual(x, y, accuracy: Swift.abs(x) * 1e-3 + 1e-7, key) }
        }
        let images = try pipeline.sample(SamplingRequest(prompts: ["a red circle"], numInferenceSteps: 2, guidanceScale: 3),
                                         seed: 0).images!
        XCTAssertEqual(images.shape, [1, 3, 16, 16])

        // Saving again replaces the folder.
        try trainer.save(to: out, extraFiles: ["README.md": Data("card 2".utf8)])
        XCTAssertEqual(try String(contentsOf: out.appendingPathComponent("README.md")), "card 2")
        XCTAssertEqual(try FileManager.default.contentsOfDirectory(atPath: parent.path), ["model"])
    }

    func testBuiltinModelSearchOrder() throws {
        let root = try temporaryDirectory()
        let fromEnvironment = root.appendingPathComponent("elsewhere")
        let checkout = root.appendingPathComponent("repo")
        let executable = checkout.appendingPathComponent(".build/x86_64-unknown-linux-gnu/release/ddpo")
        let shipped = checkout.appendingPathComponent("models/shapes-sd")
        for folder in [fromEnvironment, shipped, executable.deletingLastPathComponent()] {
            try FileManager.default.createDirectory(at: folder, withIntermediateDirectories: true)
        }
        try Data("{}".utf8).write(to: shipped.appendingPathComponent("model_index.json"))
        let cwd = root.path
        // Found through the executable's ancestors (the checkout of a `swift build`).
        XCTAssertEqual(BuiltinModel.defaultDirectory(environment: [:], currentDirectory: cwd, executable: executable)?.standardizedFileURL.path,
                       shipped.standardizedFileURL.path)
        // The environment variable wins when its folder is a model.
        try Data("{}".utf8).write(to: fromEnvironment.appendingPathComponent("model_index.json"))
        XCTAssertEqual(BuiltinModel.defaultDirectory(environment: ["DDPO_BUILTIN_MODEL": fromEnvironment.path], currentDirectory: cwd,
                                                     executable: executable)?.path, fromEnvironment.path)
        // Nothing found.
        XCTAssertNil(BuiltinModel.defaultDirectory(environment: [:], currentDirectory: cwd, executable: root.appendingPathComponent("bin/ddpo")))
        XCTAssertEqual(BuiltinModel.searchPaths(environment: [:], currentDirectory: cwd, executable: nil).map(\.path),
                       [root.appendingPathComponent("models/shapes-sd").path])
    }

    // MARK: - The shipped model

    /// models/shapes-sd, sampled as `ddpo sample` would (DDIM, eta 0, 20 steps, guidance 5, fixed
    /// seed), for every colour × shape of the grammar (a third with a named background): the colour,
    /// background and shape `ShapeDetector` reads back from each image against the prompt's.
    /// Measured when the model was shipped: colour 31/32, background 30/32, shape 20/32 (circle 7/8,
    /// triangle 6/8, square 5/8, cross 2/8; chance is 8/32). The bounds leave a margin for
    /// floating-point differences between machines.
    func testShippedModelDrawsWhatItsPromptsSay() throws {
        let directory = Self.repositoryRoot.appendingPathComponent("models/shapes-sd")
        guard FileManager.default.fileExists(atPath: directory.appendingPathComponent("model_index.json").path) else {
            throw XCTSkip("models/shapes-sd is not in this checkout")
        }
        let pipeline = try StableDiffusionPipeline.load(directory: directory)
        let prompts = Self.shippedPrompts
        let images = try pipeline.sample(SamplingRequest(prompts: prompts, numInferenceSteps: 20, guidanceScale: 5), seed: 3).images!
        var colours = 0, shapes = 0, backgrounds = 0
        var lines: [String] = []
        for (i, prompt) in prompts.enumerated() {
            let reading = ShapeDetector.read(try RGBImage(tensor: images.slice(0, i, i + 1)))
            let words = prompt.split(separator: " ").map(String.init)
            if reading.color?.name == words[1] { colours += 1 }
            if reading.shape?.rawValue == words[2] { shapes += 1 }
            if reading.background.name == (words.count > 3 ? words[5] : "gray") { backgrounds += 1 }
            lines.append("\(prompt): \(reading.color?.name ?? "-") \(reading.shape?.rawValue ?? "-") on \(reading.background.name) (fit \(String(format: "%.2f", reading.fit)))")
        }
        let summary = "colour \(colours)/32, shape \(shapes)/32, background \(backgrounds)/32\n" + lines.joined(separator: "\n")
        if ProcessInfo.processInfo.environment["PRETRAIN_VERBOSE"] == "1" { print(summary) }
        XCTAssertGreaterThanOrEqual(colours, 29, summary)
        XCTAssertGreaterThanOrEqual(backgrounds, 28, summary)
        XCTAssertGreaterThanOrEqual(shapes, 16, summary)  // twice chance
    }

    /// Every colour × shape, one in three with a named background.
    static let shippedPrompts: [String] = {
        let colors = ShapesDataset.colors
        var prompts: [String] = []
        for (i, color) in colors.enumerated() {
            for (j, shape) in ShapeKind.allCases.enumerated() {
                let background = (i + j) % 3 == 0 ? colors[(i + 3) % colors.count].name : nil
                prompts.append(ShapesDataset.caption(color: color.name, shape: shape, background: background))
            }
        }
        return prompts
    }()
}
