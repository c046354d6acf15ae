/// Stochastic gradient descent with `torch.optim.SGD` semantics (maximize = false):
///
///     d ← g + wd·p                                   (when weight decay ≠ 0)
///     b ← d on the first step, else b·momentum + (1 − dampening)·d      (when momentum ≠ 0)
///     d ← d + momentum·b  (nesterov)   or   d ← b
///     p ← p − lr·d
///
///     let opt = SGD(parameters: params, lr: 0.1, momentum: 0.9, dampening: 0, weightDecay: 0, nesterov: false)
///
/// State keys: `state.<i>.momentum_buffer` (only with momentum), plus `param_count` (see `Optimizer`).
public final class SGD: Optimizer {
    public let parameters: [Tensor]
    public var learningRate: Double
    public var momentum: Double
    public var dampening: Double
    public var weightDecay: Double
    public let nesterov: Bool

    private(set) var momentumBuffers: [Tensor?]

    /// Forces the tensor-op fallback on the CPU too (tests compare it with the fused loop).
    var forceTensorPath = false

    public init(parameters: [Tensor], lr: Double = 1e-3, momentum: Double = 0, dampening: Double = 0,
                weightDecay: Double = 0, nesterov: Bool = false) {
        precondition(lr >= 0, "SGD: invalid learning rate \(lr)")
        precondition(momentum >= 0, "SGD: invalid momentum \(momentum)")
        precondition(weightDecay >= 0, "SGD: invalid weight decay \(weightDecay)")
        precondition(!nesterov || (momentum > 0 && dampening == 0), "SGD: nesterov needs momentum > 0 and zero dampening")
        checkDistinctParameters(parameters, "SGD")
        self.parameters = parameters
        self.learningRate = lr
        self.momentum = momentum
        self.dampening = dampening
        self.weightDecay = weightDecay
        self.nesterov = nesterov
        self.momentumBuffers = Array(repeating: nil, count: parameters.count)
    }

    public func step() {
        withNoGrad {
            for (i, p) in parameters.enumerated() {
                guard let grad = p.grad else { continue }
                precondition(grad.shape == p.shape, "SGD: gradient shape \(grad.shape) for parameter \(p.shape)")
                let g = grad.dtype == p.dtype && grad.device == p.device ? grad : grad.to(p.dtype).to(p.device)
                let first = momentum != 0 && momentumBuffers[i] == nil
                if first { momentumBuffers[i] = Tensor.zeros(like: p) }
                update(p, grad: g, buffer: momentumBuffers[i], first: first)
            }
        }
    }

    private func update(_ p: Tensor, grad g: Tensor, buffer: Tensor?, first: Bool) {
        if !forceTensorPath, p.isFusedUpdatable, buffer?.isFusedUpdatable ?? true {
            let gc = g.isContiguous ? g : g.contiguousCopy()
            let k = SGDScalars(lr: learningRate, momentum: momentum, dampening: dampening, weightDecay: weightDecay,
                               nesterov: nesterov, firstStep: first)
            if p.dtype == .float32 {
                sgdFused(p.pointer(as: Float.self), gc.pointer(as: Float.self), buffer?.pointer(as: Float.self), p.numel, k)
            } else {
                sgdFused(p.pointer(as: Double.self), gc.pointer(as: Double.self), buffer?.pointer(as: Double.self), p.numel, k)
            }
            return
        }
        var d = weightDecay != 0 ? g + p * weightDecay : g
        if let buffer {
            buffer.assign(first ? d : buffer * momentum + d * (1 - dampening))
            d = nesterov ? d + buffer * momentum : buffer
        }
        p.assign(p + d * -learningRate)
    }

    public func stateDict() -> [String: Tensor] {
        var result: [String: Tensor] = [OptimizerState.countKey: OptimizerState.scalar(parameters.count)]
        for (i, b) in momentumBuffers.enumerated() {
            if let b { result[OptimizerState.key(i, "momentum_buffer")] = b }
        }
        return result
    }

    public func loadStateDict(_ dict: [String: Tensor]) throws {
        let indices = try OptimizerState.validate(dict, parameters: parameters,
                                                  tensorNames: ["momentum_buffer"], scalarNames: [])
        var loaded = [Tensor?](repeating: nil, count: parameters.count)
        for i in indices {
            loaded[i] = OptimizerState.copy(dict[OptimizerState.key(i, "momentum_buffer")]!, like: parameters[i])
        }
        momentumBuffers = loaded
    }
}

struct SGDScalars {
    var lr: Double
    var momentum: Double
    var dampening: Double
    var weightDecay: Double
    var nesterov: Bool
    var firstStep: Bool
}

/// One SGD step over `count` contiguous elements; `b` is the momentum buffer (nil without momentum).
func sgdFused<T: CPUFloat>(_ p: UnsafeMutablePointer<T>, _ g: UnsafeMutablePointer<T>, _ b: UnsafeMutablePointer<T>?,
                           _ count: Int, _ k: SGDScalars) {
    let wd = T(k.weightDecay), mom = T(k.momentum), keep = T(1 - k.dampening), negLR = T(-k.lr)
    let applyDecay = k.weightDecay != 0, nesterov = k.nesterov, first = k.firstStep
    parallelFor(count, minimumPerChunk: 65_536) { range in
        for i in range {
            let pi = p[i]
            var d = g[i]
            if applyDecay { d = d + wd * pi }
            if let b {
                let bi = first ? d : b[i] * mom + keep * d
                b[i] = bi
                d = nesterov ? d + mom * bi : bi
            }
            p[i] = pi + negLR * d
        }
    }
}
