import Foundation

/// An n-dimensional view (shape, strides, offset, dtype) over a shared `Storage`, with autograd state.
///
/// Reference semantics, like a PyTorch tensor: parameters are updated in place and gradients
/// accumulate into `grad`. Views (reshape, permute, slice, expand) share storage.
public final class Tensor: @unchecked Sendable {
    public internal(set) var storage: Storage
    public internal(set) var shape: [Int]
    /// Strides in elements (not bytes).
    public internal(set) var strides: [Int]
    /// Offset of element [0, 0, ...] in elements.
    public internal(set) var offset: Int
    public internal(set) var dtype: DType

    /// Whether gradients flow into this tensor. Only meaningful on leaves for accumulation.
    public var requiresGrad: Bool = false
    /// Accumulated gradient of a leaf after `backward()`.
    public var grad: Tensor?
    /// The autograd node that produced this tensor (nil for leaves and for tensors made without grad).
    public internal(set) var gradFn: GradNode?

    public var device: Device { storage.device }
    public var rank: Int { shape.count }
    public var numel: Int { shape.reduce(1, *) }
    public var isLeaf: Bool { gradFn == nil }

    /// A view over `storage`. Strides default to contiguous row-major.
    public init(storage: Storage, shape: [Int], dtype: DType, strides: [Int]? = nil, offset: Int = 0) {
        precondition(shape.allSatisfy { $0 >= 0 }, "negative dimension in shape \(shape)")
        self.storage = storage
        self.shape = shape
        self.strides = strides ?? Tensor.contiguousStrides(shape)
        self.offset = offset
        self.dtype = dtype
    }

    /// A new zero-filled tensor.
    public convenience init(zeros shape: [Int], dtype: DType = .float32, device: Device = .cpu) {
        let storage = backend(for: device).allocate(byteCount: shape.reduce(1, *) * dtype.byteSize)
        self.init(storage: storage, shape: shape, dtype: dtype)
    }

    /// A new tensor whose elements are not set: only for an output the caller writes completely
    /// before anyone reads it.
    convenience init(unfilled shape: [Int], dtype: DType, device: Device) {
        let storage = backend(for: device).allocateUninitialized(byteCount: shape.reduce(1, *) * dtype.byteSize)
        self.init(storage: storage, shape: shape, dtype: dtype)
    }

    /// A tensor holding `values` (row-major) converted to `dtype`.
    public convenience init(_ values: [Double], shape: [Int], dtype: DType = .float32, device: Device = .cpu) {
        precondition(values.count == shape.reduce(1, *), "\(values.count) values do not fill shape \(shape)")
        self.init(unfilled: shape, dtype: dtype, device: .cpu)
        values.withUnsafeBufferPointer { writeElements(from: $0, into: self) }
        if device != .cpu { self.moveStorage(to: device) }
    }

    @_disfavoredOverload
    public convenience init(_ values: [Float], shape: [Int], dtype: DType = .float32, device: Device = .cpu) {
        self.init(values.map { Double($0) }, shape: shape, dtype: dtype, device: device)
    }

    /// Integer tensor (int64 by default) from indices.
    public convenience init(indices: [Int], shape: [Int], dtype: DType = .int64, device: Device = .cpu) {
        self.init(indices.map { Double($0) }, shape: shape, dtype: dtype, device: device)
    }

    /// A 0-dimensional tensor.
    public convenience init(scalar: Double, dtype: DType = .float32, device: Device = .cpu) {
        self.init([scalar], shape: [], dtype: dtype, device: device)
    }

    public static func contiguousStrides(_ shape: [Int]) -> [Int] {
        var strides = [Int](repeating: 1, count: shape.count)
        var running = 1
        for axis in stride(from: shape.count - 1, through: 0, by: -1) {
            strides[axis] = running
            running *= Swift.max(shape[axis], 1)
        }
        return strides
    }

    /// True when the elements are laid out row-major without gaps (offset may be non-zero).
    public var isContiguous: Bool {
        var expected = 1
        for axis in stride(from: shape.count - 1, through: 0, by: -1) where shape[axis] != 1 {
            if strides[axis] != expected { return false }
            expected *= shape[axis]
        }
        return true
    }

    /// Typed pointer to element [0, ...] of this view (CPU only).
    @inline(__always) public func pointer<T>(as _: T.Type) -> UnsafeMutablePointer<T> {
        (storage.pointer + offset * dtype.byteSize).assumingMemoryBound(to: T.self)
    }

    /// Replaces storage in place with a copy on `device` (used by `to(_:)` on parameters).
    func moveStorage(to device: Device) {
        let moved = self.contiguous().copied(to: device)
        storage = moved.storage
        strides = moved.strides
        offset = 0
    }

    /// A tensor sharing storage with this one but cut from the graph.
    public func detach() -> Tensor {
        Tensor(storage: storage, shape: shape, dtype: dtype, strides: strides, offset: offset)
    }

    /// Marks this tensor as a leaf that accumulates gradients; returns self.
    @discardableResult
    public func requiringGrad(_ flag: Bool = true) -> Tensor {
        requiresGrad = flag
        return self
    }

    /// Element values as doubles in row-major order (copies to host).
    public func toArray() -> [Double] {
        let host = self.device == .cpu ? self : self.copied(to: .cpu)
        return readElements(of: host)
    }

    public func toFloatArray() -> [Float] { toArray().map { Float($0) } }

    /// The value of a one-element tensor.
    public func item() -> Double {
        precondition(numel == 1, "item() needs exactly one element, tensor has shape \(shape)")
        return toArray()[0]
    }
}

extension Tensor: CustomStringConvertible {
    public var description: String {
        let values = numel <= 16 ? toArray().map { String(format: "%.6g", $0) }.joined(separator: ", ") : "…"
        return "Tensor(shape: \(shape), dtype: \(dtype), device: \(device), [\(values)])"
    }
}

// MARK: - Host element access (slow path, for construction, printing and tests)

/// Reads a CPU tensor view (any strides, any dtype) as doubles in row-major order.
func readElements(of tensor: Tensor) -> [Double] {
    let count = tensor.numel
    var result = [Double](repeating: 0, count: count)
    if count == 0 { return result }
    let base = tensor.storage.pointer
    let size = tensor.dtype.byteSize
    var index = [Int](repeating: 0, count: tensor.rank)
    for linear in 0..<count {
        var elementOffset = tensor.offset
        for axis in 0..<tensor.rank { elementOffset += index[axis] * tensor.strides[axis] }
        result[linear] = loadScalar(base + elementOffset * size, tensor.dtype)
        var axis = tensor.rank - 1
        while axis >= 0 {
            index[axis] += 1
            if index[axis] < tensor.shape[axis] { break }
            index[axis] = 0
            axis -= 1
        }
    }
    return result
}

/// Writes doubles into a contiguous CPU tensor, converting to its dtype.
func writeElements(from values: UnsafeBufferPointer<Double>, into tensor: Tensor) {
    precondition(tensor.isContiguous && tensor.device == .cpu)
    let base = tensor.storage.pointer + tensor.offset * tensor.dtype.byteSize
    let size = tensor.dtype.byteSize
    for i in 0..<values.count { storeScalar(values[i], base + i * size, tensor.dtype) }
}

@inline(__always) func loadScalar(_ p: UnsafeMutableRawPointer, _ dtype: DType) -> Double {
    switch dtype {
    case .float32: return Double(p.load(as: Float.self))
    case .float64: return p.load(as: Double.self)
    case .float16: return Double(Float(p.load(as: Float16.self)))
    case .bfloat16: return Double(floatFromBFloat16Bits(p.load(as: UInt16.self)))
    case .int32: return Double(p.load(as: Int32.self))
    case .int64: return Double(p.load(as: Int64.self))
    case .uint8: return Double(p.load(as: UInt8.self))
    case .bool: return p.load(as: UInt8.self) != 0 ? 1 : 0
    }
}

@inline(__always) func storeScalar(_ v: Double, _ p: UnsafeMutableRawPointer, _ dtype: DType) {
    switch dtype {
    case .float32: p.storeBytes(of: Float(v), as: Float.self)
    case .float64: p.storeBytes(of: v, as: Double.self)
    case .float16: p.storeBytes(of: Float16(Float(v)), as: Float16.self)
    case .bfloat16: p.storeBytes(of: bfloat16Bits(Float(v)), as: UInt16.self)
    case .int32: p.storeBytes(of: Int32(v), as: Int32.self)
    case .int64: p.storeBytes(of: Int64(v), as: Int64.self)
    case .uint8: p.storeBytes(of: UInt8(max(0, min(255, v))), as: UInt8.self)
    case .bool: p.storeBytes(of: v != 0 ? 1 : 0, as: UInt8.self)
    }
}
