import Foundation

/// transformers' (slow, PIL-based) `CLIPImageProcessor`, applied the way the DDPO aesthetic reward
/// applies it: images in [0, 1] are first quantised like `(images * 255).round().clamp(0, 255).to(uint8)`
/// (round half to even), then resized so the shortest edge is `size` with PIL's filter
/// (`PILResample`, bit-exact), centre-cropped, rescaled by 1/255 and normalised with the CLIP mean/std.
/// The result matches transformers' `pixel_values` bit for bit (float32). The steps are not
/// differentiable (the reward is computed without gradients).
///
/// Decoded from `preprocessor_config.json` (old feature-extractor files with integer `size` /
/// `crop_size` included); defaults are openai/clip-vit-large-patch14's.
public struct CLIPImageProcessor: Codable, Equatable, Sendable {
    public enum Size: Equatable, Sendable {
        /// Scale so the shorter side is this long (the longer side is truncated: int(n · long / short)).
        case shortestEdge(Int)
        /// Resize to exactly this size.
        case exact(height: Int, width: Int)
    }

    public var doResize = true
    public var size = Size.shortestEdge(224)
    public var resample = PILResample.Filter.bicubic
    public var doCenterCrop = true
    public var cropHeight = 224
    public var cropWidth = 224
    public var doRescale = true
    public var rescaleFactor = 1.0 / 255
    public var doNormalize = true
    public var imageMean = [0.48145466, 0.4578275, 0.40821073]
    public var imageStd = [0.26862954, 0.26130258, 0.27577711]

    public init() {}

    /// Reads `preprocessor_config.json` in `directory`.
    public static func load(directory: URL) throws -> CLIPImageProcessor {
        let url = directory.appendingPathComponent("preprocessor_config.json")
        guard FileManager.default.fileExists(atPath: url.path) else {
            throw CLIPError.missingFile(directory: directory.path, expected: ["preprocessor_config.json"], note: "")
        }
        do {
            return try JSONDecoder().decode(CLIPImageProcessor.self, from: Data(contentsOf: url))
        } catch let error as CLIPError {
            throw error.inFile(url.path)
        } catch {
            throw CLIPError.unreadableFile(path: url.path, message: "not a valid JSON config: \(error)")
        }
    }

    public init(from decoder: Decoder) throws {
        let c = try decoder.container(keyedBy: CLIPConfigKey.self)
        doResize = try c.field("do_resize", doResize)
        doCenterCrop = try c.field("do_center_crop", doCenterCrop)
        doRescale = try c.field("do_rescale", doRescale)
        rescaleFactor = try c.field("rescale_factor", rescaleFactor)
        doNormalize = try c.field("do_normalize", doNormalize)
        imageMean = try Self.perChannel(c, "image_mean", imageMean)
        imageStd = try Self.perChannel(c, "image_std", imageStd)
        let filter: Int = try c.field("resample", resample.rawValue)
        guard let chosen = PILResample.Filter(rawValue: filter) else {
            throw CLIPError.config(file: nil, field: "resample",
                                   message: "PIL filter \(filter) is not supported (1 lanczos, 2 bilinear, 3 bicubic, 4 box, 5 hamming)")
        }
        resample = chosen
        if let sizes = try Self.sizeField(c, "size") {
            if let edge = sizes["shortest_edge"], sizes.count == 1 {
                size = .shortestEdge(edge)
            } else if let h = sizes["height"], let w = sizes["width"], sizes.count == 2 {
                size = .exact(height: h, width: w)
            } else {
                throw CLIPError.config(file: nil, field: "size", message: "expected an integer, {\"shortest_edge\"} or {\"height\", \"width\"}, got \(sizes)")
            }
        }
        if let crops = try Self.sizeField(c, "crop_size") {
            if let h = crops["height"], let w = crops["width"], crops.count == 2 {
                (cropHeight, cropWidth) = (h, w)
            } else if let n = crops["shortest_edge"], crops.count == 1 {
                (cropHeight, cropWidth) = (n, n)  // an integer crop_size is square (default_to_square)
            } else {
                throw CLIPError.config(file: nil, field: "crop_size", message: "expected an integer or {\"height\", \"width\"}, got \(crops)")
            }
        }
        let square: Bool = try c.field("use_square_size", false)
        if square {
            throw CLIPError.config(file: nil, field: "use_square_size", message: "the Kosmos-2 square resize is not supported")
        }
        try validate()
    }

    public func encode(to encoder: Encoder) throws {
        var c = encoder.container(keyedBy: CLIPConfigKey.self)
        try c.encode("CLIPImageProcessor", forKey: "image_processor_type")
        try c.encode(doResize, forKey: "do_resize")
        switch size {
        case .shortestEdge(let n): try c.encode(["shortest_edge": n], forKey: "size")
        case .exact(let h, let w): try c.encode(["height": h, "width": w], forKey: "size")
        }
        try c.encode(resample.rawValue, forKey: "resample")
        try c.encode(doCenterCrop, forKey: "do_center_crop")
        try c.encode(["height": cropHeight, "width": cropWidth], forKey: "crop_size")
        try c.encode(doRescale, forKey: "do_rescale")
        try c.encode(rescaleFactor, forKey: "rescale_factor")
        try c.encode(doNormalize, forKey: "do_normalize")
        try c.encode(imageMean, forKey: "image_mean")
        try c.encode(imageStd, forKey: "image_std")
    }

    public func validate() throws {
        switch size {
        case .shortestEdge(let n):
            try CLIPConfigKey.require(n > 0, "size", "shortest_edge must be positive, got \(n)")
        case .exact(let h, let w):
            try CLIPConfigKey.require(h > 0 && w > 0, "size", "height and width must be positive, got \(h)x\(w)")
        }
        try CLIPConfigKey.require(cropHeight > 0 && cropWidth > 0, "crop_size",
                                  "height and width must be positive, got \(cropHeight)x\(cropWidth)")
        try CLIPConfigKey.require(imageStd.allSatisfy { $0 != 0 }, "image_std", "must not contain 0")
        try CLIPConfigKey.require(imageMean.count == imageStd.count, "image_std",
                                  "has \(imageStd.count) values but image_mean has \(imageMean.count)")
    }

    /// A scalar (any channel count) or one value per channel.
    private static func perChannel(_ c: KeyedDecodingContainer<CLIPConfigKey>, _ name: String, _ fallback: [Double]) throws -> [Double] {
        if let one = try? c.field(name, Double.nan), !one.isNaN { return [one] }
        return try c.field(name, fallback)
    }

    /// An integer (normalised to {"shortest_edge": n}, as transformers' `get_size_dict`) or a dict.
    private static func sizeField(_ c: KeyedDecodingContainer<CLIPConfigKey>, _ name: String) throws -> [String: Int]? {
        if let n = try? c.optionalField(name, Int?.none) { return ["shortest_edge": n] }
        return try c.optionalField(name, [String: Int]?.none)
    }

    // MARK: - preprocessing

    /// The output size of the resize step for an input of `height` × `width`.
    public func resizedSize(height: Int, width: Int) -> (height: Int, width: Int) {
        switch size {
        case .exact(let h, let w):
            return (h, w)
        case .shortestEdge(let n):
            // transformers' get_resize_output_image_size: int(n * long / short), long edge truncated.
            let short = Swift.min(height, width), long = Swift.max(height, width)
            let newLong = Int(Double(n * long) / Double(short))
            return width <= height ? (newLong, n) : (n, newLong)
        }
    }

    /// `images` [B, C, H, W] with values in [0, 1] (C = 1 or 3, one mean/std per channel or one for
    /// all) → `pixel_values` [B, C, crop_height, crop_width] float32, on the input's device.
    public func callAsFunction(_ images: Tensor) throws -> Tensor {
        guard images.rank == 4, images.dtype.isFloatingPoint else {
            throw CLIPError.invalidInput("CLIPImageProcessor: images must be a floating-point [batch, channels, height, width] tensor, got \(images.dtype) \(images.shape)")
        }
        let (b, ch, h, w) = (images.shape[0], images.shape[1], images.shape[2], images.shape[3])
        guard ch == 1 || ch == 3 else {
            throw CLIPError.invalidInput("CLIPImageProcessor: images must have 1 or 3 channels (PIL modes L / RGB), got \(ch)")
        }
        guard h > 0 && w > 0 else { throw CLIPError.invalidInput("CLIPImageProcessor: empty images \(images.shape)") }
        if doNormalize && imageMean.count != 1 && imageMean.count != ch {
            throw CLIPError.invalidInput("CLIPImageProcessor: image_mean/image_std have \(imageMean.count) values for \(ch) channels")
        }
        let bytes = try Self.quantize(images)
        let plane = ch * h * w
        var output: [Float] = []
        var outH = h, outW = w
        for i in 0..<b {
            var pixels = Array(bytes[(i * plane)..<((i + 1) * plane)])
            var ih = h, iw = w
            if doResize {
                let (rh, rw) = resizedSize(height: h, width: w)
                pixels = PILResample.resize(pixels, channels: ch, height: h, width: w, toHeight: rh, toWidth: rw, filter: resample)
                (ih, iw) = (rh, rw)
            }
            if doCenterCrop {
                pixels = Self.centerCrop(pixels, channels: ch, height: ih, width: iw, toHeight: cropHeight, toWidth: cropWidth)
                (ih, iw) = (cropHeight, cropWidth)
            }
            (outH, outW) = (ih, iw)
            output.reserveCapacity(b * ch * ih * iw)
            for c in 0..<ch {
                let mean = Float(imageMean.count == 1 ? imageMean[0] : imageMean[c])
                let std = Float(imageStd.count == 1 ? imageStd[0] : imageStd[c])
                for p in 0..<(ih * iw) {
                    let byte = pixels[c * ih * iw + p]
                    // As numpy: rescale in float64 then cast; normalise in float32.
                    var v = doRescale ? Float(Double(byte) * rescaleFactor) : Float(byte)
                    if doNormalize { v = (v - mean) / std }
                    output.append(v)
                }
            }
        }
        return Tensor(output, shape: [b, ch, outH, outW], dtype: .float32, device: images.device)
    }

    /// round-half-to-even(x · 255) clamped to [0, 255], computed in the tensor's precision like torch.
    static func quantize(_ images: Tensor) throws -> [UInt8] {
        let values = images.toArray()
        var bytes = [UInt8](repeating: 0, count: values.count)
        let single = images.dtype != .float64
        for (i, x) in values.enumerated() {
            guard !x.isNaN else { throw CLIPError.invalidInput("CLIPImageProcessor: images contain NaN (element \(i))") }
            let scaled = single ? Double((Float(x) * 255).rounded(.toNearestOrEven)) : (x * 255).rounded(.toNearestOrEven)
            bytes[i] = UInt8(Swift.min(Swift.max(scaled, 0), 255))
        }
        return bytes
    }

    /// transformers' `center_crop`: offsets floor((size - crop) / 2); zero padding when the image is
    /// smaller than the crop.
    static func centerCrop(_ pixels: [UInt8], channels: Int, height: Int, width: Int, toHeight: Int, toWidth: Int) -> [UInt8] {
        func floorHalf(_ v: Int) -> Int { v >= 0 ? v / 2 : -((-v + 1) / 2) }
        var top = floorHalf(height - toHeight), left = floorHalf(width - toWidth)
        var source = pixels, sh = height, sw = width
        if top < 0 || left < 0 || top + toHeight > height || left + toWidth > width {
            // Pad onto a canvas at least as large as the crop, centred with ceil((new - old) / 2).
            let nh = Swift.max(toHeight, height), nw = Swift.max(toWidth, width)
            let padTop = (nh - height + 1) / 2, padLeft = (nw - width + 1) / 2
            var canvas = [UInt8](repeating: 0, count: channels * nh * nw)
            for c in 0..<channels {
                for y in 0..<height {
                    for x in 0..<width { canvas[(c * nh + y + padTop) * nw + x + padLeft] = pixels[(c * height + y) * width + x] }
                }
            }
            (source, sh, sw) = (canvas, nh, nw)
            top += padTop
            left += padLeft
        }
        let y0 = Swift.max(0, top), y1 = Swift.min(sh, top + toHeight)
        let x0 = Swift.max(0, left), x1 = Swift.min(sw, left + toWidth)
        var out: [UInt8] = []
        out.reserveCapacity(channels * (y1 - y0) * (x1 - x0))
        for c in 0..<channels {
            for y in y0..<y1 { out.append(contentsOf: source[((c * sh + y) * sw + x0)..<((c * sh + y) * sw + x1)]) }
        }
        return out
    }
}
