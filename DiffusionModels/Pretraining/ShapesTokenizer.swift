import Foundation

// The tokenizer files of the built-in model: a CLIP byte-level BPE vocabulary (vocab.json +
// merges.txt, read by our `CLIPTokenizer` and by transformers' `CLIPTokenizer`) whose merges build
// every word of the caption grammar into a single token (`red</w>`, `circle</w>`, …).
//
// The vocabulary has CLIP's layout (`CLIPTokenizer.vocabularyFromMerges`): the 256 byte symbols,
// the same with `</w>`, one token per merge, then `<|startoftext|>` and `<|endoftext|>`; padding is
// `<|endoftext|>` as in SD 1.x. Any other text still tokenises (into byte symbols), so prompts
// outside the grammar are accepted, just not understood.
//
//   let files = ShapesTokenizer(words: ShapesDataset.vocabularyWords, modelMaxLength: 16)
//   try files.write(to: dir)          // vocab.json, merges.txt, tokenizer_config.json, special_tokens_map.json
//   files.vocabularySize              // the text encoder's vocab_size

public struct ShapesTokenizer: Sendable {
    public let words: [String]
    public let modelMaxLength: Int
    /// The merges, in rank order.
    public let merges: [(String, String)]

    public init(words: [String] = ShapesDataset.vocabularyWords, modelMaxLength: Int = 16) {
        self.words = words
        self.modelMaxLength = modelMaxLength
        self.merges = Self.buildMerges(words)
    }

    /// 256 byte symbols + 256 with `</w>` + one token per merge + 2 special tokens.
    public var vocabularySize: Int { 512 + merges.count + 2 }
    public var startOfTextID: Int { 512 + merges.count }
    public var endOfTextID: Int { 512 + merges.count + 1 }

    /// Merges that turn each word (lower-case ASCII) into one token: for every word, the pair of its
    /// first two symbols after BPE with the merges so far is appended until the word is one symbol.
    /// An appended merge has the highest rank, so it never changes how earlier words split.
    static func buildMerges(_ words: [String]) -> [(String, String)] {
        var merges: [(String, String)] = []
        var ranks: [String: Int] = [:]
        for word in words where word.count > 1 {
            while true {
                let symbols = bpe(word, ranks: ranks)
                if symbols.count == 1 { break }
                ranks[symbols[0] + " " + symbols[1]] = merges.count
                merges.append((symbols[0], symbols[1]))
            }
        }
        return merges
    }

    /// CLIP's `bpe` on one word (a `</w>` on the last symbol): repeatedly merge every occurrence of
    /// the lowest-ranked adjacent pair.
    static func bpe(_ word: String, ranks: [String: Int]) -> [String] {
        var symbols = word.map { String($0) }
        symbols[symbols.count - 1] += "</w>"
        while symbols.count > 1 {
            var best: (rank: Int, first: String, second: String)?
            for i in 0..<(symbols.count - 1) {
                if let r = ranks[symbols[i] + " " + symbols[i + 1]], best == nil || r < best!.rank {
                    best = (r, symbols[i], symbols[i + 1])
                }
            }
            guard let (_, first, second) = best else { break }
            var merged: [String] = []
            var i = 0
            while i < symbols.count {
                if i < symbols.count - 1, symbols[i] == first, symbols[i + 1] == second {
                    merged.append(first + second)
                    i += 2
                } else {
                    merged.append(symbols[i])
                    i += 1
                }
            }
            symbols = merged
        }
        return symbols
    }

    /// Writes vocab.json, merges.txt, tokenizer_config.json and special_tokens_map.json into
    /// `directory` (created if needed).
    public func write(to directory: URL) throws {
        try FileManager.default.createDirectory(at: directory, withIntermediateDirectories: true)
        var mergesText = "#version: 0.2\n"
        for (a, b) in merges { mergesText += "\(a) \(b)\n" }
        let mergesURL = directory.appendingPathComponent("merges.txt")
        try Data(mergesText.utf8).write(to: mergesURL)
        let vocabulary = try CLIPTokenizer.vocabularyFromMerges(mergesURL)
        precondition(vocabulary.count == vocabularySize, "ShapesTokenizer: duplicate tokens in the merges")
        try json(vocabulary).write(to: directory.appendingPathComponent("vocab.json"))
        func special(_ content: String) -> [String: Any] {
            ["content": content, "lstrip": false, "normalized": true, "rstrip": false, "single_word": false]
        }
        var decoder: [String: Any] = [:]
        for (id, content) in [(startOfTextID, "<|startoftext|>"), (endOfTextID, "<|endoftext|>")] {
            decoder[String(id)] = special(content).merging(["special": true]) { a, _ in a }
        }
        let config: [String: Any] = [
            "added_tokens_decoder": decoder, "bos_token": "<|startoftext|>", "clean_up_tokenization_spaces": false,
            "eos_token": "<|endoftext|>", "errors": "replace", "model_max_length": modelMaxLength,
            "pad_token": "<|endoftext|>", "tokenizer_class": "CLIPTokenizer", "unk_token": "<|endoftext|>",
        ]
        try json(config).write(to: directory.appendingPathComponent("tokenizer_config.json"))
        let map: [String: Any] = [
            "bos_token": special("<|startoftext|>"), "eos_token": special("<|endoftext|>"),
            "pad_token": "<|endoftext|>", "unk_token": special("<|endoftext|>"),
        ]
        try json(map).write(to: directory.appendingPathComponent("special_tokens_map.json"))
    }

    private func json(_ object: Any) throws -> Data {
        try JSONSerialization.data(withJSONObject: object, options: [.prettyPrinted, .sortedKeys])
    }
}
