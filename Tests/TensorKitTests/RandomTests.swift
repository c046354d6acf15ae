import XCTest
@testable import TensorKit

final class RandomTests: XCTestCase {
    /// Known-answer vectors from the Random123 distribution (kat_vectors: counter[4] key[2] -> out[4]).
    func testPhiloxMatchesRandom123KnownAnswers() {
        let zero = Philox.block(counter: (0, 0, 0, 0), key: (0, 0))
        XCTAssertTrue(zero == (0x6627_e8d5, 0xe169_c58d, 0xbc57_ac4c, 0x9b00_dbd8))
        let ones = Philox.block(counter: (.max, .max, .max, .max), key: (.max, .max))
        XCTAssertTrue(ones == (0x408f_276d, 0x41c8_3b0e, 0xa20b_c7c6, 0x6d54_51fd))
        let pi = Philox.block(counter: (0x243f_6a88, 0x85a3_08d3, 0x1319_8a2e, 0x0370_7344), key: (0xa409_3822, 0x299f_31d0))
        XCTAssertTrue(pi == (0xd16c_fe09, 0x94fd_cceb, 0x5001_e420, 0x2412_6ea1))
    }

    func testStreamResumesExactlyFromSavedOffset() {
        var whole = PhiloxGenerator(seed: 42)
        let all = Tensor.randn([10], generator: &whole).toArray() + Tensor.randn([7], generator: &whole).toArray()
        var first = PhiloxGenerator(seed: 42)
        _ = Tensor.randn([10], generator: &first)
        let saved = first  // what a checkpoint stores
        var resumed = PhiloxGenerator(seed: saved.seed, offset: saved.offset)
        let rest = Tensor.randn([7], generator: &resumed).toArray()
        XCTAssertEqual(Array(all[10...]), rest)
        XCTAssertEqual(resumed, whole)
    }

    func testNormalAndUniformMoments() {
        // Sample moments of 2^18 draws: standard errors are ~0.002 for the mean, so 0.01 is a 5-sigma band.
        let n = 1 << 18
        let z = Tensor.randn([n], seed: 7).toArray()
        let mean = z.reduce(0, +) / Double(n)
        let variance = z.map { ($0 - mean) * ($0 - mean) }.reduce(0, +) / Double(n)
        XCTAssertEqual(mean, 0, accuracy: 0.01)
        XCTAssertEqual(variance, 1, accuracy: 0.01)
        let u = Tensor.rand([n], seed: 8).toArray()
        XCTAssertTrue(u.allSatisfy { $0 >= 0 && $0 < 1 })
        XCTAssertEqual(u.reduce(0, +) / Double(n), 0.5, accuracy: 0.005)
        // float64 draws use the same stream mapping as float32 (up to float32 rounding).
        let z64 = Tensor.randn([64], seed: 7, dtype: .float64).toArray()
        assertClose(Array(z[0..<64]), z64, atol: 1e-6, rtol: 1e-6, "float32 vs float64 stream")
    }

    /// `permutation(n)`: a permutation of 0..<n that uses ⌈n/4⌉ blocks of the stream, and uniform:
    /// over 12,000 draws each of the 6 orders of 3 items appears 2,000 ± 5σ (σ ≈ 40.8) times.
    func testPermutationIsUniformAndAdvancesTheStream() {
        var g = PhiloxGenerator(seed: 99)
        for n in [0, 1, 2, 5, 17] {
            let before = g.offset
            let p = g.permutation(n)
            XCTAssertEqual(p.sorted(), Array(0..<n))
            XCTAssertEqual(g.offset - before, UInt64((n + 3) / 4))
        }
        var counts: [[Int]: Int] = [:]
        for _ in 0..<12_000 { counts[g.permutation(3), default: 0] += 1 }
        XCTAssertEqual(counts.count, 6)
        let sigma = (12_000.0 * (1.0 / 6) * (5.0 / 6)).squareRoot()
        for (order, count) in counts {
            XCTAssertLessThan(abs(Double(count) - 2_000), 5 * sigma, "\(order): \(count)")
        }
    }
}
