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
//     log(out.approxKL, out.clipFraction)

/// The loss (a differentiable scalar tensor) and the two logged statistics.
public struct PPOLossOutput {
    /// 0-d tensor, differentiable with respect to `logProbNew`.
    public var loss: Tensor
    public var approxKL: Double
    public var clipFraction: Double
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
        let (kl, fraction) = withNoGrad { () -> (Double, Double) in
            let kl = 0.5 * (delta * delta).mean().item()
            let outside = (ratio.detach() - 1).abs().gt(clipRange).toArray()
            return (kl, outside.reduce(0, +) / Double(max(outside.count, 1)))
        }
        return PPOLossOutput(loss: loss, approxKL: kl, clipFraction: fraction)
    }
}
