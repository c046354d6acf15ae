import Foundation

/// Errors of loading and using a `CLIPTokenizer`. Each message names the file, field, token or
/// argument concerned and what was expected.
public enum CLIPTokenizerError: Error, CustomStringConvertible, LocalizedError, Sendable, Equatable {
    /// The tokenizer folder lacks the files needed to build a tokenizer.
    case missingFile(directory: String, expected: [String])
    /// A file exists but could not be read or does not have the expected structure.
    case malformedFile(path: String, message: String)
    /// A config field holds a value this tokenizer does not implement or cannot use.
    case unsupported(path: String, field: String, message: String)
    /// An argument of an encode or decode call is invalid.
    case invalidArgument(String)

    public var description: String {
        switch self {
        case let .missingFile(directory, expected):
            let names = expected.map { "'\($0)'" }.joined(separator: " or ")
            return "\(directory): no \(names) found"
        case let .malformedFile(path, message):
            return "\(path): \(message)"
        case let .unsupported(path, field, message):
            return "\(path): field \"\(field)\": \(message)"
        case let .invalidArgument(message):
            return message
        }
    }

    public var errorDescription: String? { description }
}
