import Foundation
import XCTest
import RLAlgorithms

/// `ddpo train` as a user runs it: a subprocess on the tiny SD1 fixture folder, checked by exit
/// status, messages and the files it leaves.
final class TrainCommandTests: XCTestCase {
    let model = DDPOProcess.fixtureModel.path

    /// A two-epoch run small enough for a test: 1 batch of 2 images, 3 DDIM steps.
    func smallRun(logdir: URL, extra: [String]) -> [String] {
        ["train", "--model", model, "--logdir", logdir.path, "--sample_batch_size", "2",
         "--sample_num_batches_per_epoch", "1", "--sample_num_steps", "3", "--train_batch_size", "1",
         "--report_prompts", "2", "--quiet"] + extra
    }

    func testTrainWritesEveryOutput() throws {
        let logdir = try DDPOProcess.temporaryDirectory()
        let result = try DDPOProcess.run(smallRun(logdir: logdir, extra: ["--run_name", "r", "--num_epochs", "2",
                                                                          "--ddpo_config.train_cfg=false", "--seed", "3"]))
        XCTAssertEqual(result.status, 0, result.stderr)
        let run = logdir.appendingPathComponent("r")
        let fm = FileManager.default

        // The effective config: flags in both spellings reached it; CPU picked mixed_precision "no".
        let config = try DDPOConfig(contentsOf: run.appendingPathComponent("ddpo_config.json"))
        XCTAssertEqual(config.num_epochs, 2)
        XCTAssertEqual(config.train_cfg, false)
        XCTAssertEqual(config.seed, 3)
        XCTAssertEqual(config.mixed_precision, "no")

        // TensorBoard: every record's CRCs check out (TensorBoardRecords.read), and the scalars and images are there.
        let events = try fm.contentsOfDirectory(atPath: run.path).filter { $0.hasPrefix("events.out.tfevents.") }
        XCTAssertEqual(events.count, 1)
        let records = try TensorBoardRecords.read(contentsOf: run.appendingPathComponent(events[0]))
        XCTAssertGreaterThan(records.count, 4)
        let bytes = records.flatMap { $0 }
        for tag in ["reward_mean", "reward_std", "loss", "approx_kl", "clipfrac", "samples"] {
            XCTAssertNotNil(bytes.firstRange(of: Array(tag.utf8)), "event file lacks \(tag)")
        }
        XCTAssertNotNil(bytes.firstRange(of: [0x89, 0x50, 0x4E, 0x47]), "no PNG image in the event file")
        XCTAssertNotNil(bytes.firstRange(of: Array(" | ".utf8)), "no 'prompt | reward' caption")

        // metrics.jsonl: one reward line per epoch, and one line per optimizer step (2 per epoch here).
        let lines = try String(contentsOf: run.appendingPathComponent("metrics.jsonl"), encoding: .utf8).split(separator: "\n")
        let objects = try lines.map { try XCTUnwrap(JSONValue(parsing: Data($0.utf8)).objectValue) }
        XCTAssertEqual(objects.filter { $0["reward_mean"] != nil }.map { $0["epoch"]?.doubleValue }, [0, 1])
        XCTAssertEqual(objects.filter { $0["loss"] != nil }.count, 4)
        // Each epoch's timing line: the sampling part's model and reward times lie within it.
        let timings = objects.filter { $0["epoch_seconds"] != nil }
        XCTAssertEqual(timings.count, 2)
        for t in timings {
            let parts = try ["epoch_seconds", "sampling_seconds", "sampling_model_seconds", "sampling_reward_seconds"].map {
                try XCTUnwrap(t[$0]?.doubleValue, "\($0) missing from \(t)")
            }
            XCTAssertTrue(parts[2] > 0 && parts[3] > 0 && parts[2] + parts[3] <= parts[1] && parts[1] <= parts[0], "\(parts)")
        }

        // Samples, checkpoints, report, final model.
        for epoch in 0..<2 {
            let folder = run.appendingPathComponent(String(format: "samples/epoch_%03d", epoch))
            let pngs = try fm.contentsOfDirectory(atPath: folder.path).filter { $0.hasSuffix(".png") }
            XCTAssertEqual(pngs.count, 3, "two samples and grid.png in \(folder.path)")
            let image = try RGBImage(contentsOf: folder.appendingPathComponent(pngs.sorted()[0]).path)
            XCTAssertEqual([image.width, image.height], [16, 16])
        }
        XCTAssertEqual(try fm.contentsOfDirectory(atPath: run.appendingPathComponent("checkpoints").path).sorted(),
                       ["checkpoint_0", "checkpoint_1"])
        let report = try String(contentsOf: run.appendingPathComponent("report.html"), encoding: .utf8)
        XCTAssertTrue(report.contains("<svg"), "report has no reward curve")
        XCTAssertEqual(report.components(separatedBy: "<circle").count - 1, 2, "one curve point per epoch")
        XCTAssertGreaterThanOrEqual(report.components(separatedBy: "data:image/png;base64,").count - 1, 2 + 2 + 2)
        XCTAssertTrue(report.contains("Finished"))
        XCTAssertFalse(report.contains("src=\"http"), "the report must be self-contained")

        let final = run.appendingPathComponent("final")
        for name in ["pytorch_lora_weights.safetensors", "ddpo_config.json", "README.md", "reward_curve.svg", "before.png", "after.png"] {
            XCTAssertTrue(fm.fileExists(atPath: final.appendingPathComponent(name).path), "final/ lacks \(name)")
        }
        XCTAssertFalse(fm.fileExists(atPath: run.appendingPathComponent("final.partial").path))
        let card = try String(contentsOf: final.appendingPathComponent("README.md"), encoding: .utf8)
        XCTAssertTrue(card.hasPrefix("---\nlibrary_name: diffusers\n"))
        XCTAssertTrue(card.contains("| `train_cfg` | `false` |"))
        XCTAssertTrue(card.contains("![reward per epoch](reward_curve.svg)"))

        // The LoRA file is what diffusers loads: the fixture UNet takes it strictly.
        let pipeline = try StableDiffusionPipeline.load(directory: DDPOProcess.fixtureModel)
        let lora = try LoRANetwork.load(contentsOf: final, into: pipeline.unet)
        XCTAssertFalse(lora.parameters.isEmpty)
    }

    func testResumedRunEndsBitIdenticalToAnUninterruptedOne() throws {
        let logdir = try DDPOProcess.temporaryDirectory()
        let first = try DDPOProcess.run(smallRun(logdir: logdir, extra: ["--run_name", "split", "--num_epochs", "1"]))
        XCTAssertEqual(first.status, 0, first.stderr)
        // Resume from the run's checkpoints folder (latest): the run folder and name are taken from it.
        let resumed = try DDPOProcess.run(smallRun(logdir: logdir, extra: ["--num_epochs", "3", "--resume_from",
                                                                           logdir.appendingPathComponent("split/checkpoints").path]))
        XCTAssertEqual(resumed.status, 0, resumed.stderr)
        // And from one checkpoint folder.
        let again = try DDPOProcess.run(smallRun(logdir: logdir, extra: ["--run_name", "again", "--num_epochs", "3", "--resume_from",
                                                                         logdir.appendingPathComponent("split/checkpoints/checkpoint_2").path]))
        XCTAssertEqual(again.status, 0, again.stderr)
        let whole = try DDPOProcess.run(smallRun(logdir: logdir, extra: ["--run_name", "whole", "--num_epochs", "3"]))
        XCTAssertEqual(whole.status, 0, whole.stderr)

        let split = try Data(contentsOf: logdir.appendingPathComponent("split/final/pytorch_lora_weights.safetensors"))
        let uninterrupted = try Data(contentsOf: logdir.appendingPathComponent("whole/final/pytorch_lora_weights.safetensors"))
        XCTAssertEqual(split, uninterrupted, "resumed LoRA weights differ from the uninterrupted run's")
        // The resumed run's curve continues the first part's: three epochs in its report.
        let report = try String(contentsOf: logdir.appendingPathComponent("split/report.html"), encoding: .utf8)
        XCTAssertEqual(report.components(separatedBy: "<circle").count - 1, 3)
        // Resuming at the last epoch trains nothing more and still writes final/.
        XCTAssertTrue(FileManager.default.fileExists(atPath: logdir.appendingPathComponent("again/final/pytorch_lora_weights.safetensors").path))
    }

    /// TensorKit's CPU kernels cut work at fixed sizes, never by the number of threads, and add partial
    /// sums in a fixed order; matrix products are split into blocks by their shape alone (OpenBLAS
    /// itself on one thread). So a run on one thread and the same run on several write the same bits:
    /// a laptop's run can be replayed on a server. The shipped built-in model (not the fixture) is
    /// used: its attention runs on several workers and its larger products are split. The full
    /// fine-tune also computes every weight, bias and norm gradient (column sums, per-block partial
    /// sums), which LoRA does not; a column-sum chunk size that followed the thread count failed this
    /// test in full mode only.
    func testRunIsBitIdenticalWhateverTheThreadCount() throws {
        let logdir = try DDPOProcess.temporaryDirectory()
        let builtin = DDPOProcess.repositoryRoot.appendingPathComponent("models/shapes-sd").path
        for (mode, extra, weights) in [("lora", ["--train_learning_rate", "2e-3"], "pytorch_lora_weights.safetensors"),
                                       ("full", ["--use_lora=false", "--train_learning_rate", "1e-4"],
                                        "unet/diffusion_pytorch_model.safetensors")] {
            var metrics: [String: [[String: JSONValue]]] = [:]
            for threads in ["1", "3"] {
                let result = try DDPOProcess.run(
                    ["train", "--model", builtin, "--logdir", logdir.path, "--run_name", mode + threads, "--num_epochs", "2",
                     "--sample_batch_size", "4", "--sample_num_batches_per_epoch", "1", "--sample_num_steps", "4",
                     "--train_batch_size", "2", "--report_prompts", "0", "--quiet"] + extra,
                    environment: ["TENSORKIT_NUM_THREADS": threads], unset: ["OPENBLAS_NUM_THREADS"])
                XCTAssertEqual(result.status, 0, result.stderr)
                let lines = try String(contentsOf: logdir.appendingPathComponent("\(mode)\(threads)/metrics.jsonl"), encoding: .utf8)
                metrics[threads] = try lines.split(separator: "\n").map { line in
                    // Timings differ from run to run; every other value must not.
                    try XCTUnwrap(JSONValue(parsing: Data(line.utf8)).objectValue).filter { !$0.key.hasSuffix("seconds") && $0.key != "wall_time" }
                }
            }
            let one = try Data(contentsOf: logdir.appendingPathComponent("\(mode)1/final/\(weights)"))
            let three = try Data(contentsOf: logdir.appendingPathComponent("\(mode)3/final/\(weights)"))
            XCTAssertTrue(one == three, "\(mode): the weights trained on 1 and on 3 threads differ")
            XCTAssertEqual(metrics["1"]?.filter { $0["loss"] != nil }.count, 4, "\(mode): 2 epochs of 2 training batches each")
            XCTAssertEqual(metrics["1"], metrics["3"], "\(mode): the metrics on 1 and on 3 threads differ")
        }
    }

    func testFullFineTuneWritesADiffusersFolder() throws {
        let logdir = try DDPOProcess.temporaryDirectory()
        let result = try DDPOProcess.run(smallRun(logdir: logdir, extra: ["--run_name", "full", "--num_epochs", "1", "--use_lora", "False",
                                                                          "--train_learning_rate", "1e-3"]))
        XCTAssertEqual(result.status, 0, result.stderr)
        let final = logdir.appendingPathComponent("full/final")
        let tuned = try StableDiffusionPipeline.load(directory: final)
        let base = try StableDiffusionPipeline.load(directory: DDPOProcess.fixtureModel)
        let key = "conv_in.weight"
        let a = try XCTUnwrap(tuned.unet.stateDict()[key]).toArray(), b = try XCTUnwrap(base.unet.stateDict()[key]).toArray()
        XCTAssertNotEqual(a, b, "the whole-UNet fine-tune changed nothing")
        XCTAssertEqual(try XCTUnwrap(tuned.vae.stateDict()["decoder.conv_out.weight"]).toArray(),
                       try XCTUnwrap(base.vae.stateDict()["decoder.conv_out.weight"]).toArray(), "the VAE is frozen")
    }

    /// Each configuration error: exit status 2, a message naming the flag or field, and no run folder.
    func testConfigurationErrorsStopBeforeAnyWork() throws {
        let logdir = try DDPOProcess.temporaryDirectory()
        let badConfig = logdir.appendingPathComponent("bad.json")
        try Data(#"{"sample_batch_size": 2, "train_batch_sise": 1}"#.utf8).write(to: badConfig)
        let typedConfig = logdir.appendingPathComponent("typed.json")
        try Data(#"{"num_epochs": "ten"}"#.utf8).write(to: typedConfig)
        let emptyPrompts = logdir.appendingPathComponent("empty.txt")
        try Data("\n  \n".utf8).write(to: emptyPrompts)
        let base = ["train", "--model", model, "--logdir", logdir.path, "--run_name", "never"]
        var cases: [([String], [String])] = [
            (["--sample_batch_sise", "3"], ["unknown option '--sample_batch_sise'", "did you mean '--sample_batch_size'"]),
            (["--sample_batch_size", "three"], ["--sample_batch_size", "expected an integer", "'three'"]),
            (["--train_learning_rate=fast"], ["--train_learning_rate", "expected a number"]),
            (["--train_cfg=maybe"], ["--train_cfg", "expected true or false"]),
            (["--tracker_kwargs", "[1]"], ["--tracker_kwargs", "expected a JSON object"]),
            (["--sample_batch_size", "3", "--train_batch_size", "2"], ["Sample batch size (3) must be divisible by the train batch size (2)"]),
            (["--sample_eta", "0"], ["sample_eta"]),
            (["--mixed_precision", "fp16"], ["mixed_precision", "cpu"]),
            (["--config", badConfig.path], [badConfig.path, "train_batch_sise", "did you mean 'train_batch_size'"]),
            (["--config", typedConfig.path], [typedConfig.path, "num_epochs", "expected an integer"]),
            (["--config", logdir.appendingPathComponent("missing.json").path], ["missing.json", "cannot read"]),
            (["--reward", "jpeg_compressibilty"], ["--reward", "did you mean 'jpeg_compressibility'"]),
            (["--reward", "aesthetic:/nonexistent/head.safetensors"], ["/nonexistent/head.safetensors", "no such file"]),
            (["--reward", "http://"], ["--reward", "not a valid URL"]),
            (["--prompts", "simple_animal"], ["--prompts", "did you mean 'simple_animals'"]),
            (["--prompts", emptyPrompts.path], [emptyPrompts.path, "no prompts"]),
            (["--resume_from", logdir.appendingPathComponent("nothing").path], ["--resume_from", "nothing"]),
            (["--lora_rank", "0"], ["lora"]),
            (["--device", "tpu"], ["--device", "expected cpu or cuda:N"]),
            (["--model", "/nonexistent/sd"], ["--model", "/nonexistent/sd", "model_index.json"]),
        ]
        // Asking for a GPU where there is none (CI): the missing pieces on one line, before any work.
        if !CUDA.isAvailable { cases.append((["--device", "cuda:0"], ["--device cuda:0", "CUDA is unavailable"])) }
        for (flags, expected) in cases {
            let result = try DDPOProcess.run(base + flags)
            XCTAssertEqual(result.status, 2, "\(flags): \(result.stderr)")
            for text in expected {
                XCTAssertTrue(result.stderr.contains(text), "\(flags): stderr lacks '\(text)': \(result.stderr)")
            }
            let lines = result.stderr.split(separator: "\n").filter { !$0.contains("given 2 times; using the last") }
            XCTAssertEqual(lines.count, 1, "\(flags): one line expected: \(result.stderr)")
        }
        XCTAssertFalse(FileManager.default.fileExists(atPath: logdir.appendingPathComponent("never").path),
                       "a configuration error must not leave a run folder")
    }

    /// A folder that passes the checks but fails the strict load: exit 1, the tensor named, no run folder.
    func testModelThatFailsToLoadLeavesNoRunFolder() throws {
        let dir = try DDPOProcess.temporaryDirectory()
        let broken = dir.appendingPathComponent("broken")
        try FileManager.default.copyItem(at: DDPOProcess.fixtureModel, to: broken)
        let unetFile = broken.appendingPathComponent("unet/diffusion_pytorch_model.safetensors")
        var state = try loadSafeTensors(unetFile.path)
        state.removeValue(forKey: "conv_out.bias")
        try saveSafeTensors(state, to: unetFile.path)
        let result = try DDPOProcess.run(smallRun(logdir: dir, extra: ["--run_name", "never", "--num_epochs", "1"]).map { $0 == model ? broken.path : $0 })
        XCTAssertEqual(result.status, 1, result.stderr)
        XCTAssertTrue(result.stderr.contains("conv_out.bias"), result.stderr)
        XCTAssertFalse(FileManager.default.fileExists(atPath: dir.appendingPathComponent("never").path))
    }

    /// A scheduler config whose DDIM schedule ends at timestep 0 ("linspace" spacing always does):
    /// that step adds no noise (σ_0 = 0, since DDPO clamps t_prev at 0 and ᾱ_prev = ᾱ_0), so its
    /// log-probability does not exist; TRL records NaN there. Exit 2 naming sample_num_steps, the
    /// schedule and the timestep, before any work; no run folder.
    func testScheduleEndingAtTimestepZeroIsRefusedBeforeAnyWork() throws {
        let dir = try DDPOProcess.temporaryDirectory()
        let folder = dir.appendingPathComponent("linspace")
        try FileManager.default.copyItem(at: DDPOProcess.fixtureModel, to: folder)
        let configURL = folder.appendingPathComponent("scheduler/scheduler_config.json")
        var config = try XCTUnwrap(JSONSerialization.jsonObject(with: Data(contentsOf: configURL)) as? [String: Any])
        config["timestep_spacing"] = "linspace"
        try JSONSerialization.data(withJSONObject: config).write(to: configURL)
        let result = try DDPOProcess.run(smallRun(logdir: dir, extra: ["--run_name", "never", "--num_epochs", "1"]).map { $0 == model ? folder.path : $0 })
        XCTAssertEqual(result.status, 2, result.stderr)
        // linspace(0, 999, 3) rounded, descending: [999, 500, 0] (diffusers' set_timesteps).
        for part in ["sample_num_steps", "[999, 500, 0]", "\"linspace\"", "timestep 0"] {
            XCTAssertTrue(result.stderr.contains(part), "\(part) missing: \(result.stderr)")
        }
        XCTAssertFalse(FileManager.default.fileExists(atPath: dir.appendingPathComponent("never").path))
    }

    func testNoModelAndNoBuiltinModelIsAClearError() throws {
        let result = try DDPOProcess.run(["train", "--num_epochs", "1"])
        XCTAssertEqual(result.status, 2)
        XCTAssertTrue(result.stderr.contains("built-in model was not found"), result.stderr)
        XCTAssertTrue(result.stderr.contains("--model DIR"), result.stderr)
    }
}
