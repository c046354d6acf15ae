import Foundation
import XCTest
@testable import DiffusionModels

/// CLIPTokenizer against transformers 4.56.2's slow CLIPTokenizer (without ftfy, Python 3.11's
/// Unicode 14.0 tables), with the real CLIP vocabulary: fixtures made by
/// Fixtures/make_tokenizer_fixtures.py. Token ids and decoded strings must be identical
/// (tolerance: none). The vocabulary is derived here from the committed merges.txt and checked
/// against the checksum of the vocab.json transformers was given.
final class CLIPTokenizerTests: XCTestCase {
    static let fixtures = URL(fileURLWithPath: #filePath).deletingLastPathComponent()
        .appendingPathComponent("Fixtures/tokenizer")

    // MARK: - fixture

    struct Squeezed: Decodable {
        let ids: [Int]
        let pads: Int

        /// The padded row: the run of pad ids is on the padding side.
        func row(pad: Int, side: CLIPTokenizer.Side = .right) -> [Int] {
            let padding = [Int](repeating: pad, count: pads)
            return side == .right ? ids + padding : padding + ids
        }
    }

    struct Case: Decodable {
        let text: String
        let ids: [Int]
        let padded: Squeezed
        let decoded: String
        let decoded_skip: String
        let sd2_ids: [Int]?
        let sd2_padded: Squeezed
        let sd2_decoded_skip: String?
        let variant_padded: Squeezed
        let variant_decoded: String?
    }

    struct DecodeCase: Decodable {
        let ids: [Int]
        let decoded: String
        let decoded_skip: String
        let sd2_decoded_skip: String
        let variant_decoded: String
    }

    struct TinyCase: Decodable {
        let text: String
        let ids: [Int]
        let padded: Squeezed
        let decoded: String
        let decoded_skip: String
        let decoded_skip_no_cleanup: String?
    }

    struct TinyAdded: Decodable {
        let vocab_size: Int
        let special_ids: [Int]
        let added_vocab: [String: Int]
        let pad_token_id: Int
        let cases: [TinyCase]
    }

    struct Tiny: Decodable {
        let vocab_size: Int
        let unk_token_id: Int
        let cases: [TinyCase]
        let added: TinyAdded
    }

    struct Fixture: Decodable {
        let unicode_version: String
        let vocab_size: Int
        let vocab_fnv1a64: String
        let model_max_length: [String: Int]
        let pad_token_id: [String: Int]
        let cases: [Case]
        let decode_cases: [DecodeCase]
        let tiny: Tiny
    }

    static let fixture: Fixture = {
        let data = try! Data(contentsOf: fixtures.appendingPathComponent("cases.json"))
        return try! JSONDecoder().decode(Fixture.self, from: data)
    }()

    /// The Unicode version of the Python that made the fixtures.
    static var options: CLIPTokenizer.Options {
        let parts = fixture.unicode_version.split(separator: ".").compactMap { Int($0) }
        return CLIPTokenizer.Options(unicodeVersion: (parts[0], parts[1]))
    }

    /// A temporary folder holding, per configuration, the folder transformers loaded: the
    /// committed config files, merges.txt and the vocab.json derived from it.
    static let folders: URL = {
        let fm = FileManager.default
        let root = fm.temporaryDirectory.appendingPathComponent("clip-tokenizer-tests-\(ProcessInfo.processInfo.processIdentifier)")
        try? fm.removeItem(at: root)
        let merges = fixtures.appendingPathComponent("merges.txt")
        let vocabulary = try! CLIPTokenizer.vocabularyFromMerges(merges)
        let vocabJSON = try! JSONEncoder().encode(vocabulary)
        for name in ["sd1", "sd2", "variant"] {
            let dir = root.appendingPathComponent(name)
            try! fm.createDirectory(at: dir, withIntermediateDirectories: true)
            for file in try! fm.contentsOfDirectory(atPath: fixtures.appendingPathComponent(name).path) {
                try! fm.copyItem(at: fixtures.appendingPathComponent(name).appendingPathComponent(file),
                                 to: dir.appendingPathComponent(file))
            }
            try! fm.copyItem(at: merges, to: dir.appendingPathComponent("merges.txt"))
            try! vocabJSON.write(to: dir.appendingPathComponent("vocab.json"))
        }
        return root
    }()

    override class func tearDown() {
        try? FileManager.default.removeItem(at: folders)
        super.tearDown()
    }

    static let sd1 = try! CLIPTokenizer(directory: folders.appendingPathComponent("sd1"), options: options)
    static let sd2 = try! CLIPTokenizer(directory: folders.appendingPathComponent("sd2"), options: options)
    static let variant = try! CLIPTokenizer(directory: folders.appendingPathComponent("variant"), options: options)

    private func show(_ text: String) -> String {
        let escaped = text.unicodeScalars.map { $0.isASCII && $0.value >= 0x20 ? String($0) : "\\u{\(String($0.value, radix: 16))}" }.joined()
        return escaped.count > 120 ? String(escaped.prefix(120)) + "…" : escaped
    }

    /// Asserts `actual(case) == expected(case)` for every case and reports the failures together.
    private func assertAll<C, T: Equatable>(_ cases: [C], _ what: String, text: (C) -> String, expected: (C) -> T,
                                            actual: (C) throws -> T, file: StaticString = #filePath, line: UInt = #line) {
        var failures: [String] = []
        for c in cases {
            do {
                let a = try actual(c), e = expected(c)
                if a != e { failures.append("\"\(show(text(c)))\": got \(a), expected \(e)") }
            } catch {
                failures.append("\"\(show(text(c)))\": threw \(error)")
            }
        }
        XCTAssertTrue(failures.isEmpty, "\(what): \(failures.count) of \(cases.count) differ:\n"
                      + failures.prefix(10).joined(separator: "\n"), file: file, line: line)
    }

    // MARK: - vocabulary and settings

    func testDerivedVocabularyIsTransformersVocabulary() throws {
        let vocabulary = try CLIPTokenizer.vocabularyFromMerges(Self.fixtures.appendingPathComponent("merges.txt"))
        XCTAssertEqual(vocabulary.count, Self.fixture.vocab_size)
        // FNV-1a 64 over "token\tid\n" in id order, as the generator computes it.
        var hash: UInt64 = 0xCBF2_9CE4_8422_2325
        for (token, id) in vocabulary.sorted(by: { $0.value < $1.value }) {
            for byte in "\(token)\t\(id)\n".utf8 {
                hash ^= UInt64(byte)
                hash = hash &* 0x0000_0100_0000_01B3
            }
        }
        XCTAssertEqual(String(format: "%016llx", hash), Self.fixture.vocab_fnv1a64)
        XCTAssertEqual(vocabulary["<|startoftext|>"], 49406)
        XCTAssertEqual(vocabulary["<|endoftext|>"], 49407)
        XCTAssertEqual(vocabulary["!"], 0)
    }

    func testSettingsOfTheFolders() {
        let f = Self.fixture
        XCTAssertEqual(Self.sd1.modelMaxLength, f.model_max_length["sd1"])
        XCTAssertEqual(Self.sd2.modelMaxLength, f.model_max_length["sd2"])
        XCTAssertEqual(Self.variant.modelMaxLength, f.model_max_length["variant"])
        XCTAssertEqual(Self.sd1.padTokenID, f.pad_token_id["sd1"])
        XCTAssertEqual(Self.sd2.padTokenID, f.pad_token_id["sd2"])
        XCTAssertEqual(Self.sd2.padToken, "!")  // special_tokens_map.json overrides the config
        XCTAssertEqual(Self.sd1.bosTokenID, 49406)
        XCTAssertEqual(Self.sd1.eosTokenID, 49407)
        XCTAssertEqual(Self.sd1.unkTokenID, 49407)
        XCTAssertEqual(Self.sd1.vocabularySize, 49408)
        XCTAssertEqual(Self.variant.paddingSide, .left)
        XCTAssertEqual(Self.variant.truncationSide, .left)
        XCTAssertTrue(Self.variant.cleanUpTokenizationSpaces)
        XCTAssertFalse(Self.sd1.cleanUpTokenizationSpaces)
    }

    func testTokenizeKnownPrompt() {
        // Hand-checked ids of openai/clip-vit-large-patch14 for this prompt.
        XCTAssertEqual(Self.sd1.tokenize("a photo of a cat"), ["a</w>", "photo</w>", "of</w>", "a</w>", "cat</w>"])
        XCTAssertEqual(Self.sd1.encode("a photo of a cat"), [49406, 320, 1125, 539, 320, 2368, 49407])
    }

    // MARK: - encoding against transformers

    func testEncodeMatchesTransformers() {
        XCTAssertGreaterThanOrEqual(Self.fixture.cases.count, 300)
        assertAll(Self.fixture.cases, "sd1 ids", text: \.text, expected: \.ids, actual: { Self.sd1.encode($0.text) })
        assertAll(Self.fixture.cases, "sd2 ids (\"!\" is an added token)", text: \.text,
                  expected: { $0.sd2_ids ?? $0.ids }, actual: { Self.sd2.encode($0.text) })
    }

    func testPaddedBatchesMatchDiffusersCall() throws {
        let cases = Self.fixture.cases
        let texts = cases.map(\.text)
        let sd1 = try Self.sd1(texts)
        let sd2 = try Self.sd2(texts)
        let variant = try Self.variant(texts)
        let pad1 = Self.fixture.pad_token_id["sd1"]!, pad2 = Self.fixture.pad_token_id["sd2"]!
        let padV = Self.fixture.pad_token_id["variant"]!
        let indexed = Array(cases.enumerated())
        assertAll(indexed, "sd1 padded", text: \.element.text, expected: { $0.element.padded.row(pad: pad1) },
                  actual: { sd1.inputIDs[$0.offset] })
        assertAll(indexed, "sd2 padded", text: \.element.text, expected: { $0.element.sd2_padded.row(pad: pad2) },
                  actual: { sd2.inputIDs[$0.offset] })
        assertAll(indexed, "variant padded (left padding, left truncation, 16)", text: \.element.text,
                  expected: { $0.element.variant_padded.row(pad: padV, side: .left) }, actual: { variant.inputIDs[$0.offset] })
        // Attention masks: 1 over the sequence, 0 over the padding (hand rule of transformers' pad).
        for (i, c) in cases.enumerated() {
            let length = min(c.ids.count, 77)
            XCTAssertEqual(sd1.attentionMask[i], [Int](repeating: 1, count: length) + [Int](repeating: 0, count: 77 - length))
        }
    }

    func testInputIDsTensor() throws {
        let cases = Array(Self.fixture.cases.prefix(40))
        let tensor = try Self.sd1.inputIDs(cases.map(\.text))
        XCTAssertEqual(tensor.shape, [40, 77])
        XCTAssertEqual(tensor.dtype, .int64)
        let values = tensor.toArray().map { Int($0) }
        let pad = Self.fixture.pad_token_id["sd1"]!
        XCTAssertEqual(values, cases.flatMap { $0.padded.row(pad: pad) })
    }

    func testLongestPaddingAndNoTruncation() throws {
        let texts = ["a photo of a cat", "cat", ""]
        let out = try Self.sd1(texts, padding: .longest, truncation: false)
        let e = [49406, 320, 1125, 539, 320, 2368, 49407]
        XCTAssertEqual(out.inputIDs, [e, [49406, 2368, 49407, 49407, 49407, 49407, 49407],
                                      [49406, 49407, 49407, 49407, 49407, 49407, 49407]])
        XCTAssertEqual(out.attentionMask, [[1, 1, 1, 1, 1, 1, 1], [1, 1, 1, 0, 0, 0, 0], [1, 1, 0, 0, 0, 0, 0]])
        let long = Self.fixture.cases.first { $0.ids.count > 200 }!
        XCTAssertEqual(try Self.sd1([long.text], padding: .doNotPad, truncation: false).inputIDs[0], long.ids)
        // transformers leaves a sequence whole when truncation would remove all of it.
        XCTAssertEqual(try Self.sd1(["a photo"], padding: .doNotPad, maxLength: 3).inputIDs[0], [49406, 320, 49407])
        XCTAssertEqual(try Self.sd1(["a photo"], padding: .doNotPad, maxLength: 2).inputIDs[0], [49406, 320, 1125, 49407])
    }

    // MARK: - decoding against transformers

    func testDecodeMatchesTransformers() {
        let cases = Self.fixture.cases
        assertAll(cases, "decode", text: \.text, expected: \.decoded, actual: { try Self.sd1.decode($0.ids) })
        assertAll(cases, "decode skipping special tokens", text: \.text, expected: \.decoded_skip,
                  actual: { try Self.sd1.decode($0.ids, skipSpecialTokens: true) })
        assertAll(cases, "sd2 decode skipping special tokens (\"!\" is special)", text: \.text,
                  expected: { $0.sd2_decoded_skip ?? $0.decoded_skip },
                  actual: { try Self.sd2.decode($0.sd2_ids ?? $0.ids, skipSpecialTokens: true) })
        assertAll(cases, "decode with clean_up_tokenization_spaces", text: \.text, expected: { $0.variant_decoded ?? $0.decoded },
                  actual: { try Self.variant.decode($0.ids) })
    }

    func testDecodeArbitraryIDs() {
        // Random byte-symbol runs (mostly invalid UTF-8) and random vocabulary ids.
        let cases = Self.fixture.decode_cases
        let text: (DecodeCase) -> String = { "\($0.ids)" }
        assertAll(cases, "decode", text: text, expected: \.decoded, actual: { try Self.sd1.decode($0.ids) })
        assertAll(cases, "decode skip", text: text, expected: \.decoded_skip,
                  actual: { try Self.sd1.decode($0.ids, skipSpecialTokens: true) })
        assertAll(cases, "sd2 decode skip", text: text, expected: \.sd2_decoded_skip,
                  actual: { try Self.sd2.decode($0.ids, skipSpecialTokens: true) })
        assertAll(cases, "variant decode", text: text, expected: \.variant_decoded, actual: { try Self.variant.decode($0.ids) })
        XCTAssertThrowsError(try Self.sd1.decode([49408])) { error in
            XCTAssertTrue("\(error)".contains("49408"), "\(error)")
        }
    }

    // MARK: - tokenizer.json and added tokens

    func testTokenizerJSONLoaderMatchesSlowTokenizer() throws {
        let tiny = Self.fixture.tiny
        for name in ["tiny", "tiny_legacy"] {  // merges as [a, b] pairs / as "a b" strings
            let tokenizer = try CLIPTokenizer(directory: Self.fixtures.appendingPathComponent(name), options: Self.options)
            XCTAssertEqual(tokenizer.vocabularySize, tiny.vocab_size, name)
            XCTAssertEqual(tokenizer.unkTokenID, tiny.unk_token_id, name)
            XCTAssertEqual(tokenizer.modelMaxLength, 12, name)
            assertAll(tiny.cases, "\(name) ids", text: \.text, expected: \.ids, actual: { tokenizer.encode($0.text) })
            assertAll(tiny.cases, "\(name) padded", text: \.text, expected: { $0.padded.row(pad: tokenizer.padTokenID!) },
                      actual: { try tokenizer([$0.text]).inputIDs[0] })
            assertAll(tiny.cases, "\(name) decode", text: \.text, expected: \.decoded, actual: { try tokenizer.decode($0.ids) })
            assertAll(tiny.cases, "\(name) decode skip", text: \.text, expected: \.decoded_skip,
                      actual: { try tokenizer.decode($0.ids, skipSpecialTokens: true) })
        }
        // The file alone, through the URL initialiser.
        let direct = try CLIPTokenizer(tokenizerJSONURL: Self.fixtures.appendingPathComponent("tiny/tokenizer.json"), options: Self.options)
        assertAll(tiny.cases, "tokenizer.json alone", text: \.text, expected: \.ids, actual: { direct.encode($0.text) })
    }

    func testAddedTokensStripAndSingleWordRules() throws {
        let added = Self.fixture.tiny.added
        let tokenizer = try CLIPTokenizer(directory: Self.fixtures.appendingPathComponent("tiny_added"), options: Self.options)
        XCTAssertEqual(tokenizer.vocabularySize, added.vocab_size)
        XCTAssertEqual(tokenizer.allSpecialIDs, added.special_ids)
        XCTAssertEqual(tokenizer.addedVocabulary, added.added_vocab)
        XCTAssertEqual(tokenizer.padTokenID, added.pad_token_id)
        assertAll(added.cases, "ids", text: \.text, expected: \.ids, actual: { tokenizer.encode($0.text) })
        assertAll(added.cases, "padded", text: \.text, expected: { $0.padded.row(pad: added.pad_token_id) },
                  actual: { try tokenizer([$0.text]).inputIDs[0] })
        assertAll(added.cases, "decode", text: \.text, expected: \.decoded, actual: { try tokenizer.decode($0.ids) })
        assertAll(added.cases, "decode skip", text: \.text, expected: \.decoded_skip,
                  actual: { try tokenizer.decode($0.ids, skipSpecialTokens: true) })
        assertAll(added.cases, "decode skip, no clean-up", text: \.text, expected: { $0.decoded_skip_no_cleanup! },
                  actual: { try tokenizer.decode($0.ids, skipSpecialTokens: true, cleanUpTokenizationSpaces: false) })
    }

    func testSplitterStripFlags() {
        // CLIP's cleaning drops whitespace anyway, so lstrip/rstrip never change ids: check the
        // pieces themselves against transformers' rule (hand-derived from PreTrainedTokenizer.tokenize).
        let splitter = AddedTokenSplitter([AddedToken(content: "[M]", lstrip: true), AddedToken(content: "<t>", rstrip: true),
                                           AddedToken(content: "<tt>")])
        let pieces = splitter.split("a \t[M]  b<t>\n c <tt><t>".codePoints)
        XCTAssertEqual(pieces, [.text("a".codePoints), .added("[M]".codePoints), .text("  b".codePoints),
                                .added("<t>".codePoints), .text("c ".codePoints), .added("<tt>".codePoints),
                                .added("<t>".codePoints)])
    }

    // MARK: - options

    func testUnicodeVersionOption() throws {
        // U+1F6DC was assigned in Unicode 15.0: Python 3.11 (14.0) drops it as unassigned.
        let text = "a \u{1F6DC} b"
        XCTAssertEqual(Self.sd1.encode(text), Self.sd1.encode("a b"))
        let current = try CLIPTokenizer(directory: Self.folders.appendingPathComponent("sd1"),
                                        options: CLIPTokenizer.Options(unicodeVersion: nil))
        let ids = current.encode(text)
        XCTAssertGreaterThan(ids.count, Self.sd1.encode("a b").count)
        XCTAssertEqual(try current.decode(ids, skipSpecialTokens: true), "a \u{1F6DC} b")
    }

    // MARK: - errors

    private func assertThrows(_ expression: @autoclosure () throws -> Any, mentioning needles: [String],
                              file: StaticString = #filePath, line: UInt = #line) {
        do {
            _ = try expression()
            XCTFail("expected an error mentioning \(needles)", file: file, line: line)
        } catch {
            for needle in needles {
                XCTAssertTrue("\(error)".contains(needle), "\"\(error)\" does not mention \(needle)", file: file, line: line)
            }
        }
    }

    private func scratchFolder(_ files: [String: String]) throws -> URL {
        let dir = FileManager.default.temporaryDirectory.appendingPathComponent("clip-tokenizer-errors-\(UUID().uuidString)")
        try FileManager.default.createDirectory(at: dir, withIntermediateDirectories: true)
        for (name, content) in files { try content.write(to: dir.appendingPathComponent(name), atomically: true, encoding: .utf8) }
        addTeardownBlock { try? FileManager.default.removeItem(at: dir) }
        return dir
    }

    func testErrorsNameTheFileAndField() throws {
        let vocab = #"{"a": 0, "b": 1, "ab</w>": 2, "a</w>": 3, "b</w>": 4, "<|startoftext|>": 5, "<|endoftext|>": 6}"#
        let merges = "#version: 0.2\na b</w>\n"
        assertThrows(try CLIPTokenizer(directory: scratchFolder([:])), mentioning: ["vocab.json", "merges.txt", "tokenizer.json"])
        assertThrows(try CLIPTokenizer(directory: scratchFolder(["vocab.json": vocab])), mentioning: ["merges.txt"])
        assertThrows(try CLIPTokenizer(directory: scratchFolder(["vocab.json": "[1, 2]", "merges.txt": merges])),
                     mentioning: ["vocab.json", "integer ids"])
        assertThrows(try CLIPTokenizer(directory: scratchFolder(["vocab.json": #"{"a": "x"}"#, "merges.txt": merges])),
                     mentioning: ["vocab.json"])
        assertThrows(try CLIPTokenizer(directory: scratchFolder(["vocab.json": vocab, "merges.txt": "#version: 0.2\na b\nab c d\n"])),
                     mentioning: ["merges.txt", "line 3", "ab c d"])
        for (field, value) in [("errors", #""strict""#), ("padding_side", #""middle""#), ("model_max_length", #""77""#),
                               ("tokenizer_class", #""BertTokenizer""#), ("bos_token", "null"),
                               ("extra_special_tokens", #"{"image_token": "<image>"}"#)] {
            let dir = try scratchFolder(["vocab.json": vocab, "merges.txt": merges, "tokenizer_config.json": "{\"\(field)\": \(value)}"])
            assertThrows(try CLIPTokenizer(directory: dir), mentioning: ["tokenizer_config.json", field])
        }
        assertThrows(try CLIPTokenizer(directory: scratchFolder(["vocab.json": vocab, "merges.txt": merges, "tokenizer_config.json": "{"])),
                     mentioning: ["tokenizer_config.json"])
        let json = #"{"model": {"type": "BPE", "vocab": {"a": 0}, "merges": [], "end_of_word_suffix": null}}"#
        assertThrows(try CLIPTokenizer(directory: scratchFolder(["tokenizer.json": json])),
                     mentioning: ["tokenizer.json", "model.end_of_word_suffix"])
        let badMerge = #"{"model": {"type": "BPE", "vocab": {"a": 0}, "merges": ["a b c"], "end_of_word_suffix": "</w>"}}"#
        assertThrows(try CLIPTokenizer(directory: scratchFolder(["tokenizer.json": badMerge])),
                     mentioning: ["tokenizer.json", "model.merges[0]"])
        // Padding to the maximum length needs one.
        let unlimited = try CLIPTokenizer(directory: scratchFolder(["vocab.json": vocab, "merges.txt": merges]))
        XCTAssertNil(unlimited.modelMaxLength)
        assertThrows(try unlimited(["ab"]), mentioning: ["maxLength", "model_max_length"])
        XCTAssertEqual(try unlimited(["ab"], maxLength: 5).inputIDs, [[5, 2, 6, 6, 6]])
        XCTAssertEqual(unlimited.encode("ab c"), [5, 2, 6, 6])  // "c" is unknown: the unk token, not dropped
    }

    func testSavedConfigWithNoLimitLoads() throws {
        // transformers saves model_max_length = int(1e30) when a tokenizer has no limit.
        let vocab = #"{"a": 0, "a</w>": 1, "<|startoftext|>": 2, "<|endoftext|>": 3}"#
        let dir = try scratchFolder(["vocab.json": vocab, "merges.txt": "#version: 0.2\n",
                                     "tokenizer_config.json": #"{"model_max_length": 1000000000000000019884624838656}"#])
        XCTAssertNil(try CLIPTokenizer(directory: dir).modelMaxLength)
    }

    // MARK: - concurrency and speed

    func testConcurrentEncodingAgreesWithSerial() {
        let tokenizer = try! CLIPTokenizer(directory: Self.folders.appendingPathComponent("sd1"), options: Self.options)
        let cases = Self.fixture.cases
        var results = [[Int]](repeating: [], count: cases.count)
        let lock = NSLock()
        DispatchQueue.concurrentPerform(iterations: cases.count) { i in
            let ids = tokenizer.encode(cases[i].text)
            lock.lock(); results[i] = ids; lock.unlock()
        }
        XCTAssertEqual(results, cases.map(\.ids))
    }
}
