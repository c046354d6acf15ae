import Foundation
import RLAlgorithms

// Command-line parsing shared by the commands, in the spelling TRL's scripts accept (HfArgumentParser):
//
//   --name value   --name=value                      values
//   --flag   --flag=true|false   --flag True|False     booleans (yes/no/t/f/y/n/1/0, any case)
//   --ddpo_config.name=value                           TRL's dataclass prefix, for config fields
//   --negative-prompt / --negative_prompt              dashes and underscores are the same
//   --                                                 the rest are positional
//
// Unknown options are errors with the closest known name as a suggestion.

/// One option a command accepts.
struct OptionSpec {
    enum Kind { case value, bool, repeated }
    /// The spelling shown in help (dashes or underscores as the command documents it).
    var name: String
    var kind: Kind
    /// Placeholder for the value in help, e.g. "DIR".
    var valueName: String = "VALUE"
    var help: String = ""

    /// The name with dashes as underscores: the key options are matched and stored under.
    var key: String { OptionSpec.key(name) }
    static func key(_ name: String) -> String { name.replacingOccurrences(of: "-", with: "_") }
}

/// What the command line said: option values by key (`OptionSpec.key`), in the order given.
struct ParsedArguments {
    /// Every occurrence: (key, raw value text; booleans as "true"/"false").
    var occurrences: [(key: String, value: String)] = []
    var positionals: [String] = []
    var help = false

    /// The last value given for `key`, if any.
    func value(_ key: String) -> String? { occurrences.last { $0.key == OptionSpec.key(key) }?.value }
    /// Every value given for `key`, in order.
    func values(_ key: String) -> [String] { occurrences.filter { $0.key == OptionSpec.key(key) }.map(\.value) }
    func has(_ key: String) -> Bool { value(key) != nil }
    /// The value of an option the command cannot run without; "<command>: --<name> <VALUE> is required" if absent.
    func required(_ key: String, _ valueName: String, command: String) throws -> String {
        guard let value = value(key) else { throw AppError("\(command): --\(key) \(valueName) is required") }
        return value
    }
    /// A boolean option: nil when absent.
    func bool(_ key: String) -> Bool? { value(key).map { $0 == "true" } }
}

enum ArgumentParser {
    /// Parses `arguments` against `specs`. `command` names the command in messages ("ddpo train").
    /// `parse`, then for `--help` prints `usage` and returns nil (the command has nothing more to do).
    static func parseOrShowHelp(_ arguments: [String], specs: [OptionSpec], command: String, usage: String,
                                allowPositionals: Bool = false) throws -> ParsedArguments? {
        let parsed = try parse(arguments, specs: specs, command: command, allowPositionals: allowPositionals)
        if parsed.help {
            print(usage)
            return nil
        }
        return parsed
    }

    static func parse(_ arguments: [String], specs: [OptionSpec], command: String,
                      allowPositionals: Bool = false) throws -> ParsedArguments {
        let byKey = Dictionary(specs.map { ($0.key, $0) }, uniquingKeysWith: { first, _ in first })
        var parsed = ParsedArguments()
        var i = 0
        while i < arguments.count {
            let argument = arguments[i]
            i += 1
            if argument == "--" {
                parsed.positionals.append(contentsOf: arguments[i...])
                break
            }
            if argument == "-h" || argument == "--help" {
                parsed.help = true
                continue
            }
            guard argument.hasPrefix("--"), argument.count > 2 else {
                if argument.hasPrefix("-"), argument.count > 1, Double(argument) == nil {
                    throw AppError("\(command): unknown option '\(argument)' (options start with --; see \(command) --help)")
                }
                guard allowPositionals else {
                    throw AppError("\(command): unexpected argument '\(argument)' (see \(command) --help)")
                }
                parsed.positionals.append(argument)
                continue
            }
            var name = String(argument.dropFirst(2))
            var inline: String?
            if let eq = name.firstIndex(of: "=") {
                inline = String(name[name.index(after: eq)...])
                name = String(name[..<eq])
            }
            for prefix in ["ddpo_config.", "ddpo-config."] where name.hasPrefix(prefix) { name = String(name.dropFirst(prefix.count)) }
            let key = OptionSpec.key(name)
            guard let spec = byKey[key] else {
                var message = "\(command): unknown option '--\(name)'"
                if let suggestion = closest(to: key, in: specs.map(\.key)).flatMap({ k in specs.first { $0.key == k } }) {
                    message += "; did you mean '--\(suggestion.name)'?"
                }
                throw AppError(message + " (see \(command) --help)")
            }
            switch spec.kind {
            case .bool:
                if let inline {
                    guard let value = parseBool(inline) else {
                        throw AppError("\(command): --\(spec.name): expected true or false, got '\(inline)'")
                    }
                    parsed.occurrences.append((key, value ? "true" : "false"))
                } else if i < arguments.count, let value = parseBool(arguments[i]) {
                    i += 1
                    parsed.occurrences.append((key, value ? "true" : "false"))
                } else {
                    parsed.occurrences.append((key, "true"))
                }
            case .value, .repeated:
                if let inline {
                    parsed.occurrences.append((key, inline))
                } else {
                    guard i < arguments.count, !(arguments[i].hasPrefix("--") && arguments[i].count > 2) else {
                        throw AppError("\(command): --\(spec.name) needs a value (\(spec.valueName))")
                    }
                    parsed.occurrences.append((key, arguments[i]))
                    i += 1
                }
            }
        }
        for spec in specs where spec.kind != .repeated {
            let given = parsed.values(spec.key)
            if given.count > 1, Set(given).count > 1 {
                // Later wins, as argparse does; say so, since it is usually a mistake in a script.
                FileHandle.standardError.write(Data("\(command): --\(spec.name) given \(given.count) times; using the last ('\(given.last!)')\n".utf8))
            }
        }
        return parsed
    }

    /// HfArgumentParser's `string_to_bool`.
    static func parseBool(_ text: String) -> Bool? {
        switch text.lowercased() {
        case "true", "t", "yes", "y", "1": return true
        case "false", "f", "no", "n", "0": return false
        default: return nil
        }
    }

    static func parseInt(_ text: String, option: String, command: String) throws -> Int {
        guard let value = Int(text.trimmingCharacters(in: .whitespaces)) else {
            throw AppError("\(command): --\(option): expected an integer, got '\(text)'")
        }
        return value
    }

    static func parseDouble(_ text: String, option: String, command: String) throws -> Double {
        guard let value = Double(text.trimmingCharacters(in: .whitespaces)), value.isFinite else {
            throw AppError("\(command): --\(option): expected a number, got '\(text)'")
        }
        return value
    }

    /// The candidate nearest to `name` by edit distance, when it is plausibly a typo of it.
    static func closest(to name: String, in candidates: [String]) -> String? {
        if let best = Suggestions.closest(to: name, in: candidates) { return best }
        // A prefix or a part of a longer name ("--batch_size" for "--sample_batch_size").
        return candidates.first { $0.hasSuffix(name) || $0.hasPrefix(name) }
    }

    /// Help lines for `specs`: "  --name VALUE   help".
    static func helpLines(_ specs: [OptionSpec]) -> String {
        let shown = specs.map { spec -> (String, String) in
            let head = "--\(spec.name)" + (spec.kind == .bool ? "" : " \(spec.valueName)")
            return (head, spec.help)
        }
        let width = min(34, (shown.map(\.0.count).max() ?? 0) + 2)
        let indent = String(repeating: " ", count: width + 2)
        return shown.map { head, help in
            let pad = head.count < width ? String(repeating: " ", count: width - head.count) : "  "
            return "  " + head + pad + help.replacingOccurrences(of: "\n", with: "\n" + indent)
        }.joined(separator: "\n")
    }
}
