import Foundation
import RLAlgorithms

// The built-in model (models/shapes-sd, made by `ddpo pretrain`): where the binary finds it, and the
// prompts it was trained to draw.

enum BuiltinModelLocator {
    /// `$DDPO_BUILTIN_MODEL` alone when it is set (an explicit choice is not second-guessed), else
    /// DiffusionModels' search (./models/shapes-sd, then beside the executable).
    static func candidates(environment: [String: String] = ProcessInfo.processInfo.environment) -> [URL] {
        if let value = environment[BuiltinModel.environmentVariable], !value.isEmpty { return [URL(fileURLWithPath: value)] }
        return BuiltinModel.searchPaths(environment: environment)
    }

    static func directory() -> URL? {
        candidates().first { FileManager.default.fileExists(atPath: $0.appendingPathComponent("model_index.json").path) }
    }

    /// `--model DIR` (checked to be a diffusers folder), or the built-in model when `path` is nil.
    static func resolve(_ path: String?, command: String) throws -> URL {
        let folder: URL
        if let path {
            folder = URL(fileURLWithPath: (path as NSString).expandingTildeInPath)
        } else {
            guard let found = directory() else {
                throw AppError("\(command): no --model given and the built-in model was not found (looked in: \(candidates().map(\.path).joined(separator: ", "))); pass --model DIR or set \(BuiltinModel.environmentVariable)")
            }
            folder = found
        }
        guard FileManager.default.fileExists(atPath: folder.appendingPathComponent("model_index.json").path) else {
            throw AppError("\(command): --model: \(folder.path) is not a diffusers folder (no model_index.json)")
        }
        return folder
    }
}

/// The built-in model's prompt lists: `--prompts shapes`, every "a <colour> <shape>" caption it was
/// trained on, and `--prompts four_shapes`, the first four of them (the quick start's: few enough
/// prompts that each gets 8 samples an epoch for per-prompt statistics).
enum BuiltinModelPrompts {
    static let name = "shapes"
    static let fourName = "four_shapes"
    static var names: [String] { [name, fourName] }

    static var prompts: [String] {
        // Ordered so that any first few differ in both colour and shape (the report shows the first 4).
        let colors = ShapesDataset.colors, shapes = ShapeKind.allCases
        return (0..<colors.count * shapes.count).map { k in
            ShapesDataset.caption(color: colors[k % colors.count].name, shape: shapes[(k + k / colors.count) % shapes.count])
        }
    }

    /// The list `name` names (`shapes` or `four_shapes`); nil for any other name.
    static func source(_ name: String, seed: UInt64) -> PromptSource? {
        let list: [String]
        switch name {
        case Self.name: list = prompts
        case fourName: list = Array(prompts.prefix(4))
        default: return nil
        }
        return PromptSource(name: name, kind: .choice(list.map { PromptSample(prompt: $0) }), generator: PhiloxGenerator(seed: seed))
    }
}
