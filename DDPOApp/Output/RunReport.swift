import Foundation
import RLAlgorithms

// What a run leaves for people to look at: `report.html` (one self-contained file: the reward curve
// as inline SVG, PNGs as data URIs) and the model card `final/README.md`.

/// Mean and standard deviation of one epoch's rewards.
struct RewardPoint: Equatable {
    var epoch: Int
    var mean: Double
    var std: Double
}

enum RewardCurve {
    /// An SVG line chart of the mean reward per epoch with a ±1 std band.
    static func svg(_ points: [RewardPoint], width: Int = 640, height: Int = 280, title: String = "reward per epoch") -> String {
        let left = 64.0, right = 16.0, top = 28.0, bottom = 40.0
        let w = Double(width) - left - right, h = Double(height) - top - bottom
        var out = "<svg xmlns=\"http://www.w3.org/2000/svg\" width=\"\(width)\" height=\"\(height)\" viewBox=\"0 0 \(width) \(height)\" font-family=\"sans-serif\" font-size=\"11\">\n"
        out += "<rect width=\"100%\" height=\"100%\" fill=\"white\"/>\n"
        out += "<text x=\"\(Int(left))\" y=\"16\" font-size=\"13\">\(escape(title))</text>\n"
        guard !points.isEmpty else {
            return out + "<text x=\"\(Int(left))\" y=\"\(Int(top + h / 2))\">no epochs yet</text>\n</svg>\n"
        }
        let lows = points.map { $0.mean - $0.std }, highs = points.map { $0.mean + $0.std }
        var lo = lows.min()!, hi = highs.max()!
        if hi - lo < 1e-9 { lo -= 0.5; hi += 0.5 }
        let pad = (hi - lo) * 0.05
        lo -= pad; hi += pad
        let e0 = Double(points.first!.epoch), e1 = Double(max(points.last!.epoch, points.first!.epoch + 1))
        func x(_ epoch: Int) -> Double { left + (Double(epoch) - e0) / (e1 - e0) * w }
        func y(_ value: Double) -> Double { top + (hi - value) / (hi - lo) * h }
        func f(_ v: Double) -> String { String(format: "%.1f", v) }
        // Axes, ticks and grid.
        out += "<line x1=\"\(f(left))\" y1=\"\(f(top + h))\" x2=\"\(f(left + w))\" y2=\"\(f(top + h))\" stroke=\"#444\"/>\n"
        out += "<line x1=\"\(f(left))\" y1=\"\(f(top))\" x2=\"\(f(left))\" y2=\"\(f(top + h))\" stroke=\"#444\"/>\n"
        for i in 0...4 {
            let value = lo + (hi - lo) * Double(i) / 4
            out += "<line x1=\"\(f(left))\" y1=\"\(f(y(value)))\" x2=\"\(f(left + w))\" y2=\"\(f(y(value)))\" stroke=\"#eee\"/>\n"
            out += "<text x=\"\(f(left - 6))\" y=\"\(f(y(value) + 4))\" text-anchor=\"end\">\(String(format: "%.4g", value))</text>\n"
        }
        let span = points.last!.epoch - points.first!.epoch
        let step = max(1, Int((Double(span) / 8).rounded(.up)))
        for epoch in stride(from: points.first!.epoch, through: points.last!.epoch, by: step) {
            out += "<text x=\"\(f(x(epoch)))\" y=\"\(f(top + h + 16))\" text-anchor=\"middle\">\(epoch)</text>\n"
        }
        out += "<text x=\"\(f(left + w / 2))\" y=\"\(f(top + h + 32))\" text-anchor=\"middle\">epoch</text>\n"
        // ±std band, then the mean line and its points.
        let band = points.map { "\(f(x($0.epoch))),\(f(y($0.mean + $0.std)))" } + points.reversed().map { "\(f(x($0.epoch))),\(f(y($0.mean - $0.std)))" }
        out += "<polygon points=\"\(band.joined(separator: " "))\" fill=\"#4a7ebb\" fill-opacity=\"0.18\" stroke=\"none\"/>\n"
        out += "<polyline points=\"\(points.map { "\(f(x($0.epoch))),\(f(y($0.mean)))" }.joined(separator: " "))\" fill=\"none\" stroke=\"#1f4e8c\" stroke-width=\"2\"/>\n"
        for p in points {
            out += "<circle cx=\"\(f(x(p.epoch)))\" cy=\"\(f(y(p.mean)))\" r=\"2.5\" fill=\"#1f4e8c\"><title>epoch \(p.epoch): \(String(format: "%.5g ± %.3g", p.mean, p.std))</title></circle>\n"
        }
        return out + "</svg>\n"
    }

    static func escape(_ text: String) -> String {
        text.replacingOccurrences(of: "&", with: "&amp;").replacingOccurrences(of: "<", with: "&lt;")
            .replacingOccurrences(of: ">", with: "&gt;").replacingOccurrences(of: "\"", with: "&quot;")
    }
}

/// The pieces of `report.html`.
struct RunReport {
    var title: String
    var status: String
    var settings: [(String, String)]
    var curve: [RewardPoint]
    /// Fixed prompts and seeds, sampled before training and after it.
    var fixedPrompts: [String] = []
    var before: [RGBImage] = []
    var after: [RGBImage] = []
    var afterLabel = "after DDPO fine-tuning"
    var beforeLabel = "before"
    /// The last sample batch, captioned "prompt | reward".
    var lastBatch: [(caption: String, image: RGBImage)] = []
    var lastBatchEpoch: Int?

    func html() throws -> String {
        let e = RewardCurve.escape
        var out = """
            <!DOCTYPE html>
            <html lang="en"><head><meta charset="utf-8"><title>\(e(title))</title>
            <style>
            body { font-family: sans-serif; margin: 24px; color: #222; max-width: 1100px; }
            table.settings td { padding: 2px 12px 2px 0; font-family: monospace; }
            .grid { display: flex; flex-wrap: wrap; gap: 10px; }
            figure { margin: 0; text-align: center; }
            figure img { width: 160px; height: auto; image-rendering: pixelated; border: 1px solid #ccc; }
            figcaption { font-size: 12px; max-width: 160px; overflow-wrap: anywhere; }
            table.compare td { vertical-align: top; padding: 4px; text-align: center; font-size: 12px; }
            table.compare img { width: 160px; image-rendering: pixelated; border: 1px solid #ccc; }
            </style></head><body>
            <h1>\(e(title))</h1>
            <p>\(e(status))</p>
            <h2>Reward</h2>
            \(RewardCurve.svg(curve))
            """
        if !before.isEmpty {
            out += "<h2>\(e(beforeLabel.prefix(1).uppercased() + beforeLabel.dropFirst())) | \(e(afterLabel))</h2>\n<p>The same prompts and seeds, sampled \(e(beforeLabel == "before" ? "before training" : beforeLabel)) and \(after.isEmpty ? "(when the run ends) " : "")after it.</p>\n"
            out += "<table class=\"compare\"><tr><td></td><td><b>\(e(beforeLabel))</b></td><td><b>\(e(afterLabel))</b></td></tr>\n"
            for (i, prompt) in fixedPrompts.enumerated() where i < before.count {
                out += "<tr><td>\(e(prompt))</td><td><img alt=\"before\" src=\"\(try Self.dataURI(before[i]))\"></td><td>"
                out += i < after.count ? "<img alt=\"after\" src=\"\(try Self.dataURI(after[i]))\">" : "—"
                out += "</td></tr>\n"
            }
            out += "</table>\n"
        }
        if !lastBatch.isEmpty {
            out += "<h2>Last sample batch\(lastBatchEpoch.map { " (epoch \($0))" } ?? "")</h2>\n<div class=\"grid\">\n"
            for item in lastBatch {
                out += "<figure><img alt=\"sample\" src=\"\(try Self.dataURI(item.image))\"><figcaption>\(e(item.caption))</figcaption></figure>\n"
            }
            out += "</div>\n"
        }
        out += "<h2>Settings</h2>\n<table class=\"settings\">\n"
        for (key, value) in settings { out += "<tr><td>\(e(key))</td><td>\(e(value))</td></tr>\n" }
        out += "</table>\n</body></html>\n"
        return out
    }

    static func dataURI(_ image: RGBImage) throws -> String {
        "data:image/png;base64," + Data(try image.encodePNG()).base64EncodedString()
    }
}

/// `final/README.md`: what was trained, how, and what it did.
enum ModelCard {
    static func markdown(baseModel: String, isLoRA: Bool, reward: String, prompts: String, config: DDPOConfig,
                         curve: [RewardPoint], command: String, wallSeconds: Double, hasImages: Bool) -> String {
        let first = curve.first, last = curve.last
        var out = """
            ---
            library_name: diffusers
            base_model: \(baseModel)
            tags:
            - ddpo
            - reinforcement-learning
            - text-to-image
            - stable-diffusion
            \(isLoRA ? "- lora\n" : "")---

            # \(config.run_name.isEmpty ? config.exp_name : config.run_name)

            \(isLoRA ? "LoRA weights" : "A Stable Diffusion UNet") fine-tuned with DDPO (Black et al., *Training Diffusion Models with
            Reinforcement Learning*) by `ddpo train`, from `\(baseModel)`, to maximise the reward `\(reward)` on the
            prompts `\(prompts)`.

            """
        if let first, let last {
            out += String(format: "Mean reward: %.5g (epoch %d) → %.5g (epoch %d), over %d epochs.\n\n", first.mean, first.epoch, last.mean, last.epoch, curve.count)
        }
        out += "![reward per epoch](reward_curve.svg)\n\n"
        if hasImages {
            out += "Before | after DDPO fine-tuning (the same prompts and seeds):\n\n![before](before.png) ![after](after.png)\n\n"
        }
        out += """
            ## Use

            ```sh
            ddpo sample --model \(baseModel) \(isLoRA ? "--lora final " : "")--prompt "\(prompts == "shapes" ? "a red circle" : "a cat")"
            ```

            ```python
            from diffusers import StableDiffusionPipeline
            pipe = StableDiffusionPipeline.from_pretrained("\(isLoRA ? baseModel : "final")")
            \(isLoRA ? "pipe.load_lora_weights(\"final\")\n" : "")image = pipe("a photo of a cat").images[0]
            ```

            ## Training

            Command: `\(command)`

            Wall time: \(ProgressReporter.clock(wallSeconds)) on \(ProcessInfo.processInfo.activeProcessorCount) CPU cores.

            | setting | value |
            |---|---|

            """
        let values = (try? JSONValue(parsing: config.jsonData()))?.objectValue ?? [:]
        for field in DDPOConfig.fieldTable {
            out += "| `\(field.name)` | `\(values[field.name]?.jsonString ?? "")` |\n"
        }
        return out
    }
}
