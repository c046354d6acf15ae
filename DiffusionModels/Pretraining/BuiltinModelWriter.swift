import Foundation
import TensorKit

// Writing a trained text encoder, VAE and UNet (plus tokenizer and scheduler) as a diffusers
// Stable Diffusion folder that `StableDiffusionPipeline.load` and diffusers'
// `StableDiffusionPipeline.from_pretrained` both read:
//
//   model_index.json
//   scheduler/scheduler_config.json            DDIMScheduler
//   text_encoder/config.json + model.safetensors
//   tokenizer/vocab.json, merges.txt, tokenizer_config.json, special_tokens_map.json
//   unet/config.json + diffusion_pytorch_model.safetensors
//   vae/config.json + diffusion_pytorch_model.safetensors
//
// Weights are stored in `dtype` (float16 for the shipped model) under the plain file names, so no
// `variant` is needed to load them. The folder is built next to the destination under a temporary
// name and renamed into place (an existing folder is replaced only after the new one is complete),
// so a failed run never leaves half a folder.
//
// `BuiltinModel.defaultDirectory()` finds the shipped folder (models/shapes-sd).

public enum BuiltinModelWriter {
    public static func write(tokenizer: ShapesTokenizer, textEncoder: CLIPTextModel, vae: AutoencoderKL,
                             vaeConfig: AutoencoderKLConfig, unet: UNet2DConditionModel, scheduler: DDIMSchedulerConfig,
                             to directory: URL, dtype: DType = .float16,
                             extraFiles: [String: Data] = [:]) throws {
        let fm = FileManager.default
        let parent = directory.deletingLastPathComponent()
        try fm.createDirectory(at: parent, withIntermediateDirectories: true)
        let staging = parent.appendingPathComponent(".\(directory.lastPathComponent).tmp-\(UUID().uuidString)")
        defer { try? fm.removeItem(at: staging) }
        try fm.createDirectory(at: staging, withIntermediateDirectories: true)

        func weights(_ module: Module) -> [String: Tensor] {
            var state: [String: Tensor] = [:]
            for (key, tensor) in module.namedParameters() where !key.contains(".deltas.") {
                let host = tensor.copied(to: .cpu)
                state[key] = host.dtype == dtype ? host : host.to(dtype)
            }
            return state
        }
        func folder(_ name: String) throws -> URL {
            let url = staging.appendingPathComponent(name)
            try fm.createDirectory(at: url, withIntermediateDirectories: true)
            return url
        }
        func writeJSON(_ object: [String: Any], to url: URL) throws {
            try JSONSerialization.data(withJSONObject: object, options: [.prettyPrinted, .sortedKeys]).write(to: url)
        }
        func encoded<T: Encodable>(_ value: T) throws -> [String: Any] {
            try JSONSerialization.jsonObject(with: JSONEncoder().encode(value)) as? [String: Any] ?? [:]
        }
        let version = "0.35.2"

        try tokenizer.write(to: try folder("tokenizer"))

        let text = try folder("text_encoder")
        var textConfig = try encoded(textEncoder.config)
        textConfig["architectures"] = ["CLIPTextModel"]
        textConfig["torch_dtype"] = dtype == .float16 ? "float16" : "float32"
        textConfig["initializer_factor"] = 1.0
        textConfig["initializer_range"] = 0.02
        try writeJSON(textConfig, to: text.appendingPathComponent("config.json"))
        try saveSafeTensors(weights(textEncoder), metadata: ["format": "pt"], to: text.appendingPathComponent("model.safetensors").path)

        let vaeFolder = try folder("vae")
        var vaeJSON = try encoded(vaeConfig)
        vaeJSON["_class_name"] = "AutoencoderKL"
        vaeJSON["_diffusers_version"] = version
        try writeJSON(vaeJSON, to: vaeFolder.appendingPathComponent("config.json"))
        try saveSafeTensors(weights(vae), metadata: ["format": "pt"],
                            to: vaeFolder.appendingPathComponent("diffusion_pytorch_model.safetensors").path)

        let unetFolder = try folder("unet")
        var unetJSON = try encoded(unet.config)
        unetJSON["_class_name"] = "UNet2DConditionModel"
        unetJSON["_diffusers_version"] = version
        try writeJSON(unetJSON, to: unetFolder.appendingPathComponent("config.json"))
        try saveSafeTensors(weights(unet), metadata: ["format": "pt"],
                            to: unetFolder.appendingPathComponent("diffusion_pytorch_model.safetensors").path)

        let schedulerFolder = try folder("scheduler")
        try writeJSON(try encoded(scheduler), to: schedulerFolder.appendingPathComponent("scheduler_config.json"))

        try writeJSON([
            "_class_name": "StableDiffusionPipeline", "_diffusers_version": version,
            "feature_extractor": [NSNull(), NSNull()], "image_encoder": [NSNull(), NSNull()],
            "requires_safety_checker": false, "safety_checker": [NSNull(), NSNull()],
            "scheduler": ["diffusers", "DDIMScheduler"], "text_encoder": ["transformers", "CLIPTextModel"],
            "tokenizer": ["transformers", "CLIPTokenizer"], "unet": ["diffusers", "UNet2DConditionModel"],
            "vae": ["diffusers", "AutoencoderKL"],
        ], to: staging.appendingPathComponent("model_index.json"))
        for (name, data) in extraFiles { try data.write(to: staging.appendingPathComponent(name)) }

        try replaceAtomically(directory, with: staging)
    }

    /// Moves `staging` to `destination`; an existing destination is moved aside first and removed
    /// only once the new folder is in place.
    public static func replaceAtomically(_ destination: URL, with staging: URL) throws {
        let fm = FileManager.default
        var old: URL?
        if fm.fileExists(atPath: destination.path) {
            let aside = destination.deletingLastPathComponent()
                .appendingPathComponent(".\(destination.lastPathComponent).old-\(UUID().uuidString)")
            guard rename(destination.path, aside.path) == 0 else {
                throw PretrainError("cannot replace \(destination.path) (rename failed, errno \(errno))")
            }
            old = aside
        }
        guard rename(staging.path, destination.path) == 0 else {
            let code = errno
            if let old { _ = rename(old.path, destination.path) }
            throw PretrainError("cannot write \(destination.path) (rename failed, errno \(code))")
        }
        if let old { try? fm.removeItem(at: old) }
    }
}

/// Where the shipped built-in model (models/shapes-sd) is.
public enum BuiltinModel {
    /// The folder name of the shipped model.
    public static let name = "shapes-sd"
    /// The environment variable that overrides the search.
    public static let environmentVariable = "DDPO_BUILTIN_MODEL"

    /// The folders searched, in order: `$DDPO_BUILTIN_MODEL`; `./models/shapes-sd`; then, for the
    /// executable and each folder above it (up to 5 levels, symlinks resolved), `models/shapes-sd`
    /// and `share/ddpo/models/shapes-sd` (so `.build/release/ddpo` in a checkout and an installed
    /// `<prefix>/bin/ddpo` both find it).
    public static func searchPaths(environment: [String: String] = ProcessInfo.processInfo.environment,
                                   currentDirectory: String = FileManager.default.currentDirectoryPath,
                                   executable: URL? = Bundle.main.executableURL) -> [URL] {
        var paths: [URL] = []
        if let value = environment[environmentVariable], !value.isEmpty { paths.append(URL(fileURLWithPath: value)) }
        paths.append(URL(fileURLWithPath: currentDirectory).appendingPathComponent("models/\(name)"))
        if let executable {
            var folder = executable.resolvingSymlinksInPath().deletingLastPathComponent()
            for _ in 0..<6 {
                paths.append(folder.appendingPathComponent("models/\(name)"))
                paths.append(folder.appendingPathComponent("share/ddpo/models/\(name)"))
                let up = folder.deletingLastPathComponent()
                if up.path == folder.path { break }
                folder = up
            }
        }
        return paths
    }

    /// The first search path holding a `model_index.json`, or nil.
    public static func defaultDirectory(environment: [String: String] = ProcessInfo.processInfo.environment,
                                        currentDirectory: String = FileManager.default.currentDirectoryPath,
                                        executable: URL? = Bundle.main.executableURL) -> URL? {
        searchPaths(environment: environment, currentDirectory: currentDirectory, executable: executable).first {
            FileManager.default.fileExists(atPath: $0.appendingPathComponent("model_index.json").path)
        }
    }
}
