import Foundation

// The architecture of the built-in model: Stable Diffusion's three networks (CLIP text encoder,
// AutoencoderKL, UNet2DConditionModel) at sizes that train from scratch and sample in seconds on a
// laptop CPU, plus SD's DDIM noise schedule (scaled_linear, 1000 steps, ε-prediction).
//
//   let recipe = BuiltinModelRecipe.standard        // 32×32 images, 8×8×4 latents (what models/shapes-sd is)
//   let recipe = BuiltinModelRecipe.tiny            // 16×16 images, for tests
//   recipe.vae / .unet / .text(vocabularySize:…)    // the diffusers/transformers configs
//
// Only the VAE's `scaling_factor` is not fixed here: `Pretrainer` measures it after the VAE stage
// (1 / std of the latents, as SD chose 0.18215).

public struct BuiltinModelRecipe: Sendable, Equatable {
    /// Image side in pixels.
    public var imageSize: Int
    /// Tokens per prompt (the tokenizer's model_max_length and the text encoder's positions).
    public var maxTokens: Int
    public var textHiddenSize: Int
    public var textLayers: Int
    public var textHeads: Int
    /// VAE channels per level; the latents are imageSize / 2^(levels − 1) on a side.
    public var vaeChannels: [Int]
    public var vaeGroups: Int
    public var latentChannels: Int
    /// UNet channels per level; every level has cross-attention.
    public var unetChannels: [Int]
    public var unetGroups: Int
    public var unetHeads: Int

    public init(imageSize: Int, maxTokens: Int, textHiddenSize: Int, textLayers: Int, textHeads: Int,
                vaeChannels: [Int], vaeGroups: Int, latentChannels: Int, unetChannels: [Int], unetGroups: Int, unetHeads: Int) {
        self.imageSize = imageSize
        self.maxTokens = maxTokens
        self.textHiddenSize = textHiddenSize
        self.textLayers = textLayers
        self.textHeads = textHeads
        self.vaeChannels = vaeChannels
        self.vaeGroups = vaeGroups
        self.latentChannels = latentChannels
        self.unetChannels = unetChannels
        self.unetGroups = unetGroups
        self.unetHeads = unetHeads
    }

    /// The shipped model's sizes: 32×32 RGB, latents 8×8×4.
    public static let standard = BuiltinModelRecipe(
        imageSize: 32, maxTokens: 16, textHiddenSize: 64, textLayers: 2, textHeads: 4,
        vaeChannels: [16, 32, 64], vaeGroups: 8, latentChannels: 4,
        unetChannels: [48, 96], unetGroups: 16, unetHeads: 3)

    /// A few-thousand-parameter version for tests: 16×16 RGB, latents 8×8×4.
    public static let tiny = BuiltinModelRecipe(
        imageSize: 16, maxTokens: 16, textHiddenSize: 16, textLayers: 1, textHeads: 2,
        vaeChannels: [8, 16], vaeGroups: 4, latentChannels: 4,
        unetChannels: [16, 32], unetGroups: 8, unetHeads: 2)

    /// Pixels per latent along a side.
    public var vaeScaleFactor: Int { 1 << (vaeChannels.count - 1) }
    public var latentSize: Int { imageSize / vaeScaleFactor }

    public var tokenizer: ShapesTokenizer { ShapesTokenizer(words: ShapesDataset.vocabularyWords, modelMaxLength: maxTokens) }

    public func text(tokenizer: ShapesTokenizer) -> CLIPTextConfig {
        CLIPTextConfig(vocabSize: tokenizer.vocabularySize, hiddenSize: textHiddenSize, intermediateSize: 4 * textHiddenSize,
                       projectionDim: textHiddenSize, numHiddenLayers: textLayers, numAttentionHeads: textHeads,
                       maxPositionEmbeddings: maxTokens, hiddenAct: .quickGelu, layerNormEps: 1e-5, attentionDropout: 0,
                       padTokenId: tokenizer.endOfTextID, bosTokenId: tokenizer.startOfTextID, eosTokenId: tokenizer.endOfTextID)
    }

    public func vae(scalingFactor: Double = 1) -> AutoencoderKLConfig {
        var c = AutoencoderKLConfig()
        c.block_out_channels = vaeChannels
        c.down_block_types = Array(repeating: "DownEncoderBlock2D", count: vaeChannels.count)
        c.up_block_types = Array(repeating: "UpDecoderBlock2D", count: vaeChannels.count)
        c.layers_per_block = 1
        c.latent_channels = latentChannels
        c.norm_num_groups = vaeGroups
        c.sample_size = .one(imageSize)
        c.scaling_factor = scalingFactor
        c.force_upcast = false
        return c
    }

    public var unet: UNet2DConditionConfig {
        var c = UNet2DConditionConfig()
        c.sample_size = .one(latentSize)
        c.in_channels = latentChannels
        c.out_channels = latentChannels
        c.block_out_channels = unetChannels
        c.down_block_types = Array(repeating: "CrossAttnDownBlock2D", count: unetChannels.count)
        c.up_block_types = Array(repeating: "CrossAttnUpBlock2D", count: unetChannels.count)
        c.layers_per_block = .one(1)
        c.norm_num_groups = unetGroups
        c.cross_attention_dim = .one(textHiddenSize)
        c.attention_head_dim = .one(unetHeads)
        return c
    }

    /// Stable Diffusion's DDIM schedule (as DDPO samples with it).
    public var scheduler: DDIMSchedulerConfig {
        var c = DDIMSchedulerConfig()
        c.betaStart = 0.00085
        c.betaEnd = 0.012
        c.betaSchedule = .scaledLinear
        c.clipSample = false
        c.setAlphaToOne = false
        c.stepsOffset = 1
        return c
    }
}
