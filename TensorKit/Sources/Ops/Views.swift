/// Shape manipulation. Views share storage; their backward rules map gradients back to the
/// input's shape.
extension Tensor {
    /// Normalises a possibly negative axis.
    @inline(__always) public func axis(_ a: Int) -> Int {
        let r = a < 0 ? a + rank : a
        precondition(r >= 0 && r < Swift.max(rank, 1), "axis \(a) out of range for shape \(shape)")
        return r
    }

    /// Same elements, new shape; one entry may be -1. Copies only when the layout forces it.
    public func reshape(_ newShape: [Int]) -> Tensor {
        var target = newShape
        if let hole = target.firstIndex(of: -1) {
            let known = target.enumerated().filter { $0.offset != hole }.reduce(1) { $0 * $1.element }
            precondition(known > 0 && numel % known == 0, "cannot reshape \(shape) into \(newShape)")
            target[hole] = numel / known
        }
        precondition(target.reduce(1, *) == numel, "cannot reshape \(shape) (\(numel) elements) into \(newShape)")
        if target == shape { return self }
        let base = isContiguous ? self : contiguous()
        let out = Tensor(storage: base.storage, shape: target, dtype: dtype, offset: base.offset)
        let inputShape = shape
        return Tensor.record(out, "reshape", inputs: [self]) { g in [g.reshape(inputShape)] }
    }

    public func flatten(from start: Int = 0) -> Tensor {
        let s = axis(start)
        return reshape(Array(shape[..<s]) + [shape[s...].reduce(1, *)])
    }

    public func permute(_ order: [Int]) -> Tensor {
        precondition(order.count == rank && Set(order) == Set(0..<rank), "permute \(order) for rank \(rank)")
        if order == Array(0..<rank) { return self }
        let out = Tensor(storage: storage, shape: order.map { shape[$0] }, dtype: dtype,
                         strides: order.map { strides[$0] }, offset: offset)
        var inverse = [Int](repeating: 0, count: rank)
        for (i, o) in order.enumerated() { inverse[o] = i }
        return Tensor.record(out, "permute", inputs: [self]) { g in [g.permute(inverse)] }
    }

    public func transposed(_ a: Int = -2, _ b: Int = -1) -> Tensor {
        var order = Array(0..<rank)
        order.swapAt(axis(a), axis(b))
        return permute(order)
    }

    /// Elements `start..<end` (step `step`) along `axis`.
    public func slice(_ axisIndex: Int, _ start: Int, _ end: Int, step: Int = 1) -> Tensor {
        let a = axis(axisIndex)
        precondition(step >= 1 && start >= 0 && start <= end && end <= shape[a],
                     "slice \(start)..<\(end) step \(step) of axis \(a) with size \(shape[a])")
        var newShape = shape, newStrides = strides
        newShape[a] = (end - start + step - 1) / step
        newStrides[a] = strides[a] * step
        let out = Tensor(storage: storage, shape: newShape, dtype: dtype, strides: newStrides,
                         offset: offset + start * strides[a])
        let inputShape = shape, dt = dtype, dev = device
        return Tensor.record(out, "slice", inputs: [self]) { g in
            let full = Tensor(zeros: inputShape, dtype: dt, device: dev)
            full.storeView(g, axis: a, start: start, end: end, step: step)
            return [full]
        }
    }

    /// Writes `values` into self[..., start..<end:step, ...] along `axis` (no autograd; internal).
    func storeView(_ values: Tensor, axis a: Int, start: Int, end: Int, step: Int = 1) {
        var newShape = shape, newStrides = strides
        newShape[a] = (end - start + step - 1) / step
        newStrides[a] = strides[a] * step
        let view = Tensor(storage: storage, shape: newShape, dtype: dtype, strides: newStrides,
                          offset: offset + start * strides[a])
        backend(for: device).copy(values, into: view)
    }

    /// Size-1 axes broadcast to `target` (trailing alignment, like NumPy) without copying.
    public func expand(_ target: [Int]) -> Tensor {
        if target == shape { return self }
        precondition(target.count >= rank, "cannot expand \(shape) to \(target)")
        let lead = target.count - rank
        var newStrides = [Int](repeating: 0, count: target.count)
        for i in 0..<target.count {
            if i < lead { continue }
            let s = shape[i - lead]
            precondition(s == target[i] || s == 1, "cannot expand \(shape) to \(target)")
            newStrides[i] = s == 1 && target[i] != 1 ? 0 : strides[i - lead]
        }
        let out = Tensor(storage: storage, shape: target, dtype: dtype, strides: newStrides, offset: offset)
        let inputShape = shape
        return Tensor.record(out, "expand", inputs: [self]) { g in [g.sumToShape(inputShape)] }
    }

    public func unsqueeze(_ a: Int) -> Tensor {
        let at = a < 0 ? a + rank + 1 : a
        var s = shape
        s.insert(1, at: at)
        return reshape(s)
    }

    public func squeeze(_ a: Int) -> Tensor {
        let at = axis(a)
        precondition(shape[at] == 1, "squeeze axis \(a) has size \(shape[at])")
        var s = shape
        s.remove(at: at)
        return reshape(s)
    }

    /// This tensor if it is contiguous, else a contiguous copy (differentiable).
    public func contiguous() -> Tensor {
        if isContiguous { return self }
        let out = contiguousCopy()
        return Tensor.record(out, "contiguous", inputs: [self]) { g in [g] }
    }

    /// A fresh contiguous copy that owns its memory (not recorded in the graph).
    public func contiguousCopy() -> Tensor {
        backend(for: device).transfer(self, to: device)
    }

    /// Conversion to another dtype (differentiable between floating types).
    public func to(_ target: DType) -> Tensor {
        if target == dtype { return self }
        let out = Tensor(unfilled: shape, dtype: target, device: device)
        backend(for: device).copy(self, into: out)
        let source = dtype
        if source.isFloatingPoint && target.isFloatingPoint {
            return Tensor.record(out, "to(\(target))", inputs: [self]) { g in [g.to(source)] }
        }
        return out
    }

    /// A copy on `device` (differentiable).
    public func to(_ target: Device) -> Tensor {
        if target == device { return self }
        let out = copied(to: target)
        let source = device
        return Tensor.record(out, "to(\(target))", inputs: [self]) { g in [g.to(source)] }
    }

    /// A contiguous copy on `device`, outside autograd.
    public func copied(to target: Device) -> Tensor {
        if target == device { return contiguousCopy() }
        // The non-CPU side owns the transfer.
        let b = device == .cpu ? backend(for: target) : backend(for: device)
        return b.transfer(isContiguous ? self : contiguousCopy(), to: target)
    }

    /// Overwrites this tensor's elements with `source` (same shape; dtype converted). No autograd:
    /// used for loading weights and optimizer updates.
    public func assign(_ source: Tensor) {
        precondition(source.shape == shape, "assign: shape \(source.shape) into \(shape)")
        let src = source.device == device ? source : source.copied(to: device)
        backend(for: device).copy(src, into: self)
    }
}
