import Foundation
import XCTest
import TensorKit
@testable import RLAlgorithms

// Training logs as files. Fixtures: Fixtures/make_tensorboard_fixtures.py writes an event file with
// tensorboard's own EventFileWriter (fixed wall times, steps, tags, values and two PNGs made by
// Pillow) and dumps what tensorboard's reader decodes from it. Our writer, given the same inputs,
// must produce the same record bytes after the file-version record (that record differs on purpose:
// tensorboard's writer adds `source_metadata{writer: "tensorboard.summary.writer.event_file_writer"}`,
// which we do not claim; REFERENCES.md §6 has only wall_time + file_version, so that record is
// compared decoded instead).

/// A protobuf reader just large enough to decode Event / Summary in the tests.
private struct ProtoField {
    enum Value { case varint(UInt64), fixed64(UInt64), fixed32(UInt32), bytes([UInt8]) }
    var number: Int
    var value: Value
}

private func parseProto(_ bytes: [UInt8]) throws -> [ProtoField] {
    struct Bad: Error { let what: String }
    var fields: [ProtoField] = []
    var i = 0
    func varint() throws -> UInt64 {
        var result: UInt64 = 0, shift: UInt64 = 0
        while true {
            guard i < bytes.count, shift < 64 else { throw Bad(what: "truncated varint at \(i)") }
            let b = bytes[i]; i += 1
            result |= UInt64(b & 0x7F) << shift
            if b < 0x80 { return result }
            shift += 7
        }
    }
    func little(_ n: Int) throws -> UInt64 {
        guard i + n <= bytes.count else { throw Bad(what: "truncated fixed\(n * 8) at \(i)") }
        defer { i += n }
        return (0..<n).reduce(UInt64(0)) { $0 | UInt64(bytes[i + $1]) << UInt64(8 * $1) }
    }
    while i < bytes.count {
        let key = try varint()
        let number = Int(key >> 3)
        switch key & 7 {
        case 0: fields.append(ProtoField(number: number, value: .varint(try varint())))
        case 1: fields.append(ProtoField(number: number, value: .fixed64(try little(8))))
        case 5: fields.append(ProtoField(number: number, value: .fixed32(UInt32(try little(4)))))
        case 2:
            let n = Int(try varint())
            guard i + n <= bytes.count else { throw Bad(what: "truncated bytes at \(i)") }
            fields.append(ProtoField(number: number, value: .bytes(Array(bytes[i..<i + n]))))
            i += n
        default: throw Bad(what: "wire type \(key & 7) at \(i)")
        }
    }
    return fields
}

private func hex(_ bytes: [UInt8]) -> String { bytes.map { String(format: "%02x", $0) }.joined() }

/// An Event decoded into the JSON shape of the fixture script's decoded.json.
private func decodeEvent(_ data: [UInt8]) throws -> [String: Any] {
    var out: [String: Any] = ["wall_time": String(format: "%016llx", UInt64(0)), "step": 0]
    for field in try parseProto(data) {
        switch (field.number, field.value) {
        case (1, .fixed64(let bits)): out["wall_time"] = String(format: "%016llx", bits)
        case (2, .varint(let v)): out["step"] = Int(Int64(bitPattern: v))
        case (3, .bytes(let b)): out["file_version"] = String(decoding: b, as: UTF8.self)
        case (5, .bytes(let b)):
            var values: [[String: Any]] = []
            for value in try parseProto(b) {
                guard value.number == 1, case .bytes(let vb) = value.value else { XCTFail("Summary field \(value.number)"); continue }
                var entry: [String: Any] = ["tag": ""]
                for f in try parseProto(vb) {
                    switch (f.number, f.value) {
                    case (1, .bytes(let t)): entry["tag"] = String(decoding: t, as: UTF8.self)
                    case (2, .fixed32(let bits)): entry["simple_value"] = String(format: "%08x", bits)
                    case (4, .bytes(let ib)):
                        var image: [String: Any] = ["height": 0, "width": 0, "colorspace": 0, "png": ""]
                        for g in try parseProto(ib) {
                            switch (g.number, g.value) {
                            case (1, .varint(let v)): image["height"] = Int(v)
                            case (2, .varint(let v)): image["width"] = Int(v)
                            case (3, .varint(let v)): image["colorspace"] = Int(v)
                            case (4, .bytes(let png)): image["png"] = hex(png)
                            default: XCTFail("Image field \(g.number)")
                            }
                        }
                        entry["image"] = image
                    default: XCTFail("Summary.Value field \(f.number)")
                    }
                }
                values.append(entry)
            }
            out["summary"] = values
        default: XCTFail("Event field \(field.number)")
        }
    }
    return out
}

/// Records everything it is sent.
private final class RecordingLogger: DDPOLogger {
    var calls: [String] = []
    func log(_ values: [String: Double], step: Int) { calls.append("log \(values.keys.sorted()) @\(step)") }
    func logImages(_ images: [(caption: String, image: RGBImage)], step: Int) {
        calls.append("images \(images.map(\.caption)) @\(step)")
    }
}

final class LoggingTests: XCTestCase {
    static let fixtures = URL(fileURLWithPath: #filePath).deletingLastPathComponent()
        .appendingPathComponent("Fixtures/tensorboard")

    private func temporaryDirectory() throws -> URL {
        let url = FileManager.default.temporaryDirectory.appendingPathComponent("logging-\(UUID().uuidString)")
        try FileManager.default.createDirectory(at: url, withIntermediateDirectories: true)
        addTeardownBlock { try? FileManager.default.removeItem(at: url) }
        return url
    }

    private func json(_ name: String) throws -> Any {
        try JSONSerialization.jsonObject(with: Data(contentsOf: Self.fixtures.appendingPathComponent(name)))
    }

    private func double(_ hexBits: Any?) -> Double {
        Double(bitPattern: UInt64(hexBits as! String, radix: 16)!)
    }

    /// A clock that returns the given times in order.
    private func clock(_ times: [Double]) -> () -> Double {
        var remaining = times
        return { remaining.isEmpty ? 0 : remaining.removeFirst() }
    }

    // MARK: CRC32C

    /// Bit-at-a-time CRC-32C, the definition.
    private func bitwiseCRC32C(_ bytes: [UInt8]) -> UInt32 {
        var crc: UInt32 = 0xFFFF_FFFF
        for byte in bytes {
            crc ^= UInt32(byte)
            for _ in 0..<8 { crc = (crc & 1) != 0 ? (crc >> 1) ^ 0x82F6_3B78 : crc >> 1 }
        }
        return ~crc
    }

    func testCRC32CKnownVectors() {
        // The published check value of CRC-32C.
        XCTAssertEqual(CRC32C.checksum(Array("123456789".utf8)), 0xE306_9283)
        XCTAssertEqual(CRC32C.checksum([UInt8]()), 0)
        // RFC 3720 (iSCSI) appendix B.4 test vectors.
        XCTAssertEqual(CRC32C.checksum([UInt8](repeating: 0, count: 32)), 0x8A91_36AA)
        XCTAssertEqual(CRC32C.checksum([UInt8](repeating: 0xFF, count: 32)), 0x62A8_AB43)
        XCTAssertEqual(CRC32C.checksum((0..<32).map { UInt8($0) }), 0x46DD_794E)
        XCTAssertEqual(CRC32C.checksum((0..<32).reversed().map { UInt8($0) }), 0x113F_DB5C)
    }

    func testCRC32CSlicingMatchesBitwiseAndIsIncremental() {
        var rng = SystemRandomNumberGenerator()
        for length in [1, 7, 8, 9, 15, 16, 17, 63, 64, 65, 1000, 4099] {
            let bytes = (0..<length).map { _ in UInt8.random(in: 0...255, using: &rng) }
            let whole = CRC32C.checksum(bytes)
            XCTAssertEqual(whole, bitwiseCRC32C(bytes), "length \(length)")
            for split in [0, 1, 3, length / 2, length] where split <= length {
                var crc = CRC32C()
                crc.update(bytes[..<split])
                crc.update(bytes[split...])
                XCTAssertEqual(crc.value, whole, "length \(length) split \(split)")
            }
        }
    }

    func testMaskedCRC() {
        for crc: UInt32 in [0, 1, 0xE306_9283, 0xFFFF_FFFF, 0x8000_0000] {
            XCTAssertEqual(CRC32C.unmasked(CRC32C.masked(crc)), crc)
        }
        // ((crc >> 15) | (crc << 17)) + 0xa282ead8, worked by hand for crc = 1: 1 << 17 = 0x20000.
        XCTAssertEqual(CRC32C.masked(1), 0x0002_0000 &+ 0xA282_EAD8)
        XCTAssertEqual(CRC32C.masked(0), 0xA282_EAD8)
    }

    // MARK: Protobuf

    func testProtobufEncodings() {
        var w = ProtobufWriter()
        w.int64(2, 300)            // key 0x10, varint 300 = ac 02
        w.int64(2, -1)             // ten bytes
        w.double(1, 1.0)           // key 0x09, 3ff0000000000000 little-endian
        w.float(2, 1.0)            // key 0x15, 3f800000 little-endian
        w.string(1, "hi")          // key 0x0a, length 2
        XCTAssertEqual(hex(w.bytes), "10ac02" + "10ffffffffffffffffff01" + "09000000000000f03f" + "150000803f" + "0a026869")
        var outer = ProtobufWriter()
        outer.message(5, w)
        XCTAssertEqual(Array(outer.bytes.prefix(2)), [0x2A, UInt8(w.bytes.count)])
    }

    // MARK: TensorBoard against the reference writer

    /// Writes the fixture's inputs with our writer; returns the writer's file.
    private func writeFixtureInputs(into directory: URL) throws -> URL {
        let inputs = try json("inputs.json") as! [String: Any]
        let events = inputs["events"] as! [[String: Any]]
        let times = [double(inputs["header_wall_time"])] + events.map { double($0["wall_time"]) }
        let writer = try TensorBoardWriter(directory: directory, hostname: "fixturehost", wallTime: clock(times))
        for event in events {
            let step = event["step"] as! Int
            if event["kind"] as! String == "scalars" {
                var values: [String: Double] = [:]
                for pair in event["values"] as! [[String]] { values[pair[0]] = double(pair[1]) }
                XCTAssertEqual(values.count, (event["values"] as! [[String]]).count)
                try writer.writeScalars(values, step: step)
            } else {
                let images = try (event["images"] as! [[String: Any]]).map { image -> TensorBoardImage in
                    let png = try Data(contentsOf: Self.fixtures.appendingPathComponent(image["png"] as! String))
                    return TensorBoardImage(tag: image["tag"] as! String, height: image["height"] as! Int,
                                            width: image["width"] as! Int, encoded: [UInt8](png))
                }
                try writer.writeImages(images, step: step)
            }
        }
        XCTAssertEqual(writer.url.lastPathComponent, inputs["file_name"] as! String)
        writer.close()
        return writer.url
    }

    func testRecordsAreByteIdenticalToTensorBoardsWriter() throws {
        let ours = try TensorBoardRecords.read(contentsOf: writeFixtureInputs(into: temporaryDirectory()))
        let reference = try TensorBoardRecords.read(contentsOf: Self.fixtures.appendingPathComponent(
            "events.out.tfevents.1700000000.fixturehost"))
        XCTAssertEqual(ours.count, reference.count)
        XCTAssertGreaterThan(ours.count, 7)
        for i in 1..<min(ours.count, reference.count) {
            XCTAssertEqual(hex(ours[i]), hex(reference[i]), "record \(i)")
        }
        // The whole file after the first record, framing and CRCs included.
        let ourBytes = try [UInt8](Data(contentsOf: writeFixtureInputs(into: temporaryDirectory())))
        let refBytes = try [UInt8](Data(contentsOf: Self.fixtures.appendingPathComponent("events.out.tfevents.1700000000.fixturehost")))
        XCTAssertEqual(hex(Array(ourBytes.dropFirst(16 + ours[0].count))),
                       hex(Array(refBytes.dropFirst(16 + reference[0].count))))
    }

    func testDecodedEventsMatchTensorBoardsReader() throws {
        let records = try TensorBoardRecords.read(contentsOf: writeFixtureInputs(into: temporaryDirectory()))
        let decoded = try json("decoded.json") as! [String: Any]
        var expected = decoded["events"] as! [[String: Any]]
        XCTAssertEqual(decoded["event_file_loader_count"] as? Int, expected.count)
        // Ours does not write source_metadata (see the file's header comment).
        XCTAssertEqual(expected[0].removeValue(forKey: "source_writer") as? String, "tensorboard.summary.writer.event_file_writer")
        XCTAssertEqual(records.count, expected.count)
        for (i, (record, want)) in zip(records, expected).enumerated() {
            let got = try decodeEvent(record)
            XCTAssertEqual(got as NSDictionary, want as NSDictionary, "event \(i)")
        }
        XCTAssertEqual(try decodeEvent(records[0])["file_version"] as? String, "brain.Event:2")
    }

    func testFixtureImagesMatchTheirPixels() throws {
        // The PNGs stored by the script decode (with libpng) to the pixels it put in them.
        for image in try json("images.json") as! [[String: Any]] {
            let png = try [UInt8](Data(contentsOf: Self.fixtures.appendingPathComponent(image["png"] as! String)))
            let decoded = try RGBImage.decodePNG(png)
            XCTAssertEqual(decoded.width, image["width"] as? Int)
            XCTAssertEqual(decoded.height, image["height"] as? Int)
            XCTAssertEqual(decoded.pixels.map(Int.init), image["pixels"] as? [Int])
        }
    }

    // MARK: TensorBoard as a DDPOLogger

    func testLoggerScalarsAndImages() throws {
        let dir = try temporaryDirectory()
        let writer = try TensorBoardWriter(directory: dir, hostname: "h", wallTime: clock([10, 11, 12, 13]))
        var errors: [Error] = []
        writer.onError = { errors.append($0) }
        let logger: DDPOLogger = writer
        logger.log(["reward_std": 0.5, "reward_mean": 1.5, "epoch": 2], step: 4)
        let a = RGBImage(width: 2, height: 1, pixels: [255, 0, 0, 0, 0, 255])
        let b = RGBImage(width: 1, height: 3, pixels: [1, 2, 3, 4, 5, 6, 7, 8, 9])
        logger.logImages([(caption: "a red circle | 0.812", image: a), (caption: "b | -1.000", image: b)], step: 5)
        logger.log([:], step: 6)   // nothing written
        XCTAssertTrue(errors.isEmpty)
        XCTAssertEqual(writer.url.lastPathComponent, "events.out.tfevents.0000000010.h")

        let records = try TensorBoardRecords.read(contentsOf: writer.url)
        XCTAssertEqual(records.count, 3)
        let scalars = try decodeEvent(records[1])
        XCTAssertEqual(scalars["step"] as? Int, 4)
        XCTAssertEqual(double(scalars["wall_time"]), 11)
        let values = scalars["summary"] as! [[String: Any]]
        XCTAssertEqual(values.map { $0["tag"] as! String }, ["epoch", "reward_mean", "reward_std"])
        XCTAssertEqual(values.map { $0["simple_value"] as! String }, ["40000000", "3fc00000", "3f000000"])

        let images = try decodeEvent(records[2])
        XCTAssertEqual(images["step"] as? Int, 5)
        let entries = images["summary"] as! [[String: Any]]
        XCTAssertEqual(entries.map { $0["tag"] as! String }, ["a red circle | 0.812", "b | -1.000"])
        for (entry, source) in zip(entries, [a, b]) {
            let image = entry["image"] as! [String: Any]
            XCTAssertEqual(image["height"] as? Int, source.height)
            XCTAssertEqual(image["width"] as? Int, source.width)
            XCTAssertEqual(image["colorspace"] as? Int, 3)
            let pngHex = image["png"] as! String
            var png: [UInt8] = []
            var index = pngHex.startIndex
            while index < pngHex.endIndex {
                let next = pngHex.index(index, offsetBy: 2)
                png.append(UInt8(pngHex[index..<next], radix: 16)!)
                index = next
            }
            XCTAssertEqual(try RGBImage.decodePNG(png), source)
        }
        if let keep = ProcessInfo.processInfo.environment["LOGGING_TESTS_KEEP"] {
            // For checking with tensorboard's reader: make_tensorboard_fixtures.py --verify <file>.
            try? FileManager.default.copyItem(at: writer.url, to: URL(fileURLWithPath: keep))
        }
    }

    func testEachCallReachesTheFileBeforeReturning() throws {
        let dir = try temporaryDirectory()
        let writer = try TensorBoardWriter(directory: dir, hostname: "h", wallTime: { 1 })
        func size() throws -> Int { try Data(contentsOf: writer.url).count }
        let header = try size()
        XCTAssertEqual(header, 16 + TensorBoardEvent.fileVersionEvent(wallTime: 1).count)
        try writer.writeScalars(["loss": 1], step: 1)
        let one = try size()
        XCTAssertEqual(one - header, 16 + TensorBoardEvent.scalarsEvent(wallTime: 1, step: 1, values: [("loss", 1)]).count)
        try writer.writeScalars(["loss": 2], step: 2)
        XCTAssertGreaterThan(try size(), one)
        XCTAssertEqual(try TensorBoardRecords.read(contentsOf: writer.url).count, 3)
        writer.close()
        XCTAssertThrowsError(try writer.writeScalars(["loss": 3], step: 3)) { error in
            XCTAssertTrue("\(error)".contains(writer.url.path) && "\(error)".contains("after close"), "\(error)")
        }
    }

    func testSecondWriterInTheSameSecondGetsItsOwnFile() throws {
        let dir = try temporaryDirectory()
        let first = try TensorBoardWriter(directory: dir, hostname: "h", wallTime: { 5.9 })
        let second = try TensorBoardWriter(directory: dir, hostname: "h", wallTime: { 5.2 })
        XCTAssertEqual(first.url.lastPathComponent, "events.out.tfevents.0000000005.h")
        XCTAssertEqual(second.url.lastPathComponent, "events.out.tfevents.0000000005.h.1")
        XCTAssertTrue(second.url.lastPathComponent.contains("tfevents"))
    }

    func testTruncatedOrCorruptRecordsAreDetected() throws {
        let dir = try temporaryDirectory()
        let writer = try TensorBoardWriter(directory: dir, hostname: "h", wallTime: { 1 })
        try writer.writeScalars(["loss": 1, "approx_kl": 2], step: 1)
        writer.close()
        let bytes = try [UInt8](Data(contentsOf: writer.url))
        let firstLength = 16 + TensorBoardEvent.fileVersionEvent(wallTime: 1).count
        XCTAssertEqual(try TensorBoardRecords.read(bytes).count, 2)
        XCTAssertEqual(try TensorBoardRecords.read(Array(bytes.prefix(firstLength))).count, 1)
        // Every cut inside the last record (header, data or CRC) is reported, naming record 1.
        for cut in firstLength + 1..<bytes.count {
            XCTAssertThrowsError(try TensorBoardRecords.read(Array(bytes.prefix(cut)), path: "x.tfevents")) { error in
                let text = "\(error)"
                XCTAssertTrue(text.contains("x.tfevents") && text.contains("record 1") && text.contains("truncated"),
                              "cut at \(cut): \(text)")
            }
        }
        // A flipped bit in the data or in the length is a CRC error.
        var corrupt = bytes
        corrupt[bytes.count - 6] ^= 0x01
        XCTAssertThrowsError(try TensorBoardRecords.read(corrupt)) { XCTAssertTrue("\($0)".contains("data's CRC"), "\($0)") }
        corrupt = bytes
        corrupt[firstLength] ^= 0x01
        XCTAssertThrowsError(try TensorBoardRecords.read(corrupt)) { XCTAssertTrue("\($0)".contains("length's CRC"), "\($0)") }
        // From a file, the error names the file.
        let cutFile = dir.appendingPathComponent("cut.tfevents")
        try Data(bytes.dropLast(1)).write(to: cutFile)
        XCTAssertThrowsError(try TensorBoardRecords.read(contentsOf: cutFile)) {
            XCTAssertTrue("\($0)".contains(cutFile.path) && "\($0)".contains("truncated"), "\($0)")
        }
    }

    // MARK: JSON lines

    func testJSONLinesParseAndHoldTheValues() throws {
        let dir = try temporaryDirectory()
        let logger = try JSONLinesLogger(directory: dir, wallTime: clock([1700000000.25, 1700000001.5, 7]))
        var errors: [Error] = []
        logger.onError = { errors.append($0) }
        logger.log(["loss": 0.125, "approx_kl": 1e-5, "clipfrac": 0.1], step: 3)
        logger.log(["reward_mean": .nan, "reward_std": .infinity, "neg": -.infinity, "tag \"q\"\n/ü": -2.5], step: 4)
        logger.logImages([(caption: "x", image: RGBImage(width: 1, height: 1))], step: 4)   // ignored
        logger.log(["step": 1], step: 5)    // reserved key: an error, nothing written
        XCTAssertEqual(errors.count, 1)
        XCTAssertTrue(errors.first.map { "\($0)".contains("metrics.jsonl") && "\($0)".contains("\"step\"") } ?? false)
        logger.close()

        let text = try String(contentsOf: dir.appendingPathComponent("metrics.jsonl"), encoding: .utf8)
        let lines = text.split(separator: "\n", omittingEmptySubsequences: false)
        XCTAssertEqual(lines.count, 3)
        XCTAssertEqual(lines.last, "")
        XCTAssertEqual(String(lines[0]), #"{"step": 3, "wall_time": 1700000000.25, "approx_kl": 1e-05, "clipfrac": 0.1, "loss": 0.125}"#)

        let first = try JSONSerialization.jsonObject(with: Data(lines[0].utf8)) as! [String: Any]
        XCTAssertEqual(first["step"] as? Int, 3)
        XCTAssertEqual(first["wall_time"] as? Double, 1700000000.25)
        XCTAssertEqual(first["approx_kl"] as? Double, 1e-5)
        XCTAssertEqual(first["clipfrac"] as? Double, 0.1)
        XCTAssertEqual(first["loss"] as? Double, 0.125)

        let second = try JSONSerialization.jsonObject(with: Data(lines[1].utf8)) as! [String: Any]
        XCTAssertEqual(Set(second.keys), ["step", "wall_time", "reward_mean", "reward_std", "neg", "tag \"q\"\n/ü"])
        XCTAssertTrue(second["reward_mean"] is NSNull)
        XCTAssertTrue(second["reward_std"] is NSNull)
        XCTAssertTrue(second["neg"] is NSNull)
        XCTAssertEqual(second["tag \"q\"\n/ü"] as? Double, -2.5)
        XCTAssertEqual(second["wall_time"] as? Double, 1700000001.5)
        // Keys after step and wall_time are sorted.
        let order = ["\"neg\"", "\"reward_mean\"", "\"reward_std\"", "\"tag"].map { lines[1].range(of: $0)!.lowerBound }
        XCTAssertEqual(order, order.sorted())
    }

    func testJSONLinesAppendToAnExistingFileAndRoundTripDoubles() throws {
        let dir = try temporaryDirectory()
        let values = [0.1, 1.0 / 3.0, 1e300, Double.leastNonzeroMagnitude, -0.0, 123456789012.5, Double.ulpOfOne]
        do {
            let a = try JSONLinesLogger(directory: dir, wallTime: { 1 })
            try a.write(["v": values[0]], step: 0)
        }
        let b = try JSONLinesLogger(directory: dir, wallTime: { 2 })
        for (i, v) in values.enumerated().dropFirst() { try b.write(["v": v], step: i) }
        b.close()
        let lines = try String(contentsOf: dir.appendingPathComponent("metrics.jsonl"), encoding: .utf8)
            .split(separator: "\n")
        XCTAssertEqual(lines.count, values.count)
        for (line, v) in zip(lines, values) {
            let object = try JSONSerialization.jsonObject(with: Data(line.utf8)) as! [String: Any]
            XCTAssertEqual((object["v"] as! NSNumber).doubleValue.bitPattern, v.bitPattern, String(line))
        }
    }

    func testJSONStringEscaping() {
        XCTAssertEqual(JSONLinesLogger.quoted("a\"b\\c\n\t\u{01}é"), #""a\"b\\c\n\t\u0001é""#)
    }

    // MARK: MultiLogger

    func testMultiLoggerFansOutInOrder() {
        let a = RecordingLogger(), b = RecordingLogger()
        let multi = MultiLogger([a, b])
        multi.log(["loss": 1, "approx_kl": 2], step: 3)
        multi.logImages([(caption: "c", image: RGBImage(width: 1, height: 1))], step: 4)
        XCTAssertEqual(a.calls, ["log [\"approx_kl\", \"loss\"] @3", "images [\"c\"] @4"])
        XCTAssertEqual(b.calls, a.calls)
    }

    // MARK: ImageGrid

    private func pixel(_ image: RGBImage, _ x: Int, _ y: Int) -> [UInt8] {
        Array(image.pixels[(y * image.width + x) * 3..<(y * image.width + x) * 3 + 3])
    }

    func testGridOfThreeOneByOneImages() {
        // Two per row, 1 px padding: 2·(1+1)+1 = 5 wide, 2 rows → 5 high.
        //   W W W W W
        //   W R W G W
        //   W W W W W
        //   W B W W W      (the empty fourth cell stays white)
        //   W W W W W
        let red = RGBImage(width: 1, height: 1, pixels: [255, 0, 0])
        let green = RGBImage(width: 1, height: 1, pixels: [0, 255, 0])
        let blue = RGBImage(width: 1, height: 1, pixels: [0, 0, 255])
        let grid = ImageGrid.make([red, green, blue], columns: 2, padding: 1)
        XCTAssertEqual(grid.width, 5)
        XCTAssertEqual(grid.height, 5)
        for y in 0..<5 {
            for x in 0..<5 {
                let want: [UInt8]
                switch (x, y) {
                case (1, 1): want = [255, 0, 0]
                case (3, 1): want = [0, 255, 0]
                case (1, 3): want = [0, 0, 255]
                default: want = [255, 255, 255]
                }
                XCTAssertEqual(pixel(grid, x, y), want, "(\(x), \(y))")
            }
        }
    }

    func testGridOfUnequalImagesWithoutPadding() {
        // Cells are 2×2 (the largest width and height); columns 3 but only 2 images → 4×2.
        //   a0 a1 b0 W
        //   W  W  b1 W
        let a = RGBImage(width: 2, height: 1, pixels: [1, 1, 1, 2, 2, 2])
        let b = RGBImage(width: 1, height: 2, pixels: [3, 3, 3, 4, 4, 4])
        let grid = ImageGrid.make([a, b], columns: 3, padding: 0)
        XCTAssertEqual(grid.width, 4)
        XCTAssertEqual(grid.height, 2)
        XCTAssertEqual(grid.pixels, [1, 1, 1, 2, 2, 2, 3, 3, 3, 255, 255, 255,
                                     255, 255, 255, 255, 255, 255, 4, 4, 4, 255, 255, 255])
    }

    func testGridDefaultPaddingAndEmpty() {
        let image = RGBImage(width: 3, height: 2, pixels: [UInt8](repeating: 7, count: 18))
        let grid = ImageGrid.make(Array(repeating: image, count: 4), columns: 2)
        XCTAssertEqual(grid.width, 2 * (3 + 2) + 2)
        XCTAssertEqual(grid.height, 2 * (2 + 2) + 2)
        XCTAssertEqual(pixel(grid, 2, 2), [7, 7, 7])
        XCTAssertEqual(pixel(grid, 7, 6), [7, 7, 7])    // fourth image's top-left: (2+5, 2+4)
        XCTAssertEqual(pixel(grid, 5, 2), [255, 255, 255])
        let empty = ImageGrid.make([], columns: 4)
        XCTAssertEqual(empty.width, 2)
        XCTAssertEqual(empty.pixels, [UInt8](repeating: 255, count: 12))
    }
}
