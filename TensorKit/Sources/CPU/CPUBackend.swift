import Foundation

/// The CPU backend: OpenBLAS for GEMM, Swift loops over unsafe pointers for everything else.
/// Neural-network kernels live in the CPU*.swift files beside this one.
public final class CPUBackend: Backend {
    public static let shared = CPUBackend()
    public let device: Device = .cpu

    public func allocate(byteCount: Int) -> Storage { Storage(cpuByteCount: byteCount) }
    public func allocateUninitialized(byteCount: Int) -> Storage { Storage(cpuUninitializedByteCount: byteCount) }

    /// A new zero-filled contiguous CPU tensor.
    @inline(__always) func empty(_ shape: [Int], _ dtype: DType) -> Tensor {
        Tensor(storage: Storage(cpuByteCount: shape.reduce(1, *) * dtype.byteSize), shape: shape, dtype: dtype)
    }

    /// A new contiguous CPU tensor with undefined contents: only for outputs the caller overwrites
    /// element by element.
    @inline(__always) func uninitialized(_ shape: [Int], _ dtype: DType) -> Tensor {
        Tensor(storage: Storage(cpuUninitializedByteCount: shape.reduce(1, *) * dtype.byteSize), shape: shape, dtype: dtype)
    }

    public func transfer(_ source: Tensor, to device: Device) -> Tensor {
        // Copies to another device are made by that device's backend.
        precondition(device == .cpu, "the CPU backend cannot transfer to \(device); the target backend does that")
        let out = uninitialized(source.shape, source.dtype)
        copy(source, into: out)
        return out
    }

    // MARK: copy and fill

    public func copy(_ source: Tensor, into destination: Tensor) {
        precondition(source.shape == destination.shape, "copy: shape \(source.shape) into \(destination.shape)")
        if source.numel == 0 { return }
        destination.storage.version &+= 1
        let s = source.dtype, d = destination.dtype
        if s == d, source.isContiguous, destination.isContiguous {
            memmove(destination.storage.pointer + destination.offset * d.byteSize,
                    source.storage.pointer + source.offset * s.byteSize, source.numel * s.byteSize)
            return
        }
        let layout = StridedLayout(shape: source.shape, strides: [destination.strides, source.strides])
        let n = layout.innerCount, ds = layout.innerStride(0), ss = layout.innerStride(1)
        let dBase = destination.storage.pointer + destination.offset * d.byteSize
        let sBase = source.storage.pointer + source.offset * s.byteSize
        func run<Op: UnaryElementOp>(_ op: Op) {
            stridedMap(op, layout, dBase.assumingMemoryBound(to: Op.Result.self),
                       UnsafePointer(sBase.assumingMemoryBound(to: Op.Element.self)))
        }
        switch (s, d) {
        case _ where s == d:
            switch s.byteSize {
            case 8: run(Identity<UInt64>())
            case 4: run(Identity<UInt32>())
            case 2: run(Identity<UInt16>())
            default: run(Identity<UInt8>())
            }
        case (.float32, .float64): run(FloatToDouble())
        case (.float64, .float32): run(DoubleToFloat())
        case (.float16, .float32): run(HalfToFloat())
        case (.float32, .float16): run(FloatToHalf())
        case (.bfloat16, .float32): run(BFloat16ToFloat())
        case (.float32, .bfloat16): run(FloatToBFloat16())
        default:
            // Rare pairs: go through double one element at a time.
            let sb = s.byteSize, db = d.byteSize
            layout.forEachRow(0..<layout.rowCount) { o in
                for i in 0..<n {
                    storeScalar(loadScalar(sBase + (o[1] + i * ss) * sb, s), dBase + (o[0] + i * ds) * db, d)
                }
            }
        }
    }

    public func fill(_ destination: Tensor, with value: Double) {
        let ones = Tensor(storage: scalarStorage(value, destination.dtype), shape: destination.shape,
                          dtype: destination.dtype, strides: [Int](repeating: 0, count: destination.rank))
        copy(ones, into: destination)
    }

    private func scalarStorage(_ value: Double, _ dtype: DType) -> Storage {
        let storage = Storage(cpuByteCount: dtype.byteSize)
        storeScalar(value, storage.pointer, dtype)
        return storage
    }

    public func randomFill(_ destination: Tensor, _ distribution: RandomDistribution, seed: UInt64, offset: UInt64) {
        precondition(destination.isContiguous, "randomFill needs a contiguous destination")
        let count = destination.numel
        switch destination.dtype {
        case .float32:
            let p = destination.pointer(as: Float.self)
            parallelFor((count + 3) / 4, minimumPerChunk: 16_384) { blocks in
                let start = blocks.lowerBound * 4
                Philox.fill(p + start, count: min(count, blocks.upperBound * 4) - start, distribution,
                            seed: seed, offset: offset &+ UInt64(blocks.lowerBound))
            }
        case .float64:
            Philox.fill(destination.pointer(as: Double.self), count: count, distribution, seed: seed, offset: offset)
        default:
            let tmp = empty(destination.shape, .float32)
            randomFill(tmp, distribution, seed: seed, offset: offset)
            copy(tmp, into: destination)
        }
    }

    // MARK: elementwise

    public func unary(_ op: UnaryOp, _ x: Tensor) -> Tensor {
        let src = x.isContiguous ? x : x.contiguousCopy()
        let out = uninitialized(x.shape, x.dtype)
        switch x.dtype {
        case .float32: unaryKernel(op, src.pointer(as: Float.self), out.pointer(as: Float.self), x.numel)
        case .float64: unaryKernel(op, src.pointer(as: Double.self), out.pointer(as: Double.self), x.numel)
        default: preconditionFailure("unary \(op) is not defined for \(x.dtype) on the CPU; convert to float32 first")
        }
        return out
    }

    public func unaryBackward(_ op: UnaryOp, input x: Tensor, output y: Tensor, gradOutput: Tensor) -> Tensor {
        let xs = x.isContiguous ? x : x.contiguousCopy()
        let ys = y.isContiguous ? y : y.contiguousCopy()
        let gs = gradOutput.isContiguous ? gradOutput : gradOutput.contiguousCopy()
        let out = uninitialized(x.shape, x.dtype)
        switch x.dtype {
        case .float32:
            unaryGradKernel(op, xs.pointer(as: Float.self), ys.pointer(as: Float.self), gs.pointer(as: Float.self),
                            out.pointer(as: Float.self), x.numel)
        case .float64:
            unaryGradKernel(op, xs.pointer(as: Double.self), ys.pointer(as: Double.self), gs.pointer(as: Double.self),
                            out.pointer(as: Double.self), x.numel)
        default: preconditionFailure("unary backward is not defined for \(x.dtype) on the CPU")
        }
        return out
    }

    public func binary(_ op: BinaryOp, _ a: Tensor, _ b: Tensor) -> Tensor {
        precondition(a.shape == b.shape && a.dtype == b.dtype, "binary \(op): \(a.shape)/\(a.dtype) vs \(b.shape)/\(b.dtype)")
        let out = uninitialized(a.shape, a.dtype)
        switch a.dtype {
        case .float32: binaryKernel(op, a, b, out, Float.self)
        case .float64: binaryKernel(op, a, b, out, Double.self)
        default: preconditionFailure("binary \(op) is not defined for \(a.dtype) on the CPU; convert to float32 first")
        }
        return out
    }

    public func addBiasResidual(_ x: Tensor, bias: Tensor?, residual: Tensor?, inner: Int) -> Tensor {
        precondition(x.isContiguous && bias?.isContiguous ?? true && residual?.isContiguous ?? true,
                     "addBiasResidual needs contiguous tensors")
        precondition(bias.map { $0.rank == 1 && $0.dtype == x.dtype } ?? true && residual.map { $0.shape == x.shape && $0.dtype == x.dtype } ?? true,
                     "addBiasResidual: x \(x.shape) \(x.dtype), bias \(bias?.shape as Any), residual \(residual?.shape as Any)")
        let out = uninitialized(x.shape, x.dtype)
        func run<T: CPUFloat>(_: T.Type) {
            addBiasResidualLoop(out.pointer(as: T.self), UnsafePointer(x.pointer(as: T.self)),
                                bias.map { UnsafePointer($0.pointer(as: T.self)) }, residual.map { UnsafePointer($0.pointer(as: T.self)) },
                                count: x.numel, channels: bias?.numel ?? 1, inner: inner)
        }
        switch x.dtype {
        case .float32: run(Float.self)
        case .float64: run(Double.self)
        default: preconditionFailure("addBiasResidual is not defined for \(x.dtype) on the CPU; convert to float32 first")
        }
        return out
    }

    public func geglu(_ h: Tensor, bias: Tensor?) -> Tensor {
        let (rows, inner) = gegluShape(h, bias)
        let out = uninitialized(Array(h.shape.dropLast()) + [inner], h.dtype)
        func run<T: CPUFloat>(_: T.Type) {
            let hp = h.pointer(as: T.self), bp = bias?.pointer(as: T.self), y = out.pointer(as: T.self)
            parallelFor(rows, minimumPerChunk: max(1, 32_768 / max(inner, 1))) { range in
                for r in range { gegluForwardRow(y + r * inner, hp + r * 2 * inner, bp, inner) }
            }
        }
        switch h.dtype {
        case .float32: run(Float.self)
        case .float64: run(Double.self)
        default: preconditionFailure("geglu is not defined for \(h.dtype) on the CPU; convert to float32 first")
        }
        return out
    }

    public func gegluBackward(_ gradOutput: Tensor, h: Tensor, bias: Tensor?) -> Tensor {
        let (rows, inner) = gegluShape(h, bias)
        precondition(gradOutput.isContiguous && gradOutput.numel == rows * inner && gradOutput.dtype == h.dtype,
                     "geglu backward: gradient \(gradOutput.shape) \(gradOutput.dtype) for h \(h.shape) \(h.dtype)")
        let out = uninitialized(h.shape, h.dtype)
        func run<T: CPUFloat>(_: T.Type) {
            let hp = h.pointer(as: T.self), bp = bias?.pointer(as: T.self)
            let go = gradOutput.pointer(as: T.self), dh = out.pointer(as: T.self)
            parallelFor(rows, minimumPerChunk: max(1, 32_768 / max(inner, 1))) { range in
                for r in range { gegluBackwardRow(dh + r * 2 * inner, go + r * inner, hp + r * 2 * inner, bp, inner) }
            }
        }
        switch h.dtype {
        case .float32: run(Float.self)
        case .float64: run(Double.self)
        default: preconditionFailure("geglu backward is not defined for \(h.dtype) on the CPU")
        }
        return out
    }

    /// (rows, inner) of a contiguous GEGLU input [.., 2·inner] with an optional bias [2·inner].
    private func gegluShape(_ h: Tensor, _ bias: Tensor?) -> (Int, Int) {
        precondition(h.isContiguous && bias?.isContiguous ?? true, "geglu needs contiguous tensors")
        let width = h.shape.last ?? 0
        precondition(h.rank >= 1 && width % 2 == 0 && bias.map { $0.shape == [width] && $0.dtype == h.dtype } ?? true,
                     "geglu: h \(h.shape) \(h.dtype), bias \(bias?.shape as Any)")
        return (width == 0 ? 0 : h.numel / width, width / 2)
    }

    public func select(_ condition: Tensor, _ a: Tensor, _ b: Tensor) -> Tensor {
        precondition(condition.shape == a.shape && a.shape == b.shape && a.dtype == b.dtype)
        let cond = condition.dtype == a.dtype ? condition : condition.to(a.dtype)
        let out = uninitialized(a.shape, a.dtype)
        func run<T: CPUFloat>(_: T.Type) {
            let layout = StridedLayout(shape: a.shape, strides: [cond.strides, a.strides, b.strides])
            let n = layout.innerCount
            let cs = layout.innerStride(0), as_ = layout.innerStride(1), bs = layout.innerStride(2)
            let cp = cond.pointer(as: T.self), ap = a.pointer(as: T.self), bp = b.pointer(as: T.self)
            let op = out.pointer(as: T.self)
            var row = 0
            layout.forEachRow(0..<layout.rowCount) { o in
                let dst = op + row * n
                for i in 0..<n { dst[i] = cp[o[0] + i * cs] != 0 ? ap[o[1] + i * as_] : bp[o[2] + i * bs] }
                row += 1
            }
        }
        switch a.dtype {
        case .float32: run(Float.self)
        case .float64: run(Double.self)
        default: preconditionFailure("where is not defined for \(a.dtype) on the CPU")
        }
        return out
    }

    // MARK: reductions

    public func reduce(_ op: ReduceOp, _ x: Tensor, axes: [Int]) -> Tensor {
        var outShape = x.shape
        for axis in axes { outShape[axis] = 1 }
        if op == .sum {
            let out = uninitialized(outShape, x.dtype)
            switch x.dtype {
            case .float32: segmentSums(x, axes: axes, into: out, Float.self); return out
            case .float64: segmentSums(x, axes: axes, into: out, Double.self); return out
            default: break
            }
        }
        // Move reduced axes last so each output element reduces one contiguous run.
        let kept = (0..<x.rank).filter { !axes.contains($0) }
        let permuted = x.permute(kept + axes.sorted())
        let src = permuted.isContiguous ? permuted : permuted.contiguousCopy()
        let inner = axes.reduce(1) { $0 * x.shape[$1] }
        let outer = kept.reduce(1) { $0 * x.shape[$1] }
        let out = uninitialized(outShape, x.dtype)
        func run<T: CPUFloat>(_: T.Type) {
            let sp = src.pointer(as: T.self), op = out.pointer(as: T.self)
            parallelFor(outer, minimumPerChunk: max(1, 65_536 / max(inner, 1))) { range in
                for o in range {
                    let row = UnsafeBufferPointer(start: sp + o * inner, count: inner)
                    switch op_ {
                    case .sum: op[o] = sumRow(row)
                    case .max: op[o] = row.reduce(-T.infinity) { $1 > $0 || $1.isNaN ? $1 : $0 }
                    case .min: op[o] = row.reduce(T.infinity) { $1 < $0 || $1.isNaN ? $1 : $0 }
                    }
                }
            }
        }
        let op_ = op
        switch x.dtype {
        case .float32: run(Float.self)
        case .float64: run(Double.self)
        default: preconditionFailure("reduce \(op) is not defined for \(x.dtype) on the CPU")
        }
        return out
    }

    // MARK: matmul

    public func matmul(_ a: Tensor, _ b: Tensor) -> Tensor {
        precondition(a.rank == 3 && b.rank == 3 && a.shape[0] == b.shape[0] && a.shape[2] == b.shape[1] && a.dtype == b.dtype,
                     "matmul: \(a.shape) x \(b.shape)")
        let batch = a.shape[0], m = a.shape[1], k = a.shape[2], n = b.shape[2]
        // k == 0 is an empty sum: zeros. Otherwise GEMM with beta = 0 writes every element.
        if k == 0 || batch * m * n == 0 { return empty([batch, m, n], a.dtype) }
        let out = uninitialized([batch, m, n], a.dtype)
        let (ga, ta, lda) = gemmOperand(a)
        let (gb, tb, ldb) = gemmOperand(b)
        func run<T: CPUFloat>(_: T.Type) {
            let ap = ga.pointer(as: T.self), bp = gb.pointer(as: T.self), cp = out.pointer(as: T.self)
            for i in 0..<batch {
                gemm(ta, tb, m, n, k, 1, ap + i * ga.strides[0], lda, bp + i * gb.strides[0], ldb, 0, cp + i * m * n, n)
            }
        }
        switch a.dtype {
        case .float32: run(Float.self)
        case .float64: run(Double.self)
        default: preconditionFailure("matmul is not defined for \(a.dtype) on the CPU; convert to float32 first")
        }
        return out
    }

    /// A [B, R, C] view as a BLAS operand: (tensor, transposed?, leading dimension), copying only when
    /// neither the rows nor the columns are unit-stride.
    private func gemmOperand(_ t: Tensor) -> (Tensor, Bool, Int) {
        let r = t.shape[1], c = t.shape[2]
        if t.strides[2] == 1 || c == 1, t.strides[1] >= max(c, 1) || r == 1 {
            return (t, false, max(r == 1 ? c : t.strides[1], max(c, 1)))
        }
        if t.strides[1] == 1 || r == 1, t.strides[2] >= max(r, 1) || c == 1 {
            return (t, true, max(c == 1 ? r : t.strides[2], max(r, 1)))
        }
        let copy = t.contiguousCopy()
        return (copy, false, max(c, 1))
    }
}

// MARK: - Kernels

/// Sums `x` over `axes` into the contiguous `out` without moving the reduced axes last. The axes
/// are merged into alternating kept and reduced runs, and the reduced runs are summed from the
/// innermost out: a trailing run as row sums (`sumRow`), a run followed by kept axes as column sums
/// (`columnSums`). A bias gradient (the leading axes of [B, N, C]) is one pass of column sums over
/// the data as it lies, where a transpose to [C, B·N] used to cost 20× more than the sums.
func segmentSums<T: CPUFloat>(_ x: Tensor, axes: [Int], into out: Tensor, _: T.Type) {
    let src = x.isContiguous ? x : x.contiguousCopy()
    // Runs of (size, reduced), size-1 axes dropped, neighbours of one kind merged.
    var runs: [(size: Int, reduced: Bool)] = []
    for (axis, size) in x.shape.enumerated() where size != 1 {
        let reduced = axes.contains(axis)
        if let last = runs.last, last.reduced == reduced { runs[runs.count - 1].size *= size } else { runs.append((size, reduced)) }
    }
    let total = x.numel
    if total == 0 {
        let o = out.pointer(as: T.self)
        for i in 0..<out.numel { o[i] = 0 }
        return
    }
    var current = UnsafePointer(src.pointer(as: T.self))
    var keep: Tensor? = nil            // the intermediate buffer `current` points into
    while let index = runs.lastIndex(where: \.reduced) {
        let r = runs[index].size
        let q = runs[(index + 1)...].reduce(1) { $0 * $1.size }
        let p = runs[..<index].reduce(1) { $0 * $1.size }
        runs.remove(at: index)
        if index > 0, index < runs.count, !runs[index - 1].reduced, !runs[index].reduced {
            runs[index - 1].size *= runs[index].size
            runs.remove(at: index)
        }
        let last = !runs.contains(where: \.reduced)
        let next = last ? out : Tensor(storage: Storage(cpuByteCount: p * q * MemoryLayout<T>.stride), shape: [p * q], dtype: T.dtype)
        let dst = next.pointer(as: T.self)
        if q == 1 && p == 1 && r > 131_072 {
            longRowSum(current, r, into: dst)
        } else if q == 1 {
            let from = current
            parallelFor(p, minimumPerChunk: max(1, 65_536 / max(r, 1))) { range in
                for o in range { dst[o] = sumRow(UnsafeBufferPointer(start: from + o * r, count: r)) }
            }
        } else {
            columnSums(current, dst, p: p, r: r, q: q)
        }
        current = UnsafePointer(dst)
        keep = next
    }
    if keep == nil {        // nothing reduced (every reduced axis has size 1): a copy
        let o = out.pointer(as: T.self)
        for i in 0..<total { o[i] = current[i] }
    }
    withExtendedLifetime(src) {}
}

/// out[p·Q + q] = Σ_r x[(p·R + r)·Q + q] for a contiguous [P, R, Q] buffer. Each task adds the rows
/// of one chunk of at most 1024 rows over a 256-wide column block: 32 rows at a time in T, those
/// sums in double. The chunks' partial sums are then added in order in double, so the result does
/// not depend on the number of threads.
func columnSums<T: CPUFloat>(_ x: UnsafePointer<T>, _ out: UnsafeMutablePointer<T>, p: Int, r: Int, q: Int) {
    let block = 256, rowsPerChunk = 1024
    let blocks = (q + block - 1) / block, chunks = (r + rowsPerChunk - 1) / rowsPerChunk
    let partial = UnsafeMutablePointer<Double>.allocate(capacity: chunks * p * q)
    defer { partial.deallocate() }
    let tasks = p * blocks * chunks
    parallelFor(tasks, minimumPerChunk: max(1, 65_536 / max(min(r, rowsPerChunk) * min(q, block), 1))) { range in
        let acc = UnsafeMutablePointer<T>.allocate(capacity: block)
        defer { acc.deallocate() }
        for t in range {
            let chunk = t % chunks, b = (t / chunks) % blocks, pi = t / (chunks * blocks)
            let q0 = b * block, width = min(block, q - q0)
            let r0 = chunk * rowsPerChunk, rows = min(rowsPerChunk, r - r0)
            let into = partial + (chunk * p + pi) * q + q0
            for j in 0..<width { into[j] = 0 }
            var row = x + (pi * r + r0) * q + q0
            var done = 0
            while done < rows {
                let group = min(32, rows - done)
                for j in 0..<width { acc[j] = 0 }
                for _ in 0..<group {
                    for j in 0..<width { acc[j] += row[j] }
                    row += q
                }
                for j in 0..<width { into[j] += Double(acc[j]) }
                done += group
            }
        }
    }
    parallelFor(p * q, minimumPerChunk: 65_536) { range in
        for i in range {
            var sum = partial[i]
            for c in 1..<max(chunks, 1) { sum += partial[c * p * q + i] }
            out[i] = T(sum)
        }
    }
}

/// The sum of one long contiguous run: chunks of 65 536 summed in parallel (`sumRow`), their sums
/// added in order in double (the same result for any number of threads).
func longRowSum<T: CPUFloat>(_ x: UnsafePointer<T>, _ n: Int, into out: UnsafeMutablePointer<T>) {
    let chunk = 65_536, chunks = (n + chunk - 1) / chunk
    let partial = UnsafeMutablePointer<Double>.allocate(capacity: chunks)
    defer { partial.deallocate() }
    parallelFor(chunks, minimumPerChunk: 1) { range in
        for c in range {
            partial[c] = Double(sumRow(UnsafeBufferPointer(start: x + c * chunk, count: min(chunk, n - c * chunk))))
        }
    }
    var total = 0.0
    for c in 0..<chunks { total += partial[c] }
    out[0] = T(total)
}

@inline(__always)
func sumRow<T: CPUFloat>(_ row: UnsafeBufferPointer<T>) -> T {
    // 8 accumulators (vectorised) over blocks of 256 values; the blocks' sums are added in double,
    // so a long row's error grows with its length in blocks, not in values.
    let n = row.count
    var i = 0
    let base = row.baseAddress!
    var total = 0.0
    while i + 8 <= n {
        var acc = SIMD8<T>(repeating: 0)
        let end = min(n - (n - i) % 8, i + 256)
        while i < end {
            acc += UnsafeRawPointer(base + i).loadUnaligned(as: SIMD8<T>.self)
            i += 8
        }
        total += Double(acc.sum())
    }
    while i < n { total += Double(base[i]); i += 1 }
    return T(total)
}

func unaryKernel<T: CPUFloat>(_ op: UnaryOp, _ x: UnsafeMutablePointer<T>, _ y: UnsafeMutablePointer<T>, _ n: Int) {
    if T.self == Float.self,
       VectorMath.unary(op, UnsafeRawPointer(x).assumingMemoryBound(to: Float.self),
                        UnsafeMutableRawPointer(y).assumingMemoryBound(to: Float.self), n) {
        return
    }
    let x = UnsafePointer(x)
    // Cheap ops: specialised, vectorised loops.
    switch op {
    case .neg: contiguousMap(Negate<T>(), x, y, n); return
    case .sqrt: contiguousMap(SquareRoot<T>(), x, y, n); return
    case .rsqrt: contiguousMap(ReciprocalSquareRoot<T>(), x, y, n); return
    case .square: contiguousMap(Square<T>(), x, y, n); return
    case .abs: contiguousMap(Absolute<T>(), x, y, n); return
    case .relu: contiguousMap(Relu<T>(), x, y, n); return
    case .reciprocal: contiguousMap(Reciprocal<T>(), x, y, n); return
    case .addScalar(let c): contiguousMap(AddScalar<T>(c: T(c)), x, y, n); return
    case .mulScalar(let c): contiguousMap(MulScalar<T>(c: T(c)), x, y, n); return
    case .powScalar(2): contiguousMap(Square<T>(), x, y, n); return
    case .powScalar(0.5): contiguousMap(SquareRoot<T>(), x, y, n); return
    case .clamp(let lo, let hi):
        contiguousMap(Clamp<T>(low: lo.map { T($0) } ?? -T.infinity, high: hi.map { T($0) } ?? T.infinity), x, y, n)
        return
    default: break
    }
    // Transcendental ops in float64 (gradient checks) or without a vector path: libm per element.
    @inline(__always) func map(_ f: (T) -> T) {
        parallelFor(n) { r in for i in r { y[i] = f(x[i]) } }
    }
    let sqrt2pi = T(0.7978845608028654), half = T(0.5), one = T(1)
    switch op {
    case .exp: map { T.exp($0) }
    case .log: map { T.log($0) }
    case .tanh: map { T.tanh($0) }
    case .sigmoid: map { one / (one + T.exp(-$0)) }
    case .silu: map { $0 / (one + T.exp(-$0)) }
    case .sin: map { T.sin($0) }
    case .cos: map { T.cos($0) }
    case .geluExact: map { half * $0 * (one + T.erf($0 * T(0.7071067811865476))) }
    case .geluTanh: map { half * $0 * (one + T.tanh(sqrt2pi * ($0 + T(0.044715) * $0 * $0 * $0))) }
    case .quickGelu: map { $0 / (one + T.exp(T(-1.702) * $0)) }
    case .powScalar(let p): let e = T(p); map { T.pow($0, e) }
    default: preconditionFailure("unary \(op): no CPU kernel")
    }
}

func unaryGradKernel<T: CPUFloat>(_ op: UnaryOp, _ x: UnsafeMutablePointer<T>, _ y: UnsafeMutablePointer<T>,
                                  _ g: UnsafeMutablePointer<T>, _ out: UnsafeMutablePointer<T>, _ n: Int) {
    if T.self == Float.self,
       VectorMath.unaryGrad(op, UnsafeRawPointer(x).assumingMemoryBound(to: Float.self),
                            UnsafeRawPointer(g).assumingMemoryBound(to: Float.self),
                            UnsafeMutableRawPointer(out).assumingMemoryBound(to: Float.self), n) {
        return
    }
    @inline(__always) func map(_ f: (T, T, T) -> T) {
        parallelFor(n) { r in for i in r { out[i] = f(x[i], y[i], g[i]) } }
    }
    let one = T(1), half = T(0.5)
    switch op {
    case .neg: map { _, _, g in -g }
    case .exp: map { _, y, g in g * y }
    case .log: map { x, _, g in g / x }
    case .sqrt: map { _, y, g in g * half / y }
    case .rsqrt: map { x, y, g in -half * g * y / x }
    case .square: map { x, _, g in 2 * x * g }
    case .abs: map { x, _, g in x > 0 ? g : (x < 0 ? -g : 0) }
    case .tanh: map { _, y, g in g * (one - y * y) }
    case .sigmoid: map { _, y, g in g * y * (one - y) }
    case .silu: map { x, _, g in let s = one / (one + T.exp(-x)); return g * s * (one + x * (one - s)) }
    case .relu: map { x, _, g in x > 0 ? g : 0 }
    case .sin: map { x, _, g in g * T.cos(x) }
    case .cos: map { x, _, g in -g * T.sin(x) }
    case .reciprocal: map { _, y, g in -g * y * y }
    case .geluExact:
        let invSqrt2 = T(0.7071067811865476), invSqrt2pi = T(0.3989422804014327)
        map { x, _, g in g * (half * (one + T.erf(x * invSqrt2)) + x * invSqrt2pi * T.exp(-half * x * x)) }
    case .geluTanh:
        let k = T(0.7978845608028654), c = T(0.044715)
        map { x, _, g in
            let inner = k * (x + c * x * x * x)
            let t = T.tanh(inner)
            return g * (half * (one + t) + half * x * (one - t * t) * k * (one + 3 * c * x * x))
        }
    case .quickGelu:
        map { x, _, g in let s = one / (one + T.exp(T(-1.702) * x)); return g * (s + T(1.702) * x * s * (one - s)) }
    case .powScalar(let p):
        let e = T(p)
        map { x, _, g in g * e * T.pow(x, e - 1) }
    case .addScalar: map { _, _, g in g }
    case .mulScalar(let c): let c = T(c); map { _, _, g in g * c }
    case .clamp(let lo, let hi):
        // Like PyTorch: gradient passes where lo <= x <= hi.
        let l = lo.map { T($0) } ?? -T.infinity, h = hi.map { T($0) } ?? T.infinity
        map { x, _, g in x >= l && x <= h ? g : 0 }
    }
}

/// One GEGLU row: out[j] = a · gelu(g) for a = h[j] (+ bias[j]), g = h[inner + j] (+ bias[inner + j]).
@inline(__always)
func gegluForwardRow<T: CPUFloat>(_ out: UnsafeMutablePointer<T>, _ h: UnsafeMutablePointer<T>,
                                  _ bias: UnsafeMutablePointer<T>?, _ inner: Int) {
    let g = h + inner
    if let bias {
        let bg = bias + inner
        for j in 0..<inner { let x = g[j] + bg[j]; out[j] = (h[j] + bias[j]) * x * normalCDF(x) }
    } else {
        for j in 0..<inner { let x = g[j]; out[j] = h[j] * x * normalCDF(x) }
    }
}

/// One GEGLU row's gradient: dh[j] = go[j] · gelu(g), dh[inner + j] = go[j] · a · (Φ(g) + g · φ(g)).
@inline(__always)
func gegluBackwardRow<T: CPUFloat>(_ dh: UnsafeMutablePointer<T>, _ go: UnsafeMutablePointer<T>, _ h: UnsafeMutablePointer<T>,
                                   _ bias: UnsafeMutablePointer<T>?, _ inner: Int) {
    // One store stream per loop (two in one loop kept the compiler from vectorising it).
    let g = h + inner, da = dh, dg = dh + inner
    if let bias {
        let bg = bias + inner
        for j in 0..<inner { let x = g[j] + bg[j]; da[j] = go[j] * x * normalCDF(x) }
        for j in 0..<inner { let x = g[j] + bg[j]; dg[j] = go[j] * (h[j] + bias[j]) * (normalCDF(x) + x * normalPDF(x)) }
    } else {
        for j in 0..<inner { let x = g[j]; da[j] = go[j] * x * normalCDF(x) }
        for j in 0..<inner { let x = g[j]; dg[j] = go[j] * h[j] * (normalCDF(x) + x * normalPDF(x)) }
    }
}

/// Φ(x) = (1 + erf(x/√2)) / 2: float32 through VectorMath's erf (as the unary gelu), float64 through libm.
@inline(__always)
func normalCDF<T: CPUFloat>(_ x: T) -> T {
    if T.self == Float.self { return T(0.5 * (1 + VectorMath.erf(Float(x) * 0.707_106_77))) }
    return T(0.5) * (1 + T.erf(x * T(0.7071067811865476)))
}

/// φ(x) = exp(−x²/2) / √(2π): float32 through VectorMath's exp, float64 through libm.
@inline(__always)
func normalPDF<T: CPUFloat>(_ x: T) -> T {
    if T.self == Float.self { return T(0.398_942_28 * VectorMath.exp(-0.5 * Float(x) * Float(x))) }
    return T(0.3989422804014327) * T.exp(-T(0.5) * x * x)
}

/// out[i] = (x[i] + bias[(i / inner) % channels]) + residual[i], each term optional; out may be x.
func addBiasResidualLoop<T: CPUFloat>(_ out: UnsafeMutablePointer<T>, _ x: UnsafePointer<T>, _ bias: UnsafePointer<T>?,
                                      _ residual: UnsafePointer<T>?, count: Int, channels: Int, inner: Int) {
    parallelFor(count) { range in
        if let bias, inner == 1 {
            // A last-axis bias: whole rows of `channels`.
            var i = range.lowerBound
            while i < range.upperBound {
                let c0 = i % channels, n = min(range.upperBound - i, channels - c0)
                let o = out + i, xs = x + i, b = bias + c0
                if let residual { let r = residual + i; for j in 0..<n { o[j] = (xs[j] + b[j]) + r[j] } }
                else { for j in 0..<n { o[j] = xs[j] + b[j] } }
                i += n
            }
        } else if let bias {
            var i = range.lowerBound
            while i < range.upperBound {
                let value = bias[(i / inner) % channels], end = min(range.upperBound, (i / inner + 1) * inner)
                if let residual { for j in i..<end { out[j] = (x[j] + value) + residual[j] } }
                else { for j in i..<end { out[j] = x[j] + value } }
                i = end
            }
        } else if let residual {
            for j in range { out[j] = x[j] + residual[j] }
        } else if UnsafePointer(out) != x {
            for j in range { out[j] = x[j] }
        }
    }
}

func binaryKernel<T: CPUFloat>(_ op: BinaryOp, _ a: Tensor, _ b: Tensor, _ out: Tensor, _: T.Type) {
    let ap = UnsafePointer(a.pointer(as: T.self)), bp = UnsafePointer(b.pointer(as: T.self)), op_ = out.pointer(as: T.self)
    let layout = StridedLayout(shape: a.shape, strides: [a.strides, b.strides])
    switch op {
    case .add: broadcastMap(Add<T>(), layout, ap, bp, op_)
    case .sub: broadcastMap(Subtract<T>(), layout, ap, bp, op_)
    case .mul: broadcastMap(Multiply<T>(), layout, ap, bp, op_)
    case .div: broadcastMap(Divide<T>(), layout, ap, bp, op_)
    case .pow: broadcastMap(Power<T>(), layout, ap, bp, op_)
    case .maximum: broadcastMap(Maximum<T>(), layout, ap, bp, op_)
    case .minimum: broadcastMap(Minimum<T>(), layout, ap, bp, op_)
    case .equal, .greater, .greaterEqual, .less, .lessEqual: broadcastMap(Compare<T>(op: op), layout, ap, bp, op_)
    }
}
