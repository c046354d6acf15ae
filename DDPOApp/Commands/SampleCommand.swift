import Foundation
import RLAlgorithms

// `ddpo sample`: the seed's "Using the finetuned model". Loads a diffusers folder (a base model, or a
// full fine-tune's final/), optionally a LoRA (`--lora final/`), and writes one PNG per prompt in
// order plus samples.safetensors: `images` [B, 3, H, W] in [0, 1] and `latents` (the final latents).
// Defaults follow diffusers' StableDiffusionPipeline call: 50 steps, guidance 7.5, eta 0.
// `--trajectory` samples with DDPO's sampler instead (TRL's pipeline_step: every step with its
// log-probability, eta 1 by default) and adds `trajectory`, `log_probs` and `timesteps`; `--noise`
// replays given per-step variance noise, so a run can be compared with TRL's step for step.

enum SampleCommand {
    static let command = "ddpo sample"

    static let options: [OptionSpec] = [
        OptionSpec(name: "model", kind: .value, valueName: "DIR", help: "diffusers folder (default: the built-in shapes model)"),
        OptionSpec(name: "lora", kind: .value, valueName: "DIR|FILE", help: "LoRA weights to apply (ddpo train's final/, or a .safetensors file; UNet and text-encoder layers)"),
        OptionSpec(name: "prompt", kind: .repeated, valueName: "TEXT", help: "a prompt; repeat for more (one image each, in order)"),
        OptionSpec(name: "negative-prompt", kind: .repeated, valueName: "TEXT", help: "negative prompt: once for all prompts, or once per prompt"),
        OptionSpec(name: "seed", kind: .value, valueName: "INT", help: "seed of the initial latents and the step noise (default 0)"),
        OptionSpec(name: "steps", kind: .value, valueName: "INT", help: "DDIM steps (default 50)"),
        OptionSpec(name: "guidance", kind: .value, valueName: "FLOAT", help: "classifier-free guidance scale (default 7.5; ≤ 1: none)"),
        OptionSpec(name: "eta", kind: .value, valueName: "FLOAT", help: "DDIM eta (default 0: deterministic)"),
        OptionSpec(name: "height", kind: .value, valueName: "PX", help: "image height (default: the model's)"),
        OptionSpec(name: "width", kind: .value, valueName: "PX", help: "image width (default: the model's)"),
        OptionSpec(name: "latents", kind: .value, valueName: "FILE", help: "initial latents: safetensors with key 'latents', [B, C, h, w]"),
        OptionSpec(name: "noise", kind: .value, valueName: "FILE", help: "each step's DDIM variance noise, to replay a recorded run: safetensors with key 'noise', [steps, B, C, h, w] (needs --eta > 0)"),
        OptionSpec(name: "trajectory", kind: .bool, help: "sample with DDPO's sampler (TRL's pipeline_step) and also write its trajectory [B, steps+1, C, h, w], log_probs [B, steps] and timesteps [B, steps] to samples.safetensors (eta defaults to 1.0, DDPO's sample_eta)"),
        OptionSpec(name: "out", kind: .value, valueName: "DIR", help: "output folder (default: samples)"),
        OptionSpec(name: "device", kind: .value, valueName: "cpu|cuda:N", help: "where to run (default: the first GPU, else cpu; or $DDPO_DEVICE)"),
        OptionSpec(name: "mixed_precision", kind: .value, valueName: "no|fp16|bf16", help: "half-precision weights and activations on a GPU (default fp16 there, no on a CPU)"),
        OptionSpec(name: "timing", kind: .bool, help: "print {\"sampling_seconds\" (also split into text_seconds, denoise_seconds, decode_seconds), \"peak_mib\", \"raw_allocations\"} as JSON after sampling"),
        OptionSpec(name: "warmup_steps", kind: .value, valueName: "INT", help: "first run the same prompts for this many steps, untimed and discarded (default 0; benchmarks: kernels, cuBLAS and the allocator warm)"),
        OptionSpec(name: "quiet", kind: .bool, help: "no progress output"),
    ]

    static var usage: String {
        """
        usage: ddpo sample --prompt TEXT [--prompt TEXT ...] [options]

        options:
        \(ArgumentParser.helpLines(options))
        """
    }

    static func run(_ arguments: [String]) throws {
        guard let parsed = try ArgumentParser.parseOrShowHelp(arguments, specs: options, command: command, usage: usage) else { return }
        let choice = try DeviceChoice.resolve(parsed.value("device"), command: command)
        let precision = try choice.mixedPrecision(parsed.value("mixed_precision"), command: command)
        let prompts = parsed.values("prompt")
        guard !prompts.isEmpty else { throw AppError("\(command): give at least one --prompt TEXT") }
        let negatives = parsed.values("negative_prompt")
        guard negatives.count <= 1 || negatives.count == prompts.count else {
            throw AppError("\(command): --negative-prompt given \(negatives.count) times for \(prompts.count) prompts (give it once, or once per prompt)")
        }
        let seed = try parsed.value("seed").map { try ArgumentParser.parseInt($0, option: "seed", command: command) } ?? 0
        let steps = try parsed.value("steps").map { try ArgumentParser.parseInt($0, option: "steps", command: command) } ?? 50
        guard steps >= 1 else { throw AppError("\(command): --steps: must be at least 1, got \(steps)") }
        let warmupSteps = try parsed.value("warmup_steps").map { try ArgumentParser.parseInt($0, option: "warmup_steps", command: command) } ?? 0
        guard warmupSteps >= 0 else { throw AppError("\(command): --warmup_steps: must be ≥ 0, got \(warmupSteps)") }
        let guidance = try parsed.value("guidance").map { try ArgumentParser.parseDouble($0, option: "guidance", command: command) } ?? 7.5
        let trajectory = parsed.bool("trajectory") ?? false
        let eta = try parsed.value("eta").map { try ArgumentParser.parseDouble($0, option: "eta", command: command) } ?? (trajectory ? 1 : 0)
        guard eta >= 0 else { throw AppError("\(command): --eta: must be ≥ 0, got \(eta)") }
        if trajectory, !(eta > 0) {
            throw AppError("\(command): --trajectory: needs --eta > 0 (a deterministic DDIM step has no log-probability), got \(eta)")
        }
        let height = try parsed.value("height").map { try ArgumentParser.parseInt($0, option: "height", command: command) }
        let width = try parsed.value("width").map { try ArgumentParser.parseInt($0, option: "width", command: command) }
        for (name, value) in [("height", height), ("width", width)] {
            if let value, value < 8 || value % 8 != 0 { throw AppError("\(command): --\(name): must be a positive multiple of 8, got \(value)") }
        }
        let out = URL(fileURLWithPath: parsed.value("out") ?? "samples")
        let modelDirectory = try BuiltinModelLocator.resolve(parsed.value("model"), command: command)
        let loraURL = parsed.value("lora").map { URL(fileURLWithPath: $0) }
        if let loraURL, !FileManager.default.fileExists(atPath: loraURL.path) {
            throw AppError("\(command): --lora: \(loraURL.path): no such file or folder")
        }
        var latents: Tensor?
        if let path = parsed.value("latents") {
            latents = try readLatents(path, count: prompts.count)
        }
        var noise: Tensor?
        if let path = parsed.value("noise") {
            guard eta > 0 else { throw AppError("\(command): --noise: the step noise is used only with --eta > 0, got \(eta)") }
            noise = try readTensor(path, key: "noise", option: "noise")
            guard let n = noise, n.rank == 5, n.shape[0] == steps, n.shape[1] == prompts.count else {
                throw AppError("\(command): --noise: \(path): 'noise' has shape \(noise?.shape ?? []); expected [\(steps) (--steps), \(prompts.count) (one per --prompt), C, h, w]")
            }
        }

        let progress = ProgressReporter(quiet: parsed.bool("quiet") ?? false)
        let pipeline: StableDiffusionPipeline
        do { pipeline = try choice.loadPipeline(modelDirectory, precision: precision) }
        catch { throw AppError("\(command): --model: \(error)", exitCode: 1) }
        // A folder that carries its own LoRA (as `ddpo train` / TRL save it next to a model) uses it.
        let ownLoRA = modelDirectory.appendingPathComponent(LoRANetwork.weightName)
        let lora = loraURL ?? (FileManager.default.fileExists(atPath: ownLoRA.path) ? ownLoRA : nil)
        if let lora {
            // diffusers' training scripts save the text encoder's layers beside the UNet's; each
            // component's keys go to its model, as `pipe.load_lora_weights` does.
            do {
                let components = try LoRANetwork.components(in: lora)
                if components.contains("unet") {
                    _ = try LoRANetwork.load(contentsOf: lora, into: pipeline.unet, prefix: "unet", freezeBase: true,
                                             skipping: ["text_encoder"])
                }
                if components.contains("text_encoder") {
                    _ = try LoRANetwork.load(contentsOf: lora, into: pipeline.textEncoder, prefix: "text_encoder",
                                             freezeBase: true, skipping: ["unet"])
                }
            } catch { throw AppError("\(command): --lora: \(error)", exitCode: 1) }
            if loraURL == nil { progress.line("\(command): applying the folder's own \(LoRANetwork.weightName)") }
        }
        if let latents {
            let expected = [pipeline.unet.config.in_channels]
            guard latents.shape[1] == expected[0] else {
                throw AppError("\(command): --latents: 'latents' has \(latents.shape[1]) channels; the UNet takes \(expected[0])")
            }
            let f = pipeline.vaeScaleFactor
            if let height, height != latents.shape[2] * f { throw AppError("\(command): --height \(height) disagrees with the latents (\(latents.shape[2]) × \(f))") }
            if let width, width != latents.shape[3] * f { throw AppError("\(command): --width \(width) disagrees with the latents (\(latents.shape[3]) × \(f))") }
        }

        let f = pipeline.vaeScaleFactor, defaultSize = pipeline.defaultImageSize
        let imageHeight = latents.map { $0.shape[2] * f } ?? height ?? defaultSize.height
        let imageWidth = latents.map { $0.shape[3] * f } ?? width ?? defaultSize.width
        if latents != nil || height != nil || width != nil {
            do { try pipeline.validateImageSize(height: imageHeight, width: imageWidth) } catch {
                let detail = (error as? PipelineError)?.message ?? "\(error)"
                throw AppError("\(command): \(latents != nil ? "--latents" : "--height/--width"): \(detail)")
            }
        }
        if trajectory, let problem = pipeline.scheduler.logProbabilityProblem(steps: steps, eta: eta) {
            throw AppError("\(command): --trajectory: \(problem)")
        }
        if let noise {
            let expected = [steps, prompts.count, pipeline.unet.config.in_channels, imageHeight / f, imageWidth / f]
            guard noise.shape == expected else {
                throw AppError("\(command): --noise: 'noise' has shape \(noise.shape); these latents need \(expected) (steps, prompts, channels, height/\(f), width/\(f))")
            }
        }

        var request = SamplingRequest(prompts: prompts, negativePrompts: negatives.isEmpty ? nil : (negatives.count == 1 ? Array(repeating: negatives[0], count: prompts.count) : negatives),
                                      numInferenceSteps: steps, guidanceScale: guidance, eta: eta)
        request.latents = latents
        request.stepNoise = noise.map { n in (0..<steps).map { n.slice(0, $0, $0 + 1).squeeze(0).to(.float32).contiguous() } }
        if let latents {
            request.height = latents.shape[2] * pipeline.vaeScaleFactor
            request.width = latents.shape[3] * pipeline.vaeScaleFactor
        } else {
            request.height = height
            request.width = width
        }
        var output: SamplingOutput
        // Under fp16/bf16 the float32 work is the VAE decode: TF32 there, as PyTorch's cuDNN default.
        if case .cuda = choice.device { CUDA.allowTF32 = precision != .no }
        if warmupSteps > 0 {
            var warmup = request
            warmup.numInferenceSteps = warmupSteps
            var generator = PhiloxGenerator(seed: UInt64(bitPattern: Int64(seed)))
            do { _ = try pipeline.sample(warmup, generator: &generator).images?.copied(to: .cpu) }
            catch { throw AppError("\(command): warm-up: \(error)", exitCode: 1) }
        }
        var rawAllocationsBefore = 0
        if case .cuda(let index) = choice.device {
            CUDA.resetPeakMemory(index)
            rawAllocationsBefore = CUDA.memoryStats(index).rawAllocations
        }
        CUDA.resetProfile()
        // Three parts, timed apart (`--timing`): the text encoder, the denoising loop, the VAE
        // decode. Each ends by waiting for the device; `sample` would run the same calls in one go.
        func synchronize() { if case .cuda(let index) = choice.device { try? CUDA.synchronize(index) } }
        let started = Date()
        var split: (text: Double, denoise: Double) = (0, 0)
        var recorded: SamplingTrajectory?
        do {
            var generator = PhiloxGenerator(seed: UInt64(bitPattern: Int64(seed)))
            var timed = request
            timed.promptEmbeddings = try pipeline.encodePrompts(request.prompts, clipSkip: request.clipSkip)
            if request.usesGuidance {
                timed.negativePromptEmbeddings = try pipeline.encodePrompts(
                    request.negativePrompts ?? Array(repeating: "", count: request.prompts.count), clipSkip: request.clipSkip)
            }
            synchronize()
            split.text = Date().timeIntervalSince(started)
            timed.decode = false
            if trajectory {
                let t = try pipeline.sampleTrajectory(timed, generator: &generator) { p in
                    progress.update("sampling", done: p.step, total: p.total)
                }
                output = SamplingOutput(images: nil, latents: t.latents.slice(1, steps, steps + 1).squeeze(1))
                recorded = t
            } else {
                output = try pipeline.sample(timed, generator: &generator) { p in
                    progress.update("sampling", done: p.step, total: p.total)
                }
            }
            synchronize()
            split.denoise = Date().timeIntervalSince(started) - split.text
            output.images = pipeline.decodeLatents(output.latents)
        } catch { throw AppError("\(command): \(error)", exitCode: 1) }
        guard let images = output.images?.copied(to: .cpu) else { throw AppError("\(command): the pipeline decoded no images", exitCode: 1) }
        let seconds = Date().timeIntervalSince(started)   // the copy to the host waited for the device
        CUDA.flushProfile("\(command): \(prompts.count) prompts, \(steps) steps")

        do { try FileManager.default.createDirectory(at: out, withIntermediateDirectories: true) }
        catch { throw AppError("\(command): --out: cannot create \(out.path): \(error.localizedDescription)", exitCode: 1) }
        let digits = max(2, String(prompts.count - 1).count)
        let pngs = try RewardFunctions.rgbImages(images)
        for (i, image) in pngs.enumerated() {
            let name = String(repeating: "0", count: max(0, digits - String(i).count)) + "\(i)_\(slug(prompts[i])).png"
            try writeAtomically(image, to: out.appendingPathComponent(name))
        }
        var saved = ["images": images.to(.float32).contiguous(), "latents": output.latents.to(.float32).contiguous()]
        if let recorded {
            saved["trajectory"] = recorded.latents.to(.float32).contiguous()
            saved["log_probs"] = recorded.logProbs.to(.float32).contiguous()
            saved["timesteps"] = recorded.timesteps.copied(to: .cpu).contiguous()
        }
        try saveSafeTensors(saved, to: out.appendingPathComponent("samples.safetensors").path)
        progress.line("\(command): wrote \(pngs.count) PNGs and samples.safetensors to \(out.path)")
        if pipeline.vaeDecodeFallbacks > 0 {
            // The issue's "VAE decoded in float32 when fp16 would overflow", made visible.
            progress.line("\(command): the VAE's \(pipeline.vaeDecodeDType.map { "\($0)" } ?? "half-precision") decode overflowed; "
                          + "decoded again with its \(pipeline.vae.decoder.conv_in.weight.dtype) weights "
                          + "(\(pipeline.vaeDecodeFallbacks) time\(pipeline.vaeDecodeFallbacks == 1 ? "" : "s"))")
        }
        choice.reportMemoryTrace(command: command)
        if parsed.bool("timing") ?? false {
            // raw_allocations: device allocations (cuMemAlloc, which can stall the GPU) made by the timed run.
            var peak = 0.0, rawAllocations = 0
            if case .cuda(let index) = choice.device {
                let stats = CUDA.memoryStats(index)
                peak = Double(stats.peakInUse) / 1_048_576
                rawAllocations = stats.rawAllocations - rawAllocationsBefore
            }
            print(String(format: "{\"sampling_seconds\": %.4f, \"text_seconds\": %.4f, \"denoise_seconds\": %.4f, \"decode_seconds\": %.4f, "
                         + "\"peak_mib\": %.1f, \"raw_allocations\": %d, \"device\": \"%@\"}",
                         seconds, split.text, split.denoise, seconds - split.text - split.denoise, peak, rawAllocations, choice.name))
        }
    }

    /// Tensor `key` of a safetensors file, checked to be floating point.
    static func readTensor(_ path: String, key: String, option: String) throws -> Tensor {
        let file: SafeTensorsFile
        do { file = try SafeTensorsFile(path: path) }
        catch { throw AppError("\(command): --\(option): \(error)") }
        guard file.keys.contains(key) else {
            throw AppError("\(command): --\(option): \(path): no tensor '\(key)' (found: \(file.keys.joined(separator: ", ")))")
        }
        let tensor: Tensor
        do { tensor = try file.tensor(key) }
        catch { throw AppError("\(command): --\(option): \(error)") }
        guard tensor.dtype.isFloatingPoint else {
            throw AppError("\(command): --\(option): \(path): '\(key)' is \(tensor.dtype); expected a floating-point tensor")
        }
        return tensor
    }

    /// The `latents` tensor of a safetensors file, checked to be [count, C, h, w] floating point.
    static func readLatents(_ path: String, count: Int) throws -> Tensor {
        let latents = try readTensor(path, key: "latents", option: "latents")
        guard latents.rank == 4, latents.shape[0] == count else {
            throw AppError("\(command): --latents: \(path): 'latents' has shape \(latents.shape); expected [\(count), C, h, w] (one per --prompt)")
        }
        return latents.to(.float32).contiguous()
    }
}
