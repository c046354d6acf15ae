import Foundation
#if canImport(FoundationNetworking)
import FoundationNetworking
#endif

// A reward computed by another process over HTTP (a VLM, a big scorer on another GPU), as ddpo-pytorch's
// LLaVA rewards do. Protocol (docs/REWARD_SERVER.md): one POST per batch of up to `batchSize` images,
//     request  {"images": ["<base64 PNG>", ...], "prompts": ["...", ...], "metadata": [{...}, ...]}
//     response {"rewards": [1.5, ...], "metadata": <any JSON, optional>}
// with Content-Type application/json. Example server: examples/reward_server.py.
//
//     let reward = HTTPReward(url: URL(string: "http://127.0.0.1:8085/score")!, timeout: 120, maxRetries: 3)
//     let out = try reward(images: images, prompts: prompts, metadata: metadata)
//
// Connection errors, timeouts, HTTP 429 and 5xx are retried (after `retryDelay`, doubling each time);
// other HTTP errors and malformed responses are not (the server would answer the same). Every error names
// the URL, the status code and what was wrong with the response.

public struct HTTPReward: RewardFunction {
    public var name: String { "http(\(url.absoluteString))" }
    public var url: URL
    /// Seconds to wait for each request's response.
    public var timeout: TimeInterval
    /// Retries after the first attempt of each request.
    public var maxRetries: Int
    /// Delay before the first retry; doubled before each further one.
    public var retryDelay: TimeInterval
    /// Images per request (nil: the whole batch in one request). The rewards are concatenated and the
    /// metadata of several requests is returned as an array.
    public var batchSize: Int?
    /// Extra request headers (e.g. an authorization token).
    public var headers: [String: String]

    public init(url: URL, timeout: TimeInterval = 120, maxRetries: Int = 3, retryDelay: TimeInterval = 1,
                batchSize: Int? = nil, headers: [String: String] = [:]) {
        precondition(batchSize.map { $0 > 0 } ?? true, "HTTPReward: batchSize must be positive")
        self.url = url
        self.timeout = timeout
        self.maxRetries = max(0, maxRetries)
        self.retryDelay = retryDelay
        self.batchSize = batchSize
        self.headers = headers
    }

    public func callAsFunction(images: Tensor, prompts: [String], metadata: [PromptMetadata]) throws -> RewardOutput {
        let b = try RewardFunctions.checkInputs(name, images: images, prompts: prompts, metadata: metadata)
        let pngs: [String]
        do {
            pngs = try RewardFunctions.rgbImages(images).map { Data(try $0.encodePNG()).base64EncodedString() }
        } catch {
            throw RewardError.invalidInput(reward: name, message: "cannot encode the images as PNG: \(error)")
        }
        let size = batchSize ?? max(b, 1)
        var rewards: [Double] = [], metas: [JSONValue] = []
        for start in stride(from: 0, to: b, by: size) {
            let range = start..<min(start + size, b)
            let body = JSONValue.object([
                "images": .array(range.map { .string(pngs[$0]) }),
                "prompts": .array(range.map { .string(prompts[$0]) }),
                "metadata": .array(range.map { .object(metadata[$0]) }),
            ])
            let (r, m) = try post(body, expecting: range.count)
            rewards += r
            metas.append(m)
        }
        return RewardOutput(rewards: rewards, metadata: metas.count == 1 ? metas[0] : .array(metas))
    }

    /// One request with retries; returns the validated rewards and metadata.
    func post(_ body: JSONValue, expecting count: Int) throws -> ([Double], JSONValue) {
        var request = URLRequest(url: url, cachePolicy: .reloadIgnoringLocalCacheData, timeoutInterval: timeout)
        request.httpMethod = "POST"
        request.setValue("application/json", forHTTPHeaderField: "Content-Type")
        request.setValue("application/json", forHTTPHeaderField: "Accept")
        for (k, v) in headers { request.setValue(v, forHTTPHeaderField: k) }
        do { request.httpBody = try JSONEncoder().encode(body) } catch {
            throw RewardError.invalidInput(reward: name, message: "prompt metadata is not valid JSON (non-finite number?): \(error)")
        }
        var attempt = 0
        var delay = retryDelay
        while true {
            attempt += 1
            let (data, response, error) = Self.send(request, timeout: timeout)
            let status = (response as? HTTPURLResponse)?.statusCode
            let retryable: Bool
            let message: String
            if let error {
                retryable = true
                message = "request failed: \(error.localizedDescription)"
            } else if let status, status != 200 {
                retryable = status == 429 || (500...599).contains(status)
                message = "unexpected status; body: \(Self.snippet(data))"
            } else if status == nil {
                retryable = true
                message = "no HTTP response"
            } else {
                return try decode(data ?? Data(), expecting: count, status: status!, attempts: attempt)
            }
            if !retryable || attempt > maxRetries {
                throw RewardError.server(url: url.absoluteString, status: status, attempts: attempt, message: message)
            }
            if delay > 0 { Thread.sleep(forTimeInterval: delay) }
            delay *= 2
        }
    }

    /// Parses and checks a 200 response body.
    func decode(_ data: Data, expecting count: Int, status: Int, attempts: Int) throws -> ([Double], JSONValue) {
        func fail(_ message: String) -> RewardError {
            RewardError.server(url: url.absoluteString, status: status, attempts: attempts, message: message)
        }
        let json: JSONValue
        do { json = try JSONValue(parsing: data) } catch {
            let text = String(decoding: data, as: UTF8.self)
            let nonFinite = ["NaN", "Infinity"].contains { text.contains($0) }
            throw fail("the response is not JSON" + (nonFinite ? " (it holds NaN or Infinity: rewards must be finite numbers)" : "")
                       + ": \(Self.snippet(data))")
        }
        guard let object = json.objectValue else { throw fail("the response must be a JSON object, got \(Self.snippet(data))") }
        guard let list = object["rewards"] else { throw fail("the response has no \"rewards\" field (keys: \(object.keys.sorted()))") }
        guard let values = list.arrayValue else { throw fail("\"rewards\" must be an array of numbers, got \(list.jsonString)") }
        guard values.count == count else {
            throw fail("expected \(count) rewards (one per image sent), got \(values.count)")
        }
        var rewards: [Double] = []
        for (i, v) in values.enumerated() {
            guard let d = v.doubleValue else { throw fail("rewards[\(i)] is not a number: \(v.jsonString)") }
            guard d.isFinite else { throw fail("rewards[\(i)] is \(d) (rewards must be finite)") }
            rewards.append(d)
        }
        return (rewards, object["metadata"] ?? .object([:]))
    }

    static func snippet(_ data: Data?) -> String {
        guard let data, !data.isEmpty else { return "(empty)" }
        let text = String(decoding: data.prefix(300), as: UTF8.self)
        return data.count > 300 ? text + "…" : text
    }

    /// A blocking request on an ephemeral session.
    static func send(_ request: URLRequest, timeout: TimeInterval) -> (Data?, URLResponse?, Error?) {
        let config = URLSessionConfiguration.ephemeral
        config.timeoutIntervalForRequest = timeout
        config.timeoutIntervalForResource = timeout
        let session = URLSession(configuration: config)
        defer { session.finishTasksAndInvalidate() }
        let box = ResultBox()
        let done = DispatchSemaphore(value: 0)
        let task = session.dataTask(with: request) { data, response, error in
            box.set(data, response, error)
            done.signal()
        }
        task.resume()
        done.wait()
        return box.get()
    }
}

/// Carries a URLSession completion to the waiting thread.
private final class ResultBox: @unchecked Sendable {
    private let lock = NSLock()
    private var value: (Data?, URLResponse?, Error?) = (nil, nil, nil)
    func set(_ d: Data?, _ r: URLResponse?, _ e: Error?) { lock.lock(); value = (d, r, e); lock.unlock() }
    func get() -> (Data?, URLResponse?, Error?) { lock.lock(); defer { lock.unlock() }; return value }
}
