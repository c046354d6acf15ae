import Foundation
import XCTest
@testable import DiffusionModels

/// The parity check of every DiffusionModels test against a reference tensor:
/// relError = max|actual − expected| / max|expected| ≤ tolerance, shapes equal, and a NaN on one
/// side only fails. PARITY_VERBOSE=1 (or the older UNET_/VAE_/PIPELINE_VERBOSE=1) prints each error.
func assertParityClose(_ actual: Tensor, _ expected: Tensor, _ tolerance: Double, _ message: String,
                       file: StaticString = #filePath, line: UInt = #line) {
    XCTAssertEqual(actual.shape, expected.shape, "\(message): shape", file: file, line: line)
    guard actual.shape == expected.shape else { return }
    let a = actual.toArray(), b = expected.toArray()
    var diff = 0.0, scale = 0.0
    for i in 0..<a.count {
        diff = max(diff, abs(a[i] - b[i]))
        scale = max(scale, abs(b[i]))
        if a[i].isNaN != b[i].isNaN || a[i].isInfinite != b[i].isInfinite { diff = .infinity }
    }
    let rel = scale > 0 ? diff / scale : diff
    let environment = ProcessInfo.processInfo.environment
    if ["PARITY_VERBOSE", "UNET_VERBOSE", "VAE_VERBOSE", "PIPELINE_VERBOSE"].contains(where: { environment[$0] == "1" }) {
        print("relError \(message): \(rel)")
    }
    XCTAssertLessThanOrEqual(rel, tolerance, "\(message): relative error \(rel) (max abs diff \(diff))", file: file, line: line)
}
