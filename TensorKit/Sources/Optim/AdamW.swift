import Foundation

/// AdamW with `torch.optim.AdamW` semantics (amsgrad = false, maximize = false), following the
/// single-tensor implementation operation by operation:
///
///     p   ← p · (1 − lr·wd)                      decoupled weight decay, first
///     m   ← lerp(m, g, 1 − β1)                   = β1·m + (1 − β1)·g
///     v   ← v·β2 + (1 − β2)·g·g
///     bc1 = 1 − β1^t,  bc2 = 1 − β2^t            t counts this parameter's steps (from 1)
///     p   ← p − (lr / bc1) · m / (√v / √bc2 + eps)
///
/// Scalars are formed in Double and applied in the parameter's dtype, as PyTorch does. Parameters
/// without a gradient are skipped (their step count does not advance). On the CPU the update is
/// one fused, multi-threaded loop over the raw buffers (float32/float64, contiguous); other
/// devices or layouts fall back to tensor operations.
///
///     let opt = AdamW(parameters: model.trainableParameters(), lr: 1e-4, betas: (0.9, 0.999),
///                     eps: 1e-8, weightDecay: 1e-2)
///
/// State keys: `state.<i>.exp_avg`, `state.<i>.exp_avg_sq` (parameter dtype and shape),
/// `state.<i>.step` (int64 scalar), plus `param_count` (see `Optimizer`).
public final class AdamW: Optimizer {
    public let parameters: [Tensor]
    public var learningRate: Double
    public var betas: (Double, Double)
    public var eps: Double
    public var weightDecay: Double

    struct ParameterState {
        var expAvg: Tensor
        var expAvgSq: Tensor
        var step: Int
    }
    private(set) var state: [ParameterState?]

    /// Forces the tensor-op fallback on the CPU too (tests compare it with the fused loop).
    var forceTensorPath = false

    public init(parameters: [Tensor], lr: Double = 1e-3, betas: (Double, Double) = (0.9, 0.999),
                eps: Double = 1e-8, weightDecay: Double = 1e-2) {
        precondition(lr >= 0, "AdamW: invalid learning rate \(lr)")
        precondition(eps >= 0, "AdamW: invalid eps \(eps)")
        precondition(betas.0 >= 0 && betas.0 < 1 && betas.1 >= 0 && betas.1 < 1, "AdamW: invalid betas \(betas)")
        precondition(weightDecay >= 0, "AdamW: invalid weight decay \(weightDecay)")
        checkDistinctParameters(parameters, "AdamW")
        self.parameters = parameters
        self.learningRate = lr
        self.betas = betas
        self.eps = eps
        self.weightDecay = weightDecay
        self.state = Array(repeating: nil, count: parameters.count)
    }

    /// This parameter's step count (0 before its first update).
    public func stepCount(of index: Int) -> Int { state[index]?.step ?? 0 }

    public func step() {
        withNoGrad {
            for (i, p) in parameters.enumerated() {
                guard let grad = p.grad else { continue }
                precondition(grad.shape == p.shape, "AdamW: gradient shape \(grad.shape) for parameter \(p.shape)")
                var s = state[i] ?? ParameterState(expAvg: Tensor.zeros(like: p), expAvgSq: Tensor.zeros(like: p), step: 0)
                s.step += 1
                update(p, grad: grad, state: s)
                state[i] = s
            }
        }
    }

    private func update(_ p: Tensor, grad: Tensor, state s: ParameterState) {
        let lr = learningRate, (beta1, beta2) = betas
        let t = Double(s.step)
        let decay = 1 - lr * weightDecay
        let bias1 = 1 - Foundation.pow(beta1, t)
        let bias2 = 1 - Foundation.pow(beta2, t)
        let stepSize = lr / bias1
        let bias2Sqrt = bias2.squareRoot()
        let g = grad.dtype == p.dtype && grad.device == p.device ? grad : grad.to(p.dtype).to(p.device)

        if !forceTensorPath, p.isFusedUpdatable, s.expAvg.isFusedUpdatable, s.expAvgSq.isFusedUpdatable {
            let gc = g.isContiguous ? g : g.contiguousCopy()
            let k = AdamWScalars(decay: decay, applyDecay: weightDecay != 0, weight: 1 - beta1, beta2: beta2,
                                 oneMinusBeta2: 1 - beta2, bias2Sqrt: bias2Sqrt, eps: eps, negStepSize: -stepSize)
            if p.dtype == .float32 {
                adamwFused(p.pointer(as: Float.self), gc.pointer(as: Float.self), s.expAvg.pointer(as: Float.self),
                           s.expAvgSq.pointer(as: Float.self), p.numel, k)
            } else {
                adamwFused(p.pointer(as: Double.self), gc.pointer(as: Double.self), s.expAvg.pointer(as: Double.self),
                           s.expAvgSq.pointer(as: Double.self), p.numel, k)
            }
            return
        }

        // Any device: the same sequence as tensor operations.
        if weightDecay != 0 { p.assign(p * decay) }
        let w = 1 - beta1
        let m = s.expAvg
        m.assign(w < 0.5 ? m + (g - m) * w : g - (g - m) * (1 - w))
        let v = s.expAvgSq
        v.assign(v * beta2 + (g * (1 - beta2)) * g)
        let denom = v.sqrt() / bias2Sqrt + eps
        p.assign(p + (m * -stepSize) / denom)
    }

    public func stateDict() -> [String: Tensor] {
        var result: [String: Tensor] = [OptimizerState.countKey: OptimizerState.scalar(parameters.count)]
        for (i, s) in state.enumerated() {
            guard let s else { continue }
            result[OptimizerState.key(i, "exp_avg")] = s.expAvg
            result[OptimizerState.key(i, "exp_avg_sq")] = s.expAvgSq
            result[OptimizerState.key(i, "step")] = OptimizerState.scalar(s.step)
        }
        return result
    }

    public func loadStateDict(_ dict: [String: Tensor]) throws {
        let indices = try OptimizerState.validate(dict, parameters: parameters,
                                                  tensorNames: ["exp_avg", "exp_avg_sq"], scalarNames: ["step"])
        var loaded = [ParameterState?](repeating: nil, count: parameters.count)
        for i in indices {
            let stepKey = OptimizerState.key(i, "step")
            let stepValue = dict[stepKey]!.item()
            guard stepValue >= 1, stepValue == stepValue.rounded() else {
                throw OptimizerStateError.invalidValue(key: stepKey, reason: "must be a positive integer, got \(stepValue)")
            }
            let p = parameters[i]
            loaded[i] = ParameterState(expAvg: OptimizerState.copy(dict[OptimizerState.key(i, "exp_avg")]!, like: p),
                                       expAvgSq: OptimizerState.copy(dict[OptimizerState.key(i, "exp_avg_sq")]!, like: p),
                                       step: Int(stepValue))
        }
        state = loaded
    }
}

/// Per-step constants of the fused AdamW loop (Double; converted to the element type inside).
struct AdamWScalars {
    var decay: Double
    var applyDecay: Bool
    /// Lerp weight 1 − β1.
    var weight: Double
    var beta2: Double
    var oneMinusBeta2: Double
    var bias2Sqrt: Double
    var eps: Double
    var negStepSize: Double
}

/// One AdamW step over `count` contiguous elements, in PyTorch's operation order.
func adamwFused<T: CPUFloat>(_ p: UnsafeMutablePointer<T>, _ g: UnsafeMutablePointer<T>,
                             _ m: UnsafeMutablePointer<T>, _ v: UnsafeMutablePointer<T>, _ count: Int,
                             _ k: AdamWScalars) {
    let decay = T(k.decay), weight = T(k.weight), oneMinusWeight = 1 - weight
    let beta2 = T(k.beta2), oneMinusBeta2 = T(k.oneMinusBeta2), bias2Sqrt = T(k.bias2Sqrt)
    let eps = T(k.eps), negStep = T(k.negStepSize)
    let applyDecay = k.applyDecay, lowWeight = k.weight < 0.5
    parallelFor(count, minimumPerChunk: 65_536) { range in
        var i = range.lowerBound
        // 8 lanes at a time (same per-element arithmetic), then the tail.
        if lowWeight {
            typealias V = SIMD8<T>
            let vDecay = V(repeating: applyDecay ? decay : 1), vWeight = V(repeating: weight)
            let vBeta2 = V(repeating: beta2), vOne2 = V(repeating: oneMinusBeta2)
            let vBias = V(repeating: bias2Sqrt), vEps = V(repeating: eps), vNeg = V(repeating: negStep)
            while i + 8 <= range.upperBound {
                let rp = UnsafeMutableRawPointer(p + i), rg = UnsafeMutableRawPointer(g + i)
                let rm = UnsafeMutableRawPointer(m + i), rv = UnsafeMutableRawPointer(v + i)
                var pi = rp.loadUnaligned(as: V.self)
                let gi = rg.loadUnaligned(as: V.self)
                if applyDecay { pi = pi * vDecay }
                var mi = rm.loadUnaligned(as: V.self)
                mi = mi + vWeight * (gi - mi)
                var vi = rv.loadUnaligned(as: V.self) * vBeta2
                vi = vi + vOne2 * gi * gi
                let denom = vi.squareRoot() / vBias + vEps
                pi = pi + vNeg * mi / denom
                rp.storeBytes(of: pi, as: V.self)
                rm.storeBytes(of: mi, as: V.self)
                rv.storeBytes(of: vi, as: V.self)
                i += 8
            }
        }
        while i < range.upperBound {
            var pi = p[i]
            let gi = g[i]
            if applyDecay { pi = pi * decay }
            var mi = m[i]
            // torch.lerp's two-sided formula, chosen by the weight.
            mi = lowWeight ? mi + weight * (gi - mi) : gi - (gi - mi) * oneMinusWeight
            var vi = v[i] * beta2
            vi = vi + oneMinusBeta2 * gi * gi
            let denom = vi.squareRoot() / bias2Sqrt + eps
            pi = pi + negStep * mi / denom
            p[i] = pi
            m[i] = mi
            v[i] = vi
            i += 1
        }
    }
}
