// Generated from notebooks-md/02-sampling.md by scripts/extract-notebooks.py. Do not edit.
import Foundation
import RLAlgorithms

func notebook02(output: @escaping (String) -> Void = { Swift.print($0) }) throws -> Double {
    func print(_ items: Any...) { output(items.map { "\($0)" }.joined(separator: " ")) }
    struct ModelNotFound: Error {}
    guard let modelDirectory = BuiltinModel.defaultDirectory() else { throw ModelNotFound() }
    let pipeline = try StableDiffusionPipeline.load(directory: modelDirectory)
    let size = pipeline.defaultImageSize
    print("loaded", modelDirectory.lastPathComponent, "- images", size.height, "x", size.width,
          "from latents", size.height / pipeline.vaeScaleFactor, "x", size.width / pipeline.vaeScaleFactor)

    let prompts = ["a red circle", "a blue square", "a yellow triangle", "a green cross"]
    let request = SamplingRequest(prompts: prompts, numInferenceSteps: 20, guidanceScale: 5, eta: 0)
    let output = try pipeline.sample(request, seed: 42)
    let images = output.images!             // [4, 3, H, W] in [0, 1]
    print("images", images.shape, "final latents", output.latents.shape)

    let folder = FileManager.default.temporaryDirectory.appendingPathComponent("notebook02-\(getpid())")
    let files = try StableDiffusionPipeline.savePNGs(images, to: folder)
    print("wrote", files.map(\.lastPathComponent), "to", folder.path)

    var misses = 0
    for (i, prompt) in prompts.enumerated() {
        let picture = try RGBImage(tensor: images.slice(0, i, i + 1))
        var sum = [0.0, 0.0, 0.0], count = 0.0
        for p in stride(from: 0, to: picture.pixels.count, by: 3) {
            let rgb = (0..<3).map { Double(picture.pixels[p + $0]) }
            if rgb.map({ abs($0 - 128) }).max()! > 40 {
                for c in 0..<3 { sum[c] += rgb[c] }
                count += 1
            }
        }
        let mean = sum.map { $0 / max(count, 1) }
        func distance(_ color: ShapeColor) -> Double {
            let palette = [Double(color.red), Double(color.green), Double(color.blue)]
            return (0..<3).map { (palette[$0] - mean[$0]) * (palette[$0] - mean[$0]) }.reduce(0, +)
        }
        let nearest = ShapesDataset.colors.min { distance($0) < distance($1) }!
        print(prompt, "→ mostly", nearest.name, String(format: "(%.0f%% of the pixels)", 100 * count / Double(picture.pixels.count / 3)))
        if !prompt.contains(nearest.name) { misses += 1 }
    }
    let offTarget = Double(misses) / Double(prompts.count)
    return offTarget
}
