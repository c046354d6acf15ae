import Foundation
import XCTest
@testable import DDPOApp

/// Keeps notebooks-md/ honest: the generated Swift must match the markdown's code blocks, and the
/// notebook must reach the result it states.
final class NotebookTests: XCTestCase {
    static let root = URL(fileURLWithPath: #filePath).deletingLastPathComponent().deletingLastPathComponent().deletingLastPathComponent()

    /// (function name, returned variable, stated bound, code blocks) from a notebook's markdown.
    func parse(_ markdown: String) throws -> (String, String, Double, [String]) {
        let header = try XCTUnwrap(markdown.range(of: #"<!-- notebook: name=(\w+) returns=(\w+) expect-below=([0-9.eE+-]+) -->"#,
                                                  options: .regularExpression), "notebook header missing")
        let fields = markdown[header].dropFirst(15).dropLast(4).split(separator: " ").map { $0.split(separator: "=")[1] }
        var blocks: [String] = []
        var rest = markdown[...]
        while let open = rest.range(of: "```swift\n") {
            let close = try XCTUnwrap(rest[open.upperBound...].range(of: "```"), "unclosed code block")
            blocks.append(String(rest[open.upperBound..<close.lowerBound]))
            rest = rest[close.upperBound...]
        }
        return (String(fields[0]), String(fields[1]), try XCTUnwrap(Double(fields[2])), blocks)
    }

    static let notebooks = [("01-tensors-and-autograd.md", "Notebook01.swift"), ("02-sampling.md", "Notebook02.swift"),
                            ("03-ddpo-in-a-script.md", "Notebook03.swift")]

    func testGeneratedNotebooksMatchMarkdown() throws {
        for (markdownName, swiftName) in Self.notebooks {
            let markdown = try String(contentsOf: Self.root.appendingPathComponent("notebooks-md/\(markdownName)"), encoding: .utf8)
            let generated = try String(contentsOf: Self.root.appendingPathComponent("DDPOApp/Notebooks/\(swiftName)"), encoding: .utf8)
            let (name, result, _, blocks) = try parse(markdown)
            XCTAssertTrue(generated.contains("func \(name)("), "generated file lacks func \(name)")
            XCTAssertTrue(generated.contains("    return \(result)\n"))
            for block in blocks {
                for line in block.split(separator: "\n", omittingEmptySubsequences: true) where !line.trimmingCharacters(in: .whitespaces).isEmpty {
                    XCTAssertTrue(generated.contains("    " + line + "\n"),
                                  "DDPOApp/Notebooks/\(swiftName) is stale (run python3 scripts/extract-notebooks.py): missing line \(line)")
                }
            }
        }
    }

    func bound(_ markdownName: String) throws -> Double {
        try parse(String(contentsOf: Self.root.appendingPathComponent("notebooks-md/\(markdownName)"), encoding: .utf8)).2
    }

    /// The built-in model draws the colour each of four prompts names (checked on the pixels).
    func testNotebook02SamplesWhatThePromptsSay() throws {
        var lines: [String] = []
        let offTarget = try notebook02 { lines.append($0) }
        XCTAssertLessThan(offTarget, try bound("02-sampling.md"), lines.joined(separator: "\n"))
        XCTAssertTrue(lines.contains { $0.hasPrefix("wrote [\"0.png\", \"1.png\", \"2.png\", \"3.png\"]") }, lines.joined(separator: "\n"))
    }

    /// A two-epoch DDPO run with a Swift reward and prompt metadata trains and logs finite numbers.
    func testNotebook03TrainsAndReadsItsMetrics() throws {
        var lines: [String] = []
        let problems = try notebook03 { lines.append($0) }
        XCTAssertLessThan(problems, try bound("03-ddpo-in-a-script.md"), lines.joined(separator: "\n"))
        XCTAssertEqual(lines.filter { $0.hasPrefix("epoch ") }.count, 2, lines.joined(separator: "\n"))
    }

    func testNotebook01ReachesItsStatedLoss() throws {
        let markdown = try String(contentsOf: Self.root.appendingPathComponent("notebooks-md/01-tensors-and-autograd.md"), encoding: .utf8)
        let (_, _, bound, _) = try parse(markdown)
        var lines: [String] = []
        let loss = try notebook01 { lines.append($0) }
        XCTAssertLessThan(loss, bound, "notebook 01 states a final loss below \(bound)")
        // The autograd cell prints dy/dw = x (1 - tanh²(w x)); check it against the closed form.
        let expected = zip([2.0, -1.0, 0.5], [1.0, 3.0, -2.0]).map { w, x in x * (1 - tanh(w * x) * tanh(w * x)) }
        let gradLine = try XCTUnwrap(lines.first { $0.hasPrefix("y =") })
        let printed = gradLine.components(separatedBy: "dy/dw = ")[1]
            .trimmingCharacters(in: CharacterSet(charactersIn: "[] ")).split(separator: ",")
            .map { Double($0.trimmingCharacters(in: .whitespaces))! }
        for (p, e) in zip(printed, expected) { XCTAssertEqual(p, e, accuracy: 1e-6) }
    }
}
