// swift-tools-version:6.0
import PackageDescription

// Layers: TensorKit <- DiffusionModels <- RLAlgorithms <- DDPOApp. Nothing points upward.
let optimized: [SwiftSetting] = [
    .unsafeFlags(["-enforce-exclusivity=unchecked"]),
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
    ],
    targets: [
        .systemLibrary(
            name: "COpenBLAS", path: "TensorKit/CSystem/COpenBLAS", pkgConfig: "openblas",
            providers: [.apt(["libopenblas-dev"])]),
        .systemLibrary(
            name: "CPNG", path: "TensorKit/CSystem/CPNG", pkgConfig: "libpng16",
            providers: [.apt(["libpng-dev"])]),
        .systemLibrary(
            name: "CJPEG", path: "TensorKit/CSystem/CJPEG", pkgConfig: "libjpeg",
            providers: [.apt(["libjpeg62-turbo-dev"])]),
        .target(
            name: "TensorKit", dependencies: ["COpenBLAS", "CPNG", "CJPEG"],
            path: "TensorKit/Sources", swiftSettings: optimized),
        .executableTarget(
            name: "TensorKitBench", dependencies: ["TensorKit", "COpenBLAS"],
            path: "TensorKit/Benchmarks", swiftSettings: optimized),
        .executableTarget(
            name: "SafeTensorsFuzz", dependencies: ["TensorKit"],
            path: "TensorKit/Fuzz"),
        .target(
            name: "DiffusionModels", dependencies: ["TensorKit"],
            path: "DiffusionModels", swiftSettings: optimized),
        .target(
            name: "RLAlgorithms", dependencies: ["TensorKit", "DiffusionModels"],
            path: "RLAlgorithms", swiftSettings: optimized),
        .executableTarget(
            name: "DDPOApp", dependencies: ["TensorKit", "DiffusionModels", "RLAlgorithms"],
            path: "DDPOApp"),
        .testTarget(
            name: "TensorKitTests", dependencies: ["TensorKit"],
            path: "Tests/TensorKitTests", exclude: ["Fixtures"]),
        .testTarget(
            name: "NotebookTests", dependencies: ["DDPOApp", "TensorKit"],
            path: "Tests/NotebookTests"),
        // DiffusionModelsTests and RLAlgorithmsTests join here with their first tests.
    ],
    swiftLanguageModes: [.v5]
)
