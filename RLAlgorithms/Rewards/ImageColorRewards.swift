import Foundation

// Rewards on the colours of an image, for demonstrations whose effect anyone can see in a
// before/after grid within a few epochs (the built-in model's quick start).
//
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

public struct ColorReward: RewardFunction {
    /// The target colour, RGB in [0, 1].
    public var target: (red: Double, green: Double, blue: Double)
    public var label: String
    public var name: String { "color:\(label)" }

    /// Named targets (`color:red`, …): the built-in model's palette.
    public static let namedColors: [String: (Double, Double, Double)] = {
        let bytes: [String: (Double, Double, Double)] = [
            "red": (220, 30, 30), "green": (30, 170, 50), "blue": (30, 70, 230), "yellow": (245, 220, 30),
            "white": (250, 250, 250), "black": (15, 15, 15), "purple": (140, 50, 190), "orange": (250, 130, 20),
        ]
        return bytes.mapValues { ($0.0 / 255, $0.1 / 255, $0.2 / 255) }
    }()

    public init(red: Double, green: Double, blue: Double, label: String? = nil) {
        target = (red, green, blue)
        self.label = label ?? String(format: "#%02x%02x%02x", Int((red * 255).rounded()), Int((green * 255).rounded()), Int((blue * 255).rounded()))
    }

    /// `red`, `#ff8800`: nil when neither a palette name nor a hex colour.
    public init?(spec: String) {
        if let named = Self.namedColors[spec.lowercased()] {
            self.init(red: named.0, green: named.1, blue: named.2, label: spec.lowercased())
            return
        }
        let hex = spec.hasPrefix("#") ? String(spec.dropFirst()) : spec
        guard hex.count == 6, let value = UInt32(hex, radix: 16) else { return nil }
        self.init(red: Double(value >> 16 & 0xFF) / 255, green: Double(value >> 8 & 0xFF) / 255, blue: Double(value & 0xFF) / 255)
    }

    public func callAsFunction(images: Tensor, prompts: [String], metadata: [PromptMetadata]) throws -> RewardOutput {
        let count = try RewardFunctions.checkInputs(name, images: images, prompts: prompts, metadata: metadata)
        let values = images.copied(to: .cpu).contiguous().to(.float64).toArray()
        let plane = values.count / max(count * 3, 1)
        let goal = [target.red, target.green, target.blue]
        var rewards: [Double] = []
        for i in 0..<count {
            var sum = 0.0
            for j in 0..<plane {
                var squared = 0.0
                for c in 0..<3 {
                    let d = min(max(values[(i * 3 + c) * plane + j], 0), 1) - goal[c]
                    squared += d * d
                }
                sum += 1 - squared.squareRoot() / 3.0.squareRoot()
            }
            rewards.append(sum / Double(plane))
        }
        return RewardOutput(rewards: rewards)
    }
}
