import Foundation

// DDPOConfig as JSON with TRL's keys (the field names).
//
//   let config = try DDPOConfig(contentsOf: url)       // or DDPOConfig(json: data)
//   try config.write(to: url)                          // pretty, sorted keys; atomic
//
// Decoding starts from the defaults and overwrites the keys present, so a file may hold only the
// fields it changes. A key that is no field is an error naming it, with the closest field name as
// a suggestion; a value of the wrong type is an error naming the field and the type it needs.
// `log_with` may be null; the three *_kwargs fields are JSON objects kept as they are (`JSONValue`,
// the module's JSON type; numbers are Doubles, so an integer comes back as e.g. 3.0 in Swift).
// Encoding writes every field, `log_with` as null when unset, as TRL's `dataclasses.asdict` would.

extension DDPOConfig {
    /// Decodes TRL-style JSON (see the file comment for the rules).
    public init(json: Data) throws {
        do {
            self = try JSONDecoder().decode(DDPOConfig.self, from: json)
        } catch let error as DecodingError {
            throw DDPOConfigError(field: "", "not a JSON object of DDPOConfig fields: \(Self.describe(error))")
        } catch let error as DDPOConfigError {
            throw error
        } catch {
            throw DDPOConfigError(field: "", "not a JSON object of DDPOConfig fields: \(error)")
        }
    }

    public init(contentsOf url: URL) throws {
        let data: Data
        do { data = try Data(contentsOf: url) }
        catch { throw DDPOConfigError(field: "", "\(url.path): cannot read the config file (\(error.localizedDescription))") }
        do { try self.init(json: data) }
        catch var error as DDPOConfigError {
            error.file = url.path
            throw error
        }
    }

    /// Pretty-printed JSON with sorted keys.
    public func jsonData() throws -> Data {
        let encoder = JSONEncoder()
        encoder.outputFormatting = [.prettyPrinted, .sortedKeys]
        return try encoder.encode(self)
    }

    /// Writes `jsonData()` to `url` atomically.
    public func write(to url: URL) throws {
        try jsonData().write(to: url, options: .atomic)
    }

    /// Every field name, in TRL's declaration order.
    public static var fieldNames: [String] { fields.map(\.name) }

    private static func describe(_ error: DecodingError) -> String {
        switch error {
        case .dataCorrupted(let context): return context.debugDescription + ((context.underlyingError).map { " (\($0))" } ?? "")
        case .typeMismatch(_, let context), .valueNotFound(_, let context), .keyNotFound(_, let context):
            return context.debugDescription
        @unknown default: return "\(error)"
        }
    }
}

extension DDPOConfig: Codable {
    struct Key: CodingKey {
        var stringValue: String
        var intValue: Int? { nil }
        init(_ name: String) { stringValue = name }
        init?(stringValue: String) { self.stringValue = stringValue }
        init?(intValue: Int) { nil }
    }

    /// One field: its JSON type in words, and how it is read and written.
    struct Field {
        let name: String
        let type: String
        let decode: (inout DDPOConfig, KeyedDecodingContainer<Key>) throws -> Void
        let encode: (DDPOConfig, inout KeyedEncodingContainer<Key>) throws -> Void

        init<T: Codable>(_ name: String, _ path: WritableKeyPath<DDPOConfig, T>, _ type: String) {
            self.name = name
            self.type = type
            let key = Key(name)
            decode = { config, c in config[keyPath: path] = try c.decode(T.self, forKey: key) }
            encode = { config, c in try c.encode(config[keyPath: path], forKey: key) }
        }

        init(_ name: String, _ path: WritableKeyPath<DDPOConfig, String?>) {
            self.name = name
            self.type = "a string or null"
            let key = Key(name)
            decode = { config, c in
                config[keyPath: path] = try c.decodeNil(forKey: key) ? nil : c.decode(String.self, forKey: key)
            }
            encode = { config, c in
                if let value = config[keyPath: path] { try c.encode(value, forKey: key) } else { try c.encodeNil(forKey: key) }
            }
        }
    }

    static let fields: [Field] = [
        Field("exp_name", \.exp_name, "a string"),
        Field("run_name", \.run_name, "a string"),
        Field("seed", \.seed, "an integer"),
        Field("log_with", \.log_with),
        Field("tracker_kwargs", \.tracker_kwargs, "a JSON object"),
        Field("accelerator_kwargs", \.accelerator_kwargs, "a JSON object"),
        Field("project_kwargs", \.project_kwargs, "a JSON object"),
        Field("tracker_project_name", \.tracker_project_name, "a string"),
        Field("logdir", \.logdir, "a string"),
        Field("num_epochs", \.num_epochs, "an integer"),
        Field("save_freq", \.save_freq, "an integer"),
        Field("num_checkpoint_limit", \.num_checkpoint_limit, "an integer"),
        Field("mixed_precision", \.mixed_precision, "a string"),
        Field("allow_tf32", \.allow_tf32, "a boolean"),
        Field("resume_from", \.resume_from, "a string"),
        Field("sample_num_steps", \.sample_num_steps, "an integer"),
        Field("sample_eta", \.sample_eta, "a number"),
        Field("sample_guidance_scale", \.sample_guidance_scale, "a number"),
        Field("sample_batch_size", \.sample_batch_size, "an integer"),
        Field("sample_num_batches_per_epoch", \.sample_num_batches_per_epoch, "an integer"),
        Field("train_batch_size", \.train_batch_size, "an integer"),
        Field("train_use_8bit_adam", \.train_use_8bit_adam, "a boolean"),
        Field("train_learning_rate", \.train_learning_rate, "a number"),
        Field("train_adam_beta1", \.train_adam_beta1, "a number"),
        Field("train_adam_beta2", \.train_adam_beta2, "a number"),
        Field("train_adam_weight_decay", \.train_adam_weight_decay, "a number"),
        Field("train_adam_epsilon", \.train_adam_epsilon, "a number"),
        Field("train_gradient_accumulation_steps", \.train_gradient_accumulation_steps, "an integer"),
        Field("train_max_grad_norm", \.train_max_grad_norm, "a number"),
        Field("train_num_inner_epochs", \.train_num_inner_epochs, "an integer"),
        Field("train_cfg", \.train_cfg, "a boolean"),
        Field("train_adv_clip_max", \.train_adv_clip_max, "a number"),
        Field("train_clip_range", \.train_clip_range, "a number"),
        Field("train_timestep_fraction", \.train_timestep_fraction, "a number"),
        Field("per_prompt_stat_tracking", \.per_prompt_stat_tracking, "a boolean"),
        Field("per_prompt_stat_tracking_buffer_size", \.per_prompt_stat_tracking_buffer_size, "an integer"),
        Field("per_prompt_stat_tracking_min_count", \.per_prompt_stat_tracking_min_count, "an integer"),
        Field("async_reward_computation", \.async_reward_computation, "a boolean"),
        Field("max_workers", \.max_workers, "an integer"),
        Field("negative_prompts", \.negative_prompts, "a string"),
        Field("push_to_hub", \.push_to_hub, "a boolean"),
    ]

    public init(from decoder: Decoder) throws {
        self.init()
        let c = try decoder.container(keyedBy: Key.self)
        let known = Dictionary(uniqueKeysWithValues: Self.fields.map { ($0.name, $0) })
        for key in c.allKeys.sorted(by: { $0.stringValue < $1.stringValue }) where known[key.stringValue] == nil {
            var message = "unknown DDPOConfig field"
            if let suggestion = Self.closestField(to: key.stringValue) { message += "; did you mean '\(suggestion)'?" }
            throw DDPOConfigError(field: key.stringValue, message)
        }
        for field in Self.fields where c.contains(Key(field.name)) {
            do { try field.decode(&self, c) }
            catch {
                // Type mismatches are DecodingErrors; a number that does not fit (1.5 for an integer)
                // is an internal JSON error of Foundation's decoder.
                var found = ""
                if case DecodingError.valueNotFound? = error as? DecodingError { found = ", found null" }
                throw DDPOConfigError(field: field.name, "expected \(field.type)\(found)")
            }
        }
    }

    public func encode(to encoder: Encoder) throws {
        var c = encoder.container(keyedBy: Key.self)
        for field in Self.fields { try field.encode(self, &c) }
    }

    /// The field name nearest to `name` by edit distance, if it is plausibly a typo of it.
    static func closestField(to name: String) -> String? {
        Suggestions.closest(to: name, in: fields.map(\.name))
    }
}
