import Foundation
import CPNG
#if canImport(CJPEGShim)
import CJPEGShim
#endif

// 8-bit RGB images: PNG through libpng's simplified API (which reports errors through the
// png_image struct, no longjmp into our frames), JPEG through libjpeg-turbo wrapped by the
// small C header in TensorKit/CSystem/CJPEGShim (libjpeg needs setjmp to recover from errors).
// Conversions to and from float tensors follow the PyTorch idiom used by ddpo-pytorch's rewards:
// `(images * 255).round().clamp(0, 255).to(torch.uint8)` and `uint8 / 255`.

/// An image codec or image file operation failed.
public struct ImageIOError: Error, LocalizedError, CustomStringConvertible, Sendable {
    /// What was being done, e.g. "PNG decode".
    public let operation: String
    /// The file involved, if any.
    public let path: String?
    public let detail: String

    public init(_ operation: String, path: String? = nil, _ detail: String) {
        self.operation = operation
        self.path = path
        self.detail = detail
    }

    public var description: String {
        if let path { return "\(operation) of '\(path)' failed: \(detail)" }
        return "\(operation) failed: \(detail)"
    }

    public var errorDescription: String? { description }

    func at(_ path: String) -> ImageIOError { ImageIOError(operation, path: path, detail) }
}

/// Chroma subsampling for JPEG encoding (Pillow's `subsampling` values 0, 1, 2).
public enum JPEGSubsampling: Int32, Sendable {
    /// 4:4:4, no subsampling.
    case none = 0
    /// 4:2:2, chroma halved horizontally.
    case halfHorizontal = 1
    /// 4:2:0, chroma halved in both directions: libjpeg's and Pillow's default.
    case quarter = 2
}

/// An 8-bit RGB image, row-major with interleaved channels (HWC).
public struct RGBImage: Equatable, Sendable {
    public var width: Int
    public var height: Int
    /// `height * width * 3` bytes: R, G, B of pixel (0,0), then (1,0), …
    public var pixels: [UInt8]

    /// Images larger than this many pixels are rejected by the decoders unless a caller asks
    /// for more, so a tiny file claiming a huge size cannot exhaust memory.
    public static let defaultMaxPixels = 1 << 28

    public init(width: Int, height: Int, pixels: [UInt8]) {
        precondition(width >= 0 && height >= 0, "negative image size \(width)x\(height)")
        precondition(pixels.count == width * height * 3,
                     "\(pixels.count) bytes do not make a \(width)x\(height) RGB image (\(width * height * 3) needed)")
        self.width = width
        self.height = height
        self.pixels = pixels
    }

    /// A black image.
    public init(width: Int, height: Int) {
        self.init(width: width, height: height, pixels: [UInt8](repeating: 0, count: width * height * 3))
    }

    /// Reads a PNG or JPEG file (recognized by its signature, not its name).
    public init(contentsOf path: String, maxPixels: Int = RGBImage.defaultMaxPixels) throws {
        let data: Data
        do {
            data = try Data(contentsOf: URL(fileURLWithPath: path))
        } catch {
            throw ImageIOError("image read", path: path, error.localizedDescription)
        }
        let bytes = [UInt8](data)
        do {
            if bytes.starts(with: [0x89, 0x50, 0x4E, 0x47]) {
                self = try RGBImage.decodePNG(bytes, maxPixels: maxPixels)
            } else if bytes.starts(with: [0xFF, 0xD8]) {
                self = try RGBImage.decodeJPEG(bytes, maxPixels: maxPixels)
            } else {
                throw ImageIOError("image read", "not a PNG or JPEG file (first bytes \(bytes.prefix(4).map { String(format: "%02x", $0) }.joined(separator: " ")))")
            }
        } catch let error as ImageIOError {
            throw error.at(path)
        }
    }

    private func validate(_ operation: String, maxDimension: Int) throws {
        guard width > 0, height > 0 else {
            throw ImageIOError(operation, "image is \(width)x\(height); both sides must be at least 1")
        }
        guard width <= maxDimension, height <= maxDimension else {
            throw ImageIOError(operation, "image is \(width)x\(height); the format allows at most \(maxDimension) per side")
        }
        guard pixels.count == width * height * 3 else {
            throw ImageIOError(operation, "pixels hold \(pixels.count) bytes, a \(width)x\(height) RGB image needs \(width * height * 3)")
        }
    }
}

// MARK: - PNG

extension RGBImage {
    /// Encodes as an 8-bit RGB PNG (libpng defaults; an sRGB chunk is written).
    public func encodePNG() throws -> [UInt8] {
        // libpng takes the row stride as a 32-bit int.
        try validate("PNG encode", maxDimension: Int(Int32.max) / 3)
        let rowBytes = width * 3
        // Room for the worst case (stored deflate blocks, every chunk) so one pass usually
        // suffices; if libpng still needs more it says how much and we run it again.
        let raw = (rowBytes + 1) * height
        var capacity = raw + raw / 8 + raw / 64 + 12 * (raw / 8192 + 1) + 1024
        for _ in 0..<2 {
            var output = [UInt8](repeating: 0, count: capacity)
            var size = capacity
            var image = makePNGImage()
            let ok = output.withUnsafeMutableBytes { out in
                pixels.withUnsafeBytes { source in
                    png_image_write_to_memory(&image, out.baseAddress, &size, 0, source.baseAddress, Int32(rowBytes), nil)
                }
            }
            if ok != 0 {
                output.removeSubrange(size...)
                return output
            }
            // On a too-small buffer libpng reports the size it needs and leaves no error message.
            guard size > capacity else {
                throw ImageIOError("PNG encode", pngMessage(image))
            }
            capacity = size
        }
        throw ImageIOError("PNG encode", "libpng kept asking for a larger output buffer")
    }

    private func makePNGImage() -> png_image {
        var image = png_image()
        image.version = png_uint_32(PNG_IMAGE_VERSION)
        image.width = png_uint_32(width)
        image.height = png_uint_32(height)
        image.format = png_uint_32(PNG_FORMAT_FLAG_COLOR)  // PNG_FORMAT_RGB
        return image
    }

    /// Decodes any PNG (palette, grayscale, 16-bit, with or without alpha) to 8-bit RGB.
    ///
    /// Alpha is dropped, not composited, as Pillow's `convert("RGB")` does. 16-bit samples are
    /// taken as sRGB-encoded and scaled to 8 bits. A gAMA chunk other than sRGB's makes libpng
    /// convert to sRGB, which Pillow would not do.
    public static func decodePNG(_ bytes: [UInt8], maxPixels: Int = RGBImage.defaultMaxPixels) throws -> RGBImage {
        try bytes.withUnsafeBytes { data -> RGBImage in
            var image = png_image()
            image.version = png_uint_32(PNG_IMAGE_VERSION)
            guard png_image_begin_read_from_memory(&image, data.baseAddress, data.count) != 0 else {
                throw ImageIOError("PNG decode", pngMessage(image))
            }
            let width = Int(image.width), height = Int(image.height)
            guard width > 0, height > 0, width * height <= maxPixels, width * 4 <= Int(Int32.max) else {
                png_image_free(&image)
                throw ImageIOError("PNG decode", "image is \(width)x\(height) pixels, more than the limit of \(maxPixels)")
            }
            let hasAlpha = image.format & png_uint_32(PNG_FORMAT_FLAG_ALPHA) != 0
            let channels = hasAlpha ? 4 : 3
            image.format = png_uint_32(PNG_FORMAT_FLAG_COLOR) | (hasAlpha ? png_uint_32(PNG_FORMAT_FLAG_ALPHA) : 0)
            // Without this flag libpng assumes 16-bit data is linear and gamma-encodes it.
            image.flags |= png_uint_32(PNG_IMAGE_FLAG_16BIT_sRGB)
            var decoded = [UInt8](repeating: 0, count: width * height * channels)
            let ok = decoded.withUnsafeMutableBytes { out in
                png_image_finish_read(&image, nil, out.baseAddress, Int32(width * channels), nil)
            }
            guard ok != 0 else { throw ImageIOError("PNG decode", pngMessage(image)) }
            guard hasAlpha else { return RGBImage(width: width, height: height, pixels: decoded) }
            var rgb = [UInt8](repeating: 0, count: width * height * 3)
            rgb.withUnsafeMutableBufferPointer { out in
                decoded.withUnsafeBufferPointer { rgba in
                    for pixel in 0..<(width * height) {
                        out[pixel * 3] = rgba[pixel * 4]
                        out[pixel * 3 + 1] = rgba[pixel * 4 + 1]
                        out[pixel * 3 + 2] = rgba[pixel * 4 + 2]
                    }
                }
            }
            return RGBImage(width: width, height: height, pixels: rgb)
        }
    }

    /// Writes a PNG file atomically (temporary file in the same directory, then rename).
    public func writePNG(to path: String) throws {
        let bytes: [UInt8]
        do { bytes = try encodePNG() } catch let error as ImageIOError { throw error.at(path) }
        try writeImageFile(bytes, to: path, operation: "PNG write")
    }
}

/// The message libpng left in a png_image (a NUL-terminated char[64]).
private func pngMessage(_ image: png_image) -> String {
    var message = image.message
    let text = withUnsafeBytes(of: &message) { raw -> String in
        let length = raw.firstIndex(of: 0) ?? raw.count
        return String(decoding: raw.prefix(length), as: UTF8.self)
    }
    return text.isEmpty ? "libpng reported an error without a message" : "libpng: \(text)"
}

private func writeImageFile(_ bytes: [UInt8], to path: String, operation: String) throws {
    let makeError = { (detail: String) -> Error in ImageIOError(operation, path: path, detail) }
    try writeFileAtomically(path: path, makeError: makeError) { fd in
        try bytes.withUnsafeBytes { try writeAll(fd, $0, makeError: makeError) }
    }
}

// MARK: - JPEG

extension RGBImage {
    /// Whether TensorKit was built with JPEG support (the CJPEGShim module).
    public static var jpegSupported: Bool {
        #if canImport(CJPEGShim)
        return true
        #else
        return false
        #endif
    }

    /// Encodes a baseline JPEG the way Pillow's `Image.save(f, "JPEG", quality=quality)` does
    /// with its defaults: libjpeg defaults, `jpeg_set_quality(quality, force_baseline)`, 4:2:0
    /// chroma, no Huffman optimization, not progressive, JFIF header without DPI.
    public func encodeJPEG(quality: Int = 75, subsampling: JPEGSubsampling = .quarter) throws -> [UInt8] {
        guard (1...100).contains(quality) else {
            throw ImageIOError("JPEG encode", "quality must be in 1...100, got \(quality)")
        }
        try validate("JPEG encode", maxDimension: 65_500)  // JPEG_MAX_DIMENSION
        #if canImport(CJPEGShim)
        var result = tk_jpeg_result()
        let status = pixels.withUnsafeBufferPointer { source in
            tk_jpeg_encode_rgb(source.baseAddress, Int32(width), Int32(height), Int32(quality),
                               subsampling.rawValue, &result)
        }
        guard status == 0 else { throw ImageIOError("JPEG encode", "libjpeg: \(jpegMessage(&result))") }
        defer { tk_jpeg_free(result.data) }
        return [UInt8](UnsafeBufferPointer(start: result.data, count: result.size))
        #else
        throw RGBImage.jpegUnavailable("JPEG encode")
        #endif
    }

    /// Decodes a baseline or progressive JPEG (grayscale or YCbCr; CMYK is not supported) to
    /// RGB with libjpeg's defaults (accurate integer IDCT, fancy upsampling), as Pillow does.
    ///
    /// libjpeg "recovers" from corrupt data such as a truncated file by filling in gray and
    /// issuing a warning; by default that is an error here. Pass `allowCorruptData: true` to
    /// accept such images as libjpeg repaired them.
    public static func decodeJPEG(_ bytes: [UInt8], allowCorruptData: Bool = false,
                                  maxPixels: Int = RGBImage.defaultMaxPixels) throws -> RGBImage {
        #if canImport(CJPEGShim)
        var result = tk_jpeg_result()
        let status = bytes.withUnsafeBufferPointer { source in
            tk_jpeg_decode_rgb(source.baseAddress, UInt(source.count), UInt64(max(maxPixels, 0)),
                               allowCorruptData ? 0 : 1, &result)
        }
        guard status == 0 else { throw ImageIOError("JPEG decode", "libjpeg: \(jpegMessage(&result))") }
        defer { tk_jpeg_free(result.data) }
        let pixels = [UInt8](UnsafeBufferPointer(start: result.data, count: result.size))
        return RGBImage(width: Int(result.width), height: Int(result.height), pixels: pixels)
        #else
        throw jpegUnavailable("JPEG decode")
        #endif
    }

    /// Writes a JPEG file atomically (temporary file in the same directory, then rename).
    public func writeJPEG(to path: String, quality: Int = 75, subsampling: JPEGSubsampling = .quarter) throws {
        let bytes: [UInt8]
        do { bytes = try encodeJPEG(quality: quality, subsampling: subsampling) } catch let error as ImageIOError {
            throw error.at(path)
        }
        try writeImageFile(bytes, to: path, operation: "JPEG write")
    }

    static func jpegUnavailable(_ operation: String) -> ImageIOError {
        ImageIOError(operation, "TensorKit was built without JPEG support (the CJPEGShim system-library module is not a dependency of the target)")
    }
}

#if canImport(CJPEGShim)
private func jpegMessage(_ result: inout tk_jpeg_result) -> String {
    withUnsafeBytes(of: &result.message) { raw in
        let length = raw.firstIndex(of: 0) ?? raw.count
        return String(decoding: raw.prefix(length), as: UTF8.self)
    }
}
#endif

// MARK: - Tensors

extension RGBImage {
    /// Converts a floating-point tensor of shape [3, H, W] (or [1, 3, H, W]) with values in
    /// [0, 1] to 8-bit RGB exactly as `(x * 255).round().clamp(0, 255).to(torch.uint8)`:
    /// the product is rounded to the tensor's own dtype first (as PyTorch computes it), then
    /// rounded half to even; NaN becomes 0.
    public init(tensor: Tensor) throws {
        var shape = tensor.shape
        if shape.count == 4 && shape[0] == 1 { shape.removeFirst() }
        guard shape.count == 3, shape[0] == 3 else {
            throw ImageIOError("tensor to image", "expected a tensor of shape [3, H, W] or [1, 3, H, W], got \(tensor.shape)")
        }
        guard tensor.dtype.isFloatingPoint else {
            throw ImageIOError("tensor to image", "expected a floating-point tensor, got \(tensor.dtype)")
        }
        let height = shape[1], width = shape[2]
        let host = (tensor.device == .cpu ? tensor : tensor.copied(to: .cpu)).contiguous()
        let plane = height * width
        var pixels = [UInt8](repeating: 0, count: plane * 3)
        pixels.withUnsafeMutableBufferPointer { out in
            func fill(_ quantize: (Int) -> UInt8) {
                for channel in 0..<3 {
                    for index in 0..<plane {
                        out[index * 3 + channel] = quantize(channel * plane + index)
                    }
                }
            }
            switch host.dtype {
            case .float32:
                let values = host.pointer(as: Float.self)
                fill { quantizeByte(values[$0] * 255) }
            case .float64:
                let values = host.pointer(as: Double.self)
                fill { quantizeByte(values[$0] * 255) }
            case .float16:
                let values = host.pointer(as: Float16.self)
                fill { quantizeByte(Float(Float16(Float(values[$0]) * 255))) }
            case .bfloat16:
                let values = host.pointer(as: UInt16.self)
                fill { quantizeByte(floatFromBFloat16Bits(bfloat16Bits(floatFromBFloat16Bits(values[$0]) * 255))) }
            default:
                break  // rejected above
            }
        }
        self.init(width: width, height: height, pixels: pixels)
    }

    /// The image as a tensor of shape [3, H, W] holding `pixel / 255` (torchvision's ToTensor).
    public func toTensor(dtype: DType = .float32, device: Device = .cpu) -> Tensor {
        let plane = height * width
        let storage = Storage(cpuByteCount: plane * 3 * dtype.byteSize)
        let tensor = Tensor(storage: storage, shape: [3, height, width], dtype: dtype)
        pixels.withUnsafeBufferPointer { source in
            if dtype == .float32 {
                let out = tensor.pointer(as: Float.self)
                for channel in 0..<3 {
                    for index in 0..<plane {
                        out[channel * plane + index] = Float(source[index * 3 + channel]) / 255
                    }
                }
            } else {
                let base = storage.pointer, size = dtype.byteSize
                for channel in 0..<3 {
                    for index in 0..<plane {
                        let byte = source[index * 3 + channel]
                        let value = dtype == .float64 ? Double(byte) / 255 : Double(Float(byte) / 255)
                        storeScalar(value, base + (channel * plane + index) * size, dtype)
                    }
                }
            }
        }
        return device == .cpu ? tensor : tensor.copied(to: device)
    }
}

/// round-half-to-even, clamp to [0, 255], NaN → 0.
@inline(__always) private func quantizeByte<T: BinaryFloatingPoint>(_ value: T) -> UInt8 {
    let rounded = value.rounded(.toNearestOrEven)
    if !(rounded > 0) { return 0 }  // also NaN
    if rounded >= 255 { return 255 }
    return UInt8(rounded)
}
