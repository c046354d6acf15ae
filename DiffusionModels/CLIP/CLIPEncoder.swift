import Foundation

// The transformer shared by CLIP's text and vision towers (transformers' CLIPAttention, CLIPMLP,
// CLIPEncoderLayer, CLIPEncoder). Property names are the checkpoint keys.

/// Multi-head self-attention with separate q/k/v/out projections (all with bias).
public final class CLIPAttention: Module {
    public var k_proj: Linear
    public var v_proj: Linear
    public var q_proj: Linear
    public var out_proj: Linear
    /// Dropout on the attention probabilities (active only in training with p > 0).
    public var dropout: Dropout
    public let numHeads: Int
    public let headDim: Int

    public init(hiddenSize: Int, numHeads: Int, attentionDropout: Double, dtype: DType, generator: inout PhiloxGenerator) {
        precondition(numHeads > 0 && hiddenSize % numHeads == 0, "CLIPAttention: \(numHeads) heads do not divide \(hiddenSize)")
        self.numHeads = numHeads
        headDim = hiddenSize / numHeads
        k_proj = Linear(hiddenSize, hiddenSize, dtype: dtype, generator: &generator)
        v_proj = Linear(hiddenSize, hiddenSize, dtype: dtype, generator: &generator)
        q_proj = Linear(hiddenSize, hiddenSize, dtype: dtype, generator: &generator)
        out_proj = Linear(hiddenSize, hiddenSize, dtype: dtype, generator: &generator)
        dropout = Dropout(attentionDropout, seed: generator.seed &+ 0x5eed)
        super.init()
    }

    /// `x` [B, N, D]. `additiveMask` [B, 1, N, N] is added to the scores and, when given, is the whole
    /// mask (it must already contain the causal part); `causal` alone masks the future.
    public func callAsFunction(_ x: Tensor, causal: Bool, additiveMask: Tensor? = nil) -> Tensor {
        let b = x.shape[0], n = x.shape[1], d = x.shape[2]
        func heads(_ t: Tensor) -> Tensor { t.reshape([b, n, numHeads, headDim]).transposed(1, 2) }
        let q = heads(q_proj(x)), k = heads(k_proj(x)), v = heads(v_proj(x))
        let scale = 1 / Double(headDim).squareRoot()
        let attended: Tensor
        if additiveMask == nil && !(isTraining && dropout.p > 0) {
            // The fused kernel never materialises the N×N scores.
            attended = scaledDotProductAttention(q, k, v, causal: causal, scale: scale)
        } else {
            // Explicit scores, as transformers' eager path: a padding mask or attention dropout.
            var scores = q.matmul(k.transposed(-2, -1)) * scale
            if let additiveMask { scores = scores + additiveMask }
            if causal && additiveMask == nil { scores = scores + CLIPAttention.causalMask(n, dtype: x.dtype, device: x.device) }
            attended = dropout(scores.softmax(axis: -1)).matmul(v)
        }
        return out_proj(attended.transposed(1, 2).reshape([b, n, d]))
    }

    /// [1, 1, N, N]: 0 on and below the diagonal, the dtype's lowest finite value above it
    /// (transformers' `_create_4d_causal_attention_mask`).
    static func causalMask(_ n: Int, dtype: DType, device: Device) -> Tensor {
        let low = lowestFinite(dtype)
        var values = [Double](repeating: 0, count: n * n)
        for i in 0..<n { for j in (i + 1)..<n { values[i * n + j] = low } }
        return Tensor(values, shape: [1, 1, n, n], dtype: dtype, device: device)
    }

    /// `torch.finfo(dtype).min` for the compute dtypes.
    static func lowestFinite(_ dtype: DType) -> Double {
        switch dtype {
        case .float64: return -Double.greatestFiniteMagnitude
        case .float16: return -65504
        case .bfloat16: return -3.3895313892515355e38
        default: return -Double(Float.greatestFiniteMagnitude)
        }
    }
}

/// fc1 → activation → fc2.
public final class CLIPMLP: Module {
    public var fc1: Linear
    public var fc2: Linear
    public let activation: CLIPActivation

    public init(hiddenSize: Int, intermediateSize: Int, activation: CLIPActivation, dtype: DType,
                generator: inout PhiloxGenerator) {
        fc1 = Linear(hiddenSize, intermediateSize, dtype: dtype, generator: &generator)
        fc2 = Linear(intermediateSize, hiddenSize, dtype: dtype, generator: &generator)
        self.activation = activation
        super.init()
    }

    public func callAsFunction(_ x: Tensor) -> Tensor { fc2(activation(fc1(x))) }
}

/// Pre-LayerNorm residual block: x + attn(ln1(x)), then x + mlp(ln2(x)).
public final class CLIPEncoderLayer: Module {
    public var self_attn: CLIPAttention
    public var layer_norm1: LayerNorm
    public var mlp: CLIPMLP
    public var layer_norm2: LayerNorm

    public init(hiddenSize: Int, intermediateSize: Int, numHeads: Int, activation: CLIPActivation, layerNormEps: Double,
                attentionDropout: Double, dtype: DType, generator: inout PhiloxGenerator) {
        self_attn = CLIPAttention(hiddenSize: hiddenSize, numHeads: numHeads, attentionDropout: attentionDropout,
                                  dtype: dtype, generator: &generator)
        layer_norm1 = LayerNorm(hiddenSize, eps: layerNormEps, dtype: dtype)
        mlp = CLIPMLP(hiddenSize: hiddenSize, intermediateSize: intermediateSize, activation: activation, dtype: dtype,
                      generator: &generator)
        layer_norm2 = LayerNorm(hiddenSize, eps: layerNormEps, dtype: dtype)
        super.init()
    }

    public func callAsFunction(_ x: Tensor, causal: Bool, additiveMask: Tensor? = nil) -> Tensor {
        let h = x + self_attn(layer_norm1(x), causal: causal, additiveMask: additiveMask)
        return h + mlp(layer_norm2(h))
    }
}

/// The stack of encoder layers (`encoder.layers.<i>`).
public final class CLIPEncoder: Module {
    public var layers: [CLIPEncoderLayer]

    public init(hiddenSize: Int, intermediateSize: Int, numLayers: Int, numHeads: Int, activation: CLIPActivation,
                layerNormEps: Double, attentionDropout: Double, dtype: DType, generator: inout PhiloxGenerator) {
        var layers: [CLIPEncoderLayer] = []
        for _ in 0..<numLayers {
            layers.append(CLIPEncoderLayer(hiddenSize: hiddenSize, intermediateSize: intermediateSize, numHeads: numHeads,
                                           activation: activation, layerNormEps: layerNormEps,
                                           attentionDropout: attentionDropout, dtype: dtype, generator: &generator))
        }
        self.layers = layers
        super.init()
    }

    /// Runs the first `layerCount` layers (all by default). Returns the final state and, when
    /// `collect` is set, the input followed by every layer's output (transformers' `hidden_states`).
    public func callAsFunction(_ x: Tensor, causal: Bool, additiveMask: Tensor? = nil, layerCount: Int? = nil,
                               collect: Bool = false) -> (last: Tensor, all: [Tensor]) {
        var h = x
        var all: [Tensor] = collect ? [x] : []
        for layer in layers.prefix(layerCount ?? layers.count) {
            h = layer(h, causal: causal, additiveMask: additiveMask)
            if collect { all.append(h) }
        }
        return (h, all)
    }
}
