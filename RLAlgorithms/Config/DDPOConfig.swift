import Foundation

// Every knob of TRL 0.21's `DDPOConfig`, under TRL's names, with TRL's defaults, read and written as
// TRL's JSON (the same keys), and checked before any work starts (DDPOConfigValidation.swift).
//
//   var config = DDPOConfig()                       // TRL's defaults
//   config.mixed_precision = "no"                   // TRL's default "fp16" cannot be honoured on a CPU
//   config.sample_batch_size = 4; config.train_batch_size = 2
//   try config.validate(numProcesses: 1, precision: .cpu)
//   let json = try config.jsonData()                // {"exp_name": "ddpo", …, "log_with": null, …}
//   let again = try DDPOConfig(json: json)          // absent keys keep their defaults;
//                                                   // unknown keys and wrong types are errors
//
// Property names are snake_case on purpose: a researcher who knows TRL's fields finds them here
// under the same names, and the JSON keys are the property names. The one default that differs:
// TRL's `exp_name` is the running script's file name; here it is "ddpo".

public struct DDPOConfig: Equatable, Sendable {
    // MARK: run and logging

    /// Name of the experiment (TRL: the script's file name without ".py").
    public var exp_name: String = "ddpo"
    /// Name of this run, used for the run's log and checkpoint directory; empty means generated.
    public var run_name: String = ""
    /// Seed of every random stream of the run (sampling noise, shuffles, LoRA initialisation).
    public var seed: Int = 0
    /// Where metrics go besides the console: "wandb", "tensorboard", or nil for neither.
    public var log_with: String? = nil
    /// Keyword arguments for the metrics tracker (e.g. a wandb project), passed through as given.
    public var tracker_kwargs: [String: JSONValue] = [:]
    /// Keyword arguments for the accelerator (TRL: accelerate's `Accelerator`), passed through.
    public var accelerator_kwargs: [String: JSONValue] = [:]
    /// Keyword arguments for the project configuration (e.g. `logging_dir`), passed through.
    public var project_kwargs: [String: JSONValue] = [:]
    /// Project name under which the tracker files the run.
    public var tracker_project_name: String = "trl"
    /// Top-level directory for logs and checkpoints.
    public var logdir: String = "logs"

    // MARK: schedule and precision

    /// Number of outer epochs (sample, reward, train) to run.
    public var num_epochs: Int = 100
    /// A checkpoint is saved every this many epochs.
    public var save_freq: Int = 1
    /// How many checkpoints are kept; older ones are deleted once a newer one is complete.
    public var num_checkpoint_limit: Int = 5
    /// Mixed precision: "no", "fp16" or "bf16". TRL's default "fp16" needs a GPU; on a CPU pass "no".
    public var mixed_precision: String = "fp16"
    /// Allow TF32 matrix multiplication on Ampere and newer NVIDIA GPUs.
    public var allow_tf32: Bool = true
    /// Checkpoint to resume from (a `checkpoint_<n>` directory, or the directory holding them, in
    /// which case the latest is used); empty for a fresh run.
    public var resume_from: String = ""

    // MARK: sampling

    /// Number of DDIM denoising steps per sampled trajectory.
    public var sample_num_steps: Int = 50
    /// DDIM eta: the weight of the fresh noise in each step (must be > 0 for DDPO's log-probabilities).
    public var sample_eta: Double = 1.0
    /// Classifier-free guidance weight used while sampling.
    public var sample_guidance_scale: Double = 5.0
    /// Number of images sampled at once, per process.
    public var sample_batch_size: Int = 1
    /// Number of sample batches per epoch.
    public var sample_num_batches_per_epoch: Int = 2

    // MARK: training

    /// Number of samples per training batch, per process.
    public var train_batch_size: Int = 1
    /// Keep the Adam moments in 8-bit block-quantised form (TRL: bitsandbytes' AdamW8bit).
    public var train_use_8bit_adam: Bool = false
    /// AdamW learning rate.
    public var train_learning_rate: Double = 3e-4
    /// AdamW beta1 (first-moment decay).
    public var train_adam_beta1: Double = 0.9
    /// AdamW beta2 (second-moment decay).
    public var train_adam_beta2: Double = 0.999
    /// AdamW decoupled weight decay.
    public var train_adam_weight_decay: Double = 1e-4
    /// AdamW epsilon added to the denominator.
    public var train_adam_epsilon: Double = 1e-8
    /// Number of training batches whose gradients are accumulated before an optimizer step
    /// (each batch itself accumulates over its trained timesteps).
    public var train_gradient_accumulation_steps: Int = 1
    /// Global gradient norm is clipped to this before each optimizer step.
    public var train_max_grad_norm: Double = 1.0
    /// Number of passes of PPO updates over each epoch's samples.
    public var train_num_inner_epochs: Int = 1
    /// Use classifier-free guidance when recomputing log-probabilities in training.
    public var train_cfg: Bool = true
    /// Advantages are clipped to [-train_adv_clip_max, train_adv_clip_max].
    public var train_adv_clip_max: Double = 5.0
    /// PPO ratio clip range epsilon: the ratio is clipped to [1 - eps, 1 + eps].
    public var train_clip_range: Double = 1e-4
    /// Fraction of each trajectory's timesteps trained on (a random subset per sample).
    public var train_timestep_fraction: Double = 1.0

    // MARK: advantages and rewards

    /// Normalise rewards per prompt (with a history of earlier epochs) instead of over the batch.
    public var per_prompt_stat_tracking: Bool = false
    /// Number of recent rewards each prompt's history keeps.
    public var per_prompt_stat_tracking_buffer_size: Int = 16
    /// A prompt with fewer rewards than this in its history is normalised with the batch statistics.
    public var per_prompt_stat_tracking_min_count: Int = 16
    /// Compute rewards in the background while the next batch is sampled.
    public var async_reward_computation: Bool = false
    /// Maximum number of concurrent reward computations when they run asynchronously.
    public var max_workers: Int = 2
    /// Negative prompt for classifier-free guidance ("" = the unconditional embedding). TRL's help
    /// calls it comma-separated, but TRL encodes the whole string as one prompt.
    public var negative_prompts: String = ""
    /// Push the final model to the Hugging Face Hub (TRL); accepted and recorded here, never acted on.
    public var push_to_hub: Bool = false

    /// TRL's defaults (except `exp_name`, see above).
    public init() {}
}

// MARK: - computed helpers

extension DDPOConfig {
    /// Samples drawn per epoch over all processes (TRL's `samples_per_epoch`).
    public func samplesPerEpoch(numProcesses: Int = 1) -> Int {
        sample_batch_size * numProcesses * sample_num_batches_per_epoch
    }

    /// Samples per optimizer step over all processes (TRL's `total_train_batch_size`).
    public func totalTrainBatchSize(numProcesses: Int = 1) -> Int {
        train_batch_size * numProcesses * train_gradient_accumulation_steps
    }

    /// Timesteps of each trajectory trained on: TRL's `int(sample_num_steps * train_timestep_fraction)`.
    public var numTrainTimesteps: Int {
        Int((Double(sample_num_steps) * train_timestep_fraction).rounded(.towardZero))
    }

    /// Backward passes accumulated per optimizer step (TRL hands this to accelerate):
    /// `train_gradient_accumulation_steps × numTrainTimesteps`.
    public var backwardPassesPerOptimizerStep: Int {
        train_gradient_accumulation_steps * numTrainTimesteps
    }

    /// Training batches per inner epoch on one process: its epoch samples / `train_batch_size`.
    public var trainBatchesPerInnerEpoch: Int {
        sample_batch_size * sample_num_batches_per_epoch / train_batch_size
    }

    /// Optimizer steps per inner epoch (exact when the config validates).
    public var optimizerStepsPerInnerEpoch: Int {
        trainBatchesPerInnerEpoch / train_gradient_accumulation_steps
    }
}
