import Foundation

/// Pillow's resampling of 8-bit images (`Image.resize` with a filter other than NEAREST and no
/// `reducing_gap`; Pillow's `ImagingResample` in `libImaging/Resample.c`), reproduced bit for bit,
/// because transformers' `CLIPImageProcessor` resizes through PIL: a horizontal pass into an 8-bit
/// image, then a vertical pass, each with antialiasing (the kernel widens by the downscale factor)
/// and 22-bit fixed-point weights. Channels are independent, so images are planar [C, H, W] here.
public enum PILResample {
    /// PIL's filter numbers (`PIL.Image.Resampling`), which `preprocessor_config.json` stores as `resample`.
    public enum Filter: Int, Codable, Sendable, CaseIterable {
        case lanczos = 1, bilinear = 2, bicubic = 3, box = 4, hamming = 5

        var support: Double {
            switch self {
            case .box: return 0.5
            case .bilinear, .hamming: return 1
            case .bicubic: return 2
            case .lanczos: return 3
            }
        }

        func weight(_ x: Double) -> Double {
            switch self {
            case .box:
                return x > -0.5 && x <= 0.5 ? 1 : 0
            case .bilinear:
                let a = Swift.abs(x)
                return a < 1 ? 1 - a : 0
            case .hamming:
                let a = Swift.abs(x)
                if a == 0 { return 1 }
                if a >= 1 { return 0 }
                let t = a * Double.pi
                return Foundation.sin(t) / t * (0.54 + 0.46 * Foundation.cos(t))
            case .bicubic:
                // Keys' cubic with a = -0.5 (PyTorch's bicubic uses -0.75).
                let a = -0.5, t = Swift.abs(x)
                if t < 1 { return ((a + 2) * t - (a + 3)) * t * t + 1 }
                if t < 2 { return (((t - 5) * t + 8) * t - 4) * a }
                return 0
            case .lanczos:
                func sinc(_ v: Double) -> Double {
                    if v == 0 { return 1 }
                    let t = v * Double.pi
                    return Foundation.sin(t) / t
                }
                return x >= -3 && x < 3 ? sinc(x) * sinc(x / 3) : 0
            }
        }
    }

    private static let precisionBits = 32 - 8 - 2

    /// Per output pixel: the first input index, the tap count, and `ksize` fixed-point weights.
    struct Coefficients {
        var start: [Int]
        var count: [Int]
        var weights: [Int]
        var ksize: Int
    }

    static func coefficients(inSize: Int, outSize: Int, filter: Filter) -> Coefficients {
        let scale = Double(inSize) / Double(outSize)
        let filterScale = Swift.max(scale, 1)
        let support = filter.support * filterScale
        let ksize = Int(support.rounded(.up)) * 2 + 1
        var result = Coefficients(start: [], count: [], weights: [Int](repeating: 0, count: outSize * ksize), ksize: ksize)
        var k = [Double](repeating: 0, count: ksize)
        let inverse = 1 / filterScale
        for xx in 0..<outSize {
            let center = (Double(xx) + 0.5) * scale
            // C casts truncate toward zero, as Int(_:) does.
            let xmin = Swift.max(Int(center - support + 0.5), 0)
            let xmax = Swift.min(Int(center + support + 0.5), inSize) - xmin
            var total = 0.0
            for x in 0..<xmax {
                let w = filter.weight((Double(x + xmin) - center + 0.5) * inverse)
                k[x] = w
                total += w
            }
            for x in 0..<xmax {
                let w = total != 0 ? k[x] / total : k[x]
                let fixed = w * Double(1 << precisionBits)
                result.weights[xx * ksize + x] = Int(w < 0 ? -0.5 + fixed : 0.5 + fixed)
            }
            result.start.append(xmin)
            result.count.append(xmax)
        }
        return result
    }

    @inline(__always) private static func clip8(_ v: Int) -> UInt8 {
        if v >= (1 << precisionBits) << 8 { return 255 }
        if v <= 0 { return 0 }
        return UInt8(truncatingIfNeeded: v >> precisionBits)
    }

    /// Resizes planar 8-bit images [channels, height, width] to [channels, toHeight, toWidth].
    public static func resize(_ pixels: [UInt8], channels: Int, height: Int, width: Int,
                              toHeight: Int, toWidth: Int, filter: Filter) -> [UInt8] {
        precondition(pixels.count == channels * height * width, "PILResample: \(pixels.count) bytes for [\(channels), \(height), \(width)]")
        precondition(toHeight > 0 && toWidth > 0, "PILResample: output size \(toHeight)x\(toWidth) must be positive")
        let needHorizontal = toWidth != width, needVertical = toHeight != height
        if !needHorizontal && !needVertical { return pixels }
        let vertical = coefficients(inSize: height, outSize: toHeight, filter: filter)
        // Only the input rows the vertical pass reads go through the horizontal pass.
        let firstRow = needVertical ? vertical.start[0] : 0
        let lastRow = needVertical ? vertical.start[toHeight - 1] + vertical.count[toHeight - 1] : height
        var current = pixels, rows = height, cols = width
        if needHorizontal {
            let h = coefficients(inSize: width, outSize: toWidth, filter: filter)
            let tempRows = lastRow - firstRow
            var out = [UInt8](repeating: 0, count: channels * tempRows * toWidth)
            current.withUnsafeBufferPointer { src in
                out.withUnsafeMutableBufferPointer { dst in
                    for c in 0..<channels {
                        for y in 0..<tempRows {
                            let row = (c * height + y + firstRow) * width
                            for xx in 0..<toWidth {
                                let start = h.start[xx], base = xx * h.ksize
                                var sum = 1 << (precisionBits - 1)
                                for x in 0..<h.count[xx] { sum += Int(src[row + start + x]) * h.weights[base + x] }
                                dst[(c * tempRows + y) * toWidth + xx] = clip8(sum)
                            }
                        }
                    }
                }
            }
            current = out
            rows = tempRows
            cols = toWidth
        }
        guard needVertical else { return current }
        var out = [UInt8](repeating: 0, count: channels * toHeight * cols)
        current.withUnsafeBufferPointer { src in
            out.withUnsafeMutableBufferPointer { dst in
                for c in 0..<channels {
                    for yy in 0..<toHeight {
                        let start = vertical.start[yy] - firstRow, base = yy * vertical.ksize
                        for xx in 0..<cols {
                            var sum = 1 << (precisionBits - 1)
                            for y in 0..<vertical.count[yy] {
                                sum += Int(src[(c * rows + start + y) * cols + xx]) * vertical.weights[base + y]
                            }
                            dst[(c * toHeight + yy) * cols + xx] = clip8(sum)
                        }
                    }
                }
            }
        }
        return out
    }
}
