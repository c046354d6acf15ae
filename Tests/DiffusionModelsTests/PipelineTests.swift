import Foundation
import XCTest
@testable import DiffusionModels

/// StableDiffusionPipeline against diffusers 0.35.2 and TRL 0.21, from the fixtures that
/// Fixtures/make_pipeline_fixtures.py writes into Fixtures/pipeline/ (whole diffusers folders plus the
/// outputs of diffusers' pipeline and TRL's `pipeline_step` from given latents and step noise).
///
/// Tolerance, float32 parity: per tensor, relError = max|ours − reference| / max|reference| ≤ 1e-4 for
/// prompt states, latents and log-probabilities; images (after the VAE and the clamp to [0, 1]) the
/// same. PIPELINE_VERBOSE=1 prints every relative error.
final class PipelineTests: XCTestCase {
    static let fixtures = URL(fileURLWithPath: #filePath).deletingLastPathComponent()
        .appendingPathComponent("Fixtures").appendingPathComponent("pipeline")
    static let tolerance = 1e-4

    struct Case: Decodable {
        var prompts: [String]
        var negative_prompts: [String]?
        var steps: Int
        var guidance: Double
        var ddpo_guidance: Double
        var height: Int
        var width: Int
        var images_per_prompt: Int
        var variant: String?
        var timesteps: [Int]
        var scheduler: [String: JSONScalar]
    }

    /// A scalar of the scheduler config as diffusers dumped it.
    enum JSONScalar: Decodable, Equatable {
        case number(Double), text(String), flag(Bool), null
        init(from decoder: Decoder) throws {
            let c = try decoder.singleValueContainer()
            if c.decodeNil() { self = .null } else if let b = try? c.decode(Bool.self) { self = .flag(b) }
            else if let d = try? c.decode(Double.self) { self = .number(d) } else { self = .text(try c.decode(String.self)) }
        }
    }

    struct Fixture {
        var pipeline: StableDiffusionPipeline
        var info: Case
        var io: [String: Tensor]
        func get(_ key: String) throws -> Tensor { try XCTUnwrap(io[key], "io.safetensors lacks \(key)") }
    }

    private static var cache: [String: Fixture] = [:]

    func fixture(_ name: String) throws -> Fixture {
        if let f = Self.cache[name] { return f }
        let dir = Self.fixtures.appendingPathComponent(name)
        let info = try JSONDecoder().decode(Case.self, from: Data(contentsOf: dir.appendingPathComponent("case.json")))
        let pipeline = try StableDiffusionPipeline.load(directory: dir.appendingPathComponent("model"), variant: info.variant)
        let io = try loadSafeTensors(dir.appendingPathComponent("io.safetensors").path)
        let f = Fixture(pipeline: pipeline, info: info, io: io)
        Self.cache[name] = f
        return f
    }

    func request(_ f: Fixture, eta: Double, guidance: Double? = nil) throws -> SamplingRequest {
        var r = SamplingRequest(prompts: f.info.prompts, negativePrompts: f.info.negative_prompts,
                                numInferenceSteps: f.info.steps, guidanceScale: guidance ?? f.info.guidance, eta: eta,
                                height: f.info.height, width: f.info.width, imagesPerPrompt: f.info.images_per_prompt,
                                latents: try f.get("latents"))
        if eta > 0 { r.stepNoise = try f.get("noise").chunk(f.info.steps, axis: 0).map { $0.reshape(Array($0.shape.dropFirst())) } }
        return r
    }

    // MARK: - parity

    func testPromptStatesMatchDiffusers() throws {
        for name in ["sd1", "sd2v"] {
            let f = try fixture(name)
            let n = f.info.images_per_prompt
            let cond = try f.pipeline.encodePrompts(f.info.prompts)
            let negatives = f.info.negative_prompts ?? Array(repeating: "", count: f.info.prompts.count)
            let uncond = try f.pipeline.encodePrompts(negatives)
            // diffusers repeats each prompt's states n times in a row.
            func repeated(_ x: Tensor) -> Tensor {
                Tensor.concat((0..<x.shape[0]).flatMap { i in Array(repeating: x.slice(0, i, i + 1), count: n) }, axis: 0)
            }
            assertClose(repeated(cond), try f.get("prompt_embeds"), "\(name) prompt_embeds")
            assertClose(repeated(uncond), try f.get("negative_prompt_embeds"), "\(name) negative_prompt_embeds")
        }
    }

    func testDeterministicSamplingMatchesDiffusers() throws {
        for name in ["sd1", "sd2v"] {
            let f = try fixture(name)
            let out = try f.pipeline.sample(try request(f, eta: 0), seed: 0)
            assertClose(out.latents, try f.get("eta0.latents"), "\(name) eta 0 latents")
            assertClose(try XCTUnwrap(out.images), try f.get("eta0.images"), "\(name) eta 0 images")
        }
    }

    func testStochasticSamplingWithGivenNoiseMatchesDiffusers() throws {
        for name in ["sd1", "sd2v"] {
            let f = try fixture(name)
            let out = try f.pipeline.sample(try request(f, eta: 1), seed: 0)
            assertClose(out.latents, try f.get("eta1.latents"), "\(name) eta 1 latents")
            assertClose(try XCTUnwrap(out.images), try f.get("eta1.images"), "\(name) eta 1 images")
        }
    }

    /// The DDPO sampler against TRL's `pipeline_step`: every latent of the trajectory, every step's
    /// log-probability, the images; timesteps are diffusers' DDIM timesteps for every sample.
    func testTrajectoryMatchesTRLPipelineStep() throws {
        for name in ["sd1", "sd2v"] {
            let f = try fixture(name)
            var generator = PhiloxGenerator(seed: 0)
            let t = try f.pipeline.sampleTrajectory(try request(f, eta: 1, guidance: f.info.ddpo_guidance), generator: &generator)
            let batch = f.info.prompts.count * f.info.images_per_prompt
            XCTAssertEqual(t.latents.shape[0...1], [batch, f.info.steps + 1], name)
            assertClose(t.latents, try f.get("ddpo.latents"), "\(name) ddpo latents")
            assertClose(t.logProbs, try f.get("ddpo.log_probs"), "\(name) ddpo log_probs")
            assertClose(try XCTUnwrap(t.images), try f.get("ddpo.images"), "\(name) ddpo images")
            XCTAssertEqual(t.timesteps.shape, [batch, f.info.steps])
            XCTAssertEqual(t.timesteps.toArray().map { Int($0) }, (0..<batch).flatMap { _ in f.info.timesteps }, name)
            XCTAssertEqual(t.negativePromptEmbeddings?.shape, t.promptEmbeddings.shape, name)
        }
    }

    /// The scheduler the pipeline ends up with equals the one diffusers' pipeline + TRL's
    /// `DDIMScheduler.from_config` ended up with (sd2v's folder holds an outdated DDIM config with
    /// steps_offset 0 and clip_sample true; sd1's a PNDM config).
    func testSchedulerConfigIsRewrittenAsDiffusersDoes() throws {
        for name in ["sd1", "sd2v"] {
            let f = try fixture(name)
            let ours = try JSONSerialization.jsonObject(with: JSONEncoder().encode(f.pipeline.scheduler.config)) as! [String: Any]
            // diffusers carries the source scheduler's own keys along (PNDM's skip_prk_steps); every
            // DDIM key must be there and agree.
            let ddimKeys = ours.keys.filter { !$0.hasPrefix("_") }
            XCTAssertEqual(Set(ddimKeys).subtracting(f.info.scheduler.keys), [], "\(name): keys diffusers' config lacks")
            for (key, expected) in f.info.scheduler where ours[key] != nil {
                let value = ours[key]
                switch expected {
                case .number(let d): XCTAssertEqual((value as? NSNumber)?.doubleValue ?? .nan, d, accuracy: 1e-12, "\(name) \(key)")
                case .flag(let b): XCTAssertEqual(value as? Bool, b, "\(name) \(key)")
                case .text(let s): XCTAssertEqual(value as? String, s, "\(name) \(key)")
                case .null: XCTAssertTrue(value == nil || value is NSNull, "\(name) \(key): \(String(describing: value))")
                }
            }
            var scheduler = f.pipeline.scheduler
            try scheduler.setTimesteps(f.info.steps)
            XCTAssertEqual(scheduler.timesteps, f.info.timesteps, name)
        }
    }

    /// Scheduler configs as folders ship them (SD 1.5's and 2.1's, fields left out, outdated values,
    /// other classes) become the DDIM scheduler TRL gets from diffusers: StableDiffusionPipeline's
    /// rewrites, then `DDIMScheduler.from_config`, which drops the fields the file left out so that
    /// they take DDIM's defaults (Fixtures/scheduler/conversion.json, from
    /// make_scheduler_conversion_fixtures.py: diffusers' resulting config, timesteps, final ᾱ).
    func testSchedulerConversionMatchesDiffusers() throws {
        let url = Self.fixtures.deletingLastPathComponent().appendingPathComponent("scheduler/conversion.json")
        let root = try XCTUnwrap(JSONSerialization.jsonObject(with: Data(contentsOf: url)) as? [String: Any])
        let cases = try XCTUnwrap(root["cases"] as? [String: [String: Any]])
        XCTAssertGreaterThanOrEqual(cases.count, 10)
        let dir = FileManager.default.temporaryDirectory.appendingPathComponent("scheduler-conversion-\(UUID().uuidString)")
        try FileManager.default.createDirectory(at: dir, withIntermediateDirectories: true)
        defer { try? FileManager.default.removeItem(at: dir) }
        for (name, c) in cases.sorted(by: { $0.key < $1.key }) {
            let raw = try XCTUnwrap(c["raw"] as? [String: Any])
            try JSONSerialization.data(withJSONObject: raw).write(to: dir.appendingPathComponent("scheduler_config.json"))
            var ours = try StableDiffusionPipeline.loadScheduler(directory: dir)
            let expected = try JSONDecoder().decode(DDIMSchedulerConfig.self,
                                                    from: JSONSerialization.data(withJSONObject: try XCTUnwrap(c["ddim"])))
            XCTAssertEqual(ours.config, expected, name)
            // The decoded reference must not be DDIM's defaults by accident: the fixture states every field.
            let ddimKeys = try XCTUnwrap(c["ddim"] as? [String: Any]).keys
            XCTAssertTrue(["clip_sample", "steps_offset", "set_alpha_to_one", "timestep_spacing"].allSatisfy(ddimKeys.contains), name)
            XCTAssertEqual(Double(ours.finalAlphaCumprod), try XCTUnwrap(c["final_alpha_cumprod"] as? Double), accuracy: 1e-7, name)
            for (count, timesteps) in try XCTUnwrap(c["timesteps"] as? [String: [Int]]) {
                try ours.setTimesteps(try XCTUnwrap(Int(count)))
                XCTAssertEqual(ours.timesteps, timesteps, "\(name), \(count) steps")
            }
        }
    }

    // MARK: - behaviour

    /// One progress report per step, in order, with diffusers' timesteps; the reported latents are
    /// the ones the loop continues from (the last report holds the final latents).
    func testProgressCallbackReportsEveryStep() throws {
        let f = try fixture("sd1")
        var reports: [SamplingProgress] = []
        var r = try request(f, eta: 0)
        r.decode = false
        let out = try f.pipeline.sample(r, seed: 0) { reports.append($0) }
        XCTAssertEqual(reports.map(\.step), Array(1...f.info.steps))
        XCTAssertEqual(reports.map(\.total), Array(repeating: f.info.steps, count: f.info.steps))
        XCTAssertEqual(reports.map(\.timestep), f.info.timesteps)
        XCTAssertEqual(reports.last?.latents.toArray(), out.latents.toArray())
        XCTAssertNil(out.images)
    }

    /// Sampling records no autograd graph, even with the UNet's parameters trainable.
    /// `vaeDecodeDType`: a VAE with float64 weights decoding in float32 gives diffusers' float32
    /// images; once its float32 copy overflows (a conv_in weight too large for float32, fine in
    /// float64) the batch is decoded again with the float64 weights, and the images are theirs.
    func testNarrowerVAEDecodeMatchesDiffusersAndFallsBackOnOverflow() throws {
        let dir = Self.fixtures.appendingPathComponent("sd1")
        let pipeline = try StableDiffusionPipeline.load(directory: dir.appendingPathComponent("model"), dtype: .float64)
        let f = try fixture("sd1")
        let latents = try f.get("eta0.latents").to(.float64)
        pipeline.vaeDecodeDType = .float32
        assertClose(pipeline.decodeLatents(latents).to(.float32), try f.get("eta0.images"), "float32 decode of a float64 VAE")
        XCTAssertEqual(pipeline.vaeDecodeFallbacks, 0)

        let conv = pipeline.vae.decoder.conv_in
        conv.weight = conv.weight * 1e40
        pipeline.vaeDecodeDType = .float32  // the copy is made again from the changed weights
        let narrow = pipeline.decodeLatents(latents)
        XCTAssertEqual(pipeline.vaeDecodeFallbacks, 1, "a non-finite float32 decode is decoded again in float64")
        pipeline.vaeDecodeDType = nil
        let wide = pipeline.decodeLatents(latents)
        XCTAssertFalse(wide.toArray().contains { !$0.isFinite }, "the float64 decode stays finite")
        XCTAssertEqual(narrow.toArray(), wide.toArray())
        XCTAssertEqual(pipeline.vaeDecodeFallbacks, 1)
    }

    func testSamplingRecordsNoGraph() throws {
        let f = try fixture("sd1")
        let params = f.pipeline.unet.parameters()
        for p in params { p.requiresGrad = true }
        defer { for p in params { p.requiresGrad = false } }
        var generator = PhiloxGenerator(seed: 3)
        let t = try f.pipeline.sampleTrajectory(try request(f, eta: 1), generator: &generator)
        XCTAssertFalse(t.latents.requiresGrad)
        XCTAssertFalse(t.logProbs.requiresGrad)
        XCTAssertNil(t.logProbs.gradFn)
    }

    /// Drawn noise comes from the generator in a fixed order: the initial latents first (a standard
    /// normal draw of the latent shape), then one draw per step; so the same seed gives the same
    /// images, and the generator ends past every draw.
    func testSeededSamplingDrawsLatentsThenStepNoise() throws {
        let f = try fixture("sd1")
        var r = try request(f, eta: 1)
        r.latents = nil
        r.stepNoise = nil
        var generator = PhiloxGenerator(seed: 11)
        let drawn = try f.pipeline.sample(r, generator: &generator)
        var replay = PhiloxGenerator(seed: 11)
        let shape = try f.get("latents").shape
        r.latents = Tensor.randn(shape, generator: &replay)
        r.stepNoise = (0..<f.info.steps).map { _ in Tensor.randn(shape, generator: &replay) }
        let given = try f.pipeline.sample(r, seed: 999)
        XCTAssertEqual(drawn.latents.toArray(), given.latents.toArray())
        XCTAssertEqual(generator.offset, replay.offset)
    }

    func testInvalidRequestsNameTheField() throws {
        let f = try fixture("sd1")
        func expect(_ field: String, _ edit: (inout SamplingRequest) -> Void) throws {
            var r = try request(f, eta: 0)
            edit(&r)
            XCTAssertThrowsError(try f.pipeline.sample(r, seed: 0), field) { error in
                XCTAssertEqual((error as? PipelineError)?.field, field, "\(error)")
            }
        }
        try expect("height") { $0.height = 15 }
        try expect("latents") { $0.width = 32 }
        try expect("negativePrompts") { $0.negativePrompts = ["only one"] }
        try expect("imagesPerPrompt") { $0.imagesPerPrompt = 0 }
        try expect("numInferenceSteps") { $0.numInferenceSteps = 0 }
        var r = try request(f, eta: 0)
        var generator = PhiloxGenerator(seed: 0)
        XCTAssertThrowsError(try f.pipeline.sampleTrajectory(r, generator: &generator)) { error in
            XCTAssertEqual((error as? PipelineError)?.field, "eta", "\(error)")
        }
        r.eta = 1
        r.stepNoise = []
        XCTAssertThrowsError(try f.pipeline.sample(r, seed: 0)) { error in
            XCTAssertEqual((error as? PipelineError)?.field, "stepNoise", "\(error)")
        }
    }

    /// PNG files hold diffusers' bytes: round(x · 255) per channel, read back through libpng.
    func testSavedPNGsHoldTheImages() throws {
        let f = try fixture("sd1")
        let images = try f.get("eta0.images")
        let dir = FileManager.default.temporaryDirectory.appendingPathComponent("pipeline-png-\(UUID().uuidString)")
        addTeardownBlock { try? FileManager.default.removeItem(at: dir) }
        let urls = try StableDiffusionPipeline.savePNGs(images, to: dir, prefix: "sample_")
        XCTAssertEqual(urls.map(\.lastPathComponent), ["sample_0.png", "sample_1.png"])
        let (h, w) = (images.shape[2], images.shape[3])
        let values = images.toArray()
        for (b, url) in urls.enumerated() {
            let png = try RGBImage(contentsOf: url.path)
            XCTAssertEqual([png.height, png.width], [h, w])
            for c in 0..<3 {
                for y in 0..<h {
                    for x in 0..<w {
                        let v = Float(values[((b * 3 + c) * h + y) * w + x]) * 255
                        XCTAssertEqual(png.pixels[(y * w + x) * 3 + c], UInt8(v.rounded(.toNearestOrEven)))
                    }
                }
            }
        }
    }

    // MARK: - loading errors

    func testFolderProblemsAreExplained() throws {
        func copy() throws -> URL {
            let dir = FileManager.default.temporaryDirectory.appendingPathComponent("pipeline-\(UUID().uuidString)")
            try FileManager.default.copyItem(at: Self.fixtures.appendingPathComponent("sd1/model"), to: dir)
            addTeardownBlock { try? FileManager.default.removeItem(at: dir) }
            return dir
        }
        func expectError(_ dir: URL, mentioning needles: [String], line: UInt = #line) {
            XCTAssertThrowsError(try StableDiffusionPipeline.load(directory: dir), line: line) { error in
                for needle in needles {
                    XCTAssertTrue("\(error)".contains(needle), "\"\(error)\" does not mention \(needle)", line: line)
                }
            }
        }
        func editIndex(_ dir: URL, _ edit: (inout [String: Any]) -> Void) throws {
            let url = dir.appendingPathComponent("model_index.json")
            var index = try JSONSerialization.jsonObject(with: Data(contentsOf: url)) as! [String: Any]
            edit(&index)
            try JSONSerialization.data(withJSONObject: index).write(to: url)
        }

        var dir = try copy()
        try FileManager.default.removeItem(at: dir.appendingPathComponent("model_index.json"))
        expectError(dir, mentioning: ["model_index.json"])

        dir = try copy()
        try editIndex(dir) { $0["text_encoder_2"] = ["transformers", "CLIPTextModelWithProjection"] }
        expectError(dir, mentioning: ["text_encoder_2"])

        dir = try copy()
        try editIndex(dir) { $0["unet"] = ["diffusers", "UNet2DModel"] }
        expectError(dir, mentioning: ["unet", "UNet2DModel"])

        dir = try copy()
        try FileManager.default.removeItem(at: dir.appendingPathComponent("vae"))
        expectError(dir, mentioning: ["vae"])

        // Pickled weights only: refused with the conversion to run.
        dir = try copy()
        let weights = dir.appendingPathComponent("unet/diffusion_pytorch_model.safetensors")
        try FileManager.default.removeItem(at: weights)
        try Data([0x80, 0x02, 0x7d]).write(to: dir.appendingPathComponent("unet/diffusion_pytorch_model.bin"))
        expectError(dir, mentioning: ["unet", "diffusion_pytorch_model.bin", "safe_serialization"])

        // A variant that some component lacks.
        dir = try copy()
        XCTAssertThrowsError(try StableDiffusionPipeline.load(directory: dir, variant: "fp16")) { error in
            XCTAssertTrue("\(error)".contains("fp16"), "\(error)")
        }
    }

    // MARK: - a real model (opt-in)

    /// Runs only when SD_MODEL_DIR points at a diffusers Stable Diffusion folder (e.g. SD 1.5): the
    /// strict load must be clean, and one image is sampled (2 DDIM steps) and written as PNG.
    func testRealModelFolderWhenGiven() throws {
        guard let path = ProcessInfo.processInfo.environment["SD_MODEL_DIR"], !path.isEmpty else {
            throw XCTSkip("skipped: set SD_MODEL_DIR to a diffusers Stable Diffusion folder to run this test")
        }
        let pipeline = try StableDiffusionPipeline.load(directory: URL(fileURLWithPath: path))
        let out = try pipeline.sample(SamplingRequest(prompts: ["a photograph of an astronaut riding a horse"],
                                                      numInferenceSteps: 2, guidanceScale: 7.5), seed: 0)
        let images = try XCTUnwrap(out.images)
        let (h, w) = pipeline.defaultImageSize
        XCTAssertEqual(images.shape, [1, 3, h, w])
        let values = images.toArray()
        XCTAssertTrue(values.allSatisfy { $0 >= 0 && $0 <= 1 }, "images leave [0, 1]")
        let dir = FileManager.default.temporaryDirectory.appendingPathComponent("sd-model-test")
        let urls = try StableDiffusionPipeline.savePNGs(images, to: dir)
        print("SD_MODEL_DIR sample written to \(urls[0].path)")
    }

    // MARK: - helpers

    func assertClose(_ actual: Tensor, _ expected: Tensor, _ label: String, file: StaticString = #filePath, line: UInt = #line) {
        assertParityClose(actual, expected, Self.tolerance, label, file: file, line: line)
        XCTAssertFalse(actual.toArray().contains { !$0.isFinite }, "\(label): non-finite values", file: file, line: line)
    }
}
