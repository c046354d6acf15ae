import Foundation
import XCTest
@testable import RLAlgorithms

/// One DDPO training step against TRL 0.21's `DDPOTrainer.calculate_loss` + backward (fixture from
/// Fixtures/make_train_step_fixtures.py): the guided prediction at per-sample timesteps, the DDIM
/// log-probability of the stored next latents, PPO's clipped loss with advantage clipping,
/// approx_kl, clipfrac, and the gradient of every LoRA parameter, starting from the LoRA file TRL saved.
/// The pass is `DDPOPipeline.trainingLoss`, the function `DDPOTrainer` trains with.
///
/// Tolerance: loss and approx_kl relative error ≤ 1e-4; gradients per tensor max|Δ| ≤ 1e-4 ×
/// max(max|TRL's tensor|, 1e-3 × the largest gradient of all).
final class TrainStepTests: XCTestCase {
    static let fixtures = URL(fileURLWithPath: #filePath).deletingLastPathComponent().appendingPathComponent("Fixtures")
    static let pipelineCase = fixtures.deletingLastPathComponent().deletingLastPathComponent()
        .appendingPathComponent("DiffusionModelsTests/Fixtures/pipeline/sd1")

    struct Case: Decodable { var guidance: Double; var eta: Double; var clip_range: Double; var adv_clip_max: Double }
    struct PipelineCase: Decodable { var steps: Int }

    func testTrainingStepMatchesTRL() throws {
        let dir = Self.fixtures.appendingPathComponent("train_step")
        let info = try JSONDecoder().decode(Case.self, from: Data(contentsOf: dir.appendingPathComponent("case.json")))
        let steps = try JSONDecoder().decode(PipelineCase.self, from: Data(contentsOf: Self.pipelineCase.appendingPathComponent("case.json"))).steps
        let io = try loadSafeTensors(dir.appendingPathComponent("io.safetensors").path)
        func get(_ key: String) throws -> Tensor { try XCTUnwrap(io[key], "io.safetensors lacks \(key)") }

        let sd = try StableDiffusionPipeline.load(directory: Self.pipelineCase.appendingPathComponent("model"))
        try sd.scheduler.setTimesteps(steps)
        let pipe = try DefaultDDPOStableDiffusionPipeline(pipeline: sd, loraWeights: dir.appendingPathComponent("lora"))
        pipe.unet.train()

        // The negative embedding TRL builds from config.negative_prompts = "".
        let negative = try pipe.encodePrompts([""])
        let expectedNegative = try get("negative_prompt_embeds")
        assertClose(negative.expand(expectedNegative.shape), expectedNegative, 1e-4, "negative_prompt_embeds")

        let timesteps = try get("timesteps").toArray().map { Int($0) }
        var config = DDPOConfig()
        config.sample_guidance_scale = info.guidance
        config.sample_eta = info.eta
        config.train_cfg = true
        config.train_clip_range = info.clip_range
        config.train_adv_clip_max = info.adv_clip_max
        let out = try pipe.trainingLoss(latents: try get("latents"), nextLatents: try get("next_latents"), timesteps: timesteps,
                                        oldLogProbs: try get("log_probs"), advantages: try get("advantages"),
                                        promptEmbeddings: try get("prompt_embeds"), negativePromptEmbeddings: expectedNegative,
                                        config: config)
        assertClose(out.loss, try get("loss").reshape([]), 1e-4, "loss")
        XCTAssertEqual(out.approxKL, try get("approx_kl").item(), accuracy: 1e-4 * abs(try get("approx_kl").item()))
        XCTAssertEqual(out.clipFraction, try get("clipfrac").item())
        XCTAssertEqual(out.clipFraction, 0.5, "the fixture should clip one sample of two")

        out.loss.backward()
        let params = Dictionary(uniqueKeysWithValues: try XCTUnwrap(pipe.lora).namedParameters.map { ("unet." + $0.0, $0.1) })
        let expected = io.filter { $0.key.hasPrefix("grad.") }
        XCTAssertEqual(Set(expected.keys.map { String($0.dropFirst(5)) }), Set(params.keys))
        let largest = expected.values.map { $0.toArray().map(abs).max() ?? 0 }.max() ?? 0
        XCTAssertGreaterThan(largest, 0)
        for (key, reference) in expected {
            let p = try XCTUnwrap(params[String(key.dropFirst(5))])
            let grad = try XCTUnwrap(p.grad, "no gradient reached \(key)")
            let ref = reference.toArray(), ours = grad.toArray()
            XCTAssertEqual(ref.count, ours.count, key)
            let scale = max(ref.map(abs).max() ?? 0, 1e-3 * largest)
            let diff = zip(ref, ours).map { abs($0 - $1) }.max() ?? 0
            XCTAssertLessThanOrEqual(diff, 1e-4 * scale, "\(key): max|Δ| \(diff), scale \(scale)")
        }
    }

    func assertClose(_ a: Tensor, _ e: Tensor, _ tol: Double, _ label: String, file: StaticString = #filePath, line: UInt = #line) {
        XCTAssertEqual(a.shape, e.shape, label, file: file, line: line)
        let x = a.toArray(), y = e.toArray()
        let scale = y.map(abs).max() ?? 0
        let diff = zip(x, y).map { abs($0 - $1) }.max() ?? 0
        XCTAssertLessThanOrEqual(diff, tol * max(scale, 1e-30), "\(label): max|Δ| \(diff) vs scale \(scale)", file: file, line: line)
    }
}
