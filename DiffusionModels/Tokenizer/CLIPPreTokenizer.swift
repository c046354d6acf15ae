/// CLIP's pre-tokenisation pattern, matched by hand:
///
///     <\|startoftext\|>|<\|endoftext\|>|'s|'t|'re|'ve|'m|'ll|'d|[\p{L}]+|[\p{N}]|[^\s\p{L}\p{N}]+
///
/// compiled by transformers with `regex.IGNORECASE` and applied with `findall`: at each position
/// the first alternative that matches wins, and positions where none matches (whitespace) are
/// skipped. Case-insensitive literals follow the `regex` module's simple case folding, under which
/// "s" also matches U+017F (ſ); no other character folds to a letter of these literals. Under
/// IGNORECASE the `regex` module (2026.11) also puts U+0345 COMBINING GREEK YPOGEGRAMMENI (whose
/// upper case is the letter Ι) in neither `[\p{L}]` nor `[^\s\p{L}\p{N}]`, so findall skips it like
/// whitespace; a check of every code point found no other character whose classes change.
enum CLIPPreTokenizer {
    /// The matches in `text`, as ranges of code points.
    static func split(_ text: CodePoints) -> [Range<Int>] {
        var out: [Range<Int>] = []
        var i = 0
        let n = text.count
        while i < n {
            let c = text[i]
            if c == "<", let end = matchLiteral(startOfText, in: text, at: i) ?? matchLiteral(endOfText, in: text, at: i) {
                out.append(i..<end)
                i = end
            } else if c == "'", let end = contractions.lazy.compactMap({ matchLiteral($0, in: text, at: i) }).first {
                out.append(i..<end)
                i = end
            } else if isLetter(c) {
                var j = i + 1
                while j < n, isLetter(text[j]) { j += 1 }
                out.append(i..<j)
                i = j
            } else if isNumber(c) {
                out.append(i..<(i + 1))
                i += 1
            } else if isOther(c) {
                var j = i + 1
                while j < n, isOther(text[j]) { j += 1 }
                out.append(i..<j)
                i = j
            } else {
                i += 1
            }
        }
        return out
    }

    private static let startOfText = Array("<|startoftext|>".unicodeScalars)
    private static let endOfText = Array("<|endoftext|>".unicodeScalars)
    private static let contractions = ["'s", "'t", "'re", "'ve", "'m", "'ll", "'d"].map { Array($0.unicodeScalars) }

    /// The end of `literal` matched case-insensitively at `start`, or nil.
    private static func matchLiteral(_ literal: CodePoints, in text: CodePoints, at start: Int) -> Int? {
        guard start + literal.count <= text.count else { return nil }
        for (k, l) in literal.enumerated() where !foldEquals(text[start + k], l) { return nil }
        return start + literal.count
    }

    /// `c` equals the ASCII literal character `l` under simple case folding.
    private static func foldEquals(_ c: Unicode.Scalar, _ l: Unicode.Scalar) -> Bool {
        if c == l { return true }
        guard ("a"..."z").contains(l) else { return false }
        return c.value == l.value - 0x20 || (l == "s" && c.value == 0x017F)
    }

    /// `[^\s\p{L}\p{N}]` as the `regex` module matches it case-insensitively.
    static func isOther(_ c: Unicode.Scalar) -> Bool {
        if c.isASCII { return c != " " && !(0x09...0x0D).contains(c.value) && !isLetter(c) && !isNumber(c) }
        return !c.properties.isWhitespace && c.value != 0x0345 && !isLetter(c) && !isNumber(c)
    }

    /// `\p{L}`: general category L*.
    static func isLetter(_ c: Unicode.Scalar) -> Bool {
        if c.isASCII { return ("a"..."z").contains(c) || ("A"..."Z").contains(c) }
        switch c.properties.generalCategory {
        case .uppercaseLetter, .lowercaseLetter, .titlecaseLetter, .modifierLetter, .otherLetter: return true
        default: return false
        }
    }

    /// `\p{N}`: general category N*.
    static func isNumber(_ c: Unicode.Scalar) -> Bool {
        if c.isASCII { return ("0"..."9").contains(c) }
        switch c.properties.generalCategory {
        case .decimalNumber, .letterNumber, .otherNumber: return true
        default: return false
        }
    }
}
