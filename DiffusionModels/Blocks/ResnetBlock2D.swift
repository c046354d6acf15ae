import Foundation

// diffusers `ResnetBlock2D` (models/resnet.py), the pre-norm residual block of the UNet and the VAE.
//
// API:
//   // UNet: conditioned on the time embedding (temb [B, tembChannels]).
//   let r = ResnetBlock2D(inChannels: 320, outChannels: 640, tembChannels: 1280, groups: 32, eps: 1e-5,
//                         generator: &g)
//   let y = r(x, temb: emb)                         // x [B, 320, H, W] → [B, 640, H, W]
//   // VAE: no time embedding (no `time_emb_proj` key).
//   let v = ResnetBlock2D(inChannels: 128, outChannels: 256, tembChannels: nil, groups: 32, eps: 1e-6,
//                         generator: &g)
//   let z = v(x, temb: nil)
//
// Keys: norm1, conv1, time_emb_proj (when tembChannels != nil), norm2, conv2, and conv_shortcut
// (a 1×1 conv, present when the input and output channel counts differ, or when useInShortcut says so).
// Forward: h = conv1(silu(norm1(x))); h += time_emb_proj(silu(temb))[:, :, None, None];
// h = conv2(dropout(silu(norm2(h)))); out = (shortcut(x) + h) / outputScaleFactor. Each silu(norm(·))
// is one fused GroupNorm+SiLU pass (`norm(x, silu: true)`).
// Only diffusers' `time_embedding_norm="default"`, `non_linearity="silu"`, no up/down inside the block.

public final class ResnetBlock2D: Module {
    public let inChannels: Int
    public let outChannels: Int
    public let outputScaleFactor: Double

    public var norm1: GroupNorm
    public var conv1: Conv2d
    public var time_emb_proj: Linear?
    public var norm2: GroupNorm
    public var dropout: Dropout
    public var conv2: Conv2d
    public var conv_shortcut: Conv2d?

    /// - Parameters:
    ///   - outChannels: defaults to `inChannels`.
    ///   - tembChannels: width of the time embedding, or nil for an unconditioned block (VAE).
    ///   - groups / groupsOut: GroupNorm groups of norm1 / norm2 (`groupsOut` defaults to `groups`).
    ///   - conv2dOutChannels: output channels of conv2 (defaults to `outChannels`).
    ///   - useInShortcut: force or suppress the 1×1 shortcut (default: when in ≠ conv2 out channels).
    public init(inChannels: Int, outChannels: Int? = nil, tembChannels: Int? = 512, groups: Int = 32,
                groupsOut: Int? = nil, eps: Double = 1e-6, dropout: Double = 0, outputScaleFactor: Double = 1,
                useInShortcut: Bool? = nil, convShortcutBias: Bool = true, conv2dOutChannels: Int? = nil,
                dtype: DType = .float32, generator: inout PhiloxGenerator) {
        let out = outChannels ?? inChannels
        let finalOut = conv2dOutChannels ?? out
        self.inChannels = inChannels
        self.outChannels = finalOut
        self.outputScaleFactor = outputScaleFactor
        norm1 = GroupNorm(groups: groups, channels: inChannels, eps: eps, dtype: dtype)
        conv1 = Conv2d(inChannels, out, kernelSize: 3, padding: 1, dtype: dtype, generator: &generator)
        time_emb_proj = tembChannels.map { Linear($0, out, dtype: dtype, generator: &generator) }
        norm2 = GroupNorm(groups: groupsOut ?? groups, channels: out, eps: eps, dtype: dtype)
        self.dropout = Dropout(dropout, seed: generator.derivedDropoutSeed())
        conv2 = Conv2d(out, finalOut, kernelSize: 3, padding: 1, dtype: dtype, generator: &generator)
        if useInShortcut ?? (inChannels != finalOut) {
            conv_shortcut = Conv2d(inChannels, finalOut, kernelSize: 1, bias: convShortcutBias, dtype: dtype,
                                   generator: &generator)
        }
        super.init()
    }

    /// x [B, inChannels, H, W], temb [B, tembChannels] (ignored when the block has no `time_emb_proj`,
    /// as in diffusers) → [B, outChannels, H, W].
    public func callAsFunction(_ x: Tensor, temb: Tensor?) -> Tensor {
        var h = conv1(norm1(x, silu: true))
        if let proj = time_emb_proj, let temb {
            let t = proj(temb.silu())
            h = h + t.reshape([t.shape[0], t.shape[1], 1, 1])
        }
        let shortcut = conv_shortcut.map { $0(x) } ?? x
        // (shortcut + conv2(h)): with no rescale the add is fused into conv2's bias pass (same values).
        if outputScaleFactor == 1 { return conv2(dropout(norm2(h, silu: true)), residual: shortcut) }
        h = conv2(dropout(norm2(h, silu: true)))
        return (shortcut + h) / outputScaleFactor
    }
}

extension PhiloxGenerator {
    /// A seed for a Dropout's own stream, taken from this stream so every layer's masks differ.
    mutating func derivedDropoutSeed() -> UInt64 {
        let w = Philox.words(seed: seed, index: reserve(4))
        return UInt64(w.0) << 32 | UInt64(w.1)
    }
}
