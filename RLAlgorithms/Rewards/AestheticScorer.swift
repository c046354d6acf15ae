import Foundation

// The LAION aesthetic predictor as DDPO uses it (TRL examples/scripts/ddpo.py `aesthetic_scorer`,
// ddpo-pytorch aesthetic_scorer.py): CLIP ViT-L/14 image embedding (`get_image_features`), L2-normalised,
// then an MLP 768 → 1024 → 128 → 64 → 16 → 1 (Linear layers, dropout between the first four in training
// only, no activations). Preprocessing is CLIP's (`CLIPImageProcessor`, bit-exact with transformers' PIL one).
//
//     let scorer = try AestheticScorer.load(clipDirectory: URL(fileURLWithPath: "clip-vit-large-patch14"),
//                                           headFile: URL(fileURLWithPath: "aesthetic-model.safetensors"))
//     let out = try scorer(images: images, prompts: prompts, metadata: metadata)   // out.rewards: scores
//
// The head file holds TRL's key names: `layers.0.weight`, `layers.0.bias`, `layers.2.*`, `layers.4.*`,
// `layers.6.*`, `layers.7.*` (the `nn.Sequential` indices; odd indices 1, 3, 5 are the dropouts). TRL ships
// it as a pickle (`trl-lib/ddpo-aesthetic-predictor/aesthetic-model.pth`); convert it once with
//     python -c "import torch, safetensors.torch as s; s.save_file(torch.load('aesthetic-model.pth'), 'aesthetic-model.safetensors')"
// The widths are read from the file (the test uses a scaled-down head), the layout is checked.

/// TRL's `MLP`: `layers` = [Linear, Dropout(0.2), Linear, Dropout(0.2), Linear, Dropout(0.1), Linear, Linear].
public final class AestheticHead: Module {
    public var layers: [Module]

    /// `widths` = [input, hidden1, hidden2, hidden3, hidden4, output]; TRL's: [768, 1024, 128, 64, 16, 1].
    public init(widths: [Int] = [768, 1024, 128, 64, 16, 1], dtype: DType = .float32, seed: UInt64 = 0) {
        precondition(widths.count == 6, "AestheticHead: 6 widths (input, 4 hidden, output), got \(widths)")
        var generator = PhiloxGenerator(seed: seed)
        func linear(_ i: Int) -> Linear { Linear(widths[i], widths[i + 1], dtype: dtype, generator: &generator) }
        layers = [linear(0), Dropout(0.2), linear(1), Dropout(0.2), linear(2), Dropout(0.1), linear(3), linear(4)]
        super.init()
    }

    /// The Linear layers' positions in `layers`.
    public static let linearIndices = [0, 2, 4, 6, 7]

    /// [B, input] → [B, output].
    public func callAsFunction(_ x: Tensor) -> Tensor {
        var h = x
        for layer in layers {
            if let l = layer as? Linear { h = l(h) } else if let d = layer as? Dropout { h = d(h) }
        }
        return h
    }

    /// Loads a head from a safetensors file with TRL's keys; the widths come from the weight shapes.
    public static func load(file: URL, dtype: DType = .float32) throws -> AestheticHead {
        let weights: [String: Tensor]
        do { weights = try SafeTensorsFile(path: file.path).tensors() } catch {
            throw RewardError.loading(path: file.path, message: "cannot read the aesthetic head: \(error)")
        }
        let expected = Set(linearIndices.flatMap { ["layers.\($0).weight", "layers.\($0).bias"] })
        let keys = Set(weights.keys)
        if keys != expected {
            let missing = expected.subtracting(keys).sorted(), unexpected = keys.subtracting(expected).sorted()
            throw RewardError.loading(path: file.path, message: "not an aesthetic head with TRL's layout (layers.{0,2,4,6,7}.{weight,bias}): "
                + (missing.isEmpty ? "" : "missing \(missing)") + (missing.isEmpty || unexpected.isEmpty ? "" : ", ")
                + (unexpected.isEmpty ? "" : "unexpected \(unexpected)"))
        }
        var widths: [Int] = []
        for (n, i) in linearIndices.enumerated() {
            let w = weights["layers.\(i).weight"]!
            guard w.rank == 2, n == 0 || w.shape[1] == widths[n] else {
                throw RewardError.loading(path: file.path, message: "layers.\(i).weight has shape \(w.shape), expected [out, \(n == 0 ? "in" : String(widths[n]))]")
            }
            if n == 0 { widths.append(w.shape[1]) }
            widths.append(w.shape[0])
        }
        guard widths.last == 1 else {
            throw RewardError.loading(path: file.path, message: "the last layer must have 1 output, has \(widths.last!)")
        }
        let head = withoutParameterInitialization { AestheticHead(widths: widths, dtype: dtype) }
        do { try head.load(weights.mapValues { $0.to(dtype) }, strict: true) } catch {
            throw RewardError.loading(path: file.path, message: "\(error)")
        }
        return head.eval()
    }
}

/// The aesthetic reward. Scores are computed without gradients; the models are only read during a call,
/// so one scorer may serve several reward threads at once.
public final class AestheticScorer: RewardFunction, @unchecked Sendable {
    public var name: String { "aesthetic_score" }
    public let clip: CLIPVisionModelWithProjection
    public let processor: CLIPImageProcessor
    public let head: AestheticHead

    public init(clip: CLIPVisionModelWithProjection, processor: CLIPImageProcessor = CLIPImageProcessor(), head: AestheticHead) {
        precondition(clip.config.projectionDim == head.linearInputWidth,
                     "AestheticScorer: CLIP projection_dim \(clip.config.projectionDim) != head input \(head.linearInputWidth)")
        self.clip = clip.eval()
        self.processor = processor
        self.head = head.eval()
    }

    /// CLIP from a transformers folder (a whole-CLIP folder such as openai/clip-vit-large-patch14, or a
    /// CLIPVisionModelWithProjection one); its `preprocessor_config.json` when present, else the
    /// openai defaults; the head from `headFile`.
    public static func load(clipDirectory: URL, headFile: URL, dtype: DType = .float32) throws -> AestheticScorer {
        let clip = try CLIPVisionModelWithProjection.load(directory: clipDirectory, dtype: dtype)
        let hasProcessor = FileManager.default.fileExists(atPath: clipDirectory.appendingPathComponent("preprocessor_config.json").path)
        let processor = hasProcessor ? try CLIPImageProcessor.load(directory: clipDirectory) : CLIPImageProcessor()
        let head = try AestheticHead.load(file: headFile, dtype: dtype)
        guard clip.config.projectionDim == head.linearInputWidth else {
            throw RewardError.loading(path: headFile.path, message: "the head takes \(head.linearInputWidth) inputs but the CLIP model in \(clipDirectory.path) has projection_dim \(clip.config.projectionDim)")
        }
        return AestheticScorer(clip: clip, processor: processor, head: head)
    }

    /// The L2-normalised CLIP image embeddings [B, projection_dim].
    public func normalizedEmbeddings(_ images: Tensor) throws -> Tensor {
        try withNoGrad {
            let pixels = try processor(images)
            let embed = try clip(pixels).imageEmbeds
            let norm = (embed * embed).sum(axes: [1], keepDims: true).sqrt()
            return embed / norm
        }
    }

    /// One score per image.
    public func scores(_ images: Tensor) throws -> [Double] {
        try withNoGrad { head(try normalizedEmbeddings(images)).reshape([-1]).toArray() }
    }

    public func callAsFunction(images: Tensor, prompts: [String], metadata: [PromptMetadata]) throws -> RewardOutput {
        try RewardFunctions.checkInputs(name, images: images, prompts: prompts, metadata: metadata)
        return RewardOutput(rewards: try scores(images))
    }
}

extension AestheticHead {
    /// Input width of the first Linear layer.
    public var linearInputWidth: Int { (layers[0] as! Linear).inFeatures }
}
