import Foundation

// Timestep embeddings, as in diffusers `models/embeddings.py`.
//
// API:
//   let proj = Timesteps(numChannels: 320, flipSinToCos: true, downscaleFreqShift: 0)
//   let tEmb = proj([999, 17])                      // [2, 320] float32 (no parameters, no gradient)
//   let embed = TimestepEmbedding(inChannels: 320, timeEmbedDim: 1280, generator: &g)
//   let emb = embed(tEmb)                           // [2, 1280]; keys linear_1.*, linear_2.*
//
// `Timesteps` is a parameter-free Module so a model can hold it under diffusers' name `time_proj`
// without adding checkpoint keys.

/// Sinusoidal features of (possibly fractional) timesteps: diffusers' `Timesteps` /
/// `get_timestep_embedding`. For half = numChannels / 2 and i < half,
/// f_i = exp(-ln(maxPeriod) · i / (half − downscaleFreqShift)), and the row for t is
/// [sin(scale·t·f), cos(scale·t·f)] (cos first when `flipSinToCos`), zero-padded to an odd width.
public final class Timesteps: Module {
    public let numChannels: Int
    public let flipSinToCos: Bool
    public let downscaleFreqShift: Double
    public let scale: Double
    public let maxPeriod: Double

    public init(numChannels: Int, flipSinToCos: Bool, downscaleFreqShift: Double, scale: Double = 1,
                maxPeriod: Double = 10000) {
        precondition(numChannels >= 2, "Timesteps: numChannels must be at least 2, got \(numChannels)")
        self.numChannels = numChannels
        self.flipSinToCos = flipSinToCos
        self.downscaleFreqShift = downscaleFreqShift
        self.scale = scale
        self.maxPeriod = maxPeriod
        super.init()
    }

    /// The frequencies, computed with the same float32 operations as diffusers (arange · −ln P, then
    /// a division, then exp). Timesteps reach ~1000, so one float32 ulp in f moves t·f by ~6e-5:
    /// reproducing the rounding keeps the embedding within ~1e-7 of diffusers' instead.
    public var frequencies: [Float] {
        let half = numChannels / 2
        let logPeriod = Float(-Foundation.log(maxPeriod))
        let denominator = Float(Double(half) - downscaleFreqShift)
        return (0..<half).map { i in Foundation.exp((logPeriod * Float(i)) / denominator) }
    }

    /// [N] timesteps → [N, numChannels].
    public func callAsFunction(_ timesteps: [Double], dtype: DType = .float32, device: Device = .cpu) -> Tensor {
        let half = numChannels / 2
        let freqs = frequencies
        let scaleF = Float(scale)
        var values = [Float](repeating: 0, count: timesteps.count * numChannels)
        for (row, t) in timesteps.enumerated() {
            let tf = Float(t)
            let base = row * numChannels
            let (sinStart, cosStart) = flipSinToCos ? (half, 0) : (0, half)
            for i in 0..<half {
                // float32 product, then sin/cos of that float32 value (as torch does).
                let arg = scaleF * (tf * freqs[i])
                values[base + sinStart + i] = Float(Foundation.sin(Double(arg)))
                values[base + cosStart + i] = Float(Foundation.cos(Double(arg)))
            }
        }
        return Tensor(values, shape: [timesteps.count, numChannels], dtype: dtype, device: device)
    }

    /// A 1-D tensor of timesteps (any dtype) → [N, numChannels] in `dtype` on the tensor's device.
    public func callAsFunction(_ timesteps: Tensor, dtype: DType = .float32) -> Tensor {
        precondition(timesteps.rank == 1, "Timesteps expects a 1-D tensor of timesteps, got shape \(timesteps.shape)")
        return self(timesteps.toArray(), dtype: dtype, device: timesteps.device)
    }
}

/// diffusers' `TimestepEmbedding` with its defaults: linear_1 → SiLU → linear_2
/// (no `cond_proj`, no post-activation; configurations that need them are refused by the model).
public final class TimestepEmbedding: Module {
    public var linear_1: Linear
    public var linear_2: Linear

    public init(inChannels: Int, timeEmbedDim: Int, outDim: Int? = nil, dtype: DType = .float32,
                generator: inout PhiloxGenerator) {
        linear_1 = Linear(inChannels, timeEmbedDim, dtype: dtype, generator: &generator)
        linear_2 = Linear(timeEmbedDim, outDim ?? timeEmbedDim, dtype: dtype, generator: &generator)
        super.init()
    }

    public func callAsFunction(_ sample: Tensor) -> Tensor {
        linear_2(linear_1(sample).silu())
    }
}
