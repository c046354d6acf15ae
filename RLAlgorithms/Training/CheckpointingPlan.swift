import Foundation
import TensorKit

// `gradient_checkpointing auto`: checkpoint the UNet's blocks only when a training pass would not
// fit in the device's memory without it. Recomputing every block in the backward pass costs about a
// third of the training time, so a GPU with room to spare should not pay it.
//
// The trainer decides once, before its first training pass, when the epoch's samples exist and the
// sampling buffers are back in the allocator's cache. It runs the training forward and backward (the
// guided UNet prediction at the real train batch, prompts and timesteps, checkpointing off) on the
// samples' latents cut to a quarter, three eighths and half of each side, and reads the allocator's
// peak of requested bytes above what was in use before each. Those bytes are a polynomial in the
// latent's pixel count: convolution, norm and flash-attention activations grow with it, attention
// that materialises its scores grows with its square, and weights, their gradients and the text
// states do not grow. The parabola through the three probes gives the full-size pass (never less than
// the line through the two largest), and checkpointing goes on when that, with a margin for the
// allocator's rounding and the optimizer's first state, does not fit in what the device has left.
//
//   let plan = CheckpointingPlan.decide(probes: [(256, 2.1e9), (576, 3.0e9), (1024, 4.3e9)],
//                                       pixels: 4096, reservedBytes: 0, availableBytes: 60e9)
//   plan.checkpointing      // false: about 12.5 GB needed, 60 GB left

/// Who decides whether the UNet checkpoints its blocks in DDPO's training passes.
public enum GradientCheckpointingPolicy: Equatable, Sendable {
    /// The UNet's `gradientCheckpointing` as the caller set it.
    case unchanged
    /// The trainer measures a training pass on a GPU and checkpoints only when it would not fit
    /// (`CheckpointingPlan`); on the CPU it leaves the UNet's setting.
    case auto
}

/// Device memory as the `auto` decision reads it.
public protocol TrainingMemoryMeter: AnyObject {
    /// Bytes a new allocation could still get: free device memory and the allocator's cached blocks.
    func availableBytes() -> Int
    /// Runs `body` and returns the peak of bytes requested by live tensors while it ran, above the
    /// bytes requested by those live before it.
    func peakBytes(during body: () throws -> Void) rethrows -> Int
}

/// `TrainingMemoryMeter` for CUDA device `index`: the caching allocator's requested bytes, and
/// `cuMemGetInfo`'s free memory plus the allocator's cache. Measuring resets the allocator's peaks.
public final class CUDATrainingMemoryMeter: TrainingMemoryMeter {
    public let index: Int

    public init(index: Int) { self.index = index }

    public func availableBytes() -> Int {
        try? CUDA.synchronize(index)
        guard let memory = CUDA.deviceMemory(index) else { return 0 }
        return memory.free + CUDA.memoryStats(index).cached
    }

    public func peakBytes(during body: () throws -> Void) rethrows -> Int {
        try? CUDA.synchronize(index)
        CUDA.resetPeakMemory(index)
        let before = CUDA.memoryStats(index).requestedInUse
        try body()
        try? CUDA.synchronize(index)
        return max(0, CUDA.memoryStats(index).peakRequested - before)
    }
}

/// The `auto` gradient-checkpointing decision and the numbers behind it.
public struct CheckpointingPlan: Equatable, Sendable {
    /// The probes: latent pixels (height × width) and the measured peak bytes of a training pass.
    public var probes: [Probe]
    /// The latent pixels of a real training pass.
    public var pixels: Int
    /// The full-size pass, extrapolated from the probes.
    public var estimatedBytes: Int
    /// Held back besides the pass (the optimizer's state before its first step).
    public var reservedBytes: Int
    /// What the device had left.
    public var availableBytes: Int
    /// Whether the UNet checkpoints its blocks.
    public var checkpointing: Bool

    public struct Probe: Equatable, Sendable {
        public var pixels: Int
        public var bytes: Int
        public init(pixels: Int, bytes: Int) { self.pixels = pixels; self.bytes = bytes }
    }

    /// The extrapolation is scaled by this and `headroomBytes` added before comparing with the
    /// available memory: the allocator rounds blocks up (to 2 MiB above 1 MiB) and keeps freed blocks
    /// in per-size lists, so a full-size pass holds more than the tensors ask for.
    public static let margin = 1.25
    public static let headroomBytes = 1 << 30

    /// Extrapolates `probes` (at increasing pixel counts) to `pixels` and decides. One probe (taken at
    /// the full size, for latents too small to cut) is used as it is.
    public static func decide(probes: [Probe], pixels: Int, reservedBytes: Int, availableBytes: Int) -> CheckpointingPlan {
        let estimate = extrapolate(probes, to: pixels)
        let needed = Double(estimate) * margin + Double(headroomBytes) + Double(reservedBytes)
        return CheckpointingPlan(probes: probes, pixels: pixels, estimatedBytes: estimate, reservedBytes: reservedBytes,
                                 availableBytes: availableBytes, checkpointing: needed > Double(availableBytes))
    }

    /// The bytes at `pixels`: the parabola through the last three probes, never below the line
    /// through the last two (nor below the largest probe); a single probe as it is.
    public static func extrapolate(_ probes: [Probe], to pixels: Int) -> Int {
        guard let last = probes.last else { return 0 }
        guard probes.count >= 2 else { return last.bytes }
        let x = Double(pixels)
        let p = probes.suffix(3).map { (Double($0.pixels), Double($0.bytes)) }
        let (x1, y1) = p[p.count - 2], (x2, y2) = p[p.count - 1]
        let line = y2 + (y2 - y1) / (x2 - x1) * (x - x2)
        var estimate = max(line, y2)
        if p.count == 3 {
            let (x0, y0) = p[0]
            let parabola = y0 * (x - x1) * (x - x2) / ((x0 - x1) * (x0 - x2))
                + y1 * (x - x0) * (x - x2) / ((x1 - x0) * (x1 - x2))
                + y2 * (x - x0) * (x - x1) / ((x2 - x0) * (x2 - x1))
            estimate = max(estimate, parabola)
        }
        return Int(estimate.rounded(.up))
    }

    /// The latent sizes to probe for a `height` × `width` latent whose sides the UNet needs in
    /// multiples of `multiple`: a quarter, three eighths and half of each side, rounded to the
    /// multiple. When these are not three distinct sizes below the full one, the full size alone.
    public static func probeSizes(height: Int, width: Int, multiple: Int) -> [(height: Int, width: Int)] {
        func cut(_ side: Int, _ eighths: Int) -> Int {
            max(multiple, (side * eighths + 4 * multiple) / (8 * multiple) * multiple)
        }
        let sizes = [2, 3, 4].map { (height: cut(height, $0), width: cut(width, $0)) }
        let pixels = sizes.map { $0.height * $0.width }
        if pixels[0] < pixels[1], pixels[1] < pixels[2], pixels[2] < height * width { return sizes }
        return [(height, width)]
    }

    /// One line for a log: the decision, the estimate and what was left.
    public var summary: String {
        func gib(_ b: Int) -> String { String(format: "%.1f GiB", Double(b) / Double(1 << 30)) }
        let need = "a training pass needs about \(gib(estimatedBytes))"
            + (reservedBytes > 0 ? " (and \(gib(reservedBytes)) for the optimizer)" : "")
        return "gradient checkpointing \(checkpointing ? "on" : "off") (auto: \(need), \(gib(availableBytes)) available)"
    }
}
