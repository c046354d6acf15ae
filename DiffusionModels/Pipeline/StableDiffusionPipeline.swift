import Foundation

// Text-to-image sampling with Stable Diffusion 1.x / 2.x, matching diffusers 0.35.2's
// `StableDiffusionPipeline` with a DDIM scheduler (what DDPO samples with), plus the DDPO sampler
// of TRL's `pipeline_step`, which also records every latent and the log-probability of every step.
//
//   let pipe = try StableDiffusionPipeline.load(directory: URL(fileURLWithPath: "stable-diffusion-v1-5"))
//   var request = SamplingRequest(prompts: ["a photo of a cat"], numInferenceSteps: 50, guidanceScale: 7.5)
//   request.negativePrompts = ["blurry"]
//   var generator = PhiloxGenerator(seed: 42)
//   let out = try pipe.sample(request, generator: &generator) { p in print("step \(p.step)/\(p.total)") }
//   try StableDiffusionPipeline.savePNGs(out.images!, to: outputDir)        // 0.png, 1.png, ...
//
//   request.eta = 1.0                                                       // DDPO samples with eta 1
//   let trajectory = try pipe.sampleTrajectory(request, generator: &generator)
//   // trajectory.latents [B, T+1, C, h, w], .logProbs [B, T], .timesteps [B, T]
//
// The sampling loop: prompts (and negatives, "" by default) are encoded once; with classifier-free
// guidance (guidance scale > 1) the UNet runs on one batch of 2B, negatives first, and
// ε = ε_u + w·(ε_c − ε_u); the DDIM step goes from x_t to x_{t−1}; the final latents are decoded
// by the VAE, `decode(z / scaling_factor)`, into images (x / 2 + 0.5) clamped to [0, 1]. No
// autograd graph is recorded while sampling.
//
// Randomness comes from one `PhiloxGenerator`: first the initial latents (unless given), then the
// DDIM variance noise of every step (eta > 0), in step order, so a sampler resumed from a saved
// (seed, offset) continues the same stream. To replay another implementation's run, pass the
// initial latents and the per-step noise in the request.

/// What to sample: prompts, the sampler's settings, and optionally the noise to start from.
public struct SamplingRequest {
    /// One prompt per image (times `imagesPerPrompt`).
    public var prompts: [String]
    /// One negative prompt per prompt, or nil for "" (diffusers' default). Used only with guidance.
    public var negativePrompts: [String]?
    /// Precomputed text-encoder states [B, N, D] replacing `prompts` (diffusers' `prompt_embeds`); the
    /// DDPO trainer encodes each batch once and reuses the states.
    public var promptEmbeddings: Tensor?
    /// Precomputed states for the negatives [B, N, D] (diffusers' `negative_prompt_embeds`).
    public var negativePromptEmbeddings: Tensor?
    public var numInferenceSteps: Int
    /// Classifier-free guidance weight w; guidance runs when w > 1.
    public var guidanceScale: Double
    /// DDIM's η: 0 is deterministic DDIM, 1 is DDPM-like (DDPO samples with 1).
    public var eta: Double
    /// Image size in pixels; nil uses the UNet's `sample_size` × the VAE scale factor.
    public var height: Int?
    public var width: Int?
    public var imagesPerPrompt: Int
    /// diffusers' `guidance_rescale` (Lin et al. 2023, §3.4); 0 leaves guidance as is.
    public var guidanceRescale: Double
    /// Use the text encoder's hidden state this many layers before the last (diffusers' `clip_skip`).
    public var clipSkip: Int?
    /// Initial latents [B·imagesPerPrompt, C, h, w] (diffusers' `latents=`); nil draws them.
    public var latents: Tensor?
    /// The variance noise of each step, for replaying a recorded run (nil draws it).
    public var stepNoise: [Tensor]?
    /// Whether to run the VAE decoder on the final latents.
    public var decode: Bool

    public init(prompts: [String], negativePrompts: [String]? = nil, numInferenceSteps: Int = 50,
                guidanceScale: Double = 7.5, eta: Double = 0, height: Int? = nil, width: Int? = nil,
                imagesPerPrompt: Int = 1, latents: Tensor? = nil, decode: Bool = true) {
        self.prompts = prompts
        self.negativePrompts = negativePrompts
        self.numInferenceSteps = numInferenceSteps
        self.guidanceScale = guidanceScale
        self.eta = eta
        self.height = height
        self.width = width
        self.imagesPerPrompt = imagesPerPrompt
        self.guidanceRescale = 0
        self.latents = latents
        self.decode = decode
    }

    /// Whether the UNet runs twice per step (unconditional and conditional), as diffusers decides.
    public var usesGuidance: Bool { guidanceScale > 1 }
}

/// Where a sampling run is, reported after every denoising step.
public struct SamplingProgress {
    /// Steps completed, 1...total.
    public var step: Int
    public var total: Int
    /// The timestep just denoised.
    public var timestep: Int
    /// The latents after this step.
    public var latents: Tensor
}

/// The result of `sample`.
public struct SamplingOutput {
    /// [B, 3, H, W] in [0, 1], nil when the request did not decode.
    public var images: Tensor?
    /// The final latents [B, C, h, w].
    public var latents: Tensor

    public init(images: Tensor?, latents: Tensor) {
        self.images = images
        self.latents = latents
    }
}

/// The DDPO trajectory of `sampleTrajectory` (TRL's `pipeline_step` output plus what training needs).
public struct SamplingTrajectory {
    /// [B, 3, H, W] in [0, 1], nil when the request did not decode.
    public var images: Tensor?
    /// x_T then every step's sample: [B, T + 1, C, h, w].
    public var latents: Tensor
    /// log p(x_{t−1} | x_t) of every step: [B, T].
    public var logProbs: Tensor
    /// The timestep of every step, the same for each sample: int64 [B, T].
    public var timesteps: Tensor
    /// The text-encoder states the UNet saw: [B, N, D] for the prompts …
    public var promptEmbeddings: Tensor
    /// … and for the negatives (nil without guidance).
    public var negativePromptEmbeddings: Tensor?
}

/// A request the pipeline cannot run: names the field and what was expected.
public struct PipelineError: Error, CustomStringConvertible, LocalizedError {
    public var field: String
    public var message: String
    public init(field: String, _ message: String) {
        self.field = field
        self.message = message
    }
    public var description: String { "\(field): \(message)" }
    public var errorDescription: String? { description }
}

public final class StableDiffusionPipeline {
    public let tokenizer: CLIPTokenizer
    public let textEncoder: CLIPTextModel
    public let unet: UNet2DConditionModel
    public let vae: AutoencoderKL
    /// Always DDIM: DDPO's log-probabilities are those of DDIM steps. Its timesteps are set by each
    /// sampling call.
    public var scheduler: DDIMScheduler
    /// The folder's `model_index.json`, when loaded from one.
    public let modelIndex: ModelIndex?
    /// The folder this pipeline was loaded from.
    public let directory: URL?
    /// A narrower type for `decodeLatents` than the VAE's weights: fp16 mixed precision on a GPU keeps
    /// the VAE in float32 and sets float16 here, so the decoder runs as diffusers' and TRL's fp16
    /// pipelines run it. The VAE's own weights stay: a batch whose images in this type are not all
    /// finite (SD's decoder can overflow float16) is decoded again with them. nil (default): the
    /// VAE's dtype. The decoder's copy in this type is made from the VAE's weights by `to(_:)` or
    /// the next decode; set this again after changing them.
    public var vaeDecodeDType: DType? { didSet { halfDecoder = nil } }
    /// The decoder in `vaeDecodeDType`, made by `to(_:)` or, failing that, by the first `decodeLatents`.
    private var halfDecoder: VAEDecoder?
    /// Batches `decodeLatents` decoded again in the VAE's dtype after a non-finite `vaeDecodeDType` result.
    public private(set) var vaeDecodeFallbacks = 0

    public init(tokenizer: CLIPTokenizer, textEncoder: CLIPTextModel, unet: UNet2DConditionModel,
                vae: AutoencoderKL, scheduler: DDIMScheduler, modelIndex: ModelIndex? = nil, directory: URL? = nil) {
        self.tokenizer = tokenizer
        self.textEncoder = textEncoder
        self.unet = unet
        self.vae = vae
        self.scheduler = scheduler
        self.modelIndex = modelIndex
        self.directory = directory
    }

    /// Where the UNet's weights are: sampling runs there (latents are drawn on the CPU from the same
    /// Philox stream and copied, so a seed gives the same start on every device).
    public var device: Device { unet.conv_in.weight.device }

    /// Moves the three models to `device` in place (tensors keep their identity, so a LoRA injected
    /// before the move moves along). Returns self.
    @discardableResult
    public func to(_ device: Device) -> StableDiffusionPipeline {
        for module in [textEncoder, unet, vae] as [Module] { _ = module.to(device) }
        halfDecoder = nil
        // Made now, beside the weights, rather than by the first decode: made then, its weights would
        // take blocks that the denoising loop had freed, and the next run would allocate those anew.
        if let half = vaeDecodeDType, half != vae.decoder.conv_in.weight.dtype { _ = halfPrecisionDecoder(half) }
        return self
    }

    /// 2^(VAE levels − 1): pixels per latent along each side (8 for SD).
    public var vaeScaleFactor: Int { 1 << max(vae.config.block_out_channels.count - 1, 0) }

    /// The default image size: the UNet's `sample_size` (latents) × `vaeScaleFactor`.
    public var defaultImageSize: (height: Int, width: Int) {
        let latent: (Int, Int)
        switch unet.config.sample_size {
        case .one(let s)?: latent = (s, s)
        case .list(let s)? where s.count == 2: latent = (s[0], s[1])
        default: latent = (64, 64)
        }
        return (latent.0 * vaeScaleFactor, latent.1 * vaeScaleFactor)
    }

    // MARK: - Prompts

    /// The text-encoder states for `prompts` as diffusers' `encode_prompt` computes them: tokens
    /// padded and truncated to the tokenizer's `model_max_length`, the last hidden state (or the
    /// `clipSkip`-th from last, final-layer-normed).
    public func encodePrompts(_ prompts: [String], clipSkip: Int? = nil) throws -> Tensor {
        let ids = try tokenizer.inputIDs(prompts, maxLength: tokenizer.modelMaxLength ?? textEncoder.config.maxPositionEmbeddings)
        return try withNoGrad { try textEncoder.promptEmbeddings(ids, clipSkip: clipSkip) }
    }

    // MARK: - Sampling

    /// Samples images as diffusers' `StableDiffusionPipeline.__call__` with a DDIM scheduler.
    public func sample(_ request: SamplingRequest, generator: inout PhiloxGenerator,
                       progress: ((SamplingProgress) -> Void)? = nil) throws -> SamplingOutput {
        let run = try denoise(request, recordTrajectory: false, generator: &generator, progress: progress)
        return SamplingOutput(images: run.images, latents: run.latents.last!)
    }

    /// `sample` with a fresh generator for `seed`.
    public func sample(_ request: SamplingRequest, seed: UInt64,
                       progress: ((SamplingProgress) -> Void)? = nil) throws -> SamplingOutput {
        var generator = PhiloxGenerator(seed: seed)
        return try sample(request, generator: &generator, progress: progress)
    }

    /// DDPO's sampler (TRL's `pipeline_step`, ddpo-pytorch's `pipeline_with_logprob`): every step is
    /// `stepWithLogProb`, and the trajectory is returned. Needs eta > 0 (the log-probability of a
    /// deterministic step does not exist).
    public func sampleTrajectory(_ request: SamplingRequest, generator: inout PhiloxGenerator,
                                 progress: ((SamplingProgress) -> Void)? = nil) throws -> SamplingTrajectory {
        let run = try denoise(request, recordTrajectory: true, generator: &generator, progress: progress)
        let batch = run.latents[0].shape[0]
        let steps = run.timesteps.count
        let timesteps = Tensor(indices: (0..<batch).flatMap { _ in run.timesteps }, shape: [batch, steps], dtype: .int64)
        return SamplingTrajectory(images: run.images, latents: Tensor.stack(run.latents, axis: 1),
                                  logProbs: Tensor.stack(run.logProbs, axis: 1), timesteps: timesteps,
                                  promptEmbeddings: run.cond, negativePromptEmbeddings: run.uncond)
    }

    /// The UNet's noise prediction with guidance applied, for latents [B, C, h, w] at one timestep:
    /// what each sampling step computes. `negative` is required exactly when `guidanceScale > 1`.
    public func guidedPrediction(latents: Tensor, timestep: Int, prompt: Tensor, negative: Tensor?,
                                 guidanceScale: Double, guidanceRescale: Double = 0) -> Tensor {
        guidedPrediction(latents: latents, timesteps: [timestep], prompt: prompt, negative: negative,
                         guidanceScale: guidanceScale, guidanceRescale: guidanceRescale)
    }

    /// The guided prediction with one timestep per sample (or one for the batch), as DDPO's training
    /// step computes it after shuffling each trajectory's timesteps (TRL's `calculate_loss` with
    /// `train_cfg`): the UNet runs once on [latents; latents] with [negative; prompt], and records a
    /// graph when grad mode is on.
    public func guidedPrediction(latents: Tensor, timesteps: [Int], prompt: Tensor, negative: Tensor?,
                                 guidanceScale: Double, guidanceRescale: Double = 0) -> Tensor {
        let steps = timesteps.map(Double.init)
        // Mixed precision: the UNet runs in its weights' dtype (float16/bfloat16 on a GPU), the
        // guidance arithmetic and everything after it in the latents' dtype (float32).
        let modelDType = unet.conv_in.weight.dtype
        let outDType = latents.dtype
        guard guidanceScale > 1, let negative else {
            return unet(sample: latents.to(modelDType), timesteps: steps, encoderHiddenStates: prompt.to(modelDType)).to(outDType)
        }
        let both = unet(sample: Tensor.concat([latents, latents], axis: 0).to(modelDType), timesteps: steps.count == 1 ? steps : steps + steps,
                        encoderHiddenStates: Tensor.concat([negative, prompt], axis: 0).to(modelDType)).to(outDType)
        let halves = both.chunk(2, axis: 0)
        let (uncond, cond) = (halves[0], halves[1])
        var guided = uncond + guidanceScale * (cond - uncond)
        if guidanceRescale > 0 { guided = Self.rescaleNoiseConfig(guided, cond, guidanceRescale) }
        return guided
    }

    /// diffusers' `rescale_noise_cfg`: match the per-sample std of the guided prediction to the
    /// conditional one's, then mix with the guided prediction by `phi`.
    static func rescaleNoiseConfig(_ guided: Tensor, _ cond: Tensor, _ phi: Double) -> Tensor {
        let axes = Array(1..<guided.rank)
        func std(_ x: Tensor) -> Tensor {  // unbiased, as torch.std
            let n = Double(axes.reduce(1) { $0 * x.shape[$1] })
            let centered = x - x.mean(axes: axes, keepDims: true)
            return (centered.square().sum(axes: axes, keepDims: true) / (n - 1)).sqrt()
        }
        let rescaled = guided * (std(cond) / std(guided))
        return phi * rescaled + (1 - phi) * guided
    }

    /// Decodes latents to images in [0, 1]: `vae.decode(z / scaling_factor)`, then (x / 2 + 0.5) clamped.
    /// The VAE runs in its own dtype, or in `vaeDecodeDType` with the float32 weights as the fallback
    /// for a batch that overflows; the images come back in the latents' dtype.
    public func decodeLatents(_ latents: Tensor) -> Tensor {
        withNoGrad {
            let z = latents / vae.config.scaling_factor
            let dtype = vae.decoder.conv_in.weight.dtype
            if let half = vaeDecodeDType, half != dtype, let decoder = halfPrecisionDecoder(half) {
                // post_quant_conv (a 1×1 convolution on the latents) stays in the VAE's dtype.
                let quantized = vae.post_quant_conv.map { $0(z.to(dtype)) } ?? z
                let x = decoder(quantized.to(half)).to(latents.dtype)
                if x.to(.float32).sum().item().isFinite { return (x / 2 + 0.5).clamp(min: 0, max: 1) }
                vaeDecodeFallbacks += 1
            }
            let x = vae.decode(z.to(dtype)).to(latents.dtype)
            return (x / 2 + 0.5).clamp(min: 0, max: 1)
        }
    }

    /// The VAE's decoder converted to `dtype` on the VAE's device, made once (nil if the weights
    /// cannot be copied, which leaves decoding to the VAE itself).
    private func halfPrecisionDecoder(_ dtype: DType) -> VAEDecoder? {
        if let halfDecoder { return halfDecoder }
        let source = vae.decoder
        var generator = PhiloxGenerator(seed: 0)
        let copy = withoutParameterInitialization { VAEDecoder(config: vae.config, dtype: dtype, generator: &generator) }
        _ = copy.to(source.conv_in.weight.device)
        guard (try? copy.load(source.stateDict())) != nil else { return nil }
        copy.gradientCheckpointing = false
        halfDecoder = copy
        return copy
    }

    private struct Run {
        var latents: [Tensor]
        var logProbs: [Tensor]
        var timesteps: [Int]
        var images: Tensor?
        var cond: Tensor
        var uncond: Tensor?
    }

    private func denoise(_ request: SamplingRequest, recordTrajectory: Bool, generator: inout PhiloxGenerator,
                         progress: ((SamplingProgress) -> Void)?) throws -> Run {
        let (cond, uncond) = try promptStates(request)
        let batch = cond.shape[0]
        let (height, width) = try imageSize(request)
        // As in diffusers, the pipeline's scheduler keeps the timesteps of the last run (DDPO's
        // training step scores stored steps with it).
        do { try self.scheduler.setTimesteps(request.numInferenceSteps) } catch {
            throw PipelineError(field: "numInferenceSteps", "\(error)")
        }
        let scheduler = self.scheduler
        let timesteps = scheduler.timesteps
        if recordTrajectory, !(request.eta > 0) {
            throw PipelineError(field: "eta", "the DDPO sampler needs eta > 0 (got \(request.eta)): a deterministic DDIM step has no log-probability")
        }
        guard request.eta >= 0, request.eta.isFinite else {
            throw PipelineError(field: "eta", "must be a finite number ≥ 0, got \(request.eta)")
        }
        let latentShape = [batch, unet.config.in_channels, height / vaeScaleFactor, width / vaeScaleFactor]
        if let noise = request.stepNoise {
            guard noise.count == timesteps.count, noise.allSatisfy({ $0.shape == latentShape }) else {
                throw PipelineError(field: "stepNoise", "expected \(timesteps.count) tensors of shape \(latentShape), got \(noise.map(\.shape))")
            }
        }
        // Latents, noise and the scheduler's arithmetic stay in float32 whatever the models' dtype
        // (a float64 pipeline keeps float64); only the UNet sees its own dtype.
        let dtype = unet.conv_in.weight.dtype == .float64 ? DType.float64 : .float32
        let device = self.device
        func onDevice(_ x: Tensor) -> Tensor { x.device == device ? x : x.copied(to: device) }
        var latents: Tensor
        if let given = request.latents {
            guard given.shape == latentShape else {
                throw PipelineError(field: "latents", "expected shape \(latentShape) (batch × channels × height/\(vaeScaleFactor) × width/\(vaeScaleFactor)), got \(given.shape)")
            }
            latents = onDevice(given.to(dtype))
        } else {
            latents = onDevice(Tensor.randn(latentShape, generator: &generator, dtype: dtype))
        }
        latents = latents * scheduler.initNoiseSigma

        var run = Run(latents: [latents], logProbs: [], timesteps: timesteps, images: nil, cond: cond, uncond: uncond)
        try withNoGrad {
            for (i, t) in timesteps.enumerated() {
                let eps = guidedPrediction(latents: scheduler.scaleModelInput(latents, timestep: t), timestep: t,
                                           prompt: cond, negative: uncond, guidanceScale: request.guidanceScale,
                                           guidanceRescale: request.guidanceRescale)
                let noise: Tensor? = request.eta > 0
                    ? onDevice(request.stepNoise?[i].to(dtype) ?? Tensor.randn(latentShape, generator: &generator, dtype: dtype))
                    : nil
                if recordTrajectory {
                    let step = try scheduler.stepWithLogProb(modelOutput: eps, timestep: t, sample: latents,
                                                             eta: request.eta, noise: noise)
                    latents = step.prevSample
                    run.logProbs.append(step.logProb)
                    run.latents.append(latents)
                } else {
                    latents = try scheduler.step(modelOutput: eps, timestep: t, sample: latents, eta: request.eta,
                                                 varianceNoise: noise).prevSample
                    run.latents = [latents]
                }
                progress?(SamplingProgress(step: i + 1, total: timesteps.count, timestep: t, latents: latents))
            }
        }
        if request.decode { run.images = decodeLatents(latents) }
        return run
    }

    /// The prompt states (repeated per image) and, with guidance, the negative states.
    private func promptStates(_ request: SamplingRequest) throws -> (Tensor, Tensor?) {
        let n = request.imagesPerPrompt
        guard n >= 1 else { throw PipelineError(field: "imagesPerPrompt", "must be ≥ 1, got \(n)") }
        let cond: Tensor
        if let given = request.promptEmbeddings {
            guard given.rank == 3 else {
                throw PipelineError(field: "promptEmbeddings", "expected [batch, tokens, \(textEncoder.config.hiddenSize)], got \(given.shape)")
            }
            cond = given
        } else {
            guard !request.prompts.isEmpty else { throw PipelineError(field: "prompts", "no prompts given") }
            cond = try encodePrompts(request.prompts, clipSkip: request.clipSkip)
        }
        let prompts = cond.shape[0]
        var uncond: Tensor?
        if request.usesGuidance {
            if let given = request.negativePromptEmbeddings {
                guard given.shape == cond.shape else {
                    throw PipelineError(field: "negativePromptEmbeddings", "shape \(given.shape) differs from the prompt states' \(cond.shape)")
                }
                uncond = given
            } else {
                let negatives = request.negativePrompts ?? Array(repeating: "", count: prompts)
                guard negatives.count == prompts else {
                    throw PipelineError(field: "negativePrompts", "\(negatives.count) negative prompts for \(prompts) prompts (give one per prompt, or none)")
                }
                uncond = try encodePrompts(negatives, clipSkip: request.clipSkip)
            }
        }
        func repeatEach(_ x: Tensor) -> Tensor {
            guard n > 1 else { return x }
            let shape = x.shape
            return x.unsqueeze(1).expand([shape[0], n, shape[1], shape[2]]).reshape([shape[0] * n, shape[1], shape[2]])
        }
        if let dims = try? unet.config.resolved().crossAttentionDims, let width = dims.first, !dims.contains(where: { $0 != width }),
           cond.shape[2] != width {
            throw PipelineError(field: "promptEmbeddings", "text states of width \(cond.shape[2]) do not fit the UNet's cross_attention_dim \(width)")
        }
        return (repeatEach(cond), uncond.map(repeatEach))
    }

    private func imageSize(_ request: SamplingRequest) throws -> (Int, Int) {
        let defaults = defaultImageSize
        let height = request.height ?? defaults.height, width = request.width ?? defaults.width
        try validateImageSize(height: height, width: width)
        return (height, width)
    }

    /// Throws unless images of `height` × `width` can be sampled: positive multiples of the VAE scale
    /// factor whose latents the UNet's down path can take (see `UNet2DConditionModel.latentSizeProblem`).
    public func validateImageSize(height: Int, width: Int) throws {
        let multiple = vaeScaleFactor
        for (name, value) in [("height", height), ("width", width)] where value <= 0 || value % multiple != 0 {
            throw PipelineError(field: name, "must be a positive multiple of \(multiple) (the VAE scale factor), got \(value)")
        }
        if let problem = unet.latentSizeProblem(height: height / multiple, width: width / multiple) {
            throw PipelineError(field: "height/width", "\(height)×\(width) images: \(problem)")
        }
    }

    // MARK: - Images

    /// Writes each image of [B, 3, H, W] in [0, 1] as `<prefix><index>.png` in `directory` (created
    /// if needed), with diffusers' conversion to bytes ((x · 255) rounded); returns the file URLs.
    @discardableResult
    public static func savePNGs(_ images: Tensor, to directory: URL, prefix: String = "") throws -> [URL] {
        try FileManager.default.createDirectory(at: directory, withIntermediateDirectories: true)
        var urls: [URL] = []
        for i in 0..<images.shape[0] {
            let url = directory.appendingPathComponent("\(prefix)\(i).png")
            try RGBImage(tensor: images.slice(0, i, i + 1)).writePNG(to: url.path)
            urls.append(url)
        }
        return urls
    }
}
