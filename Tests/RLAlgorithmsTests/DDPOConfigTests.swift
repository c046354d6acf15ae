// DDPOConfig against TRL 0.21: defaults and the batch-size messages come from TRL itself
// (Fixtures/config/*.json, written by Fixtures/make_lora_fixtures.py); the rest are hand-worked.
import Foundation
import XCTest
@testable import RLAlgorithms

final class DDPOConfigTests: XCTestCase {
    static let fixtures = URL(fileURLWithPath: #filePath).deletingLastPathComponent()
        .appendingPathComponent("Fixtures/config")

    func fixture(_ name: String) throws -> [String: Any] {
        let data = try Data(contentsOf: Self.fixtures.appendingPathComponent(name))
        return try XCTUnwrap(JSONSerialization.jsonObject(with: data) as? [String: Any])
    }

    /// A config that passes on the CPU.
    func valid() -> DDPOConfig {
        var config = DDPOConfig()
        config.mixed_precision = "no"
        return config
    }

    func json(_ text: String) throws -> DDPOConfig { try DDPOConfig(json: Data(text.utf8)) }

    // MARK: TRL parity

    /// TRL's dumped defaults decode into exactly our defaults; the field sets are equal.
    func testDefaultsAreTRLs() throws {
        let dump = try fixture("trl_defaults.json")
        var defaults = try XCTUnwrap(dump["defaults"] as? [String: Any])
        XCTAssertEqual(Set(defaults.keys), Set(DDPOConfig.fieldNames))
        XCTAssertEqual(DDPOConfig.fieldNames.count, 41)
        // TRL's exp_name default is the running script's name (here the fixture script's); ours is "ddpo".
        XCTAssertEqual(defaults["exp_name"] as? String, "make_lora_fixtures")
        defaults["exp_name"] = "ddpo"
        let decoded = try DDPOConfig(json: JSONSerialization.data(withJSONObject: defaults))
        XCTAssertEqual(decoded, DDPOConfig())
        XCTAssertNil(DDPOConfig().log_with)
        XCTAssertEqual(DDPOConfig().mixed_precision, "fp16")
    }

    /// TRL's `_config_check` outcomes, messages verbatim, with 1 to 4 processes.
    func testBatchSizeChecksGiveTRLsMessages() throws {
        let checks = try XCTUnwrap(try fixture("trl_messages.json")["checks"] as? [[String: Any]])
        XCTAssertEqual(checks.count, 9)
        for check in checks {
            var config = valid()
            config.sample_batch_size = check["sample_batch_size"] as! Int
            config.train_batch_size = check["train_batch_size"] as! Int
            config.sample_num_batches_per_epoch = check["sample_num_batches_per_epoch"] as! Int
            config.train_gradient_accumulation_steps = check["train_gradient_accumulation_steps"] as! Int
            let processes = check["num_processes"] as! Int
            let message = check["message"] as! String
            let ok = check["ok"] as! Bool
            XCTAssertEqual(config.trlBatchSizeProblem(numProcesses: processes), ok ? nil : message, "\(check)")
            let problems = config.problems(numProcesses: processes)
            XCTAssertEqual(problems.map(\.message), ok ? [] : [message], "\(check)")
            if !ok {
                XCTAssertThrowsError(try config.validate(numProcesses: processes)) { error in
                    XCTAssertEqual((error as? DDPOConfigError)?.message, message)
                    XCTAssertTrue("\(error)".hasPrefix("sample_"), "names the field: \(error)")
                }
            }
        }
    }

    func testComputedHelpers() {
        var config = valid()
        config.sample_batch_size = 8; config.sample_num_batches_per_epoch = 3
        config.train_batch_size = 2; config.train_gradient_accumulation_steps = 4
        XCTAssertEqual(config.samplesPerEpoch(numProcesses: 2), 48)
        XCTAssertEqual(config.totalTrainBatchSize(numProcesses: 2), 16)
        XCTAssertEqual(config.trainBatchesPerInnerEpoch, 12)
        XCTAssertEqual(config.optimizerStepsPerInnerEpoch, 3)
        config.sample_num_steps = 100; config.train_timestep_fraction = 0.29
        XCTAssertEqual(config.numTrainTimesteps, 28)   // Python: int(100 * 0.29) == 28 (28.999999999999996)
        XCTAssertEqual(config.backwardPassesPerOptimizerStep, 4 * 28)
        config.sample_num_steps = 50; config.train_timestep_fraction = 0.3
        XCTAssertEqual(config.numTrainTimesteps, 15)
    }

    // MARK: JSON

    func testJSONRoundTrip() throws {
        XCTAssertEqual(try DDPOConfig(json: DDPOConfig().jsonData()), DDPOConfig())
        let object = try JSONSerialization.jsonObject(with: DDPOConfig().jsonData()) as? [String: Any]
        XCTAssertTrue(object?["log_with"] is NSNull, "log_with is written as null")
        XCTAssertEqual(object?.count, 41)

        var config = DDPOConfig()
        config.exp_name = "compressibility"; config.run_name = "run-1"; config.seed = 42
        config.log_with = "tensorboard"
        config.tracker_kwargs = ["wandb": .object(["entity": .string("me"), "tags": .array([.string("a"), .number(3)])])]
        config.accelerator_kwargs = ["split_batches": .bool(true), "ratio": .number(0.25), "none": .null]
        config.project_kwargs = ["logging_dir": .string("/tmp/x")]
        config.num_epochs = 7; config.mixed_precision = "bf16"; config.allow_tf32 = false
        config.sample_eta = 0.5; config.sample_guidance_scale = 7.5; config.train_learning_rate = 1e-5
        config.train_timestep_fraction = 0.25; config.per_prompt_stat_tracking = true
        config.negative_prompts = "blurry, ugly"; config.push_to_hub = true
        let data = try config.jsonData()
        XCTAssertEqual(try DDPOConfig(json: data), config)

        let url = FileManager.default.temporaryDirectory.appendingPathComponent("ddpo-config-\(UUID().uuidString).json")
        defer { try? FileManager.default.removeItem(at: url) }
        try config.write(to: url)
        XCTAssertEqual(try DDPOConfig(contentsOf: url), config)
    }

    func testPartialJSONKeepsDefaults() throws {
        let config = try json(#"{"sample_batch_size": 4, "train_batch_size": 2, "log_with": null, "sample_eta": 1}"#)
        var expected = DDPOConfig()
        expected.sample_batch_size = 4
        expected.train_batch_size = 2
        XCTAssertEqual(config, expected)
        XCTAssertEqual(try json("{}"), DDPOConfig())
    }

    func testUnknownKeyIsNamedWithSuggestion() throws {
        func error(_ text: String) -> DDPOConfigError? {
            do { _ = try json(text); return nil } catch { return error as? DDPOConfigError }
        }
        XCTAssertEqual(error(#"{"sample_etaa": 0.5}"#)?.field, "sample_etaa")
        XCTAssertTrue(error(#"{"sample_etaa": 0.5}"#)?.message.contains("did you mean 'sample_eta'?") == true)
        XCTAssertTrue(error(#"{"train_learnig_rate": 1}"#)?.description.contains("did you mean 'train_learning_rate'?") == true)
        XCTAssertEqual(error(#"{"zzz": 1}"#)?.message, "unknown DDPOConfig field")
        XCTAssertNotNil(error("[1, 2]"))

        let url = FileManager.default.temporaryDirectory.appendingPathComponent("ddpo-bad-\(UUID().uuidString).json")
        defer { try? FileManager.default.removeItem(at: url) }
        try Data(#"{"num_epoch": 3}"#.utf8).write(to: url)
        XCTAssertThrowsError(try DDPOConfig(contentsOf: url)) { error in
            XCTAssertEqual("\(error)", "\(url.path): num_epoch: unknown DDPOConfig field; did you mean 'num_epochs'?")
        }
    }

    func testWrongTypeNamesFieldAndType() throws {
        let cases: [(String, String, String)] = [
            (#"{"sample_num_steps": "50"}"#, "sample_num_steps", "expected an integer"),
            (#"{"num_epochs": 1.5}"#, "num_epochs", "expected an integer"),
            (#"{"train_cfg": 1}"#, "train_cfg", "expected a boolean"),
            (#"{"sample_eta": "1"}"#, "sample_eta", "expected a number"),
            (#"{"log_with": 3}"#, "log_with", "expected a string or null"),
            (#"{"tracker_kwargs": []}"#, "tracker_kwargs", "expected a JSON object"),
            (#"{"seed": null}"#, "seed", "expected an integer, found null"),
        ]
        for (text, field, message) in cases {
            XCTAssertThrowsError(try json(text), text) { error in
                XCTAssertEqual(error as? DDPOConfigError, DDPOConfigError(field: field, message), text)
            }
        }
    }

    // MARK: validation

    func testDefaultsValidateOnlyWhereFP16CanBeHonoured() throws {
        XCTAssertNoThrow(try DDPOConfig().validate(precision: .cuda))
        XCTAssertThrowsError(try DDPOConfig().validate()) { error in
            XCTAssertEqual((error as? DDPOConfigError)?.field, "mixed_precision")
            XCTAssertTrue("\(error)".contains("\"fp16\" cannot be honoured on cpu"), "\(error)")
        }
        XCTAssertNoThrow(try valid().validate())
        var bf16 = DDPOConfig()
        bf16.mixed_precision = "bf16"
        let fp16Only = PrecisionSupport(deviceName: "cuda:0 (sm_70)", modes: ["no", "fp16"])
        XCTAssertEqual(bf16.problems(precision: fp16Only).map(\.field), ["mixed_precision"])
    }

    /// Each invalid value alone gives one problem naming its field.
    func testEachInvalidValueNamesItsField() throws {
        let cases: [(String, (inout DDPOConfig) -> Void, String)] = [
            ("num_epochs", { $0.num_epochs = 0 }, "at least 1"),
            ("save_freq", { $0.save_freq = 0 }, "at least 1"),
            ("num_checkpoint_limit", { $0.num_checkpoint_limit = 0 }, "at least 1"),
            ("sample_num_steps", { $0.sample_num_steps = 0 }, "at least 1"),
            ("sample_batch_size", { $0.sample_batch_size = 0 }, "at least 1"),
            ("train_batch_size", { $0.train_batch_size = 0 }, "at least 1"),
            ("sample_num_batches_per_epoch", { $0.sample_num_batches_per_epoch = -1 }, "at least 1"),
            ("train_gradient_accumulation_steps", { $0.train_gradient_accumulation_steps = 0 }, "at least 1"),
            ("train_num_inner_epochs", { $0.train_num_inner_epochs = 0 }, "at least 1"),
            ("per_prompt_stat_tracking_buffer_size", { $0.per_prompt_stat_tracking_buffer_size = 0 }, "at least 1"),
            ("per_prompt_stat_tracking_min_count", { $0.per_prompt_stat_tracking_min_count = 0 }, "at least 1"),
            ("max_workers", { $0.max_workers = 0 }, "at least 1"),
            ("sample_eta", { $0.sample_eta = 0 }, "undefined at eta 0"),
            ("sample_eta", { $0.sample_eta = -0.5 }, "positive"),
            ("sample_guidance_scale", { $0.sample_guidance_scale = .nan }, "finite"),
            ("train_timestep_fraction", { $0.train_timestep_fraction = 0 }, "(0, 1]"),
            ("train_timestep_fraction", { $0.train_timestep_fraction = 1.5 }, "(0, 1]"),
            ("train_timestep_fraction", { $0.sample_num_steps = 10; $0.train_timestep_fraction = 0.05 }, "no timestep"),
            ("train_learning_rate", { $0.train_learning_rate = 0 }, "positive"),
            ("train_adam_beta1", { $0.train_adam_beta1 = 1 }, "[0, 1)"),
            ("train_adam_beta2", { $0.train_adam_beta2 = -0.1 }, "[0, 1)"),
            ("train_adam_epsilon", { $0.train_adam_epsilon = -1e-8 }, "≥ 0"),
            ("train_adam_weight_decay", { $0.train_adam_weight_decay = .infinity }, "≥ 0"),
            ("train_max_grad_norm", { $0.train_max_grad_norm = 0 }, "> 0"),
            ("train_adv_clip_max", { $0.train_adv_clip_max = 0 }, "positive"),
            ("train_clip_range", { $0.train_clip_range = -1e-4 }, "positive"),
            ("mixed_precision", { $0.mixed_precision = "fp32" }, "must be one of \"no\", \"fp16\", \"bf16\""),
            ("log_with", { $0.log_with = "mlflow" }, "\"wandb\" or \"tensorboard\""),
            ("resume_from", { $0.resume_from = "/nonexistent/ddpo/checkpoint_3" }, "does not exist"),
        ]
        for (field, mutate, fragment) in cases {
            var config = valid()
            mutate(&config)
            let problems = config.problems()
            XCTAssertEqual(problems.map(\.field), [field], "\(field): \(problems)")
            XCTAssertTrue(problems.first?.description.hasPrefix(field + ": ") == true, "\(problems)")
            XCTAssertTrue(problems.first?.message.contains(fragment) == true, "\(field): \(problems)")
        }
        var config = valid()
        config.train_max_grad_norm = .infinity   // no clipping
        config.log_with = "wandb"
        XCTAssertEqual(config.problems(), [])
        XCTAssertEqual(valid().problems(numProcesses: 0).map(\.field), ["num_processes"])
    }

    func testResumeFromMustExist() throws {
        var config = valid()
        config.resume_from = FileManager.default.temporaryDirectory.path
        XCTAssertNoThrow(try config.validate())
        config.resume_from = "logs/run/checkpoints"
        XCTAssertNoThrow(try config.validate(fileExists: { $0 == "logs/run/checkpoints" }))
        XCTAssertThrowsError(try config.validate(fileExists: { _ in false })) { error in
            XCTAssertEqual("\(error)", "resume_from: 'logs/run/checkpoints' does not exist")
        }
    }
}
