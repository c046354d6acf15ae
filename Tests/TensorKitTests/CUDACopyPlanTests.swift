import XCTest
@testable import TensorKit

/// The CUDA backend's plans for fast strided copies (`CUDAGeometry.vectorized`, `batchedTranspose`),
/// checked without a GPU: each plan, carried out byte by byte as its kernel would (units at the
/// planned offsets; the transpose's dst[b, p, q] ← src[b, p, q]), must move exactly the bytes an
/// element-by-element copy over the original view moves. The kernels themselves run under the host
/// emulation (CUDAKernelEmulationTests.testCopyKernelsMatchLoops) and on a device in gpu-check.
final class CUDACopyPlanTests: XCTestCase {
    enum Plan: Equatable { case transpose, units(Int), none }

    struct View {
        var shape: [Int], strides: [Int], offset: Int
        init(_ t: Tensor) { shape = Array(t.shape); strides = Array(t.strides); offset = t.offset }
        init(contiguous shape: [Int]) { self.shape = shape; strides = Tensor.contiguousStrides(shape); offset = 0 }
        /// Elements a buffer needs to hold the view.
        var extent: Int { offset + zip(shape, strides).map { ($0 - 1) * $1 }.reduce(0, +) + 1 }
    }

    /// Copies `source` into `destination` (views of `es`-byte elements over two byte buffers) by
    /// the plan the backend would choose, and element by element; asserts the plan kind and that
    /// both move the same bytes (and leave the same bytes alone).
    func check(_ name: String, source: View, destination: View, es: Int, expect: Plan,
               file: StaticString = #filePath, line: UInt = #line) {
        precondition(source.shape == destination.shape)
        var state: UInt64 = 0x9E37_79B9_7F4A_7C15
        func byte() -> UInt8 { state = state &* 6_364_136_223_846_793_005 &+ 1_442_695_040_888_963_407; return UInt8(truncatingIfNeeded: state >> 33) }
        let src = (0..<source.extent * es).map { _ in byte() }
        let noise = (0..<destination.extent * es).map { _ in byte() }

        var want = noise
        let count = source.shape.reduce(1, *)
        for linear in 0..<count {
            var rest = linear, s = source.offset, d = destination.offset
            for a in source.shape.indices.reversed() {
                let i = rest % source.shape[a]; rest /= source.shape[a]
                s += i * source.strides[a]; d += i * destination.strides[a]
            }
            for b in 0..<es { want[d * es + b] = src[s * es + b] }
        }

        var got = noise
        let g = CUDAGeometry(shape: source.shape, strides: [destination.strides, source.strides])
        // Buffers start 256-byte aligned, as the caching allocator's blocks do.
        let addresses = [UInt64(destination.offset * es), UInt64(source.offset * es)]
        var plan = Plan.none
        if es >= 2, let t = g.batchedTranspose() {
            plan = .transpose
            for b in 0..<t.batches { for p in 0..<t.p { for q in 0..<t.q {
                let d = destination.offset + b * t.db + p * t.dp + q, s = source.offset + b * t.sb + p + q * t.sq
                for k in 0..<es { got[d * es + k] = src[s * es + k] }
            } } }
        } else {
            var (geometry, unit) = (g, es)
            if let v = g.vectorized(elementSize: es, addresses: addresses) { (geometry, unit) = v; plan = .units(unit) }
            for linear in 0..<geometry.count {
                var rest = linear, s = 0, d = 0
                for a in geometry.shape.indices.reversed() {
                    let i = rest % geometry.shape[a]; rest /= geometry.shape[a]
                    d += i * geometry.strides[0][a]; s += i * geometry.strides[1][a]
                }
                let dByte = destination.offset * es + d * unit, sByte = source.offset * es + s * unit
                for k in 0..<unit { got[dByte + k] = src[sByte + k] }
            }
        }
        XCTAssertEqual(plan, expect, "\(name): plan", file: file, line: line)
        XCTAssertTrue(got == want, "\(name): the planned copy moves other bytes than the element-wise copy", file: file, line: line)
    }

    func testHeadSplitMovesWholeSixteenByteUnits() {
        // Attention.splitHeads: [B, N, H·D] → [B, N, H, D] → [B, H, N, D], made contiguous.
        // Rows of 5 floats have no whole unit wider than the element: the element-wise copy.
        for (dtype, d, plan) in [(DType.float16, 40, Plan.units(16)), (.float32, 40, .units(16)), (.float16, 20, .units(8)),
                                 (.float16, 6, .units(4)), (.float32, 5, .none)] {
            let t = Tensor.zeros([2, 70, 4 * d], dtype: dtype).reshape([2, 70, 4, d]).transposed(1, 2)
            check("head split \(dtype) d \(d)", source: View(t), destination: View(contiguous: Array(t.shape)),
                  es: dtype.byteSize, expect: plan)
        }
        // And back (the gradient's reshape through the transposed view).
        let t = Tensor.zeros([2, 4, 70, 40], dtype: .float16).transposed(1, 2)
        check("heads merged", source: View(t), destination: View(contiguous: Array(t.shape)), es: 2, expect: .units(16))
    }

    func testConcatSliceAndMisalignedViews() {
        // A concat's store into channels 16..<40 of a [2, 64, 6, 6] buffer: rows of 24·36 halves.
        let buffer = Tensor.zeros([2, 64, 6, 6], dtype: .float16)
        let slice = buffer.slice(1, 16, 40)
        check("concat slice", source: View(contiguous: [2, 24, 6, 6]), destination: View(slice), es: 2, expect: .units(16))
        // A slice starting one element in: no unit wider than the element is aligned on both sides.
        let odd = Tensor.zeros([3, 65], dtype: .float16).slice(1, 1, 65)
        check("misaligned slice", source: View(odd), destination: View(contiguous: [3, 64]), es: 2, expect: .none)
        // Two elements in: 4-byte units are.
        let two = Tensor.zeros([3, 66], dtype: .float16).slice(1, 2, 66)
        check("4-byte aligned slice", source: View(two), destination: View(contiguous: [3, 64]), es: 2, expect: .units(4))
        // A broadcast row (stride 0 outside the unit axis) still moves in units.
        let row = Tensor.zeros([1, 48], dtype: .float32).expand([5, 48])
        check("broadcast rows", source: View(row), destination: View(contiguous: [5, 48]), es: 4, expect: .units(16))
    }

    func testChannelTransposesTakeTheTiledKernel() {
        // Transformer2D: [B, C, H, W] → [B, H·W, C] tokens, and back; 2-, 4- and 8-byte elements.
        for dtype in [DType.float16, .float32, .float64] {
            let x = Tensor.zeros([2, 40, 9, 8], dtype: dtype)
            let tokens = x.reshape([2, 40, 72]).transposed(1, 2)
            check("NCHW → tokens \(dtype)", source: View(tokens), destination: View(contiguous: [2, 72, 40]), es: dtype.byteSize, expect: .transpose)
            let back = Tensor.zeros([2, 72, 40], dtype: dtype).transposed(1, 2)
            check("tokens → NCHW \(dtype)", source: View(back), destination: View(contiguous: [2, 40, 72]), es: dtype.byteSize, expect: .transpose)
        }
        // One matrix (rank 2 once merged), into a slice of a wider destination.
        let m = Tensor.zeros([50, 33], dtype: .float16).transposed(0, 1)
        let wide = Tensor.zeros([33, 64], dtype: .float16).slice(1, 8, 58)
        check("matrix into a slice", source: View(m), destination: View(wide), es: 2, expect: .transpose)
        // The tensor-core convolution's channels-last operands: its own plan is the one the planner
        // makes for the permuted view (whose moves the checks above carry out byte by byte).
        let image = Tensor.zeros([3, 40, 6, 7], dtype: .float16)
        let permuted = image.permute([0, 2, 3, 1])
        check("NCHW → NHWC", source: View(permuted), destination: View(contiguous: Array(permuted.shape)), es: 2, expect: .transpose)
        XCTAssertEqual(CUDAGeometry(shape: Array(permuted.shape), strides: [Tensor.contiguousStrides(Array(permuted.shape)), Array(permuted.strides)])
                        .batchedTranspose(), CUDABackend.channelsLastPlan(n: 3, c: 40, inner: 42))
        // Under a tile on one side: the element-wise kernel.
        let thin = Tensor.zeros([2, 3, 100], dtype: .float16).transposed(1, 2)
        check("3 channels", source: View(thin), destination: View(contiguous: [2, 100, 3]), es: 2, expect: .none)
    }
}
