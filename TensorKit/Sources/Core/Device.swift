/// Where a tensor's storage lives.
public enum Device: Hashable, Sendable, CustomStringConvertible {
    case cpu
    case cuda(Int)

    public var description: String {
        switch self {
        case .cpu: return "cpu"
        case .cuda(let index): return "cuda:\(index)"
        }
    }

    /// Parses "cpu", "cuda", "cuda:1".
    public init?(parsing text: String) {
        if text == "cpu" { self = .cpu; return }
        if text == "cuda" { self = .cuda(0); return }
        if text.hasPrefix("cuda:"), let index = Int(text.dropFirst(5)), index >= 0 { self = .cuda(index); return }
        return nil
    }
}
