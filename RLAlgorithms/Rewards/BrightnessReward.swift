import Foundation

// `brightness` and `darkness`: the mean luma of each image (ITU-R BT.601 weights, as Pillow's
// `convert("L")`: Y = 0.299 R + 0.587 G + 0.114 B) over its pixels, in [0, 1]. A reward whose effect
// anyone can see in a before/after grid within a few epochs, which is what the built-in model's
// quick start needs; `darkness` is 1 - brightness.
//
//     let r = try BrightnessReward()(images: images, prompts: prompts, metadata: metadata)
//     r.rewards   // per image, in [0, 1]; metadata {"mean_rgb": [[r, g, b], …]}

public struct BrightnessReward: RewardFunction {
    /// Reward darker images instead (1 - mean luma).
    public var inverted: Bool
    public var name: String { inverted ? "darkness" : "brightness" }

    public init(inverted: Bool = false) { self.inverted = inverted }

    public func callAsFunction(images: Tensor, prompts: [String], metadata: [PromptMetadata]) throws -> RewardOutput {
        let count = try RewardFunctions.checkInputs(name, images: images, prompts: prompts, metadata: metadata)
        let values = images.copied(to: .cpu).contiguous().to(.float64).toArray()
        let plane = values.count / max(count * 3, 1)
        var rewards: [Double] = [], means: [JSONValue] = []
        for i in 0..<count {
            var channel = [0.0, 0.0, 0.0]
            for c in 0..<3 {
                let base = (i * 3 + c) * plane
                var sum = 0.0
                for j in 0..<plane { sum += min(max(values[base + j], 0), 1) }
                channel[c] = sum / Double(plane)
            }
            let luma = 0.299 * channel[0] + 0.587 * channel[1] + 0.114 * channel[2]
            rewards.append(inverted ? 1 - luma : luma)
            means.append(.array(channel.map { .number($0) }))
        }
        return RewardOutput(rewards: rewards, metadata: .object(["mean_rgb": .array(means)]))
    }
}
