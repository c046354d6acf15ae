import Foundation
import TensorKit

// Training the built-in model from scratch on `ShapesDataset`, in two stages:
//
//   1. VAE: reconstruction (L1 + L2 on pixels in [-1, 1]) of posterior samples, plus a small KL
//      to the standard normal. Afterwards `scaling_factor` = 1 / std of the latents (as SD's 0.18215).
//   2. Text encoder + UNet jointly, the VAE frozen: ε-prediction MSE at uniform timesteps of the
//      1000-step scaled_linear schedule; 10 % of captions are replaced by "" so classifier-free
//      guidance works. Weights are averaged (EMA) and the average is what is saved.
//
// AdamW with linear warmup and cosine decay to 10 %, gradient norm clipped at 1. Everything is
// seeded: the same options give the same weights on the same machine.
//
//   let trainer = try Pretrainer(recipe: .standard, options: PretrainOptions(seed: 0))
//   try trainer.trainVAE { p in print(p.step, p.loss) }
//   trainer.calibrateLatentScale()
//   try trainer.trainDenoiser { p in … }
//   let pipe = trainer.pipeline()                      // sample in-process
//   try trainer.save(to: URL(fileURLWithPath: "models/shapes-sd"))   // diffusers folder, fp16

public struct PretrainOptions: Sendable, Equatable {
    public var seed: UInt64 = 0
    public var vaeSteps = 400
    public var denoiserSteps = 2000
    public var batchSize = 32
    public var vaeLearningRate = 1e-3
    public var denoiserLearningRate = 1e-3
    public var warmupSteps = 100
    /// Weight of the mean per-latent-element KL in the VAE loss.
    public var klWeight = 1e-4
    /// Fraction of captions replaced by "" (for classifier-free guidance).
    public var captionDropout = 0.1
    public var emaDecay = 0.999
    /// Stop the text encoder + UNet stage after this many seconds (nil: run every step). The
    /// learning-rate schedule still follows `denoiserSteps`; `Pretrainer.denoiserLosses.count`
    /// says how many steps ran.
    public var denoiserTimeLimit: Double? = nil
    public init(seed: UInt64 = 0) { self.seed = seed }
}

/// One training step's report.
public struct PretrainProgress: Sendable {
    public enum Stage: String, Sendable { case vae, denoiser }
    public var stage: Stage
    /// 1...total
    public var step: Int
    public var total: Int
    /// This step's loss, and the mean of the last (up to) 50 steps.
    public var loss: Double
    public var averageLoss: Double
    public var learningRate: Double
    /// Seconds since the stage began.
    public var elapsed: Double
}

public final class Pretrainer {
    public let recipe: BuiltinModelRecipe
    public let options: PretrainOptions
    public let dataset: ShapesDataset
    public let tokenizerFiles: ShapesTokenizer
    public let tokenizer: CLIPTokenizer
    public let textEncoder: CLIPTextModel
    public private(set) var vae: AutoencoderKL
    public let unet: UNet2DConditionModel
    public let scheduler: DDIMScheduler
    /// Measured by `calibrateLatentScale` (1 until then).
    public private(set) var scalingFactor = 1.0
    /// The per-step losses of each stage.
    public private(set) var vaeLosses: [Double] = []
    public private(set) var denoiserLosses: [Double] = []

    private var generator: PhiloxGenerator

    public init(recipe: BuiltinModelRecipe = .standard, options: PretrainOptions = PretrainOptions()) throws {
        self.recipe = recipe
        self.options = options
        dataset = ShapesDataset(imageSize: recipe.imageSize, seed: options.seed)
        tokenizerFiles = recipe.tokenizer
        let folder = FileManager.default.temporaryDirectory.appendingPathComponent("shapes-tokenizer-\(UUID().uuidString)")
        defer { try? FileManager.default.removeItem(at: folder) }
        try tokenizerFiles.write(to: folder)
        tokenizer = try CLIPTokenizer(directory: folder)
        generator = PhiloxGenerator(seed: options.seed &+ 0x5EED)
        textEncoder = CLIPTextModel(config: recipe.text(tokenizer: tokenizerFiles), generator: &generator)
        vae = try AutoencoderKL(config: recipe.vae(), generator: &generator)
        unet = try UNet2DConditionModel(config: recipe.unet, generator: &generator)
        scheduler = try DDIMScheduler(config: recipe.scheduler)
    }

    /// Number of parameters of each network.
    public var parameterCounts: (text: Int, vae: Int, unet: Int) {
        func count(_ m: Module) -> Int { m.parameters().reduce(0) { $0 + $1.shape.reduce(1, *) } }
        return (count(textEncoder), count(vae), count(unet))
    }

    private func learningRate(_ base: Double, step: Int, total: Int) -> Double {
        let warm = max(1, min(options.warmupSteps, total / 4))
        if step < warm { return base * Double(step + 1) / Double(warm) }
        let progress = Double(step - warm) / Double(max(1, total - warm))
        return base * (0.1 + 0.9 * 0.5 * (1 + cos(Double.pi * progress)))
    }

    // MARK: - Stage 1: VAE

    /// Trains the VAE for `options.vaeSteps` steps; returns the per-step losses.
    @discardableResult
    public func trainVAE(progress: ((PretrainProgress) -> Void)? = nil) throws -> [Double] {
        _ = vae.train()
        for p in vae.parameters() { p.requiresGrad = true }
        let optimizer = AdamW(parameters: vae.parameters(), lr: options.vaeLearningRate, weightDecay: 0)
        let start = Date()
        let latentElements = Double(recipe.latentChannels * recipe.latentSize * recipe.latentSize)
        // Stage 1 draws scenes from the first half of the index space, stage 2 from the second.
        for step in 0..<options.vaeSteps {
            let b = options.batchSize
            let (images, _) = dataset.batch((step * b)..<((step + 1) * b))
            let posterior = vae.encode(images)
            let reconstruction = vae.decode(posterior.sample(generator: &generator))
            let difference = reconstruction - images
            let loss = difference.abs().mean() + difference.square().mean()
                + options.klWeight * posterior.kl().mean() / latentElements
            optimizer.learningRate = learningRate(options.vaeLearningRate, step: step, total: options.vaeSteps)
            optimizer.zeroGrad()
            loss.backward()
            _ = clipGradNorm(vae.parameters(), maxNorm: 1)
            optimizer.step()
            let value = loss.item()
            guard value.isFinite else { throw PretrainError("the VAE loss became \(value) at step \(step + 1)") }
            vaeLosses.append(value)
            progress?(report(.vae, step, options.vaeSteps, vaeLosses, optimizer.learningRate, start))
        }
        optimizer.zeroGrad()
        for p in vae.parameters() { p.requiresGrad = false }
        _ = vae.eval()
        return vaeLosses
    }

    /// Sets `scalingFactor` to 1 / std of posterior samples of `count` images (SD's recipe for
    /// unit-variance latents), and rebuilds the VAE's config with it. Returns the factor.
    @discardableResult
    public func calibrateLatentScale(count: Int = 256) -> Double {
        let latents: Tensor = withNoGrad {
            var all: [Tensor] = []
            let b = 64
            var i = 0
            while i < count {
                let (images, _) = dataset.batch((1_000_000 + i)..<(1_000_000 + min(count, i + b)))
                all.append(vae.encode(images).sample(generator: &generator))
                i += b
            }
            return Tensor.concat(all, axis: 0)
        }
        let values = latents.toArray()
        let mean = values.reduce(0, +) / Double(values.count)
        let variance = values.reduce(0) { $0 + ($1 - mean) * ($1 - mean) } / Double(values.count - 1)
        scalingFactor = 1 / max(variance.squareRoot(), 1e-6)
        return scalingFactor
    }

    // MARK: - Stage 2: text encoder + UNet

    /// Trains the text encoder and UNet jointly for `options.denoiserSteps` steps (VAE frozen), then
    /// loads the EMA weights into them. Returns the per-step losses.
    @discardableResult
    public func trainDenoiser(progress: ((PretrainProgress) -> Void)? = nil) throws -> [Double] {
        let modules: [Module] = [textEncoder, unet]
        for m in modules { _ = m.train(); for p in m.parameters() { p.requiresGrad = true } }
        let parameters = modules.flatMap { $0.parameters() }
        let optimizer = AdamW(parameters: parameters, lr: options.denoiserLearningRate, weightDecay: 0.01)
        var ema = parameters.map { $0.contiguous().toArray().map(Float.init) }
        let start = Date()
        let trainSteps = scheduler.config.numTrainTimesteps
        var rng = PhiloxGenerator(seed: options.seed &+ 0xD1FF)
        for step in 0..<options.denoiserSteps {
            if let limit = options.denoiserTimeLimit, Date().timeIntervalSince(start) > limit { break }
            let b = options.batchSize
            let base = 2_000_000 + step * b
            let (images, captions) = dataset.batch(base..<(base + b))
            let draws = Tensor.rand([2 * b], generator: &rng, dtype: .float64).toArray()
            let prompts = captions.enumerated().map { draws[$0.offset] < options.captionDropout ? "" : $0.element }
            let timesteps = (0..<b).map { min(trainSteps - 1, Int(draws[b + $0] * Double(trainSteps))) }
            let latents = withNoGrad { vae.encode(images).sample(generator: &generator) * scalingFactor }
            let noise = Tensor.randn(latents.shape, generator: &rng)
            let noisy = try scheduler.addNoise(original: latents, noise: noise, timesteps: timesteps)
            let ids = try tokenizer.inputIDs(prompts, maxLength: recipe.maxTokens)
            let states = try textEncoder.promptEmbeddings(ids)
            let prediction = unet(sample: noisy, timesteps: timesteps.map(Double.init), encoderHiddenStates: states)
            let loss = (prediction - noise).square().mean()
            optimizer.learningRate = learningRate(options.denoiserLearningRate, step: step, total: options.denoiserSteps)
            optimizer.zeroGrad()
            loss.backward()
            _ = clipGradNorm(parameters, maxNorm: 1)
            optimizer.step()
            let value = loss.item()
            guard value.isFinite else { throw PretrainError("the denoiser loss became \(value) at step \(step + 1)") }
            denoiserLosses.append(value)
            // EMA with the usual warm-up of the decay.
            let decay = Float(min(options.emaDecay, Double(step + 1) / Double(step + 10)))
            for (i, p) in parameters.enumerated() {
                let source = p.pointer(as: Float.self)
                ema[i].withUnsafeMutableBufferPointer { e in
                    for j in 0..<e.count { e[j] = decay * e[j] + (1 - decay) * source[j] }
                }
            }
            progress?(report(.denoiser, step, options.denoiserSteps, denoiserLosses, optimizer.learningRate, start))
        }
        optimizer.zeroGrad()
        for (i, p) in parameters.enumerated() {
            let target = p.pointer(as: Float.self)
            for j in 0..<ema[i].count { target[j] = ema[i][j] }
        }
        for m in modules { _ = m.eval(); for p in m.parameters() { p.requiresGrad = false } }
        return denoiserLosses
    }

    /// Held-out losses on fixed scenes (indices from 3,000,000, never trained on), with fixed noise
    /// and timesteps: the VAE's mean absolute reconstruction error (posterior mode, pixels in
    /// [-1, 1]) and the denoiser's ε-MSE with the full captions. For measuring training progress.
    public func evaluate(count: Int = 32) throws -> (vae: Double, denoiser: Double) {
        try withNoGrad {
            let (images, captions) = dataset.batch(3_000_000..<(3_000_000 + count))
            let posterior = vae.encode(images)
            let reconstructionError = (vae.decode(posterior.mode()) - images).abs().mean().item()
            var rng = PhiloxGenerator(seed: 0xE7A1)
            let latents = posterior.mode() * scalingFactor
            let noise = Tensor.randn(latents.shape, generator: &rng)
            let steps = scheduler.config.numTrainTimesteps
            let timesteps = (0..<count).map { ($0 * steps) / count + steps / (2 * count) }
            let noisy = try scheduler.addNoise(original: latents, noise: noise, timesteps: timesteps)
            let states = try textEncoder.promptEmbeddings(try tokenizer.inputIDs(captions, maxLength: recipe.maxTokens))
            let prediction = unet(sample: noisy, timesteps: timesteps.map(Double.init), encoderHiddenStates: states)
            return (reconstructionError, (prediction - noise).square().mean().item())
        }
    }

    private func report(_ stage: PretrainProgress.Stage, _ step: Int, _ total: Int, _ losses: [Double],
                        _ lr: Double, _ start: Date) -> PretrainProgress {
        let recent = losses.suffix(50)
        return PretrainProgress(stage: stage, step: step + 1, total: total, loss: losses.last ?? .nan,
                                averageLoss: recent.reduce(0, +) / Double(max(recent.count, 1)),
                                learningRate: lr, elapsed: Date().timeIntervalSince(start))
    }

    // MARK: - Results

    /// The VAE config with the measured scaling factor.
    public var vaeConfig: AutoencoderKLConfig { recipe.vae(scalingFactor: scalingFactor) }

    /// A pipeline over the trained networks (shared, not copied), for sampling in-process.
    public func pipeline() throws -> StableDiffusionPipeline {
        let vae = try withoutParameterInitialization { try AutoencoderKL(config: vaeConfig) }
        _ = try vae.load(self.vae.stateDict())
        _ = vae.eval()
        return StableDiffusionPipeline(tokenizer: tokenizer, textEncoder: textEncoder, unet: unet, vae: vae,
                                       scheduler: scheduler)
    }

    /// Writes the diffusers folder (weights in `dtype`, float16 by default) to `directory`, atomically.
    /// `extraFiles` (name → contents) are written into the folder too (a model card, a sample grid).
    public func save(to directory: URL, dtype: DType = .float16, extraFiles: [String: Data] = [:]) throws {
        try BuiltinModelWriter.write(tokenizer: tokenizerFiles, textEncoder: textEncoder, vae: vae, vaeConfig: vaeConfig,
                                     unet: unet, scheduler: recipe.scheduler, to: directory, dtype: dtype,
                                     extraFiles: extraFiles)
    }
}

/// A pretraining run that cannot go on (a diverged loss, an unwritable folder).
public struct PretrainError: Error, CustomStringConvertible, LocalizedError {
    public var message: String
    public init(_ message: String) { self.message = message }
    public var description: String { message }
    public var errorDescription: String? { message }
}
