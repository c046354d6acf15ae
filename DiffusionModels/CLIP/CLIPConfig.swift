import Foundation

// Configurations of transformers' CLIP models, decoded straight from `config.json`.
//
// Field names and defaults are transformers 4.56's (`CLIPTextConfig`, `CLIPVisionConfig`,
// `CLIPConfig.__init__`), so a file missing a field gets the value transformers would use.
// Every field transformers' CLIP modelling code reads is either implemented or rejected with an
// error naming it. Generic `PretrainedConfig` fields that CLIP's forward never reads (generation
// settings, labels, `dtype`, `architectures`, versions, `initializer_range`, the legacy `dropout`)
// are ignored, as transformers ignores them; the generic fields that would change the computation
// (`pruned_heads`, `quantization_config`) are rejected when set.

/// The activation named by `hidden_act` (transformers' `ACT2FN` names).
public enum CLIPActivation: String, Codable, Sendable, CaseIterable {
    case quickGelu = "quick_gelu"
    case gelu
    case geluPython = "gelu_python"
    case geluNew = "gelu_new"
    case geluPytorchTanh = "gelu_pytorch_tanh"
    case geluFast = "gelu_fast"
    case relu
    case silu
    case swish
    case sigmoid
    case tanh
    case linear

    public func callAsFunction(_ x: Tensor) -> Tensor {
        switch self {
        case .quickGelu: return x.quickGelu()
        case .gelu, .geluPython: return x.gelu(approximate: false)
        // gelu_new, gelu_fast and gelu_pytorch_tanh are the same tanh formula (constants agree to 1e-11).
        case .geluNew, .geluPytorchTanh, .geluFast: return x.gelu(approximate: true)
        case .relu: return x.relu()
        case .silu, .swish: return x.silu()
        case .sigmoid: return x.sigmoid()
        case .tanh: return x.tanh()
        case .linear: return x
        }
    }
}

/// `CLIPTextConfig` (`model_type` "clip_text_model"), e.g. Stable Diffusion's `text_encoder/config.json`.
public struct CLIPTextConfig: Codable, Equatable, Sendable {
    public var vocabSize = 49408
    public var hiddenSize = 512
    public var intermediateSize = 2048
    /// Only used by the projection heads (not by `CLIPTextModel`).
    public var projectionDim = 512
    public var numHiddenLayers = 12
    public var numAttentionHeads = 8
    public var maxPositionEmbeddings = 77
    /// quick_gelu in SD 1.x (OpenAI CLIP), gelu in SD 2.x (OpenCLIP).
    public var hiddenAct: CLIPActivation = .quickGelu
    public var layerNormEps = 1e-5
    public var attentionDropout = 0.0
    public var padTokenId: Int? = 1
    public var bosTokenId: Int? = 49406
    /// Selects the pooled position: 2 (configs written before transformers PR #24773, as in SD 1.x)
    /// means "argmax of the ids"; any other value means "first position holding this id".
    public var eosTokenId = 49407

    public init(vocabSize: Int = 49408, hiddenSize: Int = 512, intermediateSize: Int = 2048, projectionDim: Int = 512,
                numHiddenLayers: Int = 12, numAttentionHeads: Int = 8, maxPositionEmbeddings: Int = 77,
                hiddenAct: CLIPActivation = .quickGelu, layerNormEps: Double = 1e-5, attentionDropout: Double = 0,
                padTokenId: Int? = 1, bosTokenId: Int? = 49406, eosTokenId: Int = 49407) {
        self.vocabSize = vocabSize
        self.hiddenSize = hiddenSize
        self.intermediateSize = intermediateSize
        self.projectionDim = projectionDim
        self.numHiddenLayers = numHiddenLayers
        self.numAttentionHeads = numAttentionHeads
        self.maxPositionEmbeddings = maxPositionEmbeddings
        self.hiddenAct = hiddenAct
        self.layerNormEps = layerNormEps
        self.attentionDropout = attentionDropout
        self.padTokenId = padTokenId
        self.bosTokenId = bosTokenId
        self.eosTokenId = eosTokenId
    }

    public static let modelType = "clip_text_model"

    public init(from decoder: Decoder) throws {
        let c = try decoder.container(keyedBy: CLIPConfigKey.self)
        try c.checkModelType(Self.modelType)
        try c.rejectGenericFieldsThatChangeComputation()
        vocabSize = try c.field("vocab_size", vocabSize)
        hiddenSize = try c.field("hidden_size", hiddenSize)
        intermediateSize = try c.field("intermediate_size", intermediateSize)
        projectionDim = try c.field("projection_dim", projectionDim)
        numHiddenLayers = try c.field("num_hidden_layers", numHiddenLayers)
        numAttentionHeads = try c.field("num_attention_heads", numAttentionHeads)
        maxPositionEmbeddings = try c.field("max_position_embeddings", maxPositionEmbeddings)
        hiddenAct = try c.activation(hiddenAct)
        layerNormEps = try c.field("layer_norm_eps", layerNormEps)
        attentionDropout = try c.field("attention_dropout", attentionDropout)
        padTokenId = try c.optionalField("pad_token_id", padTokenId)
        bosTokenId = try c.optionalField("bos_token_id", bosTokenId)
        eosTokenId = try c.field("eos_token_id", eosTokenId,
                                 nullMessage: "must be an integer: the pooled output is taken at the EOS token")
        try validate()
    }

    public func encode(to encoder: Encoder) throws {
        var c = encoder.container(keyedBy: CLIPConfigKey.self)
        try c.encode(Self.modelType, forKey: "model_type")
        try c.encode(vocabSize, forKey: "vocab_size")
        try c.encode(hiddenSize, forKey: "hidden_size")
        try c.encode(intermediateSize, forKey: "intermediate_size")
        try c.encode(projectionDim, forKey: "projection_dim")
        try c.encode(numHiddenLayers, forKey: "num_hidden_layers")
        try c.encode(numAttentionHeads, forKey: "num_attention_heads")
        try c.encode(maxPositionEmbeddings, forKey: "max_position_embeddings")
        try c.encode(hiddenAct, forKey: "hidden_act")
        try c.encode(layerNormEps, forKey: "layer_norm_eps")
        try c.encode(attentionDropout, forKey: "attention_dropout")
        try c.encode(padTokenId, forKey: "pad_token_id")
        try c.encode(bosTokenId, forKey: "bos_token_id")
        try c.encode(eosTokenId, forKey: "eos_token_id")
    }

    /// The checks transformers makes when building the model, plus sizes that must be positive.
    public func validate() throws {
        try CLIPConfigKey.validateTransformer(hiddenSize: hiddenSize, intermediateSize: intermediateSize,
                                             numHiddenLayers: numHiddenLayers, numAttentionHeads: numAttentionHeads,
                                             layerNormEps: layerNormEps, attentionDropout: attentionDropout)
        try CLIPConfigKey.require(vocabSize > 0, "vocab_size", "must be positive, got \(vocabSize)")
        try CLIPConfigKey.require(maxPositionEmbeddings > 0, "max_position_embeddings",
                                  "must be positive, got \(maxPositionEmbeddings)")
    }
}

/// `CLIPVisionConfig` (`model_type` "clip_vision_model").
public struct CLIPVisionConfig: Codable, Equatable, Sendable {
    public var hiddenSize = 768
    public var intermediateSize = 3072
    /// Output width of `visual_projection` in `CLIPVisionModelWithProjection`.
    public var projectionDim = 512
    public var numHiddenLayers = 12
    public var numAttentionHeads = 12
    public var numChannels = 3
    public var imageSize = 224
    public var patchSize = 32
    public var hiddenAct: CLIPActivation = .quickGelu
    public var layerNormEps = 1e-5
    public var attentionDropout = 0.0

    public init(hiddenSize: Int = 768, intermediateSize: Int = 3072, projectionDim: Int = 512, numHiddenLayers: Int = 12,
                numAttentionHeads: Int = 12, numChannels: Int = 3, imageSize: Int = 224, patchSize: Int = 32,
                hiddenAct: CLIPActivation = .quickGelu, layerNormEps: Double = 1e-5, attentionDropout: Double = 0) {
        self.hiddenSize = hiddenSize
        self.intermediateSize = intermediateSize
        self.projectionDim = projectionDim
        self.numHiddenLayers = numHiddenLayers
        self.numAttentionHeads = numAttentionHeads
        self.numChannels = numChannels
        self.imageSize = imageSize
        self.patchSize = patchSize
        self.hiddenAct = hiddenAct
        self.layerNormEps = layerNormEps
        self.attentionDropout = attentionDropout
    }

    public static let modelType = "clip_vision_model"

    /// Patches per side (the patch convolution has stride = kernel = patch size, no padding).
    public var gridSize: Int { imageSize / patchSize }
    /// Sequence length of the encoder: one class token plus the patches.
    public var numPositions: Int { gridSize * gridSize + 1 }

    public init(from decoder: Decoder) throws {
        let c = try decoder.container(keyedBy: CLIPConfigKey.self)
        try c.checkModelType(Self.modelType)
        try c.rejectGenericFieldsThatChangeComputation()
        hiddenSize = try c.field("hidden_size", hiddenSize)
        intermediateSize = try c.field("intermediate_size", intermediateSize)
        projectionDim = try c.field("projection_dim", projectionDim)
        numHiddenLayers = try c.field("num_hidden_layers", numHiddenLayers)
        numAttentionHeads = try c.field("num_attention_heads", numAttentionHeads)
        numChannels = try c.field("num_channels", numChannels)
        imageSize = try c.field("image_size", imageSize)
        patchSize = try c.field("patch_size", patchSize)
        hiddenAct = try c.activation(hiddenAct)
        layerNormEps = try c.field("layer_norm_eps", layerNormEps)
        attentionDropout = try c.field("attention_dropout", attentionDropout)
        try validate()
    }

    public func encode(to encoder: Encoder) throws {
        var c = encoder.container(keyedBy: CLIPConfigKey.self)
        try c.encode(Self.modelType, forKey: "model_type")
        try c.encode(hiddenSize, forKey: "hidden_size")
        try c.encode(intermediateSize, forKey: "intermediate_size")
        try c.encode(projectionDim, forKey: "projection_dim")
        try c.encode(numHiddenLayers, forKey: "num_hidden_layers")
        try c.encode(numAttentionHeads, forKey: "num_attention_heads")
        try c.encode(numChannels, forKey: "num_channels")
        try c.encode(imageSize, forKey: "image_size")
        try c.encode(patchSize, forKey: "patch_size")
        try c.encode(hiddenAct, forKey: "hidden_act")
        try c.encode(layerNormEps, forKey: "layer_norm_eps")
        try c.encode(attentionDropout, forKey: "attention_dropout")
    }

    public func validate() throws {
        try CLIPConfigKey.validateTransformer(hiddenSize: hiddenSize, intermediateSize: intermediateSize,
                                             numHiddenLayers: numHiddenLayers, numAttentionHeads: numAttentionHeads,
                                             layerNormEps: layerNormEps, attentionDropout: attentionDropout)
        try CLIPConfigKey.require(numChannels > 0, "num_channels", "must be positive, got \(numChannels)")
        try CLIPConfigKey.require(patchSize > 0, "patch_size", "must be positive, got \(patchSize)")
        try CLIPConfigKey.require(imageSize >= patchSize, "image_size",
                                  "must be at least patch_size (\(patchSize)), got \(imageSize)")
        try CLIPConfigKey.require(projectionDim > 0, "projection_dim", "must be positive, got \(projectionDim)")
    }
}

/// `CLIPConfig` (`model_type` "clip"): a whole CLIP model, such as openai/clip-vit-large-patch14 used
/// by the aesthetic reward.
///
/// As in transformers, a legacy `text_config_dict` / `vision_config_dict` (present in the OpenAI
/// checkpoints) takes precedence: transformers rebuilds the whole sub-config from it, with defaults
/// for the fields it lacks, and overwrites `text_config` / `vision_config` with that.
public struct CLIPConfig: Codable, Equatable, Sendable {
    public var textConfig = CLIPTextConfig()
    public var visionConfig = CLIPVisionConfig()
    /// Output width of `CLIPModel`'s `text_projection` and `visual_projection` (the image features).
    public var projectionDim = 512
    public var logitScaleInitValue = 2.6592

    public init(textConfig: CLIPTextConfig = .init(), visionConfig: CLIPVisionConfig = .init(),
                projectionDim: Int = 512, logitScaleInitValue: Double = 2.6592) {
        self.textConfig = textConfig
        self.visionConfig = visionConfig
        self.projectionDim = projectionDim
        self.logitScaleInitValue = logitScaleInitValue
    }

    public static let modelType = "clip"

    public init(from decoder: Decoder) throws {
        let c = try decoder.container(keyedBy: CLIPConfigKey.self)
        try c.checkModelType(Self.modelType)
        try c.rejectGenericFieldsThatChangeComputation()
        textConfig = try c.subConfig("text_config_dict") ?? c.subConfig("text_config") ?? CLIPTextConfig()
        visionConfig = try c.subConfig("vision_config_dict") ?? c.subConfig("vision_config") ?? CLIPVisionConfig()
        projectionDim = try c.field("projection_dim", projectionDim)
        logitScaleInitValue = try c.field("logit_scale_init_value", logitScaleInitValue)
        try CLIPConfigKey.require(projectionDim > 0, "projection_dim", "must be positive, got \(projectionDim)")
    }

    public func encode(to encoder: Encoder) throws {
        var c = encoder.container(keyedBy: CLIPConfigKey.self)
        try c.encode(Self.modelType, forKey: "model_type")
        try c.encode(textConfig, forKey: "text_config")
        try c.encode(visionConfig, forKey: "vision_config")
        try c.encode(projectionDim, forKey: "projection_dim")
        try c.encode(logitScaleInitValue, forKey: "logit_scale_init_value")
    }

    /// The vision tower as `CLIPModel.get_image_features` runs it: `visual_projection` maps to the
    /// top-level `projection_dim` (the vision config's own `projection_dim` is not used by `CLIPModel`).
    public var visionConfigWithProjection: CLIPVisionConfig {
        var config = visionConfig
        config.projectionDim = projectionDim
        return config
    }
}

// MARK: - Decoding helpers

/// A JSON object key; also the namespace of the shared decoding and validation helpers.
struct CLIPConfigKey: CodingKey, ExpressibleByStringLiteral {
    var stringValue: String
    var intValue: Int? { nil }
    init(stringValue: String) { self.stringValue = stringValue }
    init?(intValue: Int) { return nil }
    init(stringLiteral value: String) { stringValue = value }

    static func require(_ condition: Bool, _ field: String, _ message: String) throws {
        if !condition { throw CLIPError.config(file: nil, field: field, message: message) }
    }

    static func validateTransformer(hiddenSize: Int, intermediateSize: Int, numHiddenLayers: Int,
                                    numAttentionHeads: Int, layerNormEps: Double, attentionDropout: Double) throws {
        try require(hiddenSize > 0, "hidden_size", "must be positive, got \(hiddenSize)")
        try require(intermediateSize > 0, "intermediate_size", "must be positive, got \(intermediateSize)")
        try require(numHiddenLayers >= 0, "num_hidden_layers", "must not be negative, got \(numHiddenLayers)")
        try require(numAttentionHeads > 0 && hiddenSize % numAttentionHeads == 0, "num_attention_heads",
                    "must divide hidden_size (\(hiddenSize)), got \(numAttentionHeads)")
        try require(layerNormEps >= 0, "layer_norm_eps", "must not be negative, got \(layerNormEps)")
        try require(attentionDropout >= 0 && attentionDropout < 1, "attention_dropout",
                    "must be in [0, 1), got \(attentionDropout)")
    }
}

extension KeyedDecodingContainer where Key == CLIPConfigKey {
    /// The value of `name`, or `fallback` (transformers' default) when the key is absent or null.
    func field<T: Decodable>(_ name: String, _ fallback: T, nullMessage: String? = nil) throws -> T {
        let key = CLIPConfigKey(stringValue: name)
        guard contains(key) else { return fallback }
        if try decodeNil(forKey: key) {
            if let nullMessage { throw CLIPError.config(file: nil, field: name, message: nullMessage) }
            return fallback
        }
        do {
            return try decode(T.self, forKey: key)
        } catch let error as DecodingError {
            throw CLIPError.config(file: nil, field: name, message: "expected \(T.self): \(error.shortDescription)")
        }
    }

    /// An optional value: absent keeps `fallback`, null gives nil.
    func optionalField<T: Decodable>(_ name: String, _ fallback: T?) throws -> T? {
        let key = CLIPConfigKey(stringValue: name)
        guard contains(key) else { return fallback }
        if try decodeNil(forKey: key) { return nil }
        do {
            return try decode(T.self, forKey: key)
        } catch let error as DecodingError {
            throw CLIPError.config(file: nil, field: name, message: "expected \(T.self) or null: \(error.shortDescription)")
        }
    }

    func activation(_ fallback: CLIPActivation) throws -> CLIPActivation {
        let name: String = try field("hidden_act", fallback.rawValue)
        guard let act = CLIPActivation(rawValue: name) else {
            let known = CLIPActivation.allCases.map(\.rawValue).joined(separator: ", ")
            throw CLIPError.config(file: nil, field: "hidden_act", message: "unsupported activation \"\(name)\" (supported: \(known))")
        }
        return act
    }

    /// A nested config object, nil when absent or null.
    func subConfig<T: Decodable>(_ name: String) throws -> T? {
        let key = CLIPConfigKey(stringValue: name)
        guard contains(key), try !decodeNil(forKey: key) else { return nil }
        do {
            return try decode(T.self, forKey: key)
        } catch let CLIPError.config(file, field, message) {
            throw CLIPError.config(file: file, field: "\(name).\(field)", message: message)
        } catch let error as DecodingError {
            throw CLIPError.config(file: nil, field: name, message: "expected an object: \(error.shortDescription)")
        }
    }

    /// `model_type`, when present, must be the expected one: a config of another model decoded as
    /// CLIP would otherwise be read with CLIP's defaults.
    func checkModelType(_ expected: String) throws {
        guard let found: String = try optionalField("model_type", nil) else { return }
        if found != expected {
            throw CLIPError.config(file: nil, field: "model_type", message: "expected \"\(expected)\", found \"\(found)\"")
        }
    }

    /// Generic `PretrainedConfig` fields that would change what the model computes.
    func rejectGenericFieldsThatChangeComputation() throws {
        if contains("pruned_heads"), try !decodeNil(forKey: "pruned_heads") {
            let heads = (try? decode([String: [Int]].self, forKey: "pruned_heads")) ?? ["?": [0]]
            if !heads.isEmpty {
                throw CLIPError.config(file: nil, field: "pruned_heads", message: "head pruning is not supported (CLIP in transformers does not implement it either)")
            }
        }
        if contains("quantization_config"), try !decodeNil(forKey: "quantization_config") {
            throw CLIPError.config(file: nil, field: "quantization_config", message: "quantized checkpoints are not supported")
        }
    }
}

extension DecodingError {
    /// The underlying message without the coding path (the caller names the field).
    var shortDescription: String {
        switch self {
        case .typeMismatch(_, let context), .valueNotFound(_, let context), .keyNotFound(_, let context),
             .dataCorrupted(let context):
            return context.debugDescription
        @unknown default:
            return "\(self)"
        }
    }
}
