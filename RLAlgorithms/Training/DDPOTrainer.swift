import Foundation

// DDPO (Black et al., "Training Diffusion Models with Reinforcement Learning"), as TRL 0.21's
// `DDPOTrainer` runs it, without its defects (REFERENCES.md §2): the checkpoint limit is honoured,
// resume restores the epoch, global step, optimizer, per-prompt statistics and every random stream
// (a resumed run ends bit-identical to an uninterrupted one on CPU), checkpoints are complete on disk
// before old ones go, and non-finite rewards, log-probabilities or losses stop training with an error
// naming where.
//
//   var config = DDPOConfig(); config.mixed_precision = "no"; config.sample_batch_size = 4 …
//   let pipe = try DefaultDDPOStableDiffusionPipeline(directory: modelDir)
//   let trainer = try DDPOTrainer(config: config, reward: JPEGCompressibility(),
//                                 prompts: try PromptSource.builtin("simple_animals"), pipeline: pipe)
//   trainer.onEvent = { event in print(event) }                    // per-step and per-epoch metrics
//   try trainer.train()
//
// One epoch: `sample_num_batches_per_epoch` batches of `sample_batch_size` prompts are sampled with the
// DDPO sampler (no graph), rewarded (synchronously, or on `max_workers` background threads while the
// next batch samples), and turned into advantages (global normalisation, or the per-prompt tracker).
// Then `train_num_inner_epochs` passes: samples shuffled, each trajectory's timesteps shuffled on its
// own, the first ⌊T·train_timestep_fraction⌋ of them trained in batches of `train_batch_size`: the
// UNet's (guided, with `train_cfg`) prediction re-scores each stored step, PPO's clipped loss is
// back-propagated, and every `train_gradient_accumulation_steps × timesteps` backward passes the
// gradients are clipped and AdamW steps.
//
// Random streams (Philox, keyed by the config's seed): sampling noise, shuffles, and the prompt
// source's own generator; all three are saved in checkpoints.

/// One sample batch as the image-logging hook receives it (TRL's `[images, prompts, prompt_metadata,
/// rewards, reward_metadata]`).
public struct DDPOImageBatch {
    /// [B, 3, H, W] in [0, 1].
    public var images: Tensor
    public var prompts: [String]
    public var promptMetadata: [PromptMetadata]
    public var rewards: [Double]
    public var rewardMetadata: JSONValue
}

/// Where the trainer sends metrics and images (TensorBoard, a JSON-lines file, …).
public protocol DDPOLogger: AnyObject {
    func log(_ values: [String: Double], step: Int)
    func logImages(_ images: [(caption: String, image: RGBImage)], step: Int)
}

/// Metrics of one optimizer step (means over its accumulated backward passes).
public struct DDPOStepMetrics: Sendable, Equatable {
    public var epoch: Int
    public var innerEpoch: Int
    public var globalStep: Int
    public var loss: Double
    public var approxKL: Double
    public var clipFraction: Double
}

/// Metrics of one epoch's samples.
public struct DDPOEpochMetrics: Sendable, Equatable {
    public var epoch: Int
    public var globalStep: Int
    public var rewards: [Double]
    public var rewardMean: Double
    public var rewardStd: Double
}

/// What the trainer reports while it runs.
public enum DDPOEvent {
    /// A denoising step of sample batch `batch` (0-based) of `batches`.
    case sampling(epoch: Int, batch: Int, batches: Int, progress: SamplingProgress)
    case step(DDPOStepMetrics)
    case epoch(DDPOEpochMetrics)
    case checkpoint(epoch: Int, url: URL)
    /// The `auto` gradient-checkpointing decision, made before the first training pass.
    case checkpointing(CheckpointingPlan)
}

/// Training stopped on a non-finite quantity, or a reward or hook failed: names the epoch, the step
/// and the quantity.
public struct DDPOTrainingError: Error, CustomStringConvertible, LocalizedError {
    public var epoch: Int
    public var globalStep: Int
    public var quantity: String
    public var message: String
    public var description: String { "epoch \(epoch), global step \(globalStep): \(quantity): \(message)" }
    public var errorDescription: String? { description }
}

public final class DDPOTrainer {
    public let config: DDPOConfig
    public let pipeline: DDPOPipeline
    public let reward: any RewardFunction
    public private(set) var prompts: PromptSource
    public let optimizer: Optimizer
    /// TRL's `image_samples_hook(prompt_image_data, global_step, tracker)`.
    public var imageSamplesHook: (([DDPOImageBatch], Int, DDPOLogger?) throws -> Void)?
    public var logger: DDPOLogger?
    /// Metrics and progress as they happen.
    public var onEvent: ((DDPOEvent) -> Void)?
    /// Who decides whether the UNet checkpoints its blocks in the training passes: `.auto` lets the
    /// trainer measure a pass on a GPU before the first one and checkpoint only when it would not fit
    /// (`CheckpointingPlan`); `.unchanged` (the default) keeps `unet.gradientCheckpointing`.
    public var gradientCheckpointing: GradientCheckpointingPolicy = .unchanged
    /// What `.auto` measures with; nil: the CUDA allocator of the UNet's device (none on the CPU,
    /// where `.auto` keeps the UNet's setting).
    public var memoryMeter: TrainingMemoryMeter?
    /// The `.auto` decision once it is made.
    public private(set) var checkpointingPlan: CheckpointingPlan?

    /// The next epoch to run (after a resume: the checkpoint's epoch + 1).
    public private(set) var nextEpoch = 0
    /// Optimizer steps taken so far (restored on resume).
    public private(set) var globalStep = 0
    public private(set) var statTracker: PerPromptStatTracker?
    /// The per-epoch metrics of this process's run (not restored on resume).
    public private(set) var history: [DDPOEpochMetrics] = []
    /// Where this run writes checkpoints: `<logdir>/<run_name>/checkpoints`.
    public let checkpointDirectory: URL

    var samplingGenerator: PhiloxGenerator
    var shuffleGenerator: PhiloxGenerator
    let negativeEmbedding: Tensor
    /// Loss scaling when the UNet computes in float16 (mixed_precision "fp16"); nil otherwise.
    public private(set) var lossScaler: DynamicLossScaler?

    /// Validates the config (TRL's checks and ours, for the CPU unless `precision` says otherwise),
    /// builds the optimizer over the pipeline's trainable parameters, and resumes from
    /// `config.resume_from` when set.
    public init(config: DDPOConfig, reward: any RewardFunction, prompts: PromptSource, pipeline: DDPOPipeline,
                precision: PrecisionSupport = .cpu, runDirectory: URL? = nil) throws {
        try config.validate(numProcesses: 1, precision: precision)
        try Self.checkSchedule(config, scheduler: pipeline.scheduler)
        self.config = config
        self.reward = reward
        self.prompts = prompts
        self.pipeline = pipeline
        let parameters = pipeline.trainableParameters()
        guard !parameters.isEmpty else {
            throw DDPOTrainingError(epoch: 0, globalStep: 0, quantity: "trainable parameters", message: "the pipeline has none")
        }
        let betas = (config.train_adam_beta1, config.train_adam_beta2)
        if config.train_use_8bit_adam {
            optimizer = AdamW8bit(parameters: parameters, lr: config.train_learning_rate, betas: betas,
                                  eps: config.train_adam_epsilon, weightDecay: config.train_adam_weight_decay)
        } else {
            optimizer = AdamW(parameters: parameters, lr: config.train_learning_rate, betas: betas,
                              eps: config.train_adam_epsilon, weightDecay: config.train_adam_weight_decay)
        }
        let seed = UInt64(bitPattern: Int64(config.seed))
        // Distinct streams from one seed: the key's high word tells them apart.
        samplingGenerator = PhiloxGenerator(seed: seed ^ (0x5A4D_504C << 32))
        shuffleGenerator = PhiloxGenerator(seed: seed ^ (0x5348_5546 << 32))
        if config.per_prompt_stat_tracking {
            statTracker = PerPromptStatTracker(bufferSize: config.per_prompt_stat_tracking_buffer_size,
                                               minCount: config.per_prompt_stat_tracking_min_count)
        }
        negativeEmbedding = try pipeline.encodePrompts([config.negative_prompts])
        if pipeline.unet.conv_in.weight.dtype == .float16 { lossScaler = DynamicLossScaler() }
        let run = runDirectory ?? URL(fileURLWithPath: config.logdir).appendingPathComponent(config.run_name.isEmpty ? config.exp_name : config.run_name)
        checkpointDirectory = run.appendingPathComponent("checkpoints")
        if !config.resume_from.isEmpty {
            try resume(from: URL(fileURLWithPath: (config.resume_from as NSString).expandingTildeInPath))
        }
    }

    /// Refuses a sampling schedule with a step DDPO cannot score: one whose noise scale eta·σ_t is 0
    /// (the DDIM step from timestep 0 is deterministic), where ddpo-pytorch and TRL record a NaN
    /// log-probability (checked: TRL 0.21's `scheduler_step` at timestep 0) and every loss is NaN.
    public static func checkSchedule(_ config: DDPOConfig, scheduler: DDIMScheduler) throws {
        guard let problem = scheduler.logProbabilityProblem(steps: config.sample_num_steps, eta: config.sample_eta) else { return }
        throw DDPOConfigError(field: "sample_num_steps", problem + " (TRL's scheduler_step returns NaN there, and every "
            + "loss after it is NaN). Use a schedule that stops above timestep 0: steps_offset 1 with \"leading\" spacing "
            + "(as Stable Diffusion's own configs have it), or \"trailing\" spacing with fewer steps")
    }

    // MARK: - training

    /// Runs epochs `nextEpoch..<epochs` (default `num_epochs`), checkpointing every `save_freq` epochs
    /// and after the last.
    public func train(epochs: Int? = nil) throws {
        let end = epochs ?? config.num_epochs
        while nextEpoch < end {
            let epoch = nextEpoch
            try step(epoch: epoch)
            nextEpoch = epoch + 1
            if nextEpoch % config.save_freq == 0 || nextEpoch == end {
                let url = try saveCheckpoint(epoch: epoch)
                onEvent?(.checkpoint(epoch: epoch, url: url))
            }
        }
    }

    /// A sampled batch, split per sample for shuffling.
    struct Sample {
        var promptEmbedding: Tensor     // [N, D]
        var latents: Tensor             // [T+1, C, h, w]
        var logProbs: Tensor            // [T]
        var timesteps: [Int]            // [T]
        var advantage: Double = 0
    }

    /// One epoch: sample, reward, advantages, inner epochs of PPO updates.
    public func step(epoch: Int) throws {
        let epochStart = Date()
        let device = pipeline.unet.conv_in.weight.device
        if case .cuda(let index) = device { CUDA.resetPeakMemory(index) }
        let batchSize = config.sample_batch_size
        let batches = config.sample_num_batches_per_epoch
        var samples: [Sample] = []
        var imageBatches: [DDPOImageBatch] = []
        var promptKeys: [String] = []
        let rewards = RewardQueue(reward: reward, workers: config.async_reward_computation ? config.max_workers : 0)

        let negatives = negativeEmbedding.expand([batchSize] + Array(negativeEmbedding.shape.dropFirst()))
        // Where the sampling part's time goes (logged beside sampling_seconds): the models (text
        // encoder, denoising loop, VAE decode; the log-probabilities' read waits for them) and the
        // reward (computed in `submit` without async workers, waited for in `results`).
        var modelSeconds = 0.0, rewardSeconds = 0.0
        for b in 0..<batches {
            let modelStart = Date()
            let picked = prompts.batch(batchSize)
            let texts = picked.map(\.prompt)
            let embeddings = try pipeline.encodePrompts(texts)
            var request = SamplingRequest(prompts: texts, numInferenceSteps: config.sample_num_steps,
                                          guidanceScale: config.sample_guidance_scale, eta: config.sample_eta)
            request.promptEmbeddings = embeddings
            request.negativePromptEmbeddings = negatives
            let trajectory = try pipeline.sample(request, generator: &samplingGenerator) { [weak self] p in
                self?.onEvent?(.sampling(epoch: epoch, batch: b, batches: batches, progress: p))
            }
            let logProbs = trajectory.logProbs.toArray()
            modelSeconds += Date().timeIntervalSince(modelStart)
            if let bad = logProbs.firstIndex(where: { !$0.isFinite }) {
                throw failure(epoch, "sampling log-probability",
                              "sample batch \(b), sample \(bad / config.sample_num_steps), step \(bad % config.sample_num_steps) is \(logProbs[bad])")
            }
            let images = trajectory.images!
            let rewardStart = Date()
            rewards.submit(images: images, prompts: texts, metadata: picked.map(\.metadata))
            rewardSeconds += Date().timeIntervalSince(rewardStart)
            let steps = trajectory.timesteps.toArray().map { Int($0) }
            for i in 0..<texts.count {
                samples.append(Sample(promptEmbedding: embeddings.slice(0, i, i + 1).reshape(Array(embeddings.shape.dropFirst())),
                                      latents: trajectory.latents.slice(0, i, i + 1).reshape(Array(trajectory.latents.shape.dropFirst())),
                                      logProbs: trajectory.logProbs.slice(0, i, i + 1).reshape([config.sample_num_steps]),
                                      timesteps: Array(steps[(i * config.sample_num_steps)..<((i + 1) * config.sample_num_steps)])))
            }
            // TRL keys the per-prompt statistics by the prompt decoded from its token ids.
            let ids = try pipeline.tokenizer(texts, padding: .maxLength, truncation: true).inputIDs
            promptKeys += try ids.map { try pipeline.tokenizer.decode($0, skipSpecialTokens: true) }
            imageBatches.append(DDPOImageBatch(images: images, prompts: texts, promptMetadata: picked.map(\.metadata),
                                               rewards: [], rewardMetadata: .null))
        }

        let outputs: [RewardOutput]
        let rewardWait = Date()
        do { outputs = try rewards.results() } catch {
            throw failure(epoch, "reward", "\(reward.name) failed: \(error)")
        }
        rewardSeconds += Date().timeIntervalSince(rewardWait)
        var allRewards: [Double] = []
        for (b, output) in outputs.enumerated() {
            if let bad = output.rewards.firstIndex(where: { !$0.isFinite }) {
                throw failure(epoch, "reward", "\(reward.name) gave \(output.rewards[bad]) for sample \(bad) of sample batch \(b) (prompt \"\(imageBatches[b].prompts[bad])\")")
            }
            imageBatches[b].rewards = output.rewards
            imageBatches[b].rewardMetadata = output.metadata
            allRewards += output.rewards
        }
        if let hook = imageSamplesHook {
            do { try hook(imageBatches, globalStep, logger) } catch {
                throw failure(epoch, "image_samples_hook", "\(error)")
            }
        }
        let (mean, std) = Advantages.meanAndStd(allRewards)
        let metrics = DDPOEpochMetrics(epoch: epoch, globalStep: globalStep, rewards: allRewards, rewardMean: mean, rewardStd: std)
        history.append(metrics)
        logger?.log(["reward_mean": mean, "reward_std": std, "epoch": Double(epoch)], step: globalStep)
        onEvent?(.epoch(metrics))

        let advantages: [Double]
        if var tracker = statTracker {
            advantages = tracker.update(prompts: promptKeys, rewards: allRewards)
            statTracker = tracker
        } else {
            advantages = Advantages.global(allRewards)
        }
        for i in samples.indices { samples[i].advantage = advantages[i] }

        let samplingSeconds = Date().timeIntervalSince(epochStart)
        CUDA.flushProfile("epoch \(epoch): sampling and rewards")
        // The sampling peak, kept across the probes of the checkpointing decision (they reset it).
        var samplingPeak = 0
        if case .cuda(let index) = device { samplingPeak = CUDA.memoryStats(index).peakInUse }
        if gradientCheckpointing == .auto, checkpointingPlan == nil, let meter = memoryMeter ?? defaultMemoryMeter(device) {
            let plan = planCheckpointing(samples, meter: meter)
            pipeline.unet.gradientCheckpointing = plan.checkpointing
            checkpointingPlan = plan
            logger?.log(["gradient_checkpointing": plan.checkpointing ? 1 : 0,
                         "checkpointing_estimate_mib": Double(plan.estimatedBytes) / 1_048_576,
                         "checkpointing_available_mib": Double(plan.availableBytes) / 1_048_576], step: globalStep)
            onEvent?(.checkpointing(plan))
        }
        let wasTraining = pipeline.unet.isTraining
        pipeline.unet.train()
        defer { pipeline.unet.train(wasTraining) }
        for inner in 0..<config.train_num_inner_epochs {
            try trainInnerEpoch(samples, epoch: epoch, inner: inner)
        }
        // Timing and, on a GPU, the allocator's peak for this epoch.
        var timing = ["epoch": Double(epoch), "epoch_seconds": Date().timeIntervalSince(epochStart),
                      "sampling_seconds": samplingSeconds, "sampling_model_seconds": modelSeconds,
                      "sampling_reward_seconds": rewardSeconds]
        if case .cuda(let index) = device {
            try? CUDA.synchronize(index)
            timing["epoch_seconds"] = Date().timeIntervalSince(epochStart)
            let stats = CUDA.memoryStats(index)
            timing["gpu_peak_mib"] = Double(max(stats.peakInUse, samplingPeak)) / 1_048_576
            timing["gpu_in_use_mib"] = Double(stats.inUse) / 1_048_576
            timing["gpu_cached_mib"] = Double(stats.cached) / 1_048_576
            timing["gpu_reserved_peak_mib"] = Double(stats.peakReserved) / 1_048_576
        }
        if let lossScaler { timing["loss_scale"] = lossScaler.scale }
        logger?.log(timing, step: globalStep)
        CUDA.flushProfile("epoch \(epoch): training")
    }

    private func defaultMemoryMeter(_ device: Device) -> TrainingMemoryMeter? {
        if case .cuda(let index) = device { return CUDATrainingMemoryMeter(index: index) }
        return nil
    }

    /// Measures the training pass (the guided prediction and its backward, checkpointing off) at the
    /// first train batch's prompts and timesteps on its latents cut to smaller sizes, and decides.
    /// Leaves no gradients, the UNet's mode and checkpointing as they were, and no generator moved.
    private func planCheckpointing(_ samples: [Sample], meter: TrainingMemoryMeter) -> CheckpointingPlan {
        let unet = pipeline.unet
        let chosen = Array(samples.prefix(config.train_batch_size))
        let shape = chosen[0].latents.shape    // [T+1, C, h, w]
        let (height, width) = (shape[2], shape[3])
        let multiple = 1 << max(0, unet.config.down_block_types.count - 1)
        let embeds = Tensor.stack(chosen.map(\.promptEmbedding), axis: 0)
        let negative = config.train_cfg
            ? negativeEmbedding.expand([chosen.count] + Array(negativeEmbedding.shape.dropFirst()))
            : nil
        let timesteps = chosen.map { $0.timesteps[0] }
        let (wasCheckpointing, wasTraining) = (unet.gradientCheckpointing, unet.isTraining)
        unet.gradientCheckpointing = false
        unet.eval()     // dropout draws nothing from its generators
        defer { unet.gradientCheckpointing = wasCheckpointing; unet.train(wasTraining) }
        optimizer.zeroGrad()
        var probes: [CheckpointingPlan.Probe] = []
        for size in CheckpointingPlan.probeSizes(height: height, width: width, multiple: multiple) {
            let latents = Tensor.stack(chosen.map {
                $0.latents.slice(0, 0, 1).squeezeFirst().slice(1, 0, size.height).slice(2, 0, size.width).contiguous()
            }, axis: 0)
            let bytes = meter.peakBytes {
                let prediction = pipeline.noisePrediction(
                    latents: latents, timesteps: timesteps, promptEmbeddings: embeds, negativePromptEmbeddings: negative,
                    guidanceScale: config.train_cfg ? config.sample_guidance_scale : 1)
                prediction.sum().backward()
            }
            optimizer.zeroGrad()
            probes.append(CheckpointingPlan.Probe(pixels: size.height * size.width, bytes: bytes))
        }
        // AdamW's two moments, in the parameters' dtype on their device, appear at the first
        // optimizer step (8-bit AdamW keeps its state on the host).
        var reserved = 0
        if globalStep == 0, optimizer is AdamW {
            reserved = optimizer.parameters.reduce(0) { $0 + 2 * $1.numel * $1.dtype.byteSize }
        }
        return CheckpointingPlan.decide(probes: probes, pixels: height * width, reservedBytes: reserved,
                                        availableBytes: meter.availableBytes())
    }

    private func trainInnerEpoch(_ samples: [Sample], epoch: Int, inner: Int) throws {
        let total = samples.count
        let steps = config.sample_num_steps
        let order = shuffleGenerator.permutation(total)
        let timeOrders = (0..<total).map { _ in shuffleGenerator.permutation(steps) }
        let trainSteps = config.numTrainTimesteps
        let accumulation = config.train_gradient_accumulation_steps * trainSteps
        let parameters = optimizer.parameters
        let negative = config.train_cfg
            ? negativeEmbedding.expand([config.train_batch_size] + Array(negativeEmbedding.shape.dropFirst()))
            : nil
        var passes = 0
        // Each pass's loss statistics stay on the device until the optimizer step, which reads the
        // window's at once: the host then never waits for the device between passes.
        var window: [(statistics: Tensor, trainBatch: Int, timestepIndex: Int)] = []

        for start in stride(from: 0, to: total, by: config.train_batch_size) {
            let members = Array(start..<min(start + config.train_batch_size, total))
            let chosen = members.map { samples[order[$0]] }
            let embeds = Tensor.stack(chosen.map(\.promptEmbedding), axis: 0)
            // The loss is float32 (float64 for a float64 pipeline) on the model's device.
            let advantages = Tensor(chosen.map(\.advantage), shape: [chosen.count],
                                    dtype: embeds.dtype == .float64 ? .float64 : .float32, device: embeds.device)
            for j in 0..<trainSteps {
                let index = members.map { timeOrders[$0][j] }
                func gather(_ x: (Sample) -> Tensor, offset: Int) -> Tensor {
                    Tensor.stack(zip(chosen, index).map { s, t in x(s).slice(0, t + offset, t + offset + 1).squeezeFirst() }, axis: 0)
                }
                let latents = gather(\.latents, offset: 0)
                let next = gather(\.latents, offset: 1)
                let oldLogProbs = gather(\.logProbs, offset: 0)
                let timesteps = zip(chosen, index).map { s, t in s.timesteps[t] }

                let out = try pipeline.trainingLoss(
                    latents: latents, nextLatents: next, timesteps: timesteps, oldLogProbs: oldLogProbs,
                    advantages: advantages, promptEmbeddings: embeds,
                    negativePromptEmbeddings: negative.map { $0.slice(0, 0, chosen.count) }, config: config)
                // accelerate divides the loss by the number of accumulated passes (and multiplies
                // it by the loss scale under fp16).
                (out.loss * ((lossScaler?.scale ?? 1) / Double(accumulation))).backward()
                window.append((out.statistics, start / config.train_batch_size, j))
                passes += 1
                if passes % accumulation == 0 {
                    // One read for the window's statistics. A non-finite loss stops training before
                    // the update (its gradients went into the accumulated ones).
                    let values = Self.readStatistics(window.map(\.statistics))
                    for (pass, v) in zip(window, values) where !(v.loss.isFinite && v.approxKL.isFinite) {
                        throw failure(epoch, "loss", "inner epoch \(inner), train batch \(pass.trainBatch), timestep index \(pass.timestepIndex): loss \(v.loss), approx_kl \(v.approxKL) (a non-finite log-probability of the current model)")
                    }
                    lossScaler?.unscale(parameters)
                    let norm = clipGradNorm(parameters, maxNorm: config.train_max_grad_norm)
                    if lossScaler != nil, !lossScaler!.update(gradientNorm: norm) {
                        // An inf/NaN gradient under fp16: skip this update (GradScaler's rule).
                        optimizer.zeroGrad()
                        window = []
                        continue
                    }
                    guard norm.isFinite else {
                        throw failure(epoch, "gradient norm", "inner epoch \(inner): \(norm) before clipping")
                    }
                    optimizer.step()
                    optimizer.zeroGrad()
                    func average(_ v: [Double]) -> Double { v.reduce(0, +) / Double(max(v.count, 1)) }
                    let m = DDPOStepMetrics(epoch: epoch, innerEpoch: inner, globalStep: globalStep, loss: average(values.map(\.loss)),
                                            approxKL: average(values.map(\.approxKL)), clipFraction: average(values.map(\.clipFraction)))
                    logger?.log(["loss": m.loss, "approx_kl": m.approxKL, "clipfrac": m.clipFraction,
                                 "epoch": Double(epoch), "inner_epoch": Double(inner)], step: globalStep)
                    onEvent?(.step(m))
                    globalStep += 1
                    window = []
                }
            }
        }
        guard passes % accumulation == 0 else {
            throw failure(epoch, "gradient accumulation", "inner epoch \(inner) ended between optimizer steps (\(passes) passes, \(accumulation) per step)")
        }
    }

    /// Each pass's (loss, approx_kl, clipfrac) from its `PPOLossOutput.statistics`, read back in one transfer.
    static func readStatistics(_ statistics: [Tensor]) -> [(loss: Double, approxKL: Double, clipFraction: Double)] {
        guard let first = statistics.first else { return [] }
        let values = withNoGrad { Tensor.concat(statistics.map { $0.to(first.dtype) }, axis: 0).toArray() }
        var result: [(loss: Double, approxKL: Double, clipFraction: Double)] = []
        var offset = 0
        for t in statistics {
            result.append(PPOLossOutput.values(of: Array(values[offset..<offset + t.numel])))
            offset += t.numel
        }
        return result
    }

    private func failure(_ epoch: Int, _ quantity: String, _ message: String) -> DDPOTrainingError {
        DDPOTrainingError(epoch: epoch, globalStep: globalStep, quantity: quantity, message: message)
    }

    // MARK: - checkpoints

    /// The trainer's own state in a checkpoint (`trainer_state.json`).
    struct State: Codable {
        var formatVersion = 1
        var epoch: Int
        var globalStep: Int
        var samplingGenerator: PhiloxGenerator
        var shuffleGenerator: PhiloxGenerator
        var promptGenerator: PhiloxGenerator
        var promptSource: String
        var statTracker: PerPromptStatTracker?
        var usesLoRA: Bool
        var lossScaler: DynamicLossScaler?
    }

    /// Writes `checkpoint_<epoch>` (trainable weights, optimizer state, trainer state, config) and
    /// prunes to `num_checkpoint_limit`.
    @discardableResult
    public func saveCheckpoint(epoch: Int) throws -> URL {
        let store = CheckpointStore(directory: checkpointDirectory, limit: config.num_checkpoint_limit)
        let state = State(epoch: epoch, globalStep: globalStep, samplingGenerator: samplingGenerator,
                          shuffleGenerator: shuffleGenerator, promptGenerator: prompts.generator, promptSource: prompts.name,
                          statTracker: statTracker, usesLoRA: pipeline.usesLoRA, lossScaler: lossScaler)
        return try store.save(epoch: epoch) { dir in
            try pipeline.saveCheckpoint(to: dir)
            try saveSafeTensors(optimizer.stateDict(), to: dir.appendingPathComponent("optimizer.safetensors").path)
            let encoder = JSONEncoder()
            encoder.outputFormatting = [.prettyPrinted, .sortedKeys]
            try encoder.encode(state).write(to: dir.appendingPathComponent("trainer_state.json"))
            try config.jsonData().write(to: dir.appendingPathComponent("config.json"))
        }
    }

    /// Restores a checkpoint (or the latest in a folder of them): weights, optimizer, step counters,
    /// random streams and the per-prompt statistics. Training continues with the epoch after it.
    public func resume(from url: URL) throws {
        let (_, checkpoint) = try CheckpointStore.resolve(url)
        let stateURL = checkpoint.appendingPathComponent("trainer_state.json")
        let state: State
        do { state = try JSONDecoder().decode(State.self, from: Data(contentsOf: stateURL)) } catch {
            throw CheckpointError(path: stateURL.path, "unreadable trainer state: \(error)")
        }
        guard state.usesLoRA == pipeline.usesLoRA else {
            throw CheckpointError(path: checkpoint.path, "the checkpoint was saved \(state.usesLoRA ? "with" : "without") LoRA; this pipeline is \(pipeline.usesLoRA ? "LoRA" : "a full fine-tune")")
        }
        if config.per_prompt_stat_tracking, state.statTracker == nil {
            throw CheckpointError(path: stateURL.path, "per_prompt_stat_tracking is on, but the checkpoint has no stat tracker (it was saved without it)")
        }
        try pipeline.loadCheckpoint(from: checkpoint)
        let optimizerURL = checkpoint.appendingPathComponent("optimizer.safetensors")
        do { try optimizer.loadStateDict(try loadSafeTensors(optimizerURL.path)) } catch {
            throw CheckpointError(path: optimizerURL.path, "cannot restore the optimizer: \(error)")
        }
        nextEpoch = state.epoch + 1
        globalStep = state.globalStep
        samplingGenerator = state.samplingGenerator
        shuffleGenerator = state.shuffleGenerator
        prompts.generator = state.promptGenerator
        if config.per_prompt_stat_tracking { statTracker = state.statTracker }
        if lossScaler != nil, let saved = state.lossScaler { lossScaler = saved }
    }
}

// MARK: - rewards in the background

/// Runs reward batches synchronously (workers 0) or on up to `workers` background threads while the
/// caller goes on sampling; `results()` returns them in submission order.
final class RewardQueue {
    private let reward: any RewardFunction
    private let workers: Int
    private let group = DispatchGroup()
    private let lock = NSLock()
    private let slots: DispatchSemaphore
    private var outputs: [Int: Result<RewardOutput, Error>] = [:]
    private var count = 0

    init(reward: any RewardFunction, workers: Int) {
        self.reward = reward
        self.workers = workers
        slots = DispatchSemaphore(value: max(workers, 1))
    }

    func submit(images: Tensor, prompts: [String], metadata: [PromptMetadata]) {
        let index = count
        count += 1
        let job = { [reward] in
            Result { try RewardFunctions.validated(reward, images: images, prompts: prompts, metadata: metadata) }
        }
        guard workers > 0 else {
            outputs[index] = job()
            return
        }
        slots.wait()
        group.enter()
        DispatchQueue.global(qos: .userInitiated).async { [self] in
            let result = job()
            lock.lock()
            outputs[index] = result
            lock.unlock()
            slots.signal()
            group.leave()
        }
    }

    func results() throws -> [RewardOutput] {
        group.wait()
        return try (0..<count).map { try outputs[$0]!.get() }
    }
}

extension Tensor {
    /// Drops a leading axis of size 1.
    func squeezeFirst() -> Tensor { reshape(Array(shape.dropFirst())) }
}
