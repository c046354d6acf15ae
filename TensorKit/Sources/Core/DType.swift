/// Element types a tensor can hold. Compute on the CPU runs in float32 or float64;
/// float16 and bfloat16 are storage formats (converted on copy), int32/int64 hold indices.
public enum DType: String, Sendable, CaseIterable, Codable, CustomStringConvertible {
    case float32, float64, float16, bfloat16, int32, int64, uint8, bool

    /// Bytes per element.
    public var byteSize: Int {
        switch self {
        case .float64, .int64: return 8
        case .float32, .int32: return 4
        case .float16, .bfloat16: return 2
        case .uint8, .bool: return 1
        }
    }

    public var isFloatingPoint: Bool {
        switch self {
        case .float32, .float64, .float16, .bfloat16: return true
        default: return false
        }
    }

    /// The dtypes the CPU backend computes in (everything else must be converted first).
    public var isCPUComputeType: Bool { self == .float32 || self == .float64 }

    /// The name safetensors uses for this dtype.
    public var safetensorsName: String {
        switch self {
        case .float32: return "F32"
        case .float64: return "F64"
        case .float16: return "F16"
        case .bfloat16: return "BF16"
        case .int32: return "I32"
        case .int64: return "I64"
        case .uint8: return "U8"
        case .bool: return "BOOL"
        }
    }

    public init?(safetensorsName: String) {
        guard let match = DType.allCases.first(where: { $0.safetensorsName == safetensorsName }) else { return nil }
        self = match
    }

    public var description: String { rawValue }
}

/// bfloat16 <-> float32 conversion (round to nearest even, NaN kept quiet).
@inline(__always) public func bfloat16Bits(_ value: Float) -> UInt16 {
    let bits = value.bitPattern
    if value.isNaN { return UInt16(truncatingIfNeeded: (bits >> 16) | 0x0040) }
    let rounding: UInt32 = 0x7FFF + ((bits >> 16) & 1)
    return UInt16(truncatingIfNeeded: (bits &+ rounding) >> 16)
}

@inline(__always) public func floatFromBFloat16Bits(_ bits: UInt16) -> Float {
    Float(bitPattern: UInt32(bits) << 16)
}
