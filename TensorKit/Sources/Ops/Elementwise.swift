/// Broadcast shape of two shapes (NumPy rules), or nil when they do not broadcast.
public func broadcastShape(_ a: [Int], _ b: [Int]) -> [Int]? {
    let n = max(a.count, b.count)
    var out = [Int](repeating: 1, count: n)
    for i in 0..<n {
        let x = i < n - a.count ? 1 : a[i - (n - a.count)]
        let y = i < n - b.count ? 1 : b[i - (n - b.count)]
        if x == y || y == 1 { out[i] = x } else if x == 1 { out[i] = y } else { return nil }
    }
    return out
}

extension Tensor {
    // MARK: unary

    func unaryOp(_ op: UnaryOp, _ name: String) -> Tensor {
        let b = backend(for: device)
        let out = b.unary(op, self)
        guard GradMode.isEnabled && requiresGrad else { return out }
        // Keep alive only what the derivative reads (the graph holds these until backward).
        switch op {
        case .neg: return Tensor.record(out, name, inputs: [self]) { g in [-g] }
        case .addScalar: return Tensor.record(out, name, inputs: [self]) { g in [g] }
        case .mulScalar(let s): return Tensor.record(out, name, inputs: [self]) { g in [g * s] }
        default: break
        }
        let reads = op.derivativeReads
        let input = reads.input ? self.detach() : nil, output = reads.output ? out.detach() : nil
        return Tensor.record(out, name, inputs: [self]) { g in
            // The kernel takes both; an operand the derivative does not read is passed as a stand-in.
            let x = input ?? output!, y = output ?? input!
            return [backend(for: g.device).unaryBackward(op, input: x, output: y, gradOutput: g)]
        }
    }

    public func exp() -> Tensor { unaryOp(.exp, "exp") }
    public func log() -> Tensor { unaryOp(.log, "log") }
    public func sqrt() -> Tensor { unaryOp(.sqrt, "sqrt") }
    public func rsqrt() -> Tensor { unaryOp(.rsqrt, "rsqrt") }
    public func square() -> Tensor { unaryOp(.square, "square") }
    public func abs() -> Tensor { unaryOp(.abs, "abs") }
    public func tanh() -> Tensor { unaryOp(.tanh, "tanh") }
    public func sigmoid() -> Tensor { unaryOp(.sigmoid, "sigmoid") }
    public func silu() -> Tensor { unaryOp(.silu, "silu") }
    public func relu() -> Tensor { unaryOp(.relu, "relu") }
    public func sin() -> Tensor { unaryOp(.sin, "sin") }
    public func cos() -> Tensor { unaryOp(.cos, "cos") }
    public func reciprocal() -> Tensor { unaryOp(.reciprocal, "reciprocal") }
    /// GELU; `approximate: true` is the tanh form (PyTorch's approximate="tanh").
    public func gelu(approximate: Bool = false) -> Tensor {
        approximate ? unaryOp(.geluTanh, "gelu_tanh") : unaryOp(.geluExact, "gelu")
    }
    /// x · sigmoid(1.702 x), as in OpenAI CLIP.
    public func quickGelu() -> Tensor { unaryOp(.quickGelu, "quick_gelu") }
    public func pow(_ exponent: Double) -> Tensor { unaryOp(.powScalar(exponent), "pow") }
    public func clamp(min lo: Double? = nil, max hi: Double? = nil) -> Tensor { unaryOp(.clamp(lo, hi), "clamp") }

    public static prefix func - (x: Tensor) -> Tensor { x.unaryOp(.neg, "neg") }

    // MARK: binary

    func binaryOp(_ op: BinaryOp, _ other: Tensor, _ name: String) -> Tensor {
        precondition(dtype == other.dtype, "\(name): dtypes \(dtype) and \(other.dtype) differ")
        precondition(device == other.device, "\(name): devices \(device) and \(other.device) differ")
        guard let shape = broadcastShape(self.shape, other.shape) else {
            preconditionFailure("\(name): shapes \(self.shape) and \(other.shape) do not broadcast")
        }
        let a = self.detach().expand(shape), b = other.detach().expand(shape)
        let out = backend(for: device).binary(op, a, b)
        guard GradMode.isEnabled && (requiresGrad || other.requiresGrad) else { return out }
        let aShape = self.shape, bShape = other.shape
        let needA = requiresGrad, needB = other.requiresGrad
        // Each case keeps alive only the operands its needed gradients read: `x + bias` keeps
        // nothing, and a frozen side (requiresGrad false at record time) gets no gradient.
        let lhs = self.detach(), rhs = other.detach()
        switch op {
        case .add:
            return Tensor.record(out, name, inputs: [self, other]) { g in
                [needA ? g.sumToShape(aShape) : nil, needB ? g.sumToShape(bShape) : nil]
            }
        case .sub:
            return Tensor.record(out, name, inputs: [self, other]) { g in
                [needA ? g.sumToShape(aShape) : nil, needB ? (-g).sumToShape(bShape) : nil]
            }
        case .mul:
            let savedA = needB ? lhs : nil, savedB = needA ? rhs : nil
            return Tensor.record(out, name, inputs: [self, other]) { g in
                [savedB.map { (g * $0).sumToShape(aShape) }, savedA.map { (g * $0).sumToShape(bShape) }]
            }
        case .div:
            let result = needB ? out.detach() : nil
            return Tensor.record(out, name, inputs: [self, other]) { g in
                [needA ? (g / rhs).sumToShape(aShape) : nil, result.map { (-(g * $0) / rhs).sumToShape(bShape) }]
            }
        case .pow:
            let result = out.detach()
            return Tensor.record(out, name, inputs: [self, other]) { g in
                // d/da a^b = b a^(b-1); d/db a^b = a^b log a
                [needA ? (g * rhs * lhs.binaryOp(.pow, rhs - 1, "pow")).sumToShape(aShape) : nil,
                 needB ? (g * result * lhs.log()).sumToShape(bShape) : nil]
            }
        case .maximum, .minimum:
            return Tensor.record(out, name, inputs: [self, other]) { g in
                // Ties split the gradient evenly, like PyTorch.
                let pickA = lhs.binaryOp(op == .maximum ? .greater : .less, rhs, "cmp")
                let tie = lhs.binaryOp(.equal, rhs, "eq") * 0.5
                let wa = pickA + tie
                return [needA ? (g * wa).sumToShape(aShape) : nil, needB ? (g * (1 - wa)).sumToShape(bShape) : nil]
            }
        default:
            return Tensor.record(out, name, inputs: [self, other]) { _ in [nil, nil] }
        }
    }

    public static func + (a: Tensor, b: Tensor) -> Tensor { a.binaryOp(.add, b, "add") }
    public static func - (a: Tensor, b: Tensor) -> Tensor { a.binaryOp(.sub, b, "sub") }
    public static func * (a: Tensor, b: Tensor) -> Tensor { a.binaryOp(.mul, b, "mul") }
    public static func / (a: Tensor, b: Tensor) -> Tensor { a.binaryOp(.div, b, "div") }
    public func pow(_ exponent: Tensor) -> Tensor { binaryOp(.pow, exponent, "pow") }
    public func maximum(_ other: Tensor) -> Tensor { binaryOp(.maximum, other, "maximum") }
    public func minimum(_ other: Tensor) -> Tensor { binaryOp(.minimum, other, "minimum") }
    public func eq(_ other: Tensor) -> Tensor { binaryOp(.equal, other, "eq") }
    public func gt(_ other: Tensor) -> Tensor { binaryOp(.greater, other, "gt") }
    public func ge(_ other: Tensor) -> Tensor { binaryOp(.greaterEqual, other, "ge") }
    public func lt(_ other: Tensor) -> Tensor { binaryOp(.less, other, "lt") }
    public func le(_ other: Tensor) -> Tensor { binaryOp(.lessEqual, other, "le") }

    public static func + (a: Tensor, b: Double) -> Tensor { a.unaryOp(.addScalar(b), "add_scalar") }
    public static func + (a: Double, b: Tensor) -> Tensor { b.unaryOp(.addScalar(a), "add_scalar") }
    public static func - (a: Tensor, b: Double) -> Tensor { a.unaryOp(.addScalar(-b), "sub_scalar") }
    public static func - (a: Double, b: Tensor) -> Tensor { (-b).unaryOp(.addScalar(a), "rsub_scalar") }
    public static func * (a: Tensor, b: Double) -> Tensor { a.unaryOp(.mulScalar(b), "mul_scalar") }
    public static func * (a: Double, b: Tensor) -> Tensor { b.unaryOp(.mulScalar(a), "mul_scalar") }
    public static func / (a: Tensor, b: Double) -> Tensor { a.unaryOp(.mulScalar(1 / b), "div_scalar") }
    public static func / (a: Double, b: Tensor) -> Tensor { b.reciprocal() * a }

    public func gt(_ value: Double) -> Tensor { gt(Tensor.full([], value, dtype: dtype, device: device)) }
    public func lt(_ value: Double) -> Tensor { lt(Tensor.full([], value, dtype: dtype, device: device)) }

    /// condition != 0 ? a : b with broadcasting (condition gets no gradient).
    public static func `where`(_ condition: Tensor, _ a: Tensor, _ b: Tensor) -> Tensor {
        guard let s1 = broadcastShape(condition.shape, a.shape), let shape = broadcastShape(s1, b.shape) else {
            preconditionFailure("where: shapes \(condition.shape), \(a.shape), \(b.shape) do not broadcast")
        }
        let c = condition.detach().expand(shape)
        let out = backend(for: a.device).select(c, a.detach().expand(shape), b.detach().expand(shape))
        let aShape = a.shape, bShape = b.shape, needA = a.requiresGrad, needB = b.requiresGrad
        return Tensor.record(out, "where", inputs: [a, b]) { g in
            let zero = Tensor(zeros: [], dtype: g.dtype, device: g.device)
            return [needA ? Tensor.where(c, g, zero).sumToShape(aShape) : nil,
                    needB ? Tensor.where(c, zero, g).sumToShape(bShape) : nil]
        }
    }

    /// Sums broadcast axes away so the result has `target` shape (the adjoint of `expand`).
    public func sumToShape(_ target: [Int]) -> Tensor {
        if shape == target { return self }
        let lead = rank - target.count
        var axes: [Int] = Array(0..<lead)
        for i in 0..<target.count where target[i] == 1 && shape[i + lead] != 1 { axes.append(i + lead) }
        let reduced = axes.isEmpty ? self : sum(axes: axes, keepDims: true)
        return reduced.reshape(target)
    }

    // MARK: factories

    public static func full(_ shape: [Int], _ value: Double, dtype: DType = .float32, device: Device = .cpu) -> Tensor {
        if value == 0 { return Tensor(zeros: shape, dtype: dtype, device: device) }
        let t = Tensor(unfilled: shape, dtype: dtype, device: device)
        backend(for: device).fill(t, with: value)
        return t
    }

    public static func zeros(_ shape: [Int], dtype: DType = .float32, device: Device = .cpu) -> Tensor {
        Tensor(zeros: shape, dtype: dtype, device: device)
    }

    public static func ones(_ shape: [Int], dtype: DType = .float32, device: Device = .cpu) -> Tensor {
        full(shape, 1, dtype: dtype, device: device)
    }

    public static func zeros(like t: Tensor) -> Tensor { zeros(t.shape, dtype: t.dtype, device: t.device) }
    public static func ones(like t: Tensor) -> Tensor { ones(t.shape, dtype: t.dtype, device: t.device) }

    /// 0, 1, …, count-1.
    public static func arange(_ count: Int, dtype: DType = .float32, device: Device = .cpu) -> Tensor {
        Tensor((0..<count).map { Double($0) }, shape: [count], dtype: dtype, device: device)
    }

    /// Standard-normal draws from `generator` (advances it).
    public static func randn(_ shape: [Int], generator: inout PhiloxGenerator, mean: Double = 0, std: Double = 1,
                             dtype: DType = .float32, device: Device = .cpu) -> Tensor {
        let t = Tensor(unfilled: shape, dtype: dtype, device: device)
        let offset = generator.reserve(t.numel)
        backend(for: device).randomFill(t, .normal(mean: mean, std: std), seed: generator.seed, offset: offset)
        return t
    }

    /// Uniform draws in [low, high) from `generator` (advances it).
    public static func rand(_ shape: [Int], generator: inout PhiloxGenerator, low: Double = 0, high: Double = 1,
                            dtype: DType = .float32, device: Device = .cpu) -> Tensor {
        let t = Tensor(unfilled: shape, dtype: dtype, device: device)
        let offset = generator.reserve(t.numel)
        backend(for: device).randomFill(t, .uniform(low: low, high: high), seed: generator.seed, offset: offset)
        return t
    }

    /// Convenience: draws keyed by (seed, offset 0).
    public static func randn(_ shape: [Int], seed: UInt64, dtype: DType = .float32, device: Device = .cpu) -> Tensor {
        var g = PhiloxGenerator(seed: seed)
        return randn(shape, generator: &g, dtype: dtype, device: device)
    }

    public static func rand(_ shape: [Int], seed: UInt64, dtype: DType = .float32, device: Device = .cpu) -> Tensor {
        var g = PhiloxGenerator(seed: seed)
        return rand(shape, generator: &g, dtype: dtype, device: device)
    }
}

extension UnaryOp {
    /// Which of the forward's input and output the backends' derivative of this op reads (the CPU's
    /// vectorised float32 sigmoid/tanh gradients read the input, the CUDA kernels the output, so
    /// those keep both).
    var derivativeReads: (input: Bool, output: Bool) {
        switch self {
        case .exp, .sqrt, .reciprocal: return (false, true)
        case .rsqrt, .tanh, .sigmoid: return (true, true)
        case .neg, .addScalar, .mulScalar: return (false, false)
        case .log, .square, .abs, .silu, .relu, .sin, .cos, .geluExact, .geluTanh, .quickGelu, .powScalar, .clamp:
            return (true, false)
        }
    }
}
