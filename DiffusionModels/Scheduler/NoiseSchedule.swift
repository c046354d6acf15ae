import Foundation

/// The training noise schedule (betas and ᾱ = cumulative product of 1 − β), computed with the
/// same float32 rounding as diffusers so that ᾱ agrees bit for bit: diffusers builds betas as
/// float32 torch tensors, and torch's CPU `cumprod` accumulates float32 in double.
enum NoiseSchedule {
    /// Betas for `config` (float32, as diffusers stores them).
    static func betas(_ config: DDIMSchedulerConfig) -> [Float] {
        var betas: [Float]
        if let trained = config.trainedBetas {
            betas = trained.map { Float($0) }
        } else {
            let n = config.numTrainTimesteps
            switch config.betaSchedule {
            case .linear:
                betas = torchLinspace(Float(config.betaStart), Float(config.betaEnd), n)
            case .scaledLinear:
                // Latent-diffusion schedule: linear in √β (roots taken in double, as Python does).
                betas = torchLinspace(Float(config.betaStart.squareRoot()), Float(config.betaEnd.squareRoot()), n)
                    .map { $0 * $0 }
            case .squaredcosCapV2:
                betas = cosineBetas(n)
            }
        }
        if config.rescaleBetasZeroSnr { betas = rescaleZeroTerminalSNR(betas) }
        return betas
    }

    /// `torch.linspace(start, end, n, dtype=float32)` on the CPU, element for element: a float32
    /// step, each half anchored at its own end, products and sums with a single rounding.
    static func torchLinspace(_ start: Float, _ end: Float, _ n: Int) -> [Float] {
        if n == 1 { return [start] }
        let step = Double((end - start) / Float(n - 1))
        let halfway = n / 2
        return (0..<n).map { i in
            i < halfway ? Float(Double(start) + step * Double(i)) : Float(Double(end) - step * Double(n - i - 1))
        }
    }

    /// The "squaredcos_cap_v2" (Glide cosine) schedule: β_i = min(1 − ᾱ(t_{i+1})/ᾱ(t_i), 0.999)
    /// with ᾱ(t) = cos²((t + 0.008)/1.008 · π/2), in double, stored as float32.
    static func cosineBetas(_ n: Int, maxBeta: Double = 0.999) -> [Float] {
        func alphaBar(_ t: Double) -> Double {
            let c = Foundation.cos((t + 0.008) / 1.008 * Double.pi / 2)
            return c * c
        }
        return (0..<n).map { i in
            let t1 = Double(i) / Double(n), t2 = Double(i + 1) / Double(n)
            return Float(Swift.min(1 - alphaBar(t2) / alphaBar(t1), maxBeta))
        }
    }

    /// ᾱ_t = ∏_{s ≤ t} (1 − β_s), accumulated in double and rounded per element (torch CPU cumprod).
    static func alphasCumprod(_ betas: [Float]) -> [Float] {
        var running = 1.0
        return betas.map { beta in
            running *= Double(1 - beta)
            return Float(running)
        }
    }

    /// Rescales betas so the last timestep has zero signal-to-noise ratio (Lin et al. 2023,
    /// Algorithm 1), in float32 like diffusers' `rescale_zero_terminal_snr`.
    static func rescaleZeroTerminalSNR(_ betas: [Float]) -> [Float] {
        var root = alphasCumprod(betas).map { $0.squareRoot() }
        guard let first = root.first, let last = root.last else { return betas }
        let scale = first / (first - last)
        for i in root.indices { root[i] = (root[i] - last) * scale }
        let alphaBar = root.map { $0 * $0 }
        return alphaBar.indices.map { i in 1 - (i == 0 ? alphaBar[0] : alphaBar[i] / alphaBar[i - 1]) }
    }
}
