import Foundation
import XCTest
@testable import TensorKit

/// PNG/JPEG codecs and tensor conversion, checked against Pillow and PyTorch through the
/// fixtures written by Fixtures/make_safetensors_fixtures.py.
final class ImageIOTests: XCTestCase {
    static let fixtures = URL(fileURLWithPath: #filePath).deletingLastPathComponent()
        .appendingPathComponent("Fixtures/images")

    var directory: URL!

    override func setUpWithError() throws {
        directory = FileManager.default.temporaryDirectory.appendingPathComponent("imageio-tests-\(UUID().uuidString)")
        try FileManager.default.createDirectory(at: directory, withIntermediateDirectories: true)
    }

    override func tearDownWithError() throws {
        try? FileManager.default.removeItem(at: directory)
    }

    private func expected() throws -> ExpectedImages {
        try JSONDecoder().decode(ExpectedImages.self, from: Data(contentsOf: Self.fixtures.appendingPathComponent("expected.json")))
    }

    /// Fails (rather than skips) so that a build without the CJPEGShim dependency is noticed.
    func requireJPEG() throws {
        guard RGBImage.jpegSupported else { throw RGBImage.jpegUnavailable("JPEG test") }
    }

    // MARK: PNG

    func testPNGRoundTripIsExact() throws {
        for image in [Generated.pattern(), Generated.gradient(), Generated.noise(width: 7, height: 3),
                      RGBImage(width: 1, height: 1, pixels: [1, 2, 3])] {
            let encoded = try image.encodePNG()
            XCTAssertEqual(Array(encoded.prefix(8)), [0x89, 0x50, 0x4E, 0x47, 0x0D, 0x0A, 0x1A, 0x0A])
            XCTAssertEqual(try RGBImage.decodePNG(encoded), image)
        }
        let file = directory.appendingPathComponent("pattern.png").path
        try Generated.pattern().writePNG(to: file)
        XCTAssertEqual(try RGBImage(contentsOf: file), Generated.pattern())
        XCTAssertEqual(try FileManager.default.contentsOfDirectory(atPath: directory.path), ["pattern.png"])
    }

    func testPNGDecodeMatchesPillow() throws {
        let expected = try expected()
        let names = expected.decoded.keys.filter { $0.hasSuffix(".png") }.sorted()
        XCTAssertEqual(names, ["pil_gray.png", "pil_palette.png", "pil_rgb.png", "pil_rgba.png", "rgb16.png"])
        for name in names {
            let want = expected.decoded[name]!
            let image = try RGBImage(contentsOf: Self.fixtures.appendingPathComponent(name).path)
            XCTAssertEqual(image.width, want.width, name)
            XCTAssertEqual(image.height, want.height, name)
            XCTAssertEqual(image.pixels, want.pixels, name)
        }
    }

    func testPNGErrorsAreThrown() throws {
        XCTAssertThrowsError(try RGBImage.decodePNG([])) { XCTAssertTrue("\($0)".contains("PNG decode")) }
        XCTAssertThrowsError(try RGBImage.decodePNG(Array("not a png at all".utf8))) { error in
            XCTAssertTrue("\(error)".contains("libpng"), "\(error)")
        }
        let valid = try Generated.pattern().encodePNG()
        XCTAssertThrowsError(try RGBImage.decodePNG(Array(valid.prefix(valid.count / 2))))
        var corrupted = valid
        corrupted[valid.count / 2] ^= 0xFF  // breaks the IDAT CRC
        XCTAssertThrowsError(try RGBImage.decodePNG(corrupted))
        XCTAssertThrowsError(try RGBImage.decodePNG(valid, maxPixels: 100)) { error in
            XCTAssertTrue("\(error)".contains("limit"), "\(error)")
        }
        XCTAssertThrowsError(try RGBImage(width: 0, height: 4).encodePNG())

        let missing = directory.appendingPathComponent("missing.png").path
        XCTAssertThrowsError(try RGBImage(contentsOf: missing)) { XCTAssertTrue("\($0)".contains(missing), "\($0)") }
        let garbage = directory.appendingPathComponent("garbage.png").path
        try Data(Array(valid.prefix(40))).write(to: URL(fileURLWithPath: garbage))
        XCTAssertThrowsError(try RGBImage(contentsOf: garbage)) { XCTAssertTrue("\($0)".contains(garbage), "\($0)") }
        let unwritable = directory.appendingPathComponent("no/such/dir/out.png").path
        XCTAssertThrowsError(try Generated.pattern().writePNG(to: unwritable)) {
            XCTAssertTrue("\($0)".contains(unwritable), "\($0)")
        }
    }

    // MARK: JPEG

    func testJPEGRoundTripIsClose() throws {
        try requireJPEG()
        func meanError(_ image: RGBImage, _ subsampling: JPEGSubsampling) throws -> Double {
            let decoded = try RGBImage.decodeJPEG(try image.encodeJPEG(quality: 95, subsampling: subsampling))
            XCTAssertEqual(decoded.width, image.width)
            XCTAssertEqual(decoded.height, image.height)
            let errors = zip(decoded.pixels, image.pixels).map { abs(Int($0) - Int($1)) }
            return Double(errors.reduce(0, +)) / Double(errors.count)
        }
        // 4:2:0 halves chroma resolution, so only the smooth image stays close with it.
        XCTAssertLessThan(try meanError(Generated.gradient(), .quarter), 1.5)
        for image in [Generated.gradient(), Generated.pattern(), Generated.checkerboard()] {
            XCTAssertLessThan(try meanError(image, .none), 4, "\(image.width)x\(image.height)")
        }
        let smooth = try RGBImage.decodeJPEG(try Generated.gradient().encodeJPEG(quality: 100, subsampling: .none))
        XCTAssertLessThanOrEqual(zip(smooth.pixels, Generated.gradient().pixels).map { abs(Int($0) - Int($1)) }.max()!, 3)

        let file = directory.appendingPathComponent("gradient.jpg").path
        try Generated.gradient().writeJPEG(to: file, quality: 95)
        XCTAssertEqual(try RGBImage(contentsOf: file), try RGBImage.decodeJPEG(try Generated.gradient().encodeJPEG(quality: 95)))
    }

    /// The ddpo "jpeg_incompressibility" reward is len(PIL JPEG at quality 95) / 1000.
    func testJPEGSizeMatchesPillowAtQuality95() throws {
        try requireJPEG()
        let expected = try expected()
        let images = ["gradient": Generated.gradient(), "checkerboard": Generated.checkerboard(), "pattern": Generated.pattern()]
        XCTAssertEqual(Set(expected.jpegQ95Sizes.keys), Set(images.keys))
        for (name, image) in images {
            let size = try image.encodeJPEG(quality: 95).count
            let pil = expected.jpegQ95Sizes[name]!
            XCTAssertLessThanOrEqual(abs(Double(size - pil)) / Double(pil), 0.01, "\(name): ours \(size) bytes, Pillow \(pil)")
        }
        // Same libjpeg calls as Pillow, so with the same libjpeg-turbo the bytes are identical.
        let pilBytes = try [UInt8](Data(contentsOf: Self.fixtures.appendingPathComponent("pil_gradient_q95.jpg")))
        XCTAssertEqual(try Generated.gradient().encodeJPEG(quality: 95), pilBytes)
    }

    func testJPEGDecodeMatchesPillow() throws {
        try requireJPEG()
        let expected = try expected()
        for name in ["pil_pattern_q90.jpg", "pil_gray_q90.jpg", "pil_gradient_q95.jpg"] {
            let image = try RGBImage(contentsOf: Self.fixtures.appendingPathComponent(name).path)
            if let want = expected.decoded[name] {
                XCTAssertEqual(image.width, want.width, name)
                XCTAssertEqual(image.height, want.height, name)
                XCTAssertEqual(image.pixels, want.pixels, name)
            } else {
                XCTAssertEqual(image.width, 64, name)
            }
        }
    }

    func testJPEGErrorsAreThrown() throws {
        try requireJPEG()
        let image = Generated.pattern()
        for quality in [0, 101, -5] {
            XCTAssertThrowsError(try image.encodeJPEG(quality: quality)) { XCTAssertTrue("\($0)".contains("quality"), "\($0)") }
        }
        XCTAssertThrowsError(try RGBImage(width: 0, height: 0).encodeJPEG(quality: 90))
        XCTAssertThrowsError(try RGBImage(width: 70_000, height: 1).encodeJPEG(quality: 90))

        XCTAssertThrowsError(try RGBImage.decodeJPEG([])) { XCTAssertTrue("\($0)".contains("libjpeg"), "\($0)") }
        XCTAssertThrowsError(try RGBImage.decodeJPEG(Array("garbage, not a jpeg".utf8)))
        let encoded = try image.encodeJPEG(quality: 90)
        let truncated = Array(encoded.prefix(encoded.count * 2 / 3))
        XCTAssertThrowsError(try RGBImage.decodeJPEG(truncated)) { XCTAssertTrue("\($0)".contains("JPEG decode"), "\($0)") }
        let repaired = try RGBImage.decodeJPEG(truncated, allowCorruptData: true)
        XCTAssertEqual(repaired.width, image.width)
        XCTAssertThrowsError(try RGBImage.decodeJPEG(encoded, maxPixels: 10)) { XCTAssertTrue("\($0)".contains("limit"), "\($0)") }
        // Every prefix and a few corruptions: errors or images, never a crash or exit().
        for length in stride(from: 0, to: encoded.count, by: 7) {
            _ = try? RGBImage.decodeJPEG(Array(encoded.prefix(length)))
            _ = try? RGBImage.decodeJPEG(Array(encoded.prefix(length)), allowCorruptData: true)
        }
        for position in stride(from: 2, to: encoded.count, by: 11) {
            var corrupted = encoded
            corrupted[position] = corrupted[position] &+ 0x5A
            _ = try? RGBImage.decodeJPEG(corrupted, allowCorruptData: true)
        }
    }

    // MARK: Tensors

    /// Matches `(x * 255).round().clamp(0, 255).to(torch.uint8)` computed by PyTorch, in float32
    /// and float16, on inputs around every rounding midpoint.
    func testTensorToImageMatchesTorchRounding() throws {
        let cases = try expected().quantize
        for (name, dtype) in [("float32", DType.float32), ("float16", DType.float16)] {
            let c = try XCTUnwrap(cases[name])
            let storage = Storage(cpuByteCount: c.bits.count * dtype.byteSize)
            for (index, bits) in c.bits.enumerated() {
                if dtype == .float32 {
                    storage.pointer.storeBytes(of: UInt32(bits), toByteOffset: index * 4, as: UInt32.self)
                } else {
                    storage.pointer.storeBytes(of: UInt16(bits), toByteOffset: index * 2, as: UInt16.self)
                }
            }
            let image = try RGBImage(tensor: Tensor(storage: storage, shape: c.shape, dtype: dtype))
            XCTAssertEqual(image.width, c.shape[2])
            XCTAssertEqual(image.height, c.shape[1])
            // Fixture bytes are CHW; the image is HWC.
            let plane = c.shape[1] * c.shape[2]
            var mismatches = 0
            for channel in 0..<3 {
                for index in 0..<plane where image.pixels[index * 3 + channel] != UInt8(c.bytesCHW[channel * plane + index]) {
                    mismatches += 1
                }
            }
            XCTAssertEqual(mismatches, 0, name)
        }
    }

    func testTensorConversionEdgeCasesAndRoundTrip() throws {
        let values: [Float] = [.nan, -.infinity, .infinity, -0.3, 0.5, 1.7, 0.25, 1, 0, 2, -1, 0.75]
        let tensor = floatTensor(values, shape: [1, 3, 2, 2])
        let image = try RGBImage(tensor: tensor)
        XCTAssertEqual(image.width, 2)
        XCTAssertEqual(image.height, 2)
        // Channel c of pixel p is values[c * 4 + p].
        let expectedCHW: [UInt8] = [0, 0, 255, 0, 128, 255, 64, 255, 0, 255, 0, 191]
        for channel in 0..<3 {
            for pixel in 0..<4 {
                XCTAssertEqual(image.pixels[pixel * 3 + channel], expectedCHW[channel * 4 + pixel], "c\(channel) p\(pixel)")
            }
        }

        let original = Generated.pattern()
        let back = original.toTensor()
        XCTAssertEqual(back.shape, [3, original.height, original.width])
        XCTAssertEqual(back.dtype, .float32)
        let first = back.pointer(as: Float.self)
        XCTAssertEqual(first[0], Float(original.pixels[0]) / 255)
        XCTAssertEqual(first[original.width * original.height], Float(original.pixels[1]) / 255)
        XCTAssertEqual(try RGBImage(tensor: back), original)
        XCTAssertEqual(try RGBImage(tensor: original.toTensor(dtype: .float64)), original)
        XCTAssertEqual(try RGBImage(tensor: original.toTensor(dtype: .float16)), original)
        XCTAssertEqual(try RGBImage(tensor: original.toTensor(dtype: .bfloat16)), original)

        // A [3, H, W] view with permuted strides (HWC storage) converts the same.
        let hwc = floatTensor(original.pixels.map { Float($0) / 255 }, shape: [original.height, original.width, 3])
        let chw = Tensor(storage: hwc.storage, shape: [3, original.height, original.width], dtype: .float32,
                         strides: [1, original.width * 3, 3])
        XCTAssertEqual(try RGBImage(tensor: chw), original)

        XCTAssertThrowsError(try RGBImage(tensor: floatTensor([0, 0], shape: [2, 1, 1])))
        XCTAssertThrowsError(try RGBImage(tensor: Tensor(storage: Storage(cpuByteCount: 3), shape: [3, 1, 1], dtype: .uint8)))
    }
}

// MARK: - Fixtures and generators

private struct ExpectedImages: Decodable {
    struct Decoded: Decodable {
        let width: Int
        let height: Int
        let rgbBase64: String
        var pixels: [UInt8] { [UInt8](Data(base64Encoded: rgbBase64) ?? Data()) }
        enum CodingKeys: String, CodingKey { case width, height, rgbBase64 = "rgb_base64" }
    }
    struct Quantize: Decodable {
        let shape: [Int]
        let bits: [Int]
        let bytesCHW: [Int]
        enum CodingKeys: String, CodingKey { case shape, bits, bytesCHW = "bytes_chw" }
    }
    let decoded: [String: Decoded]
    let jpegQ95Sizes: [String: Int]
    let quantize: [String: Quantize]
    enum CodingKeys: String, CodingKey { case decoded, jpegQ95Sizes = "jpeg_q95_sizes", quantize }
}

/// The same integer-only images as make_safetensors_fixtures.py.
private enum Generated {
    static func make(width: Int, height: Int, _ pixel: (Int, Int) -> (Int, Int, Int)) -> RGBImage {
        var pixels: [UInt8] = []
        pixels.reserveCapacity(width * height * 3)
        for y in 0..<height {
            for x in 0..<width {
                let (r, g, b) = pixel(x, y)
                pixels += [UInt8(r), UInt8(g), UInt8(b)]
            }
        }
        return RGBImage(width: width, height: height, pixels: pixels)
    }

    static func gradient(width: Int = 64, height: Int = 64) -> RGBImage {
        make(width: width, height: height) { x, y in
            (x * 255 / (width - 1), y * 255 / (height - 1), (x + y) * 255 / (width + height - 2))
        }
    }

    static func checkerboard(width: Int = 64, height: Int = 64, cell: Int = 8) -> RGBImage {
        make(width: width, height: height) { x, y in
            (x / cell + y / cell) % 2 == 0 ? (235, 64, 52) : (30, 30, 200)
        }
    }

    static func pattern(width: Int = 40, height: Int = 24) -> RGBImage {
        make(width: width, height: height) { x, y in
            ((x * x + 3 * y) % 256, (x * y + 17) % 256, (5 * x + y * y) % 256)
        }
    }

    static func noise(width: Int, height: Int, seed: UInt64 = 12345) -> RGBImage {
        var state = seed
        let bytes = (0..<(width * height * 3)).map { _ -> UInt8 in
            state = (state &* 1_103_515_245 &+ 12345) % (1 << 31)
            return UInt8((state >> 16) & 0xFF)
        }
        return RGBImage(width: width, height: height, pixels: bytes)
    }
}

private func floatTensor(_ values: [Float], shape: [Int]) -> Tensor {
    let storage = Storage(cpuByteCount: values.count * 4)
    values.withUnsafeBytes { storage.pointer.copyMemory(from: $0.baseAddress!, byteCount: $0.count) }
    return Tensor(storage: storage, shape: shape, dtype: .float32)
}
