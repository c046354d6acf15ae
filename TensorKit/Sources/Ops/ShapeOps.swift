/// Joining, splitting, padding and resampling built from views and copies.
extension Tensor {
    /// Concatenation along `axis`; all other axes must agree.
    public static func concat(_ tensors: [Tensor], axis axisIndex: Int) -> Tensor {
        precondition(!tensors.isEmpty, "concat of no tensors")
        let first = tensors[0]
        let a = first.axis(axisIndex)
        for t in tensors {
            precondition(t.rank == first.rank && t.dtype == first.dtype && t.device == first.device,
                         "concat: \(t.shape)/\(t.dtype) does not match \(first.shape)/\(first.dtype)")
            for i in 0..<t.rank where i != a {
                precondition(t.shape[i] == first.shape[i], "concat along \(a): shapes \(first.shape) and \(t.shape)")
            }
        }
        var shape = first.shape
        shape[a] = tensors.reduce(0) { $0 + $1.shape[a] }
        let out = Tensor(unfilled: shape, dtype: first.dtype, device: first.device)  // the inputs cover it
        var start = 0
        var bounds: [(Int, Int)] = []
        for t in tensors {
            out.storeView(t, axis: a, start: start, end: start + t.shape[a])
            bounds.append((start, start + t.shape[a]))
            start += t.shape[a]
        }
        return Tensor.record(out, "concat", inputs: tensors) { g in
            bounds.map { g.slice(a, $0.0, $0.1) }
        }
    }

    /// Stacks same-shaped tensors along a new axis.
    public static func stack(_ tensors: [Tensor], axis: Int = 0) -> Tensor {
        precondition(!tensors.isEmpty, "stack of no tensors")
        let at = axis < 0 ? axis + tensors[0].rank + 1 : axis
        return concat(tensors.map { $0.unsqueeze(at) }, axis: at)
    }

    /// Splits into pieces of the given sizes along `axis` (views).
    public func split(_ sizes: [Int], axis axisIndex: Int) -> [Tensor] {
        let a = axis(axisIndex)
        precondition(sizes.reduce(0, +) == shape[a], "split sizes \(sizes) do not add up to \(shape[a])")
        var start = 0
        return sizes.map { size in
            defer { start += size }
            return slice(a, start, start + size)
        }
    }

    /// Splits into `chunks` pieces along `axis` (the last may be smaller), like `torch.chunk`.
    public func chunk(_ chunks: Int, axis axisIndex: Int) -> [Tensor] {
        let a = axis(axisIndex)
        let size = (shape[a] + chunks - 1) / chunks
        var sizes: [Int] = []
        var left = shape[a]
        while left > 0 { sizes.append(Swift.min(size, left)); left -= size }
        return split(sizes, axis: a)
    }

    /// Constant padding. `padding` lists (before, after) pairs starting from the LAST axis,
    /// like `torch.nn.functional.pad`.
    public func pad(_ padding: [(Int, Int)], value: Double = 0) -> Tensor {
        precondition(padding.count <= rank, "pad: \(padding.count) axis pairs for rank \(rank)")
        var shape = self.shape
        var starts = [Int](repeating: 0, count: rank)
        for (i, (before, after)) in padding.enumerated() {
            precondition(before >= 0 && after >= 0, "pad: negative padding is not supported")
            let a = rank - 1 - i
            shape[a] += before + after
            starts[a] = before
        }
        let out = Tensor.full(shape, value, dtype: dtype, device: device)
        var view = out.detach()
        for a in 0..<rank { view = view.slice(a, starts[a], starts[a] + self.shape[a]) }
        backend(for: device).copy(self, into: view)
        let original = self.shape
        return Tensor.record(out, "pad", inputs: [self]) { g in
            var v = g
            for a in 0..<original.count { v = v.slice(a, starts[a], starts[a] + original[a]) }
            return [v]
        }
    }

    /// Nearest-neighbour upsampling of [N, C, H, W] by an integer factor (2 for diffusers' Upsample2D).
    public func upsampleNearest(scale: Int = 2) -> Tensor {
        precondition(rank == 4, "upsampleNearest expects [N, C, H, W], got \(shape)")
        let (n, c, h, w) = (shape[0], shape[1], shape[2], shape[3])
        return reshape([n, c, h, 1, w, 1]).expand([n, c, h, scale, w, scale]).contiguous()
            .reshape([n, c, h * scale, w * scale])
    }

    /// Inverted dropout: zeroes elements with probability `p` and scales the rest by 1/(1-p).
    /// Identity when `training` is false or p == 0.
    public func dropout(_ p: Double, training: Bool, generator: inout PhiloxGenerator) -> Tensor {
        precondition(p >= 0 && p < 1, "dropout probability must be in [0, 1), got \(p)")
        guard training, p > 0 else { return self }
        let keep = Tensor.rand(shape, generator: &generator, dtype: dtype, device: device).ge(Tensor.full([], p, dtype: dtype, device: device))
        return self * (keep * (1 / (1 - p)))
    }
}
