import Foundation
import RLAlgorithms

// `ddpo tokenize --model DIR TEXT...` (or `--file F`, one text a line): one JSON array of token ids
// per text, padded and truncated to the tokenizer's maximum length (77 for Stable Diffusion) exactly
// as the pipeline feeds the text encoder.

enum TokenizeCommand {
    static let command = "ddpo tokenize"

    static let options: [OptionSpec] = [
        OptionSpec(name: "model", kind: .value, valueName: "DIR", help: "diffusers folder (its tokenizer/), or a tokenizer folder; default: the built-in model"),
        OptionSpec(name: "file", kind: .value, valueName: "FILE", help: "texts to tokenize, one a line (after any TEXT arguments)"),
    ]

    static var usage: String {
        """
        usage: ddpo tokenize [--model DIR] [TEXT ...] [--file FILE]

        Prints, per text, one line: a JSON array of the padded token ids.

        options:
        \(ArgumentParser.helpLines(options))
        """
    }

    static func run(_ arguments: [String]) throws {
        guard let parsed = try ArgumentParser.parseOrShowHelp(arguments, specs: options, command: command, usage: usage, allowPositionals: true) else { return }
        var texts = parsed.positionals
        if let file = parsed.value("file") {
            let content: String
            do { content = try String(contentsOfFile: file, encoding: .utf8) }
            catch { throw AppError("\(command): --file: \(file): cannot read it as UTF-8 text (\(error.localizedDescription))") }
            var lines = content.components(separatedBy: "\n").map { $0.hasSuffix("\r") ? String($0.dropLast()) : $0 }
            if lines.last == "" { lines.removeLast() }
            texts += lines
        }
        guard !texts.isEmpty else { throw AppError("\(command): no texts (give TEXT arguments or --file FILE)") }
        var folder: URL
        if let path = parsed.value("model") {
            folder = URL(fileURLWithPath: (path as NSString).expandingTildeInPath)
        } else {
            guard let found = BuiltinModelLocator.directory() else { throw AppError("\(command): no --model given and the built-in model was not found") }
            folder = found
        }
        let maxLength: Int?
        if FileManager.default.fileExists(atPath: folder.appendingPathComponent("model_index.json").path) {
            maxLength = textEncoderMaxLength(folder)
            folder = folder.appendingPathComponent("tokenizer")
        } else {
            maxLength = nil
        }
        let tokenizer: CLIPTokenizer
        do { tokenizer = try CLIPTokenizer(directory: folder) }
        catch { throw AppError("\(command): --model: \(error)", exitCode: 1) }
        let ids: [[Int]]
        do { ids = try tokenizer(texts, padding: .maxLength, truncation: true, maxLength: tokenizer.modelMaxLength ?? maxLength).inputIDs }
        catch { throw AppError("\(command): \(error)", exitCode: 1) }
        var output = ""
        for row in ids { output += "[" + row.map(String.init).joined(separator: ", ") + "]\n" }
        FileHandle.standardOutput.write(Data(output.utf8))
    }

    /// The text encoder's max_position_embeddings, the pipeline's fallback when the tokenizer sets no length.
    static func textEncoderMaxLength(_ folder: URL) -> Int? {
        let url = folder.appendingPathComponent("text_encoder/config.json")
        guard let data = try? Data(contentsOf: url), let object = (try? JSONValue(parsing: data))?.objectValue else { return nil }
        return object["max_position_embeddings"]?.doubleValue.map { Int($0) }
    }
}
