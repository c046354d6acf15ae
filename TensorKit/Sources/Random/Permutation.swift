// Random permutations from the counter-based generator (the role of `torch.randperm`), so that
// shuffles are reproducible from a saved (seed, offset) like every other draw.
//
//   var g = PhiloxGenerator(seed: 0)
//   let order = g.permutation(10)          // a permutation of 0..<10; g.offset advanced by 3 blocks

extension PhiloxGenerator {
    /// A uniformly random permutation of 0..<n: Fisher–Yates driven by n words of the stream
    /// (one reserved draw of n values, like `Tensor.rand`), each mapped to an index by the
    /// 64-bit multiply-shift of (word, bound), whose bias is below 2⁻³² · n.
    public mutating func permutation(_ n: Int) -> [Int] {
        precondition(n >= 0, "permutation: n must be non-negative, got \(n)")
        var result = Array(0..<n)
        guard n > 1 else { _ = reserve(n); return result }
        let start = reserve(n)
        var block = Philox.words(seed: seed, index: start)
        var blockIndex = start
        for i in stride(from: n - 1, to: 0, by: -1) {
            let draw = n - 1 - i                     // which word of the stream
            let index = start + UInt64(draw / 4)
            if index != blockIndex {
                block = Philox.words(seed: seed, index: index)
                blockIndex = index
            }
            let word: UInt32
            switch draw % 4 {
            case 0: word = block.0
            case 1: word = block.1
            case 2: word = block.2
            default: word = block.3
            }
            let j = Int((UInt64(word) &* UInt64(i + 1)) >> 32)  // uniform in 0...i
            result.swapAt(i, j)
        }
        return result
    }
}
