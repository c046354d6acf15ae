/// A token matched in the raw text before any cleaning (transformers' `AddedToken`): the special
/// tokens and any tokens a tokenizer folder declares in `added_tokens_decoder`,
/// `added_tokens.json` or tokenizer.json's `added_tokens`.
public struct AddedToken: Sendable, Equatable {
    public var content: String
    /// Only matched as a whole word (transformers' slow-tokenizer rule: not glued to a neighbour).
    public var singleWord: Bool
    /// Eats the whitespace on its left / right.
    public var lstrip: Bool
    public var rstrip: Bool
    /// Kept for completeness; the slow CLIP tokenizer never normalises added tokens.
    public var normalized: Bool
    public var special: Bool

    public init(content: String, singleWord: Bool = false, lstrip: Bool = false, rstrip: Bool = false,
                normalized: Bool = true, special: Bool = false) {
        self.content = content
        self.singleWord = singleWord
        self.lstrip = lstrip
        self.rstrip = rstrip
        self.normalized = normalized
        self.special = special
    }
}

/// Splits text on added tokens as transformers' `PreTrainedTokenizer.tokenize` does: the trie
/// takes the leftmost match, and the longest among those starting there; then `lstrip` / `rstrip`
/// trim the whitespace of the neighbouring pieces and a `single_word` token glued to a neighbour
/// is merged back into it. Pieces are compared by code points, like Python strings.
struct AddedTokenSplitter: Sendable {
    enum Piece: Equatable {
        case added(CodePoints)
        case text(CodePoints)
    }

    private let tokens: [CodePoints: AddedToken]
    /// Candidates by first code point, longest first.
    private let byFirst: [Unicode.Scalar: [CodePoints]]

    init(_ tokens: [AddedToken]) {
        var map: [CodePoints: AddedToken] = [:]
        for token in tokens where !token.content.isEmpty { map[token.content.codePoints] = token }
        var byFirst: [Unicode.Scalar: [CodePoints]] = [:]
        for key in map.keys { byFirst[key[0], default: []].append(key) }
        for k in byFirst.keys { byFirst[k]!.sort { $0.count > $1.count } }
        self.tokens = map
        self.byFirst = byFirst
    }

    func split(_ text: CodePoints) -> [Piece] {
        guard !tokens.isEmpty else { return text.isEmpty ? [] : [.text(text)] }
        // 1. Cut at the added tokens.
        var pieces: [CodePoints] = []
        var start = 0, i = 0
        while i < text.count {
            if let candidates = byFirst[text[i]],
               let match = candidates.first(where: { i + $0.count <= text.count && text[i..<(i + $0.count)].elementsEqual($0) }) {
                if start < i { pieces.append(Array(text[start..<i])) }
                pieces.append(match)
                i += match.count
                start = i
            } else {
                i += 1
            }
        }
        if start < text.count { pieces.append(Array(text[start...])) }

        // 2. Apply the strip / single-word rules in place, in order (a rule may edit a piece that a
        //    later step reads, exactly as the Python loop does).
        for i in pieces.indices {
            guard let token = tokens[pieces[i]] else { continue }
            let left: CodePoints? = i > 0 ? pieces[i - 1] : nil
            let right: CodePoints? = i + 1 < pieces.count ? pieces[i + 1] : nil
            if token.rstrip, let right, !right.isEmpty { pieces[i + 1] = PythonText.lstrip(right) }
            if token.lstrip, let left, !left.isEmpty { pieces[i - 1] = PythonText.rstrip(left) }
            if token.singleWord, let left, let last = left.last, last != " " {
                pieces[i - 1] += pieces[i]
                pieces[i] = []
            } else if token.singleWord, let right, let first = right.first, first != " " {
                pieces[i + 1] = pieces[i] + pieces[i + 1]
                pieces[i] = []
            }
        }
        return pieces.compactMap { piece in
            if piece.isEmpty { return nil }
            return tokens[piece] != nil ? .added(piece) : .text(piece)
        }
    }
}
