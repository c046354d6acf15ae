import Foundation
import TensorKit
import GPUCheckKit

// The `ddpo` command: `train`, `sample`, `tokenize`, `info`, `pretrain`, `bench-unet`, `gpu-check`, `eval-ops`, `train-step`, `notebook`.

let usage = """
    usage: ddpo <command> [options]

    commands:
      train          fine-tune a Stable Diffusion model with DDPO (ddpo train --help)
      sample         sample images from a model, a LoRA or a fine-tuned folder
      tokenize       print the CLIP token ids of texts
      info           describe a diffusers folder
      pretrain       train the built-in model from scratch
      bench-unet     time the UNet's forward pass on given inputs (scripts/gpu-bench.sh)
      gpu-check      every TensorKit op on CUDA against the CPU (--compile-only: NVRTC only)
      eval-ops       run op programs for scripts/tensorkit_sweep.py (tensorkit-eval's command line)
      train-step     one DDPO training pass on a given batch (scripts/diffusers_sweep.py --train-step)
      notebook NN    run notebooks-md/NN-*.md (01 tensors and autograd, 02 sampling, 03 DDPO in a script)
      help           show this message
    """

let notebooks: [String: () throws -> Double] = [
    "01": { try notebook01() }, "02": { try notebook02() }, "03": { try notebook03() },
]

func fail(_ message: String, code: Int32 = 2) -> Never {
    // Commands' messages already start with "ddpo <command>:".
    let text = message.hasPrefix("ddpo ") ? message : "ddpo: \(message)"
    FileHandle.standardError.write(Data("\(text)\n".utf8))
    exit(code)
}

var arguments = Array(CommandLine.arguments.dropFirst())
let rest = Array(arguments.dropFirst())
do {
    switch arguments.first {
    case nil, "help", "--help", "-h":
        print(usage)
    case "train":
        try TrainCommand.run(rest)
    case "sample":
        try SampleCommand.run(rest)
    case "tokenize":
        try TokenizeCommand.run(rest)
    case "info":
        try InfoCommand.run(rest)
    case "bench-unet":
        try BenchUNetCommand.run(rest)
    case "gpu-check":
        setvbuf(stdout, nil, _IOLBF, 0)
        exit(GPUCheck.main(rest))
    case "train-step":
        try TrainStepCommand.run(rest)
    case "eval-ops":
        exit(OpPrograms.main(rest))
    case "pretrain":
        try PretrainCommand.run(rest)
    case "notebook":
        guard rest.count == 1 else { fail("notebook needs exactly one name, one of: \(notebooks.keys.sorted().joined(separator: ", "))") }
        guard let run = notebooks[rest[0]] else {
            fail("unknown notebook '\(rest[0])'; available: \(notebooks.keys.sorted().joined(separator: ", "))")
        }
        let start = Date()
        let result = try run()
        print(String(format: "notebook %@ finished in %.1f s (result %.6g)", rest[0], Date().timeIntervalSince(start), result))
    default:
        fail("unknown command '\(arguments[0])'\n\(usage)")
    }
} catch let error as AppError {
    fail(error.message, code: error.exitCode)
} catch {
    fail("\(error)", code: 1)
}
