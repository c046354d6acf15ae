import Foundation

// Prompt functions, as in ddpo-pytorch's prompts.py / TRL's `prompt_function`: each call gives a prompt and
// its metadata, chosen at random.
//
//     var prompts = try PromptSource.builtin("simple_animals", seed: 42)
//     let (prompt, metadata) = prompts.next()                     // ("dog", [:])
//     let saved = prompts.generator                               // checkpoint this (Codable)...
//     var resumed = try PromptSource.builtin("simple_animals", seed: 42); resumed.generator = saved  // ...and resume
//
//     var fromFile = try PromptSource.textFile(URL(fileURLWithPath: "prompts.txt"), seed: 0)
//     var withMeta = try PromptSource.jsonLines(URL(fileURLWithPath: "prompts.jsonl"), seed: 0)
//
// Randomness: a Philox4x32-10 stream (TensorKit's `PhiloxGenerator`). Each prompt uses exactly one Philox
// block (offset + 1): its first 32-bit word picks the entry (for `nouns_activities`, the first word the noun
// and the second the activity) as floor(word · n / 2^32), which is uniform to within n / 2^32. So the
// generator's (seed, offset) is the whole state: saving it resumes the sequence exactly. (The references use
// Python's `random.choice` / `np.random.choice`; the sequences differ, the distribution is the same.)

/// A prompt and its metadata (a JSON object; empty for the built-in lists).
public struct PromptSample: Sendable, Hashable {
    public var prompt: String
    public var metadata: PromptMetadata

    public init(prompt: String, metadata: PromptMetadata = [:]) {
        self.prompt = prompt
        self.metadata = metadata
    }
}

/// A random prompt source. Value type: copy it to branch; keep `generator` to resume.
public struct PromptSource: Sendable {
    public enum Kind: Sendable, Equatable {
        /// A uniform choice from a list.
        case choice([PromptSample])
        /// ddpo-pytorch's `nouns_activities`: `f"{a/an noun} {activity}"`.
        case nounsActivities(nouns: [String], activities: [String])
    }

    /// Where the prompts come from, for logs (`simple_animals`, a file path).
    public let name: String
    public let kind: Kind
    /// The random stream; its (seed, offset) is the source's whole state.
    public var generator: PhiloxGenerator

    public init(name: String, kind: Kind, generator: PhiloxGenerator) {
        switch kind {
        case .choice(let list): precondition(!list.isEmpty, "PromptSource \(name): no prompts")
        case let .nounsActivities(nouns, activities):
            precondition(!nouns.isEmpty && !activities.isEmpty, "PromptSource \(name): no nouns or no activities")
        }
        self.name = name
        self.kind = kind
        self.generator = generator
    }

    /// The next prompt and its metadata.
    public mutating func next() -> (prompt: String, metadata: PromptMetadata) {
        let offset = generator.reserve(4)  // one Philox block
        let words = Philox.words(seed: generator.seed, index: offset)
        func pick(_ word: UInt32, _ n: Int) -> Int { Int((UInt64(word) * UInt64(n)) >> 32) }
        switch kind {
        case .choice(let list):
            let s = list[pick(words.0, list.count)]
            return (s.prompt, s.metadata)
        case let .nounsActivities(nouns, activities):
            let noun = nouns[pick(words.0, nouns.count)]
            return ("\(Self.withArticle(noun)) \(activities[pick(words.1, activities.count)])", [:])
        }
    }

    /// `count` prompts (one sample batch).
    public mutating func batch(_ count: Int) -> [PromptSample] {
        (0..<count).map { _ in let (p, m) = next(); return PromptSample(prompt: p, metadata: m) }
    }

    /// inflect's `engine().a(word)` for ordinary words: "an" before a vowel letter, else "a". (inflect also
    /// knows exceptions such as "an hour", "a unicorn"; none of the built-in nouns is one.)
    public static func withArticle(_ noun: String) -> String {
        guard let first = noun.lowercased().first else { return noun }
        return ("aeiou".contains(first) ? "an " : "a ") + noun
    }

    // MARK: - built-in sources

    /// The built-in names, in the order they are listed in errors.
    public static let builtinNames = ["simple_animals", "trl_animals", "imagenet_animals", "nouns_activities"]

    /// A built-in source by name:
    /// - `simple_animals`: ddpo-pytorch's `assets/simple_animals.txt` (45 animals);
    /// - `trl_animals`: the 27 animals of TRL's examples/scripts/ddpo.py;
    /// - `imagenet_animals`: ImageNet classes 0–397 as ddpo-pytorch's `assets/imagenet_classes.txt` lines
    ///   (e.g. "tench, Tinca tinca");
    /// - `nouns_activities`: ddpo-pytorch's `nouns_activities` with its dgx config's files: a noun from
    ///   `simple_animals.txt` with inflect's article and an activity from `assets/activities.txt`
    ///   ("a dog riding a bike", "an ant playing chess").
    public static func builtin(_ name: String, seed: UInt64 = 0) throws -> PromptSource {
        let generator = PhiloxGenerator(seed: seed)
        func list(_ items: [String]) -> Kind { .choice(items.map { PromptSample(prompt: $0) }) }
        switch name {
        case "simple_animals": return PromptSource(name: name, kind: list(BuiltinPrompts.simpleAnimals), generator: generator)
        case "trl_animals": return PromptSource(name: name, kind: list(BuiltinPrompts.trlAnimals), generator: generator)
        case "imagenet_animals": return PromptSource(name: name, kind: list(BuiltinPrompts.imagenetAnimals), generator: generator)
        case "nouns_activities":
            return PromptSource(name: name, kind: .nounsActivities(nouns: BuiltinPrompts.simpleAnimals,
                                                                   activities: BuiltinPrompts.activities), generator: generator)
        default:
            throw PromptSourceError.unknownBuiltin(name: name, available: builtinNames,
                                                   suggestion: closestName(to: name, in: builtinNames))
        }
    }

    // MARK: - files

    /// One prompt per line; lines are trimmed (as ddpo-pytorch's `line.strip()`), blank lines skipped.
    public static func textFile(_ url: URL, seed: UInt64 = 0) throws -> PromptSource {
        let lines = try readLines(url).map { $0.text.trimmingCharacters(in: .whitespacesAndNewlines) }.filter { !$0.isEmpty }
        guard !lines.isEmpty else { throw PromptSourceError.file(path: url.path, line: nil, message: "no prompts (the file is empty or blank)") }
        return PromptSource(name: url.path, kind: .choice(lines.map { PromptSample(prompt: $0) }), generator: PhiloxGenerator(seed: seed))
    }

    /// JSON lines: each non-blank line `{"prompt": "...", "metadata": {...}}` (`metadata` optional, an object).
    public static func jsonLines(_ url: URL, seed: UInt64 = 0) throws -> PromptSource {
        var samples: [PromptSample] = []
        for (number, text) in try readLines(url) {
            let trimmed = text.trimmingCharacters(in: .whitespacesAndNewlines)
            if trimmed.isEmpty { continue }
            func fail(_ message: String) -> PromptSourceError { .file(path: url.path, line: number, message: message) }
            let value: JSONValue
            do { value = try JSONValue(parsing: Data(trimmed.utf8)) } catch { throw fail("not valid JSON") }
            guard let object = value.objectValue else { throw fail("expected a JSON object {\"prompt\": ..., \"metadata\": {...}}") }
            guard let prompt = object["prompt"]?.stringValue else { throw fail("missing \"prompt\" string") }
            if let extra = object.keys.first(where: { $0 != "prompt" && $0 != "metadata" }) {
                throw fail("unknown field \"\(extra)\" (expected \"prompt\" and \"metadata\")")
            }
            var metadata: PromptMetadata = [:]
            if let m = object["metadata"] {
                guard let o = m.objectValue else { throw fail("\"metadata\" must be a JSON object") }
                metadata = o
            }
            samples.append(PromptSample(prompt: prompt, metadata: metadata))
        }
        guard !samples.isEmpty else { throw PromptSourceError.file(path: url.path, line: nil, message: "no prompts (the file is empty or blank)") }
        return PromptSource(name: url.path, kind: .choice(samples), generator: PhiloxGenerator(seed: seed))
    }

    /// (1-based line number, text) of a UTF-8 file.
    static func readLines(_ url: URL) throws -> [(number: Int, text: String)] {
        let data: Data
        do { data = try Data(contentsOf: url) } catch {
            throw PromptSourceError.file(path: url.path, line: nil, message: "cannot read: \(error.localizedDescription)")
        }
        guard let text = String(data: data, encoding: .utf8) else {
            throw PromptSourceError.file(path: url.path, line: nil, message: "not UTF-8 text")
        }
        // Split on the scalar "\n" ("\r\n" is a single Character in Swift); a trailing "\r" is trimmed later.
        var lines = text.unicodeScalars.split(separator: "\n", omittingEmptySubsequences: false).map { String(String.UnicodeScalarView($0)) }
        if lines.last == "" { lines.removeLast() }
        return lines.enumerated().map { ($0.offset + 1, $0.element) }
    }

    /// The candidate with the smallest edit distance, if it is close enough to be a likely typo.
    static func closestName(to name: String, in candidates: [String]) -> String? {
        Suggestions.closest(to: name, in: candidates, allowance: 3)
    }
}

/// Errors of prompt sources; messages name the file and line, or the unknown name with the choices.
public enum PromptSourceError: Error, LocalizedError, CustomStringConvertible, Equatable, Sendable {
    case unknownBuiltin(name: String, available: [String], suggestion: String?)
    case file(path: String, line: Int?, message: String)

    public var description: String {
        switch self {
        case let .unknownBuiltin(name, available, suggestion):
            return "unknown prompt source \"\(name)\"" + (suggestion.map { " (did you mean \"\($0)\"?)" } ?? "")
                + "; built-in sources: \(available.joined(separator: ", ")); or give a .txt file (one prompt a line) or a .jsonl file"
        case let .file(path, line, message):
            return "\(path)\(line.map { ":\($0)" } ?? ""): \(message)"
        }
    }

    public var errorDescription: String? { description }
}

/// The built-in prompt lists.
public enum BuiltinPrompts {
    /// ddpo-pytorch `assets/simple_animals.txt` (45 lines; also its former `common_animals.txt`).
    public static let simpleAnimals = [
        "cat", "dog", "horse", "monkey", "rabbit", "zebra", "spider", "bird", "sheep", "deer", "cow", "goat", "lion",
        "tiger", "bear", "raccoon", "fox", "wolf", "lizard", "beetle", "ant", "butterfly", "fish", "shark", "whale",
        "dolphin", "squirrel", "mouse", "rat", "snake", "turtle", "frog", "chicken", "duck", "goose", "bee", "pig",
        "turkey", "fly", "llama", "camel", "bat", "gorilla", "hedgehog", "kangaroo",
    ]

    /// The `animals` list of TRL's examples/scripts/ddpo.py (v0.21.0), 27 entries.
    public static let trlAnimals = [
        "cat", "dog", "horse", "monkey", "rabbit", "zebra", "spider", "bird", "sheep", "deer", "cow", "goat", "lion",
        "frog", "chicken", "duck", "goose", "bee", "pig", "turkey", "fly", "llama", "camel", "bat", "gorilla",
        "hedgehog", "kangaroo",
    ]

    /// ddpo-pytorch `assets/activities.txt` (3 lines).
    public static let activities = ["washing the dishes", "riding a bike", "playing chess"]
}
