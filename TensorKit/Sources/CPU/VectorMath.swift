/// Float32 transcendental functions for the elementwise kernels, written as straight-line scalar
/// code (no calls, no branches: selects only) so LLVM vectorises the loops that use them. libm's
/// expf/tanhf/erff are opaque calls and stay one lane at a time. Accuracy is held against libm in
/// VectorMathTests (a few float32 ulps).
///
/// Written this way on purpose: Swift's SIMD types lower `.rounded`, comparisons with
/// `replacing(with:where:)` against a scalar and `pointwiseMin` to per-lane code.
enum VectorMath {
    // exp(x) = 2^k · e^r with k = round(x / ln 2) (rounded by adding 1.5·2²³, which leaves k in the
    // low mantissa bits) and r = x − k·ln 2, ln 2 split into a short high part (k·ln2_hi is exact)
    // and a correction. e^r on |r| ≤ ln2/2 is a degree-6 polynomial fitted for minimal relative error
    // (about 2e-9, below float rounding), evaluated with fused multiply-adds: the package builds for
    // Haswell and newer, where an FMA costs what a multiply does, so the polynomial is six
    // instructions instead of twelve and rounds once per step. 2^k is built in the exponent bits.
    // Computed, not stored: a stored static is a lazily initialised global in Swift.
    @inline(__always) static var expMagic: Float { 12_582_912 }
    @inline(__always) static var expLog2E: Float { 1.442_695_040_888_963_4 }
    @inline(__always) static var expLn2High: Float { 0.693_359_375 }
    @inline(__always) static var expLn2Low: Float { -2.121_944_40e-4 }
    @inline(__always) static var expCoefficients: (Float, Float, Float, Float, Float) {
        (0.001_383_684_575_557_708_7, 0.008_374_815_806_746_483, 0.041_668_225_079_774_86,
         0.166_664_198_040_962_22, 0.499_999_910_593_032_84)
    }

    /// e^x for one float, straight-line so the loops that call it vectorise. Below −87.33 (where the
    /// result would be subnormal) it gives 0, above 88.72 +inf; NaN propagates.
    @inline(__always) static func exp(_ x: Float) -> Float {
        let xc = x < -87.33 ? -87.33 : (x > 88.37 ? 88.37 : x)
        let t = expMagic.addingProduct(xc, expLog2E)
        let k = t - expMagic
        let r = xc.addingProduct(k, -expLn2High).addingProduct(k, -expLn2Low)
        let c = expCoefficients
        var p = c.1.addingProduct(c.0, r)
        p = c.2.addingProduct(p, r)
        p = c.3.addingProduct(p, r)
        p = c.4.addingProduct(p, r)
        p = Float(1).addingProduct(p, r)
        p = Float(1).addingProduct(p, r)
        // t's low mantissa bits hold k + 2²² (its exponent field is that of 1.5·2²³).
        let scale = Float(bitPattern: (t.bitPattern &- 0x4B40_0000 &+ 127) &<< 23)
        var result = p * scale
        result = x < -87.33 ? 0 : result
        result = x > 88.72 ? .infinity : result
        return x != x ? x : result
    }

    /// e^x on eight lanes, for the softmax and attention sweeps: the same arithmetic as `exp(_:)`
    /// (within 1.1e-7 relative, about 1 ulp, for −87 ≤ x ≤ 88). Below −87 it gives 0, so −inf gives
    /// 0; NaN propagates. No upper clamp: inputs above 88 are outside its domain (the sweeps pass
    /// x − max ≤ 0, and log-softmax backward passes log-probabilities).
    ///
    /// The clamp and the final select are lane-wise selects between two vectors, which compile to
    /// maxps / cmpps + andps; `replace(with:where:)` against a scalar became per-lane branches.
    @inline(__always) static func exp8(_ x: SIMD8<Float>) -> SIMD8<Float> {
        let lo = SIMD8<Float>(repeating: -87), zero = SIMD8<Float>(repeating: 0)
        var xc = lo
        for l in 0..<8 { xc[l] = x[l] < lo[l] ? lo[l] : x[l] }
        let magic = SIMD8<Float>(repeating: expMagic)
        let t = magic.addingProduct(xc, SIMD8(repeating: expLog2E))
        let k = t - magic
        let r = xc.addingProduct(k, SIMD8(repeating: -expLn2High)).addingProduct(k, SIMD8(repeating: -expLn2Low))
        let c = expCoefficients
        var p = SIMD8(repeating: c.1).addingProduct(SIMD8(repeating: c.0), r)
        p = SIMD8(repeating: c.2).addingProduct(p, r)
        p = SIMD8(repeating: c.3).addingProduct(p, r)
        p = SIMD8(repeating: c.4).addingProduct(p, r)
        p = SIMD8(repeating: 1).addingProduct(p, r)
        p = SIMD8(repeating: 1).addingProduct(p, r)
        let bits = (unsafeBitCast(t, to: SIMD8<Int32>.self) &- SIMD8(repeating: 0x4B40_0000 - 127)) &<< SIMD8(repeating: 23)
        var result = p * unsafeBitCast(bits, to: SIMD8<Float>.self)
        for l in 0..<8 { result[l] = x[l] < lo[l] ? zero[l] : result[l] }
        return result
    }

    @inline(__always) static func sigmoid(_ x: Float) -> Float { 1 / (1 + exp(-x)) }

    /// tanh: odd Taylor series through x¹³ for |x| < 0.5 (relative error < 1e-7), else 1 − 2/(e^{2|x|} + 1).
    @inline(__always) static func tanh(_ x: Float) -> Float {
        let a = Float(bitPattern: x.bitPattern & 0x7FFF_FFFF)
        let large = 1 - 2 / (exp(2 * a) + 1)
        let x2 = x * x
        var s: Float = 21844.0 / 6_081_075
        s = Float(-1382.0 / 155_925).addingProduct(s, x2)
        s = Float(62.0 / 2835).addingProduct(s, x2)
        s = Float(-17.0 / 315).addingProduct(s, x2)
        s = Float(2.0 / 15).addingProduct(s, x2)
        s = Float(-1.0 / 3).addingProduct(s, x2)
        let small = x.addingProduct(x * x2, s)
        let signed = Float(bitPattern: large.bitPattern | (x.bitPattern & 0x8000_0000))
        let result = a < 0.5 ? small : signed
        return x != x ? x : result
    }

    /// erf via the Chebyshev fit of erfc in Numerical Recipes (fractional error < 1.2e-7).
    @inline(__always) static func erf(_ x: Float) -> Float {
        let z = Float(bitPattern: x.bitPattern & 0x7FFF_FFFF)
        let t = 1 / (1 + 0.5 * z)
        var p: Float = 0.170_872_77
        p = Float(-0.822_152_23).addingProduct(p, t)
        p = Float(1.488_515_87).addingProduct(p, t)
        p = Float(-1.135_203_98).addingProduct(p, t)
        p = Float(0.278_868_07).addingProduct(p, t)
        p = Float(-0.186_288_06).addingProduct(p, t)
        p = Float(0.096_784_18).addingProduct(p, t)
        p = Float(0.374_091_96).addingProduct(p, t)
        p = Float(1.000_023_68).addingProduct(p, t)
        p = Float(-1.265_512_23).addingProduct(p, t)
        let magnitude = 1 - t * exp(p.addingProduct(-z, z))
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
