import Foundation

// Loading a whole Stable Diffusion folder in the diffusers layout (as downloaded from a model hub
// or written by `StableDiffusionPipeline.save_pretrained`):
//
//   model_index.json
//   unet/          config.json + diffusion_pytorch_model[.<variant>].safetensors (or sharded)
//   vae/           config.json + diffusion_pytorch_model[.<variant>].safetensors
//   text_encoder/  config.json + model[.<variant>].safetensors
//   tokenizer/     vocab.json + merges.txt (+ tokenizer_config.json), or tokenizer.json
//   scheduler/     scheduler_config.json
//
// The scheduler is always DDIM (DDPO's sampler), built from the folder's scheduler config as TRL
// builds it: `StableDiffusionPipeline.from_pretrained` rewrites outdated configs (`steps_offset`
// becomes 1, `clip_sample` true becomes false), then `DDIMScheduler.from_config` converts (SD 1.5
// ships a PNDM config). from_config drops the fields the file left out (diffusers lists them in
// `_use_default_values`), so the rewrites reach DDIM only for fields the file states; a missing
// field takes DDIM's default (`steps_offset` 0, `clip_sample` true) whatever the file's class. The
// safety checker and feature extractor, when present, are not loaded (DDPO's pipelines set them
// to None).

extension StableDiffusionPipeline {
    /// The components this pipeline needs, with the classes it accepts for each.
    static let requiredComponents: [(key: String, classes: Set<String>)] = [
        ("unet", ["UNet2DConditionModel"]),
        ("vae", ["AutoencoderKL"]),
        ("text_encoder", ["CLIPTextModel"]),
        ("tokenizer", ["CLIPTokenizer", "CLIPTokenizerFast"]),
    ]
    /// Components that may be present and are not used here.
    static let ignoredComponents: Set<String> = ["safety_checker", "feature_extractor", "image_encoder"]

    /// Loads every component of a diffusers Stable Diffusion 1.x/2.x folder, strictly (each component's
    /// weights must match its config exactly; errors name the folder, file and keys). `variant` picks
    /// e.g. the `fp16` weight files of every component; without it the plain files are preferred, then
    /// the `fp16` ones. Half-precision files are converted to `dtype`. Models are in eval mode with
    /// gradients off (DDPO freezes the VAE and text encoder, and LoRA the UNet's own weights).
    ///
    /// `unetDType` / `vaeDType` override `dtype` for those components (mixed precision keeps a trained
    /// UNet, and under float16 the VAE, in float32), converted from the file's dtype directly.
    public static func load(directory: URL, variant: String? = nil, dtype: DType = .float32,
                            unetDType: DType? = nil, vaeDType: DType? = nil) throws -> StableDiffusionPipeline {
        let index = try ModelIndex(contentsOf: directory.appendingPathComponent("model_index.json"))
        let indexPath = directory.appendingPathComponent("model_index.json").path
        try checkComponents(index, path: indexPath)

        func folder(_ key: String) throws -> URL {
            let url = directory.appendingPathComponent(key)
            var isDirectory: ObjCBool = false
            guard FileManager.default.fileExists(atPath: url.path, isDirectory: &isDirectory), isDirectory.boolValue else {
                throw DiffusersLoadError(path: directory.path, "model_index.json lists \"\(key)\", but the folder \(key)/ is missing")
            }
            return url
        }
        let tokenizer = try CLIPTokenizer(directory: try folder("tokenizer"))
        let textEncoder = try CLIPTextModel.load(directory: try folder("text_encoder"), dtype: dtype, variant: variant)
        let unet = try UNet2DConditionModel.load(directory: try folder("unet"), variant: variant, dtype: unetDType ?? dtype)
        let vae = try AutoencoderKL.load(directory: try folder("vae"), variant: variant, dtype: vaeDType ?? dtype)
        let scheduler = try loadScheduler(directory: try folder("scheduler"))
        for module in [textEncoder, unet, vae] as [Module] {
            for p in module.parameters() { p.requiresGrad = false }
        }
        let pipeline = StableDiffusionPipeline(tokenizer: tokenizer, textEncoder: textEncoder, unet: unet, vae: vae,
                                               scheduler: scheduler, modelIndex: index, directory: directory)
        let width = textEncoder.config.hiddenSize
        if let dims = try? unet.config.resolved().crossAttentionDims, let bad = dims.first(where: { $0 != width }) {
            throw DiffusersLoadError(path: directory.path, "the text encoder's hidden_size \(width) does not match the UNet's cross_attention_dim \(bad)")
        }
        return pipeline
    }

    /// Refuses folders this pipeline cannot run: another pipeline's extra components (SDXL's second
    /// text encoder, ControlNet, …), a missing component, or a component of an unsupported class.
    static func checkComponents(_ index: ModelIndex, path: String) throws {
        let known = Set(requiredComponents.map(\.key)).union(ignoredComponents).union(["scheduler"])
        let extra = index.components.filter { !known.contains($0.key) && $0.value.isPresent }.keys.sorted()
        if !extra.isEmpty {
            throw DiffusersLoadError(path: path, "\(index.className) has components this Stable Diffusion 1.x/2.x pipeline does not run: \(extra.joined(separator: ", "))")
        }
        for (key, classes) in requiredComponents {
            guard let name = index.componentClass(key) else {
                throw DiffusersLoadError(path: path, "component \"\(key)\" is missing (expected one of \(classes.sorted().joined(separator: ", ")))")
            }
            guard classes.contains(name) else {
                throw DiffusersLoadError(path: path, "component \"\(key)\" is a \(name); supported: \(classes.sorted().joined(separator: ", "))")
            }
        }
        guard let scheduler = index.componentClass("scheduler"), scheduler.hasSuffix("Scheduler") else {
            throw DiffusersLoadError(path: path, "component \"scheduler\" is missing or not a diffusers scheduler class")
        }
    }

    /// The DDIM scheduler from `scheduler_config.json`, with diffusers' pipeline-level rewrites of the
    /// fields the file states.
    static func loadScheduler(directory: URL) throws -> DDIMScheduler {
        let url = directory.appendingPathComponent("scheduler_config.json")
        var config = try DDIMSchedulerConfig(contentsOf: url)
        let raw = (try? JSONSerialization.jsonObject(with: Data(contentsOf: url))) as? [String: Any] ?? [:]
        // The rewrites reach DDIM only for fields the file states: a field the file leaves out is in the
        // loaded config's `_use_default_values`, which `from_config` drops, so DDIM's own default wins.
        if raw["steps_offset"] != nil, config.stepsOffset != 1 { config.stepsOffset = 1 }
        if raw["clip_sample"] != nil, config.clipSample { config.clipSample = false }
        do { return try DDIMScheduler(config: config) } catch {
            throw DiffusersLoadError(path: url.path, "\(error)")
        }
    }
}
