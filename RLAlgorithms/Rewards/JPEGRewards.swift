import Foundation

// ddpo-pytorch's / TRL's JPEG rewards: each image → 8-bit RGB `(x*255).round().clamp(0,255)` → JPEG at
// quality 95 (Pillow's defaults: 4:2:0, baseline, no Huffman optimisation; TensorKit's encoder writes the
// same bytes) → size in kB = bytes / 1000.
//
//     let r = try JPEGCompressibility()(images: images, prompts: prompts, metadata: metadata)
//     r.rewards   // [-kB] per image: higher = more compressible

/// `jpeg_incompressibility`: the JPEG size in kB (bytes / 1000). Metadata: `{}` as the reference.
public struct JPEGIncompressibility: RewardFunction {
    public var name: String { "jpeg_incompressibility" }
    /// JPEG quality; the references use 95.
    public var quality: Int

    public init(quality: Int = 95) { self.quality = quality }

    public func callAsFunction(images: Tensor, prompts: [String], metadata: [PromptMetadata]) throws -> RewardOutput {
        try RewardFunctions.checkInputs(name, images: images, prompts: prompts, metadata: metadata)
        return RewardOutput(rewards: try jpegByteCounts(images).map { Double($0) / 1000 })
    }

    /// The JPEG file size in bytes of each image.
    public func jpegByteCounts(_ images: Tensor) throws -> [Int] {
        do {
            return try RewardFunctions.rgbImages(images).map { try $0.encodeJPEG(quality: quality).count }
        } catch let error as ImageIOError {
            throw RewardError.invalidInput(reward: name, message: error.description)
        }
    }
}

/// `jpeg_compressibility`: minus the JPEG size in kB.
public struct JPEGCompressibility: RewardFunction {
    public var name: String { "jpeg_compressibility" }
    public var quality: Int

    public init(quality: Int = 95) { self.quality = quality }

    public func callAsFunction(images: Tensor, prompts: [String], metadata: [PromptMetadata]) throws -> RewardOutput {
        try RewardFunctions.checkInputs(name, images: images, prompts: prompts, metadata: metadata)
        var out = try JPEGIncompressibility(quality: quality)(images: images, prompts: prompts, metadata: metadata)
        out.rewards = out.rewards.map { -$0 }
        return out
    }
}
