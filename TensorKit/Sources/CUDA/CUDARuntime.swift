import Foundation

// Process-wide CUDA state: the driver (loaded and initialised once), and one `CUDADeviceContext`
// per device with its primary context, default stream, cuBLAS handle, caching allocator, pinned
// staging buffer and compiled kernel modules. The public face is `CUDA` (availability, device
// information, memory statistics, TF32 switch).

/// What `CUDA.deviceInfo(_:)` reports.
public struct CUDADeviceInfo: Sendable, CustomStringConvertible {
    public let index: Int
    public let name: String
    public let totalMemory: Int
    public let computeCapability: (major: Int, minor: Int)
    public let multiprocessors: Int
    /// e.g. "13.0"
    public let driverVersion: String
    public let nvrtcVersion: String
    public let cublasVersion: String
    /// Paths of the loaded libraries, by kind.
    public let libraries: [String: String]

    public var architecture: Int { computeCapability.major * 10 + computeCapability.minor }

    public var description: String {
        let gib = String(format: "%.1f GiB", Double(totalMemory) / 1_073_741_824)
        let libs = libraries.sorted { $0.key < $1.key }.map { "\($0.key) \($0.value)" }.joined(separator: "; ")
        return "cuda:\(index) \(name), \(gib), compute capability \(computeCapability.major).\(computeCapability.minor), "
            + "\(multiprocessors) SMs; driver \(driverVersion), NVRTC \(nvrtcVersion), cuBLAS \(cublasVersion) [\(libs)]"
    }
}

/// Public entry point of the CUDA backend.
public enum CUDA {
    /// True when the driver, a device, NVRTC and cuBLAS are all present.
    public static var isAvailable: Bool { missingLibrariesMessage == nil && deviceCount > 0 }

    /// Number of CUDA devices (0 without a driver).
    public static var deviceCount: Int { (try? CUDARuntime.driver().get())?.deviceCount ?? 0 }

    /// nil when everything needed was found; otherwise one message naming each missing piece and
    /// every path that was looked at.
    public static var missingLibrariesMessage: String? {
        var problems: [String] = []
        if case .failure(let e) = CUDARuntime.driver() { problems.append(e.description) }
        if let reason = NVRTC.unavailableReason { problems.append(reason) }
        if case .failure(let e) = CUDARuntime.cublas() { problems.append(e.description) }
        return problems.isEmpty ? nil : "CUDA is unavailable:\n  - " + problems.joined(separator: "\n  - ")
    }

    /// Why `.cuda(index)` cannot be used, or nil.
    public static func unavailableReason(_ index: Int) -> String? {
        if let missing = missingLibrariesMessage { return missing }
        let count = deviceCount
        return index < count ? nil : CUDAError.noDevice(index, count).description
    }

    /// Name, memory, compute capability and library versions of device `index`.
    public static func deviceInfo(_ index: Int) throws -> CUDADeviceInfo {
        try CUDADeviceContext.get(index).info
    }

    /// Allow TF32 tensor cores for float32 matmul and convolution (PyTorch's allow_tf32). Off by
    /// default, so float32 results match the CPU to ~1e-6.
    nonisolated(unsafe) public static var allowTF32 = false

    /// Bytes a convolution's im2col column buffer may take (default 256 MiB). Images are processed
    /// in chunks that fit; an image whose columns alone exceed it (the VAE's 512² convolutions:
    /// 1.2 GB) is processed in bands of output rows.
    nonisolated(unsafe) public static var convolutionWorkspaceBytes = 256 << 20

    /// Run float16/bfloat16 attention on the tensor cores without an N×N score matrix (the flash
    /// kernels: non-causal, equal query/value head widths up to 128 forward, 64 backward; sm_80+).
    /// Other attention keeps the cuBLAS and fused paths. On by default; TENSORKIT_CUDA_FLASH_ATTENTION=0
    /// turns it off.
    nonisolated(unsafe) public static var flashAttention: Bool =
        ProcessInfo.processInfo.environment["TENSORKIT_CUDA_FLASH_ATTENTION"] != "0"

    /// Run float16/bfloat16 convolutions with a window (kh·kw > 1, one group, input channels a
    /// multiple of 8, enough output for two 128 × 128 tiles per multiprocessor; sm_80+) on the tensor
    /// cores as an implicit GEMM (`tk_conv_mma`, ConvMMAKernels.swift) instead of im2col + cuBLAS;
    /// also their input gradients at stride 1.
    /// On by default; TENSORKIT_CUDA_CONV_MMA=0 turns it off. The weights' channels-last copies
    /// are cached per weight storage (see `Storage.version`).
    nonisolated(unsafe) public static var convolutionMMA: Bool =
        ProcessInfo.processInfo.environment["TENSORKIT_CUDA_CONV_MMA"] != "0"

    /// The fewest 128 × 128 output tiles a convolution needs to take `tk_conv_mma` (nil: two per
    /// multiprocessor). The op check sets 1 so that its small cases reach the kernel.
    nonisolated(unsafe) public static var convolutionMMAMinimumTiles: Int? = nil

    /// Same-dtype strided copies in their fast forms: rows of whole 16/8/4-byte units moved as such
    /// (the heads split off a [B, N, H·D] projection, channel slices of a concat), and batches of
    /// matrix transposes (NCHW ↔ token layout) through shared-memory tiles (`tk_copy_transpose`).
    /// Off: every strided copy takes the element-by-element `tk_copy`. On by default;
    /// TENSORKIT_CUDA_FAST_COPY=0 turns it off.
    nonisolated(unsafe) public static var fastCopies: Bool =
        ProcessInfo.processInfo.environment["TENSORKIT_CUDA_FAST_COPY"] != "0"

    /// The caching allocator serves a request above 1 MiB from the front of a larger cached block,
    /// splitting it, and merges freed neighbours (`CUDACachingAllocator`). Off (`false`, or
    /// TENSORKIT_CUDA_SPLIT_BLOCKS=0): only a cached block of the request's exact bucket size is
    /// reused, as before 2026-11-29. Read when a device's context is made.
    nonisolated(unsafe) public static var splitBlocks: Bool =
        ProcessInfo.processInfo.environment["TENSORKIT_CUDA_SPLIT_BLOCKS"] != "0"

    /// Host-to-device copies of up to 1 MiB (scheduler coefficients, timestep embeddings, a step's
    /// noise) go through their own slots of pinned memory and do not wait for the device
    /// (`CUDAUploadRing`). Off (`false`, or TENSORKIT_CUDA_UPLOAD_RING=0): every upload waits for
    /// the stream to drain, as larger ones always do.
    nonisolated(unsafe) public static var uploadRing: Bool =
        ProcessInfo.processInfo.environment["TENSORKIT_CUDA_UPLOAD_RING"] != "0"

    /// Elementwise kernels (unary, its gradient, binary, bias+residual, GEGLU) load and store 16-byte
    /// vectors when every operand is contiguous and aligned. Off (`false`, or TENSORKIT_CUDA_VECTORS=0):
    /// an element per access everywhere. Read when a kernel family is first loaded on a device, so set
    /// it before the first op runs there.
    nonisolated(unsafe) public static var vectorAccess: Bool =
        ProcessInfo.processInfo.environment["TENSORKIT_CUDA_VECTORS"] != "0"

    /// Which build of the flash kernels runs: pipelined (the default: each block copies the next
    /// key/value tile with cp.async while it computes on the current one, and reads tensor-core
    /// fragments with ldmatrix) or plain loads and stores (`false`, or TENSORKIT_CUDA_FLASH_PIPELINE=0),
    /// the first build, kept as a fallback and for comparison.
    nonisolated(unsafe) public static var flashPipeline: Bool =
        ProcessInfo.processInfo.environment["TENSORKIT_CUDA_FLASH_PIPELINE"] != "0"

    /// Synchronise after every kernel launch and report failures with the kernel's name. On in
    /// debug builds and when TENSORKIT_CUDA_LAUNCH_CHECKS=1.
    nonisolated(unsafe) public static var checkLaunches: Bool = {
        #if DEBUG
        return true
        #else
        return ProcessInfo.processInfo.environment["TENSORKIT_CUDA_LAUNCH_CHECKS"] == "1"
        #endif
    }()

    /// Memory statistics of device `index`'s caching allocator.
    public static func memoryStats(_ index: Int = 0) -> CUDAMemoryStats {
        (try? CUDADeviceContext.get(index))?.allocator.statistics ?? CUDAMemoryStats()
    }

    /// The driver's free and total memory of device `index` in bytes (`cuMemGetInfo`), nil without
    /// the device. Free memory does not count the caching allocator's cached blocks, which it gives
    /// back before an allocation fails: what a new allocation can get is `free + memoryStats().cached`.
    public static func deviceMemory(_ index: Int = 0) -> (free: Int, total: Int)? {
        guard let ctx = try? CUDADeviceContext.get(index) else { return nil }
        ctx.makeCurrent()
        var free = 0, total = 0
        guard ctx.api.cuMemGetInfo(&free, &total) == 0 else { return nil }
        return (free, total)
    }

    /// What was live at device `index`'s last peak (since the last `resetPeakMemory`), by the call
    /// stack that allocated it; nil unless tracing is on (`TENSORKIT_CUDA_MEMORY_TRACE=<MiB>`: blocks
    /// of at least that size are attributed). `ddpo train` and `ddpo sample` print it at the end.
    public static func memoryTrace(_ index: Int = 0) -> CUDAMemoryTrace? {
        (try? CUDADeviceContext.get(index))?.allocator.trace
    }

    /// Starts a new peak: `peakInUse` and `peakRequested` become the memory in use now.
    public static func resetPeakMemory(_ index: Int = 0) { (try? CUDADeviceContext.get(index))?.allocator.resetPeak() }

    /// Returns cached (unused) device memory to the driver.
    public static func emptyCache(_ index: Int = 0) { (try? CUDADeviceContext.get(index))?.allocator.releaseCached() }

    /// Waits for all queued work on device `index`.
    public static func synchronize(_ index: Int = 0) throws {
        let ctx = try CUDADeviceContext.get(index)
        try ctx.synchronize()
    }
}

/// The loaded driver and device count.
final class CUDARuntime: @unchecked Sendable {
    let api: CUDADriverAPI
    let deviceCount: Int
    let driverVersion: String

    private init(api: CUDADriverAPI) throws {
        self.api = api
        try api.check(api.cuInit(0), "cuInit")
        var count: Int32 = 0
        try api.check(api.cuDeviceGetCount(&count), "cuDeviceGetCount")
        deviceCount = Int(count)
        var version: Int32 = 0
        _ = api.cuDriverGetVersion(&version)
        driverVersion = "\(version / 1000).\(version % 1000 / 10)"
    }

    private static let driverState: Result<CUDARuntime, CUDAError> = {
        switch CUDALibraryLoader.load(.driver) {
        case .failure(let e): return .failure(e)
        case .success(let lib):
            do { return .success(try CUDARuntime(api: try CUDADriverAPI(lib))) } catch let e as CUDAError {
                return .failure(e)
            } catch { return .failure(.missingSymbol("\(error)", lib.path)) }
        }
    }()

    static func driver() -> Result<CUDARuntime, CUDAError> { driverState }

    private static let cublasState: Result<CUBLASAPI, CUDAError> = {
        // Lt first, so cuBLAS resolves it from the same directory.
        if case .failure(let e) = CUDALibraryLoader.load(.cublasLt) { return .failure(e) }
        switch CUDALibraryLoader.load(.cublas) {
        case .failure(let e): return .failure(e)
        case .success(let lib):
            do { return .success(try CUBLASAPI(lib)) } catch let e as CUDAError { return .failure(e) } catch {
                return .failure(.missingSymbol("\(error)", lib.path))
            }
        }
    }()

    static func cublas() -> Result<CUBLASAPI, CUDAError> { cublasState }
}

/// The driver as the caching allocator's raw allocator.
final class CUDADriverAllocator: CUDARawAllocator {
    let api: CUDADriverAPI
    let context: CUhandle

    init(api: CUDADriverAPI, context: CUhandle) { self.api = api; self.context = context }

    func rawAllocate(_ byteCount: Int) -> UInt64? {
        _ = api.cuCtxSetCurrent(context)
        var address: CUdeviceptr = 0
        let status = api.cuMemAlloc(&address, byteCount)
        if status == 0 { return address }
        if status == CUDADriverAPI.outOfMemory { return nil }
        preconditionFailure("cuMemAlloc(\(byteCount)) failed: \(api.errorText(status))")
    }

    func rawFree(_ address: UInt64) {
        _ = api.cuCtxSetCurrent(context)
        _ = api.cuMemFree(address)
    }
}

/// One device: context, stream, cuBLAS, allocator, kernels.
final class CUDADeviceContext: @unchecked Sendable {
    let index: Int
    let api: CUDADriverAPI
    let blas: CUBLASAPI
    let context: CUhandle
    let stream: CUhandle
    let blasHandle: CUhandle
    let allocator: CUDACachingAllocator
    let info: CUDADeviceInfo
    private let lock = NSLock()
    private var functions: [String: CUhandle] = [:]
    /// Pinned host memory for transfers (grown on demand, reused).
    private var staging: UnsafeMutableRawPointer?
    private var stagingSize = 0
    let stagingLock = NSLock()
    /// The small-upload ring, made at the first small upload (`.some(nil)`: it could not be made).
    private var uploadRingState: CUDAUploadRing?? = nil
    private let uploadRingLock = NSLock()
    static let uploadSlotBytes = 1 << 20

    /// The small-upload ring (32 slots of 1 MiB) when `bytes` fits a slot; nil for a larger upload,
    /// or if the driver has no events or the pinned memory cannot be had.
    func uploadRingIfSmall(_ bytes: Int) -> CUDAUploadRing? {
        guard bytes <= Self.uploadSlotBytes else { return nil }
        uploadRingLock.lock(); defer { uploadRingLock.unlock() }
        if let made = uploadRingState { return made }
        let ring = makeUploadRing()
        uploadRingState = .some(ring)
        return ring
    }

    private func makeUploadRing() -> CUDAUploadRing? {
        guard let create = api.cuEventCreate, let record = api.cuEventRecord, let wait = api.cuEventSynchronize else { return nil }
        let (api, context, stream) = (self.api, self.context, self.stream)
        return CUDAUploadRing(slots: 32, slotBytes: Self.uploadSlotBytes, driver: CUDAUploadRingDriver(
            allocatePinned: { bytes in
                _ = api.cuCtxSetCurrent(context)
                var p: UnsafeMutableRawPointer?
                return api.cuMemAllocHost(&p, bytes) == 0 ? p : nil
            },
            createEvent: {
                _ = api.cuCtxSetCurrent(context)
                var event: CUhandle = nil
                return create(&event, CUDADriverAPI.eventDisableTiming) == 0 ? event : nil
            },
            copyAsync: { destination, source, bytes in
                _ = api.cuCtxSetCurrent(context)
                return api.cuMemcpyHtoDAsync(destination, source, bytes, stream)
            },
            record: { event in record(event, stream) },
            wait: { event in wait(event) }))
    }

    nonisolated(unsafe) private static var contexts: [Int: CUDADeviceContext] = [:]
    private static let contextsLock = NSLock()

    static func get(_ index: Int) throws -> CUDADeviceContext {
        contextsLock.lock(); defer { contextsLock.unlock() }
        if let ctx = contexts[index] { return ctx }
        let ctx = try CUDADeviceContext(index: index)
        contexts[index] = ctx
        return ctx
    }

    private init(index: Int) throws {
        let runtime = try CUDARuntime.driver().get()
        let api = runtime.api
        guard index >= 0 && index < runtime.deviceCount else { throw CUDAError.noDevice(index, runtime.deviceCount) }
        if let reason = NVRTC.unavailableReason { throw CUDAError.compile("(NVRTC)", reason) }
        let blas = try CUDARuntime.cublas().get()
        self.index = index
        self.api = api
        self.blas = blas
        var device: Int32 = 0
        try api.check(api.cuDeviceGet(&device, Int32(index)), "cuDeviceGet")
        var ctx: CUhandle = nil
        try api.check(api.cuDevicePrimaryCtxRetain(&ctx, device), "cuDevicePrimaryCtxRetain")
        try api.check(api.cuCtxSetCurrent(ctx), "cuCtxSetCurrent")
        context = ctx
        var s: CUhandle = nil
        try api.check(api.cuStreamCreate(&s, 0), "cuStreamCreate")
        stream = s
        var handle: CUhandle = nil
        try blas.check(blas.cublasCreate(&handle), "cublasCreate")
        try blas.check(blas.cublasSetStream(handle, s), "cublasSetStream")
        blasHandle = handle
        allocator = CUDACachingAllocator(raw: CUDADriverAllocator(api: api, context: ctx), splitsBlocks: CUDA.splitBlocks)
        if let text = ProcessInfo.processInfo.environment["TENSORKIT_CUDA_MEMORY_TRACE"] {
            if let mib = Double(text), mib >= 0, mib.isFinite {
                allocator.traceMinimumBytes = Int(mib * 1_048_576)
            } else {
                FileHandle.standardError.write(Data(
                    "TENSORKIT_CUDA_MEMORY_TRACE: expected the smallest block to trace in MiB (a number ≥ 0, e.g. 1), got '\(text)'; not tracing\n".utf8))
            }
        }

        var name = [CChar](repeating: 0, count: 256)
        _ = api.cuDeviceGetName(&name, 256, device)
        var memory = 0
        _ = api.cuDeviceTotalMem(&memory, device)
        var major: Int32 = 0, minor: Int32 = 0, sms: Int32 = 0
        _ = api.cuDeviceGetAttribute(&major, CUDADriverAPI.attributeComputeCapabilityMajor, device)
        _ = api.cuDeviceGetAttribute(&minor, CUDADriverAPI.attributeComputeCapabilityMinor, device)
        _ = api.cuDeviceGetAttribute(&sms, CUDADriverAPI.attributeMultiprocessorCount, device)
        var blasVersion: Int32 = 0
        _ = blas.cublasGetVersion(handle, &blasVersion)
        info = CUDADeviceInfo(
            index: index, name: String(cString: name), totalMemory: memory,
            computeCapability: (Int(major), Int(minor)), multiprocessors: Int(sms),
            driverVersion: runtime.driverVersion, nvrtcVersion: NVRTC.version ?? "?",
            cublasVersion: "\(blasVersion / 10000).\(blasVersion % 10000 / 100).\(blasVersion % 100)",
            libraries: ["driver": api.library.path, "nvrtc": NVRTC.libraryPath ?? "?", "cublas": blas.library.path])
    }

    /// Makes this device's context current on the calling thread (cheap; done before driver calls).
    @inline(__always) func makeCurrent() { _ = api.cuCtxSetCurrent(context) }

    func synchronize() throws {
        makeCurrent()
        try api.check(api.cuStreamSynchronize(stream), "cuStreamSynchronize")
    }

    /// The kernel `name` of `family` for `dtype`, compiled (or read from the disk cache) on first use.
    func function(_ family: String, _ dtype: DType?, _ name: String) -> CUhandle {
        let key = "\(family).\(dtype?.rawValue ?? "-").\(name)"
        lock.lock(); defer { lock.unlock() }
        if let f = functions[key] { return f }
        makeCurrent()
        let source = CUDAKernelSources.source(family: family, dtype: dtype)
        let cubin: [UInt8]
        do { cubin = try NVRTC.cachedCUBIN(source, arch: info.architecture) } catch {
            preconditionFailure("CUDA kernel \(source.name): \(error)")
        }
        var module: CUhandle = nil
        let status = cubin.withUnsafeBytes { api.cuModuleLoadData(&module, $0.baseAddress) }
        precondition(status == 0, "cuModuleLoadData(\(source.name), sm_\(info.architecture)): \(api.errorText(status))")
        for kernel in source.kernels {
            var f: CUhandle = nil
            let s = kernel.withCString { api.cuModuleGetFunction(&f, module, $0) }
            precondition(s == 0, "cuModuleGetFunction(\(kernel)): \(api.errorText(s))")
            functions["\(family).\(dtype?.rawValue ?? "-").\(kernel)"] = f
        }
        guard let f = functions[key] else { preconditionFailure("kernel \(name) is not in family \(family)") }
        return f
    }

    /// Pinned staging memory of at least `byteCount` bytes; call with `stagingLock` held.
    func stagingBuffer(_ byteCount: Int) -> UnsafeMutableRawPointer {
        if let staging, stagingSize >= byteCount { return staging }
        makeCurrent()
        if let staging { _ = api.cuMemFreeHost(staging) }
        var p: UnsafeMutableRawPointer?
        let size = max(byteCount, 1 << 20)
        let status = api.cuMemAllocHost(&p, size)
        precondition(status == 0 && p != nil, "cuMemAllocHost(\(size)): \(api.errorText(status))")
        staging = p
        stagingSize = size
        return p!
    }
}
