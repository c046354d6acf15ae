import Foundation
import XCTest
@testable import TensorKit

/// Runs CUDA kernels on the CPU: the exact source NVRTC compiles, with its PTX `asm` statements (the
/// prelude's two `cvt`s; the flash kernels' `mma.sync`, `ldmatrix`, `cp.async` and paired `cvt`)
/// replaced (by scripts/emu-cuda/make_module.py --host-source) with the host emulations in
/// scripts/emulate/cuda_host.h (a block is OS threads with barriers, a warp exchanges through a
/// buffer), built with g++ together with a driver in scripts/emulate/ that compares the kernels'
/// results with loops written there. This checks index arithmetic, fragment layouts, masking and
/// the algorithms without a GPU; gpu-check's cases on a device have the last word. Skips without g++
/// or python3.
final class CUDAKernelEmulationTests: XCTestCase {
    static let emulation = URL(fileURLWithPath: #filePath).deletingLastPathComponent()
        .appendingPathComponent("../../scripts/emulate").standardized

    /// The flash kernels (forward, the backward's row dot, dQ, dK/dV) against attention in double from
    /// the same rounded inputs, float16 and bfloat16, tolerance 1e-2 as the GPU op check (the row dot
    /// 1e-5): operands contiguous, as the heads of a [B, N, H·D] projection and within wider rows;
    /// 62 checks per build and dtype, for the plain build and the pipelined one with its copies
    /// landing late and early.
    func testFlashAttentionKernelsMatchDoublePrecisionAttention() throws {
        for dtype in [DType.float16, .bfloat16] {
            let output = try runDriver("flash_attention_check.cpp", include: "flash_kernels.inc", family: "flash_attention", dtype: dtype)
            let passed = output.split(separator: "\n").filter { $0.hasSuffix(" pass") }
            XCTAssertEqual(passed.count, 3 * 62, "\(dtype): expected 186 passing checks:\n\(output)")
        }
    }

    /// im2col (whole images and bands of output rows, 32- and 64-bit indexing), col2im (strides,
    /// dilation, a 3×5 kernel) and the bias+residual epilogue (its vector path and, off alignment,
    /// its element path), float32, exactly: 19 checks.
    func testConvolutionKernelsMatchLoops() throws {
        let output = try runDriver("conv_kernels_check.cpp", include: "conv_kernels.inc", family: "conv", dtype: .float32)
        let passed = output.split(separator: "\n").filter { $0.hasSuffix(" pass") }
        XCTAssertEqual(passed.count, 19, "expected 19 passing checks:\n\(output)")
    }

    /// Group norm (fused SiLU or not, affine or not, 32- and 64-bit indexing, groups cut into several
    /// chunks, a large mean, channel planes of whole 16-byte vectors) forward, dx, dw, db and layer
    /// norm forward, dx (a block per row and a warp per row) and the two-pass dw, db, float32,
    /// against double: 86 checks.
    func testNormalisationKernelsMatchDoublePrecision() throws {
        let output = try runDriver("norm_kernels_check.cpp", include: "norm_kernels.inc", family: "norm", dtype: .float32)
        let passed = output.split(separator: "\n").filter { $0.hasSuffix(" pass") }
        XCTAssertEqual(passed.count, 86, "expected 86 passing checks:\n\(output)")
    }

    /// The fused GEGLU kernels, forward and backward (with and without a bias, 32- and 64-bit
    /// indexing, rows of whole vectors and not), and the vector and element paths of binary add/mul, unary silu and its gradient
    /// (a tail past the last whole vector, an operand off alignment, a broadcast operand, a value per
    /// row of whole vectors on either side), float32
    /// and float16, against loops and double: 27 checks per dtype.
    func testElementwiseKernelsMatchDoublePrecision() throws {
        for dtype in [DType.float32, .float16] {
            let output = try runDriver("elementwise_kernels_check.cpp", include: "elementwise_kernels.inc", family: "elementwise", dtype: dtype)
            let passed = output.split(separator: "\n").filter { $0.hasSuffix(" pass") }
            XCTAssertEqual(passed.count, 27, "\(dtype): expected 27 passing checks:\n\(output)")
        }
    }

    /// The tensor-core convolution (tk_conv_mma: forward with bias/residual, several tiles, stride 2,
    /// a dilated 5×3 window, 8 channels; the stride-1 input gradient), float16 and bfloat16, cp.async
    /// landing late and early: 12 checks per dtype against double. (Its channels-last operands come
    /// from tk_copy_transpose, checked in testCopyKernelsMatchLoops.)
    func testConvolutionMMAKernelsMatchDoublePrecision() throws {
        for dtype in [DType.float16, .bfloat16] {
            let output = try runDriver("conv_mma_check.cpp", include: "conv_mma_kernels.inc", family: "conv_mma", dtype: dtype)
            let passed = output.split(separator: "\n").filter { $0.hasSuffix(" pass") }
            XCTAssertEqual(passed.count, 12, "\(dtype): expected 12 passing checks:\n\(output)")
        }
    }

    /// The copy kernels' fast forms: tk_copy_transpose (2-, 4-, 8-byte elements, partial tiles,
    /// slices on both sides) and tk_copy moving 16-, 8- and 2-byte units through TKGeom offsets
    /// (head splits, a concat's channel slice), byte for byte against loops: 11 checks.
    func testCopyKernelsMatchLoops() throws {
        let output = try runDriver("memory_kernels_check.cpp", include: "memory_kernels.inc", family: "memory", dtype: nil)
        let passed = output.split(separator: "\n").filter { $0.hasSuffix(" pass") }
        XCTAssertEqual(passed.count, 11, "expected 11 passing checks:\n\(output)")
    }

    /// The family's source with each `asm` statement swapped for its host emulation, by
    /// scripts/emu-cuda/make_module.py (the emulated CUDA device builds its modules from the same
    /// substitutions); it fails on a statement it has no emulation for.
    static func hostSource(family: String, dtype: DType?, work: URL) throws -> String {
        let raw = work.appendingPathComponent("kernels.cu"), substituted = work.appendingPathComponent("kernels.host")
        try CUDAKernelSources.source(family: family, dtype: dtype).source.write(to: raw, atomically: true, encoding: .utf8)
        let script = emulation.deletingLastPathComponent().appendingPathComponent("emu-cuda/make_module.py").path
        let process = Process()
        process.executableURL = URL(fileURLWithPath: "/usr/bin/env")
        process.arguments = ["python3", script, "--host-source", raw.path, substituted.path]
        let pipe = Pipe()
        process.standardError = pipe
        try process.run()
        let errors = String(decoding: pipe.fileHandleForReading.readDataToEndOfFile(), as: UTF8.self)
        process.waitUntilExit()
        if process.terminationStatus == 127 {
            print("skipped: python3 not found (scripts/install-deps.sh installs it)")
            throw XCTSkip("python3 not found")
        }
        guard process.terminationStatus == 0 else {
            throw NSError(domain: "CUDAKernelEmulation", code: 1,
                          userInfo: [NSLocalizedDescriptionKey: "\(family): make_module.py --host-source failed: \(errors)"])
        }
        return try String(contentsOf: substituted, encoding: .utf8)
    }

    /// Builds `driver` with the family's host source as `include`, runs it and returns its output;
    /// fails the test unless both succeed.
    private func runDriver(_ driver: String, include: String, family: String, dtype: DType?) throws -> String {
        guard let gxx = ["/usr/bin/g++", "/usr/local/bin/g++"].first(where: { FileManager.default.isExecutableFile(atPath: $0) }) else {
            print("skipped: g++ not found (scripts/install-deps.sh installs it)")
            throw XCTSkip("g++ not found")
        }
        let work = FileManager.default.temporaryDirectory.appendingPathComponent("tk-emulation-\(UUID().uuidString)")
        try FileManager.default.createDirectory(at: work, withIntermediateDirectories: true)
        defer { try? FileManager.default.removeItem(at: work) }
        let source = try Self.hostSource(family: family, dtype: dtype, work: work)
        XCTAssertFalse(source.contains("asm(") || source.contains("asm volatile"), "\(family): an asm statement the emulation does not replace")
        try source.write(to: work.appendingPathComponent(include), atomically: true, encoding: .utf8)
        let binary = work.appendingPathComponent("check").path
        let build = try run(gxx, ["-std=c++20", "-O1", "-pthread", "-w", "-I", Self.emulation.path, "-I", work.path,
                                  Self.emulation.appendingPathComponent(driver).path, "-o", binary])
        XCTAssertEqual(build.status, 0, "g++ failed on \(driver):\n\(build.output)")
        guard build.status == 0 else { return build.output }
        let result = try run(binary, [])
        print(result.output)
        XCTAssertEqual(result.status, 0, "\(family) \(dtype.map { "\($0)" } ?? "untyped"): emulated kernels differ from the reference:\n\(result.output)")
        return result.output
    }

    private func run(_ executable: String, _ arguments: [String]) throws -> (status: Int32, output: String) {
        let process = Process()
        process.executableURL = URL(fileURLWithPath: executable)
        process.arguments = arguments
        let pipe = Pipe()
        process.standardOutput = pipe
        process.standardError = pipe
        try process.run()
        let data = pipe.fileHandleForReading.readDataToEndOfFile()
        process.waitUntilExit()
        return (process.terminationStatus, String(decoding: data, as: UTF8.self))
    }
}
