// ddpo-bench: Stable Diffusion and DDPO timings side by side with diffusers / TRL (see
// scripts/bench-sd.sh, which runs both and writes the table).
//
//   swift run -c release ddpo-bench MODEL_DIR CASE [--budget SECONDS] [--epochs N] [--warmup N]
//
// MODEL_DIR is a diffusers Stable Diffusion folder (scripts/bench_sd_torch.py make writes
// .build-bench-models/tiny and .build-bench-models/small, and sd15 when asked); its last path component
// ("tiny", "small" or "sd15") names the config, which picks the sampling steps and the DDPO settings
// (sd15 takes small's). One case runs per process,
// so the peak RSS printed is that case's. Output, one tab-separated line on stdout:
//   config/case   median ms   repetitions   minimum ms   peak RSS MiB
// Progress and per-phase details go to stderr.
//
// Cases (the same in scripts/bench_sd_torch.py and scripts/bench_ddpo_trl.py):
//   unet_fwd_b2     UNet forward without a graph, batch 2 (one CFG step), timestep 500, 77 tokens
//   unet_fwdbwd_b1  UNet forward + backward, batch 1, every weight requiring grad, fixed upstream grad
//   unet_lora_fwdbwd_b2
//                   one DDPO training pass: UNet forward + backward at batch 2 (train batch 1 with CFG),
//                   base frozen, LoRA rank 4 on the attention projections as the DDPO pipeline adds it
//   vae_decode_b1   VAE decode of one latent, no graph
//   sample          StableDiffusionPipeline.sample: one prompt, guidance 7.5 (UNet batch 2), DDIM eta 0,
//                   20 steps (tiny) / 10 (small, sd15), text encoding and VAE decode included
//   ddpo_epoch      one DDPOTrainer epoch (sample, JPEG-compressibility reward, PPO on LoRA); tiny: 20 steps,
//                   sample batch 4, train batch 2; small: 10 steps, sample batch 2, train batch 1; 2 sample
//                   batches per epoch, TRL's other defaults; timed per epoch after --warmup epochs
//
// Timing rule (as tensorkit-bench): one warm-up call (two when one call is under 200 ms), then
// repetitions for about --budget seconds (default 2), at least 3 and at most 25; the median.
import Foundation
import RLAlgorithms
#if canImport(Glibc)
import Glibc
#endif

func nowMs() -> Double { Double(DispatchTime.now().uptimeNanoseconds) / 1e6 }

func peakRSSMiB() -> Double {
    var usage = rusage()
    getrusage(__rusage_who_t(RUSAGE_SELF.rawValue), &usage)
    return Double(usage.ru_maxrss) / 1024  // Linux: KiB
}

func median(_ xs: [Double]) -> Double {
    let s = xs.sorted(), mid = s.count / 2
    return s.count % 2 == 1 ? s[mid] : (s[mid - 1] + s[mid]) / 2
}

func measure(budget: Double, minReps: Int = 3, maxReps: Int = 25, _ body: () throws -> Void) rethrows
    -> (median: Double, min: Double, reps: Int) {
    let w0 = nowMs()
    try body()
    let first = nowMs() - w0
    if first < 200 { try body() }
    let reps = max(minReps, min(maxReps, Int(budget * 1000 / max(first, 1e-3))))
    var times: [Double] = []
    for _ in 0..<reps {
        let t0 = nowMs()
        try body()
        times.append(nowMs() - t0)
    }
    return (median(times), times.min()!, reps)
}

func fail(_ message: String) -> Never {
    FileHandle.standardError.write(Data("ddpo-bench: \(message)\n".utf8))
    exit(2)
}

// MARK: - arguments

var positional: [String] = []
var budget = 2.0
var epochs = 3
var warmupEpochs = 1
var argv = CommandLine.arguments.dropFirst()
while let arg = argv.popFirst() {
    switch arg {
    case "--budget":
        guard let v = argv.popFirst().flatMap(Double.init) else { fail("--budget needs seconds") }
        budget = v
    case "--epochs":
        guard let v = argv.popFirst().flatMap(Int.init) else { fail("--epochs needs a count") }
        epochs = v
    case "--warmup":
        guard let v = argv.popFirst().flatMap(Int.init) else { fail("--warmup needs a count") }
        warmupEpochs = v
    case "-h", "--help":
        print("usage: ddpo-bench MODEL_DIR CASE [--budget S] [--epochs N] [--warmup N]")
        print("cases: unet_fwd_b2 unet_fwdbwd_b1 unet_lora_fwdbwd_b2 vae_decode_b1 sample ddpo_epoch")
        exit(0)
    default: positional.append(arg)
    }
}
guard positional.count == 2 else { fail("usage: ddpo-bench MODEL_DIR CASE (see --help)") }
let modelDir = URL(fileURLWithPath: positional[0])
let caseName = positional[1]
let configName = modelDir.standardizedFileURL.lastPathComponent
guard ["tiny", "small", "sd15"].contains(configName) else {
    fail("the model folder's name must be tiny, small or sd15 (it picks the settings), got \(configName)")
}
let sampleSteps = configName == "tiny" ? 20 : 10
let prompt = "a photo of a cat"

func report(_ r: (median: Double, min: Double, reps: Int)) {
    print(String(format: "%@/%@\t%.3f\t%d\t%.3f\t%.1f", configName, caseName, r.median, r.reps, r.min, peakRSSMiB()))
}

func crossAttentionDim(_ unet: UNet2DConditionModel) -> Int {
    switch unet.config.cross_attention_dim {
    case .one(let d): return d
    case .list(let ds): return ds[0]
    }
}

func latentSize(_ unet: UNet2DConditionModel) -> Int {
    switch unet.config.sample_size {
    case .one(let s)?: return s
    case .list(let s)?: return s[0]
    case nil: return 64
    }
}

// MARK: - cases

do {
    switch caseName {
    case "unet_fwd_b2", "unet_fwdbwd_b1":
        let unet = try UNet2DConditionModel.load(directory: modelDir.appendingPathComponent("unet"))
        let batch = caseName == "unet_fwd_b2" ? 2 : 1
        let size = latentSize(unet)
        var g = PhiloxGenerator(seed: 0)
        let x = Tensor.randn([batch, unet.config.in_channels, size, size], generator: &g)
        let ehs = Tensor.randn([batch, 77, crossAttentionDim(unet)], generator: &g)
        if caseName == "unet_fwd_b2" {
            unet.freeze()
            report(measure(budget: budget) { _ = withNoGrad { unet(sample: x, timestep: 500, encoderHiddenStates: ehs) } })
        } else {
            unet.unfreeze()
            let upstream = Tensor.randn([batch, unet.config.out_channels, size, size], generator: &g)
            report(measure(budget: budget) {
                unet(sample: x, timestep: 500, encoderHiddenStates: ehs).backward(upstream)
                unet.zeroGrad()
            })
        }
    case "unet_lora_fwdbwd_b2":
        let unet = try DefaultDDPOStableDiffusionPipeline(directory: modelDir, useLoRA: true).unet
        let size = latentSize(unet)
        var g = PhiloxGenerator(seed: 0)
        let x = Tensor.randn([2, unet.config.in_channels, size, size], generator: &g)
        let ehs = Tensor.randn([2, 77, crossAttentionDim(unet)], generator: &g)
        let upstream = Tensor.randn([2, unet.config.out_channels, size, size], generator: &g)
        report(measure(budget: budget) {
            unet(sample: x, timestep: 500, encoderHiddenStates: ehs).backward(upstream)
            unet.zeroGrad()
        })
    case "vae_decode_b1":
        let vae = try AutoencoderKL.load(directory: modelDir.appendingPathComponent("vae"))
        vae.freeze()
        let levels = vae.config.block_out_channels.count
        let imageSize: Int
        switch vae.config.sample_size {
        case .one(let s): imageSize = s
        case .list(let s): imageSize = s[0]
        }
        let size = imageSize >> (levels - 1)
        var g = PhiloxGenerator(seed: 0)
        let z = Tensor.randn([1, vae.config.latent_channels, size, size], generator: &g)
        report(measure(budget: budget) { _ = withNoGrad { vae.decode(z) } })
    case "sample":
        let pipe = try StableDiffusionPipeline.load(directory: modelDir)
        let request = SamplingRequest(prompts: [prompt], numInferenceSteps: sampleSteps, guidanceScale: 7.5, eta: 0)
        report(try measure(budget: budget) { _ = try pipe.sample(request, seed: 0).images })
    case "ddpo_epoch":
        var config = DDPOConfig()
        config.mixed_precision = "no"
        config.seed = 0
        config.sample_num_steps = sampleSteps
        config.sample_num_batches_per_epoch = 2
        config.sample_batch_size = configName == "tiny" ? 4 : 2
        config.train_batch_size = configName == "tiny" ? 2 : 1
        config.num_epochs = warmupEpochs + epochs
        config.save_freq = 1_000_000
        let pipeline = try DefaultDDPOStableDiffusionPipeline(directory: modelDir, useLoRA: true)
        let runDir = FileManager.default.temporaryDirectory.appendingPathComponent("ddpo-bench-\(getpid())")
        defer { try? FileManager.default.removeItem(at: runDir) }
        let trainer = try DDPOTrainer(config: config, reward: JPEGCompressibility(),
                                      prompts: try PromptSource.builtin("trl_animals"), pipeline: pipeline,
                                      runDirectory: runDir)
        var samplingEnd = 0.0
        trainer.onEvent = { event in
            if case .sampling(_, let b, let batches, let p) = event, b == batches - 1, p.step == p.total {
                samplingEnd = nowMs()
            }
        }
        var times: [Double] = []
        for epoch in 0..<(warmupEpochs + epochs) {
            let t0 = nowMs()
            try trainer.step(epoch: epoch)
            let t = nowMs() - t0
            FileHandle.standardError.write(Data(String(
                format: "ours %@ epoch %d: %.2f s (sampling %.2f s, reward + training %.2f s)%@\n", configName, epoch,
                t / 1000, (samplingEnd - t0) / 1000, (t0 + t - samplingEnd) / 1000, epoch < warmupEpochs ? " [warm-up]" : "").utf8))
            if epoch >= warmupEpochs { times.append(t) }
        }
        report((median(times), times.min()!, times.count))
    default:
        fail("unknown case \(caseName) (see --help)")
    }
} catch {
    fail("\(caseName): \(error)")
}
