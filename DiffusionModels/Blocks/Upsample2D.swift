import Foundation

// diffusers `Upsample2D` (models/upsampling.py): nearest-neighbour ×2 (or to an explicit size), then
// an optional 3×3 conv (padding 1).
//
// API:
//   let u = Upsample2D(channels: 1280, useConv: true, generator: &g)
//   let y = u(x)                                   // [B, C, H, W] → [B, outChannels, 2H, 2W]
//   let z = u(x, outputSize: (33, 17))             // nearest resize to 33×17 first (the UNet passes the
//                                                  // skip connection's size when H or W is not a
//                                                  // multiple of 2^levels)
//
// Keys: conv.weight, conv.bias. No conv-transpose variant, no norm_type.

public final class Upsample2D: Module {
    public let channels: Int
    public let outChannels: Int
    public var conv: Conv2d?

    public init(channels: Int, useConv: Bool = false, outChannels: Int? = nil, kernelSize: Int = 3,
                padding: Int = 1, bias: Bool = true, dtype: DType = .float32, generator: inout PhiloxGenerator) {
        self.channels = channels
        self.outChannels = outChannels ?? channels
        if useConv {
            conv = Conv2d(channels, self.outChannels, kernelSize: kernelSize, padding: padding, bias: bias,
                          dtype: dtype, generator: &generator)
        } else {
            precondition(self.outChannels == channels,
                         "Upsample2D: without a conv the channel count stays \(channels), not \(self.outChannels)")
        }
        super.init()
    }

    public func callAsFunction(_ x: Tensor, outputSize: (Int, Int)? = nil) -> Tensor {
        precondition(x.rank == 4 && x.shape[1] == channels, "Upsample2D(\(channels)): input shape \(x.shape)")
        var h: Tensor
        if let (oh, ow) = outputSize, oh != 2 * x.shape[2] || ow != 2 * x.shape[3] {
            h = resizeNearest(x, height: oh, width: ow)
        } else {
            h = x.upsampleNearest(scale: 2)
        }
        if let conv { h = conv(h) }
        return h
    }
}

/// F.interpolate(x, size: (height, width), mode: "nearest"): output index i reads input index
/// min(⌊i · (in/out)⌋, in − 1) with the ratio in float32, as PyTorch computes it. Differentiable (a
/// gather per axis through `embedding`, whose backward scatter-adds).
func resizeNearest(_ x: Tensor, height: Int, width: Int) -> Tensor {
    precondition(x.rank == 4 && height > 0 && width > 0, "resizeNearest: input \(x.shape) to \(height)×\(width)")
    func sourceIndices(_ input: Int, _ output: Int) -> [Int] {
        let scale = Float(input) / Float(output)
        return (0..<output).map { Swift.min(Int((Float($0) * scale).rounded(.down)), input - 1) }
    }
    func gather(_ t: Tensor, axis: Int, size: Int) -> Tensor {
        let input = t.shape[axis]
        if input == size { return t }
        // Move `axis` first, flatten the rest into rows of an embedding table, pick rows, move back.
        var order = Array(0..<t.rank)
        order.remove(at: axis)
        order.insert(axis, at: 0)
        let moved = t.permute(order)
        let rest = Array(moved.shape.dropFirst())
        let table = moved.reshape([input, rest.reduce(1, *)])
        let indices = Tensor(indices: sourceIndices(input, size), shape: [size], device: t.device)
        var inverse = [Int](repeating: 0, count: t.rank)
        for (i, o) in order.enumerated() { inverse[o] = i }
        return embedding(indices, weight: table).reshape([size] + rest).permute(inverse)
    }
    return gather(gather(x, axis: 2, size: height), axis: 3, size: width).contiguous()
}
