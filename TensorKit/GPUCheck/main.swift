// The GPU op check (scripts/gpu-check.sh): runs every TensorKit op on CUDA against the CPU backend.
//
//   tensorkit-gpu-check                 all op checks (needs a CUDA device); exit 1 on any failure
//   tensorkit-gpu-check --compile-only  compile every kernel source with NVRTC for sm_80 and sm_90
//                                       (no GPU needed); exit 1 on any error or warning
import Foundation
import TensorKit

setvbuf(stdout, nil, _IOLBF, 0)
let arguments = Array(CommandLine.arguments.dropFirst())

if arguments.contains("--compile-only") {
    guard NVRTC.isAvailable else {
        print("skipped: NVRTC not found (looked in \(NVRTC.unavailableReason ?? "?"))")
        exit(2)
    }
    print("NVRTC \(NVRTC.version ?? "?") from \(NVRTC.libraryPath ?? "?")")
    var failures = 0
    for arch in [80, 90] {
        for source in CUDAKernelSources.all {
            let start = Date()
            do {
                let result = try NVRTC.compile(source, arch: arch)
                let clean = result.log.isEmpty
                if !clean { failures += 1 }
                print(String(format: "%-24@ sm_%d %@ %7.0f KB %6.2fs", source.name as NSString, arch,
                             (clean ? "ok  " : "WARN") as NSString, Double(result.cubin.count) / 1024,
                             Date().timeIntervalSince(start)))
                if !clean { print(result.log) }
            } catch {
                failures += 1
                print("\(source.name) sm_\(arch) FAILED: \(error)")
            }
        }
    }
    print(failures == 0 ? "all kernels compiled cleanly" : "\(failures) kernel compile(s) failed or warned")
    exit(failures == 0 ? 0 : 1)
}

exit(GPUCheck.run(arguments))
