import Foundation
import TensorKit

// Low-rank adapters (LoRA, Hu et al. 2021) as TensorKit layer deltas: a `Linear` or `Conv2d` with a
// LoRA delta computes base(x) + (alpha / r) · up(down(x)), with `down` [r, in] and `up` [out, r]
// (for a convolution, `down` is a convolution with the base layer's kernel, stride and padding to
// r channels, and `up` a 1×1 convolution), exactly as PEFT's `lora.Linear` / `lora.Conv2d`.
//
//   let delta = LoRALinear(base: attn.to_q, rank: 4, alpha: 4, initialization: .gaussian, seed: 0)
//   attn.to_q.deltas.append(delta)          // or let `LoRANetwork.inject` do it by module path
//   let y = attn.to_q(x)                    // base(x) + delta(x); delta.parameters() = [down, up]
//
// Initialisation as PEFT: `down` ~ N(0, (1/r)²) for `.gaussian` (`init_lora_weights="gaussian"`,
// TRL's DDPO default) or uniform ±1/√fan_in for `.kaiming` (PEFT's default, kaiming-uniform with
// a = √5); `up` = 0, so a fresh delta changes nothing. Parameters are float32 unless asked
// otherwise, on the base layer's device. A float16/bfloat16 input on a GPU runs the delta in that
// dtype with the weights cast per call (PEFT under autocast); on the CPU an input of another dtype is
// converted in and out.
// The parameter keys under the layer are `deltas.<i>.down.weight` and `deltas.<i>.up.weight`;
// files use diffusers' names instead (see LoRAFile.swift).

/// How a fresh LoRA `down` matrix is drawn (`up` always starts at zero).
public enum LoRAInitialization: String, Codable, Sendable, CaseIterable {
    /// N(0, (1/r)²), PEFT's `init_lora_weights="gaussian"` (TRL's DDPO pipeline).
    case gaussian
    /// Uniform ±1/√fan_in (kaiming-uniform, a = √5), PEFT's default `init_lora_weights=True`.
    case kaiming
}

/// A LoRA delta of either kind, as `LoRANetwork` handles them.
public protocol LoRADelta: LayerDelta {
    var rank: Int { get }
    var alpha: Double { get }
    /// The [r, in(, kh, kw)] down projection ("lora_A").
    var downWeight: Tensor { get }
    /// The [out, r(, 1, 1)] up projection ("lora_B").
    var upWeight: Tensor { get }
    /// The change this delta makes to the base weight, scale · up · down, in the base weight's shape
    /// (float32 or the parameters' dtype; no autograd).
    func weightDelta() -> Tensor
}

extension LoRADelta {
    /// alpha / r, the factor applied to up(down(x)).
    public var scale: Double { alpha / Double(rank) }

    /// The trainable tensors, down then up.
    public var loraParameters: [Tensor] { [downWeight, upWeight] }
}

/// Draws the down weight and a zero up weight.
private func initialWeights(downShape: [Int], upShape: [Int], fanIn: Int, rank: Int,
                            initialization: LoRAInitialization, dtype: DType, device: Device,
                            generator: inout PhiloxGenerator) -> (Tensor, Tensor) {
    let down: Tensor
    switch initialization {
    case .gaussian:
        down = Tensor.randn(downShape, generator: &generator, std: 1 / Double(rank), dtype: dtype, device: device)
    case .kaiming:
        let bound = 1 / Double(fanIn).squareRoot()
        down = Tensor.rand(downShape, generator: &generator, low: -bound, high: bound, dtype: dtype, device: device)
    }
    return (down.requiringGrad(), Tensor.zeros(upShape, dtype: dtype, device: device).requiringGrad())
}

/// Runs `body(x, down, up)` in one dtype. Parameters in the input's dtype: as they are. A float16/
/// bfloat16 input on a GPU with float32 parameters (mixed precision): the rank-r weights in the
/// input's dtype, as PEFT's layers run under autocast, so the full-size activations stay 16-bit and
/// the weights' gradients arrive in float32 through the cast (`castWeight`). Otherwise (the CPU
/// stores 16-bit types but computes in float32 or float64): the input is converted to the parameters'
/// dtype and the result back.
@inline(__always)
private func computing(_ x: Tensor, _ down: Tensor, _ up: Tensor, _ body: (Tensor, Tensor, Tensor) -> Tensor) -> Tensor {
    if x.dtype == down.dtype { return body(x, down, up) }
    if case .cuda = x.device, x.dtype == .float16 || x.dtype == .bfloat16 {
        return body(x, castWeight(down, x.dtype), castWeight(up, x.dtype))
    }
    return body(x.to(down.dtype), down, up).to(x.dtype)
}

/// `weight.to(dtype)` for a LoRA weight on a GPU, the conversion made once per version of the weight
/// and reused: between two optimizer steps a sampling batch calls every delta once per denoising
/// step, and each call used to launch its own two small casts. A write into the weight's storage
/// through a backend (`assign`, loading, an optimizer step) moves `Storage.version` and makes it
/// convert again. Each call still records its own cast in the graph, so the gradient arrives in the
/// weight's dtype as through `to(_:)`.
func castWeight(_ weight: Tensor, _ dtype: DType) -> Tensor {
    let converted = LoRACastCache.shared.converted(weight, dtype)
    return Tensor.record(converted.detach(), "to", inputs: [weight]) { g in [g.to(weight.dtype)] }
}

/// The converted LoRA weights of `castWeight`: one entry per weight storage (held weakly, so a freed
/// one's entry goes), offset and dtype, valid while the storage's version is unchanged.
private final class LoRACastCache: @unchecked Sendable {
    static let shared = LoRACastCache()
    private struct Key: Hashable { let storage: ObjectIdentifier, offset: Int, dtype: DType }
    private struct Entry { weak var storage: Storage?; let version: UInt64; let shape: [Int]; let value: Tensor }
    private var entries: [Key: Entry] = [:]
    private let lock = NSLock()

    func converted(_ weight: Tensor, _ dtype: DType) -> Tensor {
        let key = Key(storage: ObjectIdentifier(weight.storage), offset: weight.offset, dtype: dtype)
        lock.lock()
        defer { lock.unlock() }
        if let e = entries[key], e.storage === weight.storage, e.version == weight.storage.version, e.shape == weight.shape {
            return e.value
        }
        let value = withNoGrad { weight.to(dtype).contiguous() }
        if entries.count > 4096 { entries = entries.filter { $0.value.storage != nil } }
        entries[key] = Entry(storage: weight.storage, version: weight.storage.version, shape: weight.shape, value: value)
        return value
    }
}

// MARK: - Linear

/// The LoRA delta of a `Linear` layer: scale · up(down(x)), down [r, in], up [out, r], no biases.
public final class LoRALinear: Module, LoRADelta {
    public let rank: Int
    public let alpha: Double
    public var down: Linear
    public var up: Linear

    public var downWeight: Tensor { down.weight }
    public var upWeight: Tensor { up.weight }

    /// A fresh delta for `base` (down drawn from `generator`, which advances; up zero).
    public init(base: Linear, rank: Int, alpha: Double, initialization: LoRAInitialization = .gaussian,
                dtype: DType = .float32, generator: inout PhiloxGenerator) {
        precondition(rank > 0, "LoRA rank must be positive, got \(rank)")
        self.rank = rank
        self.alpha = alpha
        (down, up) = withoutParameterInitialization {
            (Linear(base.inFeatures, rank, bias: false, dtype: dtype), Linear(rank, base.outFeatures, bias: false, dtype: dtype))
        }
        (down.weight, up.weight) = initialWeights(
            downShape: [rank, base.inFeatures], upShape: [base.outFeatures, rank], fanIn: base.inFeatures, rank: rank,
            initialization: initialization, dtype: dtype, device: base.weight.device, generator: &generator)
        super.init()
    }

    public convenience init(base: Linear, rank: Int, alpha: Double, initialization: LoRAInitialization = .gaussian,
                            dtype: DType = .float32, seed: UInt64 = 0) {
        var generator = PhiloxGenerator(seed: seed)
        self.init(base: base, rank: rank, alpha: alpha, initialization: initialization, dtype: dtype, generator: &generator)
    }

    public func callAsFunction(_ x: Tensor) -> Tensor {
        computing(x, down.weight, up.weight) { x, down, up in
            var h = linear(x, weight: down, bias: nil)
            if scale != 1 { h = h * scale }         // on the rank-r activation: the cheapest place
            return linear(h, weight: up, bias: nil)
        }
    }

    public func weightDelta() -> Tensor {
        withNoGrad { up.weight.matmul(down.weight) * scale }
    }
}

// MARK: - Conv2d

/// The LoRA delta of a `Conv2d` layer: down is a convolution with the base's kernel, stride and
/// padding to r channels, up a 1×1 convolution to the output channels (PEFT's `lora.Conv2d`).
/// Only `groups == 1` and `dilation == 1` layers are supported (PEFT cannot merge grouped ones and
/// ignores dilation in `lora_A`).
public final class LoRAConv2d: Module, LoRADelta {
    public let rank: Int
    public let alpha: Double
    public var down: Conv2d
    public var up: Conv2d

    public var downWeight: Tensor { down.weight }
    public var upWeight: Tensor { up.weight }

    public init(base: Conv2d, rank: Int, alpha: Double, initialization: LoRAInitialization = .gaussian,
                dtype: DType = .float32, generator: inout PhiloxGenerator) {
        precondition(rank > 0, "LoRA rank must be positive, got \(rank)")
        precondition(base.groups == 1 && base.dilation == (1, 1), "LoRAConv2d supports groups 1 and dilation 1 only")
        self.rank = rank
        self.alpha = alpha
        (down, up) = withoutParameterInitialization {
            (Conv2d(base.inChannels, rank, kernelSize: base.kernelSize, stride: base.stride, padding: base.padding,
                    bias: false, dtype: dtype),
             Conv2d(rank, base.outChannels, kernelSize: (1, 1), bias: false, dtype: dtype))
        }
        let (kh, kw) = base.kernelSize
        (down.weight, up.weight) = initialWeights(
            downShape: [rank, base.inChannels, kh, kw], upShape: [base.outChannels, rank, 1, 1],
            fanIn: base.inChannels * kh * kw, rank: rank, initialization: initialization, dtype: dtype,
            device: base.weight.device, generator: &generator)
        super.init()
    }

    public convenience init(base: Conv2d, rank: Int, alpha: Double, initialization: LoRAInitialization = .gaussian,
                            dtype: DType = .float32, seed: UInt64 = 0) {
        var generator = PhiloxGenerator(seed: seed)
        self.init(base: base, rank: rank, alpha: alpha, initialization: initialization, dtype: dtype, generator: &generator)
    }

    public func callAsFunction(_ x: Tensor) -> Tensor {
        computing(x, down.weight, up.weight) { x, downWeight, upWeight in
            var h = conv2d(x, weight: downWeight, stride: down.stride, padding: down.padding)
            if scale != 1 { h = h * scale }
            return conv2d(h, weight: upWeight)
        }
    }

    public func weightDelta() -> Tensor {
        withNoGrad {
            let s = down.weight.shape
            let out = up.weight.shape[0]
            let product = up.weight.reshape([out, rank]).matmul(down.weight.reshape([rank, s[1] * s[2] * s[3]]))
            return product.reshape([out, s[1], s[2], s[3]]) * scale
        }
    }
}
