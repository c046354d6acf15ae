import Foundation

/// CLIP's byte-level BPE tokenizer, giving the ids of transformers' slow `CLIPTokenizer` (4.56) as
/// diffusers loads it from a pipeline's `tokenizer/` folder.
///
/// Text path: transformers cleans text with `ftfy.fix_text` when ftfy is installed and with its
/// `BasicTokenizer` otherwise; ftfy is not a dependency of transformers or diffusers, so this
/// tokenizer implements the ftfy-less path (`CLIPTextCleaning`). Then CLIP's pre-tokenisation
/// pattern (`CLIPPreTokenizer`), the byte-level alphabet and BPE with `</w>` (`BytePairEncoding`).
/// Added and special tokens are split out of the raw text first (`AddedTokenSplitter`).
///
/// `callAsFunction` / `inputIDs` do what diffusers' call does:
/// `tokenizer(prompts, padding="max_length", max_length=tokenizer.model_max_length, truncation=True)`.
///
/// Where transformers fails, this tokenizer does something sensible instead: an unk token missing
/// from vocab.json maps to its added id (transformers returns None); `.maxLength` padding without
/// any maximum length throws (transformers silently does not pad); an unknown id throws in
/// `decode`. A folder with only tokenizer.json (which the slow tokenizer cannot load) is read for
/// its vocabulary, merges and added tokens, and tokenised with the same slow-tokenizer pipeline.
///
/// Thread-safe: the only mutable state is the word cache, behind a lock.
public final class CLIPTokenizer: @unchecked Sendable {
    public enum Side: String, Sendable { case left, right }

    public enum Padding: Sendable, Equatable {
        /// No padding.
        case doNotPad
        /// To the longest sequence of the batch.
        case longest
        /// To `maxLength`, or the model's maximum length.
        case maxLength
    }

    public struct Options: Sendable {
        /// Characters assigned after this Unicode version are treated as unassigned (and dropped),
        /// as Python's `unicodedata` of that version does: 14.0 is Python 3.11's, the version the
        /// fixtures were made with (3.12: 15.0, 3.13: 15.1, 3.14: 16.0). nil: the Swift runtime's tables.
        public var unicodeVersion: (major: Int, minor: Int)?

        public init(unicodeVersion: (major: Int, minor: Int)? = (14, 0)) {
            self.unicodeVersion = unicodeVersion
        }
    }

    public struct BatchEncoding: Sendable, Equatable {
        public var inputIDs: [[Int]]
        public var attentionMask: [[Int]]
    }

    // MARK: Properties

    /// `model_max_length` of tokenizer_config.json; nil when the folder sets none (transformers'
    /// "very large integer"): then nothing is truncated and `.maxLength` padding needs `maxLength`.
    public let modelMaxLength: Int?
    public let bosToken: String
    public let eosToken: String
    public let unkToken: String
    public let padToken: String?
    public let bosTokenID: Int
    public let eosTokenID: Int
    public let unkTokenID: Int
    /// `<|endoftext|>` (49407) for SD 1.x, `!` (0) for SD 2.x.
    public let padTokenID: Int?
    /// The contents of all special tokens and their ids, in transformers' order.
    public let allSpecialTokens: [String]
    public let allSpecialIDs: [Int]
    /// Added tokens by content (special tokens included), as transformers' `get_added_vocab()`.
    public let addedVocabulary: [String: Int]
    /// The size of the base vocabulary (vocab.json), without added tokens.
    public let vocabularySize: Int
    public let paddingSide: Side
    public let truncationSide: Side
    public let cleanUpTokenizationSpaces: Bool
    /// `split_special_tokens`: special tokens in the text are tokenised as plain text.
    public let splitSpecialTokens: Bool

    private let cleaning: CLIPTextCleaning
    private let bpe: BytePairEncoding
    /// The id of each BPE symbol (added tokens first, then the vocabulary, else the unk id).
    private let symbolIDs: [Int]
    private let splitter: AddedTokenSplitter
    private let addedEncoder: [CodePoints: Int]
    private let addedDecoder: [Int: CodePoints]
    private let vocabularyDecoder: [Int: [UInt8]]
    private let specialIDSet: Set<Int>
    private let specialContents: Set<CodePoints>
    /// Added tokens decoded on their own (transformers' `legacy_added_tokens`).
    private let legacyAddedTokens: Set<CodePoints>
    private let startOfTextID: Int
    private let endOfTextID: Int

    private let cacheLock = NSLock()
    private var cache: [[UInt8]: [Int]] = [:]
    private static let cacheLimit = 100_000

    // MARK: Loading

    /// Loads a tokenizer folder: vocab.json + merges.txt (what diffusers reads), or else
    /// tokenizer.json; plus the optional tokenizer_config.json, special_tokens_map.json and
    /// added_tokens.json.
    public convenience init(directory: URL, options: Options = Options()) throws {
        let fm = FileManager.default
        let vocabURL = directory.appendingPathComponent("vocab.json")
        let mergesURL = directory.appendingPathComponent("merges.txt")
        let jsonURL = directory.appendingPathComponent("tokenizer.json")
        let hasVocab = fm.fileExists(atPath: vocabURL.path), hasMerges = fm.fileExists(atPath: mergesURL.path)
        let hasJSON = fm.fileExists(atPath: jsonURL.path)
        let vocabulary: [(token: [UInt8], id: Int)]
        let merges: [([UInt8], [UInt8])]
        var jsonAdded: [(id: Int, token: AddedToken)]?
        if hasVocab && hasMerges {
            vocabulary = try TokenizerFiles.readVocabulary(vocabURL)
            merges = try TokenizerFiles.readMerges(mergesURL)
            if hasJSON { jsonAdded = try TokenizerFiles.readTokenizerJSON(jsonURL).addedTokens }
        } else if hasJSON {
            let file = try TokenizerFiles.readTokenizerJSON(jsonURL)
            (vocabulary, merges, jsonAdded) = (file.vocabulary, file.merges, file.addedTokens)
        } else {
            let missing = [hasVocab ? nil : "vocab.json", hasMerges ? nil : "merges.txt"].compactMap { $0 }
            throw CLIPTokenizerError.missingFile(
                directory: directory.path, expected: [missing.joined(separator: " and "), "tokenizer.json"])
        }
        let configuration = try CLIPTokenizerConfiguration(directory: directory, tokenizerJSONAddedTokens: jsonAdded)
        try self.init(vocabulary: vocabulary, merges: merges, configuration: configuration,
                      configPath: directory.appendingPathComponent("tokenizer_config.json").path, options: options)
    }

    /// A tokenizer from vocab.json and merges.txt alone, with CLIPTokenizer's default special
    /// tokens (as `CLIPTokenizer(vocab_file, merges_file, model_max_length=...)`).
    public convenience init(vocabURL: URL, mergesURL: URL, modelMaxLength: Int? = nil, options: Options = Options()) throws {
        var configuration = CLIPTokenizerConfiguration()
        configuration.modelMaxLength = modelMaxLength
        try self.init(vocabulary: try TokenizerFiles.readVocabulary(vocabURL), merges: try TokenizerFiles.readMerges(mergesURL),
                      configuration: configuration, configPath: vocabURL.path, options: options)
    }

    /// A tokenizer from a tokenizer.json alone (its added tokens included).
    public convenience init(tokenizerJSONURL: URL, modelMaxLength: Int? = nil, options: Options = Options()) throws {
        let file = try TokenizerFiles.readTokenizerJSON(tokenizerJSONURL)
        var configuration = CLIPTokenizerConfiguration()
        configuration.modelMaxLength = modelMaxLength
        for (id, token) in file.addedTokens { configuration.addedTokensDecoder[id] = token }
        try self.init(vocabulary: file.vocabulary, merges: file.merges, configuration: configuration,
                      configPath: tokenizerJSONURL.path, options: options)
    }

    /// `entries`: the vocabulary's (token as UTF-8 bytes, id) pairs in file order; as in Python, a
    /// repeated token keeps its last id and a repeated id decodes to its last token.
    init(vocabulary entries: [(token: [UInt8], id: Int)], merges: [([UInt8], [UInt8])],
         configuration config: CLIPTokenizerConfiguration, configPath: String, options: Options) throws {
        var vocabulary: [[UInt8]: Int] = [:]
        var vocabularyDecoder: [Int: [UInt8]] = [:]
        vocabulary.reserveCapacity(entries.count)
        for (token, id) in entries { vocabulary[token] = id }
        for (token, id) in entries where vocabulary[token] == id { vocabularyDecoder[id] = token }

        // Special tokens: CLIPTokenizer's defaults, then bos/eos/unk as tokens (its __init__).
        let defaults = ["bos_token": "<|startoftext|>", "eos_token": "<|endoftext|>",
                        "unk_token": "<|endoftext|>", "pad_token": "<|endoftext|>"]
        var special: [String: CLIPTokenizerConfiguration.Special] = [:]
        for attribute in CLIPTokenizerConfiguration.attributes {
            let value: CLIPTokenizerConfiguration.Special?
            if let configured = config.special[attribute] { value = configured } else { value = defaults[attribute].map { .string($0) } }
            guard var value else {
                if ["bos_token", "eos_token", "unk_token"].contains(attribute) {
                    throw CLIPTokenizerError.unsupported(path: configPath, field: attribute, message: "null is not supported: CLIP needs a \(attribute)")
                }
                continue
            }
            if ["bos_token", "eos_token", "unk_token"].contains(attribute), case let .string(s) = value {
                value = .token(AddedToken(content: s))
            }
            special[attribute] = value
        }

        // Added tokens (PreTrainedTokenizer.__init__): the declared ones, then every special token,
        // which keeps its vocabulary id or gets the next free id.
        var addedDecoder = config.addedTokensDecoder
        var addedEncoder: [CodePoints: Int] = [:]
        for id in addedDecoder.keys.sorted() { addedEncoder[addedDecoder[id]!.content.codePoints] = id }
        let firstNewID = vocabulary.count + addedEncoder.keys.filter { vocabulary[PythonText.utf8($0[...])] == nil }.count
        var newCount = 0
        var seen = Set<CodePoints>()
        var specialOrder: [CLIPTokenizerConfiguration.Special] = []
        for value in CLIPTokenizerConfiguration.attributes.compactMap({ special[$0] }) + config.additionalSpecial
        where seen.insert(value.content.codePoints).inserted {
            specialOrder.append(value)
        }
        for value in specialOrder {
            let token: AddedToken
            switch value {
            case let .string(s):
                if addedEncoder[s.codePoints] != nil { continue }
                token = AddedToken(content: s, normalized: false, special: true)
            case var .token(t):
                t.special = true
                token = t
            }
            let key = token.content.codePoints
            if key.isEmpty { continue }
            let id: Int
            if let existing = addedEncoder[key] ?? vocabulary[PythonText.utf8(key[...])] {
                id = existing
            } else {
                id = firstNewID + newCount
                newCount += 1
            }
            addedDecoder[id] = token
            addedEncoder[key] = id
        }

        let unkKey = special["unk_token"]!.content.codePoints
        let unkID = vocabulary[PythonText.utf8(unkKey[...])] ?? addedEncoder[unkKey]!
        func id(of key: CodePoints) -> Int { addedEncoder[key] ?? vocabulary[PythonText.utf8(key[...])] ?? unkID }

        self.cleaning = CLIPTextCleaning(unicodeVersion: options.unicodeVersion)
        self.bpe = BytePairEncoding(merges: merges)
        let addedByUTF8 = Dictionary(addedEncoder.map { (PythonText.utf8($0.key[...]), $0.value) }, uniquingKeysWith: { a, _ in a })
        self.symbolIDs = bpe.symbols.map { addedByUTF8[$0] ?? vocabulary[$0] ?? unkID }
        self.splitter = AddedTokenSplitter(addedDecoder.keys.sorted().map { addedDecoder[$0]! })
        self.addedEncoder = addedEncoder
        self.addedDecoder = addedDecoder.mapValues { $0.content.codePoints }
        self.vocabularyDecoder = vocabularyDecoder

        self.bosToken = special["bos_token"]!.content
        self.eosToken = special["eos_token"]!.content
        self.unkToken = special["unk_token"]!.content
        self.padToken = special["pad_token"]?.content
        self.bosTokenID = id(of: bosToken.codePoints)
        self.eosTokenID = id(of: eosToken.codePoints)
        self.unkTokenID = id(of: unkToken.codePoints)
        self.padTokenID = padToken.map { id(of: $0.codePoints) }
        self.allSpecialTokens = specialOrder.map(\.content)
        self.allSpecialIDs = allSpecialTokens.map { id(of: $0.codePoints) }
        self.specialIDSet = Set(allSpecialIDs)
        self.specialContents = Set(allSpecialTokens.map(\.codePoints))
        var legacy = Set(addedEncoder.keys).subtracting(specialContents)
        for value in config.additionalSpecial where id(of: value.content.codePoints) >= vocabulary.count {
            legacy.insert(value.content.codePoints)
        }
        self.legacyAddedTokens = legacy
        self.addedVocabulary = Dictionary(addedEncoder.map { (String(codePoints: $0.key), $0.value) }, uniquingKeysWith: { a, _ in a })
        self.vocabularySize = vocabulary.count
        self.modelMaxLength = config.modelMaxLength
        self.paddingSide = config.paddingSide
        self.truncationSide = config.truncationSide
        self.cleanUpTokenizationSpaces = config.cleanUpTokenizationSpaces
        self.splitSpecialTokens = config.splitSpecialTokens
        self.startOfTextID = id(of: Self.startOfText)
        self.endOfTextID = id(of: Self.endOfText)
    }

    /// The vocabulary OpenAI's CLIP builds from its merges file, which is also the content of the
    /// Hugging Face vocab.json of openai/clip-vit-*: the 256 byte symbols, the same with `</w>`,
    /// one token per merge (merges.txt lines 1...48894, as the slow tokenizer reads them), then
    /// `<|startoftext|>` and `<|endoftext|>` (49408 tokens for CLIP's file).
    public static func vocabularyFromMerges(_ mergesURL: URL) throws -> [String: Int] {
        var tokens: [String] = []
        let symbols = ByteLevelAlphabet.vocabularyOrder.map { String(ByteLevelAlphabet.scalars[Int($0)]) }
        tokens += symbols
        tokens += symbols.map { $0 + "</w>" }
        for (a, b) in try TokenizerFiles.readMerges(mergesURL) { tokens.append(String(decoding: a + b, as: UTF8.self)) }
        tokens += ["<|startoftext|>", "<|endoftext|>"]
        var vocabulary: [String: Int] = [:]
        for (i, token) in tokens.enumerated() where vocabulary[token] == nil { vocabulary[token] = i }
        return vocabulary
    }

    // MARK: Encoding

    private static let startOfText = "<|startoftext|>".codePoints
    private static let endOfText = "<|endoftext|>".codePoints
    private static let startOfTextUTF8 = Array("<|startoftext|>".utf8)
    private static let endOfTextUTF8 = Array("<|endoftext|>".utf8)

    /// The ids of `text` (`tokenizer(text).input_ids`): no truncation, no padding.
    public func encode(_ text: String, addSpecialTokens: Bool = true) -> [Int] {
        var ids: [Int] = addSpecialTokens ? [bosTokenID] : []
        for piece in pieces(text) {
            switch piece {
            case let .added(content): ids.append(addedEncoder[content]!)
            case let .text(chunk):
                for word in cleaning.words(chunk) {
                    for range in CLIPPreTokenizer.split(word) { ids += wordIDs(PythonText.utf8(word[range])) }
                }
            }
        }
        if addSpecialTokens { ids.append(eosTokenID) }
        return ids
    }

    /// The token strings of `text` (`tokenizer.tokenize(text)`): byte-level BPE tokens and added tokens.
    public func tokenize(_ text: String) -> [String] {
        var tokens: [String] = []
        for piece in pieces(text) {
            switch piece {
            case let .added(content): tokens.append(String(codePoints: content))
            case let .text(chunk):
                for word in cleaning.words(chunk) {
                    for range in CLIPPreTokenizer.split(word) {
                        let bytes = PythonText.utf8(word[range])
                        if bytes == Self.startOfTextUTF8 || bytes == Self.endOfTextUTF8 {
                            tokens.append(String(decoding: bytes, as: UTF8.self))
                        } else {
                            tokens += bpe.encode(word: bytes).map { String(decoding: bpe.symbols[Int($0)], as: UTF8.self) }
                        }
                    }
                }
            }
        }
        return tokens
    }

    /// Tokenises a batch as diffusers calls the tokenizer: by default padded to `maxLength` (else
    /// `modelMaxLength`) and truncated to it, keeping `<|startoftext|>` and `<|endoftext|>`.
    /// Truncation follows transformers: a sequence that would have to lose all its tokens (or
    /// more) is left whole.
    public func callAsFunction(_ texts: [String], padding: Padding = .maxLength, truncation: Bool = true,
                               maxLength: Int? = nil, addSpecialTokens: Bool = true) throws -> BatchEncoding {
        let limit = maxLength ?? modelMaxLength
        if padding != .doNotPad, padTokenID == nil {
            throw CLIPTokenizerError.invalidArgument("padding needs a pad token, and this tokenizer has none (pad_token is null)")
        }
        if padding == .maxLength, limit == nil {
            throw CLIPTokenizerError.invalidArgument(
                "padding to the maximum length needs maxLength: the tokenizer config sets no model_max_length")
        }
        let specialCount = addSpecialTokens ? 2 : 0
        var rows: [[Int]] = texts.map { text in
            var ids = encode(text, addSpecialTokens: false)
            if truncation, let limit, limit > 0 {
                let excess = ids.count + specialCount - limit
                if excess > 0, ids.count > excess {
                    ids = truncationSide == .right ? Array(ids.dropLast(excess)) : Array(ids.dropFirst(excess))
                }
            }
            return addSpecialTokens ? [bosTokenID] + ids + [eosTokenID] : ids
        }
        var masks = rows.map { [Int](repeating: 1, count: $0.count) }
        let target: Int
        switch padding {
        case .doNotPad: return BatchEncoding(inputIDs: rows, attentionMask: masks)
        case .longest: target = rows.map(\.count).max() ?? 0
        case .maxLength: target = limit!
        }
        for i in rows.indices where rows[i].count < target {
            let n = target - rows[i].count
            if paddingSide == .right {
                rows[i] += [Int](repeating: padTokenID!, count: n)
                masks[i] += [Int](repeating: 0, count: n)
            } else {
                rows[i] = [Int](repeating: padTokenID!, count: n) + rows[i]
                masks[i] = [Int](repeating: 0, count: n) + masks[i]
            }
        }
        return BatchEncoding(inputIDs: rows, attentionMask: masks)
    }

    /// The input ids diffusers gives the text encoder: an int64 tensor [batch, maxLength] (padded
    /// and truncated to `maxLength`, else `modelMaxLength`).
    public func inputIDs(_ texts: [String], maxLength: Int? = nil) throws -> Tensor {
        let rows = try self(texts, padding: .maxLength, truncation: true, maxLength: maxLength).inputIDs
        let width = rows.first?.count ?? (maxLength ?? modelMaxLength ?? 0)
        guard rows.allSatisfy({ $0.count == width }) else {
            throw CLIPTokenizerError.invalidArgument(
                "the sequences have different lengths after truncation to \(width) (a maximum length below 2 cannot hold the start and end tokens)")
        }
        return Tensor(indices: rows.flatMap { $0 }, shape: [rows.count, width], dtype: .int64)
    }

    private func pieces(_ text: String) -> [AddedTokenSplitter.Piece] {
        let codePoints = text.codePoints
        if splitSpecialTokens { return codePoints.isEmpty ? [] : [.text(codePoints)] }
        return splitter.split(codePoints)
    }

    /// The ids of one pre-tokenised word (its UTF-8 bytes), through the cache.
    private func wordIDs(_ bytes: [UInt8]) -> [Int] {
        // transformers' BPE cache starts with these two words, which therefore are never split.
        if bytes == Self.startOfTextUTF8 { return [startOfTextID] }
        if bytes == Self.endOfTextUTF8 { return [endOfTextID] }
        cacheLock.lock()
        let cached = cache[bytes]
        cacheLock.unlock()
        if let cached { return cached }
        let ids = bpe.encode(word: bytes).map { symbolIDs[Int($0)] }
        cacheLock.lock()
        if cache.count >= Self.cacheLimit { cache.removeAll(keepingCapacity: true) }
        cache[bytes] = ids
        cacheLock.unlock()
        return ids
    }

    // MARK: Decoding

    /// The text of `ids` (transformers' `decode`): byte-level tokens are joined, decoded as UTF-8
    /// (invalid bytes become U+FFFD), `</w>` becomes a space and the ends are stripped; added
    /// tokens that are not special are kept apart and joined with spaces. Throws for an id that is
    /// in neither the vocabulary nor the added tokens.
    public func decode(_ ids: [Int], skipSpecialTokens: Bool = false, cleanUpTokenizationSpaces: Bool? = nil,
                       spacesBetweenSpecialTokens: Bool = true) throws -> String {
        var parts: [CodePoints] = []
        var current: [CodePoints] = []
        for id in ids {
            if skipSpecialTokens, specialIDSet.contains(id) { continue }
            guard let token = addedDecoder[id] ?? vocabularyDecoder[id].map({ String(decoding: $0, as: UTF8.self).codePoints }) else {
                throw CLIPTokenizerError.invalidArgument("token id \(id) is not in the vocabulary (\(vocabularySize) tokens) nor an added token")
            }
            if skipSpecialTokens, specialContents.contains(token) { continue }
            if legacyAddedTokens.contains(token) {
                if !current.isEmpty {
                    let text = try tokensToText(current)
                    if !text.isEmpty { parts.append(text) }
                    current.removeAll()
                }
                parts.append(token)
            } else {
                current.append(token)
            }
        }
        if !current.isEmpty { parts.append(try tokensToText(current)) }
        var text: CodePoints = []
        for (i, part) in parts.enumerated() {
            if i > 0, spacesBetweenSpecialTokens { text.append(" ") }
            text += part
        }
        if cleanUpTokenizationSpaces ?? self.cleanUpTokenizationSpaces { text = Self.cleanUpTokenization(text) }
        return String(codePoints: text)
    }

    /// transformers' `convert_tokens_to_string`.
    private func tokensToText(_ tokens: [CodePoints]) throws -> CodePoints {
        var bytes: [UInt8] = []
        for token in tokens {
            for c in token {
                guard let byte = ByteLevelAlphabet.bytes[c] else {
                    throw CLIPTokenizerError.invalidArgument(
                        "token \"\(String(codePoints: token))\" has a character outside the byte-level alphabet (U+\(String(c.value, radix: 16, uppercase: true))), so it cannot be decoded")
                }
                bytes.append(byte)
            }
        }
        return PythonText.strip(PythonText.replace(PythonText.decodeUTF8(bytes), Self.endOfWordCodePoints, [" "]))
    }

    private static let endOfWordCodePoints = "</w>".codePoints

    /// transformers' `clean_up_tokenization`: removes the spaces tokenisation put before
    /// punctuation and English contractions.
    static func cleanUpTokenization(_ text: CodePoints) -> CodePoints {
        var out = text
        for (old, new) in [(" .", "."), (" ?", "?"), (" !", "!"), (" ,", ","), (" ' ", "'"), (" n't", "n't"),
                           (" 'm", "'m"), (" 's", "'s"), (" 've", "'ve"), (" 're", "'re")] {
            out = PythonText.replace(out, old.codePoints, new.codePoints)
        }
        return out
    }
}
