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

    // Each function is a type so the loops below are specialised per function with the body inlined:
    // a closure captured by the parallel loop stays an opaque call per element and never vectorises.

    /// y[i] = F(x[i]), split across cores for large n.
    static func map<F: ElementFunction>(_: F.Type, _ x: UnsafePointer<Float>, _ y: UnsafeMutablePointer<Float>, _ n: Int) {
        parallelFor(n, minimumPerChunk: 65_536) { range in mapRange(F.self, x, y, range) }
    }

    @inline(never)
    static func mapRange<F: ElementFunction>(_: F.Type, _ x: UnsafePointer<Float>, _ y: UnsafeMutablePointer<Float>,
                                             _ range: Range<Int>) {
        for i in range { y[i] = F.value(x[i]) }
    }

    /// out[i] = F'(x[i]) · g[i], for backward kernels.
    static func mapGradient<F: ElementFunction>(_: F.Type, _ x: UnsafePointer<Float>, _ g: UnsafePointer<Float>,
                                                _ out: UnsafeMutablePointer<Float>, _ n: Int) {
        parallelFor(n, minimumPerChunk: 65_536) { range in mapGradientRange(F.self, x, g, out, range) }
    }

    @inline(never)
    static func mapGradientRange<F: ElementFunction>(_: F.Type, _ x: UnsafePointer<Float>, _ g: UnsafePointer<Float>,
                                                     _ out: UnsafeMutablePointer<Float>, _ range: Range<Int>) {
        for i in range { out[i] = F.derivative(x[i]) * g[i] }
    }

    /// Vectorised forward for the float32 unary ops that need transcendental functions; false when
    /// `op` has no fast path (the generic loop handles it). Concrete types per case, so each loop is
    /// specialised at compile time.
    static func unary(_ op: UnaryOp, _ x: UnsafePointer<Float>, _ y: UnsafeMutablePointer<Float>, _ n: Int) -> Bool {
        switch op {
        case .exp: map(ExpFunction.self, x, y, n)
        case .sigmoid: map(SigmoidFunction.self, x, y, n)
        case .silu: map(SiluFunction.self, x, y, n)
        case .tanh: map(TanhFunction.self, x, y, n)
        case .quickGelu: map(QuickGeluFunction.self, x, y, n)
        case .geluTanh: map(GeluTanhFunction.self, x, y, n)
        case .geluExact: map(GeluFunction.self, x, y, n)
        default: return false
        }
        return true
    }

    /// Vectorised gradients (input x, upstream g) of the activations used in training.
    static func unaryGrad(_ op: UnaryOp, _ x: UnsafePointer<Float>, _ g: UnsafePointer<Float>,
                          _ out: UnsafeMutablePointer<Float>, _ n: Int) -> Bool {
        switch op {
        case .sigmoid: mapGradient(SigmoidFunction.self, x, g, out, n)
        case .silu: mapGradient(SiluFunction.self, x, g, out, n)
        case .tanh: mapGradient(TanhFunction.self, x, g, out, n)
        case .quickGelu: mapGradient(QuickGeluFunction.self, x, g, out, n)
        case .geluTanh: mapGradient(GeluTanhFunction.self, x, g, out, n)
        case .geluExact: mapGradient(GeluFunction.self, x, g, out, n)
        default: return false
        }
        return true
    }
}

/// A float32 activation and its derivative, for the vectorised loops in `VectorMath`.
protocol ElementFunction {
    static func value(_ x: Float) -> Float
    static func derivative(_ x: Float) -> Float
}

enum ExpFunction: ElementFunction {
    @inline(__always) static func value(_ x: Float) -> Float { VectorMath.exp(x) }
    @inline(__always) static func derivative(_ x: Float) -> Float { VectorMath.exp(x) }
}

enum SigmoidFunction: ElementFunction {
    @inline(__always) static func value(_ x: Float) -> Float { VectorMath.sigmoid(x) }
    @inline(__always) static func derivative(_ x: Float) -> Float { let s = VectorMath.sigmoid(x); return s * (1 - s) }
}

enum SiluFunction: ElementFunction {
    @inline(__always) static func value(_ x: Float) -> Float { x * VectorMath.sigmoid(x) }
    @inline(__always) static func derivative(_ x: Float) -> Float {
        let s = VectorMath.sigmoid(x)
        return s * (1 + x * (1 - s))
    }
}

enum TanhFunction: ElementFunction {
    @inline(__always) static func value(_ x: Float) -> Float { VectorMath.tanh(x) }
    @inline(__always) static func derivative(_ x: Float) -> Float { let t = VectorMath.tanh(x); return 1 - t * t }
}

enum QuickGeluFunction: ElementFunction {
    @inline(__always) static func value(_ x: Float) -> Float { x * VectorMath.sigmoid(1.702 * x) }
    @inline(__always) static func derivative(_ x: Float) -> Float {
        let s = VectorMath.sigmoid(1.702 * x)
        return s + 1.702 * x * s * (1 - s)
    }
}

enum GeluFunction: ElementFunction {
    @inline(__always) static func value(_ x: Float) -> Float { 0.5 * x * (1 + VectorMath.erf(x * 0.707_106_77)) }
    @inline(__always) static func derivative(_ x: Float) -> Float {
        let cdf = 0.5 * (1 + VectorMath.erf(x * 0.707_106_77))
        let pdf = 0.398_942_28 * VectorMath.exp(-0.5 * x * x)
        return cdf + x * pdf
    }
}

enum GeluTanhFunction: ElementFunction {
    @inline(__always) static func value(_ x: Float) -> Float { VectorMath.geluTanh(x) }
    @inline(__always) static func derivative(_ x: Float) -> Float {
        let x2 = x * x
        let t = VectorMath.tanh(0.797_884_56 * (x + 0.044_715 * x2 * x))
        let dInner = 0.797_884_56 * (1 + 0.134_145 * x2)
        return 0.5 * (1 + t) + 0.5 * x * (1 - t * t) * dInner
    }
}
