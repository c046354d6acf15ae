import Foundation
import XCTest
@testable import RLAlgorithms

/// Rewards: JPEG sizes against ddpo-pytorch + Pillow, the aesthetic scorer against TRL's (tiny random
/// CLIP + head), closures and validation, and the HTTP client against examples/reward_server.py.
final class RewardsTests: XCTestCase {
    private static let dir = DDPOMathFixture.directory

    private func noMetadata(_ n: Int) -> [PromptMetadata] { Array(repeating: [:], count: n) }

    // MARK: JPEG

    func testJPEGRewardsMatchDDPOPytorch() throws {
        let fixture = try DDPOMathFixture.load().jpeg
        let images = try SafeTensorsFile(path: Self.dir.appendingPathComponent("jpeg_images.safetensors").path).tensors()
        XCTAssertEqual(Set(images.keys), Set(fixture.keys))
        for (name, expected) in fixture {
            let batch = images[name]!
            let b = batch.shape[0]
            let prompts = Array(repeating: "p", count: b)
            XCTAssertEqual(try JPEGIncompressibility().jpegByteCounts(batch), expected.bytes, name)
            let inc = try JPEGIncompressibility()(images: batch, prompts: prompts, metadata: noMetadata(b))
            XCTAssertEqual(inc.rewards, expected.incompressibility, name)
            XCTAssertEqual(inc.metadata, .object([:]))
            let comp = try JPEGCompressibility()(images: batch, prompts: prompts, metadata: noMetadata(b))
            XCTAssertEqual(comp.rewards, expected.compressibility, name)
            // float64 images: x·255 rounds in float64 (as torch would), which moves the exact k/510 halves of
            // "halves" but not the other images.
            if name != "halves" {
                XCTAssertEqual(try JPEGIncompressibility()(images: batch.to(.float64), prompts: prompts, metadata: noMetadata(b)).rewards,
                               expected.incompressibility, "\(name) float64")
            }
        }
    }

    func testValidationAndClosures() async throws {
        let images = Tensor.rand([2, 3, 8, 8], seed: 1)
        XCTAssertThrowsError(try JPEGCompressibility()(images: images, prompts: ["a"], metadata: noMetadata(2))) {
            XCTAssertEqual("\($0)", "reward jpeg_compressibility: invalid input: 1 prompts for 2 images")
        }
        XCTAssertThrowsError(try JPEGCompressibility()(images: Tensor.rand([2, 4, 8, 8], seed: 1), prompts: ["a", "b"], metadata: noMetadata(2))) {
            XCTAssertEqual("\($0)", "reward jpeg_compressibility: invalid input: images must be a floating-point [batch, 3, height, width] tensor, got float32 [2, 4, 8, 8]")
        }
        let mean = ClosureReward(name: "brightness", rewards: { images, prompts, metadata in
            images.mean(axes: [1, 2, 3]).toArray().enumerated().map { $0.element + Double(prompts[$0.offset].count) }
        })
        let out = try RewardFunctions.validated(mean, images: images, prompts: ["ab", "c"], metadata: noMetadata(2))
        let pixels = images.toArray()
        let expected = [pixels[0..<192].reduce(0, +) / 192 + 2, pixels[192..<384].reduce(0, +) / 192 + 1]
        assertRelClose(out.rewards, expected, rtol: 1e-6, "closure")
        let later = try await mean.evaluate(images: images, prompts: ["ab", "c"], metadata: noMetadata(2))
        XCTAssertEqual(later.rewards, out.rewards)

        let short = ClosureReward(name: "short", rewards: { _, _, _ in [1] })
        XCTAssertThrowsError(try RewardFunctions.validated(short, images: images, prompts: ["a", "b"], metadata: noMetadata(2))) {
            XCTAssertEqual("\($0)", "reward short: invalid output: expected 2 rewards (one per image), got 1")
        }
        let nan = ClosureReward(name: "nan") { _, _, _ in RewardOutput(rewards: [1, .nan], metadata: ["why": "test"]) }
        do {
            _ = try await nan.evaluate(images: images, prompts: ["a", "b"], metadata: noMetadata(2))
            XCTFail("NaN reward accepted")
        } catch {
            XCTAssertEqual("\(error)", "reward nan: invalid output: reward 1 is nan (rewards must be finite)")
        }
    }

    // MARK: aesthetic

    func testAestheticScorerMatchesTRL() throws {
        let fixture = try DDPOMathFixture.load().aesthetic
        let scorer = try AestheticScorer.load(clipDirectory: Self.dir.appendingPathComponent("aesthetic_clip"),
                                              headFile: Self.dir.appendingPathComponent("aesthetic_head.safetensors"))
        XCTAssertEqual(scorer.processor.cropHeight, 32)
        let images = try SafeTensorsFile(path: Self.dir.appendingPathComponent("aesthetic_images.safetensors").path).tensor("images")
        let embeds = try scorer.normalizedEmbeddings(images)
        assertRelClose(embeds.toArray(), fixture.embeds_normalized.flatMap { $0 }, rtol: 1e-4, atol: 1e-5, "normalised embeddings")
        let out = try scorer(images: images, prompts: ["a", "b", "c"], metadata: noMetadata(3))
        assertRelClose(out.rewards, fixture.scores, rtol: 1e-4, "aesthetic scores")
        XCTAssertFalse(embeds.requiresGrad)
    }

    func testAestheticHeadLayoutIsChecked() throws {
        let head = AestheticHead(widths: [24, 64, 16, 8, 4, 1])
        XCTAssertEqual(head.stateKeys().sorted(), ["layers.0.bias", "layers.0.weight", "layers.2.bias", "layers.2.weight",
                                                   "layers.4.bias", "layers.4.weight", "layers.6.bias", "layers.6.weight",
                                                   "layers.7.bias", "layers.7.weight"])
        var weights = head.stateDict()
        weights.removeValue(forKey: "layers.7.bias")
        weights["layers.8.weight"] = Tensor.zeros([1, 1])
        let path = FileManager.default.temporaryDirectory.appendingPathComponent("head-\(UUID().uuidString).safetensors").path
        defer { try? FileManager.default.removeItem(atPath: path) }
        try saveSafeTensors(weights, to: path)
        XCTAssertThrowsError(try AestheticHead.load(file: URL(fileURLWithPath: path))) {
            XCTAssertEqual("\($0)", "\(path): not an aesthetic head with TRL's layout (layers.{0,2,4,6,7}.{weight,bias}): missing [\"layers.7.bias\"], unexpected [\"layers.8.weight\"]")
        }
    }

    // MARK: HTTP

    private static let repoRoot = URL(fileURLWithPath: #filePath).deletingLastPathComponent()
        .deletingLastPathComponent().deletingLastPathComponent()

    /// Starts `python3 script 0` and returns the process and the port it printed ("... http://127.0.0.1:PORT/").
    private func startServer(_ script: URL) throws -> (Process, Int) {
        let path = ProcessInfo.processInfo.environment["PATH"] ?? "/usr/bin:/bin"
        guard path.split(separator: ":").contains(where: { FileManager.default.isExecutableFile(atPath: "\($0)/python3") }) else {
            throw XCTSkip("python3 is not on PATH: the HTTP reward tests need it to run examples/reward_server.py")
        }
        let process = Process()
        process.executableURL = URL(fileURLWithPath: "/usr/bin/env")
        process.arguments = ["python3", script.path, "0"]
        let out = Pipe()
        process.standardOutput = out
        process.standardError = FileHandle.nullDevice
        try process.run()
        addTeardownBlock { if process.isRunning { process.terminate(); process.waitUntilExit() } }
        var text = ""
        while !text.contains("\n") {
            let chunk = out.fileHandleForReading.availableData
            if chunk.isEmpty { break }
            text += String(decoding: chunk, as: UTF8.self)
        }
        guard let range = text.range(of: #"127\.0\.0\.1:(\d+)"#, options: .regularExpression),
              let port = Int(text[range].split(separator: ":").last!) else {
            throw XCTSkip("could not start \(script.lastPathComponent) with python3 (output: \(text))")
        }
        return (process, port)
    }

    func testHTTPRewardAgainstTheExampleServer() throws {
        let (_, port) = try startServer(Self.repoRoot.appendingPathComponent("examples/reward_server.py"))
        let url = URL(string: "http://127.0.0.1:\(port)/")!
        let images = Tensor.rand([3, 3, 12, 10], seed: 5)
        let prompts = ["a cat", "an ant playing chess", "a café"]
        let metadata: [PromptMetadata] = [[:], ["questions": ["What animal?"], "answers": ["ant"]], ["weight": 0.5]]
        // The server's formula, computed here: len(png) / 1000 + len(prompt) / 100 (Python counts code points).
        let pngSizes = try RewardFunctions.rgbImages(images).map { try $0.encodePNG().count }
        let expected = zip(pngSizes, prompts).map { Double($0) / 1000 + Double($1.unicodeScalars.count) / 100 }
        for batchSize in [nil, 2] as [Int?] {
            let reward = HTTPReward(url: url, timeout: 10, maxRetries: 0, batchSize: batchSize)
            let out = try RewardFunctions.validated(reward, images: images, prompts: prompts, metadata: metadata)
            XCTAssertEqual(out.rewards, expected)
            let sizes: JSONValue = .array(pngSizes.map { .number(Double($0)) })
            if batchSize == nil {
                XCTAssertEqual(out.metadata, ["png_bytes": sizes])
            } else {
                XCTAssertEqual(out.metadata, [["png_bytes": .array(Array(sizes.arrayValue![0..<2]))],
                                              ["png_bytes": .array([sizes[2]!])]])
            }
        }
    }

    func testHTTPRewardErrorsAndRetries() throws {
        let script = FileManager.default.temporaryDirectory.appendingPathComponent("faulty-\(UUID().uuidString).py")
        try Data(Self.faultyServer.utf8).write(to: script)
        defer { try? FileManager.default.removeItem(at: script) }
        let (_, port) = try startServer(script)
        let base = "http://127.0.0.1:\(port)"
        let images = Tensor.rand([3, 3, 4, 4], seed: 2)
        let prompts = ["a", "b", "c"]
        func call(_ path: String, retries: Int = 0) throws -> RewardOutput {
            try HTTPReward(url: URL(string: base + path)!, timeout: 10, maxRetries: retries, retryDelay: 0.01)(
                images: images, prompts: prompts, metadata: noMetadata(3))
        }
        func expectError(_ path: String, retries: Int = 0, _ message: String, line: UInt = #line) {
            XCTAssertThrowsError(try call(path, retries: retries), line: line) {
                XCTAssertEqual("\($0)", "reward server \(base)\(path): \(message)", line: line)
            }
        }
        // Two 503s, then success: retried.
        XCTAssertEqual(try call("/flaky", retries: 2).rewards, [0, 1, 2])
        expectError("/down", retries: 2, "HTTP 500 after 3 attempts: unexpected status; body: model crashed")
        expectError("/notfound", retries: 3, "HTTP 404 after 1 attempt: unexpected status; body: no such endpoint")
        expectError("/short", "HTTP 200 after 1 attempt: expected 3 rewards (one per image sent), got 2")
        expectError("/text", "HTTP 200 after 1 attempt: rewards[0] is not a number: \"high\"")
        expectError("/nan", "HTTP 200 after 1 attempt: the response is not JSON (it holds NaN or Infinity: rewards must be finite numbers): {\"rewards\": [NaN, 1.0, 1.0]}")
        expectError("/missing", "HTTP 200 after 1 attempt: the response has no \"rewards\" field (keys: [\"scores\"])")
        // Nothing listening: no response, retried, then an error naming the URL.
        let closed = URL(string: "http://127.0.0.1:1/")!
        XCTAssertThrowsError(try HTTPReward(url: closed, timeout: 5, maxRetries: 1, retryDelay: 0.01)(
            images: images, prompts: prompts, metadata: noMetadata(3))) {
            XCTAssertTrue("\($0)".hasPrefix("reward server http://127.0.0.1:1/: no response after 2 attempts: request failed:"), "\($0)")
        }
    }

    /// A test server that misbehaves by path.
    private static let faultyServer = #"""
    import json, sys
    from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
    calls = {}
    class H(BaseHTTPRequestHandler):
        def log_message(self, *args):
            pass
        def do_POST(self):
            n = len(json.loads(self.rfile.read(int(self.headers["Content-Length"])))["images"])
            calls[self.path] = calls.get(self.path, 0) + 1
            status, body = 200, {"rewards": [float(i) for i in range(n)]}
            if self.path == "/flaky" and calls[self.path] <= 2: status, body = 503, "warming up"
            elif self.path == "/down": status, body = 500, "model crashed"
            elif self.path == "/notfound": status, body = 404, "no such endpoint"
            elif self.path == "/short": body = {"rewards": [1.0] * (n - 1)}
            elif self.path == "/text": body = {"rewards": ["high"] + [1.0] * (n - 1)}
            elif self.path == "/nan": body = '{"rewards": [NaN' + ', 1.0' * (n - 1) + ']}'
            elif self.path == "/missing": body = {"scores": [1.0] * n}
            data = (body if isinstance(body, str) else json.dumps(body)).encode()
            self.send_response(status)
            self.send_header("Content-Length", str(len(data)))
            self.end_headers()
            self.wfile.write(data)
    server = ThreadingHTTPServer(("127.0.0.1", int(sys.argv[1])), H)
    print(f"listening on http://127.0.0.1:{server.server_port}/", flush=True)
    server.serve_forever()
    """#
}
