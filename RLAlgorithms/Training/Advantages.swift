import Foundation

// DDPO advantages (TRL 0.21 `DDPOTrainer.step`):
//
//     let adv = Advantages.global(rewards)                     // (r − mean) / (std + 1e-8), population std
//
//     var tracker = PerPromptStatTracker(bufferSize: 16, minCount: 16)
//     let adv = tracker.update(prompts: prompts, rewards: rewards)   // every epoch; buffers persist
//     let data = try JSONEncoder().encode(tracker)             // checkpoint it (TRL does not: its resume
//                                                              // restarts the statistics from scratch)
//
// Statistics are numpy's: mean, and `np.std` (population, ddof = 0) computed as sqrt(mean((x − mean)²)).

public enum Advantages {
    /// TRL's advantages without per-prompt tracking: `(rewards - rewards.mean()) / (rewards.std() + 1e-8)`.
    public static func global(_ rewards: [Double]) -> [Double] {
        let (mean, std) = meanAndStd(rewards)
        return rewards.map { ($0 - mean) / (std + 1e-8) }
    }

    /// numpy's `mean` and `std` (ddof = 0). Empty input gives NaN, as numpy.
    public static func meanAndStd<C: Collection>(_ values: C) -> (mean: Double, std: Double) where C.Element == Double {
        let n = Double(values.count)
        let mean = values.reduce(0, +) / n
        let variance = values.reduce(0) { $0 + ($1 - mean) * ($1 - mean) } / n
        return (mean, variance.squareRoot())
    }
}

/// TRL's (and ddpo-pytorch's) `PerPromptStatTracker`: each prompt keeps a FIFO of its last `bufferSize`
/// rewards, kept across epochs. In `update`, each prompt's rewards of this batch are appended first, then
/// its advantages are `(r − mean) / (std + 1e-6)` over its buffer, or over the whole batch while the buffer
/// holds fewer than `minCount` rewards. Codable, so the trainer checkpoints and restores it.
public struct PerPromptStatTracker: Codable, Equatable, Sendable {
    public let bufferSize: Int
    public let minCount: Int
    /// Each prompt's buffer, oldest first (at most `bufferSize` rewards).
    public private(set) var buffers: [String: [Double]]

    public init(bufferSize: Int, minCount: Int) {
        precondition(bufferSize >= 1, "PerPromptStatTracker: buffer size must be at least 1, got \(bufferSize)")
        precondition(minCount >= 0, "PerPromptStatTracker: min count must be non-negative, got \(minCount)")
        self.bufferSize = bufferSize
        self.minCount = minCount
        self.buffers = [:]
    }

    /// Advantages for one epoch's batch (`prompts[i]` produced `rewards[i]`); updates the buffers.
    public mutating func update(prompts: [String], rewards: [Double]) -> [Double] {
        precondition(prompts.count == rewards.count,
                     "PerPromptStatTracker.update: \(prompts.count) prompts for \(rewards.count) rewards")
        let batch = Advantages.meanAndStd(rewards)
        var advantages = [Double](repeating: 0, count: rewards.count)
        var groups: [String: [Int]] = [:]
        for (i, p) in prompts.enumerated() { groups[p, default: []].append(i) }
        for prompt in groups.keys.sorted() {  // np.unique order (each prompt's result is independent of it)
            let indices = groups[prompt]!
            var buffer = buffers[prompt] ?? []
            buffer.append(contentsOf: indices.map { rewards[$0] })
            if buffer.count > bufferSize { buffer.removeFirst(buffer.count - bufferSize) }  // deque(maxlen)
            buffers[prompt] = buffer
            let (mean, std) = buffer.count < minCount ? batch : Advantages.meanAndStd(buffer)
            for i in indices { advantages[i] = (rewards[i] - mean) / (std + 1e-6) }
        }
        return advantages
    }

    /// TRL's `get_stats()`: per prompt, the buffer's mean, std and count.
    public func stats() -> [String: (mean: Double, std: Double, count: Int)] {
        buffers.mapValues { b in let (m, s) = Advantages.meanAndStd(b); return (m, s, b.count) }
    }

    /// Restores the tracker from a checkpoint, checking it fits this configuration.
    public static func decode(_ data: Data, expectingBufferSize bufferSize: Int, minCount: Int, source: String) throws -> PerPromptStatTracker {
        let tracker: PerPromptStatTracker
        do { tracker = try JSONDecoder().decode(PerPromptStatTracker.self, from: data) } catch {
            throw StatTrackerError(source: source, message: "not a saved PerPromptStatTracker: \(error)")
        }
        guard tracker.bufferSize == bufferSize, tracker.minCount == minCount else {
            throw StatTrackerError(source: source, message: "saved with buffer_size \(tracker.bufferSize) / min_count \(tracker.minCount), but the config has \(bufferSize) / \(minCount)")
        }
        if let (prompt, b) = tracker.buffers.first(where: { $0.value.count > bufferSize || $0.value.contains { !$0.isFinite } }) {
            throw StatTrackerError(source: source, message: "buffer of \"\(prompt)\" has \(b.count) values (at most \(bufferSize), all finite)")
        }
        return tracker
    }

    private enum CodingKeys: String, CodingKey {
        case bufferSize = "buffer_size", minCount = "min_count", buffers
    }
}

/// A saved stat tracker that cannot be restored.
public struct StatTrackerError: Error, LocalizedError, CustomStringConvertible, Sendable {
    public let source: String
    public let message: String
    public var description: String { "\(source): \(message)" }
    public var errorDescription: String? { description }
}
