/// GPT-2's reversible map from bytes to printable characters (transformers' `bytes_to_unicode`):
/// the printable Latin-1 bytes map to themselves, the other 68 bytes (controls, space, 0x7F-0xA0,
/// 0xAD) to U+0100... in byte order. Vocabulary and merge strings are written in this alphabet.
enum ByteLevelAlphabet {
    /// The character of each byte.
    static let scalars: [Unicode.Scalar] = {
        var table = [Unicode.Scalar](repeating: " ", count: 256)
        var next: UInt32 = 256
        for byte in 0..<256 {
            if (0x21...0x7E).contains(byte) || (0xA1...0xAC).contains(byte) || (0xAE...0xFF).contains(byte) {
                table[byte] = Unicode.Scalar(UInt32(byte))!
            } else {
                table[byte] = Unicode.Scalar(next)!
                next += 1
            }
        }
        return table
    }()

    /// The byte of each character of the alphabet.
    static let bytes: [Unicode.Scalar: UInt8] = {
        var map: [Unicode.Scalar: UInt8] = [:]
        for (byte, scalar) in scalars.enumerated() { map[scalar] = UInt8(byte) }
        return map
    }()

    /// The order in which OpenAI's CLIP (and the Hugging Face vocab.json built from it) numbers the
    /// 256 byte symbols: the bytes that map to themselves first, then the others.
    static let vocabularyOrder: [UInt8] = {
        let direct = (0..<256).filter { scalars[$0].value == UInt32($0) }
        let shifted = (0..<256).filter { scalars[$0].value != UInt32($0) }
        return (direct + shifted).map { UInt8($0) }
    }()
}

/// Byte-pair encoding with CLIP's end-of-word marker: a word's last symbol carries the suffix
/// `</w>`, and merges are applied lowest rank first, each to all its non-overlapping occurrences
/// from left to right (transformers' `CLIPTokenizer.bpe`).
///
/// Symbols are interned as integers (keyed by their UTF-8 bytes, so that two strings are the same
/// symbol exactly when Python's `==` says so), which makes a merge lookup one hash of a UInt64.
struct BytePairEncoding: Sendable {
    static let endOfWord: [UInt8] = Array("</w>".utf8)

    /// The UTF-8 of each interned symbol's string, indexed by symbol.
    let symbols: [[UInt8]]
    /// (rank, merged symbol) of each pair, keyed by `first << 32 | second`.
    private let ranks: [UInt64: (rank: Int32, merged: Int32)]
    /// The initial symbol of each byte inside a word, and of the word's last byte.
    private let byteSymbols: [Int32]
    private let lastByteSymbols: [Int32]

    /// `merges`: the pairs in rank order, as UTF-8 strings of the byte-level alphabet. A pair that
    /// occurs twice keeps its later rank, as a Python dict built from the list does.
    init(merges: [([UInt8], [UInt8])]) {
        var index: [[UInt8]: Int32] = [:]
        var symbols: [[UInt8]] = []
        func intern(_ s: [UInt8]) -> Int32 {
            if let i = index[s] { return i }
            let i = Int32(symbols.count)
            symbols.append(s)
            index[s] = i
            return i
        }
        var byteSymbols = [Int32](repeating: 0, count: 256)
        var lastByteSymbols = [Int32](repeating: 0, count: 256)
        for byte in 0..<256 {
            let utf8 = Array(String(ByteLevelAlphabet.scalars[byte]).utf8)
            byteSymbols[byte] = intern(utf8)
            lastByteSymbols[byte] = intern(utf8 + Self.endOfWord)
        }
        var ranks: [UInt64: (rank: Int32, merged: Int32)] = [:]
        ranks.reserveCapacity(merges.count)
        for (rank, (a, b)) in merges.enumerated() {
            let first = intern(a), second = intern(b)
            ranks[Self.key(first, second)] = (Int32(rank), intern(a + b))
        }
        self.symbols = symbols
        self.ranks = ranks
        self.byteSymbols = byteSymbols
        self.lastByteSymbols = lastByteSymbols
    }

    @inline(__always)
    private static func key(_ a: Int32, _ b: Int32) -> UInt64 {
        UInt64(UInt32(bitPattern: a)) << 32 | UInt64(UInt32(bitPattern: b))
    }

    /// The symbols of one pre-tokenised word, given as its UTF-8 bytes.
    func encode(word: [UInt8]) -> [Int32] {
        guard let last = word.last else { return [] }
        var parts = word.dropLast().map { byteSymbols[Int($0)] }
        parts.append(lastByteSymbols[Int(last)])
        var scratch: [Int32] = []
        scratch.reserveCapacity(parts.count)
        while parts.count > 1 {
            // The adjacent pair with the lowest rank (distinct pairs have distinct ranks).
            var best: (rank: Int32, merged: Int32, first: Int32, second: Int32)?
            for i in 0..<(parts.count - 1) {
                if let entry = ranks[Self.key(parts[i], parts[i + 1])], entry.rank < (best?.rank ?? .max) {
                    best = (entry.rank, entry.merged, parts[i], parts[i + 1])
                }
            }
            guard let merge = best else { break }
            scratch.removeAll(keepingCapacity: true)
            var i = 0
            while i < parts.count {
                if i + 1 < parts.count, parts[i] == merge.first, parts[i + 1] == merge.second {
                    scratch.append(merge.merged)
                    i += 2
                } else {
                    scratch.append(parts[i])
                    i += 1
                }
            }
            swap(&parts, &scratch)
        }
        return parts
    }
}
