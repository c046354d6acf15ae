import Foundation
import RLAlgorithms

// `ddpo train`: DDPO on a diffusers Stable Diffusion folder (or the built-in model), TRL's fields as
// flags. Everything that can be wrong with the command line is checked before a model is loaded;
// the run then writes, under <logdir>/<run_name>/:
//
//   ddpo_config.json           the effective config (TRL's keys)
//   events.out.tfevents.*      TensorBoard: reward_mean, reward_std, loss, approx_kl, clipfrac, images
//   metrics.jsonl              the same scalars, one JSON object a line
//   samples/epoch_<n>/         the last sample batch of each epoch as PNGs (+ grid.png)
//   checkpoints/checkpoint_<n> resumable state (--resume_from <run>/checkpoints)
//   report.html                reward curve, before/after grid, last batch; rewritten every epoch
//   final/                     save_pretrained output, ddpo_config.json, README.md (model card),
//                              reward_curve.svg, before.png, after.png

enum TrainCommand {
    static let command = "ddpo train"

    static let appOptions: [OptionSpec] = [
        OptionSpec(name: "config", kind: .value, valueName: "FILE", help: "DDPOConfig as JSON (TRL's keys); flags override it"),
        OptionSpec(name: "model", kind: .value, valueName: "DIR", help: "diffusers Stable Diffusion folder (default: the built-in shapes model)"),
        OptionSpec(name: "pretrained_model", kind: .value, valueName: "DIR", help: "same as --model (TRL's example-script name)"),
        OptionSpec(name: "reward", kind: .value, valueName: "NAME", help: RewardSpec.help),
        OptionSpec(name: "clip_model", kind: .value, valueName: "DIR", help: "CLIP ViT-L/14 folder, with --reward aesthetic:HEAD_FILE"),
        OptionSpec(name: "prompts", kind: .value, valueName: "NAME|FILE",
                   help: "built-in list (\((BuiltinModelPrompts.names + PromptSource.builtinNames).joined(separator: ", "))), a text file or a .jsonl file"),
        OptionSpec(name: "use_lora", kind: .bool, help: "train LoRA deltas (default); --use_lora=false trains the whole UNet"),
        OptionSpec(name: "lora_rank", kind: .value, valueName: "N", help: "LoRA rank (default 4; alpha follows unless --lora_alpha)"),
        OptionSpec(name: "lora_alpha", kind: .value, valueName: "X", help: "LoRA alpha (default: the rank, TRL's choice)"),
        OptionSpec(name: "device", kind: .value, valueName: "cpu|cuda:N", help: "where to run (default: the first GPU, else cpu; or $DDPO_DEVICE)"),
        OptionSpec(name: "gradient_checkpointing", kind: .value, valueName: "auto|true|false",
                   help: "recompute UNet block activations in the training pass (auto: on a GPU, only when a measured training pass would not fit in its memory otherwise)"),
        OptionSpec(name: "report_prompts", kind: .value, valueName: "N", help: "prompts in the report's before/after comparison (default 4)"),
        OptionSpec(name: "quiet", kind: .bool, help: "no progress output"),
    ]

    static var configOptions: [OptionSpec] {
        DDPOConfig.fieldTable.map { field in
            let value = field.type == "a boolean" ? "" : " (\(field.type.replacingOccurrences(of: "an ", with: "").replacingOccurrences(of: "a ", with: "")))"
            return OptionSpec(name: field.name, kind: field.type == "a boolean" ? .bool : .value,
                              valueName: valueName(field.type),
                              help: "\(field.help)\(value.isEmpty ? "" : "") [default: \(field.defaultValue.jsonString)]")
        }
    }

    static func valueName(_ type: String) -> String {
        switch type {
        case "an integer": return "INT"
        case "a number": return "FLOAT"
        case "a JSON object": return "JSON"
        default: return "STR"
        }
    }

    static var usage: String {
        """
        usage: ddpo train [options] [--FIELD VALUE ...]

        Fine-tunes a Stable Diffusion model with DDPO. With no --model it fine-tunes the built-in
        shapes model on 2 CPU cores in a few minutes. Outputs go to <logdir>/<run_name>/.

        options:
        \(ArgumentParser.helpLines(appOptions))

        DDPOConfig fields (TRL's names; also --ddpo_config.FIELD=VALUE; booleans: --flag, --flag=false, --flag False):
        \(ArgumentParser.helpLines(configOptions))
        """
    }

    /// The quick-start settings for the built-in model, applied to fields the user did not set; with
    /// the `shape_size` reward on the `four_shapes` prompts its shapes grow within the 25 epochs (see
    /// the README's quick start; seeds 0, 1 and 2 measured). Guidance 2 rather than 5 gives the samples
    /// of one prompt sizes that differ enough to learn from, and keeps the updates small (the guided
    /// prediction scales the LoRA's effect); 10 DDIM steps, every one trained, halve the sampling of
    /// 20; per-prompt statistics compare a shape only with its own prompt's. At lr 3e-3 seed 1
    /// collapsed (approx_kl 5 by epoch 6); at 2e-3 it holds for the 25 epochs.
    static let builtinPreset: [String: JSONValue] = [
        "num_epochs": 25,
        "sample_num_steps": 10,
        "sample_batch_size": 16,
        "sample_num_batches_per_epoch": 2,
        "sample_guidance_scale": 2.0,
        "train_batch_size": 4,
        "train_learning_rate": 2e-3,
        "train_clip_range": 0.2,
        "train_timestep_fraction": 1.0,
        "per_prompt_stat_tracking": true,
        "per_prompt_stat_tracking_buffer_size": 32,
        "per_prompt_stat_tracking_min_count": 8,
        "save_freq": 5,
        "num_checkpoint_limit": 2,
    ]

    /// Everything `run` needs, checked.
    struct Plan {
        var config: DDPOConfig
        var modelDirectory: URL
        var builtinModel: Bool
        var rewardSpec: String
        var reward: any RewardFunction
        var promptsSpec: String
        var prompts: PromptSource
        var runDirectory: URL
        var useLoRA: Bool
        var loraConfig: LoRAConfig
        var reportPrompts: Int
        var quiet: Bool
        var device: DeviceChoice
        var gradientCheckpointing: Bool?
    }

    static func run(_ arguments: [String]) throws {
        let specs = appOptions + configOptions
        guard let parsed = try ArgumentParser.parseOrShowHelp(arguments, specs: specs, command: command, usage: usage) else { return }
        let plan = try makePlan(parsed, commandLine: arguments)
        try execute(plan, commandLine: arguments)
    }

    // MARK: - planning (no model loaded yet)

    static func makePlan(_ parsed: ParsedArguments, commandLine: [String]) throws -> Plan {
        let device = try DeviceChoice.resolve(parsed.value("device"), command: command)
        var gradientCheckpointing: Bool?
        if let text = parsed.value("gradient_checkpointing"), text != "auto" {
            guard let value = ArgumentParser.parseBool(text) else {
                throw AppError("\(command): --gradient_checkpointing: expected auto, true or false, got '\(text)'")
            }
            gradientCheckpointing = value
        }
        let modelPath = parsed.value("model") ?? parsed.value("pretrained_model")
        let builtin = modelPath == nil
        let modelDirectory = try BuiltinModelLocator.resolve(modelPath, command: command)

        // defaults < built-in preset < --config file < flags.
        var explicit: [String: JSONValue] = [:]
        if let file = parsed.value("config") {
            let fileConfig: DDPOConfig
            do { fileConfig = try DDPOConfig(contentsOf: URL(fileURLWithPath: file)) }
            catch { throw AppError("\(command): --config \(error)") }
            let raw = try? JSONValue(parsing: Data(contentsOf: URL(fileURLWithPath: file)))
            let all = (try? JSONValue(parsing: fileConfig.jsonData()))?.objectValue ?? [:]
            for key in raw?.objectValue?.keys.sorted() ?? [] { explicit[key] = all[key] }
        }
        let types = Dictionary(uniqueKeysWithValues: DDPOConfig.fieldTable.map { ($0.name, $0.type) })
        for (key, text) in parsed.occurrences {
            guard let type = types[key] else { continue }
            explicit[key] = try jsonValue(text, type: type, field: key)
        }
        var merged = (try? JSONValue(parsing: DDPOConfig().jsonData()))?.objectValue ?? [:]
        if builtin { for (key, value) in builtinPreset { merged[key] = value } }
        // A CPU cannot honour TRL's default "fp16": pick "no" there unless the user asked for something.
        if explicit["mixed_precision"] == nil, !device.isGPU { merged["mixed_precision"] = "no" }
        for (key, value) in explicit { merged[key] = value }
        var config: DDPOConfig
        do { config = try DDPOConfig(json: Data(JSONValue.object(merged).jsonString.utf8)) }
        catch { throw AppError("\(command): \(error)") }

        // The run folder: resuming from <logdir>/<run>/checkpoints[/checkpoint_n] continues that run.
        var resumeRun: URL?
        if !config.resume_from.isEmpty {
            let url = URL(fileURLWithPath: (config.resume_from as NSString).expandingTildeInPath).standardizedFileURL
            do { _ = try CheckpointStore.resolve(url) }
            catch { throw AppError("\(command): --resume_from: \(error)") }
            let checkpoints = url.lastPathComponent.hasPrefix(CheckpointStore.prefix) ? url.deletingLastPathComponent() : url
            if checkpoints.lastPathComponent == "checkpoints" { resumeRun = checkpoints.deletingLastPathComponent() }
        }
        // An explicit run_name starts a new run folder even when resuming; without one a resumed
        // run continues in its own folder.
        if !config.run_name.isEmpty { resumeRun = nil }
        if config.run_name.isEmpty {
            if let resumeRun {
                config.run_name = resumeRun.lastPathComponent
            } else {
                let formatter = DateFormatter()
                formatter.locale = Locale(identifier: "en_US_POSIX")
                formatter.dateFormat = "yyyy.MM.dd_HH.mm.ss"
                config.run_name = "\(config.exp_name)_\(formatter.string(from: Date()))"
            }
        }
        do { try config.validate(numProcesses: 1, precision: device.precisionSupport) }
        catch { throw AppError("\(command): \(error)") }
        let runDirectory = resumeRun ?? URL(fileURLWithPath: (config.logdir as NSString).expandingTildeInPath)
            .appendingPathComponent(config.run_name)

        let rewardSpec = parsed.value("reward") ?? (builtin ? "shape_size" : "jpeg_compressibility")
        let reward = try RewardSpec.resolve(rewardSpec, clipModel: parsed.value("clip_model"), command: command)
        let promptsSpec = parsed.value("prompts") ?? (builtin ? BuiltinModelPrompts.fourName : "simple_animals")
        let prompts = try PromptSpec.resolve(promptsSpec, seed: UInt64(bitPattern: Int64(config.seed)), command: command)

        var loraConfig = LoRAConfig()
        if let text = parsed.value("lora_rank") {
            loraConfig.rank = try ArgumentParser.parseInt(text, option: "lora_rank", command: command)
            loraConfig.alpha = Double(loraConfig.rank)
        }
        if let text = parsed.value("lora_alpha") {
            loraConfig.alpha = try ArgumentParser.parseDouble(text, option: "lora_alpha", command: command)
        }
        do { try loraConfig.validate() } catch { throw AppError("\(command): --lora_rank/--lora_alpha: \(error)") }
        let reportPrompts = try parsed.value("report_prompts").map { try ArgumentParser.parseInt($0, option: "report_prompts", command: command) } ?? 4
        guard (0...64).contains(reportPrompts) else {
            throw AppError("\(command): --report_prompts: expected 0 to 64, got \(reportPrompts)")
        }
        return Plan(config: config, modelDirectory: modelDirectory, builtinModel: builtin, rewardSpec: rewardSpec, reward: reward,
                    promptsSpec: promptsSpec, prompts: prompts, runDirectory: runDirectory, useLoRA: parsed.bool("use_lora") ?? true,
                    loraConfig: loraConfig, reportPrompts: reportPrompts, quiet: parsed.bool("quiet") ?? false,
                    device: device, gradientCheckpointing: gradientCheckpointing)
    }

    /// A flag's text as the JSON value of a field of `type` (DDPOConfigField.type).
    static func jsonValue(_ text: String, type: String, field: String) throws -> JSONValue {
        switch type {
        case "an integer": return .number(Double(try ArgumentParser.parseInt(text, option: field, command: command)))
        case "a number": return .number(try ArgumentParser.parseDouble(text, option: field, command: command))
        case "a boolean":
            guard let value = ArgumentParser.parseBool(text) else { throw AppError("\(command): --\(field): expected true or false, got '\(text)'") }
            return .bool(value)
        case "a JSON object":
            guard let value = try? JSONValue(parsing: Data(text.utf8)), value.objectValue != nil else {
                throw AppError("\(command): --\(field): expected a JSON object, got '\(text)'")
            }
            return value
        case "a string or null":
            return ["none", "null", ""].contains(text.lowercased()) ? .null : .string(text)
        default:
            return .string(text)
        }
    }

    // MARK: - running

    static func execute(_ plan: Plan, commandLine: [String]) throws {
        let progress = ProgressReporter(quiet: plan.quiet)
        let fm = FileManager.default
        let run = plan.runDirectory
        let started = Date()
        let commandText = (["ddpo", "train"] + commandLine).map(shellQuoted).joined(separator: " ")
        progress.line("ddpo train: model \(plan.modelDirectory.path)\(plan.builtinModel ? " (built-in)" : ""), reward \(plan.rewardSpec), prompts \(plan.promptsSpec)")
        // The model loads before the run folder exists: a folder that fails to load leaves nothing behind.
        let pipeline: DefaultDDPOStableDiffusionPipeline
        let precision = try MixedPrecision(config: plan.config.mixed_precision)
        do {
            pipeline = try DefaultDDPOStableDiffusionPipeline(directory: plan.modelDirectory, useLoRA: plan.useLoRA, loraConfig: plan.loraConfig,
                                                              seed: UInt64(bitPattern: Int64(plan.config.seed)),
                                                              mixedPrecision: precision, device: plan.device.device)
        } catch { throw AppError("\(command): --model: \(error)", exitCode: 1) }
        // A schedule DDPO cannot score, or a model whose own image size its UNet cannot take, stops
        // here, before the run folder exists.
        do { try DDPOTrainer.checkSchedule(plan.config, scheduler: pipeline.scheduler) }
        catch { throw AppError("\(command): \(error)") }
        let size = pipeline.pipeline.defaultImageSize
        do { try pipeline.pipeline.validateImageSize(height: size.height, width: size.width) } catch {
            let detail = (error as? PipelineError)?.message ?? "\(error)"
            throw AppError("\(command): --model: the UNet's sample_size gives \(detail)", exitCode: 1)
        }
        if plan.device.isGPU {
            CUDA.allowTF32 = plan.config.allow_tf32
            let checkpointing = plan.gradientCheckpointing.map { $0 ? "on" : "off" } ?? "auto (decided before the first training pass)"
            progress.line("ddpo train: \(plan.device.name), mixed precision \(precision.rawValue), gradient checkpointing \(checkpointing)")
        }
        // auto: the trainer measures a training pass on a GPU and checkpoints only when it would not
        // fit (CheckpointingPlan); CPU runs keep every activation (memory is not the limit there).
        if let on = plan.gradientCheckpointing { pipeline.unet.gradientCheckpointing = on }
        do { try fm.createDirectory(at: run, withIntermediateDirectories: true) }
        catch { throw AppError("\(command): cannot create the run folder \(run.path): \(error.localizedDescription)", exitCode: 1) }
        try plan.config.write(to: run.appendingPathComponent("ddpo_config.json"))
        progress.line("ddpo train: run folder \(run.path)")

        let tensorBoard = try TensorBoardWriter(directory: run)
        let metrics = try JSONLinesLogger(directory: run)
        let logger = MultiLogger([tensorBoard, metrics])
        defer { tensorBoard.close(); metrics.close() }

        let trainer = try DDPOTrainer(config: plan.config, reward: plan.reward, prompts: plan.prompts, pipeline: pipeline,
                                      precision: plan.device.precisionSupport, runDirectory: run)
        trainer.logger = logger
        if plan.gradientCheckpointing == nil { trainer.gradientCheckpointing = .auto }

        var curve = previousCurve(run.appendingPathComponent("metrics.jsonl"), before: trainer.nextEpoch)
        var report = RunReport(title: "DDPO run \(plan.config.run_name)", status: "", settings: [], curve: curve)
        report.settings = [("command", commandText), ("model", plan.modelDirectory.path), ("reward", plan.rewardSpec),
                           ("prompts", plan.promptsSpec), ("trained", plan.useLoRA ? "LoRA rank \(plan.loraConfig.rank), alpha \(plan.loraConfig.alpha)" : "whole UNet")]
            + settingsRows(plan.config)

        // Fixed prompts and seeds for the before/after comparison; "before" is kept from the run's start.
        let fixed = fixedPrompts(plan.prompts, count: plan.reportPrompts)
        report.fixedPrompts = fixed
        let beforeFile = run.appendingPathComponent("before.png")
        if !fixed.isEmpty {
            if let saved = try? RGBImage(contentsOf: beforeFile.path), let tiles = try? splitRow(saved, count: fixed.count) {
                report.before = tiles
            } else {
                if trainer.nextEpoch > 0 { report.beforeLabel = "at resume (epoch \(trainer.nextEpoch))" }
                progress.line("ddpo train: sampling the fixed prompts before training")
                report.before = try sampleFixed(pipeline, prompts: fixed, config: plan.config)
                try writeAtomically(ImageGrid.make(report.before, columns: fixed.count, padding: 0), to: beforeFile)
            }
        }

        let optimizerSteps = plan.config.optimizerStepsPerInnerEpoch * plan.config.train_num_inner_epochs
        var stepsDone = 0
        trainer.onEvent = { event in
            switch event {
            case let .sampling(epoch, batch, batches, p):
                progress.update("epoch \(epoch) sampling", done: batch * p.total + p.step, total: batches * p.total)
            case let .step(m):
                stepsDone += 1
                progress.update("epoch \(m.epoch) training", done: stepsDone, total: optimizerSteps,
                                extra: String(format: "loss %.4g  kl %.3g  clip %.2f", m.loss, m.approxKL, m.clipFraction))
            case let .epoch(m):
                stepsDone = 0
                curve.append(RewardPoint(epoch: m.epoch, mean: m.rewardMean, std: m.rewardStd))
                progress.line(String(format: "epoch %d: reward %.5g ± %.3g over %d samples (global step %d)",
                                     m.epoch, m.rewardMean, m.rewardStd, m.rewards.count, m.globalStep))
                report.curve = curve
                report.status = "Running: epoch \(m.epoch + 1) of \(plan.config.num_epochs) done."
                do { try writeAtomically(report.html(), to: run.appendingPathComponent("report.html")) }
                catch { progress.line("ddpo train: warning: report.html not written: \(error)") }
            case let .checkpoint(epoch, url):
                progress.line("epoch \(epoch): checkpoint \(url.path)")
            case let .checkpointing(decision):
                progress.line("ddpo train: \(decision.summary)")
            }
        }
        // The last sample batch of each epoch: captioned here (the report shows it), encoded and
        // written in the background while the epoch trains.
        let sampleWriter = SampleWriter(tensorBoard: tensorBoard)
        trainer.imageSamplesHook = { batches, step, _ in
            guard let last = batches.last else { return }
            let captioned = try ImageGrid.captionedImages(last)
            let epoch = trainer.nextEpoch
            let folder = run.appendingPathComponent("samples").appendingPathComponent(String(format: "epoch_%03d", epoch))
            try fm.createDirectory(at: folder, withIntermediateDirectories: true)
            let names = captioned.indices.map { String(format: "%02d_%@.png", $0, slug(last.prompts[$0])) }
            try sampleWriter.submit(captioned, names: names, folder: folder, step: step)
            report.lastBatch = captioned
            report.lastBatchEpoch = epoch
        }

        if trainer.nextEpoch > 0 { progress.line("ddpo train: resumed at epoch \(trainer.nextEpoch), global step \(trainer.globalStep)") }
        do {
            defer { try? sampleWriter.finish() }     // a training error still leaves the queued images
            try trainer.train()
            try sampleWriter.finish()
        } catch { throw AppError("\(command): \(error)", exitCode: 1) }

        // After: the same prompts and seeds, then the user's take-away in final/.
        if !fixed.isEmpty {
            progress.line("ddpo train: sampling the fixed prompts after training")
            report.after = try sampleFixed(pipeline, prompts: fixed, config: plan.config)
        }
        let elapsed = Date().timeIntervalSince(started)
        report.status = "Finished: \(plan.config.num_epochs) epochs; this invocation took \(ProgressReporter.clock(elapsed))."
        try writeAtomically(report.html(), to: run.appendingPathComponent("report.html"))
        let final = try writeFinal(plan, pipeline: pipeline, report: report, command: commandText, seconds: elapsed)
        plan.device.reportMemoryTrace(command: "ddpo train")
        progress.line("ddpo train: done in \(ProgressReporter.clock(elapsed)); report \(run.appendingPathComponent("report.html").path); model \(final.path)")
    }

    /// final/ written beside as final.partial, then renamed over any previous final/.
    static func writeFinal(_ plan: Plan, pipeline: DefaultDDPOStableDiffusionPipeline, report: RunReport,
                           command: String, seconds: Double) throws -> URL {
        let fm = FileManager.default
        let final = plan.runDirectory.appendingPathComponent("final")
        let partial = plan.runDirectory.appendingPathComponent("final.partial")
        try? fm.removeItem(at: partial)
        try fm.createDirectory(at: partial, withIntermediateDirectories: true)
        try pipeline.savePretrained(to: partial)
        try plan.config.write(to: partial.appendingPathComponent("ddpo_config.json"))
        try Data(RewardCurve.svg(report.curve).utf8).write(to: partial.appendingPathComponent("reward_curve.svg"))
        let images = !report.before.isEmpty && report.after.count == report.before.count
        if images {
            try ImageGrid.make(report.before, columns: report.before.count, padding: 0).writePNG(to: partial.appendingPathComponent("before.png").path)
            try ImageGrid.make(report.after, columns: report.after.count, padding: 0).writePNG(to: partial.appendingPathComponent("after.png").path)
        }
        let card = ModelCard.markdown(baseModel: plan.modelDirectory.path, isLoRA: plan.useLoRA, reward: plan.rewardSpec,
                                      prompts: plan.promptsSpec, config: plan.config, curve: report.curve, command: command,
                                      wallSeconds: seconds, hasImages: images)
        try Data(card.utf8).write(to: partial.appendingPathComponent("README.md"))
        if fm.fileExists(atPath: final.path) { try fm.removeItem(at: final) }
        try fm.moveItem(at: partial, to: final)
        return final
    }

    /// The first `count` distinct prompts of the source (for a noun × activity source: its first pairs).
    static func fixedPrompts(_ source: PromptSource, count: Int) -> [String] {
        guard count > 0 else { return [] }
        switch source.kind {
        case .choice(let samples):
            var seen = Set<String>(), out: [String] = []
            for s in samples where seen.insert(s.prompt).inserted && out.count < count { out.append(s.prompt) }
            return out
        case let .nounsActivities(nouns, activities):
            return (0..<count).map { "\(PromptSource.withArticle(nouns[$0 % nouns.count])) \(activities[$0 % activities.count])" }
        }
    }

    /// The fixed prompts sampled with the run's sampler settings and a fixed seed.
    static func sampleFixed(_ pipeline: DefaultDDPOStableDiffusionPipeline, prompts: [String], config: DDPOConfig) throws -> [RGBImage] {
        var generator = PhiloxGenerator(seed: 20_240_101)
        let request = SamplingRequest(prompts: prompts, negativePrompts: config.negative_prompts.isEmpty ? nil : Array(repeating: config.negative_prompts, count: prompts.count),
                                      numInferenceSteps: config.sample_num_steps, guidanceScale: config.sample_guidance_scale,
                                      eta: config.sample_eta)
        let out = try pipeline.sample(request, generator: &generator, progress: nil)
        return try RewardFunctions.rgbImages(out.images!)
    }

    /// Cuts a one-row grid (padding 0) back into `count` tiles.
    static func splitRow(_ image: RGBImage, count: Int) throws -> [RGBImage] {
        guard count > 0, image.width % count == 0 else { throw AppError("before.png does not hold \(count) tiles") }
        let w = image.width / count
        return (0..<count).map { k in
            var tile = RGBImage(width: w, height: image.height)
            for y in 0..<image.height {
                let from = (y * image.width + k * w) * 3, to = y * w * 3
                tile.pixels.replaceSubrange(to..<(to + w * 3), with: image.pixels[from..<(from + w * 3)])
            }
            return tile
        }
    }

    /// Epoch rewards already in metrics.jsonl (a resumed run continues the curve).
    static func previousCurve(_ file: URL, before epoch: Int) -> [RewardPoint] {
        guard epoch > 0, let text = try? String(contentsOf: file, encoding: .utf8) else { return [] }
        var byEpoch: [Int: RewardPoint] = [:]
        for line in text.split(separator: "\n") {
            guard let object = (try? JSONValue(parsing: Data(line.utf8)))?.objectValue,
                  let mean = object["reward_mean"]?.doubleValue, let e = object["epoch"]?.doubleValue else { continue }
            byEpoch[Int(e)] = RewardPoint(epoch: Int(e), mean: mean, std: object["reward_std"]?.doubleValue ?? 0)
        }
        return byEpoch.values.filter { $0.epoch < epoch }.sorted { $0.epoch < $1.epoch }
    }

    static func settingsRows(_ config: DDPOConfig) -> [(String, String)] {
        let values = (try? JSONValue(parsing: config.jsonData()))?.objectValue ?? [:]
        return DDPOConfig.fieldTable.map { ($0.name, values[$0.name]?.jsonString ?? "") }
    }
}

/// Writes text through a temporary file and a rename.
func writeAtomically(_ text: String, to url: URL) throws {
    try Data(text.utf8).write(to: url, options: .atomic)
}

/// Writes a PNG through a temporary file and a rename.
func writeAtomically(_ image: RGBImage, to url: URL) throws {
    try Data(try image.encodePNG()).write(to: url, options: .atomic)
}

/// A file-name-safe short form of a prompt.
func slug(_ text: String, limit: Int = 40) -> String {
    var out = ""
    for scalar in text.lowercased().unicodeScalars {
        if CharacterSet.alphanumerics.contains(scalar) && scalar.isASCII { out.unicodeScalars.append(scalar) }
        else if !out.hasSuffix("-") { out += "-" }
        if out.count >= limit { break }
    }
    let trimmed = out.trimmingCharacters(in: CharacterSet(charactersIn: "-"))
    return trimmed.isEmpty ? "image" : trimmed
}

/// A word as a POSIX shell would need it quoted.
func shellQuoted(_ word: String) -> String {
    let safe = CharacterSet.alphanumerics.union(CharacterSet(charactersIn: "-_./=:,+@%"))
    if !word.isEmpty && word.unicodeScalars.allSatisfy({ safe.contains($0) }) { return word }
    return "'" + word.replacingOccurrences(of: "'", with: "'\\''") + "'"
}
