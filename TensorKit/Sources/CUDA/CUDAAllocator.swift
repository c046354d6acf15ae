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

/// What was live at an allocator's peak, by the call stack that allocated it (`CUDA.memoryTrace`).
public struct CUDAMemoryTrace: Sendable, CustomStringConvertible {
    /// Blocks at the peak from one call stack: their bytes (bucket sizes) and count, and the stack
    /// (`Thread.callStackSymbols` lines, innermost first, the allocator's own frames left out; on
    /// Linux a line names the binary and an offset, which `scripts/symbolize-trace.sh` turns into
    /// Swift names).
    public struct Site: Sendable {
        public var bytes: Int
        public var blocks: Int
        public var frames: [String]
    }
    /// The peak in use (bucket sizes), as `CUDAMemoryStats.peakInUse` at the time.
    public var peakBytes: Int
    /// Blocks below the trace's minimum size, not attributed.
    public var untracedBytes: Int
    /// Largest first.
    public var sites: [Site]

    public var description: String {
        func mib(_ b: Int) -> String { String(format: "%.1f MiB", Double(b) / 1_048_576) }
        var lines = ["memory trace: peak \(mib(peakBytes)); \(mib(untracedBytes)) in blocks below the trace's minimum size"]
        for site in sites {
            lines.append("  \(mib(site.bytes)) in \(site.blocks) block\(site.blocks == 1 ? "" : "s"), allocated at:")
            lines += site.frames.map { "      " + $0 }
        }
        return lines.joined(separator: "\n")
    }
}

public final class CUDACachingAllocator: @unchecked Sendable {
    private let raw: CUDARawAllocator
    private let lock = NSLock()
    private var freeLists: [Int: [UInt64]] = [:]
    private var live: [UInt64: (size: Int, requested: Int)] = [:]
    private var stats = CUDAMemoryStats()

    /// Records the call stack of every allocation of at least this many bytes and keeps, at each new
    /// peak, which stacks the live blocks came from (`trace`). nil (the default): nothing recorded.
    /// Each traced allocation costs a stack walk, so this is for finding out where memory goes, not
    /// for timed runs. `TENSORKIT_CUDA_MEMORY_TRACE=<MiB>` sets it when a device is first used.
    public var traceMinimumBytes: Int? {
        get { lock.lock(); defer { lock.unlock() }; return traceMinimum }
        set { lock.lock(); defer { lock.unlock() }; traceMinimum = newValue }
    }
    private var traceMinimum: Int?
    /// Replaces the call stack in tests.
    var traceFrames: (() -> [String])?
    private var siteOfBlock: [UInt64: Int] = [:]
    private var siteIndex: [[String]: Int] = [:]
    private var siteFrames: [[String]] = []
    /// (bucket size, site or nil when untraced) of each block live at the last peak.
    private var peakBlocks: [(size: Int, site: Int?)] = []

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
        if let minimum = traceMinimum {
            if requested >= minimum {
                siteOfBlock[address] = site(traceFrames?() ?? Array(Thread.callStackSymbols.dropFirst(3).prefix(24)))
            }
            if stats.inUse > stats.peakInUse { snapshotPeak() }
        }
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
        if traceMinimum != nil { siteOfBlock[address] = nil }
    }

    private func site(_ frames: [String]) -> Int {
        if let index = siteIndex[frames] { return index }
        siteFrames.append(frames)
        siteIndex[frames] = siteFrames.count - 1
        return siteFrames.count - 1
    }

    private func snapshotPeak() {
        peakBlocks = live.map { (address, block) in (block.size, siteOfBlock[address]) }
    }

    /// The live blocks at the last peak (since the last `resetPeak`) by call site, or nil when
    /// `traceMinimumBytes` is not set.
    public var trace: CUDAMemoryTrace? {
        lock.lock(); defer { lock.unlock() }
        guard traceMinimum != nil else { return nil }
        var bySite: [Int: (bytes: Int, blocks: Int)] = [:]
        var untraced = 0
        for block in peakBlocks {
            guard let site = block.site else { untraced += block.size; continue }
            let entry = bySite[site] ?? (0, 0)
            bySite[site] = (entry.bytes + block.size, entry.blocks + 1)
        }
        let sites = bySite.map { CUDAMemoryTrace.Site(bytes: $0.value.bytes, blocks: $0.value.blocks, frames: siteFrames[$0.key]) }
            .sorted { $0.bytes != $1.bytes ? $0.bytes > $1.bytes : $0.frames.lexicographicallyPrecedes($1.frames) }
        return CUDAMemoryTrace(peakBytes: peakBlocks.reduce(0) { $0 + $1.size }, untracedBytes: untraced, sites: sites)
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
        if traceMinimum != nil { snapshotPeak() }
    }
}
