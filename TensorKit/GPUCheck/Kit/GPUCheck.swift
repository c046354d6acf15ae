import Foundation
import TensorKit

// Every op on CUDA against the CPU backend, forward and backward, on random inputs.
//
// For each case and dtype: inputs are drawn on the CPU in float32 (for float16/bfloat16 rounded to
// that dtype first, so both sides see the same values); the CPU computes in float32, CUDA in the
// tested dtype. The loss is Σ out·w for a fixed random w, so every gradient is non-trivial.
// Error = max|cuda - cpu| / max|cpu| per tensor (output and each input gradient), and the case
// passes when the worst is ≤ 1e-5 (float32, TF32 off) or ≤ 1e-2 (float16, bfloat16).

enum Input {
    case float([Int], positive: Bool = false)
    case indices([Int], vocabulary: Int)
}

struct Case {
    let name: String
    let inputs: [Input]
    let dtypes: [DType]
    let body: ([Tensor]) -> Tensor
    /// Applies a backend setting for the CUDA side's forward and backward; returns what restores it.
    let setting: (() -> () -> Void)?
    init(_ name: String, _ inputs: [Input], dtypes: [DType] = [.float32, .float16, .bfloat16],
         setting: (() -> () -> Void)? = nil, _ body: @escaping ([Tensor]) -> Tensor) {
        self.name = name; self.inputs = inputs; self.dtypes = dtypes; self.setting = setting; self.body = body
    }
}

/// A case setting: the im2col workspace bounded to `bytes` (forces convolutions into row bands).
func workspace(_ bytes: Int) -> () -> () -> Void {
    { let saved = CUDA.convolutionWorkspaceBytes; CUDA.convolutionWorkspaceBytes = bytes; return { CUDA.convolutionWorkspaceBytes = saved } }
}

/// A case setting: the tensor-core convolution for any grid size (the small cases' few tiles).
let withConvMMAForced: () -> () -> Void = {
    let saved = CUDA.convolutionMMAMinimumTiles; CUDA.convolutionMMAMinimumTiles = 1
    return { CUDA.convolutionMMAMinimumTiles = saved }
}

/// A case setting: convolutions through im2col + cuBLAS even where the tensor-core kernel applies.
let withoutConvMMA: () -> () -> Void = {
    let saved = CUDA.convolutionMMA; CUDA.convolutionMMA = false; return { CUDA.convolutionMMA = saved }
}

/// A case setting: the flash kernels' plain build (no cp.async or ldmatrix; `CUDA.flashPipeline`).
let withPlainFlashKernels: () -> () -> Void = {
    let saved = CUDA.flashPipeline; CUDA.flashPipeline = false; return { CUDA.flashPipeline = saved }
}

/// A case setting: the flash attention kernels off (float16/bfloat16 take the cuBLAS or fused path).
let withoutFlashAttention: () -> () -> Void = {
    let saved = CUDA.flashAttention; CUDA.flashAttention = false; return { CUDA.flashAttention = saved }
}

public enum GPUCheck {
    static let device = Device.cuda(0)

    static var cases: [Case] {
        let f = { (s: [Int]) in Input.float(s) }
        let pos = { (s: [Int]) in Input.float(s, positive: true) }
        /// Scaled dot-product attention of float inputs q, k, v of these shapes.
        func sdpa(_ name: String, _ q: [Int], _ k: [Int], _ v: [Int], setting: (() -> () -> Void)? = nil) -> Case {
            Case(name, [f(q), f(k), f(v)], setting: setting) { scaledDotProductAttention($0[0], $0[1], $0[2]) }
        }
        /// Attention as a transformer runs it: `heads` split off [B, N, H·D] projections (views), the
        /// output's heads merged back; the flash kernels read and write those layouts in place.
        func sdpaInPlace(_ name: String, heads: Int, _ q: [Int], _ kv: [Int], setting: (() -> () -> Void)? = nil) -> Case {
            Case(name, [f(q), f(kv), f(kv)], setting: setting) { x in
                let split = { (t: Tensor) in t.reshape([t.shape[0], t.shape[1], heads, t.shape[2] / heads]).transposed(1, 2) }
                return scaledDotProductAttention(split(x[0]), split(x[1]), split(x[2])).transposed(1, 2).reshape(q)
            }
        }
        return [
            Case("add (broadcast)", [f([4, 1, 33]), f([1, 5, 33])]) { $0[0] + $0[1] },
            // A value per (sample, channel) over an image, on either side (ResNet blocks' time embedding).
            Case("add per channel", [f([2, 8, 4, 8]), f([2, 8, 1, 1])]) { $0[0] + $0[1] },
            Case("sub per channel first", [f([2, 8, 1, 1]), f([2, 8, 4, 8])]) { $0[0] - $0[1] },
            Case("sub", [f([6, 70]), f([6, 70])]) { $0[0] - $0[1] },
            Case("mul (broadcast)", [f([3, 8, 9]), f([8, 1])]) { $0[0] * $0[1] },
            Case("div", [f([5, 40]), pos([5, 40])]) { $0[0] / $0[1] },
            Case("pow (tensor)", [pos([5, 40]), f([5, 40])]) { $0[0].pow($0[1]) },
            Case("maximum", [f([5, 40]), f([5, 40])]) { $0[0].maximum($0[1]) },
            Case("exp", [f([300])]) { $0[0].exp() },
            Case("log", [pos([300])]) { $0[0].log() },
            Case("sqrt", [pos([300])]) { $0[0].sqrt() },
            Case("rsqrt", [pos([300])]) { $0[0].rsqrt() },
            Case("tanh", [f([300])]) { $0[0].tanh() },
            Case("sigmoid", [f([300])]) { $0[0].sigmoid() },
            Case("silu", [f([300])]) { $0[0].silu() },
            Case("relu", [f([300])]) { $0[0].relu() },
            Case("sin/cos", [f([300])]) { $0[0].sin() + $0[0].cos() },
            Case("gelu", [f([300])]) { $0[0].gelu() },
            Case("gelu tanh", [f([300])]) { $0[0].gelu(approximate: true) },
            Case("quick gelu", [f([300])]) { $0[0].quickGelu() },
            // The transformer blocks' feed-forward activation: bias add, split, gelu and product fused.
            Case("geglu", [f([2, 9, 64]), f([64])]) { geglu($0[0], bias: $0[1]) },
            Case("geglu no bias", [f([7, 40])]) { geglu($0[0]) },
            Case("geglu frozen bias, long rows", [f([3, 700, 96]), f([96])]) { geglu($0[0], bias: $0[1].detach()) },
            Case("pow scalar", [pos([300])]) { $0[0].pow(1.7) },
            Case("clamp", [f([300])]) { $0[0].clamp(min: -0.5, max: 0.7) },
            Case("scalar ops", [f([300])]) { ($0[0] * 3) - 1.5 },
            Case("sum (axis)", [f([7, 129, 5])]) { $0[0].sum(axes: [1]) },
            Case("mean (all)", [f([7, 129])]) { $0[0].mean() },
            Case("max (axis)", [f([7, 129])]) { $0[0].max(axis: 1) },
            Case("min (axis)", [f([7, 129])]) { $0[0].min(axis: 0) },
            Case("transpose copy", [f([6, 7, 8])]) { $0[0].permute([2, 0, 1]).contiguous() * 2 },
            // The fast copy forms (`CUDA.fastCopies`): whole 16-byte units (heads split off a
            // projection; a concat's channel slices) and the tiled transpose (NCHW ↔ tokens), each
            // also in the backward pass.
            Case("copy head split in units", [f([2, 70, 160])]) { $0[0].reshape([2, 70, 4, 40]).transposed(1, 2).contiguous() * 2 },
            Case("copy concat slices in units", [f([2, 24, 6, 6]), f([2, 40, 6, 6])]) { Tensor.concat([$0[0], $0[1]], axis: 1) * 2 },
            Case("copy tiled transpose", [f([2, 40, 9, 8])]) { $0[0].reshape([2, 40, 72]).transposed(1, 2).contiguous() * 2 },
            Case("copy tiled transpose, partial tiles", [f([3, 70, 45])]) { $0[0].transposed(1, 2).contiguous() * 2 },
            Case("concat/split", [f([2, 3, 5]), f([2, 4, 5])]) { inputs in
                let c = Tensor.concat([inputs[0], inputs[1]], axis: 1)
                let parts = c.split([2, 5], axis: 1)
                return parts[1] * 2 + parts[0].sum(axis: 1, keepDims: true)
            },
            Case("upsample nearest", [f([2, 3, 5, 6])]) { $0[0].upsampleNearest(scale: 2) },
            Case("matmul (batched)", [f([3, 17, 40]), f([3, 40, 23])]) { $0[0].matmul($0[1]) },
            Case("matmul (transposed)", [f([3, 40, 17]), f([3, 23, 40])]) { $0[0].transposed().matmul($0[1].transposed()) },
            Case("linear", [f([8, 64]), f([32, 64]), f([32])]) { linear($0[0], weight: $0[1], bias: $0[2]) },
            // A batched input: the weight gradient is one GEMM over all rows; frozen: only the input's.
            Case("linear batched", [f([2, 9, 64]), f([32, 64]), f([32])]) { linear($0[0], weight: $0[1], bias: $0[2]) },
            Case("linear frozen", [f([2, 9, 64]), f([32, 64]), f([32])]) {
                linear($0[0], weight: $0[1].detach(), bias: $0[2].detach())
            },
            // The fused bias + residual epilogue (transformer blocks' output projections).
            Case("linear bias+residual", [f([2, 9, 64]), f([32, 64]), f([32]), f([2, 9, 32])]) {
                linear($0[0], weight: $0[1], bias: $0[2], residual: $0[3])
            },
            Case("strided broadcast mul", [f([4, 6, 5, 3]), f([6, 1, 3])]) { $0[0].permute([0, 3, 1, 2]) * $0[1].permute([2, 0, 1]) },
            Case("conv2d 3x3", [f([2, 8, 12, 12]), f([16, 8, 3, 3]), f([16])]) {
                conv2d($0[0], weight: $0[1], bias: $0[2], padding: (1, 1))
            },
            Case("conv2d stride 2", [f([2, 6, 11, 13]), f([8, 6, 3, 3])]) {
                conv2d($0[0], weight: $0[1], stride: (2, 2), padding: (1, 1))
            },
            Case("conv2d groups+dilation", [f([2, 8, 10, 10]), f([6, 4, 3, 3])]) {
                conv2d($0[0], weight: $0[1], padding: (2, 2), dilation: (2, 2), groups: 2)
            },
            // Different stride, padding and kernel size per axis: col2im's row and column taps apart.
            Case("conv2d stride 2x1 kernel 3x5", [f([2, 4, 9, 11]), f([5, 4, 3, 5])]) {
                conv2d($0[0], weight: $0[1], stride: (2, 1), padding: (1, 2))
            },
            // An image whose im2col columns exceed the workspace is convolved in bands of output rows
            // (the VAE at 512²); a tiny workspace forces bands of one or two rows, the last one partial.
            Case("conv2d in row bands", [f([2, 3, 9, 7]), f([5, 3, 3, 3]), f([5])], setting: workspace(600)) { t in
                conv2d(t[0], weight: t[1], bias: t[2], stride: (1, 2), padding: (1, 1))
            },
            Case("conv2d in row bands, groups", [f([1, 4, 6, 6]), f([6, 2, 3, 3])], setting: workspace(300)) { t in
                conv2d(t[0], weight: t[1], padding: (1, 1), groups: 2)
            },
            // ResNet blocks' conv2 + shortcut: the residual add in the bias kernel.
            Case("conv2d bias+residual", [f([2, 8, 12, 12]), f([16, 8, 3, 3]), f([16]), f([2, 16, 12, 12])]) {
                conv2d($0[0], weight: $0[1], bias: $0[2], padding: (1, 1), residual: $0[3])
            },
            Case("conv2d residual, no bias", [f([2, 6, 7, 7]), f([6, 6, 1, 1]), f([2, 6, 7, 7])]) {
                conv2d($0[0], weight: $0[1], residual: $0[2])
            },
            // The tensor-core convolution (float16/bfloat16 with channels % 8 == 0; float32 takes
            // im2col): forward with the bias and residual in its epilogue, input gradients at stride 1.
            Case("conv2d mma 3x3, bias+residual", [f([2, 16, 9, 11]), f([24, 16, 3, 3]), f([24]), f([2, 24, 9, 11])],
                 setting: withConvMMAForced) {
                conv2d($0[0], weight: $0[1], bias: $0[2], padding: (1, 1), residual: $0[3])
            },
            Case("conv2d mma 136 channels out, 210 pixels", [f([1, 32, 15, 14]), f([136, 32, 3, 3])],
                 setting: withConvMMAForced) {
                conv2d($0[0], weight: $0[1], padding: (1, 1))
            },
            Case("conv2d mma stride 2", [f([2, 16, 10, 9]), f([8, 16, 3, 3]), f([8])],
                 setting: withConvMMAForced) {
                conv2d($0[0], weight: $0[1], bias: $0[2], stride: (2, 2), padding: (1, 1))
            },
            Case("conv2d mma 64 channels 32x32, frozen weight", [f([2, 64, 32, 32]), f([64, 64, 3, 3]), f([64])],
                 setting: withConvMMAForced) {
                conv2d($0[0], weight: $0[1].detach(), bias: $0[2].detach(), padding: (1, 1))
            },
            Case("conv2d im2col where mma applies", [f([2, 16, 9, 11]), f([24, 16, 3, 3]), f([24]), f([2, 24, 9, 11])],
                 setting: withoutConvMMA) {
                conv2d($0[0], weight: $0[1], bias: $0[2], padding: (1, 1), residual: $0[3])
            },
            Case("conv2d 1x1", [f([2, 16, 9, 9]), f([12, 16, 1, 1]), f([12])]) { conv2d($0[0], weight: $0[1], bias: $0[2]) },
            Case("group norm", [f([2, 32, 6, 6]), f([32]), f([32])]) { groupNorm($0[0], groups: 8, weight: $0[1], bias: $0[2]) },
            Case("layer norm", [f([4, 10, 64]), f([64]), f([64])]) {
                layerNorm($0[0], normalizedShape: [64], weight: $0[1], bias: $0[2])
            },
            // Fused GroupNorm + SiLU: the backward recomputes the pre-activation from x, w, b.
            Case("group norm silu", [f([2, 32, 6, 6]), f([32]), f([32])]) {
                groupNorm($0[0], groups: 8, weight: $0[1], bias: $0[2], silu: true)
            },
            Case("group norm silu no affine", [f([3, 12, 5])]) { groupNorm($0[0], groups: 4, weight: nil, bias: nil, silu: true) },
            // Groups large enough to be cut into chunks (one thread block each): 131072 elements per group.
            Case("group norm silu chunked", [f([1, 32, 128, 128]), f([32]), f([32])]) {
                groupNorm($0[0], groups: 4, weight: $0[1], bias: $0[2], silu: true)
            },
            Case("group norm chunked, batch 2", [f([2, 16, 47, 47]), f([16]), f([16])]) {
                groupNorm($0[0], groups: 2, weight: $0[1], bias: $0[2])
            },
            // Frozen parameters (LoRA): only the input gradient, on both sides.
            Case("group norm frozen", [f([2, 32, 6, 6]), f([32]), f([32])]) {
                groupNorm($0[0], groups: 8, weight: $0[1].detach(), bias: $0[2].detach())
            },
            Case("group norm silu frozen", [f([2, 32, 6, 6]), f([32]), f([32])]) {
                groupNorm($0[0], groups: 8, weight: $0[1].detach(), bias: $0[2].detach(), silu: true)
            },
            Case("layer norm frozen", [f([4, 10, 64]), f([64]), f([64])]) {
                layerNorm($0[0], normalizedShape: [64], weight: $0[1].detach(), bias: $0[2].detach())
            },
            // More rows than one chunk of the two-pass parameter reduction (128 rows), and a width
            // that leaves the last 32-column tile partial.
            Case("layer norm many rows", [f([3, 300, 72]), f([72]), f([72])]) {
                layerNorm($0[0], normalizedShape: [72], weight: $0[1], bias: $0[2])
            },
            // Rows up to 2048 wide take a warp each (all the cases above); wider ones a block each.
            Case("layer norm wide rows", [f([2, 3, 2100]), f([2100]), f([2100])]) {
                layerNorm($0[0], normalizedShape: [2100], weight: $0[1], bias: $0[2])
            },
            Case("softmax", [f([6, 77])]) { $0[0].softmax() },
            Case("log softmax", [f([6, 77])]) { $0[0].logSoftmax() },
            // The fused scalar kernels in every dtype (float16/bfloat16 would otherwise take the flash kernels).
            sdpa("attention d40", [2, 4, 77, 40], [2, 4, 77, 40], [2, 4, 77, 40], setting: withoutFlashAttention),
            Case("attention causal", [f([1, 3, 50, 64]), f([1, 3, 50, 64]), f([1, 3, 50, 64])]) {
                scaledDotProductAttention($0[0], $0[1], $0[2], causal: true)
            },
            sdpa("attention cross d160", [1, 2, 64, 160], [1, 2, 77, 160], [1, 2, 77, 160]),
            // Large enough for the cuBLAS path (≥ 16384 scores per head), self and cross; float16 and
            // bfloat16 with the flash kernels off, so the cuBLAS path is checked in every dtype.
            sdpa("attention gemm self", [1, 2, 200, 40], [1, 2, 200, 40], [1, 2, 200, 40], setting: withoutFlashAttention),
            sdpa("attention gemm d80", [1, 2, 150, 80], [1, 2, 140, 80], [1, 2, 140, 80], setting: withoutFlashAttention),
            // The flash kernels (float16/bfloat16; float32 takes the cuBLAS path): SD 1.5's head width 40
            // with rows and keys not multiples of 64, cross-attention over 77 tokens at width 64, an odd
            // width (16-bit tile loads instead of cp.async), width 80 (flash forward, cuBLAS backward)
            // and 128 (one stage, not double-buffered).
            sdpa("attention flash d40", [2, 2, 300, 40], [2, 2, 300, 40], [2, 2, 300, 40]),
            sdpa("attention flash cross d64", [2, 2, 150, 64], [2, 2, 77, 64], [2, 2, 77, 64]),
            sdpa("attention flash d33", [1, 3, 70, 33], [1, 3, 90, 33], [1, 3, 90, 33]),
            sdpa("attention flash d80", [1, 2, 150, 80], [1, 2, 140, 80], [1, 2, 140, 80]),
            sdpa("attention flash d128", [1, 2, 65, 128], [1, 2, 129, 128], [1, 2, 129, 128]),
            // Many key/query tiles through the double buffer, as SD 1.5's 4096-token levels, at width 40
            // and 64 (backward included).
            sdpa("attention flash long d40", [1, 4, 1000, 40], [1, 4, 1000, 40], [1, 4, 1000, 40]),
            sdpa("attention flash long d64", [2, 1, 700, 64], [2, 1, 600, 64], [2, 1, 600, 64]),
            // The plain build (`CUDA.flashPipeline` off), which scripts/gpu/issue-check.sh falls back to.
            sdpa("attention flash-sync d40", [2, 2, 300, 40], [2, 2, 300, 40], [2, 2, 300, 40], setting: withPlainFlashKernels),
            sdpa("attention flash-sync d80", [1, 2, 150, 80], [1, 2, 140, 80], [1, 2, 140, 80], setting: withPlainFlashKernels),
            // Heads read in place from [B, N, H·D] (and the output and gradients written so): SD 1.5's
            // width 40 self and cross (77 tokens), width 80 (flash forward; the cuBLAS backward copies
            // its operands), and the plain build.
            sdpaInPlace("attention flash heads in place d40", heads: 2, [2, 300, 80], [2, 300, 80]),
            sdpaInPlace("attention flash heads in place cross d40", heads: 4, [2, 150, 160], [2, 77, 160]),
            sdpaInPlace("attention flash heads in place d80", heads: 2, [1, 150, 160], [1, 140, 160]),
            sdpaInPlace("attention flash-sync heads in place d40", heads: 2, [2, 300, 80], [2, 300, 80], setting: withPlainFlashKernels),
            sdpa("attention gemm cross", [2, 2, 160, 64], [2, 2, 120, 64], [2, 2, 120, 48]),
            // A head wider than the fused kernels allow (SD's VAE: one head of 512) at a small size.
            sdpa("attention wide head", [1, 1, 16, 512], [1, 1, 16, 512], [1, 1, 16, 512]),
            Case("embedding", [.indices([3, 7], vocabulary: 50), f([50, 32])]) { embedding($0[0], weight: $0[1]) },
        ]
    }

    struct Row { let op: String; let dtype: DType; let error: Double; let pass: Bool; let seconds: Double; let note: String }

    static func run(_ arguments: [String]) -> Int32 {
        guard CUDA.isAvailable else {
            print("skipped: no CUDA device")
            print(CUDA.missingLibrariesMessage ?? "no CUDA device found")
            return 2
        }
        do { print(try CUDA.deviceInfo(0)) } catch { print("device info failed: \(error)"); return 1 }
        CUDA.allowTF32 = false
        var rows: [Row] = []
        let filter = arguments.first { !$0.hasPrefix("-") }
        let start = Date()
        rows.append(checkRandom())
        rows.append(checkUploads())
        for c in cases where filter.map({ c.name.contains($0) }) ?? true {
            for dtype in c.dtypes { rows.append(check(c, dtype)) }
        }
        print("")
        print("op                       dtype      max rel err  result   time")
        print(String(repeating: "-", count: 66))
        for r in rows {
            print(pad(r.op, 24) + " " + pad(r.dtype.rawValue, 10) + " " + pad(String(format: "%.2e", r.error), 12)
                  + " " + pad(r.pass ? "pass" : "FAIL", 8) + String(format: "%6.3fs", r.seconds) + (r.note.isEmpty ? "" : "  \(r.note)"))
        }
        let failed = rows.filter { !$0.pass }.count
        print(String(repeating: "-", count: 66))
        print("\(rows.count - failed)/\(rows.count) passed in \(String(format: "%.1f", Date().timeIntervalSince(start)))s")
        print("allocator: \(CUDA.memoryStats(0))")
        return failed == 0 ? 0 : 1
    }

    static func pad(_ s: String, _ n: Int) -> String { s.count >= n ? s : s + String(repeating: " ", count: n - s.count) }

    /// Philox streams on CUDA equal the CPU's for the same (seed, offset).
    static func checkRandom() -> Row {
        let t0 = Date()
        let n = 10_001
        var worst = 0.0
        for (a, b) in [(Tensor.randn([n], seed: 42, device: device), Tensor.randn([n], seed: 42)),
                       (Tensor.rand([n], seed: 7, device: device), Tensor.rand([n], seed: 7))] {
            worst = max(worst, relativeError(a.toArray(), b.toArray()))
        }
        return Row(op: "philox randn/rand", dtype: .float32, error: worst, pass: worst <= 1e-6,
                   seconds: Date().timeIntervalSince(t0), note: "")
    }

    /// Host-to-device copies come back exactly: 100 small tensors uploaded back to back behind a
    /// long matmul, so the pinned ring (`TENSORKIT_CUDA_UPLOAD_RING`) comes round to slots whose
    /// copies may still be queued, then uploads of exactly one slot and of more than one.
    static func checkUploads() -> Row {
        let t0 = Date()
        let busy = Tensor.randn([2048, 2048], seed: 3, device: device)
        _ = busy.matmul(busy).matmul(busy)  // queued; the uploads below are ordered after it
        var sent: [Tensor] = []
        for i in 0..<100 { sent.append(Tensor.randn([1 + (i * 977) % 20_000], seed: UInt64(100 + i))) }
        sent.append(Tensor.randn([1 << 18], seed: 7))          // 1 MiB of float32: one whole slot
        sent.append(Tensor.randn([(1 << 18) + 1], seed: 8))    // one value more: the waiting path
        let onDevice = sent.map { $0.copied(to: device) }
        var mismatched = 0
        for (a, b) in zip(onDevice, sent) where a.toArray() != b.toArray() { mismatched += 1 }
        return Row(op: "upload ring", dtype: .float32, error: Double(mismatched), pass: mismatched == 0,
                   seconds: Date().timeIntervalSince(t0), note: mismatched == 0 ? "" : "\(mismatched) of \(sent.count) uploads differ")
    }

    static func relativeError(_ a: [Double], _ b: [Double]) -> Double {
        guard a.count == b.count else { return .infinity }
        var diff = 0.0, scale = 0.0
        for (x, y) in zip(a, b) {
            if x.isNaN != y.isNaN { return .infinity }
            diff = max(diff, Swift.abs(x - y)); scale = max(scale, Swift.abs(y))
        }
        return diff / max(scale, 1e-30)
    }

    static func check(_ c: Case, _ dtype: DType) -> Row {
        let t0 = Date()
        var seed: UInt64 = c.name.utf8.reduce(UInt64(17)) { $0 &* 31 &+ UInt64($1) } % 10_000
        // Inputs on the CPU (float32, rounded through `dtype`), and their CUDA counterparts.
        var cpuInputs: [Tensor] = [], gpuInputs: [Tensor] = []
        for input in c.inputs {
            seed += 1
            switch input {
            case let .float(shape, positive):
                var x = Tensor.randn(shape, seed: seed)
                if positive { x = x.abs() + 0.5 }
                if dtype != .float32 { x = x.to(dtype).to(.float32) }
                cpuInputs.append(x.detach().requiringGrad())
                gpuInputs.append(x.to(dtype).copied(to: device).requiringGrad())
            case let .indices(shape, vocabulary):
                let values = (0..<shape.reduce(1, *)).map { ($0 * 7 + Int(seed)) % vocabulary }
                cpuInputs.append(Tensor(indices: values, shape: shape))
                gpuInputs.append(Tensor(indices: values, shape: shape, device: device))
            }
        }
        let cpuOut = c.body(cpuInputs)
        let w = Tensor.randn(cpuOut.shape, seed: seed + 100)
        (cpuOut * w).sum().backward()
        let restore = c.setting?()
        let gpuOut = c.body(gpuInputs)
        (gpuOut * w.to(dtype).copied(to: device)).sum().backward()
        restore?()

        var worst = relativeError(gpuOut.to(.float32).toArray(), cpuOut.toArray())
        var note = ""
        for (i, (a, b)) in zip(gpuInputs, cpuInputs).enumerated() where b.requiresGrad {
            guard let ga = a.grad, let gb = b.grad else {
                if a.grad == nil && b.grad == nil { continue }
                worst = .infinity; note = "input \(i): gradient missing on one side"; continue
            }
            let e = relativeError(ga.to(.float32).toArray(), gb.toArray())
            if e > worst { worst = e; note = "worst: grad of input \(i)" }
        }
        let tolerance = dtype == .float32 ? 1e-5 : 1e-2
        return Row(op: c.name, dtype: dtype, error: worst, pass: worst <= tolerance, seconds: Date().timeIntervalSince(t0), note: note)
    }
}

extension GPUCheck {
    /// The whole tool: `--compile-only` compiles every kernel with NVRTC for sm_80 and sm_90 (no GPU
    /// needed; 2 when NVRTC is missing, 1 on any error or warning); otherwise every op check (1 on a
    /// failure, 2 without a device). An argument not starting with "-" filters the op cases by name.
    public static func main(_ arguments: [String]) -> Int32 {
        if arguments.contains("--compile-only") { return compileOnly() }
        if let i = arguments.firstIndex(of: "--print-source") { return printSource(i + 1 < arguments.count ? arguments[i + 1] : "") }
        return run(arguments)
    }

    /// `--print-source FAMILY.DTYPE` (e.g. flash_attention.float16, memory): the CUDA C that NVRTC
    /// compiles, for reading or for compiling elsewhere.
    static func printSource(_ name: String) -> Int32 {
        guard let source = CUDAKernelSources.all.first(where: { $0.name == name }) else {
            let names = CUDAKernelSources.all.map(\.name).joined(separator: ", ")
            FileHandle.standardError.write(Data("--print-source: no kernel source named '\(name)'; expected one of: \(names)\n".utf8))
            return 2
        }
        print(source.source, terminator: "")
        return 0
    }

    static func compileOnly() -> Int32 {
        guard NVRTC.isAvailable else {
            print("skipped: NVRTC not found (looked in \(NVRTC.unavailableReason ?? "?"))")
            return 2
        }
        print("NVRTC \(NVRTC.version ?? "?") from \(NVRTC.libraryPath ?? "?")")
        var failures = 0
        for arch in [80, 90] {
            for source in CUDAKernelSources.all {
                let start = Date()
                do {
                    let result = try NVRTC.compile(source, arch: arch)
                    let clean = result.log.isEmpty
                    if !clean { failures += 1 }
                    print(String(format: "%-24@ sm_%d %@ %7.0f KB %6.2fs", source.name as NSString, arch,
                                 (clean ? "ok  " : "WARN") as NSString, Double(result.cubin.count) / 1024,
                                 Date().timeIntervalSince(start)))
                    if !clean { print(result.log) }
                } catch {
                    failures += 1
                    print("\(source.name) sm_\(arch) FAILED: \(error)")
                }
            }
        }
        print(failures == 0 ? "all kernels compiled cleanly" : "\(failures) kernel compile(s) failed or warned")
        return failures == 0 ? 0 : 1
    }
}
