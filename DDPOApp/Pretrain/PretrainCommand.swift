import DiffusionModels
import Foundation
import RLAlgorithms
import TensorKit

/// `ddpo pretrain`: trains the built-in model (CLIP-style text encoder, VAE and UNet at small sizes)
/// from scratch on the procedural shapes set, and writes a diffusers folder with a model card
/// (README.md: the exact command, seed, steps, wall time, machine, date) and a sample grid
/// (samples.png). The folder appears only once complete (built under a temporary name, renamed).
enum PretrainCommand {
    static let usage = """
        usage: ddpo pretrain [options]

        Trains the built-in Stable-Diffusion-architecture model from scratch on procedurally drawn,
        captioned shapes ("a red circle", "a blue square on a yellow background") and writes a
        diffusers folder (float16 weights) with README.md and samples.png.

        options:
          --out DIR             output folder (default: models/shapes-sd); replaced atomically
          --seed N              seed of data, initialisation and noise (default 0)
          --vae-steps N         VAE training steps (default 400)
          --steps N             text encoder + UNet training steps (default 2000)
          --batch-size N        images per step (default 32)
          --image-size N        image side in pixels, a multiple of 8 (default 32)
          --vae-lr X            VAE learning rate (default 1e-3)
          --lr X                text encoder + UNet learning rate (default 1e-3)
          --max-minutes X       stop the text encoder + UNet stage after X minutes (default: no limit)
          --log-every N         progress line every N steps (default 50)
          --sample-steps N      DDIM steps for the sample grid (default 30)
          --guidance X          guidance scale for the sample grid (default 5)
          --fp32                store float32 weights instead of float16
          --tiny                the test-sized architecture (16×16 images)
          -h, --help            show this message
        """

    static let valueOptions: Set<String> = ["out", "seed", "vae-steps", "steps", "batch-size", "image-size", "vae-lr", "lr",
                                            "log-every", "sample-steps", "guidance", "max-minutes"]
    static let flagOptions: Set<String> = ["fp32", "tiny"]

    /// Options by name (without dashes), values as given; errors name the flag.
    static func parse(_ arguments: [String]) throws -> [String: String]? {
        var values: [String: String] = [:]
        var i = 0
        while i < arguments.count {
            let argument = arguments[i]
            i += 1
            if argument == "-h" || argument == "--help" { return nil }
            guard argument.hasPrefix("--"), argument.count > 2 else {
                throw AppError("ddpo pretrain: unexpected argument '\(argument)' (options start with --; see ddpo pretrain --help)")
            }
            var name = String(argument.dropFirst(2)).replacingOccurrences(of: "_", with: "-")
            var inline: String?
            if let eq = name.firstIndex(of: "=") {
                inline = String(name[name.index(after: eq)...])
                name = String(name[..<eq])
            }
            if flagOptions.contains(name) {
                if let inline {
                    guard ["true", "false"].contains(inline.lowercased()) else {
                        throw AppError("ddpo pretrain: --\(name): expected true or false, got '\(inline)'")
                    }
                    values[name] = inline.lowercased()
                } else {
                    values[name] = "true"
                }
            } else if valueOptions.contains(name) {
                if let inline {
                    values[name] = inline
                } else {
                    guard i < arguments.count, !arguments[i].hasPrefix("--") else {
                        throw AppError("ddpo pretrain: --\(name) needs a value")
                    }
                    values[name] = arguments[i]
                    i += 1
                }
            } else {
                throw AppError("ddpo pretrain: unknown option '--\(name)' (see ddpo pretrain --help)")
            }
        }
        return values
    }

    static func int(_ values: [String: String], _ name: String, _ fallback: Int, min: Int) throws -> Int {
        guard let text = values[name] else { return fallback }
        guard let value = Int(text), value >= min else {
            throw AppError("ddpo pretrain: --\(name): expected an integer ≥ \(min), got '\(text)'")
        }
        return value
    }

    static func double(_ values: [String: String], _ name: String, _ fallback: Double, positive: Bool = true) throws -> Double {
        guard let text = values[name] else { return fallback }
        guard let value = Double(text), value.isFinite, !positive || value > 0 else {
            throw AppError("ddpo pretrain: --\(name): expected a \(positive ? "positive " : "")number, got '\(text)'")
        }
        return value
    }

    /// The settings of one run, from the command line.
    struct Settings {
        var out: URL
        var recipe: BuiltinModelRecipe
        var options: PretrainOptions
        var logEvery: Int
        var sampleSteps: Int
        var guidance: Double
        var dtype: DType
    }

    static func settings(_ arguments: [String]) throws -> Settings? {
        guard let values = try parse(arguments) else { return nil }
        var recipe: BuiltinModelRecipe = values["tiny"] == "true" ? .tiny : .standard
        let imageSize = try int(values, "image-size", recipe.imageSize, min: 8)
        let multiple = recipe.vaeScaleFactor * 2
        guard imageSize % multiple == 0 else {
            throw AppError("ddpo pretrain: --image-size: expected a multiple of \(multiple) (VAE factor \(recipe.vaeScaleFactor) × 2 UNet levels), got \(imageSize)")
        }
        recipe.imageSize = imageSize
        var options = PretrainOptions()
        if let text = values["seed"] {
            guard let seed = UInt64(text) else { throw AppError("ddpo pretrain: --seed: expected a non-negative integer, got '\(text)'") }
            options.seed = seed
        }
        options.vaeSteps = try int(values, "vae-steps", options.vaeSteps, min: 0)
        options.denoiserSteps = try int(values, "steps", options.denoiserSteps, min: 0)
        options.batchSize = try int(values, "batch-size", options.batchSize, min: 1)
        options.vaeLearningRate = try double(values, "vae-lr", options.vaeLearningRate)
        options.denoiserLearningRate = try double(values, "lr", options.denoiserLearningRate)
        if values["max-minutes"] != nil { options.denoiserTimeLimit = try double(values, "max-minutes", 0) * 60 }
        let out = URL(fileURLWithPath: values["out"] ?? "models/\(BuiltinModel.name)")
        return Settings(out: out, recipe: recipe, options: options,
                        logEvery: try int(values, "log-every", 50, min: 1),
                        sampleSteps: try int(values, "sample-steps", 30, min: 1),
                        guidance: try double(values, "guidance", 5, positive: false),
                        dtype: values["fp32"] == "true" ? .float32 : .float16)
    }

    /// The prompts of the sample grid (one row per shape).
    static let gridPrompts: [String] = [
        "a red circle", "a blue circle", "a yellow circle", "a white circle on a black background",
        "a green square", "a orange square", "a purple square", "a red square on a white background",
        "a blue triangle", "a yellow triangle", "a black triangle", "a white triangle on a blue background",
        "a green cross", "a red cross", "a white cross", "a yellow cross on a purple background",
    ]

    static func run(_ arguments: [String]) throws {
        setvbuf(stdout, nil, _IOLBF, 0)
        guard let s = try settings(arguments) else {
            print(usage)
            return
        }
        let start = Date()
        let trainer = try Pretrainer(recipe: s.recipe, options: s.options)
        let counts = trainer.parameterCounts
        print("ddpo pretrain: \(s.recipe.imageSize)×\(s.recipe.imageSize) images, latents \(s.recipe.latentChannels)×\(s.recipe.latentSize)×\(s.recipe.latentSize); parameters: text encoder \(counts.text), VAE \(counts.vae), UNet \(counts.unet); \(ProcessInfo.processInfo.activeProcessorCount) cores")
        print("seed \(s.options.seed), VAE \(s.options.vaeSteps) steps, text encoder + UNet \(s.options.denoiserSteps) steps, batch \(s.options.batchSize) → \(s.out.path)")

        func logger(_ name: String) -> (PretrainProgress) -> Void {
            { p in
                guard p.step % s.logEvery == 0 || p.step == p.total || p.step == 1 else { return }
                let rate = Double(p.step) / max(p.elapsed, 1e-9)
                let eta = Double(p.total - p.step) / max(rate, 1e-9)
                print(String(format: "%@ step %d/%d  loss %.5f (avg %.5f)  lr %.2e  %.2f step/s  elapsed %@  ETA %@",
                             name, p.step, p.total, p.loss, p.averageLoss, p.learningRate, rate,
                             duration(p.elapsed), duration(eta)))
            }
        }
        let vaeStart = Date()
        try trainer.trainVAE(progress: logger("vae"))
        let vaeTime = Date().timeIntervalSince(vaeStart)
        let scale = trainer.calibrateLatentScale()
        print(String(format: "VAE done in %@; latent scaling_factor %.5f", duration(vaeTime), scale))
        let denoiserStart = Date()
        try trainer.trainDenoiser(progress: logger("unet+text"))
        let denoiserTime = Date().timeIntervalSince(denoiserStart)
        print("text encoder + UNet done in \(duration(denoiserTime)) (\(trainer.denoiserLosses.count) steps)")

        // The sample grid: fixed prompts, fixed seed.
        let pipeline = try trainer.pipeline()
        let sampleSeed: UInt64 = 1234
        let request = SamplingRequest(prompts: gridPrompts, numInferenceSteps: s.sampleSteps, guidanceScale: s.guidance)
        let images = try pipeline.sample(request, seed: sampleSeed).images!
        let zoom = max(1, 128 / s.recipe.imageSize)
        let tiles = try (0..<images.shape[0]).map { upscaled(try RGBImage(tensor: images.slice(0, $0, $0 + 1)), by: zoom) }
        let grid = ImageGrid.make(tiles, columns: 4)
        let wall = Date().timeIntervalSince(start)

        let card = modelCard(s, trainer: trainer, arguments: arguments, wall: wall, vaeTime: vaeTime,
                             denoiserTime: denoiserTime, sampleSeed: sampleSeed)
        try trainer.save(to: s.out, dtype: s.dtype,
                         extraFiles: ["README.md": Data(card.utf8), "samples.png": Data(try grid.encodePNG())])
        print("wrote \(s.out.path) (\(folderSize(s.out) / 1024) KiB) in \(duration(Date().timeIntervalSince(start))) total")
    }

    /// Nearest-neighbour enlargement (the 32-pixel samples are hard to see otherwise).
    static func upscaled(_ image: RGBImage, by scale: Int) -> RGBImage {
        guard scale > 1 else { return image }
        let w = image.width * scale, h = image.height * scale
        var pixels = [UInt8](repeating: 0, count: w * h * 3)
        for y in 0..<h {
            for x in 0..<w {
                let s = ((y / scale) * image.width + x / scale) * 3, d = (y * w + x) * 3
                pixels[d] = image.pixels[s]
                pixels[d + 1] = image.pixels[s + 1]
                pixels[d + 2] = image.pixels[s + 2]
            }
        }
        return RGBImage(width: w, height: h, pixels: pixels)
    }

    static func duration(_ seconds: Double) -> String {
        guard seconds.isFinite else { return "?" }
        let s = Int(seconds.rounded())
        return s >= 3600 ? String(format: "%dh%02dm%02ds", s / 3600, s / 60 % 60, s % 60)
            : s >= 60 ? String(format: "%dm%02ds", s / 60, s % 60) : "\(s)s"
    }

    static func folderSize(_ url: URL) -> Int {
        let files = FileManager.default.enumerator(at: url, includingPropertiesForKeys: [.fileSizeKey])
        var total = 0
        while let file = files?.nextObject() as? URL {
            total += (try? file.resourceValues(forKeys: [.fileSizeKey]).fileSize) ?? 0
        }
        return total
    }

    static func shellQuoted(_ word: String) -> String {
        let safe = CharacterSet.alphanumerics.union(CharacterSet(charactersIn: "-_./=:,+@%"))
        if !word.isEmpty, word.unicodeScalars.allSatisfy({ safe.contains($0) }) { return word }
        return "'" + word.replacingOccurrences(of: "'", with: "'\\''") + "'"
    }

    static func modelCard(_ s: Settings, trainer: Pretrainer, arguments: [String], wall: Double, vaeTime: Double,
                          denoiserTime: Double, sampleSeed: UInt64) -> String {
        let counts = trainer.parameterCounts
        // Thread-count variables change speed (not results); they are part of how the run was made.
        let environment = ProcessInfo.processInfo.environment
        let settings = ["OPENBLAS_NUM_THREADS", "OMP_NUM_THREADS"].compactMap { k in environment[k].map { "\(k)=\(shellQuoted($0))" } }
        let command = (settings + ["ddpo", "pretrain"] + arguments.map(shellQuoted)).joined(separator: " ")
        let date = ISO8601DateFormatter().string(from: Date())
        let cores = ProcessInfo.processInfo.activeProcessorCount
        func tail(_ losses: [Double]) -> String {
            let last = losses.suffix(100)
            return last.isEmpty ? "n/a" : String(format: "%.5f", last.reduce(0, +) / Double(last.count))
        }
        let r = s.recipe, o = s.options
        return """
            ---
            library_name: diffusers
            pipeline_tag: text-to-image
            tags: [stable-diffusion, ddpo-swift, from-scratch, toy]
            ---

            # shapes-sd: a tiny Stable Diffusion trained from scratch on coloured shapes

            A Stable-Diffusion-architecture model (CLIP-style text encoder, AutoencoderKL, UNet2DConditionModel,
            DDIM scheduler) trained from scratch by `ddpo pretrain` (ddpo-swift, pure Swift on the CPU) on
            procedurally drawn \(r.imageSize)×\(r.imageSize) images of one coloured shape on a plain background, captioned
            by a small grammar:

                a <colour> <shape> [on a <colour> background]

            colours: \(ShapesDataset.colors.map(\.name).joined(separator: ", ")) (backgrounds not named are gray);
            shapes: \(ShapeKind.allCases.map(\.rawValue).joined(separator: ", ")). Prompts outside the grammar are
            tokenised but not understood. It is the default model of `ddpo train`.

            ![samples](samples.png)

            `samples.png`: the prompts below, \(s.sampleSteps) DDIM steps (eta 0), guidance \(s.guidance), seed \(sampleSeed),
            one row per shape:
            \(gridPrompts.map { "`\($0)`" }.joined(separator: ", ")).

            ## How it was made

            Command (run from the repository root, release build):

                \(command)

            | | |
            |---|---|
            | seed | \(o.seed) |
            | VAE steps | \(o.vaeSteps) (batch \(o.batchSize), lr \(o.vaeLearningRate), L1 + L2 + \(o.klWeight) × KL) |
            | text encoder + UNet steps | \(trainer.denoiserLosses.count) of \(o.denoiserSteps) planned\(o.denoiserTimeLimit.map { String(format: " (time limit %.0f min)", $0 / 60) } ?? "") (batch \(o.batchSize), lr \(o.denoiserLearningRate), warmup \(o.warmupSteps), cosine to 10 %, caption dropout \(o.captionDropout), EMA \(o.emaDecay)) |
            | final losses (mean of last 100 steps) | VAE \(tail(trainer.vaeLosses)), ε-MSE \(tail(trainer.denoiserLosses)) |
            | wall time | \(duration(wall)) (VAE \(duration(vaeTime)), text encoder + UNet \(duration(denoiserTime))) |
            | machine | \(cores) CPU cores (\(ProcessInfo.processInfo.operatingSystemVersionString)) |
            | date | \(date) |

            ## Architecture

            | component | configuration | parameters |
            |---|---|---|
            | text encoder | CLIPTextModel, hidden \(r.textHiddenSize), \(r.textLayers) layers, \(r.textHeads) heads, \(r.maxTokens) tokens, vocabulary \(trainer.tokenizerFiles.vocabularySize) | \(counts.text) |
            | VAE | AutoencoderKL, channels \(r.vaeChannels), \(r.latentChannels) latent channels (×\(r.vaeScaleFactor) downsampling), scaling_factor \(String(format: "%.5f", trainer.scalingFactor)) | \(counts.vae) |
            | UNet | UNet2DConditionModel, channels \(r.unetChannels), cross-attention at every level, sample_size \(r.latentSize) | \(counts.unet) |
            | scheduler | DDIMScheduler, scaled_linear 0.00085–0.012, 1000 steps, ε-prediction | |

            Weights are stored as \(s.dtype == .float16 ? "float16" : "float32") safetensors under the plain diffusers file names.
            In diffusers: `StableDiffusionPipeline.from_pretrained(path, torch_dtype=torch.float32, safety_checker=None)`.

            The tokenizer (vocab.json + merges.txt) is CLIP's byte-level BPE with merges that make every
            word of the grammar one token; it reads with transformers' `CLIPTokenizer` and ddpo-swift's.
            """ + "\n"
    }
}
