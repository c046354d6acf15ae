import Foundation

// A reward on pictures of the built-in model's shapes grammar ("a red circle", "a blue square on a
// yellow background"; DiffusionModels' ShapesDataset), for a quick start whose effect anyone can see:
// the shapes grow.
//
// `shape_size`: the fraction of the picture's pixels that are closer (Euclidean RGB distance) to the
// shape colour the caption names than to its background colour (gray when the caption names none),
// or 0 when the picture's background is not the caption's: when `ShapeDetector` (which reads the
// background from the corners) finds another colour of the grammar there. A picture drawn by
// ShapesDataset (each pixel a·fg + (1 − a)·bg, a the pixel's covered fraction) scores the share of
// its pixels more than half covered — its shape's area, up to the antialiased edge. The colours come
// from the caption, not from the pixels; a pixel counts only once it is nearer the shape's colour, so
// tinting the background towards the shape's colour earns nothing, and filling the whole picture
// with the shape's colour scores 0 (its corners are no longer the background).
//
//     let r = try ShapeSizeReward()(images: images, prompts: ["a red circle"], metadata: [[:]])
//     r.rewards   // per image, in [0, 1]; images at least 8×8

public struct ShapeSizeReward: RewardFunction {
    public var name: String { "shape_size" }

    public init() {}

    /// The shape and background colours a caption of the grammar names; nil when the
    /// caption is not "a <colour> <shape> [on a <colour> background]" or names one colour twice.
    public static func colors(of caption: String) -> (shape: ShapeColor, background: ShapeColor)? {
        let words = caption.lowercased().split(separator: " ").map(String.init)
        guard words.count == 3 || (words.count == 7 && words[3] == "on" && words[4] == "a" && words[6] == "background"),
              words[0] == "a", ShapeKind(rawValue: words[2]) != nil,
              let shape = ShapesDataset.colors.first(where: { $0.name == words[1] }) else { return nil }
        let background = words.count == 7 ? ShapesDataset.colors.first { $0.name == words[5] } : ShapesDataset.defaultBackground
        guard let background, background != shape else { return nil }
        return (shape, background)
    }

    public func callAsFunction(images: Tensor, prompts: [String], metadata: [PromptMetadata]) throws -> RewardOutput {
        _ = try RewardFunctions.checkInputs(name, images: images, prompts: prompts, metadata: metadata)
        guard images.shape[2] >= 8, images.shape[3] >= 8 else {
            throw RewardError.invalidInput(reward: name, message: "images must be at least 8×8 pixels, got \(images.shape[3])×\(images.shape[2])")
        }
        let palettes = try prompts.map { prompt in
            guard let colors = Self.colors(of: prompt) else {
                throw RewardError.invalidInput(reward: name, message: "\"\(prompt)\" is not a caption of the shapes grammar (\"a <colour> <shape> [on a <colour> background]\", two different colours of \(ShapesDataset.colors.map(\.name).joined(separator: ", ")); shapes \(ShapeKind.allCases.map(\.rawValue).joined(separator: ", ")))")
            }
            return colors
        }
        let pictures = try RewardFunctions.rgbImages(images)
        var rewards: [Double] = []
        for (picture, (shape, background)) in zip(pictures, palettes) {
            guard ShapeDetector.read(picture).background == background else {
                rewards.append(0)
                continue
            }
            let fg = shape.rgb.map(Int.init), bg = background.rgb.map(Int.init)
            var inside = 0
            for p in stride(from: 0, to: picture.pixels.count, by: 3) {
                var toShape = 0, toBackground = 0
                for c in 0..<3 {
                    let v = Int(picture.pixels[p + c])
                    toShape += (v - fg[c]) * (v - fg[c])
                    toBackground += (v - bg[c]) * (v - bg[c])
                }
                if toShape < toBackground { inside += 1 }
            }
            rewards.append(Double(inside) / Double(picture.width * picture.height))
        }
        return RewardOutput(rewards: rewards)
    }
}
