import Foundation

/// A JSON value that keeps booleans, integers and other numbers apart (JSONSerialization on Linux
/// bridges 1 and true to the same NSNumber).
enum TokenizerJSON: Decodable, Equatable {
    case null
    case bool(Bool)
    case int(Int)
    case number(Double)  // non-integers and integers beyond Int (transformers writes 1e30 for "no limit")
    case string(String)
    case array([TokenizerJSON])
    case object([String: TokenizerJSON])

    init(from decoder: Decoder) throws {
        let c = try decoder.singleValueContainer()
        if c.decodeNil() { self = .null }
        else if let b = try? c.decode(Bool.self) { self = .bool(b) }
        else if let i = try? c.decode(Int.self) { self = .int(i) }
        else if let d = try? c.decode(Double.self) { self = .number(d) }
        else if let s = try? c.decode(String.self) { self = .string(s) }
        else if let a = try? c.decode([TokenizerJSON].self) { self = .array(a) }
        else { self = .object(try c.decode([String: TokenizerJSON].self)) }
    }

    var string: String? { if case let .string(s) = self { return s }; return nil }
    var object: [String: TokenizerJSON]? { if case let .object(o) = self { return o }; return nil }
    var bool: Bool? { if case let .bool(b) = self { return b }; return nil }
}

/// Readers of the files of a tokenizer folder. Every error names the file.
enum TokenizerFiles {
    /// The number of merges transformers' slow CLIPTokenizer reads from merges.txt (49152 - 256 - 2).
    static let clipMergeCount = 48894

    /// The bytes of a file that must be UTF-8 text.
    static func readUTF8(_ url: URL) throws -> [UInt8] {
        let data: Data
        do { data = try Data(contentsOf: url) } catch {
            throw CLIPTokenizerError.malformedFile(path: url.path, message: "cannot be read: \(error.localizedDescription)")
        }
        guard String(data: data, encoding: .utf8) != nil else {
            throw CLIPTokenizerError.malformedFile(path: url.path, message: "is not valid UTF-8")
        }
        return [UInt8](data)
    }

    static func readJSON<T: Decodable>(_ type: T.Type, _ url: URL, expected: String) throws -> T {
        let data: Data
        do { data = try Data(contentsOf: url) } catch {
            throw CLIPTokenizerError.malformedFile(path: url.path, message: "cannot be read: \(error.localizedDescription)")
        }
        do { return try JSONDecoder().decode(T.self, from: data) } catch {
            throw CLIPTokenizerError.malformedFile(path: url.path, message: "is not \(expected) (\(error))")
        }
    }

    static func readObject(_ url: URL) throws -> [String: TokenizerJSON] {
        try readJSON([String: TokenizerJSON].self, url, expected: "a JSON object")
    }

    /// vocab.json: an object from token to id; the entries in file order, tokens as UTF-8 bytes.
    static func readVocabulary(_ url: URL) throws -> [(token: [UInt8], id: Int)] {
        do {
            return try VocabularyJSON.parse(try readUTF8(url))
        } catch let error as VocabularyJSON.ParseError {
            throw CLIPTokenizerError.malformedFile(
                path: url.path, message: "is not a JSON object mapping token strings to integer ids: \(error.message) at byte \(error.offset)")
        }
    }

    /// merges.txt as transformers' CLIPTokenizer reads it: the text stripped, split into lines,
    /// line 0 skipped (the "#version" header), then at most 48894 merges of two space-separated
    /// symbols. (Python reads the file with universal newlines, so CR and CRLF end lines too.)
    static func readMerges(_ url: URL) throws -> [([UInt8], [UInt8])] {
        let raw = try readUTF8(url)
        var text: [UInt8] = []
        text.reserveCapacity(raw.count)
        var k = 0
        while k < raw.count {
            if raw[k] == 0x0D {
                text.append(0x0A)
                if k + 1 < raw.count, raw[k + 1] == 0x0A { k += 1 }
            } else {
                text.append(raw[k])
            }
            k += 1
        }
        let lines = PythonText.stripUTF8(text[...]).split(separator: 0x0A, omittingEmptySubsequences: false)
        var merges: [([UInt8], [UInt8])] = []
        merges.reserveCapacity(min(lines.count, clipMergeCount))
        for (index, line) in lines.enumerated().dropFirst().prefix(clipMergeCount) {
            let parts = PythonText.splitUTF8(line)
            guard parts.count == 2 else {
                throw CLIPTokenizerError.malformedFile(
                    path: url.path,
                    message: "line \(index + 1): expected two space-separated symbols, found \(parts.count) in \"\(String(decoding: line, as: UTF8.self))\"")
            }
            merges.append((Array(parts[0]), Array(parts[1])))
        }
        return merges
    }

    /// The parts of a tokenizer.json that the slow CLIP pipeline uses.
    struct TokenizerJSONFile {
        var vocabulary: [(token: [UInt8], id: Int)]
        var merges: [([UInt8], [UInt8])]
        var addedTokens: [(id: Int, token: AddedToken)]
    }

    /// tokenizer.json (the Hugging Face tokenizers format): `model` must be a BPE model with CLIP's
    /// `</w>` end-of-word suffix; its merges may be "a b" strings or ["a", "b"] pairs, all used.
    /// The normalizer, pre-tokenizer and post-processor entries are not read: the text pipeline is
    /// always the slow CLIPTokenizer's.
    static func readTokenizerJSON(_ url: URL) throws -> TokenizerJSONFile {
        struct File: Decodable {
            var model: Model
            var added_tokens: [Added]?
        }
        struct Model: Decodable {
            var type: String?
            var vocab: [String: Int]
            var merges: [TokenizerJSON]
            var end_of_word_suffix: String?
            var continuing_subword_prefix: String?
            var dropout: Double?
            var byte_fallback: Bool?
            var ignore_merges: Bool?
        }
        struct Added: Decodable {
            var id: Int
            var content: String
            var single_word: Bool?
            var lstrip: Bool?
            var rstrip: Bool?
            var normalized: Bool?
            var special: Bool?
        }
        let file = try readJSON(File.self, url, expected: "a tokenizer.json with a \"model\" holding \"vocab\" and \"merges\"")
        let model = file.model
        func unsupported(_ field: String, _ message: String) -> CLIPTokenizerError {
            .unsupported(path: url.path, field: field, message: message)
        }
        if let type = model.type, type != "BPE" { throw unsupported("model.type", "\"\(type)\" is not supported, expected \"BPE\"") }
        guard model.end_of_word_suffix == "</w>" else {
            throw unsupported("model.end_of_word_suffix", "\(model.end_of_word_suffix.map { "\"\($0)\"" } ?? "null") is not supported, expected \"</w>\" (CLIP)")
        }
        if let prefix = model.continuing_subword_prefix, !prefix.isEmpty {
            throw unsupported("model.continuing_subword_prefix", "\"\(prefix)\" is not supported, expected \"\" or null")
        }
        if let dropout = model.dropout, dropout != 0 { throw unsupported("model.dropout", "BPE dropout \(dropout) is not supported") }
        if model.byte_fallback == true { throw unsupported("model.byte_fallback", "true is not supported") }
        if model.ignore_merges == true { throw unsupported("model.ignore_merges", "true is not supported") }
        var merges: [([UInt8], [UInt8])] = []
        merges.reserveCapacity(model.merges.count)
        for (i, entry) in model.merges.enumerated() {
            let pair: [String]
            switch entry {
            case let .string(s): pair = s.split(separator: " ", omittingEmptySubsequences: false).map(String.init)
            case let .array(items): pair = items.compactMap(\.string)
            default: pair = []
            }
            guard pair.count == 2, (entry.string != nil || entry == .array(pair.map { .string($0) })) else {
                throw CLIPTokenizerError.malformedFile(
                    path: url.path, message: "model.merges[\(i)]: expected \"a b\" or [\"a\", \"b\"]")
            }
            merges.append((Array(pair[0].utf8), Array(pair[1].utf8)))
        }
        let added = (file.added_tokens ?? []).map { a in
            (id: a.id, token: AddedToken(content: a.content, singleWord: a.single_word ?? false, lstrip: a.lstrip ?? false,
                                         rstrip: a.rstrip ?? false, normalized: a.normalized ?? true, special: a.special ?? false))
        }
        let vocabulary = model.vocab.sorted { $0.value < $1.value }.map { (token: Array($0.key.utf8), id: $0.value) }
        return TokenizerJSONFile(vocabulary: vocabulary, merges: merges, addedTokens: added)
    }
}
