import Foundation

// diffusers `Attention` (models/attention_processor.py) with its default processor
// (AttnProcessor2_0: scaled dot-product attention), for both users in Stable Diffusion:
//
//   // UNet transformer blocks: self-attention (attn1) and cross-attention (attn2), no biases on q/k/v.
//   let attn1 = Attention(queryDim: 320, heads: 8, dimHead: 40, generator: &g)
//   let attn2 = Attention(queryDim: 320, crossAttentionDim: 768, heads: 8, dimHead: 40, generator: &g)
//   let y = attn2(x, encoderHiddenStates: text)      // x [B, N, 320], text [B, 77, 768] → [B, N, 320]
//
//   // VAE mid-block: one head over all channels, GroupNorm first, biases, residual, rescale.
//   let a = Attention(queryDim: 512, heads: 1, dimHead: 512, bias: true, normNumGroups: 32, eps: 1e-6,
//                     residualConnection: true, rescaleOutputFactor: 1, generator: &g)
//   let z = a(x)                                     // x [B, 512, H, W] → [B, 512, H, W]
//
// Keys: group_norm (optional), to_q, to_k, to_v, to_out.0 (to_out.1 is a parameter-free Dropout).
// Forward: a 4-D input [B, C, H, W] is read as [B, H·W, C] and written back as [B, C, H, W];
// x = group_norm(x) over channels; q = to_q(x); k, v = to_k(ctx), to_v(ctx) with ctx = the encoder
// states or x; heads split to [B, H, N, Dh]; softmax(q kᵀ/√Dh) v; to_out.0; dropout;
// (+ residual, the original input); / rescaleOutputFactor.
//
// `upcastAttention` / `upcastSoftmax` are recorded for fidelity only: they make diffusers compute the
// scores in float32 when the model runs in float16, and TensorKit's attention already accumulates in
// float32 (or float64), so in float32 they are a no-op. (diffusers' default SDPA processor ignores
// them too.)

public final class Attention: Module {
    public let heads: Int
    public let dimHead: Int
    public let residualConnection: Bool
    public let rescaleOutputFactor: Double
    public let upcastAttention: Bool
    public let upcastSoftmax: Bool

    public var group_norm: GroupNorm?
    public var to_q: Linear
    public var to_k: Linear
    public var to_v: Linear
    /// `[Linear, Dropout]`, as diffusers' `to_out` ModuleList (keys `to_out.0.weight`, `to_out.0.bias`).
    public var to_out: [Module]

    /// - Parameters:
    ///   - crossAttentionDim: width of the encoder states for cross-attention (nil: self-attention,
    ///     keys and values read `queryDim`-wide inputs).
    ///   - bias: biases on to_q/to_k/to_v (false in the UNet, true in the VAE); `outBias` on to_out.0.
    ///   - outDim: output width of to_out.0 (defaults to `queryDim`).
    ///   - normNumGroups: adds `group_norm` (GroupNorm over `queryDim` channels with `eps`) before q/k/v.
    public init(queryDim: Int, crossAttentionDim: Int? = nil, heads: Int = 8, dimHead: Int = 64,
                dropout: Double = 0, bias: Bool = false, outBias: Bool = true, outDim: Int? = nil,
                upcastAttention: Bool = false, upcastSoftmax: Bool = false, normNumGroups: Int? = nil,
                eps: Double = 1e-5, residualConnection: Bool = false, rescaleOutputFactor: Double = 1,
                dtype: DType = .float32, generator: inout PhiloxGenerator) {
        precondition(heads > 0 && dimHead > 0, "Attention: heads (\(heads)) and dimHead (\(dimHead)) must be positive")
        self.heads = heads
        self.dimHead = dimHead
        self.residualConnection = residualConnection
        self.rescaleOutputFactor = rescaleOutputFactor
        self.upcastAttention = upcastAttention
        self.upcastSoftmax = upcastSoftmax
        let inner = heads * dimHead
        let contextDim = crossAttentionDim ?? queryDim
        group_norm = normNumGroups.map { GroupNorm(groups: $0, channels: queryDim, eps: eps, dtype: dtype) }
        to_q = Linear(queryDim, inner, bias: bias, dtype: dtype, generator: &generator)
        to_k = Linear(contextDim, inner, bias: bias, dtype: dtype, generator: &generator)
        to_v = Linear(contextDim, inner, bias: bias, dtype: dtype, generator: &generator)
        to_out = [Linear(inner, outDim ?? queryDim, bias: outBias, dtype: dtype, generator: &generator),
                  Dropout(dropout, seed: generator.derivedDropoutSeed())]
        super.init()
    }

    /// hiddenStates [B, N, C] or [B, C, H, W]; encoderHiddenStates [B, M, crossAttentionDim] or nil for
    /// self-attention. Returns the input's layout.
    public func callAsFunction(_ hiddenStates: Tensor, encoderHiddenStates: Tensor? = nil) -> Tensor {
        attend(hiddenStates, encoderHiddenStates: encoderHiddenStates, residual: nil)
    }

    /// self(hiddenStates, encoderHiddenStates) + residual (a transformer block's `attn(norm(h)) + h`),
    /// the add fused into `to_out.0`'s bias pass when nothing comes between them (token input, no
    /// active dropout, no own residual or rescale); the same values either way.
    public func callAsFunction(_ hiddenStates: Tensor, encoderHiddenStates: Tensor? = nil, residual: Tensor) -> Tensor {
        attend(hiddenStates, encoderHiddenStates: encoderHiddenStates, residual: residual)
    }

    private func attend(_ hiddenStates: Tensor, encoderHiddenStates: Tensor?, residual outerResidual: Tensor?) -> Tensor {
        let residual = hiddenStates
        var x = hiddenStates
        let spatial = x.rank == 4 ? Array(x.shape) : nil
        if let s = spatial { x = x.reshape([s[0], s[1], s[2] * s[3]]).transposed(1, 2) }
        precondition(x.rank == 3, "Attention expects [B, N, C] or [B, C, H, W], got \(hiddenStates.shape)")
        if let norm = group_norm { x = norm(x.transposed(1, 2)).transposed(1, 2) }

        let batch = x.shape[0]
        let context = encoderHiddenStates ?? x
        let q = splitHeads(to_q(x), batch: batch)
        let k = splitHeads(to_k(context), batch: batch)
        let v = splitHeads(to_v(context), batch: batch)
        var out = scaledDotProductAttention(q, k, v)           // [B, H, N, Dh], scale 1/√Dh
            .transposed(1, 2).reshape([batch, -1, heads * dimHead])
        let dropout = to_out[1] as! Dropout
        if let outerResidual, spatial == nil, !residualConnection, rescaleOutputFactor == 1,
           dropout.p == 0 || !dropout.isTraining, outerResidual.shape == [batch, out.shape[1], (to_out[0] as! Linear).outFeatures] {
            return (to_out[0] as! Linear)(out, residual: outerResidual)
        }
        out = (to_out[0] as! Linear)(out)
        out = dropout(out)

        if let s = spatial { out = out.transposed(1, 2).reshape(s) }
        if residualConnection { out = out + residual }
        out = rescaleOutputFactor == 1 ? out : out / rescaleOutputFactor
        return outerResidual.map { out + $0 } ?? out
    }

    /// [B, N, H·Dh] → [B, H, N, Dh].
    private func splitHeads(_ t: Tensor, batch: Int) -> Tensor {
        t.reshape([batch, -1, heads, dimHead]).transposed(1, 2)
    }
}
