import Foundation
import XCTest
import RLAlgorithms

/// `ddpo` on the emulated CUDA device (scripts/emu-cuda: the driver, NVRTC and cuBLAS on the host;
/// every kernel TensorKit compiles for the GPU runs, its PTX emulated, a block's threads as fibers),
/// against the CPU backend. This is the CUDA backend end to end — launch geometry, the parameters as
/// the host packs them, fp16/bf16 mixed precision, the upload ring and the reads of statistics — on a
/// machine without a GPU. Stream work is held until the host waits (EMU_CUDA_DEFER=1), so a host that
/// reuses a pinned buffer, or reads a download, before the device got there computes wrong values.
/// A block's threads take turns in a shuffled order with warps running ahead of each other
/// (EMU_CUDA_ORDER=shuffle, fixed seed), so a kernel that shares memory between threads without a
/// barrier in between computes wrong values too.
/// What the emulation cannot show is speed, or the hardware's own rounding of tensor-core sums.
/// Skipped without g++ or python3 (scripts/install-deps.sh installs both).
final class EmulatedDeviceTests: XCTestCase {
    /// The driver, built once per test run; modules are cached under .build-emu-cuda, keyed by the
    /// emulation's own sources.
    static let setup: Result<[String: String], Error> = Result {
        let root = DDPOProcess.repositoryRoot
        let emu = root.appendingPathComponent("scripts/emu-cuda")
        for name in ["g++", "python3"] where !onPath(name) {
            throw XCTSkip("\(name) not found (scripts/install-deps.sh installs it)")
        }
        // FNV-1a of the files (Swift's Hasher is seeded per process).
        var hash: UInt64 = 0xcbf29ce484222325
        for file in ["scripts/emu-cuda/emu_fibers.h", "scripts/emu-cuda/make_module.py", "scripts/emulate/cuda_host.h"] {
            for byte in try Data(contentsOf: root.appendingPathComponent(file)) { hash = (hash ^ UInt64(byte)) &* 0x100000001b3 }
        }
        let key = String(hash, radix: 16)
        let dir = root.appendingPathComponent(".build-emu-cuda/tests-\(key)")
        try FileManager.default.createDirectory(at: dir.appendingPathComponent("modules"), withIntermediateDirectories: true)
        let driver = dir.appendingPathComponent("libcuda.so.1")
        let build = Process()
        build.executableURL = URL(fileURLWithPath: "/usr/bin/env")
        build.arguments = ["g++", "-std=c++20", "-O2", "-fPIC", "-shared", "-o", driver.path + ".tmp",
                           emu.appendingPathComponent("emu_cuda.cpp").path, "-ldl", "-lopenblas"]
        try build.run()
        build.waitUntilExit()
        guard build.terminationStatus == 0 else { throw XCTSkip("g++ could not build the emulated CUDA driver") }
        _ = try? FileManager.default.removeItem(at: driver)
        try FileManager.default.moveItem(atPath: driver.path + ".tmp", toPath: driver.path)
        for name in ["libnvrtc.so.13", "libcublas.so.13", "libcublasLt.so.13"] {
            let link = dir.appendingPathComponent(name).path
            if (try? FileManager.default.destinationOfSymbolicLink(atPath: link)) == nil {
                try FileManager.default.createSymbolicLink(atPath: link, withDestinationPath: "libcuda.so.1")
            }
        }
        return ["TENSORKIT_CUDA_DRIVER_PATH": driver.path, "TENSORKIT_CUBLAS_PATH": dir.path,
                "TENSORKIT_NVRTC_PATH": dir.appendingPathComponent("libnvrtc.so.13").path,
                "TENSORKIT_KERNEL_CACHE": dir.appendingPathComponent("kernels").path,
                "EMU_CUDA_DIR": emu.path, "EMU_CUDA_MODULES": dir.appendingPathComponent("modules").path,
                "EMU_CUDA_DEFER": "1", "EMU_CUDA_ORDER": "shuffle", "EMU_CUDA_SEED": "0"]
    }

    private static func onPath(_ name: String) -> Bool {
        let which = Process()
        which.executableURL = URL(fileURLWithPath: "/usr/bin/env")
        which.arguments = ["sh", "-c", "command -v \(name)"]
        which.standardOutput = FileHandle.nullDevice
        guard (try? which.run()) != nil else { return false }
        which.waitUntilExit()
        return which.terminationStatus == 0
    }

    private func environment() throws -> [String: String] { try Self.setup.get() }

    /// Every case of `ddpo gpu-check` (each op forward and backward in float32, float16 and bfloat16
    /// against the CPU backend, the tolerances of a real device) passes on the emulated device.
    func testOpCheckPassesOnTheEmulatedDevice() throws {
        let result = try DDPOProcess.run(["gpu-check"], environment: try environment())
        XCTAssertEqual(result.status, 0, String((result.stdout + result.stderr).suffix(4000)))
        let summary = result.stdout.split(separator: "\n").first { $0.contains(" passed in ") }.map(String.init) ?? ""
        let counts = summary.split(separator: " ").first?.split(separator: "/").compactMap { Int($0) } ?? []
        XCTAssertEqual(counts.count, 2, "no summary line in:\n\(result.stdout.suffix(3000))")
        if counts.count == 2 {
            XCTAssertEqual(counts[0], counts[1], summary)
            XCTAssertGreaterThan(counts[1], 200, "fewer op cases than expected: \(summary)")
        }
        XCTAssertTrue(result.stdout.contains("conv2d mma") && result.stdout.contains("attention flash"),
                      "the tensor-core paths were not exercised:\n\(result.stdout.suffix(3000))")
    }

    /// `ddpo sample` in fp16 and bf16 on the device gives the CPU's float32 images within the
    /// half dtypes' rounding, with no NaN. The fp16 run's device reports one multiprocessor, so that
    /// the tensor-core convolution (used where the output fills two tiles per multiprocessor) takes
    /// this tiny model's convolutions too.
    func testSamplingInHalfPrecisionMatchesTheCPU() throws {
        let dir = try DDPOProcess.temporaryDirectory()
        addTeardownBlock { try? FileManager.default.removeItem(at: dir) }
        func sample(_ device: String, _ precision: String) throws -> (images: Tensor, log: String) {
            try self.sample(DDPOProcess.fixtureModel, device, precision, ["--negative-prompt", "blurry", "--guidance", "5"],
                            extra: precision == "fp16" ? ["EMU_CUDA_SMS": "1"] : [:], in: dir)
        }
        let reference = try sample("cpu", "no").images
        for (precision, tolerance) in [("fp16", 1e-2), ("bf16", 5e-2)] {
            let (images, log) = try sample("cuda:0", precision)
            XCTAssertFalse(log.contains("decode overflowed"), "\(precision): this VAE does not overflow:\n\(log)")
            XCTAssertEqual(images.shape, reference.shape)
            let worst = (images - reference).abs().max().item()
            XCTAssertFalse(worst.isNaN, "\(precision): NaN in the device's images")
            XCTAssertLessThanOrEqual(worst, tolerance, "\(precision): images differ from the CPU's by \(worst)")
        }
    }

    /// A VAE whose float16 decode overflows (the fixture's decoder.conv_in scaled by 1e5: its outputs
    /// pass float16's 65504, while the group norm after it brings float32 values back to scale) is
    /// decoded again in float32 under fp16: the images are the CPU's float32 ones, and the run says so.
    func testOverflowingHalfPrecisionDecodeFallsBackToFloat32() throws {
        let dir = try DDPOProcess.temporaryDirectory()
        addTeardownBlock { try? FileManager.default.removeItem(at: dir) }
        let model = dir.appendingPathComponent("model")
        try FileManager.default.copyItem(at: DDPOProcess.fixtureModel, to: model)
        let vae = model.appendingPathComponent("vae/diffusion_pytorch_model.safetensors").path
        var weights = try loadSafeTensors(vae)
        for key in ["decoder.conv_in.weight", "decoder.conv_in.bias"] { weights[key] = weights[key]! * 1e5 }
        try saveSafeTensors(weights, to: vae)
        func sample(_ device: String, _ precision: String) throws -> (images: Tensor, log: String) {
            try self.sample(model, device, precision, [], in: dir)
        }
        let reference = try sample("cpu", "no").images
        let (images, log) = try sample("cuda:0", "fp16")
        XCTAssertTrue(log.contains("decode overflowed; decoded again with its float32 weights (1 time)"), log)
        let worst = (images - reference).abs().max().item()
        XCTAssertLessThanOrEqual(worst, 1e-2, "images differ from the CPU's by \(worst)")
        XCTAssertGreaterThan(reference.variance().item(), 1e-3, "the float32 decode should give an image, not a flat one")
    }

    /// `ddpo sample --model model` of two prompts, 4 steps, seed 3 (plus `arguments`) on `device`
    /// ("cpu", or "cuda:0" for the emulated device, with `extra` environment): its images in float64
    /// and what it printed.
    private func sample(_ model: URL, _ device: String, _ precision: String, _ arguments: [String],
                        extra: [String: String] = [:], in dir: URL) throws -> (images: Tensor, log: String) {
        let out = dir.appendingPathComponent("\(device)-\(precision)")
        let result = try DDPOProcess.run(
            ["sample", "--model", model.path, "--prompt", "a photo of a cat", "--prompt", "dog", "--steps", "4", "--seed", "3",
             "--device", device, "--mixed_precision", precision, "--out", out.path] + arguments,
            environment: device == "cpu" ? [:] : try environment().merging(extra) { $1 })
        XCTAssertEqual(result.status, 0, String(result.stderr.suffix(3000)))
        return (try loadSafeTensors(out.appendingPathComponent("samples.safetensors").path)["images"]!.to(.float64),
                result.stdout + result.stderr)
    }

    /// One DDPO epoch in fp16 on the device (LoRA trained in float32, dynamic loss scaling) logs the
    /// rewards, losses and KL estimates of the CPU's float32 epoch, and all of them are finite. One
    /// multiprocessor, as above: the tensor-core convolution runs forward and for input gradients.
    func testDDPOEpochInFP16MatchesTheCPU() throws {
        let dir = try DDPOProcess.temporaryDirectory()
        addTeardownBlock { try? FileManager.default.removeItem(at: dir) }
        let prompts = dir.appendingPathComponent("prompts.txt")
        try "a photo of a cat\ndog\n".write(to: prompts, atomically: true, encoding: .utf8)
        func train(_ device: String, _ precision: String) throws -> [String: [Double]] {
            let logdir = dir.appendingPathComponent("logs-\(device)")
            let result = try DDPOProcess.run(
                ["train", "--model", DDPOProcess.fixtureModel.path, "--device", device, "--mixed_precision", precision,
                 "--num_epochs", "1", "--sample_batch_size", "2", "--sample_num_batches_per_epoch", "1",
                 "--train_batch_size", "1", "--sample_num_steps", "3", "--train_learning_rate", "3e-3",
                 "--reward", "brightness", "--prompts", prompts.path, "--logdir", logdir.path, "--run_name", "r",
                 "--save_freq", "1000", "--report_prompts", "0", "--quiet"],
                environment: device == "cpu" ? [:] : try environment().merging(["EMU_CUDA_SMS": "1"]) { $1 })
            XCTAssertEqual(result.status, 0, String(result.stderr.suffix(3000)))
            let text = try String(contentsOf: logdir.appendingPathComponent("r/metrics.jsonl"), encoding: .utf8)
            var series: [String: [Double]] = [:]
            for line in text.split(separator: "\n") {
                guard let object = try JSONValue(parsing: Data(line.utf8)).objectValue else { continue }
                for key in ["reward_mean", "loss", "approx_kl"] {
                    if let v = object[key]?.doubleValue { series[key, default: []].append(v) }
                }
            }
            return series
        }
        let cpu = try train("cpu", "no")
        let gpu = try train("cuda:0", "fp16")
        for key in ["reward_mean", "loss", "approx_kl"] {
            let a = cpu[key] ?? [], b = gpu[key] ?? []
            XCTAssertFalse(a.isEmpty, "\(key) not logged")
            XCTAssertEqual(a.count, b.count, key)
            for (x, y) in zip(a, b) {
                XCTAssertTrue(y.isFinite, "\(key): \(y) on the device")
                // fp16 activations: the log-probabilities, hence losses and KL, move in the 3rd digit.
                XCTAssertEqual(y, x, accuracy: 2e-2 * max(abs(x), 1e-2), "\(key): device \(y), CPU \(x)")
            }
        }
    }
}
