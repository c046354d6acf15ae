import Foundation

// The CUDA backend: TensorKit's `Backend` on one NVIDIA device. Elementwise, reduction,
// normalisation, softmax, attention, conv helpers and embedding run as NVRTC-compiled kernels
// (Kernels/); matmul and the convolution GEMMs go through cuBLAS (cublasGemmStridedBatchedEx).
// float32/float64 compute natively; float16/bfloat16 are stored as 16 bits and computed in
// float32. Normalisation statistics and the attention log-sum-exp are kept in float32 for 16-bit
// inputs (float64 for float64), since only this backend's own backward kernels read them.
//
// Registration is lazy: the first `backend(for: .cuda(i))` creates it (BackendRegistry).

public final class CUDABackend: Backend {
    public let device: Device
    let ctx: CUDADeviceContext
    /// Channels-last copies of convolution weights for `tk_conv_mma` (CUDABackend+NN.swift).
    let convolutionWeights = ConvolutionWeightCache()

    init(context: CUDADeviceContext) {
        ctx = context
        device = .cuda(context.index)
    }

    /// The backend for device `index`, or nil when CUDA or that device is unavailable.
    static func make(index: Int) -> CUDABackend? {
        guard let ctx = try? CUDADeviceContext.get(index) else { return nil }
        return CUDABackend(context: ctx)
    }

    // MARK: memory

    func deviceStorage(_ byteCount: Int, zeroed: Bool) -> Storage {
        guard let address = ctx.allocator.allocate(byteCount) else {
            preconditionFailure("CUDA out of memory on cuda:\(ctx.index) allocating \(byteCount) bytes "
                                + "(\(ctx.allocator.statistics))")
        }
        if zeroed && byteCount > 0 {
            ctx.makeCurrent()
            let s = ctx.api.cuMemsetD8Async(address, 0, byteCount, ctx.stream)
            precondition(s == 0, "cuMemsetD8Async: \(ctx.api.errorText(s))")
        }
        let allocator = ctx.allocator
        return Storage(pointer: UnsafeMutableRawPointer(bitPattern: UInt(address))!, byteCount: byteCount,
                       device: device, release: { p, _ in allocator.free(UInt64(UInt(bitPattern: p))) })
    }

    public func allocate(byteCount: Int) -> Storage { deviceStorage(byteCount, zeroed: true) }
    public func allocateUninitialized(byteCount: Int) -> Storage { deviceStorage(byteCount, zeroed: false) }

    func empty(_ shape: [Int], _ dtype: DType) -> Tensor {
        Tensor(storage: deviceStorage(shape.reduce(1, *) * dtype.byteSize, zeroed: true), shape: shape, dtype: dtype)
    }

    func uninitialized(_ shape: [Int], _ dtype: DType) -> Tensor {
        Tensor(storage: deviceStorage(shape.reduce(1, *) * dtype.byteSize, zeroed: false), shape: shape, dtype: dtype)
    }

    /// Device address of element [0, …] of a view on this device.
    @inline(__always) func address(_ t: Tensor) -> UInt64 {
        precondition(t.device == device, "tensor on \(t.device) passed to the \(device) backend")
        return UInt64(UInt(bitPattern: t.storage.pointer)) + UInt64(t.offset * t.dtype.byteSize)
    }

    @inline(__always) func ptr(_ t: Tensor?) -> KernelArg { .pointer(t.map { address($0) } ?? 0) }

    /// A contiguous version of `t` on this device (itself when already contiguous).
    func contiguous(_ t: Tensor) -> Tensor {
        if t.isContiguous { return t }
        let out = uninitialized(t.shape, t.dtype)
        copy(t, into: out)
        return out
    }

    /// `t` as a contiguous tensor of `dtype` (itself when it already is).
    func converted(_ t: Tensor, _ dtype: DType) -> Tensor {
        if t.dtype == dtype { return contiguous(t) }
        let out = uninitialized(t.shape, dtype)
        copy(t, into: out)
        return out
    }

    /// Accumulation dtype of statistics for a storage dtype.
    static func accumulation(_ dtype: DType) -> DType { dtype == .float64 ? .float64 : .float32 }

    static func requireFloat(_ dtype: DType, _ what: String) {
        precondition(CUDAKernelSources.floatTypes.contains(dtype), "\(what) is not defined for \(dtype) on CUDA")
    }

    // MARK: copy, transfer, fill, random

    public func copy(_ source: Tensor, into destination: Tensor) {
        precondition(source.shape == destination.shape, "copy: shape \(source.shape) into \(destination.shape)")
        if source.numel == 0 { return }
        destination.storage.version &+= 1
        precondition(source.device == device && destination.device == device,
                     "CUDA copy: \(source.device) into \(destination.device) on \(device)")
        if source.dtype == destination.dtype, source.isContiguous, destination.isContiguous {
            ctx.makeCurrent()
            let s = ctx.api.cuMemcpyDtoDAsync(address(destination), address(source), source.numel * source.dtype.byteSize, ctx.stream)
            precondition(s == 0, "cuMemcpyDtoDAsync: \(ctx.api.errorText(s))")
            return
        }
        var g = CUDAGeometry(shape: source.shape, strides: [destination.strides, source.strides])
        var unit = source.dtype.byteSize
        if CUDA.fastCopies && source.dtype == destination.dtype {
            if unit >= 2, let t = g.batchedTranspose() {
                transposeCopy(into: destination, from: source, t)
                return
            }
            if let v = g.vectorized(elementSize: unit, addresses: [address(destination), address(source)]) {
                (g, unit) = v
            }
        }
        ctx.launch("memory", nil, "tk_copy", grid: CUDADeviceContext.grid(g.count), block: 256, [
            ptr(destination), .int32(CUDAKernelSources.code(destination.dtype)),
            ptr(source), .int32(CUDAKernelSources.code(source.dtype)), .int32(Int32(unit)), .words(g.words),
        ])
    }

    /// The copy `t` describes (`CUDATransposePlan`) through `tk_copy_transpose`'s shared tiles;
    /// 2-, 4- or 8-byte elements.
    func transposeCopy(into destination: Tensor, from source: Tensor, _ t: CUDATransposePlan) {
        precondition([2, 4, 8].contains(source.dtype.byteSize) && source.dtype == destination.dtype,
                     "transposeCopy: \(source.dtype) into \(destination.dtype)")
        ctx.launch("memory", nil, "tk_copy_transpose", grid: t.blocks, block: 256, [
            ptr(destination), ptr(source), .int32(Int32(source.dtype.byteSize)), .int64(Int64(t.p)), .int64(Int64(t.q)),
            .int64(Int64(t.db)), .int64(Int64(t.dp)), .int64(Int64(t.sb)), .int64(Int64(t.sq)),
        ])
    }

    public func transfer(_ source: Tensor, to target: Device) -> Tensor {
        if source.device == device && target == device {
            let out = uninitialized(source.shape, source.dtype)
            copy(source, into: out)
            return out
        }
        let bytes = source.numel * source.dtype.byteSize
        if source.device == .cpu && target == device {
            // Upload through pinned staging memory, in chunks.
            let host = source.isContiguous ? source : source.contiguousCopy()
            let out = uninitialized(source.shape, source.dtype)
            upload(from: host.storage.pointer + host.offset * host.dtype.byteSize, to: address(out), bytes)
            return out
        }
        if source.device == device {
            let src = contiguous(source)
            let host = Tensor(storage: Storage(cpuUninitializedByteCount: bytes), shape: source.shape, dtype: source.dtype)
            download(from: address(src), to: host.storage.pointer, bytes)
            if target == .cpu { return host }
            return host.copied(to: target)  // another CUDA device: through the host
        }
        // CPU-resident source on another accelerator: let that backend do it.
        return source.copied(to: .cpu).copied(to: target)
    }

    static let stagingChunk = 64 << 20

    func upload(from host: UnsafeRawPointer, to device: UInt64, _ bytes: Int) {
        if bytes == 0 { return }
        if CUDA.uploadRing, let ring = ctx.uploadRingIfSmall(bytes) {
            ring.upload(from: host, to: device, bytes)
            return
        }
        ctx.stagingLock.lock(); defer { ctx.stagingLock.unlock() }
        let staging = ctx.stagingBuffer(min(bytes, CUDABackend.stagingChunk))
        var done = 0
        while done < bytes {
            let n = min(CUDABackend.stagingChunk, bytes - done)
            memcpy(staging, host + done, n)
            ctx.makeCurrent()
            var s = ctx.api.cuMemcpyHtoDAsync(device + UInt64(done), staging, n, ctx.stream)
            precondition(s == 0, "cuMemcpyHtoDAsync: \(ctx.api.errorText(s))")
            s = ctx.api.cuStreamSynchronize(ctx.stream)  // the staging buffer is reused next round
            precondition(s == 0, "upload: \(ctx.api.errorText(s))")
            done += n
        }
    }

    func download(from device: UInt64, to host: UnsafeMutableRawPointer, _ bytes: Int) {
        ctx.stagingLock.lock(); defer { ctx.stagingLock.unlock() }
        if bytes == 0 { _ = try? ctx.synchronize(); return }
        let staging = ctx.stagingBuffer(min(bytes, CUDABackend.stagingChunk))
        var done = 0
        while done < bytes {
            let n = min(CUDABackend.stagingChunk, bytes - done)
            ctx.makeCurrent()
            var s = ctx.api.cuMemcpyDtoHAsync(staging, device + UInt64(done), n, ctx.stream)
            precondition(s == 0, "cuMemcpyDtoHAsync: \(ctx.api.errorText(s))")
            s = ctx.api.cuStreamSynchronize(ctx.stream)
            precondition(s == 0, "download (a queued kernel may have failed): \(ctx.api.errorText(s))")
            memcpy(host + done, staging, n)
            done += n
        }
    }

    public func fill(_ destination: Tensor, with value: Double) {
        if destination.numel == 0 { return }
        destination.storage.version &+= 1
        let g = CUDAGeometry(shape: destination.shape, strides: [destination.strides])
        ctx.launch("memory", nil, "tk_fill", grid: CUDADeviceContext.grid(g.count), block: 256, [
            ptr(destination), .int32(CUDAKernelSources.code(destination.dtype)), .float64(value), .words(g.words),
        ])
    }

    public func randomFill(_ destination: Tensor, _ distribution: RandomDistribution, seed: UInt64, offset: UInt64) {
        precondition(destination.isContiguous, "randomFill needs a contiguous destination")
        let count = destination.numel
        if count == 0 { return }
        let (normal, a, b): (Int32, Double, Double)
        switch distribution {
        case let .normal(mean, std): (normal, a, b) = (1, mean, std)
        case let .uniform(low, high): (normal, a, b) = (0, low, high)
        }
        ctx.launch("memory", nil, "tk_random", grid: CUDADeviceContext.grid((count + 3) / 4), block: 256, [
            ptr(destination), .int32(CUDAKernelSources.code(destination.dtype)), .int64(Int64(count)),
            .uint64(seed), .uint64(offset), .int32(normal), .float64(a), .float64(b),
        ])
    }

    // MARK: elementwise

    /// (code, p0, p1) of a unary op in the kernels' numbering.
    static func unaryCode(_ op: UnaryOp) -> (Int32, Double, Double) {
        switch op {
        case .neg: return (0, 0, 0)
        case .exp: return (1, 0, 0)
        case .log: return (2, 0, 0)
        case .sqrt: return (3, 0, 0)
        case .rsqrt: return (4, 0, 0)
        case .square: return (5, 0, 0)
        case .abs: return (6, 0, 0)
        case .tanh: return (7, 0, 0)
        case .sigmoid: return (8, 0, 0)
        case .silu: return (9, 0, 0)
        case .relu: return (10, 0, 0)
        case .sin: return (11, 0, 0)
        case .cos: return (12, 0, 0)
        case .reciprocal: return (13, 0, 0)
        case .geluExact: return (14, 0, 0)
        case .geluTanh: return (15, 0, 0)
        case .quickGelu: return (16, 0, 0)
        case .powScalar(let p): return (17, p, 0)
        case .addScalar(let c): return (18, c, 0)
        case .mulScalar(let c): return (19, c, 0)
        case .clamp(let lo, let hi): return (20, lo ?? -.infinity, hi ?? .infinity)
        }
    }

    static func binaryCode(_ op: BinaryOp) -> Int32 {
        switch op {
        case .add: return 0
        case .sub: return 1
        case .mul: return 2
        case .div: return 3
        case .pow: return 4
        case .maximum: return 5
        case .minimum: return 6
        case .equal: return 7
        case .greater: return 8
        case .greaterEqual: return 9
        case .less: return 10
        case .lessEqual: return 11
        }
    }

    /// Whether an elementwise kernel over `g` takes its vector path (every operand contiguous and
    /// 16-byte aligned; TK_VEC in the kernel prelude), for sizing its grid.
    func vectorPath(_ g: CUDAGeometry, _ operands: [Tensor?]) -> Bool {
        g.allContiguous && vectorAligned(operands)
    }

    /// Every operand (nil ones aside) 16-byte aligned, with vector access on (`CUDA.vectorAccess`).
    func vectorAligned(_ operands: [Tensor?]) -> Bool {
        CUDA.vectorAccess && operands.allSatisfy { t in t.map { address($0) % 16 == 0 } ?? true }
    }

    public func unary(_ op: UnaryOp, _ x: Tensor) -> Tensor {
        CUDABackend.requireFloat(x.dtype, "unary \(op)")
        let out = uninitialized(x.shape, x.dtype)
        if x.numel == 0 { return out }
        let (code, p0, p1) = CUDABackend.unaryCode(op)
        let g = CUDAGeometry(shape: x.shape, strides: [x.strides])
        let grid = CUDADeviceContext.elementGrid(g.count, elementSize: x.dtype.byteSize, vector: vectorPath(g, [out, x]))
        ctx.launch("elementwise", x.dtype, "tk_unary", grid: grid, block: 256,
                   [ptr(out), ptr(x), .int32(code), .float64(p0), .float64(p1), .words(g.words)])
        return out
    }

    public func unaryBackward(_ op: UnaryOp, input x: Tensor, output y: Tensor, gradOutput: Tensor) -> Tensor {
        CUDABackend.requireFloat(x.dtype, "unary backward \(op)")
        precondition(y.shape == x.shape && gradOutput.shape == x.shape && y.dtype == x.dtype && gradOutput.dtype == x.dtype,
                     "unaryBackward: shapes/dtypes differ")
        let out = uninitialized(x.shape, x.dtype)
        if x.numel == 0 { return out }
        let (code, p0, p1) = CUDABackend.unaryCode(op)
        let g = CUDAGeometry(shape: x.shape, strides: [x.strides, y.strides, gradOutput.strides])
        let grid = CUDADeviceContext.elementGrid(g.count, elementSize: x.dtype.byteSize, vector: vectorPath(g, [out, x, y, gradOutput]))
        ctx.launch("elementwise", x.dtype, "tk_unary_backward", grid: grid, block: 256,
                   [ptr(out), ptr(x), ptr(y), ptr(gradOutput), .int32(code), .float64(p0), .float64(p1), .words(g.words)])
        return out
    }

    public func binary(_ op: BinaryOp, _ a: Tensor, _ b: Tensor) -> Tensor {
        precondition(a.shape == b.shape && a.dtype == b.dtype, "binary \(op): \(a.shape)/\(a.dtype) vs \(b.shape)/\(b.dtype)")
        CUDABackend.requireFloat(a.dtype, "binary \(op)")
        let out = uninitialized(a.shape, a.dtype)
        if a.numel == 0 { return out }
        let g = CUDAGeometry(shape: a.shape, strides: [a.strides, b.strides])
        // The kernel's vector paths: both operands contiguous, or one contiguous and the other one
        // value per vector (its aligned vectors only are read).
        let perVector = g.rowBroadcast(vector: max(16 / a.dtype.byteSize, 1))
            && vectorAligned([out, g.strides[1].last == 0 ? a : b])
        let grid = CUDADeviceContext.elementGrid(g.count, elementSize: a.dtype.byteSize, vector: vectorPath(g, [out, a, b]) || perVector)
        ctx.launch("elementwise", a.dtype, "tk_binary", grid: grid, block: 256,
                   [ptr(out), ptr(a), ptr(b), .int32(CUDABackend.binaryCode(op)), .words(g.words)])
        return out
    }

    public func select(_ condition: Tensor, _ a: Tensor, _ b: Tensor) -> Tensor {
        precondition(condition.shape == a.shape && a.shape == b.shape && a.dtype == b.dtype)
        CUDABackend.requireFloat(a.dtype, "where")
        let out = uninitialized(a.shape, a.dtype)
        if a.numel == 0 { return out }
        let g = CUDAGeometry(shape: a.shape, strides: [condition.strides, a.strides, b.strides])
        ctx.launch("elementwise", a.dtype, "tk_select", grid: CUDADeviceContext.grid(g.count), block: 256,
                   [ptr(out), ptr(condition), .int32(CUDAKernelSources.code(condition.dtype)), ptr(a), ptr(b), .words(g.words)])
        return out
    }

    /// The GEGLU kernels' grid: a thread per 16-byte vector when `inner` is whole vectors and every
    /// operand is aligned (their vector path), else per element.
    private func gegluGrid(rows: Int, inner: Int, _ dtype: DType, _ operands: [Tensor?]) -> Int {
        let vector = inner % max(16 / dtype.byteSize, 1) == 0 && vectorAligned(operands)
        return CUDADeviceContext.elementGrid(rows * inner, elementSize: dtype.byteSize, vector: vector)
    }

    public func geglu(_ h: Tensor, bias: Tensor?) -> Tensor {
        let (rows, inner) = gegluShape(h, bias)
        let out = uninitialized(Array(h.shape.dropLast()) + [inner], h.dtype)
        if out.numel == 0 { return out }
        let x = contiguous(h), b = bias.map(contiguous)
        ctx.launch("elementwise", h.dtype, "tk_geglu_forward", grid: gegluGrid(rows: rows, inner: inner, h.dtype, [out, x, b]), block: 256, [
            ptr(out), ptr(x), ptr(b), .int64(Int64(rows)), .int64(Int64(inner)),
            .int32(rows * 2 * inner < Int(Int32.max) ? 1 : 0),
        ])
        return out
    }

    public func gegluBackward(_ gradOutput: Tensor, h: Tensor, bias: Tensor?) -> Tensor {
        let (rows, inner) = gegluShape(h, bias)
        precondition(gradOutput.numel == rows * inner && gradOutput.dtype == h.dtype,
                     "geglu backward: gradient \(gradOutput.shape) \(gradOutput.dtype) for h \(h.shape) \(h.dtype)")
        let out = uninitialized(h.shape, h.dtype)
        if out.numel == 0 { return out }
        let go = contiguous(gradOutput), x = contiguous(h), b = bias.map(contiguous)
        ctx.launch("elementwise", h.dtype, "tk_geglu_backward", grid: gegluGrid(rows: rows, inner: inner, h.dtype, [out, go, x, b]), block: 256, [
            ptr(out), ptr(go), ptr(x), ptr(b),
            .int64(Int64(rows)), .int64(Int64(inner)), .int32(rows * 2 * inner < Int(Int32.max) ? 1 : 0),
        ])
        return out
    }

    /// (rows, inner) of a GEGLU input [.., 2·inner] with an optional bias [2·inner].
    private func gegluShape(_ h: Tensor, _ bias: Tensor?) -> (Int, Int) {
        CUDABackend.requireFloat(h.dtype, "geglu")
        let width = h.shape.last ?? 0
        precondition(h.rank >= 1 && width % 2 == 0 && bias.map { $0.shape == [width] && $0.dtype == h.dtype } ?? true,
                     "geglu: h \(h.shape) \(h.dtype), bias \(bias?.shape as Any)")
        return (width == 0 ? 0 : h.numel / width, width / 2)
    }

    // MARK: reductions

    public func reduce(_ op: ReduceOp, _ x: Tensor, axes: [Int]) -> Tensor {
        CUDABackend.requireFloat(x.dtype, "reduce \(op)")
        var outShape = x.shape
        for axis in axes { outShape[axis] = 1 }
        let kept = (0..<x.rank).filter { !axes.contains($0) }
        let permuted = x.permute(kept + axes.sorted())
        let src = contiguous(permuted)
        let inner = axes.reduce(1) { $0 * x.shape[$1] }
        let outer = kept.reduce(1) { $0 * x.shape[$1] }
        let out = uninitialized(outShape, x.dtype)
        if outer == 0 { return out }
        if inner == 0 {
            fill(out, with: op == .sum ? 0 : (op == .max ? -.infinity : .infinity))
            return out
        }
        let code: Int32 = op == .sum ? 0 : (op == .max ? 1 : 2)
        ctx.launch("reduce", x.dtype, "tk_reduce_rows", grid: min(outer, 1 << 18), block: 256,
                   [ptr(out), ptr(src), .int64(Int64(outer)), .int64(Int64(inner)), .int32(code)])
        return out
    }

    // MARK: matmul (cuBLAS)

    /// C = op(A)·op(B) in row-major terms, batched: op(A) is [m, k]. `transA` means A is stored as
    /// [k, m] rows of leading dimension lda (likewise B). cuBLAS is column-major, so this computes
    /// Cᵀ = op(B)ᵀ·op(A)ᵀ with the operands swapped.
    /// `alpha` scales the product; `outputType` (float32 only, for half inputs) writes C in float32.
    func gemm(_ dtype: DType, transA: Bool, transB: Bool, m: Int, n: Int, k: Int,
              a: UInt64, lda: Int, strideA: Int, b: UInt64, ldb: Int, strideB: Int,
              c: UInt64, ldc: Int, strideC: Int, batch: Int, beta: Double = 0, alpha: Double = 1,
              outputType: DType? = nil) {
        if m == 0 || n == 0 || batch == 0 { return }
        let size = dtype.byteSize
        let type: Int32
        var compute = CUBLASAPI.compute32F
        switch dtype {
        case .float32: type = CUBLASAPI.r32F; if CUDA.allowTF32 { compute = CUBLASAPI.compute32FFastTF32 }
        case .float64: type = CUBLASAPI.r64F; compute = CUBLASAPI.compute64F
        case .float16: type = CUBLASAPI.r16F
        case .bfloat16: type = CUBLASAPI.r16BF
        default: preconditionFailure("matmul is not defined for \(dtype) on CUDA")
        }
        precondition(outputType == nil || outputType == dtype || (outputType == .float32 && dtype != .float64),
                     "gemm: a \(outputType!) result from \(dtype) operands is not supported")
        let cType = outputType == .float32 ? CUBLASAPI.r32F : type
        ctx.makeCurrent()
        let profile = CUDAProfile.begin(ctx)
        // A row of its own for GEMMs with a dimension of at most 16: LoRA's rank-r products.
        defer { CUDAProfile.end(profile, ctx, "cublas gemm \(dtype)" + (min(m, n, k) <= 16 ? " (a dimension ≤ 16)" : "")) }
        var alpha32 = Float(alpha), beta32 = Float(beta), alpha64 = alpha, beta64 = beta
        let status: Int32 = withUnsafePointer(to: &alpha32) { a32 in
            withUnsafePointer(to: &beta32) { b32 in
                withUnsafePointer(to: &alpha64) { a64 in
                    withUnsafePointer(to: &beta64) { b64 in
                        let alphaP = UnsafeRawPointer(compute == CUBLASAPI.compute64F ? UnsafeRawPointer(a64) : UnsafeRawPointer(a32))
                        let betaP = UnsafeRawPointer(compute == CUBLASAPI.compute64F ? UnsafeRawPointer(b64) : UnsafeRawPointer(b32))
                        return ctx.blas.cublasGemmStridedBatchedEx(
                            ctx.blasHandle, transB ? CUBLASAPI.opT : CUBLASAPI.opN, transA ? CUBLASAPI.opT : CUBLASAPI.opN,
                            Int32(n), Int32(m), Int32(k), alphaP,
                            UnsafeRawPointer(bitPattern: UInt(b)), type, Int32(ldb), Int64(strideB),
                            UnsafeRawPointer(bitPattern: UInt(a)), type, Int32(lda), Int64(strideA),
                            betaP, UnsafeMutableRawPointer(bitPattern: UInt(c)), cType, Int32(ldc), Int64(strideC),
                            Int32(batch), compute, CUBLASAPI.gemmDefault)
                    }
                }
            }
        }
        precondition(status == 0, "cublasGemmStridedBatchedEx(\(dtype), m \(m) n \(n) k \(k), batch \(batch)) failed with status \(status)")
        _ = size
        if CUDA.checkLaunches {
            let s = ctx.api.cuStreamSynchronize(ctx.stream)
            precondition(s == 0, "cuBLAS GEMM failed: \(ctx.api.errorText(s))")
        }
    }

    /// A [B, R, C] view as a GEMM operand: (tensor, transposed?, leading dimension), copying only when
    /// neither rows nor columns are unit-stride (as the CPU backend).
    func gemmOperand(_ t: Tensor) -> (Tensor, Bool, Int) {
        let r = t.shape[1], c = t.shape[2]
        if t.strides[2] == 1 || c == 1, t.strides[1] >= max(c, 1) || r == 1 {
            return (t, false, max(r == 1 ? c : t.strides[1], max(c, 1)))
        }
        if t.strides[1] == 1 || r == 1, t.strides[2] >= max(r, 1) || c == 1 {
            return (t, true, max(c == 1 ? r : t.strides[2], max(r, 1)))
        }
        return (contiguous(t), false, max(c, 1))
    }

    public func matmul(_ a: Tensor, _ b: Tensor) -> Tensor {
        precondition(a.rank == 3 && b.rank == 3 && a.shape[0] == b.shape[0] && a.shape[2] == b.shape[1] && a.dtype == b.dtype,
                     "matmul: \(a.shape) x \(b.shape)")
        let batch = a.shape[0], m = a.shape[1], k = a.shape[2], n = b.shape[2]
        if k == 0 || batch * m * n == 0 { return empty([batch, m, n], a.dtype) }
        let out = uninitialized([batch, m, n], a.dtype)
        let (ga, ta, lda) = gemmOperand(a)
        let (gb, tb, ldb) = gemmOperand(b)
        gemm(a.dtype, transA: ta, transB: tb, m: m, n: n, k: k,
             a: address(ga), lda: lda, strideA: batch == 1 ? 0 : ga.strides[0],
             b: address(gb), ldb: ldb, strideB: batch == 1 ? 0 : gb.strides[0],
             c: address(out), ldc: n, strideC: m * n, batch: batch)
        return out
    }

    // MARK: embedding

    /// Checks indices on the host (they are small) like the CPU backend does.
    private func checkIndices(_ indices: Tensor, vocabulary: Int) {
        precondition(indices.dtype == .int64 || indices.dtype == .int32, "embedding indices must be int32 or int64, got \(indices.dtype)")
        for (i, v) in indices.toArray().enumerated() {
            precondition(v >= 0 && Int(v) < vocabulary,
                         "embedding: index \(Int(v)) (position \(i)) is out of range for a table of \(vocabulary) rows")
        }
    }

    public func embedding(weight: Tensor, indices: Tensor) -> Tensor {
        precondition(weight.rank == 2 && weight.isContiguous, "embedding kernel: weight must be contiguous [V, D], got \(weight.shape)")
        CUDABackend.requireFloat(weight.dtype, "embedding")
        let width = weight.shape[1]
        checkIndices(indices, vocabulary: weight.shape[0])
        let idx = contiguous(indices)
        let out = uninitialized(indices.shape + [width], weight.dtype)
        let count = indices.numel
        ctx.launch("embedding", weight.dtype, "tk_embedding_forward", grid: CUDADeviceContext.grid(count * width), block: 256, [
            ptr(out), ptr(weight), ptr(idx), .int32(CUDAKernelSources.code(idx.dtype)), .int64(Int64(count)), .int64(Int64(width)),
        ])
        return out
    }

    public func embeddingBackward(_ gradOutput: Tensor, indices: Tensor, numEmbeddings: Int) -> Tensor {
        let width = gradOutput.rank == 0 ? 1 : gradOutput.shape[gradOutput.rank - 1]
        precondition(gradOutput.shape == indices.shape + [width],
                     "embeddingBackward kernel: gradient \(gradOutput.shape) for indices \(indices.shape)")
        CUDABackend.requireFloat(gradOutput.dtype, "embedding backward")
        checkIndices(indices, vocabulary: numEmbeddings)
        let g = contiguous(gradOutput), idx = contiguous(indices)
        let out = empty([numEmbeddings, width], g.dtype)
        ctx.launch("embedding", g.dtype, "tk_embedding_backward", grid: CUDADeviceContext.grid(width), block: 256, [
            ptr(out), ptr(g), ptr(idx), .int32(CUDAKernelSources.code(idx.dtype)), .int64(Int64(indices.numel)), .int64(Int64(width)),
        ])
        return out
    }
}
