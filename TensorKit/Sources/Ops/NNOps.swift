/// Neural-network operations: shape checks and autograd here, kernels in the backends.

/// 2-D convolution, NCHW input and OIHW weight (PyTorch's `F.conv2d`).
public func conv2d(_ input: Tensor, weight: Tensor, bias: Tensor? = nil,
                   stride: (Int, Int) = (1, 1), padding: (Int, Int) = (0, 0),
                   dilation: (Int, Int) = (1, 1), groups: Int = 1, residual: Tensor? = nil) -> Tensor {
    precondition(input.rank == 4 && weight.rank == 4, "conv2d expects 4-D input and weight, got \(input.shape), \(weight.shape)")
    precondition(input.shape[1] == weight.shape[1] * groups && weight.shape[0] % groups == 0,
                 "conv2d: input channels \(input.shape[1]) do not match weight \(weight.shape) with groups \(groups)")
    if let bias { precondition(bias.shape == [weight.shape[0]], "conv2d: bias shape \(bias.shape) for weight \(weight.shape)") }
    let p = Conv2dParameters(stride: stride, padding: padding, dilation: dilation, groups: groups)
    let (oh, ow) = p.outputSize(height: input.shape[2], width: input.shape[3], kernel: (weight.shape[2], weight.shape[3]))
    precondition(oh > 0 && ow > 0, "conv2d: output would be empty for input \(input.shape) and weight \(weight.shape)")
    if let residual {
        precondition(residual.shape == [input.shape[0], weight.shape[0], oh, ow] && residual.dtype == input.dtype
                     && residual.device == input.device,
                     "conv2d: residual \(residual.shape) \(residual.dtype) for output \([input.shape[0], weight.shape[0], oh, ow]) \(input.dtype)")
    }
    let x = input.detach().contiguous(), w = weight.detach().contiguous()
    let b = backend(for: input.device)
    let out = b.conv2d(x, weight: w, bias: bias?.detach().contiguous(), residual: residual?.detach().contiguous(), p)
    // The residual comes first among the inputs: the graph then walks the block's shortcut before its
    // convolutions, as it did for `shortcut + conv(h)`, so gradients accumulate in the same order
    // (bit-identical training to the unfused add).
    var inputs = [input, weight]
    if let bias { inputs.append(bias) }
    if let residual { inputs.insert(residual, at: 0) }
    let inputShape = input.shape, weightShape = weight.shape
    // Only the gradients some input needs are computed, and only their operands are kept alive by
    // the graph: a frozen weight (LoRA) keeps no activation, a frozen bias costs no reduction.
    let savedWeight = input.requiresGrad ? w : nil, savedInput = weight.requiresGrad ? x : nil
    let hasBias = bias != nil, needBias = bias?.requiresGrad ?? false
    let hasResidual = residual != nil, needResidual = residual?.requiresGrad ?? false
    return Tensor.record(out, "conv2d", inputs: inputs) { g in
        let gc = g.contiguous()
        let b = backend(for: g.device)
        var grads: [Tensor?] = [
            savedWeight.map { b.conv2dBackwardInput(gc, weight: $0, inputShape: inputShape, p) },
            savedInput.map { b.conv2dBackwardWeight(gc, input: $0, weightShape: weightShape, p) },
        ]
        if hasBias { grads.append(needBias ? gc.sum(axes: [0, 2, 3]) : nil) }
        if hasResidual { grads.insert(needResidual ? g : nil, at: 0) }
        return grads
    }
}

/// (x + bias) + residual as one op and one pass (`Backend.addBiasResidual`): bias [x.shape.last]
/// broadcast over the rows, residual of x's shape; either may be nil. The values are those of the
/// two separate adds (on CUDA in float16/bfloat16: rounded once instead of twice).
public func addingBiasAndResidual(_ x: Tensor, bias: Tensor?, residual: Tensor?) -> Tensor {
    if bias == nil && residual == nil { return x }
    if let bias {
        precondition(bias.shape == [x.shape.last ?? 0] && bias.dtype == x.dtype && bias.device == x.device,
                     "addingBiasAndResidual: bias \(bias.shape) \(bias.dtype) for \(x.shape) \(x.dtype)")
    }
    if let residual {
        precondition(residual.shape == x.shape && residual.dtype == x.dtype && residual.device == x.device,
                     "addingBiasAndResidual: residual \(residual.shape) \(residual.dtype) for \(x.shape) \(x.dtype)")
    }
    let out = backend(for: x.device).addBiasResidual(x.detach().contiguous(), bias: bias?.detach().contiguous(),
                                                     residual: residual?.detach().contiguous(), inner: 1)
    var inputs = [x]
    if let bias { inputs.append(bias) }
    if let residual { inputs.append(residual) }
    let needBias = bias?.requiresGrad ?? false, width = x.shape.last ?? 0
    let hasBias = bias != nil, hasResidual = residual != nil
    return Tensor.record(out, "bias+residual", inputs: inputs) { g in
        var grads: [Tensor?] = [g]
        if hasBias { grads.append(needBias ? g.sumToShape([width]) : nil) }
        if hasResidual { grads.append(g) }
        return grads
    }
}

/// diffusers' GEGLU applied to a projection's output: with [a, g] = h's last axis split in halves and
/// each half's part of `bias` added, returns a · gelu(g) (exact, erf) of shape [.., width / 2].
/// One kernel forward and one backward (`Backend.geglu`), where the unfused ops take a bias add,
/// a gelu and a product forward and, backward, two products, the gelu's derivative, two zero-filled
/// halves scattered into and summed. `h` is the projection without its bias, so the bias add is part
/// of this pass too; the backward keeps h (as the unfused product and gelu would keep both halves).
public func geglu(_ h: Tensor, bias: Tensor? = nil) -> Tensor {
    let width = h.shape.last ?? 0
    precondition(h.rank >= 1 && width % 2 == 0, "geglu: the last axis of \(h.shape) must have an even size")
    if let bias {
        precondition(bias.shape == [width] && bias.dtype == h.dtype && bias.device == h.device,
                     "geglu: bias \(bias.shape) \(bias.dtype) for \(h.shape) \(h.dtype)")
    }
    let hs = h.detach().contiguous(), bs = bias?.detach().contiguous()
    let out = backend(for: h.device).geglu(hs, bias: bs)
    let needBias = bias?.requiresGrad ?? false, hasBias = bias != nil
    return Tensor.record(out, "geglu", inputs: [h] + (bias.map { [$0] } ?? [])) { g in
        let dh = backend(for: g.device).gegluBackward(g.contiguous(), h: hs, bias: bs)
        return hasBias ? [dh, needBias ? dh.sumToShape([width]) : nil] : [dh]
    }
}

/// Group normalisation of [N, C, *] with optional per-channel affine (PyTorch's `F.group_norm`).
/// With `silu`, returns `F.silu(F.group_norm(...))` in one pass (diffusers' ResnetBlock2D applies
/// SiLU right after its GroupNorms); the backward recomputes the pre-activation, so nothing but the
/// input and the statistics is kept for it.
public func groupNorm(_ x: Tensor, groups: Int, weight: Tensor?, bias: Tensor?, eps: Double = 1e-5,
                      silu: Bool = false) -> Tensor {
    precondition(x.rank >= 2 && x.shape[1] % groups == 0, "group_norm: \(x.shape[safe: 1] ?? 0) channels not divisible into \(groups) groups")
    let channels = x.shape[1]
    if let weight { precondition(weight.shape == [channels], "group_norm: weight shape \(weight.shape), expected [\(channels)]") }
    if let bias { precondition(bias.shape == [channels], "group_norm: bias shape \(bias.shape), expected [\(channels)]") }
    let xs = x.detach().contiguous(), ws = weight?.detach().contiguous(), bs = bias?.detach().contiguous()
    let (out, stats) = backend(for: x.device).groupNorm(xs, groups: groups, weight: ws, bias: bs, eps: eps, silu: silu)
    let inputs = [x] + [weight, bias].compactMap { $0 }
    // Decided now, not at backward time: frozen parameters (LoRA) cost no parameter reductions,
    // and the bias is kept alive only when the backward recomputes the pre-activation from it.
    let parameterGradients = weight?.requiresGrad == true || bias?.requiresGrad == true
    let hasWeight = weight != nil, hasBias = bias != nil
    let savedBias = silu ? bs : nil
    return Tensor.record(out, silu ? "group_norm_silu" : "group_norm", inputs: inputs) { g in
        let r = backend(for: g.device).groupNormBackward(g.contiguous(), x: xs, groups: groups, weight: ws, bias: savedBias,
                                                         stats: stats, silu: silu, parameterGradients: parameterGradients)
        var grads: [Tensor?] = [r.input]
        if hasWeight { grads.append(r.weight) }
        if hasBias { grads.append(r.bias) }
        return grads
    }
}

/// Layer normalisation over the trailing axes `normalizedShape` (PyTorch's `F.layer_norm`).
public func layerNorm(_ x: Tensor, normalizedShape: [Int], weight: Tensor?, bias: Tensor?, eps: Double = 1e-5) -> Tensor {
    precondition(Array(x.shape.suffix(normalizedShape.count)) == normalizedShape,
                 "layer_norm: input \(x.shape) does not end with \(normalizedShape)")
    if let weight { precondition(weight.shape == normalizedShape, "layer_norm: weight shape \(weight.shape), expected \(normalizedShape)") }
    if let bias { precondition(bias.shape == normalizedShape, "layer_norm: bias shape \(bias.shape), expected \(normalizedShape)") }
    let count = normalizedShape.reduce(1, *)
    let xs = x.detach().contiguous(), ws = weight?.detach().contiguous(), bs = bias?.detach().contiguous()
    let (out, stats) = backend(for: x.device).layerNorm(xs, normalizedCount: count, weight: ws, bias: bs, eps: eps)
    let inputs = [x] + [weight, bias].compactMap { $0 }
    // As in groupNorm: parameter gradients only when a parameter trains; the bias is not kept.
    let parameterGradients = weight?.requiresGrad == true || bias?.requiresGrad == true
    let hasWeight = weight != nil, hasBias = bias != nil
    return Tensor.record(out, "layer_norm", inputs: inputs) { g in
        let r = backend(for: g.device).layerNormBackward(g.contiguous(), x: xs, normalizedCount: count, weight: ws, stats: stats,
                                                         parameterGradients: parameterGradients)
        var grads: [Tensor?] = [r.input]
        if hasWeight { grads.append(r.weight) }
        if hasBias { grads.append(r.bias) }
        return grads
    }
}

extension Tensor {
    /// Softmax along `axis` (last by default).
    public func softmax(axis: Int = -1) -> Tensor { softmaxImpl(axis: axis, log: false) }
    /// Log-softmax along `axis` (last by default).
    public func logSoftmax(axis: Int = -1) -> Tensor { softmaxImpl(axis: axis, log: true) }

    private func softmaxImpl(axis a: Int, log: Bool) -> Tensor {
        let ax = axis(a)
        if ax != rank - 1 {
            // Kernels work on the last axis; move the axis there and back (views, differentiable).
            return transposed(ax, -1).softmaxImpl(axis: -1, log: log).transposed(ax, -1)
        }
        let xs = self.detach().contiguous()
        let out = backend(for: device).softmax(xs, log: log)
        let saved = out.detach()
        return Tensor.record(out, log ? "log_softmax" : "softmax", inputs: [self]) { g in
            [backend(for: g.device).softmaxBackward(output: saved, gradOutput: g.contiguous(), log: log)]
        }
    }
}

/// softmax(q kᵀ · scale [+ causal mask]) v over [B, H, N, D] tensors, computed in chunks so the full
/// score matrix is never materialised (PyTorch's `F.scaled_dot_product_attention`; default scale 1/√D).
/// The result may be a view (on CUDA's flash path it has q's memory layout, as PyTorch's SDPA output
/// does).
public func scaledDotProductAttention(_ q: Tensor, _ k: Tensor, _ v: Tensor, causal: Bool = false,
                                      scale: Double? = nil) -> Tensor {
    precondition(q.rank == 4 && k.rank == 4 && v.rank == 4, "attention expects [B, H, N, D] tensors, got \(q.shape), \(k.shape), \(v.shape)")
    precondition(q.shape[0] == k.shape[0] && q.shape[1] == k.shape[1] && k.shape[0...2] == v.shape[0...2] && q.shape[3] == k.shape[3],
                 "attention: incompatible shapes q \(q.shape), k \(k.shape), v \(v.shape)")
    let s = scale ?? 1 / Double(q.shape[3]).squareRoot()
    // Views go to the backend as they are: CUDA's flash kernels read the heads of a [B, N, H·D]
    // projection in place and write the output (and the gradients) in the same layout, so splitting
    // and merging heads costs no copies; other paths make what they need contiguous.
    let qs = q.detach(), ks = k.detach(), vs = v.detach()
    let (out, lse) = backend(for: q.device).attention(q: qs, k: ks, v: vs, scale: s, causal: causal)
    let saved = out.detach()
    return Tensor.record(out, "attention", inputs: [q, k, v]) { g in
        let (dq, dk, dv) = backend(for: g.device).attentionBackward(
            q: qs, k: ks, v: vs, output: saved, logSumExp: lse, gradOutput: g, scale: s, causal: causal)
        return [dq, dk, dv]
    }
}

/// Rows of `weight` [V, D] at integer `indices` (PyTorch's `F.embedding`); backward scatter-adds.
public func embedding(_ indices: Tensor, weight: Tensor) -> Tensor {
    precondition(indices.dtype == .int64 || indices.dtype == .int32, "embedding indices must be int32/int64, got \(indices.dtype)")
    precondition(weight.rank == 2, "embedding weight must be [V, D], got \(weight.shape)")
    let idx = indices.contiguous()
    let out = backend(for: weight.device).embedding(weight: weight.detach().contiguous(), indices: idx)
    let count = weight.shape[0]
    return Tensor.record(out, "embedding", inputs: [weight]) { g in
        [backend(for: g.device).embeddingBackward(g.contiguous(), indices: idx, numEmbeddings: count)]
    }
}

extension Array {
    subscript(safe index: Int) -> Element? { indices.contains(index) ? self[index] : nil }
}
