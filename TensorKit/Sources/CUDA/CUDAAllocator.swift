import Foundation

// A caching device allocator, like PyTorch's: freed memory is kept and handed out again, so
// steady-state training does no cuMemAlloc/cuMemFree at all. Sizes are rounded to 512 bytes up to
// 1 MiB and to 2 MiB above.
//
// - Blocks of up to 1 MiB go to per-size free lists and are reused by requests of the same rounded
//   size.
// - Larger blocks are spans of segments (one raw allocation each). A request takes the front of the
//   smallest free span that holds it (best fit) and the rest stays free; a freed span merges with
//   the free spans beside it in its segment. So the training passes' batch-6 tensors reuse the
//   memory the sampling phase's batch-12 ones left, and the memory held from the device stays near
//   the peak in use: at TRL's settings on SD 1.5, 8.6 GB held for a 6.6 GB peak, where exact-size
//   reuse alone held 15.3 GB (counted on the null driver, BENCHMARKS.md).
// - When the device is out of memory, every cached small block and every wholly free segment is
//   returned to the driver and the allocation is retried once. A free span beside a live one in the
//   same segment cannot be returned (PyTorch's allocator has the same limit).

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
    /// Held from the device: `inUse` + `cached` (what a GPU monitor shows for the process, besides
    /// the CUDA context and cuBLAS's workspace), and its largest value (PyTorch's
    /// `max_memory_reserved`).
    public var reserved: Int { inUse + cached }
    public var peakReserved = 0
    /// Calls that reached the raw allocator, and calls served from the cache.
    public var rawAllocations = 0
    public var cacheHits = 0
    /// Times an out-of-memory allocation released the cache and retried.
    public var oomRetries = 0

    public var description: String {
        func mib(_ b: Int) -> String { String(format: "%.1f MiB", Double(b) / 1_048_576) }
        return "in use \(mib(inUse)), cached \(mib(cached)), peak \(mib(peakInUse)), peak held \(mib(peakReserved)), "
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
    private let splitsBlocks: Bool
    private let lock = NSLock()
    private var freeLists: [Int: [UInt64]] = [:]
    /// Blocks above `smallLimit`, live or free, by address. Each lies in a segment (a raw
    /// allocation, keyed by its address in `segments`); the span that ends where it starts, if any,
    /// is `previous`, and the one that starts where it ends is found by address.
    private struct Span { var size: Int; var segment: UInt64; var previous: UInt64?; var isFree: Bool }
    private var spans: [UInt64: Span] = [:]
    private var segments: [UInt64: Int] = [:]
    /// The free spans, ordered by (size, address): the first one at least as large as a request is
    /// its best fit.
    private var freeSpans: [(size: Int, address: UInt64)] = []
    private static let smallLimit = 1 << 20
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

    /// `splitsBlocks` false: a cached block above 1 MiB serves only requests of its own bucket size
    /// (never split, so never merged either).
    public init(raw: CUDARawAllocator, splitsBlocks: Bool = true) {
        self.raw = raw
        self.splitsBlocks = splitsBlocks
    }

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
        if let address = size > Self.smallLimit ? takeFreeSpan(size) : takeSmallBlock(size) {
            stats.cached -= size
            stats.cacheHits += 1
            return track(address, size, byteCount)
        }
        var address = raw.rawAllocate(size)
        if address == nil {
            stats.oomRetries += 1
            releaseCachedLocked()
            address = raw.rawAllocate(size)
        }
        guard let address else { return nil }
        if size > Self.smallLimit {
            segments[address] = size
            spans[address] = Span(size: size, segment: address, previous: nil, isFree: false)
        }
        stats.rawAllocations += 1
        defer { stats.peakReserved = max(stats.peakReserved, stats.reserved) }
        return track(address, size, byteCount)
    }

    private func takeSmallBlock(_ size: Int) -> UInt64? {
        guard var list = freeLists[size], let address = list.popLast() else { return nil }
        freeLists[size] = list.isEmpty ? nil : list
        return address
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
        if size > Self.smallLimit { releaseSpan(address) } else { freeLists[size, default: []].append(address) }
        if traceMinimum != nil { siteOfBlock[address] = nil }
    }

    private func freeSpanIndex(_ size: Int, _ address: UInt64) -> Int {
        var lo = 0, hi = freeSpans.count
        while lo < hi {
            let mid = (lo + hi) / 2
            let e = freeSpans[mid]
            if e.size < size || (e.size == size && e.address < address) { lo = mid + 1 } else { hi = mid }
        }
        return lo
    }

    private func insertFreeSpan(_ address: UInt64, _ size: Int) {
        freeSpans.insert((size, address), at: freeSpanIndex(size, address))
    }

    private func removeFreeSpan(_ address: UInt64, _ size: Int) {
        let i = freeSpanIndex(size, address)
        precondition(i < freeSpans.count && freeSpans[i].address == address, "CUDA allocator: free span lost")
        freeSpans.remove(at: i)
    }

    /// The front `size` bytes of the smallest free span that holds them (the rest stays free).
    private func takeFreeSpan(_ size: Int) -> UInt64? {
        let i = freeSpanIndex(size, 0)
        guard i < freeSpans.count, splitsBlocks || freeSpans[i].size == size else { return nil }
        let (spanSize, address) = freeSpans.remove(at: i)
        var span = spans[address]!
        span.isFree = false
        if spanSize > size {
            let rest = address + UInt64(size)
            let after = address + UInt64(spanSize)
            if spans[after]?.segment == span.segment { spans[after]!.previous = rest }
            spans[rest] = Span(size: spanSize - size, segment: span.segment, previous: address, isFree: true)
            insertFreeSpan(rest, spanSize - size)
            span.size = size
        }
        spans[address] = span
        return address
    }

    /// Frees a span and merges it with free neighbours in its segment.
    private func releaseSpan(_ address: UInt64) {
        var start = address
        var span = spans[address]!
        span.isFree = true
        let after = address + UInt64(span.size)
        if let next = spans[after], next.segment == span.segment, next.isFree {
            removeFreeSpan(after, next.size)
            spans[after] = nil
            span.size += next.size
        }
        if let p = span.previous, let previous = spans[p], previous.isFree {
            removeFreeSpan(p, previous.size)
            spans[start] = nil
            start = p
            span = Span(size: previous.size + span.size, segment: span.segment, previous: previous.previous, isFree: true)
        }
        let end = start + UInt64(span.size)
        if spans[end]?.segment == span.segment { spans[end]!.previous = start }
        spans[start] = span
        insertFreeSpan(start, span.size)
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
        // Whole segments only: a free span beside a live one stays (its memory cannot be returned).
        var kept: [(size: Int, address: UInt64)] = []
        for entry in freeSpans {
            if segments[entry.address] == entry.size {
                raw.rawFree(entry.address)
                segments[entry.address] = nil
                spans[entry.address] = nil
            } else {
                kept.append(entry)
                stats.cached += entry.size
            }
        }
        freeSpans = kept
    }

    public var statistics: CUDAMemoryStats {
        lock.lock(); defer { lock.unlock() }
        return stats
    }

    public func resetPeak() {
        lock.lock(); defer { lock.unlock() }
        stats.peakInUse = stats.inUse
        stats.peakRequested = stats.requestedInUse
        stats.peakReserved = stats.reserved
        if traceMinimum != nil { snapshotPeak() }
    }
}
