import XCTest
@testable import TensorKit

/// Host-side CUDA logic that needs no GPU: library search order, the missing-library message,
/// the caching allocator (against a fake device), geometry merging, and op tests that skip
/// visibly when no CUDA device is present.
final class CUDALoaderTests: XCTestCase {
    private func search(_ env: [String: String], dirs: [String: [String]] = [:]) -> CUDALibrarySearch {
        CUDALibrarySearch(environment: env, listDirectory: { dirs[$0] })
    }

    func testNVRTCSearchOrder() {
        let s = search(["TENSORKIT_NVRTC_PATH": "/override", "CUDA_HOME": "/cuda-home", "LD_LIBRARY_PATH": "/ld1:/ld2",
                        "VIRTUAL_ENV": "/venv", "HOME": "/home/u"],
                       dirs: ["/venv/lib": ["python3.11"]])
        let c = s.candidates(for: .nvrtc)
        func index(_ p: String) -> Int { c.firstIndex(of: p) ?? .max }
        XCTAssertEqual(c.first, "/override/libnvrtc.so.13")
        XCTAssertLessThan(index("/override/libnvrtc.so.12"), index("/cuda-home/lib64/libnvrtc.so.13"))
        XCTAssertLessThan(index("/cuda-home/lib64/libnvrtc.so.13"), index("/usr/local/cuda/lib64/libnvrtc.so.13"))
        XCTAssertLessThan(index("/usr/local/cuda/lib64/libnvrtc.so.13"), index("/ld1/libnvrtc.so.13"))
        XCTAssertLessThan(index("/ld2/libnvrtc.so.13"), index("/venv/lib/python3.11/site-packages/nvidia/cu13/lib/libnvrtc.so.13"))
        XCTAssertLessThan(index("/venv/lib/python3.11/site-packages/nvidia/cu13/lib/libnvrtc.so.13"),
                          index("/venv/lib/python3.11/site-packages/nvidia/cuda_nvrtc/lib/libnvrtc.so.12"))
        XCTAssertEqual(c.last, "libnvrtc.so")  // the dynamic loader's own search comes last
        XCTAssertTrue(c.contains("libnvrtc.so.13"))
    }

    func testCUBLASWheelDirectoriesAndExplicitFile() {
        let s = search(["TENSORKIT_CUBLAS_PATH": "/x/libcublas.so.12", "PYTHONPATH": "/site"])
        let c = s.candidates(for: .cublas)
        XCTAssertEqual(c.first, "/x/libcublas.so.12")
        XCTAssertTrue(c.contains("/site/nvidia/cublas/lib/libcublas.so.12"))
        XCTAssertTrue(c.contains("/site/nvidia/cu13/lib/libcublas.so.13"))
        XCTAssertTrue(s.candidates(for: .cublasLt).contains("/site/nvidia/cublas/lib/libcublasLt.so.12"))
    }

    func testDriverIsSearchedByNameFirst() {
        let c = search([:]).candidates(for: .driver)
        XCTAssertEqual(c.first, "libcuda.so.1")
        XCTAssertTrue(c.contains("/usr/lib/x86_64-linux-gnu/libcuda.so.1"))
        XCTAssertFalse(c.contains { $0.contains("site-packages") })
    }

    func testMissingLibraryMessageListsPathsLookedAt() {
        let error = CUDAError.libraryNotFound(.nvrtc, ["/a/libnvrtc.so.13", "libnvrtc.so"], nil)
        XCTAssertTrue(error.description.hasPrefix("NVRTC not found (looked in: /a, the dynamic loader's search path for libnvrtc.so.13"),
                      error.description)
        if let message = CUDA.missingLibrariesMessage {
            // No GPU stack on this machine: the message names each missing piece and where it looked.
            XCTAssertTrue(message.contains("looked in:"), message)
            XCTAssertFalse(CUDA.isAvailable)
            print("CUDA unavailable here (expected without a GPU):\n\(message)")
        }
    }

    func testUnavailableDeviceHasNoBackend() throws {
        if CUDA.isAvailable { throw XCTSkip("a CUDA device is present") }
        XCTAssertNil(BackendRegistry.backend(for: .cuda(0)))
        XCTAssertNotNil(CUDA.unavailableReason(0))
    }

    // MARK: caching allocator

    final class FakeDevice: CUDARawAllocator {
        var capacity: Int
        var used = 0
        var next: UInt64 = 0x1000
        var sizes: [UInt64: Int] = [:]
        var frees = 0
        init(capacity: Int) { self.capacity = capacity }
        /// Consecutive allocations are adjacent, so spans must not merge across them.
        func rawAllocate(_ n: Int) -> UInt64? {
            if used + n > capacity { return nil }
            let address = next
            used += n; next += UInt64(n); sizes[address] = n
            return address
        }
        func rawFree(_ a: UInt64) { used -= sizes.removeValue(forKey: a)!; frees += 1 }
    }

    func testAllocatorRoundsReusesAndReportsStats() {
        XCTAssertEqual(CUDACachingAllocator.roundedSize(0), 512)
        XCTAssertEqual(CUDACachingAllocator.roundedSize(513), 1024)
        XCTAssertEqual(CUDACachingAllocator.roundedSize(1 << 20), 1 << 20)
        XCTAssertEqual(CUDACachingAllocator.roundedSize((1 << 20) + 1), 2 << 20)
        XCTAssertEqual(CUDACachingAllocator.roundedSize(5 << 20), 6 << 20)
        let fake = FakeDevice(capacity: 64 << 20)
        let alloc = CUDACachingAllocator(raw: fake)
        let a = alloc.allocate(1000)!
        alloc.free(a)
        let b = alloc.allocate(700)!  // same 1024-byte bucket: reused
        XCTAssertEqual(a, b)
        var s = alloc.statistics
        XCTAssertEqual(s.rawAllocations, 1)
        XCTAssertEqual(s.cacheHits, 1)
        XCTAssertEqual(s.inUse, 1024)
        XCTAssertEqual(s.cached, 0)
        let c = alloc.allocate(3 << 20)!
        alloc.free(c)
        s = alloc.statistics
        XCTAssertEqual(s.cached, 4 << 20)
        XCTAssertEqual(s.peakInUse, 1024 + (4 << 20))
        alloc.free(b)
        alloc.releaseCached()
        XCTAssertEqual(alloc.statistics.cached, 0)
        XCTAssertEqual(fake.used, 0)
    }

    /// Requested bytes are the sizes asked for, not the buckets: 1000 (bucket 1024) and 3 MiB + 1
    /// (bucket 4 MiB) request 3 146 729 bytes; the peak survives a free and restarts at a reset.
    func testAllocatorCountsRequestedBytesBesideBuckets() {
        let alloc = CUDACachingAllocator(raw: FakeDevice(capacity: 64 << 20))
        let a = alloc.allocate(1000)!
        let b = alloc.allocate((3 << 20) + 1)!
        var s = alloc.statistics
        XCTAssertEqual(s.inUse, 1024 + (4 << 20))
        XCTAssertEqual(s.requestedInUse, 3_146_729)
        XCTAssertEqual(s.peakRequested, 3_146_729)
        alloc.free(b)
        s = alloc.statistics
        XCTAssertEqual(s.requestedInUse, 1000)
        XCTAssertEqual(s.peakRequested, 3_146_729)
        let c = alloc.allocate(3 << 20)!          // the cached 4 MiB block, a different request
        XCTAssertEqual(c, b)
        XCTAssertEqual(alloc.statistics.requestedInUse, 1000 + 3_145_728)
        alloc.free(c)
        alloc.resetPeak()
        XCTAssertEqual(alloc.statistics.peakRequested, 1000)
        alloc.free(a)
        XCTAssertEqual(alloc.statistics.requestedInUse, 0)
    }

    /// The trace attributes the blocks live at the peak to the call stacks that made them (bucket
    /// sizes: 2 MiB → 2 MiB, 5 MiB → 6 MiB), counts blocks below its minimum apart (1000 → 1024
    /// bytes), ignores what is allocated below the peak, and starts again at a reset. The stacks are
    /// given by the test here; the next test checks the real ones.
    func testAllocatorTraceAttributesThePeakToCallSites() {
        let alloc = CUDACachingAllocator(raw: FakeDevice(capacity: 64 << 20))
        var stack = ["here"]
        alloc.traceFrames = { stack }
        _ = alloc.allocate(4096)
        XCTAssertNil(alloc.trace)                               // off by default
        alloc.traceMinimumBytes = 1 << 20
        _ = alloc.allocate(2 << 20)
        _ = alloc.allocate(2 << 20)
        stack = ["there", "caller"]
        let big = alloc.allocate(5 << 20)!
        _ = alloc.allocate(1000)
        alloc.free(big)
        stack = ["elsewhere"]
        _ = alloc.allocate(1 << 20)                             // below the peak: not in the trace
        guard let trace = alloc.trace else { return XCTFail("no trace") }
        XCTAssertEqual(trace.peakBytes, 4096 + (4 << 20) + (6 << 20) + 1024)
        XCTAssertEqual(trace.untracedBytes, 4096 + 1024)
        XCTAssertEqual(trace.sites.map(\.bytes), [6 << 20, 4 << 20])
        XCTAssertEqual(trace.sites.map(\.blocks), [1, 2])
        XCTAssertEqual(trace.sites.map(\.frames), [["there", "caller"], ["here"]])
        alloc.resetPeak()
        let after = alloc.trace!
        XCTAssertEqual(after.peakBytes, 4096 + (4 << 20) + 1024 + (1 << 20))
        XCTAssertEqual(after.sites.map(\.frames), [["here"], ["elsewhere"]])
    }

    @inline(never) private func allocateHere(_ alloc: CUDACachingAllocator) -> UInt64 { alloc.allocate(2 << 20)! }
    @inline(never) private func allocateThere(_ alloc: CUDACachingAllocator) -> UInt64 { alloc.allocate(4 << 20)! }

    /// Without a test's stacks the sites are the real call stacks: two callers, two sites.
    func testAllocatorTraceRecordsCallStacks() {
        let alloc = CUDACachingAllocator(raw: FakeDevice(capacity: 64 << 20))
        alloc.traceMinimumBytes = 0
        _ = allocateHere(alloc)
        _ = allocateThere(alloc)
        let sites = alloc.trace!.sites
        XCTAssertEqual(sites.map(\.bytes), [4 << 20, 2 << 20])
        XCTAssertTrue(sites.allSatisfy { !$0.frames.isEmpty })
        XCTAssertNotEqual(sites[0].frames, sites[1].frames)
    }

    func testAllocatorReleasesCacheAndRetriesOnOOM() {
        let fake = FakeDevice(capacity: 8 << 20)
        let alloc = CUDACachingAllocator(raw: fake)
        let a = alloc.allocate(6 << 20)!
        let small = alloc.allocate(4096)!
        alloc.free(a)                                   // cached, still held from the device
        alloc.free(small)
        XCTAssertNotNil(alloc.allocate(8 << 20))        // no cached span holds it, nor the device beside them
        XCTAssertEqual(alloc.statistics.oomRetries, 1)  // so both were released, and the retry fits
        XCTAssertEqual(fake.frees, 2)
        XCTAssertNil(alloc.allocate(16 << 20))          // never fits
    }

    /// Blocks above 1 MiB: a request takes the front of the smallest cached span that holds it, the
    /// rest stays cached, and freed spans merge back into whole segments (which alone go back to the
    /// device). Sizes here are whole 2 MiB buckets, so the addresses follow by hand.
    func testAllocatorSplitsAndMergesLargeSpans() {
        let fake = FakeDevice(capacity: 64 << 20)
        let alloc = CUDACachingAllocator(raw: fake)
        let a = alloc.allocate(6 << 20)!
        let b = alloc.allocate(10 << 20)!               // the fake's next segment, adjacent to a's
        XCTAssertEqual(b, a + (6 << 20))
        alloc.free(b)
        alloc.free(a)
        let x = alloc.allocate(4 << 20)!                // the smaller span that holds it: a's
        XCTAssertEqual(x, a)
        let y = alloc.allocate(2 << 20)!                // exactly what is left of a's
        XCTAssertEqual(y, a + (4 << 20))
        let z = alloc.allocate(8 << 20)!                // the front of b's
        XCTAssertEqual(z, b)
        var s = alloc.statistics
        XCTAssertEqual(s.rawAllocations, 2)
        XCTAssertEqual(s.cacheHits, 3)
        XCTAssertEqual(s.inUse, 14 << 20)
        XCTAssertEqual(s.cached, 2 << 20)
        XCTAssertEqual(s.reserved, fake.used)
        alloc.free(x)
        alloc.releaseCached()                           // x's span lies beside live y: nothing returned
        XCTAssertEqual(fake.frees, 0)
        XCTAssertEqual(alloc.statistics.cached, 6 << 20)
        alloc.free(y)                                   // x + y merge into a's whole segment
        let w = alloc.allocate(6 << 20)!
        XCTAssertEqual(w, a)
        alloc.free(w)
        alloc.free(z)                                   // z + b's rest: b's whole segment, not a's too
        s = alloc.statistics
        XCTAssertEqual(s.inUse, 0)
        XCTAssertEqual(s.cached, 16 << 20)
        XCTAssertEqual(s.rawAllocations, 2)
        alloc.releaseCached()
        XCTAssertEqual(fake.frees, 2)
        XCTAssertEqual(fake.used, 0)
        XCTAssertEqual(alloc.statistics.cached, 0)
    }

    /// With splitting off (TENSORKIT_CUDA_SPLIT_BLOCKS=0) a cached block serves its own bucket size
    /// only: a smaller request gets a segment of its own.
    func testAllocatorWithoutSplittingReusesExactSizesOnly() {
        let fake = FakeDevice(capacity: 64 << 20)
        let alloc = CUDACachingAllocator(raw: fake, splitsBlocks: false)
        let a = alloc.allocate(6 << 20)!
        alloc.free(a)
        let b = alloc.allocate(4 << 20)!
        XCTAssertEqual(b, a + (6 << 20))
        XCTAssertEqual(alloc.allocate((5 << 20) + 1), a)    // the 6 MiB bucket
        XCTAssertEqual(alloc.statistics.rawAllocations, 2)
        XCTAssertEqual(alloc.statistics.cached, 0)
    }

    /// Random allocations and frees against the fake device: live blocks never overlap and each lies
    /// inside one raw allocation, the allocator's count of held memory is what the device handed
    /// out, and once everything is freed, every segment is whole again and goes back to the device.
    func testAllocatorSpansStayDisjointUnderRandomUse() {
        let fake = FakeDevice(capacity: 1 << 40)
        let alloc = CUDACachingAllocator(raw: fake)
        var seed: UInt64 = 0x9E3779B97F4A7C15
        func next(_ bound: Int) -> Int {           // splitmix64, so a failure replays
            seed &+= 0x9E3779B97F4A7C15
            var z = seed
            z = (z ^ (z >> 30)) &* 0xBF58476D1CE4E5B9
            z = (z ^ (z >> 27)) &* 0x94D049BB133111EB
            return Int((z ^ (z >> 31)) % UInt64(bound))
        }
        var live: [UInt64: Int] = [:]              // address -> bytes asked for
        for step in 0..<20_000 {
            if live.isEmpty || next(100) < 55 {
                let bytes = next(4) == 0 ? 1 + next(1 << 20) : (1 << 20) + 1 + next(40 << 20)
                guard let address = alloc.allocate(bytes) else { return XCTFail("out of memory at step \(step)") }
                XCTAssertNil(live[address], "address handed out twice at step \(step)")
                live[address] = bytes
            } else {
                let victim = live.keys.sorted()[next(live.count)]
                live[victim] = nil
                alloc.free(victim)
            }
            if step % 500 == 0 || step == 19_999 {
                let blocks = live.map { ($0.key, UInt64(CUDACachingAllocator.roundedSize($0.value))) }.sorted { $0.0 < $1.0 }
                let segments = fake.sizes.map { ($0.key, UInt64($0.value)) }.sorted { $0.0 < $1.0 }
                var j = 0                           // the last segment starting at or before the block
                for (i, block) in blocks.enumerated() {
                    if i > 0 { XCTAssertLessThanOrEqual(blocks[i - 1].0 + blocks[i - 1].1, block.0, "overlap at step \(step)") }
                    while j + 1 < segments.count && segments[j + 1].0 <= block.0 { j += 1 }
                    XCTAssertTrue(segments[j].0 <= block.0 && block.0 + block.1 <= segments[j].0 + segments[j].1,
                                  "block outside its raw allocation at step \(step)")
                }
                let s = alloc.statistics
                XCTAssertEqual(s.inUse, blocks.reduce(0) { $0 + Int($1.1) })
                XCTAssertEqual(s.reserved, fake.used, "held memory at step \(step)")
            }
        }
        for address in live.keys { alloc.free(address) }
        alloc.releaseCached()
        XCTAssertEqual(fake.used, 0)
        XCTAssertEqual(fake.sizes.count, 0)
        XCTAssertEqual(alloc.statistics.cached, 0)
    }

    func testGeometryMergesContiguousAxes() {
        let g = CUDAGeometry(shape: [2, 3, 4], strides: [[12, 4, 1], [12, 4, 1]])
        XCTAssertEqual(g.shape, [24])
        XCTAssertEqual(g.words[2], 3)  // both operands contiguous
        let b = CUDAGeometry(shape: [2, 3, 4], strides: [[12, 4, 1], [0, 1, 0]])  // broadcast operand
        XCTAssertEqual(b.shape, [2, 3, 4])
        XCTAssertEqual(b.words[2], 1)
        XCTAssertEqual(b.words.count, 3 + 8 + 32)
    }

    // MARK: ops on a device (skipped without one; scripts/gpu-check.sh covers every op)

    func testOpsOnCUDAMatchCPU() throws {
        guard CUDA.isAvailable else {
            print("skipped: no CUDA device")
            throw XCTSkip("skipped: no CUDA device")
        }
        let x = Tensor.randn([4, 33], seed: 1)
        let y = Tensor.randn([4, 33], seed: 2)
        let gpu = (x.to(.cuda(0)) * y.to(.cuda(0))).exp().sum(axes: [1]).to(.cpu)
        let cpu = (x * y).exp().sum(axes: [1])
        for (a, b) in zip(gpu.toArray(), cpu.toArray()) { XCTAssertEqual(a, b, accuracy: 1e-5 * max(1, abs(b))) }
        let r = Tensor.randn([1000], seed: 7, device: .cuda(0)).toArray()
        XCTAssertEqual(r, Tensor.randn([1000], seed: 7).toArray())
    }
}
