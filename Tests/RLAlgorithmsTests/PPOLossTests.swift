import Foundation
import XCTest
@testable import RLAlgorithms

/// The PPO loss against TRL 0.21's calculate_loss/loss (fixture, float64) and finite differences.
final class PPOLossTests: XCTestCase {
    private func tensor(_ v: [Double], _ dtype: DType = .float64) -> Tensor { Tensor(v, shape: [v.count], dtype: dtype) }

    func testMatchesTRL() throws {
        for c in try DDPOMathFixture.load().ppo {
            let logp = tensor(c.logp_new).requiringGrad()
            let out = PPOLoss.compute(logProbNew: logp, logProbOld: tensor(c.logp_old), advantages: tensor(c.advantages),
                                      clipRange: c.clip_range, advantageClipMax: c.adv_clip_max)
            XCTAssertEqual(out.loss.shape, [])
            assertRelClose([out.loss.item()], [c.loss], rtol: 1e-12, atol: 1e-15, "\(c.name) loss")
            assertRelClose([out.approxKL], [c.approx_kl], rtol: 1e-12, atol: 1e-18, "\(c.name) approx_kl")
            // TRL's clipfrac is a float32 mean of booleans; the fraction itself is exact.
            XCTAssertEqual(out.clipFraction, c.clipfrac, accuracy: 1e-7, "\(c.name) clipfrac")
            out.loss.backward()
            assertRelClose(logp.grad!.toArray(), c.grad_logp_new, rtol: 1e-12, atol: 1e-15, "\(c.name) gradient")
            XCTAssertTrue(c.clipfrac > 0 && c.clipfrac < 1, "\(c.name) should exercise both branches")
        }
    }

    /// Central differences of the loss in float64 against the autograd gradient, at points away from the
    /// clip boundaries (where the loss is not differentiable).
    func testGradientByFiniteDifferences() {
        var gen = PhiloxGenerator(seed: 21)
        let n = 12, eps = 0.1, h = 1e-6
        let old = Tensor.randn([n], generator: &gen, dtype: .float64).toArray()
        let new = zip(old, Tensor.randn([n], generator: &gen, dtype: .float64).toArray()).map { $0 + 0.15 * $1 }
        let adv = Tensor.randn([n], generator: &gen, dtype: .float64).toArray().map { $0 * 4 }
        func loss(_ x: [Double]) -> Double {
            PPOLoss.compute(logProbNew: tensor(x), logProbOld: tensor(old), advantages: tensor(adv),
                            clipRange: eps, advantageClipMax: 5).loss.item()
        }
        let logp = tensor(new).requiringGrad()
        PPOLoss.compute(logProbNew: logp, logProbOld: tensor(old), advantages: tensor(adv), clipRange: eps, advantageClipMax: 5)
            .loss.backward()
        let grad = logp.grad!.toArray()
        var clippedCount = 0
        for i in 0..<n {
            let ratio = Foundation.exp(new[i] - old[i])
            XCTAssertGreaterThan(min(abs(ratio - 1 - eps), abs(ratio - 1 + eps)), 1e-3, "point \(i) too close to a boundary")
            var plus = new, minus = new
            plus[i] += h
            minus[i] -= h
            let numeric = (loss(plus) - loss(minus)) / (2 * h)
            XCTAssertEqual(grad[i], numeric, accuracy: 1e-7, "d loss / d logp_new[\(i)]")
            if grad[i] == 0 { clippedCount += 1 }
        }
        XCTAssertTrue(clippedCount > 0 && clippedCount < n, "both clipped (zero gradient) and active samples")
    }

    /// Float32 inputs (what training uses) give the float64 result to float32 precision.
    func testFloat32() throws {
        let c = try DDPOMathFixture.load().ppo[1]
        let logp = tensor(c.logp_new, .float32).requiringGrad()
        let out = PPOLoss.compute(logProbNew: logp, logProbOld: tensor(c.logp_old, .float32),
                                  advantages: tensor(c.advantages, .float32), clipRange: c.clip_range, advantageClipMax: c.adv_clip_max)
        XCTAssertEqual(out.loss.dtype, .float32)
        XCTAssertEqual(out.loss.item(), c.loss, accuracy: 1e-5)
        out.loss.backward()
        assertRelClose(logp.grad!.toArray(), c.grad_logp_new, rtol: 1e-4, atol: 1e-6, "float32 gradient")
    }
}
