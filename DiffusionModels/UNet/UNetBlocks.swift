import Foundation

// The UNet2DConditionModel's down, mid and up blocks (diffusers models/unets/unet_2d_blocks.py):
// DownBlock2D, CrossAttnDownBlock2D, UNetMidBlock2DCrossAttn, UpBlock2D, CrossAttnUpBlock2D.
// Keys: resnets.i, attentions.i (Transformer2DModel), downsamplers.0 / upsamplers.0.
//
// Gradient checkpointing (`checkpointing: true` while grad mode is on) recomputes activations in
// backward. Down blocks checkpoint each (resnet [+ transformer]) unit: every unit's output is a skip
// connection the up path keeps anyway, so this frees the same memory as checkpointing the whole
// block. The mid block and each up block are checkpointed whole. Dropout (p = 0 in SD) would draw
// different masks when recomputed.

/// A down block: returns the hidden states and the skip connections it adds for the up path.
public protocol UNetDownBlock: Module {
    /// The block's downsampler (none in the last block).
    var downsamplers: [Downsample2D] { get }
    func callAsFunction(_ x: Tensor, temb: Tensor, encoderHiddenStates: Tensor?, checkpointing: Bool) -> (Tensor, [Tensor])
}

/// An up block: consumes `resnetCount` skip connections (the last one first).
public protocol UNetUpBlock: Module {
    var resnetCount: Int { get }
    func callAsFunction(_ x: Tensor, skips: [Tensor], temb: Tensor, encoderHiddenStates: Tensor?,
                        upsampleSize: (Int, Int)?, checkpointing: Bool) -> Tensor
}

/// Shared construction settings of the blocks (diffusers passes these to every block).
public struct UNetBlockSettings {
    public var tembChannels: Int
    public var eps: Double
    public var groups: Int
    public var dropout: Double
    public var dtype: DType

    public init(tembChannels: Int, eps: Double, groups: Int, dropout: Double = 0, dtype: DType = .float32) {
        self.tembChannels = tembChannels
        self.eps = eps
        self.groups = groups
        self.dropout = dropout
        self.dtype = dtype
    }

    func resnet(_ inChannels: Int, _ outChannels: Int, outputScaleFactor: Double = 1,
                generator: inout PhiloxGenerator) -> ResnetBlock2D {
        ResnetBlock2D(inChannels: inChannels, outChannels: outChannels, tembChannels: tembChannels, groups: groups,
                      eps: eps, dropout: dropout, outputScaleFactor: outputScaleFactor, dtype: dtype, generator: &generator)
    }
}

/// The cross-attention settings of a block's Transformer2DModels.
public struct UNetAttentionSettings {
    public var heads: Int
    public var crossAttentionDim: Int
    public var useLinearProjection: Bool
    public var upcastAttention: Bool

    public init(heads: Int, crossAttentionDim: Int, useLinearProjection: Bool = false, upcastAttention: Bool = false) {
        self.heads = heads
        self.crossAttentionDim = crossAttentionDim
        self.useLinearProjection = useLinearProjection
        self.upcastAttention = upcastAttention
    }

    func transformer(_ channels: Int, layers: Int, _ s: UNetBlockSettings, generator: inout PhiloxGenerator) -> Transformer2DModel {
        // diffusers: Transformer2DModel(heads, channels // heads, in_channels=channels, ...).
        Transformer2DModel(numAttentionHeads: heads, attentionHeadDim: channels / heads, inChannels: channels,
                           numLayers: layers, dropout: s.dropout, normNumGroups: s.groups,
                           crossAttentionDim: crossAttentionDim, useLinearProjection: useLinearProjection,
                           upcastAttention: upcastAttention, dtype: s.dtype, generator: &generator)
    }
}

/// Runs `body` under gradient checkpointing when asked (and grad mode is on), else directly.
/// `inputs` are [x, temb, encoder states?] + extras; `body` must read only what it is handed.
private func maybeCheckpoint(_ enabled: Bool, _ inputs: [Tensor], _ body: @escaping ([Tensor]) -> Tensor) -> Tensor {
    enabled && GradMode.isEnabled ? checkpoint(inputs, body) : body(inputs)
}

/// [x, temb] + [encoder states] when present.
private func packed(_ x: Tensor, _ temb: Tensor, _ enc: Tensor?) -> [Tensor] {
    enc.map { [x, temb, $0] } ?? [x, temb]
}

// MARK: - Down

public final class DownBlock2D: Module, UNetDownBlock {
    public var resnets: [ResnetBlock2D]
    public var downsamplers: [Downsample2D]

    public init(inChannels: Int, outChannels: Int, numLayers: Int, addDownsample: Bool, downsamplePadding: Int,
                settings s: UNetBlockSettings, generator: inout PhiloxGenerator) {
        var r: [ResnetBlock2D] = []
        for i in 0..<numLayers { r.append(s.resnet(i == 0 ? inChannels : outChannels, outChannels, generator: &generator)) }
        resnets = r
        downsamplers = addDownsample
            ? [Downsample2D(channels: outChannels, useConv: true, padding: downsamplePadding, dtype: s.dtype, generator: &generator)]
            : []
        super.init()
    }

    public func callAsFunction(_ x: Tensor, temb: Tensor, encoderHiddenStates: Tensor?, checkpointing: Bool) -> (Tensor, [Tensor]) {
        var h = x
        var outputs: [Tensor] = []
        for resnet in resnets {
            h = maybeCheckpoint(checkpointing, [h, temb]) { t in resnet(t[0], temb: t[1]) }
            outputs.append(h)
        }
        for d in downsamplers {
            h = d(h)
            outputs.append(h)
        }
        return (h, outputs)
    }
}

public final class CrossAttnDownBlock2D: Module, UNetDownBlock {
    public var attentions: [Transformer2DModel]
    public var resnets: [ResnetBlock2D]
    public var downsamplers: [Downsample2D]

    public init(inChannels: Int, outChannels: Int, numLayers: Int, transformerLayers: Int, addDownsample: Bool,
                downsamplePadding: Int, settings s: UNetBlockSettings, attention a: UNetAttentionSettings,
                generator: inout PhiloxGenerator) {
        var r: [ResnetBlock2D] = [], t: [Transformer2DModel] = []
        for i in 0..<numLayers {
            r.append(s.resnet(i == 0 ? inChannels : outChannels, outChannels, generator: &generator))
            t.append(a.transformer(outChannels, layers: transformerLayers, s, generator: &generator))
        }
        resnets = r
        attentions = t
        downsamplers = addDownsample
            ? [Downsample2D(channels: outChannels, useConv: true, padding: downsamplePadding, dtype: s.dtype, generator: &generator)]
            : []
        super.init()
    }

    public func callAsFunction(_ x: Tensor, temb: Tensor, encoderHiddenStates: Tensor?, checkpointing: Bool) -> (Tensor, [Tensor]) {
        var h = x
        var outputs: [Tensor] = []
        for (resnet, attn) in zip(resnets, attentions) {
            h = maybeCheckpoint(checkpointing, packed(h, temb, encoderHiddenStates)) { t in
                attn(resnet(t[0], temb: t[1]), encoderHiddenStates: t.count > 2 ? t[2] : nil)
            }
            outputs.append(h)
        }
        for d in downsamplers {
            h = d(h)
            outputs.append(h)
        }
        return (h, outputs)
    }
}

// MARK: - Mid

/// resnets.0, then (attentions.i, resnets.i+1) pairs; resnets use `outputScaleFactor`
/// (the config's mid_block_scale_factor).
public final class UNetMidBlock2DCrossAttn: Module {
    public var attentions: [Transformer2DModel]
    public var resnets: [ResnetBlock2D]

    public init(channels: Int, numLayers: Int = 1, transformerLayers: Int, outputScaleFactor: Double,
                settings s: UNetBlockSettings, attention a: UNetAttentionSettings, generator: inout PhiloxGenerator) {
        var r = [s.resnet(channels, channels, outputScaleFactor: outputScaleFactor, generator: &generator)]
        var t: [Transformer2DModel] = []
        for _ in 0..<numLayers {
            t.append(a.transformer(channels, layers: transformerLayers, s, generator: &generator))
            r.append(s.resnet(channels, channels, outputScaleFactor: outputScaleFactor, generator: &generator))
        }
        resnets = r
        attentions = t
        super.init()
    }

    public func callAsFunction(_ x: Tensor, temb: Tensor, encoderHiddenStates: Tensor?, checkpointing: Bool = false) -> Tensor {
        maybeCheckpoint(checkpointing, packed(x, temb, encoderHiddenStates)) { [self] t in
            let enc = t.count > 2 ? t[2] : nil
            var h = resnets[0](t[0], temb: t[1])
            for (attn, resnet) in zip(attentions, resnets.dropFirst()) {
                h = resnet(attn(h, encoderHiddenStates: enc), temb: t[1])
            }
            return h
        }
    }
}

// MARK: - Up

/// Channel bookkeeping shared by the up blocks: resnet i reads (previous output or the block input)
/// concatenated with a skip connection.
private func upResnets(inChannels: Int, outChannels: Int, prevOutputChannels: Int, numLayers: Int,
                       settings s: UNetBlockSettings, generator: inout PhiloxGenerator) -> [ResnetBlock2D] {
    (0..<numLayers).map { i in
        let skipChannels = i == numLayers - 1 ? inChannels : outChannels
        let resnetIn = i == 0 ? prevOutputChannels : outChannels
        return s.resnet(resnetIn + skipChannels, outChannels, generator: &generator)
    }
}

public final class UpBlock2D: Module, UNetUpBlock {
    public var resnets: [ResnetBlock2D]
    public var upsamplers: [Upsample2D]
    public var resnetCount: Int { resnets.count }

    public init(inChannels: Int, prevOutputChannels: Int, outChannels: Int, numLayers: Int, addUpsample: Bool,
                settings s: UNetBlockSettings, generator: inout PhiloxGenerator) {
        resnets = upResnets(inChannels: inChannels, outChannels: outChannels, prevOutputChannels: prevOutputChannels,
                            numLayers: numLayers, settings: s, generator: &generator)
        upsamplers = addUpsample ? [Upsample2D(channels: outChannels, useConv: true, dtype: s.dtype, generator: &generator)] : []
        super.init()
    }

    public func callAsFunction(_ x: Tensor, skips: [Tensor], temb: Tensor, encoderHiddenStates: Tensor?,
                               upsampleSize: (Int, Int)?, checkpointing: Bool) -> Tensor {
        precondition(skips.count == resnets.count, "UpBlock2D: \(skips.count) skip connections for \(resnets.count) resnets")
        return maybeCheckpoint(checkpointing, [x, temb] + skips) { [self] t in
            var h = t[0]
            var remaining = Array(t[2...])
            for resnet in resnets {
                h = resnet(Tensor.concat([h, remaining.removeLast()], axis: 1), temb: t[1])
            }
            for u in upsamplers { h = u(h, outputSize: upsampleSize) }
            return h
        }
    }
}

public final class CrossAttnUpBlock2D: Module, UNetUpBlock {
    public var attentions: [Transformer2DModel]
    public var resnets: [ResnetBlock2D]
    public var upsamplers: [Upsample2D]
    public var resnetCount: Int { resnets.count }

    public init(inChannels: Int, prevOutputChannels: Int, outChannels: Int, numLayers: Int, transformerLayers: Int,
                addUpsample: Bool, settings s: UNetBlockSettings, attention a: UNetAttentionSettings,
                generator: inout PhiloxGenerator) {
        // diffusers creates resnet i then transformer i, in that order (it matters for seeded init only).
        var r: [ResnetBlock2D] = [], t: [Transformer2DModel] = []
        for i in 0..<numLayers {
            let skipChannels = i == numLayers - 1 ? inChannels : outChannels
            let resnetIn = i == 0 ? prevOutputChannels : outChannels
            r.append(s.resnet(resnetIn + skipChannels, outChannels, generator: &generator))
            t.append(a.transformer(outChannels, layers: transformerLayers, s, generator: &generator))
        }
        resnets = r
        attentions = t
        upsamplers = addUpsample ? [Upsample2D(channels: outChannels, useConv: true, dtype: s.dtype, generator: &generator)] : []
        super.init()
    }

    public func callAsFunction(_ x: Tensor, skips: [Tensor], temb: Tensor, encoderHiddenStates: Tensor?,
                               upsampleSize: (Int, Int)?, checkpointing: Bool) -> Tensor {
        precondition(skips.count == resnets.count, "CrossAttnUpBlock2D: \(skips.count) skip connections for \(resnets.count) resnets")
        let head = packed(x, temb, encoderHiddenStates)
        let skipStart = head.count
        return maybeCheckpoint(checkpointing, head + skips) { [self] t in
            let enc = skipStart > 2 ? t[2] : nil
            var h = t[0]
            var remaining = Array(t[skipStart...])
            for (resnet, attn) in zip(resnets, attentions) {
                h = resnet(Tensor.concat([h, remaining.removeLast()], axis: 1), temb: t[1])
                h = attn(h, encoderHiddenStates: enc)
            }
            for u in upsamplers { h = u(h, outputSize: upsampleSize) }
            return h
        }
    }
}
