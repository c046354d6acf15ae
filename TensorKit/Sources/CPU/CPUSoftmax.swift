import Foundation

// Softmax and log-softmax over the last axis of a contiguous tensor, one row at a time:
// max, then Σ exp(x - max) (the terms written out for softmax), then one scaling sweep.
// Float rows use a SIMD exp (`VectorMath.exp8`); libm's scalar expf would dominate the run time.

extension CPUBackend {
    public func softmax(_ x: Tensor, log: Bool) -> Tensor {
        precondition(x.isContiguous && x.rank >= 1, "softmax kernel: needs a contiguous tensor with an axis, got \(x.shape)")
        let out = empty(x.shape, x.dtype)
        let length = x.shape[x.rank - 1]
        if x.numel == 0 { return out }
        let rows = x.numel / length
        switch x.dtype {
        case .float32: softmaxForwardKernel(x.pointer(as: Float.self), out.pointer(as: Float.self), rows: rows, length: length, log: log)
        case .float64: softmaxForwardKernel(x.pointer(as: Double.self), out.pointer(as: Double.self), rows: rows, length: length, log: log)
        default: preconditionFailure("softmax is not defined for \(x.dtype) on the CPU; convert to float32 first")
        }
        return out
    }

    public func softmaxBackward(output: Tensor, gradOutput: Tensor, log: Bool) -> Tensor {
        precondition(output.shape == gradOutput.shape && output.dtype == gradOutput.dtype && output.rank >= 1,
                     "softmaxBackward kernel: output \(output.shape)/\(output.dtype) vs gradient \(gradOutput.shape)/\(gradOutput.dtype)")
        let y = output.contiguous(), g = gradOutput.contiguous()
        let out = empty(y.shape, y.dtype)
        let length = y.shape[y.rank - 1]
        if y.numel == 0 { return out }
        let rows = y.numel / length
        switch y.dtype {
        case .float32:
            softmaxBackwardKernel(y.pointer(as: Float.self), g.pointer(as: Float.self), out.pointer(as: Float.self),
                                  rows: rows, length: length, log: log)
        case .float64:
            softmaxBackwardKernel(y.pointer(as: Double.self), g.pointer(as: Double.self), out.pointer(as: Double.self),
                                  rows: rows, length: length, log: log)
        default: preconditionFailure("softmax backward is not defined for \(y.dtype) on the CPU")
        }
        return out
    }
}

/// Rows per parallel task: about 16K elements, at least one row.
@inline(__always) private func rowsPerTask(_ length: Int) -> Int { max(1, 16_384 / max(length, 1)) }

@inline(__always) private func asFloat<T>(_ p: UnsafePointer<T>) -> UnsafePointer<Float> {
    UnsafeRawPointer(p).assumingMemoryBound(to: Float.self)
}

@inline(__always) private func asFloat<T>(_ p: UnsafeMutablePointer<T>) -> UnsafeMutablePointer<Float> {
    UnsafeMutableRawPointer(p).assumingMemoryBound(to: Float.self)
}

// Float rows run on concrete SIMD8<Float> code: the SIMD operators used generically specialise into
// per-lane loops for comparisons, and float32 is the type that matters for speed. Double (gradient
// checks, references) takes the plain scalar loops below.

private func softmaxForwardKernel<T: CPUFloat>(_ x: UnsafePointer<T>, _ y: UnsafeMutablePointer<T>,
                                               rows: Int, length: Int, log: Bool) {
    parallelFor(rows, minimumPerChunk: rowsPerTask(length)) { range in
        for row in range {
            let xr = x + row * length, yr = y + row * length
            if T.self == Float.self {
                softmaxRowFloat(asFloat(xr), asFloat(yr), length, log: log)
                continue
            }
            var mx = -T.infinity
            for i in 0..<length where xr[i] > mx { mx = xr[i] }
            var total: T = 0
            for i in 0..<length { let e = T.exp(xr[i] - mx); total += e; yr[i] = e }
            if log {
                // y = x - (max + log Σ exp(x - max)); NaN/inf rows propagate through the constant.
                let c = mx + T.log(total)
                for i in 0..<length { yr[i] = xr[i] - c }
            } else {
                let inv = 1 / total
                for i in 0..<length { yr[i] *= inv }
            }
        }
    }
}

/// softmax: dx = y·(g - Σ g·y); log-softmax: dx = g - exp(y)·Σ g.
private func softmaxBackwardKernel<T: CPUFloat>(_ y: UnsafePointer<T>, _ g: UnsafePointer<T>, _ dx: UnsafeMutablePointer<T>,
                                                rows: Int, length: Int, log: Bool) {
    parallelFor(rows, minimumPerChunk: rowsPerTask(length)) { range in
        for row in range {
            let yr = y + row * length, gr = g + row * length, dxr = dx + row * length
            if T.self == Float.self {
                softmaxBackwardRowFloat(asFloat(yr), asFloat(gr), asFloat(dxr), length, log: log)
                continue
            }
            var s: T = 0
            if log {
                for i in 0..<length { s += gr[i] }
                for i in 0..<length { dxr[i] = gr[i] - T.exp(yr[i]) * s }
            } else {
                for i in 0..<length { s += gr[i] * yr[i] }
                for i in 0..<length { dxr[i] = yr[i] * (gr[i] - s) }
            }
        }
    }
}

@inline(__always) private func loadF8(_ p: UnsafePointer<Float>) -> SIMD8<Float> {
    UnsafeRawPointer(p).loadUnaligned(as: SIMD8<Float>.self)
}

@inline(__always) private func storeF8(_ v: SIMD8<Float>, _ p: UnsafeMutablePointer<Float>) {
    UnsafeMutableRawPointer(p).storeBytes(of: v, as: SIMD8<Float>.self)
}

/// Lane numbers as floats: float compares vectorise, SIMD8<Int32> compares against a scalar do not.
@inline(__always) private var laneIndex: SIMD8<Float> { SIMD8<Float>(0, 1, 2, 3, 4, 5, 6, 7) }

/// Rows of at least 8 finish with one vector overlapping the previous one: recomputing the same
/// lanes from the same inputs is harmless for max, exp and x - c, and the sum masks the repeats.
@inline(__always)
private func softmaxRowFloat(_ x: UnsafePointer<Float>, _ y: UnsafeMutablePointer<Float>, _ n: Int, log: Bool) {
    if n < 8 {
        var mx = -Float.infinity
        for i in 0..<n where x[i] > mx { mx = x[i] }
        var v = SIMD8<Float>(repeating: 0)
        for i in 0..<n { v[i] = x[i] - mx }
        var e = VectorMath.exp8(v)
        e.replace(with: 0, where: laneIndex .>= Float(n))
        let total = e.sum()
        if log {
            let c = mx + Foundation.logf(total)
            for i in 0..<n { y[i] = x[i] - c }
        } else {
            let inv = 1 / total
            for i in 0..<n { y[i] = e[i] * inv }
        }
        return
    }
    let tailStart = n - 8
    // Max: two chains, then the overlapping last vector.
    var m0 = loadF8(x + tailStart), m1 = m0
    var i = 0
    while i + 16 <= n {
        let v0 = loadF8(x + i), v1 = loadF8(x + i + 8)
        m0.replace(with: v0, where: v0 .> m0)
        m1.replace(with: v1, where: v1 .> m1)
        i += 16
    }
    if i + 8 <= n { let v = loadF8(x + i); m0.replace(with: v, where: v .> m0) }
    m0.replace(with: m1, where: m1 .> m0)
    var mx = m0[0]
    for j in 1..<8 where m0[j] > mx { mx = m0[j] }
    // Σ exp(x - max), writing the terms for softmax (sums lie in [1, n]: float accumulators suffice).
    let vm = SIMD8<Float>(repeating: mx)
    var s0 = SIMD8<Float>(repeating: 0), s1 = s0
    i = 0
    while i + 16 <= n {
        let e0 = VectorMath.exp8(loadF8(x + i) - vm), e1 = VectorMath.exp8(loadF8(x + i + 8) - vm)
        if !log { storeF8(e0, y + i); storeF8(e1, y + i + 8) }
        s0 += e0; s1 += e1
        i += 16
    }
    if i + 8 <= n {
        let e = VectorMath.exp8(loadF8(x + i) - vm)
        if !log { storeF8(e, y + i) }
        s0 += e
        i += 8
    }
    if i < n {
        var e = VectorMath.exp8(loadF8(x + tailStart) - vm)
        if !log { storeF8(e, y + tailStart) }
        e.replace(with: 0, where: laneIndex .< Float(i - tailStart))
        s1 += e
    }
    let total = (s0 + s1).sum()
    if log {
        // y = x - (max + log Σ exp(x - max)); NaN/inf rows propagate through the constant.
        let vc = SIMD8<Float>(repeating: mx + Foundation.logf(total))
        i = 0
        while i + 8 <= n { storeF8(loadF8(x + i) - vc, y + i); i += 8 }
        if i < n { storeF8(loadF8(x + tailStart) - vc, y + tailStart) }
    } else {
        let inv = 1 / total
        let vi = SIMD8<Float>(repeating: inv)
        i = 0
        while i + 8 <= n { storeF8(loadF8(y + i) * vi, y + i); i += 8 }
        while i < n { y[i] *= inv; i += 1 }
    }
}

@inline(__always)
private func softmaxBackwardRowFloat(_ y: UnsafePointer<Float>, _ g: UnsafePointer<Float>, _ dx: UnsafeMutablePointer<Float>,
                                     _ n: Int, log: Bool) {
    // Row sums in float per 1024-element block, in Double across blocks.
    var total = 0.0
    var start = 0
    while start < n {
        let end = min(n, start + 1024)
        var a0 = SIMD8<Float>(repeating: 0), a1 = a0
        var i = start
        if log {
            while i + 16 <= end { a0 += loadF8(g + i); a1 += loadF8(g + i + 8); i += 16 }
        } else {
            while i + 16 <= end { a0 += loadF8(g + i) * loadF8(y + i); a1 += loadF8(g + i + 8) * loadF8(y + i + 8); i += 16 }
        }
        var s = (a0 + a1).sum()
        while i < end { s += log ? g[i] : g[i] * y[i]; i += 1 }
        total += Double(s)
        start = end
    }
    let s = Float(total)
    let vs = SIMD8<Float>(repeating: s)
    var i = 0
    if log {
        // Overlapping last vector: dx depends only on the same lane's inputs, so repeats are identical.
        while i + 8 <= n { storeF8(loadF8(g + i) - VectorMath.exp8(loadF8(y + i)) * vs, dx + i); i += 8 }
        if i < n {
            if n >= 8 {
                let t = n - 8
                storeF8(loadF8(g + t) - VectorMath.exp8(loadF8(y + t)) * vs, dx + t)
            } else {
                var v = SIMD8<Float>(repeating: 0)
                for j in 0..<n { v[j] = y[j] }
                let e = VectorMath.exp8(v)
                for j in 0..<n { dx[j] = g[j] - e[j] * s }
            }
        }
    } else {
        while i + 8 <= n { storeF8(loadF8(y + i) * (loadF8(g + i) - vs), dx + i); i += 8 }
        while i < n { dx[i] = y[i] * (g[i] - s); i += 1 }
    }
}
