// swift-tools-version:6.0
import Foundation
import PackageDescription

// Layers: TensorKit <- DiffusionModels <- RLAlgorithms <- DDPOApp. Nothing points upward.

// Numeric loops vectorise far better with AVX2/FMA than with baseline x86-64 (SSE2): 1.5-3x on the
// elementwise kernels. Every x86-64 CPU since 2013 (Intel Haswell, AMD Zen) has them. Set
// TENSORKIT_TARGET_CPU=x86-64 to build for older processors, or to another LLVM CPU name.
#if arch(x86_64)
let targetCPU = ProcessInfo.processInfo.environment["TENSORKIT_TARGET_CPU"] ?? "haswell"
let cpuFlags = ["-target-cpu", targetCPU]
#else
let cpuFlags: [String] = []
#endif

let optimized: [SwiftSetting] = [
    .unsafeFlags(["-enforce-exclusivity=unchecked"] + cpuFlags),
]

let package = Package(
    name: "ddpo-swift",
    platforms: [.macOS(.v13)],
    products: [
        .library(name: "TensorKit", targets: ["TensorKit"]),
        .library(name: "DiffusionModels", targets: ["DiffusionModels"]),
        .library(name: "RLAlgorithms", targets: ["RLAlgorithms"]),
        .executable(name: "ddpo", targets: ["DDPOApp"]),
        .executable(name: "tensorkit-bench", targets: ["TensorKitBench"]),
        .executable(name: "ddpo-bench", targets: ["DDPOBench"]),
        .executable(name: "tensorkit-gpu-check", targets: ["TensorKitGPUCheck"]),
        .executable(name: "tensorkit-eval", targets: ["TensorKitEval"]),
    ],
    targets: [
        .systemLibrary(
            name: "COpenBLAS", path: "TensorKit/CSystem/COpenBLAS", pkgConfig: "openblas",
            providers: [.apt(["libopenblas-dev"])]),
        .systemLibrary(
            name: "CPNG", path: "TensorKit/CSystem/CPNG", pkgConfig: "libpng16",
            providers: [.apt(["libpng-dev"])]),
        // libjpeg reports errors through a callback that must not return; the shim wraps each
        // call in setjmp so errors come back as values (Swift cannot call setjmp itself).
        .systemLibrary(
            name: "CJPEGShim", path: "TensorKit/CSystem/CJPEGShim", pkgConfig: "libjpeg",
            providers: [.apt(["libjpeg62-turbo-dev"])]),
        .target(
            name: "TensorKit", dependencies: ["COpenBLAS", "CPNG", "CJPEGShim"],
            path: "TensorKit/Sources", swiftSettings: optimized),
        .executableTarget(
            name: "TensorKitBench", dependencies: ["TensorKit", "COpenBLAS"],
            path: "TensorKit/Benchmarks", swiftSettings: optimized),
        // Every op on CUDA against the CPU backend, for the device machine (scripts/gpu-check.sh).
        .target(
            name: "GPUCheckKit", dependencies: ["TensorKit"],
            path: "TensorKit/GPUCheck/Kit", swiftSettings: optimized),
        .executableTarget(
            name: "TensorKitGPUCheck", dependencies: ["GPUCheckKit"],
            path: "TensorKit/GPUCheck/Tool", swiftSettings: optimized),
        // Runs a JSON program of ops; scripts/tensorkit_sweep.py compares it with PyTorch.
        .executableTarget(
            name: "TensorKitEval", dependencies: ["GPUCheckKit"],
            path: "TensorKit/Eval", swiftSettings: optimized),
        .executableTarget(
            name: "SafeTensorsFuzz", dependencies: ["TensorKit"],
            path: "TensorKit/Fuzz"),
        .target(
            name: "DiffusionModels", dependencies: ["TensorKit"],
            path: "DiffusionModels", swiftSettings: optimized),
        .target(
            name: "RLAlgorithms", dependencies: ["TensorKit", "DiffusionModels"],
            path: "RLAlgorithms", exclude: ["Benchmarks"], swiftSettings: optimized),
        // Stable Diffusion and DDPO benchmarks against diffusers / TRL (scripts/bench-sd.sh).
        .executableTarget(
            name: "DDPOBench", dependencies: ["RLAlgorithms"],
            path: "RLAlgorithms/Benchmarks", swiftSettings: optimized),
        .executableTarget(
            name: "DDPOApp", dependencies: ["TensorKit", "DiffusionModels", "RLAlgorithms", "GPUCheckKit"],
            path: "DDPOApp"),
        .testTarget(
            name: "TensorKitTests", dependencies: ["TensorKit", "GPUCheckKit"],
            path: "Tests/TensorKitTests", exclude: ["Fixtures"]),
        .testTarget(
            name: "NotebookTests", dependencies: ["DDPOApp", "TensorKit"],
            path: "Tests/NotebookTests"),
        .testTarget(
            name: "DDPOAppTests", dependencies: ["DDPOApp", "RLAlgorithms"],
            path: "Tests/DDPOAppTests", exclude: ["Fixtures"]),
        .testTarget(
            name: "DiffusionModelsTests", dependencies: ["DiffusionModels"],
            path: "Tests/DiffusionModelsTests", exclude: ["Fixtures"]),
        .testTarget(
            name: "RLAlgorithmsTests", dependencies: ["RLAlgorithms"],
            path: "Tests/RLAlgorithmsTests", exclude: ["Fixtures"]),
    ],
    swiftLanguageModes: [.v5]
)
