import Foundation

// diffusers `UNet2DConditionModel` (models/unets/unet_2d_condition.py) for the SD 1.x / 2.x family:
// noise (or v) prediction from a latent sample, timesteps and text-encoder states.
//
//   let unet = try UNet2DConditionModel.load(directory: modelDir.appendingPathComponent("unet"))
//   let eps = withNoGrad { unet(sample: latents, timestep: t, encoderHiddenStates: text) }
//   // latents [B, 4, h, w], t: Tensor [B] / [1] / 0-d (int or float timesteps), text [B, 77, D]
//
//   let fresh = try UNet2DConditionModel(config: config, seed: 0)      // random init, e.g. for tests
//   fresh.gradientCheckpointing = true                                 // recompute blocks in backward
//
// Keys are diffusers': conv_in, time_embedding.linear_{1,2}, down_blocks.i.{resnets,attentions,
// downsamplers}, mid_block, up_blocks.i.{resnets,attentions,upsamplers}, conv_norm_out, conv_out.
// Supported options are those `UNet2DConditionConfig.resolved()` accepts; anything else is refused
// with an error naming the config field. `upcast_attention` only matters when diffusers runs in
// float16; TensorKit attention accumulates in float32, so it changes nothing here.

public final class UNet2DConditionModel: Module {
    public let config: UNet2DConditionConfig
    /// Recompute each down/mid/up block's activations during backward instead of storing them
    /// (less memory for training, one extra forward). No effect without grad mode.
    public var gradientCheckpointing = false
    /// 2^(number of upsamplers): inputs whose height/width are not multiples of this take diffusers'
    /// explicit-size upsampling path.
    public let upsampleFactor: Int

    public var conv_in: Conv2d
    public var time_proj: Timesteps
    public var time_embedding: TimestepEmbedding
    public var down_blocks: [any UNetDownBlock]
    public var mid_block: UNetMidBlock2DCrossAttn?
    public var up_blocks: [any UNetUpBlock]
    public var conv_norm_out: GroupNorm
    public var conv_out: Conv2d

    /// Builds the model from a config with random weights drawn from `generator`.
    public init(config: UNet2DConditionConfig, dtype: DType = .float32, generator: inout PhiloxGenerator) throws {
        let r = try config.resolved()
        let channels = config.block_out_channels
        let n = channels.count
        self.config = config
        upsampleFactor = 1 << (n - 1)

        conv_in = Conv2d(config.in_channels, channels[0], kernelSize: config.conv_in_kernel,
                         padding: (config.conv_in_kernel - 1) / 2, dtype: dtype, generator: &generator)
        time_proj = Timesteps(numChannels: channels[0], flipSinToCos: config.flip_sin_to_cos,
                              downscaleFreqShift: config.freq_shift)
        time_embedding = TimestepEmbedding(inChannels: channels[0], timeEmbedDim: r.timeEmbedDim, dtype: dtype,
                                           generator: &generator)
        let settings = UNetBlockSettings(tembChannels: r.timeEmbedDim, eps: config.norm_eps, groups: r.normNumGroups,
                                         dropout: config.dropout, dtype: dtype)
        func attention(_ i: Int) -> UNetAttentionSettings {
            UNetAttentionSettings(heads: r.attentionHeads[i], crossAttentionDim: r.crossAttentionDims[i],
                                  useLinearProjection: config.use_linear_projection,
                                  upcastAttention: config.upcast_attention)
        }

        var down: [any UNetDownBlock] = []
        for i in 0..<n {
            let input = i == 0 ? channels[0] : channels[i - 1]
            let last = i == n - 1
            switch r.downKinds[i] {
            case .plain:
                down.append(DownBlock2D(inChannels: input, outChannels: channels[i], numLayers: r.layersPerBlock[i],
                                        addDownsample: !last, downsamplePadding: config.downsample_padding,
                                        settings: settings, generator: &generator))
            case .crossAttention:
                down.append(CrossAttnDownBlock2D(
                    inChannels: input, outChannels: channels[i], numLayers: r.layersPerBlock[i],
                    transformerLayers: r.transformerLayersPerBlock[i], addDownsample: !last,
                    downsamplePadding: config.downsample_padding, settings: settings, attention: attention(i),
                    generator: &generator))
            }
        }
        down_blocks = down

        if r.hasMidBlock {
            mid_block = UNetMidBlock2DCrossAttn(
                channels: channels[n - 1], transformerLayers: r.transformerLayersPerBlock[n - 1],
                outputScaleFactor: config.mid_block_scale_factor, settings: settings, attention: attention(n - 1),
                generator: &generator)
        }

        // Up path: block i mirrors down block n-1-i, with one more resnet (it also eats the
        // downsampler's skip connection, or conv_in's for the last block).
        var up: [any UNetUpBlock] = []
        let reversed = Array(channels.reversed())
        var output = reversed[0]
        for i in 0..<n {
            let prevOutput = output
            output = reversed[i]
            let input = reversed[Swift.min(i + 1, n - 1)]
            let mirrored = n - 1 - i
            let layers = r.layersPerBlock[mirrored] + 1
            switch r.upKinds[i] {
            case .plain:
                up.append(UpBlock2D(inChannels: input, prevOutputChannels: prevOutput, outChannels: output,
                                    numLayers: layers, addUpsample: i != n - 1, settings: settings,
                                    generator: &generator))
            case .crossAttention:
                up.append(CrossAttnUpBlock2D(
                    inChannels: input, prevOutputChannels: prevOutput, outChannels: output, numLayers: layers,
                    transformerLayers: r.transformerLayersPerBlock[mirrored], addUpsample: i != n - 1,
                    settings: settings, attention: attention(mirrored), generator: &generator))
            }
        }
        up_blocks = up

        conv_norm_out = GroupNorm(groups: r.normNumGroups, channels: channels[0], eps: config.norm_eps, dtype: dtype)
        conv_out = Conv2d(channels[0], config.out_channels, kernelSize: config.conv_out_kernel,
                          padding: (config.conv_out_kernel - 1) / 2, dtype: dtype, generator: &generator)
        super.init()
    }

    public convenience init(config: UNet2DConditionConfig, dtype: DType = .float32, seed: UInt64 = 0) throws {
        var generator = PhiloxGenerator(seed: seed)
        try self.init(config: config, dtype: dtype, generator: &generator)
    }

    /// Why latents of `height` × `width` cannot go down this UNet, or nil when they can: each
    /// downsampler's convolution must fit its input. With `downsample_padding` ≥ 1 any size does; with
    /// 0, diffusers pads one row and column and small latents run out (PyTorch: "Kernel size can't be
    /// greater than actual input size").
    public func latentSizeProblem(height: Int, width: Int) -> String? {
        guard height >= 1, width >= 1 else { return "latents of \(height)×\(width) are empty" }
        var size = (height, width)
        for (level, block) in down_blocks.enumerated() {
            for downsampler in block.downsamplers {
                let next = downsampler.outputSize(height: size.0, width: size.1)
                guard next.0 >= 1, next.1 >= 1 else {
                    let reached = level == 0 ? "are" : "shrink to \(size.0)×\(size.1) before down block \(level)'s downsampler,"
                    let kernel = downsampler.conv.map { "kernel \($0.kernelSize.0)×\($0.kernelSize.1), stride \($0.stride.0), " } ?? ""
                    return "latents of \(height)×\(width) \(reached) too small for "
                        + "\(level == 0 ? "down block 0's downsampler" : "its") convolution "
                        + "(\(kernel)downsample_padding \(config.downsample_padding))"
                }
                size = next
            }
        }
        return nil
    }

    // MARK: forward

    /// sample [B, in_channels, h, w]; timestep: a 0-d, [1] or [B] tensor of (int or float) timesteps,
    /// broadcast over the batch like diffusers; encoderHiddenStates [B, M, cross_attention_dim].
    /// Returns [B, out_channels, h, w].
    public func callAsFunction(sample: Tensor, timestep: Tensor, encoderHiddenStates: Tensor) -> Tensor {
        precondition(timestep.rank <= 1, "UNet: timestep must be a scalar or a 1-D tensor, got shape \(timestep.shape)")
        return self(sample: sample, timesteps: timestep.toArray(), encoderHiddenStates: encoderHiddenStates)
    }

    /// One timestep for the whole batch.
    public func callAsFunction(sample: Tensor, timestep: Double, encoderHiddenStates: Tensor) -> Tensor {
        self(sample: sample, timesteps: [timestep], encoderHiddenStates: encoderHiddenStates)
    }

    /// `timesteps`: one value for the whole batch, or one per sample.
    public func callAsFunction(sample: Tensor, timesteps: [Double], encoderHiddenStates: Tensor) -> Tensor {
        precondition(sample.rank == 4 && sample.shape[1] == config.in_channels,
                     "UNet: sample must be [B, \(config.in_channels), h, w], got \(sample.shape)")
        let batch = sample.shape[0]
        precondition(timesteps.count == 1 || timesteps.count == batch,
                     "UNet: \(timesteps.count) timesteps for a batch of \(batch) (give 1 or \(batch))")
        precondition(encoderHiddenStates.rank == 3 && encoderHiddenStates.shape[0] == batch,
                     "UNet: encoderHiddenStates must be [\(batch), M, D], got \(encoderHiddenStates.shape)")

        // Sizes that do not divide by 2^levels: each upsampler targets its skip connection's size.
        let explicitUpsampleSize = sample.shape[2] % upsampleFactor != 0 || sample.shape[3] % upsampleFactor != 0

        var x = sample
        if config.center_input_sample { x = x * 2 - 1 }
        let tEmb = time_proj(timesteps.count == batch ? timesteps : Array(repeating: timesteps[0], count: batch),
                             dtype: sample.dtype, device: sample.device)
        let emb = time_embedding(tEmb)
        let enc = encoderHiddenStates
        let checkpointing = gradientCheckpointing

        x = conv_in(x)
        var skips = [x]
        for block in down_blocks {
            let (h, outputs) = block(x, temb: emb, encoderHiddenStates: enc, checkpointing: checkpointing)
            x = h
            skips += outputs
        }
        if let mid = mid_block { x = mid(x, temb: emb, encoderHiddenStates: enc, checkpointing: checkpointing) }

        var upsampleSize: (Int, Int)? = nil
        for (i, block) in up_blocks.enumerated() {
            let count = block.resnetCount
            let mine = Array(skips.suffix(count))
            skips.removeLast(count)
            if i != up_blocks.count - 1 && explicitUpsampleSize, let next = skips.last {
                upsampleSize = (next.shape[2], next.shape[3])
            }
            x = block(x, skips: mine, temb: emb, encoderHiddenStates: enc, upsampleSize: upsampleSize,
                      checkpointing: checkpointing)
        }
        return conv_out(conv_norm_out(x, silu: true))
    }
}

// MARK: - loading a diffusers `unet/` folder

extension UNet2DConditionModel {
    static let weightsName = "diffusion_pytorch_model"

    /// Loads `config.json` and the weights of a diffusers `unet/` folder, strictly: every key of the
    /// model must be in the file(s) and nothing else (errors name the keys). Weights stored in float16
    /// or bfloat16 are converted to `dtype`. `variant` picks `diffusion_pytorch_model.<variant>.safetensors`
    /// (or its sharded index); without it the plain file is preferred, then the ".fp16" one. The model
    /// is returned in eval mode, as diffusers' `from_pretrained` does.
    public static func load(directory: URL, variant: String? = nil, dtype: DType = .float32) throws -> UNet2DConditionModel {
        let config = try UNet2DConditionConfig.load(from: directory.appendingPathComponent("config.json"))
        do { _ = try config.resolved() } catch var error as UNet2DConditionConfigError {
            error.file = directory.appendingPathComponent("config.json").path
            throw error
        }
        let weights = try ComponentWeights.read(in: directory, stem: weightsName, variant: variant)
        let model = try withoutParameterInitialization { try UNet2DConditionModel(config: config, dtype: dtype) }
        try weights.loadStrict(into: model, name: "UNet2DConditionModel")
        model.eval()
        return model
    }
}

// MARK: - saving in the diffusers layout

extension UNet2DConditionModel {
    /// The model's own weights by diffusers key (CPU copies), leaving out any additive deltas
    /// attached to its layers (LoRA), whose keys are not diffusers'.
    public func baseStateDict() -> [String: Tensor] {
        var state: [String: Tensor] = [:]
        for (key, tensor) in namedParameters() where !key.contains(".deltas.") {
            state[key] = tensor.copied(to: .cpu)
        }
        return state
    }

    /// Writes a diffusers `unet/` folder: `config.json` (with `_class_name`) and
    /// `diffusion_pytorch_model.safetensors` holding `baseStateDict()`, each written to a temporary
    /// file and renamed, so `load(directory:)` and diffusers' `from_pretrained` read it.
    public func savePretrained(to directory: URL) throws {
        try FileManager.default.createDirectory(at: directory, withIntermediateDirectories: true)
        let encoder = JSONEncoder()
        encoder.outputFormatting = [.prettyPrinted, .sortedKeys]
        var object = try JSONSerialization.jsonObject(with: encoder.encode(config)) as? [String: Any] ?? [:]
        object["_class_name"] = "UNet2DConditionModel"
        let json = try JSONSerialization.data(withJSONObject: object, options: [.prettyPrinted, .sortedKeys])
        let configURL = directory.appendingPathComponent("config.json")
        let temporary = directory.appendingPathComponent(".config.json.tmp-\(UUID().uuidString)")
        try json.write(to: temporary)
        guard rename(temporary.path, configURL.path) == 0 else {
            try? FileManager.default.removeItem(at: temporary)
            throw DiffusersLoadError(path: configURL.path, "cannot write config.json (rename failed, errno \(errno))")
        }
        try saveSafeTensors(baseStateDict(), to: directory.appendingPathComponent("\(Self.weightsName).safetensors").path)
    }
}
