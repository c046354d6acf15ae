import Foundation
import XCTest
import RLAlgorithms

/// The mixed-precision dtype table and the fp16 loss scaler, against torch.cuda.amp.GradScaler's
/// documented rule (defaults: scale 2^16, growth ×2 every 2000 finite steps, backoff ×0.5 and skip on
/// inf/NaN), with gradients worked out by hand.
final class MixedPrecisionTests: XCTestCase {
    func testComponentDTypes() throws {
        XCTAssertEqual(try MixedPrecision(config: "fp16").computeDType, .float16)
        XCTAssertEqual(MixedPrecision.fp16.vaeDType, .float32, "SD's VAE decoder overflows float16")
        XCTAssertEqual(MixedPrecision.bf16.vaeDType, .bfloat16)
        XCTAssertEqual(MixedPrecision.fp16.unetDType(trainsWholeUNet: false), .float16)
        XCTAssertEqual(MixedPrecision.fp16.unetDType(trainsWholeUNet: true), .float32, "trained weights stay float32")
        XCTAssertEqual(MixedPrecision.no.computeDType, .float32)
        XCTAssertTrue(MixedPrecision.fp16.needsLossScaling)
        XCTAssertFalse(MixedPrecision.bf16.needsLossScaling)
        XCTAssertThrowsError(try MixedPrecision(config: "fp8")) { error in
            XCTAssertTrue("\(error)".contains("mixed_precision"), "\(error)")
        }
    }

    func testUnscaleDividesGradientsAndGrowsAfterTheInterval() {
        let p = Tensor([0, 0] as [Double], shape: [2]).requiringGrad()
        var scaler = DynamicLossScaler(initialScale: 8, growthInterval: 2)
        p.grad = Tensor([4, -16] as [Double], shape: [2])
        scaler.unscale([p])
        XCTAssertEqual(p.grad!.toArray(), [0.5, -2])
        XCTAssertTrue(scaler.update(gradientNorm: 2.06))
        XCTAssertEqual(scaler.scale, 8)
        XCTAssertEqual(scaler.goodSteps, 1)
        p.grad = Tensor([8, 8] as [Double], shape: [2])
        scaler.unscale([p])
        XCTAssertEqual(p.grad!.toArray(), [1, 1])
        XCTAssertTrue(scaler.update(gradientNorm: 1.41))
        XCTAssertEqual(scaler.scale, 16, "two finite steps with growthInterval 2 double the scale")
        XCTAssertEqual(scaler.goodSteps, 0)
    }

    func testNonFiniteGradientSkipsAndBacksOff() {
        var scaler = DynamicLossScaler()
        XCTAssertEqual(scaler.scale, 65536)
        XCTAssertFalse(scaler.update(gradientNorm: .infinity))
        XCTAssertEqual(scaler.scale, 32768)
        XCTAssertEqual(scaler.skippedSteps, 1)
        XCTAssertFalse(scaler.update(gradientNorm: .nan))
        XCTAssertEqual(scaler.scale, 16384)
        XCTAssertEqual(scaler.goodSteps, 0)
    }
}
