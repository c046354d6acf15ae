import Foundation
import XCTest
@testable import DiffusionModels

/// DDIMScheduler against diffusers 0.35.2 and DDPO's log-probability against a torch
/// implementation of ddpo-pytorch's formulas (fixtures from Fixtures/make_scheduler_fixtures.py).
///
/// Tolerances: timesteps and the noise schedule (β, ᾱ) match exactly (zero-SNR rescaling: see
/// that test); scheduler arithmetic (step outputs, log-probs) within rel 1e-5 of each element
/// plus 1e-5 of the tensor's largest magnitude (elements near 0 come out of cancellations such as
/// x − √β·ε), against the reference run in float64, and against the float32 reference with its own
/// float32 error added; gradients against torch autograd (float64) within rel 1e-4; finite
/// differences in float64 with PyTorch gradcheck's tolerances (atol 1e-5, rtol 1e-3).
final class DDIMSchedulerTests: XCTestCase {
    // MARK: - Fixtures

    private static let fixtureDir = URL(fileURLWithPath: #filePath).deletingLastPathComponent()
        .appendingPathComponent("Fixtures/scheduler")

    private struct Fixture: Decodable {
        struct Step: Decodable {
            let timestep: Int
            let eta: Double
            let use_clipped_model_output: Bool
        }
        struct LogProb: Decodable {
            let timesteps: [Int]
            let eta: Double
            let mode: String
        }
        struct Undefined: Decodable {
            let timesteps: [Int]
            let log_prob_finite: [Bool]
        }
        struct Config: Decodable {
            let timesteps: [String: [Int]?]
            let final_alpha_cumprod: Double
            let steps: [Step]
            let logprobs: [LogProb]
            let ddpo_undefined_at_zero: Undefined?
        }
        struct Sweep: Decodable {
            let num_train_timesteps: Int
            let leading_steps_offset: Int
            let leading: [Int?]
            let trailing: [Int?]
            let linspace: [Int?]
            let trailing_extra: [Int]
        }
        let configs: [String: Config]
        let timestep_sweep: Sweep
    }

    private static let loaded: (fixture: Fixture, configJSON: [String: Data], tensors: [String: Tensor]) = {
        let data = try! Data(contentsOf: fixtureDir.appendingPathComponent("fixtures.json"))
        let fixture = try! JSONDecoder().decode(Fixture.self, from: data)
        // Each config as the raw scheduler_config.json bytes, to go through the real decoder.
        let root = try! JSONSerialization.jsonObject(with: data) as! [String: Any]
        var configJSON: [String: Data] = [:]
        for (name, entry) in root["configs"] as! [String: Any] {
            let config = (entry as! [String: Any])["config"]!
            configJSON[name] = try! JSONSerialization.data(withJSONObject: config)
        }
        let tensors = try! loadSafeTensors(fixtureDir.appendingPathComponent("tensors.safetensors").path)
        return (fixture, configJSON, tensors)
    }()

    private var fixture: Fixture { Self.loaded.fixture }
    private func tensor(_ key: String) -> Tensor {
        guard let t = Self.loaded.tensors[key] else { fatalError("fixture tensor \(key) missing") }
        return t
    }

    private func scheduler(_ name: String) throws -> DDIMScheduler {
        let config = try JSONDecoder().decode(DDIMSchedulerConfig.self, from: Self.loaded.configJSON[name]!)
        return try DDIMScheduler(config: config)
    }

    private var configNames: [String] { fixture.configs.keys.sorted() }

    // MARK: - Noise schedule and timesteps

    func testNoiseScheduleMatchesDiffusersBitForBit() throws {
        for name in configNames {
            let s = try scheduler(name)
            let betas = tensor("\(name).betas"), alphas = tensor("\(name).alphas_cumprod")
            if s.config.rescaleBetasZeroSnr {
                // Rescaling takes square roots of ᾱ, and torch's CPU float32 sqrt is not correctly
                // rounded (1 ulp off for ~20% of inputs in the build that made the fixtures). The
                // rescale's cancellations make β ill-conditioned in float32: diffusers' and our
                // float32 β are each ~2e-4 (relative) from the exact float64 values, while ᾱ, which
                // the steps use, stays within ~4e-6. Every other schedule is bit-identical.
                let shape = [s.betas.count]
                assertClose(Tensor(s.betas, shape: shape), betas, rtol: 5e-4, relativeToMax: false, "\(name): betas")
                assertClose(Tensor(s.alphasCumprod, shape: shape), alphas, rtol: 1e-5, relativeToMax: false,
                            "\(name): alphas_cumprod")
            } else {
                assertSameFloats(s.betas, betas.toFloatArray(), "\(name): betas")
                assertSameFloats(s.alphasCumprod, alphas.toFloatArray(), "\(name): alphas_cumprod")
            }
            XCTAssertEqual(Double(s.finalAlphaCumprod), fixture.configs[name]!.final_alpha_cumprod, "\(name): final_alpha_cumprod")
        }
    }

    func testTimestepsMatchDiffusers() throws {
        for name in configNames {
            let total = try scheduler(name).config.numTrainTimesteps
            for (countText, expected) in fixture.configs[name]!.timesteps {
                var s = try scheduler(name)
                let n = Int(countText)!
                if let expected, expected.allSatisfy({ (0..<total).contains($0) }) {
                    try s.setTimesteps(n)
                    XCTAssertEqual(s.timesteps, expected, "\(name): \(n) steps")
                    XCTAssertEqual(s.numInferenceSteps, n)
                } else {
                    // diffusers refuses (n > T) or yields timesteps outside 0..<T that fail at step time.
                    XCTAssertThrowsError(try s.setTimesteps(n), "\(name): \(n) steps") { error in
                        guard case SchedulerError.invalidInferenceSteps = error else { return XCTFail("\(error)") }
                    }
                }
            }
        }
    }

    /// Every step count 1...1000 for each spacing, checked by Σ (i+1)·t_i against diffusers.
    func testTimestepSweepMatchesDiffusersForEveryStepCount() throws {
        let sweep = fixture.timestep_sweep
        for (spacing, sums) in [(TimestepSpacing.leading, sweep.leading), (.trailing, sweep.trailing), (.linspace, sweep.linspace)] {
            var config = DDIMSchedulerConfig()
            config.timestepSpacing = spacing
            config.stepsOffset = spacing == .leading ? sweep.leading_steps_offset : 0
            for (index, expected) in sums.enumerated() {
                var s = try DDIMScheduler(config: config)
                let n = index + 1
                guard let expected else {
                    XCTAssertThrowsError(try s.setTimesteps(n), "\(spacing) \(n)")
                    continue
                }
                try s.setTimesteps(n)
                XCTAssertEqual(s.timesteps.count, n, "\(spacing) \(n): count")
                let checksum = s.timesteps.enumerated().reduce(0) { $0 + ($1.offset + 1) * $1.element }
                XCTAssertEqual(checksum, expected, "\(spacing) with \(n) steps")
                XCTAssertEqual(s.timesteps, s.timesteps.sorted(by: >), "\(spacing) \(n): descending")
            }
        }
        // diffusers' "trailing" gives n + 1 timesteps ending in -1 for these n; we keep the n asked for.
        XCTAssertTrue(sweep.trailing_extra.contains(61))
    }

    // MARK: - step

    /// Against diffusers' step run in float64 on the same ᾱ (rel 1e-5), and against its float32
    /// output within rel 1e-5 plus diffusers' own float32 error |float32 − float64| (large only where
    /// 1 − ᾱ_prev − σ_t² cancels, e.g. zero-SNR t=999 with eta 1).
    func testStepMatchesDiffusers() throws {
        for name in configNames {
            var s = try scheduler(name)
            try s.setTimesteps(10)
            for (i, c) in fixture.configs[name]!.steps.enumerated() {
                let key = "\(name).step\(i)"
                let out = try s.step(modelOutput: tensor("\(key).model_output"), timestep: c.timestep,
                                     sample: tensor("\(key).sample"), eta: c.eta,
                                     useClippedModelOutput: c.use_clipped_model_output,
                                     varianceNoise: tensor("\(key).noise"))
                let label = "\(key) (t=\(c.timestep), eta=\(c.eta))"
                for (actual, field) in [(out.prevSample, "prev_sample"), (out.predOriginalSample, "pred_original_sample")] {
                    let precise = tensor("\(key).\(field)_f64"), diffusers = tensor("\(key).\(field)")
                    assertClose(actual, precise, "\(label) \(field) vs float64")
                    assertClose(actual, diffusers, slack: (diffusers - precise).abs(), "\(label) \(field) vs diffusers float32")
                }
            }
        }
    }

    func testStepWithGeneratorDrawsNoiseOnlyWhenEtaIsPositive() throws {
        var s = try scheduler("sd15")
        try s.setTimesteps(10)
        let modelOutput = tensor("sd15.step0.model_output"), sample = tensor("sd15.step0.sample")
        var generator = PhiloxGenerator(seed: 7)
        let deterministic = try s.step(modelOutput: modelOutput, timestep: 501, sample: sample, eta: 0, generator: &generator)
        XCTAssertEqual(generator.offset, 0, "eta 0 must not consume random numbers (diffusers draws only when eta > 0)")
        let reference = try s.step(modelOutput: modelOutput, timestep: 501, sample: sample)
        XCTAssertEqual(deterministic.prevSample.toArray(), reference.prevSample.toArray())

        var copy = generator
        let noisy = try s.step(modelOutput: modelOutput, timestep: 501, sample: sample, eta: 1, generator: &generator)
        let noise = Tensor.randn(sample.shape, generator: &copy)
        let explicit = try s.step(modelOutput: modelOutput, timestep: 501, sample: sample, eta: 1, varianceNoise: noise)
        XCTAssertEqual(noisy.prevSample.toArray(), explicit.prevSample.toArray())
        XCTAssertEqual(generator, copy)
    }

    func testStepArgumentErrors() throws {
        var s = try scheduler("sd15")
        let x = tensor("sd15.step0.sample")
        XCTAssertThrowsError(try s.step(modelOutput: x, timestep: 901, sample: x)) { error in
            XCTAssertEqual(error as? SchedulerError, .timestepsNotSet)
        }
        try s.setTimesteps(10)
        XCTAssertThrowsError(try s.step(modelOutput: x, timestep: 1000, sample: x)) { error in
            XCTAssertEqual(error as? SchedulerError, .timestepOutOfRange(timestep: 1000, numTrainTimesteps: 1000))
        }
        XCTAssertThrowsError(try s.step(modelOutput: x, timestep: 901, sample: x, eta: 1)) { error in
            XCTAssertTrue("\(error)".contains("varianceNoise"), "\(error)")
        }
        XCTAssertThrowsError(try s.step(modelOutput: x.reshape([2, -1]), timestep: 901, sample: x)) { error in
            XCTAssertTrue("\(error)".contains("modelOutput"), "\(error)")
        }
        XCTAssertThrowsError(try s.setTimesteps(1001))
        XCTAssertThrowsError(try s.setTimesteps(0))
    }

    // MARK: - addNoise / velocity

    /// Checked against √ᾱ·x + √(1 − ᾱ)·n evaluated by hand in double from diffusers' ᾱ.
    func testAddNoiseAndVelocityMatchTheForwardProcess() throws {
        let s = try scheduler("sd15")
        let alphas = tensor("sd15.alphas_cumprod").toArray()
        let x = tensor("sd15.step0.sample"), noise = tensor("sd15.step0.noise")
        let timesteps = [999, 3]
        let noisy = try s.addNoise(original: x, noise: noise, timesteps: timesteps).toArray()
        let velocity = try s.getVelocity(sample: x, noise: noise, timesteps: timesteps).toArray()
        let xs = x.toArray(), ns = noise.toArray(), per = xs.count / 2
        for i in 0..<xs.count {
            let a = alphas[timesteps[i / per]]
            XCTAssertEqual(noisy[i], a.squareRoot() * xs[i] + (1 - a).squareRoot() * ns[i], accuracy: 1e-6)
            XCTAssertEqual(velocity[i], a.squareRoot() * ns[i] - (1 - a).squareRoot() * xs[i], accuracy: 1e-6)
        }
        XCTAssertThrowsError(try s.addNoise(original: x, noise: noise, timesteps: [1, 2, 3]))
        XCTAssertTrue(s.scaleModelInput(x, timestep: 5) === x)
    }

    // MARK: - stepWithLogProb

    func testLogProbMatchesDDPOReference() throws {
        for name in configNames {
            var s = try scheduler(name)
            try s.setTimesteps(10)
            for (i, c) in fixture.configs[name]!.logprobs.enumerated() {
                let key = "\(name).logprob\(i)"
                let modelOutput = tensor("\(key).model_output").contiguousCopy().requiringGrad()
                let out = try s.stepWithLogProb(
                    modelOutput: modelOutput, timesteps: c.timesteps, sample: tensor("\(key).sample"), eta: c.eta,
                    prevSample: c.mode == "score" ? tensor("\(key).prev_sample") : nil,
                    noise: c.mode == "sample" ? tensor("\(key).noise") : nil)
                let label = "\(key) (\(c.mode), t=\(c.timesteps), eta=\(c.eta))"
                XCTAssertEqual(out.logProb.shape, [c.timesteps.count], label)
                for (actual, field) in [(out.prevSample, "prev_sample"), (out.logProb, "log_prob")] {
                    let precise = tensor("\(key).\(field)_f64"), ddpo = tensor("\(key).\(field)")
                    assertClose(actual, precise, "\(label) \(field) vs float64")
                    assertClose(actual, ddpo, slack: (ddpo - precise).abs(), "\(label) \(field) vs DDPO float32")
                }
                (out.logProb * tensor("\(key).grad_weight")).sum().backward()
                assertClose(modelOutput.grad!, tensor("\(key).grad_model_output_f64"), rtol: 1e-4,
                            "\(label) d log_prob / d model_output")
            }
        }
    }

    /// With x_{t−1} = μ exactly (zero noise), every element's density is −log σ − log √(2π), so
    /// the mean over non-batch axes is that value; σ computed by hand in double from ᾱ.
    func testLogProbIsMeanOverNonBatchDims() throws {
        var s = try scheduler("sd15")
        try s.setTimesteps(50)  // Δ = 20
        let timesteps = [981, 21, 1]  // the last clamps to t_prev = 0
        let shape = [3, 4, 5, 6]
        let modelOutput = Tensor.randn(shape, seed: 1), sample = Tensor.randn(shape, seed: 2)
        let eta = 0.7
        let out = try s.stepWithLogProb(modelOutput: modelOutput, timesteps: timesteps, sample: sample, eta: eta,
                                        noise: Tensor(zeros: shape))
        let alphas = s.alphasCumprod.map { Double($0) }
        for (b, t) in timesteps.enumerated() {
            let at = alphas[t], ap = alphas[max(t - 20, 0)]
            let std = eta * ((1 - ap) / (1 - at) * (1 - at / ap)).squareRoot()
            XCTAssertEqual(out.logProb.toArray()[b], -Foundation.log(std) - 0.5 * Foundation.log(2 * Double.pi),
                           accuracy: 1e-5 * abs(Foundation.log(std)) + 1e-6, "sample \(b), t=\(t)")
        }
    }

    /// Re-scoring the x_{t−1} a sampling call drew gives the same log-prob and the same gradient
    /// (the sampled x_{t−1} enters the density as a constant, as in DDPO).
    func testLogProbScoresItsOwnSampleLikeTheSampledCall() throws {
        var s = try scheduler("linear_v_trailing")
        try s.setTimesteps(10)
        let shape = [2, 2, 3, 3]
        let modelOutput = Tensor.randn(shape, seed: 3).requiringGrad(), sample = Tensor.randn(shape, seed: 4)
        var generator = PhiloxGenerator(seed: 11)
        let sampled = try s.stepWithLogProb(modelOutput: modelOutput, timesteps: [899, 99], sample: sample, eta: 1,
                                            generator: &generator)
        XCTAssertEqual(generator.offset, UInt64((sampled.prevSample.numel + 3) / 4))
        sampled.logProb.sum().backward()
        let sampledGrad = modelOutput.grad!
        modelOutput.grad = nil
        let scored = try s.stepWithLogProb(modelOutput: modelOutput, timesteps: [899, 99], sample: sample, eta: 1,
                                           prevSample: sampled.prevSample.detach())
        scored.logProb.sum().backward()
        assertClose(scored.logProb, sampled.logProb, "re-scored log-prob")
        assertClose(modelOutput.grad!, sampledGrad, "re-scored gradient")
    }

    /// Scoring a given x_{t−1}: d log p / d modelOutput and d sample by central differences.
    /// (When x_{t−1} is sampled, DDPO holds it constant in the density, so its value no longer
    /// depends on the model output; that gradient is checked against torch in
    /// testLogProbMatchesDDPOReference and against scoring in testLogProbScoresItsOwnSample….)
    func testLogProbGradientMatchesFiniteDifferences() throws {
        var cases: [(String, DDIMSchedulerConfig)] = []
        for prediction in PredictionType.allCases {
            var c = DDIMSchedulerConfig()
            c.predictionType = prediction
            c.clipSample = false
            cases.append(("\(prediction.rawValue)", c))
        }
        var clipped = DDIMSchedulerConfig()
        clipped.clipSampleRange = 0.8
        cases.append(("clip_sample", clipped))
        var thresholded = DDIMSchedulerConfig()
        thresholded.thresholding = true
        thresholded.dynamicThresholdingRatio = 0.8
        thresholded.sampleMaxValue = 1.6
        cases.append(("thresholding", thresholded))

        let shape = [3, 2, 3, 3]
        for (label, config) in cases {
            var s = try DDIMScheduler(config: config)
            try s.setTimesteps(20)
            let timesteps = [950, 500, 100]
            let modelOutput = randomDouble(shape, seed: 21, scale: 0.8)
            let sample = randomDouble(shape, seed: 22, scale: 1.2)
            let prevSample = randomDouble(shape, seed: 23)
            assertGradientsMatch([modelOutput, sample], label) { inputs in
                try! s.stepWithLogProb(modelOutput: inputs[0], timesteps: timesteps, sample: inputs[1], eta: 1,
                                       prevSample: prevSample).logProb
            }
        }
    }

    func testLogProbRefusesEtaZeroOrNegative() throws {
        var s = try scheduler("sd15")
        try s.setTimesteps(10)
        let x = tensor("sd15.logprob0.sample")
        for eta in [0.0, -1.0] {
            XCTAssertThrowsError(try s.stepWithLogProb(modelOutput: x, timestep: 901, sample: x, eta: eta, noise: x)) { error in
                guard case SchedulerError.undefinedLogProbability(let message) = error else { return XCTFail("\(error)") }
                XCTAssertTrue(message.contains("eta"), message)
            }
            var generator = PhiloxGenerator(seed: 5)
            XCTAssertThrowsError(try s.stepWithLogProb(modelOutput: x, timestep: 901, sample: x, eta: eta, generator: &generator))
            XCTAssertEqual(generator.offset, 0, "a refused call must not consume random numbers")
        }
    }

    /// At t = 0 ddpo-pytorch's clamp makes t_prev = t, σ = 0 and its log-prob inf/NaN; we throw.
    func testLogProbRefusesZeroNoiseLevelWhereDDPOGivesNaN() throws {
        var checked = 0
        for name in configNames {
            guard let undefined = fixture.configs[name]!.ddpo_undefined_at_zero else { continue }
            XCTAssertEqual(undefined.log_prob_finite, [false, true, true], "the fixture shows DDPO's NaN")
            var s = try scheduler(name)
            try s.setTimesteps(10)
            let x = Tensor.randn([3, 2, 3, 3], seed: 9)
            XCTAssertThrowsError(try s.stepWithLogProb(modelOutput: x, timesteps: undefined.timesteps, sample: x,
                                                       eta: 1, noise: x)) { error in
                guard case SchedulerError.undefinedLogProbability(let message) = error else { return XCTFail("\(error)") }
                XCTAssertTrue(message.contains("timestep 0"), message)
            }
            checked += 1
        }
        XCTAssertGreaterThan(checked, 0)
    }

    /// `timestepsWithoutLogProbability` lists exactly the schedule's timesteps where the step with
    /// log-probability throws (checked step by step, for every fixture config and spacing at several
    /// step counts): timestep 0, the one step whose σ is 0 (the fixture above shows DDPO's NaN there).
    /// By diffusers' set_timesteps (the timestep fixtures), "linspace" always ends at 0, "leading"
    /// ends at steps_offset, and "trailing" at round(T/n) − 1, so 0 from n > 2T/3 on.
    func testTimestepsWithoutLogProbabilityAreThoseTheStepRefuses() throws {
        var sawZero = false, sawNone = false
        for name in configNames {
            for spacing in TimestepSpacing.allCases {
                var config = try scheduler(name).config
                config.timestepSpacing = spacing
                var s = try DDIMScheduler(config: config)
                for n in [1, 2, 10, 50, 700] where n <= config.numTrainTimesteps {
                    try s.setTimesteps(n)
                    let listed = s.timestepsWithoutLogProbability(eta: 1)
                    let x = Tensor.randn([1, 2, 2, 2], seed: 4)
                    let refused = s.timesteps.filter { t in
                        (try? s.stepWithLogProb(modelOutput: x, timestep: t, sample: x, eta: 1, noise: x)) == nil
                    }
                    XCTAssertEqual(listed, refused, "\(name), \(spacing), \(n) steps")
                    XCTAssertEqual(listed, s.timesteps.last == 0 ? [0] : [], "\(name), \(spacing), \(n) steps")
                    if spacing == .linspace { XCTAssertEqual(listed, [0], "\(name), linspace, \(n) steps") }
                    sawZero = sawZero || !listed.isEmpty
                    sawNone = sawNone || listed.isEmpty
                }
            }
        }
        XCTAssertTrue(sawZero && sawNone)
        var s = try scheduler("sd15")
        try s.setTimesteps(10)
        XCTAssertEqual(s.timestepsWithoutLogProbability(eta: 0), s.timesteps, "eta 0: no step has a density")
    }

    func testLogProbArgumentErrors() throws {
        var s = try scheduler("sd15")
        let x = tensor("sd15.logprob0.sample")
        XCTAssertThrowsError(try s.stepWithLogProb(modelOutput: x, timestep: 901, sample: x, eta: 1, noise: x)) { error in
            XCTAssertEqual(error as? SchedulerError, .timestepsNotSet)
        }
        try s.setTimesteps(10)
        XCTAssertThrowsError(try s.stepWithLogProb(modelOutput: x, timestep: 901, sample: x, eta: 1))
        XCTAssertThrowsError(try s.stepWithLogProb(modelOutput: x, timestep: 901, sample: x, eta: 1, prevSample: x, noise: x))
        XCTAssertThrowsError(try s.stepWithLogProb(modelOutput: x, timesteps: [901, 801], sample: x, eta: 1, noise: x)) { error in
            XCTAssertTrue("\(error)".contains("timesteps"), "\(error)")
        }
        XCTAssertThrowsError(try s.stepWithLogProb(modelOutput: x, timesteps: [901, 801, -1], sample: x, eta: 1, noise: x))
    }

    // MARK: - Config decoding

    func testStableDiffusionPNDMConfigDecodesAsDDIM() throws {
        let c = try scheduler("sd15").config
        XCTAssertEqual(c.betaSchedule, .scaledLinear)
        XCTAssertEqual(c.betaStart, 0.00085)
        XCTAssertEqual(c.betaEnd, 0.012)
        XCTAssertFalse(c.setAlphaToOne)
        XCTAssertEqual(c.stepsOffset, 1)
        XCTAssertFalse(c.clipSample)
        XCTAssertNil(c.trainedBetas)
        XCTAssertEqual(c.predictionType, .epsilon)
        XCTAssertEqual(c.timestepSpacing, .leading)
        // Missing fields take DDIM's defaults, as DDIMScheduler.from_config does.
        let defaults = try scheduler("defaults").config
        XCTAssertEqual(defaults, DDIMSchedulerConfig())
        XCTAssertTrue(defaults.clipSample)
        XCTAssertTrue(defaults.setAlphaToOne)
    }

    func testConfigFromFileAndRoundTrip() throws {
        let dir = FileManager.default.temporaryDirectory.appendingPathComponent("ddim-config-\(UUID().uuidString)")
        try FileManager.default.createDirectory(at: dir, withIntermediateDirectories: true)
        defer { try? FileManager.default.removeItem(at: dir) }
        let url = dir.appendingPathComponent("scheduler_config.json")
        try Self.loaded.configJSON["zero_snr"]!.write(to: url)
        let fromFile = try DDIMScheduler(contentsOf: url)
        XCTAssertEqual(fromFile.alphasCumprod, try scheduler("zero_snr").alphasCumprod)

        let encoded = try JSONEncoder().encode(fromFile.config)
        let object = try JSONSerialization.jsonObject(with: encoded) as! [String: Any]
        XCTAssertEqual(object["_class_name"] as? String, "DDIMScheduler")
        XCTAssertEqual(object["rescale_betas_zero_snr"] as? Bool, true)
        XCTAssertTrue(object["trained_betas"] is NSNull)
        XCTAssertEqual(try JSONDecoder().decode(DDIMSchedulerConfig.self, from: encoded), fromFile.config)

        try Data("{\"prediction_type\": \"flow\"}".utf8).write(to: url)
        XCTAssertThrowsError(try DDIMScheduler(contentsOf: url)) { error in
            XCTAssertTrue("\(error)".contains(url.path) && "\(error)".contains("prediction_type"), "\(error)")
        }
        XCTAssertThrowsError(try DDIMScheduler(contentsOf: dir.appendingPathComponent("missing.json"))) { error in
            XCTAssertTrue("\(error)".contains("missing.json"), "\(error)")
        }
    }

    func testInvalidConfigFieldsThrowNamingTheField() {
        let cases: [(String, String)] = [
            ("{\"prediction_type\": \"flow_prediction\"}", "prediction_type"),
            ("{\"beta_schedule\": \"exp\"}", "beta_schedule"),
            ("{\"timestep_spacing\": \"karras\"}", "timestep_spacing"),
            ("{\"clip_sample\": null}", "clip_sample"),
            ("{\"num_train_timesteps\": \"1000\"}", "num_train_timesteps"),
            ("{\"num_train_timesteps\": 999.5}", "num_train_timesteps"),
            ("{\"num_train_timesteps\": 0}", "num_train_timesteps"),
            ("{\"num_train_timesteps\": 3, \"trained_betas\": [0.1, 0.2]}", "trained_betas"),
            ("{\"dynamic_thresholding_ratio\": 1.5}", "dynamic_thresholding_ratio"),
            ("{\"steps_offset\": -1}", "steps_offset"),
        ]
        for (json, field) in cases {
            XCTAssertThrowsError(try JSONDecoder().decode(DDIMSchedulerConfig.self, from: Data(json.utf8)), json) { error in
                guard case SchedulerError.invalidConfigField(let named, let message) = error else { return XCTFail("\(json): \(error)") }
                XCTAssertEqual(named, field, json)
                XCTAssertFalse(message.isEmpty)
            }
        }
        // Fields of other schedulers are ignored; integers written as 1000.0 are accepted.
        let other = "{\"_class_name\": \"PNDMScheduler\", \"skip_prk_steps\": true, \"num_train_timesteps\": 1000.0}"
        XCTAssertEqual(try? JSONDecoder().decode(DDIMSchedulerConfig.self, from: Data(other.utf8)), DDIMSchedulerConfig())
    }

    // MARK: - Helpers

    /// |actual − expected| <= rtol·(|expected| + max|expected|) + atol + slack, elementwise
    /// (without the max term when `relativeToMax` is false).
    private func assertClose(_ actual: Tensor, _ expected: Tensor, rtol: Double = 1e-5, atol: Double = 0,
                             relativeToMax: Bool = true, slack: Tensor? = nil,
                             _ message: String, file: StaticString = #filePath, line: UInt = #line) {
        XCTAssertEqual(actual.shape, expected.shape, "\(message): shape", file: file, line: line)
        let a = actual.toArray(), e = expected.toArray()
        let extra = slack?.toArray() ?? [Double](repeating: 0, count: e.count)
        let scale = relativeToMax ? (e.map { abs($0) }.max() ?? 0) : 0
        for i in 0..<min(a.count, e.count) where !(abs(a[i] - e[i]) <= rtol * (abs(e[i]) + scale) + atol + extra[i]) {
            return XCTFail("\(message): element \(i) is \(a[i]), expected \(e[i])", file: file, line: line)
        }
    }

    /// Bit-identical float arrays; reports the first difference and how many differ.
    private func assertSameFloats(_ actual: [Float], _ expected: [Float], _ message: String,
                                  file: StaticString = #filePath, line: UInt = #line) {
        XCTAssertEqual(actual.count, expected.count, "\(message): count", file: file, line: line)
        let n = min(actual.count, expected.count)
        if let i = (0..<n).first(where: { actual[$0].bitPattern != expected[$0].bitPattern }) {
            let mismatches = zip(actual, expected).filter { $0.bitPattern != $1.bitPattern }.count
            XCTFail("\(message): element \(i) is \(actual[i]), expected \(expected[i]) (\(mismatches) differ)",
                    file: file, line: line)
        }
    }

    /// A float64 tensor from a seeded normal stream.
    private func randomDouble(_ shape: [Int], seed: UInt64, scale: Double = 1) -> Tensor {
        var g = PhiloxGenerator(seed: seed)
        return Tensor.randn(shape, generator: &g, std: scale, dtype: .float64)
    }

    /// Central differences in float64 of sum(f(inputs)·w) for a fixed random w, against autograd,
    /// with PyTorch gradcheck's tolerances (eps 1e-6, atol 1e-5, rtol 1e-3).
    private func assertGradientsMatch(_ inputs: [Tensor], _ message: String, file: StaticString = #filePath,
                                      line: UInt = #line, _ f: ([Tensor]) -> Tensor) {
        let eps = 1e-6, atol = 1e-5, rtol = 1e-3
        for input in inputs { input.requiresGrad = true; input.grad = nil }
        let probe = f(inputs)
        let weights = randomDouble(probe.shape, seed: 12345)
        (probe * weights).sum().backward()
        func objective() -> Double { withNoGrad { (f(inputs) * weights).sum().item() } }
        for (index, input) in inputs.enumerated() {
            let analytic = input.grad?.toArray() ?? [Double](repeating: 0, count: input.numel)
            let p = input.pointer(as: Double.self)
            for i in 0..<input.numel {
                let saved = p[i]
                p[i] = saved + eps
                let plus = objective()
                p[i] = saved - eps
                let minus = objective()
                p[i] = saved
                let numeric = (plus - minus) / (2 * eps)
                if abs(analytic[i] - numeric) > atol + rtol * abs(numeric) {
                    return XCTFail("\(message): input \(index) element \(i): analytic \(analytic[i]) vs numeric \(numeric)",
                                   file: file, line: line)
                }
            }
        }
    }
}
