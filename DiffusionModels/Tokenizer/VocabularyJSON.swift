/// A parser for vocab.json, a flat JSON object from token strings to integer ids. Faster than
/// JSONDecoder for 49k entries, and it keeps each token as its exact UTF-8 bytes: Swift `String`
/// keys would merge canonically equivalent tokens that Python keeps apart.
struct VocabularyJSON {
    struct ParseError: Error {
        let offset: Int
        let message: String
    }

    /// The entries in file order (a repeated key keeps its last id in Python's `json.load`).
    static func parse(_ bytes: [UInt8]) throws -> [(token: [UInt8], id: Int)] {
        var parser = VocabularyJSON(bytes: bytes)
        return try parser.object()
    }

    private let bytes: [UInt8]
    private var i = 0

    private init(bytes: [UInt8]) { self.bytes = bytes }

    private func fail(_ message: String) -> ParseError { ParseError(offset: i, message: message) }

    private mutating func skipSpace() {
        while i < bytes.count, bytes[i] == 0x20 || bytes[i] == 0x09 || bytes[i] == 0x0A || bytes[i] == 0x0D { i += 1 }
    }

    private mutating func expect(_ byte: UInt8, _ what: String) throws {
        skipSpace()
        guard i < bytes.count, bytes[i] == byte else { throw fail("expected \(what)") }
        i += 1
    }

    private mutating func object() throws -> [(token: [UInt8], id: Int)] {
        var out: [(token: [UInt8], id: Int)] = []
        out.reserveCapacity(bytes.count / 16)
        try expect(UInt8(ascii: "{"), "a JSON object mapping token strings to integer ids")
        skipSpace()
        if i < bytes.count, bytes[i] == UInt8(ascii: "}") {
            i += 1
        } else {
            while true {
                skipSpace()
                let key = try string()
                try expect(UInt8(ascii: ":"), "':' after a key")
                skipSpace()
                out.append((key, try integer(for: key)))
                skipSpace()
                guard i < bytes.count else { throw fail("unterminated object") }
                if bytes[i] == UInt8(ascii: ",") { i += 1; continue }
                if bytes[i] == UInt8(ascii: "}") { i += 1; break }
                throw fail("expected ',' or '}'")
            }
        }
        skipSpace()
        guard i == bytes.count else { throw fail("unexpected content after the object") }
        return out
    }

    private mutating func integer(for key: [UInt8]) throws -> Int {
        let start = i
        if i < bytes.count, bytes[i] == UInt8(ascii: "-") { i += 1 }
        var value = 0
        var digits = 0
        while i < bytes.count, (0x30...0x39).contains(bytes[i]) {
            let (m, o1) = value.multipliedReportingOverflow(by: 10)
            let (s, o2) = m.addingReportingOverflow(Int(bytes[i] - 0x30))
            guard !o1, !o2 else { throw fail("id of \"\(String(decoding: key, as: UTF8.self))\" is too large") }
            value = s
            digits += 1
            i += 1
        }
        let next = i < bytes.count ? bytes[i] : 0
        guard digits > 0, next != UInt8(ascii: "."), next != UInt8(ascii: "e"), next != UInt8(ascii: "E") else {
            i = start
            throw fail("the value of \"\(String(decoding: key, as: UTF8.self))\" is not an integer id")
        }
        return bytes[start] == UInt8(ascii: "-") ? -value : value
    }

    /// A JSON string as UTF-8 bytes (the file was checked to be valid UTF-8 before).
    private mutating func string() throws -> [UInt8] {
        guard i < bytes.count, bytes[i] == UInt8(ascii: "\"") else { throw fail("expected a string key") }
        i += 1
        var out: [UInt8] = []
        while true {
            guard i < bytes.count else { throw fail("unterminated string") }
            let b = bytes[i]
            i += 1
            switch b {
            case UInt8(ascii: "\""):
                return out
            case UInt8(ascii: "\\"):
                guard i < bytes.count else { throw fail("unterminated escape") }
                let e = bytes[i]
                i += 1
                switch e {
                case UInt8(ascii: "\""), UInt8(ascii: "\\"), UInt8(ascii: "/"): out.append(e)
                case UInt8(ascii: "b"): out.append(0x08)
                case UInt8(ascii: "f"): out.append(0x0C)
                case UInt8(ascii: "n"): out.append(0x0A)
                case UInt8(ascii: "r"): out.append(0x0D)
                case UInt8(ascii: "t"): out.append(0x09)
                case UInt8(ascii: "u"):
                    var code = try hex4()
                    if (0xD800...0xDBFF).contains(code) {
                        guard i + 1 < bytes.count, bytes[i] == UInt8(ascii: "\\"), bytes[i + 1] == UInt8(ascii: "u") else {
                            throw fail("unpaired surrogate escape")
                        }
                        i += 2
                        let low = try hex4()
                        guard (0xDC00...0xDFFF).contains(low) else { throw fail("unpaired surrogate escape") }
                        code = 0x10000 + ((code - 0xD800) << 10) + (low - 0xDC00)
                    } else if (0xDC00...0xDFFF).contains(code) {
                        throw fail("unpaired surrogate escape")
                    }
                    UTF8.encode(Unicode.Scalar(code)!) { out.append($0) }
                default:
                    throw fail("invalid escape")
                }
            case 0x00..<0x20:
                throw fail("control character in a string")
            default:
                out.append(b)
            }
        }
    }

    private mutating func hex4() throws -> UInt32 {
        guard i + 4 <= bytes.count else { throw fail("truncated \\u escape") }
        var v: UInt32 = 0
        for _ in 0..<4 {
            let b = bytes[i]
            let d: UInt8
            switch b {
            case 0x30...0x39: d = b - 0x30
            case 0x41...0x46: d = b - 0x41 + 10
            case 0x61...0x66: d = b - 0x61 + 10
            default: throw fail("invalid \\u escape")
            }
            v = v << 4 | UInt32(d)
            i += 1
        }
        return v
    }
}
