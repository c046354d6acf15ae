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
    let norms = gradNorms(grads, normType)
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

/// The `p`-norm of each gradient. Contiguous CPU gradients are summed here; the others as tensor
/// operations on their device, whose results are read back in one transfer per device and dtype (a read
/// per gradient made the host wait for the device once per parameter).
private func gradNorms(_ grads: [Tensor], _ p: Double) -> [Double] {
    var norms = [Double](repeating: 0, count: grads.count)
    var pending: [(device: Device, dtype: DType, items: [(index: Int, partial: Tensor)])] = []
    for (i, g) in grads.enumerated() {
        if g.isFusedUpdatable {
            norms[i] = gradNorm(g, p)
            continue
        }
        // max |x| for the inf-norm, else Σ|x|^p, in the gradient's dtype.
        let partial = withNoGrad { () -> Tensor in
            let a = g.abs()
            return p == .infinity ? a.max() : a.pow(p).sum()
        }
        if let k = pending.firstIndex(where: { $0.device == partial.device && $0.dtype == partial.dtype }) {
            pending[k].items.append((i, partial))
        } else {
            pending.append((partial.device, partial.dtype, [(i, partial)]))
        }
    }
    for group in pending {
        let values = withNoGrad { Tensor.stack(group.items.map(\.partial), axis: 0).toArray() }
        for (item, value) in zip(group.items, values) {
            norms[item.index] = p == .infinity ? value : Foundation.pow(value, 1 / p)
        }
    }
    return norms
}

/// The `p`-norm of a contiguous CPU tensor's elements.
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
    return g.dtype == .float32 ? run(g.pointer(as: Float.self)) : run(g.pointer(as: Double.self))
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
