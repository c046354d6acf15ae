// Generated from notebooks-md/03-ddpo-in-a-script.md by scripts/extract-notebooks.py. Do not edit.
import Foundation
import RLAlgorithms

func notebook03(output: @escaping (String) -> Void = { Swift.print($0) }) throws -> Double {
    func print(_ items: Any...) { output(items.map { "\($0)" }.joined(separator: " ")) }
    let colors = ["red", "blue", "yellow", "green"]
    let samples = colors.map { PromptSample(prompt: "a \($0) circle", metadata: ["color": .string($0)]) }
    let prompts = PromptSource(name: "circles", kind: .choice(samples), generator: PhiloxGenerator(seed: 1))

    let channels: [String: [Double]] = ["red": [1, -0.5, -0.5], "green": [-0.5, 1, -0.5],
                                        "blue": [-0.5, -0.5, 1], "yellow": [0.5, 0.5, -1]]
    let colorReward = ClosureReward(name: "prompt_color") { images, prompts, metadata in
        let means = images.mean(axes: [2, 3]).toArray()             // [B * 3] channel means
        let rewards = metadata.enumerated().map { i, meta -> Double in
            let weights = channels[meta["color"]?.stringValue ?? ""] ?? [0, 0, 0]
            return (0..<3).map { weights[$0] * means[i * 3 + $0] }.reduce(0, +)
        }
        return RewardOutput(rewards: rewards)
    }

    struct ModelNotFound: Error {}
    guard let modelDirectory = BuiltinModel.defaultDirectory() else { throw ModelNotFound() }
    var config = DDPOConfig()
    config.mixed_precision = "no"                  // CPU
    config.num_epochs = 2
    config.sample_num_steps = 10
    config.sample_batch_size = 4
    config.sample_num_batches_per_epoch = 1
    config.train_batch_size = 4
    config.train_learning_rate = 3e-3
    config.train_clip_range = 0.2
    config.train_timestep_fraction = 0.5
    config.logdir = FileManager.default.temporaryDirectory.appendingPathComponent("notebook03-\(getpid())").path
    config.run_name = "circles"

    let pipeline = try DefaultDDPOStableDiffusionPipeline(directory: modelDirectory)   // LoRA rank 4
    let trainer = try DDPOTrainer(config: config, reward: colorReward, prompts: prompts, pipeline: pipeline)
    let metricsLogger = try JSONLinesLogger(directory: URL(fileURLWithPath: config.logdir).appendingPathComponent(config.run_name))
    trainer.logger = metricsLogger
    trainer.onEvent = { event in
        if case .epoch(let m) = event { print("epoch", m.epoch, "reward", String(format: "%.4f ± %.4f", m.rewardMean, m.rewardStd)) }
    }
    try trainer.train()
    metricsLogger.close()

    let lines = try String(contentsOf: metricsLogger.url, encoding: .utf8).split(separator: "\n")
    var losses: [Double] = []
    for line in lines {
        if let loss = try JSONValue(parsing: Data(line.utf8))["loss"]?.doubleValue { losses.append(loss) }
    }
    print("epochs:", trainer.history.map(\.epoch), "optimizer steps:", losses.count, "losses:", losses.map { String(format: "%.3g", $0) })
    try pipeline.savePretrained(to: URL(fileURLWithPath: config.logdir).appendingPathComponent("final"))

    // Anything off: a missing epoch, no optimizer step, or a non-finite number.
    var problems = Double(config.num_epochs - trainer.history.count) + (losses.isEmpty ? 1 : 0)
    problems += Double((losses + trainer.history.flatMap(\.rewards)).filter { !$0.isFinite }.count)
    return problems
}
