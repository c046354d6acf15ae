import Foundation

/// DDPO's DDIM step with log-probability (Black et al., "Training Diffusion Models with
/// Reinforcement Learning"; ddpo-pytorch's `ddim_step_with_logprob`): the step's mean μ and noise
/// scale std_t = eta·σ_t as in `step`, then the Gaussian log-density of x_{t−1} under
/// N(μ, std_t² I), averaged over all non-batch axes.
///
/// As in ddpo-pytorch:
/// - each sample may be at its own timestep (training shuffles timesteps per sample);
/// - the previous timestep is clamped, t_prev = max(t − Δ, 0), so the last step uses ᾱ_0 and
///   never `finalAlphaCumprod` (this differs from `step` only when `set_alpha_to_one` is true);
/// - the density of a sampled x_{t−1} treats it as a constant; gradients reach `modelOutput`
///   (and `sample`) through μ.
///
/// Unlike ddpo-pytorch, a step whose log-probability does not exist is an error rather than a
/// silent inf/NaN: eta <= 0 (deterministic DDIM), or a sample whose σ_t is 0 (timestep 0, where
/// t_prev = t).
extension DDIMScheduler {
    /// Scores `prevSample` when given, otherwise samples x_{t−1} = μ + std_t·`noise`; pass exactly
    /// one. `timesteps` holds one timestep for the batch or one per sample. Returns x_{t−1} and the
    /// log-probability, shape [B].
    public func stepWithLogProb(modelOutput: Tensor, timesteps: [Int], sample: Tensor, eta: Double,
                                prevSample: Tensor? = nil, noise: Tensor? = nil,
                                useClippedModelOutput: Bool = false) throws -> (prevSample: Tensor, logProb: Tensor) {
        try Self.requirePositiveEta(eta)
        switch (prevSample, noise) {
        case (nil, nil):
            throw SchedulerError.invalidArgument(
                name: "prevSample", message: "pass prevSample (to score it) or noise / a generator (to sample x_{t-1})")
        case (.some, .some):
            throw SchedulerError.invalidArgument(name: "prevSample", message: "pass either prevSample or noise, not both")
        default: break
        }
        guard let stride = stepStride else { throw SchedulerError.timestepsNotSet }
        let batch = sample.shape.first ?? 0
        let alphaT = try gatherAlphas(timesteps, batch: batch)
        let alphaPrev = timesteps.map { alphasCumprod[Swift.min(Swift.max($0 - stride, 0), config.numTrainTimesteps - 1)] }
        let parts = try denoise(modelOutput: modelOutput, sample: sample, alphaProdT: alphaT, alphaProdTPrev: alphaPrev,
                                eta: eta, useClippedModelOutput: useClippedModelOutput, timesteps: timesteps)
        if let index = parts.std.firstIndex(where: { !($0 > 0) || !$0.isFinite }) {
            throw SchedulerError.undefinedLogProbability(
                message: "at timestep \(timesteps[index]) the noise scale eta·σ_t is \(parts.std[index]) (previous timestep \(Swift.max(timesteps[index] - stride, 0))), so x_{t-1} has no density")
        }

        let next: Tensor
        if let prevSample {
            try Self.check(prevSample, named: "prevSample", like: sample)
            next = prevSample
        } else if let noise {
            try Self.check(noise, named: "noise", like: sample)
            next = parts.mean + coefficientTensor(parts.std, like: sample) * noise
        } else {
            preconditionFailure("checked above: exactly one of prevSample and noise")
        }
        let logProb = Self.gaussianLogDensity(next.detach(), mean: parts.mean, std: parts.std, like: sample)
        return (next, logProb)
    }

    /// `stepWithLogProb` sampling x_{t−1} with noise drawn from `generator`.
    public func stepWithLogProb(modelOutput: Tensor, timesteps: [Int], sample: Tensor, eta: Double,
                                useClippedModelOutput: Bool = false,
                                generator: inout PhiloxGenerator) throws -> (prevSample: Tensor, logProb: Tensor) {
        try Self.requirePositiveEta(eta)  // before drawing, so a refused call leaves the stream as it was
        let noise = Tensor.randn(modelOutput.shape, generator: &generator, dtype: modelOutput.dtype, device: modelOutput.device)
        return try stepWithLogProb(modelOutput: modelOutput, timesteps: timesteps, sample: sample, eta: eta,
                                   noise: noise, useClippedModelOutput: useClippedModelOutput)
    }

    /// One timestep for the whole batch.
    public func stepWithLogProb(modelOutput: Tensor, timestep: Int, sample: Tensor, eta: Double,
                                prevSample: Tensor? = nil, noise: Tensor? = nil,
                                useClippedModelOutput: Bool = false) throws -> (prevSample: Tensor, logProb: Tensor) {
        try stepWithLogProb(modelOutput: modelOutput, timesteps: [timestep], sample: sample, eta: eta,
                            prevSample: prevSample, noise: noise, useClippedModelOutput: useClippedModelOutput)
    }

    /// One timestep for the whole batch, noise drawn from `generator`.
    public func stepWithLogProb(modelOutput: Tensor, timestep: Int, sample: Tensor, eta: Double,
                                useClippedModelOutput: Bool = false,
                                generator: inout PhiloxGenerator) throws -> (prevSample: Tensor, logProb: Tensor) {
        try stepWithLogProb(modelOutput: modelOutput, timesteps: [timestep], sample: sample, eta: eta,
                            useClippedModelOutput: useClippedModelOutput, generator: &generator)
    }

    /// The timesteps of the current schedule (after `setTimesteps`) where DDPO's step has no
    /// log-probability at this `eta`: those whose noise scale eta·σ_t is 0. With t_prev clamped at 0
    /// that is timestep 0 (σ_0 = 0 since ᾱ_prev = ᾱ_t), which "linspace" spacing always reaches,
    /// "leading" with steps_offset 0 too, and "trailing" once the step count exceeds ⅔ of
    /// num_train_timesteps.
    /// Empty when every step can be scored; ddpo-pytorch and TRL record NaN for the others.
    public func timestepsWithoutLogProbability(eta: Double) -> [Int] {
        guard let stride = stepStride, eta > 0 else { return eta > 0 ? [] : timesteps }
        return timesteps.filter { t in
            guard t >= 0, t < config.numTrainTimesteps else { return false }
            let at = Double(alphasCumprod[t])
            let ap = Double(alphasCumprod[Swift.min(Swift.max(t - stride, 0), config.numTrainTimesteps - 1)])
            let s = eta * ((1 - ap) / (1 - at) * (1 - at / ap)).squareRoot()
            return !(s > 0) || !s.isFinite
        }
    }

    /// Why DDPO cannot score an `n`-step schedule of this config at `eta`, or nil when it can: names
    /// the schedule, its spacing and offset, and the timesteps without noise.
    public func logProbabilityProblem(steps n: Int, eta: Double) -> String? {
        var s = self
        do { try s.setTimesteps(n) } catch { return "\(error)" }
        let bad = s.timestepsWithoutLogProbability(eta: eta)
        guard !bad.isEmpty else { return nil }
        let t = s.timesteps
        let schedule = t.count <= 12 ? "\(t)"
            : "[\(t.prefix(3).map(String.init).joined(separator: ", ")), …, \(t.suffix(2).map(String.init).joined(separator: ", "))]"
        return "the \(n)-step DDIM schedule \(schedule) (timestep_spacing \"\(config.timestepSpacing.rawValue)\", steps_offset "
            + "\(config.stepsOffset) in the model's scheduler config) has a step with no noise at timestep "
            + "\(bad.map(String.init).joined(separator: ", ")) (eta·σ_t = 0 at eta \(eta)), so its log-probability does not exist"
    }

    static func requirePositiveEta(_ eta: Double) throws {
        guard eta > 0 else {
            throw SchedulerError.undefinedLogProbability(
                message: "eta is \(eta); DDIM with eta <= 0 is deterministic (std_t = 0), so x_{t-1} has no density. Use eta > 0 (DDPO samples with eta = 1.0)")
        }
    }

    /// mean over non-batch axes of −(x − μ)²/(2·std²) − log std − log √(2π). The mean, not the
    /// sum, keeps PPO's probability ratio exp(Δ log p) in range.
    static func gaussianLogDensity(_ x: Tensor, mean: Tensor, std: [Double], like sample: Tensor) -> Tensor {
        let twoVariance = coefficientTensor(std.map { 2 * $0 * $0 }, like: sample)
        let logStd = coefficientTensor(std.map { Foundation.log($0) }, like: sample)
        let density = -((x - mean).square()) / twoVariance - logStd - 0.5 * Foundation.log(2 * Double.pi)
        return density.rank > 1 ? density.mean(axes: Array(1..<density.rank)) : density
    }
}
