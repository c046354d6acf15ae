import Foundation

// Host side of kernel launches: argument marshalling, the strided geometry (`TKGeom` in the
// prelude), and launch-error checking.

/// One kernel argument, marshalled to the exact C type the kernel declares.
enum KernelArg {
    case pointer(UInt64)       // T*, const void*
    case int32(Int32)          // int
    case int64(Int64)          // i64
    case float64(Double)       // double
    case uint64(UInt64)        // u64
    case words([Int64])        // a struct of i64 fields (TKGeom, TKConv)

    var byteCount: Int {
        switch self {
        case .int32: return 4
        case .words(let w): return w.count * 8
        default: return 8
        }
    }
}

/// `TKGeom`: up to 4 operands over one shape, with adjacent axes merged where every operand allows it.
struct CUDAGeometry {
    static let maxRank = 8
    var shape: [Int]
    var strides: [[Int]]
    var count: Int

    /// Operand k has `strides[k]` (elements) over `shape`.
    init(shape fullShape: [Int], strides fullStrides: [[Int]]) {
        precondition(fullStrides.count <= 4)
        count = fullShape.reduce(1, *)
        // Drop size-1 axes, then merge axis a into a+1 when contiguous for all operands.
        var s: [Int] = [], st: [[Int]] = fullStrides.map { _ in [] }
        for (a, size) in fullShape.enumerated() where size != 1 {
            s.append(size)
            for k in fullStrides.indices { st[k].append(fullStrides[k][a]) }
        }
        var i = s.count - 2
        while i >= 0 {
            if st.allSatisfy({ $0[i] == $0[i + 1] * s[i + 1] }) {
                s[i] *= s[i + 1]
                for k in st.indices { st[k][i] = st[k][i + 1]; st[k].remove(at: i + 1) }
                s.remove(at: i + 1)
            }
            i -= 1
        }
        if s.isEmpty { s = [1]; st = st.map { _ in [1] } }
        precondition(s.count <= CUDAGeometry.maxRank, "CUDA kernels take views of at most \(CUDAGeometry.maxRank) non-mergeable axes, got \(fullShape)")
        shape = s
        strides = st
    }

    /// Every operand contiguous over the (merged) shape: the kernels see all bits of the mask set.
    var allContiguous: Bool {
        let contiguous = Tensor.contiguousStrides(shape)
        return strides.allSatisfy { $0 == contiguous }
    }

    /// Two operands, one contiguous and the other constant along the innermost axis, whose length is
    /// a multiple of `vector` elements (tk_binary's per-vector broadcast path).
    func rowBroadcast(vector: Int) -> Bool {
        guard strides.count == 2, let last = shape.indices.last, shape[last] % vector == 0 else { return false }
        let contiguous = Tensor.contiguousStrides(shape)
        return (strides[0] == contiguous && strides[1][last] == 0) || (strides[1] == contiguous && strides[0][last] == 0)
    }

    /// Words in TKGeom order: rank, count, contiguous mask, shape[8], strides[4][8].
    var words: [Int64] {
        var mask: Int64 = 0
        let contiguous = Tensor.contiguousStrides(shape)
        for (k, st) in strides.enumerated() where st == contiguous {
            mask |= 1 << Int64(k)
        }
        var w: [Int64] = [Int64(shape.count), Int64(count), mask]
        w += (0..<CUDAGeometry.maxRank).map { $0 < shape.count ? Int64(shape[$0]) : 1 }
        for k in 0..<4 {
            w += (0..<CUDAGeometry.maxRank).map { k < strides.count && $0 < shape.count ? Int64(strides[k][$0]) : 0 }
        }
        return w
    }
}

extension CUDAGeometry {
    /// A same-dtype copy (operands: destination, source) whose innermost axis is unit-stride on both
    /// sides, moved in `unit`-byte units (16, 8 or 4; more than `elementSize`): the innermost length,
    /// every other stride and both addresses must be whole units. The result addresses units
    /// (`tk_copy` with elementSize = unit). nil when no wider unit fits.
    func vectorized(elementSize: Int, addresses: [UInt64]) -> (geometry: CUDAGeometry, unit: Int)? {
        guard strides.count == 2, let last = shape.indices.last, strides.allSatisfy({ $0[last] == 1 }) else { return nil }
        for unit in [16, 8, 4] where unit > elementSize && unit % elementSize == 0 {
            let k = unit / elementSize
            guard shape[last] % k == 0, addresses.allSatisfy({ $0 % UInt64(unit) == 0 }),
                  strides.allSatisfy({ st in st.dropLast().allSatisfy { $0 % k == 0 } }) else { continue }
            var g = self
            g.shape[last] /= k
            g.strides = strides.map { st in st.dropLast().map { $0 / k } + [1] }
            g.count = count / k
            return (g, unit)
        }
        return nil
    }

    /// A copy (operands: destination, source) that is a batch of matrix transposes (see
    /// `CUDATransposePlan`), the destination unit-stride along its last merged axis and the source
    /// along the one before; both at least one 32-element tile long. nil otherwise.
    func batchedTranspose() -> CUDATransposePlan? {
        guard strides.count == 2 else { return nil }
        let (d, s) = (strides[0], strides[1])
        let plan: CUDATransposePlan
        if shape.count == 2, d[1] == 1, s[0] == 1 {
            plan = CUDATransposePlan(batches: 1, p: shape[0], q: shape[1], db: 0, dp: d[0], sb: 0, sq: s[1])
        } else if shape.count == 3, d[2] == 1, s[1] == 1 {
            plan = CUDATransposePlan(batches: shape[0], p: shape[1], q: shape[2], db: d[0], dp: d[1], sb: s[0], sq: s[2])
        } else {
            return nil
        }
        guard plan.p >= 32, plan.q >= 32, plan.blocks <= Int(Int32.max) else { return nil }
        return plan
    }
}

/// `tk_copy_transpose`'s copy: dst[b, p, q] at b·db + p·dp + q from src[b, p, q] at b·sb + p + q·sq
/// (element offsets from each tensor's start), for b < batches, p < p, q < q.
struct CUDATransposePlan: Equatable {
    var batches, p, q, db, dp, sb, sq: Int
    /// One 256-thread block per (batch, 32 p, 32 q) tile.
    var blocks: Int { batches * ((p + 31) / 32) * ((q + 31) / 32) }
}

extension CUDADeviceContext {
    /// Launches `name` from `family`/`dtype` with `args`; checks the launch and, when
    /// `CUDA.checkLaunches` is on, synchronises and reports execution errors with the kernel's name.
    func launch(_ family: String, _ dtype: DType?, _ name: String, grid: Int, block: Int, sharedBytes: Int = 0,
                _ args: [KernelArg]) {
        if grid == 0 { return }
        let f = function(family, dtype, name)
        makeCurrent()
        let profile = CUDAProfile.begin(self)
        defer { CUDAProfile.end(profile, self, name) }
        var storage: [UnsafeMutableRawPointer] = []
        storage.reserveCapacity(args.count)
        for arg in args {
            let p = UnsafeMutableRawPointer.allocate(byteCount: max(arg.byteCount, 8), alignment: 8)
            switch arg {
            case .pointer(let v): p.storeBytes(of: v, as: UInt64.self)
            case .uint64(let v): p.storeBytes(of: v, as: UInt64.self)
            case .int32(let v): p.storeBytes(of: v, as: Int32.self)
            case .int64(let v): p.storeBytes(of: v, as: Int64.self)
            case .float64(let v): p.storeBytes(of: v, as: Double.self)
            case .words(let w): for (i, x) in w.enumerated() { (p + i * 8).storeBytes(of: x, as: Int64.self) }
            }
            storage.append(p)
        }
        defer { storage.forEach { $0.deallocate() } }
        var params: [UnsafeMutableRawPointer?] = storage.map { Optional($0) }
        let status = params.withUnsafeMutableBufferPointer { buffer in
            api.cuLaunchKernel(f, UInt32(grid), 1, 1, UInt32(block), 1, 1, UInt32(sharedBytes), stream, buffer.baseAddress, nil)
        }
        precondition(status == 0, "CUDA launch of \(name) (\(dtype.map { "\($0)" } ?? "untyped"), grid \(grid), block \(block), "
                     + "shared \(sharedBytes) B) failed: \(api.errorText(status))")
        if CUDA.checkLaunches {
            let s = api.cuStreamSynchronize(stream)
            precondition(s == 0, "CUDA kernel \(name) (\(dtype.map { "\($0)" } ?? "untyped")) failed: \(api.errorText(s))")
        }
    }

    /// Grid for a grid-stride loop over `count` items with 256-thread blocks.
    static func grid(_ count: Int, block: Int = 256) -> Int { min((count + block - 1) / block, 1 << 20) }

    /// Blocks of 256 threads for an elementwise kernel over `count` elements of `elementSize` bytes:
    /// a thread per 16-byte vector when `vector` (the kernels' vector path: every operand contiguous
    /// and 16-byte aligned, see TK_VEC), else a thread per element.
    static func elementGrid(_ count: Int, elementSize: Int, vector: Bool) -> Int {
        let perThread = vector ? max(16 / elementSize, 1) : 1
        return grid((count + perThread - 1) / perThread)
    }
}

/// Per-kernel timing for finding hot spots: with TENSORKIT_CUDA_PROFILE=1 every launch and GEMM
/// synchronises before and after, and its wall time (host overhead plus device time) is added to
/// its kernel's row. Slows everything down; `CUDA.profileReport()` prints the table.
enum CUDAProfile {
    static let enabled = ProcessInfo.processInfo.environment["TENSORKIT_CUDA_PROFILE"].map { $0 != "" && $0 != "0" } ?? false
    nonisolated(unsafe) static var rows: [String: (calls: Int, seconds: Double)] = [:]

    static func begin(_ ctx: CUDADeviceContext) -> Double? {
        guard enabled else { return nil }
        _ = ctx.api.cuStreamSynchronize(ctx.stream)
        return Date().timeIntervalSinceReferenceDate
    }

    /// Adds the launch begun at `start` to the row `name` (built only when profiling).
    static func end(_ start: Double?, _ ctx: CUDADeviceContext, _ name: @autoclosure () -> String) {
        guard let start else { return }
        let name = name()
        _ = ctx.api.cuStreamSynchronize(ctx.stream)
        let row = rows[name] ?? (0, 0)
        rows[name] = (row.calls + 1, row.seconds + Date().timeIntervalSinceReferenceDate - start)
    }
}

extension CUDA {
    /// The TENSORKIT_CUDA_PROFILE table, slowest kernels first (empty when profiling is off).
    public static func profileReport(top: Int = 30) -> String {
        let total = CUDAProfile.rows.values.reduce(0) { $0 + $1.seconds }
        guard total > 0 else { return "" }
        var lines = ["kernel                                   calls     total ms   share"]
        for (name, row) in CUDAProfile.rows.sorted(by: { $0.value.seconds > $1.value.seconds }).prefix(top) {
            let padded = name.count >= 40 ? name : name + String(repeating: " ", count: 40 - name.count)
            lines.append(padded + String(format: " %6d %12.2f %6.1f%%", row.calls, row.seconds * 1000, 100 * row.seconds / total))
        }
        return lines.joined(separator: "\n")
    }

    /// Clears the TENSORKIT_CUDA_PROFILE table.
    public static func resetProfile() { CUDAProfile.rows = [:] }

    /// Writes the TENSORKIT_CUDA_PROFILE table under `title` to standard error and clears it, so a
    /// run can report its phases separately (nothing when profiling is off or nothing ran).
    public static func flushProfile(_ title: String) {
        let report = profileReport()
        guard !report.isEmpty else { return }
        FileHandle.standardError.write(Data("== TENSORKIT_CUDA_PROFILE: \(title)\n\(report)\n".utf8))
        resetProfile()
    }
}
