import Foundation
import TensorKit
#if canImport(Glibc)
import Glibc
#elseif canImport(Darwin)
import Darwin
#endif

// Metrics as JSON lines: one object per `log` call, appended to `<directory>/metrics.jsonl`,
// `{"step": 3, "wall_time": 1700000000.25, "approx_kl": 0.0001, "loss": 0.12}` — "step" and
// "wall_time" first, then the values sorted by key (UTF-8 byte order); numbers are JSON numbers
// (Swift's shortest round-trip spelling, so a reader gets the same Double back); NaN and ±infinity
// are written as null with the key kept. Each line reaches the file (one `write`) before the call
// returns. An existing file is appended to (a resumed run continues its metrics).
//
//   let jsonl = try JSONLinesLogger(directory: runDir)
//   try jsonl.write(["loss": 0.12], step: 3)
//   trainer.logger = MultiLogger([try TensorBoardWriter(directory: runDir), jsonl])
//   // Python: [json.loads(l) for l in open("metrics.jsonl")]

/// Writing `metrics.jsonl` failed; names the file and what was wrong.
public struct JSONLinesLoggerError: Error, CustomStringConvertible, LocalizedError, Sendable {
    public var path: String
    public var message: String
    public var description: String { "metrics file '\(path)': \(message)" }
    public var errorDescription: String? { description }
}

/// Appends one JSON object per `log` call to a JSON-lines file; a `DDPOLogger` (images are
/// ignored). Logger calls cannot throw: their errors go to `onError` (by default a warning on
/// standard error). Thread-safe.
public final class JSONLinesLogger: DDPOLogger, @unchecked Sendable {
    /// The keys every line starts with; a value may not use them.
    public static let reservedKeys: Set<String> = ["step", "wall_time"]

    public let url: URL
    public var onError: (Error) -> Void = { error in
        FileHandle.standardError.write(Data("warning: \(error)\n".utf8))
    }

    private let wallTime: () -> Double
    private let lock = NSLock()
    private var fd: Int32

    /// Opens (creating it and the directory if needed) `<directory>/<fileName>` for appending.
    public convenience init(directory: URL, fileName: String = "metrics.jsonl",
                            wallTime: @escaping () -> Double = { Date().timeIntervalSince1970 }) throws {
        do {
            try FileManager.default.createDirectory(at: directory, withIntermediateDirectories: true)
        } catch {
            throw JSONLinesLoggerError(path: directory.path, message: "cannot create the log directory: \(error.localizedDescription)")
        }
        try self.init(file: directory.appendingPathComponent(fileName), wallTime: wallTime)
    }

    /// Opens (creating it if needed) `file` for appending.
    public init(file: URL, wallTime: @escaping () -> Double = { Date().timeIntervalSince1970 }) throws {
        url = file
        self.wallTime = wallTime
        fd = open(file.path, O_WRONLY | O_CREAT | O_APPEND | O_CLOEXEC, 0o644)
        guard fd >= 0 else {
            throw JSONLinesLoggerError(path: file.path, message: "cannot be opened for appending: \(String(cString: strerror(errno)))")
        }
    }

    deinit { close() }

    /// Closes the file; later writes throw.
    public func close() {
        lock.lock(); defer { lock.unlock() }
        if fd >= 0 { _ = closeDescriptor(fd); fd = -1 }
    }

    /// Appends one line for `values` at `step`, stamped with the current wall time.
    public func write(_ values: [String: Double], step: Int) throws {
        let text: String
        do { text = try Self.line(values, step: step, wallTime: wallTime()) } catch let error as JSONLinesLoggerError {
            throw JSONLinesLoggerError(path: url.path, message: error.message)
        }
        let bytes = Array(text.utf8) + [0x0A]
        lock.lock(); defer { lock.unlock() }
        guard fd >= 0 else { throw JSONLinesLoggerError(path: url.path, message: "write after close") }
        var written = 0
        while written < bytes.count {
            let n = bytes.withUnsafeBytes { Glibc_write(fd, $0.baseAddress! + written, bytes.count - written) }
            if n < 0 {
                if errno == EINTR { continue }
                throw JSONLinesLoggerError(path: url.path, message: "writing a line failed: \(String(cString: strerror(errno)))")
            }
            written += n
        }
    }

    /// The JSON object for one call, without the newline.
    public static func line(_ values: [String: Double], step: Int, wallTime: Double) throws -> String {
        if let clash = values.keys.first(where: { reservedKeys.contains($0) }) {
            throw JSONLinesLoggerError(path: "", message: "the metric name \"\(clash)\" is reserved for the line's own field")
        }
        var out = "{\"step\": \(step), \"wall_time\": \(number(wallTime))"
        let keys = values.keys.sorted { $0.utf8.lexicographicallyPrecedes($1.utf8) }
        for key in keys {
            out += ", " + quoted(key) + ": " + number(values[key]!)
        }
        return out + "}"
    }

    /// A JSON number (shortest round-trip spelling), or `null` for NaN and ±infinity.
    public static func number(_ value: Double) -> String {
        value.isFinite ? "\(value)" : "null"
    }

    /// A JSON string literal.
    public static func quoted(_ text: String) -> String {
        var out = "\""
        for scalar in text.unicodeScalars {
            switch scalar {
            case "\"": out += "\\\""
            case "\\": out += "\\\\"
            case "\n": out += "\\n"
            case "\r": out += "\\r"
            case "\t": out += "\\t"
            case _ where scalar.value < 0x20 || scalar.value == 0x7F || scalar.value == 0x2028 || scalar.value == 0x2029:
                out += String(format: "\\u%04x", scalar.value)
            default: out.unicodeScalars.append(scalar)
            }
        }
        return out + "\""
    }

    // MARK: DDPOLogger

    public func log(_ values: [String: Double], step: Int) {
        do { try write(values, step: step) } catch { onError(error) }
    }

    /// Images are not written to the metrics file.
    public func logImages(_ images: [(caption: String, image: RGBImage)], step: Int) {}
}

@inline(__always) private func closeDescriptor(_ fd: Int32) -> Int32 {
    #if canImport(Glibc)
    return Glibc.close(fd)
    #else
    return Darwin.close(fd)
    #endif
}

@inline(__always) private func Glibc_write(_ fd: Int32, _ buffer: UnsafeRawPointer, _ count: Int) -> Int {
    #if canImport(Glibc)
    return Glibc.write(fd, buffer, count)
    #else
    return Darwin.write(fd, buffer, count)
    #endif
}
