import Foundation

/// Class token + patch embeddings (a stride-`patch` convolution without bias) + learned positions
/// (`vision_model.embeddings`). As in the text tower, transformers' `position_ids` buffer is
/// non-persistent and not a key here.
public final class CLIPVisionEmbeddings: Module {
    public var class_embedding: Tensor
    public var patch_embedding: Conv2d
    public var position_embedding: Embedding
    public let patchSize: Int

    public init(config: CLIPVisionConfig, dtype: DType, generator: inout PhiloxGenerator) {
        let d = config.hiddenSize
        patchSize = config.patchSize
        class_embedding = ParameterInitialization.isSkipped
            ? Tensor(zeros: [d], dtype: dtype)
            : Tensor.randn([d], generator: &generator, std: 1 / Double(d).squareRoot(), dtype: dtype)
        class_embedding.requiresGrad = true
        patch_embedding = Conv2d(config.numChannels, d, kernelSize: config.patchSize, stride: config.patchSize,
                                 bias: false, dtype: dtype, generator: &generator)
        position_embedding = Embedding(config.numPositions, d, dtype: dtype, generator: &generator)
        super.init()
    }

    /// [B, C, S, S] → [B, 1 + (S/patch)², D].
    public func callAsFunction(_ pixelValues: Tensor) -> Tensor {
        let b = pixelValues.shape[0], d = class_embedding.shape[0]
        let patches = patch_embedding(pixelValues).flatten(from: 2).transposed(1, 2)  // [B, P, D]
        let cls = class_embedding.reshape([1, 1, d]).expand([b, 1, d])
        return Tensor.concat([cls, patches], axis: 1) + position_embedding.weight.unsqueeze(0)
    }
}

/// `vision_model`: embeddings → `pre_layrnorm` (transformers' spelling) → encoder; pooled output =
/// `post_layernorm` of the class token.
public final class CLIPVisionTransformer: Module {
    public var embeddings: CLIPVisionEmbeddings
    public var pre_layrnorm: LayerNorm
    public var encoder: CLIPEncoder
    public var post_layernorm: LayerNorm

    public init(config: CLIPVisionConfig, dtype: DType, generator: inout PhiloxGenerator) {
        embeddings = CLIPVisionEmbeddings(config: config, dtype: dtype, generator: &generator)
        pre_layrnorm = LayerNorm(config.hiddenSize, eps: config.layerNormEps, dtype: dtype)
        encoder = CLIPEncoder(hiddenSize: config.hiddenSize, intermediateSize: config.intermediateSize,
                              numLayers: config.numHiddenLayers, numHeads: config.numAttentionHeads,
                              activation: config.hiddenAct, layerNormEps: config.layerNormEps,
                              attentionDropout: config.attentionDropout, dtype: dtype, generator: &generator)
        post_layernorm = LayerNorm(config.hiddenSize, eps: config.layerNormEps, dtype: dtype)
        super.init()
    }
}

/// What `CLIPVisionModelWithProjection` returns (transformers' `CLIPVisionModelOutput`, plus the
/// pooled output before projection).
public struct CLIPVisionModelOutput {
    /// [B, projection_dim]: `visual_projection(pooledOutput)`; equals `CLIPModel.get_image_features`.
    /// Not normalised (the aesthetic reward L2-normalises it).
    public var imageEmbeds: Tensor
    /// [B, D]: `post_layernorm` of the class token.
    public var pooledOutput: Tensor
    /// [B, 1 + patches, D]: the encoder output (no final norm, as in transformers).
    public var lastHiddenState: Tensor
    /// When requested: num_hidden_layers + 1 tensors, the embeddings after `pre_layrnorm` (the encoder's
    /// input) then each layer's output.
    public var hiddenStates: [Tensor]?
}

/// transformers' `CLIPVisionModelWithProjection` (keys `vision_model.*`, `visual_projection.weight`):
/// the image tower of the aesthetic reward.
public final class CLIPVisionModelWithProjection: Module {
    public var vision_model: CLIPVisionTransformer
    public var visual_projection: Linear
    public let config: CLIPVisionConfig

    public init(config: CLIPVisionConfig, dtype: DType = .float32, generator: inout PhiloxGenerator) {
        self.config = config
        vision_model = CLIPVisionTransformer(config: config, dtype: dtype, generator: &generator)
        visual_projection = Linear(config.hiddenSize, config.projectionDim, bias: false, dtype: dtype, generator: &generator)
        super.init()
    }

    /// Random initialisation (TensorKit's layer defaults): for tests. Use `load(directory:dtype:)` for weights.
    public convenience init(config: CLIPVisionConfig, dtype: DType = .float32, seed: UInt64 = 0) {
        var generator = PhiloxGenerator(seed: seed)
        self.init(config: config, dtype: dtype, generator: &generator)
    }

    /// `pixelValues` [B, num_channels, image_size, image_size], already preprocessed (see
    /// `CLIPImageProcessor`); converted to the weights' dtype first, as transformers does. Position
    /// embedding interpolation for other sizes (`interpolate_pos_encoding`) is not supported.
    public func callAsFunction(_ pixelValues: Tensor, outputHiddenStates: Bool = false) throws -> CLIPVisionModelOutput {
        let s = config.imageSize
        guard pixelValues.rank == 4, pixelValues.shape[1] == config.numChannels,
              pixelValues.shape[2] == s, pixelValues.shape[3] == s else {
            throw CLIPError.invalidInput("CLIPVisionModelWithProjection: pixel values must be [batch, \(config.numChannels), \(s), \(s)] (num_channels, image_size), got \(pixelValues.shape)")
        }
        guard pixelValues.dtype.isFloatingPoint else {
            throw CLIPError.invalidInput("CLIPVisionModelWithProjection: pixel values must be floating point, got \(pixelValues.dtype)")
        }
        let x = pixelValues.to(visual_projection.weight.dtype)
        let h = vision_model.pre_layrnorm(vision_model.embeddings(x))
        let (last, all) = vision_model.encoder(h, causal: false, collect: outputHiddenStates)
        let cls = last.slice(1, 0, 1).squeeze(1)
        let pooled = vision_model.post_layernorm(cls)
        return CLIPVisionModelOutput(imageEmbeds: visual_projection(pooled), pooledOutput: pooled,
                                     lastHiddenState: last, hiddenStates: outputHiddenStates ? all : nil)
    }
}
