import Foundation

// What a command line needs to know about DDPOConfig's fields: their JSON type, TRL's default and a
// one-line meaning, in TRL's declaration order (the `ddpo train --help` table), plus the did-you-mean
// rule used for unknown keys.

/// One DDPOConfig field for help screens and command-line parsing.
public struct DDPOConfigField: Sendable {
    /// TRL's name (the JSON key and the flag name).
    public let name: String
    /// The JSON type in words: "a string", "an integer", "a number", "a boolean", "a JSON object",
    /// "a string or null".
    public let type: String
    /// TRL's default, as JSON.
    public let defaultValue: JSONValue
    /// What the field does, one line.
    public let help: String
}

extension DDPOConfig {
    /// Every field, in TRL's declaration order.
    public static var fieldTable: [DDPOConfigField] {
        let defaults = (try? JSONValue(parsing: DDPOConfig().jsonData()))?.objectValue ?? [:]
        return fields.map { field in
            DDPOConfigField(name: field.name, type: field.type, defaultValue: defaults[field.name] ?? .null,
                            help: fieldHelp[field.name] ?? "")
        }
    }

    /// The field name closest to `name` (a typo of it), if any.
    public static func suggestField(for name: String) -> String? { closestField(to: name) }

    /// One line per field; the property comments in DDPOConfig.swift say the same at more length.
    static let fieldHelp: [String: String] = [
        "exp_name": "name of the experiment",
        "run_name": "name of this run (its folder under logdir); empty: <exp_name>_<date>_<time>",
        "seed": "seed of every random stream (sampling noise, shuffles, prompts, LoRA init)",
        "log_with": "extra tracker: tensorboard or wandb (TensorBoard files are always written by the app)",
        "tracker_kwargs": "keyword arguments for the tracker, kept as given",
        "accelerator_kwargs": "keyword arguments for accelerate's Accelerator (TRL), kept as given",
        "project_kwargs": "keyword arguments for the project configuration, kept as given",
        "tracker_project_name": "project name under which the tracker files the run",
        "logdir": "top-level folder of runs: logs, samples, checkpoints, report, final model",
        "num_epochs": "outer epochs (sample, reward, train)",
        "save_freq": "save a checkpoint every this many epochs (and after the last)",
        "num_checkpoint_limit": "keep at most this many checkpoints",
        "mixed_precision": "no, fp16 or bf16 (a CPU runs no; the app picks no there unless you set it)",
        "allow_tf32": "allow TF32 matrix products on NVIDIA Ampere and newer",
        "resume_from": "checkpoint folder to resume from, or the checkpoints folder (latest is used)",
        "sample_num_steps": "DDIM denoising steps per sampled image",
        "sample_eta": "DDIM eta: weight of fresh noise per step (> 0 for DDPO)",
        "sample_guidance_scale": "classifier-free guidance weight while sampling",
        "sample_batch_size": "images sampled at once",
        "sample_num_batches_per_epoch": "sample batches per epoch",
        "train_batch_size": "samples per training batch",
        "train_use_8bit_adam": "8-bit block-quantised Adam moments (bitsandbytes' AdamW8bit)",
        "train_learning_rate": "AdamW learning rate",
        "train_adam_beta1": "AdamW beta1",
        "train_adam_beta2": "AdamW beta2",
        "train_adam_weight_decay": "AdamW decoupled weight decay",
        "train_adam_epsilon": "AdamW epsilon",
        "train_gradient_accumulation_steps": "training batches accumulated per optimizer step",
        "train_max_grad_norm": "clip the global gradient norm to this before each step",
        "train_num_inner_epochs": "PPO passes over each epoch's samples",
        "train_cfg": "use classifier-free guidance when re-scoring samples in training",
        "train_adv_clip_max": "clip advantages to [-x, x]",
        "train_clip_range": "PPO ratio clip range epsilon",
        "train_timestep_fraction": "fraction of each trajectory's timesteps trained on",
        "per_prompt_stat_tracking": "normalise rewards per prompt (with history) instead of per batch",
        "per_prompt_stat_tracking_buffer_size": "rewards kept per prompt for its statistics",
        "per_prompt_stat_tracking_min_count": "below this many rewards a prompt uses batch statistics",
        "async_reward_computation": "compute rewards in the background while the next batch samples",
        "max_workers": "concurrent reward computations when asynchronous",
        "negative_prompts": "negative prompt for classifier-free guidance (one string)",
        "push_to_hub": "TRL: push the final model to the Hub (recorded, never acted on here)",
    ]
}
