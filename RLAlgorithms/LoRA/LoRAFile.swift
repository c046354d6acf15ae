import Foundation
import TensorKit

// LoRA weights on disk as diffusers' `pytorch_lora_weights.safetensors`, which
// `StableDiffusionPipeline.load_lora_weights(dir)` (diffusers 0.35.2) loads unchanged.
//
//   try lora.save(to: dir)                                   // dir/pytorch_lora_weights.safetensors
//   try lora.load(contentsOf: dir.appendingPathComponent(LoRANetwork.weightName))  // same layers: values only
//   let other = try LoRANetwork.load(contentsOf: file, into: unet)  // inject the file's layers, then load
//
// What we write (Tests/RLAlgorithmsTests/Fixtures/make_lora_fixtures.py checks it against diffusers):
//   keys     "unet.<module path>.lora.down.weight" [r, in(, kh, kw)] and ".lora.up.weight"
//            [out, r(, 1, 1)], the parameters' dtype (float32): for TRL's configuration exactly the
//            keys, shapes and dtypes of TRL's own save_pretrained / save_checkpoint;
//   metadata "format": "pt" and "lora_adapter_metadata": JSON {"unet.r", "unet.lora_alpha",
//            "unet.target_modules" (the adapted paths, sorted), "unet.rank_pattern",
//            "unet.alpha_pattern"}, the form diffusers' saver writes when given adapter metadata.
//            diffusers ignores ".alpha" keys in this key form and takes lora_alpha = r without the
//            metadata, so the metadata is what keeps a scale alpha/r != 1.
// One key form for every layer on purpose: TRL's converter renames only to_q/to_k/to_v/to_out.0 to
// "lora.down/up" and leaves other targets as "lora_A/B", and diffusers, deciding the form from the
// first key, then silently skips the layers in the other form.
//
// What we read:
//   - "lora.down/lora.up" (ours, TRL's, diffusers' older form), PEFT's "lora_A/lora_B" and diffusers'
//     converted text-encoder form "lora_linear_layer.down/up", each key with or without the component
//     prefix ("unet.", "text_encoder."); alpha from the metadata (lora_alpha, alpha_pattern, per
//     component), else alpha = r, as diffusers does;
//   - kohya-ss sd-scripts' form, "lora_unet_…" / "lora_te_…" names (module paths with '_' for '.',
//     resolved against the model's paths) with "lora_down/lora_up" weights and ".alpha" scalars.
// A file may hold several components (diffusers' and kohya's training scripts save the UNet's and the
// text encoder's layers together): `components(in:)` lists them, and each is loaded into its model
// with `skipping` the others. Strict: a key of another form or component, a module path that is no
// Linear/Conv2d of the model, a down without its up, or a shape that does not fit the layer is an
// error naming the file and key, and nothing is changed.

extension LoRANetwork {
    /// The file name diffusers looks for.
    public static let weightName = "pytorch_lora_weights.safetensors"

    /// The pipeline components a LoRA file has weights for (`directoryOrFile` as for `load`): of
    /// "unet" and "text_encoder", those some key starts with followed by "." (or kohya's "lora_unet_",
    /// "lora_te_"); keys of neither (the unprefixed form) count as "unet", as diffusers reads them.
    public static func components(in directoryOrFile: URL) throws -> Set<String> {
        let file = try SafeTensorsFile(path: resolveWeightFile(directoryOrFile).path)
        var found = Set<String>()
        for key in file.keys {
            found.insert(key.hasPrefix("text_encoder.") || key.hasPrefix(LoRAFileContents.kohyaLeads["text_encoder"]!) ? "text_encoder" : "unet")
        }
        return found
    }

    /// `url` itself, or `url/pytorch_lora_weights.safetensors` when `url` is a directory.
    static func resolveWeightFile(_ url: URL) -> URL {
        var isDirectory: ObjCBool = false
        if FileManager.default.fileExists(atPath: url.path, isDirectory: &isDirectory), isDirectory.boolValue {
            return url.appendingPathComponent(weightName)
        }
        return url
    }

    /// The weights as saved: `<prefix>.<path>.lora.down.weight` / `.lora.up.weight` (CPU copies).
    public func stateDict(prefix: String? = "unet") -> [String: Tensor] {
        let lead = prefix.map { $0 + "." } ?? ""
        var result: [String: Tensor] = [:]
        for (key, tensor) in namedParameters { result[lead + key] = tensor.copied(to: .cpu) }
        return result
    }

    /// The safetensors metadata written with the weights (see the file comment).
    public func fileMetadata(prefix: String? = "unet") throws -> [String: String] {
        let lead = prefix.map { $0 + "." } ?? ""
        func mostCommon<T: Hashable>(_ values: [T]) -> T? {
            var counts: [T: Int] = [:]
            for v in values { counts[v, default: 0] += 1 }
            // Ties go to the first in module order, as Python's Counter.most_common does.
            return values.first { counts[$0] == counts.values.max() }
        }
        func number(_ x: Double) -> Any { x == x.rounded() && abs(x) < 1e15 ? Int(x) as Any : x as Any }
        let rank = mostCommon(entries.map { $0.delta.rank }) ?? 0
        let alpha = mostCommon(entries.map { $0.delta.alpha }) ?? 0
        // PEFT matches pattern keys with re.match(r"(.*\.)?(key)$", path): escape the dots.
        func pattern(_ path: String) -> String { "^" + NSRegularExpression.escapedPattern(for: path) }
        var rankPattern: [String: Any] = [:], alphaPattern: [String: Any] = [:]
        for e in entries {
            if e.delta.rank != rank { rankPattern[pattern(e.path)] = e.delta.rank }
            if e.delta.alpha != alpha { alphaPattern[pattern(e.path)] = number(e.delta.alpha) }
        }
        let adapter: [String: Any] = [
            lead + "r": rank, lead + "lora_alpha": number(alpha), lead + "target_modules": paths.sorted(),
            lead + "rank_pattern": rankPattern, lead + "alpha_pattern": alphaPattern,
        ]
        if let bad = entries.first(where: { !$0.delta.alpha.isFinite }) {
            throw LoRAError(key: bad.path, "alpha \(bad.delta.alpha) cannot be written to a LoRA file")
        }
        let data = try JSONSerialization.data(withJSONObject: adapter, options: [.prettyPrinted, .sortedKeys])
        return ["format": "pt", "lora_adapter_metadata": String(decoding: data, as: UTF8.self)]
    }

    /// Writes `directory/pytorch_lora_weights.safetensors` (the directory is created; the file is
    /// replaced atomically). Returns the file's URL.
    @discardableResult
    public func save(to directory: URL, prefix: String? = "unet", weightName: String = LoRANetwork.weightName) throws -> URL {
        try FileManager.default.createDirectory(at: directory, withIntermediateDirectories: true)
        let url = directory.appendingPathComponent(weightName)
        try saveSafeTensors(stateDict(prefix: prefix), metadata: try fileMetadata(prefix: prefix), to: url.path)
        return url
    }

    /// Loads a LoRA file's values into these deltas (`directoryOrFile` as for the static `load`): the
    /// file must hold exactly these layers, with these shapes and alphas (a file without metadata
    /// means alpha = rank).
    public func load(contentsOf directoryOrFile: URL, prefix: String = "unet") throws {
        let url = LoRANetwork.resolveWeightFile(directoryOrFile)
        let file = try LoRAFileContents(url: url, prefix: prefix, modulePaths: entries.map(\.path))
        let mine = Dictionary(uniqueKeysWithValues: entries.map { ($0.path, $0) })
        for module in file.modules {
            guard let entry = mine[module.path] else {
                throw LoRAError(file: url.path, key: module.downKey, "this LoRANetwork has no layer '\(module.path)'")
            }
            try module.check(against: entry.delta, file: url.path)
        }
        let inFile = Set(file.modules.map(\.path))
        if let missing = entries.first(where: { !inFile.contains($0.path) }) {
            throw LoRAError(file: url.path, key: missing.path, "the file has no weights for this adapted layer")
        }
        withNoGrad {
            for module in file.modules {
                let delta = mine[module.path]!.delta
                delta.downWeight.assign(module.down)
                delta.upWeight.assign(module.up)
            }
        }
    }

    /// Injects a delta at every layer a LoRA file names (rank from its shapes, alpha from its
    /// metadata or = rank) and loads its values. Throws, changing nothing, when the file does not fit.
    /// - Parameter directoryOrFile: the file, or a directory holding `pytorch_lora_weights.safetensors`.
    /// - Parameter skipping: other components' prefixes whose keys the file may also hold (for
    ///   `prefix` "unet", e.g. ["text_encoder"]); without it such keys are an error.
    public static func load(contentsOf directoryOrFile: URL, into model: Module, prefix: String = "unet",
                            dtype: DType = .float32, freezeBase: Bool = true, skipping: [String] = []) throws -> LoRANetwork {
        let url = resolveWeightFile(directoryOrFile)
        let candidates = adaptableModules(of: model).layers
        let file = try LoRAFileContents(url: url, prefix: prefix, skipping: skipping, modulePaths: candidates.map(\.0))
        let byPath = Dictionary(candidates, uniquingKeysWith: { first, _ in first })
        for module in file.modules {
            guard let layer = byPath[module.path] else {
                throw LoRAError(file: url.path, key: module.downKey, "the model has no Linear or Conv2d module '\(module.path)'")
            }
            try module.check(against: layer, file: url.path)
        }
        let specs = file.modules.map { (path: $0.path, rank: $0.rank, alpha: $0.alpha) }
        let network: LoRANetwork
        do {
            network = try attach(specs, to: model, candidates: candidates, initialization: .gaussian, seed: 0,
                                 dtype: dtype, freezeBase: freezeBase)
        } catch var error as LoRAError {
            error.file = url.path
            throw error
        }
        withNoGrad {
            for (entry, module) in zip(network.entries, file.modules) {
                entry.delta.downWeight.assign(module.down)
                entry.delta.upWeight.assign(module.up)
            }
        }
        return network
    }
}

/// A parsed and checked LoRA file: per module its down/up tensors, rank and alpha.
struct LoRAFileContents {
    struct ModuleWeights {
        var path: String
        var downKey: String
        var upKey: String
        var down: Tensor
        var up: Tensor
        var alpha: Double
        var rank: Int { down.shape[0] }

        /// Shapes against a layer of the model.
        func check(against layer: Module, file: String) throws {
            let downShape: [Int], upShape: [Int]
            if let linear = layer as? Linear {
                downShape = [rank, linear.inFeatures]
                upShape = [linear.outFeatures, rank]
            } else if let conv = layer as? Conv2d {
                downShape = [rank, conv.inChannels, conv.kernelSize.0, conv.kernelSize.1]
                upShape = [conv.outChannels, rank, 1, 1]
            } else {
                throw LoRAError(file: file, key: downKey, "'\(path)' is a \(type(of: layer)), not a Linear or Conv2d")
            }
            guard down.shape == downShape else {
                throw LoRAError(file: file, key: downKey, "shape \(down.shape) does not fit the \(type(of: layer)) '\(path)': expected \(downShape)")
            }
            guard up.shape == upShape else {
                throw LoRAError(file: file, key: upKey, "shape \(up.shape) does not fit the \(type(of: layer)) '\(path)': expected \(upShape)")
            }
        }

        /// Shapes, rank and alpha against an existing delta.
        func check(against delta: any LoRADelta, file: String) throws {
            guard down.shape == delta.downWeight.shape else {
                throw LoRAError(file: file, key: downKey, "shape \(down.shape), but the adapted layer has \(delta.downWeight.shape)")
            }
            guard up.shape == delta.upWeight.shape else {
                throw LoRAError(file: file, key: upKey, "shape \(up.shape), but the adapted layer has \(delta.upWeight.shape)")
            }
            guard alpha == delta.alpha else {
                throw LoRAError(file: file, key: downKey, "alpha \(alpha) in the file, but the adapted layer has alpha \(delta.alpha)")
            }
        }
    }

    /// In module-path order.
    var modules: [ModuleWeights]

    private static let forms: [(suffix: String, isDown: Bool)] = [
        (".lora.down.weight", true), (".lora.up.weight", false), (".lora_A.weight", true), (".lora_B.weight", false),
        (".lora_linear_layer.down.weight", true), (".lora_linear_layer.up.weight", false),
    ]

    /// kohya-ss sd-scripts' form (the LoRAs most community tools write): "lora_unet_<module path with
    /// '_' for '.'>.lora_down.weight", ".lora_up.weight" and ".alpha" (a scalar; alpha = rank without
    /// it), "lora_te_" for the text encoder.
    static let kohyaLeads = ["unet": "lora_unet_", "text_encoder": "lora_te_"]
    private static let kohyaForms: [(suffix: String, isDown: Bool)] = [(".lora_down.weight", true), (".lora_up.weight", false)]

    static func isKohya(_ key: String) -> Bool { kohyaLeads.values.contains { key.hasPrefix($0) } }

    /// `skipping`: prefixes of other components whose keys are passed over (see `LoRANetwork.load`).
    /// `modulePaths`: the model's Linear/Conv2d paths, which kohya's names are resolved against.
    init(url: URL, prefix: String, skipping: [String] = [], modulePaths: [String] = []) throws {
        let path = url.path
        let file = try SafeTensorsFile(path: path)
        let lead = prefix + "."
        let prefixed = file.keys.contains { $0.hasPrefix(lead) }
        guard !file.keys.isEmpty else { throw LoRAError(file: path, "the file holds no tensors") }
        let kohya = file.keys.contains(where: Self.isKohya)
        // Module path with '_' for '.' -> the path; a name two paths share resolves to neither.
        var kohyaPaths: [String: String] = [:], shared = Set<String>()
        for modulePath in modulePaths {
            let name = modulePath.replacingOccurrences(of: ".", with: "_")
            if kohyaPaths.updateValue(modulePath, forKey: name) != nil { shared.insert(name) }
        }
        for name in shared { kohyaPaths[name] = nil }
        var kohyaAlphas: [String: Double] = [:]
        func kohyaPath(_ underscored: Substring, _ key: String) throws -> String {
            guard let modulePath = kohyaPaths[String(underscored)] else {
                throw LoRAError(file: path, key: key, "the model has no Linear or Conv2d module named '\(underscored)' (kohya names are module paths with '_' for '.')")
            }
            return modulePath
        }

        var downs: [String: (key: String, tensor: Tensor)] = [:], ups: [String: (key: String, tensor: Tensor)] = [:]
        for key in file.keys {
            if skipping.contains(where: { key.hasPrefix($0 + ".") || Self.kohyaLeads[$0].map(key.hasPrefix) == true }) { continue }
            var name = Substring(key)
            let form: (suffix: String, isDown: Bool)
            let module: String
            if kohya {
                guard let kohyaLead = Self.kohyaLeads[prefix], name.hasPrefix(kohyaLead) else {
                    throw LoRAError(file: path, key: key, Self.isKohya(key)
                        ? "a LoRA key of another component (only \(prefix) LoRA weights are supported here)"
                        : "not a kohya LoRA key although the file has them (expected lora_unet_… or lora_te_…)")
                }
                name = name.dropFirst(kohyaLead.count)
                if name.hasSuffix(".alpha") {
                    let alpha = try file.tensor(key)
                    guard alpha.numel == 1, alpha.dtype.isFloatingPoint, alpha.item().isFinite else {
                        throw LoRAError(file: path, key: key, "an alpha must be one finite number, got shape \(alpha.shape) \(alpha.dtype)")
                    }
                    kohyaAlphas[try kohyaPath(name.dropLast(".alpha".count), key)] = alpha.item()
                    continue
                }
                guard let kohyaForm = Self.kohyaForms.first(where: { name.hasSuffix($0.suffix) }), name.count > kohyaForm.suffix.count else {
                    throw LoRAError(file: path, key: key, "not a LoRA weight key (kohya form: <name>.lora_down.weight, .lora_up.weight, .alpha; LoHa, LoKr and DoRA weights are not supported)")
                }
                form = kohyaForm
                module = try kohyaPath(name.dropLast(kohyaForm.suffix.count), key)
            } else {
                if prefixed {
                    guard name.hasPrefix(lead) else {
                        throw LoRAError(file: path, key: key, "not a '\(lead)' key although the file has them (only \(prefix) LoRA weights are supported)")
                    }
                    name = name.dropFirst(lead.count)
                }
                guard let keyForm = Self.forms.first(where: { name.hasSuffix($0.suffix) }), name.count > keyForm.suffix.count else {
                    throw LoRAError(file: path, key: key, "not a LoRA weight key (expected <module>.lora.down.weight, .lora.up.weight, .lora_A.weight, .lora_B.weight or .lora_linear_layer.down/up.weight)")
                }
                form = keyForm
                module = String(name.dropLast(keyForm.suffix.count))
            }
            let tensor = try file.tensor(key)
            guard tensor.dtype.isFloatingPoint else {
                throw LoRAError(file: path, key: key, "dtype \(tensor.dtype) is not a floating-point type")
            }
            if form.isDown {
                if let other = downs[module] { throw LoRAError(file: path, key: key, "a second down weight for '\(module)' (also '\(other.key)')") }
                guard tensor.rank == 2 || tensor.rank == 4, tensor.shape[0] > 0 else {
                    throw LoRAError(file: path, key: key, "shape \(tensor.shape): a down weight is [r, in] or [r, in, kh, kw]")
                }
                downs[module] = (key, tensor)
            } else {
                if let other = ups[module] { throw LoRAError(file: path, key: key, "a second up weight for '\(module)' (also '\(other.key)')") }
                ups[module] = (key, tensor)
            }
        }
        for (module, up) in ups where downs[module] == nil {
            throw LoRAError(file: path, key: up.key, "up weight without a down weight for '\(module)'")
        }
        guard !downs.isEmpty else { throw LoRAError(file: path, "the file holds no \(prefix) LoRA weights") }

        let adapter = try Self.adapterMetadata(file.metadata, prefix: prefixed ? prefix : nil, file: path)
        var modules: [ModuleWeights] = []
        for module in downs.keys.sorted() {
            let down = downs[module]!
            guard let up = ups[module] else {
                throw LoRAError(file: path, key: down.key, "down weight without an up weight for '\(module)'")
            }
            let rank = down.tensor.shape[0]
            guard up.tensor.rank == down.tensor.rank, up.tensor.shape.count >= 2, up.tensor.shape[1] == rank else {
                throw LoRAError(file: path, key: up.key, "shape \(up.tensor.shape) does not fit the down weight \(down.tensor.shape) (rank \(rank))")
            }
            let alpha = kohya ? kohyaAlphas[module] ?? Double(rank)
                : try adapter?.alpha(for: module, rank: rank, key: down.key, file: path) ?? Double(rank)
            modules.append(ModuleWeights(path: module, downKey: down.key, upKey: up.key, down: down.tensor, up: up.tensor,
                                         alpha: alpha))
        }
        self.modules = modules
    }

    /// The part of diffusers' `lora_adapter_metadata` (a PEFT LoraConfig) that decides the scale.
    struct AdapterMetadata {
        var r: Int?
        var alpha: Double?
        var rankPattern: [(String, Int)]
        var alphaPattern: [(String, Double)]

        /// PEFT's get_pattern_key: the first pattern with re.match(r"(.*\.)?(pattern)$", path).
        static func lookup<T>(_ patterns: [(String, T)], _ path: String) -> T? {
            for (pattern, value) in patterns {
                guard let regex = try? NSRegularExpression(pattern: "(.*\\.)?(\(pattern))$") else { continue }
                if regex.firstMatch(in: path, options: [.anchored], range: NSRange(path.startIndex..., in: path)) != nil { return value }
            }
            return nil
        }

        func alpha(for module: String, rank: Int, key: String, file: String) throws -> Double {
            let expectedRank = Self.lookup(rankPattern, module) ?? r ?? rank
            guard expectedRank == rank else {
                throw LoRAError(file: file, key: key, "rank \(rank), but the file's lora_adapter_metadata says r = \(expectedRank)")
            }
            // PEFT's LoraConfig defaults r = 8, lora_alpha = 8 when the metadata lacks them.
            return Self.lookup(alphaPattern, module) ?? alpha ?? 8
        }
    }

    static func adapterMetadata(_ metadata: [String: String], prefix: String?, file: String) throws -> AdapterMetadata? {
        guard let raw = metadata["lora_adapter_metadata"] else { return nil }
        guard let object = try? JSONSerialization.jsonObject(with: Data(raw.utf8)) as? [String: Any] else {
            throw LoRAError(file: file, key: "lora_adapter_metadata", "metadata is not a JSON object")
        }
        let lead = prefix.map { $0 + "." } ?? ""
        // diffusers prefixes each LoraConfig field with the component ("unet.lora_alpha").
        var fields: [String: Any] = [:]
        for (key, value) in object {
            if lead.isEmpty { fields[key] = value } else if key.hasPrefix(lead) { fields[String(key.dropFirst(lead.count))] = value }
        }
        if fields.isEmpty { return nil }
        for flag in ["use_dora", "use_rslora", "lora_bias"] where (fields[flag] as? Bool) == true {
            throw LoRAError(file: file, key: "lora_adapter_metadata", "\(lead)\(flag) is true, which this LoRA does not support")
        }
        func numeric(_ value: Any) -> Double? {
            if let x = value as? Int { return Double(x) }
            if let x = value as? Double { return x }
            return (value as? NSNumber)?.doubleValue
        }
        func double(_ name: String) throws -> Double? {
            guard let value = fields[name], !(value is NSNull) else { return nil }
            guard let number = numeric(value) else {
                throw LoRAError(file: file, key: "lora_adapter_metadata", "\(lead)\(name) is not a number")
            }
            return number
        }
        func patterns(_ name: String) throws -> [(String, Double)] {
            guard let value = fields[name], !(value is NSNull) else { return [] }
            guard let dict = value as? [String: Any] else {
                throw LoRAError(file: file, key: "lora_adapter_metadata", "\(lead)\(name) is not an object")
            }
            return try dict.keys.sorted().map { key in
                guard let number = dict[key].flatMap(numeric) else {
                    throw LoRAError(file: file, key: "lora_adapter_metadata", "\(lead)\(name)[\(key)] is not a number")
                }
                return (key, number)
            }
        }
        return AdapterMetadata(r: try double("r").map { Int($0) }, alpha: try double("lora_alpha"),
                               rankPattern: try patterns("rank_pattern").map { ($0.0, Int($0.1)) },
                               alphaPattern: try patterns("alpha_pattern"))
    }
}
