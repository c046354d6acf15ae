/// Iteration over up to three same-shaped strided views, with dimensions merged wherever every
/// operand is contiguous across them, so most loops reduce to one long inner run.
struct StridedLayout {
    var shape: [Int]
    /// strides[operand][axis], in elements.
    var strides: [[Int]]

    init(shape: [Int], strides: [[Int]]) {
        // Drop size-1 axes, then merge axis pairs that are contiguous for every operand.
        var dims: [(Int, [Int])] = []
        for axis in 0..<shape.count where shape[axis] != 1 {
            dims.append((shape[axis], strides.map { $0[axis] }))
        }
        var merged: [(Int, [Int])] = []
        for dim in dims {
            if let last = merged.last,
               zip(last.1, dim.1).allSatisfy({ $0 == $1 * dim.0 }) {
                merged[merged.count - 1] = (last.0 * dim.0, dim.1)
            } else {
                merged.append(dim)
            }
        }
        if merged.isEmpty { merged = [(shape.contains(0) ? 0 : 1, strides.map { _ in 1 })] }
        if shape.contains(0) { merged = [(0, strides.map { _ in 1 })] }
        self.shape = merged.map { $0.0 }
        self.strides = (0..<strides.count).map { op in merged.map { $0.1[op] } }
    }

    var innerCount: Int { shape.last! }
    func innerStride(_ operand: Int) -> Int { strides[operand].last! }
    var rowCount: Int { shape.dropLast().reduce(1, *) }

    /// Calls `body(row, offsets)` for each inner row; offsets are element offsets per operand.
    /// Rows `range` of the outer index space (row-major over all axes but the last).
    func forEachRow(_ range: Range<Int>, _ body: (_ offsets: UnsafeMutableBufferPointer<Int>) -> Void) {
        let outerRank = shape.count - 1
        let operands = strides.count
        withUnsafeTemporaryAllocation(of: Int.self, capacity: max(outerRank, 1)) { index in
            withUnsafeTemporaryAllocation(of: Int.self, capacity: operands) { offsets in
                // Decompose range.lowerBound into an outer index.
                var rest = range.lowerBound
                for axis in stride(from: outerRank - 1, through: 0, by: -1) {
                    index[axis] = rest % shape[axis]
                    rest /= shape[axis]
                }
                for op in 0..<operands {
                    var o = 0
                    for axis in 0..<outerRank { o += index[axis] * strides[op][axis] }
                    offsets[op] = o
                }
                for _ in range {
                    body(offsets)
                    // Increment the outer index and offsets incrementally.
                    var axis = outerRank - 1
                    while axis >= 0 {
                        index[axis] += 1
                        for op in 0..<operands { offsets[op] += strides[op][axis] }
                        if index[axis] < shape[axis] { break }
                        for op in 0..<operands { offsets[op] -= strides[op][axis] * shape[axis] }
                        index[axis] = 0
                        axis -= 1
                    }
                }
            }
        }
    }
}
