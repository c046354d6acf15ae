import Foundation

// Reward functions with the reference shape (ddpo-pytorch / TRL):
//     (images, prompts, prompt_metadata) -> (rewards, reward_metadata)
//
//     let reward: any RewardFunction = JPEGCompressibility()
//     let out = try reward(images: images, prompts: prompts, metadata: metadata)   // out.rewards: [Double]
//     let later = try await reward.evaluate(images: images, prompts: prompts, metadata: metadata)  // off-thread
//
// A reward function is Sendable and its call is synchronous and thread-safe, so the trainer can run
// several batches at once on background threads (TRL's `async_reward_computation` with `max_workers`).

/// What a reward function returns for a batch: one reward per image, and free-form metadata (TRL passes
/// `reward_metadata` on to the image-logging hook).
public struct RewardOutput: Sendable, Equatable {
    public var rewards: [Double]
    public var metadata: JSONValue

    public init(rewards: [Double], metadata: JSONValue = .object([:])) {
        self.rewards = rewards
        self.metadata = metadata
    }
}

/// A reward model. `images` is [B, 3, H, W], floating point, values in [0, 1] (the VAE output after
/// `(x / 2 + 0.5).clamp(0, 1)`); `prompts` and `metadata` have B entries. Implementations return exactly
/// B finite rewards; `RewardFunctions.validated` checks that for any implementation.
public protocol RewardFunction: Sendable {
    /// A short name for logs and errors (e.g. "jpeg_compressibility").
    var name: String { get }
    func callAsFunction(images: Tensor, prompts: [String], metadata: [PromptMetadata]) throws -> RewardOutput
}

extension RewardFunction {
    /// Runs the reward on a background thread (a Dispatch global queue, not the cooperative pool, since
    /// rewards block on CPU work or the network) and validates the result.
    public func evaluate(images: Tensor, prompts: [String], metadata: [PromptMetadata]) async throws -> RewardOutput {
        try await withCheckedThrowingContinuation { continuation in
            DispatchQueue.global(qos: .userInitiated).async {
                continuation.resume(with: Result {
                    try RewardFunctions.validated(self, images: images, prompts: prompts, metadata: metadata)
                })
            }
        }
    }
}

/// Errors of reward functions. Messages name the reward, the URL or file, and what was wrong.
public enum RewardError: Error, LocalizedError, CustomStringConvertible, Sendable, Equatable {
    /// The inputs do not fit the reward (`images` shape, prompt/metadata counts, values).
    case invalidInput(reward: String, message: String)
    /// A reward returned the wrong number of values, or a non-finite value.
    case invalidOutput(reward: String, message: String)
    /// A model or configuration file could not be loaded.
    case loading(path: String, message: String)
    /// The reward server failed: `url`, the HTTP status (nil when no response came), attempts made.
    case server(url: String, status: Int?, attempts: Int, message: String)

    public var description: String {
        switch self {
        case let .invalidInput(reward, message): return "reward \(reward): invalid input: \(message)"
        case let .invalidOutput(reward, message): return "reward \(reward): invalid output: \(message)"
        case let .loading(path, message): return "\(path): \(message)"
        case let .server(url, status, attempts, message):
            let code = status.map { "HTTP \($0)" } ?? "no response"
            return "reward server \(url): \(code) after \(attempts) attempt\(attempts == 1 ? "" : "s"): \(message)"
        }
    }

    public var errorDescription: String? { description }
}

/// Helpers shared by reward functions.
public enum RewardFunctions {
    /// Checks the inputs, runs `reward`, and checks that it returned one finite reward per image.
    public static func validated(_ reward: any RewardFunction, images: Tensor, prompts: [String],
                                 metadata: [PromptMetadata]) throws -> RewardOutput {
        let batch = try checkInputs(reward.name, images: images, prompts: prompts, metadata: metadata)
        let out = try reward(images: images, prompts: prompts, metadata: metadata)
        try checkRewards(out.rewards, count: batch, reward: reward.name)
        return out
    }

    /// Validates the reference input shapes; returns the batch size.
    @discardableResult
    public static func checkInputs(_ name: String, images: Tensor, prompts: [String], metadata: [PromptMetadata]) throws -> Int {
        guard images.rank == 4, images.shape[1] == 3, images.dtype.isFloatingPoint else {
            throw RewardError.invalidInput(reward: name, message: "images must be a floating-point [batch, 3, height, width] tensor, got \(images.dtype) \(images.shape)")
        }
        let b = images.shape[0]
        guard prompts.count == b else {
            throw RewardError.invalidInput(reward: name, message: "\(prompts.count) prompts for \(b) images")
        }
        guard metadata.count == b else {
            throw RewardError.invalidInput(reward: name, message: "\(metadata.count) prompt metadata entries for \(b) images")
        }
        return b
    }

    /// One finite reward per image.
    public static func checkRewards(_ rewards: [Double], count: Int, reward name: String) throws {
        guard rewards.count == count else {
            throw RewardError.invalidOutput(reward: name, message: "expected \(count) rewards (one per image), got \(rewards.count)")
        }
        if let i = rewards.firstIndex(where: { !$0.isFinite }) {
            throw RewardError.invalidOutput(reward: name, message: "reward \(i) is \(rewards[i]) (rewards must be finite)")
        }
    }

    /// The images of a [B, 3, H, W] tensor as 8-bit RGB, quantised as the references do:
    /// `(images * 255).round().clamp(0, 255).to(torch.uint8)` (round half to even, in the tensor's dtype).
    public static func rgbImages(_ images: Tensor) throws -> [RGBImage] {
        let host = images.copied(to: .cpu).contiguous()
        return try (0..<host.shape[0]).map { try RGBImage(tensor: host.slice(0, $0, $0 + 1)) }
    }
}

/// A reward given by a Swift closure — the plain-function case of TRL's `reward_function`.
///
///     let brightness = ClosureReward(name: "brightness") { images, prompts, metadata in
///         let mean = images.mean(axes: [1, 2, 3]).toArray()
///         return RewardOutput(rewards: mean)
///     }
public struct ClosureReward: RewardFunction {
    public let name: String
    private let body: @Sendable (Tensor, [String], [PromptMetadata]) throws -> RewardOutput

    public init(name: String = "closure",
                _ body: @escaping @Sendable (_ images: Tensor, _ prompts: [String], _ metadata: [PromptMetadata]) throws -> RewardOutput) {
        self.name = name
        self.body = body
    }

    /// A closure that returns only the rewards (empty metadata).
    public init(name: String = "closure",
                rewards body: @escaping @Sendable (_ images: Tensor, _ prompts: [String], _ metadata: [PromptMetadata]) throws -> [Double]) {
        self.init(name: name) { images, prompts, metadata in RewardOutput(rewards: try body(images, prompts, metadata)) }
    }

    public func callAsFunction(images: Tensor, prompts: [String], metadata: [PromptMetadata]) throws -> RewardOutput {
        try body(images, prompts, metadata)
    }
}
