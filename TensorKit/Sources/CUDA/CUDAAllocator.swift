import Foundation

// A caching device allocator, like PyTorch's: freed blocks go to per-size free lists and are
// reused by later allocations of the same rounded size, so steady-state training does no
// cuMemAlloc/cuMemFree at all. Sizes are rounded to 512 bytes up to 1 MiB and to 2 MiB above, which
// bounds the number of distinct lists. When the device is out of memory, every cached block is
// returned to the driver and the allocation is retried once.
//
// All work happens on the device's single stream, so a block freed by the host (its tensor died)
// can be handed out again at once: kernels using it were queued earlier on the same stream.

/// The raw device allocator the cache sits on (the CUDA driver, or a fake in tests).
public protocol CUDARawAllocator: AnyObject {
    /// A device address of at least `byteCount` bytes, or nil when the device is out of memory.
    func rawAllocate(_ byteCount: Int) -> UInt64?
    func rawFree(_ address: UInt64)
}

/// Memory statistics of one device's caching allocator (bytes).
public struct CUDAMemoryStats: Sendable, CustomStringConvertible {
    /// Held by live tensors (rounded sizes).
    public var inUse = 0
    /// Free blocks kept for reuse.
    public var cached = 0
    /// Largest `inUse` seen.
    public var peakInUse = 0
    /// Bytes the live tensors asked for (before rounding to buckets), and the largest value seen:
    /// a sum that scales exactly with tensor sizes, which memory estimates extrapolate from.
    public var requestedInUse = 0
    public var peakRequested = 0
    /// Calls that reached the raw allocator, and calls served from the cache.
    public var rawAllocations = 0
    public var cacheHits = 0
    /// Times an out-of-memory allocation released the cache and retried.
    public var oomRetries = 0

    public var description: String {
        func mib(_ b: Int) -> String { String(format: "%.1f MiB", Double(b) / 1_048_576) }
        return "in use \(mib(inUse)), cached \(mib(cached)), peak \(mib(peakInUse)), "
            + "raw allocations \(rawAllocations), cache hits \(cacheHits), OOM retries \(oomRetries)"
    }
}

public final class CUDACachingAllocator: @unchecked Sendable {
    private let raw: CUDARawAllocator
    private let lock = NSLock()
    private var freeLists: [Int: [UInt64]] = [:]
    private var live: [UInt64: (size: Int, requested: Int)] = [:]
    private var stats = CUDAMemoryStats()

    public init(raw: CUDARawAllocator) { self.raw = raw }

    /// The bucket size for a request: 512-byte multiples up to 1 MiB, 2 MiB multiples above.
    public static func roundedSize(_ byteCount: Int) -> Int {
        let n = max(byteCount, 1)
        if n <= 1 << 20 { return (n + 511) & ~511 }
        let big = 2 << 20
        return (n + big - 1) / big * big
    }

    /// A block of at least `byteCount` bytes, or nil when the device stays out of memory after the
    /// cache was released.
    public func allocate(_ byteCount: Int) -> UInt64? {
        let size = CUDACachingAllocator.roundedSize(byteCount)
        lock.lock(); defer { lock.unlock() }
        if var list = freeLists[size], let address = list.popLast() {
            freeLists[size] = list.isEmpty ? nil : list
            stats.cached -= size
            stats.cacheHits += 1
            return track(address, size, byteCount)
        }
        if let address = raw.rawAllocate(size) { stats.rawAllocations += 1; return track(address, size, byteCount) }
        stats.oomRetries += 1
        releaseCachedLocked()
        if let address = raw.rawAllocate(size) { stats.rawAllocations += 1; return track(address, size, byteCount) }
        return nil
    }

    private func track(_ address: UInt64, _ size: Int, _ requested: Int) -> UInt64 {
        live[address] = (size, requested)
        stats.inUse += size
        stats.peakInUse = max(stats.peakInUse, stats.inUse)
        stats.requestedInUse += requested
        stats.peakRequested = max(stats.peakRequested, stats.requestedInUse)
        return address
    }

    /// Returns a block to its free list.
    public func free(_ address: UInt64) {
        lock.lock(); defer { lock.unlock() }
        guard let (size, requested) = live.removeValue(forKey: address) else {
            preconditionFailure("CUDA allocator: freeing unknown address 0x\(String(address, radix: 16))")
        }
        stats.inUse -= size
        stats.requestedInUse -= requested
        stats.cached += size
        freeLists[size, default: []].append(address)
    }

    /// Gives every cached block back to the raw allocator.
    public func releaseCached() {
        lock.lock(); defer { lock.unlock() }
        releaseCachedLocked()
    }

    private func releaseCachedLocked() {
        for (_, list) in freeLists { for address in list { raw.rawFree(address) } }
        freeLists.removeAll()
        stats.cached = 0
    }

    public var statistics: CUDAMemoryStats {
        lock.lock(); defer { lock.unlock() }
        return stats
    }

    public func resetPeak() {
        lock.lock(); defer { lock.unlock() }
        stats.peakInUse = stats.inUse
        stats.peakRequested = stats.requestedInUse
    }
}
