import Foundation

/// The floating-point types CPU kernels are written over (Float for work, Double for gradient checks).
/// Kernels are generic over this protocol; release builds specialise them per type.
public protocol CPUFloat: BinaryFloatingPoint, SIMDScalar, Sendable, Codable where Self.RawSignificand: FixedWidthInteger {
    static var dtype: DType { get }
    static func exp(_ x: Self) -> Self
    static func log(_ x: Self) -> Self
    static func tanh(_ x: Self) -> Self
    static func erf(_ x: Self) -> Self
    static func pow(_ x: Self, _ y: Self) -> Self
    static func sin(_ x: Self) -> Self
    static func cos(_ x: Self) -> Self
}

extension Float: CPUFloat {
    public static var dtype: DType { .float32 }
    @inline(__always) public static func exp(_ x: Float) -> Float { Foundation.expf(x) }
    @inline(__always) public static func log(_ x: Float) -> Float { Foundation.logf(x) }
    @inline(__always) public static func tanh(_ x: Float) -> Float { Foundation.tanhf(x) }
    @inline(__always) public static func erf(_ x: Float) -> Float { Foundation.erff(x) }
    @inline(__always) public static func pow(_ x: Float, _ y: Float) -> Float { Foundation.powf(x, y) }
    @inline(__always) public static func sin(_ x: Float) -> Float { Foundation.sinf(x) }
    @inline(__always) public static func cos(_ x: Float) -> Float { Foundation.cosf(x) }
}

extension Double: CPUFloat {
    public static var dtype: DType { .float64 }
    @inline(__always) public static func exp(_ x: Double) -> Double { Foundation.exp(x) }
    @inline(__always) public static func log(_ x: Double) -> Double { Foundation.log(x) }
    @inline(__always) public static func tanh(_ x: Double) -> Double { Foundation.tanh(x) }
    @inline(__always) public static func erf(_ x: Double) -> Double { Foundation.erf(x) }
    @inline(__always) public static func pow(_ x: Double, _ y: Double) -> Double { Foundation.pow(x, y) }
    @inline(__always) public static func sin(_ x: Double) -> Double { Foundation.sin(x) }
    @inline(__always) public static func cos(_ x: Double) -> Double { Foundation.cos(x) }
}

/// Splits `count` items into at most `maxChunks` ranges and runs them concurrently when the work
/// is large enough to pay for a thread hop (2 cores here: measure before raising).
@inline(__always)
func parallelFor(_ count: Int, minimumPerChunk: Int = 32_768, _ body: (Range<Int>) -> Void) {
    let chunks = min(cpuWorkerCount, max(1, count / max(minimumPerChunk, 1)))
    if chunks <= 1 { body(0..<count); return }
    let per = (count + chunks - 1) / chunks
    DispatchQueue.concurrentPerform(iterations: chunks) { c in
        let start = c * per
        let end = min(count, start + per)
        if start < end { body(start..<end) }
    }
}

/// Runs `body(task)` for every task in 0..<count on up to `cpuWorkerCount` threads that pull tasks
/// from a shared counter, so uneven tasks balance and a thread the OS leaves unscheduled holds up
/// only the task it has. With one worker the tasks run in order on the calling thread.
func forEachTask(_ count: Int, _ body: (Int) -> Void) {
    forEachTask(count, scratch: 0, UInt8.self) { task, _ in body(task) }
}

/// `forEachTask`, each thread owning a scratch buffer of `scratch` elements for its tasks.
func forEachTask<T>(_ count: Int, scratch: Int, _: T.Type, _ body: (Int, UnsafeMutablePointer<T>) -> Void) {
    let workers = min(cpuWorkerCount, count)
    if workers <= 1 {
        let buffer = UnsafeMutablePointer<T>.allocate(capacity: max(scratch, 1))
        defer { buffer.deallocate() }
        for task in 0..<count { body(task, buffer) }
        return
    }
    let lock = NSLock()
    var next = 0
    DispatchQueue.concurrentPerform(iterations: workers) { _ in
        let buffer = UnsafeMutablePointer<T>.allocate(capacity: max(scratch, 1))
        defer { buffer.deallocate() }
        while true {
            lock.lock()
            let task = next
            next += 1
            lock.unlock()
            if task >= count { break }
            body(task, buffer)
        }
    }
}

let cpuWorkerCount: Int = {
    if let text = ProcessInfo.processInfo.environment["TENSORKIT_NUM_THREADS"], let n = Int(text), n > 0 { return n }
    return max(1, ProcessInfo.processInfo.activeProcessorCount)
}()
