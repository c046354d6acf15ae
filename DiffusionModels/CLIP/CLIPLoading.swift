import Foundation

// Loading one CLIP component from a transformers folder: `config.json` plus `model.safetensors`
// (or the `fp16` variant, or a sharded `*.safetensors.index.json`). Loading is strict: every key
// of the model must be present with its shape, and no other key may be there, except the ones
// transformers itself drops on load: the non-persistent `position_ids` buffers (written by
// transformers before 4.31, e.g. in SD 1.x's text encoder) and, for a whole-CLIP checkpoint, the
// other tower's weights.

extension CLIPTextModel {
    /// Loads Stable Diffusion's `text_encoder/` (a `CLIPTextConfig` folder) or the text tower of a
    /// whole-CLIP folder (`model_type` "clip"). `dtype` is the compute dtype of the parameters
    /// (float32, or float64 for gradient checks); half-precision files are converted. `variant`
    /// picks `model.<variant>.safetensors`; nil prefers `model.safetensors`, then `model.fp16.safetensors`.
    /// Returned in eval mode, as transformers' `from_pretrained`.
    public static func load(directory: URL, dtype: DType = .float32, variant: String? = nil) throws -> CLIPTextModel {
        let (config, whole) = try CLIPCheckpoint.readConfig(in: directory, select: { (c: CLIPConfig) in c.textConfig },
                                                            as: CLIPTextConfig.self)
        let model = try CLIPCheckpoint.build(dtype) { CLIPTextModel(config: config, dtype: dtype, seed: 0) }
        try CLIPCheckpoint.loadWeights(into: model, name: "CLIPTextModel", directory: directory, variant: variant, ignore: { key in
            key == "text_model.embeddings.position_ids" || key == "embeddings.position_ids"
                || (whole && (key.hasPrefix("vision_model.") || key.hasPrefix("visual_projection.")
                              || key.hasPrefix("text_projection.") || key == "logit_scale"))
        }, rename: { weights in
            // transformers 5 saves a CLIPTextModel without the `text_model.` prefix (4.x with it);
            // both load there, so both load here.
            guard !whole, !weights.keys.contains(where: { $0.hasPrefix("text_model.") }),
                  weights["final_layer_norm.weight"] != nil else { return weights }
            return Dictionary(uniqueKeysWithValues: weights.map { ("text_model." + $0.key, $0.value) })
        })
        return model.eval()
    }
}

extension CLIPVisionModelWithProjection {
    /// Loads a `CLIPVisionConfig` folder, or the image tower of a whole-CLIP folder such as
    /// openai/clip-vit-large-patch14 (the aesthetic reward's), with `visual_projection` sized by the
    /// top-level `projection_dim` as `CLIPModel.get_image_features` uses it. See `CLIPTextModel.load`
    /// for `dtype` and `variant`.
    public static func load(directory: URL, dtype: DType = .float32, variant: String? = nil) throws
        -> CLIPVisionModelWithProjection {
        let (config, whole) = try CLIPCheckpoint.readConfig(in: directory, select: { (c: CLIPConfig) in c.visionConfigWithProjection },
                                                            as: CLIPVisionConfig.self)
        let model = try CLIPCheckpoint.build(dtype) { CLIPVisionModelWithProjection(config: config, dtype: dtype, seed: 0) }
        try CLIPCheckpoint.loadWeights(into: model, name: "CLIPVisionModelWithProjection", directory: directory,
                                       variant: variant) { key in
            key == "vision_model.embeddings.position_ids"
                || (whole && (key.hasPrefix("text_model.") || key.hasPrefix("text_projection.") || key == "logit_scale"))
        }
        return model.eval()
    }
}

enum CLIPCheckpoint {
    private struct ModelType: Decodable {
        var model_type: String?
    }

    /// Decodes `config.json` as `T`, or as a whole `CLIPConfig` (then `select` picks the tower) when its
    /// `model_type` is "clip". Returns whether it was a whole-CLIP config.
    static func readConfig<T: Decodable>(in directory: URL, select: (CLIPConfig) -> T, as _: T.Type) throws -> (T, Bool) {
        let url = directory.appendingPathComponent("config.json")
        guard FileManager.default.fileExists(atPath: url.path) else {
            throw CLIPError.missingFile(directory: directory.path, expected: ["config.json"], note: "")
        }
        let data: Data
        do { data = try Data(contentsOf: url) } catch {
            throw CLIPError.unreadableFile(path: url.path, message: error.localizedDescription)
        }
        do {
            let decoder = JSONDecoder()
            if try decoder.decode(ModelType.self, from: data).model_type == CLIPConfig.modelType {
                return (select(try decoder.decode(CLIPConfig.self, from: data)), true)
            }
            return (try decoder.decode(T.self, from: data), false)
        } catch let error as CLIPError {
            throw error.inFile(url.path)
        } catch {
            throw CLIPError.unreadableFile(path: url.path, message: "not a valid JSON config: \(error)")
        }
    }

    /// Builds the model with zero (skipped) initialisation, since every weight is overwritten.
    static func build<M: Module>(_ dtype: DType, _ make: () -> M) throws -> M {
        guard dtype.isFloatingPoint else {
            throw CLIPError.invalidInput("CLIP load: dtype must be a floating-point type, got \(dtype)")
        }
        return withoutParameterInitialization(make)
    }

    /// Reads the weights, drops the keys `ignore` accepts, and loads the rest strictly.
    static func loadWeights(into model: Module, name: String, directory: URL, variant: String?,
                            ignore: (String) -> Bool,
                            rename: ([String: Tensor]) -> [String: Tensor] = { $0 }) throws {
        let weights = try ComponentWeights.read(in: directory, stem: "model", variant: variant, ignore: ignore)
        do {
            try model.load(rename(weights.tensors), strict: true, loaded: { SafeTensorsFile.releasePages(of: $0) })
        } catch let error as ModuleLoadError {
            throw CLIPError.weights(file: weights.label, model: name, report: error.report)
        }
    }
}
