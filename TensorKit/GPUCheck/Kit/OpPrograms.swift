// Op programs: a small program of TensorKit ops, with autograd, on tensors from a safetensors file;
// the result and the leaves' gradients go to another. scripts/tensorkit_sweep.py runs the same random
// programs through PyTorch and through this (`tensorkit-eval`, or `ddpo eval-ops` on the device
// machine, which has no Swift) and compares them op by op, on shapes, strides, broadcasts and
// arguments no hand-written test lists.
//
//   tensorkit-eval PROGRAM.json INPUTS.safetensors OUTPUT.safetensors [--device cpu|cuda:N] [--dtype D]
//   tensorkit-eval --batch DIR [--device ...] [--dtype D]
//       every DIR/<case>/program.json with its inputs.safetensors, in name order, writing
//       DIR/<case>/out.safetensors, or DIR/<case>/error.txt for a program that cannot run (one
//       process, so CUDA starts once); a case folder that has either already, or crash.txt, is skipped
//
// --dtype float16|bfloat16|float32|float64: floating-point inputs are converted to it on the device
// (after the upload; PyTorch's side gets the same rounded values from the sweep), and outputs and
// gradients come back as float32.
//
// PROGRAM.json:
//   {"grad": ["x0", ...],                  inputs that require a gradient
//    "nodes": [{"name": "n0", "op": "add", "in": ["x0", "x1"], "args": {...}}, ...],
//    "output": "n3",
//    "seed": "g"}                           optional: an input of the output's shape, fed to backward
// Or an optimizer program (AdamW or SGD steps with given gradients and optional norm clipping; see
// `runOptimizer`). Names in "in" are inputs or earlier nodes. OUTPUT gets "out" and "grad.<input>"
// for each input in "grad" that received a gradient (an input the output does not depend on gets
// none, as PyTorch's .grad stays None). The ops and their arguments are listed in `evaluate` below;
// every argument spells PyTorch's meaning (axes may be negative, `pad` lists pairs from the last
// axis, ...). Exit 2 with a message for a malformed program; a program that breaks an op's
// preconditions traps, as the op would in any caller.

import Foundation
import TensorKit

struct ProgramError: Error, CustomStringConvertible {
    let description: String
    init(_ message: String) { description = message }
}

/// A node's name, op and arguments, with typed readers that name the node in their errors.
struct Node {
    let name: String
    let op: String
    let args: [String: Any]

    func int(_ key: String) throws -> Int {
        guard let value = args[key] as? Int else { throw ProgramError("node \(name) (\(op)): argument '\(key)' must be an integer") }
        return value
    }
    func double(_ key: String) throws -> Double {
        guard let value = args[key] as? Double ?? (args[key] as? Int).map(Double.init) else {
            throw ProgramError("node \(name) (\(op)): argument '\(key)' must be a number")
        }
        return value
    }
    func optionalDouble(_ key: String) throws -> Double? { args[key] == nil || args[key] is NSNull ? nil : try double(key) }
    func bool(_ key: String, default value: Bool = false) throws -> Bool {
        guard let raw = args[key] else { return value }
        guard let flag = raw as? Bool else { throw ProgramError("node \(name) (\(op)): argument '\(key)' must be true or false") }
        return flag
    }
    func ints(_ key: String) throws -> [Int] {
        guard let value = args[key] as? [Int] else { throw ProgramError("node \(name) (\(op)): argument '\(key)' must be a list of integers") }
        return value
    }
    func optionalInts(_ key: String) throws -> [Int]? { args[key] == nil || args[key] is NSNull ? nil : try ints(key) }
    func pair(_ key: String, default value: (Int, Int)) throws -> (Int, Int) {
        guard args[key] != nil else { return value }
        let list = try ints(key)
        guard list.count == 2 else { throw ProgramError("node \(name) (\(op)): argument '\(key)' must be two integers") }
        return (list[0], list[1])
    }
}

func dtype(named name: String) throws -> DType {
    guard let dtype = DType(rawValue: name) else {
        throw ProgramError("unknown dtype '\(name)' (expected one of \(DType.allCases.map(\.rawValue).joined(separator: ", ")))")
    }
    return dtype
}

/// The op's result. `x` is the node's first input, `inputs` all of them, `optional(i)` input i when
/// the node names one (a name of "" means nil, for an optional bias or residual).
func evaluate(_ node: Node, _ inputs: [Tensor?]) throws -> Tensor {
    func input(_ i: Int) throws -> Tensor {
        guard i < inputs.count, let t = inputs[i] else { throw ProgramError("node \(node.name) (\(node.op)): needs input \(i)") }
        return t
    }
    func optional(_ i: Int) -> Tensor? { i < inputs.count ? inputs[i] : nil }
    let unary: [String: (Tensor) -> Tensor] = [
        "exp": { $0.exp() }, "log": { $0.log() }, "sqrt": { $0.sqrt() }, "rsqrt": { $0.rsqrt() },
        "square": { $0.square() }, "abs": { $0.abs() }, "tanh": { $0.tanh() }, "sigmoid": { $0.sigmoid() },
        "silu": { $0.silu() }, "relu": { $0.relu() }, "sin": { $0.sin() }, "cos": { $0.cos() },
        "reciprocal": { $0.reciprocal() }, "quick_gelu": { $0.quickGelu() }, "neg": { -$0 },
        "contiguous": { $0.contiguous() },
    ]
    let binary: [String: (Tensor, Tensor) -> Tensor] = [
        "add": { $0 + $1 }, "sub": { $0 - $1 }, "mul": { $0 * $1 }, "div": { $0 / $1 },
        "pow": { $0.pow($1) }, "maximum": { $0.maximum($1) }, "minimum": { $0.minimum($1) },
        "eq": { $0.eq($1) }, "gt": { $0.gt($1) }, "ge": { $0.ge($1) }, "lt": { $0.lt($1) }, "le": { $0.le($1) },
        "matmul": { $0.matmul($1) },
    ]
    if let f = unary[node.op] { return f(try input(0)) }
    if let f = binary[node.op] { return f(try input(0), try input(1)) }
    let x = try input(0)
    switch node.op {
    case "gelu": return x.gelu(approximate: try node.bool("tanh"))
    case "pow_scalar": return x.pow(try node.double("exponent"))
    case "clamp": return x.clamp(min: try node.optionalDouble("min"), max: try node.optionalDouble("max"))
    case "add_scalar": return x + (try node.double("value"))
    case "mul_scalar": return x * (try node.double("value"))
    case "rsub_scalar": return (try node.double("value")) - x
    case "rdiv_scalar": return (try node.double("value")) / x
    case "div_scalar": return x / (try node.double("value"))
    case "where": return Tensor.where(x, try input(1), try input(2))
    case "sum", "mean", "max", "min":
        let axes = try node.optionalInts("axes"), keep = try node.bool("keepdim")
        switch node.op {
        case "sum": return x.sum(axes: axes, keepDims: keep)
        case "mean": return x.mean(axes: axes, keepDims: keep)
        case "max": return x.max(axes: axes, keepDims: keep)
        default: return x.min(axes: axes, keepDims: keep)
        }
    case "var":
        return x.variance(axes: try node.optionalInts("axes"), correction: try node.int("correction"),
                          keepDims: try node.bool("keepdim"))
    case "softmax": return x.softmax(axis: try node.int("axis"))
    case "log_softmax": return x.logSoftmax(axis: try node.int("axis"))
    case "sum_to_shape": return x.sumToShape(try node.ints("shape"))
    case "linear": return linear(x, weight: try input(1), bias: optional(2), residual: optional(3))
    case "conv2d":
        return conv2d(x, weight: try input(1), bias: optional(2), stride: try node.pair("stride", default: (1, 1)),
                      padding: try node.pair("padding", default: (0, 0)), dilation: try node.pair("dilation", default: (1, 1)),
                      groups: (node.args["groups"] as? Int) ?? 1, residual: optional(3))
    case "bias_residual": return addingBiasAndResidual(x, bias: optional(1), residual: optional(2))
    case "geglu": return geglu(x, bias: optional(1))
    case "group_norm":
        return groupNorm(x, groups: try node.int("groups"), weight: optional(1), bias: optional(2),
                         eps: try node.double("eps"), silu: try node.bool("silu"))
    case "layer_norm":
        return layerNorm(x, normalizedShape: try node.ints("shape"), weight: optional(1), bias: optional(2),
                         eps: try node.double("eps"))
    case "sdpa":
        return scaledDotProductAttention(x, try input(1), try input(2), causal: try node.bool("causal"),
                                         scale: try node.optionalDouble("scale"))
    case "embedding": return embedding(x, weight: try input(1))
    case "reshape": return x.reshape(try node.ints("shape"))
    case "flatten": return x.flatten(from: try node.int("start"))
    case "permute": return x.permute(try node.ints("order"))
    case "transpose": return x.transposed(try node.int("a"), try node.int("b"))
    case "slice":
        return x.slice(try node.int("axis"), try node.int("start"), try node.int("end"), step: (node.args["step"] as? Int) ?? 1)
    case "expand": return x.expand(try node.ints("shape"))
    case "unsqueeze": return x.unsqueeze(try node.int("axis"))
    case "squeeze": return x.squeeze(try node.int("axis"))
    case "concat": return Tensor.concat(try inputs.indices.map(input), axis: try node.int("axis"))
    case "stack": return Tensor.stack(try inputs.indices.map(input), axis: try node.int("axis"))
    case "split": return x.split(try node.ints("sizes"), axis: try node.int("axis"))[try node.int("index")]
    case "chunk": return x.chunk(try node.int("chunks"), axis: try node.int("axis"))[try node.int("index")]
    case "pad":
        let flat = try node.ints("padding")
        guard flat.count % 2 == 0 else { throw ProgramError("node \(node.name) (pad): 'padding' must have an even length") }
        let pairs = stride(from: 0, to: flat.count, by: 2).map { (flat[$0], flat[$0 + 1]) }
        return x.pad(pairs, value: try node.double("value"))
    case "upsample_nearest": return x.upsampleNearest(scale: try node.int("scale"))
    case "to": return x.to(try dtype(named: node.args["dtype"] as? String ?? ""))
    default: throw ProgramError("node \(node.name): unknown op '\(node.op)'")
    }
}

/// An optimizer program: {"optimizer": {"kind": "adamw"|"sgd", ...hyper-parameters},
/// "params": [names], "steps": [{"grads": {param: input}, "clip": maxNorm|null, "norm_type": p}]}.
/// Each step sets the named gradients (the other parameters have none), clips when asked, and
/// steps. OUTPUT gets "param.<name>" after the last step and "norm.<k>" (0-D float64), the total
/// norm step k's clip returned. "norm_type" is a number or "inf".
func runOptimizer(_ program: [String: Any], _ values: [String: Tensor]) throws -> [String: Tensor] {
    guard let spec = program["optimizer"] as? [String: Any], let kind = spec["kind"] as? String,
          let paramNames = program["params"] as? [String], let steps = program["steps"] as? [[String: Any]] else {
        throw ProgramError("an optimizer program needs 'optimizer' (with 'kind'), 'params' and 'steps'")
    }
    let hyper = Node(name: "optimizer", op: kind, args: spec)
    let params: [Tensor] = try paramNames.map { name in
        guard let t = values[name] else { throw ProgramError("'params' names '\(name)', which is not an input") }
        return t.contiguousCopy().requiringGrad()
    }
    let optimizer: Optimizer
    switch kind {
    case "adamw":
        optimizer = AdamW(parameters: params, lr: try hyper.double("lr"), betas: (try hyper.double("beta1"), try hyper.double("beta2")),
                          eps: try hyper.double("eps"), weightDecay: try hyper.double("weight_decay"))
    case "sgd":
        optimizer = SGD(parameters: params, lr: try hyper.double("lr"), momentum: try hyper.double("momentum"),
                        dampening: try hyper.double("dampening"), weightDecay: try hyper.double("weight_decay"),
                        nesterov: try hyper.bool("nesterov"))
    default: throw ProgramError("optimizer kind '\(kind)': expected adamw or sgd")
    }
    var results: [String: Tensor] = [:]
    for (k, step) in steps.enumerated() {
        let grads = step["grads"] as? [String: String] ?? [:]
        for (name, p) in zip(paramNames, params) {
            if let gradName = grads[name] {
                guard let g = values[gradName] else { throw ProgramError("step \(k): gradient '\(gradName)' is not an input") }
                p.grad = g.contiguousCopy()
            } else {
                p.grad = nil
            }
        }
        if let maxNorm = step["clip"] as? Double ?? (step["clip"] as? Int).map(Double.init) {
            let normType = step["norm_type"] as? String == "inf" ? .infinity
                : step["norm_type"] as? Double ?? (step["norm_type"] as? Int).map(Double.init) ?? 2
            let total = clipGradNorm(params, maxNorm: maxNorm, normType: normType)
            results["norm.\(k)"] = Tensor([total], shape: [], dtype: .float64)
        }
        optimizer.step()
    }
    for (name, p) in zip(paramNames, params) { results["param." + name] = p.detach().copied(to: .cpu) }
    return results
}

public enum OpPrograms {
    static let usage = "usage: tensorkit-eval PROGRAM.json INPUTS.safetensors OUTPUT.safetensors | --batch DIR  [--device cpu|cuda:N] [--dtype D]"

    /// The command line above; returns the exit status.
    public static func main(_ arguments: [String]) -> Int32 {
        do {
            var rest = arguments
            func option(_ flag: String) throws -> String? {
                guard let i = rest.firstIndex(of: flag) else { return nil }
                guard i + 1 < rest.count else { throw ProgramError("\(flag) needs a value") }
                defer { rest.removeSubrange(i...(i + 1)) }
                return rest[i + 1]
            }
            var device = Device.cpu
            if let spec = try option("--device") {
                if spec == "cpu" { device = .cpu }
                else if spec.hasPrefix("cuda:"), let n = Int(spec.dropFirst(5)) { device = .cuda(n) }
                else { throw ProgramError("--device: expected cpu or cuda:N, got '\(spec)'") }
            }
            if case .cuda(let index) = device {
                guard CUDA.isAvailable else { throw ProgramError("--device \(device): \(CUDA.missingLibrariesMessage ?? "no CUDA device")") }
                guard index < CUDA.deviceCount else { throw ProgramError("--device \(device): there are \(CUDA.deviceCount) CUDA devices") }
            }
            let compute = try option("--dtype").map(dtype(named:))
            if let directory = try option("--batch") {
                guard rest.isEmpty else { throw ProgramError(usage) }
                return try runBatch(directory, device: device, compute: compute)
            }
            guard rest.count == 3 else { throw ProgramError(usage) }
            try runProgram(rest[0], inputs: rest[1], output: rest[2], device: device, compute: compute)
            return 0
        } catch {
            FileHandle.standardError.write(Data("tensorkit-eval: \(error)\n".utf8))
            return 2
        }
    }

    /// Every case folder of `directory`, in name order; a case whose program throws gets error.txt.
    /// Returns 0 when every case ran.
    static func runBatch(_ directory: String, device: Device, compute: DType?) throws -> Int32 {
        let cases = try FileManager.default.contentsOfDirectory(atPath: directory).sorted()
        var failed: Int32 = 0
        for name in cases {
            let folder = (directory as NSString).appendingPathComponent(name)
            let program = (folder as NSString).appendingPathComponent("program.json")
            guard FileManager.default.fileExists(atPath: program) else { continue }
            // Done already, or the case a previous process died in (the sweep marks it crash.txt).
            if ["out.safetensors", "error.txt", "crash.txt"].contains(where: {
                FileManager.default.fileExists(atPath: (folder as NSString).appendingPathComponent($0))
            }) { continue }
            do {
                try runProgram(program, inputs: (folder as NSString).appendingPathComponent("inputs.safetensors"),
                               output: (folder as NSString).appendingPathComponent("out.safetensors"),
                               device: device, compute: compute)
            } catch {
                failed = 1
                try "\(error)\n".write(toFile: (folder as NSString).appendingPathComponent("error.txt"), atomically: true, encoding: .utf8)
            }
        }
        return failed
    }

    static func runProgram(_ programPath: String, inputs inputPath: String, output outputPath: String,
                           device: Device, compute: DType?) throws {
        let programData = try Data(contentsOf: URL(fileURLWithPath: programPath))
        guard let program = try JSONSerialization.jsonObject(with: programData) as? [String: Any] else {
            throw ProgramError("\(programPath): expected a JSON object")
        }
        var values: [String: Tensor] = [:]
        for (name, tensor) in try loadSafeTensors(inputPath) {
            let placed = tensor.copied(to: device)
            values[name] = compute.map { placed.dtype.isFloatingPoint && placed.dtype != $0 ? placed.to($0) : placed } ?? placed
        }
        var results = try program["optimizer"] != nil ? runOptimizer(program, values) : runNodes(program, values, programPath)
        for (key, value) in results where value.dtype.isFloatingPoint && value.dtype != .float32 && value.dtype != .float64 {
            results[key] = value.to(.float32)
        }
        try saveSafeTensors(results, to: outputPath)
    }
}

func runNodes(_ program: [String: Any], _ inputValues: [String: Tensor], _ programPath: String) throws -> [String: Tensor] {
    var values = inputValues
    guard let rawNodes = program["nodes"] as? [[String: Any]], let outputName = program["output"] as? String else {
        throw ProgramError("\(programPath): expected an object with 'nodes' (a list) and 'output' (a name)")
    }
    let gradNames = program["grad"] as? [String] ?? []
    for name in gradNames {
        guard let leaf = values[name] else { throw ProgramError("'grad' names '\(name)', which is not an input") }
        leaf.requiresGrad = true
    }
    for raw in rawNodes {
        guard let name = raw["name"] as? String, let op = raw["op"] as? String, let inputNames = raw["in"] as? [String] else {
            throw ProgramError("\(programPath): every node needs 'name', 'op' and 'in'")
        }
        let node = Node(name: name, op: op, args: raw["args"] as? [String: Any] ?? [:])
        let inputs: [Tensor?] = try inputNames.map { n in
            if n.isEmpty { return nil }
            guard let t = values[n] else { throw ProgramError("node \(name) (\(op)): unknown input '\(n)'") }
            return t
        }
        values[name] = try evaluate(node, inputs)
    }
    guard let output = values[outputName] else { throw ProgramError("output '\(outputName)' is not a node or input") }
    var results: [String: Tensor] = ["out": output.copied(to: .cpu)]
    if let seedName = program["seed"] as? String, output.requiresGrad {
        guard let seed = values[seedName] else { throw ProgramError("seed '\(seedName)' is not an input") }
        output.backward(seed)
        for name in gradNames { if let grad = values[name]?.grad { results["grad." + name] = grad.copied(to: .cpu) } }
    }
    return results
}
