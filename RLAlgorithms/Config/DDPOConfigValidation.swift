import Foundation

// Checks a DDPOConfig before any work starts, so a run never fails (or silently misbehaves)
// an hour in.
//
//   try config.validate(numProcesses: 1, precision: .cpu)          // throws the first problem
//   let all = config.problems(numProcesses: 2, precision: .cuda)   // every problem, in order
//
// TRL's three batch-size checks come with TRL's exact messages (`DDPOTrainer._config_check`, with
// the process count in the formulas). On top of them, each with a message naming the field:
// counts ≥ 1, sample_eta > 0 (DDPO's log-probability is undefined at eta 0: the step has no
// noise), train_timestep_fraction in (0, 1] and giving at least one timestep, AdamW
// hyperparameters in range, positive clip values, known `mixed_precision` / `log_with` values,
// a precision the device can honour (TRL's default "fp16" cannot be honoured on a CPU: pass
// `mixed_precision = "no"` there), and an existing `resume_from`.

/// A config problem. `message` is the text alone (for TRL's batch-size checks, exactly TRL's);
/// `description` prefixes the file (when read from one) and the field.
public struct DDPOConfigError: Error, Equatable, CustomStringConvertible, LocalizedError {
    /// The DDPOConfig field (TRL's name) the problem is about; empty when it is about the whole input.
    public var field: String
    public var message: String
    /// The config file, when the config came from one.
    public var file: String?

    public init(field: String, _ message: String, file: String? = nil) {
        self.field = field
        self.message = message
        self.file = file
    }

    public var description: String {
        [file, field.isEmpty ? nil : field, message].compactMap { $0 }.joined(separator: ": ")
    }

    public var errorDescription: String? { description }
}

/// Which `mixed_precision` values a device can honour.
public struct PrecisionSupport: Sendable, Equatable {
    /// Named in the error message ("cpu", "cuda:0 (sm_80)", …).
    public var deviceName: String
    /// A subset of "no", "fp16", "bf16".
    public var modes: Set<String>

    public init(deviceName: String, modes: Set<String>) {
        self.deviceName = deviceName
        self.modes = modes
    }

    /// CPU: float16/bfloat16 are storage formats only, so mixed precision cannot be honoured.
    public static let cpu = PrecisionSupport(deviceName: "cpu", modes: ["no"])
    /// A CUDA GPU with float16 and bfloat16 compute (Ampere and newer).
    public static let cuda = PrecisionSupport(deviceName: "cuda", modes: ["no", "fp16", "bf16"])
}

extension DDPOConfig {
    /// The accepted `mixed_precision` values.
    public static let mixedPrecisionModes = ["no", "fp16", "bf16"]
    /// The accepted non-nil `log_with` values.
    public static let loggers = ["wandb", "tensorboard"]

    /// Throws the first of `problems(…)`.
    public func validate(numProcesses: Int = 1, precision: PrecisionSupport = .cpu,
                         fileExists: (String) -> Bool = { FileManager.default.fileExists(atPath: $0) }) throws {
        if let first = problems(numProcesses: numProcesses, precision: precision, fileExists: fileExists).first {
            throw first
        }
    }

    /// Every problem of this config, field checks first, then TRL's batch-size checks (only once the
    /// counts they divide by are valid), then the device and the file system.
    public func problems(numProcesses: Int = 1, precision: PrecisionSupport = .cpu,
                         fileExists: (String) -> Bool = { FileManager.default.fileExists(atPath: $0) }) -> [DDPOConfigError] {
        var found: [DDPOConfigError] = []
        func require(_ ok: Bool, _ field: String, _ message: @autoclosure () -> String) {
            if !ok { found.append(DDPOConfigError(field: field, message())) }
        }
        func atLeastOne(_ value: Int, _ field: String) {
            require(value >= 1, field, "must be at least 1, got \(value)")
        }
        func positive(_ value: Double, _ field: String, _ why: String = "") {
            require(value.isFinite && value > 0, field, "must be a positive finite number, got \(value)\(why)")
        }

        require(numProcesses >= 1, "num_processes", "must be at least 1, got \(numProcesses)")
        for (value, field) in [
            (num_epochs, "num_epochs"), (save_freq, "save_freq"), (num_checkpoint_limit, "num_checkpoint_limit"),
            (sample_num_steps, "sample_num_steps"), (sample_batch_size, "sample_batch_size"),
            (sample_num_batches_per_epoch, "sample_num_batches_per_epoch"), (train_batch_size, "train_batch_size"),
            (train_gradient_accumulation_steps, "train_gradient_accumulation_steps"),
            (train_num_inner_epochs, "train_num_inner_epochs"),
            (per_prompt_stat_tracking_buffer_size, "per_prompt_stat_tracking_buffer_size"),
            (per_prompt_stat_tracking_min_count, "per_prompt_stat_tracking_min_count"), (max_workers, "max_workers"),
        ] { atLeastOne(value, field) }

        positive(sample_eta, "sample_eta", " (DDPO's log-probability of a DDIM step is undefined at eta 0: the step adds no noise)")
        require(sample_guidance_scale.isFinite, "sample_guidance_scale", "must be a finite number, got \(sample_guidance_scale)")
        require(train_timestep_fraction > 0 && train_timestep_fraction <= 1, "train_timestep_fraction",
                "must be in (0, 1], got \(train_timestep_fraction)")
        if train_timestep_fraction > 0 && train_timestep_fraction <= 1 && sample_num_steps >= 1 {
            require(numTrainTimesteps >= 1, "train_timestep_fraction",
                    "int(sample_num_steps × train_timestep_fraction) = int(\(sample_num_steps) × \(train_timestep_fraction)) = 0: no timestep would be trained")
        }
        positive(train_learning_rate, "train_learning_rate")
        require(train_adam_beta1 >= 0 && train_adam_beta1 < 1, "train_adam_beta1", "must be in [0, 1), got \(train_adam_beta1)")
        require(train_adam_beta2 >= 0 && train_adam_beta2 < 1, "train_adam_beta2", "must be in [0, 1), got \(train_adam_beta2)")
        require(train_adam_epsilon.isFinite && train_adam_epsilon >= 0, "train_adam_epsilon",
                "must be a finite number ≥ 0, got \(train_adam_epsilon)")
        require(train_adam_weight_decay.isFinite && train_adam_weight_decay >= 0, "train_adam_weight_decay",
                "must be a finite number ≥ 0, got \(train_adam_weight_decay)")
        require(!train_max_grad_norm.isNaN && train_max_grad_norm > 0, "train_max_grad_norm",
                "must be > 0 (infinity: no clipping), got \(train_max_grad_norm)")
        positive(train_adv_clip_max, "train_adv_clip_max")
        positive(train_clip_range, "train_clip_range")

        let precisionKnown = Self.mixedPrecisionModes.contains(mixed_precision)
        require(precisionKnown, "mixed_precision",
                "must be one of \(Self.mixedPrecisionModes.map { "\"\($0)\"" }.joined(separator: ", ")), got \"\(mixed_precision)\"")
        if precisionKnown {
            require(precision.modes.contains(mixed_precision), "mixed_precision",
                    "\"\(mixed_precision)\" cannot be honoured on \(precision.deviceName) (it supports \(precision.modes.sorted().map { "\"\($0)\"" }.joined(separator: ", "))); set mixed_precision to \"no\" there")
        }
        if let logger = log_with {
            require(Self.loggers.contains(logger), "log_with",
                    "must be null, \"wandb\" or \"tensorboard\", got \"\(logger)\"")
        }

        // TRL's checks, in TRL's order, with TRL's messages: only meaningful with positive counts.
        let countsValid = numProcesses >= 1 && sample_batch_size >= 1 && train_batch_size >= 1
            && sample_num_batches_per_epoch >= 1 && train_gradient_accumulation_steps >= 1
        if countsValid {
            if let message = trlBatchSizeProblem(numProcesses: numProcesses) {
                let field = message.hasPrefix("Number of samples") ? "sample_num_batches_per_epoch" : "sample_batch_size"
                found.append(DDPOConfigError(field: field, message))
            }
        }

        if !resume_from.isEmpty {
            let path = (resume_from as NSString).expandingTildeInPath
            require(fileExists(path), "resume_from", "'\(resume_from)' does not exist")
        }
        return found
    }

    /// TRL 0.21's `DDPOTrainer._config_check`: nil when it passes, else its message, verbatim.
    /// Requires positive batch sizes, batch counts, accumulation steps and process count.
    public func trlBatchSizeProblem(numProcesses: Int = 1) -> String? {
        let samplesPerEpoch = samplesPerEpoch(numProcesses: numProcesses)
        let totalTrainBatchSize = totalTrainBatchSize(numProcesses: numProcesses)
        if !(sample_batch_size >= train_batch_size) {
            return "Sample batch size (\(sample_batch_size)) must be greater than or equal to the train batch size (\(train_batch_size))"
        }
        if sample_batch_size % train_batch_size != 0 {
            return "Sample batch size (\(sample_batch_size)) must be divisible by the train batch size (\(train_batch_size))"
        }
        if samplesPerEpoch % totalTrainBatchSize != 0 {
            return "Number of samples per epoch (\(samplesPerEpoch)) must be divisible by the total train batch size (\(totalTrainBatchSize))"
        }
        return nil
    }
}
