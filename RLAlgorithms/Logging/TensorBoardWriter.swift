import Foundation
import TensorKit
#if canImport(Glibc)
import Glibc
#elseif canImport(Darwin)
import Darwin
#endif

// TensorBoard event files written directly (REFERENCES.md §6), no TensorFlow: each record is
// `u64 LE length, u32 masked CRC32C(length bytes), data, u32 masked CRC32C(data)`, the data a
// serialised `Event`. The first record says `file_version = "brain.Event:2"`; then one Event per
// call, scalars as `Summary.Value.simple_value` (float32), images as `Summary.Image` (PNG,
// colorspace 3 = RGB). Fields are written in field-number order with proto3's omission of zero
// wall_time / step, so the records are byte-identical to tensorboard's own `EventFileWriter`'s for
// the same events (LoggingTests compares them). Every call's record reaches the file (one `write`
// of the whole record, no user-space buffer) before the call returns, and a failed write is cut
// back off the file, so a crash loses at most the record being written.
//
//   let tb = try TensorBoardWriter(directory: runDir)        // runDir/events.out.tfevents.<unix>.<host>
//   try tb.writeScalars(["loss": 0.12, "approx_kl": 1e-4], step: 3)
//   try tb.writeImages([(tag: "a cat | 0.812", image: grid)], step: 3)
//   trainer.logger = tb                                        // or MultiLogger([tb, jsonl])
//   let events = try TensorBoardRecords.read(contentsOf: tb.url)   // CRC-checked records

/// An event file could not be written or read; names the file and what was wrong.
public struct TensorBoardError: Error, CustomStringConvertible, LocalizedError, Sendable {
    public var path: String
    public var message: String
    public init(path: String, _ message: String) {
        self.path = path
        self.message = message
    }
    public var description: String { "TensorBoard event file '\(path)': \(message)" }
    public var errorDescription: String? { description }
}

/// One already-encoded image value of an image summary.
public struct TensorBoardImage: Sendable, Equatable {
    /// The summary tag TensorBoard shows (the caption).
    public var tag: String
    public var height: Int
    public var width: Int
    /// 3 = RGB (1 grey, 2 grey + alpha, 4 RGBA).
    public var colorspace: Int
    /// The encoded image (PNG).
    public var encoded: [UInt8]

    public init(tag: String, height: Int, width: Int, colorspace: Int = 3, encoded: [UInt8]) {
        self.tag = tag
        self.height = height
        self.width = width
        self.colorspace = colorspace
        self.encoded = encoded
    }

    /// Encodes `image` as PNG (libpng) under `tag`.
    public init(tag: String, image: RGBImage) throws {
        self.init(tag: tag, height: image.height, width: image.width, colorspace: 3, encoded: try image.encodePNG())
    }
}

/// The serialised `tensorboard.Event` messages this package writes.
public enum TensorBoardEvent {
    /// The string of the first record of every event file.
    public static let fileVersion = "brain.Event:2"

    private static func header(wallTime: Double, step: Int64) -> ProtobufWriter {
        var event = ProtobufWriter()
        // proto3 implicit presence: a field equal to its default (bitwise zero) is not written.
        if wallTime.bitPattern != 0 { event.double(1, wallTime) }
        if step != 0 { event.int64(2, step) }
        return event
    }

    /// `Event{wall_time, file_version: "brain.Event:2"}`.
    public static func fileVersionEvent(wallTime: Double) -> [UInt8] {
        var event = header(wallTime: wallTime, step: 0)
        event.string(3, fileVersion)
        return event.bytes
    }

    /// `Event{wall_time, step, summary{value{tag, simple_value}…}}`, values in the given order
    /// (each converted to float32, as `simple_value` is).
    public static func scalarsEvent(wallTime: Double, step: Int64, values: [(tag: String, value: Double)]) -> [UInt8] {
        var summary = ProtobufWriter()
        for (tag, value) in values {
            var entry = ProtobufWriter()
            if !tag.isEmpty { entry.string(1, tag) }
            entry.float(2, Float(value))        // in the `value` oneof: always written
            summary.message(1, entry)
        }
        var event = header(wallTime: wallTime, step: step)
        event.message(5, summary)
        return event.bytes
    }

    /// `Event{wall_time, step, summary{value{tag, image{height, width, colorspace, encoded_image_string}}…}}`.
    public static func imagesEvent(wallTime: Double, step: Int64, images: [TensorBoardImage]) -> [UInt8] {
        var summary = ProtobufWriter()
        for image in images {
            var body = ProtobufWriter()
            if image.height != 0 { body.int32(1, Int32(clamping: image.height)) }
            if image.width != 0 { body.int32(2, Int32(clamping: image.width)) }
            if image.colorspace != 0 { body.int32(3, Int32(clamping: image.colorspace)) }
            if !image.encoded.isEmpty { body.bytes(4, image.encoded) }
            var entry = ProtobufWriter()
            if !image.tag.isEmpty { entry.string(1, image.tag) }
            entry.message(4, body)
            summary.message(1, entry)
        }
        var event = header(wallTime: wallTime, step: step)
        event.message(5, summary)
        return event.bytes
    }
}

/// TFRecord framing of event-file records.
public enum TensorBoardRecords {
    /// `u64 LE length, u32 masked CRC(length), data, u32 masked CRC(data)`.
    public static func frame(_ data: [UInt8]) -> [UInt8] {
        var out: [UInt8] = []
        out.reserveCapacity(data.count + 16)
        var length = UInt64(data.count)
        for _ in 0..<8 {
            out.append(UInt8(truncatingIfNeeded: length))
            length >>= 8
        }
        appendUInt32(&out, CRC32C.masked(CRC32C.checksum(out)))
        out.append(contentsOf: data)
        appendUInt32(&out, CRC32C.masked(CRC32C.checksum(data)))
        return out
    }

    private static func appendUInt32(_ out: inout [UInt8], _ value: UInt32) {
        for shift in stride(from: 0, to: 32, by: 8) { out.append(UInt8(truncatingIfNeeded: value >> UInt32(shift))) }
    }

    private static func readUInt32(_ bytes: [UInt8], _ at: Int) -> UInt32 {
        (0..<4).reduce(UInt32(0)) { $0 | UInt32(bytes[at + $1]) << UInt32(8 * $1) }
    }

    /// Splits an event file into its records' data, checking both CRCs of every record. A file
    /// that ends inside a record (a crash mid-write) or a CRC mismatch throws, naming `path`, the
    /// record's index and its byte offset.
    public static func read(_ bytes: [UInt8], path: String = "<memory>") throws -> [[UInt8]] {
        var records: [[UInt8]] = []
        var offset = 0
        while offset < bytes.count {
            let index = records.count
            guard bytes.count - offset >= 12 else {
                throw TensorBoardError(path: path, "record \(index) at byte \(offset) is truncated: \(bytes.count - offset) bytes left, its header needs 12")
            }
            let lengthBytes = Array(bytes[offset..<offset + 8])
            let lengthCRC = readUInt32(bytes, offset + 8)
            guard CRC32C.masked(CRC32C.checksum(lengthBytes)) == lengthCRC else {
                throw TensorBoardError(path: path, "record \(index) at byte \(offset): the length's CRC does not match (corrupt header)")
            }
            let length = lengthBytes.enumerated().reduce(UInt64(0)) { $0 | UInt64($1.element) << UInt64(8 * $1.offset) }
            let available = UInt64(bytes.count - offset - 12)
            guard length <= available, available - length >= 4 else {
                throw TensorBoardError(path: path, "record \(index) at byte \(offset) is truncated: it holds \(length) bytes of data + 4 of CRC, the file has \(available) left")
            }
            let start = offset + 12, end = start + Int(length)
            let data = Array(bytes[start..<end])
            guard CRC32C.masked(CRC32C.checksum(data)) == readUInt32(bytes, end) else {
                throw TensorBoardError(path: path, "record \(index) at byte \(offset): the data's CRC does not match (corrupt data)")
            }
            records.append(data)
            offset = end + 4
        }
        return records
    }

    /// Reads and splits the event file at `url` (see `read(_:path:)`).
    public static func read(contentsOf url: URL) throws -> [[UInt8]] {
        let data: Data
        do { data = try Data(contentsOf: url) } catch {
            throw TensorBoardError(path: url.path, "cannot be read: \(error.localizedDescription)")
        }
        return try read([UInt8](data), path: url.path)
    }
}

/// Writes one TensorBoard event file; a `DDPOLogger`.
///
/// As a logger it writes scalars as one Event per `log` call (values sorted by tag, by UTF-8
/// bytes, i.e. code points) and images as one Event per `logImages` call (one PNG value per
/// caption, the caption as tag). Logger calls cannot throw: their errors go to `onError`
/// (by default a warning on standard error). Thread-safe.
public final class TensorBoardWriter: DDPOLogger, @unchecked Sendable {
    /// The event file.
    public let url: URL
    /// Receives the errors of the `DDPOLogger` calls.
    public var onError: (Error) -> Void = { error in
        FileHandle.standardError.write(Data("warning: \(error)\n".utf8))
    }

    private let wallTime: () -> Double
    private let lock = NSLock()
    private var fd: Int32
    /// The file's size after the last complete record.
    private var size: off_t = 0

    /// Creates `<directory>/events.out.tfevents.<unix seconds, 10 digits>.<hostname>` (the
    /// directory and its parents if needed; `.<n>` is appended if that name exists) and writes the
    /// file-version record. `wallTime` gives every record's time (seconds since 1970); tests inject it.
    public init(directory: URL, hostname: String? = nil,
                wallTime: @escaping () -> Double = { Date().timeIntervalSince1970 }) throws {
        do {
            try FileManager.default.createDirectory(at: directory, withIntermediateDirectories: true)
        } catch {
            throw TensorBoardError(path: directory.path, "cannot create the log directory: \(error.localizedDescription)")
        }
        self.wallTime = wallTime
        let now = wallTime()
        let host = (hostname ?? Self.hostname()).map { $0 == "/" ? "_" : $0 }
        let seconds = now.isFinite ? Int(now.rounded(.down)) : 0
        let base = "events.out.tfevents." + String(format: "%010d", seconds) + "." + String(host)
        var candidate = directory.appendingPathComponent(base)
        var n = 1
        var opened: Int32 = -1
        while true {
            opened = open(candidate.path, O_WRONLY | O_CREAT | O_EXCL | O_CLOEXEC, 0o644)
            if opened >= 0 { break }
            let code = errno
            guard code == EEXIST, n < 1000 else {
                throw TensorBoardError(path: candidate.path, "cannot be created: \(String(cString: strerror(code)))")
            }
            candidate = directory.appendingPathComponent(base + ".\(n)")
            n += 1
        }
        fd = opened
        url = candidate
        try append(TensorBoardEvent.fileVersionEvent(wallTime: now))
    }

    deinit { close() }

    /// Closes the file; later writes throw.
    public func close() {
        lock.lock(); defer { lock.unlock() }
        if fd >= 0 { _ = Glibc_close(fd); fd = -1 }
    }

    /// Writes one Event holding every value as a float32 scalar, sorted by tag. Nothing is written
    /// for an empty dictionary.
    public func writeScalars(_ values: [String: Double], step: Int) throws {
        guard !values.isEmpty else { return }
        let sorted = values.map { (tag: $0.key, value: $0.value) }
            .sorted { $0.tag.utf8.lexicographicallyPrecedes($1.tag.utf8) }
        try append(TensorBoardEvent.scalarsEvent(wallTime: wallTime(), step: Int64(step), values: sorted))
    }

    /// Encodes each image as PNG and writes one Event with one image value per tag, in order.
    public func writeImages(_ images: [(tag: String, image: RGBImage)], step: Int) throws {
        let encoded: [TensorBoardImage]
        do {
            encoded = try images.map { try TensorBoardImage(tag: $0.tag, image: $0.image) }
        } catch {
            throw TensorBoardError(path: url.path, "image summary at step \(step): \(error)")
        }
        try writeImages(encoded, step: step)
    }

    /// Writes one Event with the already-encoded images, in order. Nothing is written for none.
    public func writeImages(_ images: [TensorBoardImage], step: Int) throws {
        guard !images.isEmpty else { return }
        try append(TensorBoardEvent.imagesEvent(wallTime: wallTime(), step: Int64(step), images: images))
    }

    /// Frames `event` (a serialised Event) as a record and appends it to the file.
    public func writeEvent(_ event: [UInt8]) throws {
        try append(event)
    }

    private func append(_ event: [UInt8]) throws {
        let record = TensorBoardRecords.frame(event)
        lock.lock(); defer { lock.unlock() }
        guard fd >= 0 else { throw TensorBoardError(path: url.path, "write after close") }
        var written = 0
        let failure: Int32? = record.withUnsafeBytes { buffer in
            while written < buffer.count {
                let n = write(fd, buffer.baseAddress! + written, buffer.count - written)
                if n < 0 {
                    if errno == EINTR { continue }
                    return errno
                }
                written += n
            }
            return nil
        }
        if let code = failure {
            // Cut the partial record off so the file stays readable.
            _ = ftruncate(fd, size)
            _ = lseek(fd, size, SEEK_SET)
            throw TensorBoardError(path: url.path, "writing a \(record.count)-byte record failed: \(String(cString: strerror(code)))")
        }
        size += off_t(record.count)
    }

    private static func hostname() -> String {
        var buffer = [CChar](repeating: 0, count: 256)
        guard gethostname(&buffer, buffer.count - 1) == 0 else { return "localhost" }
        let name = String(cString: buffer)
        return name.isEmpty ? "localhost" : name
    }

    // MARK: DDPOLogger

    public func log(_ values: [String: Double], step: Int) {
        do { try writeScalars(values, step: step) } catch { onError(error) }
    }

    public func logImages(_ images: [(caption: String, image: RGBImage)], step: Int) {
        do { try writeImages(images.map { (tag: $0.caption, image: $0.image) }, step: step) } catch { onError(error) }
    }
}

/// `close(2)`, named apart from `TensorBoardWriter.close()`.
@inline(__always) private func Glibc_close(_ fd: Int32) -> Int32 {
    #if canImport(Glibc)
    return Glibc.close(fd)
    #else
    return Darwin.close(fd)
    #endif
}
