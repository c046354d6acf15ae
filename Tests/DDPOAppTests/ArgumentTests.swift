import Foundation
import XCTest
@testable import DDPOApp
import RLAlgorithms

/// The command-line spellings TRL's scripts accept (HfArgumentParser), worked out by hand.
final class ArgumentTests: XCTestCase {
    let model = DDPOProcess.fixtureModel.path

    func plan(_ arguments: [String]) throws -> TrainCommand.Plan {
        let parsed = try ArgumentParser.parse(["--model", model, "--logdir", NSTemporaryDirectory()] + arguments,
                                              specs: TrainCommand.appOptions + TrainCommand.configOptions, command: "ddpo train")
        return try TrainCommand.makePlan(parsed, commandLine: arguments)
    }

    func testFieldSpellings() throws {
        XCTAssertEqual(try plan(["--ddpo_config.sample_batch_size=6", "--train_batch_size", "3"]).config.sample_batch_size, 6)
        XCTAssertEqual(try plan(["--sample_batch_size", "6", "--train_batch_size=3"]).config.train_batch_size, 3)
        XCTAssertEqual(try plan(["--ddpo_config.sample_num_steps", "7"]).config.sample_num_steps, 7)
        XCTAssertEqual(try plan(["--train_learning_rate", "1e-5"]).config.train_learning_rate, 1e-5)
        XCTAssertEqual(try plan(["--negative_prompts", "blurry, ugly"]).config.negative_prompts, "blurry, ugly")
        XCTAssertEqual(try plan(["--log_with", "tensorboard"]).config.log_with, "tensorboard")
        XCTAssertNil(try plan(["--log_with", "None"]).config.log_with)
        XCTAssertEqual(try plan(["--tracker_kwargs", #"{"wandb": {"project": "p"}}"#]).config.tracker_kwargs["wandb"]?["project"], "p")
    }

    func testBooleanSpellings() throws {
        // TRL's default for train_cfg is true, per_prompt_stat_tracking false.
        XCTAssertEqual(try plan([]).config.per_prompt_stat_tracking, false)
        XCTAssertEqual(try plan(["--per_prompt_stat_tracking"]).config.per_prompt_stat_tracking, true)
        XCTAssertEqual(try plan(["--per_prompt_stat_tracking", "--seed", "2"]).config.per_prompt_stat_tracking, true)
        XCTAssertEqual(try plan(["--seed", "2", "--per_prompt_stat_tracking"]).config.seed, 2)
        XCTAssertEqual(try plan(["--train_cfg=false"]).config.train_cfg, false)
        XCTAssertEqual(try plan(["--train_cfg", "False"]).config.train_cfg, false)
        XCTAssertEqual(try plan(["--train_cfg", "no"]).config.train_cfg, false)
        XCTAssertEqual(try plan(["--train_cfg=True"]).config.train_cfg, true)
        XCTAssertEqual(try plan(["--ddpo_config.async_reward_computation=1"]).config.async_reward_computation, true)
        XCTAssertEqual(try plan(["--use_lora", "false"]).useLoRA, false)
        XCTAssertEqual(try plan([]).useLoRA, true)
    }

    func testConfigFileThenFlags() throws {
        let file = FileManager.default.temporaryDirectory.appendingPathComponent("ddpo-args-\(UUID().uuidString).json")
        try Data(#"{"sample_batch_size": 4, "train_batch_size": 2, "num_epochs": 9, "mixed_precision": "no"}"#.utf8).write(to: file)
        let p = try plan(["--config", file.path, "--num_epochs", "3"])
        XCTAssertEqual(p.config.sample_batch_size, 4)
        XCTAssertEqual(p.config.train_batch_size, 2)
        XCTAssertEqual(p.config.num_epochs, 3, "a flag overrides the file")
        XCTAssertEqual(p.config.sample_num_steps, 50, "a field in neither keeps TRL's default")
    }

    func testCPUDefaultsAndRunNames() throws {
        let p = try plan([])
        XCTAssertEqual(p.config.mixed_precision, "no", "TRL's fp16 default cannot run on a CPU; the app picks no")
        XCTAssertTrue(p.config.run_name.hasPrefix("ddpo_"), p.config.run_name)
        XCTAssertEqual(p.rewardSpec, "jpeg_compressibility")
        XCTAssertEqual(p.promptsSpec, "simple_animals")
        XCTAssertEqual(try plan(["--exp_name", "x", "--run_name", "y"]).runDirectory.lastPathComponent, "y")
    }

    func testHelpListsEveryFieldWithTRLDefaults() throws {
        let usage = TrainCommand.usage
        XCTAssertEqual(DDPOConfig.fieldTable.count, 41)
        for field in DDPOConfig.fieldTable {
            XCTAssertTrue(usage.contains("--\(field.name)"), "help lacks --\(field.name)")
            XCTAssertFalse(field.help.isEmpty, "\(field.name) has no help text")
        }
        // Defaults of TRL 0.21's DDPOConfig, as its dataclass declares them.
        for (name, value) in [("sample_num_steps", "50"), ("sample_eta", "1"), ("sample_guidance_scale", "5"),
                              ("train_learning_rate", "0.0003"), ("train_clip_range", "0.0001"), ("mixed_precision", "\"fp16\""),
                              ("num_checkpoint_limit", "5"), ("train_cfg", "true"), ("log_with", "null")] {
            let line = try XCTUnwrap(usage.split(separator: "\n").first { $0.contains("--\(name) ") || $0.hasSuffix("--\(name)") || $0.contains("--\(name)  ") })
            XCTAssertTrue(line.contains("[default: \(value)]"), "\(name): \(line)")
        }
        for option in ["--config", "--model", "--reward", "--prompts", "--logdir", "--resume_from"] {
            XCTAssertTrue(usage.contains(option), "help lacks \(option)")
        }
    }

    func testParserRules() throws {
        let specs = [OptionSpec(name: "negative-prompt", kind: .repeated), OptionSpec(name: "seed", kind: .value),
                     OptionSpec(name: "quiet", kind: .bool)]
        let parsed = try ArgumentParser.parse(["--negative-prompt", "a", "--negative_prompt=b", "--seed", "-3", "--quiet", "--", "--x"],
                                              specs: specs, command: "t", allowPositionals: true)
        XCTAssertEqual(parsed.values("negative-prompt"), ["a", "b"])
        XCTAssertEqual(parsed.value("seed"), "-3", "a negative number is a value, not an option")
        XCTAssertEqual(parsed.bool("quiet"), true)
        XCTAssertEqual(parsed.positionals, ["--x"])
        XCTAssertThrowsError(try ArgumentParser.parse(["--seed"], specs: specs, command: "t")) { error in
            XCTAssertTrue("\(error)".contains("--seed needs a value"), "\(error)")
        }
        XCTAssertThrowsError(try ArgumentParser.parse(["--seed", "--quiet"], specs: specs, command: "t"))
        XCTAssertThrowsError(try ArgumentParser.parse(["stray"], specs: specs, command: "t")) { error in
            XCTAssertTrue("\(error)".contains("unexpected argument 'stray'"), "\(error)")
        }
    }
}
