import Foundation

/// One recorded operation: where each input's gradient goes, and how to map the output gradient to
/// theirs.
///
/// The node keeps no input tensor alive, only each input's route (as PyTorch's edges): the node that
/// made it, the leaf that accumulates its gradient, or nothing when it needs none. An intermediate
/// result lives on only if a backward function kept it (its `saved` tensors), so a forward pass holds
/// what backward reads, not every tensor it made: the matmul output that a bias pass replaced, the
/// LoRA delta that was added in, the activation that only a frozen layer read.
public final class GradNode {
    public let name: String
    var edges: [GradEdge]
    /// Maps the gradient of the output to one gradient per input (nil: no gradient for that input).
    var backward: ((Tensor) -> [Tensor?])?

    init(name: String, inputs: [Tensor], backward: @escaping (Tensor) -> [Tensor?]) {
        self.name = name
        self.edges = inputs.map(GradEdge.init)
        self.backward = backward
    }
}

/// Where one input's gradient goes.
enum GradEdge {
    /// The input was made by a recorded operation: its gradient is summed there. The shape checks
    /// the gradient a backward function returns.
    case node(GradNode, shape: [Int])
    /// A leaf that requires a gradient (a parameter, an input marked `requiringGrad()`): its `grad`
    /// accumulates.
    case leaf(Tensor)
    /// No gradient is needed.
    case none

    init(_ input: Tensor) {
        if let node = input.gradFn { self = .node(node, shape: Array(input.shape)) }
        else if input.requiresGrad { self = .leaf(input) }
        else { self = .none }
    }

    var node: GradNode? { if case .node(let node, _) = self { return node }; return nil }
}

/// Whether operations record a graph. Thread-local, so a sampling thread can run without grad
/// while another trains.
public enum GradMode {
    private static let key = "TensorKit.GradMode.disabled"

    public static var isEnabled: Bool {
        get { Thread.current.threadDictionary[key] == nil }
        set {
            if newValue { Thread.current.threadDictionary.removeObject(forKey: key) }
            else { Thread.current.threadDictionary[key] = true }
        }
    }
}

/// Runs `body` without recording any autograd graph (like `torch.no_grad()`).
@discardableResult
public func withNoGrad<R>(_ body: () throws -> R) rethrows -> R {
    let previous = GradMode.isEnabled
    GradMode.isEnabled = false
    defer { GradMode.isEnabled = previous }
    return try body()
}

/// Runs `body` with graph recording on (inside a no-grad scope, e.g. for recomputation).
@discardableResult
public func withGrad<R>(_ body: () throws -> R) rethrows -> R {
    let previous = GradMode.isEnabled
    GradMode.isEnabled = true
    defer { GradMode.isEnabled = previous }
    return try body()
}

extension Tensor {
    /// Attaches an autograd node to `output` when grad mode is on and any input needs a gradient.
    /// `backward` receives the output gradient and returns one gradient per input, shaped like it.
    @discardableResult
    public static func record(_ output: Tensor, _ name: String, inputs: [Tensor],
                              backward: @escaping (Tensor) -> [Tensor?]) -> Tensor {
        guard inputs.contains(where: { $0.requiresGrad }), GradMode.isEnabled else { return output }
        output.gradFn = GradNode(name: name, inputs: inputs, backward: backward)
        output.requiresGrad = true
        return output
    }

    /// Reverse-mode differentiation from this tensor. `gradient` defaults to ones for a scalar.
    /// Gradients accumulate into the `grad` of every leaf with `requiresGrad`. The graph is freed
    /// afterwards unless `retainGraph`.
    public func backward(_ gradient: Tensor? = nil, retainGraph: Bool = false) {
        let seed: Tensor
        if let gradient {
            precondition(gradient.shape == shape, "backward: gradient shape \(gradient.shape) != tensor shape \(shape)")
            seed = gradient
        } else {
            precondition(numel == 1, "backward() without a gradient needs a one-element tensor, got shape \(shape)")
            seed = Tensor.full(shape, 1, dtype: dtype, device: device)
        }
        withNoGrad { Tensor.runBackward(roots: [(self, seed)], retainGraph: retainGraph) }
    }

    static func runBackward(roots: [(Tensor, Tensor)], retainGraph: Bool) {
        // Topological order of nodes (depth-first post-order, iterative to survive deep graphs).
        var order: [GradNode] = []
        var visited = Set<ObjectIdentifier>()
        var stack: [(GradNode, Int)] = []
        for (root, _) in roots {
            guard let node = root.gradFn, visited.insert(ObjectIdentifier(node)).inserted else { continue }
            stack.append((node, 0))
            while let (node, next) = stack.popLast() {
                if next < node.edges.count {
                    stack.append((node, next + 1))
                    if let child = node.edges[next].node, visited.insert(ObjectIdentifier(child)).inserted {
                        stack.append((child, 0))
                    }
                } else {
                    order.append(node)
                }
            }
        }

        var pending: [ObjectIdentifier: Tensor] = [:]
        func accumulate(_ grad: Tensor, into node: GradNode) {
            let id = ObjectIdentifier(node)
            pending[id] = pending[id].map { $0 + grad } ?? grad
        }
        /// `owned`: `grad` was made by a backward function and this is the caller's only reference.
        func accumulate(_ grad: inout Tensor, intoLeaf tensor: Tensor, owned: Bool) {
            if let existing = tensor.grad {
                tensor.grad = existing + (grad.dtype == tensor.dtype ? grad : grad.to(tensor.dtype))
            } else if grad.dtype != tensor.dtype {
                tensor.grad = grad.to(tensor.dtype)         // a new contiguous tensor
            } else if owned, isKnownUniquelyReferenced(&grad), isKnownUniquelyReferenced(&grad.storage),
                      grad.isContiguous, grad.offset == 0, grad.numel * grad.dtype.byteSize == grad.storage.byteCount {
                // Nothing else can reach this tensor or its memory (a backward kernel's fresh
                // output): the leaf takes it as it is, as PyTorch's AccumulateGrad steals a
                // gradient nobody else holds.
                tensor.grad = grad
            } else {
                // Own the memory: a gradient that aliases another tensor must not be mutated later.
                tensor.grad = grad.contiguousCopy()
            }
        }
        for (root, seed) in roots {
            var seed = seed
            if let node = root.gradFn { accumulate(seed, into: node) }
            else if root.requiresGrad { accumulate(&seed, intoLeaf: root, owned: false) }
        }

        for node in order.reversed() {
            var grads: [Tensor?]
            do {
                // Scoped so that the incoming gradient is released before the outgoing ones are
                // accumulated: a view op's gradient (a transpose's) shares its storage, and a leaf
                // can take that memory only when nothing else holds it.
                guard let gradOutput = pending.removeValue(forKey: ObjectIdentifier(node)),
                      let backward = node.backward else { continue }
                grads = backward(gradOutput)
            }
            precondition(grads.count == node.edges.count, "\(node.name): backward returned \(grads.count) grads for \(node.edges.count) inputs")
            for (i, edge) in node.edges.enumerated() {
                // Moved out of the array, so that a fresh gradient is referenced only here.
                var taken: Tensor? = nil
                swap(&taken, &grads[i])
                guard var grad = taken else { continue }
                taken = nil
                switch edge {
                case .node(let child, let shape):
                    precondition(grad.shape == shape, "\(node.name): gradient shape \(grad.shape) != input shape \(shape)")
                    accumulate(grad, into: child)
                case .leaf(let leaf):
                    precondition(grad.shape == leaf.shape, "\(node.name): gradient shape \(grad.shape) != input shape \(leaf.shape)")
                    accumulate(&grad, intoLeaf: leaf, owned: true)
                case .none:
                    continue
                }
            }
            if !retainGraph {
                node.backward = nil
                node.edges = []
            }
        }
    }
}

/// Computes the gradients of `outputs` with respect to `inputs` without touching any `.grad`
/// of the inputs (leaves reached elsewhere still accumulate).
public func gradients(of output: Tensor, withRespectTo inputs: [Tensor], gradOutput: Tensor? = nil) -> [Tensor?] {
    let saved = inputs.map { $0.grad }
    for input in inputs { input.grad = nil }
    output.backward(gradOutput)
    let result = inputs.map { $0.grad }
    for (input, grad) in zip(inputs, saved) { input.grad = grad }
    return result
}

/// Gradient checkpointing: runs `body` without keeping its intermediate activations and recomputes
/// them during backward. `inputs` are the tensors `body` reads that may need gradients (parameters
/// used inside `body` are found by the recomputation and receive their gradients as usual).
public func checkpoint(_ inputs: [Tensor], _ body: @escaping ([Tensor]) -> Tensor) -> Tensor {
    guard GradMode.isEnabled else { return body(inputs) }
    let output = withNoGrad { body(inputs) }
    // The node must be recorded even when no explicit input needs grad: parameters inside do.
    let node = GradNode(name: "checkpoint", inputs: inputs) { gradOutput in
        let detached = inputs.map { input -> Tensor in
            let d = input.detach()
            d.requiresGrad = input.requiresGrad
            return d
        }
        let recomputed = withGrad { body(detached) }
        if recomputed.requiresGrad {
            Tensor.runBackward(roots: [(recomputed, gradOutput)], retainGraph: false)
        }
        return detached.map { $0.requiresGrad ? $0.grad : nil }
    }
    output.gradFn = node
    output.requiresGrad = true
    return output
}
