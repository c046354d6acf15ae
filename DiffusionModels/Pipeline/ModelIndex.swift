import Foundation

// `model_index.json`, the table of contents of a diffusers pipeline folder:
//
//   {"_class_name": "StableDiffusionPipeline", "_diffusers_version": "0.6.0",
//    "unet": ["diffusers", "UNet2DConditionModel"], "vae": ["diffusers", "AutoencoderKL"],
//    "text_encoder": ["transformers", "CLIPTextModel"], "tokenizer": ["transformers", "CLIPTokenizer"],
//    "scheduler": ["diffusers", "PNDMScheduler"], "safety_checker": [null, null], ...}
//
// Each component entry names the library and class that wrote the subfolder of the same name;
// `[null, null]` marks a component the folder does not have.

/// The parsed `model_index.json` of a diffusers folder.
public struct ModelIndex: Sendable {
    /// One component: the library and class that saved it, nil for an absent component.
    public struct Component: Sendable, Equatable {
        public var library: String?
        public var className: String?
        public var isPresent: Bool { className != nil }
    }

    /// `_class_name`, e.g. "StableDiffusionPipeline".
    public var className: String
    public var diffusersVersion: String?
    /// Every component entry by its key (the subfolder name).
    public var components: [String: Component]

    /// Reads and validates the structure of `model_index.json`; errors name the file and the key.
    public init(contentsOf url: URL) throws {
        let data: Data
        do { data = try Data(contentsOf: url) } catch {
            throw DiffusersLoadError(path: url.path, "cannot read model_index.json (is this a diffusers pipeline folder?): \(error.localizedDescription)")
        }
        guard let object = (try? JSONSerialization.jsonObject(with: data)) as? [String: Any] else {
            throw DiffusersLoadError(path: url.path, "not a JSON object")
        }
        guard let name = object["_class_name"] as? String else {
            throw DiffusersLoadError(path: url.path, "key \"_class_name\" must be a string naming the pipeline class")
        }
        className = name
        diffusersVersion = object["_diffusers_version"] as? String
        var components: [String: Component] = [:]
        for (key, value) in object where !key.hasPrefix("_") {
            // Pipeline-level options (e.g. "requires_safety_checker": true) are not components.
            guard let pair = value as? [Any] else { continue }
            guard pair.count == 2 else {
                throw DiffusersLoadError(path: url.path, "key \"\(key)\": expected [library, class], found \(pair.count) entries")
            }
            func text(_ v: Any) throws -> String? {
                if v is NSNull { return nil }
                guard let s = v as? String else {
                    throw DiffusersLoadError(path: url.path, "key \"\(key)\": expected [library, class] strings or nulls")
                }
                return s
            }
            components[key] = Component(library: try text(pair[0]), className: try text(pair[1]))
        }
        self.components = components
    }

    /// The class of a present component, nil when absent or not listed.
    public func componentClass(_ key: String) -> String? { components[key]?.className }
}
