import Foundation

/// The text cleaning of transformers' `CLIPTokenizer` when `ftfy` is not installed: its
/// `BasicTokenizer(do_lower_case=True, strip_accents=False, do_split_on_punc=False)` followed by
/// `" ".join(...)`. For each chunk of text between added tokens it
///
/// 1. drops U+0000, U+FFFD and every character of category C* except tab, LF and CR;
///    maps tab, LF, CR and category Zs to a space;
/// 2. puts spaces around CJK ideographs (the BERT ranges);
/// 3. normalises to NFC;
/// 4. splits on Python's whitespace (`str.split()`), and lower-cases each word with `str.lower()`
///    (full case mappings, and final-sigma context for U+03A3).
///
/// Python answers these questions from its own `unicodedata` tables, so the result depends on the
/// Python version for characters assigned recently: a character unknown to Python's table has
/// category Cn and is dropped in step 1. `unicodeVersion` reproduces that: characters assigned
/// after it count as unassigned (Python 3.11: 14.0, 3.12: 15.0, 3.13: 15.1, 3.14: 16.0); nil
/// uses the tables of the Swift runtime.
struct CLIPTextCleaning: Sendable {
    var unicodeVersion: (major: Int, minor: Int)?

    /// The lower-cased words of `text`, as code points.
    func words(_ text: CodePoints) -> [CodePoints] {
        if text.allSatisfy({ $0.isASCII }) { return asciiWords(text) }
        var cleaned: CodePoints = []
        cleaned.reserveCapacity(text.count + 8)
        var needsNFC = false
        for c in text {
            let v = c.value
            let category = self.category(c)
            if v == 0 || v == 0xFFFD || isControl(c, category) { continue }
            if c == " " || c == "\t" || c == "\n" || c == "\r" || category == .spaceSeparator {
                cleaned.append(" ")
            } else if Self.isCJKIdeograph(v) {
                cleaned.append(" ")
                cleaned.append(c)
                cleaned.append(" ")
            } else {
                cleaned.append(c)
            }
            // Code points below U+0300 are all NFC-stable and none combines with its neighbours.
            if v >= 0x300 { needsNFC = true }
        }
        if needsNFC {
            cleaned = String(codePoints: cleaned).precomposedStringWithCanonicalMapping.codePoints
        }
        return PythonText.split(cleaned).map(Self.pythonLower)
    }

    private func asciiWords(_ text: CodePoints) -> [CodePoints] {
        var out: [CodePoints] = []
        var current: CodePoints = []
        for c in text {
            let v = c.value
            switch v {
            case 0x09, 0x0A, 0x0D, 0x20:
                if !current.isEmpty { out.append(current); current.removeAll(keepingCapacity: true) }
            case 0x00...0x1F, 0x7F:
                continue  // controls (category Cc) are dropped, VT and FF included
            case 0x41...0x5A:
                current.append(Unicode.Scalar(v + 0x20)!)
            default:
                current.append(c)
            }
        }
        if !current.isEmpty { out.append(current) }
        return out
    }

    /// The general category as Python's `unicodedata` of `unicodeVersion` reports it.
    func category(_ c: Unicode.Scalar) -> Unicode.GeneralCategory {
        if let limit = unicodeVersion, let age = c.properties.age,
           age.major > limit.major || (age.major == limit.major && age.minor > limit.minor) {
            return .unassigned
        }
        return c.properties.generalCategory
    }

    /// transformers' `_is_control`: category C* except tab, LF and CR.
    private func isControl(_ c: Unicode.Scalar, _ category: Unicode.GeneralCategory) -> Bool {
        if c == "\t" || c == "\n" || c == "\r" { return false }
        switch category {
        case .control, .format, .surrogate, .privateUse, .unassigned: return true
        default: return false
        }
    }

    /// BasicTokenizer's `_is_chinese_char` ranges (CJK Unified Ideographs and extensions A-E,
    /// compatibility ideographs and their supplement).
    static func isCJKIdeograph(_ v: UInt32) -> Bool {
        (0x4E00...0x9FFF).contains(v) || (0x3400...0x4DBF).contains(v) || (0x20000...0x2A6DF).contains(v)
            || (0x2A700...0x2B73F).contains(v) || (0x2B740...0x2B81F).contains(v)
            || (0x2B820...0x2CEAF).contains(v) || (0xF900...0xFAFF).contains(v)
            || (0x2F800...0x2FA1F).contains(v)
    }

    /// Python's `str.lower()`: full lower-case mappings (SpecialCasing's unconditional ones, e.g.
    /// U+0130 -> "i̇"), and U+03A3 becomes final ς when preceded by a cased letter and not followed
    /// by one (case-ignorable characters skipped), as CPython's `handle_capital_sigma` decides.
    static func pythonLower(_ word: CodePoints) -> CodePoints {
        var out: CodePoints = []
        out.reserveCapacity(word.count)
        for (i, c) in word.enumerated() {
            if c.isASCII {
                out.append(("A"..."Z").contains(c) ? Unicode.Scalar(c.value + 0x20)! : c)
            } else if c.value == 0x03A3 {
                out.append(isFinalSigma(word, at: i) ? "\u{03C2}" : "\u{03C3}")
            } else {
                out.append(contentsOf: c.properties.lowercaseMapping.unicodeScalars)
            }
        }
        return out
    }

    private static func isFinalSigma(_ word: CodePoints, at i: Int) -> Bool {
        var j = i - 1
        while j >= 0, word[j].properties.isCaseIgnorable { j -= 1 }
        guard j >= 0, word[j].properties.isCased else { return false }
        j = i + 1
        while j < word.count, word[j].properties.isCaseIgnorable { j += 1 }
        return j == word.count || !word[j].properties.isCased
    }
}
