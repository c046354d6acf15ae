import Foundation

// Group and layer normalisation kernels.
//
// Statistics use a corrected two-pass scheme: the mean from a blocked sum, then Σ(x - m) and
// Σ(x - m)² around that mean, so float32 inputs with a large offset keep their variance. Sums run
// in T inside blocks of `normBlock` elements (SIMD, cache-friendly) and in Double across blocks.

/// Elements summed in T before spilling into the Double total (float32 error stays ~1e-6 relative).
private let normBlock = 1024

@inline(__always) private func load16<T: CPUFloat>(_ p: UnsafePointer<T>) -> SIMD16<T> {
    UnsafeRawPointer(p).loadUnaligned(as: SIMD16<T>.self)
}

@inline(__always) private func store16<T: CPUFloat>(_ v: SIMD16<T>, _ p: UnsafeMutablePointer<T>) {
    UnsafeMutableRawPointer(p).storeBytes(of: v, as: SIMD16<T>.self)
}

/// Σ p[i], blocked (see file comment).
@inline(__always)
private func blockedSum<T: CPUFloat>(_ p: UnsafePointer<T>, _ n: Int) -> Double {
    var total = 0.0
    var start = 0
    while start < n {
        let end = min(n, start + normBlock)
        var acc = SIMD16<T>(repeating: 0)
        var i = start
        while i + 16 <= end { acc += load16(p + i); i += 16 }
        var s = acc.sum()
        while i < end { s += p[i]; i += 1 }
        total += Double(s)
        start = end
    }
    return total
}

/// (Σ (p[i] - m), Σ (p[i] - m)²), blocked.
@inline(__always)
private func blockedCenteredMoments<T: CPUFloat>(_ p: UnsafePointer<T>, _ n: Int, _ m: T) -> (Double, Double) {
    var total1 = 0.0, total2 = 0.0
    let vm = SIMD16<T>(repeating: m)
    var start = 0
    while start < n {
        let end = min(n, start + normBlock)
        var a1 = SIMD16<T>(repeating: 0), a2 = SIMD16<T>(repeating: 0)
        var i = start
        while i + 16 <= end {
            let d = load16(p + i) - vm
            a1 += d
            a2 += d * d
            i += 16
        }
        var s1 = a1.sum(), s2 = a2.sum()
        while i < end { let d = p[i] - m; s1 += d; s2 += d * d; i += 1 }
        total1 += Double(s1); total2 += Double(s2)
        start = end
    }
    return (total1, total2)
}

/// (Σ g[i], Σ g[i]·(x[i] - m)), blocked.
@inline(__always)
private func blockedGradMoments<T: CPUFloat>(_ g: UnsafePointer<T>, _ x: UnsafePointer<T>, _ n: Int, _ m: T)
    -> (Double, Double) {
    var total1 = 0.0, total2 = 0.0
    let vm = SIMD16<T>(repeating: m)
    var start = 0
    while start < n {
        let end = min(n, start + normBlock)
        var a1 = SIMD16<T>(repeating: 0), a2 = SIMD16<T>(repeating: 0)
        var i = start
        while i + 16 <= end {
            let gv = load16(g + i)
            a1 += gv
            a2 += gv * (load16(x + i) - vm)
            i += 16
        }
        var s1 = a1.sum(), s2 = a2.sum()
        while i < end { s1 += g[i]; s2 += g[i] * (x[i] - m); i += 1 }
        total1 += Double(s1); total2 += Double(s2)
        start = end
    }
    return (total1, total2)
}

/// Mean and 1/√(biased variance + eps) of n contiguous values.
@inline(__always)
private func meanAndRstd<T: CPUFloat>(_ p: UnsafePointer<T>, _ n: Int, eps: Double) -> (Double, Double) {
    let count = Double(n)
    let first = blockedSum(p, n) / count
    let (d1, d2) = blockedCenteredMoments(p, n, T(first))
    // Shift the centre by the mean of the residuals; subtracting its square removes the rounding of `first`.
    let shift = d1 / count
    let mean = Double(T(first)) + shift
    let variance = max(d2 / count - shift * shift, 0)
    return (mean, 1 / (variance + eps).squareRoot())
}

/// y[i] = (x[i] - mean)·scale + shift over one contiguous run.
@inline(__always)
private func affineRun<T: CPUFloat>(_ x: UnsafePointer<T>, _ y: UnsafeMutablePointer<T>, _ n: Int,
                                    mean: T, scale: T, shift: T) {
    let vm = SIMD16<T>(repeating: mean), vs = SIMD16<T>(repeating: scale), vb = SIMD16<T>(repeating: shift)
    var i = 0
    while i + 16 <= n { store16((load16(x + i) - vm) * vs + vb, y + i); i += 16 }
    while i < n { y[i] = (x[i] - mean) * scale + shift; i += 1 }
}

/// dx[i] = g[i]·a + (x[i] - mean)·b + c over one contiguous run.
@inline(__always)
private func gradRun<T: CPUFloat>(_ g: UnsafePointer<T>, _ x: UnsafePointer<T>, _ dx: UnsafeMutablePointer<T>, _ n: Int,
                                  mean: T, a: T, b: T, c: T) {
    let vm = SIMD16<T>(repeating: mean), va = SIMD16<T>(repeating: a)
    let vb = SIMD16<T>(repeating: b), vc = SIMD16<T>(repeating: c)
    var i = 0
    while i + 16 <= n { store16(load16(g + i) * va + (load16(x + i) - vm) * vb + vc, dx + i); i += 16 }
    while i < n { dx[i] = g[i] * a + (x[i] - mean) * b + c; i += 1 }
}

/// silu(z) for the fused GroupNorm+SiLU, computed exactly as the elementwise `silu` computes it
/// (VectorMath's branch-free float32 function, which vectorises; libm in float64), so the fused op
/// equals `groupNorm(...).silu()` bit for bit on the CPU.
@inline(__always)
private func siluValue<T: CPUFloat>(_ z: T) -> T {
    if T.self == Float.self { return unsafeBitCast(SiluFunction.value(unsafeBitCast(z, to: Float.self)), to: T.self) }
    return z / (1 + T.exp(-z))
}

/// g·silu'(z), silu'(z) = σ(z)·(1 + z·(1 - σ(z))), in the elementwise backward's exact order of operations.
@inline(__always)
private func siluGradient<T: CPUFloat>(_ z: T, _ g: T) -> T {
    if T.self == Float.self {
        let zf = unsafeBitCast(z, to: Float.self), gf = unsafeBitCast(g, to: Float.self)
        return unsafeBitCast(SiluFunction.derivative(zf) * gf, to: T.self)
    }
    let s = 1 / (1 + T.exp(-z))
    return g * s * (1 + z * (1 - s))
}

/// y[i] = silu((x[i] - mean)·scale + shift) over one contiguous run.
@inline(__always)
private func affineSiLURun<T: CPUFloat>(_ x: UnsafePointer<T>, _ y: UnsafeMutablePointer<T>, _ n: Int,
                                        mean: T, scale: T, shift: T) {
    for i in 0..<n { y[i] = siluValue((x[i] - mean) * scale + shift) }
}

/// dz[i] = g[i]·silu'(z) with z = (x[i] - mean)·scale + shift: the gradient at the normalisation's
/// output, with z recomputed from the input as the forward computed it (`dz` may be the buffer that
/// later receives dx).
@inline(__always)
private func siluGradRun<T: CPUFloat>(_ g: UnsafePointer<T>, _ x: UnsafePointer<T>, _ dz: UnsafeMutablePointer<T>, _ n: Int,
                                      mean: T, scale: T, shift: T) {
    for i in 0..<n { dz[i] = siluGradient((x[i] - mean) * scale + shift, g[i]) }
}

extension CPUBackend {
    // MARK: group norm

    public func groupNorm(_ x: Tensor, groups: Int, weight: Tensor?, bias: Tensor?, eps: Double,
                          silu: Bool) -> (Tensor, NormStatistics) {
        precondition(x.isContiguous && x.rank >= 2 && groups > 0 && x.shape[1] % groups == 0,
                     "groupNorm kernel: needs contiguous [N, C, *] with C divisible by \(groups), got \(x.shape)")
        let n = x.shape[0], channels = x.shape[1]
        let spatial = x.shape.dropFirst(2).reduce(1, *)
        let out = empty(x.shape, x.dtype)
        let mean = empty([n, groups], x.dtype), rstd = empty([n, groups], x.dtype)
        func run<T: CPUFloat>(_: T.Type) {
            groupNormForwardKernel(x.pointer(as: T.self), out.pointer(as: T.self),
                                   weight.map { checkedParameter($0, channels, x.dtype, T.self) },
                                   bias.map { checkedParameter($0, channels, x.dtype, T.self) },
                                   mean.pointer(as: T.self), rstd.pointer(as: T.self),
                                   n: n, channels: channels, groups: groups, spatial: spatial, eps: eps, silu: silu)
        }
        switch x.dtype {
        case .float32: run(Float.self)
        case .float64: run(Double.self)
        default: preconditionFailure("group_norm is not defined for \(x.dtype) on the CPU; convert to float32 first")
        }
        return (out, NormStatistics(mean: mean, rstd: rstd))
    }

    public func groupNormBackward(_ gradOutput: Tensor, x: Tensor, groups: Int, weight: Tensor?, bias: Tensor?,
                                  stats: NormStatistics, silu: Bool, parameterGradients: Bool)
        -> (input: Tensor, weight: Tensor?, bias: Tensor?) {
        precondition(x.isContiguous && gradOutput.isContiguous && gradOutput.shape == x.shape && gradOutput.dtype == x.dtype,
                     "groupNormBackward kernel: gradient \(gradOutput.shape)/\(gradOutput.dtype) for input \(x.shape)/\(x.dtype)")
        let n = x.shape[0], channels = x.shape[1]
        let spatial = x.shape.dropFirst(2).reduce(1, *)
        precondition(stats.mean.shape == [n, groups] && stats.rstd.shape == [n, groups],
                     "groupNormBackward kernel: statistics \(stats.mean.shape) for [\(n), \(groups)]")
        let dx = empty(x.shape, x.dtype)
        let dw = parameterGradients ? empty([channels], x.dtype) : nil
        let db = parameterGradients ? empty([channels], x.dtype) : nil
        func run<T: CPUFloat>(_: T.Type) {
            let mean = stats.mean.contiguous(), rstd = stats.rstd.contiguous()
            groupNormBackwardKernel(gradOutput.pointer(as: T.self), x.pointer(as: T.self),
                                    weight.map { checkedParameter($0, channels, x.dtype, T.self) },
                                    bias.map { checkedParameter($0, channels, x.dtype, T.self) },
                                    mean.pointer(as: T.self), rstd.pointer(as: T.self),
                                    dx.pointer(as: T.self), dw?.pointer(as: T.self), db?.pointer(as: T.self),
                                    n: n, channels: channels, groups: groups, spatial: spatial, silu: silu)
        }
        switch x.dtype {
        case .float32: run(Float.self)
        case .float64: run(Double.self)
        default: preconditionFailure("group_norm backward is not defined for \(x.dtype) on the CPU")
        }
        return (dx, weight == nil ? nil : dw, db)
    }

    // MARK: layer norm

    public func layerNorm(_ x: Tensor, normalizedCount: Int, weight: Tensor?, bias: Tensor?, eps: Double) -> (Tensor, NormStatistics) {
        precondition(x.isContiguous && normalizedCount > 0 && x.numel % normalizedCount == 0,
                     "layerNorm kernel: needs a contiguous input whose size \(x.shape) is a multiple of \(normalizedCount)")
        let rows = x.numel / normalizedCount
        let out = empty(x.shape, x.dtype)
        let mean = empty([rows], x.dtype), rstd = empty([rows], x.dtype)
        func run<T: CPUFloat>(_: T.Type) {
            layerNormForwardKernel(x.pointer(as: T.self), out.pointer(as: T.self),
                                   weight.map { checkedParameter($0, normalizedCount, x.dtype, T.self) },
                                   bias.map { checkedParameter($0, normalizedCount, x.dtype, T.self) },
                                   mean.pointer(as: T.self), rstd.pointer(as: T.self),
                                   rows: rows, count: normalizedCount, eps: eps)
        }
        switch x.dtype {
        case .float32: run(Float.self)
        case .float64: run(Double.self)
        default: preconditionFailure("layer_norm is not defined for \(x.dtype) on the CPU; convert to float32 first")
        }
        return (out, NormStatistics(mean: mean, rstd: rstd))
    }

    public func layerNormBackward(_ gradOutput: Tensor, x: Tensor, normalizedCount: Int, weight: Tensor?, stats: NormStatistics,
                                  parameterGradients: Bool)
        -> (input: Tensor, weight: Tensor?, bias: Tensor?) {
        precondition(x.isContiguous && gradOutput.isContiguous && gradOutput.shape == x.shape && gradOutput.dtype == x.dtype,
                     "layerNormBackward kernel: gradient \(gradOutput.shape)/\(gradOutput.dtype) for input \(x.shape)/\(x.dtype)")
        let rows = x.numel / normalizedCount
        precondition(stats.mean.numel == rows && stats.rstd.numel == rows,
                     "layerNormBackward kernel: \(stats.mean.numel) statistics for \(rows) rows")
        let dx = empty(x.shape, x.dtype)
        // Parameter gradients must come back shaped like the parameters (normalizedShape), which
        // only the weight carries; without one, the trailing axes of x that hold normalizedCount.
        let paramShape = weight?.shape ?? trailingShape(x.shape, elementCount: normalizedCount)
        let dw = parameterGradients ? empty(paramShape, x.dtype) : nil
        let db = parameterGradients ? empty(paramShape, x.dtype) : nil
        func run<T: CPUFloat>(_: T.Type) {
            let mean = stats.mean.contiguous(), rstd = stats.rstd.contiguous()
            let params = dw.flatMap { w in db.map { (w: w.pointer(as: T.self), b: $0.pointer(as: T.self)) } }
            layerNormBackwardKernel(gradOutput.pointer(as: T.self), x.pointer(as: T.self),
                                    weight.map { checkedParameter($0, normalizedCount, x.dtype, T.self) },
                                    mean.pointer(as: T.self), rstd.pointer(as: T.self),
                                    dx.pointer(as: T.self), params, rows: rows, count: normalizedCount)
        }
        switch x.dtype {
        case .float32: run(Float.self)
        case .float64: run(Double.self)
        default: preconditionFailure("layer_norm backward is not defined for \(x.dtype) on the CPU")
        }
        return (dx, weight == nil ? nil : dw, db)
    }
}

/// The shortest suffix of `shape` with `elementCount` elements (size-1 axes in front of it are
/// ambiguous; the op layer reshapes to normalizedShape if it needs them). Shared by the CPU and
/// CUDA layer-norm backward passes.
func trailingShape(_ shape: [Int], elementCount: Int) -> [Int] {
    var suffix: [Int] = []
    var product = 1
    for size in shape.reversed() {
        suffix.insert(size, at: 0)
        product *= size
        if product == elementCount { break }
    }
    return product == elementCount ? suffix : [elementCount]
}

/// Pointer to an affine parameter after checking it matches the kernel (the op layer guarantees this).
private func checkedParameter<T: CPUFloat>(_ p: Tensor, _ count: Int, _ dtype: DType, _: T.Type) -> UnsafePointer<T> {
    precondition(p.isContiguous && p.numel == count && p.dtype == dtype,
                 "normalisation parameter \(p.shape)/\(p.dtype) does not match \(count) elements of \(dtype)")
    return UnsafePointer(p.pointer(as: T.self))
}

// MARK: - Group norm kernels

/// Each (n, g) block is the contiguous run of its channels' spatial planes; with `silu` the
/// activation is applied to each value before it is stored.
private func groupNormForwardKernel<T: CPUFloat>(
    _ x: UnsafePointer<T>, _ y: UnsafeMutablePointer<T>, _ w: UnsafePointer<T>?, _ b: UnsafePointer<T>?,
    _ meanOut: UnsafeMutablePointer<T>, _ rstdOut: UnsafeMutablePointer<T>,
    n: Int, channels: Int, groups: Int, spatial: Int, eps: Double, silu: Bool
) {
    let perGroup = channels / groups, blockSize = perGroup * spatial
    parallelFor(n * groups, minimumPerChunk: max(1, 32_768 / max(blockSize, 1))) { range in
        for block in range {
            let g = block % groups
            let xb = x + block * blockSize, yb = y + block * blockSize
            let (mean, r) = meanAndRstd(xb, blockSize, eps: eps)
            meanOut[block] = T(mean); rstdOut[block] = T(r)
            let m = T(mean)
            for ci in 0..<perGroup {
                let c = g * perGroup + ci
                let scale = w.map { T(r) * $0[c] } ?? T(r)
                let shift = b?[c] ?? 0
                if silu {
                    affineSiLURun(xb + ci * spatial, yb + ci * spatial, spatial, mean: m, scale: scale, shift: shift)
                } else {
                    affineRun(xb + ci * spatial, yb + ci * spatial, spatial, mean: m, scale: scale, shift: shift)
                }
            }
        }
    }
}

/// With x̂ = (x - μ)·r and dŷ = g·w over a group of M elements:
/// dx = r·(dŷ - mean(dŷ) - x̂·mean(dŷ·x̂)), dw_c = Σ g·x̂, db_c = Σ g.
/// Per-channel sums Σg and Σg·(x - μ) give all three; dw/db partials per (n, c) are reduced over n
/// afterwards in a fixed order, so results do not depend on the thread count. Without `dw`/`db`
/// (frozen parameters) only dx is computed.
///
/// With `silu` the output was silu(z), z = x̂·w + b: g is first replaced by g·silu'(z), z recomputed
/// from x, μ, r, w and b, and stored in dx's run, which then serves as g for the formulas above
/// (and is overwritten with dx in place).
private func groupNormBackwardKernel<T: CPUFloat>(
    _ g: UnsafePointer<T>, _ x: UnsafePointer<T>, _ w: UnsafePointer<T>?, _ bias: UnsafePointer<T>?,
    _ meanIn: UnsafePointer<T>, _ rstdIn: UnsafePointer<T>,
    _ dx: UnsafeMutablePointer<T>, _ dw: UnsafeMutablePointer<T>?, _ db: UnsafeMutablePointer<T>?,
    n: Int, channels: Int, groups: Int, spatial: Int, silu: Bool
) {
    let perGroup = channels / groups, blockSize = perGroup * spatial
    let parameters = dw != nil || db != nil
    let partials = parameters ? max(n * channels, 1) : 0
    let sumG = UnsafeMutablePointer<Double>.allocate(capacity: partials)
    let sumGX = UnsafeMutablePointer<Double>.allocate(capacity: partials)
    defer { sumG.deallocate(); sumGX.deallocate() }
    parallelFor(n * groups, minimumPerChunk: max(1, 16_384 / max(blockSize, 1))) { range in
        for block in range {
            let gi = block % groups
            let xb = x + block * blockSize, dxb = dx + block * blockSize
            let m = meanIn[block], r = Double(rstdIn[block])
            var gb = g + block * blockSize
            if silu {
                for ci in 0..<perGroup {
                    let c = gi * perGroup + ci
                    let scale = w.map { T(r) * $0[c] } ?? T(r)
                    siluGradRun(gb + ci * spatial, xb + ci * spatial, dxb + ci * spatial, spatial,
                                mean: m, scale: scale, shift: bias?[c] ?? 0)
                }
                gb = UnsafePointer(dxb)
            }
            let firstChannel = block * perGroup  // == n·C + gi·perGroup
            var sumDy = 0.0, sumDyXc = 0.0
            for ci in 0..<perGroup {
                let (s1, s2) = blockedGradMoments(gb + ci * spatial, xb + ci * spatial, spatial, m)
                if parameters { sumG[firstChannel + ci] = s1; sumGX[firstChannel + ci] = s2 }
                let wc = w.map { Double($0[gi * perGroup + ci]) } ?? 1
                sumDy += wc * s1; sumDyXc += wc * s2
            }
            let count = Double(blockSize)
            // dx = r·w·g - r·mean(dŷ) - r³·mean(dŷ·(x-μ))·(x - μ)
            let b = T(-r * r * r * sumDyXc / count), c = T(-r * sumDy / count)
            for ci in 0..<perGroup {
                let wc = w.map { Double($0[gi * perGroup + ci]) } ?? 1
                gradRun(gb + ci * spatial, xb + ci * spatial, dxb + ci * spatial, spatial,
                        mean: m, a: T(r * wc), b: b, c: c)
            }
        }
    }
    guard parameters else { return }
    for c in 0..<channels {
        var sw = 0.0, sb = 0.0
        for ni in 0..<n {
            let block = (ni * channels + c) / perGroup
            sw += sumGX[ni * channels + c] * Double(rstdIn[block])
            sb += sumG[ni * channels + c]
        }
        dw?[c] = T(sw); db?[c] = T(sb)
    }
}

// MARK: - Layer norm kernels

private func layerNormForwardKernel<T: CPUFloat>(
    _ x: UnsafePointer<T>, _ y: UnsafeMutablePointer<T>, _ w: UnsafePointer<T>?, _ b: UnsafePointer<T>?,
    _ meanOut: UnsafeMutablePointer<T>, _ rstdOut: UnsafeMutablePointer<T>, rows: Int, count: Int, eps: Double
) {
    parallelFor(rows, minimumPerChunk: max(1, 32_768 / count)) { range in
        for row in range {
            let xr = x + row * count, yr = y + row * count
            let (mean, r) = meanAndRstd(xr, count, eps: eps)
            let m = T(mean), rs = T(r)
            meanOut[row] = m; rstdOut[row] = rs
            switch (w, b) {
            case (nil, nil):
                affineRun(xr, yr, count, mean: m, scale: rs, shift: 0)
            case let (w, b):
                // Per-element affine: y = (x - μ)·r·w + b, SIMD over the row.
                let vm = SIMD16<T>(repeating: m), vr = SIMD16<T>(repeating: rs)
                var i = 0
                while i + 16 <= count {
                    var v = (load16(xr + i) - vm) * vr
                    if let w { v *= load16(w + i) }
                    if let b { v += load16(b + i) }
                    store16(v, yr + i)
                    i += 16
                }
                while i < count {
                    var v = (xr[i] - m) * rs
                    if let w { v *= w[i] }
                    if let b { v += b[i] }
                    yr[i] = v
                    i += 1
                }
            }
        }
    }
}

/// Rows per partial dw/db buffer: fixed (not per thread) so sums do not depend on the thread count.
private let layerNormRowsPerPartial = 64

/// Per row, with dŷ = g·w: dx = r·dŷ - r·mean(dŷ) - r³·mean(dŷ·(x-μ))·(x - μ);
/// dw = Σ_rows g·x̂, db = Σ_rows g, accumulated per block of rows and then across blocks in Double.
/// Without `params` (frozen parameters) only dx is computed.
private func layerNormBackwardKernel<T: CPUFloat>(
    _ g: UnsafePointer<T>, _ x: UnsafePointer<T>, _ w: UnsafePointer<T>?,
    _ meanIn: UnsafePointer<T>, _ rstdIn: UnsafePointer<T>,
    _ dx: UnsafeMutablePointer<T>, _ params: (w: UnsafeMutablePointer<T>, b: UnsafeMutablePointer<T>)?,
    rows: Int, count: Int
) {
    let blocks = (rows + layerNormRowsPerPartial - 1) / layerNormRowsPerPartial
    let partials = params == nil ? 0 : max(blocks * count, 1)
    let partialW = UnsafeMutablePointer<T>.allocate(capacity: partials)
    let partialB = UnsafeMutablePointer<T>.allocate(capacity: partials)
    defer { partialW.deallocate(); partialB.deallocate() }
    let rowsPerBlock = layerNormRowsPerPartial

    /// dx of one row, adding its dw/db terms to `pw`/`pb` when `accumulate` (a constant at each
    /// call site, so the frozen-parameter loop carries no partial sums).
    @inline(__always) func row(_ row: Int, _ pw: UnsafeMutablePointer<T>, _ pb: UnsafeMutablePointer<T>, accumulate: Bool) {
        let gr = g + row * count, xr = x + row * count, dxr = dx + row * count
        let m = meanIn[row], r = rstdIn[row]
        let vm = SIMD16<T>(repeating: m), vr = SIMD16<T>(repeating: r)
        // Σ dŷ and Σ dŷ·(x-μ), blocked like the statistics; dw/db partials in the same sweep.
        var s1 = 0.0, s2 = 0.0
        var start = 0
        while start < count {
            let end = min(count, start + normBlock)
            var a1 = SIMD16<T>(repeating: 0), a2 = SIMD16<T>(repeating: 0)
            var i = start
            while i + 16 <= end {
                let gv = load16(gr + i), xc = load16(xr + i) - vm
                let dy = w.map { gv * load16($0 + i) } ?? gv
                a1 += dy; a2 += dy * xc
                if accumulate {
                    store16(load16(pw + i) + gv * xc * vr, pw + i)
                    store16(load16(pb + i) + gv, pb + i)
                }
                i += 16
            }
            var t1 = a1.sum(), t2 = a2.sum()
            while i < end {
                let xc = xr[i] - m
                let dy = w.map { gr[i] * $0[i] } ?? gr[i]
                t1 += dy; t2 += dy * xc
                if accumulate { pw[i] += gr[i] * xc * r; pb[i] += gr[i] }
                i += 1
            }
            s1 += Double(t1); s2 += Double(t2)
            start = end
        }
        let rd = Double(r), n = Double(count)
        let b = T(-rd * rd * rd * s2 / n), c = T(-rd * s1 / n)
        if let w {
            let vb = SIMD16<T>(repeating: b), vc = SIMD16<T>(repeating: c)
            var j = 0
            while j + 16 <= count {
                store16(load16(gr + j) * load16(w + j) * vr + (load16(xr + j) - vm) * vb + vc, dxr + j)
                j += 16
            }
            while j < count { dxr[j] = gr[j] * w[j] * r + (xr[j] - m) * b + c; j += 1 }
        } else {
            gradRun(gr, xr, dxr, count, mean: m, a: r, b: b, c: c)
        }
    }

    parallelFor(blocks, minimumPerChunk: max(1, 16_384 / max(count * rowsPerBlock, 1))) { range in
        for blk in range {
            let rowRange = (blk * rowsPerBlock)..<min(rows, (blk + 1) * rowsPerBlock)
            guard params != nil else {
                for r in rowRange { row(r, partialW, partialB, accumulate: false) }
                continue
            }
            let pw = partialW + blk * count, pb = partialB + blk * count
            pw.initialize(repeating: 0, count: count)
            pb.initialize(repeating: 0, count: count)
            for r in rowRange { row(r, pw, pb, accumulate: true) }
        }
    }
    guard let (dw, db) = params else { return }
    // Reduce the partials column-wise in Double, splitting columns across threads.
    parallelFor(count, minimumPerChunk: max(1, 65_536 / max(blocks, 1))) { cols in
        for col in cols {
            var sw = 0.0, sb = 0.0
            for blk in 0..<blocks { sw += Double(partialW[blk * count + col]); sb += Double(partialB[blk * count + col]) }
            dw[col] = T(sw); db[col] = T(sb)
        }
    }
}
