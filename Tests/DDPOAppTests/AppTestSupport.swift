import Foundation
import XCTest

/// Runs the built `ddpo` binary (beside the test bundle in the build folder) as a subprocess.
enum DDPOProcess {
    static let repositoryRoot = URL(fileURLWithPath: #filePath).deletingLastPathComponent().deletingLastPathComponent().deletingLastPathComponent()
    static let fixtureModel = repositoryRoot.appendingPathComponent("Tests/DiffusionModelsTests/Fixtures/pipeline/sd1/model")
    static let fixtures = repositoryRoot.appendingPathComponent("Tests/DDPOAppTests/Fixtures")

    static var binary: URL {
        // The test runner lives in the products folder (Linux: an executable; macOS: a bundle).
        #if os(Linux)
        let products = URL(fileURLWithPath: "/proc/self/exe").resolvingSymlinksInPath().deletingLastPathComponent()
        #else
        let products = Bundle(for: Marker.self).bundleURL.deletingLastPathComponent()
        #endif
        return products.appendingPathComponent("ddpo")
    }

    struct Result {
        var status: Int32
        var stdout: String
        var stderr: String
    }

    /// Runs `ddpo arguments…` in `directory` (default: a fresh temporary folder) and waits.
    static func run(_ arguments: [String], in directory: URL? = nil, environment: [String: String] = [:],
                    unset: [String] = []) throws -> Result {
        guard FileManager.default.isExecutableFile(atPath: binary.path) else {
            struct MissingBinary: Error, CustomStringConvertible { var description: String }
            throw MissingBinary(description: "the ddpo binary is not built at \(binary.path) (swift build builds it with the tests)")
        }
        let process = Process()
        process.executableURL = binary
        process.arguments = arguments
        process.currentDirectoryURL = directory ?? FileManager.default.temporaryDirectory
        var env = ProcessInfo.processInfo.environment
        // The tests must not pick up a built-in model by accident.
        env["DDPO_BUILTIN_MODEL"] = "/nonexistent-ddpo-builtin"
        env["DDPO_DEVICE"] = "cpu"   // the fixtures are CPU float32 results, also on a GPU machine
        for (k, v) in environment { env[k] = v }
        for k in unset { env[k] = nil }
        process.environment = env
        let out = Pipe(), err = Pipe()
        process.standardOutput = out
        process.standardError = err
        try process.run()
        // Read both pipes while the process runs, so a full pipe cannot block it.
        final class Box: @unchecked Sendable { var data = Data() }
        let outBox = Box()
        let group = DispatchGroup()
        group.enter()
        DispatchQueue.global().async { outBox.data = out.fileHandleForReading.readDataToEndOfFile(); group.leave() }
        let errData = err.fileHandleForReading.readDataToEndOfFile()
        group.wait()
        let outData = outBox.data
        process.waitUntilExit()
        return Result(status: process.terminationStatus, stdout: String(decoding: outData, as: UTF8.self),
                      stderr: String(decoding: errData, as: UTF8.self))
    }

    static func temporaryDirectory(_ name: String = #function) throws -> URL {
        let url = FileManager.default.temporaryDirectory.appendingPathComponent("ddpo-app-tests-\(name.filter { $0.isLetter || $0.isNumber })-\(UUID().uuidString.prefix(8))")
        try FileManager.default.createDirectory(at: url, withIntermediateDirectories: true)
        return url
    }

    private final class Marker {}
}
