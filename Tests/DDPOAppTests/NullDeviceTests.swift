import Foundation
import XCTest

/// `ddpo train` in fp16 on the null CUDA driver (scripts/null-cuda/null_cuda.c: every call succeeds,
/// nothing runs, and stream waits, reads back, launches and GEMMs are counted). The host must never
/// wait for the device inside a training pass or a sampling step: runs that differ only in their
/// number of passes, or of sampling steps, make exactly as many waits and reads. Skipped where the
/// driver cannot be compiled (no `cc`) or NVRTC is missing (scripts/test.sh installs it).
final class NullDeviceTests: XCTestCase {
    struct Counts { var launches = 0, syncs = 0, downloads = 0 }

    func testTrainingPassesAndSamplingStepsNeverWaitForTheDevice() throws {
        let env = ProcessInfo.processInfo.environment
        guard let nvrtc = env["TENSORKIT_NVRTC_PATH"], FileManager.default.fileExists(atPath: nvrtc) else {
            throw XCTSkip("NVRTC not found (TENSORKIT_NVRTC_PATH unset or missing); scripts/test.sh installs it")
        }
        let dir = try DDPOProcess.temporaryDirectory()
        addTeardownBlock { try? FileManager.default.removeItem(at: dir) }
        let driver = dir.appendingPathComponent("libcuda.so.1")
        let cc = Process()
        cc.executableURL = URL(fileURLWithPath: "/usr/bin/env")
        cc.arguments = ["cc", "-O2", "-shared", "-fPIC", "-o", driver.path,
                        DDPOProcess.repositoryRoot.appendingPathComponent("scripts/null-cuda/null_cuda.c").path]
        try cc.run()
        cc.waitUntilExit()
        guard cc.terminationStatus == 0 else { throw XCTSkip("cc could not build the null CUDA driver") }
        for name in ["libcublas.so.13", "libcublasLt.so.13"] {
            try FileManager.default.createSymbolicLink(atPath: dir.appendingPathComponent(name).path, withDestinationPath: "libcuda.so.1")
        }
        let prompts = dir.appendingPathComponent("prompts.txt")
        try "cat\ndog\n".write(to: prompts, atomically: true, encoding: .utf8)

        func run(steps: Int, fraction: Double) throws -> Counts {
            let logdir = dir.appendingPathComponent("logs-\(steps)-\(fraction)")
            let result = try DDPOProcess.run(
                ["train", "--model", DDPOProcess.fixtureModel.path, "--device", "cuda:0", "--mixed_precision", "fp16",
                 "--num_epochs", "1", "--sample_batch_size", "2", "--sample_num_batches_per_epoch", "1",
                 "--train_batch_size", "1", "--sample_num_steps", "\(steps)", "--train_timestep_fraction", "\(fraction)",
                 "--reward", "jpeg_compressibility", "--prompts", prompts.path, "--logdir", logdir.path, "--run_name", "r",
                 "--save_freq", "1000", "--report_prompts", "0", "--quiet"],
                environment: ["TENSORKIT_CUDA_DRIVER_PATH": driver.path, "TENSORKIT_CUBLAS_PATH": dir.path,
                              "NULL_CUDA_STATS": "1"])
            XCTAssertEqual(result.status, 0, result.stderr)
            guard let line = result.stderr.split(separator: "\n").last(where: { $0.hasPrefix("null-cuda:") }) else {
                XCTFail("no null-cuda counts in: \(result.stderr.suffix(2000))")
                return Counts()
            }
            func count(_ name: String) -> Int {
                guard let range = line.range(of: "\(name) ") else { return -1 }
                return Int(line[range.upperBound...].prefix { $0.isNumber }) ?? -1
            }
            return Counts(launches: count("launches"), syncs: count("stream syncs"), downloads: count("downloads"))
        }
        // 4 steps, half of them trained: 2 train batches × 2 passes; all trained: × 4 passes; 8 steps,
        // half trained: 4 more sampling steps and 4 more passes. Two optimizer steps in each.
        let base = try run(steps: 4, fraction: 0.5)
        let morePasses = try run(steps: 4, fraction: 1.0)
        let moreSteps = try run(steps: 8, fraction: 0.5)
        XCTAssertGreaterThan(morePasses.launches, base.launches, "the longer run did not do more work")
        XCTAssertGreaterThan(moreSteps.launches, morePasses.launches, "the longer run did not do more work")
        XCTAssertEqual(morePasses.syncs, base.syncs, "training passes wait for the device")
        XCTAssertEqual(morePasses.downloads, base.downloads, "training passes read values back")
        XCTAssertEqual(moreSteps.syncs, base.syncs, "sampling steps or passes wait for the device")
        XCTAssertEqual(moreSteps.downloads, base.downloads, "sampling steps or passes read values back")
    }
}
