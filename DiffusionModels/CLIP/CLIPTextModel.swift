import Foundation

/// Token plus learned absolute position embeddings (`text_model.embeddings`).
///
/// transformers also has a `position_ids` buffer here, registered non-persistent since 4.31: it is
/// not in `save_pretrained` output, so it is not a key of this module (the loader drops it from
/// older checkpoints, as transformers does).
public final class CLIPTextEmbeddings: Module {
    public var token_embedding: Embedding
    public var position_embedding: Embedding

    public init(config: CLIPTextConfig, dtype: DType, generator: inout PhiloxGenerator) {
        token_embedding = Embedding(config.vocabSize, config.hiddenSize, dtype: dtype, generator: &generator)
        position_embedding = Embedding(config.maxPositionEmbeddings, config.hiddenSize, dtype: dtype, generator: &generator)
        super.init()
    }

    /// `inputIds` [B, N] → [B, N, D], positions 0..<N.
    public func callAsFunction(_ inputIds: Tensor) -> Tensor {
        let n = inputIds.shape[1]
        let positions = position_embedding.weight.slice(0, 0, n)  // = embedding(arange(N)), differentiable
        let device = token_embedding.weight.device
        return token_embedding(inputIds.device == device ? inputIds : inputIds.copied(to: device)) + positions.unsqueeze(0)
    }
}

/// `text_model`: embeddings → causal pre-LN encoder → `final_layer_norm`.
public final class CLIPTextTransformer: Module {
    public var embeddings: CLIPTextEmbeddings
    public var encoder: CLIPEncoder
    public var final_layer_norm: LayerNorm

    public init(config: CLIPTextConfig, dtype: DType, generator: inout PhiloxGenerator) {
        embeddings = CLIPTextEmbeddings(config: config, dtype: dtype, generator: &generator)
        encoder = CLIPEncoder(hiddenSize: config.hiddenSize, intermediateSize: config.intermediateSize,
                              numLayers: config.numHiddenLayers, numHeads: config.numAttentionHeads,
                              activation: config.hiddenAct, layerNormEps: config.layerNormEps,
                              attentionDropout: config.attentionDropout, dtype: dtype, generator: &generator)
        final_layer_norm = LayerNorm(config.hiddenSize, eps: config.layerNormEps, dtype: dtype)
        super.init()
    }
}

/// What `CLIPTextModel` returns (transformers' `BaseModelOutputWithPooling`).
public struct CLIPTextModelOutput {
    /// [B, N, D]: the last layer's output after `final_layer_norm` (Stable Diffusion's text conditioning).
    public var lastHiddenState: Tensor
    /// [B, D]: `lastHiddenState` at each sequence's EOS position (see `CLIPTextConfig.eosTokenId`).
    public var pooledOutput: Tensor
    /// When requested: num_hidden_layers + 1 tensors [B, N, D], the embeddings followed by each layer's
    /// output, none of them normalised (so the last one is `lastHiddenState` before `final_layer_norm`).
    public var hiddenStates: [Tensor]?
}

/// transformers' `CLIPTextModel`: Stable Diffusion's text encoder. Keys start with `text_model.`.
public final class CLIPTextModel: Module {
    public var text_model: CLIPTextTransformer
    public let config: CLIPTextConfig

    public init(config: CLIPTextConfig, dtype: DType = .float32, generator: inout PhiloxGenerator) {
        self.config = config
        text_model = CLIPTextTransformer(config: config, dtype: dtype, generator: &generator)
        super.init()
    }

    /// Random initialisation (TensorKit's layer defaults, not transformers' `_init_weights`): for tests
    /// and training from scratch. Use `load(directory:dtype:)` for pretrained weights.
    public convenience init(config: CLIPTextConfig, dtype: DType = .float32, seed: UInt64 = 0) {
        var generator = PhiloxGenerator(seed: seed)
        self.init(config: config, dtype: dtype, generator: &generator)
    }

    /// The forward pass.
    ///
    /// - Parameters:
    ///   - inputIds: [B, N] int64 or int32 token ids, N ≤ `max_position_embeddings` (77 for SD).
    ///   - attentionMask: optional [B, N] padding mask (1 = attend, anything else = masked), as
    ///     transformers' `attention_mask`; it is combined with the causal mask. Stable Diffusion
    ///     passes none. A row whose every visible key is masked follows transformers' eager
    ///     attention (uniform weights over those keys); the SDPA path of transformers may differ there.
    ///   - outputHiddenStates: also return every layer's hidden state (`output_hidden_states=True`).
    public func callAsFunction(_ inputIds: Tensor, attentionMask: Tensor? = nil,
                               outputHiddenStates: Bool = false) throws -> CLIPTextModelOutput {
        let ids = try checkedIds(inputIds, attentionMask: attentionMask)
        let x = text_model.embeddings(inputIds)
        let mask = try attentionMask.map { try additiveMask($0, like: x) }
        let (last, all) = text_model.encoder(x, causal: true, additiveMask: mask, collect: outputHiddenStates)
        let normed = text_model.final_layer_norm(last)
        return CLIPTextModelOutput(lastHiddenState: normed, pooledOutput: pool(normed, ids: ids, batch: inputIds.shape[0]),
                                   hiddenStates: outputHiddenStates ? all : nil)
    }

    /// The prompt embeddings diffusers' `encode_prompt` gives the UNet: `last_hidden_state` when
    /// `clipSkip` is nil or 0, else `final_layer_norm(hidden_states[-(clipSkip + 1)])`. Only the layers
    /// needed are run.
    public func promptEmbeddings(_ inputIds: Tensor, attentionMask: Tensor? = nil, clipSkip: Int? = nil) throws -> Tensor {
        let skip = clipSkip ?? 0
        let layers = config.numHiddenLayers
        guard skip >= 0 && skip <= layers else {
            throw CLIPError.invalidInput("CLIPTextModel: clipSkip must be in 0...\(layers) (num_hidden_layers), got \(skip)")
        }
        _ = try checkedIds(inputIds, attentionMask: attentionMask)
        let x = text_model.embeddings(inputIds)
        let mask = try attentionMask.map { try additiveMask($0, like: x) }
        let (h, _) = text_model.encoder(x, causal: true, additiveMask: mask, layerCount: layers - skip)
        return text_model.final_layer_norm(h)
    }

    // MARK: - helpers

    /// Validates the ids (shape, range, length) and returns them on the host.
    private func checkedIds(_ inputIds: Tensor, attentionMask: Tensor?) throws -> [Int] {
        guard inputIds.rank == 2, inputIds.dtype == .int64 || inputIds.dtype == .int32 else {
            throw CLIPError.invalidInput("CLIPTextModel: input ids must be an int64/int32 [batch, sequence] tensor, got \(inputIds.dtype) \(inputIds.shape)")
        }
        let n = inputIds.shape[1]
        guard n >= 1 && n <= config.maxPositionEmbeddings else {
            throw CLIPError.invalidInput("CLIPTextModel: sequence length \(n) must be in 1...\(config.maxPositionEmbeddings) (max_position_embeddings)")
        }
        let ids = inputIds.toArray().map { Int($0) }
        if let bad = ids.first(where: { $0 < 0 || $0 >= config.vocabSize }) {
            throw CLIPError.invalidInput("CLIPTextModel: token id \(bad) is outside the vocabulary 0..<\(config.vocabSize) (vocab_size)")
        }
        if let attentionMask, attentionMask.shape != inputIds.shape {
            throw CLIPError.invalidInput("CLIPTextModel: attention mask shape \(attentionMask.shape) differs from input ids \(inputIds.shape)")
        }
        return ids
    }

    /// [B, 1, N, N]: padding mask (1 - m, nonzero → lowest finite) plus the causal mask, in the
    /// order transformers adds them (so doubly masked entries become -inf, as there).
    private func additiveMask(_ mask: Tensor, like x: Tensor) throws -> Tensor {
        let b = mask.shape[0], n = mask.shape[1]
        let keep = mask.toArray()
        let low = CLIPAttention.lowestFinite(x.dtype)
        var values = [Double](repeating: 0, count: b * n * n)
        for bi in 0..<b {
            for i in 0..<n {
                for j in 0..<n {
                    let padding = keep[bi * n + j] != 1 ? low : 0
                    let causal = j > i ? low : 0
                    // Rounded through the compute dtype so low + low overflows to -inf as in float32.
                    values[(bi * n + i) * n + j] = x.dtype == .float64 ? padding + causal : Double(Float(padding) + Float(causal))
                }
            }
        }
        return Tensor(values, shape: [b, 1, n, n], dtype: x.dtype, device: x.device)
    }

    /// `lastHiddenState[b, position_b]`, positions by transformers 4.56's rule: eos_token_id == 2 (legacy
    /// configs) → argmax of the ids (first maximum); otherwise the first position equal to eos_token_id
    /// (position 0 when there is none, as argmax of an all-zero row).
    private func pool(_ hidden: Tensor, ids: [Int], batch: Int) -> Tensor {
        let n = ids.count / max(batch, 1)
        var rows: [Tensor] = []
        for b in 0..<batch {
            let row = ids[(b * n)..<((b + 1) * n)]
            let position: Int
            if config.eosTokenId == 2 {
                let top = row.max() ?? 0
                position = row.firstIndex(of: top)! - b * n
            } else {
                position = (row.firstIndex(of: config.eosTokenId) ?? b * n) - b * n
            }
            rows.append(hidden.slice(0, b, b + 1).slice(1, position, position + 1).reshape([hidden.shape[2]]))
        }
        return Tensor.stack(rows, axis: 0)
    }
}
