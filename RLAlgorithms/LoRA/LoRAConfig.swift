import Foundation

// What to adapt and how: rank, alpha, which layers (by module path), and the initialisation.
// The defaults are TRL's DDPO pipeline (`LoraConfig(r=4, lora_alpha=4, init_lora_weights="gaussian",
// target_modules=["to_k", "to_q", "to_v", "to_out.0"])`): every attention projection of the UNet.
//
//   var config = LoRAConfig()                                  // rank 4, alpha 4, Gaussian
//   config.targetModules += ["conv1"]                          // also every resnet's first conv
//   config.targetRegex = #"down_blocks\.\d+\.attentions\.\d+\.proj_in"#   // and these, by regex
//   let lora = try LoRANetwork.inject(into: unet, config: config, seed: 0)
//
// Target matching follows PEFT: a name in `targetModules` matches a module whose dotted path equals
// it or ends with "." + name ("to_q" matches "…attn1.to_q", "to_out.0" matches "…attn1.to_out.0");
// `targetRegex` must match a whole path (PEFT's string form, `re.fullmatch`). A module is adapted
// when it matches any of them; a name or regex that matches no Linear/Conv2d is an error naming it.

public struct LoRAConfig: Codable, Equatable, Sendable {
    /// The rank r of the update up · down.
    public var rank: Int
    /// The update is scaled by alpha / r.
    public var alpha: Double
    /// Module names matched against the end of module paths (PEFT's list form of `target_modules`).
    public var targetModules: [String]
    /// A regular expression that must match a whole module path (PEFT's string form).
    public var targetRegex: String?
    /// How the down projection is drawn.
    public var initialization: LoRAInitialization

    public init(rank: Int = 4, alpha: Double = 4, targetModules: [String] = ["to_q", "to_k", "to_v", "to_out.0"],
                targetRegex: String? = nil, initialization: LoRAInitialization = .gaussian) {
        self.rank = rank
        self.alpha = alpha
        self.targetModules = targetModules
        self.targetRegex = targetRegex
        self.initialization = initialization
    }

    /// alpha / r.
    public var scale: Double { alpha / Double(rank) }

    /// Throws when rank, alpha or the targets cannot work (before anything is changed).
    public func validate() throws {
        guard rank >= 1 else { throw LoRAError(field: "rank", "must be at least 1, got \(rank)") }
        guard alpha.isFinite && alpha > 0 else { throw LoRAError(field: "alpha", "must be a positive number, got \(alpha)") }
        guard !targetModules.isEmpty || targetRegex != nil else {
            throw LoRAError(field: "targetModules", "no target modules and no targetRegex: nothing would be adapted")
        }
        if let empty = targetModules.first(where: { $0.isEmpty }) {
            throw LoRAError(field: "targetModules", "contains an empty name \"\(empty)\"")
        }
        if let pattern = targetRegex { _ = try LoRAConfig.compile(pattern) }
    }

    static func compile(_ pattern: String) throws -> NSRegularExpression {
        do { return try NSRegularExpression(pattern: pattern) }
        catch { throw LoRAError(field: "targetRegex", "\"\(pattern)\" is not a valid regular expression") }
    }

    /// PEFT's list rule: the path equals `name` or ends with "." + name.
    static func nameMatches(_ name: String, path: String) -> Bool {
        path == name || path.hasSuffix("." + name)
    }

    /// PEFT's string rule: the regex matches the whole path.
    static func regexMatches(_ regex: NSRegularExpression, path: String) -> Bool {
        let range = NSRange(path.startIndex..<path.endIndex, in: path)
        guard let match = regex.firstMatch(in: path, options: [.anchored], range: range) else { return false }
        return match.range == range
    }
}

/// A LoRA problem: a bad config field, a pattern matching nothing, an unsupported layer, or a LoRA
/// file that does not fit the model. The message names the file, key, module path or field.
public struct LoRAError: Error, Equatable, CustomStringConvertible, LocalizedError {
    /// The LoRA file concerned, if any.
    public var file: String?
    /// The tensor key, module path, pattern or config field concerned.
    public var subject: String?
    public var message: String

    public init(file: String? = nil, key: String? = nil, _ message: String) {
        self.file = file
        self.subject = key
        self.message = message
    }

    public init(field: String, _ message: String) {
        self.init(key: field, message)
    }

    public var description: String {
        [file, subject.map { "'\($0)'" }, message].compactMap { $0 }.joined(separator: ": ")
    }

    public var errorDescription: String? { description }
}
