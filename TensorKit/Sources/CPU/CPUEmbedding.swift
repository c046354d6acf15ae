import Foundation

// Embedding lookup (row gather) and its gradient (row scatter-add).

extension CPUBackend {
    public func embedding(weight: Tensor, indices: Tensor) -> Tensor {
        precondition(weight.rank == 2 && weight.isContiguous, "embedding kernel: weight must be contiguous [V, D], got \(weight.shape)")
        let vocabulary = weight.shape[0], width = weight.shape[1]
        let rows = embeddingRowIndices(indices, vocabulary: vocabulary)
        let out = empty(indices.shape + [width], weight.dtype)
        // Rows are copied as bytes, so any storage dtype works.
        let rowBytes = width * weight.dtype.byteSize
        let src = weight.storage.pointer + weight.offset * weight.dtype.byteSize
        let dst = out.storage.pointer
        parallelFor(rows.count, minimumPerChunk: max(1, 262_144 / max(rowBytes, 1))) { range in
            for i in range { memcpy(dst + i * rowBytes, src + rows[i] * rowBytes, rowBytes) }
        }
        return out
    }

    public func embeddingBackward(_ gradOutput: Tensor, indices: Tensor, numEmbeddings: Int) -> Tensor {
        let rows = embeddingRowIndices(indices, vocabulary: numEmbeddings)
        let width = gradOutput.rank == 0 ? 1 : gradOutput.shape[gradOutput.rank - 1]
        precondition(gradOutput.shape == indices.shape + [width],
                     "embeddingBackward kernel: gradient \(gradOutput.shape) for indices \(indices.shape)")
        let g = gradOutput.contiguous()
        let out = empty([numEmbeddings, width], g.dtype)  // zero-filled
        func run<T: CPUFloat>(_: T.Type) {
            let gp = g.pointer(as: T.self), op = out.pointer(as: T.self)
            // Threads split the columns, never the indices, so repeated indices cannot race and each
            // element accumulates in index order whatever the thread count.
            let work = rows.count * width
            let columnChunks = work >= 65_536 ? min(width, cpuWorkerCount) : 1
            let per = (width + columnChunks - 1) / columnChunks
            parallelFor(columnChunks, minimumPerChunk: 1) { chunks in
                for chunk in chunks {
                    let c0 = chunk * per, c1 = min(width, c0 + per)
                    if c0 >= c1 { continue }
                    for i in 0..<rows.count {
                        let dst = op + rows[i] * width, src = gp + i * width
                        for c in c0..<c1 { dst[c] += src[c] }
                    }
                }
            }
        }
        switch g.dtype {
        case .float32: run(Float.self)
        case .float64: run(Double.self)
        default: preconditionFailure("embedding backward is not defined for \(g.dtype) on the CPU")
        }
        return out
    }
}

/// The indices as row numbers, each checked against the table size.
private func embeddingRowIndices(_ indices: Tensor, vocabulary: Int) -> [Int] {
    let idx = indices.contiguous()
    let count = idx.numel
    var rows = [Int](repeating: 0, count: count)
    func gather<I: FixedWidthInteger>(_: I.Type) {
        let p = idx.pointer(as: I.self)
        for i in 0..<count {
            let row = Int(p[i])
            precondition(row >= 0 && row < vocabulary,
                         "embedding: index \(row) (position \(i)) is out of range for a table of \(vocabulary) rows")
            rows[i] = row
        }
    }
    switch idx.dtype {
    case .int64: gather(Int64.self)
    case .int32: gather(Int32.self)
    default: preconditionFailure("embedding indices must be int32 or int64, got \(idx.dtype)")
    }
    return rows
}
