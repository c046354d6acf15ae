import Foundation

// DDPOConfig.mixed_precision on a GPU, as accelerate applies it to TRL's trainer, but with dtypes
// instead of autocast:
//
//   mode   text encoder  UNet (LoRA)   UNet (full fine-tune)  VAE       LoRA / optimizer state
//   no     float32       float32       float32                float32   float32
//   fp16   float16       float16       float32                float32*  float32
//   bf16   bfloat16      bfloat16      float32                bfloat16  float32
//
// Frozen weights and their activations are in the half type; what the optimizer updates stays in
// float32 (LoRA deltas compute in float32 on converted inputs, see LoRALayers). A fully trained UNet
// keeps float32 weights because we keep no separate master copy. SD's VAE decoder can overflow
// float16 (diffusers' `force_upcast`), so under fp16 (*) the VAE keeps float32 weights, decodes with
// a float16 copy of its decoder (as diffusers' and TRL's fp16 pipelines do) and decodes a batch again
// in float32 when the float16 images are not all finite. Latents, the scheduler
// step and the PPO loss are float32 in every mode (StableDiffusionPipeline.denoise).
//
// fp16 gradients underflow without loss scaling: `DynamicLossScaler` is torch.cuda.amp.GradScaler's
// rule with its defaults (start 2^16, ×2 after 2000 finite steps, ×0.5 and skip the step on inf/NaN).

/// A `mixed_precision` value.
public enum MixedPrecision: String, Sendable, CaseIterable {
    case no, fp16, bf16

    public init(config value: String) throws {
        guard let mode = MixedPrecision(rawValue: value) else {
            throw DDPOConfigError(field: "mixed_precision", "expected one of \(MixedPrecision.allCases.map(\.rawValue)), got \"\(value)\"")
        }
        self = mode
    }

    /// The dtype of frozen weights and activations.
    public var computeDType: DType {
        switch self {
        case .no: return .float32
        case .fp16: return .float16
        case .bf16: return .bfloat16
        }
    }

    /// The UNet's dtype: the compute dtype, or float32 when all of it is trained.
    public func unetDType(trainsWholeUNet: Bool) -> DType { trainsWholeUNet ? .float32 : computeDType }

    /// The VAE's dtype: float32 under fp16 (SD's decoder can overflow float16), else the compute dtype.
    public var vaeDType: DType { self == .fp16 ? .float32 : computeDType }

    /// The dtype the VAE decodes in first (`StableDiffusionPipeline.vaeDecodeDType`): float16 under
    /// fp16, as diffusers' and TRL's fp16 pipelines decode, with the float32 weights decoding again
    /// any batch that overflows; nil (the VAE's dtype) otherwise.
    public var vaeDecodeDType: DType? { self == .fp16 ? .float16 : nil }

    /// Whether the loss needs scaling (float16 only: bfloat16 has float32's exponent range).
    public var needsLossScaling: Bool { self == .fp16 }
}

/// Dynamic loss scaling for float16 training (torch.cuda.amp.GradScaler's rule and defaults).
public struct DynamicLossScaler: Codable, Sendable, Equatable {
    public var scale: Double
    public var growthFactor: Double
    public var backoffFactor: Double
    public var growthInterval: Int
    /// Finite steps since the last change of scale.
    public var goodSteps: Int
    /// Steps skipped because a gradient was inf or NaN.
    public var skippedSteps: Int

    public init(initialScale: Double = 65536, growthFactor: Double = 2, backoffFactor: Double = 0.5, growthInterval: Int = 2000) {
        scale = initialScale
        self.growthFactor = growthFactor
        self.backoffFactor = backoffFactor
        self.growthInterval = growthInterval
        goodSteps = 0
        skippedSteps = 0
    }

    /// Divides every gradient by the scale, in place (before clipping, as GradScaler.unscale_).
    public func unscale(_ parameters: [Tensor]) {
        let inverse = 1 / scale
        withNoGrad {
            for p in parameters { if let g = p.grad { p.grad = g * inverse } }
        }
    }

    /// After the unscaled gradients' norm is known: a finite norm counts towards growth; inf or NaN
    /// (the update must then be skipped) backs the scale off. Returns whether to take the step.
    @discardableResult
    public mutating func update(gradientNorm: Double) -> Bool {
        guard gradientNorm.isFinite else {
            scale *= backoffFactor
            goodSteps = 0
            skippedSteps += 1
            return false
        }
        goodSteps += 1
        if goodSteps >= growthInterval {
            scale *= growthFactor
            goodSteps = 0
        }
        return true
    }
}
