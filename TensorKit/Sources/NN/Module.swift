import Foundation

/// Base class of every layer and model, in the manner of `torch.nn.Module`.
///
/// State is discovered by reflection over stored properties (the class's own and every
/// superclass's, superclass first, each in declaration order), so a subclass only declares
/// properties. The property name is the checkpoint key segment, which is why models use
/// snake_case names such as `to_out` or `down_blocks`:
///
/// - `Tensor` / `Tensor?`: a parameter (a nil optional is skipped), e.g. `weight`, `bias`.
/// - Property names listed in the class's `bufferNames`: a buffer instead — in `stateDict()`,
///   `load`, and converted by `to(_:)`, but not a parameter (not trained, not frozen).
/// - `Module` / `Module?` (any subclass): a child whose keys get the prefix `name.`.
/// - Arrays of modules or tensors (`[Linear]`, `[Module]`, `[Module?]`, `[any LayerDelta]`,
///   `[Tensor]`): element i gets the key `name.i`, as in a `ModuleList` / `nn.Sequential`; a nil
///   element keeps its index.
/// - `[String: Module]` dictionaries: `name.key`, visited in sorted key order.
/// - A property whose name starts with `_` is never visited: use that for caches, back-references
///   to a parent (which must also be `weak` to avoid a retain cycle) and anything not checkpointed.
///   (Swift also uses `_` for property-wrapper storage and `$__lazy_storage_$_` for lazy vars,
///   so those are skipped too.)
///
/// `keyOverrides` renames a property's key where the checkpoint name is not a usable Swift
/// identifier; overrides and buffer names of a subclass must include its superclass's
/// (`super.keyOverrides.merging(...)`), because they are read from the dynamic type.
///
/// Example: a property `to_out: [Module] = [Linear(320, 320), Dropout(0.0)]` yields the key
/// `to_out.0.weight`; nested, `down_blocks.1.attentions.0.transformer_blocks.0.attn1.to_q.weight`.
open class Module {
    /// Training mode (dropout active). Set through `train()` / `eval()` so children follow.
    public var isTraining: Bool = true

    public init() {}

    /// Property name → checkpoint key segment, for names Swift cannot or should not spell.
    open class var keyOverrides: [String: String] { [:] }

    /// Names of `Tensor` properties that are buffers (checkpointed state that is not trained).
    open class var bufferNames: Set<String> { [] }

    // MARK: discovery

    enum Slot {
        case tensor(Tensor, isBuffer: Bool)
        case module(Module)
    }

    /// The direct entries of this module: (key segment, slot), superclass properties first.
    func directEntries() -> [(String, Slot)] {
        var mirrors: [Mirror] = []
        var next: Mirror? = Mirror(reflecting: self)
        while let mirror = next {
            mirrors.append(mirror)
            next = mirror.superclassMirror
        }
        let overrides = type(of: self).keyOverrides
        let buffers = type(of: self).bufferNames
        var entries: [(String, Slot)] = []
        for mirror in mirrors.reversed() {
            for child in mirror.children {
                guard let label = child.label, !label.hasPrefix("_"), !label.hasPrefix("$") else { continue }
                let key = overrides[label] ?? label
                Module.classify(child.value, key: key, isBuffer: buffers.contains(label), into: &entries)
            }
        }
        return entries
    }

    private static func classify(_ value: Any, key: String, isBuffer: Bool, into entries: inout [(String, Slot)]) {
        // Cheap, common cases first; array and dictionary casts only for the remaining values.
        if let tensor = value as? Tensor {
            entries.append((key, .tensor(tensor, isBuffer: isBuffer)))
        } else if let module = value as? Module {
            entries.append((key, .module(module)))
        } else if value is Int || value is Double || value is Bool || value is String || value is Float {
            return
        } else if let modules = value as? [Module?] {
            // Also matches [Linear], [Module], [any LayerDelta]: class-element arrays upcast dynamically.
            for (i, m) in modules.enumerated() { if let m { entries.append(("\(key).\(i)", .module(m))) } }
        } else if let tensors = value as? [Tensor?] {
            for (i, t) in tensors.enumerated() { if let t { entries.append(("\(key).\(i)", .tensor(t, isBuffer: isBuffer))) } }
        } else if let dict = value as? [String: Module] {
            for name in dict.keys.sorted() { entries.append(("\(key).\(name)", .module(dict[name]!))) }
        }
    }

    /// Depth-first walk over every (path, slot) below this module, duplicates included.
    /// A module that is its own ancestor (a strong back-reference) is not re-entered.
    func walk(_ body: (String, Slot) -> Void) {
        var ancestors: Set<ObjectIdentifier> = [ObjectIdentifier(self)]
        func visit(_ module: Module, _ prefix: String) {
            for (key, slot) in module.directEntries() {
                let path = prefix.isEmpty ? key : prefix + "." + key
                if case .module(let child) = slot {
                    guard ancestors.insert(ObjectIdentifier(child)).inserted else { continue }
                    body(path, slot)
                    visit(child, path)
                    ancestors.remove(ObjectIdentifier(child))
                } else {
                    body(path, slot)
                }
            }
        }
        visit(self, "")
    }

    // MARK: queries

    /// This module (path "") and every descendant, each instance once, in depth-first order.
    public func namedModules() -> [(String, Module)] {
        var seen: Set<ObjectIdentifier> = [ObjectIdentifier(self)]
        var result: [(String, Module)] = [("", self)]
        walk { path, slot in
            if case .module(let m) = slot, seen.insert(ObjectIdentifier(m)).inserted { result.append((path, m)) }
        }
        return result
    }

    public func modules() -> [Module] { namedModules().map { $0.1 } }

    /// The direct children (path segment, module).
    public func namedChildren() -> [(String, Module)] {
        directEntries().compactMap { key, slot in
            if case .module(let m) = slot { return (key, m) }
            return nil
        }
    }

    /// Every parameter with its dotted key, each tensor once (a shared tensor keeps its first key),
    /// in a deterministic depth-first, declaration order.
    public func namedParameters() -> [(String, Tensor)] { namedTensors(buffers: false) }

    public func parameters() -> [Tensor] { namedParameters().map { $0.1 } }

    /// Parameters with `requiresGrad` (what an optimizer should own).
    public func trainableParameters() -> [Tensor] { parameters().filter { $0.requiresGrad } }

    public func namedTrainableParameters() -> [(String, Tensor)] { namedParameters().filter { $0.1.requiresGrad } }

    public func namedBuffers() -> [(String, Tensor)] { namedTensors(buffers: true) }

    private func namedTensors(buffers: Bool) -> [(String, Tensor)] {
        var seen = Set<ObjectIdentifier>()
        var result: [(String, Tensor)] = []
        walk { path, slot in
            if case .tensor(let t, let isBuffer) = slot, isBuffer == buffers, seen.insert(ObjectIdentifier(t)).inserted {
                result.append((path, t))
            }
        }
        return result
    }

    /// Parameters and buffers by key. Every key is present, including each key of a shared tensor
    /// (as in PyTorch). The values are the live tensors, not copies: save before changing them.
    public func stateDict() -> [String: Tensor] {
        var result: [String: Tensor] = [:]
        walk { path, slot in
            if case .tensor(let t, _) = slot { result[path] = t }
        }
        return result
    }

    /// The keys of `stateDict()` in walk order.
    public func stateKeys() -> [String] {
        var keys: [String] = []
        walk { path, slot in if case .tensor = slot { keys.append(path) } }
        return keys
    }

    // MARK: modes

    /// Sets training mode on this module and every descendant.
    @discardableResult
    public func train(_ mode: Bool = true) -> Self {
        for m in modules() { m.isTraining = mode }
        return self
    }

    /// Evaluation mode (dropout becomes the identity) on this module and every descendant.
    @discardableResult
    public func eval() -> Self { train(false) }

    /// Turns gradients off for every parameter (buffers never have them).
    @discardableResult
    public func freeze() -> Self {
        for p in parameters() { p.requiresGrad = false }
        return self
    }

    @discardableResult
    public func unfreeze() -> Self {
        for p in parameters() { p.requiresGrad = true }
        return self
    }

    /// Drops every parameter's gradient (PyTorch's `zero_grad(set_to_none=True)`).
    public func zeroGrad() {
        for p in parameters() { p.grad = nil }
    }

    // MARK: conversion

    private func uniqueStateTensors() -> [Tensor] {
        var seen = Set<ObjectIdentifier>()
        var result: [Tensor] = []
        walk { _, slot in
            if case .tensor(let t, _) = slot, seen.insert(ObjectIdentifier(t)).inserted { result.append(t) }
        }
        return result
    }

    /// Moves every parameter and buffer (and any gradient) to `device`, in place: the tensor objects
    /// stay the same, so do it before handing parameters to an optimizer whose state lives elsewhere.
    @discardableResult
    public func to(_ device: Device) -> Self {
        for t in uniqueStateTensors() where t.device != device {
            t.moveStorage(to: device)
            if let g = t.grad, g.device != device { t.grad = g.copied(to: device) }
        }
        return self
    }

    /// Converts every floating-point parameter and buffer (and gradient) to `dtype`, in place.
    /// Integer tensors (e.g. position ids) keep their dtype, as in PyTorch.
    @discardableResult
    public func to(_ dtype: DType) -> Self {
        precondition(dtype.isFloatingPoint, "Module.to(_:) converts to a floating-point dtype, got \(dtype)")
        for t in uniqueStateTensors() where t.dtype.isFloatingPoint && t.dtype != dtype {
            t.convertStorageInPlace(to: dtype)
            if let g = t.grad { t.grad = withNoGrad { g.to(dtype).contiguousCopy() } }
        }
        return self
    }

    // MARK: loading

    /// Copies `weights` into the existing parameter and buffer tensors (converting dtype and device),
    /// so references held elsewhere (an optimizer) stay valid.
    ///
    /// Strict mode checks everything first and throws `ModuleLoadError` without changing anything
    /// when a key is missing, unexpected or has the wrong shape. Non-strict mode loads every key
    /// that exists with a matching shape and reports the rest. `loaded` runs with each source tensor
    /// once it has been copied (the diffusers loaders give back its file pages there).
    @discardableResult
    public func load(_ weights: [String: Tensor], strict: Bool = true,
                     loaded: (Tensor) -> Void = { _ in }) throws -> LoadReport {
        let keys = stateKeys()
        let own = stateDict()
        var report = LoadReport()
        for key in keys {
            guard let source = weights[key] else { report.missingKeys.append(key); continue }
            let target = own[key]!
            if source.shape != target.shape {
                report.shapeMismatches.append(.init(key: key, expected: target.shape, found: source.shape))
            }
        }
        let known = Set(keys)
        report.unexpectedKeys = weights.keys.filter { !known.contains($0) }.sorted()
        if strict && !report.isClean { throw ModuleLoadError(report: report) }

        let mismatched = Set(report.shapeMismatches.map { $0.key })
        withNoGrad {
            for key in keys where !mismatched.contains(key) {
                guard let source = weights[key] else { continue }
                own[key]!.assign(source)
                loaded(source)
                report.loadedKeys.append(key)
            }
        }
        return report
    }
}

/// What `Module.load` found. Keys are full dotted paths.
public struct LoadReport: Sendable, CustomStringConvertible {
    public struct ShapeMismatch: Sendable, Equatable {
        public var key: String
        public var expected: [Int]
        public var found: [Int]
    }
    /// Keys the module has but the weights lack.
    public var missingKeys: [String] = []
    /// Keys in the weights the module does not have.
    public var unexpectedKeys: [String] = []
    public var shapeMismatches: [ShapeMismatch] = []
    /// Keys copied into the module.
    public var loadedKeys: [String] = []

    public var isClean: Bool { missingKeys.isEmpty && unexpectedKeys.isEmpty && shapeMismatches.isEmpty }

    public var description: String {
        if isClean { return "all \(loadedKeys.count) keys loaded" }
        let cap = 20
        func list(_ items: [String]) -> String {
            let shown = items.prefix(cap).map { "  " + $0 }
            let more = items.count > cap ? ["  … and \(items.count - cap) more"] : []
            return (shown + more).joined(separator: "\n")
        }
        var parts: [String] = []
        if !missingKeys.isEmpty { parts.append("\(missingKeys.count) missing key(s):\n" + list(missingKeys)) }
        if !unexpectedKeys.isEmpty { parts.append("\(unexpectedKeys.count) unexpected key(s):\n" + list(unexpectedKeys)) }
        if !shapeMismatches.isEmpty {
            parts.append("\(shapeMismatches.count) shape mismatch(es):\n"
                + list(shapeMismatches.map { "\($0.key): expected \($0.expected), found \($0.found)" }))
        }
        return parts.joined(separator: "\n")
    }
}

/// Thrown by a strict `Module.load` when the weights do not match the module exactly.
public struct ModuleLoadError: Error, CustomStringConvertible, LocalizedError {
    public var report: LoadReport
    public var description: String { "weights do not match the module:\n\(report)" }
    public var errorDescription: String? { description }
}

// MARK: - initialisation control

/// Lets model construction skip random parameter initialisation, e.g. when every weight will be
/// overwritten from a checkpoint (random fills of a large model are slow). Thread-local.
public enum ParameterInitialization {
    private static let key = "TensorKit.ParameterInitialization.skipped"

    /// True inside `withoutParameterInitialization`: layers leave random-initialised weights zero.
    public static var isSkipped: Bool {
        Thread.current.threadDictionary[key] != nil
    }

    static func setSkipped(_ skipped: Bool) {
        if skipped { Thread.current.threadDictionary[key] = true }
        else { Thread.current.threadDictionary.removeObject(forKey: key) }
    }
}

/// Runs `body` (typically a model constructor) with random parameter initialisation skipped.
public func withoutParameterInitialization<R>(_ body: () throws -> R) rethrows -> R {
    let previous = ParameterInitialization.isSkipped
    ParameterInitialization.setSkipped(true)
    defer { ParameterInitialization.setSkipped(previous) }
    return try body()
}

extension Tensor {
    /// Replaces this tensor's storage with a contiguous copy in `dtype`, keeping the object
    /// (used by `Module.to(_ dtype:)` so parameter references stay valid).
    func convertStorageInPlace(to target: DType) {
        if target == dtype { return }
        let converted = Tensor(zeros: shape, dtype: target, device: device)
        backend(for: device).copy(self, into: converted)
        storage = converted.storage
        strides = converted.strides
        offset = 0
        dtype = target
    }
}
