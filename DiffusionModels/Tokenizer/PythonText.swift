// String primitives with Python's semantics. The tokenizer must reproduce transformers, which
// works on code points: these helpers work on `[Unicode.Scalar]`, never on Swift `Character`s or
// `String` comparison (which groups graphemes and compares up to canonical equivalence).

typealias CodePoints = [Unicode.Scalar]

enum PythonText {
    /// `str.isspace()` / the separators of `str.split()`: bidirectional class WS, B or S, or
    /// category Zs. (The set has been stable since Unicode 6.)
    static func isSpace(_ s: Unicode.Scalar) -> Bool {
        switch s.value {
        case 0x09...0x0D, 0x1C...0x20, 0x85, 0xA0, 0x1680, 0x2000...0x200A, 0x2028, 0x2029, 0x202F,
             0x205F, 0x3000:
            return true
        default:
            return false
        }
    }

    /// `str.strip()`.
    static func strip(_ s: CodePoints) -> CodePoints {
        var lo = 0, hi = s.count
        while lo < hi, isSpace(s[lo]) { lo += 1 }
        while hi > lo, isSpace(s[hi - 1]) { hi -= 1 }
        return lo == 0 && hi == s.count ? s : Array(s[lo..<hi])
    }

    static func lstrip(_ s: CodePoints) -> CodePoints {
        guard let i = s.firstIndex(where: { !isSpace($0) }) else { return [] }
        return Array(s[i...])
    }

    static func rstrip(_ s: CodePoints) -> CodePoints {
        guard let i = s.lastIndex(where: { !isSpace($0) }) else { return [] }
        return Array(s[...i])
    }

    /// `str.split()` with no argument: runs of whitespace separate, empty pieces are dropped.
    static func split(_ s: CodePoints) -> [CodePoints] {
        var out: [CodePoints] = []
        var current: CodePoints = []
        for c in s {
            if isSpace(c) {
                if !current.isEmpty { out.append(current); current.removeAll(keepingCapacity: true) }
            } else {
                current.append(c)
            }
        }
        if !current.isEmpty { out.append(current) }
        return out
    }

    /// `str.replace(old, new)`: non-overlapping occurrences, left to right.
    static func replace(_ s: CodePoints, _ old: CodePoints, _ new: CodePoints) -> CodePoints {
        guard !old.isEmpty, s.count >= old.count else { return s }
        var out: CodePoints = []
        out.reserveCapacity(s.count)
        var i = 0
        while i < s.count {
            if i + old.count <= s.count, s[i] == old[0], s[i..<(i + old.count)].elementsEqual(old) {
                out.append(contentsOf: new)
                i += old.count
            } else {
                out.append(s[i])
                i += 1
            }
        }
        return out
    }

    /// The code point starting at `i` of valid UTF-8, and its length in bytes.
    @inline(__always)
    static func scalar(in bytes: ArraySlice<UInt8>, at i: Int) -> (Unicode.Scalar, Int) {
        let b0 = bytes[i]
        if b0 < 0x80 { return (Unicode.Scalar(b0), 1) }
        let length = b0 >= 0xF0 ? 4 : b0 >= 0xE0 ? 3 : 2
        var v = UInt32(b0) & (length == 2 ? 0x1F : length == 3 ? 0x0F : 0x07)
        for k in 1..<length { v = v << 6 | UInt32(bytes[i + k] & 0x3F) }
        return (Unicode.Scalar(v) ?? "\u{FFFD}", length)
    }

    /// `str.split()` over valid UTF-8, returning the pieces as byte slices.
    static func splitUTF8(_ bytes: ArraySlice<UInt8>) -> [ArraySlice<UInt8>] {
        var out: [ArraySlice<UInt8>] = []
        var i = bytes.startIndex
        var start: Int?
        while i < bytes.endIndex {
            let (c, n) = scalar(in: bytes, at: i)
            if isSpace(c) {
                if let s = start { out.append(bytes[s..<i]); start = nil }
            } else if start == nil {
                start = i
            }
            i += n
        }
        if let s = start { out.append(bytes[s..<bytes.endIndex]) }
        return out
    }

    /// `str.strip()` over valid UTF-8.
    static func stripUTF8(_ bytes: ArraySlice<UInt8>) -> ArraySlice<UInt8> {
        var lo = bytes.startIndex, hi = bytes.endIndex
        while lo < hi {
            let (c, n) = scalar(in: bytes, at: lo)
            guard isSpace(c) else { break }
            lo += n
        }
        while hi > lo {
            var start = hi - 1
            while start > lo, bytes[start] & 0xC0 == 0x80 { start -= 1 }
            guard isSpace(scalar(in: bytes, at: start).0) else { break }
            hi = start
        }
        return bytes[lo..<hi]
    }

    /// `str.encode("utf-8")`.
    static func utf8(_ s: ArraySlice<Unicode.Scalar>) -> [UInt8] {
        var out: [UInt8] = []
        out.reserveCapacity(s.count)
        for c in s {
            if c.isASCII { out.append(UInt8(c.value)) } else { UTF8.encode(c) { out.append($0) } }
        }
        return out
    }

    /// `bytes.decode("utf-8", errors="replace")`: every maximal ill-formed subpart becomes one
    /// U+FFFD (the Unicode "best practice" that CPython's decoder follows).
    static func decodeUTF8(_ bytes: [UInt8]) -> CodePoints {
        var out: CodePoints = []
        out.reserveCapacity(bytes.count)
        let replacement = Unicode.Scalar(0xFFFD)!
        var i = 0
        let n = bytes.count
        while i < n {
            let b0 = bytes[i]
            if b0 < 0x80 {
                out.append(Unicode.Scalar(b0))
                i += 1
                continue
            }
            // Length and the allowed range of the second byte (Unicode Table 3-7).
            let length: Int
            var lo: UInt8 = 0x80, hi: UInt8 = 0xBF
            switch b0 {
            case 0xC2...0xDF: length = 2
            case 0xE0: length = 3; lo = 0xA0
            case 0xE1...0xEC, 0xEE...0xEF: length = 3
            case 0xED: length = 3; hi = 0x9F
            case 0xF0: length = 4; lo = 0x90
            case 0xF1...0xF3: length = 4
            case 0xF4: length = 4; hi = 0x8F
            default:
                out.append(replacement)
                i += 1
                continue
            }
            var value = UInt32(b0) & (length == 2 ? 0x1F : length == 3 ? 0x0F : 0x07)
            var j = 1
            while j < length {
                guard i + j < n else { break }
                let b = bytes[i + j]
                let (l, h): (UInt8, UInt8) = j == 1 ? (lo, hi) : (0x80, 0xBF)
                guard b >= l, b <= h else { break }
                value = value << 6 | UInt32(b & 0x3F)
                j += 1
            }
            if j == length {
                out.append(Unicode.Scalar(value)!)
            } else {
                out.append(replacement)
            }
            i += j
        }
        return out
    }
}

extension String {
    /// The code points of the string, as Python iterates them.
    var codePoints: CodePoints { Array(unicodeScalars) }

    init(codePoints: CodePoints) {
        var view = String.UnicodeScalarView()
        view.append(contentsOf: codePoints)
        self.init(view)
    }
}
