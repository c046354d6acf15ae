import Foundation

/// A reference-counted block of device memory. Tensors are views over a storage.
/// For the CPU the pointer is host memory; a GPU backend stores its device address here.
public final class Storage: @unchecked Sendable {
    public let device: Device
    public let byteCount: Int
    public let pointer: UnsafeMutableRawPointer
    private let release: ((UnsafeMutableRawPointer, Int) -> Void)?
    /// Counts writes into this storage through a backend's `copy(_:into:)` and `fill` (so `assign`,
    /// `storeView`, module loading and every optimizer update on a GPU): what a cache derived from
    /// the contents compares (CUDA's channels-last convolution weights). Writes through `pointer`
    /// itself are not counted.
    public internal(set) var version: UInt64 = 0
    /// True for a private (copy-on-write) mapping of a file made by `SafeTensorsFile(path:)`: its
    /// clean pages can be dropped and read again from the file (`SafeTensorsFile.releasePages(of:)`).
    var isPrivateFileMapping = false

    /// Zero-filled, 64-byte aligned host memory.
    public init(cpuByteCount byteCount: Int) {
        precondition(byteCount >= 0, "negative storage size")
        let count = max(byteCount, 1)
        let pointer = UnsafeMutableRawPointer.allocate(byteCount: count, alignment: 64)
        pointer.initializeMemory(as: UInt8.self, repeating: 0, count: count)
        self.device = .cpu
        self.byteCount = byteCount
        self.pointer = pointer
        self.release = { pointer, _ in pointer.deallocate() }
    }

    /// 64-byte aligned host memory left uninitialised, for outputs a kernel overwrites completely
    /// (zeroing a large output costs as much as a cheap elementwise op).
    public init(cpuUninitializedByteCount byteCount: Int) {
        precondition(byteCount >= 0, "negative storage size")
        let pointer = UnsafeMutableRawPointer.allocate(byteCount: max(byteCount, 1), alignment: 64)
        self.device = .cpu
        self.byteCount = byteCount
        self.pointer = pointer
        self.release = { pointer, _ in pointer.deallocate() }
    }

    /// Wraps memory owned elsewhere (a memory-mapped file, a device allocation).
    /// `release` runs once when the last tensor using this storage goes away.
    public init(pointer: UnsafeMutableRawPointer, byteCount: Int, device: Device,
                release: ((UnsafeMutableRawPointer, Int) -> Void)?) {
        self.device = device
        self.byteCount = byteCount
        self.pointer = pointer
        self.release = release
    }

    deinit { release?(pointer, byteCount) }
}
