import Foundation

// Neural-network ops of the CUDA backend: conv2d (im2col + cuBLAS GEMM), group/layer norm,
// softmax, and fused attention. Inputs are made contiguous first, as the Backend protocol allows.

extension CUDABackend {
    // MARK: conv2d

    /// Geometry words for `TKConv`.
    private func convWords(n: Int, c: Int, h: Int, w: Int, kh: Int, kw: Int, oh: Int, ow: Int, _ p: Conv2dParameters) -> [Int64] {
        [n, c, h, w, kh, kw, oh, ow, p.stride.0, p.stride.1, p.padding.0, p.padding.1, p.dilation.0, p.dilation.1].map { Int64($0) }
    }

    /// Images per im2col chunk so the column buffer stays under `CUDA.convolutionWorkspaceBytes`.
    private func imagesPerChunk(_ n: Int, colBytesPerImage: Int) -> Int {
        max(1, min(n, CUDA.convolutionWorkspaceBytes / max(colBytesPerImage, 1)))
    }

    /// Whether every im2col/col2im index of `count` images fits 32-bit arithmetic.
    private func smallConvIndices(count: Int, rows: Int, l: Int, c: Int, h: Int, w: Int) -> Bool {
        count * rows * l < Int(Int32.max) && count * c * h * w < Int(Int32.max)
    }

    private func isPointwise(_ kh: Int, _ kw: Int, _ p: Conv2dParameters) -> Bool {
        kh == 1 && kw == 1 && p.stride == (1, 1) && p.padding == (0, 0)
    }

    /// The forward and weight-gradient loop: the images of `x` [N, C, H, W] in chunks, each chunk's
    /// im2col columns [count, C·kh·kw, oh·ow] built on the device (a pointwise conv uses `x` itself),
    /// then `body(firstImage, count, columnsAddress)`.
    private func forEachIm2colChunk(_ x: Tensor, kh: Int, kw: Int, oh: Int, ow: Int, _ p: Conv2dParameters,
                                    _ body: (_ n0: Int, _ count: Int, _ columns: UInt64) -> Void) {
        let n = x.shape[0], c = x.shape[1], h = x.shape[2], wd = x.shape[3]
        let l = oh * ow, rows = c * kh * kw, size = x.dtype.byteSize
        let chunk = imagesPerChunk(n, colBytesPerImage: rows * l * size)
        let col = isPointwise(kh, kw, p) ? nil : uninitialized([chunk, rows, l], x.dtype)
        for n0 in stride(from: 0, to: n, by: chunk) {
            let count = min(chunk, n - n0)
            let image = address(x) + UInt64(n0 * c * h * wd * size)
            guard let col else {
                body(n0, count, image)
                continue
            }
            let small = smallConvIndices(count: count, rows: rows, l: l, c: c, h: h, w: wd)
            ctx.launch("conv", x.dtype, "tk_im2col", grid: CUDADeviceContext.grid(count * c * l), block: 256, [
                ptr(col), .pointer(image), .words(convWords(n: count, c: c, h: h, w: wd, kh: kh, kw: kw, oh: oh, ow: ow, p)),
                .int32(small ? 1 : 0), .int64(0), .int64(Int64(l)),
            ])
            body(n0, count, address(col))
        }
    }

    public func conv2d(_ input: Tensor, weight: Tensor, bias: Tensor?, residual: Tensor?, _ p: Conv2dParameters) -> Tensor {
        CUDABackend.requireFloat(input.dtype, "conv2d")
        let x = contiguous(input), w = contiguous(weight)
        let n = x.shape[0], c = x.shape[1], h = x.shape[2], wd = x.shape[3]
        let o = w.shape[0], kh = w.shape[2], kw = w.shape[3], groups = p.groups
        let (oh, ow) = p.outputSize(height: h, width: wd, kernel: (kh, kw))
        let l = oh * ow, cg = c / groups, og = o / groups, ckk = cg * kh * kw, rows = c * kh * kw
        let out = uninitialized([n, o, oh, ow], x.dtype)
        if out.numel == 0 { return out }
        if let residual { precondition(residual.shape == out.shape && residual.dtype == out.dtype,
                                       "conv2d: residual \(residual.shape) \(residual.dtype) for output \(out.shape) \(out.dtype)") }
        if usesConvMMA(x.dtype, channels: c, kh: kh, kw: kw, groups: groups, pixels: n * l, outChannels: o) {
            convMMA(into: out, channelsLast(x), convolutionWeights.channelsLast(w, transposed: false, backend: self),
                    bias: bias.map(contiguous), residual: residual.map(contiguous),
                    [n, c, h, wd, kh, kw, oh, ow, p.stride.0, p.stride.1, p.padding.0, p.padding.1,
                     p.dilation.0, p.dilation.1, o], flip: false)
            return out
        }
        let size = x.dtype.byteSize
        if !isPointwise(kh, kw, p) && rows * l * size > CUDA.convolutionWorkspaceBytes {
            convolveInRowBands(x, w, out: out, kh: kh, kw: kw, oh: oh, ow: ow, p)
        } else {
            forEachIm2colChunk(x, kh: kh, kw: kw, oh: oh, ow: ow, p) { n0, count, colAddress in
                for g in 0..<groups {
                    // out[n, g] [og, L] = W_g [og, ckk] · col[n, g] [ckk, L]
                    gemm(x.dtype, transA: false, transB: false, m: og, n: l, k: ckk,
                         a: address(w) + UInt64(g * og * ckk * size), lda: ckk, strideA: 0,
                         b: colAddress + UInt64(g * ckk * l * size), ldb: l, strideB: rows * l,
                         c: address(out) + UInt64(((n0 * o) + g * og) * l * size), ldc: l, strideC: o * l, batch: count)
                }
            }
        }
        if bias != nil || residual != nil {
            biasResidual(into: out, out, bias: bias.map(contiguous), residual: residual.map(contiguous), channels: o, inner: l)
        }
        return out
    }

    // MARK: conv2d on the tensor cores (ConvMMAKernels.swift)

    /// Whether `tk_conv_mma` computes a convolution with these input channels, kernel, output pixels
    /// (over the batch) and output channels: float16/bfloat16, a window (a 1×1 convolution is already
    /// a plain GEMM here), one group, channels a multiple of 8 (16-byte copies), sm_80+,
    /// `CUDA.convolutionMMA`, and at least two 128 × 128 output tiles per multiprocessor. The kernel
    /// has no split-K, so a small grid (SD's 16×16 and 8×8 levels at small batches: 10–60 tiles with
    /// K up to 23040) would leave most of the GPU idle where cuBLAS splits the work.
    func usesConvMMA(_ dtype: DType, channels: Int, kh: Int, kw: Int, groups: Int, pixels: Int, outChannels: Int) -> Bool {
        let tiles = ((pixels + 127) / 128) * ((outChannels + 127) / 128)
        return CUDA.convolutionMMA && (dtype == .float16 || dtype == .bfloat16) && groups == 1 && channels > 0
            && channels % 8 == 0 && kh * kw > 1 && kh * kw * channels < Int(Int32.max) && ctx.info.architecture >= 80
            && tiles >= (CUDA.convolutionMMAMinimumTiles ?? 2 * ctx.info.multiprocessors)
    }

    /// A [n, c, h, w] (or any [n, c, *]) tensor as a channels-last copy [n, *, c]: per image, the
    /// [c, inner] matrix transposed (`transposeCopy`).
    func channelsLast(_ x: Tensor) -> Tensor {
        let n = x.shape[0], c = x.shape[1], inner = x.shape.dropFirst(2).reduce(1, *)
        let src = contiguous(x)
        let out = uninitialized([n] + Array(x.shape.dropFirst(2)) + [c], x.dtype)
        if out.numel == 0 { return out }
        transposeCopy(into: out, from: src, CUDABackend.channelsLastPlan(n: n, c: c, inner: inner))
        return out
    }

    /// Contiguous [n, c, inner] into contiguous [n, inner, c]: per image the [c, inner] matrix transposed.
    static func channelsLastPlan(n: Int, c: Int, inner: Int) -> CUDATransposePlan {
        CUDATransposePlan(batches: n, p: inner, q: c, db: inner * c, dp: c, sb: c * inner, sq: inner)
    }

    /// out (NCHW, contiguous) = the convolution of the channels-last input with weights [o, kh, kw, c]
    /// (+ bias, + residual); `geometry` is TKConvMMA's: n, c, h, w, kh, kw, oh, ow, strides, paddings,
    /// dilations, o.
    private func convMMA(into out: Tensor, _ input: Tensor, _ weights: Tensor, bias: Tensor?, residual: Tensor?,
                         _ geometry: [Int], flip: Bool) {
        let pixels = geometry[0] * geometry[6] * geometry[7], o = geometry[14]
        ctx.launch("conv_mma", out.dtype, "tk_conv_mma", grid: ((pixels + 127) / 128) * ((o + 127) / 128), block: 256, [
            ptr(out), ptr(input), ptr(weights), ptr(bias), ptr(residual), .words(geometry.map { Int64($0) }),
            .int32(flip ? 1 : 0),
        ])
    }

    public func addBiasResidual(_ x: Tensor, bias: Tensor?, residual: Tensor?, inner: Int) -> Tensor {
        CUDABackend.requireFloat(x.dtype, "addBiasResidual")
        precondition(bias.map { $0.rank == 1 && $0.dtype == x.dtype } ?? true && residual.map { $0.shape == x.shape && $0.dtype == x.dtype } ?? true,
                     "addBiasResidual: x \(x.shape) \(x.dtype), bias \(bias?.shape as Any), residual \(residual?.shape as Any)")
        let out = uninitialized(x.shape, x.dtype)
        biasResidual(into: out, contiguous(x), bias: bias.map(contiguous), residual: residual.map(contiguous),
                     channels: bias?.numel ?? 1, inner: inner)
        return out
    }

    /// out = (x + bias) + residual, one kernel (`tk_bias_residual`); contiguous operands, out may be x.
    private func biasResidual(into out: Tensor, _ x: Tensor, bias: Tensor?, residual: Tensor?, channels: Int, inner: Int) {
        let vector = vectorAligned([out, x, residual])
        let grid = CUDADeviceContext.elementGrid(out.numel, elementSize: x.dtype.byteSize, vector: vector)
        ctx.launch("conv", x.dtype, "tk_bias_residual", grid: grid, block: 256, [
            ptr(out), ptr(x), ptr(bias), ptr(residual),
            .int64(Int64(out.numel)), .int64(Int64(max(channels, 1))), .int64(Int64(max(inner, 1))),
        ])
    }

    /// The forward for an image whose im2col columns exceed the workspace: per image, bands of whole
    /// output rows, each band's columns [C·kh·kw, rows·ow] built and multiplied into its slice of the
    /// output (row stride oh·ow), so the buffer stays within `CUDA.convolutionWorkspaceBytes`.
    private func convolveInRowBands(_ x: Tensor, _ w: Tensor, out: Tensor, kh: Int, kw: Int, oh: Int, ow: Int,
                                    _ p: Conv2dParameters) {
        let n = x.shape[0], c = x.shape[1], h = x.shape[2], wd = x.shape[3]
        let o = w.shape[0], groups = p.groups, size = x.dtype.byteSize
        let l = oh * ow, cg = c / groups, og = o / groups, ckk = cg * kh * kw, rows = c * kh * kw
        let bandRows = max(1, min(oh, CUDA.convolutionWorkspaceBytes / max(rows * ow * size, 1)))
        let col = uninitialized([rows, bandRows * ow], x.dtype)
        let small = smallConvIndices(count: 1, rows: rows, l: l, c: c, h: h, w: wd)
        let geometry = convWords(n: 1, c: c, h: h, w: wd, kh: kh, kw: kw, oh: oh, ow: ow, p)
        for image in 0..<n {
            let input = address(x) + UInt64(image * c * h * wd * size)
            for r0 in stride(from: 0, to: oh, by: bandRows) {
                let l0 = r0 * ow, band = min(bandRows, oh - r0) * ow
                ctx.launch("conv", x.dtype, "tk_im2col", grid: CUDADeviceContext.grid(c * band), block: 256, [
                    ptr(col), .pointer(input), .words(geometry), .int32(small ? 1 : 0), .int64(Int64(l0)), .int64(Int64(band)),
                ])
                for g in 0..<groups {
                    // out[image, g][:, l0 ..< l0 + band] = W_g [og, ckk] · col_g [ckk, band]
                    gemm(x.dtype, transA: false, transB: false, m: og, n: band, k: ckk,
                         a: address(w) + UInt64(g * og * ckk * size), lda: ckk, strideA: 0,
                         b: address(col) + UInt64(g * ckk * band * size), ldb: band, strideB: 0,
                         c: address(out) + UInt64(((image * o + g * og) * l + l0) * size), ldc: l, strideC: 0, batch: 1)
                }
            }
        }
    }

    public func conv2dBackwardInput(_ gradOutput: Tensor, weight: Tensor, inputShape: [Int], _ p: Conv2dParameters) -> Tensor {
        CUDABackend.requireFloat(gradOutput.dtype, "conv2d backward")
        let gy = contiguous(gradOutput), w = contiguous(weight)
        let n = inputShape[0], c = inputShape[1], h = inputShape[2], wd = inputShape[3]
        let o = w.shape[0], kh = w.shape[2], kw = w.shape[3], groups = p.groups
        let oh = gy.shape[2], ow = gy.shape[3]
        let l = oh * ow, cg = c / groups, og = o / groups, ckk = cg * kh * kw, rows = c * kh * kw
        let size = gy.dtype.byteSize
        if l == 0 || o == 0 { return empty(inputShape, gy.dtype) }
        // At stride 1 the input gradient is a convolution of the output gradient (padding k − 1 − p)
        // with the weights transposed to [c, kh, kw, o] and their taps rotated by 180° (`flip`).
        if p.stride == (1, 1) && p.dilation == (1, 1) && p.padding.0 < kh && p.padding.1 < kw
            && usesConvMMA(gy.dtype, channels: o, kh: kh, kw: kw, groups: groups, pixels: n * h * wd, outChannels: c)
            && n * c * h * wd > 0 {
            let dx = uninitialized(inputShape, gy.dtype)
            convMMA(into: dx, channelsLast(gy), convolutionWeights.channelsLast(w, transposed: true, backend: self),
                    bias: nil, residual: nil,
                    [n, o, oh, ow, kh, kw, h, wd, 1, 1, kh - 1 - p.padding.0, kw - 1 - p.padding.1, 1, 1, c], flip: true)
            return dx
        }
        let dx = uninitialized(inputShape, gy.dtype)
        if dx.numel == 0 { return dx }
        let pointwise = isPointwise(kh, kw, p)
        let chunk = imagesPerChunk(n, colBytesPerImage: rows * l * size)
        let dcol = pointwise ? nil : uninitialized([chunk, rows, l], gy.dtype)
        for n0 in stride(from: 0, to: n, by: chunk) {
            let count = min(chunk, n - n0)
            let target = dcol.map { address($0) } ?? address(dx) + UInt64(n0 * c * h * wd * size)
            for g in 0..<groups {
                // dcol[n, g] [ckk, L] = W_gᵀ [ckk, og] · dy[n, g] [og, L]
                gemm(gy.dtype, transA: true, transB: false, m: ckk, n: l, k: og,
                     a: address(w) + UInt64(g * og * ckk * size), lda: ckk, strideA: 0,
                     b: address(gy) + UInt64((n0 * o + g * og) * l * size), ldb: l, strideB: o * l,
                     c: target + UInt64(g * ckk * l * size), ldc: l, strideC: rows * l, batch: count)
            }
            if let dcol {
                let small = smallConvIndices(count: count, rows: rows, l: l, c: c, h: h, w: wd)
                ctx.launch("conv", gy.dtype, "tk_col2im", grid: CUDADeviceContext.grid(count * c * h * wd), block: 256, [
                    .pointer(address(dx) + UInt64(n0 * c * h * wd * size)), ptr(dcol),
                    .words(convWords(n: count, c: c, h: h, w: wd, kh: kh, kw: kw, oh: oh, ow: ow, p)),
                    .int32(small ? 1 : 0),
                ])
            }
        }
        return dx
    }

    public func conv2dBackwardWeight(_ gradOutput: Tensor, input: Tensor, weightShape: [Int], _ p: Conv2dParameters) -> Tensor {
        CUDABackend.requireFloat(gradOutput.dtype, "conv2d backward")
        let gy = contiguous(gradOutput), x = contiguous(input)
        let c = x.shape[1]
        let o = weightShape[0], kh = weightShape[2], kw = weightShape[3], groups = p.groups
        let oh = gy.shape[2], ow = gy.shape[3]
        let l = oh * ow, cg = c / groups, og = o / groups, ckk = cg * kh * kw, rows = c * kh * kw
        let size = x.dtype.byteSize
        let dw = empty(weightShape, x.dtype)  // zeroed: the per-image GEMMs accumulate (beta = 1)
        if l == 0 || dw.numel == 0 { return dw }
        forEachIm2colChunk(x, kh: kh, kw: kw, oh: oh, ow: ow, p) { n0, count, colAddress in
            for i in 0..<count {
                for g in 0..<groups {
                    // dW_g [og, ckk] += dy[n, g] [og, L] · col[n, g]ᵀ [L, ckk]
                    gemm(x.dtype, transA: false, transB: true, m: og, n: ckk, k: l,
                         a: address(gy) + UInt64((((n0 + i) * o) + g * og) * l * size), lda: l, strideA: 0,
                         b: colAddress + UInt64((i * rows + g * ckk) * l * size), ldb: l, strideB: 0,
                         c: address(dw) + UInt64(g * og * ckk * size), ldc: ckk, strideC: 0, batch: 1, beta: 1)
                }
            }
        }
        return dw
    }

    // MARK: normalisation

    /// Whether every element index of `x` fits the kernels' 32-bit index arithmetic.
    private func smallIndices(_ x: Tensor) -> KernelArg { .int32(x.numel < Int(Int32.max) ? 1 : 0) }

    public func groupNorm(_ x: Tensor, groups: Int, weight: Tensor?, bias: Tensor?, eps: Double,
                          silu: Bool) -> (Tensor, NormStatistics) {
        precondition(x.rank >= 2 && groups > 0 && x.shape[1] % groups == 0,
                     "groupNorm kernel: needs [N, C, *] with C divisible by \(groups), got \(x.shape)")
        CUDABackend.requireFloat(x.dtype, "group_norm")
        let xs = contiguous(x)
        let n = x.shape[0], channels = x.shape[1], spatial = x.shape.dropFirst(2).reduce(1, *)
        let acc = CUDABackend.accumulation(x.dtype)
        let out = uninitialized(x.shape, x.dtype)
        let mean = uninitialized([n, groups], acc), rstd = uninitialized([n, groups], acc)
        let blocks = n * groups
        if blocks > 0 && x.numel > 0 {
            let split = groupNormSplit(blocks: blocks, size: x.numel / blocks)
            let part = uninitialized([blocks * split.splits * 2], .float64)
            ctx.launch("norm", x.dtype, "tk_group_norm_partial", grid: split.grid, block: 256, [
                ptr(part), ptr(xs), .int64(Int64(blocks)), .int64(Int64(x.numel / blocks)), .int64(Int64(split.chunk)),
                .int32(Int32(split.splits)),
            ])
            ctx.launch("norm", x.dtype, "tk_group_norm_forward", grid: split.grid, block: 256, [
                ptr(out), ptr(mean), ptr(rstd), ptr(xs), ptr(weight.map(contiguous)), ptr(bias.map(contiguous)), ptr(part),
                .int64(Int64(blocks)), .int64(Int64(channels)), .int64(Int64(groups)), .int64(Int64(spatial)),
                .int64(Int64(split.chunk)), .int32(Int32(split.splits)), .float64(eps), .int32(silu ? 1 : 0), smallIndices(xs),
            ])
        }
        return (out, NormStatistics(mean: mean, rstd: rstd))
    }

    /// How the group-norm kernels cut each of `blocks` groups of `size` elements: into `splits`
    /// chunks of `chunk` elements, one thread block each, so that the grid has about four blocks per
    /// multiprocessor even at batch 1 (SD's 32 groups); no chunk below 4096 elements.
    /// Chunks are whole multiples of 8 elements (the last may be shorter or empty), so that the
    /// kernels' 16-byte vectors never cross one.
    func groupNormSplit(blocks: Int, size: Int) -> (splits: Int, chunk: Int, grid: Int) {
        let wanted = (4 * ctx.info.multiprocessors + blocks - 1) / blocks
        let splits = max(1, min(wanted, size / 4096))
        let chunk = splits == 1 ? size : ((size + splits - 1) / splits + 7) / 8 * 8
        return (splits, chunk, min(blocks * splits, 1 << 18))
    }

    public func groupNormBackward(_ gradOutput: Tensor, x: Tensor, groups: Int, weight: Tensor?, bias: Tensor?,
                                  stats: NormStatistics, silu: Bool, parameterGradients: Bool)
        -> (input: Tensor, weight: Tensor?, bias: Tensor?) {
        precondition(gradOutput.shape == x.shape && gradOutput.dtype == x.dtype,
                     "groupNormBackward kernel: gradient \(gradOutput.shape)/\(gradOutput.dtype) for input \(x.shape)/\(x.dtype)")
        let xs = contiguous(x), gs = contiguous(gradOutput)
        let n = x.shape[0], channels = x.shape[1], spatial = x.shape.dropFirst(2).reduce(1, *)
        let acc = CUDABackend.accumulation(x.dtype)
        let mean = converted(stats.mean, acc), rstd = converted(stats.rstd, acc)
        let dx = uninitialized(x.shape, x.dtype)
        let blocks = n * groups
        let w = weight.map(contiguous)
        // The bias only enters through the recomputed pre-activation of the fused SiLU.
        let b = silu ? bias.map(contiguous) : nil
        let flags: [KernelArg] = [.int32(silu ? 1 : 0), smallIndices(xs)]
        if blocks > 0 && x.numel > 0 {
            let split = groupNormSplit(blocks: blocks, size: x.numel / blocks)
            let part = uninitialized([blocks * split.splits * 2], .float64)
            let shape: [KernelArg] = [.int64(Int64(blocks)), .int64(Int64(channels)), .int64(Int64(groups)), .int64(Int64(spatial)),
                                      .int64(Int64(split.chunk)), .int32(Int32(split.splits))]
            ctx.launch("norm", x.dtype, "tk_group_norm_backward_partial", grid: split.grid, block: 256,
                       [ptr(part), ptr(gs), ptr(xs), ptr(w), ptr(b), ptr(mean), ptr(rstd)] + shape + flags)
            ctx.launch("norm", x.dtype, "tk_group_norm_backward", grid: split.grid, block: 256,
                       [ptr(dx), ptr(gs), ptr(xs), ptr(w), ptr(b), ptr(mean), ptr(rstd), ptr(part)] + shape + flags)
        }
        guard parameterGradients else { return (dx, nil, nil) }
        let dw = uninitialized([channels], x.dtype), db = uninitialized([channels], x.dtype)
        if channels > 0 {
            ctx.launch("norm", x.dtype, "tk_group_norm_params", grid: min(channels, 1 << 18), block: 256, [
                ptr(dw), ptr(db), ptr(gs), ptr(xs), ptr(w), ptr(b), ptr(mean), ptr(rstd),
                .int64(Int64(n)), .int64(Int64(channels)), .int64(Int64(groups)), .int64(Int64(spatial)),
            ] + flags)
        }
        return (dx, weight == nil ? nil : dw, db)
    }

    /// Rows of at most this many values are normalised a warp per row (8 per block, no barriers);
    /// wider ones a block per row.
    static let layerNormWarpMaximum = 2048

    /// The layer-norm kernel (`base`, or its `_warp` form for narrow rows) and its grid of 256-thread blocks.
    private func layerNormLaunch(_ base: String, rows: Int, count: Int) -> (String, Int) {
        count <= CUDABackend.layerNormWarpMaximum ? (base + "_warp", min((rows + 7) / 8, 1 << 18)) : (base, min(rows, 1 << 18))
    }

    public func layerNorm(_ x: Tensor, normalizedCount: Int, weight: Tensor?, bias: Tensor?, eps: Double) -> (Tensor, NormStatistics) {
        precondition(normalizedCount > 0 && x.numel % normalizedCount == 0,
                     "layerNorm kernel: input size \(x.shape) is not a multiple of \(normalizedCount)")
        CUDABackend.requireFloat(x.dtype, "layer_norm")
        let xs = contiguous(x)
        let rows = x.numel / normalizedCount
        let acc = CUDABackend.accumulation(x.dtype)
        let out = uninitialized(x.shape, x.dtype)
        let mean = uninitialized([rows], acc), rstd = uninitialized([rows], acc)
        if rows > 0 {
            let (kernel, grid) = layerNormLaunch("tk_layer_norm_forward", rows: rows, count: normalizedCount)
            ctx.launch("norm", x.dtype, kernel, grid: grid, block: 256, [
                ptr(out), ptr(mean), ptr(rstd), ptr(xs), ptr(weight.map(contiguous)), ptr(bias.map(contiguous)),
                .int64(Int64(rows)), .int64(Int64(normalizedCount)), .float64(eps),
            ])
        }
        return (out, NormStatistics(mean: mean, rstd: rstd))
    }

    public func layerNormBackward(_ gradOutput: Tensor, x: Tensor, normalizedCount: Int, weight: Tensor?, stats: NormStatistics,
                                  parameterGradients: Bool)
        -> (input: Tensor, weight: Tensor?, bias: Tensor?) {
        precondition(gradOutput.shape == x.shape && gradOutput.dtype == x.dtype,
                     "layerNormBackward kernel: gradient \(gradOutput.shape)/\(gradOutput.dtype) for input \(x.shape)/\(x.dtype)")
        let xs = contiguous(x), gs = contiguous(gradOutput)
        let rows = x.numel / normalizedCount
        let acc = CUDABackend.accumulation(x.dtype)
        let mean = converted(stats.mean, acc), rstd = converted(stats.rstd, acc)
        let dx = uninitialized(x.shape, x.dtype)
        let w = weight.map(contiguous)
        if rows > 0 {
            let (kernel, grid) = layerNormLaunch("tk_layer_norm_backward", rows: rows, count: normalizedCount)
            ctx.launch("norm", x.dtype, kernel, grid: grid, block: 256, [
                ptr(dx), ptr(gs), ptr(xs), ptr(w), ptr(mean), ptr(rstd), .int64(Int64(rows)), .int64(Int64(normalizedCount)),
            ])
        }
        guard parameterGradients else { return (dx, nil, nil) }
        let paramShape = weight?.shape ?? trailingShape(x.shape, elementCount: normalizedCount)
        // Zeroed: without rows the sums are empty.
        let dw = empty(paramShape, x.dtype), db = empty(paramShape, x.dtype)
        if rows > 0 {
            // Rows in chunks of at least 128 (the partial kernel's 8 row lanes × 16), at most 1024
            // chunks and a 16 MiB scratch; the chunking depends on the shape only, so sums are
            // reproducible on any device.
            let maxChunks = max(1, min(1024, (1 << 20) / normalizedCount))
            let chunkRows = max(128, (rows + maxChunks - 1) / maxChunks)
            let chunks = (rows + chunkRows - 1) / chunkRows
            let tiles = (normalizedCount + 31) / 32
            let partial = uninitialized([2, chunks, normalizedCount], .float64)
            ctx.launch("norm", x.dtype, "tk_layer_norm_params_partial", grid: min(tiles * chunks, 1 << 20), block: 256, [
                ptr(partial), ptr(gs), ptr(xs), ptr(mean), ptr(rstd),
                .int64(Int64(rows)), .int64(Int64(normalizedCount)), .int64(Int64(chunkRows)), .int64(Int64(chunks)),
            ])
            ctx.launch("norm", x.dtype, "tk_layer_norm_params_reduce", grid: CUDADeviceContext.grid(normalizedCount), block: 256, [
                ptr(dw), ptr(db), ptr(partial), .int64(Int64(normalizedCount)), .int64(Int64(chunks)),
            ])
        }
        return (dx, weight == nil ? nil : dw, db)
    }


    // MARK: softmax

    public func softmax(_ x: Tensor, log: Bool) -> Tensor {
        precondition(x.rank >= 1, "softmax kernel: needs an axis, got \(x.shape)")
        CUDABackend.requireFloat(x.dtype, "softmax")
        let xs = contiguous(x)
        let out = uninitialized(x.shape, x.dtype)
        let length = x.shape[x.rank - 1]
        if x.numel == 0 { return out }
        let rows = x.numel / length
        ctx.launch("softmax", x.dtype, "tk_softmax_forward", grid: min(rows, 1 << 18), block: 256, [
            ptr(out), ptr(xs), .int64(Int64(rows)), .int64(Int64(length)), .int32(log ? 1 : 0),
        ])
        return out
    }

    public func softmaxBackward(output: Tensor, gradOutput: Tensor, log: Bool) -> Tensor {
        precondition(output.shape == gradOutput.shape && output.dtype == gradOutput.dtype && output.rank >= 1,
                     "softmaxBackward kernel: output \(output.shape)/\(output.dtype) vs gradient \(gradOutput.shape)/\(gradOutput.dtype)")
        let y = contiguous(output), g = contiguous(gradOutput)
        let out = uninitialized(y.shape, y.dtype)
        let length = y.shape[y.rank - 1]
        if y.numel == 0 { return out }
        let rows = y.numel / length
        ctx.launch("softmax", y.dtype, "tk_softmax_backward", grid: min(rows, 1 << 18), block: 256, [
            ptr(out), ptr(y), ptr(g), .int64(Int64(rows)), .int64(Int64(length)), .int32(log ? 1 : 0),
        ])
        return out
    }

    // MARK: attention

    /// (tile rows, warps per block) whose shared memory fits in 48 KiB, for `floats(tile, warps)` ACC values.
    private func attentionTiling(_ dtype: DType, _ floats: (Int, Int) -> Int) -> (tile: Int, warps: Int, bytes: Int) {
        let accSize = CUDABackend.accumulation(dtype).byteSize
        for (tile, warps) in [(32, 8), (32, 4), (16, 4), (16, 2), (8, 2), (8, 1)] {
            let bytes = floats(tile, warps) * accSize
            if bytes <= 48 * 1024 { return (tile, warps, bytes) }
        }
        preconditionFailure("attention head dimension too large for the CUDA kernel's shared memory")
    }

    public func attention(q: Tensor, k: Tensor, v: Tensor, scale: Double, causal: Bool) -> (Tensor, Tensor) {
        precondition(q.rank == 4 && k.rank == 4 && v.rank == 4 && q.shape[0] == k.shape[0] && q.shape[1] == k.shape[1]
                     && k.shape[0...2] == v.shape[0...2] && q.shape[3] == k.shape[3] && q.dtype == k.dtype && k.dtype == v.dtype,
                     "attention: q \(q.shape), k \(k.shape), v \(v.shape)")
        CUDABackend.requireFloat(q.dtype, "attention")
        let (b, h, nq, d) = (q.shape[0], q.shape[1], q.shape[2], q.shape[3])
        let nk = k.shape[2], dv = v.shape[3]
        let lse = uninitialized([b, h, nq], CUDABackend.accumulation(q.dtype))
        if b * h * nq == 0 { return (uninitialized([b, h, nq, dv], q.dtype), lse) }
        if let width = flashWidth(q.dtype, nq: nq, nk: nk, d: d, dv: dv, causal: causal, widths: CUDAKernelSources.flashForwardWidths) {
            // The heads are read where they lie and the output is written in q's layout.
            let qs = flashOperand(q), ks = flashOperand(k), vs = flashOperand(v)
            let out = flashResult(like: qs)
            let layout = flashLayout(heads: h, [(FlashSlot.q, qs), (.k, ks), (.v, vs), (.o, out)])
            ctx.launch("flash_attention", q.dtype, "tk_flash_forward_d\(width)\(flashSuffix)", grid: b * h * ((nq + 63) / 64), block: 128, [
                ptr(out), ptr(lse), ptr(qs), ptr(ks), ptr(vs), .int64(Int64(nq)), .int64(Int64(nk)), .int32(Int32(d)), .float64(scale),
                .words(layout),
            ])
            return (out, lse)
        }
        let qs = contiguous(q), ks = contiguous(k), vs = contiguous(v)
        let out = uninitialized([b, h, nq, dv], q.dtype)
        if usesAttentionGEMM(q.dtype, nq: nq, nk: nk, d: max(d, dv), causal: causal) {
            attentionByGEMM(qs, ks, vs, out: out, lse: lse, scale: scale)
            return (out, lse)
        }
        precondition(d <= 384 && dv <= 384, "CUDA attention supports causal or float64 head dimensions up to 384, got \(d)/\(dv)")
        let odd = { (x: Int) in x | 1 }
        let t = attentionTiling(q.dtype) { tile, warps in tile * odd(d) + tile * dv + warps * d }
        let grid = b * h * ((nq + t.warps - 1) / t.warps)
        ctx.launch("attention", q.dtype, "tk_attention_forward", grid: grid, block: 32 * t.warps, sharedBytes: t.bytes, [
            ptr(out), ptr(lse), ptr(qs), ptr(ks), ptr(vs), .int64(Int64(nq)), .int64(Int64(nk)),
            .int32(Int32(d)), .int32(Int32(dv)), .float64(scale), .int32(causal ? 1 : 0), .int32(Int32(t.tile)),
        ])
        return (out, lse)
    }

    public func attentionBackward(q: Tensor, k: Tensor, v: Tensor, output: Tensor, logSumExp: Tensor,
                                  gradOutput: Tensor, scale: Double, causal: Bool) -> (Tensor, Tensor, Tensor) {
        let (b, h, nq, d) = (q.shape[0], q.shape[1], q.shape[2], q.shape[3])
        let nk = k.shape[2], dv = v.shape[3]
        precondition(output.shape == [b, h, nq, dv] && gradOutput.shape == output.shape && logSumExp.shape == [b, h, nq],
                     "attentionBackward: output \(output.shape), gradOutput \(gradOutput.shape), logSumExp \(logSumExp.shape)")
        let acc = CUDABackend.accumulation(q.dtype)
        let lse = converted(logSumExp, acc)
        let rows = b * h * nq
        if rows == 0 || nk == 0 {
            // No queries: no gradient reaches K/V; no keys: the output is zero whatever Q is.
            let dq = uninitialized(q.shape, q.dtype), dk = uninitialized(k.shape, k.dtype), dvT = uninitialized(v.shape, v.dtype)
            fill(dq, with: 0); fill(dk, with: 0); fill(dvT, with: 0)
            return (dq, dk, dvT)
        }
        let delta = uninitialized([rows], acc)
        if let width = flashWidth(q.dtype, nq: nq, nk: nk, d: d, dv: dv, causal: causal, widths: CUDAKernelSources.flashBackwardWidths) {
            // Every operand where it lies; each gradient in its input's layout.
            let qs = flashOperand(q), ks = flashOperand(k), vs = flashOperand(v)
            let o = flashOperand(output), go = flashOperand(gradOutput)
            let dq = flashResult(like: qs), dk = flashResult(like: ks), dvT = flashResult(like: vs)
            let layout = flashLayout(heads: h, [(FlashSlot.q, qs), (.k, ks), (.v, vs), (.o, o), (.go, go), (.dq, dq), (.dk, dk), (.dv, dvT)])
            ctx.launch("flash_attention", q.dtype, "tk_flash_rowdot", grid: CUDADeviceContext.grid(rows * 32), block: 256, [
                ptr(delta), ptr(o), ptr(go), .int64(Int64(rows)), .int64(Int64(nq)), .int32(Int32(dv)), .words(layout),
            ])
            let tail: [KernelArg] = [ptr(lse), ptr(delta), .int64(Int64(nq)), .int64(Int64(nk)), .int32(Int32(d)), .float64(scale), .words(layout)]
            ctx.launch("flash_attention", q.dtype, "tk_flash_backward_dq_d\(width)\(flashSuffix)", grid: b * h * ((nq + 63) / 64), block: 128,
                       [ptr(dq), ptr(qs), ptr(ks), ptr(vs), ptr(go)] + tail)
            ctx.launch("flash_attention", q.dtype, "tk_flash_backward_dkdv_d\(width)\(flashSuffix)", grid: b * h * ((nk + 63) / 64), block: 128,
                       [ptr(dk), ptr(dvT), ptr(qs), ptr(ks), ptr(vs), ptr(go)] + tail)
            return (dq, dk, dvT)
        }
        let qs = contiguous(q), ks = contiguous(k), vs = contiguous(v)
        let o = contiguous(output), go = contiguous(gradOutput)
        let dq = uninitialized(q.shape, q.dtype), dk = uninitialized(k.shape, k.dtype), dvT = uninitialized(v.shape, v.dtype)
        ctx.launch("attention", q.dtype, "tk_attention_backward_rowdot", grid: CUDADeviceContext.grid(rows * 32), block: 256, [
            ptr(delta), ptr(o), ptr(go), .int64(Int64(rows)), .int32(Int32(dv)),
        ])
        if usesAttentionGEMM(q.dtype, nq: nq, nk: nk, d: max(d, dv), causal: causal) {
            attentionBackwardByGEMM(qs, ks, vs, gradOutput: go, lse: lse, delta: delta, scale: scale, dq: dq, dk: dk, dv: dvT)
            return (dq, dk, dvT)
        }
        let odd = { (x: Int) in x | 1 }
        let tq = attentionTiling(q.dtype) { tile, warps in tile * odd(d) + tile * odd(dv) + warps * d + warps * dv }
        ctx.launch("attention", q.dtype, "tk_attention_backward_dq", grid: b * h * ((nq + tq.warps - 1) / tq.warps),
                   block: 32 * tq.warps, sharedBytes: tq.bytes, [
            ptr(dq), ptr(qs), ptr(ks), ptr(vs), ptr(go), ptr(lse), ptr(delta), .int64(Int64(nq)), .int64(Int64(nk)),
            .int32(Int32(d)), .int32(Int32(dv)), .float64(scale), .int32(causal ? 1 : 0), .int32(Int32(tq.tile)),
        ])
        let tk = attentionTiling(q.dtype) { tile, warps in tile * odd(d) + tile * odd(dv) + 2 * tile + warps * d + warps * dv }
        ctx.launch("attention", q.dtype, "tk_attention_backward_dkdv", grid: b * h * ((nk + tk.warps - 1) / tk.warps),
                   block: 32 * tk.warps, sharedBytes: tk.bytes, [
            ptr(dk), ptr(dvT), ptr(qs), ptr(ks), ptr(vs), ptr(go), ptr(lse), ptr(delta), .int64(Int64(nq)), .int64(Int64(nk)),
            .int32(Int32(d)), .int32(Int32(dv)), .float64(scale), .int32(causal ? 1 : 0), .int32(Int32(tk.tile)),
        ])
        return (dq, dk, dvT)
    }

    /// The padded head width of the flash kernel for this attention, or nil when it takes another path
    /// (see `CUDA.flashAttention`; FlashAttentionKernels.swift).
    /// Each head's rows are indexed in 32 bits there, so nq·d and nk·d must fit.
    func flashWidth(_ dtype: DType, nq: Int, nk: Int, d: Int, dv: Int, causal: Bool, widths: [Int]) -> Int? {
        guard CUDA.flashAttention, dtype == .float16 || dtype == .bfloat16, !causal, d == dv, nk > 0,
              max(nq, nk) * d <= Int(Int32.max), ctx.info.architecture >= 80 else { return nil }
        return widths.first { d <= $0 }
    }

    /// Operand slots of `TKFALayout` (FlashAttentionKernels.swift).
    enum FlashSlot: Int { case q, k, v, o, go, dq, dk, dv }

    /// `t` [B, H, N, D] as the flash kernels read it: itself when D is unit-stride, the other strides
    /// are not negative and every row offset fits 32 bits (the kernels' row arithmetic); else a
    /// contiguous copy.
    func flashOperand(_ t: Tensor) -> Tensor {
        let (n, d) = (t.shape[2], t.shape[3])
        let st = t.strides
        let fits = st.allSatisfy { $0 >= 0 } && (n - 1) * st[2] + d <= Int(Int32.max)
        return (st[3] == 1 || d == 1) && fits ? t : contiguous(t)
    }

    /// A new [B, H, N, D] result laid out as `t`: token-major ([B, N, H, D] in memory, returned as its
    /// [B, H, N, D] view) when `t`'s heads are closer together than its rows (the heads of a
    /// [B, N, H·D] projection), so that merging the heads back is a view; else contiguous.
    func flashResult(like t: Tensor) -> Tensor {
        let (b, h, n, d) = (t.shape[0], t.shape[1], t.shape[2], t.shape[3])
        guard h > 1, n > 1, t.strides[1] < t.strides[2] else { return uninitialized([b, h, n, d], t.dtype) }
        let base = uninitialized([b, n, h, d], t.dtype)
        return Tensor(storage: base.storage, shape: [b, h, n, d], dtype: t.dtype, strides: [n * h * d, d, h * d, 1])
    }

    /// `TKFALayout` words: the head count, then each slot's batch, head and row strides (slots not
    /// given stay zero).
    func flashLayout(heads: Int, _ operands: [(FlashSlot, Tensor)]) -> [Int64] {
        var batch = [Int64](repeating: 0, count: 8), head = batch, row = batch
        for (slot, t) in operands {
            batch[slot.rawValue] = Int64(t.strides[0]); head[slot.rawValue] = Int64(t.strides[1]); row[slot.rawValue] = Int64(t.strides[2])
        }
        return [Int64(heads)] + batch + head + row
    }

    /// The kernel-name suffix of the flash build `CUDA.flashPipeline` selects.
    var flashSuffix: String { CUDA.flashPipeline ? "" : "_sync" }

    // MARK: attention through cuBLAS

    /// Large non-causal attention (the UNet's self-attention over every latent pixel, the VAE's) runs as GEMMs on
    /// the tensor cores: S = scale·QKᵀ in float32, a row softmax kernel, O = P·V, a chunk of heads at a
    /// time so the score matrices stay under `attentionGEMMBytes`. The fused kernels remain for small
    /// and causal attention (CLIP), where their lack of an N×N buffer matters more than tensor cores.
    static let attentionGEMMMinimumScores = 16_384
    static let attentionGEMMBytes = 512 << 20

    /// Also every head wider than the fused kernels' 384 (the SD VAE's single 512-wide head).
    func usesAttentionGEMM(_ dtype: DType, nq: Int, nk: Int, d: Int, causal: Bool) -> Bool {
        !causal && dtype != .float64 && (nq * nk >= CUDABackend.attentionGEMMMinimumScores || d > 384)
    }

    /// Heads per chunk for [nq, nk] scores (float32 scores plus the T-typed probabilities).
    private func attentionChunk(heads: Int, nq: Int, nk: Int, dtype: DType) -> Int {
        max(1, min(heads, CUDABackend.attentionGEMMBytes / max(nq * nk * (4 + dtype.byteSize), 1)))
    }

    /// S [nq, nk] = scale · Q [nq, d] · Kᵀ (K stored [nk, d]) in float32, for `heads` of [heads, n, d] q and k.
    private func scaledScores(_ q: Tensor, _ k: Tensor, heads: Range<Int>, scale: Double, into scores: Tensor) {
        let (nq, d, nk, size) = (q.shape[2], q.shape[3], k.shape[2], q.dtype.byteSize)
        gemm(q.dtype, transA: false, transB: true, m: nq, n: nk, k: d,
             a: address(q) + UInt64(heads.lowerBound * nq * d * size), lda: d, strideA: nq * d,
             b: address(k) + UInt64(heads.lowerBound * nk * d * size), ldb: d, strideB: nk * d,
             c: address(scores), ldc: nk, strideC: nq * nk, batch: heads.count, alpha: scale, outputType: .float32)
    }

    /// The GEMM path's geometry and per-chunk scratch: heads (batch × heads), query and key lengths,
    /// heads per chunk, float32 scores and the probabilities in the input dtype.
    private func attentionScratch(_ q: Tensor, _ k: Tensor)
        -> (heads: Int, nq: Int, nk: Int, chunk: Int, scores: Tensor, probs: Tensor) {
        let (heads, nq, nk) = (q.shape[0] * q.shape[1], q.shape[2], k.shape[2])
        let chunk = attentionChunk(heads: heads, nq: nq, nk: nk, dtype: q.dtype)
        return (heads, nq, nk, chunk, uninitialized([chunk, nq, nk], .float32), uninitialized([chunk, nq, nk], q.dtype))
    }

    private func attentionByGEMM(_ q: Tensor, _ k: Tensor, _ v: Tensor, out: Tensor, lse: Tensor, scale: Double) {
        let (heads, nq, nk, chunk, scores, probs) = attentionScratch(q, k)
        let dv = v.shape[3], size = q.dtype.byteSize
        for h0 in stride(from: 0, to: heads, by: chunk) {
            let count = min(chunk, heads - h0)
            scaledScores(q, k, heads: h0..<(h0 + count), scale: scale, into: scores)
            // A row of scores that fits in shared memory is read from global memory once.
            let rowBytes = nk * 4 <= 48 * 1024 ? nk * 4 : 0
            ctx.launch("attention", q.dtype, "tk_attention_softmax_rows", grid: min(count * nq, 1 << 20), block: 256,
                       sharedBytes: rowBytes, [
                ptr(probs), .pointer(address(lse) + UInt64(h0 * nq * 4)), ptr(scores),
                .int64(Int64(count * nq)), .int64(Int64(nk)), .int32(rowBytes > 0 ? 1 : 0),
            ])
            // O [nq, dv] = P [nq, nk] · V [nk, dv]
            gemm(q.dtype, transA: false, transB: false, m: nq, n: dv, k: nk,
                 a: address(probs), lda: nk, strideA: nq * nk,
                 b: address(v) + UInt64(h0 * nk * dv * size), ldb: dv, strideB: nk * dv,
                 c: address(out) + UInt64(h0 * nq * dv * size), ldc: dv, strideC: nq * dv, batch: count)
        }
    }

    /// The backward of `attentionByGEMM`, recomputing P from the log-sum-exp:
    /// dV = Pᵀ·dO, dP = dO·Vᵀ, dS = scale·P⊙(dP − rowdot(dO, O)), dQ = dS·K, dK = dSᵀ·Q.
    private func attentionBackwardByGEMM(_ q: Tensor, _ k: Tensor, _ v: Tensor, gradOutput go: Tensor, lse: Tensor,
                                         delta: Tensor, scale: Double, dq: Tensor, dk: Tensor, dv dvOut: Tensor) {
        let (heads, nq, nk, chunk, scores, probs) = attentionScratch(q, k)
        let d = q.shape[3], dv = v.shape[3], size = q.dtype.byteSize
        for h0 in stride(from: 0, to: heads, by: chunk) {
            let count = min(chunk, heads - h0)
            let qa = address(q) + UInt64(h0 * nq * d * size), ka = address(k) + UInt64(h0 * nk * d * size)
            let va = address(v) + UInt64(h0 * nk * dv * size), goa = address(go) + UInt64(h0 * nq * dv * size)
            let rows = count * nq
            scaledScores(q, k, heads: h0..<(h0 + count), scale: scale, into: scores)
            ctx.launch("attention", q.dtype, "tk_attention_probs", grid: CUDADeviceContext.grid(rows * nk), block: 256, [
                ptr(probs), ptr(scores), .pointer(address(lse) + UInt64(h0 * nq * 4)), .int64(Int64(rows)), .int64(Int64(nk)),
            ])
            // dV [nk, dv] = Pᵀ (P stored [nq, nk]) · dO [nq, dv]
            gemm(q.dtype, transA: true, transB: false, m: nk, n: dv, k: nq, a: address(probs), lda: nk, strideA: nq * nk,
                 b: goa, ldb: dv, strideB: nq * dv,
                 c: address(dvOut) + UInt64(h0 * nk * dv * size), ldc: dv, strideC: nk * dv, batch: count)
            // dP [nq, nk] = dO [nq, dv] · Vᵀ (V stored [nk, dv]), in float32 over the scores
            gemm(q.dtype, transA: false, transB: true, m: nq, n: nk, k: dv, a: goa, lda: dv, strideA: nq * dv,
                 b: va, ldb: dv, strideB: nk * dv, c: address(scores), ldc: nk, strideC: nq * nk, batch: count,
                 outputType: .float32)
            ctx.launch("attention", q.dtype, "tk_attention_dscores", grid: CUDADeviceContext.grid(rows * nk), block: 256, [
                ptr(probs), ptr(scores), .pointer(address(delta) + UInt64(h0 * nq * 4)), .int64(Int64(rows)), .int64(Int64(nk)),
                .float64(scale),
            ])
            // dQ [nq, d] = dS [nq, nk] · K [nk, d];  dK [nk, d] = dSᵀ · Q [nq, d]
            gemm(q.dtype, transA: false, transB: false, m: nq, n: d, k: nk, a: address(probs), lda: nk, strideA: nq * nk,
                 b: ka, ldb: d, strideB: nk * d,
                 c: address(dq) + UInt64(h0 * nq * d * size), ldc: d, strideC: nq * d, batch: count)
            gemm(q.dtype, transA: true, transB: false, m: nk, n: d, k: nq, a: address(probs), lda: nk, strideA: nq * nk,
                 b: qa, ldb: d, strideB: nq * d,
                 c: address(dk) + UInt64(h0 * nk * d * size), ldc: d, strideC: nk * d, batch: count)
        }
    }
}

/// Channels-last copies of convolution weights for `tk_conv_mma`: [o, kh, kw, c] for the forward,
/// [c, kh, kw, o] for the input gradient. A UNet's frozen weights are converted once instead of at
/// every call. An entry belongs to one weight storage (held weakly: a freed storage's entry is
/// dropped), offset and shape, and is made again when the storage's `version` moved (a write through
/// `assign`, a load, an optimizer step).
final class ConvolutionWeightCache: @unchecked Sendable {
    private struct Key: Hashable {
        let storage: ObjectIdentifier
        let offset: Int
        let transposed: Bool
    }
    private struct Entry {
        weak var storage: Storage?
        let version: UInt64
        let shape: [Int]
        let dtype: DType
        let value: Tensor
    }
    private var entries: [Key: Entry] = [:]
    private let lock = NSLock()

    /// `weight` [o, c, kh, kw] (contiguous, on `backend`'s device) as [o, kh, kw, c], or transposed
    /// as [c, kh, kw, o].
    func channelsLast(_ weight: Tensor, transposed: Bool, backend: CUDABackend) -> Tensor {
        let key = Key(storage: ObjectIdentifier(weight.storage), offset: weight.offset, transposed: transposed)
        lock.lock()
        defer { lock.unlock() }
        if let e = entries[key], e.storage === weight.storage, e.version == weight.storage.version,
           e.shape == weight.shape, e.dtype == weight.dtype {
            return e.value
        }
        let (o, c, kh, kw) = (weight.shape[0], weight.shape[1], weight.shape[2], weight.shape[3])
        let value = transposed
            ? backend.channelsLast(weight.reshape([1, o, c * kh * kw])).reshape([c, kh, kw, o])
            : backend.channelsLast(weight)
        entries = entries.filter { $0.value.storage != nil }
        entries[key] = Entry(storage: weight.storage, version: weight.storage.version, shape: weight.shape,
                             dtype: weight.dtype, value: value)
        return value
    }
}
