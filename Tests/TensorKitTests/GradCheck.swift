import XCTest
@testable import TensorKit

/// Central finite differences in float64 against the analytic backward, with PyTorch's gradcheck
/// tolerances (eps 1e-6, atol 1e-5, rtol 1e-3). The scalar checked is sum(f(inputs) · w) for a fixed
/// random w, so every output element's gradient path is exercised, not only their sum.
/// Inputs whose index is in `frozen` do not require grad: they must end with no `grad`, and the
/// others' gradients must still match (ops skip the gradients nobody needs).
func assertGradientsMatch(_ inputs: [Tensor], frozen: Set<Int> = [], eps: Double = 1e-6, atol: Double = 1e-5,
                          rtol: Double = 1e-3, file: StaticString = #filePath, line: UInt = #line,
                          _ f: ([Tensor]) -> Tensor) {
    for (index, input) in inputs.enumerated() {
        precondition(input.dtype == .float64 && input.isContiguous, "gradcheck inputs must be contiguous float64")
        input.requiresGrad = !frozen.contains(index)
        input.grad = nil
    }
    let probe = f(inputs)
    let weights = Tensor.randn(probe.shape, seed: 12345, dtype: .float64)
    func objective() -> Double { withNoGrad { (f(inputs) * weights).sum().item() } }

    (probe * weights).sum().backward()
    for (index, input) in inputs.enumerated() {
        if frozen.contains(index) {
            XCTAssertNil(input.grad, "frozen input \(index) received a gradient", file: file, line: line)
            continue
        }
        let analytic = input.grad?.toArray() ?? [Double](repeating: 0, count: input.numel)
        let p = input.pointer(as: Double.self)
        for i in 0..<input.numel {
            let saved = p[i]
            p[i] = saved + eps
            let plus = objective()
            p[i] = saved - eps
            let minus = objective()
            p[i] = saved
            let numeric = (plus - minus) / (2 * eps)
            if abs(analytic[i] - numeric) > atol + rtol * abs(numeric) {
                XCTFail("input \(index) element \(i): analytic \(analytic[i]) vs numeric \(numeric)", file: file, line: line)
                return
            }
        }
    }
}

/// A float64 tensor of the given shape with values from a seeded normal stream.
func randomDouble(_ shape: [Int], seed: UInt64, scale: Double = 1, shift: Double = 0) -> Tensor {
    var g = PhiloxGenerator(seed: seed)
    return Tensor.randn(shape, generator: &g, mean: shift, std: scale, dtype: .float64)
}

/// Asserts two arrays agree elementwise within atol + rtol·|expected|.
func assertClose(_ actual: [Double], _ expected: [Double], atol: Double = 1e-5, rtol: Double = 1e-4,
                 _ message: String = "", file: StaticString = #filePath, line: UInt = #line) {
    XCTAssertEqual(actual.count, expected.count, "\(message): element count", file: file, line: line)
    var worst = 0.0, worstIndex = -1
    for i in 0..<min(actual.count, expected.count) {
        let excess = abs(actual[i] - expected[i]) - (atol + rtol * abs(expected[i]))
        if excess > worst || (actual[i].isNaN != expected[i].isNaN) { worst = max(excess, 1); worstIndex = i }
    }
    if worstIndex >= 0 {
        XCTFail("\(message): element \(worstIndex) is \(actual[worstIndex]), expected \(expected[worstIndex])", file: file, line: line)
    }
}
