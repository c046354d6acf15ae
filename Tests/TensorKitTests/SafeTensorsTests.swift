import Foundation
import XCTest
@testable import TensorKit

/// Reader/writer tests, including a corpus of malformed files and interop with Python's
/// safetensors (fixtures from Fixtures/make_safetensors_fixtures.py).
final class SafeTensorsTests: XCTestCase {
    static let fixtures = URL(fileURLWithPath: #filePath).deletingLastPathComponent()
        .appendingPathComponent("Fixtures/safetensors")

    var directory: URL!

    override func setUpWithError() throws {
        directory = FileManager.default.temporaryDirectory
            .appendingPathComponent("safetensors-tests-\(UUID().uuidString)")
        try FileManager.default.createDirectory(at: directory, withIntermediateDirectories: true)
    }

    override func tearDownWithError() throws {
        try? FileManager.default.removeItem(at: directory)
    }

    func path(_ name: String) -> String { directory.appendingPathComponent(name).path }

    // MARK: Round trips

    func testRoundTripEveryDType() throws {
        let tensors: [String: Tensor] = [
            "f32": rawTensor([Float(1.5), -0.0, .infinity, .leastNonzeroMagnitude, 3.25, -7], shape: [2, 3], dtype: .float32),
            "f64": rawTensor([Double.pi, -1e300, 0], shape: [3], dtype: .float64),
            "f16": rawTensor([Float16(1), -2.5, 65504, .leastNonzeroMagnitude], shape: [2, 2], dtype: .float16),
            "bf16": rawTensor([UInt16(0x3F80), 0xC060, 0x7F80, 0x0001], shape: [4], dtype: .bfloat16),
            "i32": rawTensor([Int32.min, -1, 0, Int32.max] as [Int32], shape: [4, 1], dtype: .int32),
            "i64": rawTensor([Int64.min, -(Int64(1) << 40), (Int64(1) << 53) + 1, Int64.max] as [Int64], shape: [1, 4], dtype: .int64),
            "u8": rawTensor([UInt8(0), 1, 128, 255, 7], shape: [5], dtype: .uint8),
            "bool": rawTensor([UInt8(1), 0, 0, 1, 1, 0], shape: [3, 2], dtype: .bool),
            "empty": rawTensor([Float](), shape: [0, 3], dtype: .float32),
            "scalar": rawTensor([Int64(-42)], shape: [], dtype: .int64),
        ]
        let file = path("all.safetensors")
        try saveSafeTensors(tensors, metadata: ["format": "pt", "note": "ünïcode \"quoted\"\n"], to: file)

        let opened = try SafeTensorsFile(path: file)
        XCTAssertEqual(opened.keys, tensors.keys.sorted())
        XCTAssertEqual(opened.metadata, ["format": "pt", "note": "ünïcode \"quoted\"\n"])
        for (name, original) in tensors {
            let loaded = try opened.tensor(name)
            XCTAssertEqual(loaded.dtype, original.dtype, name)
            XCTAssertEqual(loaded.shape, original.shape, name)
            XCTAssertEqual(rawBytes(loaded), rawBytes(original), name)
            let info = try opened.info(name)
            XCTAssertEqual(info.dtype, original.dtype)
            XCTAssertEqual(info.shape, original.shape)
        }
        let all = try loadSafeTensors(file)
        XCTAssertEqual(Set(all.keys), Set(tensors.keys))

        // The file layout: 8-byte aligned header, and the same bytes as the in-memory serializer.
        let bytes = try [UInt8](Data(contentsOf: URL(fileURLWithPath: file)))
        XCTAssertEqual(bytes, try serializeSafeTensors(tensors, metadata: ["format": "pt", "note": "ünïcode \"quoted\"\n"]))
        let headerLength = bytes.withUnsafeBytes { Int(UInt64(littleEndian: $0.loadUnaligned(as: UInt64.self))) }
        XCTAssertEqual(headerLength % 8, 0)
    }

    func testWriterGathersNonContiguousViews() throws {
        let base = rawTensor([Float(0), 1, 2, 3, 4, 5], shape: [2, 3], dtype: .float32)
        let transposed = Tensor(storage: base.storage, shape: [3, 2], dtype: .float32, strides: [1, 3])
        XCTAssertFalse(transposed.isContiguous)
        let file = path("transposed.safetensors")
        try saveSafeTensors(["t": transposed], to: file)
        let loaded = try SafeTensorsFile(path: file).tensor("t")
        XCTAssertEqual(loaded.shape, [3, 2])
        XCTAssertEqual(values(loaded, Float.self), [0, 3, 1, 4, 2, 5])
    }

    func testTensorsViewTheMappingWithoutCopying() throws {
        let file = path("view.safetensors")
        try saveSafeTensors(["a": rawTensor([Float(1), 2, 3, 4], shape: [4], dtype: .float32),
                             "b": rawTensor([Float(5), 6], shape: [2], dtype: .float32)], to: file)
        let opened = try SafeTensorsFile(path: file)
        let a = try opened.tensor("a"), b = try opened.tensor("b")
        XCTAssertTrue(a.storage === b.storage, "both tensors should view the one mapping")
        XCTAssertEqual(a.storage.byteCount, opened.header.dataStart + 24)
        XCTAssertEqual(values(a, Float.self), [1, 2, 3, 4])
        XCTAssertEqual(values(b, Float.self), [5, 6])

        // The mapping is private: writing to a loaded tensor never reaches the file.
        a.pointer(as: Float.self)[0] = 100
        XCTAssertEqual(values(a, Float.self)[0], 100)
        XCTAssertEqual(values(try SafeTensorsFile(path: file).tensor("a"), Float.self), [1, 2, 3, 4])

        // The tensors keep the mapping alive after the file object is gone.
        var keep: Tensor?
        do { keep = try SafeTensorsFile(path: file).tensor("b") }
        XCTAssertEqual(values(keep!, Float.self), [5, 6])
    }

    /// The kernel's own count of the file's resident pages in this process (/proc/self/smaps), in bytes.
    private func residentBytes(ofMappingOf file: String) throws -> Int? {
        // Read to the end by hand: Foundation's whole-file readers return /proc/self/smaps cut short.
        let fd = open("/proc/self/smaps", O_RDONLY)
        guard fd >= 0 else { return nil }
        defer { close(fd) }
        var bytes: [UInt8] = [], chunk = [UInt8](repeating: 0, count: 1 << 16)
        while true {
            let n = chunk.withUnsafeMutableBytes { read(fd, $0.baseAddress, $0.count) }
            if n <= 0 { break }
            bytes += chunk[0..<n]
        }
        let smaps = String(decoding: bytes, as: UTF8.self)
        var total = 0, inside = false, found = false
        for line in smaps.split(separator: "\n") {
            let fields = line.split(separator: " ", omittingEmptySubsequences: true)
            if let first = fields.first, first.contains("-"), fields.count >= 5 {  // a mapping's header line
                inside = line.hasSuffix(file)
                found = found || inside
            } else if inside, fields.first == "Rss:", fields.count >= 2, let kB = Int(fields[1]) {
                total += kB * 1024
            }
        }
        return found ? total : nil
    }

    func testLoadingGivesBackTheFilePagesAndTheTensorsReadTheFileAgain() throws {
        // A 2048 x 1024 float32 weight (8 MiB) with values that differ page by page.
        let rows = 2048, columns = 1024
        let weight = (0..<(rows * columns)).map { Float($0 % 9973) * 0.25 - 1000 }
        let bias = (0..<rows).map { Float($0) }
        let file = path("linear.safetensors")
        try saveSafeTensors(["weight": rawTensor(weight, shape: [rows, columns], dtype: .float32),
                             "bias": rawTensor(bias, shape: [rows], dtype: .float32)], to: file)
        let opened = try SafeTensorsFile(path: file)
        let tensors = try opened.tensors()
        guard let untouched = try residentBytes(ofMappingOf: file) else {
            throw XCTSkip("no /proc/self/smaps on this system")
        }
        let model = Linear(columns, rows)
        var released = 0
        try model.load(tensors, loaded: { released += SafeTensorsFile.releasePages(of: $0) })

        // The copy happened before the pages went: the module holds the file's values.
        XCTAssertEqual(values(model.weight, Float.self), weight)
        XCTAssertEqual(values(model.bias!, Float.self), bias)
        // Only the pages the weight shares with the header or the bias (at most 2) may stay resident;
        // without the release all 8 MiB would (the copy read every page).
        let page = Int(sysconf(Int32(_SC_PAGESIZE)))
        XCTAssertGreaterThanOrEqual(released, rows * columns * 4 - 2 * page)
        let resident = try XCTUnwrap(try residentBytes(ofMappingOf: file))
        XCTAssertLessThanOrEqual(resident, untouched + 3 * page, "resident \(resident) bytes after the load")
        // The mapped tensors read the file again, with the same values.
        XCTAssertEqual(values(tensors["weight"]!, Float.self), weight)
        XCTAssertGreaterThan(try XCTUnwrap(try residentBytes(ofMappingOf: file)), rows * columns * 4 - 2 * page)

        // Copies and in-memory tensors have nothing to give back.
        XCTAssertEqual(SafeTensorsFile.releasePages(of: model.weight), 0)
        XCTAssertEqual(SafeTensorsFile.releasePages(of: try SafeTensorsFile(bytes: Array(
            try Data(contentsOf: URL(fileURLWithPath: file)))).tensor("weight")), 0)
    }

    func testMisalignedDataIsCopied() throws {
        // A U8 tensor of 1 byte, then an F32 tensor at buffer offset 1: legal, but unaligned.
        let header = #"{"a":{"dtype":"U8","shape":[1],"data_offsets":[0,1]},"b":{"dtype":"F32","shape":[2],"data_offsets":[1,9]}}"#
        var data: [UInt8] = [7]
        withUnsafeBytes(of: Float(1.5).bitPattern.littleEndian) { data += $0 }
        withUnsafeBytes(of: Float(-2).bitPattern.littleEndian) { data += $0 }
        let file = path("misaligned.safetensors")
        try Data(safetensorsImage(header: header, data: data)).write(to: URL(fileURLWithPath: file))

        let opened = try SafeTensorsFile(path: file)
        let b = try opened.tensor("b")
        XCTAssertEqual(values(b, Float.self), [1.5, -2])
        XCTAssertEqual(Int(bitPattern: b.pointer(as: Float.self)) % 4, 0)
        XCTAssertFalse(b.storage === (try opened.tensor("a")).storage, "misaligned data must be copied")
    }

    func testReplacingAMappedFileKeepsOldTensorsValid() throws {
        let file = path("replace.safetensors")
        try saveSafeTensors(["w": rawTensor([Float(1), 2], shape: [2], dtype: .float32)], to: file)
        let old = try SafeTensorsFile(path: file).tensor("w")
        try saveSafeTensors(["w": rawTensor([Float(3), 4, 5], shape: [3], dtype: .float32)], to: file)
        XCTAssertEqual(values(old, Float.self), [1, 2])
        XCTAssertEqual(values(try SafeTensorsFile(path: file).tensor("w"), Float.self), [3, 4, 5])
        let leftovers = try FileManager.default.contentsOfDirectory(atPath: directory.path)
        XCTAssertEqual(leftovers, ["replace.safetensors"], "no temporary files may remain")
    }

    // MARK: Writer errors

    func testWriterErrorsLeaveTheDestinationUntouched() throws {
        let file = path("keep.safetensors")
        try saveSafeTensors(["ok": rawTensor([UInt8(1)], shape: [1], dtype: .uint8)], to: file)
        let before = try Data(contentsOf: URL(fileURLWithPath: file))

        // A tensor that claims to live on a GPU (backed by host memory; never dereferenced).
        let host = Storage(cpuByteCount: 16)
        let gpu = Tensor(storage: Storage(pointer: host.pointer, byteCount: 16, device: .cuda(0), release: nil),
                         shape: [4], dtype: .float32)
        assertSafeTensorsError(try saveSafeTensors(["a": rawTensor([UInt8(1)], shape: [1], dtype: .uint8), "gpu": gpu], to: file),
                               .unsupportedTensor, path: file, tensor: "gpu")
        assertSafeTensorsError(try saveSafeTensors(["__metadata__": rawTensor([UInt8(1)], shape: [1], dtype: .uint8)], to: file),
                               .unsupportedTensor, path: file, tensor: "__metadata__")
        XCTAssertEqual(try Data(contentsOf: URL(fileURLWithPath: file)), before)

        let missing = path("no/such/dir/x.safetensors")
        assertSafeTensorsError(try saveSafeTensors([:], to: missing), .io, path: missing)
        XCTAssertEqual(try FileManager.default.contentsOfDirectory(atPath: directory.path), ["keep.safetensors"])
        withExtendedLifetime(host) {}
    }

    func testMissingTensorAndMissingFile() throws {
        let file = path("one.safetensors")
        try saveSafeTensors(["present": rawTensor([UInt8(1)], shape: [1], dtype: .uint8)], to: file)
        let opened = try SafeTensorsFile(path: file)
        assertSafeTensorsError(try opened.tensor("absent"), .tensorNotFound, path: file, tensor: "absent")
        assertSafeTensorsError(try opened.info("absent"), .tensorNotFound, path: file, tensor: "absent")
        let nowhere = path("nowhere.safetensors")
        assertSafeTensorsError(try SafeTensorsFile(path: nowhere), .io, path: nowhere)
        assertSafeTensorsError(try SafeTensorsFile(path: directory.path), .io, path: directory.path)
    }

    // MARK: Malformed files

    /// Every case is written to a file named after it; opening must throw the given kind with
    /// a message naming the file (and the tensor where one is at fault). The in-memory parser
    /// must agree.
    func testMalformedFilesAreRejectedWithDescriptiveErrors() throws {
        let f32x2 = #"{"dtype":"F32","shape":[2],"data_offsets":[0,8]}"#
        typealias Case = (name: String, bytes: [UInt8], kind: SafeTensorsError.Kind, tensor: String?)
        var cases: [Case] = [
            ("empty", [], .headerTooSmall, nil),
            ("truncated_length", [8, 0, 0, 0, 0], .headerTooSmall, nil),
            ("huge_header_length", lengthPrefix(UInt64(1) << 63) + Array("{}".utf8), .headerTooLarge, nil),
            ("header_over_limit", lengthPrefix(100_000_001) + Array("{}".utf8), .headerTooLarge, nil),
            ("header_beyond_file", lengthPrefix(100) + Array(#"{"a":1}"#.utf8), .invalidHeaderLength, nil),
            ("header_max_u64", lengthPrefix(UInt64.max), .headerTooLarge, nil),
            ("not_utf8", safetensorsImage(headerBytes: Array(#"{"a"#.utf8) + [0xFF] + Array(#"":{}}"#.utf8)), .invalidHeader, nil),
            ("not_json", safetensorsImage(header: "{hello}"), .invalidHeader, nil),
            ("json_list", safetensorsImage(header: "[1, 2]"), .invalidHeader, nil),
            ("leading_space", safetensorsImage(header: " {}"), .invalidHeader, nil),
            ("empty_header", safetensorsImage(header: ""), .invalidHeader, nil),
            ("unclosed", safetensorsImage(header: #"{"a":"#), .invalidHeader, nil),
            ("cut_in_entry", safetensorsImage(header: #"{"t":{"dtype":"F32","shape":[2"#), .invalidHeader, nil),
            ("cut_in_metadata", safetensorsImage(header: #"{"__metadata__":{"k":"#), .invalidHeader, nil),
            ("trailing_garbage", safetensorsImage(header: "{} x"), .invalidHeader, nil),
            ("two_objects", safetensorsImage(header: "{}{}"), .invalidHeader, nil),
            ("trailing_comma", safetensorsImage(header: #"{"a":\#(f32x2),}"#, data: 8), .invalidHeader, nil),
            ("entry_number", safetensorsImage(header: #"{"t":5}"#), .invalidTensorInfo, "t"),
            ("entry_list", safetensorsImage(header: #"{"t":[1]}"#), .invalidTensorInfo, "t"),
            ("entry_null", safetensorsImage(header: #"{"t":null}"#), .invalidTensorInfo, "t"),
            ("bad_dtype", entryImage(#"{"dtype":"F33","shape":[2],"data_offsets":[0,8]}"#, data: 8), .invalidTensorInfo, "t"),
            ("unsupported_dtype", entryImage(#"{"dtype":"I8","shape":[2],"data_offsets":[0,2]}"#, data: 2), .invalidTensorInfo, "t"),
            ("dtype_number", entryImage(#"{"dtype":4,"shape":[2],"data_offsets":[0,8]}"#, data: 8), .invalidTensorInfo, "t"),
            ("missing_dtype", entryImage(#"{"shape":[2],"data_offsets":[0,8]}"#, data: 8), .invalidTensorInfo, "t"),
            ("missing_shape", entryImage(#"{"dtype":"F32","data_offsets":[0,8]}"#, data: 8), .invalidTensorInfo, "t"),
            ("missing_offsets", entryImage(#"{"dtype":"F32","shape":[2]}"#, data: 8), .invalidTensorInfo, "t"),
            ("duplicate_field", entryImage(#"{"dtype":"F32","dtype":"F32","shape":[2],"data_offsets":[0,8]}"#, data: 8), .invalidTensorInfo, "t"),
            ("negative_shape", entryImage(#"{"dtype":"F32","shape":[-1],"data_offsets":[0,0]}"#), .invalidTensorInfo, "t"),
            ("fractional_shape", entryImage(#"{"dtype":"F32","shape":[1.5],"data_offsets":[0,4]}"#, data: 4), .invalidTensorInfo, "t"),
            ("exponent_shape", entryImage(#"{"dtype":"F32","shape":[1e1],"data_offsets":[0,40]}"#, data: 40), .invalidTensorInfo, "t"),
            ("string_shape", entryImage(#"{"dtype":"F32","shape":["2"],"data_offsets":[0,8]}"#, data: 8), .invalidTensorInfo, "t"),
            ("shape_not_list", entryImage(#"{"dtype":"F32","shape":2,"data_offsets":[0,8]}"#, data: 8), .invalidTensorInfo, "t"),
            ("shape_beyond_int", entryImage(#"{"dtype":"F32","shape":[99999999999999999999],"data_offsets":[0,8]}"#, data: 8), .invalidTensorInfo, "t"),
            ("negative_offset", entryImage(#"{"dtype":"F32","shape":[2],"data_offsets":[-8,0]}"#), .invalidTensorInfo, "t"),
            ("offsets_three", entryImage(#"{"dtype":"F32","shape":[2],"data_offsets":[0,8,16]}"#, data: 8), .invalidTensorInfo, "t"),
            ("offsets_one", entryImage(#"{"dtype":"F32","shape":[2],"data_offsets":[8]}"#, data: 8), .invalidTensorInfo, "t"),
            ("offsets_reversed", entryImage(#"{"dtype":"F32","shape":[2],"data_offsets":[8,0]}"#, data: 8), .invalidOffset, "t"),
            ("first_not_at_zero", entryImage(#"{"dtype":"F32","shape":[2],"data_offsets":[4,12]}"#, data: 12), .invalidOffset, "t"),
            ("overlapping_offsets", safetensorsImage(header: #"{"a":{"dtype":"F32","shape":[2],"data_offsets":[0,8]},"b":{"dtype":"F32","shape":[2],"data_offsets":[4,12]}}"#, data: 12), .invalidOffset, "b"),
            ("gap_between_tensors", safetensorsImage(header: #"{"a":{"dtype":"F32","shape":[1],"data_offsets":[0,4]},"b":{"dtype":"F32","shape":[1],"data_offsets":[8,12]}}"#, data: 12), .invalidOffset, "b"),
            ("out_of_range_offsets", entryImage(f32x2, data: 4), .incompleteBuffer, nil),
            ("far_out_of_range", entryImage(#"{"dtype":"F32","shape":[1152921504606846976],"data_offsets":[0,4611686018427387904]}"#), .incompleteBuffer, nil),
            ("wrong_byte_length", entryImage(#"{"dtype":"F32","shape":[3],"data_offsets":[0,8]}"#, data: 8), .sizeMismatch, "t"),
            ("file_too_long", entryImage(f32x2, data: 9), .incompleteBuffer, nil),
            ("file_too_short", entryImage(f32x2, data: 7), .incompleteBuffer, nil),
            ("overflow_shape", entryImage(#"{"dtype":"F32","shape":[4611686018427387904,4611686018427387904],"data_offsets":[0,0]}"#), .overflow, "t"),
            ("overflow_bytes", entryImage(#"{"dtype":"F64","shape":[4611686018427387904],"data_offsets":[0,0]}"#), .overflow, "t"),
            ("metadata_not_string", safetensorsImage(header: #"{"__metadata__":{"format":1}}"#), .invalidMetadata, nil),
            ("metadata_nested", safetensorsImage(header: #"{"__metadata__":{"format":{"a":"b"}}}"#), .invalidMetadata, nil),
            ("metadata_not_object", safetensorsImage(header: #"{"__metadata__":"pt"}"#), .invalidMetadata, nil),
            ("metadata_twice", safetensorsImage(header: #"{"__metadata__":{},"__metadata__":{}}"#), .invalidMetadata, nil),
            ("duplicate_tensor", safetensorsImage(header: #"{"a":\#(f32x2),"a":\#(f32x2)}"#, data: 8), .invalidTensorInfo, "a"),
            ("lone_surrogate", safetensorsImage(header: #"{"\ud800":\#(f32x2)}"#, data: 8), .invalidHeader, nil),
            ("bad_escape", safetensorsImage(header: #"{"\q":\#(f32x2)}"#, data: 8), .invalidHeader, nil),
            ("raw_control_char", safetensorsImage(header: "{\"a\u{01}\":\(f32x2)}", data: 8), .invalidHeader, nil),
            ("leading_zero", entryImage(#"{"dtype":"F32","shape":[02],"data_offsets":[0,8]}"#, data: 8), .invalidHeader, nil),
        ]
        // Unknown fields are skipped as serde does, but not without limit.
        let deep = String(repeating: "[", count: 300) + String(repeating: "]", count: 300)
        cases.append(("deep_nesting", entryImage(#"{"dtype":"F32","shape":[2],"data_offsets":[0,8],"x":\#(deep)}"#, data: 8), .invalidHeader, nil))

        for testCase in cases {
            let file = path("\(testCase.name).safetensors")
            try Data(testCase.bytes).write(to: URL(fileURLWithPath: file))
            assertSafeTensorsError(try SafeTensorsFile(path: file), testCase.kind, path: file, tensor: testCase.tensor,
                                   "case \(testCase.name)")
            assertSafeTensorsError(try testCase.bytes.withUnsafeBytes { try SafeTensorsFile.parse(bytes: $0, path: file) },
                                   testCase.kind, path: file, tensor: testCase.tensor, "case \(testCase.name) (in memory)")
        }
    }

    /// Inputs at the edges of the format that the reference implementation accepts.
    func testUnusualButValidHeaders() throws {
        let accepted: [(String, [UInt8])] = [
            ("no tensors", safetensorsImage(header: "{}")),
            ("whitespace everywhere", safetensorsImage(header: "{ \"a\" :\n{\"dtype\" : \"U8\" ,\t\"shape\":[ 2 ],\r\"data_offsets\":[0 , 2] } }  \n", data: 2)),
            ("null metadata", safetensorsImage(header: #"{"__metadata__":null,"a":{"dtype":"U8","shape":[1],"data_offsets":[0,1]}}"#, data: 1)),
            ("unknown fields skipped", entryImage(#"{"x":{"y":[1,2.5e-3,true,null,"s"]},"dtype":"U8","shape":[1],"data_offsets":[0,1],"z":-0.5}"#, data: 1)),
            ("empty tensors share an offset", safetensorsImage(header: #"{"a":{"dtype":"F32","shape":[0],"data_offsets":[0,0]},"b":{"dtype":"I64","shape":[2,0],"data_offsets":[0,0]},"c":{"dtype":"U8","shape":[1],"data_offsets":[0,1]}}"#, data: 1)),
            ("escaped name", safetensorsImage(header: #"{"a\/b \u00fc\n\ud83d\ude00":{"dtype":"U8","shape":[1],"data_offsets":[0,1]}}"#, data: 1)),
            ("offsets listed out of order", safetensorsImage(header: #"{"b":{"dtype":"U8","shape":[1],"data_offsets":[1,2]},"a":{"dtype":"U8","shape":[1],"data_offsets":[0,1]}}"#, data: 2)),
        ]
        for (label, bytes) in accepted {
            XCTAssertNoThrow(try SafeTensorsFile(bytes: bytes, path: label), label)
        }
        let escaped = try SafeTensorsFile(bytes: accepted[5].1)
        XCTAssertEqual(escaped.keys, ["a/b ü\n😀"])
        let empty = try SafeTensorsFile(bytes: accepted[4].1)
        XCTAssertEqual(try empty.tensor("b").shape, [2, 0])
    }

    // MARK: Interop with Python

    func testReadsFilesWrittenByPython() throws {
        let expected = try JSONDecoder().decode([String: ExpectedFile].self,
            from: Data(contentsOf: Self.fixtures.appendingPathComponent("expected.json")))
        XCTAssertEqual(expected.count, 3)
        for (filename, want) in expected {
            let file = Self.fixtures.appendingPathComponent(filename).path
            let opened = try SafeTensorsFile(path: file)
            XCTAssertEqual(opened.header.metadata, want.metadata, filename)
            XCTAssertEqual(Set(opened.keys), Set(want.tensors.keys), filename)
            for (name, tensorWant) in want.tensors {
                let tensor = try opened.tensor(name)
                XCTAssertEqual(tensor.dtype.safetensorsName, tensorWant.dtype, "\(filename) \(name)")
                XCTAssertEqual(tensor.shape, tensorWant.shape, "\(filename) \(name)")
                let got = elementStrings(tensor)
                XCTAssertEqual(got.count, tensorWant.values.count, "\(filename) \(name)")
                for (g, w) in zip(got, tensorWant.values) where !sameValue(g, w, dtype: tensor.dtype) {
                    XCTFail("\(filename) \(name): got \(got), expected \(tensorWant.values)")
                    break
                }
            }
        }
    }

    /// Reading a Python file and writing it back gives Python's bytes exactly (layout, header
    /// JSON, escaping, padding, and NaN payloads untouched).
    func testRewritingPythonFilesReproducesTheirBytes() throws {
        for filename in ["python_mixed.safetensors", "python_no_metadata.safetensors", "python_empty.safetensors"] {
            let url = Self.fixtures.appendingPathComponent(filename)
            let opened = try SafeTensorsFile(path: url.path)
            let rewritten = try serializeSafeTensors(try opened.tensors(), metadata: opened.header.metadata)
            XCTAssertEqual(rewritten, try [UInt8](Data(contentsOf: url)), filename)
        }
    }

    /// The tensors of Fixtures/safetensors/swift_written.safetensors; make_safetensors_fixtures.py
    /// (`swift_expected`) holds the same values and checks the file loads in Python.
    static func swiftWrittenTensors() -> [String: Tensor] {
        let weight = rawTensor((0..<6).map { (Float($0) - 2.5) * 0.5 }, shape: [2, 3], dtype: .float32)
        return [
            "weight": weight,
            "weight_t": Tensor(storage: weight.storage, shape: [3, 2], dtype: .float32, strides: [1, 3]),
            "half": rawTensor([Float16(1), -2, 0.5, 65504], shape: [4], dtype: .float16),
            "brain": rawTensor([Float(1), -3.5, 256].map { bfloat16Bits($0) }, shape: [3], dtype: .bfloat16),
            "double": rawTensor([Double.pi, -M_E], shape: [2], dtype: .float64),
            "long": rawTensor([-(Int64(1) << 40), 0, (Int64(1) << 53) + 1], shape: [3], dtype: .int64),
            "int": rawTensor([Int32(-7), Int32.max], shape: [2], dtype: .int32),
            "bytes": rawTensor([UInt8(0), 1, 128, 255], shape: [4], dtype: .uint8),
            "flags": rawTensor([UInt8(1), 0, 1], shape: [3], dtype: .bool),
            "empty": rawTensor([Float](), shape: [0], dtype: .float32),
            "scalar": rawTensor([Double(42)], shape: [], dtype: .float64),
        ]
    }

    /// With TENSORKIT_WRITE_FIXTURES=1 this (re)writes the fixture; otherwise it checks the
    /// writer still produces exactly the committed bytes (which Python verified).
    func testSwiftWrittenFixture() throws {
        let fixture = Self.fixtures.appendingPathComponent("swift_written.safetensors")
        let tensors = Self.swiftWrittenTensors()
        if ProcessInfo.processInfo.environment["TENSORKIT_WRITE_FIXTURES"] == "1" {
            try saveSafeTensors(tensors, metadata: ["format": "pt"], to: fixture.path)
        }
        let committed = try [UInt8](Data(contentsOf: fixture))
        XCTAssertEqual(try serializeSafeTensors(tensors, metadata: ["format": "pt"]), committed)
        let loaded = try SafeTensorsFile(path: fixture.path)
        XCTAssertEqual(values(try loaded.tensor("weight_t"), Float.self), [-1.25, 0.25, -0.75, 0.75, -0.25, 1.25])
        XCTAssertEqual(values(try loaded.tensor("long"), Int64.self), [-(Int64(1) << 40), 0, (Int64(1) << 53) + 1])
    }
}

// MARK: - Helpers

private struct ExpectedFile: Decodable {
    struct ExpectedTensor: Decodable {
        let dtype: String
        let shape: [Int]
        let values: [String]
    }
    let metadata: [String: String]?
    let tensors: [String: ExpectedTensor]
}

/// A tensor holding exactly these element bits (no dtype conversion involved).
private func rawTensor<T>(_ elements: [T], shape: [Int], dtype: DType) -> Tensor {
    precondition(MemoryLayout<T>.stride == dtype.byteSize && elements.count == shape.reduce(1, *))
    let storage = Storage(cpuByteCount: elements.count * dtype.byteSize)
    elements.withUnsafeBytes { storage.pointer.copyMemory(from: $0.baseAddress ?? UnsafeRawPointer(storage.pointer), byteCount: $0.count) }
    return Tensor(storage: storage, shape: shape, dtype: dtype)
}

/// The elements of a tensor (any strides) as T, row-major.
private func values<T>(_ tensor: Tensor, _: T.Type) -> [T] {
    let packed = tensor.contiguous()
    return Array(UnsafeBufferPointer(start: packed.pointer(as: T.self), count: packed.numel))
}

private func rawBytes(_ tensor: Tensor) -> [UInt8] {
    let packed = tensor.contiguous()
    return Array(UnsafeRawBufferPointer(start: packed.storage.pointer + packed.offset * packed.dtype.byteSize,
                                        count: packed.numel * packed.dtype.byteSize))
}

/// Each element printed exactly: integers in decimal, floats via Double.
private func elementStrings(_ tensor: Tensor) -> [String] {
    switch tensor.dtype {
    case .float32: return values(tensor, Float.self).map { "\(Double($0))" }
    case .float64: return values(tensor, Double.self).map { "\($0)" }
    case .float16: return values(tensor, Float16.self).map { "\(Double(Float($0)))" }
    case .bfloat16: return values(tensor, UInt16.self).map { "\(Double(floatFromBFloat16Bits($0)))" }
    case .int32: return values(tensor, Int32.self).map { "\($0)" }
    case .int64: return values(tensor, Int64.self).map { "\($0)" }
    case .uint8, .bool: return values(tensor, UInt8.self).map { "\($0)" }
    }
}

private func sameValue(_ got: String, _ want: String, dtype: DType) -> Bool {
    guard dtype.isFloatingPoint else { return got == want }
    guard let g = Double(got), let w = Double(want) else { return false }
    return g.isNaN ? w.isNaN : g.bitPattern == w.bitPattern
}

private func lengthPrefix(_ length: UInt64) -> [UInt8] {
    withUnsafeBytes(of: length.littleEndian) { Array($0) }
}

/// A safetensors image: length prefix, header padded with spaces to 8 bytes, `data` bytes.
private func safetensorsImage(header: String, data: Int = 0) -> [UInt8] {
    safetensorsImage(headerBytes: Array(header.utf8), data: [UInt8](repeating: 0xAB, count: data))
}

private func safetensorsImage(header: String, data: [UInt8]) -> [UInt8] {
    safetensorsImage(headerBytes: Array(header.utf8), data: data)
}

private func safetensorsImage(headerBytes: [UInt8], data: [UInt8] = []) -> [UInt8] {
    var header = headerBytes
    while header.count % 8 != 0 { header.append(0x20) }
    return lengthPrefix(UInt64(header.count)) + header + data
}

/// An image whose only tensor is "t" with the given entry JSON.
private func entryImage(_ entry: String, data: Int = 0) -> [UInt8] {
    safetensorsImage(header: #"{"t":\#(entry)}"#, data: data)
}

private func assertSafeTensorsError<T>(_ expression: @autoclosure () throws -> T, _ kind: SafeTensorsError.Kind,
                                       path: String, tensor: String? = nil, _ label: String = "",
                                       file: StaticString = #filePath, line: UInt = #line) {
    do {
        _ = try expression()
        XCTFail("\(label): expected a \(kind) error, nothing was thrown", file: file, line: line)
    } catch let error as SafeTensorsError {
        XCTAssertEqual(error.kind, kind, "\(label): \(error)", file: file, line: line)
        XCTAssertTrue(error.description.contains(path), "\(label): message does not name the file: \(error)", file: file, line: line)
        XCTAssertEqual(error.localizedDescription, error.description, file: file, line: line)
        if let tensor {
            XCTAssertEqual(error.tensor, tensor, "\(label): \(error)", file: file, line: line)
            XCTAssertTrue(error.description.contains("'\(tensor)'"), "\(label): message does not name the tensor: \(error)", file: file, line: line)
        }
    } catch {
        XCTFail("\(label): expected SafeTensorsError, got \(error)", file: file, line: line)
    }
}
