/// Philox4x32-10 (Salmon et al., "Parallel random numbers: as easy as 1, 2, 3", SC 2011):
/// a counter-based generator, so draw number n of a stream can be computed directly from
/// (seed, n). The CPU and CUDA backends use the same mapping, which makes streams resumable
/// and device-independent.
public enum Philox {
    static let m0: UInt32 = 0xD251_1F53
    static let m1: UInt32 = 0xCD9E_8D57
    static let w0: UInt32 = 0x9E37_79B9
    static let w1: UInt32 = 0xBB67_AE85

    /// One Philox4x32-10 block: 4 random words for `counter` under `key`.
    @inline(__always)
    public static func block(counter: (UInt32, UInt32, UInt32, UInt32), key: (UInt32, UInt32))
        -> (UInt32, UInt32, UInt32, UInt32) {
        var (c0, c1, c2, c3) = counter
        var (k0, k1) = key
        for round in 0..<10 {
            if round > 0 { k0 &+= w0; k1 &+= w1 }
            let p0 = UInt64(m0) * UInt64(c0)
            let p1 = UInt64(m1) * UInt64(c2)
            let hi0 = UInt32(truncatingIfNeeded: p0 >> 32), lo0 = UInt32(truncatingIfNeeded: p0)
            let hi1 = UInt32(truncatingIfNeeded: p1 >> 32), lo1 = UInt32(truncatingIfNeeded: p1)
            (c0, c1, c2, c3) = (hi1 ^ c1 ^ k0, lo1, hi0 ^ c3 ^ k1, lo0)
        }
        return (c0, c1, c2, c3)
    }

    /// The 4 words of block `index` of the stream keyed by `seed`: counter = (index lo, index hi, 0, 0).
    @inline(__always)
    public static func words(seed: UInt64, index: UInt64) -> (UInt32, UInt32, UInt32, UInt32) {
        block(counter: (UInt32(truncatingIfNeeded: index), UInt32(truncatingIfNeeded: index >> 32), 0, 0),
              key: (UInt32(truncatingIfNeeded: seed), UInt32(truncatingIfNeeded: seed >> 32)))
    }

    /// Uniform in [0, 1) with 24 random bits (exactly representable in float32).
    @inline(__always) public static func uniform(_ word: UInt32) -> Double {
        Double(word >> 8) * (1.0 / 16_777_216.0)
    }

    /// Uniform in (0, 1], safe for log.
    @inline(__always) public static func uniformOpen(_ word: UInt32) -> Double {
        Double((word >> 8) + 1) * (1.0 / 16_777_216.0)
    }

    /// Fills `count` values: element i comes from block `offset + i/4`, lane i%4. Normals use
    /// Box–Muller on lane pairs (0,1) and (2,3).
    public static func fill<T: BinaryFloatingPoint>(_ out: UnsafeMutablePointer<T>, count: Int,
                                                    _ distribution: RandomDistribution, seed: UInt64, offset: UInt64) {
        var i = 0
        var block = offset
        while i < count {
            let (x0, x1, x2, x3) = words(seed: seed, index: block)
            var lanes: (Double, Double, Double, Double)
            switch distribution {
            case let .uniform(low, high):
                let span = high - low
                lanes = (low + span * uniform(x0), low + span * uniform(x1),
                         low + span * uniform(x2), low + span * uniform(x3))
            case let .normal(mean, std):
                let r0 = (-2 * _log(uniformOpen(x0))).squareRoot(), a0 = 2 * Double.pi * uniform(x1)
                let r1 = (-2 * _log(uniformOpen(x2))).squareRoot(), a1 = 2 * Double.pi * uniform(x3)
                lanes = (mean + std * r0 * _cos(a0), mean + std * r0 * _sin(a0),
                         mean + std * r1 * _cos(a1), mean + std * r1 * _sin(a1))
            }
            let n = min(4, count - i)
            if n > 0 { out[i] = T(lanes.0) }
            if n > 1 { out[i + 1] = T(lanes.1) }
            if n > 2 { out[i + 2] = T(lanes.2) }
            if n > 3 { out[i + 3] = T(lanes.3) }
            i += 4
            block &+= 1
        }
    }
}

/// A resumable random stream: (seed, offset) where offset counts Philox blocks already used.
public struct PhiloxGenerator: Codable, Hashable, Sendable {
    public var seed: UInt64
    public var offset: UInt64
    public init(seed: UInt64, offset: UInt64 = 0) { self.seed = seed; self.offset = offset }

    /// Reserves the blocks needed for `count` values and returns the offset to draw them from.
    public mutating func reserve(_ count: Int) -> UInt64 {
        let start = offset
        offset &+= UInt64((count + 3) / 4)
        return start
    }
}

import Foundation
@inline(__always) func _log(_ x: Double) -> Double { Foundation.log(x) }
@inline(__always) func _cos(_ x: Double) -> Double { Foundation.cos(x) }
@inline(__always) func _sin(_ x: Double) -> Double { Foundation.sin(x) }
