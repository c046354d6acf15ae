// CRC-32C (Castagnoli, reflected polynomial 0x82F63B78), the checksum of TensorBoard / TFRecord
// records, computed slicing-by-8 (eight 256-entry tables, eight bytes per step), and the "masked"
// form those records store (REFERENCES.md §6).
//
//   CRC32C.checksum(Array("123456789".utf8))          // 0xE3069283, the published check value
//   var crc = CRC32C(); crc.update(part1); crc.update(part2); crc.value   // incremental
//   CRC32C.masked(CRC32C.checksum(bytes))              // what a TFRecord stores

/// A running CRC-32C (Castagnoli). `value` is the finished checksum of everything passed to
/// `update` so far; updating further continues the same stream.
public struct CRC32C: Sendable, Equatable {
    /// The reflected Castagnoli polynomial.
    public static let polynomial: UInt32 = 0x82F6_3B78

    /// `tables[k][b]`: the CRC register after byte `b` followed by `k` zero bytes.
    static let tables: [[UInt32]] = {
        var tables = [[UInt32]](repeating: [UInt32](repeating: 0, count: 256), count: 8)
        for byte in 0..<256 {
            var crc = UInt32(byte)
            for _ in 0..<8 { crc = (crc & 1) != 0 ? (crc >> 1) ^ polynomial : crc >> 1 }
            tables[0][byte] = crc
        }
        for k in 1..<8 {
            for byte in 0..<256 {
                let previous = tables[k - 1][byte]
                tables[k][byte] = (previous >> 8) ^ tables[0][Int(previous & 0xFF)]
            }
        }
        return tables
    }()

    /// The inverted register (CRC-32C starts from 0xFFFFFFFF and inverts at the end).
    private var state: UInt32 = 0xFFFF_FFFF

    public init() {}

    /// The checksum of the bytes seen so far.
    public var value: UInt32 { ~state }

    /// Feeds more bytes.
    public mutating func update<Bytes: Sequence>(_ bytes: Bytes) where Bytes.Element == UInt8 {
        let done: Void? = bytes.withContiguousStorageIfAvailable { update(UnsafeRawBufferPointer($0)) }
        if done == nil { update(Array(bytes)) }
    }

    /// Feeds more bytes from raw memory.
    public mutating func update(_ buffer: UnsafeRawBufferPointer) {
        var crc = state
        var index = 0
        let count = buffer.count
        Self.tables.withUnsafeBufferPointer { tables in
            let t0 = tables[0], t1 = tables[1], t2 = tables[2], t3 = tables[3]
            let t4 = tables[4], t5 = tables[5], t6 = tables[6], t7 = tables[7]
            while count - index >= 8 {
                let lo = crc ^ (UInt32(buffer[index]) | UInt32(buffer[index + 1]) << 8
                    | UInt32(buffer[index + 2]) << 16 | UInt32(buffer[index + 3]) << 24)
                let hi = UInt32(buffer[index + 4]) | UInt32(buffer[index + 5]) << 8
                    | UInt32(buffer[index + 6]) << 16 | UInt32(buffer[index + 7]) << 24
                crc = t7[Int(lo & 0xFF)] ^ t6[Int((lo >> 8) & 0xFF)] ^ t5[Int((lo >> 16) & 0xFF)] ^ t4[Int(lo >> 24)]
                    ^ t3[Int(hi & 0xFF)] ^ t2[Int((hi >> 8) & 0xFF)] ^ t1[Int((hi >> 16) & 0xFF)] ^ t0[Int(hi >> 24)]
                index += 8
            }
            while index < count {
                crc = (crc >> 8) ^ t0[Int((crc ^ UInt32(buffer[index])) & 0xFF)]
                index += 1
            }
        }
        state = crc
    }

    /// The CRC-32C of `bytes`.
    public static func checksum<Bytes: Sequence>(_ bytes: Bytes) -> UInt32 where Bytes.Element == UInt8 {
        var crc = CRC32C()
        crc.update(bytes)
        return crc.value
    }

    /// TensorFlow's masking of a stored CRC: rotate right by 15 bits, add 0xa282ead8 (mod 2³²).
    public static func masked(_ crc: UInt32) -> UInt32 {
        ((crc >> 15) | (crc << 17)) &+ 0xA282_EAD8
    }

    /// The inverse of `masked`.
    public static func unmasked(_ masked: UInt32) -> UInt32 {
        let rotated = masked &- 0xA282_EAD8
        return (rotated >> 17) | (rotated << 15)
    }
}
