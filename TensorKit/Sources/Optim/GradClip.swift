import Foundation

/// Scales the gradients of `parameters` in place so their joint norm is at most `maxNorm`, as
/// `torch.nn.utils.clip_grad_norm_` does: total = ‖(‖g₁‖, ‖g₂‖, …)‖ in `normType` (2 by default,
/// `.infinity` for the max-abs norm), coef = maxNorm / (total + 1e-6), and every gradient is
/// multiplied by coef when coef < 1 (a NaN/inf total propagates into the gradients, like PyTorch
/// with `error_if_nonfinite=False`). Parameters without a gradient are ignored.
/// Returns the total norm before clipping (norms are accumulated in Double).
@discardableResult
public func clipGradNorm(_ parameters: [Tensor], maxNorm: Double, normType: Double = 2) -> Double {
    precondition(normType > 0, "clipGradNorm: normType must be positive, got \(normType)")
    let grads = parameters.compactMap { $0.grad }
    if grads.isEmpty { return 0 }
    let norms = grads.map { gradNorm($0, normType) }
    let total: Double
    if normType == .infinity {
        total = norms.reduce(0) { Swift.max($0, $1) }
    } else {
        total = Foundation.pow(norms.reduce(0) { $0 + Foundation.pow($1, normType) }, 1 / normType)
    }
    let coef = maxNorm / (total + 1e-6)
    // `!(coef >= 1)` also catches NaN, which PyTorch's clamp(max: 1) keeps.
    if !(coef >= 1) {
        withNoGrad {
            for g in grads { scaleInPlace(g, by: coef) }
        }
    }
    return total
}

/// The `p`-norm of one tensor's elements.
private func gradNorm(_ g: Tensor, _ p: Double) -> Double {
    func run<T: CPUFloat>(_ ptr: UnsafeMutablePointer<T>) -> Double {
        let n = g.numel
        if p == .infinity {
            var m = 0.0
            for i in 0..<n { let a = Swift.abs(Double(ptr[i])); if a > m || a.isNaN { m = a } }
            return m
        }
        var s = 0.0
        if p == 2 {
            for i in 0..<n { let x = Double(ptr[i]); s += x * x }
            return s.squareRoot()
        }
        for i in 0..<n { s += Foundation.pow(Swift.abs(Double(ptr[i])), p) }
        return Foundation.pow(s, 1 / p)
    }
    if g.isFusedUpdatable {
        return g.dtype == .float32 ? run(g.pointer(as: Float.self)) : run(g.pointer(as: Double.self))
    }
    // Other devices or layouts: tensor operations, one scalar read back.
    return withNoGrad {
        let a = g.abs()
        if p == .infinity { return a.max().item() }
        return Foundation.pow(a.pow(p).sum().item(), 1 / p)
    }
}

private func scaleInPlace(_ g: Tensor, by factor: Double) {
    if g.isFusedUpdatable {
        let n = g.numel
        if g.dtype == .float32 {
            let ptr = g.pointer(as: Float.self), f = Float(factor)
            for i in 0..<n { ptr[i] *= f }
        } else {
            let ptr = g.pointer(as: Double.self)
            for i in 0..<n { ptr[i] *= factor }
        }
    } else {
        g.assign(g * factor)
    }
}
