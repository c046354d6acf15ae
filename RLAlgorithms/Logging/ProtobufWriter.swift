// The small part of the protobuf wire format that TensorBoard's Event and Summary messages need:
// varints (int32/int64, negative values as ten-byte two's complement, as protobuf does), fixed64
// doubles, fixed32 floats and length-delimited fields (strings, bytes, nested messages). Fields are
// written in the order the caller writes them; the TensorBoard encoders write them by field number,
// which is what protobuf's own serialisers do, so the bytes match the reference's.
//
//   var image = ProtobufWriter()
//   image.int32(1, height); image.int32(2, width); image.int32(3, 3); image.bytes(4, png)
//   var value = ProtobufWriter()
//   value.string(1, "samples"); value.message(4, image)
//   value.bytes   // the encoded Summary.Value

/// Appends protobuf fields to a byte buffer.
public struct ProtobufWriter: Sendable {
    /// Protobuf wire types.
    public enum WireType: UInt8, Sendable {
        case varint = 0, fixed64 = 1, lengthDelimited = 2, fixed32 = 5
    }

    /// The encoded message so far.
    public private(set) var bytes: [UInt8] = []

    public init() {}

    /// Appends a base-128 varint (no tag).
    public mutating func rawVarint(_ value: UInt64) {
        var v = value
        while v >= 0x80 {
            bytes.append(UInt8(truncatingIfNeeded: v) | 0x80)
            v >>= 7
        }
        bytes.append(UInt8(v))
    }

    /// Appends a field key (field number and wire type).
    public mutating func key(_ field: Int, _ type: WireType) {
        precondition(field >= 1 && field <= 536_870_911, "protobuf field number \(field) out of range")
        rawVarint(UInt64(field) << 3 | UInt64(type.rawValue))
    }

    /// An int64 field (negative values take ten bytes).
    public mutating func int64(_ field: Int, _ value: Int64) {
        key(field, .varint)
        rawVarint(UInt64(bitPattern: value))
    }

    /// An int32 field (encoded as protobuf does: sign-extended to 64 bits).
    public mutating func int32(_ field: Int, _ value: Int32) {
        int64(field, Int64(value))
    }

    /// A double field (fixed64, little-endian IEEE 754).
    public mutating func double(_ field: Int, _ value: Double) {
        key(field, .fixed64)
        var bits = value.bitPattern
        for _ in 0..<8 {
            bytes.append(UInt8(truncatingIfNeeded: bits))
            bits >>= 8
        }
    }

    /// A float field (fixed32, little-endian IEEE 754).
    public mutating func float(_ field: Int, _ value: Float) {
        key(field, .fixed32)
        var bits = value.bitPattern
        for _ in 0..<4 {
            bytes.append(UInt8(truncatingIfNeeded: bits))
            bits >>= 8
        }
    }

    /// A bytes field.
    public mutating func bytes<Bytes: Collection>(_ field: Int, _ value: Bytes) where Bytes.Element == UInt8 {
        key(field, .lengthDelimited)
        rawVarint(UInt64(value.count))
        bytes.append(contentsOf: value)
    }

    /// A string field (UTF-8).
    public mutating func string(_ field: Int, _ value: String) {
        bytes(field, Array(value.utf8))
    }

    /// An embedded message field.
    public mutating func message(_ field: Int, _ value: ProtobufWriter) {
        bytes(field, value.bytes)
    }
}
