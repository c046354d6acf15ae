import Foundation

/// Dynamic thresholding of a predicted x̂₀ (Imagen, Saharia et al. 2022), as diffusers'
/// `_threshold_sample`: per sample, s = the `ratio` quantile of |x̂₀| clamped to
/// [1, maxValue]; x̂₀ is clamped to [−s, s] and divided by s.
///
/// The quantile reproduces `torch.quantile` (linear interpolation) to the bit, and gradients flow
/// as in torch: through the clamp, and into the two order statistics the quantile interpolates.
func dynamicThreshold(_ x: Tensor, ratio: Double, maxValue: Double) -> Tensor {
    let batch = x.shape[0]
    let n = x.numel / Swift.max(batch, 1)
    let flat = x.reshape([batch, n])
    let magnitude = flat.abs()

    let values = withNoGrad { magnitude.toArray() }
    var thresholds = [Double](repeating: 0, count: batch)
    var pickWeights = [Double](repeating: 0, count: batch * n)
    for b in 0..<batch {
        let row = Array(values[(b * n)..<((b + 1) * n)])
        let order = row.indices.sorted { row[$0] < row[$1] }
        let q = quantile(sorted: order.map { row[$0] }, ratio, float64: x.dtype == .float64)
        thresholds[b] = q.value
        pickWeights[b * n + order[q.lowRank]] += 1 - q.weight
        pickWeights[b * n + order[q.highRank]] += q.weight
    }

    // s carries torch's exact quantile value; the zero-valued term routes its gradient to the
    // two interpolated elements with weights (1 − w, w), as torch.quantile's backward does.
    let picks = Tensor(pickWeights, shape: [batch, n], dtype: x.dtype, device: x.device)
    let picked = (magnitude * picks).sum(axis: 1, keepDims: true)
    let level = Tensor(thresholds, shape: [batch, 1], dtype: x.dtype, device: x.device) + (picked - picked.detach())
    let s = level.clamp(min: 1, max: maxValue)
    // torch.clamp(x, −s, s): the gradient goes to x inside the band (ties included), to s outside.
    let clamped = Tensor.where(flat.gt(s), s, Tensor.where(flat.lt(-s), -s, flat))
    return (clamped / s).reshape(x.shape)
}

/// `torch.quantile(values, ratio)` with linear interpolation, rounded as torch rounds it: for
/// float32 data the rank is q·(n − 1) with q rounded to float32 and the product in double, the
/// weight is float32 and the lerp is torch's two-sided formula with a single rounding; float64
/// data runs the same steps in double.
private func quantile(sorted: [Double], _ ratio: Double, float64: Bool)
    -> (value: Double, lowRank: Int, highRank: Int, weight: Double) {
    let n = sorted.count
    let rank = (float64 ? ratio : Double(Float(ratio))) * Double(n - 1)
    let lowRank = Int(rank.rounded(.down)), highRank = Int(rank.rounded(.up))
    let lo = sorted[lowRank], hi = sorted[highRank]
    if float64 {
        let w = rank - Double(lowRank), span = hi - lo
        return (w < 0.5 ? lo + w * span : hi - span * (1 - w), lowRank, highRank, w)
    }
    let w = Float(rank - Double(lowRank))
    let span = Double(Float(hi) - Float(lo))
    let value = w < 0.5 ? Float(lo + Double(w) * span) : Float(hi - span * Double(1 - w))
    return (Double(value), lowRank, highRank, Double(w))
}
