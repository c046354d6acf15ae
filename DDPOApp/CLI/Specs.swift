import Foundation
import RLAlgorithms

// `--reward` and `--prompts` values, resolved before any model is loaded so that a typo costs nothing.

enum RewardSpec {
    static let names = ["jpeg_compressibility", "jpeg_incompressibility", "brightness", "darkness", "shape_size",
                        "color:NAME|#RRGGBB", "aesthetic:PATH", "http://HOST:PORT/PATH"]

    static let help = """
        jpeg_compressibility | jpeg_incompressibility | brightness | darkness
        | shape_size (how much of the picture the prompt's shape covers; shapes-grammar prompts)
        | color:NAME|#RRGGBB (closeness to a colour: red, green, blue, yellow, white, black, purple, orange)
        | aesthetic:PATH (a folder with CLIP ViT-L/14 and aesthetic-model.safetensors,
        or the head file with --clip_model DIR) | http(s)://HOST:PORT/PATH (docs/REWARD_SERVER.md)
        """

    /// The reward function `spec` names; `clipModel` is the CLIP folder for an aesthetic head file.
    static func resolve(_ spec: String, clipModel: String?, command: String) throws -> any RewardFunction {
        switch spec {
        case "jpeg_compressibility": return JPEGCompressibility()
        case "jpeg_incompressibility": return JPEGIncompressibility()
        case "brightness": return BrightnessReward()
        case "darkness": return BrightnessReward(inverted: true)
        case "shape_size": return ShapeSizeReward()
        default: break
        }
        if spec.hasPrefix("color:") {
            guard let reward = ColorReward(spec: String(spec.dropFirst("color:".count))) else {
                throw AppError("\(command): --reward \(spec): expected color:NAME (\(ColorReward.namedColors.keys.sorted().joined(separator: ", "))) or color:#RRGGBB")
            }
            return reward
        }
        if spec.hasPrefix("http://") || spec.hasPrefix("https://") {
            guard let url = URL(string: spec), url.host != nil else {
                throw AppError("\(command): --reward: '\(spec)' is not a valid URL (expected http://HOST:PORT/PATH)")
            }
            return HTTPReward(url: url)
        }
        if spec.hasPrefix("aesthetic:") {
            let path = String(spec.dropFirst("aesthetic:".count))
            guard !path.isEmpty else { throw AppError("\(command): --reward aesthetic: needs a path (aesthetic:PATH)") }
            var isDirectory: ObjCBool = false
            guard FileManager.default.fileExists(atPath: path, isDirectory: &isDirectory) else {
                throw AppError("\(command): --reward: \(path): no such file or folder (the aesthetic predictor's weights)")
            }
            let head: URL, clip: URL
            if isDirectory.boolValue {
                clip = URL(fileURLWithPath: clipModel ?? path)
                head = URL(fileURLWithPath: path).appendingPathComponent("aesthetic-model.safetensors")
            } else {
                guard let clipModel else {
                    throw AppError("\(command): --reward aesthetic:\(path) is the head file; name the CLIP ViT-L/14 folder with --clip_model DIR")
                }
                head = URL(fileURLWithPath: path)
                clip = URL(fileURLWithPath: clipModel)
            }
            do { return try AestheticScorer.load(clipDirectory: clip, headFile: head) }
            catch { throw AppError("\(command): --reward \(spec): \(error)") }
        }
        var message = "\(command): --reward: unknown reward '\(spec)'"
        if let suggestion = Suggestions.closest(to: spec, in: Array(names.prefix(5))) { message += "; did you mean '\(suggestion)'?" }
        throw AppError(message + "; expected one of " + names.joined(separator: ", "))
    }
}

enum PromptSpec {
    /// A built-in list name, a text file (one prompt a line) or a `.jsonl` file.
    static func resolve(_ spec: String, seed: UInt64, command: String) throws -> PromptSource {
        do {
            if let source = BuiltinModelPrompts.source(spec, seed: seed) { return source }
            if PromptSource.builtinNames.contains(spec) { return try PromptSource.builtin(spec, seed: seed) }
            if FileManager.default.fileExists(atPath: spec) {
                let url = URL(fileURLWithPath: spec)
                return url.pathExtension == "jsonl" ? try PromptSource.jsonLines(url, seed: seed) : try PromptSource.textFile(url, seed: seed)
            }
            if spec.contains("/") || spec.contains(".") {
                throw AppError("\(command): --prompts: \(spec): no such file")
            }
            let names = BuiltinModelPrompts.names + PromptSource.builtinNames
            var message = "\(command): --prompts: '\(spec)' is neither a built-in list nor a file"
            if let suggestion = Suggestions.closest(to: spec, in: names, allowance: 3) { message += "; did you mean '\(suggestion)'?" }
            throw AppError(message + "; built-in lists: " + names.joined(separator: ", "))
        } catch let error as AppError {
            throw error
        } catch {
            throw AppError("\(command): --prompts: \(error)")
        }
    }
}
