import Foundation

// diffusers `Transformer2DModel` (continuous-input path, models/transformers/transformer_2d.py) and
// `BasicTransformerBlock` / `FeedForward` / `GEGLU` (models/attention.py, models/activations.py):
// the spatial transformer inside the UNet's cross-attention blocks.
//
// API:
//   let t = Transformer2DModel(numAttentionHeads: 8, attentionHeadDim: 40, inChannels: 320, numLayers: 1,
//                              normNumGroups: 32, crossAttentionDim: 768, useLinearProjection: false,
//                              generator: &g)
//   let y = t(x, encoderHiddenStates: text)     // x [B, 320, H, W], text [B, 77, 768] → [B, 320, H, W]
//
// Keys: norm (GroupNorm, eps 1e-6), proj_in / proj_out (1×1 Conv2d, or Linear with
// useLinearProjection — SD 2.x), transformer_blocks.i.{norm1, attn1, norm2, attn2, norm3,
// ff.net.0.proj, ff.net.2}. Forward: residual + proj_out(blocks(proj_in(norm(x)) as [B, H·W, inner])).
// Block: x += attn1(norm1(x)); x += attn2(norm2(x), text); x += ff(norm3(x)), with ff =
// net.2(dropout(GEGLU(x))) and GEGLU(x) = a · gelu(b) for [a, b] = net.0.proj(x) split in halves.
// Only diffusers' defaults are built: layer_norm blocks, GEGLU, no attention bias, no
// only_cross_attention / double_self_attention, attention_type "default".

/// diffusers' `GEGLU`: `proj` to 2·dimOut, then first half × exact gelu(second half).
public final class GEGLU: Module {
    public var proj: Linear

    public init(dimIn: Int, dimOut: Int, bias: Bool = true, dtype: DType = .float32, generator: inout PhiloxGenerator) {
        proj = Linear(dimIn, dimOut * 2, bias: bias, dtype: dtype, generator: &generator)
        super.init()
    }

    /// One fused kernel (TensorKit's `geglu`), the projection's bias added in it; a projection with
    /// deltas (LoRA) adds its own bias first.
    public func callAsFunction(_ x: Tensor) -> Tensor {
        if proj.deltas.isEmpty { return geglu(linear(x, weight: proj.weight, bias: nil), bias: proj.bias) }
        return geglu(proj(x))
    }
}

/// diffusers' `FeedForward` with activation "geglu": `net` = [GEGLU, Dropout, Linear].
public final class FeedForward: Module {
    public var net: [Module]

    public init(dim: Int, dimOut: Int? = nil, mult: Int = 4, innerDim: Int? = nil, dropout: Double = 0,
                bias: Bool = true, dtype: DType = .float32, generator: inout PhiloxGenerator) {
        let inner = innerDim ?? dim * mult
        net = [GEGLU(dimIn: dim, dimOut: inner, bias: bias, dtype: dtype, generator: &generator),
               Dropout(dropout, seed: generator.derivedDropoutSeed()),
               Linear(inner, dimOut ?? dim, bias: bias, dtype: dtype, generator: &generator)]
        super.init()
    }

    public func callAsFunction(_ x: Tensor) -> Tensor {
        let h = (net[1] as! Dropout)((net[0] as! GEGLU)(x))
        return (net[2] as! Linear)(h)
    }

    /// self(x) + residual, the residual add fused into the output projection's bias pass.
    public func callAsFunction(_ x: Tensor, residual: Tensor) -> Tensor {
        let h = (net[1] as! Dropout)((net[0] as! GEGLU)(x))
        return (net[2] as! Linear)(h, residual: residual)
    }
}

/// diffusers' `BasicTransformerBlock` with norm_type "layer_norm".
public final class BasicTransformerBlock: Module {
    public var norm1: LayerNorm
    public var attn1: Attention
    public var norm2: LayerNorm?
    public var attn2: Attention?
    public var norm3: LayerNorm
    public var ff: FeedForward

    /// `crossAttentionDim` nil builds no attn2/norm2 (self-attention and feed-forward only).
    public init(dim: Int, numAttentionHeads: Int, attentionHeadDim: Int, dropout: Double = 0,
                crossAttentionDim: Int? = nil, attentionBias: Bool = false, upcastAttention: Bool = false,
                normEps: Double = 1e-5, dtype: DType = .float32, generator: inout PhiloxGenerator) {
        norm1 = LayerNorm(dim, eps: normEps, dtype: dtype)
        attn1 = Attention(queryDim: dim, heads: numAttentionHeads, dimHead: attentionHeadDim, dropout: dropout,
                          bias: attentionBias, upcastAttention: upcastAttention, dtype: dtype, generator: &generator)
        if let crossAttentionDim {
            norm2 = LayerNorm(dim, eps: normEps, dtype: dtype)
            attn2 = Attention(queryDim: dim, crossAttentionDim: crossAttentionDim, heads: numAttentionHeads,
                              dimHead: attentionHeadDim, dropout: dropout, bias: attentionBias,
                              upcastAttention: upcastAttention, dtype: dtype, generator: &generator)
        }
        norm3 = LayerNorm(dim, eps: normEps, dtype: dtype)
        ff = FeedForward(dim: dim, dropout: dropout, dtype: dtype, generator: &generator)
        super.init()
    }

    /// x [B, N, dim]; encoderHiddenStates [B, M, crossAttentionDim] (nil makes attn2 self-attention,
    /// as in diffusers).
    public func callAsFunction(_ x: Tensor, encoderHiddenStates: Tensor?) -> Tensor {
        // Each residual add is fused into the preceding output projection (same values).
        var h = attn1(norm1(x), residual: x)
        if let attn2, let norm2 {
            h = attn2(norm2(h), encoderHiddenStates: encoderHiddenStates, residual: h)
        }
        return ff(norm3(h), residual: h)
    }
}

/// diffusers' `Transformer2DModel` for continuous (feature-map) input.
public final class Transformer2DModel: Module {
    public let inChannels: Int
    public let outChannels: Int
    public let innerDim: Int
    public let useLinearProjection: Bool

    public var norm: GroupNorm
    /// A 1×1 `Conv2d`, or a `Linear` when `useLinearProjection`.
    public var proj_in: Module
    public var transformer_blocks: [BasicTransformerBlock]
    /// A 1×1 `Conv2d`, or a `Linear` when `useLinearProjection`.
    public var proj_out: Module

    public init(numAttentionHeads: Int, attentionHeadDim: Int, inChannels: Int, outChannels: Int? = nil,
                numLayers: Int = 1, dropout: Double = 0, normNumGroups: Int = 32, crossAttentionDim: Int? = nil,
                attentionBias: Bool = false, useLinearProjection: Bool = false, upcastAttention: Bool = false,
                normEps: Double = 1e-5, dtype: DType = .float32, generator: inout PhiloxGenerator) {
        let inner = numAttentionHeads * attentionHeadDim
        let out = outChannels ?? inChannels
        self.inChannels = inChannels
        self.outChannels = out
        innerDim = inner
        self.useLinearProjection = useLinearProjection
        norm = GroupNorm(groups: normNumGroups, channels: inChannels, eps: 1e-6, dtype: dtype)
        proj_in = useLinearProjection
            ? Linear(inChannels, inner, dtype: dtype, generator: &generator)
            : Conv2d(inChannels, inner, kernelSize: 1, dtype: dtype, generator: &generator)
        var blocks: [BasicTransformerBlock] = []
        for _ in 0..<numLayers {
            blocks.append(BasicTransformerBlock(
                dim: inner, numAttentionHeads: numAttentionHeads, attentionHeadDim: attentionHeadDim, dropout: dropout,
                crossAttentionDim: crossAttentionDim, attentionBias: attentionBias, upcastAttention: upcastAttention,
                normEps: normEps, dtype: dtype, generator: &generator))
        }
        transformer_blocks = blocks
        proj_out = useLinearProjection
            ? Linear(inner, out, dtype: dtype, generator: &generator)
            : Conv2d(inner, out, kernelSize: 1, dtype: dtype, generator: &generator)
        super.init()
    }

    /// x [B, inChannels, H, W] → [B, outChannels, H, W] (the residual needs outChannels == inChannels).
    public func callAsFunction(_ x: Tensor, encoderHiddenStates: Tensor?) -> Tensor {
        let (b, h, w) = (x.shape[0], x.shape[2], x.shape[3])
        var hs = norm(x)
        // To tokens [B, H·W, inner].
        if let conv = proj_in as? Conv2d {
            hs = conv(hs).permute([0, 2, 3, 1]).reshape([b, h * w, innerDim])
        } else {
            hs = (proj_in as! Linear)(hs.permute([0, 2, 3, 1]).reshape([b, h * w, inChannels]))
        }
        for block in transformer_blocks { hs = block(hs, encoderHiddenStates: encoderHiddenStates) }
        // Back to [B, outChannels, H, W].
        if let conv = proj_out as? Conv2d, outChannels == inChannels {
            return conv(hs.reshape([b, h, w, innerDim]).permute([0, 3, 1, 2]), residual: x)   // + x, fused
        } else if let conv = proj_out as? Conv2d {
            hs = conv(hs.reshape([b, h, w, innerDim]).permute([0, 3, 1, 2]))
        } else {
            hs = (proj_out as! Linear)(hs).reshape([b, h, w, outChannels]).permute([0, 3, 1, 2])
        }
        return hs + x
    }
}
