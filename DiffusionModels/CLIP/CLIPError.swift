import Foundation

/// Errors of the CLIP models, their loading and their preprocessing. Each message names the file,
/// config field, weight key or argument concerned, and what was expected.
public enum CLIPError: Error, CustomStringConvertible, LocalizedError, Sendable {
    /// A config field with a value that is malformed or not supported (`file` is nil until the
    /// loader knows which file it came from).
    case config(file: String?, field: String, message: String)
    /// A required file is not in the model folder.
    case missingFile(directory: String, expected: [String], note: String)
    /// A file exists but could not be read or parsed.
    case unreadableFile(path: String, message: String)
    /// The checkpoint's keys or shapes do not match the model (strict loading).
    case weights(file: String, model: String, report: LoadReport)
    /// An argument of a forward pass or of preprocessing is invalid.
    case invalidInput(String)

    public var description: String {
        switch self {
        case let .config(file, field, message):
            return "\(file ?? "CLIP config"): field \"\(field)\": \(message)"
        case let .missingFile(directory, expected, note):
            let names = expected.map { "'\($0)'" }.joined(separator: " or ")
            return "\(directory): no \(names)" + (note.isEmpty ? "" : " (\(note))")
        case let .unreadableFile(path, message):
            return "\(path): \(message)"
        case let .weights(file, model, report):
            return "\(file): weights do not match \(model):\n\(report)"
        case let .invalidInput(message):
            return message
        }
    }

    public var errorDescription: String? { description }

    /// The same error with the config file named.
    func inFile(_ path: String) -> CLIPError {
        if case let .config(nil, field, message) = self { return .config(file: path, field: field, message: message) }
        return self
    }
}
