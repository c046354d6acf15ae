import Foundation

// 2-D convolution on the CPU, as GEMMs (OpenBLAS threads them).
//
// Three schemes, picked per call:
// - 1×1, stride 1, no padding: the convolution is one GEMM per image and group on the [C, H·W] view.
// - stride 1 (any kernel, padding, dilation): "shifted GEMMs". The batch is laid out as one tall,
//   zero-padded image of row width Wp = W + 2·pw (each image keeps its own padding rows). On that
//   layout a kernel tap (i, j) is a constant offset i·dh·Wp + j·dw, so the output on a "wide" grid of
//   width Wp is Σ_taps W_tap [O, C] · X_padded(shifted) [C, rows·Wp]; the Wp − OW extra columns (and the
//   rows straddling two images) are computed and dropped. This skips im2col's KH·KW-fold copy. The
//   input gradient is the same scheme on the flipped, transposed kernel; the weight gradient is
//   dY_wide · X_shiftedᵀ per tap.
// - otherwise (strided): im2col / col2im per image and block of output rows, then one GEMM.
// Scratch memory is bounded by processing blocks of rows (`convScratchElements`).

/// Scratch elements (per buffer set) the kernels aim to stay under: 8 Mi elements, 32 MB in float32.
/// Variable only so tests can force small blocks.
nonisolated(unsafe) var convScratchElements = 8 << 20

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
    public func conv2d(_ input: Tensor, weight: Tensor, bias: Tensor?, _ p: Conv2dParameters) -> Tensor {
        precondition(input.isContiguous && weight.isContiguous && bias?.isContiguous ?? true,
                     "conv2d kernels need contiguous tensors")
        precondition(input.dtype == weight.dtype && (bias?.dtype ?? input.dtype) == input.dtype,
                     "conv2d: dtypes \(input.dtype), \(weight.dtype), \(bias?.dtype as Any) differ")
        let s = ConvShape(input: input.shape, weight: weight.shape, p)
        let out = empty([s.n, s.o, s.oh, s.ow], input.dtype)
        func run<T: CPUFloat>(_: T.Type) {
            convForward(s, input.pointer(as: T.self), weight.pointer(as: T.self), bias?.pointer(as: T.self),
                        out.pointer(as: T.self))
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
    } else if s.sh == 1 && s.sw == 1 {
        // Taps as [KH·KW][O][Cg] so each tap is a plain row-major [O, Cg] matrix.
        let taps = UnsafeMutablePointer<T>.allocate(capacity: s.taps * s.o * s.cg)
        defer { taps.deallocate() }
        for oc in 0..<s.o {
            for c in 0..<s.cg {
                for t in 0..<s.taps { taps[(t * s.o + oc) * s.cg + c] = w[(oc * s.cg + c) * s.taps + t] }
            }
        }
        shiftedConv(x, images: s.n, channels: s.c, height: s.h, width: s.w, taps: taps, outChannels: s.o,
                    kernel: (s.kh, s.kw), padding: (s.ph, s.pw), dilation: (s.dh, s.dw), groups: s.groups,
                    bias: bias, out)
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
    if s.sh == 1 && s.sw == 1 && qh >= 0 && qw >= 0 {
        // Taps as [KH·KW][C][Og]: tap (i, j) holds W[g·Og + o, c, KH−1−i, KW−1−j] at row g·Cg + c.
        let taps = UnsafeMutablePointer<T>.allocate(capacity: s.taps * s.c * s.og)
        defer { taps.deallocate() }
        for g in 0..<s.groups {
            for o in 0..<s.og {
                for c in 0..<s.cg {
                    let src = w + ((g * s.og + o) * s.cg + c) * s.taps
                    for t in 0..<s.taps {
                        taps[(t * s.c + g * s.cg + c) * s.og + o] = src[s.taps - 1 - t]
                    }
                }
            }
        }
        shiftedConv(dy, images: s.n, channels: s.o, height: s.oh, width: s.ow, taps: taps, outChannels: s.c,
                    kernel: (s.kh, s.kw), padding: (qh, qw), dilation: (s.dh, s.dw), groups: s.groups,
                    bias: nil, dx)
        return
    }
    // General case: columns = W_gᵀ · dY_g, then scatter-add them (col2im) into the zeroed dX.
    let rows = blockRows(perRow: s.kdim * s.ow, total: s.oh)
    let cols = UnsafeMutablePointer<T>.allocate(capacity: s.kdim * rows * s.ow)
    defer { cols.deallocate() }
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
    } else if s.sh == 1 && s.sw == 1 {
        shiftedConvWeightGrad(s, dy, x, dw)
    } else {
        let rows = blockRows(perRow: s.kdim * s.ow, total: s.oh)
        let cols = UnsafeMutablePointer<T>.allocate(capacity: s.kdim * rows * s.ow)
        defer { cols.deallocate() }
        for img in 0..<s.n {
            for g in 0..<s.groups {
                let xg = x + (img * s.c + g * s.cg) * hw
                for y0 in stride(from: 0, to: s.oh, by: rows) {
                    let r = min(rows, s.oh - y0)
                    im2col(s, xg, firstRow: y0, rows: r, into: cols)
                    gemm(false, true, s.og, s.kdim, r * s.ow, 1, dy + (img * s.o + g * s.og) * ohw + y0 * s.ow, ohw,
                         cols, r * s.ow, 1, dw + g * s.og * s.kdim, s.kdim)
                }
            }
        }
    }
}

/// Output rows per block so that `perRow` elements per row stay within the scratch budget.
@inline(__always) private func blockRows(perRow: Int, total: Int) -> Int {
    max(1, min(total, convScratchElements / max(perRow, 1)))
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
    let hw = s.h * s.w, ohw = s.oh * s.ow
    if let bias { fillChannels(out, bias, images: s.n, channels: s.o, count: ohw) }
    let rows = blockRows(perRow: s.kdim * s.ow, total: s.oh)
    let cols = UnsafeMutablePointer<T>.allocate(capacity: s.kdim * rows * s.ow)
    defer { cols.deallocate() }
    for img in 0..<s.n {
        for g in 0..<s.groups {
            let xg = x + (img * s.c + g * s.cg) * hw
            for y0 in stride(from: 0, to: s.oh, by: rows) {
                let r = min(rows, s.oh - y0)
                im2col(s, xg, firstRow: y0, rows: r, into: cols)
                gemm(false, false, s.og, r * s.ow, s.kdim, 1, w + g * s.og * s.kdim, s.kdim, cols, r * s.ow,
                     bias == nil ? 0 : 1, out + (img * s.o + g * s.og) * ohw + y0 * s.ow, ohw)
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

// MARK: - Stride-1 convolutions through shifted GEMMs

/// The batch [N, C, H, W] seen as one tall zero-padded image of N·Hp rows of width Wp.
private struct TallLayout {
    let images, height, width, padTop, padLeft, hp, wp: Int
    /// Extra input rows and columns a block of output rows reads beyond itself.
    let extraRows, extraColumns: Int
    /// Output rows of the tall image (rows straddling two images included).
    var outputRows: Int { images * hp - extraRows }
    /// Output width and rows per image.
    let outHeight, outWidth: Int

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

/// Stride-1 convolution of `src` [N, channels, height, width] with per-tap matrices
/// `taps` [KH·KW][outChannels][channels/groups] into `dst` [N, outChannels, OH, OW], plus `bias`.
private func shiftedConv<T: CPUFloat>(_ src: UnsafePointer<T>, images: Int, channels: Int, height: Int, width: Int,
                                      taps: UnsafePointer<T>, outChannels: Int, kernel: (Int, Int),
                                      padding: (Int, Int), dilation: (Int, Int), groups: Int,
                                      bias: UnsafePointer<T>?, _ dst: UnsafeMutablePointer<T>) {
    let L = TallLayout(images: images, height: height, width: width, kernel: kernel, padding: padding, dilation: dilation)
    let kg = channels / groups, mg = outChannels / groups, tapCount = kernel.0 * kernel.1
    let oh = L.outHeight, ow = L.outWidth
    let rows = blockRows(perRow: (channels + outChannels) * L.wp, total: L.outputRows)
    let slab = UnsafeMutablePointer<T>.allocate(capacity: channels * L.slabStride(rows: rows))
    let wide = UnsafeMutablePointer<T>.allocate(capacity: outChannels * rows * L.wp)
    defer { slab.deallocate(); wide.deallocate() }
    for t0 in stride(from: 0, to: L.outputRows, by: rows) {
        let r = min(rows, L.outputRows - t0)
        L.buildSlab(src, channels: channels, firstRow: t0, rows: r, into: slab)
        let lds = L.slabStride(rows: r), ldw = r * L.wp
        for t in 0..<tapCount {
            let shift = (t / kernel.1) * dilation.0 * L.wp + (t % kernel.1) * dilation.1
            for g in 0..<groups {
                gemm(false, false, mg, ldw, kg, 1, taps + (t * outChannels + g * mg) * kg, kg,
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

/// Weight gradient of a stride-1 convolution: for each tap, dW_tap [O, Cg] = dY_wide · X_shiftedᵀ,
/// with dY laid out on the padded tall grid and zero in the columns and rows that are not outputs.
private func shiftedConvWeightGrad<T: CPUFloat>(_ s: ConvShape, _ dy: UnsafePointer<T>, _ x: UnsafePointer<T>,
                                                _ dw: UnsafeMutablePointer<T>) {
    let L = TallLayout(images: s.n, height: s.h, width: s.w, kernel: (s.kh, s.kw), padding: (s.ph, s.pw),
                       dilation: (s.dh, s.dw))
    let rows = blockRows(perRow: (s.c + s.o) * L.wp, total: L.outputRows)
    let slab = UnsafeMutablePointer<T>.allocate(capacity: s.c * L.slabStride(rows: rows))
    let wide = UnsafeMutablePointer<T>.allocate(capacity: s.o * rows * L.wp)
    let taps = UnsafeMutablePointer<T>.allocate(capacity: s.taps * s.o * s.cg)
    taps.initialize(repeating: 0, count: s.taps * s.o * s.cg)
    defer { slab.deallocate(); wide.deallocate(); taps.deallocate() }
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
                     1, taps + (t * s.o + g * s.og) * s.cg, s.cg)
            }
        }
    }
    for oc in 0..<s.o {
        for c in 0..<s.cg {
            for t in 0..<s.taps { dw[(oc * s.cg + c) * s.taps + t] = taps[(t * s.o + oc) * s.cg + c] }
        }
    }
}
