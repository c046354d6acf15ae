import Foundation
import RLAlgorithms

// The built-in model (models/shapes-sd, made by `ddpo pretrain`): where the binary finds it, and the
// prompts it was trained to draw.

enum BuiltinModelLocator {
    static let relativePath = "models/shapes-sd"

    /// Where it is looked for, in order: $DDPO_BUILTIN_MODEL, ./models/shapes-sd, then beside the
    /// executable as SwiftPM (`.build/<config>/ddpo` → `../../models/shapes-sd`) or an install
    /// (`bin/ddpo` → `../share/ddpo/models/shapes-sd`) lays it out.
    static func candidates() -> [URL] {
        var out: [URL] = []
        if let env = ProcessInfo.processInfo.environment["DDPO_BUILTIN_MODEL"], !env.isEmpty {
            out.append(URL(fileURLWithPath: env))
        }
        out.append(URL(fileURLWithPath: FileManager.default.currentDirectoryPath).appendingPathComponent(relativePath))
        let executable = URL(fileURLWithPath: CommandLine.arguments[0]).resolvingSymlinksInPath().deletingLastPathComponent()
        out.append(executable.appendingPathComponent("../../\(relativePath)").standardizedFileURL)
        out.append(executable.appendingPathComponent("../../../\(relativePath)").standardizedFileURL)
        out.append(executable.appendingPathComponent("../share/ddpo/\(relativePath)").standardizedFileURL)
        return out
    }

    static func directory() -> URL? {
        candidates().first { FileManager.default.fileExists(atPath: $0.appendingPathComponent("model_index.json").path) }
    }
}

/// `--prompts shapes`: captions the built-in model knows.
enum BuiltinModelPrompts {
    static let name = "shapes"
    static let prompts = [
        "a red circle", "a blue square", "a green triangle", "a yellow circle",
        "a purple square", "an orange triangle", "a white circle", "a blue triangle",
    ]

    static func source(seed: UInt64) -> PromptSource {
        PromptSource(name: name, kind: .choice(prompts.map { PromptSample(prompt: $0) }), generator: PhiloxGenerator(seed: seed))
    }
}
