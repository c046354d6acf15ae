import Foundation
import TensorKit

// A set of LoRA deltas attached to one model: injection by module-path pattern, the trainable
// parameters, merge / unmerge / remove. Files are in LoRAFile.swift.
//
//   let unet = try UNet2DConditionModel.load(directory: sd.appendingPathComponent("unet"))
//   let lora = try LoRANetwork.inject(into: unet, config: LoRAConfig(), seed: 0)   // freezes the UNet
//   lora.paths        // ["down_blocks.0.attentions.0.transformer_blocks.0.attn1.to_q", …]
//   let optimizer = AdamW(parameters: lora.parameters, …)
//   …train…
//   try lora.save(to: outputDir)            // outputDir/pytorch_lora_weights.safetensors (diffusers)
//   lora.merge()                            // W += (alpha/r)·up·down, deltas detached: plain-speed inference
//   lora.unmerge()                          // W -= the same, deltas attached again
//
//   let loaded = try LoRANetwork.load(file: url, into: otherUNet)   // inject what the file describes
//
// The model's own parameters are frozen (`requiresGrad = false`) by `inject` unless
// `freezeBase: false`, as PEFT's `add_adapter` does; the LoRA parameters require gradients.
// Merging changes the base weight tensors in place (the objects stay the same) and is exact up to
// float rounding: unmerge restores the weights to within a few ulps, not bit for bit.

public final class LoRANetwork {
    /// One adapted layer.
    public struct Entry {
        /// The layer's dotted module path in the model (diffusers' key without `.weight`).
        public let path: String
        /// The adapted `Linear` or `Conv2d`.
        public let layer: Module
        public let delta: any LoRADelta
    }

    public enum State: Sendable, Equatable {
        /// Deltas attached to their layers (training, or unmerged inference).
        case attached
        /// Deltas folded into the base weights and detached from the layers.
        case merged
        /// Deltas detached for good (`remove()`); weights keep whatever state they had.
        case removed
    }

    /// The adapted layers in the model's module order.
    public let entries: [Entry]
    public private(set) var state: State = .attached

    init(entries: [Entry]) {
        self.entries = entries
    }

    /// The adapted module paths, in module order.
    public var paths: [String] { entries.map(\.path) }

    /// Every LoRA parameter (down then up of each layer, in module order): what the optimizer owns.
    public var parameters: [Tensor] { entries.flatMap { $0.delta.loraParameters } }

    /// The parameters with their keys in this project's file form, `<path>.lora.down.weight` /
    /// `<path>.lora.up.weight` (no component prefix).
    public var namedParameters: [(String, Tensor)] {
        entries.flatMap { e in
            [("\(e.path).lora.down.weight", e.delta.downWeight), ("\(e.path).lora.up.weight", e.delta.upWeight)]
        }
    }

    /// The delta at `path`, if that layer is adapted.
    public func delta(at path: String) -> (any LoRADelta)? {
        entries.first { $0.path == path }?.delta
    }

    // MARK: injection

    /// Attaches a fresh delta (rank, alpha and initialisation from `config`, draws from `seed` in module
    /// order) to every `Linear` / `Conv2d` of `model` whose path matches `config`'s targets.
    ///
    /// Throws, changing nothing, when a target name or the regex matches no Linear/Conv2d, when a
    /// target matches a module of another type, or when a matched layer cannot take a LoRA delta
    /// (grouped or dilated convolution, or a LoRA delta already attached).
    /// - Parameters:
    ///   - dtype: the LoRA parameters' dtype (float32, as TRL upcasts trainable parameters).
    ///   - freezeBase: turn gradients off for every parameter the model had before.
    public static func inject(into model: Module, config: LoRAConfig, seed: UInt64 = 0, dtype: DType = .float32,
                              freezeBase: Bool = true) throws -> LoRANetwork {
        try config.validate()
        let candidates = adaptableModules(of: model)
        let regex = try config.targetRegex.map(LoRAConfig.compile)

        func isTarget(_ path: String) -> Bool {
            config.targetModules.contains { LoRAConfig.nameMatches($0, path: path) }
                || regex.map { LoRAConfig.regexMatches($0, path: path) } == true
        }
        // Every name and the regex must select at least one layer; a selected module must be a layer.
        for (path, module) in candidates.others where isTarget(path) {
            throw LoRAError(key: path, "matches the LoRA targets but is a \(type(of: module)); only Linear and Conv2d layers can be adapted")
        }
        let layerNames = Set(candidates.layers.map { $0.0.split(separator: ".").last.map(String.init) ?? $0.0 })
        func hint() -> String {
            let names = layerNames.sorted().prefix(12).joined(separator: ", ")
            return " (layer names in this model: \(names)\(layerNames.count > 12 ? ", …" : ""))"
        }
        for name in config.targetModules where !candidates.layers.contains(where: { LoRAConfig.nameMatches(name, path: $0.0) }) {
            throw LoRAError(key: name, "LoRA target module matches no Linear or Conv2d module path" + hint())
        }
        if let regex, let pattern = config.targetRegex,
           !candidates.layers.contains(where: { LoRAConfig.regexMatches(regex, path: $0.0) }) {
            throw LoRAError(key: pattern, "LoRA target regex matches no Linear or Conv2d module path" + hint())
        }

        let selected = candidates.layers.filter { isTarget($0.0) }
        let specs = selected.map { (path: $0.0, rank: config.rank, alpha: config.alpha) }
        return try attach(specs, to: model, candidates: candidates.layers, initialization: config.initialization,
                          seed: seed, dtype: dtype, freezeBase: freezeBase)
    }

    /// The model's Linear/Conv2d layers by path (in module order) and its other modules, leaving out
    /// the insides of deltas already attached.
    static func adaptableModules(of model: Module) -> (layers: [(String, Module)], others: [(String, Module)]) {
        let all = model.namedModules()
        var insideDeltas = Set<ObjectIdentifier>()
        for (_, module) in all {
            for delta in attachedDeltas(module) {
                for inner in delta.modules() { insideDeltas.insert(ObjectIdentifier(inner)) }
            }
        }
        var layers: [(String, Module)] = [], others: [(String, Module)] = []
        for (path, module) in all where !path.isEmpty && !insideDeltas.contains(ObjectIdentifier(module)) {
            if module is Linear || module is Conv2d { layers.append((path, module)) } else { others.append((path, module)) }
        }
        return (layers, others)
    }

    private static func attachedDeltas(_ module: Module) -> [any LayerDelta] {
        if let linear = module as? Linear { return linear.deltas }
        if let conv = module as? Conv2d { return conv.deltas }
        return []
    }

    /// Checks every spec, then freezes (if asked) and attaches deltas; nothing changes on a throw.
    static func attach(_ specs: [(path: String, rank: Int, alpha: Double)], to model: Module,
                       candidates: [(String, Module)], initialization: LoRAInitialization, seed: UInt64,
                       dtype: DType, freezeBase: Bool) throws -> LoRANetwork {
        let byPath = Dictionary(candidates, uniquingKeysWith: { first, _ in first })
        for spec in specs {
            guard let layer = byPath[spec.path] else {
                throw LoRAError(key: spec.path, "no Linear or Conv2d module at this path")
            }
            if attachedDeltas(layer).contains(where: { $0 is any LoRADelta }) {
                throw LoRAError(key: spec.path, "already has a LoRA delta; remove() the other LoRANetwork first")
            }
            if let conv = layer as? Conv2d, conv.groups != 1 || conv.dilation != (1, 1) {
                throw LoRAError(key: spec.path, "Conv2d with groups \(conv.groups) and dilation \(conv.dilation): LoRA supports groups 1, dilation 1")
            }
        }
        if freezeBase { model.freeze() }
        var generator = PhiloxGenerator(seed: seed)
        var entries: [Entry] = []
        for spec in specs {
            let layer = byPath[spec.path]!
            if let linear = layer as? Linear {
                let delta = LoRALinear(base: linear, rank: spec.rank, alpha: spec.alpha, initialization: initialization,
                                       dtype: dtype, generator: &generator)
                linear.deltas.append(delta)
                entries.append(Entry(path: spec.path, layer: linear, delta: delta))
            } else if let conv = layer as? Conv2d {
                let delta = LoRAConv2d(base: conv, rank: spec.rank, alpha: spec.alpha, initialization: initialization,
                                       dtype: dtype, generator: &generator)
                conv.deltas.append(delta)
                entries.append(Entry(path: spec.path, layer: conv, delta: delta))
            }
        }
        return LoRANetwork(entries: entries)
    }

    // MARK: merge / unmerge / remove

    /// Folds every delta into its layer's weight (W += scale · up · down) and detaches it, so the
    /// model runs at base speed. No effect when already merged.
    public func merge() {
        precondition(state != .removed, "LoRANetwork.merge(): the deltas were removed")
        guard state == .attached else { return }
        for entry in entries {
            addToWeight(entry, sign: 1)
            detach(entry)
        }
        state = .merged
    }

    /// Subtracts the merged deltas from the weights and attaches them again. No effect unless merged.
    public func unmerge() {
        precondition(state != .removed, "LoRANetwork.unmerge(): the deltas were removed")
        guard state == .merged else { return }
        for entry in entries {
            addToWeight(entry, sign: -1)
            if let linear = entry.layer as? Linear { linear.deltas.append(entry.delta) }
            if let conv = entry.layer as? Conv2d { conv.deltas.append(entry.delta) }
        }
        state = .attached
    }

    /// Detaches the deltas for good. Unmerged, the model is back to its base weights; merged, the
    /// weights keep the LoRA (PEFT's `merge_and_unload`). Gradients of the base stay as they are.
    public func remove() {
        if state == .attached { entries.forEach(detach) }
        state = .removed
    }

    private func detach(_ entry: Entry) {
        let id = ObjectIdentifier(entry.delta)
        if let linear = entry.layer as? Linear { linear.deltas.removeAll { ObjectIdentifier($0) == id } }
        if let conv = entry.layer as? Conv2d { conv.deltas.removeAll { ObjectIdentifier($0) == id } }
    }

    private func addToWeight(_ entry: Entry, sign: Double) {
        let weight: Tensor
        if let linear = entry.layer as? Linear { weight = linear.weight }
        else if let conv = entry.layer as? Conv2d { weight = conv.weight }
        else { return }
        withNoGrad {
            let compute: DType = weight.dtype == .float64 ? .float64 : .float32
            let delta = entry.delta.weightDelta().to(compute).to(weight.device)
            weight.assign(weight.to(compute) + delta * sign)
        }
    }
}
