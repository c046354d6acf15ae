extension Tensor {
    private func normalizedAxes(_ axes: [Int]?) -> [Int] {
        guard let axes else { return Array(0..<rank) }
        let normalized = axes.map { axis($0) }
        precondition(Set(normalized).count == normalized.count, "repeated axis in \(axes)")
        return normalized.sorted()
    }

    private func dropAxes(_ axes: [Int]) -> [Int] {
        shape.enumerated().filter { !axes.contains($0.offset) }.map { $0.element }
    }

    /// Sum over `axes` (all when nil).
    public func sum(axes: [Int]? = nil, keepDims: Bool = false) -> Tensor {
        let ax = normalizedAxes(axes)
        if ax.isEmpty { return self }
        let reduced = backend(for: device).reduce(.sum, self, axes: ax)
        let inputShape = shape
        let kept = Tensor.record(reduced, "sum", inputs: [self]) { g in [g.expand(inputShape).contiguous()] }
        return keepDims ? kept : kept.reshape(dropAxes(ax))
    }

    public func sum(axis: Int, keepDims: Bool = false) -> Tensor { sum(axes: [axis], keepDims: keepDims) }

    public func mean(axes: [Int]? = nil, keepDims: Bool = false) -> Tensor {
        let ax = normalizedAxes(axes)
        let count = ax.reduce(1) { $0 * shape[$1] }
        return sum(axes: ax, keepDims: keepDims) * (1.0 / Double(Swift.max(count, 1)))
    }

    public func mean(axis: Int, keepDims: Bool = false) -> Tensor { mean(axes: [axis], keepDims: keepDims) }

    /// Maximum over `axes`; the gradient is shared evenly among tied maxima (like `torch.amax`).
    public func max(axes: [Int]? = nil, keepDims: Bool = false) -> Tensor { extremum(.max, axes, keepDims) }
    public func min(axes: [Int]? = nil, keepDims: Bool = false) -> Tensor { extremum(.min, axes, keepDims) }
    public func max(axis: Int, keepDims: Bool = false) -> Tensor { max(axes: [axis], keepDims: keepDims) }
    public func min(axis: Int, keepDims: Bool = false) -> Tensor { min(axes: [axis], keepDims: keepDims) }

    private func extremum(_ op: ReduceOp, _ axes: [Int]?, _ keepDims: Bool) -> Tensor {
        let ax = normalizedAxes(axes)
        if ax.isEmpty { return self }
        let reduced = backend(for: device).reduce(op, self, axes: ax)
        let input = self.detach(), value = reduced.detach()
        let kept = Tensor.record(reduced, op == .max ? "amax" : "amin", inputs: [self]) { g in
            let mask = input.eq(value)
            let count = mask.sum(axes: ax, keepDims: true)
            return [mask * (g / count)]
        }
        return keepDims ? kept : kept.reshape(dropAxes(ax))
    }

    /// Variance with Bessel's `correction` (1 = unbiased, PyTorch's default; 0 = population).
    public func variance(axes: [Int]? = nil, correction: Int = 1, keepDims: Bool = false) -> Tensor {
        let ax = normalizedAxes(axes)
        let count = ax.reduce(1) { $0 * shape[$1] }
        let centered = self - mean(axes: ax, keepDims: true)
        let total = centered.square().sum(axes: ax, keepDims: keepDims)
        return total * (1.0 / Double(Swift.max(count - correction, 0)))
    }
}
