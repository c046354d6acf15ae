import Foundation

/// Loads every tensor of a safetensors file onto `device`. For a CUDA device each tensor is
/// uploaded straight from the memory-mapped file through pinned staging memory (no intermediate
/// host copy); the mapping is released when the call returns.
public func loadSafeTensors(_ path: String, device: Device) throws -> [String: Tensor] {
    let host = try loadSafeTensors(path)
    if device == .cpu { return host }
    return host.mapValues { $0.copied(to: device) }
}
