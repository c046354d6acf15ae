/// Vectorised float32 transcendental functions for the elementwise kernels. libm's scalar expf/tanhf/erff
/// cost 20–40 cycles per element; these run 16 lanes at a time. Accuracy is checked against libm in
/// VectorMathTests (a few float32 ulps).
typealias VFloat = SIMD16<Float>

enum VectorMath {
    @inline(__always) static func bits(_ x: VFloat) -> SIMD16<UInt32> { unsafeBitCast(x, to: SIMD16<UInt32>.self) }
    @inline(__always) static func fromBits(_ b: SIMD16<UInt32>) -> VFloat { unsafeBitCast(b, to: VFloat.self) }

    /// e^x: x = n·ln2 + r with |r| ≤ ln2/2, a degree-7 Taylor polynomial for e^r, and 2^n built in the
    /// exponent bits. Inputs are clamped so 2^n stays a normal float: results below the smallest normal
    /// (x < -87.33) flush to 0, above 88.37 they are +inf; NaN propagates.
    @inline(__always) static func exp(_ x: VFloat) -> VFloat {
        let clamped = x.clamped(lowerBound: VFloat(repeating: -87.33), upperBound: VFloat(repeating: 88.37))
        let n = (clamped * 1.442_695_04).rounded(.toNearestOrEven)
        let r = clamped - n * 0.693_145_75 - n * 1.428_606_8e-6
        var p = VFloat(repeating: 1.0 / 5040)
        p = p * r + 1.0 / 720
        p = p * r + 1.0 / 120
        p = p * r + 1.0 / 24
        p = p * r + 1.0 / 6
        p = p * r + 0.5
        p = p * r + 1
        p = p * r + 1
        let bits = (SIMD16<Int32>(n) &+ 127) &<< 23
        let result = p * fromBits(SIMD16<UInt32>(truncatingIfNeeded: bits))
        return result.replacing(with: 0, where: x .< -87.33)
            .replacing(with: .infinity, where: x .> 88.72)
            .replacing(with: x, where: x .!= x)
    }

    @inline(__always) static func sigmoid(_ x: VFloat) -> VFloat { 1 / (1 + exp(-x)) }

    /// tanh: odd Taylor series through x¹³ for |x| < 0.5 (relative error < 1e-7), else 1 − 2/(e^{2|x|} + 1).
    @inline(__always) static func tanh(_ x: VFloat) -> VFloat {
        let a = abs(x)
        let large = 1 - 2 / (exp(2 * a) + 1)
        let x2 = x * x
        var s = VFloat(repeating: 21844.0 / 6_081_075)
        s = s * x2 - 1382.0 / 155_925
        s = s * x2 + 62.0 / 2835
        s = s * x2 - 17.0 / 315
        s = s * x2 + 2.0 / 15
        s = s * x2 - 1.0 / 3
        let small = x + x * x2 * s
        let signed = fromBits(bits(large) | (bits(x) & 0x8000_0000))
        return signed.replacing(with: small, where: a .< 0.5).replacing(with: x, where: x .!= x)
    }

    /// erf via the Chebyshev fit of erfc in Numerical Recipes (fractional error < 1.2e-7).
    @inline(__always) static func erf(_ x: VFloat) -> VFloat {
        let z = abs(x)
        let t = 1 / (1 + 0.5 * z)
        var p = VFloat(repeating: 0.170_872_77)
        p = p * t - 0.822_152_23
        p = p * t + 1.488_515_87
        p = p * t - 1.135_203_98
        p = p * t + 0.278_868_07
        p = p * t - 0.186_288_06
        p = p * t + 0.096_784_18
        p = p * t + 0.374_091_96
        p = p * t + 1.000_023_68
        p = p * t - 1.265_512_23
        let erfc = t * exp(-z * z + p)
        let magnitude = 1 - erfc
        return fromBits(bits(magnitude) | (bits(x) & 0x8000_0000))
    }

    @inline(__always) static func abs(_ x: VFloat) -> VFloat {
        fromBits(bits(x) & 0x7FFF_FFFF)
    }

    /// y[i] = f(x[i]) over n elements, 16 at a time, split across cores for large n.
    @inline(__always)
    static func map(_ x: UnsafePointer<Float>, _ y: UnsafeMutablePointer<Float>, _ n: Int, _ f: (VFloat) -> VFloat) {
        parallelFor(n / 16 + 1, minimumPerChunk: 4096) { blocks in
            for b in blocks {
                let i = b * 16
                if i + 16 <= n {
                    let v = UnsafeRawPointer(x + i).loadUnaligned(as: VFloat.self)
                    UnsafeMutableRawPointer(y + i).storeBytes(of: f(v), as: VFloat.self)
                } else if i < n {
                    var v = VFloat(repeating: 0)
                    for j in 0..<(n - i) { v[j] = x[i + j] }
                    let r = f(v)
                    for j in 0..<(n - i) { y[i + j] = r[j] }
                }
            }
        }
    }

    /// out[i] = f(x[i], g[i]) — for backward kernels.
    @inline(__always)
    static func map2(_ x: UnsafePointer<Float>, _ g: UnsafePointer<Float>, _ out: UnsafeMutablePointer<Float>, _ n: Int,
                     _ f: (VFloat, VFloat) -> VFloat) {
        parallelFor(n / 16 + 1, minimumPerChunk: 4096) { blocks in
            for b in blocks {
                let i = b * 16
                if i + 16 <= n {
                    let v = UnsafeRawPointer(x + i).loadUnaligned(as: VFloat.self)
                    let w = UnsafeRawPointer(g + i).loadUnaligned(as: VFloat.self)
                    UnsafeMutableRawPointer(out + i).storeBytes(of: f(v, w), as: VFloat.self)
                } else if i < n {
                    var v = VFloat(repeating: 0), w = VFloat(repeating: 0)
                    for j in 0..<(n - i) { v[j] = x[i + j]; w[j] = g[i + j] }
                    let r = f(v, w)
                    for j in 0..<(n - i) { out[i + j] = r[j] }
                }
            }
        }
    }

    /// Vectorised forward for the float32 unary ops that need transcendental functions; false when
    /// `op` has no vector path (the generic loop handles it).
    static func unary(_ op: UnaryOp, _ x: UnsafePointer<Float>, _ y: UnsafeMutablePointer<Float>, _ n: Int) -> Bool {
        switch op {
        case .exp: map(x, y, n) { exp($0) }
        case .sigmoid: map(x, y, n) { sigmoid($0) }
        case .silu: map(x, y, n) { $0 * sigmoid($0) }
        case .tanh: map(x, y, n) { tanh($0) }
        case .quickGelu: map(x, y, n) { $0 * sigmoid(1.702 * $0) }
        case .geluTanh:
            map(x, y, n) { v in
                let inner: VFloat = 0.797_884_56 * (v + 0.044_715 * v * v * v)
                return 0.5 * v * (1 + tanh(inner))
            }
        case .geluExact: map(x, y, n) { 0.5 * $0 * (1 + erf($0 * 0.707_106_77)) }
        default: return false
        }
        return true
    }

    /// Vectorised gradients (x, upstream g) for the activations used in training.
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
                let cdf: VFloat = 0.5 * (1 + erf(x * 0.707_106_77))
                let pdf: VFloat = 0.398_942_28 * exp(-0.5 * x * x)
                return g * (cdf + x * pdf)
            }
        case .geluTanh:
            map2(x, g, out, n) { x, g in
                let x2: VFloat = x * x
                let t: VFloat = tanh(0.797_884_56 * (x + 0.044_715 * x2 * x))
                let dInner: VFloat = 0.797_884_56 * (1 + 0.134_145 * x2)
                let left: VFloat = 0.5 * (1 + t)
                let right: VFloat = 0.5 * x * (1 - t * t) * dInner
                return g * (left + right)
            }
        default: return false
        }
        return true
    }
}
