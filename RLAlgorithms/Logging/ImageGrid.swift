import Foundation
import TensorKit

// Images tiled into one picture with white padding, as torchvision's `make_grid` lays them out
// (row-major, `padding` pixels around every cell, the outer border included), for "an image grid
// of the last sample batch"; plus the batch's captions `prompt | reward`.
//
//   let grid = ImageGrid.make(images, columns: 4)           // 4 per row, 2 px white padding
//   logger.logImages([(caption: "samples", image: grid)], step: step)
//   logger.logImages(try ImageGrid.captionedImages(batch), step: step)   // one per sample

public enum ImageGrid {
    /// Tiles `images` row by row, `columns` per row (fewer if there are fewer images), each in a
    /// cell as large as the largest image (placed at the cell's top left; the rest is white),
    /// with `padding` white pixels between cells and around the border. The result is
    /// `c·(W+p)+p` wide and `r·(H+p)+p` high, c = min(columns, n), r = ⌈n/c⌉. An empty list
    /// gives a `padding`×`padding` white image.
    public static func make(_ images: [RGBImage], columns: Int, padding: Int = 2) -> RGBImage {
        precondition(columns >= 1, "ImageGrid.make: columns must be at least 1, got \(columns)")
        precondition(padding >= 0, "ImageGrid.make: padding must not be negative, got \(padding)")
        let cellWidth = images.map(\.width).max() ?? 0
        let cellHeight = images.map(\.height).max() ?? 0
        let cols = images.isEmpty ? 0 : min(columns, images.count)
        let rows = images.isEmpty ? 0 : (images.count + cols - 1) / cols
        let width = cols * (cellWidth + padding) + padding
        let height = rows * (cellHeight + padding) + padding
        var pixels = [UInt8](repeating: 255, count: width * height * 3)
        pixels.withUnsafeMutableBufferPointer { out in
            for (index, image) in images.enumerated() {
                let x0 = padding + (index % cols) * (cellWidth + padding)
                let y0 = padding + (index / cols) * (cellHeight + padding)
                image.pixels.withUnsafeBufferPointer { source in
                    let rowBytes = image.width * 3
                    for y in 0..<image.height {
                        let target = ((y0 + y) * width + x0) * 3
                        for i in 0..<rowBytes { out[target + i] = source[y * rowBytes + i] }
                    }
                }
            }
        }
        return RGBImage(width: width, height: height, pixels: pixels)
    }

    /// One image per sample of `batch`, captioned `"<prompt> | <reward, 3 decimals>"`.
    public static func captionedImages(_ batch: DDPOImageBatch) throws -> [(caption: String, image: RGBImage)] {
        let count = batch.images.shape.first ?? 0
        var out: [(caption: String, image: RGBImage)] = []
        for i in 0..<count {
            let image = try RGBImage(tensor: batch.images.slice(0, i, i + 1))
            let prompt = i < batch.prompts.count ? batch.prompts[i] : ""
            let reward = i < batch.rewards.count ? String(format: "%.3f", batch.rewards[i]) : "?"
            out.append((caption: "\(prompt) | \(reward)", image: image))
        }
        return out
    }
}
