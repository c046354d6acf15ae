/// Standard layers with PyTorch semantics and parameter names (`weight`, `bias`).
///
/// Initialisation follows PyTorch's defaults in distribution (not in values): Linear and Conv2d
/// weights and biases are uniform in ±1/√fan_in (kaiming-uniform with a = √5), norms start at
/// ones/zeros, Embedding at N(0, 1). Draws come from a `PhiloxGenerator` the caller passes
/// (`generator:`, advanced, so one generator gives every layer distinct values) or from a fresh
/// generator with `seed:` (default 0; note that equal-shaped layers then start equal).
/// Inside `withoutParameterInitialization { }` random draws are skipped and weights stay zero.
/// Parameters are created with `requiresGrad = true`, like `nn.Parameter`.
///
/// ## Additive deltas (LoRA and similar)
/// `Linear` and `Conv2d` have `deltas: [any LayerDelta]`; the output is base(x) + Σ delta(x).
/// A `LayerDelta` is a `Module`, so its parameters are discovered like any other and get keys
/// under the layer, e.g. `to_q.deltas.0.down.weight` — the `deltas` segment keeps them apart from
/// the base `weight`/`bias`. A delta that should not be checkpointed with the model can be kept
/// out of `stateDict()` by the caller filtering keys containing `.deltas.`; loading a base
/// checkpoint strictly should happen before deltas are attached (otherwise their keys are missing).

/// A module added to a layer's output: receives the layer's input, returns a tensor of the
/// layer's output shape.
public protocol LayerDelta: Module {
    func callAsFunction(_ input: Tensor) -> Tensor
}

/// Uniform ±bound draws, or zeros when initialisation is skipped.
private func uniformParameter(_ shape: [Int], bound: Double, dtype: DType, generator: inout PhiloxGenerator) -> Tensor {
    let t = ParameterInitialization.isSkipped
        ? Tensor(zeros: shape, dtype: dtype)
        : Tensor.rand(shape, generator: &generator, low: -bound, high: bound, dtype: dtype)
    return t.requiringGrad()
}

// MARK: - Linear

/// y = x Wᵀ + b (+ deltas), W [out, in] (`nn.Linear`).
open class Linear: Module {
    public let inFeatures: Int
    public let outFeatures: Int
    public var weight: Tensor
    public var bias: Tensor?
    public var deltas: [any LayerDelta] = []

    public init(_ inFeatures: Int, _ outFeatures: Int, bias: Bool = true, dtype: DType = .float32,
                generator: inout PhiloxGenerator) {
        precondition(inFeatures > 0 && outFeatures > 0, "Linear(\(inFeatures), \(outFeatures)): sizes must be positive")
        self.inFeatures = inFeatures
        self.outFeatures = outFeatures
        let bound = 1 / Double(inFeatures).squareRoot()
        weight = uniformParameter([outFeatures, inFeatures], bound: bound, dtype: dtype, generator: &generator)
        self.bias = bias ? uniformParameter([outFeatures], bound: bound, dtype: dtype, generator: &generator) : nil
        super.init()
    }

    public convenience init(_ inFeatures: Int, _ outFeatures: Int, bias: Bool = true, dtype: DType = .float32,
                            seed: UInt64 = 0) {
        var generator = PhiloxGenerator(seed: seed)
        self.init(inFeatures, outFeatures, bias: bias, dtype: dtype, generator: &generator)
    }

    /// x Wᵀ + b + Σ delta(x): the deltas' sum goes into the bias pass as its residual
    /// (`linear(_:weight:bias:residual:)`), one pass over the output for the bias and every delta.
    open func callAsFunction(_ x: Tensor) -> Tensor {
        guard let extra = deltaSum(deltas, x) else { return linear(x, weight: weight, bias: bias) }
        return adding(extra, x)
    }

    /// self(x) + residual, the bias, delta and residual adds in one pass over the output (the deltas'
    /// sum and the residual are added first).
    open func callAsFunction(_ x: Tensor, residual: Tensor) -> Tensor {
        guard let extra = deltaSum(deltas, x) else { return linear(x, weight: weight, bias: bias, residual: residual) }
        return adding(extra + residual, x)
    }

    /// x Wᵀ + b + extra, fused when `extra` has the output's shape and dtype (a delta may broadcast).
    private func adding(_ extra: Tensor, _ x: Tensor) -> Tensor {
        if extra.shape == Array(x.shape.dropLast()) + [outFeatures] && extra.dtype == x.dtype {
            return linear(x, weight: weight, bias: bias, residual: extra)
        }
        return linear(x, weight: weight, bias: bias) + extra
    }
}

/// Σ delta(x) over a layer's deltas; nil when there are none.
private func deltaSum(_ deltas: [any LayerDelta], _ x: Tensor) -> Tensor? {
    var sum: Tensor?
    for delta in deltas { let d = delta(x); sum = sum.map { $0 + d } ?? d }
    return sum
}

// MARK: - Conv2d

/// 2-D convolution over NCHW input, weight [out, in/groups, kh, kw] (`nn.Conv2d`, zero padding).
open class Conv2d: Module {
    public let inChannels: Int
    public let outChannels: Int
    public let kernelSize: (Int, Int)
    public let stride: (Int, Int)
    public let padding: (Int, Int)
    public let dilation: (Int, Int)
    public let groups: Int
    public var weight: Tensor
    public var bias: Tensor?
    public var deltas: [any LayerDelta] = []

    public init(_ inChannels: Int, _ outChannels: Int, kernelSize: (Int, Int), stride: (Int, Int) = (1, 1),
                padding: (Int, Int) = (0, 0), dilation: (Int, Int) = (1, 1), groups: Int = 1, bias: Bool = true,
                dtype: DType = .float32, generator: inout PhiloxGenerator) {
        precondition(groups > 0 && inChannels % groups == 0 && outChannels % groups == 0,
                     "Conv2d: channels \(inChannels)→\(outChannels) not divisible by groups \(groups)")
        precondition(kernelSize.0 > 0 && kernelSize.1 > 0 && stride.0 > 0 && stride.1 > 0 && dilation.0 > 0 && dilation.1 > 0
                     && padding.0 >= 0 && padding.1 >= 0, "Conv2d: invalid kernel/stride/padding/dilation")
        self.inChannels = inChannels
        self.outChannels = outChannels
        self.kernelSize = kernelSize
        self.stride = stride
        self.padding = padding
        self.dilation = dilation
        self.groups = groups
        let fanIn = (inChannels / groups) * kernelSize.0 * kernelSize.1
        let bound = 1 / Double(fanIn).squareRoot()
        weight = uniformParameter([outChannels, inChannels / groups, kernelSize.0, kernelSize.1],
                                  bound: bound, dtype: dtype, generator: &generator)
        self.bias = bias ? uniformParameter([outChannels], bound: bound, dtype: dtype, generator: &generator) : nil
        super.init()
    }

    public convenience init(_ inChannels: Int, _ outChannels: Int, kernelSize: Int, stride: Int = 1, padding: Int = 0,
                            dilation: Int = 1, groups: Int = 1, bias: Bool = true, dtype: DType = .float32,
                            generator: inout PhiloxGenerator) {
        self.init(inChannels, outChannels, kernelSize: (kernelSize, kernelSize), stride: (stride, stride),
                  padding: (padding, padding), dilation: (dilation, dilation), groups: groups, bias: bias,
                  dtype: dtype, generator: &generator)
    }

    public convenience init(_ inChannels: Int, _ outChannels: Int, kernelSize: Int, stride: Int = 1, padding: Int = 0,
                            dilation: Int = 1, groups: Int = 1, bias: Bool = true, dtype: DType = .float32,
                            seed: UInt64 = 0) {
        var generator = PhiloxGenerator(seed: seed)
        self.init(inChannels, outChannels, kernelSize: kernelSize, stride: stride, padding: padding, dilation: dilation,
                  groups: groups, bias: bias, dtype: dtype, generator: &generator)
    }

    public convenience init(_ inChannels: Int, _ outChannels: Int, kernelSize: (Int, Int), stride: (Int, Int) = (1, 1),
                            padding: (Int, Int) = (0, 0), dilation: (Int, Int) = (1, 1), groups: Int = 1,
                            bias: Bool = true, dtype: DType = .float32, seed: UInt64 = 0) {
        var generator = PhiloxGenerator(seed: seed)
        self.init(inChannels, outChannels, kernelSize: kernelSize, stride: stride, padding: padding, dilation: dilation,
                  groups: groups, bias: bias, dtype: dtype, generator: &generator)
    }

    /// conv(x) + b + Σ delta(x): the deltas' sum goes into the convolution's bias pass as its residual.
    open func callAsFunction(_ x: Tensor) -> Tensor {
        guard let extra = deltaSum(deltas, x) else {
            return conv2d(x, weight: weight, bias: bias, stride: stride, padding: padding, dilation: dilation, groups: groups)
        }
        return adding(extra, x)
    }

    /// self(x) + residual (the output's shape), the bias, delta and residual adds fused into the
    /// convolution's bias pass (the deltas' sum and the residual are added first).
    open func callAsFunction(_ x: Tensor, residual: Tensor) -> Tensor {
        guard let extra = deltaSum(deltas, x) else {
            return conv2d(x, weight: weight, bias: bias, stride: stride, padding: padding, dilation: dilation,
                          groups: groups, residual: residual)
        }
        return adding(extra + residual, x)
    }

    /// The output's spatial size for a `height` × `width` input (≤ 0 when the kernel does not fit,
    /// which the convolution refuses).
    public func outputSize(height: Int, width: Int) -> (Int, Int) {
        Conv2dParameters(stride: stride, padding: padding, dilation: dilation, groups: groups)
            .outputSize(height: height, width: width, kernel: kernelSize)
    }

    /// conv(x) + b + extra, fused when `extra` has the output's shape and dtype (a delta may broadcast).
    private func adding(_ extra: Tensor, _ x: Tensor) -> Tensor {
        let p = Conv2dParameters(stride: stride, padding: padding, dilation: dilation, groups: groups)
        if x.rank == 4, extra.dtype == x.dtype,
           case let (oh, ow) = p.outputSize(height: x.shape[2], width: x.shape[3], kernel: kernelSize),
           extra.shape == [x.shape[0], outChannels, oh, ow] {
            return conv2d(x, weight: weight, bias: bias, stride: stride, padding: padding, dilation: dilation,
                          groups: groups, residual: extra)
        }
        return conv2d(x, weight: weight, bias: bias, stride: stride, padding: padding, dilation: dilation, groups: groups) + extra
    }
}

// MARK: - Normalisation

/// Group normalisation of [N, C, *] (`nn.GroupNorm(num_groups, num_channels, eps, affine)`).
open class GroupNorm: Module {
    public let groups: Int
    public let channels: Int
    public let eps: Double
    public var weight: Tensor?
    public var bias: Tensor?

    public init(groups: Int, channels: Int, eps: Double = 1e-5, affine: Bool = true, dtype: DType = .float32) {
        precondition(groups > 0 && channels % groups == 0, "GroupNorm: \(channels) channels not divisible into \(groups) groups")
        self.groups = groups
        self.channels = channels
        self.eps = eps
        weight = affine ? Tensor.ones([channels], dtype: dtype).requiringGrad() : nil
        bias = affine ? Tensor.zeros([channels], dtype: dtype).requiringGrad() : nil
        super.init()
    }

    /// With `silu`, silu(norm(x)) in one fused pass (what diffusers writes as
    /// `nonlinearity(norm(x))`); the backward keeps no pre-activation.
    open func callAsFunction(_ x: Tensor, silu: Bool = false) -> Tensor {
        groupNorm(x, groups: groups, weight: weight, bias: bias, eps: eps, silu: silu)
    }
}

/// Layer normalisation over the trailing `normalizedShape` axes
/// (`nn.LayerNorm(normalized_shape, eps, elementwise_affine, bias)`).
open class LayerNorm: Module {
    public let normalizedShape: [Int]
    public let eps: Double
    public var weight: Tensor?
    public var bias: Tensor?

    public init(_ normalizedShape: [Int], eps: Double = 1e-5, elementwiseAffine: Bool = true, bias: Bool = true,
                dtype: DType = .float32) {
        precondition(!normalizedShape.isEmpty && normalizedShape.allSatisfy { $0 > 0 }, "LayerNorm: invalid shape \(normalizedShape)")
        self.normalizedShape = normalizedShape
        self.eps = eps
        weight = elementwiseAffine ? Tensor.ones(normalizedShape, dtype: dtype).requiringGrad() : nil
        self.bias = elementwiseAffine && bias ? Tensor.zeros(normalizedShape, dtype: dtype).requiringGrad() : nil
        super.init()
    }

    public convenience init(_ dim: Int, eps: Double = 1e-5, elementwiseAffine: Bool = true, bias: Bool = true,
                            dtype: DType = .float32) {
        self.init([dim], eps: eps, elementwiseAffine: elementwiseAffine, bias: bias, dtype: dtype)
    }

    open func callAsFunction(_ x: Tensor) -> Tensor {
        layerNorm(x, normalizedShape: normalizedShape, weight: weight, bias: bias, eps: eps)
    }
}

// MARK: - Embedding

/// Lookup table weight [count, dim] indexed by int32/int64 tensors (`nn.Embedding`).
open class Embedding: Module {
    public let count: Int
    public let dim: Int
    public var weight: Tensor

    public init(_ count: Int, _ dim: Int, dtype: DType = .float32, generator: inout PhiloxGenerator) {
        precondition(count > 0 && dim > 0, "Embedding(\(count), \(dim)): sizes must be positive")
        self.count = count
        self.dim = dim
        weight = (ParameterInitialization.isSkipped
            ? Tensor(zeros: [count, dim], dtype: dtype)
            : Tensor.randn([count, dim], generator: &generator, dtype: dtype)).requiringGrad()
        super.init()
    }

    public convenience init(_ count: Int, _ dim: Int, dtype: DType = .float32, seed: UInt64 = 0) {
        var generator = PhiloxGenerator(seed: seed)
        self.init(count, dim, dtype: dtype, generator: &generator)
    }

    open func callAsFunction(_ indices: Tensor) -> Tensor {
        embedding(indices, weight: weight)
    }
}

// MARK: - Dropout

/// Inverted dropout with probability `p` while training, identity in eval mode (`nn.Dropout`).
/// Masks come from `generator`, which advances on every training call; set it to reproduce a run.
open class Dropout: Module {
    public let p: Double
    public var generator: PhiloxGenerator

    public init(_ p: Double = 0.5, seed: UInt64 = 0) {
        precondition(p >= 0 && p < 1, "Dropout probability must be in [0, 1), got \(p)")
        self.p = p
        generator = PhiloxGenerator(seed: seed)
        super.init()
    }

    open func callAsFunction(_ x: Tensor) -> Tensor {
        x.dropout(p, training: isTraining, generator: &generator)
    }
}
