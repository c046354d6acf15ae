import Foundation
import XCTest
@testable import RLAlgorithms

/// The math fixtures written by Fixtures/make_ddpo_math_fixtures.py (the subset each test file needs).
struct DDPOMathFixture: Decodable {
    static let directory = URL(fileURLWithPath: #filePath).deletingLastPathComponent().appendingPathComponent("Fixtures/ddpo_math")
    static func load() throws -> DDPOMathFixture {
        try JSONDecoder().decode(DDPOMathFixture.self, from: Data(contentsOf: directory.appendingPathComponent("ddpo_math.json")))
    }

    struct GlobalCase: Decodable { var rewards: [Double]; var advantages: [Double] }
    struct Epoch: Decodable { var prompts: [String]; var rewards: [Double]; var advantages: [Double] }
    struct Stat: Decodable { var mean: Double; var std: Double; var count: Int; var buffer: [Double] }
    struct TrackerCase: Decodable { var buffer_size: Int; var min_count: Int; var epochs: [Epoch]; var stats: [String: Stat] }
    struct PPOCase: Decodable {
        var name: String
        var clip_range: Double
        var adv_clip_max: Double
        var logp_old: [Double]
        var logp_new: [Double]
        var advantages: [Double]
        var loss: Double
        var approx_kl: Double
        var clipfrac: Double
        var grad_logp_new: [Double]
    }
    struct JPEGCase: Decodable { var bytes: [Int]; var incompressibility: [Double]; var compressibility: [Double] }
    struct Aesthetic: Decodable { var scores: [Double]; var embeds_normalized: [[Double]] }

    var advantages_global: GlobalCase
    var advantages_tracker: [TrackerCase]
    var ppo: [PPOCase]
    var jpeg: [String: JPEGCase]
    var aesthetic: Aesthetic
}

/// |a − e| ≤ rtol·|e| + atol, element-wise, with the worst index reported.
func assertRelClose(_ actual: [Double], _ expected: [Double], rtol: Double, atol: Double = 0, _ message: String,
                    file: StaticString = #filePath, line: UInt = #line) {
    guard actual.count == expected.count else {
        return XCTFail("\(message): \(actual.count) values, expected \(expected.count)", file: file, line: line)
    }
    for i in actual.indices where !(abs(actual[i] - expected[i]) <= rtol * abs(expected[i]) + atol) {
        return XCTFail("\(message): [\(i)] = \(actual[i]), expected \(expected[i])", file: file, line: line)
    }
}

/// Advantages against TRL 0.21 (its own PerPromptStatTracker, and DDPOTrainer.step's global formula).
final class AdvantagesTests: XCTestCase {
    func testGlobalMatchesTRL() throws {
        let f = try DDPOMathFixture.load().advantages_global
        assertRelClose(Advantages.global(f.rewards), f.advantages, rtol: 1e-12, atol: 1e-14, "global advantages")
        // Hand-worked: rewards 1, 2, 3 → mean 2, population std sqrt(2/3).
        let s = (2.0 / 3).squareRoot() + 1e-8
        assertRelClose(Advantages.global([1, 2, 3]), [-1 / s, 0, 1 / s], rtol: 1e-15, "hand-worked")
    }

    func testPerPromptTrackerMatchesTRLOverEpochs() throws {
        for c in try DDPOMathFixture.load().advantages_tracker {
            var tracker = PerPromptStatTracker(bufferSize: c.buffer_size, minCount: c.min_count)
            for (e, epoch) in c.epochs.enumerated() {
                assertRelClose(tracker.update(prompts: epoch.prompts, rewards: epoch.rewards), epoch.advantages,
                               rtol: 1e-12, atol: 1e-12, "buffer \(c.buffer_size) min \(c.min_count) epoch \(e)")
            }
            XCTAssertEqual(Set(tracker.buffers.keys), Set(c.stats.keys))
            let stats = tracker.stats()
            for (prompt, s) in c.stats {
                XCTAssertEqual(tracker.buffers[prompt], s.buffer, prompt)
                XCTAssertEqual(stats[prompt]?.count, s.count)
                assertRelClose([stats[prompt]!.mean, stats[prompt]!.std], [s.mean, s.std], rtol: 1e-12, "stats \(prompt)")
            }
        }
    }

    /// A tracker saved mid-run and restored gives the same advantages as the uninterrupted one.
    func testTrackerCheckpointRoundTrip() throws {
        let c = try DDPOMathFixture.load().advantages_tracker[0]
        var tracker = PerPromptStatTracker(bufferSize: c.buffer_size, minCount: c.min_count)
        for epoch in c.epochs.prefix(3) { _ = tracker.update(prompts: epoch.prompts, rewards: epoch.rewards) }
        let data = try JSONEncoder().encode(tracker)
        var restored = try PerPromptStatTracker.decode(data, expectingBufferSize: c.buffer_size, minCount: c.min_count,
                                                       source: "checkpoint_3/stat_tracker.json")
        XCTAssertEqual(restored, tracker)
        for (e, epoch) in c.epochs.enumerated().dropFirst(3) {
            assertRelClose(restored.update(prompts: epoch.prompts, rewards: epoch.rewards), epoch.advantages,
                           rtol: 1e-12, atol: 1e-12, "restored epoch \(e)")
        }
        XCTAssertThrowsError(try PerPromptStatTracker.decode(data, expectingBufferSize: 32, minCount: c.min_count, source: "ck.json")) {
            XCTAssertEqual("\($0)", "ck.json: saved with buffer_size \(c.buffer_size) / min_count \(c.min_count), but the config has 32 / \(c.min_count)")
        }
        XCTAssertThrowsError(try PerPromptStatTracker.decode(Data("{}".utf8), expectingBufferSize: 8, minCount: 4, source: "ck.json")) {
            XCTAssertTrue("\($0)".hasPrefix("ck.json: not a saved PerPromptStatTracker"), "\($0)")
        }
    }

    /// Hand-worked deque semantics: buffer 2, min count 2.
    func testBufferIsAFIFOAndFallsBackToTheBatch() {
        var t = PerPromptStatTracker(bufferSize: 2, minCount: 2)
        // "a" has one reward (< min count): batch stats of [1, 5, 9]: mean 5, std sqrt(32/3).
        let batchStd = (32.0 / 3).squareRoot() + 1e-6
        let first = t.update(prompts: ["a", "b", "b"], rewards: [1, 5, 9])
        assertRelClose(first, [(1 - 5) / batchStd, (5 - 7) / (2 + 1e-6), (9 - 7) / (2 + 1e-6)], rtol: 1e-15, "epoch 0")
        XCTAssertEqual(t.buffers, ["a": [1], "b": [5, 9]])
        let second = t.update(prompts: ["b", "a"], rewards: [3, 4])
        XCTAssertEqual(t.buffers, ["a": [1, 4], "b": [9, 3]])  // 5 dropped
        assertRelClose(second, [(3 - 6) / (3 + 1e-6), (4 - 2.5) / (1.5 + 1e-6)], rtol: 1e-15, "epoch 1")
    }
}
