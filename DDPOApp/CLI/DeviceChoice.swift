import Foundation
import RLAlgorithms

/// `--device` and `--mixed_precision` for the commands that run a model: the device (default: the
/// first CUDA GPU when one is usable, else the CPU), the precision it honours, and how to load a
/// pipeline there.
struct DeviceChoice {
    let device: Device
    /// "cpu" or "cuda:N (NAME, sm_XY)", for messages and the run report.
    let name: String

    /// Parses `--device` (nil: the default). A GPU that cannot be used is an error naming the flag and
    /// what is missing, before any work.
    static func resolve(_ text: String?, command: String) throws -> DeviceChoice {
        // DDPO_DEVICE sets the default (the tests pin the CPU with it on a GPU machine).
        let text = text ?? ProcessInfo.processInfo.environment["DDPO_DEVICE"].flatMap { $0.isEmpty ? nil : $0 }
        guard let text, text != "auto" else {
            return CUDA.isAvailable ? try resolve("cuda:0", command: command) : DeviceChoice(device: .cpu, name: "cpu")
        }
        guard let device = Device(parsing: text) else {
            throw AppError("\(command): --device: expected cpu or cuda:N, got '\(text)'")
        }
        guard case .cuda(let index) = device else { return DeviceChoice(device: .cpu, name: "cpu") }
        if let reason = CUDA.unavailableReason(index) {
            // One line: "CUDA is unavailable: <piece> (looked in …); <piece> …".
            let oneLine = reason.replacingOccurrences(of: ":\n  - ", with: ": ").replacingOccurrences(of: "\n  - ", with: "; ")
            throw AppError("\(command): --device \(text): \(oneLine)")
        }
        let info = try? CUDA.deviceInfo(index)
        let name = info.map { "cuda:\(index) (\($0.name), sm_\($0.architecture))" } ?? "cuda:\(index)"
        return DeviceChoice(device: device, name: name)
    }

    var isGPU: Bool { device != .cpu }

    /// The `mixed_precision` values this device honours.
    var precisionSupport: PrecisionSupport {
        isGPU ? PrecisionSupport(deviceName: name, modes: PrecisionSupport.cuda.modes) : .cpu
    }

    /// `--mixed_precision` for sampling: the given value (default fp16 on a GPU, no on a CPU), refused
    /// where this device cannot honour it.
    func mixedPrecision(_ text: String?, command: String) throws -> MixedPrecision {
        let value = text ?? (isGPU ? "fp16" : "no")
        guard let precision = MixedPrecision(rawValue: value) else {
            throw AppError("\(command): --mixed_precision: expected no, fp16 or bf16, got '\(value)'")
        }
        guard precisionSupport.modes.contains(precision.rawValue) else {
            throw AppError("\(command): --mixed_precision \(precision.rawValue) needs a GPU (\(name) computes in float32: use no)")
        }
        return precision
    }

    /// Loads a diffusers folder for sampling with `precision`'s dtypes (the VAE's weights in float32
    /// under fp16, decoding in float16 with a float32 retry on overflow) and moves it to the device.
    func loadPipeline(_ directory: URL, precision: MixedPrecision) throws -> StableDiffusionPipeline {
        let pipeline = try StableDiffusionPipeline.load(directory: directory, dtype: precision.computeDType,
                                                        vaeDType: precision.vaeDType)
        pipeline.vaeDecodeDType = precision.vaeDecodeDType
        return pipeline.to(device)
    }

    /// On a GPU with `TENSORKIT_CUDA_MEMORY_TRACE` set: what was live at the last memory peak, by
    /// allocating call stack, on standard error (`scripts/symbolize-trace.sh` names the frames).
    func reportMemoryTrace(command: String) {
        if case .cuda(let index) = device {
            guard let trace = CUDA.memoryTrace(index) else { return }
            FileHandle.standardError.write(Data("\(command): \(trace)\n".utf8))
        } else if ProcessInfo.processInfo.environment["TENSORKIT_CUDA_MEMORY_TRACE"] != nil {
            FileHandle.standardError.write(Data("\(command): TENSORKIT_CUDA_MEMORY_TRACE traces GPU memory; this run was on \(name)\n".utf8))
        }
    }
}
