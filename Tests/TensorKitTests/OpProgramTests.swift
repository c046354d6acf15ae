import XCTest
import TensorKit
@testable import GPUCheckKit

/// Random op programs against PyTorch: a fixed sample of scripts/tensorkit_sweep.py's float64 cases
/// (Fixtures/make_op_program_fixtures.py: its first 160 draws of one seed, every op family — views
/// as inputs, broadcasts, negative axes, strides, groups, optimizer steps — plus the cases the sweep
/// found bugs in), each run through the same evaluator as the sweep (`OpPrograms`, GPUCheckKit) and
/// compared with PyTorch's output and gradients: |ours − torch| ≤ 1e-9 · max(1, max |torch|), exact
/// for comparisons and dtype round trips.
final class OpProgramTests: XCTestCase {
    static let directory = URL(fileURLWithPath: #filePath).deletingLastPathComponent()
        .appendingPathComponent("Fixtures").appendingPathComponent("op_programs")

    func testProgramsMatchPyTorch() throws {
        let data = try Data(contentsOf: Self.directory.appendingPathComponent("programs.json"))
        let entries = try XCTUnwrap(JSONSerialization.jsonObject(with: data) as? [[String: Any]])
        XCTAssertGreaterThan(entries.count, 150)
        var byCase: [String: [String: Tensor]] = [:]
        for (key, tensor) in try loadSafeTensors(Self.directory.appendingPathComponent("tensors.safetensors").path) {
            let slash = try XCTUnwrap(key.firstIndex(of: "/"))
            byCase[String(key[..<slash]), default: [:]][String(key[key.index(after: slash)...])] = tensor
        }
        var families = Set<String>()
        for entry in entries {
            let name = try XCTUnwrap(entry["name"] as? String), family = try XCTUnwrap(entry["family"] as? String)
            let program = try XCTUnwrap(entry["program"] as? [String: Any])
            families.insert(family)
            var inputs: [String: Tensor] = [:], expected: [String: Tensor] = [:]
            for (key, tensor) in byCase[name] ?? [:] {
                if key.hasPrefix("expected/") { expected[String(key.dropFirst(9))] = tensor } else { inputs[key] = tensor }
            }
            XCTAssertFalse(expected.isEmpty, "\(name): no expected results in the fixture")
            let results = program["optimizer"] != nil ? try runOptimizer(program, inputs) : try runNodes(program, inputs, name)
            let lastOp = (program["nodes"] as? [[String: Any]])?.last?["op"] as? String
            for (key, want) in expected {
                guard let got = results[key] else { XCTFail("\(name) (\(family)): no '\(key)'"); continue }
                XCTAssertEqual(got.shape, want.shape, "\(name) (\(family)): '\(key)' shape")
                guard got.shape == want.shape, want.numel > 0 else { continue }
                let g = got.to(.float64).toArray(), w = want.to(.float64).toArray()
                let exact = key == "out" && (!want.dtype.isFloatingPoint || ["eq", "gt", "ge", "lt", "le", "to"].contains(lastOp ?? ""))
                let scale = max(1, w.map(abs).max() ?? 0)
                let error = zip(g, w).map { abs($0 - $1) }.max() ?? 0
                if exact {
                    XCTAssertEqual(g, w, "\(name) (\(family)): '\(key)' must match exactly")
                } else {
                    XCTAssertLessThanOrEqual(error, 1e-9 * scale, "\(name) (\(family)): '\(key)' max |diff| \(error)")
                }
            }
            // A gradient PyTorch does not give (the input does not reach the output) must be zero here.
            for (key, got) in results where expected[key] == nil {
                XCTAssertEqual(got.to(.float64).toArray().map(abs).max() ?? 0, 0, "\(name) (\(family)): '\(key)' where PyTorch has none")
            }
        }
        XCTAssertGreaterThanOrEqual(families.count, 20, "the sample should cover most op families: \(families.sorted())")
    }
}
