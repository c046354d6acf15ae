import Foundation

// diffusers `AutoencoderKL` (models/autoencoders/autoencoder_kl.py, with `Encoder` / `Decoder` from
// models/autoencoders/vae.py): Stable Diffusion's VAE, images ⇄ latents.
//
//   let vae = try AutoencoderKL.load(directory: modelDir.appendingPathComponent("vae"))
//   // Decode sampled latents to images in [0, 1] (as the SD pipeline does):
//   let images = withNoGrad { vae.decode(latents / vae.config.scaling_factor) }   // [B, 3, 8h, 8w] in ≈[-1, 1]
//   let pixels = (images / 2 + 0.5).clamp(min: 0, max: 1)
//   // Encode images in [-1, 1] to latents:
//   var g = PhiloxGenerator(seed: 0)
//   let posterior = vae.encode(images)                       // DiagonalGaussianDistribution
//   let latents2 = posterior.sample(generator: &g) * vae.config.scaling_factor
//
//   let fresh = try AutoencoderKL(config: config, seed: 0)   // random init, e.g. for tests
//   fresh.gradientCheckpointing = true                       // recompute blocks during backward
//
// Keys are diffusers': encoder.{conv_in, down_blocks.i.{resnets.j, downsamplers.0.conv}, mid_block.
// {resnets.0, attentions.0, resnets.1}, conv_norm_out, conv_out}, quant_conv, post_quant_conv,
// decoder.{conv_in, mid_block, up_blocks.i.{resnets.j, upsamplers.0.conv}, conv_norm_out, conv_out}.
// `load` also accepts the pre-0.14 mid-block attention names (query, key, value, proj_attn) that
// diffusers renames on load. Like diffusers' model, `encode`/`decode` never apply `scaling_factor`
// or `shift_factor`: the caller does. Everything is TensorKit ops, so the whole VAE is
// differentiable (encode, sample, kl and decode).
//
// Architecture (diffusers' fixed choices): every ResnetBlock2D has eps 1e-6, no time embedding,
// output scale 1; the encoder's downsamplers pad (0, 1, 0, 1) then run a stride-2 3×3 conv with no
// padding; the mid-block attention is one head over all channels with a GroupNorm, biases and a
// residual; the encoder outputs 2·latent_channels (mean and log-variance, `double_z`); decoder up
// block i has layers_per_block + 1 resnets and runs the channel list reversed.

/// The VAE blocks' resnet stack: the first changes the channel count, no time embedding, eps 1e-6.
func vaeResnets(inChannels: Int, outChannels: Int, count: Int, groups: Int, dtype: DType,
                generator: inout PhiloxGenerator) -> [ResnetBlock2D] {
    (0..<count).map { i in
        ResnetBlock2D(inChannels: i == 0 ? inChannels : outChannels, outChannels: outChannels, tembChannels: nil,
                      groups: groups, eps: 1e-6, dtype: dtype, generator: &generator)
    }
}

/// diffusers `DownEncoderBlock2D`: resnets, then (except in the last block) a padding-0 downsampler.
public final class DownEncoderBlock2D: Module {
    public var resnets: [ResnetBlock2D]
    /// One Downsample2D, or empty in the last block.
    public var downsamplers: [Downsample2D]

    public init(inChannels: Int, outChannels: Int, numLayers: Int, addDownsample: Bool, groups: Int,
                dtype: DType = .float32, generator: inout PhiloxGenerator) {
        resnets = vaeResnets(inChannels: inChannels, outChannels: outChannels, count: numLayers, groups: groups,
                             dtype: dtype, generator: &generator)
        downsamplers = addDownsample
            ? [Downsample2D(channels: outChannels, useConv: true, outChannels: outChannels, padding: 0, dtype: dtype,
                            generator: &generator)]
            : []
        super.init()
    }

    public func callAsFunction(_ x: Tensor) -> Tensor {
        var h = x
        for resnet in resnets { h = resnet(h, temb: nil) }
        for down in downsamplers { h = down(h) }
        return h
    }
}

/// diffusers `UpDecoderBlock2D`: resnets, then (except in the last block) a nearest ×2 upsampler with a conv.
public final class UpDecoderBlock2D: Module {
    public var resnets: [ResnetBlock2D]
    /// One Upsample2D, or empty in the last block.
    public var upsamplers: [Upsample2D]

    public init(inChannels: Int, outChannels: Int, numLayers: Int, addUpsample: Bool, groups: Int,
                dtype: DType = .float32, generator: inout PhiloxGenerator) {
        resnets = vaeResnets(inChannels: inChannels, outChannels: outChannels, count: numLayers, groups: groups,
                             dtype: dtype, generator: &generator)
        upsamplers = addUpsample
            ? [Upsample2D(channels: outChannels, useConv: true, outChannels: outChannels, dtype: dtype, generator: &generator)]
            : []
        super.init()
    }

    public func callAsFunction(_ x: Tensor) -> Tensor {
        var h = x
        for resnet in resnets { h = resnet(h, temb: nil) }
        for up in upsamplers { h = up(h) }
        return h
    }
}

/// diffusers `UNetMidBlock2D` as the VAE builds it (no time embedding, one layer): resnet, optional
/// attention (one head of width `channels`, GroupNorm, biases, residual), resnet.
public final class UNetMidBlock2D: Module {
    public var resnets: [ResnetBlock2D]
    /// `[Attention]`, or `[nil]` when `mid_block_add_attention` is false (no keys, as diffusers' [None]).
    public var attentions: [Attention?]

    public init(channels: Int, groups: Int, addAttention: Bool, dtype: DType = .float32, generator: inout PhiloxGenerator) {
        let first = ResnetBlock2D(inChannels: channels, outChannels: channels, tembChannels: nil, groups: groups,
                                  eps: 1e-6, dtype: dtype, generator: &generator)
        attentions = [addAttention
            ? Attention(queryDim: channels, heads: 1, dimHead: channels, bias: true, upcastSoftmax: true,
                        normNumGroups: groups, eps: 1e-6, residualConnection: true, rescaleOutputFactor: 1,
                        dtype: dtype, generator: &generator)
            : nil]
        let second = ResnetBlock2D(inChannels: channels, outChannels: channels, tembChannels: nil, groups: groups,
                                   eps: 1e-6, dtype: dtype, generator: &generator)
        resnets = [first, second]
        super.init()
    }

    public func callAsFunction(_ x: Tensor) -> Tensor {
        var h = resnets[0](x, temb: nil)
        for (attention, resnet) in zip(attentions, resnets.dropFirst()) {
            if let attention { h = attention(h) }
            h = resnet(h, temb: nil)
        }
        return h
    }
}

/// diffusers `Encoder` (double_z): images [B, in, H, W] → [B, 2·latent, H/2^(n-1), W/2^(n-1)]
/// (each downsampler maps a size s to ⌊s/2⌋).
public final class VAEEncoder: Module {
    public var gradientCheckpointing = false
    public var conv_in: Conv2d
    public var down_blocks: [DownEncoderBlock2D]
    public var mid_block: UNetMidBlock2D
    public var conv_norm_out: GroupNorm
    public var conv_out: Conv2d

    public init(config c: AutoencoderKLConfig, dtype: DType = .float32, generator: inout PhiloxGenerator) {
        let channels = c.block_out_channels
        conv_in = Conv2d(c.in_channels, channels[0], kernelSize: 3, padding: 1, dtype: dtype, generator: &generator)
        var blocks: [DownEncoderBlock2D] = []
        var output = channels[0]
        for i in channels.indices {
            let input = output
            output = channels[i]
            blocks.append(DownEncoderBlock2D(inChannels: input, outChannels: output, numLayers: c.layers_per_block,
                                             addDownsample: i != channels.count - 1, groups: c.norm_num_groups,
                                             dtype: dtype, generator: &generator))
        }
        down_blocks = blocks
        mid_block = UNetMidBlock2D(channels: channels[channels.count - 1], groups: c.norm_num_groups,
                                   addAttention: c.mid_block_add_attention, dtype: dtype, generator: &generator)
        conv_norm_out = GroupNorm(groups: c.norm_num_groups, channels: channels[channels.count - 1], eps: 1e-6, dtype: dtype)
        conv_out = Conv2d(channels[channels.count - 1], 2 * c.latent_channels, kernelSize: 3, padding: 1, dtype: dtype,
                          generator: &generator)
        super.init()
    }

    public func callAsFunction(_ x: Tensor) -> Tensor {
        var h = conv_in(x)
        for block in down_blocks { h = run(block, h) { $0($1) } }
        h = run(mid_block, h) { $0($1) }
        return conv_out(conv_norm_out(h, silu: true))
    }

    private func run<M: Module>(_ block: M, _ x: Tensor, _ body: @escaping (M, Tensor) -> Tensor) -> Tensor {
        gradientCheckpointing ? checkpoint([x]) { body(block, $0[0]) } : body(block, x)
    }
}

/// diffusers `Decoder` (norm_type "group"): latents [B, latent, h, w] → [B, out, h·2^(n-1), w·2^(n-1)].
public final class VAEDecoder: Module {
    public var gradientCheckpointing = false
    public var conv_in: Conv2d
    public var mid_block: UNetMidBlock2D
    public var up_blocks: [UpDecoderBlock2D]
    public var conv_norm_out: GroupNorm
    public var conv_out: Conv2d

    public init(config c: AutoencoderKLConfig, dtype: DType = .float32, generator: inout PhiloxGenerator) {
        let channels = c.block_out_channels
        let last = channels[channels.count - 1]
        // Construction order follows diffusers' (conv_in, mid_block, up_blocks, ...): it only matters
        // for which random numbers each layer draws, but keeps `init(seed:)` stable and readable.
        conv_in = Conv2d(c.latent_channels, last, kernelSize: 3, padding: 1, dtype: dtype, generator: &generator)
        mid_block = UNetMidBlock2D(channels: last, groups: c.norm_num_groups, addAttention: c.mid_block_add_attention,
                                   dtype: dtype, generator: &generator)
        let reversed = Array(channels.reversed())
        var blocks: [UpDecoderBlock2D] = []
        var output = reversed[0]
        for i in reversed.indices {
            let previous = output
            output = reversed[i]
            blocks.append(UpDecoderBlock2D(inChannels: previous, outChannels: output, numLayers: c.layers_per_block + 1,
                                           addUpsample: i != reversed.count - 1, groups: c.norm_num_groups,
                                           dtype: dtype, generator: &generator))
        }
        up_blocks = blocks
        conv_norm_out = GroupNorm(groups: c.norm_num_groups, channels: channels[0], eps: 1e-6, dtype: dtype)
        conv_out = Conv2d(channels[0], c.out_channels, kernelSize: 3, padding: 1, dtype: dtype, generator: &generator)
        super.init()
    }

    public func callAsFunction(_ z: Tensor) -> Tensor {
        var h = conv_in(z)
        h = run(mid_block, h) { $0($1) }
        for block in up_blocks { h = run(block, h) { $0($1) } }
        return conv_out(conv_norm_out(h, silu: true))
    }

    private func run<M: Module>(_ block: M, _ x: Tensor, _ body: @escaping (M, Tensor) -> Tensor) -> Tensor {
        gradientCheckpointing ? checkpoint([x]) { body(block, $0[0]) } : body(block, x)
    }
}

public final class AutoencoderKL: Module {
    public let config: AutoencoderKLConfig

    public var encoder: VAEEncoder
    public var decoder: VAEDecoder
    public var quant_conv: Conv2d?
    public var post_quant_conv: Conv2d?

    /// Recompute the encoder's down/mid blocks and the decoder's mid/up blocks during backward
    /// instead of storing their activations (as diffusers' `enable_gradient_checkpointing`). No effect
    /// without grad mode.
    public var gradientCheckpointing: Bool {
        get { encoder.gradientCheckpointing }
        set {
            encoder.gradientCheckpointing = newValue
            decoder.gradientCheckpointing = newValue
        }
    }

    /// The spatial factor between images and latents: 2^(number of levels − 1) (8 for Stable Diffusion).
    public var downsampleFactor: Int { 1 << (config.block_out_channels.count - 1) }

    /// Builds the model from a config with random weights drawn from `generator` (PyTorch's default
    /// init shapes: uniform ±1/√fan_in for convs and linears, GroupNorm ones/zeros).
    public init(config: AutoencoderKLConfig, dtype: DType = .float32, generator: inout PhiloxGenerator) throws {
        try config.validate()
        self.config = config
        encoder = VAEEncoder(config: config, dtype: dtype, generator: &generator)
        decoder = VAEDecoder(config: config, dtype: dtype, generator: &generator)
        let latent = config.latent_channels
        if config.use_quant_conv {
            quant_conv = Conv2d(2 * latent, 2 * latent, kernelSize: 1, dtype: dtype, generator: &generator)
        }
        if config.use_post_quant_conv {
            post_quant_conv = Conv2d(latent, latent, kernelSize: 1, dtype: dtype, generator: &generator)
        }
        super.init()
    }

    public convenience init(config: AutoencoderKLConfig, dtype: DType = .float32, seed: UInt64 = 0) throws {
        var generator = PhiloxGenerator(seed: seed)
        try self.init(config: config, dtype: dtype, generator: &generator)
    }

    // MARK: encode / decode

    /// The encoder output before the distribution: [B, 2·latent_channels, h, w] (mean, then logvar).
    public func encodeMoments(_ x: Tensor) -> Tensor {
        precondition(x.rank == 4 && x.shape[1] == config.in_channels,
                     "AutoencoderKL.encode: expected images [B, \(config.in_channels), H, W], got \(x.shape)")
        let h = encoder(x)
        return quant_conv.map { $0(h) } ?? h
    }

    /// Images x [B, in_channels, H, W] in [-1, 1] → the posterior over latents
    /// [B, latent_channels, ⌊H/2⌋…, ⌊W/2⌋…] (one halving per level after the first).
    public func encode(_ x: Tensor) -> DiagonalGaussianDistribution {
        DiagonalGaussianDistribution(parameters: encodeMoments(x))
    }

    /// Latents z [B, latent_channels, h, w] (already divided by `scaling_factor` by the caller, as
    /// diffusers' `vae.decode(latents / scaling_factor)`) → images [B, out_channels, h·f, w·f], f the
    /// `downsampleFactor`, nominally in [-1, 1] (not clamped).
    public func decode(_ z: Tensor) -> Tensor {
        precondition(z.rank == 4 && z.shape[1] == config.latent_channels,
                     "AutoencoderKL.decode: expected latents [B, \(config.latent_channels), h, w], got \(z.shape)")
        return decoder(post_quant_conv.map { $0(z) } ?? z)
    }

    /// diffusers' `forward(sample, sample_posterior=False)`: decode(encode(x).mode()).
    public func callAsFunction(_ sample: Tensor) -> Tensor {
        decode(encode(sample).mode())
    }

    /// diffusers' `forward(sample, sample_posterior=True, generator=…)`: decode(encode(x).sample(…)).
    public func callAsFunction(_ sample: Tensor, samplePosteriorWith generator: inout PhiloxGenerator) -> Tensor {
        decode(encode(sample).sample(generator: &generator))
    }
}

// MARK: - loading a diffusers `vae/` folder

extension AutoencoderKL {
    static let weightsName = "diffusion_pytorch_model"

    /// The pre-0.14 names of the mid-block attention's projections, which diffusers'
    /// `_fix_state_dict_keys_on_load` renames (group_norm kept its name).
    static let legacyAttentionNames = [("query", "to_q"), ("key", "to_k"), ("value", "to_v"), ("proj_attn", "to_out.0")]

    /// Loads `config.json` and the weights of a diffusers `vae/` folder, strictly: every key of the
    /// model must be in the file(s) and nothing else (errors name the keys). Weights stored in float16
    /// or bfloat16 are converted to `dtype`. `variant` picks `diffusion_pytorch_model.<variant>.safetensors`
    /// (or its sharded index); without it the plain file is preferred, then the ".fp16" one. Legacy
    /// attention keys (`…attentions.0.query.weight`, …) are renamed as diffusers renames them. The
    /// model is returned in eval mode, as diffusers' `from_pretrained` does.
    public static func load(directory: URL, variant: String? = nil, dtype: DType = .float32) throws -> AutoencoderKL {
        let configURL = directory.appendingPathComponent("config.json")
        let config = try AutoencoderKLConfig.load(from: configURL)
        do { try config.validate() } catch var error as AutoencoderKLConfigError {
            error.file = configURL.path
            throw error
        }
        var weights = try ComponentWeights.read(in: directory, stem: weightsName, variant: variant)
        let model = try withoutParameterInitialization { try AutoencoderKL(config: config, dtype: dtype) }
        for (path, module) in model.namedModules() where module is Attention {
            for (old, new) in legacyAttentionNames {
                for suffix in ["weight", "bias"] {
                    let oldKey = "\(path).\(old).\(suffix)", newKey = "\(path).\(new).\(suffix)"
                    if let tensor = weights.tensors[oldKey], weights.tensors[newKey] == nil {
                        weights.tensors[oldKey] = nil
                        weights.tensors[newKey] = tensor
                    }
                }
            }
        }
        try weights.loadStrict(into: model, name: "AutoencoderKL")
        model.eval()
        return model
    }
}
