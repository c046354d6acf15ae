import Foundation
import TensorKit

// The procedural captioned image set the built-in model is pretrained on: one coloured shape
// (circle, square, triangle, cross) on a plain background, with a caption from a small grammar:
//
//   "a red circle"                              background: the default mid-gray
//   "a blue square on a yellow background"      background: the named colour
//
// Every scene is a pure function of (seed, index) (Philox counter-based draws), so the set is
// infinite, reproducible and needs no files. Images are rendered with 4×4 supersampling
// (antialiased edges), so the colour at a shape's centre and at the image corners is exactly the
// named colour.
//
//   let data = ShapesDataset(imageSize: 32, seed: 7)
//   let scene = data.scene(at: 0)             // caption, shape, colours, position, size
//   let image = data.render(scene)            // RGBImage
//   let (pixels, captions) = data.batch(0..<16)   // [16, 3, 32, 32] in [-1, 1]

/// A named colour of the grammar.
public struct ShapeColor: Sendable, Equatable, Hashable {
    public var name: String
    public var red: UInt8, green: UInt8, blue: UInt8
    public init(_ name: String, _ red: UInt8, _ green: UInt8, _ blue: UInt8) {
        self.name = name
        self.red = red
        self.green = green
        self.blue = blue
    }
    public var rgb: [UInt8] { [red, green, blue] }
}

/// The shapes of the grammar.
public enum ShapeKind: String, CaseIterable, Sendable {
    case circle, square, triangle, cross

    /// Whether the point (dx, dy), relative to the centre and in units of the shape's radius, is inside.
    func contains(_ dx: Double, _ dy: Double) -> Bool {
        switch self {
        case .circle:
            return dx * dx + dy * dy <= 1
        case .square:
            return Swift.abs(dx) <= 0.85 && Swift.abs(dy) <= 0.85
        case .triangle:
            // Pointing up, centroid at the centre: vertices (0, -1.1), (±0.95, 0.55).
            let (ax, ay, bx, by, cx, cy) = (0.0, -1.1, -0.95, 0.55, 0.95, 0.55)
            func side(_ px: Double, _ py: Double, _ qx: Double, _ qy: Double) -> Double {
                (qx - px) * (dy - py) - (qy - py) * (dx - px)
            }
            let s1 = side(ax, ay, bx, by), s2 = side(bx, by, cx, cy), s3 = side(cx, cy, ax, ay)
            return (s1 <= 0 && s2 <= 0 && s3 <= 0) || (s1 >= 0 && s2 >= 0 && s3 >= 0)
        case .cross:
            let arm = 0.36
            return (Swift.abs(dx) <= 1 && Swift.abs(dy) <= arm) || (Swift.abs(dx) <= arm && Swift.abs(dy) <= 1)
        }
    }
}

/// One picture of the set: what it shows, where, and its caption.
public struct ShapeScene: Sendable, Equatable {
    public var shape: ShapeKind
    public var color: ShapeColor
    /// The background colour; `backgroundNamed` says whether the caption names it.
    public var background: ShapeColor
    public var backgroundNamed: Bool
    /// Centre and radius in pixels.
    public var centerX: Double, centerY: Double, radius: Double

    public var caption: String {
        ShapesDataset.caption(color: color.name, shape: shape, background: backgroundNamed ? background.name : nil)
    }
}

public struct ShapesDataset: Sendable {
    /// The colours shapes and named backgrounds take.
    public static let colors: [ShapeColor] = [
        ShapeColor("red", 220, 30, 30), ShapeColor("green", 30, 170, 50), ShapeColor("blue", 30, 70, 230),
        ShapeColor("yellow", 245, 220, 30), ShapeColor("white", 250, 250, 250), ShapeColor("black", 15, 15, 15),
        ShapeColor("purple", 140, 50, 190), ShapeColor("orange", 250, 130, 20),
    ]
    /// The background of captions that name none.
    public static let defaultBackground = ShapeColor("gray", 128, 128, 128)

    /// Every word captions use (the tokenizer gives each its own token).
    public static var vocabularyWords: [String] {
        ["a", "on", "background"] + colors.map(\.name) + ShapeKind.allCases.map(\.rawValue)
    }

    /// The grammar: "a <colour> <shape>" [+ " on a <colour> background"].
    public static func caption(color: String, shape: ShapeKind, background: String? = nil) -> String {
        var text = "a \(color) \(shape.rawValue)"
        if let background { text += " on a \(background) background" }
        return text
    }

    public static func color(named name: String) -> ShapeColor? {
        name == defaultBackground.name ? defaultBackground : colors.first { $0.name == name }
    }

    public var imageSize: Int
    public var seed: UInt64
    /// How often the caption names a background colour (otherwise the background is `defaultBackground`).
    public var namedBackgroundProbability: Double

    public init(imageSize: Int = 32, seed: UInt64 = 0, namedBackgroundProbability: Double = 0.5) {
        precondition(imageSize >= 8, "ShapesDataset: imageSize must be at least 8, got \(imageSize)")
        self.imageSize = imageSize
        self.seed = seed
        self.namedBackgroundProbability = namedBackgroundProbability
    }

    /// The scene at `index`: a pure function of (seed, index).
    public func scene(at index: Int) -> ShapeScene {
        let w1 = Philox.words(seed: seed, index: UInt64(2 * index))
        let w2 = Philox.words(seed: seed, index: UInt64(2 * index + 1))
        let u = [w1.0, w1.1, w1.2, w1.3, w2.0, w2.1, w2.2, w2.3].map(Philox.uniform)
        let colors = Self.colors
        let shape = ShapeKind.allCases[Int(u[0] * Double(ShapeKind.allCases.count)) % ShapeKind.allCases.count]
        let colorIndex = Int(u[1] * Double(colors.count)) % colors.count
        let named = u[2] < namedBackgroundProbability
        var background = Self.defaultBackground
        if named {
            // Any colour but the shape's.
            let k = Int(u[3] * Double(colors.count - 1)) % (colors.count - 1)
            background = colors[k >= colorIndex ? k + 1 : k]
        }
        let size = Double(imageSize)
        let radius = size * (0.22 + 0.12 * u[4])
        let jitter = size * 0.12
        return ShapeScene(shape: shape, color: colors[colorIndex], background: background, backgroundNamed: named,
                          centerX: size / 2 + jitter * (2 * u[5] - 1), centerY: size / 2 + jitter * (2 * u[6] - 1),
                          radius: radius)
    }

    /// The scene drawn at `imageSize`, antialiased by 4×4 supersampling.
    public func render(_ scene: ShapeScene) -> RGBImage {
        Self.render(scene, size: imageSize)
    }

    public static func render(_ scene: ShapeScene, size: Int) -> RGBImage {
        var pixels = [UInt8](repeating: 0, count: size * size * 3)
        let fg = scene.color.rgb.map(Double.init), bg = scene.background.rgb.map(Double.init)
        let sub = 4
        for y in 0..<size {
            for x in 0..<size {
                var inside = 0
                for sy in 0..<sub {
                    for sx in 0..<sub {
                        let px = Double(x) + (Double(sx) + 0.5) / Double(sub)
                        let py = Double(y) + (Double(sy) + 0.5) / Double(sub)
                        if scene.shape.contains((px - scene.centerX) / scene.radius, (py - scene.centerY) / scene.radius) {
                            inside += 1
                        }
                    }
                }
                let a = Double(inside) / Double(sub * sub)
                for c in 0..<3 {
                    pixels[(y * size + x) * 3 + c] = UInt8((a * fg[c] + (1 - a) * bg[c]).rounded())
                }
            }
        }
        return RGBImage(width: size, height: size, pixels: pixels)
    }

    /// Scenes `indices` as one batch: images [B, 3, S, S] in [-1, 1] (as the VAE takes them) and captions.
    public func batch(_ indices: Range<Int>) -> (images: Tensor, captions: [String]) {
        let scenes = indices.map(scene(at:))
        let tensors = scenes.map { render($0).toTensor() * 2.0 - 1.0 }
        return (Tensor.stack(tensors, axis: 0), scenes.map(\.caption))
    }
}

/// What a picture of the shapes grammar shows, read back from its pixels: the background colour
/// (mean of the four corners), the shape's colour (mean of the foreground's core: the pixels
/// farthest from the background) and
/// the shape kind whose template best overlaps those pixels. Used to check that the built-in model
/// draws what its prompts say, and usable as a prompt-alignment reward.
public struct ShapeReading: Sendable, Equatable {
    public var background: ShapeColor
    /// nil when almost no pixel differs from the background.
    public var color: ShapeColor?
    public var shape: ShapeKind?
    /// Intersection over union of the foreground with the best template (0...1).
    public var fit: Double
    /// Fraction of the pixels in the foreground.
    public var coverage: Double

    /// Whether the reading agrees with a caption of the grammar ("a red circle on a blue background").
    public func matches(_ caption: String) -> Bool {
        let words = caption.lowercased().split(separator: " ").map(String.init)
        guard words.count >= 3, words[0] == "a", let color, let shape,
              color.name == words[1], shape.rawValue == words[2] else { return false }
        let named = words.count >= 6 && words[3] == "on" ? words[5] : ShapesDataset.defaultBackground.name
        return background.name == named
    }
}

public enum ShapeDetector {
    /// Reads an image of the shapes grammar (any size ≥ 8).
    public static func read(_ image: RGBImage) -> ShapeReading {
        let w = image.width, h = image.height
        func pixel(_ x: Int, _ y: Int) -> [Double] {
            let i = (y * w + x) * 3
            return [Double(image.pixels[i]), Double(image.pixels[i + 1]), Double(image.pixels[i + 2])]
        }
        var corner = [0.0, 0.0, 0.0]
        var count = 0.0
        for (x0, y0) in [(0, 0), (w - 2, 0), (0, h - 2), (w - 2, h - 2)] {
            for y in y0..<(y0 + 2) { for x in x0..<(x0 + 2) { corner = zip(corner, pixel(x, y)).map { $0 + $1 }; count += 1 } }
        }
        corner = corner.map { $0 / count }
        func distance(_ a: [Double], _ b: [Double]) -> Double { zip(a, b).reduce(0) { $0 + ($1.0 - $1.1) * ($1.0 - $1.1) }.squareRoot() }
        func nearest(_ rgb: [Double], in palette: [ShapeColor]) -> ShapeColor {
            palette.min { distance(rgb, $0.rgb.map(Double.init)) < distance(rgb, $1.rgb.map(Double.init)) }!
        }
        let background = nearest(corner, in: ShapesDataset.colors + [ShapesDataset.defaultBackground])
        var mask = [Bool](repeating: false, count: w * h)
        var cx = 0.0, cy = 0.0, n = 0.0
        for y in 0..<h {
            for x in 0..<w {
                let p = pixel(x, y)
                if distance(p, corner) > 60 {
                    mask[y * w + x] = true
                    cx += Double(x) + 0.5
                    cy += Double(y) + 0.5
                    n += 1
                }
            }
        }
        let coverage = n / Double(w * h)
        guard n >= max(4, 0.02 * Double(w * h)) else {
            return ShapeReading(background: background, color: nil, shape: nil, fit: 0, coverage: coverage)
        }
        // The shape's colour: the mean of its core, the foreground pixels at least 3/4 as far from
        // the background as the farthest one (edge pixels blend into the background).
        var far = 0.0
        for y in 0..<h { for x in 0..<w where mask[y * w + x] { far = max(far, distance(pixel(x, y), corner)) } }
        var core = [0.0, 0.0, 0.0], coreCount = 0.0
        for y in 0..<h {
            for x in 0..<w where mask[y * w + x] {
                let p = pixel(x, y)
                if distance(p, corner) >= 0.75 * far { core = zip(core, p).map { $0 + $1 }; coreCount += 1 }
            }
        }
        let color = nearest(core.map { $0 / coreCount }, in: ShapesDataset.colors)
        cx /= n
        cy /= n
        var best: (kind: ShapeKind, iou: Double) = (.circle, -1)
        let size = Double(min(w, h))
        for kind in ShapeKind.allCases {
            var r = 0.1 * size
            while r <= 0.5 * size {
                var intersection = 0.0, union = 0.0
                for y in 0..<h {
                    for x in 0..<w {
                        let inside = kind.contains((Double(x) + 0.5 - cx) / r, (Double(y) + 0.5 - cy) / r)
                        let m = mask[y * w + x]
                        if inside && m { intersection += 1 }
                        if inside || m { union += 1 }
                    }
                }
                let iou = union > 0 ? intersection / union : 0
                if iou > best.iou { best = (kind, iou) }
                r += 0.02 * size
            }
        }
        return ShapeReading(background: background, color: color, shape: best.kind, fit: best.iou, coverage: coverage)
    }
}
