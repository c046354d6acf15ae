import Foundation

/// The DDIM sampler (Song et al., "Denoising Diffusion Implicit Models"), matching diffusers
/// 0.35.2's `DDIMScheduler`: the same float32 noise schedule, timestep sequences and step
/// arithmetic. `stepWithLogProb` (in DDIMLogProb.swift) adds DDPO's log-probability of a step.
///
/// The schedule (β, ᾱ) is float32 and bit-identical to diffusers' (zero-terminal-SNR rescaling
/// agrees to ~1e-5, as torch's CPU sqrt is not correctly rounded). Per-step scalars (σ_t and the
/// coefficients) are computed on the host in double from those ᾱ and rounded once to the sample's
/// dtype; tensors are combined with broadcast tensor ops, so gradients flow through `modelOutput`
/// and `sample`.
public struct DDIMScheduler: Sendable {
    public let config: DDIMSchedulerConfig
    /// β_t for t in 0..<numTrainTimesteps (float32, as diffusers).
    public let betas: [Float]
    /// ᾱ_t = ∏_{s ≤ t}(1 − β_s).
    public let alphasCumprod: [Float]
    /// ᾱ used by `step` after the last timestep: 1 when `set_alpha_to_one`, else ᾱ_0.
    public let finalAlphaCumprod: Float
    /// Standard deviation of the initial noise (always 1 for DDIM).
    public let initNoiseSigma: Double = 1.0
    /// Set by `setTimesteps`; nil before.
    public private(set) var numInferenceSteps: Int?
    /// The inference timesteps, descending; every training timestep until `setTimesteps` is called.
    public private(set) var timesteps: [Int]

    public init(config: DDIMSchedulerConfig = DDIMSchedulerConfig()) throws {
        try config.validate()
        self.config = config
        betas = NoiseSchedule.betas(config)
        alphasCumprod = NoiseSchedule.alphasCumprod(betas)
        finalAlphaCumprod = config.setAlphaToOne ? 1 : alphasCumprod[0]
        timesteps = Array((0..<config.numTrainTimesteps).reversed())
    }

    /// Reads `scheduler_config.json` (any diffusers scheduler's config; see `DDIMSchedulerConfig`).
    public init(contentsOf url: URL) throws {
        try self.init(config: DDIMSchedulerConfig(contentsOf: url))
    }

    /// Δ = num_train_timesteps // num_inference_steps: how far `step` jumps back.
    public var stepStride: Int? { numInferenceSteps.map { config.numTrainTimesteps / $0 } }

    /// DDIM needs no input scaling; present so pipelines can treat schedulers alike.
    public func scaleModelInput(_ sample: Tensor, timestep: Int? = nil) -> Tensor { sample }

    // MARK: - Timesteps

    /// Chooses `n` inference timesteps by `timestep_spacing`, as diffusers' `set_timesteps`.
    ///
    /// One deliberate difference: for "trailing", numpy's float `arange` sometimes yields n + 1
    /// values whose last is −1 (e.g. 61 steps of 1000); diffusers keeps that bogus timestep, here
    /// the schedule stops at the n requested.
    public mutating func setTimesteps(_ n: Int) throws {
        let total = config.numTrainTimesteps
        guard n >= 1 else {
            throw SchedulerError.invalidInferenceSteps(requested: n, numTrainTimesteps: total, reason: "need at least 1 step")
        }
        guard n <= total else {
            throw SchedulerError.invalidInferenceSteps(
                requested: n, numTrainTimesteps: total,
                reason: "cannot take more inference steps than the model was trained with")
        }
        var result: [Int]
        switch config.timestepSpacing {
        case .linspace:
            // np.linspace(0, T − 1, n).round() (half to even), descending.
            let step = n > 1 ? Double(total - 1) / Double(n - 1) : 0
            result = (0..<n).map { i in
                i == n - 1 && n > 1 ? total - 1 : Int((Double(i) * step).rounded(.toNearestOrEven))
            }.reversed()
        case .leading:
            let ratio = total / n
            result = (0..<n).reversed().map { $0 * ratio + config.stepsOffset }
        case .trailing:
            // np.round(np.arange(T, 0, −T/n)) − 1; numpy fills arange as start + i·(x₁ − x₀).
            let ratio = Double(total) / Double(n)
            let start = Double(total), delta = (start - ratio) - start
            result = (0..<n).map { i in
                let value = i == 0 ? start : (i == 1 ? start - ratio : start + Double(i) * delta)
                return Int(value.rounded(.toNearestOrEven)) - 1
            }
        }
        if let bad = result.first(where: { $0 < 0 || $0 >= total }) {
            throw SchedulerError.invalidInferenceSteps(
                requested: n, numTrainTimesteps: total,
                reason: "\(config.timestepSpacing.rawValue) spacing with steps_offset \(config.stepsOffset) gives timestep \(bad), outside 0..<\(total)")
        }
        numInferenceSteps = n
        timesteps = result
    }

    // MARK: - Step

    /// One DDIM step from `sample` at `timestep` to the previous timestep t − Δ, as diffusers'
    /// `step`. With eta > 0 the step adds eta·σ_t·`varianceNoise`, which must then be given.
    public func step(modelOutput: Tensor, timestep: Int, sample: Tensor, eta: Double = 0,
                     useClippedModelOutput: Bool = false, varianceNoise: Tensor? = nil) throws
        -> (prevSample: Tensor, predOriginalSample: Tensor) {
        if eta > 0, varianceNoise == nil {
            throw SchedulerError.invalidArgument(
                name: "varianceNoise", message: "eta is \(eta) > 0, so pass varianceNoise or a generator")
        }
        let prevTimestep = try checkedPrevious(timestep)
        let alphaPrev = prevTimestep >= 0 ? alphasCumprod[prevTimestep] : finalAlphaCumprod
        let parts = try denoise(modelOutput: modelOutput, sample: sample, alphaProdT: [alphasCumprod[timestep]],
                                alphaProdTPrev: [alphaPrev], eta: eta, useClippedModelOutput: useClippedModelOutput,
                                timesteps: [timestep])
        guard eta > 0, let noise = varianceNoise else { return (parts.mean, parts.predOriginalSample) }
        try Self.check(noise, named: "varianceNoise", like: sample)
        return (parts.mean + coefficientTensor(parts.std, like: sample) * noise, parts.predOriginalSample)
    }

    /// `step` drawing the variance noise from `generator` (only when eta > 0, as diffusers).
    public func step(modelOutput: Tensor, timestep: Int, sample: Tensor, eta: Double,
                     useClippedModelOutput: Bool = false, generator: inout PhiloxGenerator) throws
        -> (prevSample: Tensor, predOriginalSample: Tensor) {
        let noise = eta > 0
            ? Tensor.randn(modelOutput.shape, generator: &generator, dtype: modelOutput.dtype, device: modelOutput.device)
            : nil
        return try step(modelOutput: modelOutput, timestep: timestep, sample: sample, eta: eta,
                        useClippedModelOutput: useClippedModelOutput, varianceNoise: noise)
    }

    // MARK: - Forward process (training)

    /// x_t = √ᾱ_t·x₀ + √(1 − ᾱ_t)·noise, with one timestep for the batch or one per sample.
    public func addNoise(original: Tensor, noise: Tensor, timesteps: [Int]) throws -> Tensor {
        try Self.check(noise, named: "noise", like: original)
        let (a, b) = try forwardCoefficients(timesteps, like: original)
        return a * original + b * noise
    }

    /// The v-prediction target v = √ᾱ_t·noise − √(1 − ᾱ_t)·x₀ (diffusers' `get_velocity`).
    public func getVelocity(sample: Tensor, noise: Tensor, timesteps: [Int]) throws -> Tensor {
        try Self.check(noise, named: "noise", like: sample)
        let (a, b) = try forwardCoefficients(timesteps, like: sample)
        return a * noise - b * sample
    }

    private func forwardCoefficients(_ timesteps: [Int], like x: Tensor) throws -> (Tensor, Tensor) {
        let alphas = try gatherAlphas(timesteps, batch: x.shape.first ?? 1)
        return (coefficientTensor(alphas.map { Double($0).squareRoot() }, like: x),
                coefficientTensor(alphas.map { (1 - Double($0)).squareRoot() }, like: x))
    }

    // MARK: - Shared arithmetic

    /// t − Δ after checking that `setTimesteps` ran and t is a training timestep.
    func checkedPrevious(_ timestep: Int) throws -> Int {
        guard let stride = stepStride else { throw SchedulerError.timestepsNotSet }
        guard timestep >= 0, timestep < config.numTrainTimesteps else {
            throw SchedulerError.timestepOutOfRange(timestep: timestep, numTrainTimesteps: config.numTrainTimesteps)
        }
        return timestep - stride
    }

    /// ᾱ at each timestep: one for the whole batch, or one per sample.
    func gatherAlphas(_ timesteps: [Int], batch: Int) throws -> [Float] {
        guard timesteps.count == 1 || timesteps.count == batch else {
            throw SchedulerError.invalidArgument(
                name: "timesteps", message: "expected 1 or \(batch) (the batch size) timesteps, found \(timesteps.count)")
        }
        return try timesteps.map { t in
            guard t >= 0, t < config.numTrainTimesteps else {
                throw SchedulerError.timestepOutOfRange(timestep: t, numTrainTimesteps: config.numTrainTimesteps)
            }
            return alphasCumprod[t]
        }
    }

    static func check(_ tensor: Tensor, named name: String, like sample: Tensor) throws {
        guard tensor.shape == sample.shape else {
            throw SchedulerError.invalidArgument(name: name, message: "shape \(tensor.shape) differs from the sample's \(sample.shape)")
        }
        guard tensor.dtype == sample.dtype, tensor.device == sample.device else {
            throw SchedulerError.invalidArgument(
                name: name, message: "\(tensor.dtype) on \(tensor.device) differs from the sample's \(sample.dtype) on \(sample.device)")
        }
    }

    /// The deterministic part of a DDIM step (formulas 12 and 16 of the DDIM paper) with ᾱ_t and
    /// ᾱ_prev given per sample (count 1 = the whole batch): x̂₀, ε̂, eta·σ_t and the mean of x_{t−1}.
    /// `timesteps` only label errors.
    func denoise(modelOutput: Tensor, sample: Tensor, alphaProdT: [Float], alphaProdTPrev: [Float],
                 eta: Double, useClippedModelOutput: Bool, timesteps: [Int]) throws -> DenoisedStep {
        guard sample.rank >= 1 else { throw SchedulerError.invalidArgument(name: "sample", message: "needs a batch axis") }
        try Self.check(modelOutput, named: "modelOutput", like: sample)
        func coefficient(_ values: [Double]) -> Tensor { coefficientTensor(values, like: sample) }
        let alphaT = alphaProdT.map { Double($0) }, alphaPrev = alphaProdTPrev.map { Double($0) }
        let a = coefficient(alphaT.map { $0.squareRoot() })
        let b = coefficient(alphaT.map { (1 - $0).squareRoot() })

        var x0: Tensor, epsilon: Tensor
        switch config.predictionType {
        case .epsilon:
            x0 = (sample - b * modelOutput) / a
            epsilon = modelOutput
        case .sample:
            x0 = modelOutput
            epsilon = (sample - a * x0) / b
        case .vPrediction:
            x0 = a * sample - b * modelOutput
            epsilon = a * modelOutput + b * sample
        }
        if config.thresholding {
            x0 = dynamicThreshold(x0, ratio: config.dynamicThresholdingRatio, maxValue: config.sampleMaxValue)
        } else if config.clipSample {
            x0 = x0.clamp(min: -config.clipSampleRange, max: config.clipSampleRange)
        }
        if useClippedModelOutput {
            // Glide re-derives ε̂ from the clipped x̂₀.
            epsilon = (sample - a * x0) / b
        }

        // σ_t² = (1 − ᾱ_prev)/(1 − ᾱ_t) · (1 − ᾱ_t/ᾱ_prev). These scalars are computed in double:
        // 1 − ᾱ_prev − eta²σ_t² cancels to ~0 when ᾱ_t ≈ 0 (first steps of a zero-terminal-SNR or
        // cosine schedule), where float32 (diffusers) leaves rounding noise or even a NaN.
        var std = [Double](), direction = [Double]()
        for (i, (at, ap)) in zip(alphaT, alphaPrev).enumerated() {
            let s = eta * ((1 - ap) / (1 - at) * (1 - at / ap)).squareRoot()
            var remaining = 1 - ap - s * s
            if remaining < 0 {
                // Only rounding can make it negative for eta <= 1; a larger eta really overshoots.
                guard eta <= 1 else {
                    throw SchedulerError.invalidArgument(
                        name: "eta", message: "eta = \(eta) makes the step's noise eta·σ_t exceed √(1 − ᾱ_prev) at timestep \(timesteps[timesteps.count == 1 ? 0 : i]); use eta <= 1")
                }
                remaining = 0
            }
            std.append(s)
            direction.append(remaining.squareRoot())
        }
        let mean = coefficient(alphaPrev.map { $0.squareRoot() }) * x0 + coefficient(direction) * epsilon
        return DenoisedStep(mean: mean, predOriginalSample: x0, std: std)
    }
}

/// The deterministic part of a DDIM step: the mean of x_{t−1}, the (clipped) x̂₀, and the noise
/// scale eta·σ_t per sample (one value for the whole batch when ᾱ was given once).
struct DenoisedStep {
    let mean: Tensor
    let predOriginalSample: Tensor
    let std: [Double]
}

/// Per-sample scalars as a [B or 1, 1, …, 1] tensor in `sample`'s dtype and device, so they
/// broadcast over the sample in tensor ops (and carry no gradient).
func coefficientTensor(_ values: [Double], like sample: Tensor) -> Tensor {
    Tensor(values, shape: [values.count] + [Int](repeating: 1, count: Swift.max(sample.rank - 1, 0)),
           dtype: sample.dtype, device: sample.device)
}
