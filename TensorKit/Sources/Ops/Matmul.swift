extension Tensor {
    /// Matrix product with NumPy broadcasting over batch axes: [..., M, K] · [..., K, N].
    /// A 1-D operand is treated as a row (left) or column (right) vector and that axis is dropped;
    /// two 1-D operands give their dot product, a 0-D tensor.
    public func matmul(_ other: Tensor) -> Tensor {
        if rank == 1 && other.rank == 1 { return unsqueeze(0).matmul(other.unsqueeze(1)).reshape([]) }  // a dot product
        if rank == 1 { return unsqueeze(0).matmul(other).squeeze(-2) }
        if other.rank == 1 { return matmul(other.unsqueeze(-1)).squeeze(-1) }
        precondition(dtype == other.dtype && device == other.device, "matmul: \(dtype)/\(device) vs \(other.dtype)/\(other.device)")
        let m = shape[rank - 2], k = shape[rank - 1], k2 = other.shape[other.rank - 2], n = other.shape[other.rank - 1]
        precondition(k == k2, "matmul: inner dimensions differ: \(shape) · \(other.shape)")
        let aBatch = Array(shape.dropLast(2)), bBatch = Array(other.shape.dropLast(2))
        guard let batch = broadcastShape(aBatch, bBatch) else {
            preconditionFailure("matmul: batch shapes \(aBatch) and \(bBatch) do not broadcast")
        }
        let b = batch.reduce(1, *)
        let lhs = self.detach(), rhs = other.detach()
        let result: Tensor
        if other.rank == 2, lhs.isContiguous, !aBatch.isEmpty {
            // [..., M, K] · [K, N]: one GEMM over all rows.
            let flat = lhs.reshape([1, b * m, k])
            result = backend(for: device).matmul(flat, Tensor.batched3D(rhs, 1)).reshape(batch + [m, n])
        } else {
            let a3 = Tensor.batched3D(lhs.expand(batch + [m, k]), b)
            let b3 = Tensor.batched3D(rhs.expand(batch + [k, n]), b)
            result = backend(for: device).matmul(a3, b3).reshape(batch + [m, n])
        }
        // Each operand is kept alive only for the other's gradient, and only when that gradient is
        // needed: a frozen weight (LoRA's base layers) neither keeps its input nor costs a GEMM.
        let aShape = shape, bShape = other.shape
        let savedRhs = requiresGrad ? rhs : nil, savedLhs = other.requiresGrad ? lhs : nil
        // A matrix operand laid out column-major (a transposed view: `linear`'s weight.transposed())
        // gets its gradient in the same layout, (Gᵀ·A)ᵀ, so that the transpose's backward hands the
        // weight a contiguous gradient it can keep, not a transposed view to copy (PyTorch's
        // mm_mat2_backward does the same).
        let bColumnMajor = other.rank == 2 && k > 1 && n > 1 && other.strides == [1, k]
        return Tensor.record(result, "matmul", inputs: [self, other]) { g in
            let gradA = savedRhs.map { g.matmul($0.transposed()).sumToShape(aShape) }
            let gradB = savedLhs.map { a -> Tensor in
                if bShape.count == 2 && aShape.count >= 2 {
                    // Σ over the batch of [M, K]ᵀ·[M, N] is one GEMM over all B·M rows.
                    let rowsA = a.reshape([-1, k]), rowsG = g.reshape([-1, n])
                    if bColumnMajor { return rowsG.transposed().matmul(rowsA).transposed() }
                    return rowsA.transposed().matmul(rowsG)
                }
                return a.transposed().matmul(g).sumToShape(bShape)
            }
            return [gradA, gradB]
        }
    }

    /// Views [..., R, C] as [B, R, C] when the batch axes collapse to one stride, else copies.
    static func batched3D(_ t: Tensor, _ b: Int) -> Tensor {
        let r = t.shape[t.rank - 2], c = t.shape[t.rank - 1]
        var walk: Int? = nil, expected = 0, collapses = true
        for axis in stride(from: t.rank - 3, through: 0, by: -1) where t.shape[axis] != 1 {
            if walk == nil {
                walk = t.strides[axis]
                expected = t.strides[axis] * t.shape[axis]
            } else if t.strides[axis] == expected {
                expected *= t.shape[axis]
            } else {
                collapses = false
                break
            }
        }
        if collapses {
            return Tensor(storage: t.storage, shape: [b, r, c], dtype: t.dtype,
                          strides: [walk ?? 0, t.strides[t.rank - 2], t.strides[t.rank - 1]], offset: t.offset)
        }
        return t.contiguousCopy().reshape([b, r, c])
    }
}

/// y = x · Wᵀ + b with W [out, in] (PyTorch's `F.linear`). With `residual` (y's shape), returns
/// y + residual with the bias and residual adds in one pass (`addingBiasAndResidual`), as a
/// transformer block's `out + hidden` after its last projection.
public func linear(_ x: Tensor, weight: Tensor, bias: Tensor?, residual: Tensor? = nil) -> Tensor {
    let y = x.matmul(weight.transposed())
    if residual != nil { return addingBiasAndResidual(y, bias: bias, residual: residual) }
    return bias.map { y + $0 } ?? y
}
