import Foundation

// diffusers `DiagonalGaussianDistribution` (models/autoencoders/vae.py): the VAE posterior
// q(z | x) = N(mean, exp(logvar)) read from the encoder's 2·C output channels.
//
//   let posterior = vae.encode(images)             // images [B, 3, H, W] in [-1, 1]
//   var g = PhiloxGenerator(seed: 0)
//   let z = posterior.sample(generator: &g)        // mean + std · ε,  [B, C, H/f, W/f]
//   let latents = z * vae.config.scaling_factor    // what the UNet sees (as diffusers pipelines do)
//   let m = posterior.mode()                       // the mean
//   let kl = posterior.kl()                        // KL(q ‖ N(0, I)) summed per sample, [B]
//
// Every quantity is built from tensor ops, so gradients flow through mean, std and kl.

public struct DiagonalGaussianDistribution {
    /// The encoder output the distribution was read from, [B, 2C, h, w].
    public let parameters: Tensor
    public let mean: Tensor
    /// Log-variance, clamped to [-30, 20] as diffusers does.
    public let logvar: Tensor
    public let std: Tensor
    public let `var`: Tensor
    /// diffusers' `deterministic`: std and var are zeros and kl / nll are 0.
    public let deterministic: Bool

    /// Splits `parameters` [B, 2C, …] into mean and log-variance along axis 1.
    public init(parameters: Tensor, deterministic: Bool = false) {
        precondition(parameters.rank >= 2 && parameters.shape[1] % 2 == 0,
                     "DiagonalGaussianDistribution: parameters need an even channel count on axis 1, got \(parameters.shape)")
        self.parameters = parameters
        let halves = parameters.chunk(2, axis: 1)
        mean = halves[0]
        logvar = halves[1].clamp(min: -30, max: 20)
        self.deterministic = deterministic
        if deterministic {
            std = Tensor.zeros(like: mean)
            `var` = Tensor.zeros(like: mean)
        } else {
            std = (logvar * 0.5).exp()
            `var` = logvar.exp()
        }
    }

    /// mean + std · noise, for a caller-supplied standard-normal `noise` shaped like `mean`.
    public func sample(noise: Tensor) -> Tensor {
        precondition(noise.shape == mean.shape, "DiagonalGaussianDistribution.sample: noise \(noise.shape) vs mean \(mean.shape)")
        return mean + std * noise
    }

    /// mean + std · ε with ε drawn from `generator` (advances it; same numbers on every backend).
    public func sample(generator: inout PhiloxGenerator) -> Tensor {
        sample(noise: Tensor.randn(mean.shape, generator: &generator, dtype: mean.dtype, device: mean.device))
    }

    /// The mean (diffusers' `mode()`).
    public func mode() -> Tensor { mean }

    /// KL(self ‖ other) summed over the non-batch axes, [B]; `other` nil is the standard normal:
    /// 0.5 · Σ(mean² + var − 1 − logvar). A deterministic distribution gives [0].
    public func kl(_ other: DiagonalGaussianDistribution? = nil) -> Tensor {
        if deterministic { return Tensor([0.0], shape: [1], dtype: mean.dtype, device: mean.device) }
        let axes = Array(1..<mean.rank)
        let terms: Tensor
        if let other {
            terms = (mean - other.mean).square() / other.var + `var` / other.var - 1.0 - logvar + other.logvar
        } else {
            terms = mean.square() + `var` - 1.0 - logvar
        }
        return terms.sum(axes: axes) * 0.5
    }

    /// Negative log-likelihood of `sample` summed over `axes` (default: the non-batch axes):
    /// 0.5 · Σ(log 2π + logvar + (sample − mean)² / var). A deterministic distribution gives [0].
    public func nll(_ sample: Tensor, axes: [Int]? = nil) -> Tensor {
        if deterministic { return Tensor([0.0], shape: [1], dtype: mean.dtype, device: mean.device) }
        let terms = (logvar + (sample - mean).square() / `var`) + Foundation.log(2 * Double.pi)
        return terms.sum(axes: axes ?? Array(1..<mean.rank)) * 0.5
    }
}
