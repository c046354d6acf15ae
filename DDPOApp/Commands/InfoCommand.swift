import Foundation
import RLAlgorithms

// `ddpo info --model DIR`: what a diffusers folder holds — the pipeline class, each component's
// class and config, its weight files with tensor and parameter counts and dtypes (read from the
// safetensors headers, nothing loaded), and whether the strict load that `train` and `sample` do is
// clean. Exit status 1 when it is not.

enum InfoCommand {
    static let command = "ddpo info"

    static let options: [OptionSpec] = [
        OptionSpec(name: "model", kind: .value, valueName: "DIR", help: "diffusers folder (default: the built-in model)"),
        OptionSpec(name: "variant", kind: .value, valueName: "NAME", help: "weight variant to load, e.g. fp16"),
    ]

    static var usage: String {
        """
        usage: ddpo info [--model DIR] [--variant NAME]

        options:
        \(ArgumentParser.helpLines(options))
        """
    }

    static func run(_ arguments: [String]) throws {
        guard let parsed = try ArgumentParser.parseOrShowHelp(arguments, specs: options, command: command, usage: usage) else { return }
        let folder = try BuiltinModelLocator.resolve(parsed.value("model"), command: command)
        let index: ModelIndex
        do { index = try ModelIndex(contentsOf: folder.appendingPathComponent("model_index.json")) }
        catch { throw AppError("\(command): \(error)", exitCode: 1) }
        var out = "model: \(folder.path)\npipeline: \(index.className)"
        if let version = index.diffusersVersion { out += " (diffusers \(version))" }
        out += "\n"
        var totalParameters = 0
        for key in index.components.keys.sorted() {
            let component = index.components[key]!
            guard let className = component.className else {
                out += "\n\(key): none\n"
                continue
            }
            out += "\n\(key): \(className) (\(component.library ?? "?"))\n"
            let directory = folder.appendingPathComponent(key)
            for configName in ["config.json", "scheduler_config.json", "tokenizer_config.json"] {
                let url = directory.appendingPathComponent(configName)
                guard let data = try? Data(contentsOf: url) else { continue }
                if let value = try? JSONValue(parsing: data) {
                    out += "  \(configName): \(value.jsonString)\n"
                } else {
                    out += "  \(configName): not valid JSON\n"
                }
            }
            let files = ((try? FileManager.default.contentsOfDirectory(atPath: directory.path)) ?? [])
                .filter { $0.hasSuffix(".safetensors") }.sorted()
            for name in files {
                let path = directory.appendingPathComponent(name).path
                do {
                    let file = try SafeTensorsFile(path: path)
                    var parameters = 0, dtypes: [String: Int] = [:]
                    for key in file.keys {
                        let entry = file.header.entries[key]!
                        let count = entry.shape.reduce(1, *)
                        parameters += count
                        dtypes["\(entry.dtype)", default: 0] += count
                    }
                    if !name.contains(".fp16.") && !name.contains(".bf16.") { totalParameters += parameters }
                    let size = (try? FileManager.default.attributesOfItem(atPath: path)[.size] as? Int) ?? 0
                    out += "  \(name): \(file.keys.count) tensors, \(grouped(parameters)) parameters, "
                    out += dtypes.keys.sorted().map { "\($0)" }.joined(separator: "+") + ", \(String(format: "%.1f", Double(size) / 1e6)) MB\n"
                } catch {
                    out += "  \(name): unreadable: \(error)\n"
                }
            }
            if files.isEmpty, ["unet", "vae", "text_encoder"].contains(key) {
                let other = ((try? FileManager.default.contentsOfDirectory(atPath: directory.path)) ?? []).sorted()
                out += "  no .safetensors weights (files: \(other.isEmpty ? "none" : other.joined(separator: ", ")))\n"
            }
        }
        out += "\nparameters (non-variant files): \(grouped(totalParameters))\n"
        var clean = true
        do {
            _ = try StableDiffusionPipeline.load(directory: folder, variant: parsed.value("variant"))
            out += "strict load: clean\n"
        } catch {
            out += "strict load: FAILED: \(error)\n"
            clean = false
        }
        FileHandle.standardOutput.write(Data(out.utf8))
        if !clean { throw AppError("\(command): \(folder.path) does not load cleanly (see above)", exitCode: 1) }
    }

    /// 1234567 → "1,234,567".
    static func grouped(_ n: Int) -> String {
        let digits = String(n)
        var out = ""
        for (i, c) in digits.enumerated() {
            if i > 0 && (digits.count - i) % 3 == 0 { out += "," }
            out.append(c)
        }
        return out
    }
}
