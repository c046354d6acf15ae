import Foundation

// DDPO's clipped PPO objective for one (sample batch, timestep), TRL 0.21 `DDPOTrainer.calculate_loss`
// after the log-prob of the stored next latent is recomputed (REFERENCES.md §4):
//
//     Â        = clamp(A, −adv_clip_max, adv_clip_max)
//     ratio    = exp(logp_new − logp_old)
//     loss     = mean(max(−Â·ratio, −Â·clamp(ratio, 1 − ε, 1 + ε)))
//     approx_kl = ½·mean((logp_new − logp_old)²),   clipfrac = mean(|ratio − 1| > ε)
//
//     let out = PPOLoss.compute(logProbNew: logp, logProbOld: sample.logProbs, advantages: sample.advantages,
//                               clipRange: config.trainClipRange, advantageClipMax: config.trainAdvClipMax)
//     out.loss.backward()          // gradient flows into logp_new only
//     log(out.approxKL, out.clipFraction)   // each read waits for the device; `out.statistics` defers it

/// The loss (a differentiable scalar tensor) and the two logged statistics. The statistics stay on
/// the loss's device until read: `approxKL` and `clipFraction` read them back (each read waits for
/// the device), and `statistics` holds both for reading many passes at once (the trainer reads a
/// whole optimizer step's worth with one transfer).
public struct PPOLossOutput {
    /// 0-d tensor, differentiable with respect to `logProbNew`.
    public var loss: Tensor
    /// [2 + B], no gradient: the loss, ½·mean((logp_new − logp_old)²), then 1 for each sample whose
    /// ratio is clipped (|ratio − 1| > ε) and 0 otherwise. `PPOLossOutput.values(of:)` reads it.
    public var statistics: Tensor

    public var approxKL: Double { Self.values(of: statistics.toArray()).approxKL }
    public var clipFraction: Double { Self.values(of: statistics.toArray()).clipFraction }

    /// The loss, approx_kl and clipfrac from the values of `statistics`.
    public static func values(of statistics: [Double]) -> (loss: Double, approxKL: Double, clipFraction: Double) {
        precondition(statistics.count >= 2, "PPOLossOutput.values: expected [loss, approx_kl, clipped…], got \(statistics.count) values")
        let clipped = statistics.dropFirst(2)
        return (statistics[0], statistics[1], clipped.reduce(0, +) / Double(max(clipped.count, 1)))
    }
}

public enum PPOLoss {
    /// `logProbNew`, `logProbOld`, `advantages`: [B] tensors of one dtype and device (`logProbOld` and
    /// `advantages` are treated as constants). `clipRange` = TRL's `train_clip_range` (ε),
    /// `advantageClipMax` = `train_adv_clip_max`.
    public static func compute(logProbNew: Tensor, logProbOld: Tensor, advantages: Tensor,
                               clipRange: Double, advantageClipMax: Double) -> PPOLossOutput {
        precondition(logProbNew.shape == logProbOld.shape && logProbNew.shape == advantages.shape,
                     "PPOLoss: log-probs and advantages must have one shape, got \(logProbNew.shape), \(logProbOld.shape), \(advantages.shape)")
        precondition(clipRange >= 0 && advantageClipMax >= 0,
                     "PPOLoss: clip range and advantage clip must be non-negative, got \(clipRange), \(advantageClipMax)")
        let old = logProbOld.detach()
        let adv = advantages.detach().clamp(min: -advantageClipMax, max: advantageClipMax)
        let delta = logProbNew - old
        let ratio = delta.exp()
        let unclipped = (adv * -1) * ratio
        let clipped = (adv * -1) * ratio.clamp(min: 1 - clipRange, max: 1 + clipRange)
        let loss = unclipped.maximum(clipped).mean()
        let statistics = withNoGrad { () -> Tensor in
            let kl = (delta * delta).mean() * 0.5
            let outside = (ratio.detach() - 1).abs().gt(clipRange).reshape([-1])
            return Tensor.concat([loss.detach().reshape([1]).to(kl.dtype), kl.reshape([1]), outside.to(kl.dtype)], axis: 0)
        }
        return PPOLossOutput(loss: loss, statistics: statistics)
    }
}
