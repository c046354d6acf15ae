import Foundation

// Entry points of the CUDA driver API, NVRTC and cuBLAS, declared by hand as C function-pointer
// types (no CUDA headers, no link-time dependency) and resolved with dlsym. Only what TensorKit
// uses. Handles are opaque pointers; CUdeviceptr is a 64-bit integer; CUresult, nvrtcResult and
// cublasStatus_t are C enums (Int32), 0 meaning success.

typealias CUresult = Int32
typealias CUdeviceptr = UInt64
typealias CUhandle = UnsafeMutableRawPointer?

/// The driver API (libcuda.so.1).
struct CUDADriverAPI {
    typealias FnInit = @convention(c) (UInt32) -> CUresult
    typealias FnIntOut = @convention(c) (UnsafeMutablePointer<Int32>?) -> CUresult
    typealias FnDeviceGet = @convention(c) (UnsafeMutablePointer<Int32>?, Int32) -> CUresult
    typealias FnDeviceGetName = @convention(c) (UnsafeMutablePointer<CChar>?, Int32, Int32) -> CUresult
    typealias FnDeviceTotalMem = @convention(c) (UnsafeMutablePointer<Int>?, Int32) -> CUresult
    typealias FnDeviceGetAttribute = @convention(c) (UnsafeMutablePointer<Int32>?, Int32, Int32) -> CUresult
    typealias FnPrimaryCtxRetain = @convention(c) (UnsafeMutablePointer<CUhandle>?, Int32) -> CUresult
    typealias FnHandleIn = @convention(c) (CUhandle) -> CUresult
    typealias FnStreamCreate = @convention(c) (UnsafeMutablePointer<CUhandle>?, UInt32) -> CUresult
    typealias FnMemAlloc = @convention(c) (UnsafeMutablePointer<CUdeviceptr>?, Int) -> CUresult
    typealias FnMemFree = @convention(c) (CUdeviceptr) -> CUresult
    typealias FnMemAllocHost = @convention(c) (UnsafeMutablePointer<UnsafeMutableRawPointer?>?, Int) -> CUresult
    typealias FnMemFreeHost = @convention(c) (UnsafeMutableRawPointer?) -> CUresult
    typealias FnMemcpyHtoDAsync = @convention(c) (CUdeviceptr, UnsafeRawPointer?, Int, CUhandle) -> CUresult
    typealias FnMemcpyDtoHAsync = @convention(c) (UnsafeMutableRawPointer?, CUdeviceptr, Int, CUhandle) -> CUresult
    typealias FnMemcpyDtoDAsync = @convention(c) (CUdeviceptr, CUdeviceptr, Int, CUhandle) -> CUresult
    typealias FnMemsetD8Async = @convention(c) (CUdeviceptr, UInt8, Int, CUhandle) -> CUresult
    typealias FnMemGetInfo = @convention(c) (UnsafeMutablePointer<Int>?, UnsafeMutablePointer<Int>?) -> CUresult
    typealias FnModuleLoadData = @convention(c) (UnsafeMutablePointer<CUhandle>?, UnsafeRawPointer?) -> CUresult
    typealias FnModuleGetFunction = @convention(c) (UnsafeMutablePointer<CUhandle>?, CUhandle, UnsafePointer<CChar>?) -> CUresult
    typealias FnLaunchKernel = @convention(c) (CUhandle, UInt32, UInt32, UInt32, UInt32, UInt32, UInt32, UInt32, CUhandle,
                                               UnsafeMutablePointer<UnsafeMutableRawPointer?>?,
                                               UnsafeMutablePointer<UnsafeMutableRawPointer?>?) -> CUresult
    typealias FnGetErrorString = @convention(c) (CUresult, UnsafeMutablePointer<UnsafePointer<CChar>?>?) -> CUresult
    typealias FnEventCreate = @convention(c) (UnsafeMutablePointer<CUhandle>?, UInt32) -> CUresult
    typealias FnEventRecord = @convention(c) (CUhandle, CUhandle) -> CUresult

    let library: DynamicLibrary
    let cuInit: FnInit
    let cuDriverGetVersion: FnIntOut
    let cuDeviceGetCount: FnIntOut
    let cuDeviceGet: FnDeviceGet
    let cuDeviceGetName: FnDeviceGetName
    let cuDeviceTotalMem: FnDeviceTotalMem
    let cuDeviceGetAttribute: FnDeviceGetAttribute
    let cuDevicePrimaryCtxRetain: FnPrimaryCtxRetain
    let cuCtxSetCurrent: FnHandleIn
    let cuStreamCreate: FnStreamCreate
    let cuStreamSynchronize: FnHandleIn
    let cuMemAlloc: FnMemAlloc
    let cuMemFree: FnMemFree
    let cuMemAllocHost: FnMemAllocHost
    let cuMemFreeHost: FnMemFreeHost
    let cuMemcpyHtoDAsync: FnMemcpyHtoDAsync
    let cuMemcpyDtoHAsync: FnMemcpyDtoHAsync
    let cuMemcpyDtoDAsync: FnMemcpyDtoDAsync
    let cuMemsetD8Async: FnMemsetD8Async
    let cuMemGetInfo: FnMemGetInfo
    let cuModuleLoadData: FnModuleLoadData
    let cuModuleGetFunction: FnModuleGetFunction
    let cuLaunchKernel: FnLaunchKernel
    let cuGetErrorString: FnGetErrorString
    let cuGetErrorName: FnGetErrorString
    /// Events, for the small-upload ring (`CUDAUploadRing`); nil if the driver lacks them (uploads then wait).
    let cuEventCreate: FnEventCreate?
    let cuEventRecord: FnEventRecord?
    let cuEventSynchronize: FnHandleIn?

    init(_ lib: DynamicLibrary) throws {
        library = lib
        cuInit = try lib.require("cuInit", as: FnInit.self)
        cuDriverGetVersion = try lib.require("cuDriverGetVersion", as: FnIntOut.self)
        cuDeviceGetCount = try lib.require("cuDeviceGetCount", as: FnIntOut.self)
        cuDeviceGet = try lib.require("cuDeviceGet", as: FnDeviceGet.self)
        cuDeviceGetName = try lib.require("cuDeviceGetName", as: FnDeviceGetName.self)
        cuDeviceTotalMem = try lib.require("cuDeviceTotalMem_v2", as: FnDeviceTotalMem.self)
        cuDeviceGetAttribute = try lib.require("cuDeviceGetAttribute", as: FnDeviceGetAttribute.self)
        cuDevicePrimaryCtxRetain = try lib.require("cuDevicePrimaryCtxRetain", as: FnPrimaryCtxRetain.self)
        cuCtxSetCurrent = try lib.require("cuCtxSetCurrent", as: FnHandleIn.self)
        cuStreamCreate = try lib.require("cuStreamCreate", as: FnStreamCreate.self)
        cuStreamSynchronize = try lib.require("cuStreamSynchronize", as: FnHandleIn.self)
        cuMemAlloc = try lib.require("cuMemAlloc_v2", as: FnMemAlloc.self)
        cuMemFree = try lib.require("cuMemFree_v2", as: FnMemFree.self)
        cuMemAllocHost = try lib.require("cuMemAllocHost_v2", as: FnMemAllocHost.self)
        cuMemFreeHost = try lib.require("cuMemFreeHost", as: FnMemFreeHost.self)
        cuMemcpyHtoDAsync = try lib.require("cuMemcpyHtoDAsync_v2", as: FnMemcpyHtoDAsync.self)
        cuMemcpyDtoHAsync = try lib.require("cuMemcpyDtoHAsync_v2", as: FnMemcpyDtoHAsync.self)
        cuMemcpyDtoDAsync = try lib.require("cuMemcpyDtoDAsync_v2", as: FnMemcpyDtoDAsync.self)
        cuMemsetD8Async = try lib.require("cuMemsetD8Async", as: FnMemsetD8Async.self)
        cuMemGetInfo = try lib.require("cuMemGetInfo_v2", as: FnMemGetInfo.self)
        cuModuleLoadData = try lib.require("cuModuleLoadData", as: FnModuleLoadData.self)
        cuModuleGetFunction = try lib.require("cuModuleGetFunction", as: FnModuleGetFunction.self)
        cuLaunchKernel = try lib.require("cuLaunchKernel", as: FnLaunchKernel.self)
        cuGetErrorString = try lib.require("cuGetErrorString", as: FnGetErrorString.self)
        cuGetErrorName = try lib.require("cuGetErrorName", as: FnGetErrorString.self)
        cuEventCreate = lib.symbol("cuEventCreate", as: FnEventCreate.self)
        cuEventRecord = lib.symbol("cuEventRecord", as: FnEventRecord.self)
        cuEventSynchronize = lib.symbol("cuEventSynchronize", as: FnHandleIn.self)
    }

    /// "CUDA_ERROR_OUT_OF_MEMORY: out of memory".
    func errorText(_ code: CUresult) -> String {
        var name: UnsafePointer<CChar>?, text: UnsafePointer<CChar>?
        _ = cuGetErrorName(code, &name)
        _ = cuGetErrorString(code, &text)
        return "\(name.map { String(cString: $0) } ?? "CUDA error"): \(text.map { String(cString: $0) } ?? "unknown")"
    }

    /// Throws a descriptive error unless `code` is CUDA_SUCCESS.
    func check(_ code: CUresult, _ call: String) throws {
        if code != 0 { throw CUDAError.driver(call, code, errorText(code)) }
    }

    static let outOfMemory: CUresult = 2
    static let eventDisableTiming: UInt32 = 2
    static let attributeMultiprocessorCount: Int32 = 16
    static let attributeComputeCapabilityMajor: Int32 = 75
    static let attributeComputeCapabilityMinor: Int32 = 76
}

/// NVRTC (libnvrtc.so.*): a CPU-only library, usable without a GPU (the compile test runs it in CI).
struct NVRTCAPI {
    typealias Program = OpaquePointer?
    typealias FnVersion = @convention(c) (UnsafeMutablePointer<Int32>?, UnsafeMutablePointer<Int32>?) -> Int32
    typealias FnCreate = @convention(c) (UnsafeMutablePointer<Program>?, UnsafePointer<CChar>?, UnsafePointer<CChar>?, Int32,
                                         UnsafePointer<UnsafePointer<CChar>?>?, UnsafePointer<UnsafePointer<CChar>?>?) -> Int32
    typealias FnCompile = @convention(c) (Program, Int32, UnsafePointer<UnsafePointer<CChar>?>?) -> Int32
    typealias FnGetSize = @convention(c) (Program, UnsafeMutablePointer<Int>?) -> Int32
    typealias FnGetBytes = @convention(c) (Program, UnsafeMutablePointer<CChar>?) -> Int32
    typealias FnDestroy = @convention(c) (UnsafeMutablePointer<Program>?) -> Int32
    typealias FnErrorString = @convention(c) (Int32) -> UnsafePointer<CChar>?

    let library: DynamicLibrary
    let nvrtcVersion: FnVersion
    let nvrtcCreateProgram: FnCreate
    let nvrtcCompileProgram: FnCompile
    let nvrtcGetProgramLogSize: FnGetSize
    let nvrtcGetProgramLog: FnGetBytes
    let nvrtcGetCUBINSize: FnGetSize
    let nvrtcGetCUBIN: FnGetBytes
    let nvrtcDestroyProgram: FnDestroy
    let nvrtcGetErrorString: FnErrorString

    init(_ lib: DynamicLibrary) throws {
        library = lib
        nvrtcVersion = try lib.require("nvrtcVersion", as: FnVersion.self)
        nvrtcCreateProgram = try lib.require("nvrtcCreateProgram", as: FnCreate.self)
        nvrtcCompileProgram = try lib.require("nvrtcCompileProgram", as: FnCompile.self)
        nvrtcGetProgramLogSize = try lib.require("nvrtcGetProgramLogSize", as: FnGetSize.self)
        nvrtcGetProgramLog = try lib.require("nvrtcGetProgramLog", as: FnGetBytes.self)
        nvrtcGetCUBINSize = try lib.require("nvrtcGetCUBINSize", as: FnGetSize.self)
        nvrtcGetCUBIN = try lib.require("nvrtcGetCUBIN", as: FnGetBytes.self)
        nvrtcDestroyProgram = try lib.require("nvrtcDestroyProgram", as: FnDestroy.self)
        nvrtcGetErrorString = try lib.require("nvrtcGetErrorString", as: FnErrorString.self)
    }

    func check(_ code: Int32, _ call: String) throws {
        if code != 0 {
            throw CUDAError.nvrtc(call, code, nvrtcGetErrorString(code).map { String(cString: $0) } ?? "unknown")
        }
    }
}

/// cuBLAS (libcublas.so.*), with libcublasLt loaded first from the same place.
struct CUBLASAPI {
    typealias FnCreate = @convention(c) (UnsafeMutablePointer<CUhandle>?) -> Int32
    typealias FnSetStream = @convention(c) (CUhandle, CUhandle) -> Int32
    typealias FnGetVersion = @convention(c) (CUhandle, UnsafeMutablePointer<Int32>?) -> Int32
    typealias FnGemmStridedBatchedEx = @convention(c) (
        CUhandle, Int32, Int32, Int32, Int32, Int32,
        UnsafeRawPointer?, UnsafeRawPointer?, Int32, Int32, Int64,
        UnsafeRawPointer?, Int32, Int32, Int64,
        UnsafeRawPointer?, UnsafeMutableRawPointer?, Int32, Int32, Int64,
        Int32, Int32, Int32) -> Int32

    let library: DynamicLibrary
    let cublasCreate: FnCreate
    let cublasSetStream: FnSetStream
    let cublasGetVersion: FnGetVersion
    let cublasGemmStridedBatchedEx: FnGemmStridedBatchedEx

    init(_ lib: DynamicLibrary) throws {
        library = lib
        cublasCreate = try lib.require("cublasCreate_v2", as: FnCreate.self)
        cublasSetStream = try lib.require("cublasSetStream_v2", as: FnSetStream.self)
        cublasGetVersion = try lib.require("cublasGetVersion_v2", as: FnGetVersion.self)
        cublasGemmStridedBatchedEx = try lib.require("cublasGemmStridedBatchedEx", as: FnGemmStridedBatchedEx.self)
    }

    func check(_ code: Int32, _ call: String) throws {
        if code != 0 { throw CUDAError.cublas(call, code) }
    }

    // cublasOperation_t, cudaDataType_t, cublasComputeType_t, cublasGemmAlgo_t values.
    static let opN: Int32 = 0, opT: Int32 = 1
    static let r32F: Int32 = 0, r64F: Int32 = 1, r16F: Int32 = 2, r16BF: Int32 = 14
    static let compute32F: Int32 = 68, compute32FFastTF32: Int32 = 77, compute64F: Int32 = 70
    static let gemmDefault: Int32 = -1
}
