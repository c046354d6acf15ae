// Fuzz harness for the safetensors reader (SafeTensorsFile.parse and tensor materialization).
//
// Built with -DFUZZING (and -sanitize=fuzzer,address -parse-as-library), this file defines
// libFuzzer's LLVMFuzzerTestOneInput and an entry point that starts libFuzzer's driver.
// See scripts/fuzz-safetensors.sh.
// Built normally it is a replay tool: `SafeTensorsFuzz FILE...` runs each file (for example a
// crash artifact) through the same checks and prints OK or the error.

import Foundation
import TensorKit

/// Parses `bytes`; when they are valid, checks the properties a valid file must have:
/// every tensor is readable in full, and writing the tensors back and reparsing gives the
/// same names, dtypes, shapes, bytes and metadata. A violated property traps (a finding).
/// Returns the number of tensors, or throws the parser's error.
@discardableResult
func exercise(_ bytes: UnsafeRawBufferPointer, label: String) throws -> Int {
    let header = try SafeTensorsFile.parse(bytes: bytes, path: label)
    let file = try SafeTensorsFile(bytes: Array(bytes), path: label)
    precondition(file.header == header, "parse(bytes:) and init(bytes:) disagree")

    var checksum: UInt8 = 0
    let tensors = try file.tensors()
    for (name, tensor) in tensors {
        let entry = header.entries[name]!
        precondition(tensor.shape == entry.shape && tensor.dtype == entry.dtype)
        let count = tensor.numel * tensor.dtype.byteSize
        precondition(count == entry.byteRange.count, "byte count of '\(name)'")
        // Touch every byte so AddressSanitizer sees any out-of-bounds view.
        let start = tensor.storage.pointer + tensor.offset * tensor.dtype.byteSize
        for byte in UnsafeRawBufferPointer(start: start, count: count) { checksum ^= byte }
        let source = UnsafeRawBufferPointer(rebasing: bytes[(header.dataStart + entry.byteRange.lowerBound)...].prefix(count))
        precondition(source.elementsEqual(UnsafeRawBufferPointer(start: start, count: count)), "data of '\(name)'")
    }
    _ = checksum

    let rewritten = try serializeSafeTensors(tensors, metadata: header.metadata)
    let reparsed = try rewritten.withUnsafeBytes { try SafeTensorsFile.parse(bytes: $0, path: label + " (rewritten)") }
    precondition(reparsed.metadata == header.metadata, "metadata changed in the round trip")
    precondition(Set(reparsed.entries.keys) == Set(header.entries.keys), "names changed in the round trip")
    for (name, entry) in header.entries {
        let again = reparsed.entries[name]!
        precondition(again.dtype == entry.dtype && again.shape == entry.shape, "'\(name)' changed in the round trip")
        let before = bytes[(header.dataStart + entry.byteRange.lowerBound)...].prefix(entry.byteRange.count)
        let after = rewritten[(reparsed.dataStart + again.byteRange.lowerBound)...].prefix(again.byteRange.count)
        precondition(before.elementsEqual(after), "data of '\(name)' changed in the round trip")
    }
    return tensors.count
}

#if FUZZING
@_cdecl("LLVMFuzzerTestOneInput")
public func fuzzOneInput(_ data: UnsafePointer<UInt8>?, _ size: Int) -> Int32 {
    let bytes = UnsafeRawBufferPointer(start: data, count: data == nil ? 0 : size)
    do {
        try exercise(bytes, label: "<fuzz input>")
    } catch let error as SafeTensorsError {
        // Every rejection must say which file it is about.
        precondition(error.description.contains("<fuzz input>"), "error without the path: \(error)")
    } catch {
        preconditionFailure("unexpected error type: \(error)")
    }
    return 0
}

/// libFuzzer's driver (in the runtime that -sanitize=fuzzer links), declared with the C calling
/// convention; `@_extern(c)` needs `-enable-experimental-feature Extern`.
@_extern(c, "LLVMFuzzerRunDriver")
func LLVMFuzzerRunDriver(
    _ argc: UnsafeMutablePointer<Int32>,
    _ argv: UnsafeMutablePointer<UnsafeMutablePointer<UnsafeMutablePointer<CChar>?>?>,
    _ callback: @convention(c) (UnsafePointer<UInt8>?, Int) -> Int32) -> Int32

/// SwiftPM links executables with `--defsym main=SafeTensorsFuzz_main`, and with
/// -parse-as-library Swift emits no entry point, so this provides it and starts libFuzzer.
@_cdecl("SafeTensorsFuzz_main")
public func fuzzerMain(_ argc: Int32, _ argv: UnsafeMutablePointer<UnsafeMutablePointer<CChar>?>?) -> Int32 {
    var argc = argc
    var argv = argv
    return LLVMFuzzerRunDriver(&argc, &argv, fuzzOneInput)
}
#else
// With -parse-as-library (needed by the fuzzing build, which must not get Swift's top-level
// entry point) even this inactive branch may not contain statements, so the replay tool runs
// from the initializer of a global, which a normally built main.swift evaluates eagerly.
let replayExitStatus: Int32 = replay(Array(CommandLine.arguments.dropFirst()))
#endif

/// Runs each file through `exercise` and prints the outcome; exits with 1 if any file could
/// not be read.
func replay(_ paths: [String]) -> Int32 {
    if paths.isEmpty {
        print("usage: SafeTensorsFuzz FILE...   (replays inputs through the fuzz checks)")
        exit(2)
    }
    var status: Int32 = 0
    for path in paths {
        guard let data = FileManager.default.contents(atPath: path) else {
            print("UNREADABLE \(path)")
            status = 1
            continue
        }
        do {
            let count = try data.withUnsafeBytes { try exercise($0, label: path) }
            print("OK \(path): \(count) tensors")
        } catch {
            print("ERROR \(error)")
        }
    }
    exit(status)
}
