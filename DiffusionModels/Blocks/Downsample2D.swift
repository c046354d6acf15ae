import Foundation

// diffusers `Downsample2D` (models/downsampling.py): halves the spatial size.
//
// API:
//   // UNet (downsample_padding 1): 3×3 stride-2 conv with padding 1.
//   let d = Downsample2D(channels: 320, useConv: true, padding: 1, generator: &g)
//   // VAE encoder (padding 0): the input is first padded by one zero row/column at the bottom/right
//   // (F.pad(x, (0, 1, 0, 1))), then a 3×3 stride-2 conv with no padding.
//   let v = Downsample2D(channels: 128, useConv: true, padding: 0, generator: &g)
//   // Without a conv: 2×2 average pooling, stride 2 (odd trailing rows/columns dropped).
//   let p = Downsample2D(channels: 64, useConv: false, generator: &g)
//   let y = d(x)        // [B, C, H, W] → [B, outChannels, ⌈H/2⌉, ⌈W/2⌉] (padding 1), ⌊H/2⌋ × ⌊W/2⌋ (padding 0, pooling)
//
// Keys: conv.weight, conv.bias (diffusers' name="op" / "conv" layout; the legacy alias `Conv2d_0`
// is not produced). No norm_type.

public final class Downsample2D: Module {
    public let channels: Int
    public let outChannels: Int
    public let useConv: Bool
    public let padding: Int
    public var conv: Conv2d?

    public init(channels: Int, useConv: Bool = false, outChannels: Int? = nil, padding: Int = 1,
                kernelSize: Int = 3, bias: Bool = true, dtype: DType = .float32, generator: inout PhiloxGenerator) {
        self.channels = channels
        self.outChannels = outChannels ?? channels
        self.useConv = useConv
        self.padding = padding
        if useConv {
            conv = Conv2d(channels, self.outChannels, kernelSize: kernelSize, stride: 2, padding: padding, bias: bias,
                          dtype: dtype, generator: &generator)
        } else {
            precondition(self.outChannels == channels,
                         "Downsample2D: average pooling keeps the channel count (\(channels) → \(self.outChannels))")
        }
        super.init()
    }

    public func callAsFunction(_ x: Tensor) -> Tensor {
        precondition(x.rank == 4 && x.shape[1] == channels, "Downsample2D(\(channels)): input shape \(x.shape)")
        guard let conv else { return averagePool2x2(x) }
        // diffusers pads asymmetrically when the conv itself has no padding (the VAE encoder).
        return conv(padding == 0 ? x.pad([(0, 1), (0, 1)]) : x)
    }

    /// The output's spatial size for a `height` × `width` input, padding included; a size ≤ 0 means
    /// the input is too small for the convolution's kernel (PyTorch refuses it there).
    public func outputSize(height: Int, width: Int) -> (Int, Int) {
        guard let conv else { return (height / 2, width / 2) }
        let extra = padding == 0 ? 1 : 0
        return conv.outputSize(height: height + extra, width: width + extra)
    }

    /// nn.AvgPool2d(kernel_size=2, stride=2): floors odd sizes.
    private func averagePool2x2(_ x: Tensor) -> Tensor {
        let (n, c, h, w) = (x.shape[0], x.shape[1], x.shape[2] / 2, x.shape[3] / 2)
        let even = x.slice(2, 0, 2 * h).slice(3, 0, 2 * w)
        return even.reshape([n, c, h, 2, w, 2]).mean(axes: [3, 5])
    }
}
