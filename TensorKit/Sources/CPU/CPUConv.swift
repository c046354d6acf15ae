import Foundation

// 2-D convolution on the CPU as GEMMs (split across TensorKit's workers: BLAS.swift). Schemes, picked
// per call and pass (`convAlgorithm`):
// - 1×1, stride 1, no padding: one GEMM per image and group on the [C, H·W] view.
// - stride 1, 3×3, dilation 1, enough channels and tiles: Winograd F(4×4, 3×3) (see its section).
// - other stride-1 kernels with more output pixels than output channels: "shifted GEMMs". The batch
//   is laid out as one tall, zero-padded image of row width Wp = W + 2·pw (each image keeps its own
//   padding rows). There a kernel tap (i, j) is a
//   constant offset i·dh·Wp + j·dw, so the output on a "wide" grid of width Wp is
//   Σ_taps W_tap [O, C] · X_padded(shifted) [C, rows·Wp]; the Wp − OW extra columns (and the rows
//   straddling two images) are computed and dropped. This skips im2col's KH·KW-fold copy, but
//   rearranges the whole weight into KH·KW matrices on every call.
// - otherwise (strided, or small images with many channels, where that weight outweighs the
//   input: a UNet's 8×8 level): im2col / col2im per image and block of output rows, then one GEMM
//   on the weight as it is stored.
// For stride 1 the input gradient is the stride-1 convolution of dY with the flipped kernel (channel
// axes swapped), and the weight gradient uses the same layouts as the forward pass.
// Scratch memory is bounded by processing blocks of rows (`convScratchBytes`) and pooled between calls.

/// Scratch bytes a block of work aims to stay under (enough for both images of an SD-UNet 64×64 layer
/// in one Winograd block); Winograd's transformed weights, at most as much again, come on top.
/// Variable only so tests can force small blocks.
nonisolated(unsafe) var convScratchBytes = 64 << 20

/// The geometry of one convolution, from the input shape [N, C, H, W], weight [O, C/groups, KH, KW].
struct ConvShape {
    let n, c, h, w, o, kh, kw, sh, sw, ph, pw, dh, dw, groups, oh, ow: Int
    var cg: Int { c / groups }
    var og: Int { o / groups }
    var taps: Int { kh * kw }
    /// Rows of the im2col matrix per group.
    var kdim: Int { cg * kh * kw }

    init(input: [Int], weight: [Int], _ p: Conv2dParameters) {
        precondition(input.count == 4 && weight.count == 4, "conv2d: input \(input), weight \(weight) must be 4-D")
        n = input[0]; c = input[1]; h = input[2]; w = input[3]
        o = weight[0]; kh = weight[2]; kw = weight[3]
        sh = p.stride.0; sw = p.stride.1; ph = p.padding.0; pw = p.padding.1
        dh = p.dilation.0; dw = p.dilation.1; groups = p.groups
        precondition(groups > 0 && c == weight[1] * groups && o % groups == 0,
                     "conv2d: input \(input) and weight \(weight) do not fit groups \(groups)")
        precondition(sh > 0 && sw > 0 && dh > 0 && dw > 0 && ph >= 0 && pw >= 0, "conv2d: bad parameters \(p)")
        (oh, ow) = p.outputSize(height: h, width: w, kernel: (kh, kw))
        precondition(oh > 0 && ow > 0, "conv2d: empty output for input \(input), weight \(weight)")
    }

    var isPointwise: Bool { kh == 1 && kw == 1 && sh == 1 && sw == 1 && ph == 0 && pw == 0 }
}

extension CPUBackend {
    public func conv2d(_ input: Tensor, weight: Tensor, bias: Tensor?, residual: Tensor?, _ p: Conv2dParameters) -> Tensor {
        precondition(input.isContiguous && weight.isContiguous && bias?.isContiguous ?? true && residual?.isContiguous ?? true,
                     "conv2d kernels need contiguous tensors")
        precondition(input.dtype == weight.dtype && (bias?.dtype ?? input.dtype) == input.dtype,
                     "conv2d: dtypes \(input.dtype), \(weight.dtype), \(bias?.dtype as Any) differ")
        let s = ConvShape(input: input.shape, weight: weight.shape, p)
        let out = empty([s.n, s.o, s.oh, s.ow], input.dtype)
        if let residual {
            precondition(residual.shape == out.shape && residual.dtype == input.dtype,
                         "conv2d: residual \(residual.shape) \(residual.dtype) for output \(out.shape) \(input.dtype)")
        }
        func run<T: CPUFloat>(_: T.Type) {
            convForward(s, input.pointer(as: T.self), weight.pointer(as: T.self), bias?.pointer(as: T.self),
                        out.pointer(as: T.self))
            // The bias is part of the convolution's GEMMs here; the residual is added after them.
            if let residual { addBiasResidualLoop(out.pointer(as: T.self), UnsafePointer(out.pointer(as: T.self)), nil,
                                                  UnsafePointer(residual.pointer(as: T.self)), count: out.numel, channels: 1, inner: 1) }
        }
        switch input.dtype {
        case .float32: run(Float.self)
        case .float64: run(Double.self)
        default: preconditionFailure("conv2d is not defined for \(input.dtype) on the CPU; convert to float32 first")
        }
        return out
    }

    public func conv2dBackwardInput(_ gradOutput: Tensor, weight: Tensor, inputShape: [Int], _ p: Conv2dParameters) -> Tensor {
        precondition(gradOutput.isContiguous && weight.isContiguous, "conv2d backward needs contiguous tensors")
        precondition(gradOutput.dtype == weight.dtype, "conv2d backward: dtypes \(gradOutput.dtype), \(weight.dtype) differ")
        let s = ConvShape(input: inputShape, weight: weight.shape, p)
        precondition(gradOutput.shape == [s.n, s.o, s.oh, s.ow], "conv2d backward: gradient shape \(gradOutput.shape)")
        let dx = empty(inputShape, gradOutput.dtype)
        func run<T: CPUFloat>(_: T.Type) {
            convBackwardInput(s, gradOutput.pointer(as: T.self), weight.pointer(as: T.self), dx.pointer(as: T.self))
        }
        switch gradOutput.dtype {
        case .float32: run(Float.self)
        case .float64: run(Double.self)
        default: preconditionFailure("conv2d backward is not defined for \(gradOutput.dtype) on the CPU")
        }
        return dx
    }

    public func conv2dBackwardWeight(_ gradOutput: Tensor, input: Tensor, weightShape: [Int], _ p: Conv2dParameters) -> Tensor {
        precondition(gradOutput.isContiguous && input.isContiguous, "conv2d backward needs contiguous tensors")
        precondition(gradOutput.dtype == input.dtype, "conv2d backward: dtypes \(gradOutput.dtype), \(input.dtype) differ")
        let s = ConvShape(input: input.shape, weight: weightShape, p)
        precondition(gradOutput.shape == [s.n, s.o, s.oh, s.ow], "conv2d backward: gradient shape \(gradOutput.shape)")
        let dw = empty(weightShape, input.dtype)
        func run<T: CPUFloat>(_: T.Type) {
            convBackwardWeight(s, gradOutput.pointer(as: T.self), input.pointer(as: T.self), dw.pointer(as: T.self))
        }
        switch input.dtype {
        case .float32: run(Float.self)
        case .float64: run(Double.self)
        default: preconditionFailure("conv2d backward is not defined for \(input.dtype) on the CPU")
        }
        return dw
    }
}

// MARK: - Drivers

private func convForward<T: CPUFloat>(_ s: ConvShape, _ x: UnsafePointer<T>, _ w: UnsafePointer<T>,
                                      _ bias: UnsafePointer<T>?, _ out: UnsafeMutablePointer<T>) {
    if s.n == 0 || s.o == 0 { return }
    if s.cg == 0 {
        // No input channels: the output is the bias alone (the zero-filled output otherwise).
        if let bias { fillChannels(out, bias, images: s.n, channels: s.o, count: s.oh * s.ow) }
        return
    }
    if s.isPointwise {
        let hw = s.h * s.w
        if let bias { fillChannels(out, bias, images: s.n, channels: s.o, count: hw) }
        for img in 0..<s.n {
            for g in 0..<s.groups {
                gemm(false, false, s.og, hw, s.cg, 1, w + g * s.og * s.cg, s.cg,
                     x + (img * s.c + g * s.cg) * hw, hw, bias == nil ? 0 : 1, out + (img * s.o + g * s.og) * hw, hw)
            }
        }
    } else if case let algorithm = convAlgorithm(T.self, s, .forward), algorithm != .im2col {
        strideOneConv(x, images: s.n, channels: s.c, height: s.h, width: s.w, kernel: .forward(w, s),
                      padding: (s.ph, s.pw), dilation: (s.dh, s.dw), groups: s.groups, bias: bias,
                      winograd: algorithm == .winograd, out)
    } else {
        im2colForward(s, x, w, bias, out)
    }
}

private func convBackwardInput<T: CPUFloat>(_ s: ConvShape, _ dy: UnsafePointer<T>, _ w: UnsafePointer<T>,
                                            _ dx: UnsafeMutablePointer<T>) {
    if s.n == 0 || s.c == 0 || s.o == 0 { return }
    let hw = s.h * s.w, ohw = s.oh * s.ow
    if s.isPointwise {
        for img in 0..<s.n {
            for g in 0..<s.groups {
                gemm(true, false, s.cg, hw, s.og, 1, w + g * s.og * s.cg, s.cg,
                     dy + (img * s.o + g * s.og) * ohw, ohw, 0, dx + (img * s.c + g * s.cg) * hw, hw)
            }
        }
        return
    }
    // Stride 1: dX is the stride-1 convolution of dY with the flipped kernel, channels swapped within
    // each group, padded by d·(K−1) − p (needs that padding to be non-negative).
    let qh = s.dh * (s.kh - 1) - s.ph, qw = s.dw * (s.kw - 1) - s.pw
    let algorithm = convAlgorithm(T.self, s, .inputGradient)
    if qh >= 0 && qw >= 0 && algorithm != .im2col {
        strideOneConv(dy, images: s.n, channels: s.o, height: s.oh, width: s.ow, kernel: .inputGradient(w, s),
                      padding: (qh, qw), dilation: (s.dh, s.dw), groups: s.groups, bias: nil,
                      winograd: algorithm == .winograd, dx)
        return
    }
    // General case: columns = W_gᵀ · dY_g, then scatter-add them (col2im) into the zeroed dX.
    let rows = blockRows(T.self, perRow: s.kdim * s.ow, total: s.oh)
    withScratch(T.self, [s.kdim * rows * s.ow]) { buffers in
        let cols = buffers[0]
        for img in 0..<s.n {
            for g in 0..<s.groups {
                let dxg = dx + (img * s.c + g * s.cg) * hw
                for y0 in stride(from: 0, to: s.oh, by: rows) {
                    let r = min(rows, s.oh - y0)
                    gemm(true, false, s.kdim, r * s.ow, s.og, 1, w + g * s.og * s.kdim, s.kdim,
                         dy + (img * s.o + g * s.og) * ohw + y0 * s.ow, ohw, 0, cols, r * s.ow)
                    col2im(s, cols, firstRow: y0, rows: r, into: dxg)
                }
            }
        }
    }
}

private func convBackwardWeight<T: CPUFloat>(_ s: ConvShape, _ dy: UnsafePointer<T>, _ x: UnsafePointer<T>,
                                             _ dw: UnsafeMutablePointer<T>) {
    if s.n == 0 || s.cg == 0 || s.o == 0 { return }
    let hw = s.h * s.w, ohw = s.oh * s.ow
    if s.isPointwise {
        // dW_g += dY_g [Og, HW] · X_gᵀ, accumulated over the batch in the zeroed dW.
        for img in 0..<s.n {
            for g in 0..<s.groups {
                gemm(false, true, s.og, s.cg, hw, 1, dy + (img * s.o + g * s.og) * hw, hw,
                     x + (img * s.c + g * s.cg) * hw, hw, 1, dw + g * s.og * s.cg, s.cg)
            }
        }
    } else if case let algorithm = convAlgorithm(T.self, s, .forward), algorithm != .im2col {
        if algorithm == .winograd {
            winogradWeightGrad(s, dy, x, dw)
        } else {
            shiftedConvWeightGrad(s, dy, x, dw)
        }
    } else {
        forEachIm2colBlock(s, x) { img, g, y0, r, cols in
            gemm(false, true, s.og, s.kdim, r * s.ow, 1, dy + (img * s.o + g * s.og) * ohw + y0 * s.ow,
                 ohw, cols, r * s.ow, 1, dw + g * s.og * s.kdim, s.kdim)
        }
    }
}

/// Output rows per block so that `perRow` elements per row stay within the scratch budget.
@inline(__always) private func blockRows<T>(_: T.Type, perRow: Int, total: Int) -> Int {
    max(1, min(total, convScratchBytes / MemoryLayout<T>.stride / max(perRow, 1)))
}

/// Reusable scratch regions. Convolution buffers run to tens of MB; fresh ones fault their pages in
/// (zeroed by the kernel) on every call, which cost a good part of a convolution's time.
private final class ConvScratchPool: @unchecked Sendable {
    static let shared = ConvScratchPool()
    private let lock = NSLock()
    private var cached: [(UnsafeMutableRawPointer, Int)] = []
    /// At most this many regions (one per concurrent convolution), each at most
    /// `2 · convScratchBytes`, are kept between calls.
    private let keep = 1

    func take(_ bytes: Int) -> (UnsafeMutableRawPointer, Int) {
        lock.lock()
        if let i = cached.indices.filter({ cached[$0].1 >= bytes }).min(by: { cached[$0].1 < cached[$1].1 }) {
            let region = cached.remove(at: i)
            lock.unlock()
            return region
        }
        lock.unlock()
        return (UnsafeMutableRawPointer.allocate(byteCount: max(bytes, 1), alignment: 64), bytes)
    }

    func give(_ region: (UnsafeMutableRawPointer, Int)) {
        lock.lock(); defer { lock.unlock() }
        if region.1 > 2 * convScratchBytes { region.0.deallocate(); return }
        cached.append(region)
        if cached.count > keep {
            // Drop the smallest.
            let i = cached.indices.min(by: { cached[$0].1 < cached[$1].1 })!
            cached.remove(at: i).0.deallocate()
        }
    }
}

/// Runs `body` with uninitialised buffers of the given element counts, carved (64-byte aligned) from
/// one pooled region.
private func withScratch<T, R>(_: T.Type, _ counts: [Int], _ body: ([UnsafeMutablePointer<T>]) -> R) -> R {
    let align = max(1, 64 / MemoryLayout<T>.stride)
    let rounded = counts.map { ($0 + align - 1) / align * align }
    let region = ConvScratchPool.shared.take(rounded.reduce(0, +) * MemoryLayout<T>.stride)
    defer { ConvScratchPool.shared.give(region) }
    let base = region.0.bindMemory(to: T.self, capacity: region.1 / MemoryLayout<T>.stride)
    var pointers: [UnsafeMutablePointer<T>] = []
    var offset = 0
    for n in rounded { pointers.append(base + offset); offset += n }
    return body(pointers)
}

/// A stride for the 36 (or KH·KW) matrices of a transformed-weight or Winograd buffer: the element
/// count rounded to a cache line, plus one line, so the matrices' same-index elements — read or
/// written together — do not all fall in one cache set (counts are often multiples of 4 KiB).
@inline(__always) private func matrixStride<T>(_: T.Type, _ count: Int) -> Int {
    let line = max(1, 64 / MemoryLayout<T>.stride)
    return (count + line - 1) / line * line + line
}

/// Sets each [count] plane of `out` [images, channels, count] to its channel's value.
private func fillChannels<T: CPUFloat>(_ out: UnsafeMutablePointer<T>, _ values: UnsafePointer<T>,
                                       images: Int, channels: Int, count: Int) {
    parallelFor(images * channels, minimumPerChunk: max(1, 65_536 / max(count, 1))) { range in
        for plane in range { (out + plane * count).update(repeating: values[plane % channels], count: count) }
    }
}

// MARK: - Strided convolutions through im2col

private func im2colForward<T: CPUFloat>(_ s: ConvShape, _ x: UnsafePointer<T>, _ w: UnsafePointer<T>,
                                        _ bias: UnsafePointer<T>?, _ out: UnsafeMutablePointer<T>) {
    let ohw = s.oh * s.ow
    if let bias { fillChannels(out, bias, images: s.n, channels: s.o, count: ohw) }
    forEachIm2colBlock(s, x) { img, g, y0, r, cols in
        gemm(false, false, s.og, r * s.ow, s.kdim, 1, w + g * s.og * s.kdim, s.kdim, cols, r * s.ow,
             bias == nil ? 0 : 1, out + (img * s.o + g * s.og) * ohw + y0 * s.ow, ohw)
    }
}

/// Walks (image, group, block of output rows) and hands each block's im2col columns
/// [kdim, rows·ow] to `body(image, group, firstRow, rows, columns)`; the scratch stays within budget.
private func forEachIm2colBlock<T: CPUFloat>(_ s: ConvShape, _ x: UnsafePointer<T>,
                                             _ body: (Int, Int, Int, Int, UnsafeMutablePointer<T>) -> Void) {
    let hw = s.h * s.w
    let rows = blockRows(T.self, perRow: s.kdim * s.ow, total: s.oh)
    withScratch(T.self, [s.kdim * rows * s.ow]) { buffers in
        let cols = buffers[0]
        for img in 0..<s.n {
            for g in 0..<s.groups {
                let xg = x + (img * s.c + g * s.cg) * hw
                for y0 in stride(from: 0, to: s.oh, by: rows) {
                    let r = min(rows, s.oh - y0)
                    im2col(s, xg, firstRow: y0, rows: r, into: cols)
                    body(img, g, y0, r, cols)
                }
            }
        }
    }
}

/// The output columns x in 0..<ow whose input column x·stride − pad + offset lies in 0..<width.
@inline(__always) private func validColumns(ow: Int, stride: Int, pad: Int, offset: Int, width: Int) -> Range<Int> {
    let first = pad > offset ? (pad - offset + stride - 1) / stride : 0
    let limit = width + pad - offset  // need x·stride < limit
    let end = limit <= 0 ? 0 : (limit + stride - 1) / stride
    let lo = min(first, ow), hi = min(max(end, lo), ow)
    return lo..<hi
}

/// Writes rows (c, i, j) × columns (y − firstRow, x) of one image-group's im2col matrix
/// [Cg·KH·KW, rows·OW] for output rows firstRow..<firstRow+rows.
private func im2col<T: CPUFloat>(_ s: ConvShape, _ x: UnsafePointer<T>, firstRow: Int, rows: Int,
                                 into cols: UnsafeMutablePointer<T>) {
    let width = rows * s.ow
    parallelFor(s.kdim, minimumPerChunk: max(1, 16_384 / max(width, 1))) { range in
        for row in range {
            let c = row / s.taps, i = (row / s.kw) % s.kh, j = row % s.kw
            let xs = validColumns(ow: s.ow, stride: s.sw, pad: s.pw, offset: j * s.dw, width: s.w)
            let plane = x + c * s.h * s.w
            var dst = cols + row * width
            for y in firstRow..<(firstRow + rows) {
                let iy = y * s.sh - s.ph + i * s.dh
                if iy < 0 || iy >= s.h || xs.isEmpty {
                    dst.update(repeating: 0, count: s.ow)
                } else {
                    let src = plane + iy * s.w - s.pw + j * s.dw
                    for xo in 0..<xs.lowerBound { dst[xo] = 0 }
                    if s.sw == 1 {
                        (dst + xs.lowerBound).update(from: src + xs.lowerBound, count: xs.count)
                    } else {
                        for xo in xs { dst[xo] = src[xo * s.sw] }
                    }
                    for xo in xs.upperBound..<s.ow { dst[xo] = 0 }
                }
                dst += s.ow
            }
        }
    }
}

/// Adds an im2col-shaped block (see `im2col`) back into one image-group's [Cg, H, W] gradient.
private func col2im<T: CPUFloat>(_ s: ConvShape, _ cols: UnsafePointer<T>, firstRow: Int, rows: Int,
                                 into dx: UnsafeMutablePointer<T>) {
    let width = rows * s.ow
    // Split by channel: each channel's taps touch only that channel's plane.
    parallelFor(s.cg, minimumPerChunk: max(1, 16_384 / max(width * s.taps, 1))) { range in
        for c in range {
            let plane = dx + c * s.h * s.w
            for i in 0..<s.kh {
                for j in 0..<s.kw {
                    let xs = validColumns(ow: s.ow, stride: s.sw, pad: s.pw, offset: j * s.dw, width: s.w)
                    if xs.isEmpty { continue }
                    var src = cols + ((c * s.kh + i) * s.kw + j) * width
                    for y in firstRow..<(firstRow + rows) {
                        let iy = y * s.sh - s.ph + i * s.dh
                        if iy >= 0 && iy < s.h {
                            let dst = plane + iy * s.w - s.pw + j * s.dw
                            if s.sw == 1 {
                                for xo in xs { dst[xo] += src[xo] }
                            } else {
                                for xo in xs { dst[xo * s.sw] += src[xo] }
                            }
                        }
                        src += s.ow
                    }
                }
            }
        }
    }
}

// MARK: - Stride-1 convolutions

/// A kernel as the stride-1 algorithms see it: `rows` output channels by `columns` input channels
/// per group, each a KH×KW filter. For the input gradient it is the forward kernel with the channel
/// axes swapped within each group and the taps reversed.
private struct ConvKernel<T: CPUFloat> {
    let weight: UnsafePointer<T>
    let rows, columns, kh, kw: Int
    let flipped: Bool
    /// Output and input channels per group of the forward weight [O, Cg, KH, KW].
    let og, cg: Int
    var taps: Int { kh * kw }

    static func forward(_ w: UnsafePointer<T>, _ s: ConvShape) -> ConvKernel {
        ConvKernel(weight: w, rows: s.o, columns: s.cg, kh: s.kh, kw: s.kw, flipped: false, og: s.og, cg: s.cg)
    }

    static func inputGradient(_ w: UnsafePointer<T>, _ s: ConvShape) -> ConvKernel {
        ConvKernel(weight: w, rows: s.c, columns: s.og, kh: s.kh, kw: s.kw, flipped: true, og: s.og, cg: s.cg)
    }

    /// Tap t (row-major over KH×KW) of filter (row m, column k).
    @inline(__always) func tap(_ m: Int, _ k: Int, _ t: Int) -> T {
        if !flipped { return weight[(m * columns + k) * taps + t] }
        let g = m / cg, c = m % cg
        return weight[((g * og + k) * cg + c) * taps + taps - 1 - t]
    }

    /// Writes every tap as a row-major [rows, columns] matrix: tap t at `into + t·stride`. Works in
    /// tiles of 16×16 filters: a flipped kernel's column k runs over the weight's slowest axis, so
    /// row by row its reads would each touch a new cache line (the whole weight once per row).
    func writeTapMatrices(into out: UnsafeMutablePointer<T>, stride ts: Int) {
        let tile = 16, tapCount = taps, blocks = (rows + tile - 1) / tile
        // Element (m, k, t) sits at first(m) + k·kStep + t·tStep.
        let kStep = flipped ? cg * tapCount : tapCount, tStep = flipped ? -1 : 1
        parallelFor(blocks, minimumPerChunk: max(1, 32_768 / max(tile * columns * tapCount, 1))) { range in
            for m0 in Swift.stride(from: range.lowerBound * tile, to: min(rows, range.upperBound * tile), by: tile) {
                for k0 in Swift.stride(from: 0, to: columns, by: tile) {
                    for m in m0..<min(m0 + tile, rows) {
                        let first = flipped ? weight + ((m / cg) * og * cg + m % cg) * tapCount + tapCount - 1
                                            : weight + m * columns * tapCount
                        for k in k0..<min(k0 + tile, columns) {
                            let from = first + k * kStep, to = out + m * columns + k
                            for t in 0..<tapCount { to[t * ts] = from[t * tStep] }
                        }
                    }
                }
            }
        }
    }
}

/// Stride-1 convolution of `src` [N, channels, height, width] with `kernel` into
/// dst [N, kernel.rows, OH, OW], plus `bias`; by Winograd or by shifted GEMMs.
private func strideOneConv<T: CPUFloat>(_ src: UnsafePointer<T>, images: Int, channels: Int, height: Int, width: Int,
                                        kernel: ConvKernel<T>, padding: (Int, Int), dilation: (Int, Int), groups: Int,
                                        bias: UnsafePointer<T>?, winograd: Bool, _ dst: UnsafeMutablePointer<T>) {
    if winograd {
        winogradConv(src, images: images, channels: channels, height: height, width: width, kernel: kernel,
                     padding: padding, groups: groups, bias: bias, dst)
    } else {
        shiftedConv(src, images: images, channels: channels, height: height, width: width, kernel: kernel,
                    padding: padding, dilation: dilation, groups: groups, bias: bias, dst)
    }
}

// MARK: Shifted GEMMs

/// The batch [N, C, H, W] seen as one tall zero-padded image of N·Hp rows of width Wp.
private struct TallLayout {
    let images, height, width, padTop, padLeft, hp, wp: Int
    /// Extra input rows and columns a block of output rows reads beyond itself.
    let extraRows, extraColumns: Int
    /// Output rows and columns per image.
    let outHeight, outWidth: Int
    /// Output rows of the tall image (rows straddling two images included).
    var outputRows: Int { images * hp - extraRows }

    init(images: Int, height: Int, width: Int, kernel: (Int, Int), padding: (Int, Int), dilation: (Int, Int)) {
        self.images = images; self.height = height; self.width = width
        padTop = padding.0; padLeft = padding.1
        hp = height + 2 * padding.0; wp = width + 2 * padding.1
        extraRows = dilation.0 * (kernel.0 - 1); extraColumns = dilation.1 * (kernel.1 - 1)
        outHeight = hp - extraRows; outWidth = wp - extraColumns
    }

    /// Channel stride of a slab holding `rows` output rows' worth of input (rows + extraRows padded
    /// rows, plus slack so the last shifted read of a channel stays inside it).
    func slabStride(rows: Int) -> Int { (rows + extraRows) * wp + extraColumns }

    /// Copies the padded tall rows firstRow..<firstRow+rows+extraRows of `src` into `slab`.
    func buildSlab<T: CPUFloat>(_ src: UnsafePointer<T>, channels: Int, firstRow: Int, rows: Int,
                                into slab: UnsafeMutablePointer<T>) {
        let inRows = rows + extraRows, ld = slabStride(rows: rows)
        parallelFor(channels, minimumPerChunk: max(1, 32_768 / max(ld, 1))) { range in
            for c in range {
                var dst = slab + c * ld
                for r in firstRow..<(firstRow + inRows) {
                    let img = r / hp, iy = r % hp - padTop
                    if img < images && iy >= 0 && iy < height {
                        dst.update(repeating: 0, count: padLeft)
                        (dst + padLeft).update(from: src + ((img * channels + c) * height + iy) * width, count: width)
                        (dst + padLeft + width).update(repeating: 0, count: wp - padLeft - width)
                    } else {
                        dst.update(repeating: 0, count: wp)
                    }
                    dst += wp
                }
                dst.update(repeating: 0, count: extraColumns)
            }
        }
    }
}

/// Stride-1 convolution by shifted GEMMs (see the file comment).
private func shiftedConv<T: CPUFloat>(_ src: UnsafePointer<T>, images: Int, channels: Int, height: Int, width: Int,
                                      kernel: ConvKernel<T>, padding: (Int, Int), dilation: (Int, Int), groups: Int,
                                      bias: UnsafePointer<T>?, _ dst: UnsafeMutablePointer<T>) {
    let L = TallLayout(images: images, height: height, width: width, kernel: (kernel.kh, kernel.kw),
                       padding: padding, dilation: dilation)
    let outChannels = kernel.rows, kg = kernel.columns, mg = outChannels / groups, tapCount = kernel.taps
    let oh = L.outHeight, ow = L.outWidth
    let rows = blockRows(T.self, perRow: (channels + outChannels) * L.wp, total: L.outputRows)
    let ts = matrixStride(T.self, outChannels * kg)
    withScratch(T.self, [tapCount * ts, channels * L.slabStride(rows: rows), outChannels * rows * L.wp]) { buffers in
        let taps = buffers[0], slab = buffers[1], wide = buffers[2]
        // Taps as [KH·KW][rows][columns]: each tap a plain row-major matrix.
        kernel.writeTapMatrices(into: taps, stride: ts)
        for t0 in stride(from: 0, to: L.outputRows, by: rows) {
            let r = min(rows, L.outputRows - t0)
            L.buildSlab(src, channels: channels, firstRow: t0, rows: r, into: slab)
            let lds = L.slabStride(rows: r), ldw = r * L.wp
            for t in 0..<tapCount {
                let shift = (t / kernel.kw) * dilation.0 * L.wp + (t % kernel.kw) * dilation.1
                for g in 0..<groups {
                    gemm(false, false, mg, ldw, kg, 1, taps + t * ts + g * mg * kg, kg,
                         slab + g * kg * lds + shift, lds, t == 0 ? 0 : 1, wide + g * mg * ldw, ldw)
                }
            }
            // Keep the rows that belong to an image, cut to OW columns, and add the bias.
            parallelFor(outChannels, minimumPerChunk: max(1, 32_768 / max(ldw, 1))) { range in
                for oc in range {
                    let b = bias?[oc] ?? 0
                    for row in t0..<(t0 + r) {
                        let img = row / L.hp, y = row % L.hp
                        if y >= oh { continue }
                        let from = wide + oc * ldw + (row - t0) * L.wp
                        let to = dst + ((img * outChannels + oc) * oh + y) * ow
                        for x in 0..<ow { to[x] = from[x] + b }
                    }
                }
            }
        }
    }
}

/// Weight gradient of a stride-1 convolution: for each tap, dW_tap [O, Cg] += dY_wide · X_shiftedᵀ,
/// with dY laid out on the padded tall grid and zero in the columns and rows that are not outputs.
private func shiftedConvWeightGrad<T: CPUFloat>(_ s: ConvShape, _ dy: UnsafePointer<T>, _ x: UnsafePointer<T>,
                                                _ dw: UnsafeMutablePointer<T>) {
    let L = TallLayout(images: s.n, height: s.h, width: s.w, kernel: (s.kh, s.kw), padding: (s.ph, s.pw),
                       dilation: (s.dh, s.dw))
    let rows = blockRows(T.self, perRow: (s.c + s.o) * L.wp, total: L.outputRows)
    let ts = matrixStride(T.self, s.o * s.cg)
    withScratch(T.self, [s.taps * ts, s.c * L.slabStride(rows: rows), s.o * rows * L.wp]) { buffers in
        let taps = buffers[0], slab = buffers[1], wide = buffers[2]
        for t0 in stride(from: 0, to: L.outputRows, by: rows) {
            let r = min(rows, L.outputRows - t0)
            L.buildSlab(x, channels: s.c, firstRow: t0, rows: r, into: slab)
            let lds = L.slabStride(rows: r), ldw = r * L.wp
            parallelFor(s.o, minimumPerChunk: max(1, 32_768 / max(ldw, 1))) { range in
                for oc in range {
                    var to = wide + oc * ldw
                    for row in t0..<(t0 + r) {
                        let img = row / L.hp, y = row % L.hp
                        if y < s.oh {
                            to.update(from: dy + ((img * s.o + oc) * s.oh + y) * s.ow, count: s.ow)
                            (to + s.ow).update(repeating: 0, count: L.wp - s.ow)
                        } else {
                            to.update(repeating: 0, count: L.wp)
                        }
                        to += L.wp
                    }
                }
            }
            for t in 0..<s.taps {
                let shift = (t / s.kw) * s.dh * L.wp + (t % s.kw) * s.dw
                for g in 0..<s.groups {
                    gemm(false, true, s.og, s.cg, ldw, 1, wide + g * s.og * ldw, ldw, slab + g * s.cg * lds + shift, lds,
                         t0 == 0 ? 0 : 1, taps + t * ts + g * s.og * s.cg, s.cg)
                }
            }
        }
        // Per-tap [O, Cg] matrices back to OIHW.
        parallelFor(s.o, minimumPerChunk: max(1, 16_384 / max(s.cg * s.taps, 1))) { range in
            for oc in range {
                for c in 0..<s.cg {
                    for t in 0..<s.taps { dw[(oc * s.cg + c) * s.taps + t] = taps[t * ts + oc * s.cg + c] }
                }
            }
        }
    }
}

// MARK: Winograd F(4×4, 3×3)
//
// Lavin & Gray's F(4, 3) with interpolation points 0, ±1, ±2, ∞: a 4×4 output tile of a 3×3
// correlation is Aᵀ [(G g Gᵀ) ⊙ (Bᵀ d B)] A for the 6×6 input tile d, so the sum over channels is one
// [O, C]·[C, tiles] GEMM per transformed position ξ (36 of them: 4× fewer multiplies than direct).
// The weight gradient is the transpose: dU_ξ = Σ_tiles (A dY Aᵀ)_ξ (Bᵀ d B)_ξᵀ, dW = Gᵀ dU G.
// Transformed tiles are stored channel-major, [channel][ξ][tile] (row length `cs`), so each
// channel's transform reads or writes one contiguous block; the GEMMs take ξ's matrix with
// leading dimension 36·cs.
// Precision: the transforms' coefficients (up to 8) cost some float32 accuracy. Measured on
// 2×320×64×64 (unit-scale outputs) the error against float64 is ~3e-6 rms and 8e-5 at worst,
// where the GEMM paths give ~3e-7 and 3e-6.

/// The algorithms a stride-1 convolution can take (strided ones take im2col). `winograd` applies to
/// 3×3 undilated kernels only; forced elsewhere, it falls back to `shifted`.
enum StrideOneConvAlgorithm { case winograd, shifted, im2col }
/// nil: chosen per call (`convAlgorithm`). Variable only so tests can force each algorithm.
nonisolated(unsafe) var convStrideOneAlgorithm: StrideOneConvAlgorithm? = nil

/// Which convolution a pass computes: the forward one (also the weight gradient's layout) or the
/// input gradient's, a convolution of dY with the flipped kernel.
private enum ConvPass { case forward, inputGradient }

/// The algorithm for one pass of a non-pointwise convolution: im2col whenever the stride is not 1.
/// - Winograd (3×3, dilation 1) pays when there are enough channels per group and enough tiles to
///   amortise its transforms, and when its transformed weights (4× the kernel) fit the scratch
///   budget.
/// - Otherwise shifted GEMMs rearrange the weight (O·Cg·KH·KW elements) and copy the padded input
///   once; im2col (col2im for the input gradient) copies the input KH·KW times (C·KH·KW·N·OH·OW)
///   and reads the weight in place. With fewer output pixels than output channels per group, the
///   weight is the bigger copy, in either pass: im2col.
private func convAlgorithm<T>(_: T.Type, _ s: ConvShape, _ pass: ConvPass) -> StrideOneConvAlgorithm {
    guard s.sh == 1 && s.sw == 1 else { return .im2col }
    let winogradApplies = s.kh == 3 && s.kw == 3 && s.dh == 1 && s.dw == 1
    if let forced = convStrideOneAlgorithm { return forced == .winograd && !winogradApplies ? .shifted : forced }
    // The pass's own convolution: its output channels, input channels per group and output size.
    let (outChannels, inPerGroup, outSize) = pass == .forward ? (s.o, s.cg, (s.oh, s.ow)) : (s.c, s.og, (s.h, s.w))
    let tiles = s.n * ((outSize.0 + 3) / 4) * ((outSize.1 + 3) / 4)
    if winogradApplies && inPerGroup >= 16 && outChannels >= 16 && tiles >= 64
        && 36 * outChannels * inPerGroup * MemoryLayout<T>.stride <= convScratchBytes {
        return .winograd
    }
    return s.og > s.n * s.oh * s.ow ? .im2col : .shifted
}

/// Bᵀ·d for one 6-vector.
@inline(__always) private func winogradB<T: CPUFloat>(_ d: UnsafePointer<T>, _ s: Int) -> (T, T, T, T, T, T) {
    let d0 = d[0], d1 = d[s], d2 = d[2 * s], d3 = d[3 * s], d4 = d[4 * s], d5 = d[5 * s]
    let a = d4 - 4 * d2, b = d3 - 4 * d1, c = d4 - d2, e = 2 * (d3 - d1)
    return (4 * d0 - 5 * d2 + d4, a + b, a - b, c + e, c - e, 4 * d1 - 5 * d3 + d5)
}

/// Aᵀ·m for one 6-vector (6 → 4).
@inline(__always) private func winogradA<T: CPUFloat>(_ m: UnsafePointer<T>, _ s: Int) -> (T, T, T, T) {
    let m0 = m[0], m1 = m[s], m2 = m[2 * s], m3 = m[3 * s], m4 = m[4 * s], m5 = m[5 * s]
    let p12 = m1 + m2, n12 = m1 - m2, p34 = m3 + m4, n34 = m3 - m4
    return (m0 + p12 + p34, n12 + 2 * n34, p12 + 4 * p34, n12 + 8 * n34 + m5)
}

/// A·y for one 4-vector (4 → 6): the transpose of `winogradA`, for the weight gradient.
@inline(__always) private func winogradAT<T: CPUFloat>(_ y: UnsafePointer<T>, _ s: Int) -> (T, T, T, T, T, T) {
    let y0 = y[0], y1 = y[s], y2 = y[2 * s], y3 = y[3 * s]
    let p02 = y0 + y2, p13 = y1 + y3, q02 = y0 + 4 * y2, q13 = 2 * y1 + 8 * y3
    return (y0, p02 + p13, p02 - p13, q02 + q13, q02 - q13, y3)
}

/// G·g for one 3-vector (3 → 6).
@inline(__always) private func winogradG<T: CPUFloat>(_ g0: T, _ g1: T, _ g2: T) -> (T, T, T, T, T, T) {
    let a = -(g0 + g2) * (1 / 6 as T), b = g1 * (1 / 6 as T)
    let c = g0 * (1 / 24 as T) + g2 * (1 / 6 as T), e = g1 * (1 / 12 as T)
    return (g0 * (1 / 4 as T), a - b, a + b, c + e, c - e, g2)
}

/// Gᵀ·u for one 6-vector (6 → 3): the transpose of `winogradG`, for the weight gradient.
@inline(__always) private func winogradGT<T: CPUFloat>(_ u: UnsafePointer<T>, _ s: Int) -> (T, T, T) {
    let u0 = u[0], u1 = u[s], u2 = u[2 * s], u3 = u[3 * s], u4 = u[4 * s], u5 = u[5 * s]
    let p12 = u1 + u2, p34 = u3 + u4
    return (u0 * (1 / 4 as T) - p12 * (1 / 6 as T) + p34 * (1 / 24 as T),
            (u2 - u1) * (1 / 6 as T) + (u3 - u4) * (1 / 12 as T),
            (p34 - p12) * (1 / 6 as T) + u5)
}

@inline(__always) private func store<T>(_ p: UnsafeMutablePointer<T>, _ s: Int, _ v: (T, T, T, T, T, T)) {
    p[0] = v.0; p[s] = v.1; p[2 * s] = v.2; p[3 * s] = v.3; p[4 * s] = v.4; p[5 * s] = v.5
}

/// Tiles of the batch: 4×4 output tiles in rows of `tilesWide`; tile rows numbered image-major, so
/// tile (row r, column x) is number r·tilesWide + x. Transforms work a tile row at a time so their
/// inner loops run along image rows rather than per tile.
private struct WinogradTiles {
    let images, outHeight, outWidth, tilesHigh, tilesWide: Int
    var rowCount: Int { images * tilesHigh }
    init(images: Int, outHeight: Int, outWidth: Int) {
        self.images = images; self.outHeight = outHeight; self.outWidth = outWidth
        tilesHigh = (outHeight + 3) / 4; tilesWide = (outWidth + 3) / 4
    }
    /// (image, first output row) of tile row `r`.
    @inline(__always) func origin(row r: Int) -> (Int, Int) { (r / tilesHigh, (r % tilesHigh) * 4) }
    /// Tile rows per block so that `perTile` scratch elements per tile stay within the budget, and
    /// at most ~1024 tiles: enough for the GEMMs, and larger blocks measured slower (V and M outgrow L3).
    func blockRows<T>(_: T.Type, perTile: Int) -> Int {
        let budget = convScratchBytes / MemoryLayout<T>.stride / max(perTile * tilesWide, 1)
        return max(1, min(rowCount, budget, 1024 / tilesWide))
    }
}

/// V[c][ξ][t] = (Bᵀ d B)[ξ] at v + (36·c + ξ)·cs + t for the 6×6 input tiles d of tile rows
/// first..<first+rows (t counts tiles from the block's first).
private func winogradInputTransform<T: CPUFloat>(_ src: UnsafePointer<T>, channels: Int, height: Int, width: Int,
                                                 padding: (Int, Int), _ tiles: WinogradTiles, first: Int, rows: Int,
                                                 into v: UnsafeMutablePointer<T>, rowStride cs: Int) {
    let tw = tiles.tilesWide, count = rows * tw, plane = height * width
    let span = 4 * tw + 2  // input columns one tile row reads, from column −padding.1
    let left = min(padding.1, span), copied = max(0, min(width, span - left))
    parallelFor(channels, minimumPerChunk: max(1, 4096 / max(count, 1))) { range in
        withUnsafeTemporaryAllocation(of: T.self, capacity: 6 * span + 6 * rows * span) { buffer in
            // band: six input rows; mid [6][rows][span]: Bᵀ d for the block's tile rows, so that
            // (Bᵀ d) B then writes each V row in order (six streams instead of 36 interleaved).
            let band = buffer.baseAddress!, mid = band + 6 * span, midStride = rows * span
            for c in range {
                for r in 0..<rows {
                    let (img, oy) = tiles.origin(row: first + r)
                    let base = src + (img * channels + c) * plane
                    for k in 0..<6 {  // the six zero-padded input rows under this tile row
                        let line = band + k * span, y = oy - padding.0 + k
                        if y >= 0 && y < height {
                            line.update(repeating: 0, count: left)
                            (line + left).update(from: base + y * width, count: copied)
                            (line + left + copied).update(repeating: 0, count: span - left - copied)
                        } else {
                            line.update(repeating: 0, count: span)
                        }
                    }
                    let m = mid + r * span
                    for u in 0..<span { store(m + u, midStride, winogradB(band + u, span)) }  // Bᵀ d, down the columns
                }
                for i in 0..<6 {  // (Bᵀ d) B along each row, four columns per tile
                    let dst = v + (36 * c + 6 * i) * cs
                    for r in 0..<rows {
                        let line = mid + i * midStride + r * span, out = dst + r * tw
                        for x in 0..<tw { store(out + x, cs, winogradB(line + 4 &* x, 1)) }
                    }
                }
            }
        }
    }
}

/// U_ξ[m][k] = (G g Gᵀ)[ξ] at u + ξ·us for every filter g of `kernel`.
private func winogradWeights<T: CPUFloat>(_ kernel: ConvKernel<T>, into u: UnsafeMutablePointer<T>, stride us: Int) {
    let columns = kernel.columns, run = 64
    parallelFor(kernel.rows * columns, minimumPerChunk: 2048) { range in
        // Runs of 64 filters go through a local [36][64] buffer so U is written row by row.
        withUnsafeTemporaryAllocation(of: T.self, capacity: 18 + 36 * run) { buffer in
            let mid = buffer.baseAddress!, local = mid + 18  // mid: G g as [6][3]
            for start in stride(from: range.lowerBound, to: range.upperBound, by: run) {
                let n = min(run, range.upperBound - start)
                for e in start..<(start + n) {
                    let m = e / columns, k = e % columns
                    for j in 0..<3 {
                        let r = winogradG(kernel.tap(m, k, j), kernel.tap(m, k, 3 + j), kernel.tap(m, k, 6 + j))
                        mid[j] = r.0; mid[3 + j] = r.1; mid[6 + j] = r.2; mid[9 + j] = r.3; mid[12 + j] = r.4; mid[15 + j] = r.5
                    }
                    for i in 0..<6 {
                        store(local + i * 6 * run + e - start, run, winogradG(mid[3 * i], mid[3 * i + 1], mid[3 * i + 2]))
                    }
                }
                for xi in 0..<36 { (u + xi * us + start).update(from: local + xi * run, count: n) }
            }
        }
    }
}

/// Stride-1 3×3 convolution by Winograd F(4×4, 3×3); arguments as for `shiftedConv`.
private func winogradConv<T: CPUFloat>(_ src: UnsafePointer<T>, images: Int, channels: Int, height: Int, width: Int,
                                       kernel: ConvKernel<T>, padding: (Int, Int), groups: Int,
                                       bias: UnsafePointer<T>?, _ dst: UnsafeMutablePointer<T>) {
    let outChannels = kernel.rows, kg = kernel.columns, mg = outChannels / groups
    let oh = height + 2 * padding.0 - 2, ow = width + 2 * padding.1 - 2
    let tiles = WinogradTiles(images: images, outHeight: oh, outWidth: ow)
    let tw = tiles.tilesWide
    let block = tiles.blockRows(T.self, perTile: 36 * (channels + outChannels))
    let us = matrixStride(T.self, outChannels * kg), cs = matrixStride(T.self, block * tw), ld = 36 * cs
    withScratch(T.self, [36 * us, channels * ld, outChannels * ld]) { buffers in
        let u = buffers[0], v = buffers[1], m = buffers[2]
        winogradWeights(kernel, into: u, stride: us)
        for first in stride(from: 0, to: tiles.rowCount, by: block) {
            let rows = min(block, tiles.rowCount - first), count = rows * tw
            winogradInputTransform(src, channels: channels, height: height, width: width, padding: padding, tiles,
                                   first: first, rows: rows, into: v, rowStride: cs)
            // 36 · groups independent products: one task each, not split further.
            forEachTask(36 * groups) { task in
                let xi = task / groups, g = task % groups
                gemm(false, false, mg, count, kg, 1, u + xi * us + g * mg * kg, kg,
                     v + xi * cs + g * kg * ld, ld, 0, m + xi * cs + g * mg * ld, ld, split: false)
            }
            // Output tiles Aᵀ M A, cut at the image border, plus bias. Aᵀ M runs along whole rows of M
            // (six read streams, vectorisable); the second half goes a tile row at a time.
            let span = 4 * tw
            parallelFor(outChannels, minimumPerChunk: max(1, 4096 / max(count, 1))) { range in
                withUnsafeTemporaryAllocation(of: T.self, capacity: 24 * count + 4 * span) { buffer in
                    let mid = buffer.baseAddress!, band = mid + 24 * count  // mid [4][6][count], band [4][span]
                    for oc in range {
                        let b = bias?[oc] ?? 0
                        let mp = m + oc * ld
                        for j in 0..<6 {  // Aᵀ M down each column j of the 6×6 tiles
                            let column = mp + j * cs, o = mid + j * count
                            for t in 0..<count {
                                let q = winogradA(column + t, 6 * cs)
                                o[t] = q.0; o[6 * count + t] = q.1; o[12 * count + t] = q.2; o[18 * count + t] = q.3
                            }
                        }
                        for r in 0..<rows {
                            let (img, oy) = tiles.origin(row: first + r)
                            for p in 0..<4 {  // (Aᵀ M) A along each row, four output columns per tile
                                let from = mid + p * 6 * count + r * tw, line = band + p * span
                                for x in 0..<tw {
                                    let q = winogradA(from + x, count)
                                    let o = line + 4 &* x
                                    o[0] = q.0; o[1] = q.1; o[2] = q.2; o[3] = q.3
                                }
                            }
                            let out = dst + ((img * outChannels + oc) * oh + oy) * ow
                            for p in 0..<min(4, oh - oy) {
                                let line = band + p * span, to = out + p * ow
                                for x in 0..<ow { to[x] = line[x] + b }
                            }
                        }
                    }
                }
            }
        }
    }
}

/// Weight gradient of a stride-1 3×3 convolution by Winograd (see the section comment) into OIHW `dw`.
private func winogradWeightGrad<T: CPUFloat>(_ s: ConvShape, _ dy: UnsafePointer<T>, _ x: UnsafePointer<T>,
                                             _ dw: UnsafeMutablePointer<T>) {
    let tiles = WinogradTiles(images: s.n, outHeight: s.oh, outWidth: s.ow)
    let tw = tiles.tilesWide
    let block = tiles.blockRows(T.self, perTile: 36 * (s.c + s.o))
    let cs = matrixStride(T.self, block * tw), ld = 36 * cs, us = matrixStride(T.self, s.o * s.cg)
    withScratch(T.self, [s.c * ld, s.o * ld, 36 * us]) { buffers in
        let v = buffers[0], yt = buffers[1], du = buffers[2]
        for first in stride(from: 0, to: tiles.rowCount, by: block) {
            let rows = min(block, tiles.rowCount - first), count = rows * tw
            winogradInputTransform(x, channels: s.c, height: s.h, width: s.w, padding: (s.ph, s.pw), tiles,
                                   first: first, rows: rows, into: v, rowStride: cs)
            // dY tiles (zero past the border) → A y Aᵀ into yt[o][ξ][t], a tile row at a time.
            let ohw = s.oh * s.ow, span = 4 * tw
            parallelFor(s.o, minimumPerChunk: max(1, 4096 / max(count, 1))) { range in
                withUnsafeTemporaryAllocation(of: T.self, capacity: 4 * span + 6 * rows * span) { buffer in
                    // band [4][span]: four dY rows; mid [6][rows][span]: A y for the block (as for V).
                    let band = buffer.baseAddress!, mid = band + 4 * span, midStride = rows * span
                    for oc in range {
                        for r in 0..<rows {
                            let (img, oy) = tiles.origin(row: first + r)
                            let base = dy + (img * s.o + oc) * ohw
                            for k in 0..<4 {
                                let line = band + k * span
                                if oy + k < s.oh {
                                    line.update(from: base + (oy + k) * s.ow, count: s.ow)
                                    (line + s.ow).update(repeating: 0, count: span - s.ow)
                                } else {
                                    line.update(repeating: 0, count: span)
                                }
                            }
                            let m = mid + r * span
                            for u in 0..<span { store(m + u, midStride, winogradAT(band + u, span)) }  // A y, down the columns
                        }
                        for i in 0..<6 {  // (A y) Aᵀ along each row
                            let dst = yt + oc * ld + 6 * i * cs
                            for r in 0..<rows {
                                let line = mid + i * midStride + r * span, out = dst + r * tw
                                for x in 0..<tw { store(out + x, cs, winogradAT(line + 4 &* x, 1)) }
                            }
                        }
                    }
                }
            }
            forEachTask(36 * s.groups) { task in
                let xi = task / s.groups, g = task % s.groups
                gemm(false, true, s.og, s.cg, count, 1, yt + xi * cs + g * s.og * ld, ld,
                     v + xi * cs + g * s.cg * ld, ld, first == 0 ? 0 : 1, du + xi * us + g * s.og * s.cg, s.cg, split: false)
            }
        }
        // dW = Gᵀ dU G per (o, c): nine contiguous values of the OIHW gradient.
        parallelFor(s.o * s.cg, minimumPerChunk: 2048) { range in
            withUnsafeTemporaryAllocation(of: T.self, capacity: 18) { buffer in
                let mid = buffer.baseAddress!  // Gᵀ dU as [3][6]
                for e in range {
                    for j in 0..<6 {
                        let r = winogradGT(du + j * us + e, 6 * us)
                        mid[j] = r.0; mid[6 + j] = r.1; mid[12 + j] = r.2
                    }
                    let out = dw + e * 9
                    for i in 0..<3 {
                        let r = winogradGT(mid + i * 6, 1)
                        out[3 * i] = r.0; out[3 * i + 1] = r.1; out[3 * i + 2] = r.2
                    }
                }
            }
        }
    }
}
