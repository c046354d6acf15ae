import Foundation
import XCTest
@testable import RLAlgorithms

/// Prompt sources: the built-in lists against ddpo-pytorch's / TRL's assets, the seeded stream and its
/// resume, and the file formats with their errors.
final class PromptsTests: XCTestCase {
    private func temporaryFile(_ contents: String, suffix: String) throws -> URL {
        let url = FileManager.default.temporaryDirectory.appendingPathComponent("prompts-\(UUID().uuidString)\(suffix)")
        try Data(contents.utf8).write(to: url)
        addTeardownBlock { try? FileManager.default.removeItem(at: url) }
        return url
    }

    func testBuiltinListsMatchTheReferences() {
        // REFERENCES.md §5 / ddpo-pytorch assets/simple_animals.txt.
        XCTAssertEqual(BuiltinPrompts.simpleAnimals.joined(separator: " "),
                       "cat dog horse monkey rabbit zebra spider bird sheep deer cow goat lion tiger bear raccoon fox wolf lizard beetle ant butterfly fish shark whale dolphin squirrel mouse rat snake turtle frog chicken duck goose bee pig turkey fly llama camel bat gorilla hedgehog kangaroo")
        XCTAssertEqual(BuiltinPrompts.simpleAnimals.count, 45)
        XCTAssertEqual(BuiltinPrompts.trlAnimals.joined(separator: " "),
                       "cat dog horse monkey rabbit zebra spider bird sheep deer cow goat lion frog chicken duck goose bee pig turkey fly llama camel bat gorilla hedgehog kangaroo")
        XCTAssertEqual(BuiltinPrompts.activities, ["washing the dishes", "riding a bike", "playing chess"])
        // ddpo-pytorch assets/imagenet_classes.txt lines 0..<398, stripped: count, spot checks, and the
        // FNV-1a 64 hash of the names joined with "\n" (computed from the asset file).
        let names = BuiltinPrompts.imagenetAnimals
        XCTAssertEqual(names.count, 398)
        XCTAssertEqual(names[0], "tench, Tinca tinca")
        XCTAssertEqual(names[151], "Chihuahua")
        XCTAssertEqual(names[207], "golden retriever")
        XCTAssertEqual(names[397], "puffer, pufferfish, blowfish, globefish")
        XCTAssertEqual(names.reduce(0) { $0 + $1.utf8.count }, 10131)
        var hash: UInt64 = 0xcbf2_9ce4_8422_2325
        for byte in names.joined(separator: "\n").utf8 { hash = (hash ^ UInt64(byte)) &* 0x100_0000_01b3 }
        XCTAssertEqual(hash, 0xf057_3bfb_6a85_5b24)
    }

    func testSeededStreamIsDeterministicCoversTheListAndResumes() throws {
        var a = try PromptSource.builtin("simple_animals", seed: 7)
        var b = try PromptSource.builtin("simple_animals", seed: 7)
        let first = (0..<2000).map { _ in a.next().prompt }
        XCTAssertEqual(first, (0..<2000).map { _ in b.next().prompt })
        XCTAssertEqual(Set(first), Set(BuiltinPrompts.simpleAnimals))
        XCTAssertEqual(a.generator.offset, 2000)  // one Philox block per prompt
        var other = try PromptSource.builtin("simple_animals", seed: 8)
        XCTAssertNotEqual(Array(first.prefix(20)), (0..<20).map { _ in other.next().prompt })

        // Resume from a saved generator (through JSON, as a checkpoint would).
        var source = try PromptSource.builtin("imagenet_animals", seed: 3)
        _ = source.batch(5)
        let saved = try JSONEncoder().encode(source.generator)
        let expected = source.batch(6).map(\.prompt)
        var resumed = try PromptSource.builtin("imagenet_animals", seed: 3)
        resumed.generator = try JSONDecoder().decode(PhiloxGenerator.self, from: saved)
        XCTAssertEqual(resumed.batch(6).map(\.prompt), expected)
    }

    func testNounsActivities() throws {
        var source = try PromptSource.builtin("nouns_activities", seed: 1)
        var seen = Set<String>()
        for _ in 0..<3000 {
            let (prompt, metadata) = source.next()
            XCTAssertTrue(metadata.isEmpty)
            let activity = BuiltinPrompts.activities.first { prompt.hasSuffix(" " + $0) }
            XCTAssertNotNil(activity, prompt)
            let subject = String(prompt.dropLast(activity!.count + 1))
            let noun = subject.hasPrefix("an ") ? String(subject.dropFirst(3)) : String(subject.dropFirst(2))
            XCTAssertTrue(BuiltinPrompts.simpleAnimals.contains(noun), prompt)
            // inflect's a(): "an ant", "a cat", ...
            XCTAssertEqual(subject, (noun == "ant" ? "an " : "a ") + noun)
            seen.insert(prompt)
        }
        XCTAssertEqual(seen.count, 45 * 3)
        XCTAssertEqual(PromptSource.withArticle("elephant"), "an elephant")
        XCTAssertEqual(PromptSource.withArticle("Owl"), "an Owl")
        XCTAssertEqual(PromptSource.withArticle("zebra"), "a zebra")
    }

    func testTextFile() throws {
        let url = try temporaryFile("  a red fox \n\n\t\nan old owl\r\nthird one", suffix: ".txt")
        var source = try PromptSource.textFile(url, seed: 0)
        guard case .choice(let list) = source.kind else { return XCTFail("kind") }
        XCTAssertEqual(list.map(\.prompt), ["a red fox", "an old owl", "third one"])
        XCTAssertTrue(Set(source.batch(50).map(\.prompt)).isSubset(of: ["a red fox", "an old owl", "third one"]))

        let blank = try temporaryFile("\n  \n", suffix: ".txt")
        XCTAssertThrowsError(try PromptSource.textFile(blank)) {
            XCTAssertEqual("\($0)", "\(blank.path): no prompts (the file is empty or blank)")
        }
        let missing = URL(fileURLWithPath: "/nonexistent/prompts.txt")
        XCTAssertThrowsError(try PromptSource.textFile(missing)) {
            XCTAssertTrue("\($0)".hasPrefix("/nonexistent/prompts.txt: cannot read"), "\($0)")
        }
    }

    func testJSONLinesFile() throws {
        let url = try temporaryFile("""
            {"prompt": "two cats", "metadata": {"questions": ["How many cats?"], "answers": ["two"]}}

            {"prompt": "a dog"}
            """, suffix: ".jsonl")
        var source = try PromptSource.jsonLines(url, seed: 4)
        guard case .choice(let list) = source.kind else { return XCTFail("kind") }
        XCTAssertEqual(list.map(\.prompt), ["two cats", "a dog"])
        XCTAssertEqual(list[0].metadata["answers"], ["two"])
        XCTAssertEqual(list[0].metadata["questions"]?[0]?.stringValue, "How many cats?")
        XCTAssertEqual(list[1].metadata, [:])
        let batch = source.batch(40)
        XCTAssertTrue(batch.contains { $0.prompt == "two cats" && $0.metadata["answers"] == ["two"] })

        let cases: [(String, String)] = [
            ("{\"prompt\": \"ok\"}\n{\"prompt\": 3}", ":2: missing \"prompt\" string"),
            ("{\"prompt\": \"ok\"}\n\n[1, 2]", ":3: expected a JSON object {\"prompt\": ..., \"metadata\": {...}}"),
            ("{\"prompt\": \"ok\", \"metadata\": [1]}", ":1: \"metadata\" must be a JSON object"),
            ("{\"prompt\": \"ok\"}\n{not json", ":2: not valid JSON"),
            ("{\"prompt\": \"ok\", \"meta\": {}}", ":1: unknown field \"meta\" (expected \"prompt\" and \"metadata\")"),
        ]
        for (text, suffix) in cases {
            let bad = try temporaryFile(text, suffix: ".jsonl")
            XCTAssertThrowsError(try PromptSource.jsonLines(bad)) { XCTAssertEqual("\($0)", bad.path + suffix) }
        }
    }

    func testUnknownBuiltinListsTheNamesWithASuggestion() {
        XCTAssertThrowsError(try PromptSource.builtin("simple_animal")) {
            XCTAssertEqual("\($0)", "unknown prompt source \"simple_animal\" (did you mean \"simple_animals\"?); built-in sources: simple_animals, trl_animals, imagenet_animals, nouns_activities; or give a .txt file (one prompt a line) or a .jsonl file")
        }
        XCTAssertThrowsError(try PromptSource.builtin("ImageNet_Animals")) {
            XCTAssertTrue("\($0)".contains("did you mean \"imagenet_animals\"?"), "\($0)")
        }
        XCTAssertThrowsError(try PromptSource.builtin("xyz")) { XCTAssertFalse("\($0)".contains("did you mean"), "\($0)") }
    }
}
