import Foundation

// Kernel compilation: NVRTC turns a CUDAKernelSource into a CUBIN for one architecture (sm_80,
// sm_90, …). Results are cached on disk by (source hash, arch, NVRTC version), so each kernel is
// compiled once per machine; the cache directory is $TENSORKIT_KERNEL_CACHE, else
// $XDG_CACHE_HOME/tensorkit/kernels, else ~/.cache/tensorkit/kernels (unwritable: no disk cache).

/// The output of one NVRTC compilation.
public struct NVRTCCompileResult: Sendable {
    public let cubin: [UInt8]
    /// NVRTC's log (warnings and errors); empty for a clean compile.
    public let log: String
}

/// The disk-cache identity of a compiled kernel source.
public struct CUDAKernelCacheKey: Hashable, Sendable {
    public let sourceHash: String
    public let arch: Int
    public let nvrtcVersion: String

    public init(source: String, arch: Int, nvrtcVersion: String) {
        self.sourceHash = CUDAKernelCacheKey.hash(source)
        self.arch = arch
        self.nvrtcVersion = nvrtcVersion
    }

    /// "<hash>-sm_80-nvrtc13.0.cubin"
    public var fileName: String { "\(sourceHash)-sm_\(arch)-nvrtc\(nvrtcVersion).cubin" }

    /// 128-bit FNV-1a (two 64-bit lanes with different offsets) as 32 hex digits.
    public static func hash(_ text: String) -> String {
        var h1: UInt64 = 0xcbf2_9ce4_8422_2325, h2: UInt64 = 0x8422_2325_cbf2_9ce4
        for byte in text.utf8 {
            h1 = (h1 ^ UInt64(byte)) &* 0x0000_0100_0000_01B3
            h2 = (h2 ^ UInt64(byte)) &* 0x0000_0100_0000_01B3
            h2 = (h2 << 7) | (h2 >> 57)
        }
        return String(format: "%016llx%016llx", h1, h2)
    }

    /// The cache directory for `environment` (see the file comment).
    public static func cacheDirectory(environment: [String: String] = ProcessInfo.processInfo.environment) -> String {
        if let explicit = environment["TENSORKIT_KERNEL_CACHE"], !explicit.isEmpty { return explicit }
        if let xdg = environment["XDG_CACHE_HOME"], !xdg.isEmpty { return xdg + "/tensorkit/kernels" }
        return (environment["HOME"] ?? NSTemporaryDirectory()) + "/.cache/tensorkit/kernels"
    }
}

/// NVRTC, loaded on first use.
public enum NVRTC {
    private static let state: Result<NVRTCAPI, CUDAError> = {
        switch CUDALibraryLoader.load(.nvrtc) {
        case .failure(let error): return .failure(error)
        case .success(let lib):
            do { return .success(try NVRTCAPI(lib)) } catch let e as CUDAError { return .failure(e) } catch {
                return .failure(.missingSymbol("\(error)", lib.path))
            }
        }
    }()

    static func api() throws -> NVRTCAPI { try state.get() }

    public static var isAvailable: Bool { (try? state.get()) != nil }

    /// Why NVRTC cannot be used, with every path looked at; nil when it loaded.
    public static var unavailableReason: String? {
        if case .failure(let e) = state { return e.description }
        return nil
    }

    /// The loaded library's path.
    public static var libraryPath: String? { (try? state.get())?.library.path }

    /// "13.0"-style version of the loaded NVRTC, or nil.
    public static var version: String? {
        guard let api = try? state.get() else { return nil }
        var major: Int32 = 0, minor: Int32 = 0
        guard api.nvrtcVersion(&major, &minor) == 0 else { return nil }
        return "\(major).\(minor)"
    }

    /// NVRTC options used for every kernel (architecture added per call).
    public static let baseOptions = ["--std=c++17", "--device-as-default-execution-space"]

    /// Compiles `source` to a CUBIN for sm_`arch`. Throws `CUDAError.compile` with the log on errors;
    /// warnings come back in `log`.
    public static func compile(_ source: CUDAKernelSource, arch: Int) throws -> NVRTCCompileResult {
        let api = try api()
        var program: NVRTCAPI.Program = nil
        try api.check(source.source.withCString { text in
            source.name.withCString { name in api.nvrtcCreateProgram(&program, text, name, 0, nil, nil) }
        }, "nvrtcCreateProgram")
        defer { _ = api.nvrtcDestroyProgram(&program) }
        let options = baseOptions + ["--gpu-architecture=sm_\(arch)"]
        let cOptions = options.map { strdup($0) }
        defer { cOptions.forEach { free($0) } }
        let status = cOptions.map { UnsafePointer($0) }.withUnsafeBufferPointer { buffer in
            api.nvrtcCompileProgram(program, Int32(buffer.count), buffer.baseAddress)
        }
        var logSize = 0
        _ = api.nvrtcGetProgramLogSize(program, &logSize)
        var logBytes = [CChar](repeating: 0, count: max(logSize, 1))
        _ = api.nvrtcGetProgramLog(program, &logBytes)
        let log = String(cString: logBytes).trimmingCharacters(in: .whitespacesAndNewlines)
        if status != 0 { throw CUDAError.compile("\(source.name) for sm_\(arch)", log) }
        var size = 0
        try api.check(api.nvrtcGetCUBINSize(program, &size), "nvrtcGetCUBINSize")
        var cubin = [CChar](repeating: 0, count: size)
        try api.check(api.nvrtcGetCUBIN(program, &cubin), "nvrtcGetCUBIN")
        return NVRTCCompileResult(cubin: cubin.map { UInt8(bitPattern: $0) }, log: log)
    }

    /// The CUBIN for `source` on sm_`arch`, from the disk cache or compiled (and then cached).
    static func cachedCUBIN(_ source: CUDAKernelSource, arch: Int) throws -> [UInt8] {
        let key = CUDAKernelCacheKey(source: source.source, arch: arch, nvrtcVersion: version ?? "unknown")
        let dir = CUDAKernelCacheKey.cacheDirectory()
        let path = dir + "/" + key.fileName
        if let data = FileManager.default.contents(atPath: path), !data.isEmpty { return [UInt8](data) }
        let result = try compile(source, arch: arch)
        // Best effort: write to a temporary name, then rename (concurrent processes never see half a file).
        if (try? FileManager.default.createDirectory(atPath: dir, withIntermediateDirectories: true)) != nil {
            let temp = path + ".\(getpid()).tmp"
            if FileManager.default.createFile(atPath: temp, contents: Data(result.cubin)) {
                if rename(temp, path) != 0 { unlink(temp) }
            }
        }
        return result.cubin
    }
}
