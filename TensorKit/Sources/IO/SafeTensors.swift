import Foundation
#if canImport(Glibc)
import Glibc
#elseif canImport(Musl)
import Musl
#elseif canImport(Darwin)
import Darwin
#endif

// safetensors file layout:
//   u64 little-endian N | N bytes of UTF-8 JSON header (starts with '{', may be padded with
//   spaces) | data buffer.
// Each header entry is {"dtype": "F32", "shape": [..], "data_offsets": [begin, end]} with
// offsets relative to the data buffer; the optional "__metadata__" entry maps strings to strings.
//
// The validation mirrors the reference Rust crate (safetensors/src/tensor.rs, read_metadata and
// Metadata::validate): the header length limit, offsets that tile the buffer exactly in order,
// byte lengths that match shape × dtype size with overflow-checked arithmetic, and a file length
// that matches. Everything is checked before any tensor is handed out, so a file that opens
// cannot make tensor(_:) read out of bounds. Malformed input throws; it never traps.

// MARK: - Errors

/// A safetensors file (or buffer) that could not be read or written. The message always names
/// the file, and the tensor where one is involved.
public struct SafeTensorsError: Error, LocalizedError, CustomStringConvertible, Sendable {
    public enum Kind: String, Sendable {
        /// Opening, mapping, reading or writing the file failed.
        case io
        /// Fewer than the 8 bytes of the header length.
        case headerTooSmall
        /// The header length exceeds the 100 MB limit.
        case headerTooLarge
        /// The header length points past the end of the file.
        case invalidHeaderLength
        /// The header is not UTF-8, does not start with '{', or is not valid JSON.
        case invalidHeader
        /// A tensor entry is malformed: not an object, missing/duplicate fields, unknown dtype,
        /// a shape or data_offsets that are not lists of non-negative integers.
        case invalidTensorInfo
        /// Offsets are not sorted and contiguous from 0 (a gap, an overlap, end before begin).
        case invalidOffset
        /// A tensor's byte length does not equal numel × dtype size.
        case sizeMismatch
        /// numel × dtype size does not fit in an Int.
        case overflow
        /// The file length is not exactly 8 + header length + data length.
        case incompleteBuffer
        /// `__metadata__` is not an object of string values.
        case invalidMetadata
        /// `tensor(_:)` / `info(_:)` asked for a name the file does not have.
        case tensorNotFound
        /// The writer was given something it cannot store (non-CPU tensor, reserved name).
        case unsupportedTensor
    }

    public let kind: Kind
    /// The file path (or the name given to an in-memory buffer).
    public let path: String
    /// The tensor concerned, if any.
    public let tensor: String?
    /// What was expected and what was found.
    public let detail: String

    public init(_ kind: Kind, path: String, tensor: String? = nil, _ detail: String) {
        self.kind = kind
        self.path = path
        self.tensor = tensor
        self.detail = detail
    }

    public var description: String {
        var text = "safetensors file '\(path)'"
        if let tensor { text += ", tensor '\(tensor)'" }
        return text + ": " + detail
    }

    public var errorDescription: String? { description }
}

// MARK: - Parsed header

/// The validated header of a safetensors file: where each tensor lives in the data buffer.
public struct SafeTensorsHeader: Sendable, Equatable {
    public struct Entry: Sendable, Equatable {
        public let name: String
        public let dtype: DType
        public let shape: [Int]
        /// Byte range within the data buffer (which starts at `SafeTensorsHeader.dataStart`).
        public let byteRange: Range<Int>
    }

    /// N, the JSON header length in bytes (including padding).
    public let headerByteCount: Int
    /// Tensors by name.
    public let entries: [String: Entry]
    /// The `__metadata__` map, or nil when the header has none.
    public let metadata: [String: String]?

    /// Tensor names in sorted (UTF-8 byte) order.
    public let keys: [String]

    /// File offset of the data buffer.
    public var dataStart: Int { 8 + headerByteCount }

    init(headerByteCount: Int, entries: [String: Entry], metadata: [String: String]?) {
        self.headerByteCount = headerByteCount
        self.entries = entries
        self.metadata = metadata
        self.keys = entries.keys.sorted(by: utf8Precedes)
    }
}

/// Sort order for names: UTF-8 byte order, the order Rust's `str::cmp` gives (Swift's `<` on
/// String compares by Unicode canonical equivalence instead).
@inline(__always) func utf8Precedes(_ a: String, _ b: String) -> Bool {
    a.utf8.lexicographicallyPrecedes(b.utf8)
}

// MARK: - File

/// A safetensors file opened for reading.
///
/// The file is memory-mapped privately (copy-on-write): tensors returned by `tensor(_:)` are
/// views into the mapping with no copy, and writing to them changes only this process's pages,
/// never the file (but does show through every other tensor viewing the same bytes, as with
/// any view). The mapping stays alive as long as this value or any tensor from it does.
/// Replacing a file while it is mapped is safe (our writer renames a new file over it);
/// truncating it in place is not (the kernel would raise SIGBUS on access), as with any mmap.
public struct SafeTensorsFile: Sendable {
    /// The path the file was opened from (or the name given to an in-memory buffer).
    public let path: String
    public let header: SafeTensorsHeader
    /// The whole file; tensor views share it.
    private let storage: Storage

    /// Memory-maps and validates the file at `path`.
    public init(path: String) throws {
        self.path = path
        let storage = try mapFile(path)
        self.storage = storage
        self.header = try SafeTensorsFile.parse(
            bytes: UnsafeRawBufferPointer(start: storage.pointer, count: storage.byteCount), path: path)
    }

    /// Validates a safetensors image held in memory (copied into tensor storage).
    public init(bytes: [UInt8], path: String = "<memory>") throws {
        let storage = Storage(cpuByteCount: bytes.count)
        bytes.withUnsafeBytes { source in
            if let base = source.baseAddress { storage.pointer.copyMemory(from: base, byteCount: source.count) }
        }
        self.path = path
        self.storage = storage
        self.header = try SafeTensorsFile.parse(
            bytes: UnsafeRawBufferPointer(start: storage.pointer, count: bytes.count), path: path)
    }

    /// Validates a whole safetensors image in `bytes` without copying it. This is the single
    /// validation path used by the file reader (and the fuzzer). `path` only labels errors.
    public static func parse(bytes: UnsafeRawBufferPointer, path: String) throws -> SafeTensorsHeader {
        try parseSafeTensorsHeader(bytes, path: path)
    }

    /// Tensor names in sorted order.
    public var keys: [String] { header.keys }

    /// The `__metadata__` map (empty when the file has none).
    public var metadata: [String: String] { header.metadata ?? [:] }

    public func info(_ name: String) throws -> (dtype: DType, shape: [Int]) {
        let entry = try self.entry(name)
        return (entry.dtype, entry.shape)
    }

    /// The tensor `name`, viewing the mapped file when its data is aligned for its dtype and
    /// copied into fresh storage otherwise (offsets in a safetensors file need not be aligned).
    public func tensor(_ name: String) throws -> Tensor {
        let entry = try self.entry(name)
        let byteCount = entry.byteRange.count
        if byteCount == 0 {
            return Tensor(storage: Storage(cpuByteCount: 0), shape: entry.shape, dtype: entry.dtype)
        }
        let elementSize = entry.dtype.byteSize
        let fileOffset = header.dataStart + entry.byteRange.lowerBound
        let source = storage.pointer + fileOffset
        // The storage base is page- (mmap) or 64-byte aligned, so an element-aligned offset is
        // an aligned address; the address check is a second guard, not a different condition.
        if fileOffset % elementSize == 0 && Int(bitPattern: source) % elementSize == 0 {
            return Tensor(storage: storage, shape: entry.shape, dtype: entry.dtype, offset: fileOffset / elementSize)
        }
        let copy = Storage(cpuByteCount: byteCount)
        copy.pointer.copyMemory(from: source, byteCount: byteCount)
        return Tensor(storage: copy, shape: entry.shape, dtype: entry.dtype)
    }

    /// Gives back the memory of the file pages `tensor` has read, when `tensor` is a view into a
    /// file opened by `init(path:)`: the pages that lie wholly inside its bytes leave this process's
    /// resident set (`madvise(MADV_DONTNEED)`), and a later read of the tensor maps them again from
    /// the file (or the page cache), with the same values. Loading a model copies every weight out
    /// of the mapping; without this the mapped pages stay resident until the file is closed, so the
    /// peak of a load is the model plus the whole file (SD 1.5's UNet in float32: 3.4 + 3.4 GB).
    ///
    /// Only for tensors nothing has written to: a page written through a view (copy-on-write)
    /// would revert to the file's contents. Returns the bytes released; 0 for any other tensor
    /// (copies, in-memory files, GPU tensors, a range smaller than a page).
    @discardableResult
    public static func releasePages(of tensor: Tensor) -> Int {
        let storage = tensor.storage
        guard storage.isPrivateFileMapping, tensor.isContiguous, tensor.numel > 0 else { return 0 }
        let page = Int(sysconf(Int32(_SC_PAGESIZE)))
        let start = Int(bitPattern: storage.pointer) + tensor.offset * tensor.dtype.byteSize
        let end = start + tensor.numel * tensor.dtype.byteSize
        let first = (start + page - 1) / page * page, last = end / page * page
        guard last > first, let address = UnsafeMutableRawPointer(bitPattern: first) else { return 0 }
        return madvise(address, last - first, MADV_DONTNEED) == 0 ? last - first : 0
    }

    /// All tensors by name.
    public func tensors() throws -> [String: Tensor] {
        var result: [String: Tensor] = [:]
        result.reserveCapacity(header.entries.count)
        for name in header.entries.keys { result[name] = try tensor(name) }
        return result
    }

    private func entry(_ name: String) throws -> SafeTensorsHeader.Entry {
        guard let entry = header.entries[name] else {
            let names = keys
            let listed = names.prefix(8).map { "'\($0)'" }.joined(separator: ", ")
            let more = names.count > 8 ? ", …" : ""
            throw SafeTensorsError(.tensorNotFound, path: path, tensor: name,
                                   "no such tensor; the file has \(names.count): \(listed)\(more)")
        }
        return entry
    }
}

/// Loads every tensor of a safetensors file (views into one shared mapping).
public func loadSafeTensors(_ path: String) throws -> [String: Tensor] {
    try SafeTensorsFile(path: path).tensors()
}

// MARK: - Reading the file

func systemError(_ what: String) -> String {
    "\(what): \(String(cString: strerror(errno)))"
}

/// Maps the file privately; falls back to reading it when mmap is not possible (some
/// filesystems do not support it).
private func mapFile(_ path: String) throws -> Storage {
    let fd = open(path, O_RDONLY | O_CLOEXEC)
    guard fd >= 0 else { throw SafeTensorsError(.io, path: path, systemError("cannot open")) }
    defer { close(fd) }
    var info = stat()
    guard fstat(fd, &info) == 0 else { throw SafeTensorsError(.io, path: path, systemError("cannot stat")) }
    guard (info.st_mode & S_IFMT) == S_IFREG else {
        throw SafeTensorsError(.io, path: path, "not a regular file")
    }
    let size = Int(info.st_size)
    guard size >= 8 else {
        throw SafeTensorsError(.headerTooSmall, path: path,
                               "file is \(size) bytes, expected at least 8 (the header length)")
    }
    // PROT_WRITE with MAP_PRIVATE gives copy-on-write pages: tensors loaded from the file can be
    // updated in place (optimizer steps) without touching the file and without faulting.
    if let mapped = mmap(nil, size, PROT_READ | PROT_WRITE, MAP_PRIVATE, fd, 0),
       mapped != UnsafeMutableRawPointer(bitPattern: -1) {
        let storage = Storage(pointer: mapped, byteCount: size, device: .cpu, release: { pointer, count in
            _ = munmap(pointer, count)
        })
        storage.isPrivateFileMapping = true
        return storage
    }
    let storage = Storage(cpuByteCount: size)
    var done = 0
    while done < size {
        let count = pread(fd, storage.pointer + done, min(size - done, 1 << 30), off_t(done))
        if count < 0 && errno == EINTR { continue }
        guard count > 0 else {
            throw SafeTensorsError(.io, path: path, count == 0
                ? "file shrank while reading: got \(done) of \(size) bytes"
                : systemError("cannot read"))
        }
        done += count
    }
    return storage
}

// MARK: - Validation

/// The reference implementation's limit on the JSON header size.
let safeTensorsMaxHeaderSize = 100_000_000

/// Names of dtypes that safetensors defines but TensorKit cannot hold, for a clearer error.
private let foreignSafeTensorsDTypes: Set<String> = [
    "F4", "F6_E2M3", "F6_E3M2", "I8", "F8_E5M2", "F8_E4M3", "F8_E8M0", "F8_E4M3FNUZ", "F8_E5M2FNUZ",
    "I16", "U16", "U32", "C64", "U64",
]

func parseSafeTensorsHeader(_ bytes: UnsafeRawBufferPointer, path: String) throws -> SafeTensorsHeader {
    let fileSize = bytes.count
    guard fileSize >= 8, let base = bytes.baseAddress else {
        throw SafeTensorsError(.headerTooSmall, path: path,
                               "file is \(fileSize) bytes, expected at least 8 (the header length)")
    }
    let declared = UInt64(littleEndian: base.loadUnaligned(as: UInt64.self))
    guard declared <= UInt64(safeTensorsMaxHeaderSize) else {
        throw SafeTensorsError(.headerTooLarge, path: path,
                               "header length is \(declared) bytes, the limit is \(safeTensorsMaxHeaderSize)")
    }
    let headerLength = Int(declared)
    guard headerLength <= fileSize - 8 else {
        throw SafeTensorsError(.invalidHeaderLength, path: path,
                               "header length is \(headerLength) bytes, but only \(fileSize - 8) bytes follow the length field")
    }
    let headerBytes = UnsafeRawBufferPointer(start: base + 8, count: headerLength)

    // UTF-8 check: decoding repairs invalid sequences with U+FFFD, so the bytes survive a
    // decode/encode round trip unchanged exactly when they were valid UTF-8.
    let decoded = String(decoding: headerBytes, as: UTF8.self)
    guard decoded.utf8.elementsEqual(headerBytes) else {
        throw SafeTensorsError(.invalidHeader, path: path, "header is not valid UTF-8")
    }
    guard headerLength > 0, headerBytes[0] == UInt8(ascii: "{") else {
        let found = headerLength == 0 ? "an empty header" : HeaderParser.describe(headerBytes[0])
        throw SafeTensorsError(.invalidHeader, path: path, "header must start with '{', found \(found)")
    }

    var parser = HeaderParser(bytes: headerBytes, path: path)
    let (entries, metadata) = try parser.parseTopLevel()
    let dataLength = try validateLayout(entries, path: path)

    let (withHeader, overflow1) = (8 + headerLength).addingReportingOverflow(dataLength)
    guard !overflow1, withHeader == fileSize else {
        throw SafeTensorsError(.incompleteBuffer, path: path,
                               "file is \(fileSize) bytes, but 8 (length) + \(headerLength) (header) + \(dataLength) (tensor data) = \(overflow1 ? "more than Int.max" : String(withHeader)) bytes are described")
    }
    return SafeTensorsHeader(headerByteCount: headerLength, entries: entries, metadata: metadata)
}

/// Checks that the tensors tile the data buffer [0, total) in offset order with no gap or
/// overlap, and that each byte length matches its shape and dtype. Returns the total.
private func validateLayout(_ entries: [String: SafeTensorsHeader.Entry], path: String) throws -> Int {
    let ordered = entries.values.sorted { a, b in
        if a.byteRange.lowerBound != b.byteRange.lowerBound { return a.byteRange.lowerBound < b.byteRange.lowerBound }
        if a.byteRange.upperBound != b.byteRange.upperBound { return a.byteRange.upperBound < b.byteRange.upperBound }
        return utf8Precedes(a.name, b.name)
    }
    var expectedBegin = 0
    var previous: String?
    for entry in ordered {
        let begin = entry.byteRange.lowerBound, end = entry.byteRange.upperBound
        if begin != expectedBegin {
            let detail: String
            if let previous {
                detail = begin < expectedBegin
                    ? "data_offsets [\(begin), \(end)] overlap tensor '\(previous)', which ends at \(expectedBegin)"
                    : "data_offsets [\(begin), \(end)] leave a gap of \(begin - expectedBegin) bytes after tensor '\(previous)', which ends at \(expectedBegin)"
            } else {
                detail = "data_offsets [\(begin), \(end)]: the first tensor in the buffer must begin at 0"
            }
            throw SafeTensorsError(.invalidOffset, path: path, tensor: entry.name, detail)
        }
        expectedBegin = end
        previous = entry.name

        var count = 1
        for dimension in entry.shape {
            let (product, overflow) = count.multipliedReportingOverflow(by: dimension)
            guard !overflow else {
                throw SafeTensorsError(.overflow, path: path, tensor: entry.name,
                                       "shape \(entry.shape) has more elements than an Int can count")
            }
            count = product
        }
        let (needed, overflow) = count.multipliedReportingOverflow(by: entry.dtype.byteSize)
        guard !overflow else {
            throw SafeTensorsError(.overflow, path: path, tensor: entry.name,
                                   "shape \(entry.shape) of \(entry.dtype.safetensorsName) needs more bytes than an Int can count")
        }
        guard end - begin == needed else {
            throw SafeTensorsError(.sizeMismatch, path: path, tensor: entry.name,
                                   "data_offsets [\(begin), \(end)] hold \(end - begin) bytes, but shape \(entry.shape) of \(entry.dtype.safetensorsName) needs \(count) × \(entry.dtype.byteSize) = \(needed) bytes")
        }
    }
    return expectedBegin
}

// MARK: - Header JSON

/// A strict JSON (RFC 8259) reader shaped by the safetensors schema: it builds the tensor
/// entries directly instead of a generic tree, so memory stays proportional to the result and
/// errors can name the tensor. Unknown fields inside an entry are skipped, as serde does.
/// Nesting is limited (serde_json's default is 128) so hostile input cannot exhaust the stack.
private struct HeaderParser {
    let bytes: UnsafeRawBufferPointer
    let path: String
    var index = 0
    static let maxDepth = 128

    init(bytes: UnsafeRawBufferPointer, path: String) {
        self.bytes = bytes
        self.path = path
    }

    // MARK: Top level

    mutating func parseTopLevel() throws -> ([String: SafeTensorsHeader.Entry], [String: String]?) {
        var entries: [String: SafeTensorsHeader.Entry] = [:]
        var metadata: [String: String]?
        var sawMetadata = false
        try expect(UInt8(ascii: "{"), "at the start of the header")
        skipWhitespace()
        if peek() == UInt8(ascii: "}") {
            index += 1
        } else {
            while true {
                skipWhitespace()
                let key = try parseString(context: "a tensor name")
                skipWhitespace()
                try expect(UInt8(ascii: ":"), "after the key \"\(key)\"")
                skipWhitespace()
                if key == "__metadata__" {
                    guard !sawMetadata else {
                        throw SafeTensorsError(.invalidMetadata, path: path, "__metadata__ appears more than once")
                    }
                    sawMetadata = true
                    metadata = try parseMetadata()
                } else {
                    guard entries[key] == nil else {
                        throw SafeTensorsError(.invalidTensorInfo, path: path, tensor: key, "the name appears more than once in the header")
                    }
                    entries[key] = try parseEntry(name: key)
                }
                skipWhitespace()
                if try endOfContainer(close: UInt8(ascii: "}"), what: "the header object") { break }
            }
        }
        skipWhitespace()
        guard index == bytes.count else {
            throw syntaxError("expected only whitespace after the header object, found \(describeNext())")
        }
        return (entries, metadata)
    }

    mutating func parseMetadata() throws -> [String: String]? {
        try requireValue()
        if try consumeLiteral("null") { return nil }
        guard peek() == UInt8(ascii: "{") else {
            throw SafeTensorsError(.invalidMetadata, path: path,
                                   "__metadata__ must be an object of strings, found \(describeValueStart())")
        }
        index += 1
        var result: [String: String] = [:]
        skipWhitespace()
        if peek() == UInt8(ascii: "}") { index += 1; return result }
        while true {
            skipWhitespace()
            let key = try parseString(context: "a __metadata__ key")
            skipWhitespace()
            try expect(UInt8(ascii: ":"), "after the __metadata__ key \"\(key)\"")
            skipWhitespace()
            try requireValue()
            guard peek() == UInt8(ascii: "\"") else {
                throw SafeTensorsError(.invalidMetadata, path: path,
                                       "__metadata__ value for key \"\(key)\" must be a string, found \(describeValueStart())")
            }
            let value = try parseString(context: "a __metadata__ value")
            guard result.updateValue(value, forKey: key) == nil else {
                throw SafeTensorsError(.invalidMetadata, path: path, "__metadata__ key \"\(key)\" appears more than once")
            }
            skipWhitespace()
            if try endOfContainer(close: UInt8(ascii: "}"), what: "__metadata__") { return result }
        }
    }

    mutating func parseEntry(name: String) throws -> SafeTensorsHeader.Entry {
        func invalid(_ detail: String) -> SafeTensorsError {
            SafeTensorsError(.invalidTensorInfo, path: path, tensor: name, detail)
        }
        try requireValue()
        guard peek() == UInt8(ascii: "{") else {
            throw invalid("expected an object with dtype, shape and data_offsets, found \(describeValueStart())")
        }
        index += 1
        var dtype: DType?
        var shape: [Int]?
        var offsets: [Int]?
        skipWhitespace()
        if peek() == UInt8(ascii: "}") {
            index += 1
        } else {
            while true {
                skipWhitespace()
                let field = try parseString(context: "a field name of tensor '\(name)'")
                skipWhitespace()
                try expect(UInt8(ascii: ":"), "after the field \"\(field)\" of tensor '\(name)'")
                skipWhitespace()
                switch field {
                case "dtype":
                    guard dtype == nil else { throw invalid("field \"dtype\" appears more than once") }
                    try requireValue()
                    guard peek() == UInt8(ascii: "\"") else {
                        throw invalid("dtype must be a string, found \(describeValueStart())")
                    }
                    let text = try parseString(context: "the dtype of tensor '\(name)'")
                    guard let parsed = DType(safetensorsName: text) else {
                        let supported = DType.allCases.map(\.safetensorsName).joined(separator: ", ")
                        throw invalid(foreignSafeTensorsDTypes.contains(text)
                            ? "dtype \"\(text)\" is not supported by TensorKit (supported: \(supported))"
                            : "unknown dtype \"\(text)\", expected one of \(supported)")
                    }
                    dtype = parsed
                case "shape":
                    guard shape == nil else { throw invalid("field \"shape\" appears more than once") }
                    shape = try parseIntegerList(field: "shape", tensor: name)
                case "data_offsets":
                    guard offsets == nil else { throw invalid("field \"data_offsets\" appears more than once") }
                    let list = try parseIntegerList(field: "data_offsets", tensor: name)
                    guard list.count == 2 else {
                        throw invalid("data_offsets must be [begin, end], found \(list.count) numbers")
                    }
                    offsets = list
                default:
                    try skipValue(depth: 2)
                }
                skipWhitespace()
                if try endOfContainer(close: UInt8(ascii: "}"), what: "tensor '\(name)'") { break }
            }
        }
        guard let dtype else { throw invalid("missing field \"dtype\"") }
        guard let shape else { throw invalid("missing field \"shape\"") }
        guard let offsets else { throw invalid("missing field \"data_offsets\"") }
        guard offsets[0] <= offsets[1] else {
            throw SafeTensorsError(.invalidOffset, path: path, tensor: name,
                                   "data_offsets [\(offsets[0]), \(offsets[1])] end before they begin")
        }
        return SafeTensorsHeader.Entry(name: name, dtype: dtype, shape: shape, byteRange: offsets[0]..<offsets[1])
    }

    /// A JSON array of non-negative integers that fit in an Int (serde's `usize`: no sign,
    /// no fraction, no exponent).
    mutating func parseIntegerList(field: String, tensor: String) throws -> [Int] {
        try requireValue()
        guard peek() == UInt8(ascii: "[") else {
            throw SafeTensorsError(.invalidTensorInfo, path: path, tensor: tensor,
                                   "\(field) must be a list of non-negative integers, found \(describeValueStart())")
        }
        index += 1
        var values: [Int] = []
        skipWhitespace()
        if peek() == UInt8(ascii: "]") { index += 1; return values }
        while true {
            skipWhitespace()
            values.append(try parseNonNegativeInteger(field: "\(field)[\(values.count)]", tensor: tensor))
            skipWhitespace()
            if try endOfContainer(close: UInt8(ascii: "]"), what: "\(field) of tensor '\(tensor)'") { return values }
        }
    }

    mutating func parseNonNegativeInteger(field: String, tensor: String) throws -> Int {
        func invalid(_ found: String) -> SafeTensorsError {
            SafeTensorsError(.invalidTensorInfo, path: path, tensor: tensor,
                             "\(field) must be a non-negative integer, found \(found)")
        }
        try requireValue()
        guard let first = peek(), first == UInt8(ascii: "-") || isDigit(first) else {
            throw invalid(describeValueStart())
        }
        let start = index
        try scanNumber()
        let text = String(decoding: UnsafeRawBufferPointer(rebasing: bytes[start..<index]), as: UTF8.self)
        let shown = text.count > 40 ? String(text.prefix(40)) + "…" : text
        guard first != UInt8(ascii: "-") else { throw invalid(shown) }
        var value = 0
        for byte in text.utf8 {
            guard isDigit(byte) else { throw invalid("\(shown) (not an integer)") }
            let (times10, overflow1) = value.multipliedReportingOverflow(by: 10)
            let (sum, overflow2) = times10.addingReportingOverflow(Int(byte - UInt8(ascii: "0")))
            guard !overflow1, !overflow2 else { throw invalid("\(shown) (larger than \(Int.max))") }
            value = sum
        }
        return value
    }

    // MARK: Generic JSON

    /// Skips any JSON value (for fields the schema does not use), validating its syntax.
    mutating func skipValue(depth: Int) throws {
        guard depth < HeaderParser.maxDepth else {
            throw syntaxError("values are nested more than \(HeaderParser.maxDepth) levels deep")
        }
        guard let byte = peek() else { throw syntaxError("expected a value, found the end of the header") }
        switch byte {
        case UInt8(ascii: "{"):
            index += 1
            skipWhitespace()
            if peek() == UInt8(ascii: "}") { index += 1; return }
            while true {
                skipWhitespace()
                _ = try parseString(context: "an object key")
                skipWhitespace()
                try expect(UInt8(ascii: ":"), "after an object key")
                skipWhitespace()
                try skipValue(depth: depth + 1)
                skipWhitespace()
                if try endOfContainer(close: UInt8(ascii: "}"), what: "an object") { return }
            }
        case UInt8(ascii: "["):
            index += 1
            skipWhitespace()
            if peek() == UInt8(ascii: "]") { index += 1; return }
            while true {
                skipWhitespace()
                try skipValue(depth: depth + 1)
                skipWhitespace()
                if try endOfContainer(close: UInt8(ascii: "]"), what: "a list") { return }
            }
        case UInt8(ascii: "\""):
            _ = try parseString(context: "a string")
        case UInt8(ascii: "-"), UInt8(ascii: "0")...UInt8(ascii: "9"):
            try scanNumber()
        default:
            if try consumeLiteral("true") || consumeLiteral("false") || consumeLiteral("null") { return }
            throw syntaxError("expected a value, found \(describeNext())")
        }
    }

    /// After a member or element: consumes ',' (returns false, more follow) or `close`
    /// (returns true).
    mutating func endOfContainer(close: UInt8, what: String) throws -> Bool {
        guard let byte = peek() else {
            throw syntaxError("\(what) is not closed before the end of the header")
        }
        index += 1
        if byte == close { return true }
        if byte == UInt8(ascii: ",") { return false }
        index -= 1
        throw syntaxError("expected ',' or '\(Character(Unicode.Scalar(close)))' in \(what), found \(describeNext())")
    }

    /// Number grammar: -?(0|[1-9][0-9]*)(\.[0-9]+)?([eE][+-]?[0-9]+)?
    mutating func scanNumber() throws {
        let start = index
        if peek() == UInt8(ascii: "-") { index += 1 }
        guard let lead = peek(), isDigit(lead) else { throw numberError(start) }
        index += 1
        if lead != UInt8(ascii: "0") {
            while let byte = peek(), isDigit(byte) { index += 1 }
        } else if let byte = peek(), isDigit(byte) {
            throw syntaxError("numbers must not have leading zeros (at header byte \(start))")
        }
        if peek() == UInt8(ascii: ".") {
            index += 1
            guard let byte = peek(), isDigit(byte) else { throw numberError(start) }
            while let byte = peek(), isDigit(byte) { index += 1 }
        }
        if peek() == UInt8(ascii: "e") || peek() == UInt8(ascii: "E") {
            index += 1
            if peek() == UInt8(ascii: "+") || peek() == UInt8(ascii: "-") { index += 1 }
            guard let byte = peek(), isDigit(byte) else { throw numberError(start) }
            while let byte = peek(), isDigit(byte) { index += 1 }
        }
    }

    private func numberError(_ start: Int) -> SafeTensorsError {
        syntaxError("malformed number starting at header byte \(start)")
    }

    /// A JSON string starting at the current '"'. The header was already checked to be valid
    /// UTF-8, so non-ASCII bytes are copied as they are.
    mutating func parseString(context: String) throws -> String {
        guard peek() == UInt8(ascii: "\"") else {
            throw syntaxError("expected \(context) (a string), found \(describeNext())")
        }
        index += 1
        let start = index
        // Fast path: no escapes.
        while index < bytes.count {
            let byte = bytes[index]
            if byte == UInt8(ascii: "\"") {
                let text = String(decoding: UnsafeRawBufferPointer(rebasing: bytes[start..<index]), as: UTF8.self)
                index += 1
                return text
            }
            if byte == UInt8(ascii: "\\") || byte < 0x20 { break }
            index += 1
        }
        var buffer = [UInt8](UnsafeRawBufferPointer(rebasing: bytes[start..<index]))
        while true {
            guard index < bytes.count else {
                throw syntaxError("string starting at header byte \(start - 1) is not closed")
            }
            let byte = bytes[index]
            index += 1
            switch byte {
            case UInt8(ascii: "\""):
                return String(decoding: buffer, as: UTF8.self)
            case UInt8(ascii: "\\"):
                try appendEscape(to: &buffer)
            case 0..<0x20:
                throw syntaxError("control character 0x\(String(byte, radix: 16)) inside a string at header byte \(index - 1)")
            default:
                buffer.append(byte)
            }
        }
    }

    private mutating func appendEscape(to buffer: inout [UInt8]) throws {
        guard let byte = peek() else { throw syntaxError("escape sequence cut off by the end of the header") }
        index += 1
        switch byte {
        case UInt8(ascii: "\""), UInt8(ascii: "\\"), UInt8(ascii: "/"): buffer.append(byte)
        case UInt8(ascii: "b"): buffer.append(0x08)
        case UInt8(ascii: "f"): buffer.append(0x0C)
        case UInt8(ascii: "n"): buffer.append(0x0A)
        case UInt8(ascii: "r"): buffer.append(0x0D)
        case UInt8(ascii: "t"): buffer.append(0x09)
        case UInt8(ascii: "u"):
            var scalar = UInt32(try readHex4())
            if (0xD800...0xDBFF).contains(scalar) {
                // A high surrogate must be followed by an escaped low surrogate.
                guard peek() == UInt8(ascii: "\\"), index + 1 < bytes.count, bytes[index + 1] == UInt8(ascii: "u") else {
                    throw syntaxError("unpaired surrogate \\u\(String(scalar, radix: 16)) at header byte \(index - 6)")
                }
                index += 2
                let low = UInt32(try readHex4())
                guard (0xDC00...0xDFFF).contains(low) else {
                    throw syntaxError("unpaired surrogate \\u\(String(scalar, radix: 16)) at header byte \(index - 12)")
                }
                scalar = 0x10000 + ((scalar - 0xD800) << 10) + (low - 0xDC00)
            } else if (0xDC00...0xDFFF).contains(scalar) {
                throw syntaxError("unpaired surrogate \\u\(String(scalar, radix: 16)) at header byte \(index - 6)")
            }
            // Not a surrogate here, so the scalar is always valid.
            if let unicode = Unicode.Scalar(scalar) { buffer.append(contentsOf: String(unicode).utf8) }
        default:
            throw syntaxError("invalid escape '\\\(HeaderParser.describe(byte))' at header byte \(index - 2)")
        }
    }

    private mutating func readHex4() throws -> UInt16 {
        guard index + 4 <= bytes.count else { throw syntaxError("\\u escape cut off by the end of the header") }
        var value: UInt16 = 0
        for _ in 0..<4 {
            let byte = bytes[index]
            let digit: UInt8
            switch byte {
            case UInt8(ascii: "0")...UInt8(ascii: "9"): digit = byte - UInt8(ascii: "0")
            case UInt8(ascii: "a")...UInt8(ascii: "f"): digit = byte - UInt8(ascii: "a") + 10
            case UInt8(ascii: "A")...UInt8(ascii: "F"): digit = byte - UInt8(ascii: "A") + 10
            default: throw syntaxError("invalid hex digit in \\u escape at header byte \(index)")
            }
            value = value << 4 | UInt16(digit)
            index += 1
        }
        return value
    }

    mutating func consumeLiteral(_ literal: StaticString) throws -> Bool {
        let count = literal.utf8CodeUnitCount
        guard index + count <= bytes.count else { return false }
        let text = UnsafeRawBufferPointer(start: literal.utf8Start, count: count)
        for offset in 0..<count where bytes[index + offset] != text[offset] { return false }
        index += count
        return true
    }

    mutating func expect(_ byte: UInt8, _ context: String) throws {
        guard peek() == byte else {
            throw syntaxError("expected '\(Character(Unicode.Scalar(byte)))' \(context), found \(describeNext())")
        }
        index += 1
    }

    @inline(__always) func peek() -> UInt8? { index < bytes.count ? bytes[index] : nil }

    @inline(__always) mutating func skipWhitespace() {
        while index < bytes.count {
            switch bytes[index] {
            case 0x20, 0x09, 0x0A, 0x0D: index += 1
            default: return
            }
        }
    }

    @inline(__always) func isDigit(_ byte: UInt8) -> Bool { byte >= 0x30 && byte <= 0x39 }

    // MARK: Messages

    func syntaxError(_ detail: String) -> SafeTensorsError {
        SafeTensorsError(.invalidHeader, path: path, "header is not valid JSON: \(detail)")
    }

    static func describe(_ byte: UInt8) -> String {
        (0x21...0x7E).contains(byte) ? "'\(Character(Unicode.Scalar(byte)))'" : "byte 0x\(String(byte, radix: 16))"
    }

    func describeNext() -> String {
        guard let byte = peek() else { return "the end of the header" }
        return "\(HeaderParser.describe(byte)) at header byte \(index)"
    }

    /// Throws a JSON syntax error if the header ends where a value should start (so a cut-off
    /// header is reported as such rather than as a malformed entry).
    func requireValue() throws {
        if index >= bytes.count { throw syntaxError("a value is missing at the end of the header") }
    }

    /// What kind of JSON value starts here, for "expected X, found Y" messages.
    func describeValueStart() -> String {
        guard let byte = peek() else { return "the end of the header" }
        switch byte {
        case UInt8(ascii: "{"): return "an object"
        case UInt8(ascii: "["): return "a list"
        case UInt8(ascii: "\""): return "a string"
        case UInt8(ascii: "-"), UInt8(ascii: "0")...UInt8(ascii: "9"): return "a number"
        case UInt8(ascii: "t"), UInt8(ascii: "f"): return "a boolean"
        case UInt8(ascii: "n"): return "null"
        default: return describeNext()
        }
    }
}

// MARK: - Writing

/// Writes `tensors` as a safetensors file, laid out as Python's `safetensors` does it: tensors
/// sorted by dtype alignment (largest first) then by name, compact JSON header padded with
/// spaces to a multiple of 8, data packed without gaps. Metadata keys are written sorted
/// (Python's order for several keys is that of a Rust HashMap, so unspecified).
///
/// The file is written under a temporary name in the destination directory, flushed, and
/// renamed over `path`, so readers (including processes that have the old file mapped) see
/// either the old file or the complete new one. CPU tensors only.
public func saveSafeTensors(_ tensors: [String: Tensor], metadata: [String: String]? = nil, to path: String) throws {
    let plan = try SafeTensorsWritePlan(tensors: tensors, metadata: metadata, path: path)
    let makeError = { (detail: String) -> Error in SafeTensorsError(.io, path: path, detail) }
    try writeFileAtomically(path: path, makeError: makeError) { fd in
        try plan.header.withUnsafeBytes { try writeAll(fd, $0, makeError: makeError) }
        for (tensor, byteCount) in plan.chunks where byteCount > 0 {
            let start = tensor.storage.pointer + tensor.offset * tensor.dtype.byteSize
            try writeAll(fd, UnsafeRawBufferPointer(start: start, count: byteCount), makeError: makeError)
        }
    }
}

/// The bytes `saveSafeTensors` would write, in memory.
public func serializeSafeTensors(_ tensors: [String: Tensor], metadata: [String: String]? = nil) throws -> [UInt8] {
    let plan = try SafeTensorsWritePlan(tensors: tensors, metadata: metadata, path: "<memory>")
    var bytes = plan.header
    bytes.reserveCapacity(plan.header.count + plan.chunks.reduce(0) { $0 + $1.1 })
    for (tensor, byteCount) in plan.chunks where byteCount > 0 {
        let start = tensor.storage.pointer + tensor.offset * tensor.dtype.byteSize
        bytes.append(contentsOf: UnsafeRawBufferPointer(start: start, count: byteCount))
    }
    return bytes
}

/// Length prefix + padded header JSON, and the contiguous tensors in file order.
private struct SafeTensorsWritePlan {
    var header: [UInt8] = []
    var chunks: [(Tensor, Int)] = []

    init(tensors: [String: Tensor], metadata: [String: String]?, path: String) throws {
        // Python's order: descending dtype alignment (the Rust Dtype enum order), then name.
        let ordered = tensors.sorted { a, b in
            let rankA = dtypeWriteRank(a.value.dtype), rankB = dtypeWriteRank(b.value.dtype)
            return rankA != rankB ? rankA > rankB : utf8Precedes(a.key, b.key)
        }
        var json: [UInt8] = [UInt8(ascii: "{")]
        var first = true
        func separator() {
            if !first { json.append(UInt8(ascii: ",")) }
            first = false
        }
        if let metadata {
            separator()
            appendJSONString("__metadata__", to: &json)
            json.append(contentsOf: ":{".utf8)
            for (index, key) in metadata.keys.sorted(by: utf8Precedes).enumerated() {
                if index > 0 { json.append(UInt8(ascii: ",")) }
                appendJSONString(key, to: &json)
                json.append(UInt8(ascii: ":"))
                appendJSONString(metadata[key]!, to: &json)
            }
            json.append(UInt8(ascii: "}"))
        }
        var offset = 0
        for (name, tensor) in ordered {
            guard name != "__metadata__" else {
                throw SafeTensorsError(.unsupportedTensor, path: path, tensor: name,
                                       "'__metadata__' is reserved for the metadata map and cannot name a tensor")
            }
            // A device tensor is copied to the host first (checkpoints of a GPU run).
            guard tensor.device == .cpu || BackendRegistry.backend(for: tensor.device) != nil else {
                throw SafeTensorsError(.unsupportedTensor, path: path, tensor: name,
                                       "tensor is on \(tensor.device), which has no usable backend to copy it to the host")
            }
            let packed = tensor.device == .cpu ? tensor.contiguous() : tensor.copied(to: .cpu)
            let byteCount = packed.numel * packed.dtype.byteSize
            chunks.append((packed, byteCount))
            separator()
            appendJSONString(name, to: &json)
            json.append(contentsOf: ":{\"dtype\":\"\(tensor.dtype.safetensorsName)\",\"shape\":[".utf8)
            json.append(contentsOf: tensor.shape.map(String.init).joined(separator: ",").utf8)
            json.append(contentsOf: "],\"data_offsets\":[\(offset),\(offset + byteCount)]}".utf8)
            offset += byteCount
        }
        json.append(UInt8(ascii: "}"))
        while json.count % 8 != 0 { json.append(UInt8(ascii: " ")) }

        header.reserveCapacity(8 + json.count)
        withUnsafeBytes(of: UInt64(json.count).littleEndian) { header.append(contentsOf: $0) }
        header.append(contentsOf: json)
    }
}

/// Position in the Rust crate's `Dtype` enum, whose declaration order is increasing alignment.
private func dtypeWriteRank(_ dtype: DType) -> Int {
    switch dtype {
    case .bool: return 0
    case .uint8: return 1
    case .float16: return 2
    case .bfloat16: return 3
    case .int32: return 4
    case .float32: return 5
    case .float64: return 6
    case .int64: return 7
    }
}

/// JSON string escaping as serde_json writes it: '"', '\\' and control characters escaped
/// (short forms where JSON has them, else \u00xx), everything else verbatim UTF-8.
private func appendJSONString(_ text: String, to json: inout [UInt8]) {
    let hex = Array("0123456789abcdef".utf8)
    json.append(UInt8(ascii: "\""))
    for byte in text.utf8 {
        switch byte {
        case UInt8(ascii: "\""): json.append(contentsOf: [0x5C, 0x22])
        case UInt8(ascii: "\\"): json.append(contentsOf: [0x5C, 0x5C])
        case 0x08: json.append(contentsOf: [0x5C, UInt8(ascii: "b")])
        case 0x0C: json.append(contentsOf: [0x5C, UInt8(ascii: "f")])
        case 0x0A: json.append(contentsOf: [0x5C, UInt8(ascii: "n")])
        case 0x0D: json.append(contentsOf: [0x5C, UInt8(ascii: "r")])
        case 0x09: json.append(contentsOf: [0x5C, UInt8(ascii: "t")])
        case 0..<0x20:
            json.append(contentsOf: "\\u00".utf8)
            json.append(hex[Int(byte >> 4)])
            json.append(hex[Int(byte & 0xF)])
        default: json.append(byte)
        }
    }
    json.append(UInt8(ascii: "\""))
}

// MARK: - Atomic file writing (shared with ImageIO)

/// Creates a temporary file next to `path`, lets `body` fill it, flushes it and renames it
/// over `path`. On any error the temporary file is removed and `path` is left untouched.
/// `makeError` turns a message into the caller's error type.
func writeFileAtomically(path: String, makeError: (String) -> Error, _ body: (Int32) throws -> Void) throws {
    let directory = (path as NSString).deletingLastPathComponent
    let folder = directory.isEmpty ? "." : directory
    var fd: Int32 = -1
    var temporary = ""
    for _ in 0..<16 {
        temporary = "\(folder)/.tmp-\(getpid())-\(UInt64.random(in: 0...UInt64.max).hexString).partial"
        // 0o666 minus the umask: the permissions a plain open() would give the file.
        fd = open(temporary, O_WRONLY | O_CREAT | O_EXCL | O_CLOEXEC, 0o666)
        if fd >= 0 || errno != EEXIST { break }
    }
    guard fd >= 0 else {
        throw makeError(systemError("cannot create a temporary file in '\(folder)'"))
    }
    var finished = false
    defer {
        if !finished {
            if fd >= 0 { close(fd) }
            unlink(temporary)
        }
    }
    try body(fd)
    guard fsync(fd) == 0 else { throw makeError(systemError("cannot flush '\(temporary)'")) }
    let closed = close(fd)
    fd = -1
    guard closed == 0 else { throw makeError(systemError("cannot close '\(temporary)'")) }
    guard rename(temporary, path) == 0 else {
        throw makeError(systemError("cannot rename '\(temporary)' to the destination"))
    }
    finished = true
}

func writeAll(_ fd: Int32, _ bytes: UnsafeRawBufferPointer, makeError: (String) -> Error) throws {
    guard var cursor = bytes.baseAddress else { return }
    var remaining = bytes.count
    while remaining > 0 {
        let written = write(fd, cursor, min(remaining, 1 << 30))
        if written < 0 {
            if errno == EINTR { continue }
            throw makeError(systemError("cannot write"))
        }
        cursor += written
        remaining -= written
    }
}

private extension UInt64 {
    var hexString: String { String(self, radix: 16) }
}
