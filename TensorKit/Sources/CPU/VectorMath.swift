/// Float32 transcendental functions for the elementwise kernels, written as straight-line scalar
/// code (no calls, no branches: selects only) so LLVM vectorises the loops that use them. libm's
/// expf/tanhf/erff are opaque calls and stay one lane at a time. Accuracy is held against libm in
/// VectorMathTests (a few float32 ulps).
///
/// Written this way on purpose: Swift's SIMD types lower `.rounded`, comparisons with
/// `replacing(with:where:)` and `pointwiseMin` to per-lane code on baseline x86-64.
enum VectorMath {
    /// e^x: x = n·ln2 + r with |r| ≤ ln2/2 (n rounded with the 1.5·2²³ trick), a degree-7 Taylor
    /// polynomial for e^r, and 2^n built in the exponent bits. Results below the smallest normal
    /// float (x < -87.33) flush to 0, x > 88.72 gives +inf, NaN propagates.
    @inline(__always) static func exp(_ x: Float) -> Float {
        let c = x < -87.33 ? -87.33 : (x > 88.37 ? 88.37 : x)
        let t = c * 1.442_695_04 + 12_582_912
        let n = t - 12_582_912
        let r = c - n * 0.693_145_75 - n * 1.428_606_8e-6
        var p: Float = 1.0 / 5040
        p = p * r + 1.0 / 720
        p = p * r + 1.0 / 120
        p = p * r + 1.0 / 24
        p = p * r + 1.0 / 6
        p = p * r + 0.5
        p = p * r + 1
        p = p * r + 1
        // t's low mantissa bits hold n + 2²² (its exponent field is that of 1.5·2²³).
        let scale = Float(bitPattern: (t.bitPattern &- 0x4B40_0000 &+ 127) &<< 23)
        var result = p * scale
        result = x < -87.33 ? 0 : result
        result = x > 88.72 ? .infinity : result
        return x != x ? x : result
    }

    @inline(__always) static func sigmoid(_ x: Float) -> Float { 1 / (1 + exp(-x)) }

    /// tanh: odd Taylor series through x¹³ for |x| < 0.5 (relative error < 1e-7), else 1 − 2/(e^{2|x|} + 1).
    @inline(__always) static func tanh(_ x: Float) -> Float {
        let a = Float(bitPattern: x.bitPattern & 0x7FFF_FFFF)
        let large = 1 - 2 / (exp(2 * a) + 1)
        let x2 = x * x
        var s: Float = 21844.0 / 6_081_075
        s = s * x2 - 1382.0 / 155_925
        s = s * x2 + 62.0 / 2835
        s = s * x2 - 17.0 / 315
        s = s * x2 + 2.0 / 15
        s = s * x2 - 1.0 / 3
        let small = x + x * x2 * s
        let signed = Float(bitPattern: large.bitPattern | (x.bitPattern & 0x8000_0000))
        let result = a < 0.5 ? small : signed
        return x != x ? x : result
    }

    /// erf via the Chebyshev fit of erfc in Numerical Recipes (fractional error < 1.2e-7).
    @inline(__always) static func erf(_ x: Float) -> Float {
        let z = Float(bitPattern: x.bitPattern & 0x7FFF_FFFF)
        let t = 1 / (1 + 0.5 * z)
        var p: Float = 0.170_872_77
        p = p * t - 0.822_152_23
        p = p * t + 1.488_515_87
        p = p * t - 1.135_203_98
        p = p * t + 0.278_868_07
        p = p * t - 0.186_288_06
        p = p * t + 0.096_784_18
        p = p * t + 0.374_091_96
        p = p * t + 1.000_023_68
        p = p * t - 1.265_512_23
        let magnitude = 1 - t * exp(-z * z + p)
        return Float(bitPattern: magnitude.bitPattern | (x.bitPattern & 0x8000_0000))
    }

    @inline(__always) static func geluTanh(_ x: Float) -> Float {
        0.5 * x * (1 + tanh(0.797_884_56 * (x + 0.044_715 * x * x * x)))
    }

    /// y[i] = f(x[i]), split across cores for large n; the inner loop vectorises.
    @inline(__always)
    static func map(_ x: UnsafePointer<Float>, _ y: UnsafeMutablePointer<Float>, _ n: Int, _ f: (Float) -> Float) {
        parallelFor(n, minimumPerChunk: 65_536) { range in
            let xs = x + range.lowerBound, ys = y + range.lowerBound
            for i in 0..<range.count { ys[i] = f(xs[i]) }
        }
    }

    /// out[i] = f(x[i], g[i]), for backward kernels.
    @inline(__always)
    static func map2(_ x: UnsafePointer<Float>, _ g: UnsafePointer<Float>, _ out: UnsafeMutablePointer<Float>, _ n: Int,
                     _ f: (Float, Float) -> Float) {
        parallelFor(n, minimumPerChunk: 65_536) { range in
            let xs = x + range.lowerBound, gs = g + range.lowerBound, os = out + range.lowerBound
            for i in 0..<range.count { os[i] = f(xs[i], gs[i]) }
        }
    }

    /// Vectorised forward for the float32 unary ops that need transcendental functions; false when
    /// `op` has no fast path (the generic loop handles it).
    static func unary(_ op: UnaryOp, _ x: UnsafePointer<Float>, _ y: UnsafeMutablePointer<Float>, _ n: Int) -> Bool {
        switch op {
        case .exp: map(x, y, n) { exp($0) }
        case .sigmoid: map(x, y, n) { sigmoid($0) }
        case .silu: map(x, y, n) { $0 * sigmoid($0) }
        case .tanh: map(x, y, n) { tanh($0) }
        case .quickGelu: map(x, y, n) { $0 * sigmoid(1.702 * $0) }
        case .geluTanh: map(x, y, n) { geluTanh($0) }
        case .geluExact: map(x, y, n) { 0.5 * $0 * (1 + erf($0 * 0.707_106_77)) }
        default: return false
        }
        return true
    }

    /// Vectorised gradients (input x, upstream g) of the activations used in training.
    static func unaryGrad(_ op: UnaryOp, _ x: UnsafePointer<Float>, _ g: UnsafePointer<Float>,
                          _ out: UnsafeMutablePointer<Float>, _ n: Int) -> Bool {
        switch op {
        case .silu:
            map2(x, g, out, n) { x, g in let s = sigmoid(x); return g * s * (1 + x * (1 - s)) }
        case .sigmoid:
            map2(x, g, out, n) { x, g in let s = sigmoid(x); return g * s * (1 - s) }
        case .tanh:
            map2(x, g, out, n) { x, g in let t = tanh(x); return g * (1 - t * t) }
        case .quickGelu:
            map2(x, g, out, n) { x, g in let s = sigmoid(1.702 * x); return g * (s + 1.702 * x * s * (1 - s)) }
        case .geluExact:
            map2(x, g, out, n) { x, g in
                let cdf = 0.5 * (1 + erf(x * 0.707_106_77))
                let pdf = 0.398_942_28 * exp(-0.5 * x * x)
                return g * (cdf + x * pdf)
            }
        case .geluTanh:
            map2(x, g, out, n) { x, g in
                let x2 = x * x
                let t = tanh(0.797_884_56 * (x + 0.044_715 * x2 * x))
                let dInner = 0.797_884_56 * (1 + 0.134_145 * x2)
                return g * (0.5 * (1 + t) + 0.5 * x * (1 - t * t) * dInner)
            }
        default: return false
        }
        return true
    }
}
