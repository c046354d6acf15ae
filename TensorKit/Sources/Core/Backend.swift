import Foundation

/// Elementwise functions of one tensor. Scalar-carrying cases keep their constant.
public enum UnaryOp: Hashable, Sendable {
    case neg, exp, log, sqrt, rsqrt, square, abs, tanh, sigmoid, silu, relu, sin, cos, reciprocal
    case geluExact, geluTanh, quickGelu
    case powScalar(Double)
    case addScalar(Double), mulScalar(Double)
    /// clamp(min, max); either bound may be nil.
    case clamp(Double?, Double?)
}

/// Elementwise functions of two same-shaped views (broadcasting is expressed with zero strides).
public enum BinaryOp: Hashable, Sendable {
    case add, sub, mul, div, pow, maximum, minimum
    /// Comparisons produce 1 or 0 in the dtype of the first operand.
    case equal, greater, greaterEqual, less, lessEqual
}

public enum ReduceOp: Hashable, Sendable { case sum, max, min }

public enum RandomDistribution: Hashable, Sendable {
    case normal(mean: Double, std: Double)
    case uniform(low: Double, high: Double)
}

/// Hyper-parameters of a 2-D convolution (NCHW input, OIHW weight).
public struct Conv2dParameters: Hashable, Sendable {
    public var stride: (Int, Int)
    public var padding: (Int, Int)
    public var dilation: (Int, Int)
    public var groups: Int
    public init(stride: (Int, Int) = (1, 1), padding: (Int, Int) = (0, 0),
                dilation: (Int, Int) = (1, 1), groups: Int = 1) {
        self.stride = stride; self.padding = padding; self.dilation = dilation; self.groups = groups
    }
    public static func == (a: Self, b: Self) -> Bool {
        a.stride == b.stride && a.padding == b.padding && a.dilation == b.dilation && a.groups == b.groups
    }
    public func hash(into h: inout Hasher) {
        h.combine(stride.0); h.combine(stride.1); h.combine(padding.0); h.combine(padding.1)
        h.combine(dilation.0); h.combine(dilation.1); h.combine(groups)
    }
    /// Output spatial size for an input of `height`×`width` and a `kh`×`kw` kernel.
    public func outputSize(height: Int, width: Int, kernel: (Int, Int)) -> (Int, Int) {
        // Floor division, as PyTorch: a kernel larger than the padded input gives a size ≤ 0, which
        // callers refuse (Swift's `/` truncates toward zero and would give 1 for a span of −1).
        func size(_ span: Int, _ stride: Int) -> Int { (span >= 0 ? span / stride : -((-span + stride - 1) / stride)) + 1 }
        return (size(height + 2 * padding.0 - dilation.0 * (kernel.0 - 1) - 1, stride.0),
                size(width + 2 * padding.1 - dilation.1 * (kernel.1 - 1) - 1, stride.1))
    }
}

/// Saved statistics of a normalisation forward pass, reused by its backward.
public struct NormStatistics {
    public var mean: Tensor
    public var rstd: Tensor
    public init(mean: Tensor, rstd: Tensor) { self.mean = mean; self.rstd = rstd }
}

/// A device's kernels. The op layer (Tensor methods) validates shapes, picks output shapes and
/// records autograd; a backend only computes, on storage of its own device.
///
/// Inputs may be arbitrary strided views unless a method says "contiguous"; outputs are new
/// contiguous tensors unless a destination is passed in.
public protocol Backend: AnyObject {
    var device: Device { get }

    // Memory
    func allocate(byteCount: Int) -> Storage
    /// Memory whose contents are left as they are, for an output every element of which is written
    /// next (a cast, a concatenation, random draws). Skips `allocate`'s zero fill.
    func allocateUninitialized(byteCount: Int) -> Storage
    /// Copies `source` (same device, any strides, any dtype) into `destination` (same shape).
    func copy(_ source: Tensor, into destination: Tensor)
    /// Returns a contiguous copy of `source` on `device`. Same-device copies go to that device's
    /// backend; CPU↔accelerator copies go to the accelerator's backend (uploads and downloads).
    func transfer(_ source: Tensor, to device: Device) -> Tensor
    func fill(_ destination: Tensor, with value: Double)
    /// Fills a contiguous `destination` with Philox4x32-10 draws keyed by (seed, offset):
    /// element i uses counter (offset + i / 4, 0), lane i % 4 (see `Philox`).
    func randomFill(_ destination: Tensor, _ distribution: RandomDistribution, seed: UInt64, offset: UInt64)

    // Elementwise
    func unary(_ op: UnaryOp, _ x: Tensor) -> Tensor
    /// Gradient of `op` at `x` (with `y = op(x)`) times `gradOutput`.
    func unaryBackward(_ op: UnaryOp, input x: Tensor, output y: Tensor, gradOutput: Tensor) -> Tensor
    func binary(_ op: BinaryOp, _ a: Tensor, _ b: Tensor) -> Tensor
    /// condition != 0 ? a : b, all three of one shape (broadcast views allowed).
    func select(_ condition: Tensor, _ a: Tensor, _ b: Tensor) -> Tensor

    // Reductions: result keeps reduced axes with size 1.
    func reduce(_ op: ReduceOp, _ x: Tensor, axes: [Int]) -> Tensor

    // Linear algebra: a [B, M, K] · b [B, K, N] -> [B, M, N]; batch stride 0 broadcasts.
    func matmul(_ a: Tensor, _ b: Tensor) -> Tensor

    /// (x + bias) + residual in one pass, for contiguous x, bias [C] and residual (x's shape); either
    /// may be nil. Element i takes bias[(i / inner) % C]: `inner` 1 is a linear layer's last-axis bias.
    /// The sums are rounded as two separate adds would round them (float16/bfloat16 on CUDA: once).
    func addBiasResidual(_ x: Tensor, bias: Tensor?, residual: Tensor?, inner: Int) -> Tensor
    /// diffusers' GEGLU on a projection's output, in one pass: contiguous h [rows, 2·inner] (the
    /// projection without its bias) and bias [2·inner] or nil; with a = h[r, j] + bias[j] and
    /// g = h[r, inner + j] + bias[inner + j], out [rows, inner] = a · gelu(g), gelu exact (erf).
    func geglu(_ h: Tensor, bias: Tensor?) -> Tensor
    /// The gradient of `geglu` with respect to h, [rows, 2·inner]: gradOutput · gelu(g) in the first
    /// half, gradOutput · a · gelu′(g) in the second (also the bias's gradient, summed over rows).
    func gegluBackward(_ gradOutput: Tensor, h: Tensor, bias: Tensor?) -> Tensor

    // Neural-network kernels (contiguous inputs).
    /// conv2d(input, weight) + bias, then + `residual` (the output's shape) when given: the residual
    /// add of a ResNet block or a transformer's projection fused into the convolution's epilogue.
    /// The sums are rounded as two separate adds would round them.
    func conv2d(_ input: Tensor, weight: Tensor, bias: Tensor?, residual: Tensor?, _ p: Conv2dParameters) -> Tensor
    func conv2dBackwardInput(_ gradOutput: Tensor, weight: Tensor, inputShape: [Int], _ p: Conv2dParameters) -> Tensor
    func conv2dBackwardWeight(_ gradOutput: Tensor, input: Tensor, weightShape: [Int], _ p: Conv2dParameters) -> Tensor

    /// x [N, C, *]; statistics per (n, group) as [N, G]. With `silu` the output is
    /// silu(groupNorm(x)) (diffusers' ResnetBlock2D `nonlinearity(norm(x))` in one pass); the
    /// statistics are those of the normalisation either way.
    func groupNorm(_ x: Tensor, groups: Int, weight: Tensor?, bias: Tensor?, eps: Double, silu: Bool) -> (Tensor, NormStatistics)
    /// Gradients of `groupNorm`. With `silu` the pre-activation z = x̂·w + b is recomputed from x,
    /// the weight, the bias and the statistics (nothing else is saved by the forward). Without
    /// `parameterGradients` only the input gradient is computed and weight/bias come back nil;
    /// with it, the bias gradient comes back even when there is no bias (the weight's only with a weight).
    func groupNormBackward(_ gradOutput: Tensor, x: Tensor, groups: Int, weight: Tensor?, bias: Tensor?,
                           stats: NormStatistics, silu: Bool, parameterGradients: Bool)
        -> (input: Tensor, weight: Tensor?, bias: Tensor?)
    /// Normalises over the trailing `normalizedCount` elements; statistics per leading row as [rows].
    func layerNorm(_ x: Tensor, normalizedCount: Int, weight: Tensor?, bias: Tensor?, eps: Double) -> (Tensor, NormStatistics)
    /// Gradients of `layerNorm`; `parameterGradients` as in `groupNormBackward`.
    func layerNormBackward(_ gradOutput: Tensor, x: Tensor, normalizedCount: Int, weight: Tensor?, stats: NormStatistics,
                           parameterGradients: Bool)
        -> (input: Tensor, weight: Tensor?, bias: Tensor?)

    /// Softmax (or log-softmax) over the last axis.
    func softmax(_ x: Tensor, log: Bool) -> Tensor
    func softmaxBackward(output: Tensor, gradOutput: Tensor, log: Bool) -> Tensor

    /// q [B, H, Nq, D], k/v [B, H, Nk, D]: softmax(q kᵀ · scale [+ causal mask]) v without keeping the
    /// full score matrix. Returns the output and the per-row log-sum-exp [B, H, Nq] for backward.
    /// Every tensor operand (here and in the backward) may be a strided view, and the output and the
    /// gradients may come back as views (CUDA's flash path keeps q's, k's and v's layouts).
    func attention(q: Tensor, k: Tensor, v: Tensor, scale: Double, causal: Bool) -> (Tensor, Tensor)
    func attentionBackward(q: Tensor, k: Tensor, v: Tensor, output: Tensor, logSumExp: Tensor,
                           gradOutput: Tensor, scale: Double, causal: Bool) -> (Tensor, Tensor, Tensor)

    /// Rows of weight [V, D] picked by integer indices (any shape) -> indices.shape + [D].
    func embedding(weight: Tensor, indices: Tensor) -> Tensor
    /// Scatter-add of gradOutput rows into a [V, D] zero tensor.
    func embeddingBackward(_ gradOutput: Tensor, indices: Tensor, numEmbeddings: Int) -> Tensor
}

/// Registry of backends by device. The CPU backend is always present; others register themselves.
public enum BackendRegistry {
    nonisolated(unsafe) static var backends: [Device: Backend] = [.cpu: CPUBackend.shared]
    static let lock = NSLock()

    public static func register(_ backend: Backend) {
        lock.lock(); defer { lock.unlock() }
        backends[backend.device] = backend
    }

    public static func backend(for device: Device) -> Backend? {
        lock.lock(); defer { lock.unlock() }
        if let backend = backends[device] { return backend }
        // The CUDA backend registers itself on first use of a .cuda device (nil when CUDA or that
        // device is unavailable: see CUDA.unavailableReason).
        if case .cuda(let index) = device, let cuda = CUDABackend.make(index: index) {
            backends[device] = cuda
            return cuda
        }
        return nil
    }
}

/// The backend owning `device`; a missing backend is a programmer error (devices come from the registry).
@inline(__always) func backend(for device: Device) -> Backend {
    guard let backend = BackendRegistry.backend(for: device) else {
        if case .cuda(let index) = device {
            preconditionFailure("\(device) is unavailable: \(CUDA.unavailableReason(index) ?? "no backend registered")")
        }
        preconditionFailure("no backend is registered for device \(device)")
    }
    return backend
}
