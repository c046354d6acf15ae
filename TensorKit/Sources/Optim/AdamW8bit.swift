import Foundation

/// AdamW with 8-bit block-quantised state: bitsandbytes' `AdamW8bit` (TRL's `train_use_8bit_adam`),
/// following its CPU backend (bitsandbytes 0.50) operation by operation, in float32:
///
///     m, v  ← dequantise(codes, per-block absmax)          code → qmap[code] · absmax[block]
///     m     ← m·β1 + (1 − β1)·g
///     v     ← v·β2 + (1 − β2)·g·g
///     p     ← p · (1 − lr·wd)                              decoupled weight decay (when wd > 0)
///     p     ← p − (lr / (1 − β1^t)) · m / (√v / √(1 − β2^t) + eps)
///     codes ← quantise(m, v)                               per block of 256: absmax = max|x|, x/absmax → code
///
/// - Quantisation maps: `dynamicQuantizationMap(signed: true)` for `exp_avg` (256 codes in [−1, 1]),
///   `signed: false` for `exp_avg_sq` ([0, 1]) — bitsandbytes' `create_dynamic_map`, a dynamic-exponent
///   8-bit float. Blocks of `blockSize` = 256 consecutive elements of the flattened parameter.
/// - Rounding to a code is bitsandbytes' CPU rule: x/absmax is placed on a 65 536-point grid over [−1, 1]
///   and the grid point's nearest code is taken (a look-up table), which is the nearest code except
///   within 1.5e-5 of a midpoint between codes.
/// - Parameters with fewer than `min8bitSize` (4096) elements keep float32 state, as in bitsandbytes,
///   updated with its 32-bit formula `p ← p·(1 − lr·wd) − lr·√bc2/bc1 · m / (√v + eps·√bc2)`.
/// - Parameters of any float dtype are updated in float32 and written back (as bitsandbytes does for
///   float16/bfloat16); the update runs on the CPU (other devices are copied).
///
/// Differences from bitsandbytes' CUDA kernel (the one TRL uses on a GPU), all within the 8-bit noise:
/// CUDA rounds with an exact binary search, nudges a first-moment code whose sign flipped back across
/// zero, applies the weight decay after the Adam step, and leaves non-finite gradients out of the state.
///
///     let opt = AdamW8bit(parameters: unet.trainableParameters(), lr: 3e-4, weightDecay: 1e-4)
///     loss.backward(); opt.step(); opt.zeroGrad()
///
/// State keys (see `Optimizer`): `param_count`; per parameter i that has been updated, `state.<i>.step`
/// (int64 scalar) and either the 8-bit state `state.<i>.state1` / `state.<i>.state2` (uint8 codes, the
/// parameter's shape) with `state.<i>.absmax1` / `state.<i>.absmax2` (float32 [blocks]), or the 32-bit
/// state `state.<i>.exp_avg` / `state.<i>.exp_avg_sq` (float32, the parameter's shape) — bitsandbytes'
/// names; the quantisation maps are constants and not saved.
public final class AdamW8bit: Optimizer {
    public let parameters: [Tensor]
    public var learningRate: Double
    public var betas: (Double, Double)
    public var eps: Double
    public var weightDecay: Double
    /// Parameters with fewer elements keep 32-bit state (bitsandbytes' `min_8bit_size`).
    public let min8bitSize: Int
    /// Elements per quantisation block (bitsandbytes' 8-bit blockwise optimizers use 256).
    public static let blockSize = 256

    enum Moments {
        case quantized(state1: [UInt8], state2: [UInt8], absmax1: [Float], absmax2: [Float])
        case full(expAvg: [Float], expAvgSq: [Float])
    }
    struct ParameterState {
        var moments: Moments
        var step: Int
    }
    private(set) var state: [ParameterState?]

    public init(parameters: [Tensor], lr: Double = 1e-3, betas: (Double, Double) = (0.9, 0.999),
                eps: Double = 1e-8, weightDecay: Double = 1e-2, min8bitSize: Int = 4096) {
        precondition(lr >= 0, "AdamW8bit: invalid learning rate \(lr)")
        precondition(eps >= 0, "AdamW8bit: invalid eps \(eps)")
        precondition(betas.0 >= 0 && betas.0 < 1 && betas.1 >= 0 && betas.1 < 1, "AdamW8bit: invalid betas \(betas)")
        precondition(weightDecay >= 0, "AdamW8bit: invalid weight decay \(weightDecay)")
        precondition(parameters.allSatisfy { $0.dtype.isFloatingPoint }, "AdamW8bit: parameters must be floating point")
        checkDistinctParameters(parameters, "AdamW8bit")
        self.parameters = parameters
        self.learningRate = lr
        self.betas = betas
        self.eps = eps
        self.weightDecay = weightDecay
        self.min8bitSize = min8bitSize
        self.state = Array(repeating: nil, count: parameters.count)
    }

    /// This parameter's step count (0 before its first update).
    public func stepCount(of index: Int) -> Int { state[index]?.step ?? 0 }

    /// Whether parameter `index` has (or will get) 8-bit state.
    public func isQuantized(_ index: Int) -> Bool { parameters[index].numel >= min8bitSize }

    /// The dequantised (exp_avg, exp_avg_sq) of parameter `index`, or nil before its first step.
    public func moments(of index: Int) -> (expAvg: [Float], expAvgSq: [Float])? {
        guard let s = state[index] else { return nil }
        switch s.moments {
        case let .full(m, v): return (m, v)
        case let .quantized(c1, c2, a1, a2):
            return (Self.dequantize(c1, absmax: a1, map: Self.signedMap),
                    Self.dequantize(c2, absmax: a2, map: Self.unsignedMap))
        }
    }

    public func step() {
        withNoGrad {
            for (i, p) in parameters.enumerated() {
                guard let grad = p.grad else { continue }
                precondition(grad.shape == p.shape, "AdamW8bit: gradient shape \(grad.shape) for parameter \(p.shape)")
                let n = p.numel
                var s = state[i] ?? ParameterState(moments: n >= min8bitSize
                    ? .quantized(state1: [UInt8](repeating: 0, count: n), state2: [UInt8](repeating: 0, count: n),
                                 absmax1: [Float](repeating: 0, count: Self.blocks(n)),
                                 absmax2: [Float](repeating: 0, count: Self.blocks(n)))
                    : .full(expAvg: [Float](repeating: 0, count: n), expAvgSq: [Float](repeating: 0, count: n)),
                    step: 0)
                s.step += 1
                update(p, grad: grad, state: &s)
                state[i] = s
            }
        }
    }

    static func blocks(_ n: Int) -> Int { (n + blockSize - 1) / blockSize }

    private func update(_ p: Tensor, grad: Tensor, state s: inout ParameterState) {
        let fast = p.device == .cpu && p.dtype == .float32 && p.isContiguous
        let work = fast ? p : p.to(.float32).copied(to: .cpu).contiguousCopy()
        let g = grad.to(.float32).copied(to: .cpu).contiguous()
        let n = p.numel
        let (beta1, beta2) = betas
        let t = Double(s.step)
        let lr = learningRate
        let correction1 = 1 - Foundation.pow(beta1, t)
        let correction2 = (1 - Foundation.pow(beta2, t)).squareRoot()
        let pp = work.pointer(as: Float.self), gp = g.pointer(as: Float.self)
        let b1 = Float(beta1), ob1 = Float(1 - beta1), b2 = Float(beta2), ob2 = Float(1 - beta2)
        let decay = Float(1 - lr * weightDecay), applyDecay = weightDecay > 0

        switch s.moments {
        case .quantized(var c1, var c2, var a1, var a2):
            let c2f = Float(correction2), epsf = Float(eps), stepValue = Float(-lr / correction1)
            var m = Self.dequantize(c1, absmax: a1, map: Self.signedMap)
            var v = Self.dequantize(c2, absmax: a2, map: Self.unsignedMap)
            for j in 0..<n {
                let gj = gp[j]
                let mj = m[j] * b1 + ob1 * gj
                let vj = v[j] * b2 + ob2 * gj * gj
                let denom = vj.squareRoot() / c2f + epsf
                var pj = pp[j]
                if applyDecay { pj = pj * decay }
                pp[j] = pj + stepValue * (mj / denom)
                m[j] = mj
                v[j] = vj
            }
            Self.quantize(m, map: Self.signedLUT, codes: &c1, absmax: &a1)
            Self.quantize(v, map: Self.unsignedLUT, codes: &c2, absmax: &a2)
            s.moments = .quantized(state1: c1, state2: c2, absmax1: a1, absmax2: a2)
        case .full(var m, var v):
            // bitsandbytes' 32-bit path: step_size = -lr·√bc2/bc1, update = m / (√v + eps·√bc2).
            let stepSize = Float(-lr * correction2 / correction1), epsc = Float(eps * correction2)
            for j in 0..<n {
                let gj = gp[j]
                m[j] = m[j] * b1 + ob1 * gj
                v[j] = v[j] * b2 + ob2 * gj * gj
                var pj = pp[j]
                if applyDecay { pj = pj * decay }
                pp[j] = pj + stepSize * (m[j] / (v[j].squareRoot() + epsc))
            }
            s.moments = .full(expAvg: m, expAvgSq: v)
        }
        if !fast { p.assign(work) }
    }

    // MARK: - quantisation

    /// bitsandbytes' `create_dynamic_map(signed, max_exponent_bits: 7, total_bits: 8)`: for exponent
    /// i = 0...6, the midpoints of `torch.linspace(0.1, 1, k + 1)` (float32, k = 2^i signed, 2^(i+1)
    /// unsigned) scaled by 10^(i − 6) (and negated, when signed), plus 0 and 1, sorted. Stored as the
    /// float32 values bitsandbytes 0.50.2 produces (its linspace rounding depends on PyTorch's vectorised
    /// kernel, so the table is copied rather than recomputed; `AdamW8bitTests` checks it).
    public static func dynamicQuantizationMap(signed: Bool) -> [Float] {
        (signed ? signedMapBits : unsignedMapBits).map { Float(bitPattern: $0) }
    }

    static let signedMap = dynamicQuantizationMap(signed: true)
    static let unsignedMap = dynamicQuantizationMap(signed: false)
    static let lutSize = 65_536
    static let signedLUT = quantizationLUT(signedMap)
    static let unsignedLUT = quantizationLUT(unsignedMap)

    /// For each of 65 536 evenly spaced points in [−1, 1], the index of the nearest code (bitsandbytes'
    /// `build_quantize_lut`, float32).
    static func quantizationLUT(_ code: [Float]) -> [UInt8] {
        let mid = (0..<255).map { Float(0.5) * (code[$0] + code[$0 + 1]) }
        var lut = [UInt8](repeating: 0, count: lutSize)
        var index = 0
        for i in 0..<lutSize {
            let value = Float(-1) + (Float(2) * Float(i)) / Float(lutSize - 1)
            while index < 255 && mid[index] < value { index += 1 }
            lut[i] = UInt8(index)
        }
        return lut
    }

    /// Per block: absmax = max |x|; code = LUT[round((clamp(x/absmax, −1, 1) + 1)/2 · 65535)]; an all-zero
    /// block gets absmax 0 and code 0.
    static func quantize(_ values: [Float], map lut: [UInt8], codes: inout [UInt8], absmax: inout [Float]) {
        let n = values.count
        for b in 0..<blocks(n) {
            let lo = b * blockSize, hi = Swift.min(lo + blockSize, n)
            var amax: Float = 0
            for j in lo..<hi { amax = Swift.max(amax, Swift.abs(values[j])) }
            absmax[b] = amax
            if amax == 0 {
                for j in lo..<hi { codes[j] = 0 }
                continue
            }
            let inverse = 1 / amax
            for j in lo..<hi {
                let x = Swift.min(Swift.max(values[j] * inverse, -1), 1)
                let position = (x + 1) * 0.5 * Float(lutSize - 1) + 0.5
                codes[j] = position.isNaN ? 0 : lut[Int(UInt16(position))]  // NaN: undefined in bitsandbytes
            }
        }
    }

    static func dequantize(_ codes: [UInt8], absmax: [Float], map: [Float]) -> [Float] {
        var out = [Float](repeating: 0, count: codes.count)
        for j in 0..<codes.count { out[j] = map[Int(codes[j])] * absmax[j / blockSize] }
        return out
    }

    // MARK: - state dictionary

    public func stateDict() -> [String: Tensor] {
        var result: [String: Tensor] = [OptimizerState.countKey: OptimizerState.scalar(parameters.count)]
        for (i, s) in state.enumerated() {
            guard let s else { continue }
            let shape = parameters[i].shape
            result[OptimizerState.key(i, "step")] = OptimizerState.scalar(s.step)
            switch s.moments {
            case let .quantized(c1, c2, a1, a2):
                result[OptimizerState.key(i, "state1")] = Self.bytesTensor(c1, shape)
                result[OptimizerState.key(i, "state2")] = Self.bytesTensor(c2, shape)
                result[OptimizerState.key(i, "absmax1")] = Tensor(a1, shape: [a1.count])
                result[OptimizerState.key(i, "absmax2")] = Tensor(a2, shape: [a2.count])
            case let .full(m, v):
                result[OptimizerState.key(i, "exp_avg")] = Tensor(m, shape: shape)
                result[OptimizerState.key(i, "exp_avg_sq")] = Tensor(v, shape: shape)
            }
        }
        return result
    }

    static func bytesTensor(_ bytes: [UInt8], _ shape: [Int]) -> Tensor {
        let t = Tensor(zeros: shape, dtype: .uint8)
        if !bytes.isEmpty { t.pointer(as: UInt8.self).update(from: bytes, count: bytes.count) }
        return t
    }

    public func loadStateDict(_ dict: [String: Tensor]) throws {
        guard let count = dict[OptimizerState.countKey] else { throw OptimizerStateError.missingKey(OptimizerState.countKey) }
        guard count.numel == 1 else {
            throw OptimizerStateError.invalidValue(key: OptimizerState.countKey, reason: "must be a scalar")
        }
        if Int(count.item()) != parameters.count {
            throw OptimizerStateError.parameterCountMismatch(expected: parameters.count, found: Int(count.item()))
        }
        let quantNames = ["state1", "state2", "absmax1", "absmax2"], fullNames = ["exp_avg", "exp_avg_sq"]
        var indices = Set<Int>()
        for key in dict.keys.sorted() where key != OptimizerState.countKey {
            let parts = key.split(separator: ".", maxSplits: 2).map(String.init)
            guard parts.count == 3, parts[0] == "state", let i = Int(parts[1]), i >= 0, i < parameters.count else {
                throw OptimizerStateError.unexpectedKey(key)
            }
            let expected = isQuantized(i) ? quantNames : fullNames
            guard parts[2] == "step" || expected.contains(parts[2]) else { throw OptimizerStateError.unexpectedKey(key) }
            indices.insert(i)
        }
        var loaded = [ParameterState?](repeating: nil, count: parameters.count)
        for i in indices.sorted() {
            func tensor(_ name: String, _ shape: [Int], _ dtype: DType) throws -> Tensor {
                let k = OptimizerState.key(i, name)
                guard let t = dict[k] else { throw OptimizerStateError.missingKey(k) }
                if t.shape != shape { throw OptimizerStateError.shapeMismatch(key: k, expected: shape, found: t.shape) }
                if t.dtype != dtype { throw OptimizerStateError.invalidValue(key: k, reason: "has dtype \(t.dtype), expected \(dtype)") }
                return t.copied(to: .cpu).contiguous()
            }
            let stepKey = OptimizerState.key(i, "step")
            guard let stepTensor = dict[stepKey] else { throw OptimizerStateError.missingKey(stepKey) }
            guard stepTensor.numel == 1 else { throw OptimizerStateError.shapeMismatch(key: stepKey, expected: [], found: stepTensor.shape) }
            let stepValue = stepTensor.item()
            guard stepValue >= 1, stepValue == stepValue.rounded() else {
                throw OptimizerStateError.invalidValue(key: stepKey, reason: "must be a positive integer, got \(stepValue)")
            }
            let shape = parameters[i].shape, n = parameters[i].numel
            let moments: Moments
            if isQuantized(i) {
                let c1 = try tensor("state1", shape, .uint8), c2 = try tensor("state2", shape, .uint8)
                let a1 = try tensor("absmax1", [Self.blocks(n)], .float32), a2 = try tensor("absmax2", [Self.blocks(n)], .float32)
                moments = .quantized(state1: Array(UnsafeBufferPointer(start: c1.pointer(as: UInt8.self), count: n)),
                                     state2: Array(UnsafeBufferPointer(start: c2.pointer(as: UInt8.self), count: n)),
                                     absmax1: a1.toFloatArray(), absmax2: a2.toFloatArray())
            } else {
                moments = .full(expAvg: try tensor("exp_avg", shape, .float32).toFloatArray(),
                                expAvgSq: try tensor("exp_avg_sq", shape, .float32).toFloatArray())
            }
            loaded[i] = ParameterState(moments: moments, step: Int(stepValue))
        }
        state = loaded
    }
}

extension AdamW8bit {
    // Generated with bitsandbytes 0.50.2: F.create_dynamic_map(signed=...).numpy().view(np.uint32).
    static let signedMapBits: [UInt32] = [
        0xbf7e3333, 0xbf7a999a, 0xbf770000, 0xbf736666, 0xbf6fcccd, 0xbf6c3333, 0xbf68999a, 0xbf650000,
        0xbf616666, 0xbf5dcccd, 0xbf5a3333, 0xbf56999a, 0xbf530000, 0xbf4f6666, 0xbf4bcccd, 0xbf483333,
        0xbf44999a, 0xbf410000, 0xbf3d6666, 0xbf39cccd, 0xbf363334, 0xbf32999a, 0xbf2f0000, 0xbf2b6666,
        0xbf27cccd, 0xbf243334, 0xbf20999a, 0xbf1d0000, 0xbf196666, 0xbf15cccd, 0xbf123334, 0xbf0e999a,
        0xbf0b0000, 0xbf076666, 0xbf03cccc, 0xbf003333, 0xbef93332, 0xbef20000, 0xbeeacccc, 0xbee3999a,
        0xbedc6666, 0xbed53333, 0xbece0000, 0xbec6cccc, 0xbebf999a, 0xbeb86666, 0xbeb13333, 0xbeaa0000,
        0xbea2cccc, 0xbe9b999a, 0xbe946666, 0xbe8d3334, 0xbe860000, 0xbe7d9999, 0xbe6f3333, 0xbe60cccd,
        0xbe526666, 0xbe440000, 0xbe35999a, 0xbe273333, 0xbe18cccd, 0xbe0a6666, 0xbdf80000, 0xbddb3334,
        0xbdc9eb85, 0xbdc428f7, 0xbdbe6667, 0xbdb8a3d7, 0xbdb2e148, 0xbdad1eb8, 0xbda75c2a, 0xbda1999a,
        0xbd9bd70a, 0xbd96147b, 0xbd9051eb, 0xbd8a8f5d, 0xbd84cccd, 0xbd7e147b, 0xbd728f5d, 0xbd670a3d,
        0xbd5b851f, 0xbd500000, 0xbd447ae1, 0xbd38f5c3, 0xbd2d70a3, 0xbd21eb85, 0xbd166667, 0xbd0ae148,
        0xbcfeb852, 0xbce7ae15, 0xbcd0a3d7, 0xbcb9999a, 0xbca28f5d, 0xbc8b851f, 0xbc68f5c3, 0xbc3ae148,
        0xbc1f3b64, 0xbc160418, 0xbc0ccccd, 0xbc039581, 0xbbf4bc6a, 0xbbe24dd3, 0xbbcfdf3b, 0xbbbd70a4,
        0xbbab020d, 0xbb989374, 0xbb8624dd, 0xbb676c8a, 0xbb428f5c, 0xbb1db22d, 0xbaf1a9fc, 0xbaa7ef9d,
        0xba7765ff, 0xba59e83e, 0xba3c6a80, 0xba1eecc1, 0xba016f01, 0xb9c7e283, 0xb98ce705, 0xb923d70b,
        0xb8ba1f4b, 0xb88aefb3, 0xb8378034, 0xb7b24206, 0xb70205ff, 0xb65a1a94, 0xb513a3b7, 0x00000000,
        0x3513a3b7, 0x365a1a94, 0x370205ff, 0x37b24206, 0x38378034, 0x388aefb3, 0x38ba1f4b, 0x3923d70b,
        0x398ce705, 0x39c7e283, 0x3a016f01, 0x3a1eecc1, 0x3a3c6a80, 0x3a59e83e, 0x3a7765ff, 0x3aa7ef9d,
        0x3af1a9fc, 0x3b1db22d, 0x3b428f5c, 0x3b676c8a, 0x3b8624dd, 0x3b989374, 0x3bab020d, 0x3bbd70a4,
        0x3bcfdf3b, 0x3be24dd3, 0x3bf4bc6a, 0x3c039581, 0x3c0ccccd, 0x3c160418, 0x3c1f3b64, 0x3c3ae148,
        0x3c68f5c3, 0x3c8b851f, 0x3ca28f5d, 0x3cb9999a, 0x3cd0a3d7, 0x3ce7ae15, 0x3cfeb852, 0x3d0ae148,
        0x3d166667, 0x3d21eb85, 0x3d2d70a3, 0x3d38f5c3, 0x3d447ae1, 0x3d500000, 0x3d5b851f, 0x3d670a3d,
        0x3d728f5d, 0x3d7e147b, 0x3d84cccd, 0x3d8a8f5d, 0x3d9051eb, 0x3d96147b, 0x3d9bd70a, 0x3da1999a,
        0x3da75c2a, 0x3dad1eb8, 0x3db2e148, 0x3db8a3d7, 0x3dbe6667, 0x3dc428f7, 0x3dc9eb85, 0x3ddb3334,
        0x3df80000, 0x3e0a6666, 0x3e18cccd, 0x3e273333, 0x3e35999a, 0x3e440000, 0x3e526666, 0x3e60cccd,
        0x3e6f3333, 0x3e7d9999, 0x3e860000, 0x3e8d3334, 0x3e946666, 0x3e9b999a, 0x3ea2cccc, 0x3eaa0000,
        0x3eb13333, 0x3eb86666, 0x3ebf999a, 0x3ec6cccc, 0x3ece0000, 0x3ed53333, 0x3edc6666, 0x3ee3999a,
        0x3eeacccc, 0x3ef20000, 0x3ef93332, 0x3f003333, 0x3f03cccc, 0x3f076666, 0x3f0b0000, 0x3f0e999a,
        0x3f123334, 0x3f15cccd, 0x3f196666, 0x3f1d0000, 0x3f20999a, 0x3f243334, 0x3f27cccd, 0x3f2b6666,
        0x3f2f0000, 0x3f32999a, 0x3f363334, 0x3f39cccd, 0x3f3d6666, 0x3f410000, 0x3f44999a, 0x3f483333,
        0x3f4bcccd, 0x3f4f6666, 0x3f530000, 0x3f56999a, 0x3f5a3333, 0x3f5dcccd, 0x3f616666, 0x3f650000,
        0x3f68999a, 0x3f6c3333, 0x3f6fcccd, 0x3f736666, 0x3f770000, 0x3f7a999a, 0x3f7e3333, 0x3f800000,
    ]
    static let unsignedMapBits: [UInt32] = [
        0x00000000, 0x34ae7baa, 0x35500998, 0x360e9b38, 0x3692ccf6, 0x36de4c51, 0x3714e5d5, 0x3783126e,
        0x37e171a0, 0x381fe868, 0x384f1800, 0x387e479a, 0x3896bb99, 0x38ae5364, 0x38c5eb31, 0x3906594b,
        0x394154ca, 0x397c5049, 0x399ba5e4, 0x39b923a2, 0x39d6a163, 0x39f41f22, 0x3a08ce71, 0x3a178d50,
        0x3a264c30, 0x3a350b10, 0x3a43c9ef, 0x3a5288d0, 0x3a6147af, 0x3a70068e, 0x3a7ec56e, 0x3a958106,
        0x3aba5e35, 0x3adf3b64, 0x3b020c4a, 0x3b147ae1, 0x3b26e978, 0x3b395810, 0x3b4bc6a7, 0x3b5e3540,
        0x3b70a3d7, 0x3b818937, 0x3b8ac082, 0x3b93f7cf, 0x3b9d2f1a, 0x3ba66666, 0x3baf9db2, 0x3bb8d4fd,
        0x3bc20c4a, 0x3bcb4395, 0x3bd47ae1, 0x3bddb22e, 0x3be6e978, 0x3bf020c5, 0x3bf9580f, 0x3c0147ae,
        0x3c05e354, 0x3c0a7ef9, 0x3c0f1aa0, 0x3c13b645, 0x3c1851eb, 0x3c1ced92, 0x3c218937, 0x3c2f5c2a,
        0x3c466667, 0x3c5d70a3, 0x3c747ae2, 0x3c85c28f, 0x3c9147af, 0x3c9ccccd, 0x3ca851eb, 0x3cb3d70b,
        0x3cbf5c29, 0x3ccae147, 0x3cd66667, 0x3ce1eb87, 0x3ced70a3, 0x3cf8f5c3, 0x3d023d70, 0x3d080000,
        0x3d0dc28f, 0x3d13851f, 0x3d1947af, 0x3d1f0a3d, 0x3d24cccd, 0x3d2a8f5c, 0x3d3051eb, 0x3d36147b,
        0x3d3bd70a, 0x3d41999a, 0x3d475c28, 0x3d4d1eb8, 0x3d52e147, 0x3d58a3d7, 0x3d5e6667, 0x3d6428f7,
        0x3d69eb87, 0x3d6fae15, 0x3d7570a3, 0x3d7b3333, 0x3d807ae2, 0x3d835c2a, 0x3d863d71, 0x3d891eb8,
        0x3d8c0000, 0x3d8ee148, 0x3d91c290, 0x3d94a3d7, 0x3d97851f, 0x3d9a6667, 0x3d9d47af, 0x3da028f6,
        0x3da30a3e, 0x3da5eb85, 0x3da8cccd, 0x3dabae15, 0x3dae8f5c, 0x3db170a4, 0x3db451eb, 0x3db73333,
        0x3dba147b, 0x3dbcf5c3, 0x3dbfd70b, 0x3dc2b852, 0x3dc5999a, 0x3dc87ae2, 0x3dcb5c29, 0x3dd40000,
        0x3de26666, 0x3df0cccd, 0x3dff3333, 0x3e06cccc, 0x3e0e0000, 0x3e153334, 0x3e1c6666, 0x3e23999a,
        0x3e2acccc, 0x3e320000, 0x3e393334, 0x3e406666, 0x3e47999a, 0x3e4ecccc, 0x3e560000, 0x3e5d3334,
        0x3e646666, 0x3e6b999a, 0x3e72cccc, 0x3e7a0000, 0x3e809999, 0x3e843333, 0x3e87cccd, 0x3e8b6666,
        0x3e8f0000, 0x3e92999a, 0x3e963333, 0x3e99cccc, 0x3e9d6666, 0x3ea10000, 0x3ea4999a, 0x3ea83333,
        0x3eabcccc, 0x3eaf6666, 0x3eb30000, 0x3eb6999a, 0x3eba3333, 0x3ebdcccc, 0x3ec16666, 0x3ec50000,
        0x3ec8999a, 0x3ecc3333, 0x3ecfcccc, 0x3ed36666, 0x3ed70000, 0x3eda999a, 0x3ede3333, 0x3ee1cccc,
        0x3ee56666, 0x3ee90000, 0x3eec999a, 0x3ef03333, 0x3ef3cccc, 0x3ef76666, 0x3efb0000, 0x3efe9999,
        0x3f01199a, 0x3f02e666, 0x3f04b333, 0x3f068000, 0x3f084ccc, 0x3f0a199a, 0x3f0be666, 0x3f0db334,
        0x3f0f8000, 0x3f114ccd, 0x3f13199a, 0x3f14e666, 0x3f16b334, 0x3f188000, 0x3f1a4ccd, 0x3f1c199a,
        0x3f1de666, 0x3f1fb334, 0x3f218000, 0x3f234ccd, 0x3f25199a, 0x3f26e666, 0x3f28b334, 0x3f2a8000,
        0x3f2c4ccd, 0x3f2e199a, 0x3f2fe666, 0x3f31b334, 0x3f338000, 0x3f354ccd, 0x3f37199a, 0x3f38e666,
        0x3f3ab334, 0x3f3c8000, 0x3f3e4ccd, 0x3f40199a, 0x3f41e666, 0x3f43b334, 0x3f458000, 0x3f474ccc,
        0x3f49199a, 0x3f4ae666, 0x3f4cb334, 0x3f4e8000, 0x3f504ccc, 0x3f52199a, 0x3f53e666, 0x3f55b334,
        0x3f578000, 0x3f594ccc, 0x3f5b199a, 0x3f5ce666, 0x3f5eb334, 0x3f608000, 0x3f624ccc, 0x3f64199a,
        0x3f65e666, 0x3f67b334, 0x3f698000, 0x3f6b4ccc, 0x3f6d199a, 0x3f6ee666, 0x3f70b334, 0x3f728000,
        0x3f744ccc, 0x3f76199a, 0x3f77e666, 0x3f79b334, 0x3f7b8000, 0x3f7d4ccc, 0x3f7f199a, 0x3f800000,
    ]
}
