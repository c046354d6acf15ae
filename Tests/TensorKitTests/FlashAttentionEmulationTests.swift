import Foundation
import XCTest
@testable import TensorKit

/// Runs the CUDA flash-attention kernels (forward, dQ, dK/dV) on the CPU: the exact source NVRTC
/// compiles, with its three PTX `asm` statements (two `cvt`s, one `mma.sync`) replaced by the host
/// emulations in scripts/emulate/cuda_host.h, built with g++ together with
/// scripts/emulate/flash_attention_check.cpp, which compares every output and gradient with attention
/// computed in double from the same rounded inputs (tolerance 1e-2, as the GPU op check). This checks
/// index arithmetic, fragment layouts, masking and the algorithm without a GPU; gpu-check's
/// "attention flash" cases check the real tensor cores. Skips without g++.
final class FlashAttentionEmulationTests: XCTestCase {
    static let emulation = URL(fileURLWithPath: #filePath).deletingLastPathComponent()
        .appendingPathComponent("../../scripts/emulate").standardized

    /// The kernel source with each `asm` statement swapped for its host emulation.
    static func hostSource(_ dtype: DType) throws -> String {
        var text = CUDAKernelSources.source(family: "flash_attention", dtype: dtype).source
        let substitutions: [(String, String)] = [
            (#"asm\("cvt\.f32\.f16 %0, %1;" : "=f"\(f\) : "h"\(h\)\);"#, "f = tk_host_half_to_float(h);"),
            (#"asm\("cvt\.rn\.f16\.f32 %0, %1;" : "=h"\(h\) : "f"\(f\)\);"#, "h = tk_host_float_to_half(f);"),
            (#"#if TK_DTYPE == 2\n\s*asm volatile\("mma\.sync.*?\);\n"#, "tk_host_mma(c, a, b0, b1);\n"),
        ]
        for (pattern, replacement) in substitutions {
            let regex = try NSRegularExpression(pattern: pattern, options: [.dotMatchesLineSeparators])
            let range = NSRange(text.startIndex..., in: text)
            guard let match = regex.firstMatch(in: text, range: range), let r = Range(match.range, in: text) else {
                throw NSError(domain: "FlashAttentionEmulation", code: 1, userInfo: [NSLocalizedDescriptionKey: "no match for \(pattern)"])
            }
            text.replaceSubrange(r, with: replacement)
        }
        return text
    }

    func testFlashKernelsMatchDoublePrecisionAttention() throws {
        guard let gxx = ["/usr/bin/g++", "/usr/local/bin/g++"].first(where: { FileManager.default.isExecutableFile(atPath: $0) }) else {
            print("skipped: g++ not found (scripts/install-deps.sh installs it)")
            throw XCTSkip("g++ not found")
        }
        let work = FileManager.default.temporaryDirectory.appendingPathComponent("tk-flash-emulation-\(UUID().uuidString)")
        try FileManager.default.createDirectory(at: work, withIntermediateDirectories: true)
        defer { try? FileManager.default.removeItem(at: work) }
        for dtype in [DType.float16, .bfloat16] {
            let source: String
            do { source = try Self.hostSource(dtype) } catch {
                return XCTFail("the flash kernel source no longer has the asm statements the emulation replaces: \(error)")
            }
            XCTAssertFalse(source.contains("asm("), "an asm statement the emulation does not replace")
            XCTAssertFalse(source.contains("asm volatile"), "an asm statement the emulation does not replace")
            try source.write(to: work.appendingPathComponent("flash_kernels.inc"), atomically: true, encoding: .utf8)
            let binary = work.appendingPathComponent("check-\(dtype)").path
            let build = try run(gxx, ["-std=c++20", "-O1", "-pthread", "-w", "-I", Self.emulation.path, "-I", work.path,
                                      Self.emulation.appendingPathComponent("flash_attention_check.cpp").path, "-o", binary])
            XCTAssertEqual(build.status, 0, "g++ failed:\n\(build.output)")
            guard build.status == 0 else { continue }
            let result = try run(binary, [])
            print(result.output)
            XCTAssertEqual(result.status, 0, "\(dtype): emulated flash kernels differ from the reference:\n\(result.output)")
            // Every case reported, none failed: 5 cases × 5 tensors + 3 forward-only × 2.
            let lines = result.output.split(separator: "\n").filter { $0.hasSuffix(" pass") }
            XCTAssertEqual(lines.count, 31, "\(dtype): expected 31 passing checks:\n\(result.output)")
        }
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
