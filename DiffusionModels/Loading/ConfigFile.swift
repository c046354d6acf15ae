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
