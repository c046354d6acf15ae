import Foundation

/// Reading a component's `config.json`: a file that cannot be read, malformed JSON, or a value of the
/// wrong type become the caller's error naming the file and the field ("-" when no field applies).
enum ConfigFile {
    static func decode<T: Decodable>(_ type: T.Type, from url: URL,
                                     error makeError: (_ field: String, _ message: String) -> Error) throws -> T {
        let data: Data
        do { data = try Data(contentsOf: url) } catch {
            throw makeError("-", "cannot read the file (\(error.localizedDescription))")
        }
        func field(_ path: [CodingKey]) -> String {
            let joined = path.map(\.stringValue).joined(separator: ".")
            return joined.isEmpty ? "-" : joined
        }
        do {
            return try JSONDecoder().decode(T.self, from: data)
        } catch let DecodingError.typeMismatch(type, context), let DecodingError.valueNotFound(type, context) {
            throw makeError(field(context.codingPath), "expected \(type): \(context.debugDescription)")
        } catch let DecodingError.dataCorrupted(context) {
            throw makeError(field(context.codingPath), "invalid JSON: \(context.debugDescription)")
        }
    }
}

/// A model config type that errors can name ("UNet2DConditionModel config field `…`").
public protocol NamedModelConfig {
    static var modelName: String { get }
}

/// An error in a model's config: the field and what was expected, and the file when it came from one.
public struct ModelConfigError<Config: NamedModelConfig>: Error, CustomStringConvertible, LocalizedError, Equatable {
    public var field: String
    public var message: String
    /// The config file, when the error came from one.
    public var file: String?

    public init(field: String, _ message: String, file: String? = nil) {
        self.field = field
        self.message = message
        self.file = file
    }

    public var description: String {
        (file.map { "\($0): " } ?? "") + "\(Config.modelName) config field `\(field)`: \(message)"
    }
    public var errorDescription: String? { description }
}

extension KeyedDecodingContainer {
    /// diffusers' config semantics: a missing key keeps `current` (the default); a present key must decode.
    func value<T: Decodable>(_ key: Key, _ current: T) throws -> T {
        try decodeIfPresent(T.self, forKey: key) ?? current
    }

    /// For optional fields: a missing key keeps `current`, an explicit null means nil (Python's None).
    func optional<T: Decodable>(_ key: Key, _ current: T?) throws -> T? {
        guard contains(key) else { return current }
        return try decodeNil(forKey: key) ? nil : decode(T.self, forKey: key)
    }
}
