import Foundation
import XCTest
@testable import RLAlgorithms

/// The `auto` gradient-checkpointing decision: the extrapolation through the probes against
/// polynomials evaluated by hand, the probe sizes worked out by hand, the threshold on both sides,
/// and the trainer's probe, which must leave training exactly as it was.
final class CheckpointingPlanTests: XCTestCase {
    typealias Probe = CheckpointingPlan.Probe

    /// bytes = 1000 + 3p + p²/64 at p = 256, 576, 1024 is 2792, 7912, 20456; at 4096 it is
    /// 1000 + 12288 + 262144 = 275432 (the line through the last two would give 106472).
    func testExtrapolationFollowsTheParabolaThroughTheProbes() {
        let probes = [Probe(pixels: 256, bytes: 2792), Probe(pixels: 576, bytes: 7912), Probe(pixels: 1024, bytes: 20456)]
        XCTAssertEqual(Double(CheckpointingPlan.extrapolate(probes, to: 4096)), 275_432, accuracy: 1)
    }

    /// bytes = 4096 + 10p − p²/256 at p = 256, 576, 1024 is 6400, 8560, 10240; its parabola falls to
    /// −20480 at 4096, so the line through the last two (slope 1680/448 = 3.75) gives
    /// 10240 + 3.75 · 3072 = 21760.
    func testExtrapolationNeverFallsBelowTheLineThroughTheLastTwo() {
        let probes = [Probe(pixels: 256, bytes: 6400), Probe(pixels: 576, bytes: 8560), Probe(pixels: 1024, bytes: 10240)]
        XCTAssertEqual(Double(CheckpointingPlan.extrapolate(probes, to: 4096)), 21_760, accuracy: 1)
        // Two probes: the line alone; one probe (taken at the full size): itself.
        XCTAssertEqual(Double(CheckpointingPlan.extrapolate(Array(probes.suffix(2)), to: 4096)), 21_760, accuracy: 1)
        XCTAssertEqual(CheckpointingPlan.extrapolate([Probe(pixels: 64, bytes: 12345)], to: 64), 12345)
    }

    /// One probe of 8 GiB at the full size needs 8 · 1.25 + 1 = 11 GiB: off with 11 GiB left, on with
    /// a byte less, and on with 11 GiB when 512 MiB of optimizer state is still to come.
    func testDecisionComparesTheEstimateWithMarginToWhatIsLeft() {
        let gib = 1 << 30
        let probe = [Probe(pixels: 4096, bytes: 8 * gib)]
        let fits = CheckpointingPlan.decide(probes: probe, pixels: 4096, reservedBytes: 0, availableBytes: 11 * gib)
        XCTAssertFalse(fits.checkpointing)
        XCTAssertEqual(fits.estimatedBytes, 8 * gib)
        XCTAssertTrue(CheckpointingPlan.decide(probes: probe, pixels: 4096, reservedBytes: 0, availableBytes: 11 * gib - 1).checkpointing)
        XCTAssertTrue(CheckpointingPlan.decide(probes: probe, pixels: 4096, reservedBytes: gib / 2, availableBytes: 11 * gib).checkpointing)
        XCTAssertEqual(fits.summary, "gradient checkpointing off (auto: a training pass needs about 8.0 GiB, 11.0 GiB available)")
    }

    /// SD 1.5 at 512² (64² latents, sides in multiples of 8): 16, 24, 32. A 96 × 64 latent: heights
    /// 24, 36 → 40, 48 and widths 16, 24, 32. Latents too small for three distinct smaller sizes
    /// (32² in multiples of 8 gives 8, 16, 16; the tiny test model's 8² in multiples of 2 gives 2, 4, 4)
    /// are probed at their full size.
    func testProbeSizes() {
        func sizes(_ h: Int, _ w: Int, _ m: Int) -> [[Int]] {
            CheckpointingPlan.probeSizes(height: h, width: w, multiple: m).map { [$0.height, $0.width] }
        }
        XCTAssertEqual(sizes(64, 64, 8), [[16, 16], [24, 24], [32, 32]])
        XCTAssertEqual(sizes(96, 64, 8), [[24, 16], [40, 24], [48, 32]])
        XCTAssertEqual(sizes(32, 32, 8), [[32, 32]])
        XCTAssertEqual(sizes(8, 8, 2), [[8, 8]])
    }
}

/// A meter that reports fixed numbers and checks what the trainer does inside a probe: the
/// trainable parameters start without gradients and have them after the probe's body (a backward
/// pass reached them).
final class FakeTrainingMemoryMeter: TrainingMemoryMeter {
    let available: Int
    let bytes: Int
    var parameters: [Tensor] = []
    private(set) var probes = 0
    private(set) var probesWithGradients = 0
    private(set) var probesStartingClean = 0

    init(available: Int, bytes: Int) { self.available = available; self.bytes = bytes }

    func availableBytes() -> Int { available }

    func peakBytes(during body: () throws -> Void) rethrows -> Int {
        if parameters.allSatisfy({ $0.grad == nil }) { probesStartingClean += 1 }
        try body()
        probes += 1
        if !parameters.isEmpty, parameters.allSatisfy({ $0.grad != nil }) { probesWithGradients += 1 }
        return bytes
    }
}

extension DDPOTrainerTests {
    /// `auto` with a meter: the probe runs a backward pass at the tiny model's full latent size (one
    /// probe, see testProbeSizes) and the decision follows the meter's numbers. The probe leaves no
    /// trace: with checkpointing decided off, the epoch's rewards and trained LoRA weights are
    /// bit-identical to a run that never probed; decided on, equal to rounding. On the CPU without a
    /// meter, `auto` keeps the UNet's setting.
    func testAutoCheckpointingProbesWithoutChangingTraining() throws {
        func run(_ meter: FakeTrainingMemoryMeter?, auto: Bool) throws -> (DDPOTrainer, [CheckpointingPlan]) {
            var config = smallConfig(logdir: try temporaryDirectory())
            config.save_freq = 100
            let trainer = try makeTrainer(config)
            var plans: [CheckpointingPlan] = []
            trainer.onEvent = { if case let .checkpointing(plan) = $0 { plans.append(plan) } }
            if auto { trainer.gradientCheckpointing = .auto }
            meter?.parameters = trainer.optimizer.parameters
            trainer.memoryMeter = meter
            try trainer.train(epochs: 1)
            return (trainer, plans)
        }
        let (plain, _) = try run(nil, auto: false)
        let roomy = FakeTrainingMemoryMeter(available: 64 << 30, bytes: 1 << 20)
        let (off, offPlans) = try run(roomy, auto: true)
        let tight = FakeTrainingMemoryMeter(available: 1 << 30, bytes: 1 << 20)
        let (on, onPlans) = try run(tight, auto: true)
        let (cpu, cpuPlans) = try run(nil, auto: true)

        for meter in [roomy, tight] {
            XCTAssertEqual(meter.probes, 1)
            XCTAssertEqual(meter.probesStartingClean, 1)
            XCTAssertEqual(meter.probesWithGradients, 1)
        }
        XCTAssertEqual(offPlans.map(\.checkpointing), [false])
        XCTAssertEqual(offPlans.first?.probes, [CheckpointingPlan.Probe(pixels: 64, bytes: 1 << 20)])
        XCTAssertEqual(offPlans.first?.pixels, 64)
        XCTAssertFalse(off.pipeline.unet.gradientCheckpointing)
        // 1 MiB · 1.25 + 1 GiB + AdamW's two float32 moments of the LoRA weights > 1 GiB.
        XCTAssertEqual(onPlans.map(\.checkpointing), [true])
        XCTAssertEqual(onPlans.first?.reservedBytes, off.optimizer.parameters.reduce(0) { $0 + 8 * $1.numel })
        XCTAssertTrue(on.pipeline.unet.gradientCheckpointing)
        XCTAssertTrue(cpuPlans.isEmpty)
        XCTAssertNil(cpu.checkpointingPlan)
        XCTAssertFalse(cpu.pipeline.unet.gradientCheckpointing)

        let reference = loraWeights(plain)
        XCTAssertTrue(reference.contains { $0.key.hasSuffix("lora.up.weight") && $0.value.contains { $0 != 0 } })
        for (name, trainer) in [("off", off), ("on", on), ("cpu", cpu)] {
            XCTAssertEqual(trainer.history.last?.rewards, plain.history.last?.rewards, name)
            XCTAssertEqual(trainer.globalStep, plain.globalStep, name)
            let weights = loraWeights(trainer)
            if trainer === on {
                // Checkpointed blocks add their gradient contributions in another order: the same
                // training to rounding. The 8 Adam steps at lr 1e-3 move weights by up to ~8e-3.
                var largest = 0.0
                for (key, value) in reference { for (a, b) in zip(weights[key]!, value) { largest = max(largest, abs(a - b)) } }
                XCTAssertLessThan(largest, 1e-5, name)
            } else {
                let differing = reference.keys.filter { weights[$0] != reference[$0] }
                XCTAssertEqual(differing.count, 0, "\(name): \(differing.count) of \(reference.count) weights differ")
            }
        }
    }
}
