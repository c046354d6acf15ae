/// Optimizers update parameter tensors in place from their `grad`, like `torch.optim`.
///
/// ## State dictionaries
/// `stateDict()` returns plain tensors so it can be written with `saveSafeTensors`:
/// - `param_count`: int64 scalar, the number of parameters the optimizer was built with;
/// - `state.<i>.<name>`: per-parameter state of parameter i (position in the constructor's list,
///   as in PyTorch), e.g. `state.0.exp_avg`, `state.0.exp_avg_sq`, and `state.0.step` as an int64
///   scalar. Parameters that never had a gradient have no entries.
/// Hyper-parameters (learning rate, betas, …) are not part of the state: they come from the
/// constructor or a scheduler, so a restored run must be built with the same settings.
/// The returned tensors are the live state (no copy): save before the next `step()`.
/// `loadStateDict` copies values into the optimizer's own tensors and checks every key first.
public protocol Optimizer: AnyObject {
    /// The parameters, in the order used by the state dictionary.
    var parameters: [Tensor] { get }
    /// Current learning rate (schedulers set it between steps).
    var learningRate: Double { get set }
    /// One update of every parameter that has a gradient.
    func step()
    /// Drops every parameter's gradient (`set_to_none=True`).
    func zeroGrad()
    func stateDict() -> [String: Tensor]
    func loadStateDict(_ state: [String: Tensor]) throws
}

extension Optimizer {
    public func zeroGrad() {
        for p in parameters { p.grad = nil }
    }
}

/// A state dictionary that does not fit the optimizer it is loaded into.
public enum OptimizerStateError: Error, CustomStringConvertible, Equatable {
    case missingKey(String)
    case unexpectedKey(String)
    case shapeMismatch(key: String, expected: [Int], found: [Int])
    case parameterCountMismatch(expected: Int, found: Int)
    case invalidValue(key: String, reason: String)

    public var description: String {
        switch self {
        case .missingKey(let key): return "optimizer state: missing key '\(key)'"
        case .unexpectedKey(let key): return "optimizer state: unexpected key '\(key)'"
        case let .shapeMismatch(key, expected, found):
            return "optimizer state: '\(key)' has shape \(found), expected \(expected)"
        case let .parameterCountMismatch(expected, found):
            return "optimizer state: saved for \(found) parameters, this optimizer has \(expected)"
        case let .invalidValue(key, reason): return "optimizer state: '\(key)' \(reason)"
        }
    }
}

/// Shared validation and (de)serialisation of the `state.<i>.<name>` layout.
enum OptimizerState {
    static let countKey = "param_count"

    static func key(_ index: Int, _ name: String) -> String { "state.\(index).\(name)" }

    static func scalar(_ value: Int) -> Tensor { Tensor(indices: [value], shape: []) }

    /// Validates `state` for `parameters` with the per-parameter `tensorNames` (shaped like the
    /// parameter) and `scalarNames` (0-d). Returns the parameter indices that have state.
    /// A parameter either has all of its names or none.
    static func validate(_ state: [String: Tensor], parameters: [Tensor],
                         tensorNames: [String], scalarNames: [String]) throws -> [Int] {
        guard let count = state[countKey] else { throw OptimizerStateError.missingKey(countKey) }
        guard count.numel == 1 else { throw OptimizerStateError.invalidValue(key: countKey, reason: "must be a scalar") }
        if Int(count.item()) != parameters.count {
            throw OptimizerStateError.parameterCountMismatch(expected: parameters.count, found: Int(count.item()))
        }
        let names = Set(tensorNames + scalarNames)
        var indices = Set<Int>()
        for key in state.keys.sorted() where key != countKey {
            let parts = key.split(separator: ".", maxSplits: 2).map(String.init)
            guard parts.count == 3, parts[0] == "state", let i = Int(parts[1]), i >= 0, i < parameters.count,
                  names.contains(parts[2]) else {
                throw OptimizerStateError.unexpectedKey(key)
            }
            indices.insert(i)
        }
        for i in indices.sorted() {
            for name in tensorNames {
                let k = key(i, name)
                guard let t = state[k] else { throw OptimizerStateError.missingKey(k) }
                if t.shape != parameters[i].shape {
                    throw OptimizerStateError.shapeMismatch(key: k, expected: parameters[i].shape, found: t.shape)
                }
            }
            for name in scalarNames {
                let k = key(i, name)
                guard let t = state[k] else { throw OptimizerStateError.missingKey(k) }
                if t.numel != 1 { throw OptimizerStateError.shapeMismatch(key: k, expected: [], found: t.shape) }
            }
        }
        return indices.sorted()
    }

    /// A new tensor like `parameter` (dtype, device, contiguous) holding `source`'s values.
    static func copy(_ source: Tensor, like parameter: Tensor) -> Tensor {
        let t = Tensor(zeros: parameter.shape, dtype: parameter.dtype, device: parameter.device)
        t.assign(source)
        return t
    }
}

extension Tensor {
    /// Whether an optimizer can update this tensor with a fused loop over raw host memory.
    var isFusedUpdatable: Bool {
        device == .cpu && isContiguous && (dtype == .float32 || dtype == .float64)
    }
}

/// Checks a parameter list for an optimizer: no duplicates (they would be updated twice).
func checkDistinctParameters(_ parameters: [Tensor], _ name: String) {
    precondition(Set(parameters.map { ObjectIdentifier($0) }).count == parameters.count,
                 "\(name): the same tensor appears more than once in the parameter list")
}

// 8-bit block-quantised AdamW (bitsandbytes-style state) is planned as a separate optimizer;
// it would reuse this state layout with quantised `exp_avg`/`exp_avg_sq` plus per-block scales.
