import XCTest
@testable import TensorKit

/// Compiles every CUDA kernel source with NVRTC for sm_80 and sm_90. NVRTC is a CPU-only library,
/// so this runs without a GPU: scripts/test.sh installs the pinned nvidia-cuda-nvrtc wheel
/// (scripts/install-nvrtc.sh) and exports TENSORKIT_NVRTC_PATH. Any error or warning fails.
final class CUDAKernelCompileTests: XCTestCase {
    func testEveryKernelCompilesCleanlyForSm80AndSm90() throws {
        guard NVRTC.isAvailable else {
            let reason = NVRTC.unavailableReason ?? "NVRTC not found"
            print("skipped: NVRTC not found (looked in \(reason))")
            throw XCTSkip("skipped: NVRTC not found (looked in \(reason))")
        }
        print("NVRTC \(NVRTC.version ?? "?") from \(NVRTC.libraryPath ?? "?")")
        let sources = CUDAKernelSources.all
        XCTAssertGreaterThanOrEqual(sources.count, 29)
        for arch in [80, 90] {
            for source in sources {
                do {
                    let result = try NVRTC.compile(source, arch: arch)
                    XCTAssertFalse(result.cubin.isEmpty, "\(source.name) sm_\(arch): empty CUBIN")
                    XCTAssertFalse(result.log.lowercased().contains("warning"),
                                   "\(source.name) sm_\(arch) compiled with warnings:\n\(result.log)")
                    XCTAssertTrue(result.log.isEmpty, "\(source.name) sm_\(arch) log:\n\(result.log)")
                } catch {
                    XCTFail("\(source.name) sm_\(arch): \(error)")
                }
            }
        }
    }

    func testEveryDeclaredKernelIsDefined() throws {
        for source in CUDAKernelSources.all {
            for kernel in source.kernels {
                // `extern "C" __global__ void name(`, with an optional `__launch_bounds__(…)` before the name.
                let pattern = #"extern "C" __global__ void (__launch_bounds__\([0-9, ]+\) )?"# + kernel + #"\("#
                let defined = try NSRegularExpression(pattern: pattern)
                    .firstMatch(in: source.source, range: NSRange(source.source.startIndex..., in: source.source)) != nil
                XCTAssertTrue(defined, "\(source.name) declares \(kernel) but does not define it")
            }
        }
    }

    func testCacheKeyDependsOnSourceArchAndVersion() {
        let a = CUDAKernelCacheKey(source: "x", arch: 80, nvrtcVersion: "13.0")
        XCTAssertEqual(a, CUDAKernelCacheKey(source: "x", arch: 80, nvrtcVersion: "13.0"))
        XCTAssertNotEqual(a, CUDAKernelCacheKey(source: "y", arch: 80, nvrtcVersion: "13.0"))
        XCTAssertNotEqual(a, CUDAKernelCacheKey(source: "x", arch: 90, nvrtcVersion: "13.0"))
        XCTAssertNotEqual(a, CUDAKernelCacheKey(source: "x", arch: 80, nvrtcVersion: "12.9"))
        XCTAssertEqual(a.sourceHash.count, 32)
        XCTAssertTrue(a.fileName.hasSuffix("-sm_80-nvrtc13.0.cubin"))
        XCTAssertEqual(CUDAKernelCacheKey.cacheDirectory(environment: ["XDG_CACHE_HOME": "/c", "HOME": "/h"]),
                       "/c/tensorkit/kernels")
        XCTAssertEqual(CUDAKernelCacheKey.cacheDirectory(environment: ["HOME": "/h"]), "/h/.cache/tensorkit/kernels")
        XCTAssertEqual(CUDAKernelCacheKey.cacheDirectory(environment: ["TENSORKIT_KERNEL_CACHE": "/k", "HOME": "/h"]), "/k")
    }
}
