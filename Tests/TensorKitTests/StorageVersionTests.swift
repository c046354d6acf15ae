import XCTest
@testable import TensorKit

/// `Storage.version`, which caches of converted weights compare (CUDA's channels-last convolution
/// weights, LoRA's half-precision casts): it moves with every write into a storage through a backend
/// (`copy(_:into:)`, `fill`) and not with reads. (Writes through `pointer`, as the CPU optimizers'
/// fused loops make, are not counted; the caches serve GPU tensors, which only backends write.)
final class StorageVersionTests: XCTestCase {
    func testWritesMoveTheVersionAndReadsDoNot() {
        let t = Tensor.randn([3, 4], seed: 1)
        var last = t.storage.version
        func moved(_ label: String, file: StaticString = #filePath, line: UInt = #line) {
            XCTAssertGreaterThan(t.storage.version, last, "\(label) did not move the version", file: file, line: line)
            last = t.storage.version
        }
        _ = (t * 2 + 1).sum().item()
        _ = t.contiguous()
        _ = t.transposed(0, 1).contiguous()
        _ = t.to(.float64)
        XCTAssertEqual(t.storage.version, last, "reads and ops on a tensor do not write its storage")
        t.assign(Tensor.zeros([3, 4]))
        moved("assign")
        t.storeView(Tensor.ones([3, 2]), axis: 1, start: 1, end: 3)
        moved("storeView")
        CPUBackend.shared.fill(t, with: 5)
        moved("fill")
        XCTAssertEqual(t.toArray(), [Double](repeating: 5, count: 12))
        // A view shares the storage, so a write through it moves the same version.
        let row = t.slice(0, 1, 2)
        row.assign(Tensor.zeros([1, 4]))
        moved("assign through a view")
    }
}
