import Foundation

// Finding and reading the weights of one component folder of a diffusers model (`unet/`, `vae/`,
// `text_encoder/`, …), the way diffusers' and transformers' `from_pretrained` find them:
//
//   <stem>.safetensors                    one file
//   <stem>.<variant>.safetensors          a variant ("fp16", "ema", …)
//   <stem>[.<variant>].safetensors.index.json   a sharded checkpoint: {"weight_map": {key: shard file}}
//
// where <stem> is `diffusion_pytorch_model` (diffusers models) or `model` (transformers models).
// Pickled `.bin` weights are refused: unpickling runs arbitrary code, and reading PyTorch's zip
// format is not worth that risk; the error says how to convert them.
//
//   let weights = try ComponentWeights.read(in: dir, stem: "diffusion_pytorch_model", variant: nil)
//   try ComponentWeights.loadStrict(weights, into: model, name: "AutoencoderKL")

/// A model folder that cannot be loaded: names the path and what was expected.
public struct DiffusersLoadError: Error, CustomStringConvertible, LocalizedError {
    public var path: String
    public var message: String
    /// The strict-load report when the weights did not match the model's keys.
    public var report: LoadReport?

    public init(path: String, _ message: String, report: LoadReport? = nil) {
        self.path = path
        self.message = message
        self.report = report
    }

    public var description: String { "\(path): \(message)" }
    public var errorDescription: String? { description }
}

/// The UNet loader's error (the same type as every other component's).
public typealias UNetLoadError = DiffusersLoadError

/// The tensors of one component folder, and a label naming the file(s) they came from.
public struct ComponentWeights {
    public var tensors: [String: Tensor]
    public var label: String

    /// The weight files of a component folder, in the order their names sort: the single file, or
    /// every shard the index lists (each checked to exist). `variant` picks `<stem>.<variant>.*`;
    /// without it the plain files are preferred, then the `fp16` variant.
    public static func files(in directory: URL, stem: String, variant: String?) throws -> (files: [URL], label: String) {
        let fm = FileManager.default
        var isDirectory: ObjCBool = false
        guard fm.fileExists(atPath: directory.path, isDirectory: &isDirectory), isDirectory.boolValue else {
            throw DiffusersLoadError(path: directory.path, "not a directory (expected a model component folder)")
        }
        let stems = variant.map { ["\(stem).\($0)"] } ?? [stem, "\(stem).fp16"]
        var candidates: [String] = []
        for s in stems { candidates += ["\(s).safetensors", "\(s).safetensors.index.json"] }
        guard let found = candidates.first(where: { fm.fileExists(atPath: directory.appendingPathComponent($0).path) }) else {
            let contents = (try? fm.contentsOfDirectory(atPath: directory.path)) ?? []
            let pickles = contents.filter { $0.hasSuffix(".bin") || $0.hasSuffix(".bin.index.json") || $0.hasSuffix(".ckpt") }.sorted()
            if !pickles.isEmpty {
                throw DiffusersLoadError(path: directory.path, """
                    only pickled PyTorch weights here (\(pickles.joined(separator: ", "))); they are not read, because \
                    unpickling can run arbitrary code. Convert the folder once in Python: \
                    `from diffusers import DiffusionPipeline; DiffusionPipeline.from_pretrained(DIR).save_pretrained(DIR, safe_serialization=True)` \
                    (or `model.save_pretrained(DIR, safe_serialization=True)` for one component)
                    """)
            }
            let others = contents.filter { $0.hasSuffix(".safetensors") }.sorted()
            throw DiffusersLoadError(path: directory.path, "no weights found: expected " + candidates.joined(separator: " or ")
                + (others.isEmpty ? "" : " (found \(others.joined(separator: ", ")); pass the variant name to load one)"))
        }
        let url = directory.appendingPathComponent(found)
        guard found.hasSuffix(".index.json") else { return ([url], url.path) }

        struct Index: Decodable { var weight_map: [String: String] }
        let index: Index
        do { index = try JSONDecoder().decode(Index.self, from: Data(contentsOf: url)) } catch {
            throw DiffusersLoadError(path: url.path, "not a safetensors index (expected a \"weight_map\" object of key → shard file): \(error)")
        }
        var shards: [URL] = []
        for name in Set(index.weight_map.values).sorted() {
            guard !name.contains("/"), !name.hasPrefix(".") else {
                throw DiffusersLoadError(path: url.path, "shard name \"\(name)\" must be a file name in the same folder")
            }
            let shard = directory.appendingPathComponent(name)
            guard fm.fileExists(atPath: shard.path) else {
                throw DiffusersLoadError(path: url.path, "lists shard \(name), which is missing from \(directory.path)")
            }
            shards.append(shard)
        }
        guard !shards.isEmpty else { throw DiffusersLoadError(path: url.path, "the index lists no shards") }
        return (shards, url.path)
    }

    /// Reads every tensor of the component's weight file(s), memory-mapped. `ignore` drops keys the
    /// reference also drops on load (e.g. transformers' non-persistent `position_ids`). A key that
    /// appears in two shards is an error.
    public static func read(in directory: URL, stem: String, variant: String?,
                            ignore: (String) -> Bool = { _ in false }) throws -> ComponentWeights {
        let (files, label) = try files(in: directory, stem: stem, variant: variant)
        var tensors: [String: Tensor] = [:]
        for file in files {
            let contents: [String: Tensor]
            do { contents = try SafeTensorsFile(path: file.path).tensors() } catch {
                throw DiffusersLoadError(path: file.path, "cannot read safetensors: \(error)")
            }
            for (key, tensor) in contents where !ignore(key) {
                guard tensors.updateValue(tensor, forKey: key) == nil else {
                    throw DiffusersLoadError(path: file.path, "tensor \"\(key)\" appears in more than one weight file")
                }
            }
        }
        return ComponentWeights(tensors: tensors, label: label)
    }

    /// Loads the tensors into `model` strictly (every key of the model present with its shape, and
    /// nothing else), converting half-precision storage to the parameters' dtype. Each file page is
    /// given back once its tensor is copied (`SafeTensorsFile.releasePages(of:)`), so the load's
    /// peak is the model plus one tensor rather than the model plus the files; the tensors stay
    /// readable (from the file again) but must not have been written to.
    public func loadStrict(into model: Module, name: String) throws {
        do {
            try model.load(tensors, strict: true, loaded: { SafeTensorsFile.releasePages(of: $0) })
        } catch let error as ModuleLoadError {
            throw DiffusersLoadError(path: label, "weights do not match the \(name) built from config.json:\n\(error.report)",
                                     report: error.report)
        }
    }
}
