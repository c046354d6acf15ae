import Foundation

// "Did you mean …?" for unknown names (config keys, prompt lists, command-line options): the
// candidate nearest by Levenshtein distance over Unicode scalars, when it is plausibly a typo.

public enum Suggestions {
    /// Levenshtein distance over Unicode scalars.
    public static func editDistance(_ a: String, _ b: String) -> Int {
        let a = Array(a.unicodeScalars), b = Array(b.unicodeScalars)
        if a.isEmpty || b.isEmpty { return max(a.count, b.count) }
        var previous = Array(0...b.count)
        for i in 1...a.count {
            var current = [i] + Array(repeating: 0, count: b.count)
            for j in 1...b.count {
                current[j] = min(previous[j] + 1, current[j - 1] + 1, previous[j - 1] + (a[i - 1] == b[j - 1] ? 0 : 1))
            }
            previous = current
        }
        return previous[b.count]
    }

    /// The candidate nearest to `name` (compared lower-cased), if its distance is at most
    /// max(`allowance`, a third of the candidate's length).
    public static func closest(to name: String, in candidates: [String], allowance: Int = 2) -> String? {
        let lowered = name.lowercased()
        let scored = candidates.map { ($0, editDistance(lowered, $0)) }
        guard let best = scored.min(by: { $0.1 < $1.1 }) else { return nil }
        return best.1 <= max(allowance, best.0.count / 3) ? best.0 : nil
    }
}
