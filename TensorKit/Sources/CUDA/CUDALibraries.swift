#if canImport(Glibc)
import Glibc
#elseif canImport(Darwin)
import Darwin
#endif
import Foundation

// Run-time discovery of the NVIDIA libraries. Nothing CUDA is linked: each library is dlopen'ed
// from an ordered list of candidate paths and its entry points are looked up with dlsym
// (CUDADriverAPI / NVRTCAPI / CUBLASAPI), so the package builds and runs on machines without CUDA.
//
// Search order for NVRTC and cuBLAS (first hit wins), for each versioned file name:
//   1. $TENSORKIT_NVRTC_PATH / $TENSORKIT_CUBLAS_PATH (a file or a directory)
//   2. $CUDA_HOME, $CUDA_PATH: lib64/, lib/
//   3. /usr/local/cuda/lib64, /usr/local/cuda/lib
//   4. every directory of $LD_LIBRARY_PATH
//   5. NVIDIA's pip wheels under each Python site-packages directory found ($TENSORKIT_PYTHON_SITE_PACKAGES,
//      $VIRTUAL_ENV, $CONDA_PREFIX, $PYTHONPATH, ~/.local, /usr/local, /usr, /opt/conda):
//      nvidia/cu13/lib, nvidia/cuda_nvrtc/lib, nvidia/cublas/lib
//   6. the bare file name (the dynamic loader's own search: ld.so.cache, /usr/lib/…)
// The driver (libcuda.so.1) comes with the kernel module, so it is searched by name, then in the
// usual distribution directories (and WSL's /usr/lib/wsl/lib).

/// One of the dynamically loaded NVIDIA libraries.
public enum CUDALibraryKind: String, CaseIterable, Sendable {
    case driver = "CUDA driver"
    case nvrtc = "NVRTC"
    case cublasLt = "cuBLASLt"
    case cublas = "cuBLAS"

    /// File names tried in each directory, newest first.
    public var fileNames: [String] {
        switch self {
        case .driver: return ["libcuda.so.1", "libcuda.so"]
        case .nvrtc: return ["libnvrtc.so.13", "libnvrtc.so.12", "libnvrtc.so.11.2", "libnvrtc.so"]
        case .cublasLt: return ["libcublasLt.so.13", "libcublasLt.so.12", "libcublasLt.so.11", "libcublasLt.so"]
        case .cublas: return ["libcublas.so.13", "libcublas.so.12", "libcublas.so.11", "libcublas.so"]
        }
    }

    /// Environment variable naming an explicit file or directory.
    var overrideVariable: String? {
        switch self {
        case .driver: return "TENSORKIT_CUDA_DRIVER_PATH"
        case .nvrtc: return "TENSORKIT_NVRTC_PATH"
        case .cublas, .cublasLt: return "TENSORKIT_CUBLAS_PATH"
        }
    }

    /// Directories of NVIDIA's pip wheels, relative to site-packages.
    var wheelDirectories: [String] {
        switch self {
        case .driver: return []
        case .nvrtc: return ["nvidia/cu13/lib", "nvidia/cuda_nvrtc/lib", "nvidia/cu12/lib"]
        case .cublas, .cublasLt: return ["nvidia/cu13/lib", "nvidia/cublas/lib", "nvidia/cu12/lib"]
        }
    }
}

/// The candidate paths for each library, computed from an environment (pure, so tests can check it).
public struct CUDALibrarySearch: Sendable {
    public var environment: [String: String]
    /// Lists a directory's entries (used to find python3.* under lib/); nil when unreadable.
    public var listDirectory: @Sendable (String) -> [String]?

    public init(environment: [String: String] = ProcessInfo.processInfo.environment,
                listDirectory: @escaping @Sendable (String) -> [String]? = { try? FileManager.default.contentsOfDirectory(atPath: $0) }) {
        self.environment = environment
        self.listDirectory = listDirectory
    }

    /// Python site-packages directories that may hold NVIDIA wheels, in search order.
    public func sitePackagesDirectories() -> [String] {
        var result: [String] = []
        if let explicit = environment["TENSORKIT_PYTHON_SITE_PACKAGES"] {
            result += explicit.split(separator: ":").map(String.init)
        }
        if let path = environment["PYTHONPATH"] { result += path.split(separator: ":").map(String.init) }
        var prefixes: [String] = []
        for name in ["VIRTUAL_ENV", "CONDA_PREFIX"] { if let p = environment[name], !p.isEmpty { prefixes.append(p) } }
        if let home = environment["HOME"], !home.isEmpty { prefixes.append(home + "/.local") }
        prefixes += ["/usr/local", "/usr", "/opt/conda"]
        for prefix in prefixes {
            let lib = prefix + "/lib"
            let pythons = (listDirectory(lib) ?? []).filter { $0.hasPrefix("python3") }.sorted(by: >)
            for python in pythons {
                result.append("\(lib)/\(python)/site-packages")
                result.append("\(lib)/\(python)/dist-packages")
            }
            if prefix == "/usr" { result.append("/usr/lib/python3/dist-packages") }
        }
        var seen = Set<String>()
        return result.filter { !$0.isEmpty && seen.insert($0).inserted }
    }

    /// Directories searched for `kind`, in order (see the file comment).
    public func directories(for kind: CUDALibraryKind) -> [String] {
        var dirs: [String] = []
        if kind == .driver {
            dirs += ["/usr/lib/x86_64-linux-gnu", "/usr/lib/aarch64-linux-gnu", "/usr/lib64", "/usr/lib",
                     "/usr/local/nvidia/lib64", "/usr/lib/wsl/lib"]
        } else {
            for name in ["CUDA_HOME", "CUDA_PATH"] {
                if let home = environment[name], !home.isEmpty { dirs += [home + "/lib64", home + "/lib"] }
            }
            dirs += ["/usr/local/cuda/lib64", "/usr/local/cuda/lib"]
            if let path = environment["LD_LIBRARY_PATH"] { dirs += path.split(separator: ":").map(String.init) }
            for site in sitePackagesDirectories() { dirs += kind.wheelDirectories.map { site + "/" + $0 } }
        }
        var seen = Set<String>()
        return dirs.filter { !$0.isEmpty && seen.insert($0).inserted }
    }

    /// Every path tried for `kind`, in order; bare names last (the dynamic loader's own search),
    /// except for the driver, whose bare name comes first.
    public func candidates(for kind: CUDALibraryKind) -> [String] {
        var result: [String] = []
        if let variable = kind.overrideVariable, let explicit = environment[variable], !explicit.isEmpty {
            if explicit.hasSuffix(".so") || explicit.contains(".so.") {
                result.append(explicit)
            } else {
                result += kind.fileNames.map { explicit + "/" + $0 }
            }
        }
        if kind == .driver { result += kind.fileNames }
        for dir in directories(for: kind) { result += kind.fileNames.map { dir + "/" + $0 } }
        if kind != .driver { result += kind.fileNames }
        return result
    }
}

/// A dlopen'ed library; the handle stays open for the life of the process.
public final class DynamicLibrary: @unchecked Sendable {
    public let path: String
    let handle: UnsafeMutableRawPointer

    init(path: String, handle: UnsafeMutableRawPointer) { self.path = path; self.handle = handle }

    /// Opens the first candidate that loads; returns nil and the dlerror of the last attempt otherwise.
    static func open(_ candidates: [String]) -> (DynamicLibrary?, String?) {
        var lastError: String?
        for path in candidates {
            // Absolute paths that do not exist are skipped quietly (dlerror would only repeat that).
            if path.hasPrefix("/") && !FileManager.default.fileExists(atPath: path) { continue }
            if let handle = dlopen(path, RTLD_NOW | RTLD_GLOBAL) { return (DynamicLibrary(path: path, handle: handle), nil) }
            if let e = dlerror() { lastError = String(cString: e) }
        }
        return (nil, lastError)
    }

    /// The entry point `name` as a C function pointer of type `F`, or nil.
    func symbol<F>(_ name: String, as _: F.Type) -> F? {
        guard let raw = dlsym(handle, name) else { return nil }
        return unsafeBitCast(raw, to: F.self)
    }

    /// The entry point `name`; a missing symbol is reported as an error.
    func require<F>(_ name: String, as type: F.Type) throws -> F {
        guard let f = symbol(name, as: type) else { throw CUDAError.missingSymbol(name, path) }
        return f
    }
}

/// Errors of the CUDA backend's host side.
public enum CUDAError: Error, CustomStringConvertible {
    case libraryNotFound(CUDALibraryKind, [String], String?)
    case missingSymbol(String, String)
    case driver(String, Int32, String)
    case nvrtc(String, Int32, String)
    case cublas(String, Int32)
    case compile(String, String)
    case noDevice(Int, Int)

    public var description: String {
        switch self {
        case let .libraryNotFound(kind, paths, error):
            // Directories in search order, then the bare names left to the dynamic loader.
            var dirs: [String] = [], seen = Set<String>()
            for p in paths where p.hasPrefix("/") {
                let d = (p as NSString).deletingLastPathComponent
                if seen.insert(d).inserted { dirs.append(d) }
            }
            let names = kind.fileNames.joined(separator: ", ")
            return "\(kind.rawValue) not found (looked in: \((dirs + ["the dynamic loader's search path"]).joined(separator: ", "))"
                + " for \(names))" + (error.map { "; last dlopen error: \($0)" } ?? "")
        case let .missingSymbol(name, path): return "\(path) has no symbol \(name)"
        case let .driver(call, code, text): return "CUDA driver call \(call) failed: \(text) (\(code))"
        case let .nvrtc(call, code, text): return "NVRTC call \(call) failed: \(text) (\(code))"
        case let .cublas(call, code): return "cuBLAS call \(call) failed with status \(code)"
        case let .compile(name, log): return "NVRTC could not compile kernel source \(name):\n\(log)"
        case let .noDevice(index, count): return "no CUDA device \(index): \(count) device(s) present"
        }
    }
}

/// Loads each library once per process and remembers failures with the paths looked at.
enum CUDALibraryLoader {
    nonisolated(unsafe) private static var cache: [CUDALibraryKind: Result<DynamicLibrary, CUDAError>] = [:]
    private static let lock = NSLock()

    static func load(_ kind: CUDALibraryKind, search: CUDALibrarySearch = CUDALibrarySearch()) -> Result<DynamicLibrary, CUDAError> {
        lock.lock(); defer { lock.unlock() }
        if let cached = cache[kind] { return cached }
        var candidates = search.candidates(for: kind)
        // cuBLAS needs cuBLASLt from the same directory: load Lt first (RTLD_GLOBAL) and prefer its directory.
        if kind == .cublas, case .success(let lt)? = cache[.cublasLt] {
            let dir = (lt.path as NSString).deletingLastPathComponent
            if !dir.isEmpty { candidates = kind.fileNames.map { dir + "/" + $0 } + candidates }
        }
        let (library, error) = DynamicLibrary.open(candidates)
        // NVRTC dlopens its builtins library by name; preload it from NVRTC's own directory so a
        // wheel layout works without LD_LIBRARY_PATH.
        if kind == .nvrtc, let library {
            let dir = (library.path as NSString).deletingLastPathComponent
            let builtins = ((try? FileManager.default.contentsOfDirectory(atPath: dir.isEmpty ? "." : dir)) ?? [])
                .filter { $0.hasPrefix("libnvrtc-builtins.so") }.sorted()
            for name in builtins where !dir.isEmpty { _ = dlopen(dir + "/" + name, RTLD_NOW | RTLD_GLOBAL) }
        }
        let result: Result<DynamicLibrary, CUDAError> = library.map { .success($0) }
            ?? .failure(.libraryNotFound(kind, candidates, error))
        cache[kind] = result
        return result
    }
}
