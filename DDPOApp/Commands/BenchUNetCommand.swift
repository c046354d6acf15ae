import Foundation
import RLAlgorithms

// `ddpo bench-unet`: times the UNet's forward pass on given inputs, as scripts/gpu-bench.sh compares
// it with diffusers on the same weights. Reads `sample` [B, C, h, w], `timestep` [1] or [B] and
// `encoder_hidden_states` [B, N, D] (any float dtype) from a safetensors file, runs `--warmup`
// untimed and `--iterations` timed forward passes without a graph (each waits for the device), and
// prints one JSON line: {"median_ms", "min_ms", "host_median_ms" (time until the call returned, before
// waiting for the device), "peak_mib", "device", "dtype"}. `--out` saves the last output as `out`
// (float32). With TENSORKIT_CUDA_PROFILE=1 the per-kernel table of the timed passes goes to stderr.

enum BenchUNetCommand {
    static let command = "ddpo bench-unet"

    static let options: [OptionSpec] = [
        OptionSpec(name: "model", kind: .value, valueName: "DIR", help: "diffusers folder (its unet/ is loaded)"),
        OptionSpec(name: "inputs", kind: .value, valueName: "FILE", help: "safetensors with sample, timestep, encoder_hidden_states"),
        OptionSpec(name: "out", kind: .value, valueName: "FILE", help: "write the output as key 'out' (float32)"),
        OptionSpec(name: "device", kind: .value, valueName: "cpu|cuda:N", help: "where to run (default: the first GPU, else cpu)"),
        OptionSpec(name: "mixed_precision", kind: .value, valueName: "no|fp16|bf16", help: "the UNet's dtype (default fp16 on a GPU, no on a CPU)"),
        OptionSpec(name: "warmup", kind: .value, valueName: "N", help: "untimed passes first (default 3)"),
        OptionSpec(name: "iterations", kind: .value, valueName: "N", help: "timed passes (default 20)"),
    ]

    static var usage: String {
        """
        usage: ddpo bench-unet --model DIR --inputs FILE [options]

        options:
        \(ArgumentParser.helpLines(options))
        """
    }

    static func run(_ arguments: [String]) throws {
        guard let parsed = try ArgumentParser.parseOrShowHelp(arguments, specs: options, command: command, usage: usage) else { return }
        let model = try parsed.required("model", "DIR", command: command)
        let inputsPath = try parsed.required("inputs", "FILE", command: command)
        let choice = try DeviceChoice.resolve(parsed.value("device"), command: command)
        let precision = try choice.mixedPrecision(parsed.value("mixed_precision"), command: command)
        let warmup = try parsed.value("warmup").map { try ArgumentParser.parseInt($0, option: "warmup", command: command) } ?? 3
        let iterations = try parsed.value("iterations").map { try ArgumentParser.parseInt($0, option: "iterations", command: command) } ?? 20
        guard warmup >= 0, iterations >= 1 else { throw AppError("\(command): --warmup must be ≥ 0 and --iterations ≥ 1") }

        let inputs: [String: Tensor]
        do { inputs = try loadSafeTensors(inputsPath) } catch { throw AppError("\(command): --inputs: \(error)") }
        func input(_ key: String) throws -> Tensor {
            guard let t = inputs[key] else {
                throw AppError("\(command): --inputs: \(inputsPath): no tensor '\(key)' (found: \(inputs.keys.sorted().joined(separator: ", ")))")
            }
            return t
        }
        let dtype = precision.computeDType
        let unet: UNet2DConditionModel
        do { unet = try UNet2DConditionModel.load(directory: URL(fileURLWithPath: model).appendingPathComponent("unet"), dtype: dtype) }
        catch { throw AppError("\(command): --model: \(error)", exitCode: 1) }
        _ = unet.to(choice.device)
        for p in unet.parameters() { p.requiresGrad = false }
        let sample = try input("sample").to(dtype).copied(to: choice.device)
        let states = try input("encoder_hidden_states").to(dtype).copied(to: choice.device)
        let timesteps = try input("timestep").toArray()
        guard sample.rank == 4, states.rank == 3, states.shape[0] == sample.shape[0],
              timesteps.count == 1 || timesteps.count == sample.shape[0] else {
            throw AppError("\(command): --inputs: expected sample [B, C, h, w], encoder_hidden_states [B, N, D] and 1 or B timesteps; got \(sample.shape), \(states.shape), \(timesteps.count)")
        }
        func synchronize() { if case .cuda(let i) = choice.device { try? CUDA.synchronize(i) } }
        var output = sample
        var times: [Double] = [], hostTimes: [Double] = []
        withNoGrad {
            for i in 0..<(warmup + iterations) {
                if i == warmup, case .cuda(let index) = choice.device {
                    CUDA.resetPeakMemory(index)
                    CUDA.resetProfile()
                }
                let start = Date()
                output = unet(sample: sample, timesteps: timesteps, encoderHiddenStates: states)
                let queued = Date().timeIntervalSince(start) * 1000   // the host's part: launches return before the GPU finishes
                synchronize()
                if i >= warmup {
                    times.append(Date().timeIntervalSince(start) * 1000)
                    hostTimes.append(queued)
                }
            }
        }
        let report = CUDA.profileReport()
        if !report.isEmpty { FileHandle.standardError.write(Data("\(report)\n".utf8)) }
        var peak = 0.0
        if case .cuda(let index) = choice.device { peak = Double(CUDA.memoryStats(index).peakInUse) / 1_048_576 }
        if let out = parsed.value("out") {
            do { try saveSafeTensors(["out": output.to(.float32)], to: out) }
            catch { throw AppError("\(command): --out: \(error)", exitCode: 1) }
        }
        func median(_ values: [Double]) -> Double {
            let sorted = values.sorted()
            return sorted.count % 2 == 1 ? sorted[sorted.count / 2] : (sorted[sorted.count / 2 - 1] + sorted[sorted.count / 2]) / 2
        }
        print(String(format: "{\"median_ms\": %.3f, \"min_ms\": %.3f, \"host_median_ms\": %.3f, \"peak_mib\": %.1f, \"device\": \"%@\", \"dtype\": \"%@\"}",
                     median(times), times.min()!, median(hostTimes), peak, choice.name, dtype.rawValue))
    }
}
