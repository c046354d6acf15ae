import XCTest
@testable import TensorKit

/// Sums over every kind of axis set against a naive double-precision loop over the same values
/// (independent of the kernel's run merging, column blocks, 1024-row chunks and long-row split):
/// leading, middle, trailing, split and all axes, size-1 and empty axes, views, and sizes that cross
/// the chunk and block boundaries.
final class ReductionTests: XCTestCase {
    /// Σ over `axes` of `values` (row-major `shape`), by visiting every element once.
    func naiveSum(_ values: [Double], shape: [Int], axes: [Int]) -> [Double] {
        let kept = (0..<shape.count).filter { !axes.contains($0) }
        let outCount = kept.reduce(1) { $0 * shape[$1] }
        var out = [Double](repeating: 0, count: outCount)
        var index = [Int](repeating: 0, count: shape.count)
        for v in values {
            var o = 0
            for a in kept { o = o * shape[a] + index[a] }
            out[o] += v
            var a = shape.count - 1
            while a >= 0 { index[a] += 1; if index[a] < shape[a] { break }; index[a] = 0; a -= 1 }
        }
        return out
    }

    func check(_ shape: [Int], _ axes: [Int], dtype: DType = .float32, seed: UInt64 = 1, file: StaticString = #filePath, line: UInt = #line) {
        let x = Tensor.randn(shape, seed: seed, dtype: dtype)
        let expected = naiveSum(x.toArray(), shape: shape, axes: axes)
        let got = x.sum(axes: axes)
        XCTAssertEqual(got.shape, shape.indices.filter { !axes.contains($0) }.map { shape[$0] }, file: file, line: line)
        let values = got.toArray()
        XCTAssertEqual(values.count, expected.count, file: file, line: line)
        let count = Double(axes.reduce(1) { $0 * shape[$1] })
        // float32: each input is rounded already; allow the float accumulation's error over the terms.
        let tolerance = dtype == .float64 ? 1e-12 * count.squareRoot() : 1e-6 * count.squareRoot()
        var worst = 0.0
        for (a, b) in zip(values, expected) { worst = max(worst, abs(a - b)) }
        XCTAssertLessThanOrEqual(worst, tolerance, "\(shape) over \(axes)", file: file, line: line)
    }

    func testSumsOverEveryAxisPattern() {
        check([2, 4096, 320], [0, 1])          // a bias gradient: leading axes, 8 chunks of 1024 rows
        check([3, 2100, 300], [1])             // middle axis: 3 chunks, a partial 256-column block
        check([2, 32, 8, 8], [0, 2, 3])        // a convolution bias gradient: split runs
        check([5, 7, 300], [0, 2])
        check([4, 6, 5], [2])                  // trailing: row sums
        check([4, 1, 5, 1], [1, 3])            // only size-1 axes reduced: a copy
        check([4, 1, 5, 3], [0, 1])            // a size-1 axis inside a reduced run
        check([300_000], [0])                  // a long row: chunks of 65 536 added in order
        check([3, 5, 7], [0, 1, 2])
        check([1030, 3], [0], dtype: .float64) // float64, one chunk boundary
        check([2, 2050, 3], [1], dtype: .float64)
    }

    func testSumOfAViewAndOfAnEmptyAxis() {
        let x = Tensor.randn([6, 40, 9], seed: 3)
        let view = x.permute([2, 0, 1])        // not contiguous
        let expected = naiveSum(view.contiguous().toArray(), shape: [9, 6, 40], axes: [0, 2])
        let got = view.sum(axes: [0, 2]).toArray()
        for (a, b) in zip(got, expected) { XCTAssertEqual(a, b, accuracy: 1e-4) }
        let empty = Tensor.zeros([3, 0, 4])
        XCTAssertEqual(empty.sum(axes: [1]).toArray(), Array(repeating: 0, count: 12))
        XCTAssertEqual(empty.sum(axes: [0, 1]).toArray(), [0, 0, 0, 0])
    }
}
