import Foundation

// The pipeline interface DDPO trains through (TRL's `DDPOStableDiffusionPipeline`): one object that
// fuses the Stable Diffusion pipeline with its scheduler, so the trainer sees sampling with
// log-probabilities, a scheduler step that scores a given next latent, the trainable parameters, and
// checkpoint / save_pretrained.
//
//   let pipe = try DefaultDDPOStableDiffusionPipeline(directory: modelDir)        // LoRA on (rank 4)
//   let full = try DefaultDDPOStableDiffusionPipeline(directory: modelDir, useLoRA: false)
//   let trajectory = try pipe.sample(request, generator: &g)                     // no graph recorded
//   let step = try pipe.schedulerStep(modelOutput: eps, timesteps: t, sample: x, eta: 1, prevSample: next)
//   try pipe.savePretrained(to: outDir)     // pytorch_lora_weights.safetensors, or a full diffusers folder

/// What `DDPOTrainer` needs from a pipeline. Implement it to train another sampler or model with DDPO.
public protocol DDPOPipeline: AnyObject {
    var unet: UNet2DConditionModel { get }
    var vae: AutoencoderKL { get }
    var textEncoder: CLIPTextModel { get }
    var tokenizer: CLIPTokenizer { get }
    var scheduler: DDIMScheduler { get }
    /// Whether training updates LoRA deltas (true) or the whole UNet (false).
    var usesLoRA: Bool { get }

    /// The text-encoder states for prompts (padded to the tokenizer's maximum length), no graph.
    func encodePrompts(_ prompts: [String]) throws -> Tensor
    /// DDPO sampling: images, the latents of every step and every step's log-probability. Records no graph.
    func sample(_ request: SamplingRequest, generator: inout PhiloxGenerator,
                progress: ((SamplingProgress) -> Void)?) throws -> SamplingTrajectory
    /// The guided noise prediction at per-sample timesteps (a graph is recorded in grad mode).
    func noisePrediction(latents: Tensor, timesteps: [Int], promptEmbeddings: Tensor, negativePromptEmbeddings: Tensor?,
                         guidanceScale: Double) -> Tensor
    /// One DDIM step with log-probability: scores `prevSample` when given, else samples it with `noise`.
    func schedulerStep(modelOutput: Tensor, timesteps: [Int], sample: Tensor, eta: Double,
                       prevSample: Tensor?, noise: Tensor?) throws -> (latents: Tensor, logProb: Tensor)
    /// The parameters the optimizer updates.
    func trainableParameters() -> [Tensor]
    /// The trainable weights by name (LoRA keys in the diffusers form, or UNet keys).
    func trainableStateDict() -> [String: Tensor]
    /// Restores `trainableStateDict()` output; errors name missing or mismatched keys.
    func loadTrainableStateDict(_ state: [String: Tensor], source: String) throws
    /// What the user takes away: the LoRA file, or a complete diffusers folder with the tuned UNet.
    func savePretrained(to directory: URL) throws
}

extension DDPOPipeline {
    /// One training pass's loss, as TRL 0.21's `DDPOTrainer.calculate_loss`: the UNet's prediction at
    /// each sample's timestep (guided with `sample_guidance_scale` against `negativePromptEmbeddings`
    /// when `train_cfg`, from the prompt alone otherwise), the DDIM log-probability of the stored next
    /// latents under it (eta `sample_eta`), and PPO's clipped loss (`train_clip_range`,
    /// `train_adv_clip_max`). `latents`, `nextLatents`: [B, C, h, w]; `oldLogProbs`, `advantages`: [B].
    public func trainingLoss(latents: Tensor, nextLatents: Tensor, timesteps: [Int], oldLogProbs: Tensor,
                             advantages: Tensor, promptEmbeddings: Tensor, negativePromptEmbeddings: Tensor?,
                             config: DDPOConfig) throws -> PPOLossOutput {
        let prediction = noisePrediction(
            latents: latents, timesteps: timesteps, promptEmbeddings: promptEmbeddings,
            negativePromptEmbeddings: config.train_cfg ? negativePromptEmbeddings : nil,
            guidanceScale: config.train_cfg ? config.sample_guidance_scale : 1)
        let scored = try schedulerStep(modelOutput: prediction, timesteps: timesteps, sample: latents,
                                       eta: config.sample_eta, prevSample: nextLatents, noise: nil)
        return PPOLoss.compute(logProbNew: scored.logProb, logProbOld: oldLogProbs, advantages: advantages,
                               clipRange: config.train_clip_range, advantageClipMax: config.train_adv_clip_max)
    }

    /// Writes the trainable weights as `directory/<name>` (safetensors, atomically).
    public func saveCheckpoint(to directory: URL, name: String = "trainable.safetensors") throws {
        try FileManager.default.createDirectory(at: directory, withIntermediateDirectories: true)
        try saveSafeTensors(trainableStateDict(), to: directory.appendingPathComponent(name).path)
    }

    /// Reads what `saveCheckpoint` wrote.
    public func loadCheckpoint(from directory: URL, name: String = "trainable.safetensors") throws {
        let url = directory.appendingPathComponent(name)
        try loadTrainableStateDict(try loadSafeTensors(url.path), source: url.path)
    }
}

/// TRL's `DefaultDDPOStableDiffusionPipeline`: a diffusers Stable Diffusion folder with a DDIM
/// scheduler, the VAE and text encoder frozen, and either LoRA deltas on the UNet's attention
/// projections (default: rank 4, alpha 4, Gaussian init, `to_q`/`to_k`/`to_v`/`to_out.0` of every
/// attention) or the whole UNet trainable. A folder that already holds `pytorch_lora_weights.safetensors`
/// (as `savePretrained` writes next to a model, or TRL does) starts from that LoRA, so training can
/// continue from a saved model.
public final class DefaultDDPOStableDiffusionPipeline: DDPOPipeline {
    public let pipeline: StableDiffusionPipeline
    public let usesLoRA: Bool
    /// The LoRA deltas (nil for a full fine-tune).
    public let lora: LoRANetwork?

    /// - Parameters:
    ///   - loraConfig: ranks and targets when `useLoRA` (TRL's fixed choice by default).
    ///   - seed: seeds the LoRA initialisation.
    ///   - loraWeights: a LoRA file or folder to start from instead of a fresh initialisation.
    public init(pipeline: StableDiffusionPipeline, useLoRA: Bool = true, loraConfig: LoRAConfig = LoRAConfig(),
                seed: UInt64 = 0, loraWeights: URL? = nil) throws {
        self.pipeline = pipeline
        usesLoRA = useLoRA
        for module in [pipeline.vae, pipeline.textEncoder] as [Module] { module.freeze() }
        if useLoRA {
            if let loraWeights {
                lora = try LoRANetwork.load(contentsOf: loraWeights, into: pipeline.unet, freezeBase: true)
            } else {
                lora = try LoRANetwork.inject(into: pipeline.unet, config: loraConfig, seed: seed, freezeBase: true)
            }
        } else {
            guard loraWeights == nil else {
                throw LoRAError(file: loraWeights?.path, key: "useLoRA", "a LoRA file was given for a full (non-LoRA) fine-tune")
            }
            lora = nil
            pipeline.unet.unfreeze()
        }
    }

    /// Loads `directory` (a diffusers folder); when `useLoRA` and the folder holds
    /// `pytorch_lora_weights.safetensors`, training starts from it (TRL's behaviour).
    /// `mixedPrecision` other than `.no` picks each component's dtype (see MixedPrecision; it
    /// overrides `dtype`), and the models move to `device` before the LoRA deltas are created there.
    public convenience init(directory: URL, useLoRA: Bool = true, loraConfig: LoRAConfig = LoRAConfig(), seed: UInt64 = 0,
                            variant: String? = nil, dtype: DType = .float32, mixedPrecision: MixedPrecision = .no,
                            device: Device = .cpu) throws {
        let pipeline = mixedPrecision == .no
            ? try StableDiffusionPipeline.load(directory: directory, variant: variant, dtype: dtype)
            : try StableDiffusionPipeline.load(directory: directory, variant: variant, dtype: mixedPrecision.computeDType,
                                               unetDType: mixedPrecision.unetDType(trainsWholeUNet: !useLoRA),
                                               vaeDType: mixedPrecision.vaeDType)
        pipeline.vaeDecodeDType = mixedPrecision.vaeDecodeDType
        pipeline.to(device)
        let saved = directory.appendingPathComponent(LoRANetwork.weightName)
        let existing = useLoRA && FileManager.default.fileExists(atPath: saved.path) ? saved : nil
        try self.init(pipeline: pipeline, useLoRA: useLoRA, loraConfig: loraConfig, seed: seed, loraWeights: existing)
    }

    public var unet: UNet2DConditionModel { pipeline.unet }
    public var vae: AutoencoderKL { pipeline.vae }
    public var textEncoder: CLIPTextModel { pipeline.textEncoder }
    public var tokenizer: CLIPTokenizer { pipeline.tokenizer }
    public var scheduler: DDIMScheduler { pipeline.scheduler }

    public func encodePrompts(_ prompts: [String]) throws -> Tensor { try pipeline.encodePrompts(prompts) }

    public func sample(_ request: SamplingRequest, generator: inout PhiloxGenerator,
                       progress: ((SamplingProgress) -> Void)? = nil) throws -> SamplingTrajectory {
        let wasTraining = unet.isTraining
        unet.eval()
        defer { if wasTraining { unet.train() } }
        return try pipeline.sampleTrajectory(request, generator: &generator, progress: progress)
    }

    public func noisePrediction(latents: Tensor, timesteps: [Int], promptEmbeddings: Tensor,
                                negativePromptEmbeddings: Tensor?, guidanceScale: Double) -> Tensor {
        pipeline.guidedPrediction(latents: latents, timesteps: timesteps, prompt: promptEmbeddings,
                                  negative: negativePromptEmbeddings, guidanceScale: guidanceScale)
    }

    public func schedulerStep(modelOutput: Tensor, timesteps: [Int], sample: Tensor, eta: Double,
                              prevSample: Tensor?, noise: Tensor?) throws -> (latents: Tensor, logProb: Tensor) {
        let out = try scheduler.stepWithLogProb(modelOutput: modelOutput, timesteps: timesteps, sample: sample, eta: eta,
                                                prevSample: prevSample, noise: noise)
        return (out.prevSample, out.logProb)
    }

    public func trainableParameters() -> [Tensor] {
        if let lora { return lora.parameters }
        return unet.parameters().filter(\.requiresGrad)
    }

    public func trainableStateDict() -> [String: Tensor] {
        if let lora { return lora.stateDict() }
        return unet.baseStateDict()
    }

    public func loadTrainableStateDict(_ state: [String: Tensor], source: String) throws {
        if let lora {
            let mine = lora.stateDict()
            try Self.checkSameKeys(state, mine, source: source)
            let params = Dictionary(uniqueKeysWithValues: lora.namedParameters.map { ("unet." + $0.0, $0.1) })
            withNoGrad { for (key, value) in state { params[key]!.assign(value) } }
        } else {
            do { try unet.load(state, strict: true) } catch let error as ModuleLoadError {
                throw DiffusersLoadError(path: source, "UNet weights do not match the model:\n\(error.report)", report: error.report)
            }
        }
    }

    static func checkSameKeys(_ state: [String: Tensor], _ expected: [String: Tensor], source: String) throws {
        let missing = Set(expected.keys).subtracting(state.keys).sorted()
        let unexpected = Set(state.keys).subtracting(expected.keys).sorted()
        guard missing.isEmpty, unexpected.isEmpty else {
            throw DiffusersLoadError(path: source, "LoRA weights do not match: missing \(missing.prefix(5)), unexpected \(unexpected.prefix(5))")
        }
        for (key, value) in state where value.shape != expected[key]!.shape {
            throw DiffusersLoadError(path: source, "\(key): shape \(value.shape), expected \(expected[key]!.shape)")
        }
    }

    /// LoRA: `directory/pytorch_lora_weights.safetensors` in diffusers' format (`pipe.load_lora_weights(directory)`
    /// loads it). Full fine-tune: a complete diffusers folder, the tuned `unet/` plus the other
    /// components copied from the folder the pipeline was loaded from.
    public func savePretrained(to directory: URL) throws {
        let fm = FileManager.default
        try fm.createDirectory(at: directory, withIntermediateDirectories: true)
        if let lora {
            try lora.save(to: directory)
            return
        }
        if let source = pipeline.directory {
            for name in ["model_index.json", "vae", "text_encoder", "tokenizer", "scheduler"] {
                let from = source.appendingPathComponent(name), to = directory.appendingPathComponent(name)
                guard fm.fileExists(atPath: from.path) else { continue }
                if fm.fileExists(atPath: to.path) { try fm.removeItem(at: to) }
                try fm.copyItem(at: from, to: to)
            }
        }
        try unet.savePretrained(to: directory.appendingPathComponent("unet"))
    }
}
