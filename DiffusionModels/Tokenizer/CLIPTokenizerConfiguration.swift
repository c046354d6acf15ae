import Foundation

/// The settings of a tokenizer folder (tokenizer_config.json, special_tokens_map.json,
/// added_tokens.json, tokenizer.json's added tokens), resolved with the precedence of
/// transformers' `from_pretrained`: when tokenizer_config.json has `added_tokens_decoder` it alone
/// is read; otherwise special_tokens_map.json overrides the config's special tokens and the added
/// tokens come from added_tokens.json and tokenizer.json. A special token named by content that is
/// also a declared added token takes that token's strip / single-word flags.
struct CLIPTokenizerConfiguration {
    /// A special-token value: a bare string, or a token with flags.
    enum Special: Equatable {
        case string(String)
        case token(AddedToken)

        var content: String {
            switch self {
            case let .string(s): return s
            case let .token(t): return t.content
            }
        }
    }

    /// The special-token attributes in transformers' order (`SPECIAL_TOKENS_ATTRIBUTES`).
    static let attributes = ["bos_token", "eos_token", "unk_token", "sep_token", "pad_token", "cls_token", "mask_token"]

    /// Attribute -> value; `.some(nil)` is an explicit JSON null, a missing key takes the default.
    var special: [String: Special?] = [:]
    var additionalSpecial: [Special] = []
    var addedTokensDecoder: [Int: AddedToken] = [:]
    var modelMaxLength: Int?
    var paddingSide: CLIPTokenizer.Side = .right
    var truncationSide: CLIPTokenizer.Side = .right
    var cleanUpTokenizationSpaces = false
    var splitSpecialTokens = false

    init() {}

    /// Reads the optional config files of `directory`; `tokenizerJSONAddedTokens` are those of a
    /// tokenizer.json in the folder, if any.
    init(directory: URL, tokenizerJSONAddedTokens: [(id: Int, token: AddedToken)]?) throws {
        let fm = FileManager.default
        let configURL = directory.appendingPathComponent("tokenizer_config.json")
        let config = fm.fileExists(atPath: configURL.path) ? try TokenizerFiles.readObject(configURL) : [:]
        try readOptions(config, path: configURL.path)
        for key in Self.attributes where config[key] != nil {
            special.updateValue(try Self.special(config[key]!, path: configURL.path, field: key, isMapFile: false), forKey: key)
        }
        if let list = config["additional_special_tokens"] {
            additionalSpecial = try Self.specialList(list, path: configURL.path)
        }

        var declared: [AddedToken] = []
        if let decoder = config["added_tokens_decoder"] {
            guard let object = decoder.object else {
                throw CLIPTokenizerError.malformedFile(path: configURL.path, message: "\"added_tokens_decoder\" is not an object")
            }
            for (key, value) in object {
                guard let id = Int(key), case let .token(token)? = try Self.special(
                    value, path: configURL.path, field: "added_tokens_decoder.\(key)", isMapFile: false) else {
                    throw CLIPTokenizerError.malformedFile(
                        path: configURL.path, message: "\"added_tokens_decoder\": entry \"\(key)\" must map an integer id to a token object")
                }
                addedTokensDecoder[id] = token
                declared.append(token)
            }
        } else {
            let mapURL = directory.appendingPathComponent("special_tokens_map.json")
            if fm.fileExists(atPath: mapURL.path) {
                for (key, value) in try TokenizerFiles.readObject(mapURL) {
                    if key == "additional_special_tokens", case .array = value {
                        for token in try Self.specialList(value, path: mapURL.path, isMapFile: true)
                        where !additionalSpecial.contains(where: { $0.content == token.content }) {
                            additionalSpecial.append(token)
                        }
                    } else if Self.attributes.contains(key) {
                        special.updateValue(try Self.special(value, path: mapURL.path, field: key, isMapFile: true), forKey: key)
                    }
                }
            }
            let addedURL = directory.appendingPathComponent("added_tokens.json")
            if fm.fileExists(atPath: addedURL.path) {
                let specialContents = Set(special.values.compactMap { $0?.content } + additionalSpecial.map(\.content))
                for (content, id) in try TokenizerFiles.readJSON([String: Int].self, addedURL, expected: "an object mapping tokens to integer ids") {
                    let isSpecial = specialContents.contains(content)
                    addedTokensDecoder[id] = AddedToken(content: content, normalized: !isSpecial, special: isSpecial)
                }
            }
            for (id, token) in tokenizerJSONAddedTokens ?? [] {
                addedTokensDecoder[id] = token
                declared.append(token)
            }
        }
        // A special token given by content takes the flags of the declared token of that content.
        if !declared.isEmpty {
            let byContent = Dictionary(declared.map { ($0.content, $0) }, uniquingKeysWith: { _, last in last })
            for (key, value) in special {
                if let value, let token = byContent[value.content] { special[key] = .token(token) }
            }
        }
    }

    private mutating func readOptions(_ config: [String: TokenizerJSON], path: String) throws {
        func unsupported(_ field: String, _ message: String) -> CLIPTokenizerError {
            .unsupported(path: path, field: field, message: message)
        }
        switch config["model_max_length"] {
        case nil, .null?: modelMaxLength = nil
        case let .int(n)?: modelMaxLength = n >= 1 << 60 ? nil : n
        case let .number(x)?:
            // transformers saves int(1e30) for "no limit"; any value beyond Int means the same.
            guard x >= 1e18 || (x == x.rounded() && x > 0) else { throw unsupported("model_max_length", "\(x) is not a positive integer") }
            modelMaxLength = x >= 1e18 ? nil : Int(x)
        default: throw unsupported("model_max_length", "expected an integer")
        }
        for (field, keyPath) in [("padding_side", \Self.paddingSide), ("truncation_side", \Self.truncationSide)] {
            guard let value = config[field], value != .null else { continue }
            guard let s = value.string, let side = CLIPTokenizer.Side(rawValue: s) else {
                throw unsupported(field, "\(value) is not supported, expected \"right\" or \"left\"")
            }
            self[keyPath: keyPath] = side
        }
        for (field, keyPath) in [("clean_up_tokenization_spaces", \Self.cleanUpTokenizationSpaces),
                                 ("split_special_tokens", \Self.splitSpecialTokens)] {
            guard let value = config[field], value != .null else { continue }
            guard let b = value.bool else { throw unsupported(field, "expected true or false") }
            self[keyPath: keyPath] = b
        }
        if let errors = config["errors"], errors != .null, errors != .string("replace") {
            throw unsupported("errors", "\(errors) is not supported: decoding always replaces invalid UTF-8 (\"replace\")")
        }
        if let cls = config["tokenizer_class"]?.string, cls != "CLIPTokenizer", cls != "CLIPTokenizerFast" {
            throw unsupported("tokenizer_class", "\"\(cls)\" is not a CLIP tokenizer")
        }
        switch config["extra_special_tokens"] {
        case nil, .null?: break
        case let .object(o)? where o.isEmpty: break
        case let .array(a)? where a.isEmpty: break
        default: throw unsupported("extra_special_tokens", "named extra special tokens are not supported")
        }
    }

    /// A special-token value: a string, a token object (with or without "__type"), or null.
    /// Tokens from special_tokens_map.json are special by definition.
    static func special(_ value: TokenizerJSON, path: String, field: String, isMapFile: Bool) throws -> Special? {
        switch value {
        case .null: return nil
        case let .string(s): return .string(s)
        case let .object(o):
            guard let content = o["content"]?.string else {
                throw CLIPTokenizerError.malformedFile(path: path, message: "\"\(field)\": a token object needs a string \"content\"")
            }
            func flag(_ name: String, _ defaultValue: Bool) throws -> Bool {
                guard let v = o[name], v != .null else { return defaultValue }
                guard let b = v.bool else {
                    throw CLIPTokenizerError.malformedFile(path: path, message: "\"\(field).\(name)\" must be true or false")
                }
                return b
            }
            return .token(AddedToken(
                content: content, singleWord: try flag("single_word", false), lstrip: try flag("lstrip", false),
                rstrip: try flag("rstrip", false), normalized: try flag("normalized", true),
                special: isMapFile ? true : try flag("special", false)))
        default:
            throw CLIPTokenizerError.malformedFile(path: path, message: "\"\(field)\" must be a string, a token object or null")
        }
    }

    private static func specialList(_ value: TokenizerJSON, path: String, isMapFile: Bool = false) throws -> [Special] {
        switch value {
        case .null: return []
        case let .array(items):
            return try items.enumerated().compactMap { i, item in
                try special(item, path: path, field: "additional_special_tokens[\(i)]", isMapFile: isMapFile)
            }
        default:
            throw CLIPTokenizerError.malformedFile(path: path, message: "\"additional_special_tokens\" must be a list")
        }
    }
}
