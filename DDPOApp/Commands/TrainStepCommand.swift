import Foundation
import RLAlgorithms

// `ddpo train-step`: one DDPO training pass on a given batch, as `ddpo train` runs it
// (`DDPOPipeline.trainingLoss`, then backward), for comparing with TRL's `DDPOTrainer.calculate_loss`
// on the same model, LoRA and batch (scripts/diffusers_sweep.py --train-step). Reads from --batch:
//   latents, next_latents [B, C, h, w]; log_probs, timesteps, advantages [B];
//   prompt_embeds [B, N, D]; negative_prompt_embeds [B, N, D] (needed with train_cfg)
// and TRL's config fields from --config (a JSON file; sample_num_steps, sample_guidance_scale,
// sample_eta, train_cfg, train_clip_range, train_adv_clip_max are the ones used). Writes to --out:
// loss, approx_kl, clipfrac (float64, shape [1]) and grad.<key> for every trainable weight, keyed as the LoRA
// file (unet.<path>.lora.down.weight / .lora.up.weight). `--dtype float64` runs the whole pass in
// float64 (the LoRA weights stay float32 and are cast per call), to tell rounding from a difference.

enum TrainStepCommand {
    static let command = "ddpo train-step"

    static let options: [OptionSpec] = [
        OptionSpec(name: "model", kind: .value, valueName: "DIR", help: "diffusers folder"),
        OptionSpec(name: "lora", kind: .value, valueName: "DIR|FILE", help: "the LoRA weights to train from (as TRL saves them)"),
        OptionSpec(name: "batch", kind: .value, valueName: "FILE", help: "safetensors with the batch (see the source)"),
        OptionSpec(name: "config", kind: .value, valueName: "FILE", help: "DDPOConfig JSON (TRL's keys)"),
        OptionSpec(name: "out", kind: .value, valueName: "FILE", help: "where the loss, statistics and gradients go"),
        OptionSpec(name: "dtype", kind: .value, valueName: "float32|float64", help: "the models' and the batch's dtype (default float32)"),
    ]

    static var usage: String {
        """
        usage: ddpo train-step --model DIR --lora DIR --batch FILE --config FILE --out FILE

        options:
        \(ArgumentParser.helpLines(options))
        """
    }

    static func run(_ arguments: [String]) throws {
        guard let parsed = try ArgumentParser.parseOrShowHelp(arguments, specs: options, command: command, usage: usage) else { return }
        let model = try parsed.required("model", "DIR", command: command)
        let loraPath = try parsed.required("lora", "DIR|FILE", command: command)
        let batchPath = try parsed.required("batch", "FILE", command: command)
        let configPath = try parsed.required("config", "FILE", command: command)
        let out = try parsed.required("out", "FILE", command: command)
        let dtype: DType
        switch parsed.value("dtype") ?? "float32" {
        case "float32": dtype = .float32
        case "float64": dtype = .float64
        case let other: throw AppError("\(command): --dtype: expected float32 or float64, got '\(other)'")
        }
        let config: DDPOConfig
        do { config = try DDPOConfig(contentsOf: URL(fileURLWithPath: configPath)) } catch { throw AppError("\(command): --config: \(error)") }
        let batch: [String: Tensor]
        do { batch = try loadSafeTensors(batchPath) } catch { throw AppError("\(command): --batch: \(error)") }
        func input(_ key: String) throws -> Tensor {
            guard let t = batch[key] else {
                throw AppError("\(command): --batch: \(batchPath): no tensor '\(key)' (found: \(batch.keys.sorted().joined(separator: ", ")))")
            }
            return t.to(dtype)
        }

        let pipe: DefaultDDPOStableDiffusionPipeline
        do {
            let sd = try StableDiffusionPipeline.load(directory: URL(fileURLWithPath: model), dtype: dtype)
            try sd.scheduler.setTimesteps(config.sample_num_steps)
            pipe = try DefaultDDPOStableDiffusionPipeline(pipeline: sd, loraWeights: URL(fileURLWithPath: loraPath))
        } catch { throw AppError("\(command): \(error)", exitCode: 1) }
        pipe.unet.train()
        let loss = try pipe.trainingLoss(
            latents: try input("latents"), nextLatents: try input("next_latents"),
            timesteps: try input("timesteps").toArray().map { Int($0.rounded()) }, oldLogProbs: try input("log_probs"),
            advantages: try input("advantages"), promptEmbeddings: try input("prompt_embeds"),
            negativePromptEmbeddings: config.train_cfg ? try input("negative_prompt_embeds") : nil, config: config)
        loss.loss.backward()
        let statistics = PPOLossOutput.values(of: loss.statistics.toArray())
        var results: [String: Tensor] = [
            "loss": Tensor([statistics.loss], shape: [1], dtype: .float64),
            "approx_kl": Tensor([statistics.approxKL], shape: [1], dtype: .float64),
            "clipfrac": Tensor([statistics.clipFraction], shape: [1], dtype: .float64),
        ]
        for (key, parameter) in pipe.lora?.namedParameters ?? [] {
            if let grad = parameter.grad { results["grad.unet." + key] = grad.to(dtype).copied(to: .cpu) }
        }
        do { try saveSafeTensors(results, to: out) }   // a temporary file renamed over `out`
        catch { throw AppError("\(command): --out: \(error)", exitCode: 1) }
    }
}
